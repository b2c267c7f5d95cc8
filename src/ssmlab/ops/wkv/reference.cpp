// The WKV oracle (wkv.h): the paper kernel's stabilised recurrence written with whole (B, C) tensors per time
// step, so autograd differentiates it; float64-capable; memory O(B L C).
#include <ATen/ATen.h>

#include "ssmlab/core/device.h"
#include "ssmlab/ops/wkv/wkv.h"

namespace ssmlab::ops {

WkvOut wkv_reference(const at::Tensor& w, const at::Tensor& u, const at::Tensor& k, const at::Tensor& v,
                     const std::optional<at::Tensor>& initial_state) {
  const auto ct = state_dtype(k.scalar_type());
  const int64_t B = k.size(0), L = k.size(1), C = k.size(2);
  const at::Tensor wc = w.to(ct), uc = u.to(ct), kc = k.to(ct), vc = v.to(ct);
  const at::Tensor s0 = initial_state ? initial_state->to(ct) : wkv_empty_state(B, C, kc.options());
  at::Tensor aa = s0.select(1, 0), bb = s0.select(1, 1), pp = s0.select(1, 2);  // (B, C) each
  std::vector<at::Tensor> ys;
  ys.reserve(L);
  for (int64_t t = 0; t < L; ++t) {
    const at::Tensor kt = kc.select(1, t), vt = vc.select(1, t);  // (B, C)
    // Output: the running sums plus the bonus u for the current token, both scaled by e^-o.
    const at::Tensor ww = uc + kt;
    at::Tensor o = at::maximum(pp, ww);
    at::Tensor e1 = at::exp(pp - o), e2 = at::exp(ww - o);
    ys.push_back((e1 * aa + e2 * vt) / (e1 * bb + e2));
    // State: decay by e^w, add e^k (v), rescaled to the new max.
    const at::Tensor wp = wc + pp;
    o = at::maximum(wp, kt);
    e1 = at::exp(wp - o);
    e2 = at::exp(kt - o);
    aa = e1 * aa + e2 * vt;
    bb = e1 * bb + e2;
    pp = o;
  }
  at::Tensor y = L > 0 ? at::stack(ys, 1) : at::empty({B, 0, C}, kc.options());  // (B, L, C)
  return {y.to(k.scalar_type()), at::stack({aa, bb, pp}, 1)};
}

}  // namespace ssmlab::ops
