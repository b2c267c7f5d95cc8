// Mamba-1 selective SSM mixer (S6), faithful to mamba_ssm's Mamba (spec §1.1):
//   in_proj -> causal conv1d -> SiLU -> x_proj (dt_low, B, C) -> dt_proj -> selective scan -> gate -> out_proj
#pragma once
#include <optional>
#include <string>

#include <torch/nn/modules/linear.h>

#include "ssmlab/core/fields.h"
#include "ssmlab/mixers/mitigation.h"
#include "ssmlab/mixers/mixer.h"
#include "ssmlab/mixers/transitions/eigen.h"
#include "ssmlab/mixers/transitions/transition.h"

namespace ssmlab::mixers {

// RRI (spec §3.6.1) at inference, the Mamba-1 form of Mamba-2's interventions: S_t = (λ_α·α_t)·S_{t-1} +
// Δ_t x_t ⊗ (λ_B·B_t). The scan has no decay multiplier, so λ_α is applied exactly by rescaling within a call:
// with S_t = λ_α^t S̃_t, S̃ runs the plain scan on B_t·λ_α^-t and is read by C_t·λ_α^t (t counted from the call's
// start; calls longer than ~20/|ln λ_α| tokens are cut into pieces so the factors stay in range).
struct Mamba1Interventions {
  double decay_mult = 1.0;  // λ_α
  double b_mult = 1.0;      // λ_B

  template <class V>
  void visit(V& v) {
    v("decay_mult", decay_mult, "RRI: multiplier on the decay alpha = exp(dt A) (lambda_alpha)", Check::positive());
    v("b_mult", b_mult, "RRI: multiplier on B (lambda_B)");
  }
};

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
  // Eigenvalue scenarios (spec §4.2, mixers/transitions/eigen.h): the sign structure of S_C^T S_B.
  std::string eigen = "none";
  double eigen_margin = 0.7;
  bool eigen_mixed_margin = false;
  // Token reordering (spec §4.3): sort the scan's input by a learned importance score (from dt) with SoftSort.
  std::string reorder = "off";
  double reorder_tau = 1.0;
  bool reorder_hard = false;
  bool reorder_unpermute = false;
  bool reorder_permute_z = false;
  Mamba1Interventions interventions;

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
    v("eigen", eigen,
      "eigenvalue scenario of S_C^T S_B (spec §4.2): none (x_proj unconstrained), positive (W_C = U, W_B = "
      "diag(softplus(c) + margin) U: PSD), negative (diag(-softplus(c) - margin): NSD), mixed (+softplus for the "
      "first ceil(N/2) states, -softplus for the rest: indefinite)",
      Check::one_of({"none", "positive", "negative", "mixed"}));
    v("eigen_margin", eigen_margin, "margin added to |d| in the positive and negative scenarios (the seed's 0.7)",
      Check::at_least(0.0));
    v("eigen_mixed_margin", eigen_mixed_margin,
      "add the margin in the mixed scenario too (the seed's mixed scenario has none: false)");
    v("reorder", reorder,
      "token reordering (spec §4.3): off; first (only the first block, as the seed's first block of a stage); all "
      "(every block). The scan then sees the tokens sorted by a learned importance score (most important last); "
      "the mixer is no longer causal and has no step()",
      Check::one_of({"off", "first", "all"}));
    v("reorder_tau", reorder_tau, "SoftSort temperature (the seed's 1.0)", Check::positive());
    v("reorder_hard", reorder_hard,
      "exact permutation in the forward pass with SoftSort's gradient (straight-through); the seed: false (soft)");
    v("reorder_unpermute", reorder_unpermute,
      "map the scan output back to the original order with the transposed permutation (the seed does not: false)");
    v("reorder_permute_z", reorder_permute_z, "permute the gate z like x (the seed does not: false)");
    v("interventions", interventions, "inference interventions: RRI (spec §3.6.1)");
  }
};

class Mamba1Impl : public MixerImpl, public Mitigable {
 public:
  // backend: ops backend ("auto" | "reference"). Init: mamba_ssm's (spec §1.1), drawn from `gen`.
  // layer_idx: the block's index (reorder = "first" reorders in layer 0 only).
  Mamba1Impl(const Mamba1Options& opts, int64_t d_model, std::string backend, at::Generator& gen,
             int64_t layer_idx = 0);

  at::Tensor forward(const at::Tensor& x, Trace* trace = nullptr) override;
  at::Tensor step(const at::Tensor& x_t, State& state) override;
  // x (B, L, D) continuing from `state` ("conv", "ssm": init_state, step()s or a previous call), updated.
  at::Tensor forward_stateful(const at::Tensor& x, State& state, Trace* trace = nullptr) override;
  bool supports_stateful() const override { return !reorders(); }
  State init_state(int64_t batch, c10::Device device) const override;
  int64_t state_size() const override;
  std::string kind() const override { return "mamba1"; }
  // W_C^T W_B (E, E) from the effective x_proj weight: U^T diag(d) U under an eigenvalue scenario.
  std::optional<at::Tensor> input_output_matrix() override;
  // x_proj's weight as the scan uses it (R + 2N, E): the raw parameter, or its eigen-scenario reparametrisation.
  at::Tensor x_proj_weight();
  bool reorders() const { return static_cast<bool>(importance); }
  // The soft permutation (B, L, L) of a sequence's scan input xc (B, L, E): SoftSort(-s) with the importance
  // s = importance(dt_proj(x_proj(xc)[:R])) (dt_proj's bias included), so row k takes the token with the k-th
  // smallest score and the most important tokens are scanned last (spec §4.3).
  at::Tensor reorder_permutation(const at::Tensor& xc);

  int64_t d_inner() const { return d_inner_; }
  int64_t dt_rank() const { return dt_rank_; }
  int64_t state_dim() const { return d_state_; }  // N the scan sees: d_state + polarized channels
  const Mamba1Options& options() const { return opts_; }
  // Mitigable (mixers/mitigation.h): RRI only; state normalisation and the window are ConfigErrors.
  std::vector<std::string> mitigations_supported() const override { return {"rri"}; }
  Mitigations mitigations() const override;
  void set_mitigations(const Mitigations& m) override;

  torch::nn::Linear in_proj{nullptr}, x_proj{nullptr}, dt_proj{nullptr}, out_proj{nullptr};
  at::Tensor conv_weight;  // (E, W)
  at::Tensor conv_bias;    // (E) or undefined
  at::Tensor D;            // (E)
  torch::nn::Linear importance{nullptr};  // E -> 1, no bias: only where this layer reorders
  std::shared_ptr<TransitionImpl> transition;

 private:
  // The shared body of forward and step: x (B, L, D), optional conv and SSM states in/out.
  at::Tensor run(const at::Tensor& x, at::Tensor* conv_state, at::Tensor* ssm_state, Trace* trace);
  // run() in pieces short enough for RRI's rescaling (one piece when decay_mult is 1); a null ssm_state
  // starts from zero. Trace records are merged over the pieces.
  at::Tensor run_pieces(const at::Tensor& x, at::Tensor* conv_state, at::Tensor* ssm_state, Trace* trace);

  Mamba1Options opts_;
  EigenScenario eigen_;
  int64_t d_model_, d_inner_, dt_rank_, d_state_;
  std::string backend_;
};

}  // namespace ssmlab::mixers
