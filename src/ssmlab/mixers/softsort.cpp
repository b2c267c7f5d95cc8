#include "ssmlab/mixers/softsort.h"

#include <ATen/ATen.h>

#include "ssmlab/core/error.h"

namespace ssmlab::mixers {

at::Tensor softsort(const at::Tensor& v, double tau, bool hard) {
  SSMLAB_CHECK(v.defined() && v.dim() == 2, "softsort: expected scores (B, L); got ",
               v.defined() ? shape_str(v.sizes()) : "undefined");
  SSMLAB_CHECK(tau > 0, "softsort: temperature tau must be > 0; got ", tau);
  auto [sorted, order] = v.sort(/*dim=*/-1, /*descending=*/true);                     // (B, L) each
  const at::Tensor logits = -(v.unsqueeze(1) - sorted.unsqueeze(2)).abs() / tau;      // (B, L_k, L_l)
  const at::Tensor soft = logits.softmax(-1);                                         // (B, L, L)
  if (!hard) return soft;
  const at::Tensor perm = at::zeros_like(soft).scatter_(-1, order.unsqueeze(-1), 1.0);  // row k: one at order[k]
  return perm + (soft - soft.detach());  // exactly perm in the forward pass (soft - soft = 0), soft's gradient
}

}  // namespace ssmlab::mixers
