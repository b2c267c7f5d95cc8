// The causal_conv1d oracle: W shifted multiply-adds over the time axis (README.md beside this file).
#include <ATen/ATen.h>

#include "ssmlab/ops/causal_conv1d/causal_conv1d.h"

namespace ssmlab::ops {

CausalConv1dOut causal_conv1d_reference(const at::Tensor& x, const at::Tensor& weight,
                                        const std::optional<at::Tensor>& bias, bool silu,
                                        const std::optional<at::Tensor>& initial_state) {
  const int64_t b = x.size(0), l = x.size(1), e = x.size(2), w = weight.size(1);
  const at::Tensor state = initial_state ? initial_state->to(x.scalar_type())
                                         : at::zeros({b, w - 1, e}, x.options());
  const at::Tensor xpad = at::cat({state, x}, 1);                     // (B, W-1+L, E)
  const at::Tensor wt = weight.to(x.scalar_type());
  at::Tensor out = bias ? bias->to(x.scalar_type()).expand({b, l, e}) : at::zeros({b, l, e}, x.options());
  for (int64_t k = 0; k < w; ++k) out = out + xpad.narrow(1, k, l) * wt.select(1, k);
  if (silu) out = at::silu(out);
  return {out, xpad.narrow(1, l, w - 1)};
}

}  // namespace ssmlab::ops
