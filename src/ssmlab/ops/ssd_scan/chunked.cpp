// The chunked SSD algorithm in ATen (spec §1.3 steps 1-4; Dao & Gu 2024, "Transformers are SSMs", §6).
// With a_t the log-decay, w_t the input weight and X̄_t = w_t x_t, per chunk of Q steps (cumulative
// log-decay s_i = a_1 + ... + a_i inside the chunk):
//   1. Y_diag_i = Σ_{j<=i} exp(s_i - s_j) (C_i · B_j) X̄_j             quadratic, attention-like
//   2. S_chunk  = Σ_j exp(s_Q - s_j) X̄_j ⊗ B_j                        the chunk's own end state
//   3. S_c      = exp(s_Q) S_{c-1} + S_chunk                          sequential over chunks
//   4. Y_off_i  = exp(s_i) S_{c-1} · C_i ;   y = Y_diag + Y_off + D x
// Padding steps (L up to a multiple of Q) have a = 0 and X̄ = 0, so they leave the state unchanged.
// Internal layout: heads split into groups, (B, G, Hg, nc, Q, ...), B/C broadcast over Hg.
#include <ATen/ATen.h>

#include "ssmlab/core/device.h"
#include "ssmlab/ops/ssd_scan/ssd_scan.h"

namespace ssmlab::ops {

SsdScanOut ssd_scan_chunked(const at::Tensor& x, const at::Tensor& dt, const at::Tensor& A, const at::Tensor& B,
                            const at::Tensor& C, const SsdScanOptions& opts) {
  const auto ct = state_dtype(x.scalar_type());
  const int64_t b = x.size(0), l = x.size(1), h = x.size(2), p = x.size(3);
  const int64_t g = B.size(2), n = B.size(3), hg = h / g;
  const auto fopt = x.options().dtype(ct);
  at::Tensor S = opts.initial_state ? opts.initial_state->to(ct).reshape({b, g, hg, p, n})
                                    : at::zeros({b, g, hg, p, n}, fopt);               // (B, G, Hg, P, N)
  if (l == 0) {
    SsdScanOut out{at::zeros({b, 0, h, p}, x.options()), S.reshape({b, h, p, n}).clone(), at::Tensor()};
    if (opts.return_chunk_states) out.chunk_states = at::zeros({b, 0, h, p, n}, fopt);
    return out;
  }
  const int64_t q = std::min(opts.chunk_size, l);
  const int64_t nc = (l + q - 1) / q, lp = nc * q;
  const auto coef = ssd_detail::coefficients(dt, A, opts, ct);
  auto pad_time = [&](const at::Tensor& t) {  // zero-pad dim 1 from l to lp
    if (lp == l) return t;
    std::vector<int64_t> pad(2 * (t.dim() - 1), 0);  // constant_pad_nd pads the last dims first
    pad.back() = lp - l;
    return at::constant_pad_nd(t, pad, 0.0);
  };
  const at::Tensor xw = pad_time(x.to(ct) * coef.w.unsqueeze(-1))                     // (B, Lp, H, P)
                            .view({b, nc, q, g, hg, p})
                            .permute({0, 3, 4, 1, 2, 5});                              // (B, G, Hg, nc, Q, P)
  const at::Tensor a = pad_time(coef.a).view({b, nc, q, g, hg}).permute({0, 3, 4, 1, 2});  // (B, G, Hg, nc, Q)
  auto group_layout = [&](const at::Tensor& t) {
    return pad_time(t.to(ct)).view({b, nc, q, g, n}).permute({0, 3, 1, 2, 4}).unsqueeze(2);  // (B, G, 1, nc, Q, N)
  };
  const at::Tensor Bc = group_layout(B), Cc = group_layout(C);

  const at::Tensor s = at::cumsum(a, -1);                                              // (B, G, Hg, nc, Q)
  // 1. intra-chunk: L_ij = exp(s_i - s_j) for i >= j (the mask comes before exp, so nothing overflows).
  const at::Tensor upper = at::ones({q, q}, x.options().dtype(at::kBool)).triu(1);
  const at::Tensor Lmat = at::exp((s.unsqueeze(-1) - s.unsqueeze(-2)).masked_fill(upper, -INFINITY));  // (.., Q, Q)
  const at::Tensor CB = at::matmul(Cc, Bc.transpose(-1, -2));                          // (B, G, 1, nc, Q, Q)
  const at::Tensor y_diag = at::matmul(Lmat * CB, xw);                                 // (B, G, Hg, nc, Q, P)
  // 2. each chunk's own end state.
  const at::Tensor s_end = s.narrow(-1, q - 1, 1);                                     // (B, G, Hg, nc, 1)
  const at::Tensor to_end = at::exp(s_end - s).unsqueeze(-1);                          // (B, G, Hg, nc, Q, 1)
  const at::Tensor S_chunk = at::matmul((xw * to_end).transpose(-1, -2), Bc);          // (B, G, Hg, nc, P, N)
  // 3. carry the state across chunks.
  const at::Tensor chunk_decay = at::exp(s_end).unsqueeze(-1);                         // (B, G, Hg, nc, 1, 1)
  std::vector<at::Tensor> starts, ends;
  starts.reserve(nc);
  ends.reserve(nc);
  for (int64_t c = 0; c < nc; ++c) {
    starts.push_back(S);
    S = chunk_decay.select(3, c) * S + S_chunk.select(3, c);                           // (B, G, Hg, P, N)
    ends.push_back(S);
  }
  const at::Tensor S_start = at::stack(starts, 3);                                     // (B, G, Hg, nc, P, N)
  // 4. the carried state's contribution inside each chunk.
  const at::Tensor y_off = at::matmul(Cc, S_start.transpose(-1, -2)) * at::exp(s).unsqueeze(-1);  // (.., Q, P)
  at::Tensor y = (y_diag + y_off).permute({0, 3, 4, 1, 2, 5}).reshape({b, lp, h, p}).narrow(1, 0, l);
  if (opts.D) y = y + opts.D->to(ct).view({h, 1}) * x.to(ct);
  SsdScanOut out;
  out.y = y.to(x.scalar_type());
  out.final_state = S.reshape({b, h, p, n});
  if (opts.return_chunk_states)
    out.chunk_states = at::stack(ends, 1).reshape({b, nc, h, p, n});                   // (B, nc, H, P, N)
  return out;
}

}  // namespace ssmlab::ops
