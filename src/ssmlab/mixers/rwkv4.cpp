#include "ssmlab/mixers/rwkv4.h"

#include <cmath>

#include <ATen/ATen.h>

#include "ssmlab/core/device.h"
#include "ssmlab/core/error.h"
#include "ssmlab/ops/wkv/wkv.h"

namespace ssmlab::mixers {

Rwkv4Impl::Rwkv4Impl(const Rwkv4Options& opts, int64_t d_model, int64_t layer_idx, int64_t n_layers,
                     std::string backend, at::Generator& gen)
    : d_model_(d_model), backend_(std::move(backend)) {
  const int64_t n_layer = opts.init_n_layers > 0 ? opts.init_n_layers : n_layers;
  SSMLAB_CHECK(n_layer >= 2, "rwkv4: the init needs n_layer >= 2 (it divides by n_layer - 1); got ", n_layer);
  SSMLAB_CHECK(d_model >= 2, "rwkv4: d_model must be >= 2; got ", d_model);
  SSMLAB_CHECK(layer_idx >= 0 && layer_idx < n_layer, "rwkv4: layer_idx ", layer_idx, " outside [0, ", n_layer,
               ") of the init's n_layer");
  const int64_t C = d_model;
  time_decay = register_parameter("time_decay", at::empty({C}));
  time_first = register_parameter("time_first", at::empty({C}));
  time_mix_k = register_parameter("time_mix_k", at::empty({C}));
  time_mix_v = register_parameter("time_mix_v", at::empty({C}));
  time_mix_r = register_parameter("time_mix_r", at::empty({C}));
  auto linear = [&](const char* name) {
    return register_module(name, torch::nn::Linear(torch::nn::LinearOptions(C, C).bias(false)));
  };
  key = linear("key");
  value = linear("value");
  receptance = linear("receptance");
  output = linear("output");

  // RWKV-4 init (spec §1.6), with l = layer_idx, n = n_layer:
  //   time_decay[c] = -5 + 8 (c / (C - 1))^(0.7 + 1.3 l / (n - 1));  time_first = log 0.3 + 0.5 ((c + 1) % 3 - 1)
  //   mu_k = (c / C)^(1 - l / n),  mu_v = mu_k + 0.3 l / (n - 1),  mu_r = (c / C)^(0.5 (1 - l / n))
  at::NoGradGuard no_grad;
  const double l = static_cast<double>(layer_idx), n = static_cast<double>(n_layer);
  const double ratio_0_to_1 = l / (n - 1), ratio_1_to_almost0 = 1.0 - l / n;
  const at::Tensor c = at::arange(C, at::kDouble);
  time_decay.copy_(-5.0 + 8.0 * at::pow(c / static_cast<double>(C - 1), 0.7 + 1.3 * ratio_0_to_1));
  time_first.copy_(std::log(0.3) + 0.5 * (at::remainder(c + 1, 3) - 1));
  const at::Tensor frac = c / static_cast<double>(C);
  time_mix_k.copy_(at::pow(frac, ratio_1_to_almost0));
  time_mix_v.copy_(at::pow(frac, ratio_1_to_almost0) + 0.3 * ratio_0_to_1);
  time_mix_r.copy_(at::pow(frac, 0.5 * ratio_1_to_almost0));
  // nn.Linear default U(+-1/sqrt(C)); the model's zoology init re-draws every Linear from N(0, 0.02).
  const double bound = 1.0 / std::sqrt(static_cast<double>(C));
  for (auto* lin : {&key, &value, &receptance, &output}) (*lin)->weight.uniform_(-bound, bound, gen);
}

State Rwkv4Impl::init_state(int64_t batch, c10::Device device) const {
  State s;
  auto f32 = at::TensorOptions().dtype(at::kFloat).device(device);
  s["shift"] = at::zeros({batch, d_model_}, f32);                    // (B, D): x_{t-1}
  s["wkv"] = ops::wkv_empty_state(batch, d_model_, f32);            // (B, 3, D): (aa, bb, pp)
  return s;
}

at::Tensor Rwkv4Impl::run(const at::Tensor& x, const at::Tensor& xx, at::Tensor* wkv_state, Trace* trace,
                          bool stateful) {
  auto mix = [&](const at::Tensor& mu) {
    const at::Tensor m = mu.to(x.scalar_type());
    return x * m + xx * (1 - m);  // (B, L, D)
  };
  const at::Tensor k = key(mix(time_mix_k)), v = value(mix(time_mix_v)), r = receptance(mix(time_mix_r));
  const at::Tensor w = -at::exp(time_decay);  // (D) log of the per-step decay
  if (!stateful) trace_record(trace, "decay", at::exp(w));  // (D): time-invariant
  std::optional<at::Tensor> s0;
  if (wkv_state) s0 = *wkv_state;
  auto wkv = ops::wkv(w, time_first, k, v, s0, backend_);  // (B, L, D)
  trace_record(trace, "wkv", wkv.y);
  trace_record(trace, "state", wkv.final_state);
  if (wkv_state) *wkv_state = wkv.final_state;
  const at::Tensor out = output(at::sigmoid(r) * wkv.y.to(r.scalar_type()));  // (B, L, D)
  trace_record(trace, "mixer_out", out);
  return out;
}

at::Tensor Rwkv4Impl::forward(const at::Tensor& x, Trace* trace) {
  SSMLAB_CHECK(x.dim() == 3 && x.size(2) == d_model_, "rwkv4: input must be (B, L, D) with D = ", d_model_, "; got ",
               shape_str(x.sizes()));
  const at::Tensor xx = at::constant_pad_nd(x, {0, 0, 1, -1});  // (B, L, D): x_{t-1}, zero at t = 0
  return run(x, xx, nullptr, trace);
}

at::Tensor Rwkv4Impl::forward_stateful(const at::Tensor& x, State& state, Trace* trace) {
  SSMLAB_CHECK(x.dim() == 3 && x.size(2) == d_model_, "rwkv4: input must be (B, L, D) with D = ", d_model_, "; got ",
               shape_str(x.sizes()));
  for (const char* key : {"shift", "wkv"})
    SSMLAB_CHECK(state.tensors.count(key) && state.at(key).defined() && state.at(key).size(0) == x.size(0),
                 "rwkv4.forward_stateful: state lacks '", key, "' for batch ", x.size(0), "; make it with init_state");
  const int64_t L = x.size(1);
  const at::Tensor xx =
      L > 0 ? at::cat({state["shift"].to(x.scalar_type()).unsqueeze(1), x.narrow(1, 0, L - 1)}, 1) : x;  // (B, L, D)
  at::Tensor s = state["wkv"].to(state_dtype(x.scalar_type()));
  const at::Tensor out = run(x, xx, &s, trace, /*stateful=*/true);
  state["wkv"] = s;
  if (L > 0) state["shift"] = x.select(1, L - 1);
  return out;
}

at::Tensor Rwkv4Impl::step(const at::Tensor& x_t, State& state) {
  SSMLAB_CHECK(x_t.dim() == 2 && x_t.size(1) == d_model_, "rwkv4.step: input must be (B, D) with D = ", d_model_,
               "; got ", shape_str(x_t.sizes()));
  at::Tensor& shift = state["shift"];
  const at::Tensor xx = shift.to(x_t.scalar_type()).unsqueeze(1);  // (B, 1, D)
  at::Tensor s = state["wkv"].to(state_dtype(x_t.scalar_type()));
  const at::Tensor out = run(x_t.unsqueeze(1), xx, &s, nullptr).squeeze(1);
  state["wkv"] = s;
  shift = x_t;
  return out;
}

}  // namespace ssmlab::mixers
