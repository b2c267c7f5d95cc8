// The chunked quadratic ("SSD") form of the Mamba-3 scan (mamba3.h; spec A.3 "Quadratic form", A.4; README.md)
// in plain ATen, any device, differentiable by autograd. The look-ahead state hbar (detail.h, Prepared) is a
// Mamba-2 SSD state with per-token log decay adt, keys s_t k~ and queries q~; a chunk of C tokens is C R rows
// whose pairwise decay is kron(causal decay C x C incl. diagonal, ones R x R). Per chunk, from the entry state:
//   Y = (Q~ Kk^T o Lr) X + e^{c} Q~ hbar^T,   hbar <- e^{c_last} hbar + (X o e^{c_last - c})^T Kk
// with c the chunk-local inclusive cumulative log decay; every exponent is <= 0 (masked before exp). Padding
// tokens (T up to a multiple of C) have adt = 0 and zero keys, so they leave the state unchanged.
#include <ATen/ATen.h>

#include "ssmlab/ops/mamba3/detail.h"
#include "ssmlab/ops/mamba3/mamba3.h"

namespace ssmlab::ops {

namespace mamba3_detail {

std::pair<at::Tensor, at::Tensor> chunked_core(const Prepared& p, int64_t chunk_size) {
  const int64_t b = p.qr.size(0), t = p.qr.size(1), r = p.qr.size(2), h = p.qr.size(3), n = p.qr.size(4);
  const int64_t pd = p.x.size(4);
  const int64_t qc = std::min(chunk_size, t), nc = (t + qc - 1) / qc, tp = nc * qc, rows = qc * r;
  auto pad_time = [&](const at::Tensor& v) {
    if (tp == t) return v;
    std::vector<int64_t> pad(2 * (v.dim() - 1), 0);  // constant_pad_nd pads the last dims first
    pad.back() = tp - t;
    return at::constant_pad_nd(v, pad, 0.0);
  };
  // (B, T, R, H, X) -> (B, H, nc, C R, X), rows token-major (row = token * R + rank).
  auto rows_of = [&](const at::Tensor& v) {
    const int64_t xd = v.size(4);
    return pad_time(v).view({b, nc, qc, r, h, xd}).permute({0, 4, 1, 2, 3, 5}).reshape({b, h, nc, rows, xd});
  };
  const at::Tensor qh = rows_of(p.qr), kh = rows_of(p.kk), xh = rows_of(p.x);
  const at::Tensor a = pad_time(p.adt).view({b, nc, qc, h}).permute({0, 3, 1, 2});  // (B, H, nc, C)
  const at::Tensor cs = at::cumsum(a, -1);
  const at::Tensor upper = at::ones({qc, qc}, p.qr.options().dtype(at::kBool)).triu(1);
  at::Tensor L = at::exp((cs.unsqueeze(-1) - cs.unsqueeze(-2)).masked_fill(upper, -INFINITY));  // (.., C(t), C(s))
  if (r > 1) L = L.repeat_interleave(r, -1).repeat_interleave(r, -2);                          // (.., C R, C R)
  const at::Tensor y_intra = at::matmul(at::matmul(qh, kh.transpose(-1, -2)) * L, xh);          // (B, H, nc, CR, P)
  const at::Tensor cs_rows = r > 1 ? cs.repeat_interleave(r, -1) : cs;                          // (B, H, nc, CR)
  const at::Tensor cs_last = cs.narrow(-1, qc - 1, 1);                                          // (B, H, nc, 1)
  const at::Tensor q_in = qh * at::exp(cs_rows).unsqueeze(-1);
  const at::Tensor x_out = xh * at::exp(cs_last - cs_rows).unsqueeze(-1);
  const at::Tensor chunk_states = at::matmul(x_out.transpose(-1, -2), kh);                     // (B, H, nc, P, N)
  const at::Tensor chunk_decay = at::exp(cs_last).unsqueeze(-1);                                // (B, H, nc, 1, 1)
  at::Tensor S = p.h0.defined() ? p.h0 : at::zeros({b, h, pd, n}, p.qr.options());
  std::vector<at::Tensor> ys;
  ys.reserve(nc);
  for (int64_t c = 0; c < nc; ++c) {
    ys.push_back(y_intra.select(2, c) + at::matmul(q_in.select(2, c), S.transpose(-1, -2)));
    S = chunk_decay.select(2, c) * S + chunk_states.select(2, c);
  }
  const at::Tensor y = at::stack(ys, 2)
                           .view({b, h, nc, qc, r, pd})
                           .permute({0, 2, 3, 4, 1, 5})
                           .reshape({b, tp, r, h, pd})
                           .narrow(1, 0, t);
  return {y, S};
}

}  // namespace mamba3_detail

Mamba3Out mamba3_chunked(const at::Tensor& q, const at::Tensor& k, const at::Tensor& x, const at::Tensor& adt,
                         const at::Tensor& dt, const at::Tensor& trap, const at::Tensor& theta,
                         const Mamba3Options& opts) {
  namespace d = mamba3_detail;
  if (q.size(1) == 0) return d::empty_scan(q, k, x, theta.size(3), opts);
  const d::Prepared p = d::prepare(q, k, x, adt, dt, trap, theta, opts);
  const auto [y_core, h_final] = d::chunked_core(p, opts.chunk_size);
  return d::finish(p, q, k, x, opts, y_core, h_final);
}

}  // namespace ssmlab::ops
