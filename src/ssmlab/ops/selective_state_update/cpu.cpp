// Fused CPU selective_state_update (selective_state_update.h). One task per state row (b, e):
//   d = softplus(dt + dt_bias);  h[n] = exp(d A[e, n]) h[n] + d x B[g, n];  y = C[g, :] . h + D x;  y *= silu(z)
// with the h loop vectorised over n (exp_vec, AVX2 clone picked at load time) and the C . h sum kept in 8
// partial sums so it vectorises too. Computes in the state's dtype (fp32, fp64 for fp64 x); small inputs are
// converted to it first (B·E and E·N values).
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

using cpu::exp_vec;
using cpu::parallel_tasks;

template <typename T>
struct Ptrs {
  int64_t e, n, g, eg;
  bool softplus;
  const T *x, *dt, *z, *A, *B, *C, *D, *bias;  // z, D, bias may be null
  T* h;                                          // (B, E, N) contiguous, updated in place
  T* y;                                          // (B, E)
};

template <typename T>
SSMLAB_CPU_INLINE T softplus(T v) {
  return v > T(20) ? v : std::log1p(std::exp(v));  // as at::softplus (beta 1, threshold 20)
}

template <typename T>
SSMLAB_CPU_INLINE void rows(const Ptrs<T>& p, int64_t lo, int64_t hi) {
  const int64_t E = p.e, N = p.n;
  for (int64_t r = lo; r < hi; ++r) {
    const int64_t b = r / E, e = r % E, grp = e / p.eg;
    T d = p.dt[r];
    if (p.bias) d += p.bias[e];
    if (p.softplus) d = softplus(d);
    const T u = p.x[r], du = d * u;
    const T* __restrict a = p.A + e * N;
    const T* __restrict bb = p.B + (b * p.g + grp) * N;
    const T* __restrict cc = p.C + (b * p.g + grp) * N;
    T* __restrict h = p.h + r * N;
    for (int64_t n = 0; n < N; ++n) h[n] = exp_vec(d * a[n]) * h[n] + du * bb[n];
    T part[8] = {};
    int64_t n = 0;
    for (; n + 8 <= N; n += 8)
      for (int j = 0; j < 8; ++j) part[j] += cc[n + j] * h[n + j];
    for (; n < N; ++n) part[0] += cc[n] * h[n];
    T y = ((part[0] + part[4]) + (part[1] + part[5])) + ((part[2] + part[6]) + (part[3] + part[7]));
    if (p.D) y += p.D[e] * u;
    if (p.z) {
      const T zv = p.z[r];
      y *= zv * cpu::sigmoid(zv);
    }
    p.y[r] = y;
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
  const at::Tensor xc = conv(x), dtc = conv(dt), Ac = conv(A), Bc = conv(B), Cc = conv(C);
  const at::Tensor zc = z ? conv(*z) : at::Tensor(), Dc = D ? conv(*D) : at::Tensor();
  const at::Tensor biasc = dt_bias ? conv(*dt_bias) : at::Tensor();
  at::Tensor h = state.is_contiguous() ? state : state.contiguous();
  at::Tensor y = at::empty({b, e}, xc.options());
  AT_DISPATCH_FLOATING_TYPES(ct, "selective_state_update_cpu", [&] {
    Ptrs<scalar_t> p{};
    p.e = e;
    p.n = n;
    p.g = g;
    p.eg = e / g;
    p.softplus = dt_softplus;
    auto cp = [](const at::Tensor& t) { return t.defined() ? t.const_data_ptr<scalar_t>() : nullptr; };
    p.x = cp(xc);
    p.dt = cp(dtc);
    p.z = cp(zc);
    p.A = cp(Ac);
    p.B = cp(Bc);
    p.C = cp(Cc);
    p.D = cp(Dc);
    p.bias = cp(biasc);
    p.h = h.mutable_data_ptr<scalar_t>();
    p.y = y.mutable_data_ptr<scalar_t>();
    const int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(1, n));
    parallel_tasks(b * e, grain, [&](int64_t lo, int64_t hi) { rows_any(p, lo, hi); });
  });
  if (!h.is_same(state)) state.copy_(h);
  return y.to(x.scalar_type());
}

}  // namespace ssmlab::ops
