// Mamba-2 mixer (SSD), faithful to mamba_ssm's Mamba2 (spec §1.3):
//   in_proj -> (z, xBC, dt) -> causal conv1d + SiLU over xBC -> (x, B, C) -> SSD scan -> gated RMSNorm -> out_proj
// with the inference interventions of spec §3.6 as options (never forks): RRI (decay_mult, b_mult), dt_mult,
// state normalisation and the state-difference sliding window.
#pragma once
#include <string>

#include <torch/nn/modules/linear.h>

#include "ssmlab/core/fields.h"
#include "ssmlab/mixers/mitigation.h"
#include "ssmlab/mixers/mixer.h"
#include "ssmlab/ops/ssd_scan/ssd_scan.h"

namespace ssmlab::mixers {

// Inference interventions (spec §3.6). All default to "off"; none has parameters to learn.
struct Mamba2Interventions {
  double dt_mult = 1.0;     // Δ <- c·Δ (analysis code's dt_mult)
  double decay_mult = 1.0;  // α <- λ_α·α (RRI λ_α; the analysis code's da_mult)
  double b_mult = 1.0;      // B <- λ_B·B (RRI λ_B)
  double a_mult = 1.0;      // A <- c·A, i.e. α <- α^c (analysis code's a_mult)
  double a_offset = 0.0;    // A <- A + c (passkey code's A_offset; A must stay < 0)
  double b_clip = 0.0;      // B <- min(B, c) when > 0 (passkey code's B_clip); 0 = off
  // State normalisation (§3.6.2): after every `segment` tokens, S <- S·min(1, τ/‖S‖_F) per (batch, head).
  // 0 = off. Per-head thresholds (a calibration pass) go in Mamba2Impl::state_norm_tau instead.
  double state_norm_tau = 0.0;
  // "min": S <- S·min(1, τ/‖S‖_F) (the intended form); "seed": the seed code's S <- S·‖S‖_F/τ where ‖S‖_F > τ,
  // which grows the state (spec §6.9; kept to reproduce the seed).
  std::string state_norm_form = "min";
  // Sliding window by state difference (§3.6.3): the output reads S_t - α(since snapshot)·S_snap, where the
  // snapshot is the state `window` to 2·`window` tokens back (snapshots every `window` tokens, the older of
  // the last two is subtracted); the full state keeps propagating. 0 = off. A multiple of `segment`.
  int64_t window = 0;
  // Period (tokens) of state normalisation and of window snapshots; the state-carrying path runs segments
  // of this length while either is on.
  int64_t segment = 128;
  // Segment length of the state-carrying path when neither is on (bounds its working memory).
  int64_t eval_segment = 4096;

  template <class V>
  void visit(V& v) {
    v("dt_mult", dt_mult, "multiplier on dt' (after softplus and limits)", Check::positive());
    v("decay_mult", decay_mult, "RRI: multiplier on the decay alpha (lambda_alpha)", Check::positive());
    v("b_mult", b_mult, "RRI: multiplier on B (lambda_B)");
    v("a_mult", a_mult, "multiplier on A (alpha <- alpha^c)", Check::positive());
    v("a_offset", a_offset, "offset added to A (A = -exp(A_log) + c must stay < 0)");
    v("b_clip", b_clip, "clip B from above at this value; 0 = off", Check::at_least(0));
    v("state_norm_tau", state_norm_tau, "state normalisation threshold per head; 0 = off", Check::at_least(0));
    v("state_norm_form", state_norm_form,
      "state normalisation: min (S*min(1, tau/|S|), the intended form) or seed (the seed code's S*|S|/tau "
      "where |S| > tau, spec §6.9)",
      Check::one_of({"min", "seed"}));
    v("window", window, "state-difference sliding window in tokens (a multiple of segment); 0 = off",
      Check::at_least(0));
    v("segment", segment, "period of state normalisation and window snapshots (tokens)", Check::at_least(1));
    v("eval_segment", eval_segment, "segment length of the state-carrying path without interventions",
      Check::at_least(1));
  }
  bool segmented() const { return state_norm_tau > 0.0 || window > 0; }
};

struct Mamba2Options {
  int64_t d_state = 128;
  int64_t d_conv = 4;
  int64_t expand = 2;
  int64_t head_dim = 64;
  int64_t n_groups = 1;
  int64_t chunk_size = 256;
  double A_init_min = 1.0;
  double A_init_max = 16.0;
  double dt_min = 1e-3;
  double dt_max = 0.1;
  double dt_init_floor = 1e-4;
  double dt_limit_min = 0.0;
  double dt_limit_max = 0.0;  // 0 = no upper limit
  bool conv_bias = true;
  bool bias = false;
  double norm_eps = 1e-5;
  // Channels over which the gated RMSNorm takes its mean square: "groups" (E / n_groups, as mamba_ssm's Mamba2
  // and transformers since its n_groups > 1 fix) or "whole" (all E: transformers' Mamba2 before that fix).
  std::string norm_groups = "groups";
  Mamba2Interventions interventions;

