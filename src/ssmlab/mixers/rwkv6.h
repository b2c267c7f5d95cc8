// RWKV-6 ("Finch") time mixer (spec §1.6; evaluated pretrained in SM): RWKV-5's matrix state per head with a
// data-dependent token shift (ddlerp, LoRA rank 32) and a data-dependent decay (LoRA rank 64):
//   xx = x_{t-1} - x;  m_{w,k,v,r,g} = tanh((x + xx maa_x) W1) W2;  x_* = x + xx (maa_* + m_*)
//   w_t = exp(-exp(time_decay + tanh(x_w D1) D2))        (per channel, per token)
//   o_t = r_t (S_{t-1} + diag(u) k_t^T v_t),  S_t = diag(w_t) S_{t-1} + k_t^T v_t;  out = output(GroupNorm_H(o) * silu(g))
// Init: RWKV-LM v6's formulas (from the public code, [recall]); the LoRA first factors start at zero as there.
// The recurrence is the plain-ATen time loop of linear_attention.h (no fused kernel yet).
#pragma once
#include <string>

#include "ssmlab/core/fields.h"
#include "ssmlab/mixers/rwkv_heads.h"

namespace ssmlab::mixers {

struct Rwkv6Options {
  int64_t head_size = 64;
  int64_t mix_rank = 32;    // ddlerp LoRA rank
  int64_t decay_rank = 64;  // decay LoRA rank
  double norm_eps = 64e-5;

  template <class V>
  void visit(V& v) {
    v("head_size", head_size, "K = V per head; H = d_model / head_size", Check::at_least(1));
    v("mix_rank", mix_rank, "rank of the data-dependent token-shift LoRA", Check::at_least(1));
    v("decay_rank", decay_rank, "rank of the data-dependent decay LoRA", Check::at_least(1));
    v("norm_eps", norm_eps, "epsilon of the per-head GroupNorm", Check::positive());
  }
};

class Rwkv6Impl : public RwkvHeadsImpl {
 public:
  Rwkv6Impl(const Rwkv6Options& opts, int64_t d_model, int64_t layer_idx, int64_t n_layers, at::Generator& gen);

  std::string kind() const override { return "rwkv6"; }

  at::Tensor time_maa_x, time_maa_w, time_maa_k, time_maa_v, time_maa_r, time_maa_g;  // (D)
  at::Tensor time_maa_w1;    // (D, 5 R)
  at::Tensor time_maa_w2;    // (5, R, D)
  at::Tensor time_decay;     // (D)
  at::Tensor time_decay_w1;  // (D, R_w)
  at::Tensor time_decay_w2;  // (R_w, D)

 private:
  Mixed mix(const at::Tensor& x, const at::Tensor& prev, Trace* trace) override;
  bool decay_per_position() const override { return true; }

  int64_t mix_rank_;
};

}  // namespace ssmlab::mixers
