#include "ssmlab/mixers/linear_attention.h"

#include <ATen/ATen.h>

#include "ssmlab/core/device.h"
#include "ssmlab/core/error.h"

namespace ssmlab::mixers {

LinearAttentionOut linear_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                    const at::Tensor& log_w, const std::optional<at::Tensor>& u,
                                    const std::optional<at::Tensor>& initial_state) {
  SSMLAB_CHECK(q.dim() == 4 && k.sizes() == q.sizes() && log_w.sizes() == q.sizes() && v.dim() == 4 &&
                   v.size(0) == q.size(0) && v.size(1) == q.size(1) && v.size(2) == q.size(2),
               "linear_attention: q, k, log_w must be (B, L, H, K) and v (B, L, H, V); got q ", shape_str(q.sizes()),
               ", k ", shape_str(k.sizes()), ", log_w ", shape_str(log_w.sizes()), ", v ", shape_str(v.sizes()));
  const int64_t B = q.size(0), L = q.size(1), H = q.size(2), K = q.size(3), V = v.size(3);
  if (u) SSMLAB_CHECK(u->dim() == 2 && u->size(0) == H && u->size(1) == K, "linear_attention: u must be (H, K) = ",
                      shape_str({H, K}), "; got ", shape_str(u->sizes()));
  if (initial_state)
    SSMLAB_CHECK(initial_state->sizes() == at::IntArrayRef({B, H, K, V}), "linear_attention: initial_state must be ",
                 shape_str({B, H, K, V}), "; got ", shape_str(initial_state->sizes()));
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

}  // namespace ssmlab::mixers
