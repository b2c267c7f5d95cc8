#include "ssmlab/mixers/rwkv6.h"

#include <ATen/ATen.h>

namespace ssmlab::mixers {

Rwkv6Impl::Rwkv6Impl(const Rwkv6Options& opts, int64_t d_model, int64_t layer_idx, int64_t n_layers, at::Generator& gen)
    : RwkvHeadsImpl("rwkv6", d_model, opts.head_size, opts.norm_eps), mix_rank_(opts.mix_rank) {
  const int64_t C = d_model, R = opts.mix_rank, Rw = opts.decay_rank;
  const std::pair<const char*, at::Tensor*> maa[] = {{"time_maa_x", &time_maa_x}, {"time_maa_w", &time_maa_w},
                                                     {"time_maa_k", &time_maa_k}, {"time_maa_v", &time_maa_v},
                                                     {"time_maa_r", &time_maa_r}, {"time_maa_g", &time_maa_g}};
  for (const auto& [name, t] : maa) *t = register_parameter(name, at::empty({C}));
  time_maa_w1 = register_parameter("time_maa_w1", at::zeros({C, 5 * R}));
  time_maa_w2 = register_parameter("time_maa_w2", at::empty({5, R, C}));
  time_decay = register_parameter("time_decay", at::empty({C}));
  time_decay_w1 = register_parameter("time_decay_w1", at::zeros({C, Rw}));
  time_decay_w2 = register_parameter("time_decay_w2", at::empty({Rw, C}));
  register_shared();

  // RWKV-LM v6 init (rwkv_heads.h has r0, r1, ddd, the decay and u):
  //   maa_k = 1 - ddd^r1, maa_v = 1 - (ddd^r1 + 0.3 r0), maa_r = maa_g = 1 - ddd^(0.5 r1), maa_x = maa_w = 1 - ddd^r1
  //   W1, D1 = 0;  W2, D2 ~ U(+-0.01)
  at::NoGradGuard no_grad;
  const InitSchedule s = init_schedule(layer_idx, n_layers);
  time_maa_k.copy_(1.0 - at::pow(s.ddd, s.r1));
  time_maa_v.copy_(1.0 - (at::pow(s.ddd, s.r1) + 0.3 * s.r0));
  time_maa_r.copy_(1.0 - at::pow(s.ddd, 0.5 * s.r1));
  time_maa_g.copy_(1.0 - at::pow(s.ddd, 0.5 * s.r1));
  time_maa_x.copy_(1.0 - at::pow(s.ddd, s.r1));
  time_maa_w.copy_(1.0 - at::pow(s.ddd, s.r1));
  time_maa_w2.uniform_(-0.01, 0.01, gen);
  time_decay_w2.uniform_(-0.01, 0.01, gen);
  time_decay.copy_(s.decay);
  init_shared(s, gen);
}

RwkvHeadsImpl::Mixed Rwkv6Impl::mix(const at::Tensor& x, const at::Tensor& prev, Trace* trace) {
  const int64_t B = x.size(0), L = x.size(1), H = heads_, K = head_size_, R = mix_rank_;
  const auto dt = x.scalar_type();
  const at::Tensor xx = prev - x;  // (B, L, D)
  const at::Tensor xxx = x + xx * time_maa_x.to(dt);
  const at::Tensor lora = at::tanh(at::matmul(xxx, time_maa_w1.to(dt))).view({B, L, 5, R});
  const at::Tensor m = at::einsum("blfr,frc->blfc", {lora, time_maa_w2.to(dt)});  // (B, L, 5, D)
  auto lerp = [&](int64_t i, const at::Tensor& maa) { return x + xx * (maa.to(dt) + m.select(2, i)); };
  const at::Tensor xw = lerp(0, time_maa_w), xk = lerp(1, time_maa_k), xv = lerp(2, time_maa_v),
                   xr = lerp(3, time_maa_r), xg = lerp(4, time_maa_g);
  Mixed out;
  out.r = receptance(xr).view({B, L, H, K});
  out.k = key(xk).view({B, L, H, K});
  out.v = value(xv).view({B, L, H, K});
  out.g = at::silu(gate(xg));  // (B, L, D)
  const at::Tensor ww = time_decay.to(dt) + at::matmul(at::tanh(at::matmul(xw, time_decay_w1.to(dt))),
                                                       time_decay_w2.to(dt));  // (B, L, D)
  out.log_w = -at::exp(ww).view({B, L, H, K});                                 // data-dependent decay
  trace_record(trace, "decay", at::exp(out.log_w));                            // (B, L, H, K)
  return out;
}

}  // namespace ssmlab::mixers
