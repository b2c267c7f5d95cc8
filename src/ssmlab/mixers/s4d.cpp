#include "ssmlab/mixers/s4d.h"

#include <cmath>

#include <ATen/ATen.h>

#include "ssmlab/core/device.h"
#include "ssmlab/core/error.h"

namespace ssmlab::mixers {

S4dImpl::S4dImpl(const S4dOptions& opts, int64_t d_model, at::Generator& gen) : opts_(opts), d_model_(d_model) {
  ssm = register_module("ssm", std::make_shared<DiagSsmImpl>(d_model, opts.d_state, opts.discretization, opts.dt_min,
                                                             opts.dt_max, gen));
  D = register_parameter("D", at::empty({d_model}));
  output_linear = register_module("output_linear", torch::nn::Linear(d_model, 2 * d_model));
  at::NoGradGuard no_grad;
  D.normal_(0.0, 1.0, gen);  // S4D: D ~ N(0, 1)
  const double bound = 1.0 / std::sqrt(static_cast<double>(d_model));
  output_linear->weight.uniform_(-bound, bound, gen);
  output_linear->bias.uniform_(-bound, bound, gen);
}

at::Tensor S4dImpl::finish(const at::Tensor& y) {
  return at::glu(output_linear(at::gelu(y)), -1);  // (..., D)
}

at::Tensor S4dImpl::forward(const at::Tensor& x, Trace* trace) {
  SSMLAB_CHECK(x.dim() == 3 && x.size(2) == d_model_, "s4d: input must be (B, L, D) with D = ", d_model_, "; got ",
               shape_str(x.sizes()));
  const int64_t L = x.size(1), T = opts_.l_max > 0 ? std::min(L, opts_.l_max) : L;
  const auto ct = state_dtype(x.scalar_type());
  const at::Tensor k = ssm->kernel(T, ct);                                  // (T, D)
  trace_record(trace, "kernel", k);
  if (trace != nullptr && trace->wants("decay")) trace_record(trace, "decay", ssm->decay(ct));  // (D, N/2, 2)
  const at::Tensor y = fft_causal_conv(x.to(ct), k) + x.to(ct) * D.to(ct);  // (B, L, D)
  const at::Tensor out = finish(y.to(x.scalar_type()));                     // (B, L, D)
  trace_record(trace, "mixer_out", out);
  return out;
}

State S4dImpl::init_state(int64_t batch, c10::Device device) const {
  State s;
  auto f32 = at::TensorOptions().dtype(at::kFloat).device(device);
  s["ssm"] = at::zeros({batch, d_model_, ssm->modes(), 2}, f32);                      // (B, D, N/2, 2)
  if (opts_.l_max > 0) s["window"] = at::zeros({batch, opts_.l_max, d_model_}, f32);  // (B, l_max, D)
  return s;
}

at::Tensor S4dImpl::step(const at::Tensor& x_t, State& state) {
  SSMLAB_CHECK(x_t.dim() == 2 && x_t.size(1) == d_model_, "s4d.step: input must be (B, D) with D = ", d_model_,
               "; got ", shape_str(x_t.sizes()));
  const auto ct = state_dtype(x_t.scalar_type());
  const at::Tensor xc = x_t.to(ct);
  at::Tensor none;
  at::Tensor& window = opts_.l_max > 0 ? state["window"] : none;
  const at::Tensor y = ssm->step(xc, state["ssm"], window, opts_.l_max) + xc * D.to(ct);  // (B, D)
  return finish(y.to(x_t.scalar_type()));
}

}  // namespace ssmlab::mixers

namespace ssmlab::mixers {

at::Tensor S4dImpl::forward_stateful(const at::Tensor& x, State& state, Trace* trace) {
  SSMLAB_CHECK(x.dim() == 3 && x.size(2) == d_model_, "s4d: input must be (B, L, D) with D = ", d_model_, "; got ",
               shape_str(x.sizes()));
  SSMLAB_CHECK(state.tensors.count("ssm") && state.at("ssm").defined() && state.at("ssm").size(0) == x.size(0),
               "s4d.forward_stateful: state lacks 'ssm' for batch ", x.size(0), "; make it with init_state");
  const auto ct = state_dtype(x.scalar_type());
  const at::Tensor xc = x.to(ct);
  at::Tensor none;
  at::Tensor& window = opts_.l_max > 0 ? state["window"] : none;
  const at::Tensor y = ssm->scan_segment(xc, state["ssm"], window, opts_.l_max) + xc * D.to(ct);  // (B, L, D)
  const at::Tensor out = finish(y.to(x.scalar_type()));                                           // (B, L, D)
  trace_record(trace, "mixer_out", out);
  trace_record(trace, "state", state["ssm"]);  // (B, D, N/2, 2): the modes, step()'s layout
  return out;
}

}  // namespace ssmlab::mixers
