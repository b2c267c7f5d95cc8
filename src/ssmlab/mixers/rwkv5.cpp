#include "ssmlab/mixers/rwkv5.h"

#include <ATen/ATen.h>

namespace ssmlab::mixers {

Rwkv5Impl::Rwkv5Impl(const Rwkv5Options& opts, int64_t d_model, int64_t layer_idx, int64_t n_layers, at::Generator& gen)
    : RwkvHeadsImpl("rwkv5", d_model, opts.head_size, opts.norm_eps) {
  const int64_t C = d_model;
  time_mix_k = register_parameter("time_mix_k", at::empty({C}));
  time_mix_v = register_parameter("time_mix_v", at::empty({C}));
  time_mix_r = register_parameter("time_mix_r", at::empty({C}));
  time_mix_g = register_parameter("time_mix_g", at::empty({C}));
  time_decay = register_parameter("time_decay", at::empty({heads_, head_size_}));
  register_shared();

  // RWKV-LM v5 init (rwkv_heads.h has r0, r1, ddd, the decay and u):
  //   mu_k = ddd^r1, mu_v = ddd^r1 + 0.3 r0, mu_r = mu_g = ddd^(0.5 r1)
  at::NoGradGuard no_grad;
  const InitSchedule s = init_schedule(layer_idx, n_layers);
  time_mix_k.copy_(at::pow(s.ddd, s.r1));
  time_mix_v.copy_(at::pow(s.ddd, s.r1) + 0.3 * s.r0);
  time_mix_r.copy_(at::pow(s.ddd, 0.5 * s.r1));
  time_mix_g.copy_(at::pow(s.ddd, 0.5 * s.r1));
  time_decay.copy_(s.decay.view({heads_, head_size_}));
  init_shared(s, gen);
}

RwkvHeadsImpl::Mixed Rwkv5Impl::mix(const at::Tensor& x, const at::Tensor& xx, Trace* trace) {
  const int64_t B = x.size(0), L = x.size(1), H = heads_, K = head_size_;
  auto lerp = [&](const at::Tensor& mu) {
    const at::Tensor m = mu.to(x.scalar_type());
    return x * m + xx * (1 - m);  // (B, L, D)
  };
  Mixed out;
  out.r = receptance(lerp(time_mix_r)).view({B, L, H, K});
  out.k = key(lerp(time_mix_k)).view({B, L, H, K});
  out.v = value(lerp(time_mix_v)).view({B, L, H, K});
  out.g = at::silu(gate(lerp(time_mix_g)));                 // (B, L, D)
  out.log_w = (-at::exp(time_decay)).expand({B, L, H, K});  // static decay
  trace_record(trace, "decay", at::exp(-at::exp(time_decay)));  // (H, K): time-invariant
  return out;
}

}  // namespace ssmlab::mixers
