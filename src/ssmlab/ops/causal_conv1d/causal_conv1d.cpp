#include "ssmlab/ops/causal_conv1d/causal_conv1d.h"

#include <ATen/ATen.h>

#include "ssmlab/core/device.h"
#include "ssmlab/core/error.h"
#include "ssmlab/ops/backend.h"

namespace ssmlab::ops {

void check_causal_conv1d_inputs(const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                                const std::optional<at::Tensor>& initial_state) {
  auto all = [&] {
    std::string s = str("x ", shape_str(x.sizes()), ", weight ", shape_str(weight.sizes()));
    if (bias) s += str(", bias ", shape_str(bias->sizes()));
    if (initial_state) s += str(", initial_state ", shape_str(initial_state->sizes()));
    return s;
  };
  SSMLAB_CHECK(x.defined() && weight.defined(), "causal_conv1d: x and weight are required");
  SSMLAB_CHECK(x.dim() == 3, "causal_conv1d: x must be (B, L, E); got ", all());
  const int64_t e = x.size(2);
  SSMLAB_CHECK(weight.dim() == 2 && weight.size(0) == e && weight.size(1) >= 1 && weight.size(1) <= 4,
               "causal_conv1d: weight must be (E, W) with E = ", e, " and W in 1..4; got ", all());
  const int64_t w = weight.size(1);
  if (bias) SSMLAB_CHECK(bias->dim() == 1 && bias->size(0) == e, "causal_conv1d: bias must be (E); got ", all());
  if (initial_state)
    SSMLAB_CHECK(initial_state->dim() == 3 && initial_state->size(0) == x.size(0) && initial_state->size(1) == w - 1 &&
                     initial_state->size(2) == e,
                 "causal_conv1d: initial_state must be (B, W-1, E) = ", shape_str({x.size(0), w - 1, e}), "; got ",
                 all());
  SSMLAB_CHECK(weight.device() == x.device() && (!bias || bias->device() == x.device()) &&
                   (!initial_state || initial_state->device() == x.device()),
               "causal_conv1d: all inputs must be on one device");
  SSMLAB_CHECK(at::isFloatingType(x.scalar_type()) && at::isFloatingType(weight.scalar_type()),
               "causal_conv1d: inputs must be floating point");
}

CausalConv1dOut causal_conv1d(const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                              bool silu, const std::optional<at::Tensor>& initial_state, const std::string& backend) {
  check_causal_conv1d_inputs(x, weight, bias, initial_state);
  // Fast kernels plug in here per device (ops/backend.cpp lists them); where none supports the case,
  // resolve_backend picks the reference and the log says so once.
  const bool fused_ok = x.is_cpu() ? causal_conv1d_cpu_supports(x, weight, bias, initial_state)
                                   : x.is_cuda() && causal_conv1d_cuda_supports(x, weight, bias, initial_state);
  switch (resolve_backend(backend, "causal_conv1d", x.device(), fused_ok)) {
    case Backend::fused:
      if (x.is_cuda()) return causal_conv1d_cuda(x, weight, bias, silu, initial_state);
      return causal_conv1d_fused(x, weight, bias, silu, initial_state);
    case Backend::reference:
      break;
  }
  return causal_conv1d_reference(x, weight, bias, silu, initial_state);
}

void check_causal_conv1d_update_inputs(const at::Tensor& x_t, const at::Tensor& state, const at::Tensor& weight,
                                       const std::optional<at::Tensor>& bias) {
  auto all = [&] {
    std::string s = str("x ", shape_str(x_t.sizes()), ", state ", shape_str(state.sizes()), ", weight ",
                        shape_str(weight.sizes()));
    if (bias) s += str(", bias ", shape_str(bias->sizes()));
    return s;
  };
  SSMLAB_CHECK(x_t.defined() && state.defined() && weight.defined(),
               "causal_conv1d_update: x, state and weight are required");
  SSMLAB_CHECK(x_t.dim() == 2, "causal_conv1d_update: x must be (B, E); got ", all());
  const int64_t b = x_t.size(0), e = x_t.size(1);
  SSMLAB_CHECK(weight.dim() == 2 && weight.size(0) == e && weight.size(1) >= 1 && weight.size(1) <= 4,
               "causal_conv1d_update: weight must be (E, W) with E = ", e, " and W in 1..4; got ", all());
  const int64_t w = weight.size(1);
  SSMLAB_CHECK(state.dim() == 3 && state.size(0) == b && state.size(1) == w - 1 && state.size(2) == e,
               "causal_conv1d_update: state must be (B, W-1, E) = ", shape_str({b, w - 1, e}), "; got ", all());
  if (bias) SSMLAB_CHECK(bias->dim() == 1 && bias->size(0) == e, "causal_conv1d_update: bias must be (E); got ", all());
  SSMLAB_CHECK(weight.device() == x_t.device() && state.device() == x_t.device() &&
                   (!bias || bias->device() == x_t.device()),
               "causal_conv1d_update: all inputs must be on one device; got ", all());
  SSMLAB_CHECK(at::isFloatingType(x_t.scalar_type()) && at::isFloatingType(weight.scalar_type()) &&
                   at::isFloatingType(state.scalar_type()),
               "causal_conv1d_update: inputs must be floating point; got ", all());
}

at::Tensor causal_conv1d_update(const at::Tensor& x_t, at::Tensor& state, const at::Tensor& weight,
                                const std::optional<at::Tensor>& bias, bool silu, const std::string& backend) {
  check_causal_conv1d_update_inputs(x_t, state, weight, bias);
  const bool fused_ok = x_t.is_cuda() && causal_conv1d_update_cuda_supports(x_t, state, weight, bias);
  switch (resolve_backend(backend, "causal_conv1d_update", x_t.device(), fused_ok)) {
    case Backend::fused:
      return causal_conv1d_update_cuda(x_t, state, weight, bias, silu);
    case Backend::reference:
      break;
  }
  return causal_conv1d_update_reference(x_t, state, weight, bias, silu);
}

at::Tensor causal_conv1d_update_reference(const at::Tensor& x_t, at::Tensor& state, const at::Tensor& weight,
                                          const std::optional<at::Tensor>& bias, bool silu) {
  const int64_t b = x_t.size(0), e = x_t.size(1), w = weight.size(1);
  // As causal_conv1d: weight, bias and state taken to x's dtype, then computed in fp32 (fp64 for fp64).
  const auto xt = x_t.scalar_type(), ct = state_dtype(xt);
  const at::NoGradGuard no_grad;
  auto to_ct = [&](const at::Tensor& t) { return t.to(xt).to(ct); };
  const at::Tensor xpad = at::cat({to_ct(state), to_ct(x_t).unsqueeze(1)}, 1);  // (B, W, E)
  const at::Tensor wc = to_ct(weight);
  at::Tensor out = bias ? to_ct(*bias).expand({b, e}).clone() : at::zeros({b, e}, xpad.options());
  for (int64_t k = 0; k < w; ++k) out.addcmul_(xpad.select(1, k), wc.select(1, k));
  if (silu) out = at::silu(out);
  if (w > 1) state.copy_(xpad.narrow(1, 1, w - 1));
  return out.to(xt);
}

}  // namespace ssmlab::ops
