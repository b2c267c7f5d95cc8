// HGRN-2 (spec §1.6; Qin et al. 2024, evaluated pretrained via flash-linear-attention in SM) — a gated linear
// RNN with outer-product state expansion, per head (key dim K = expand_ratio, value dim V = D / H):
//   f_t = gamma + (1 - gamma) sigmoid(f_proj x_t)          (gamma: the layer's forget lower bound)
//   S_t = diag(f_t) S_{t-1} + (1 - f_t)^T i_t,  o_t = q_t S_t          (q = q_proj x, i = i_proj x)
//   out = o_proj(RMSNorm_V(o) * silu(g_proj x))
// From the public HGRN-2 description and fla's layer as recalled ([recall] in the spec): the output gate and
// the per-head RMSNorm follow it; gamma_l = l / n_layers is the model's learned lower bounds at their init
// (softmax over zeros, cumsum, minus the first), held constant here. Plain-ATen time loop (linear_attention.h).
#pragma once
#include <string>

#include <torch/nn/modules/linear.h>

#include "ssmlab/core/fields.h"
#include "ssmlab/mixers/mixer.h"

namespace ssmlab::mixers {

struct Hgrn2Options {
  int64_t n_heads = 4;
  int64_t expand_ratio = 128;  // K, the state expansion per head
  double lower_bound = -1.0;   // gamma; < 0: l / n_layers
  double norm_eps = 1e-5;

  template <class V>
  void visit(V& v) {
    v("n_heads", n_heads, "heads H (d_model % H == 0; V = d_model / H)", Check::at_least(1));
    v("expand_ratio", expand_ratio, "K: key dim per head (the outer-product state expansion)", Check::at_least(1));
    v("lower_bound", lower_bound, "forget-gate lower bound gamma in [0, 1); negative: layer_idx / n_layers",
      Check::range(-1.0, 0.999));
    v("norm_eps", norm_eps, "epsilon of the output RMSNorm", Check::positive());
  }
};

class Hgrn2Impl : public MixerImpl {
 public:
  Hgrn2Impl(const Hgrn2Options& opts, int64_t d_model, int64_t layer_idx, int64_t n_layers, at::Generator& gen);

  at::Tensor forward(const at::Tensor& x, Trace* trace = nullptr) override;
  at::Tensor step(const at::Tensor& x_t, State& state) override;
  // The chunked recurrence (linear_attention) from the carried state.
  at::Tensor forward_stateful(const at::Tensor& x, State& state, Trace* trace = nullptr) override;
  bool supports_stateful() const override { return true; }
  State init_state(int64_t batch, c10::Device device) const override;
  // H K V = K D.
  int64_t state_size() const override { return opts_.expand_ratio * d_model_; }
  std::string kind() const override { return "hgrn2"; }
  double lower_bound() const { return gamma_; }

  torch::nn::Linear q_proj{nullptr}, f_proj{nullptr}, i_proj{nullptr}, g_proj{nullptr}, o_proj{nullptr};
  at::Tensor norm_weight;  // (V)

 private:
  at::Tensor run(const at::Tensor& x, at::Tensor* state, Trace* trace);

  Hgrn2Options opts_;
  int64_t d_model_, head_v_;
  double gamma_;
};

}  // namespace ssmlab::mixers