  template <class V>
  void visit(V& v) {
    v("d_state", d_state, "SSM state size N per head channel", Check::at_least(1));
    v("d_conv", d_conv, "causal conv1d width W", Check::range(1, 4));
    v("expand", expand, "inner width E = expand * d_model", Check::at_least(1));
    v("head_dim", head_dim, "head dimension P; heads H = E / P", Check::at_least(1));
    v("n_groups", n_groups, "groups G sharing B and C (H % G == 0)", Check::at_least(1));
    v("chunk_size", chunk_size, "chunk length Q of the SSD algorithm (results do not depend on it)",
      Check::at_least(1));
    v("A_init_min", A_init_min, "A = -exp(A_log), A_log = log U(A_init_min, A_init_max)", Check::positive());
    v("A_init_max", A_init_max, "upper end of the A init range", Check::positive());
    v("dt_min", dt_min, "smallest initial dt (log-uniform init)", Check::positive());
    v("dt_max", dt_max, "largest initial dt (log-uniform init)", Check::positive());
    v("dt_init_floor", dt_init_floor, "lower clamp of the initial dt", Check::positive());
    v("dt_limit_min", dt_limit_min, "clamp of dt' from below", Check::at_least(0));
    v("dt_limit_max", dt_limit_max, "clamp of dt' from above; 0 = none", Check::at_least(0));
    v("conv_bias", conv_bias, "conv1d has a bias");
    v("bias", bias, "in_proj and out_proj have biases");
    v("norm_eps", norm_eps, "epsilon of the gated RMSNorm", Check::positive());
    v("norm_groups", norm_groups,
      "gated RMSNorm mean square over: groups (E / n_groups channels: mamba_ssm, transformers >= its n_groups fix) "
      "or whole (all E channels: older transformers); the same when n_groups = 1",
      Check::one_of({"groups", "whole"}));
    v("interventions", interventions, "inference interventions (spec §3.6)");
  }
};

class Mamba2Impl : public MixerImpl, public Mitigable {
 public:
  // backend: ops backend ("auto" | "reference"). Init: mamba_ssm's Mamba2 (spec §1.3), drawn from `gen`.
  Mamba2Impl(const Mamba2Options& opts, int64_t d_model, std::string backend, at::Generator& gen);

  // One shot from a zero state. With state normalisation or a window on, runs the segmented path.
  at::Tensor forward(const at::Tensor& x, Trace* trace = nullptr) override;
  // x (B, L, D) continuing from `state` (init_state or a previous call), which is updated: the long-sequence
  // path. Runs pieces of `interventions.segment` tokens (with state norm or a window) or `eval_segment` tokens,
  // so working memory does not grow with L. Trace records cover the whole call (per-position names are
  // concatenated over the pieces, `state` is the final state).
  at::Tensor forward_stateful(const at::Tensor& x, State& state, Trace* trace = nullptr) override;
  bool supports_stateful() const override { return true; }
  at::Tensor step(const at::Tensor& x_t, State& state) override;
  // "conv" (B, W-1, E + 2GN), "ssm" (B, H, P, N); with state norm or a window also "pos" (B) (tokens seen);
  // with a window "snap_old", "snap_new" (B, H, P, N), "logdecay_old", "logdecay_new" (B, H).
  State init_state(int64_t batch, c10::Device device) const override;
  int64_t state_size() const override;  // H·P·N + (E + 2GN)·(W-1); intervention bookkeeping not counted
  std::string kind() const override { return "mamba2"; }

  int64_t d_inner() const { return d_inner_; }
  int64_t n_heads() const { return n_heads_; }
  const Mamba2Options& options() const { return opts_; }
  Mamba2Options& options() { return opts_; }  // interventions may be changed between calls

  // Mitigable (mixers/mitigation.h): RRI (decay_mult, b_mult), state normalisation (per-head τ in
  // state_norm_tau, the form in interventions.state_norm_form) and the window. A window that is not a
  // multiple of interventions.segment sets segment to gcd(window, segment).
  std::vector<std::string> mitigations_supported() const override { return {"rri", "state_norm", "window"}; }
  Mitigations mitigations() const override;
  void set_mitigations(const Mitigations& m) override;

  torch::nn::Linear in_proj{nullptr}, out_proj{nullptr};
  at::Tensor conv_weight;  // (E + 2GN, W)
  at::Tensor conv_bias;    // (E + 2GN) or undefined
  at::Tensor dt_bias;      // (H)
  at::Tensor A_log;        // (H), A = -exp(A_log)
  at::Tensor D;            // (H)
  at::Tensor norm_weight;  // (E), gated RMSNorm
  // Optional per-head state-norm thresholds (H) (e.g. from a calibration pass); overrides
  // interventions.state_norm_tau when defined (and turns state normalisation on by itself).
  at::Tensor state_norm_tau;

 private:
  // One piece of the sequence, x (B, L, D) continuing from `state`: in_proj -> conv -> scan (decode: the
  // one-step ops) from the (windowed) SSM state; then the state bookkeeping (window, position, state norm)
  // and gated RMSNorm + out_proj.
  at::Tensor run_piece(const at::Tensor& x, State& state, bool decode, Trace* trace);
  ops::SsdScanOptions scan_options() const;
  at::Tensor thresholds(c10::Device device, at::ScalarType dtype) const;  // (H) state-norm τ, or undefined
  void normalise(State& state) const;                                    // §3.6.2, at segment boundaries
  void check_state(const State& state, int64_t batch, const char* who) const;
  // State norm or window on: the path of `segment`-token pieces with position bookkeeping.
  bool segmented() const { return opts_.interventions.segmented() || state_norm_tau.defined(); }

  Mamba2Options opts_;
  int64_t d_model_, d_inner_, n_heads_, conv_dim_;
  std::string backend_;
};

}  // namespace ssmlab::mixers
