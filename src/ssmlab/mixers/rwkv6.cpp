#include "ssmlab/mixers/rwkv6.h"

#include <cmath>

#include <ATen/ATen.h>

#include "ssmlab/core/device.h"
#include "ssmlab/core/error.h"
#include "ssmlab/mixers/linear_attention.h"

namespace ssmlab::mixers {

Rwkv6Impl::Rwkv6Impl(const Rwkv6Options& opts, int64_t d_model, int64_t layer_idx, int64_t n_layers,
                     at::Generator& gen)
    : opts_(opts), d_model_(d_model) {
  SSMLAB_CHECK(d_model % opts.head_size == 0, "rwkv6: d_model (", d_model, ") must be divisible by head_size (",
               opts.head_size, ")");
  SSMLAB_CHECK(d_model >= 2, "rwkv6: d_model must be >= 2; got ", d_model);
  heads_ = d_model / opts.head_size;
  const int64_t C = d_model, H = heads_, K = opts.head_size, R = opts.mix_rank, Rw = opts.decay_rank;
  const std::pair<const char*, at::Tensor*> maa[] = {{"time_maa_x", &time_maa_x}, {"time_maa_w", &time_maa_w},
                                                      {"time_maa_k", &time_maa_k}, {"time_maa_v", &time_maa_v},
                                                      {"time_maa_r", &time_maa_r}, {"time_maa_g", &time_maa_g}};
  for (const auto& [name, t] : maa) *t = register_parameter(name, at::empty({C}));
  time_maa_w1 = register_parameter("time_maa_w1", at::zeros({C, 5 * R}));
  time_maa_w2 = register_parameter("time_maa_w2", at::empty({5, R, C}));
  time_decay = register_parameter("time_decay", at::empty({C}));
  time_decay_w1 = register_parameter("time_decay_w1", at::zeros({C, Rw}));
  time_decay_w2 = register_parameter("time_decay_w2", at::empty({Rw, C}));
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

  // RWKV-LM v6 init: r0 = l / (n - 1), r1 = 1 - l / n, ddd = c / C;
  //   maa_k = 1 - ddd^r1, maa_v = 1 - (ddd^r1 + 0.3 r0), maa_r = maa_g = 1 - ddd^(0.5 r1), maa_x = maa_w = 1 - ddd^r1
  //   W1, D1 = 0;  W2, D2 ~ U(+-0.01);  time_decay[c] = -6 + 5 (c / (C - 1))^(0.7 + 1.3 r0);  u as RWKV-5.
  at::NoGradGuard no_grad;
  const double l = static_cast<double>(layer_idx), n = static_cast<double>(std::max<int64_t>(n_layers, 2));
  const double r0 = l / (n - 1), r1 = 1.0 - l / n;
  const at::Tensor c = at::arange(C, at::kDouble), ddd = c / static_cast<double>(C);
  time_maa_k.copy_(1.0 - at::pow(ddd, r1));
  time_maa_v.copy_(1.0 - (at::pow(ddd, r1) + 0.3 * r0));
  time_maa_r.copy_(1.0 - at::pow(ddd, 0.5 * r1));
  time_maa_g.copy_(1.0 - at::pow(ddd, 0.5 * r1));
  time_maa_x.copy_(1.0 - at::pow(ddd, r1));
  time_maa_w.copy_(1.0 - at::pow(ddd, r1));
  time_maa_w2.uniform_(-0.01, 0.01, gen);
  time_decay_w2.uniform_(-0.01, 0.01, gen);
  const at::Tensor cc = c / static_cast<double>(C - 1);
  time_decay.copy_(-6.0 + 5.0 * at::pow(cc, 0.7 + 1.3 * r0));
  time_faaaa.copy_((r0 * (1.0 - cc) + 0.1 * (at::remainder(c + 1, 3) - 1)).view({H, K}));
  const double bound = 1.0 / std::sqrt(static_cast<double>(C));
  for (auto* lin : {&receptance, &key, &value, &gate, &output}) (*lin)->weight.uniform_(-bound, bound, gen);
}

State Rwkv6Impl::init_state(int64_t batch, c10::Device device) const {
  State s;
  auto f32 = at::TensorOptions().dtype(at::kFloat).device(device);
  s["shift"] = at::zeros({batch, d_model_}, f32);
  s["wkv"] = at::zeros({batch, heads_, opts_.head_size, opts_.head_size}, f32);
  return s;
}

at::Tensor Rwkv6Impl::run(const at::Tensor& x, const at::Tensor& prev, at::Tensor* wkv_state, Trace* trace) {
  const int64_t B = x.size(0), L = x.size(1), C = d_model_, H = heads_, K = opts_.head_size, R = opts_.mix_rank;
  const auto dt = x.scalar_type();
  const at::Tensor xx = prev - x;                                                      // (B, L, D)
  const at::Tensor xxx = x + xx * time_maa_x.to(dt);
  const at::Tensor lora = at::tanh(at::matmul(xxx, time_maa_w1.to(dt))).view({B, L, 5, R});
  const at::Tensor m = at::einsum("blfr,frc->blfc", {lora, time_maa_w2.to(dt)});       // (B, L, 5, D)
  auto lerp = [&](int64_t i, const at::Tensor& maa) { return x + xx * (maa.to(dt) + m.select(2, i)); };
  const at::Tensor xw = lerp(0, time_maa_w), xk = lerp(1, time_maa_k), xv = lerp(2, time_maa_v),
                   xr = lerp(3, time_maa_r), xg = lerp(4, time_maa_g);
  const at::Tensor r = receptance(xr).view({B, L, H, K});
  const at::Tensor k = key(xk).view({B, L, H, K});
  const at::Tensor v = value(xv).view({B, L, H, K});
  const at::Tensor g = at::silu(gate(xg));                                             // (B, L, D)
  const at::Tensor ww = time_decay.to(dt) + at::matmul(at::tanh(at::matmul(xw, time_decay_w1.to(dt))),
                                                       time_decay_w2.to(dt));          // (B, L, D)
  const at::Tensor log_w = -at::exp(ww).view({B, L, H, K});                            // data-dependent decay
  trace_record(trace, "decay", at::exp(log_w));
  std::optional<at::Tensor> s0;
  if (wkv_state) s0 = *wkv_state;
  auto la = linear_attention(r, k, v, log_w, time_faaaa, s0);
  if (wkv_state) *wkv_state = la.final_state;
  trace_record(trace, "state", la.final_state);
  const at::Tensor o = at::group_norm(la.o.reshape({B * L, C}), H, ln_weight, ln_bias, opts_.norm_eps);
  const at::Tensor out = output(o.view({B, L, C}).to(g.scalar_type()) * g);
  trace_record(trace, "mixer_out", out);
  return out;
}

at::Tensor Rwkv6Impl::forward(const at::Tensor& x, Trace* trace) {
  SSMLAB_CHECK(x.dim() == 3 && x.size(2) == d_model_, "rwkv6: input must be (B, L, D) with D = ", d_model_, "; got ",
               shape_str(x.sizes()));
  return run(x, at::constant_pad_nd(x, {0, 0, 1, -1}), nullptr, trace);
}

at::Tensor Rwkv6Impl::step(const at::Tensor& x_t, State& state) {
  SSMLAB_CHECK(x_t.dim() == 2 && x_t.size(1) == d_model_, "rwkv6.step: input must be (B, D) with D = ", d_model_,
               "; got ", shape_str(x_t.sizes()));
  at::Tensor s = state["wkv"].to(state_dtype(x_t.scalar_type()));
  const at::Tensor out = run(x_t.unsqueeze(1), state["shift"].to(x_t.scalar_type()).unsqueeze(1), &s, nullptr);
  state["wkv"] = s;
  state["shift"] = x_t;
  return out.squeeze(1);
}

}  // namespace ssmlab::mixers
