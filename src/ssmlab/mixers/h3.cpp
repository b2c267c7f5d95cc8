#include "ssmlab/mixers/h3.h"

#include <cmath>

#include <ATen/ATen.h>

#include "ssmlab/core/device.h"
#include "ssmlab/core/error.h"

namespace ssmlab::mixers {

H3Impl::H3Impl(const H3Options& opts, int64_t d_model, at::Generator& gen) : opts_(opts), d_model_(d_model) {
  SSMLAB_CHECK(d_model % opts.head_dim == 0, "h3: d_model (", d_model, ") must be divisible by head_dim (",
               opts.head_dim, ")");
  heads_ = d_model / opts.head_dim;
  const int64_t N = opts.d_state;
  auto linear = [&](const char* name) {
    return register_module(name, torch::nn::Linear(torch::nn::LinearOptions(d_model, d_model).bias(true)));
  };
  q_proj = linear("q_proj");
  k_proj = linear("k_proj");
  v_proj = linear("v_proj");
  auto shift = register_module("shift", std::make_shared<torch::nn::Module>());
  shift_C = shift->register_parameter("C", at::empty({d_model, N}));
  shift_D = shift->register_parameter("D", at::empty({d_model}));
  ssm = register_module("ssm", std::make_shared<DiagSsmImpl>(heads_, N, "bilinear", opts.dt_min, opts.dt_max, gen));
  D = register_parameter("D", at::empty({heads_}));
  output_linear = linear("output_linear");
  at::NoGradGuard no_grad;
  const double bound = 1.0 / std::sqrt(static_cast<double>(d_model));
  for (auto* lin : {&q_proj, &k_proj, &v_proj, &output_linear}) {
    (*lin)->weight.uniform_(-bound, bound, gen);
    (*lin)->bias.uniform_(-bound, bound, gen);
  }
  // kaiming_uniform(a = sqrt 5) on (D, N): U(+-1/sqrt(N)); D_shift, D_diag ~ N(0, 1) (spec §1.4).
  const double shift_bound = 1.0 / std::sqrt(static_cast<double>(N));
  shift_C.uniform_(-shift_bound, shift_bound, gen);
  shift_D.normal_(0.0, 1.0, gen);
  D.normal_(0.0, 1.0, gen);
}

int64_t H3Impl::state_size() const {
  const int64_t dh2 = opts_.head_dim * opts_.head_dim;
  return d_model_ * (opts_.d_state - 1) + heads_ * dh2 * (opts_.d_state + opts_.l_max);
}

at::Tensor H3Impl::finish(const at::Tensor& q, const at::Tensor& s, int64_t B, int64_t L) {
  const at::Tensor y = (q.unsqueeze(-1) * s).sum(-2);            // (B, L, H, d_h): sum_i q_i s_ij
  return output_linear(y.reshape({B, L, d_model_}));             // (B, L, D)
}

at::Tensor H3Impl::forward(const at::Tensor& x, Trace* trace) {
  SSMLAB_CHECK(x.dim() == 3 && x.size(2) == d_model_, "h3: input must be (B, L, D) with D = ", d_model_, "; got ",
               shape_str(x.sizes()));
  const int64_t B = x.size(0), L = x.size(1), H = heads_, P = opts_.head_dim, N = opts_.d_state;
  const auto ct = state_dtype(x.scalar_type());
  const at::Tensor q = q_proj(x).to(ct), k = k_proj(x).to(ct), v = v_proj(x).to(ct);  // (B, L, D)
  // Shift SSM: causal FIR with N taps, k'_t = sum_j C[:, j] k_{t-j} + D_shift k_t (depthwise conv1d).
  const at::Tensor taps = shift_C.to(ct).flip(-1).unsqueeze(1);                         // (D, 1, N)
  const at::Tensor kpad = at::constant_pad_nd(k.transpose(1, 2), {N - 1, 0});           // (B, D, L + N - 1)
  const at::Tensor ks = at::conv1d(kpad, taps, /*bias=*/std::nullopt, /*stride=*/at::IntArrayRef{1},
                                      /*padding=*/at::IntArrayRef{0}, /*dilation=*/at::IntArrayRef{1},
                                      /*groups=*/d_model_).transpose(1, 2) + k * shift_D.to(ct);  // (B, L, D)
  const at::Tensor kv = ks.reshape({B, L, H, P, 1}) * v.view({B, L, H, 1, P});             // (B, L, H, d_h, d_h)
  const int64_t T = opts_.l_max > 0 ? std::min(L, opts_.l_max) : L;
  const at::Tensor kern = ssm->kernel(T, ct);                                           // (T, H)
  trace_record(trace, "kernel", kern);
  if (trace != nullptr && trace->wants("decay")) trace_record(trace, "decay", ssm->decay(ct));  // (H, N/2, 2)
  const at::Tensor s = fft_causal_conv(kv, kern.view({T, H, 1, 1})) + kv * D.to(ct).view({H, 1, 1});
  const at::Tensor out = finish(q.view({B, L, H, P}), s, B, L).to(x.scalar_type());
  trace_record(trace, "mixer_out", out);
  return out;
}

State H3Impl::init_state(int64_t batch, c10::Device device) const {
  State s;
  const int64_t P = opts_.head_dim;
  auto f32 = at::TensorOptions().dtype(at::kFloat).device(device);
  s["shift"] = at::zeros({batch, opts_.d_state - 1, d_model_}, f32);       // (B, N-1, D): k_{t-N+1} .. k_{t-1}
  s["ssm"] = at::zeros({batch, heads_, P, P, ssm->modes(), 2}, f32);       // (B, H, d_h, d_h, N/2, 2)
  if (opts_.l_max > 0) s["window"] = at::zeros({batch, opts_.l_max, heads_, P, P}, f32);  // (B, l_max, H, d_h, d_h)
  return s;
}

at::Tensor H3Impl::step(const at::Tensor& x_t, State& state) {
  SSMLAB_CHECK(x_t.dim() == 2 && x_t.size(1) == d_model_, "h3.step: input must be (B, D) with D = ", d_model_,
               "; got ", shape_str(x_t.sizes()));
  const int64_t B = x_t.size(0), H = heads_, P = opts_.head_dim, N = opts_.d_state;
  const auto ct = state_dtype(x_t.scalar_type());
  const at::Tensor q = q_proj(x_t).to(ct), k = k_proj(x_t).to(ct), v = v_proj(x_t).to(ct);  // (B, D)
  at::Tensor& hist = state["shift"];
  const at::Tensor window = at::cat({hist.to(ct), k.unsqueeze(1)}, 1);           // (B, N, D): k_{t-N+1} .. k_t
  const at::Tensor ks = (window * shift_C.to(ct).flip(-1).t()).sum(1) + k * shift_D.to(ct);  // (B, D)
  hist = window.narrow(1, 1, N - 1);
  const at::Tensor kv = ks.view({B, H, P, 1}) * v.view({B, H, 1, P});            // (B, H, d_h, d_h)
  at::Tensor none;
  at::Tensor& kv_window = opts_.l_max > 0 ? state["window"] : none;
  const at::Tensor s = ssm->step(kv, state["ssm"], kv_window, opts_.l_max) + kv * D.to(ct).view({H, 1, 1});
  return finish(q.view({B, 1, H, P}), s.unsqueeze(1), B, 1).squeeze(1).to(x_t.scalar_type());
}

}  // namespace ssmlab::mixers

