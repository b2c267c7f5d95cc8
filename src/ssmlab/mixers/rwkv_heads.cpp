#include "ssmlab/mixers/rwkv_heads.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>

#include "ssmlab/core/device.h"
#include "ssmlab/core/error.h"
#include "ssmlab/mixers/linear_attention.h"

namespace ssmlab::mixers {

RwkvHeadsImpl::RwkvHeadsImpl(const std::string& kind, int64_t d_model, int64_t head_size, double norm_eps)
    : d_model_(d_model), head_size_(head_size), norm_eps_(norm_eps) {
  SSMLAB_CHECK(d_model % head_size == 0, kind, ": d_model (", d_model, ") must be divisible by head_size (", head_size,
               ")");
  SSMLAB_CHECK(d_model >= 2, kind, ": d_model must be >= 2; got ", d_model);
  heads_ = d_model / head_size;
}

void RwkvHeadsImpl::register_shared() {
  const int64_t C = d_model_;
  time_faaaa = register_parameter("time_faaaa", at::empty({heads_, head_size_}));
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
}

RwkvHeadsImpl::InitSchedule RwkvHeadsImpl::init_schedule(int64_t layer_idx, int64_t n_layers) const {
  const int64_t C = d_model_;
  const double l = static_cast<double>(layer_idx), n = static_cast<double>(std::max<int64_t>(n_layers, 2));
  InitSchedule s;
  s.r0 = l / (n - 1);
  s.r1 = 1.0 - l / n;
  s.c = at::arange(C, at::kDouble);
  s.ddd = s.c / static_cast<double>(C);
  s.decay = -6.0 + 5.0 * at::pow(s.c / static_cast<double>(C - 1), 0.7 + 1.3 * s.r0);
  return s;
}

void RwkvHeadsImpl::init_shared(const InitSchedule& s, at::Generator& gen) {
  at::NoGradGuard no_grad;
  const at::Tensor cc = s.c / static_cast<double>(d_model_ - 1);
  time_faaaa.copy_((s.r0 * (1.0 - cc) + 0.1 * (at::remainder(s.c + 1, 3) - 1)).view({heads_, head_size_}));
  const double bound = 1.0 / std::sqrt(static_cast<double>(d_model_));
  for (auto* lin : {&receptance, &key, &value, &gate, &output}) (*lin)->weight.uniform_(-bound, bound, gen);
}

State RwkvHeadsImpl::init_state(int64_t batch, c10::Device device) const {
  State s;
  auto f32 = at::TensorOptions().dtype(at::kFloat).device(device);
  s["shift"] = at::zeros({batch, d_model_}, f32);                      // (B, D)
  s["wkv"] = at::zeros({batch, heads_, head_size_, head_size_}, f32);  // (B, H, K, K)
  return s;
}

at::Tensor RwkvHeadsImpl::run(const at::Tensor& x, const at::Tensor& prev, at::Tensor* wkv_state, Trace* trace,
                              bool stateful) {
  const int64_t B = x.size(0), L = x.size(1), C = d_model_, H = heads_;
  const Mixed m = mix(x, prev, stateful && !decay_per_position() ? nullptr : trace);
  // In the SSM reading of S_t = diag(w_t) S_{t-1} + k_t^T v_t, o_t = r_t (...): k writes the state (B), r reads it (C).
  trace_record(trace, "B", m.k);  // (B, L, H, K)
  trace_record(trace, "C", m.r);  // (B, L, H, K)
  std::optional<at::Tensor> s0;
  if (wkv_state) s0 = *wkv_state;
  auto la = linear_attention(m.r, m.k, m.v, m.log_w, time_faaaa, s0);  // o (B, L, H, K)
  if (wkv_state) *wkv_state = la.final_state;
  trace_record(trace, "state", la.final_state);
  const at::Tensor o = at::group_norm(la.o.reshape({B * L, C}), H, ln_weight, ln_bias, norm_eps_);
  const at::Tensor out = output(o.view({B, L, C}).to(m.g.scalar_type()) * m.g);  // (B, L, D)
  trace_record(trace, "mixer_out", out);
  return out;
}

at::Tensor RwkvHeadsImpl::forward(const at::Tensor& x, Trace* trace) {
  SSMLAB_CHECK(x.dim() == 3 && x.size(2) == d_model_, kind(), ": input must be (B, L, D) with D = ", d_model_, "; got ",
               shape_str(x.sizes()));
  return run(x, at::constant_pad_nd(x, {0, 0, 1, -1}), nullptr, trace);
}

at::Tensor RwkvHeadsImpl::forward_stateful(const at::Tensor& x, State& state, Trace* trace) {
  SSMLAB_CHECK(x.dim() == 3 && x.size(2) == d_model_, kind(), ": input must be (B, L, D) with D = ", d_model_,
               "; got ", shape_str(x.sizes()));
  for (const char* key : {"shift", "wkv"})
    SSMLAB_CHECK(state.tensors.count(key) && state.at(key).defined() && state.at(key).size(0) == x.size(0), kind(),
                 ".forward_stateful: state lacks '", key, "' for batch ", x.size(0), "; make it with init_state");
  const int64_t L = x.size(1);
  // The previous tokens: the carried one, then the segment's own but its last.
  const at::Tensor prev =
      L > 0 ? at::cat({state["shift"].to(x.scalar_type()).unsqueeze(1), x.narrow(1, 0, L - 1)}, 1) : x;  // (B, L, D)
  at::Tensor s = state["wkv"].to(state_dtype(x.scalar_type()));
  const at::Tensor out = run(x, prev, &s, trace, /*stateful=*/true);
  state["wkv"] = s;
  if (L > 0) state["shift"] = x.select(1, L - 1);
  return out;
}

at::Tensor RwkvHeadsImpl::step(const at::Tensor& x_t, State& state) {
  SSMLAB_CHECK(x_t.dim() == 2 && x_t.size(1) == d_model_, kind(), ".step: input must be (B, D) with D = ", d_model_,
               "; got ", shape_str(x_t.sizes()));
  at::Tensor s = state["wkv"].to(state_dtype(x_t.scalar_type()));
  const at::Tensor out = run(x_t.unsqueeze(1), state["shift"].to(x_t.scalar_type()).unsqueeze(1), &s, nullptr);
  state["wkv"] = s;
  state["shift"] = x_t;
  return out.squeeze(1);
}

}  // namespace ssmlab::mixers
