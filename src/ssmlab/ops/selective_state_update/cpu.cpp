// Fused CPU selective_state_update (selective_state_update.h). One task per state row (b, e):
//   h[n] = exp(d A[e, n]) h[n] + d x B[g, n];  y = C[g, :] . h + D x
// with the h loop vectorised over n (exp_vec, AVX2 clone picked at load time). Computes in the state's dtype
// (fp32, fp64 for fp64 x). The same arithmetic as one step of the fused CPU scan (selective_scan/cpu.cpp,
// autograd.cpp): d = softplus(dt + dt_bias) and the silu(z) gate are ATen ops on the (B, E) rows, C . h is the
// same lane-wise dot, so a Mamba layer's step() matches its forward to the last bit in float64.
#include <algorithm>
#include <cmath>

#include <ATen/ATen.h>

#include "ssmlab/core/device.h"
#include "ssmlab/core/error.h"
#include "ssmlab/ops/selective_state_update/selective_state_update.h"

// Lets the compiler if-convert the clamps in exp_vec (exception flags are never read; results unchanged).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("no-trapping-math")
#endif
#include "ssmlab/ops/cpu_kernels.h"

namespace ssmlab::ops {
namespace {

using cpu::dot;
using cpu::exp_vec;
using cpu::parallel_tasks;

template <typename T>
struct Ptrs {
  int64_t e, n, g, eg;
  const T *x, *d, *A, *B, *C, *D;  // d = dt' (bias and softplus applied); D may be null
  T* h;                            // (B, E, N) contiguous, updated in place
  T* y;                            // (B, E): C . h + D x, before the gate
};

template <typename T>
SSMLAB_CPU_INLINE void rows(const Ptrs<T>& p, int64_t lo, int64_t hi) {
  const int64_t E = p.e, N = p.n;
  for (int64_t r = lo; r < hi; ++r) {
    const int64_t b = r / E, e = r % E, grp = e / p.eg;
    const T d = p.d[r], u = p.x[r], du = d * u;
    const T* __restrict a = p.A + e * N;
    const T* __restrict bb = p.B + (b * p.g + grp) * N;
    const T* __restrict cc = p.C + (b * p.g + grp) * N;
    T* __restrict h = p.h + r * N;
    for (int64_t n = 0; n < N; ++n) h[n] = exp_vec(d * a[n]) * h[n] + du * bb[n];
    p.y[r] = dot(cc, h, N) + (p.D ? p.D[e] * u : T(0));
  }
}

SSMLAB_CPU_CLONES void rows_f32(const Ptrs<float>& p, int64_t lo, int64_t hi) { rows(p, lo, hi); }
SSMLAB_CPU_CLONES void rows_f64(const Ptrs<double>& p, int64_t lo, int64_t hi) { rows(p, lo, hi); }
void rows_any(const Ptrs<float>& p, int64_t lo, int64_t hi) { rows_f32(p, lo, hi); }
void rows_any(const Ptrs<double>& p, int64_t lo, int64_t hi) { rows_f64(p, lo, hi); }

}  // namespace

bool selective_state_update_cpu_supports(const at::Tensor& state, const at::Tensor& x, const at::Tensor& dt,
                                         const at::Tensor& A, const at::Tensor& B, const at::Tensor& C,
                                         const std::optional<at::Tensor>& D, const std::optional<at::Tensor>& z,
                                         const std::optional<at::Tensor>& dt_bias) {
  if (!x.defined() || !x.is_cpu()) return false;
  const auto xt = x.scalar_type();
  if (xt != at::kFloat && xt != at::kDouble && xt != at::kBFloat16 && xt != at::kHalf) return false;
  if (!state.defined() || state.scalar_type() != state_dtype(xt)) return false;
  for (const at::Tensor* t : {&state, &dt, &A, &B, &C})
    if (!t->defined() || !t->is_cpu() || !at::isFloatingType(t->scalar_type())) return false;
  for (const auto* t : {&D, &z, &dt_bias})
    if (*t && (!(*t)->is_cpu() || !at::isFloatingType((*t)->scalar_type()))) return false;
  return true;
}

at::Tensor selective_state_update_cpu(at::Tensor& state, const at::Tensor& x, const at::Tensor& dt,
                                      const at::Tensor& A, const at::Tensor& B, const at::Tensor& C,
                                      const std::optional<at::Tensor>& D, const std::optional<at::Tensor>& z,
                                      const std::optional<at::Tensor>& dt_bias, bool dt_softplus) {
  SSMLAB_CHECK(selective_state_update_cpu_supports(state, x, dt, A, B, C, D, z, dt_bias),
               "selective_state_update_cpu: unsupported case (CPU tensors, x float32/float64/bfloat16/float16, "
               "state in the scan's state dtype); got x ", shape_str(x.sizes()), " ", c10::toString(x.scalar_type()),
               " on ", x.device().str(), ", state ", c10::toString(state.scalar_type()));
  const at::NoGradGuard no_grad;
  const auto ct = state.scalar_type();
  const int64_t b = x.size(0), e = x.size(1), n = A.size(1);
  const int64_t g = B.dim() == 3 ? B.size(1) : 1;
  auto conv = [&](const at::Tensor& t) { return t.to(ct).contiguous(); };
  const at::Tensor xc = conv(x), Ac = conv(A), Bc = conv(B), Cc = conv(C);
  const at::Tensor Dc = D ? conv(*D) : at::Tensor();
  // As the fused scan's prepare: (dt + bias) in the compute dtype, then at::softplus.
  at::Tensor d = dt_bias ? dt.to(ct) + dt_bias->to(ct) : dt.to(ct);
  if (dt_softplus) d = at::softplus(d);
  d = d.contiguous();
  at::Tensor h = state.is_contiguous() ? state : state.contiguous();
  at::Tensor y = at::empty({b, e}, xc.options());
  AT_DISPATCH_FLOATING_TYPES(ct, "selective_state_update_cpu", [&] {
    Ptrs<scalar_t> p{};
    p.e = e;
    p.n = n;
    p.g = g;
    p.eg = e / g;
    auto cp = [](const at::Tensor& t) { return t.defined() ? t.const_data_ptr<scalar_t>() : nullptr; };
    p.x = cp(xc);
    p.d = cp(d);
    p.A = cp(Ac);
    p.B = cp(Bc);
    p.C = cp(Cc);
    p.D = cp(Dc);
    p.h = h.mutable_data_ptr<scalar_t>();
    p.y = y.mutable_data_ptr<scalar_t>();
    const int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(1, n));
    parallel_tasks(b * e, grain, [&](int64_t lo, int64_t hi) { rows_any(p, lo, hi); });
  });
  if (z) y = y * at::silu(z->to(ct));  // the gate as the fused scan applies it
  if (!h.is_same(state)) state.copy_(h);
  return y.to(x.scalar_type());
}

}  // namespace ssmlab::ops
