#include "ssmlab/mixers/hgrn2.h"

#include <cmath>

#include <ATen/ATen.h>

#include "ssmlab/core/device.h"
#include "ssmlab/core/error.h"
#include "ssmlab/mixers/linear_attention.h"

namespace ssmlab::mixers {

Hgrn2Impl::Hgrn2Impl(const Hgrn2Options& opts, int64_t d_model, int64_t layer_idx, int64_t n_layers,
                     at::Generator& gen)
    : opts_(opts), d_model_(d_model) {
  SSMLAB_CHECK(d_model % opts.n_heads == 0, "hgrn2: d_model (", d_model, ") must be divisible by n_heads (",
               opts.n_heads, ")");
  head_v_ = d_model / opts.n_heads;
  gamma_ = opts.lower_bound >= 0 ? opts.lower_bound
                                 : static_cast<double>(layer_idx) / static_cast<double>(std::max<int64_t>(n_layers, 1));
  const int64_t D = d_model, HK = opts.n_heads * opts.expand_ratio;
  auto linear = [&](const char* name, int64_t in, int64_t out) {
    return register_module(name, torch::nn::Linear(torch::nn::LinearOptions(in, out).bias(false)));
  };
  q_proj = linear("q_proj", D, HK);
  f_proj = linear("f_proj", D, HK);
  i_proj = linear("i_proj", D, D);
  g_proj = linear("g_proj", D, D);
  norm_weight = register_module("g_norm", std::make_shared<torch::nn::Module>())
                    ->register_parameter("weight", at::ones({head_v_}));
  o_proj = linear("o_proj", D, D);
  at::NoGradGuard no_grad;
  for (auto* lin : {&q_proj, &f_proj, &i_proj, &g_proj, &o_proj}) {
    const double bound = 1.0 / std::sqrt(static_cast<double>((*lin)->weight.size(1)));
    (*lin)->weight.uniform_(-bound, bound, gen);
  }
}

State Hgrn2Impl::init_state(int64_t batch, c10::Device device) const {
  State s;
  s["state"] = at::zeros({batch, opts_.n_heads, opts_.expand_ratio, head_v_},
                         at::TensorOptions().dtype(at::kFloat).device(device));  // (B, H, K, V)
  return s;
}

at::Tensor Hgrn2Impl::run(const at::Tensor& x, at::Tensor* state, Trace* trace) {
  const int64_t B = x.size(0), L = x.size(1), H = opts_.n_heads, K = opts_.expand_ratio, V = head_v_;
  const at::Tensor q = q_proj(x).view({B, L, H, K});                                         // (B, L, H, K)
  const at::Tensor f = gamma_ + (1.0 - gamma_) * at::sigmoid(f_proj(x).view({B, L, H, K}));  // (B, L, H, K) forget
  const at::Tensor i = i_proj(x).view({B, L, H, V});                                         // (B, L, H, V)
  // The forget gate is the per-step decay; 1 - f writes the state (B) and q reads it (C).
  trace_record(trace, "decay", f);     // (B, L, H, K)
  trace_record(trace, "B", 1.0 - f);   // (B, L, H, K)
  trace_record(trace, "C", q);         // (B, L, H, K)
  std::optional<at::Tensor> s0;
  if (state) s0 = *state;
  auto la = linear_attention(q, 1.0 - f, i, at::log(f), /*u=*/std::nullopt, s0);  // o (B, L, H, V)
  if (state) *state = la.final_state;
  trace_record(trace, "state", la.final_state);
  const at::Tensor o = la.o.to(x.scalar_type());
  const at::Tensor normed = o * at::rsqrt(o.pow(2).mean(-1, /*keepdim=*/true) + opts_.norm_eps) * norm_weight;
  const at::Tensor out = o_proj(normed.reshape({B, L, d_model_}) * at::silu(g_proj(x)));  // (B, L, D)
  trace_record(trace, "mixer_out", out);
  return out;
}

at::Tensor Hgrn2Impl::forward(const at::Tensor& x, Trace* trace) {
  SSMLAB_CHECK(x.dim() == 3 && x.size(2) == d_model_, "hgrn2: input must be (B, L, D) with D = ", d_model_, "; got ",
               shape_str(x.sizes()));
  return run(x, nullptr, trace);
}

at::Tensor Hgrn2Impl::forward_stateful(const at::Tensor& x, State& state, Trace* trace) {
  SSMLAB_CHECK(x.dim() == 3 && x.size(2) == d_model_, "hgrn2: input must be (B, L, D) with D = ", d_model_, "; got ",
               shape_str(x.sizes()));
  SSMLAB_CHECK(state.tensors.count("state") && state.at("state").defined() && state.at("state").size(0) == x.size(0),
               "hgrn2.forward_stateful: state lacks 'state' for batch ", x.size(0), "; make it with init_state");
  at::Tensor s = state["state"].to(state_dtype(x.scalar_type()));
  const at::Tensor out = run(x, &s, trace);
  state["state"] = s;
  return out;
}

at::Tensor Hgrn2Impl::step(const at::Tensor& x_t, State& state) {
  SSMLAB_CHECK(x_t.dim() == 2 && x_t.size(1) == d_model_, "hgrn2.step: input must be (B, D) with D = ", d_model_,
               "; got ", shape_str(x_t.sizes()));
  at::Tensor s = state["state"].to(state_dtype(x_t.scalar_type()));
  const at::Tensor out = run(x_t.unsqueeze(1), &s, nullptr).squeeze(1);
  state["state"] = s;
  return out;
}

}  // namespace ssmlab::mixers