namespace ssmlab::mixers {

at::Tensor H3Impl::forward_stateful(const at::Tensor& x, State& state, Trace* trace) {
  SSMLAB_CHECK(x.dim() == 3 && x.size(2) == d_model_, "h3: input must be (B, L, D) with D = ", d_model_, "; got ",
               shape_str(x.sizes()));
  for (const char* key : {"shift", "ssm"})
    SSMLAB_CHECK(state.tensors.count(key) && state.at(key).defined() && state.at(key).size(0) == x.size(0),
                 "h3.forward_stateful: state lacks '", key, "' for batch ", x.size(0), "; make it with init_state");
  const int64_t B = x.size(0), L = x.size(1), H = heads_, P = opts_.head_dim, N = opts_.d_state;
  const auto ct = state_dtype(x.scalar_type());
  const at::Tensor q = q_proj(x).to(ct), k = k_proj(x).to(ct), v = v_proj(x).to(ct);  // (B, L, D)
  // Shift SSM over the carried keys k_{-N+1} .. k_{-1} followed by the segment's.
  at::Tensor& hist = state["shift"];                                                    // (B, N-1, D)
  const at::Tensor kfull = at::cat({hist.to(ct), k}, 1);                                // (B, N-1+L, D)
  const at::Tensor taps = shift_C.to(ct).flip(-1).unsqueeze(1);                         // (D, 1, N)
  const at::Tensor ks = at::conv1d(kfull.transpose(1, 2), taps, /*bias=*/std::nullopt, /*stride=*/at::IntArrayRef{1},
                                   /*padding=*/at::IntArrayRef{0}, /*dilation=*/at::IntArrayRef{1},
                                   /*groups=*/d_model_).transpose(1, 2) + k * shift_D.to(ct);  // (B, L, D)
  hist = kfull.narrow(1, L, N - 1);
  const at::Tensor kv = ks.reshape({B, L, H, P, 1}) * v.view({B, L, H, 1, P});         // (B, L, H, d_h, d_h)
  at::Tensor none;
  at::Tensor& kv_window = opts_.l_max > 0 ? state["window"] : none;
  const at::Tensor s = ssm->scan_segment(kv, state["ssm"], kv_window, opts_.l_max) + kv * D.to(ct).view({H, 1, 1});
  const at::Tensor out = finish(q.view({B, L, H, P}), s, B, L).to(x.scalar_type());    // (B, L, D)
  trace_record(trace, "mixer_out", out);
  trace_record(trace, "state", state["ssm"]);  // (B, H, d_h, d_h, N/2, 2): the diagonal SSM's modes
  return out;
}

}  // namespace ssmlab::mixers
