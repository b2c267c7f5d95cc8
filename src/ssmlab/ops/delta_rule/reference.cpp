// The delta-rule oracle (delta_rule.h): the recurrence one time step at a time on whole (B, HV, K, V) tensors,
// so autograd differentiates it; float64-capable.
#include <ATen/ATen.h>

#include "ssmlab/core/device.h"
#include "ssmlab/ops/delta_rule/delta_rule.h"

namespace ssmlab::ops {

DeltaRuleOut delta_rule_reference(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                  const at::Tensor& beta, const DeltaRuleOptions& opts) {
  const auto ct = state_dtype(q.scalar_type());
  const int64_t b = q.size(0), l = q.size(1), h = q.size(2), kd = q.size(3), hv = v.size(2), vd = v.size(3);
  const int64_t rep = hv / h;
  // Value head j reads key head j / rep.
  auto expand = [&](const at::Tensor& t) { return rep == 1 ? t.to(ct) : t.to(ct).repeat_interleave(rep, 2); };
  const at::Tensor qe = expand(q), ke = expand(k), vc = v.to(ct), bc = beta.to(ct);  // (B, L, HV, .)
  std::optional<at::Tensor> a;  // decay exp(g), shaped to scale S's rows: (B, L, HV, 1, 1) or (B, L, HV, K, 1)
  if (opts.g) {
    const at::Tensor e = at::exp(opts.g->to(ct));
    a = e.dim() == 3 ? e.view({b, l, hv, 1, 1}) : e.unsqueeze(-1);
  }
  at::Tensor S = opts.initial_state ? opts.initial_state->to(ct) : at::zeros({b, hv, kd, vd}, q.options().dtype(ct));
  std::vector<at::Tensor> os;
  os.reserve(l);
  for (int64_t t = 0; t < l; ++t) {
    const at::Tensor qt = qe.select(1, t), kt = ke.select(1, t);                     // (B, HV, K)
    if (a) S = S * a->select(1, t);
    const at::Tensor w = at::matmul(kt.unsqueeze(-2), S).squeeze(-2);                // (B, HV, V) = S^T k
    const at::Tensor u = bc.select(1, t).unsqueeze(-1) * (vc.select(1, t) - w);      // (B, HV, V)
    S = S + kt.unsqueeze(-1) * u.unsqueeze(-2);
    os.push_back(at::matmul(qt.unsqueeze(-2), S).squeeze(-2));                       // (B, HV, V) = S^T q
  }
  at::Tensor o = l > 0 ? at::stack(os, 1) : at::zeros({b, 0, hv, vd}, q.options().dtype(ct));
  return {o.to(q.scalar_type()), S};
}

}  // namespace ssmlab::ops
