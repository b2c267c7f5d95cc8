// RWKV-5 ("Eagle") time mixer (spec §1.6; evaluated pretrained in SM): matrix state per head (K = V = head_size),
//   xx = x_{t-1};  x_* = x mu_* + xx (1 - mu_*) for r, k, v, g
//   r, k, v = receptance, key, value (no bias);  g = silu(gate(x_g))
//   o_t = r_t (S_{t-1} + diag(u) k_t^T v_t),  S_t = diag(w) S_{t-1} + k_t^T v_t,  w = exp(-exp(time_decay)) static
//   out = output(GroupNorm_H(o) * g)
// Init: RWKV-LM v5's formulas (from the public code, [recall] in the spec's terms); the recurrence is the
// plain-ATen time loop of linear_attention.h (no fused kernel yet).
#pragma once
#include <string>

#include "ssmlab/core/fields.h"
#include "ssmlab/mixers/rwkv_heads.h"

namespace ssmlab::mixers {

struct Rwkv5Options {
  int64_t head_size = 64;
  double norm_eps = 64e-5;  // GroupNorm eps = 1e-5 * head_size_divisor^2 (8^2) as in RWKV-LM v5

  template <class V>
  void visit(V& v) {
    v("head_size", head_size, "K = V per head; H = d_model / head_size", Check::at_least(1));
    v("norm_eps", norm_eps, "epsilon of the per-head GroupNorm", Check::positive());
  }
};

class Rwkv5Impl : public RwkvHeadsImpl {
 public:
  Rwkv5Impl(const Rwkv5Options& opts, int64_t d_model, int64_t layer_idx, int64_t n_layers, at::Generator& gen);

  std::string kind() const override { return "rwkv5"; }

  at::Tensor time_mix_k, time_mix_v, time_mix_r, time_mix_g;  // (D)
  at::Tensor time_decay;                                      // (H, K)

 private:
  Mixed mix(const at::Tensor& x, const at::Tensor& prev, Trace* trace) override;
};

}  // namespace ssmlab::mixers
