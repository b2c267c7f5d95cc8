// The Mamba-3 oracle (mamba3.h): the recurrence of spec A.3 / A.4 one time step at a time on whole (B, R, H, .)
// tensors, plain ATen, differentiable by autograd; fp32, or fp64 for fp64 x. The phase is reduced mod 2pi at
// every step, as upstream's chunked path does.
#include <ATen/ATen.h>

#include "ssmlab/ops/mamba3/detail.h"
#include "ssmlab/ops/mamba3/mamba3.h"

namespace ssmlab::ops {

Mamba3Out mamba3_reference(const at::Tensor& q, const at::Tensor& k, const at::Tensor& x, const at::Tensor& adt,
                           const at::Tensor& dt, const at::Tensor& trap, const at::Tensor& theta,
                           const Mamba3Options& opts) {
  namespace d = mamba3_detail;
  const int64_t t_len = q.size(1), s = theta.size(3);
  if (t_len == 0) return d::empty_scan(q, k, x, s, opts);
  const auto ct = d::compute_dtype(x);
  const at::Tensor qc = q.to(ct), kc = k.to(ct), xc = x.to(ct), ac = adt.to(ct), dc = dt.to(ct), tc = trap.to(ct),
                   thc = theta.to(ct);
  std::optional<at::Tensor> Dc;
  if (opts.D) Dc = opts.D->to(ct);
  d::StepState st = d::initial_state(q, x, s, opts);
  std::vector<at::Tensor> ys;
  ys.reserve(t_len);
  for (int64_t t = 0; t < t_len; ++t)
    ys.push_back(d::step(qc.select(1, t), kc.select(1, t), xc.select(1, t), ac.select(1, t), dc.select(1, t),
                         tc.select(1, t), thc.select(1, t), st, opts.pairing, /*mod_2pi=*/true, Dc));
  Mamba3Out out;
  out.y = at::stack(ys, 1).to(x.scalar_type());
  out.final.phase = st.phase;
  out.final.state = st.h;
  out.final.k_prev = st.k_prev.to(k.scalar_type());
  out.final.x_prev = x.select(1, t_len - 1).clone(at::MemoryFormat::Contiguous);
  return out;
}

}  // namespace ssmlab::ops
