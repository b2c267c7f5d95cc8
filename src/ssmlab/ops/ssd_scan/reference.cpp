// The SSD oracle (README.md beside this file): the Mamba-2 recurrence one time step at a time, plain ATen
// in fp32 (fp64 for fp64 x), differentiable by autograd through ATen. Heads are split into groups so that
// grouped B/C broadcast: x (B, L, G, Hg, P), state S (B, G, Hg, P, N), B/C (B, L, G, 1, 1, N).
#include <ATen/ATen.h>

#include "ssmlab/core/device.h"
#include "ssmlab/ops/ssd_scan/ssd_scan.h"

namespace ssmlab::ops {

SsdScanOut ssd_scan_reference(const at::Tensor& x, const at::Tensor& dt, const at::Tensor& A, const at::Tensor& B,
                              const at::Tensor& C, const SsdScanOptions& opts) {
  const auto ct = state_dtype(x.scalar_type());
  const int64_t b = x.size(0), l = x.size(1), h = x.size(2), p = x.size(3);
  const int64_t g = B.size(2), n = B.size(3), hg = h / g;
  const auto coef = ssd_detail::coefficients(dt, A, opts, ct);
  const at::Tensor xs = x.to(ct).view({b, l, g, hg, p});                              // (B, L, G, Hg, P)
  const at::Tensor alpha = at::exp(coef.a).view({b, l, g, hg, 1, 1});                 // (B, L, G, Hg, 1, 1)
  const at::Tensor xw = (xs * coef.w.view({b, l, g, hg, 1})).unsqueeze(-1);          // (B, L, G, Hg, P, 1)
  const at::Tensor Bs = B.to(ct).view({b, l, g, 1, 1, n});                            // (B, L, G, 1, 1, N)
  const at::Tensor Cs = C.to(ct).view({b, l, g, 1, 1, n});                            // (B, L, G, 1, 1, N)
  at::Tensor S = opts.initial_state ? opts.initial_state->to(ct).reshape({b, g, hg, p, n})
                                    : at::zeros({b, g, hg, p, n}, xs.options());      // (B, G, Hg, P, N)
  const int64_t q = opts.chunk_size;
  std::vector<at::Tensor> ys, snaps;
  ys.reserve(l);
  for (int64_t t = 0; t < l; ++t) {
    S = alpha.select(1, t) * S + xw.select(1, t) * Bs.select(1, t);                   // S_t = α S + w x ⊗ B
    ys.push_back((S * Cs.select(1, t)).sum(-1));                                       // (B, G, Hg, P)
    if (opts.return_chunk_states && ((t + 1) % q == 0 || t + 1 == l)) snaps.push_back(S.view({b, h, p, n}));
  }
  at::Tensor y = l > 0 ? at::stack(ys, 1).view({b, l, h, p}) : at::zeros({b, 0, h, p}, xs.options());
  if (opts.D) y = y + opts.D->to(ct).view({h, 1}) * x.to(ct);
  SsdScanOut out;
  out.y = y.to(x.scalar_type());
  out.final_state = S.reshape({b, h, p, n});
  if (l == 0) out.final_state = out.final_state.clone();  // never alias initial_state
  if (opts.return_chunk_states)
    out.chunk_states = snaps.empty() ? at::zeros({b, 0, h, p, n}, xs.options()) : at::stack(snaps, 1);
  return out;
}

}  // namespace ssmlab::ops
