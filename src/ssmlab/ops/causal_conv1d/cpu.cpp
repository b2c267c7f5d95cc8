// Fused CPU causal_conv1d, forward and backward (cpu.h). A row (b, t) of the output is
//   out[e] = bias[e] + sum_k w[k, e] * xpad[t + k, e]   (xpad = concat(state, x) along time, w transposed to (W, E))
// computed by one pass over E with the W source rows as pointers (rows before x come from the state, or a
// zero row when there is none), so the E loop vectorises. Accumulation is in the compute dtype.
//
// The backward walks xpad positions j in [0, L + W - 1) in chunks; within a chunk it recomputes the
// pre-activation of output row j (for the SiLU derivative), keeps g_r = dL/dz_r of the last W rows in a
// ring buffer and forms dxpad[j] = sum_k w[k] * g_{j-k} (+ dfinal[j - L] for the rows that are the final
// state). dweight / dbias are summed per chunk into the chunk's own partial slice (no races) and the
// slices are summed afterwards, so results do not depend on the thread count.
#include "ssmlab/ops/causal_conv1d/cpu.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/TensorIterator.h>

#include "ssmlab/core/error.h"
#include "ssmlab/ops/cpu_kernels.h"

// Lets the compiler if-convert the clamps in exp_vec (floating-point exception flags are never read here;
// results are unchanged), so the E loops with SiLU vectorise.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("no-trapping-math")
#endif

