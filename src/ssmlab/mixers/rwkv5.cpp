#include "ssmlab/mixers/rwkv5.h"

#include <cmath>

#include <ATen/ATen.h>

#include "ssmlab/core/device.h"
#include "ssmlab/core/error.h"
#include "ssmlab/mixers/linear_attention.h"

namespace ssmlab::mixers {

Rwkv5Impl::Rwkv5Impl(const Rwkv5Options& opts, int64_t d_model, int64_t layer_idx, int64_t n_layers,
                     at::Generator& gen)
    : opts_(opts), d_model_(d_model) {
  SSMLAB_CHECK(d_model % opts.head_size == 0, "rwkv5: d_model (", d_model, ") must be divisible by head_size (",
               opts.head_size, ")");
  SSMLAB_CHECK(d_model >= 2, "rwkv5: d_model must be >= 2; got ", d_model);
  heads_ = d_model / opts.head_size;
  const int64_t C = d_model, H = heads_, K = opts.head_size;
  time_mix_k = register_parameter("time_mix_k", at::empty({C}));
  time_mix_v = register_parameter("time_mix_v", at::empty({C}));
  time_mix_r = register_parameter("time_mix_r", at::empty({C}));
  time_mix_g = register_parameter("time_mix_g", at::empty({C}));
  time_decay = register_parameter("time_decay", at::empty({H, K}));
  time_faaaa = register_parameter("time_faaaa", at::empty({H, K}));
  auto linear = [&](const char* name) {
    return register_module(name, torch::nn::Linear(torch::nn::LinearOptions(C, C).bias(false)));
  };
  receptance = linear("receptance");
  key = linear("key");
  value = linear("value");
  gate = linear("gate");
  output = linear("output");
  auto ln = register_module("ln_x", std::make_shared<torch::nn::Module>());
  ln_weight = ln->register_parameter("weight", at::ones({C}));
  ln_bias = ln->register_parameter("bias", at::zeros({C}));

  // RWKV-LM v5 init: r0 = l / (n - 1), r1 = 1 - l / n, ddd = c / C;
  //   mu_k = ddd^r1, mu_v = ddd^r1 + 0.3 r0, mu_r = mu_g = ddd^(0.5 r1)
  //   time_decay[c] = -6 + 5 (c / (C - 1))^(0.7 + 1.3 r0);  u[c] = r0 (1 - c / (C - 1)) + 0.1 ((c + 1) % 3 - 1)
  at::NoGradGuard no_grad;
  const double l = static_cast<double>(layer_idx), n = static_cast<double>(std::max<int64_t>(n_layers, 2));
  const double r0 = l / (n - 1), r1 = 1.0 - l / n;
  const at::Tensor c = at::arange(C, at::kDouble), ddd = c / static_cast<double>(C);
  time_mix_k.copy_(at::pow(ddd, r1));
  time_mix_v.copy_(at::pow(ddd, r1) + 0.3 * r0);
  time_mix_r.copy_(at::pow(ddd, 0.5 * r1));
  time_mix_g.copy_(at::pow(ddd, 0.5 * r1));
  const at::Tensor cc = c / static_cast<double>(C - 1);
  time_decay.copy_((-6.0 + 5.0 * at::pow(cc, 0.7 + 1.3 * r0)).view({H, K}));
  time_faaaa.copy_((r0 * (1.0 - cc) + 0.1 * (at::remainder(c + 1, 3) - 1)).view({H, K}));
  const double bound = 1.0 / std::sqrt(static_cast<double>(C));
  for (auto* lin : {&receptance, &key, &value, &gate, &output}) (*lin)->weight.uniform_(-bound, bound, gen);
}

State Rwkv5Impl::init_state(int64_t batch, c10::Device device) const {
  State s;
  auto f32 = at::TensorOptions().dtype(at::kFloat).device(device);
  s["shift"] = at::zeros({batch, d_model_}, f32);                                        // (B, D)
  s["wkv"] = at::zeros({batch, heads_, opts_.head_size, opts_.head_size}, f32);          // (B, H, K, K)
  return s;
}

at::Tensor Rwkv5Impl::run(const at::Tensor& x, const at::Tensor& xx, at::Tensor* wkv_state, Trace* trace) {
  const int64_t B = x.size(0), L = x.size(1), H = heads_, K = opts_.head_size;
  auto mix = [&](const at::Tensor& mu) {
    const at::Tensor m = mu.to(x.scalar_type());
    return x * m + xx * (1 - m);  // (B, L, D)
  };
  const at::Tensor r = receptance(mix(time_mix_r)).view({B, L, H, K});
  const at::Tensor k = key(mix(time_mix_k)).view({B, L, H, K});
  const at::Tensor v = value(mix(time_mix_v)).view({B, L, H, K});
  const at::Tensor g = at::silu(gate(mix(time_mix_g)));                       // (B, L, D)
  const at::Tensor log_w = (-at::exp(time_decay)).expand({B, L, H, K});      // static decay
  std::optional<at::Tensor> s0;
  if (wkv_state) s0 = *wkv_state;
  auto la = linear_attention(r, k, v, log_w, time_faaaa, s0);                // o (B, L, H, K)
  if (wkv_state) *wkv_state = la.final_state;
  trace_record(trace, "state", la.final_state);
  const at::Tensor o = at::group_norm(la.o.reshape({B * L, d_model_}), H, ln_weight, ln_bias, opts_.norm_eps);
  const at::Tensor out = output(o.view({B, L, d_model_}).to(g.scalar_type()) * g);  // (B, L, D)
  trace_record(trace, "mixer_out", out);
  return out;
}

at::Tensor Rwkv5Impl::forward(const at::Tensor& x, Trace* trace) {
  SSMLAB_CHECK(x.dim() == 3 && x.size(2) == d_model_, "rwkv5: input must be (B, L, D) with D = ", d_model_, "; got ",
               shape_str(x.sizes()));
  return run(x, at::constant_pad_nd(x, {0, 0, 1, -1}), nullptr, trace);
}

at::Tensor Rwkv5Impl::step(const at::Tensor& x_t, State& state) {
  SSMLAB_CHECK(x_t.dim() == 2 && x_t.size(1) == d_model_, "rwkv5.step: input must be (B, D) with D = ", d_model_,
               "; got ", shape_str(x_t.sizes()));
  at::Tensor s = state["wkv"].to(state_dtype(x_t.scalar_type()));
  const at::Tensor out = run(x_t.unsqueeze(1), state["shift"].to(x_t.scalar_type()).unsqueeze(1), &s, nullptr);
  state["wkv"] = s;
  state["shift"] = x_t;
  return out.squeeze(1);
}

}  // namespace ssmlab::mixers
