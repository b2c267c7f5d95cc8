// The selective_state_update oracle (README.md beside this file): plain ATen, any device, float64-capable.
// The same operations in the same order as one time step of selective_scan_reference (its prepare and
// run_chunk): channels split into groups E = G * Eg so grouped B / C broadcast.
#include <ATen/ATen.h>

#include "ssmlab/ops/selective_state_update/selective_state_update.h"

namespace ssmlab::ops {

at::Tensor selective_state_update_reference(at::Tensor& state, const at::Tensor& x, const at::Tensor& dt,
                                            const at::Tensor& A, const at::Tensor& B, const at::Tensor& C,
                                            const std::optional<at::Tensor>& D, const std::optional<at::Tensor>& z,
                                            const std::optional<at::Tensor>& dt_bias, bool dt_softplus) {
  const at::NoGradGuard no_grad;  // a decode step: the state is overwritten in place
  const auto ct = state.scalar_type();
  const int64_t b = x.size(0), e = x.size(1), n = A.size(1);
  const int64_t g = B.dim() == 3 ? B.size(1) : 1, eg = e / g;
  const at::Tensor u = x.to(ct).view({b, g, eg, 1});                            // (B, G, Eg, 1)
  at::Tensor d = dt.to(ct);
  if (dt_bias) d = d + dt_bias->to(ct);
  if (dt_softplus) d = at::softplus(d);
  const at::Tensor dl = d.reshape({b, g, eg, 1});                               // (B, G, Eg, 1)
  const at::Tensor Bv = B.to(ct).reshape({b, g, 1, n});                         // (B, G, 1, N)
  const at::Tensor Cv = C.to(ct).reshape({b, g, 1, n});
  const at::Tensor dA = at::exp(dl * A.to(ct).reshape({g, eg, n}));             // (B, G, Eg, N)
  const at::Tensor dBu = (dl * u) * Bv;                                         // (B, G, Eg, N)
  const at::Tensor h = at::addcmul(dBu, dA, state.reshape({b, g, eg, n}));      // h_t = dA h_{t-1} + dBu
  state.copy_(h.view({b, e, n}));
  at::Tensor y = (h * Cv).sum(-1).view({b, e});                                 // (B, E)
  if (D) y = y + D->to(ct) * x.to(ct);
  if (z) y = y * at::silu(z->to(ct));
  return y.to(x.scalar_type());
}

}  // namespace ssmlab::ops