namespace ssmlab::ops::causal_conv1d_cpu {
namespace {

using cpu::exp_vec;
using cpu::parallel_tasks;
using cpu::sigmoid;

template <typename T>
struct Ptrs {
  int64_t b, l, e, w;
  bool silu;
  const T *x, *wt, *bias, *state;  // wt: weight transposed to (W, E); bias, state never null (zero rows)
  bool has_state;
  const T* zero;  // E zeros
  // forward
  T* out;
  // backward
  const T *dout, *dfin;  // never null (zero rows)
  bool has_dfin;
  T *dx, *dstate, *part;  // dstate may be null; part (tasks, W + 1, E): dweight rows then dbias
  int64_t nchunk, chunk;
};

// Row j of xpad (j in [0, L + W - 1)) of batch b.
template <typename T>
SSMLAB_CPU_INLINE const T* xpad_row(const Ptrs<T>& p, int64_t b, int64_t j) {
  const int64_t s = p.w - 1;
  if (j >= s) return p.x + (b * p.l + j - s) * p.e;
  return p.has_state ? p.state + (b * s + j) * p.e : p.zero;
}

// Forward over output rows r in [lo, hi), r = b * L + t.
template <typename T, int W, bool Silu>
SSMLAB_CPU_INLINE void forward_rows(const Ptrs<T>& p, int64_t lo, int64_t hi) {
  const int64_t L = p.l, E = p.e;
  const T* __restrict wt = p.wt;
  const T* __restrict bias = p.bias;
  for (int64_t r = lo; r < hi; ++r) {
    const int64_t b = r / L, t = r % L;
    const T* xs[W];
    for (int k = 0; k < W; ++k) xs[k] = xpad_row(p, b, t + k);
    T* __restrict o = p.out + r * E;
    for (int64_t e = 0; e < E; ++e) {
      T acc = bias[e];
      for (int k = 0; k < W; ++k) acc += wt[k * E + e] * xs[k][e];
      if constexpr (Silu) acc = acc * sigmoid(acc);
      o[e] = acc;
    }
  }
}

template <typename T, int W>
SSMLAB_CPU_INLINE void forward_rows_w(const Ptrs<T>& p, int64_t lo, int64_t hi) {
  if (p.silu)
    forward_rows<T, W, true>(p, lo, hi);
  else
    forward_rows<T, W, false>(p, lo, hi);
}

template <typename T>
SSMLAB_CPU_INLINE void forward_rows_dispatch(const Ptrs<T>& p, int64_t lo, int64_t hi) {
  switch (p.w) {
    case 1: forward_rows_w<T, 1>(p, lo, hi); break;
    case 2: forward_rows_w<T, 2>(p, lo, hi); break;
    case 3: forward_rows_w<T, 3>(p, lo, hi); break;
    default: forward_rows_w<T, 4>(p, lo, hi); break;
  }
}

SSMLAB_CPU_CLONES void forward_rows_f32(const Ptrs<float>& p, int64_t lo, int64_t hi) {
  forward_rows_dispatch(p, lo, hi);
}
SSMLAB_CPU_CLONES void forward_rows_f64(const Ptrs<double>& p, int64_t lo, int64_t hi) {
  forward_rows_dispatch(p, lo, hi);
}
void forward_rows_any(const Ptrs<float>& p, int64_t lo, int64_t hi) { forward_rows_f32(p, lo, hi); }
void forward_rows_any(const Ptrs<double>& p, int64_t lo, int64_t hi) { forward_rows_f64(p, lo, hi); }

// g_r = dL/dz_r for output row r (z the pre-activation) into g; with Owned, also adds g_r to the chunk's
// dbias and g_r * xpad[r + k] to its dweight row k.
template <typename T, int W, bool Silu, bool Owned>
SSMLAB_CPU_INLINE void grad_row(const Ptrs<T>& p, int64_t b, int64_t r, T* __restrict g, T* __restrict part) {
  const int64_t E = p.e;
  const T* __restrict wt = p.wt;
  const T* __restrict bias = p.bias;
  const T* __restrict d = p.dout + (b * p.l + r) * E;
  const T* xs[W];
  for (int k = 0; k < W; ++k) xs[k] = xpad_row(p, b, r + k);
  for (int64_t e = 0; e < E; ++e) {
    T gv = d[e];
    if constexpr (Silu) {
      T z = bias[e];
      for (int k = 0; k < W; ++k) z += wt[k * E + e] * xs[k][e];
      const T s = sigmoid(z);
      gv = gv * s * (T(1) + z * (T(1) - s));  // d silu(z) / dz
    }
    g[e] = gv;
    if constexpr (Owned) {
      for (int k = 0; k < W; ++k) part[k * E + e] += gv * xs[k][e];
      part[W * E + e] += gv;
    }
  }
}

// Backward for tasks in [lo, hi): task = b * nchunk + c covers xpad rows [c * chunk, (c + 1) * chunk).
template <typename T, int W, bool Silu>
SSMLAB_CPU_INLINE void backward_tasks(const Ptrs<T>& p, int64_t lo, int64_t hi) {
  const int64_t L = p.l, E = p.e, S = W - 1, Lp = L + S;
  std::vector<T> ring(static_cast<size_t>(W * E));
  const T* __restrict wt = p.wt;
  for (int64_t task = lo; task < hi; ++task) {
    const int64_t b = task / p.nchunk, c = task % p.nchunk;
    const int64_t j0 = std::min(Lp, c * p.chunk), j1 = std::min(Lp, (c + 1) * p.chunk);
    T* part = p.part + task * (W + 1) * E;
    std::fill(part, part + (W + 1) * E, T(0));
    // The W-1 rows before the chunk feed its first dxpad rows; recomputed, not counted in dweight/dbias.
    for (int64_t r = std::max<int64_t>(0, j0 - S); r < std::min(j0, L); ++r)
      grad_row<T, W, Silu, false>(p, b, r, ring.data() + (r % W) * E, part);
    for (int64_t j = j0; j < j1; ++j) {
      if (j < L) grad_row<T, W, Silu, true>(p, b, j, ring.data() + (j % W) * E, part);
      T* __restrict dst = j >= S ? p.dx + (b * L + j - S) * E : (p.dstate ? p.dstate + (b * S + j) * E : nullptr);
      if (!dst) continue;
      // dxpad[j] = sum_k w[k] g_{j-k} over 0 <= j - k < L, + dfinal[j - L] for j >= L.
      const T* gs[W];
      for (int k = 0; k < W; ++k) gs[k] = (j - k >= 0 && j - k < L) ? ring.data() + ((j - k) % W) * E : p.zero;
      const T* __restrict df = (j >= L && p.has_dfin) ? p.dfin + (b * S + j - L) * E : p.zero;
      for (int64_t e = 0; e < E; ++e) {
        T acc = df[e];
        for (int k = 0; k < W; ++k) acc += wt[k * E + e] * gs[k][e];
        dst[e] = acc;
      }
    }
  }
}

template <typename T, int W>
SSMLAB_CPU_INLINE void backward_tasks_w(const Ptrs<T>& p, int64_t lo, int64_t hi) {
  if (p.silu)
    backward_tasks<T, W, true>(p, lo, hi);
  else
    backward_tasks<T, W, false>(p, lo, hi);
}

template <typename T>
SSMLAB_CPU_INLINE void backward_tasks_dispatch(const Ptrs<T>& p, int64_t lo, int64_t hi) {
  switch (p.w) {
    case 1: backward_tasks_w<T, 1>(p, lo, hi); break;
    case 2: backward_tasks_w<T, 2>(p, lo, hi); break;
    case 3: backward_tasks_w<T, 3>(p, lo, hi); break;
    default: backward_tasks_w<T, 4>(p, lo, hi); break;
  }
}

SSMLAB_CPU_CLONES void backward_tasks_f32(const Ptrs<float>& p, int64_t lo, int64_t hi) {
  backward_tasks_dispatch(p, lo, hi);
}
SSMLAB_CPU_CLONES void backward_tasks_f64(const Ptrs<double>& p, int64_t lo, int64_t hi) {
  backward_tasks_dispatch(p, lo, hi);
}
void backward_tasks_any(const Ptrs<float>& p, int64_t lo, int64_t hi) { backward_tasks_f32(p, lo, hi); }
void backward_tasks_any(const Ptrs<double>& p, int64_t lo, int64_t hi) { backward_tasks_f64(p, lo, hi); }

void check_inputs(const Inputs& in) {
  const auto ct = in.x.scalar_type();
  SSMLAB_CHECK(ct == at::kFloat || ct == at::kDouble, "causal_conv1d_cpu: compute dtype must be float32/64");
  SSMLAB_CHECK(in.x.dim() == 3 && in.weight.dim() == 2 && in.weight.size(0) == in.x.size(2) &&
                   in.weight.size(1) >= 1 && in.weight.size(1) <= kMaxWidth,
               "causal_conv1d_cpu: x must be (B, L, E) and weight (E, W), W in 1..", kMaxWidth);
  for (const at::Tensor* t : {&in.x, &in.weight, &in.bias, &in.state})
    if (t->defined())
      SSMLAB_CHECK(t->is_cpu() && t->is_contiguous() && t->scalar_type() == ct,
                   "causal_conv1d_cpu: inputs must be contiguous CPU tensors of one dtype");
}

// The pointers both passes share. `wt` and `zero` must outlive the kernels.
template <typename T>
Ptrs<T> ptrs_of(const Inputs& in, const at::Tensor& wt, const std::vector<T>& zero) {
  Ptrs<T> p{};
  p.b = in.x.size(0);
  p.l = in.x.size(1);
  p.e = in.x.size(2);
  p.w = in.weight.size(1);
  p.silu = in.silu;
  p.x = in.x.const_data_ptr<T>();
  p.wt = wt.const_data_ptr<T>();
  p.zero = zero.data();
  p.bias = in.bias.defined() ? in.bias.const_data_ptr<T>() : zero.data();
  p.has_state = in.state.defined() && p.w > 1;
  p.state = p.has_state ? in.state.const_data_ptr<T>() : nullptr;
  p.dout = zero.data();
  p.dfin = zero.data();
  return p;
}

}  // namespace

Forward forward(const Inputs& in) {
  check_inputs(in);
  const auto opt = in.x.options();
  const int64_t b = in.x.size(0), l = in.x.size(1), e = in.x.size(2), w = in.weight.size(1);
  const at::Tensor wt = in.weight.t().contiguous();  // (W, E)
  Forward f;
  f.out = at::empty({b, l, e}, opt);
  f.final_state = at::empty({b, w - 1, e}, opt);
  AT_DISPATCH_FLOATING_TYPES(in.x.scalar_type(), "causal_conv1d_cpu_fwd", [&] {
    const std::vector<scalar_t> zero(static_cast<size_t>(e), scalar_t(0));
    Ptrs<scalar_t> p = ptrs_of<scalar_t>(in, wt, zero);
    p.out = f.out.mutable_data_ptr<scalar_t>();
    const int64_t grain = std::max<int64_t>(1, 32768 / std::max<int64_t>(1, e * w));
    parallel_tasks(b * l, grain, [&](int64_t lo, int64_t hi) { forward_rows_any(p, lo, hi); });
    // final_state = xpad rows L .. L + W - 2.
    scalar_t* fin = f.final_state.mutable_data_ptr<scalar_t>();
    for (int64_t bi = 0; bi < b; ++bi)
      for (int64_t i = 0; i < w - 1; ++i)
        std::memcpy(fin + (bi * (w - 1) + i) * e, xpad_row(p, bi, l + i), sizeof(scalar_t) * e);
  });
  return f;
}

Grads backward(const Inputs& in, const at::Tensor& dout_in, const at::Tensor& dfin_in) {
  check_inputs(in);
  const auto opt = in.x.options();
  const auto ct = in.x.scalar_type();
  const int64_t b = in.x.size(0), l = in.x.size(1), e = in.x.size(2), w = in.weight.size(1);
  const at::Tensor dout = dout_in.defined() ? dout_in.to(ct).contiguous() : at::Tensor();
  const at::Tensor dfin = dfin_in.defined() && dfin_in.numel() > 0 ? dfin_in.to(ct).contiguous() : at::Tensor();
  const at::Tensor wt = in.weight.t().contiguous();  // (W, E)
  // Chunks of xpad rows per batch: about 64 tasks in all, chunks of at least 64 rows. Fixed by the shapes
  // only, so the dweight / dbias partial sums (and so the results) do not depend on the thread count.
  const int64_t lp = l + w - 1;
  const int64_t nchunk = std::clamp<int64_t>((64 + b - 1) / b, 1, std::max<int64_t>(1, lp / 64));
  const int64_t chunk = (lp + nchunk - 1) / nchunk;
  Grads g;
  g.dx = at::empty({b, l, e}, opt);
  if (in.state.defined()) g.dstate = at::empty({b, w - 1, e}, opt);
  at::Tensor part = at::empty({b * nchunk, w + 1, e}, opt);
  AT_DISPATCH_FLOATING_TYPES(ct, "causal_conv1d_cpu_bwd", [&] {
    const std::vector<scalar_t> zero(static_cast<size_t>(e), scalar_t(0));
    Ptrs<scalar_t> p = ptrs_of<scalar_t>(in, wt, zero);
    at::Tensor dout_zero;
    if (dout.defined()) {
      p.dout = dout.const_data_ptr<scalar_t>();
    } else {
      dout_zero = at::zeros({b, l, e}, opt);  // rare (only the final state is used): keeps the kernel simple
      p.dout = dout_zero.const_data_ptr<scalar_t>();
    }
    p.has_dfin = dfin.defined();
    if (p.has_dfin) p.dfin = dfin.const_data_ptr<scalar_t>();
    p.dx = g.dx.mutable_data_ptr<scalar_t>();
    p.dstate = g.dstate.defined() && w > 1 ? g.dstate.mutable_data_ptr<scalar_t>() : nullptr;
    p.part = part.mutable_data_ptr<scalar_t>();
    p.nchunk = nchunk;
    p.chunk = chunk;
    parallel_tasks(b * nchunk, 1, [&](int64_t lo, int64_t hi) { backward_tasks_any(p, lo, hi); });
  });
  const at::Tensor sums = part.sum(0);  // (W + 1, E)
  g.dweight = sums.narrow(0, 0, w).t().contiguous();
  if (in.bias.defined()) g.dbias = sums.select(0, w).contiguous();
  return g;
}

}  // namespace ssmlab::ops::causal_conv1d_cpu
