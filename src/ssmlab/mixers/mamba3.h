// Mamba-3 mixer, SISO and MIMO (../shared/spec/mamba3-gdn-spec.md A.2-A.8), laid out as mamba_ssm's Mamba3
// (parameter names and shapes as upstream's, so checkpoints map one to one):
//   in_proj x -> z (E) | x (E) | B (R G N) | C (R G N) | dd_dt (H) | dd_A (H) | trap (H) | angles (S)
//   A = min(-f(dd_A), -A_floor), f the heavy-tail map or softplus (a_map); dt = softplus(dd_dt + dt_bias)
//   theta = pi tanh(angles), one vector of S angle rates per token shared by the heads
//   k = RMSNorm_N(B) B_norm.weight + B_bias[h, r], q likewise from C (groups expanded to heads)
//   y = ops::mamba3_scan(q, k, x_r, A dt, dt, trap, theta) (x_r = x for SISO, x mimo_x[h, r] for MIMO;
//       adjacent rotation pairs for SISO, halves for MIMO), D inside
//   gate per rank: y_r silu(z_r) (or RMSNorm_P(y_r) norm.weight silu(z_r) with outproj_norm), z_r = z mimo_z[h, r]
//   (MIMO; z for SISO); MIMO contracts y = sum_r mimo_o[h, r] y_r; out = out_proj(y)
// No conv. Decode state (init_state): "phase" (B, H, S) the cumulative angle phi (kept mod 2 pi), "state"
// (B, H, P, N) h, "k_prev" (B, R, H, N) the rotated key of the last token, "x_prev" (B, H, P) the RAW x of the
// last token (before mimo_x, upstream's v_state); the per-rank input the op carries is x_prev mimo_x[h, r].
#pragma once
#include <string>

#include <torch/nn/modules/linear.h>

#include "ssmlab/core/fields.h"
#include "ssmlab/mixers/mixer.h"

namespace ssmlab::mixers {

struct Mamba3Options {
  int64_t d_state = 128;    // N
  int64_t expand = 2;       // E = expand D
  int64_t head_dim = 64;    // P; H = E / P
  int64_t n_groups = 1;     // G sharing B and C (H % G == 0)
  double rope_fraction = 0.5;
  bool outproj_norm = false;
  bool mimo = false;
  int64_t mimo_rank = 4;    // R (MIMO only)
  int64_t chunk_size = 64;
  // The decay map A = min(-f(dd_A), -A_floor): "softplus" (f = softplus; mamba_ssm v2.3.2.post1 on PyPI and fla's
  // copy) or "heavy_tail" (f(x) = 1 + x for x >= 0, 1 / (1 - x) below; mamba_ssm's main since 2026-06). Default
  // softplus: docs/ARCHITECTURE.md "Mamba-3" gives the reason.
  std::string a_map = "softplus";
  double dt_min = 1e-3;
  double dt_max = 0.1;
  double dt_init_floor = 1e-4;
  double A_floor = 1e-4;
  double norm_eps = 1e-5;

  template <class V>
  void visit(V& v) {
    v("d_state", d_state, "SSM state size N per head channel", Check::at_least(2));
    v("expand", expand, "inner width E = expand * d_model", Check::at_least(1));
    v("head_dim", head_dim, "head dimension P; heads H = E / P", Check::at_least(1));
    v("n_groups", n_groups, "groups G sharing B and C (H % G == 0); B_bias / C_bias stay per head",
      Check::at_least(1));
    v("rope_fraction", rope_fraction,
      "fraction of the state dims the data-dependent rotation turns: 0.5 or 1.0 (S = floor(N rope_fraction / 2) "
      "angle pairs)");
    v("outproj_norm", outproj_norm, "RMSNorm of each head's output (weight norm.weight) before the silu(z) gate");
    v("mimo", mimo, "MIMO: mimo_rank inputs and outputs per token and head (mimo_x, mimo_z, mimo_o)");
    v("mimo_rank", mimo_rank, "MIMO rank R (ignored without mimo)", Check::at_least(1));
    v("chunk_size", chunk_size, "chunk of the chunked scan (results do not depend on it)", Check::at_least(1));
    v("a_map", a_map,
      "decay map A = min(-f(dd_A), -A_floor): softplus (mamba_ssm's release and fla, the default) or heavy_tail "
      "(mamba_ssm main: 1 + x for x >= 0, 1 / (1 - x) below)",
      Check::one_of({"softplus", "heavy_tail"}));
    v("dt_min", dt_min, "smallest initial dt (log-uniform init)", Check::positive());
    v("dt_max", dt_max, "largest initial dt (log-uniform init)", Check::positive());
    v("dt_init_floor", dt_init_floor, "lower clamp of the initial dt", Check::positive());
    v("A_floor", A_floor, "A <= -A_floor, so the decay exp(A dt) < 1 strictly", Check::positive());
    v("norm_eps", norm_eps, "epsilon of the B/C and output RMSNorms", Check::positive());
  }
};

class Mamba3Impl : public MixerImpl {
 public:
  // backend: the op's ("auto" | "reference" | "chunked" | "fused"). Init: mamba_ssm's Mamba3 (spec A.5), from `gen`.
  Mamba3Impl(const Mamba3Options& opts, int64_t d_model, std::string backend, at::Generator& gen);

  at::Tensor forward(const at::Tensor& x, Trace* trace = nullptr) override;
  at::Tensor step(const at::Tensor& x_t, State& state) override;
  at::Tensor forward_stateful(const at::Tensor& x, State& state, Trace* trace = nullptr) override;
  bool supports_stateful() const override { return true; }
  State init_state(int64_t batch, c10::Device device) const override;
  int64_t state_size() const override;  // H P N + H S + R H N + H P (phase, state, k_prev, x_prev)
  std::string kind() const override { return "mamba3"; }

  int64_t d_inner() const { return d_inner_; }
  int64_t n_heads() const { return n_heads_; }
  int64_t rank() const { return rank_; }
  int64_t n_angles() const { return n_angles_; }  // S
  const Mamba3Options& options() const { return opts_; }

  // The decay map's A (same shape as dd_A, dtype of dd_A): min(-f(dd_A), -A_floor).
  at::Tensor decay_rate(const at::Tensor& dd_A) const;

  torch::nn::Linear in_proj{nullptr}, out_proj{nullptr};
  at::Tensor dt_bias;                   // (H)
  at::Tensor B_bias, C_bias;            // (H, R, N)
  at::Tensor B_norm_weight, C_norm_weight;  // (N)
  at::Tensor mimo_x, mimo_z, mimo_o;    // (H, R, P), MIMO only
  at::Tensor D;                         // (H)
  at::Tensor norm_weight;               // (E), outproj_norm only

 private:
  // x (B, L, D); state null: from zeros, nothing kept. decode: L = 1 through the op's decode step.
  at::Tensor run(const at::Tensor& x, State* state, Trace* trace, bool decode);
  void check_state(const State& s, int64_t batch, const char* who) const;

  Mamba3Options opts_;
  int64_t d_model_, d_inner_, n_heads_, rank_, n_angles_;
  std::string backend_;
};

}  // namespace ssmlab::mixers
