// The chunked UT/WY form of the delta rule (delta_rule.h; spec B.6; Yang et al. 2024, "Parallelizing linear
// transformers with the delta rule over sequence length", §3). Inside a chunk, with S the chunk-entry state and
// G_t the chunk-local inclusive cumulative log decay (one per key channel; a per-head gate broadcasts):
//   S_t = diag(e^{G_t}) S + sum_{s<=t} diag(e^{G_t - G_s}) k_s u_s^T, so the corrections u solve the unit lower
//   triangular system (I + strictly_lower(diag(beta) A)) U = diag(beta) V - diag(beta) (K e^G) S with
//   A_ts = sum_d k_t[d] k_s[d] e^{G_t[d] - G_s[d]}: U = T diag(beta) V - T diag(beta) (K e^G) S = U' - W S.
// Padding steps (L up to a multiple of Q) have k = q = beta = g = 0, so they leave the state unchanged.
// Internal layout (B, HV, nc, Q, ...).
#include <ATen/ATen.h>

#include "ssmlab/core/device.h"
#include "ssmlab/ops/delta_rule/delta_rule.h"

namespace ssmlab::ops {

DeltaRuleOut delta_rule_chunked(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& beta,
                                const DeltaRuleOptions& opts) {
  const auto ct = state_dtype(q.scalar_type());
  const int64_t b = q.size(0), l = q.size(1), h = q.size(2), kd = q.size(3), hv = v.size(2), vd = v.size(3);
  const int64_t rep = hv / h;
  const auto fopt = q.options().dtype(ct);
  at::Tensor S = opts.initial_state ? opts.initial_state->to(ct) : at::zeros({b, hv, kd, vd}, fopt);
  if (l == 0) return {at::zeros({b, 0, hv, vd}, q.options()), S.clone()};
  const int64_t qc = std::min(opts.chunk_size, l);
  const int64_t nc = (l + qc - 1) / qc, lp = nc * qc;
  auto pad_time = [&](const at::Tensor& t) {  // zero-pad dim 1 from l to lp
    if (lp == l) return t;
    std::vector<int64_t> pad(2 * (t.dim() - 1), 0);  // constant_pad_nd pads the last dims first
    pad.back() = lp - l;
    return at::constant_pad_nd(t, pad, 0.0);
  };
  // (B, L, HV, X) -> (B, HV, nc, Q, X)
  auto chunks = [&](const at::Tensor& t) {
    const int64_t x = t.size(3);
    return pad_time(t.to(ct)).view({b, nc, qc, hv, x}).permute({0, 3, 1, 2, 4});
  };
  // Cast before the group expand: the backward then sums a key head's value-head gradients in ct, rounding once.
  auto expand = [&](const at::Tensor& t) { return rep == 1 ? t : t.to(ct).repeat_interleave(rep, 2); };
  const at::Tensor qh = chunks(expand(q)), kh = chunks(expand(k)), vh = chunks(v);    // (B, HV, nc, Q, K|V)
  const at::Tensor bh = chunks(beta.unsqueeze(-1));                                    // (B, HV, nc, Q, 1)
  // Log decay with its key extent kg: 1 (none, or one gate per head) or K (one per key channel).
  at::Tensor g;
  if (!opts.g)
    g = at::zeros({b, hv, nc, qc, 1}, fopt);
  else
    g = chunks(opts.g->dim() == 3 ? opts.g->unsqueeze(-1) : *opts.g);
  const at::Tensor G = at::cumsum(g, 3);                                               // (B, HV, nc, Q, kg)
  // Pairwise decays e^{G_t - G_s} for s <= t, 0 above the diagonal (masked before exp: no overflow).
  const at::Tensor upper = at::ones({qc, qc}, q.options().dtype(at::kBool)).triu(1).unsqueeze(-1);
  const at::Tensor gam = at::exp((G.unsqueeze(-2) - G.unsqueeze(-3)).masked_fill(upper, -INFINITY));  // (.., Q, Q, kg)
  at::Tensor KK, QK;                                                                   // (B, HV, nc, Q, Q)
  if (G.size(-1) == 1) {
    const at::Tensor gm = gam.squeeze(-1);
    KK = at::matmul(kh, kh.transpose(-1, -2)) * gm;
    QK = at::matmul(qh, kh.transpose(-1, -2)) * gm;
  } else {
    KK = (kh.unsqueeze(-2) * kh.unsqueeze(-3) * gam).sum(-1);
    QK = (qh.unsqueeze(-2) * kh.unsqueeze(-3) * gam).sum(-1);
  }
  const at::Tensor eye = at::eye(qc, fopt);
  const at::Tensor M = eye + KK.tril(-1) * bh;                                         // I + diag(beta) A, unit lower
  const at::Tensor eG = at::exp(G);                                                    // (B, HV, nc, Q, kg)
  const at::Tensor U = at::linalg_solve_triangular(M, bh * vh, /*upper=*/false, /*left=*/true, /*unitriangular=*/true);
  const at::Tensor W =
      at::linalg_solve_triangular(M, bh * kh * eG, /*upper=*/false, /*left=*/true, /*unitriangular=*/true);
  const at::Tensor G_last = G.narrow(3, qc - 1, 1);                                    // (B, HV, nc, 1, kg)
  const at::Tensor q_in = qh * eG;                                                     // reads the entry state
  const at::Tensor k_out = kh * at::exp(G_last - G);                                   // writes the exit state
  const at::Tensor chunk_decay = at::exp(G_last).transpose(-1, -2);                    // (B, HV, nc, kg, 1)
  std::vector<at::Tensor> outs;
  outs.reserve(nc);
  for (int64_t c = 0; c < nc; ++c) {
    const at::Tensor vnew = U.select(2, c) - at::matmul(W.select(2, c), S);           // (B, HV, Q, V)
    outs.push_back(at::matmul(q_in.select(2, c), S) + at::matmul(QK.select(2, c), vnew));
    S = chunk_decay.select(2, c) * S + at::matmul(k_out.select(2, c).transpose(-1, -2), vnew);
  }
  const at::Tensor o = at::stack(outs, 2).permute({0, 2, 3, 1, 4}).reshape({b, lp, hv, vd}).narrow(1, 0, l);
  return {o.to(q.scalar_type()), S};
}

}  // namespace ssmlab::ops
