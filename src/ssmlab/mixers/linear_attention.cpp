#include "ssmlab/mixers/linear_attention.h"

#include <cmath>

#include <ATen/ATen.h>

#include "ssmlab/core/device.h"
#include "ssmlab/core/error.h"

namespace ssmlab::mixers {

namespace {

void check_inputs(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& log_w,
                  const std::optional<at::Tensor>& u, const std::optional<at::Tensor>& initial_state) {
  SSMLAB_CHECK(q.dim() == 4 && k.sizes() == q.sizes() && log_w.sizes() == q.sizes() && v.dim() == 4 &&
                   v.size(0) == q.size(0) && v.size(1) == q.size(1) && v.size(2) == q.size(2),
               "linear_attention: q, k, log_w must be (B, L, H, K) and v (B, L, H, V); got q ", shape_str(q.sizes()),
               ", k ", shape_str(k.sizes()), ", log_w ", shape_str(log_w.sizes()), ", v ", shape_str(v.sizes()));
  const int64_t B = q.size(0), H = q.size(2), K = q.size(3), V = v.size(3);
  if (u) SSMLAB_CHECK(u->dim() == 2 && u->size(0) == H && u->size(1) == K, "linear_attention: u must be (H, K) = ",
                      shape_str({H, K}), "; got ", shape_str(u->sizes()));
  if (initial_state)
    SSMLAB_CHECK(initial_state->sizes() == at::IntArrayRef({B, H, K, V}), "linear_attention: initial_state must be ",
                 shape_str({B, H, K, V}), "; got ", shape_str(initial_state->sizes()));
}

}  // namespace

LinearAttentionOut linear_attention_reference(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                              const at::Tensor& log_w, const std::optional<at::Tensor>& u,
                                              const std::optional<at::Tensor>& initial_state) {
  check_inputs(q, k, v, log_w, u, initial_state);
  const int64_t B = q.size(0), L = q.size(1), H = q.size(2), K = q.size(3), V = v.size(3);
  const auto ct = state_dtype(q.scalar_type());
  const at::Tensor qc = q.to(ct), kc = k.to(ct), vc = v.to(ct), w = at::exp(log_w.to(ct));
  at::Tensor S = initial_state ? initial_state->to(ct) : at::zeros({B, H, K, V}, qc.options());
  const at::Tensor uc = u ? u->to(ct).unsqueeze(-1) : at::Tensor();  // (H, K, 1)
  std::vector<at::Tensor> os;
  os.reserve(L);
  for (int64_t t = 0; t < L; ++t) {
    const at::Tensor qt = qc.select(1, t), kt = kc.select(1, t), vt = vc.select(1, t);  // (B, H, K|V)
    const at::Tensor kv = kt.unsqueeze(-1) * vt.unsqueeze(-2);                           // (B, H, K, V)
    const at::Tensor wt = w.select(1, t).unsqueeze(-1);                                  // (B, H, K, 1)
    if (u) {
      os.push_back(at::matmul(qt.unsqueeze(-2), S + uc * kv).squeeze(-2));  // (B, H, V)
      S = wt * S + kv;
    } else {
      S = wt * S + kv;
      os.push_back(at::matmul(qt.unsqueeze(-2), S).squeeze(-2));
    }
  }
  at::Tensor o = L > 0 ? at::stack(os, 1) : at::empty({B, 0, H, V}, qc.options());  // (B, L, H, V)
  return {o.to(q.scalar_type()), S};
}

LinearAttentionOut linear_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                    const at::Tensor& log_w, const std::optional<at::Tensor>& u,
                                    const std::optional<at::Tensor>& initial_state, int64_t chunk) {
  check_inputs(q, k, v, log_w, u, initial_state);
  SSMLAB_CHECK(chunk >= 1, "linear_attention: chunk must be >= 1; got ", chunk);
  const int64_t B = q.size(0), L = q.size(1), H = q.size(2), K = q.size(3), V = v.size(3);
  if (L == 0) return linear_attention_reference(q, k, v, log_w, u, initial_state);
  const auto ct = state_dtype(q.scalar_type());
  const int64_t C = std::max<int64_t>(1, std::min(chunk, L)), NC = (L + C - 1) / C, pad = NC * C - L;
  // Padding steps have k = v = q = 0 and decay 1: they leave the state unchanged and their outputs are dropped.
  auto prep = [&](const at::Tensor& t, int64_t last) {
    return at::constant_pad_nd(t.to(ct), {0, 0, 0, 0, 0, pad}).reshape({B, NC, C, H, last});  // (B, NC, C, H, ·)
  };
  const at::Tensor qc = prep(q, K), kc = prep(k, K), vc = prep(v, V), lw = prep(log_w, K);
  const at::Tensor b = lw.cumsum(2);                                 // (B, NC, C, H, K): log decay from chunk start
  const bool bonus = u.has_value();
  const at::Tensor bq = bonus ? b - lw : b;                          // the decay the query sees: to t-1 or to t
  // Pairwise decays exp(bq_t - b_s) for s < t (bonus) or s <= t (after); masked before exp so nothing overflows.
  const at::Tensor idx = at::arange(C, at::TensorOptions().dtype(at::kLong).device(q.device()));
  const at::Tensor future = bonus ? idx.unsqueeze(1) <= idx.unsqueeze(0) : idx.unsqueeze(1) < idx.unsqueeze(0);  // (t, s)
  const at::Tensor diff = bq.unsqueeze(3) - b.unsqueeze(2);          // (B, NC, C_t, C_s, H, K)
  const at::Tensor decay = at::exp(diff.masked_fill(future.view({1, 1, C, C, 1, 1}), -INFINITY));
  at::Tensor scores = at::einsum("bntshk,bnthk,bnshk->bnhts", {decay, qc, kc});  // (B, NC, H, C_t, C_s)
  if (bonus) {
    const at::Tensor diag = (qc * kc * u->to(ct)).sum(-1);           // (B, NC, C, H): the bonus term q u k
    scores = scores + at::diag_embed(diag.permute({0, 1, 3, 2}));    // on the diagonal t = s
  }
  const at::Tensor intra = at::einsum("bnhts,bnshv->bnthv", {scores, vc});  // (B, NC, C, H, V)
  // Between chunks: o_t += (q_t exp(bq_t)) S_0;  S_end = exp(b_C) S_0 + sum_s exp(b_C - b_s) k_s^T v_s.
  const at::Tensor qdec = qc * at::exp(bq);                          // (B, NC, C, H, K)
  const at::Tensor b_end = b.select(2, C - 1);                       // (B, NC, H, K)
  const at::Tensor kdec = kc * at::exp(b_end.unsqueeze(2) - b);      // (B, NC, C, H, K), exponents <= 0
  const at::Tensor chunk_kv = at::einsum("bnshk,bnshv->bnhkv", {kdec, vc});  // (B, NC, H, K, V)
  at::Tensor S = initial_state ? initial_state->to(ct) : at::zeros({B, H, K, V}, qc.options());
  std::vector<at::Tensor> inter;
  inter.reserve(NC);
  for (int64_t n = 0; n < NC; ++n) {
    inter.push_back(at::einsum("bthk,bhkv->bthv", {qdec.select(1, n), S}));  // (B, C, H, V)
    S = at::exp(b_end.select(1, n)).unsqueeze(-1) * S + chunk_kv.select(1, n);
  }
  const at::Tensor o = (intra + at::stack(inter, 1)).reshape({B, NC * C, H, V}).narrow(1, 0, L);  // (B, L, H, V)
  return {o.to(q.scalar_type()), S};
}

}  // namespace ssmlab::mixers
