// Mamba-1 selective SSM mixer (S6), faithful to mamba_ssm's Mamba (spec §1.1):
//   in_proj -> causal conv1d -> SiLU -> x_proj (dt_low, B, C) -> dt_proj -> selective scan -> gate -> out_proj
#pragma once
#include <string>

#include <torch/nn/modules/linear.h>

#include "ssmlab/core/fields.h"
#include "ssmlab/mixers/mixer.h"
#include "ssmlab/mixers/transitions/transition.h"

namespace ssmlab::mixers {

struct Mamba1Options {
  int64_t d_state = 16;
  int64_t d_conv = 4;
  int64_t expand = 2;
  int64_t dt_rank = 0;  // 0: ceil(D / 16)
  double dt_min = 1e-3;
  double dt_max = 0.1;
  std::string dt_init = "random";
  double dt_scale = 1.0;
  double dt_init_floor = 1e-4;
  bool conv_bias = true;
  bool bias = false;
  std::string transition = "standard";
  double polar_one_value = 0.0;     // A of the one-polarized channel (spec §1.2)
  double polar_zero_value = -100.0;  // A of the zero-polarized channel (spec §1.2: -100, not -inf)

  template <class V>
  void visit(V& v) {
    v("d_state", d_state, "SSM state size N per channel", Check::at_least(1));
    v("d_conv", d_conv, "causal conv1d width W", Check::range(1, 4));
    v("expand", expand, "inner width E = expand * d_model", Check::at_least(1));
    v("dt_rank", dt_rank, "rank R of the dt projection; 0 = ceil(d_model / 16)", Check::at_least(0));
    v("dt_min", dt_min, "smallest initial dt (log-uniform init)", Check::positive());
    v("dt_max", dt_max, "largest initial dt (log-uniform init)", Check::positive());
    v("dt_init", dt_init, "dt_proj weight init: random (uniform +-R^-1/2 * dt_scale) or constant",
      Check::one_of({"random", "constant"}));
    v("dt_scale", dt_scale, "scale of the dt_proj weight init", Check::positive());
    v("dt_init_floor", dt_init_floor, "lower clamp of the initial dt", Check::positive());
    v("conv_bias", conv_bias, "conv1d has a bias");
    v("bias", bias, "in_proj and out_proj have biases");
    v("transition", transition,
      "A parameterisation (mixers/transitions): standard, or polarized (spec §1.2: + a state with A = 0 and one "
      "with A = -100; d_state counts the learned ones), polarized_one, polarized_zero",
      Check::one_of({"standard", "polarized", "polarized_one", "polarized_zero"}));
    v("polar_one_value", polar_one_value, "A of the one-polarized state channel (polarized transitions)",
      Check::range(-1.0, 0.0));
    v("polar_zero_value", polar_zero_value, "A of the zero-polarized state channel (polarized transitions)",
      Check::range(-1e6, -1.0));
  }
};

class Mamba1Impl : public MixerImpl {
 public:
  // backend: ops backend ("auto" | "reference"). Init: mamba_ssm's (spec §1.1), drawn from `gen`.
  Mamba1Impl(const Mamba1Options& opts, int64_t d_model, std::string backend, at::Generator& gen);

  at::Tensor forward(const at::Tensor& x, Trace* trace = nullptr) override;
  at::Tensor step(const at::Tensor& x_t, State& state) override;
  // x (B, L, D) continuing from `state` ("conv", "ssm": init_state, step()s or a previous call), updated.
  at::Tensor forward_stateful(const at::Tensor& x, State& state, Trace* trace = nullptr) override;
  bool supports_stateful() const override { return true; }
  State init_state(int64_t batch, c10::Device device) const override;
  int64_t state_size() const override;
  std::string kind() const override { return "mamba1"; }

  int64_t d_inner() const { return d_inner_; }
  int64_t dt_rank() const { return dt_rank_; }
  int64_t state_dim() const { return d_state_; }  // N the scan sees: d_state + polarized channels
  const Mamba1Options& options() const { return opts_; }

  torch::nn::Linear in_proj{nullptr}, x_proj{nullptr}, dt_proj{nullptr}, out_proj{nullptr};
  at::Tensor conv_weight;  // (E, W)
  at::Tensor conv_bias;    // (E) or undefined
  at::Tensor D;            // (E)
  std::shared_ptr<TransitionImpl> transition;

 private:
  // The shared body of forward and step: x (B, L, D), optional conv and SSM states in/out.
  at::Tensor run(const at::Tensor& x, at::Tensor* conv_state, at::Tensor* ssm_state, Trace* trace);

  Mamba1Options opts_;
  int64_t d_model_, d_inner_, dt_rank_, d_state_;
  std::string backend_;
};

}  // namespace ssmlab::mixers
