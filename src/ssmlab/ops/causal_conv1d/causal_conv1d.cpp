#include "ssmlab/ops/causal_conv1d/causal_conv1d.h"

#include <ATen/ATen.h>

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
  // No fused conv kernel yet (op_table lists none), so "auto" resolves to the reference and logs it once.
  const Backend chosen = resolve_backend(backend, "causal_conv1d", x.device(), /*fused_supported=*/false);
  SSMLAB_CHECK(chosen == Backend::reference, "causal_conv1d: no fused kernel exists for ", x.device().str());
  return causal_conv1d_reference(x, weight, bias, silu, initial_state);
}

}  // namespace ssmlab::ops
