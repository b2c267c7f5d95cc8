// Fused CPU cross_entropy (cpu.h). Per row r of logits x (V entries, read in their own dtype, widened to T):
//   m = max_v x[v];  s = sum_v exp(x[v] - m);  lse = m + log s   (lse = -inf when m = -inf: an all -inf row)
//   loss = (m - x[t]) + log s (t = targets[r]), or 0 when t is ignore_index
// backward: dx[v] = exp(x[v] - lse) * (gl + ge) - [v == t] * gl, gl = gloss[r] (0 when ignored), ge = glse[r],
// written straight into the logits' dtype (the target entry rounded once, from T). A row with gl + ge = 0 that
// is ignored is written as zeros without reading it.
#include "ssmlab/ops/cross_entropy/cpu.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <limits>
#include <type_traits>

#include <ATen/ATen.h>

#include "ssmlab/core/device.h"
#include "ssmlab/core/error.h"
#include "ssmlab/ops/cpu_kernels.h"

// As in the other fused kernels: lets the compiler if-convert the clamps in exp_vec and the lane maxima.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("no-trapping-math")
#endif

namespace ssmlab::ops::cross_entropy_cpu {
namespace {

using cpu::exp_vec;
using cpu::parallel_tasks;

std::atomic<bool> ce_poison{false};

at::Tensor ce_out(at::IntArrayRef sizes, const at::TensorOptions& o) {
  return ce_poison.load() ? at::full(sizes, std::numeric_limits<double>::quiet_NaN(), o) : at::empty(sizes, o);
}

// I: the logits' element type; T: the compute type.
template <typename I, typename T>
struct CePtrs {
  int64_t V = 0, ignore = 0;
  const I* x = nullptr;
  const int64_t* tg = nullptr;
  T *loss = nullptr, *lse = nullptr;             // forward
  const T *lse_in = nullptr, *gloss = nullptr;   // backward; gloss / glse may be null (zero)
  const T* glse = nullptr;
  I* dx = nullptr;
};

// Element access in the logits' dtype. bfloat16 is handled as its uint16_t bits (widening is a shift, the
// narrowing below rounds to nearest even as c10::BFloat16 does), so both directions vectorise.
SSMLAB_CPU_INLINE float ce_ld(float v) { return v; }
SSMLAB_CPU_INLINE double ce_ld(double v) { return v; }
SSMLAB_CPU_INLINE float ce_ld(uint16_t bf16_bits) { return __builtin_bit_cast(float, uint32_t{bf16_bits} << 16); }
SSMLAB_CPU_INLINE float ce_ld(c10::Half v) { return static_cast<float>(v); }

template <typename I, typename T>
SSMLAB_CPU_INLINE I ce_st(T v) {
  if constexpr (std::is_same_v<I, uint16_t>) {
    const uint32_t u = __builtin_bit_cast(uint32_t, v);
    const uint32_t rounded = (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;
    return v != v ? uint16_t{0x7FC0} : static_cast<uint16_t>(rounded);
  } else {
    return static_cast<I>(v);
  }
}

// Lanes per row reduction: two 32-byte vectors of T.
template <typename T>
inline constexpr int kCeLanes = 64 / static_cast<int>(sizeof(T));

template <typename I, typename T>
SSMLAB_CPU_INLINE T ce_row_max(const I* __restrict x, int64_t V) {
  constexpr int W = kCeLanes<T>;
  const T ninf = -std::numeric_limits<T>::infinity();
  T lane[W];
  for (int j = 0; j < W; ++j) lane[j] = ninf;
  int64_t n = 0;
  for (; n + W <= V; n += W)
    for (int j = 0; j < W; ++j) {
      const T v = ce_ld(x[n + j]);
      lane[j] = v > lane[j] ? v : lane[j];
    }
  for (int w = W / 2; w >= 1; w /= 2)
    for (int j = 0; j < w; ++j) lane[j] = lane[j + w] > lane[j] ? lane[j + w] : lane[j];
  T m = lane[0];
  for (; n < V; ++n) {
    const T v = ce_ld(x[n]);
    m = v > m ? v : m;
  }
  return m;
}

template <typename I, typename T>
SSMLAB_CPU_INLINE T ce_row_sumexp(const I* __restrict x, int64_t V, T m) {
  constexpr int W = kCeLanes<T>;
  T lane[W] = {};
  int64_t n = 0;
  for (; n + W <= V; n += W)
    for (int j = 0; j < W; ++j) lane[j] += exp_vec(ce_ld(x[n + j]) - m);
  for (int w = W / 2; w >= 1; w /= 2)
    for (int j = 0; j < w; ++j) lane[j] += lane[j + w];
  T s = lane[0];
  for (; n < V; ++n) s += exp_vec(ce_ld(x[n]) - m);
  return s;
}

template <typename I, typename T>
SSMLAB_CPU_INLINE void ce_forward_rows(const CePtrs<I, T>& p, int64_t lo, int64_t hi) {
  const int64_t V = p.V;
  for (int64_t r = lo; r < hi; ++r) {
    const I* x = p.x + r * V;
    const T m = ce_row_max<I, T>(x, V);
    const int64_t t = p.tg[r];
    // m is -inf only for an all -inf row (NaNs are skipped by the max; they reach s through exp and poison it):
    // lse -inf, loss NaN (-inf - -inf), as the oracle. The loss is (m - x[t]) + log s, not lse - x[t]: at large
    // |logits| the rounded lse would lose the loss's low bits.
    T lse = m, loss = std::numeric_limits<T>::quiet_NaN();
    if (m != -std::numeric_limits<T>::infinity()) {
      const T logs = std::log(ce_row_sumexp<I, T>(x, V, m));
      lse = m + logs;
      if (t != p.ignore) loss = (m - ce_ld(x[t])) + logs;
    }
    p.lse[r] = lse;
    p.loss[r] = t == p.ignore ? T(0) : loss;
  }
}

template <typename I, typename T>
SSMLAB_CPU_INLINE void ce_backward_rows(const CePtrs<I, T>& p, int64_t lo, int64_t hi) {
  const int64_t V = p.V;
  for (int64_t r = lo; r < hi; ++r) {
    const I* __restrict x = p.x + r * V;
    I* __restrict dx = p.dx + r * V;
    const int64_t t = p.tg[r];
    const bool counted = t != p.ignore;
    const T gl = counted && p.gloss ? p.gloss[r] : T(0);
    const T c = gl + (p.glse ? p.glse[r] : T(0));
    if (!counted && c == T(0)) {
      std::memset(static_cast<void*>(dx), 0, static_cast<size_t>(V) * sizeof(I));
      continue;
    }
    const T l = p.lse_in[r];
    for (int64_t v = 0; v < V; ++v) dx[v] = ce_st<I, T>(exp_vec(ce_ld(x[v]) - l) * c);
    if (counted) dx[t] = ce_st<I, T>(exp_vec(ce_ld(x[t]) - l) * c - gl);
  }
}

// ISA clones per logits dtype (cpu_kernels.h: SSMLAB_CPU_CLONES); the templates above inline into each.
SSMLAB_CPU_CLONES void ce_fwd_f32(const CePtrs<float, float>& p, int64_t lo, int64_t hi) { ce_forward_rows(p, lo, hi); }
SSMLAB_CPU_CLONES void ce_fwd_f64(const CePtrs<double, double>& p, int64_t lo, int64_t hi) { ce_forward_rows(p, lo, hi); }
SSMLAB_CPU_CLONES void ce_fwd_bf16(const CePtrs<uint16_t, float>& p, int64_t lo, int64_t hi) {
  ce_forward_rows(p, lo, hi);
}
SSMLAB_CPU_CLONES void ce_fwd_f16(const CePtrs<c10::Half, float>& p, int64_t lo, int64_t hi) { ce_forward_rows(p, lo, hi); }
SSMLAB_CPU_CLONES void ce_bwd_f32(const CePtrs<float, float>& p, int64_t lo, int64_t hi) { ce_backward_rows(p, lo, hi); }
SSMLAB_CPU_CLONES void ce_bwd_f64(const CePtrs<double, double>& p, int64_t lo, int64_t hi) {
  ce_backward_rows(p, lo, hi);
}
SSMLAB_CPU_CLONES void ce_bwd_bf16(const CePtrs<uint16_t, float>& p, int64_t lo, int64_t hi) {
  ce_backward_rows(p, lo, hi);
}
SSMLAB_CPU_CLONES void ce_bwd_f16(const CePtrs<c10::Half, float>& p, int64_t lo, int64_t hi) {
  ce_backward_rows(p, lo, hi);
}

void ce_fwd_any(const CePtrs<float, float>& p, int64_t lo, int64_t hi) { ce_fwd_f32(p, lo, hi); }
void ce_fwd_any(const CePtrs<double, double>& p, int64_t lo, int64_t hi) { ce_fwd_f64(p, lo, hi); }
void ce_fwd_any(const CePtrs<uint16_t, float>& p, int64_t lo, int64_t hi) { ce_fwd_bf16(p, lo, hi); }
void ce_fwd_any(const CePtrs<c10::Half, float>& p, int64_t lo, int64_t hi) { ce_fwd_f16(p, lo, hi); }
void ce_bwd_any(const CePtrs<float, float>& p, int64_t lo, int64_t hi) { ce_bwd_f32(p, lo, hi); }
void ce_bwd_any(const CePtrs<double, double>& p, int64_t lo, int64_t hi) { ce_bwd_f64(p, lo, hi); }
void ce_bwd_any(const CePtrs<uint16_t, float>& p, int64_t lo, int64_t hi) { ce_bwd_bf16(p, lo, hi); }
void ce_bwd_any(const CePtrs<c10::Half, float>& p, int64_t lo, int64_t hi) { ce_bwd_f16(p, lo, hi); }

// About 64K logits per task: enough work to amortise a task, small enough to balance a few rows.
int64_t ce_grain(int64_t V) { return std::max<int64_t>(1, (int64_t{1} << 16) / std::max<int64_t>(1, V)); }

// Calls fn.template operator()<I, T>() for the logits' dtype.
template <typename F>
void ce_dispatch(at::ScalarType dt, const F& fn) {
  switch (dt) {
    case at::kFloat: fn.template operator()<float, float>(); break;
    case at::kDouble: fn.template operator()<double, double>(); break;
    case at::kBFloat16: fn.template operator()<uint16_t, float>(); break;
    case at::kHalf: fn.template operator()<c10::Half, float>(); break;
    default: fail("cross_entropy_cpu: unsupported logits dtype ", c10::toString(dt));
  }
}

}  // namespace

void set_poison_outputs(bool on) { ce_poison.store(on); }

CrossEntropyOut forward(const at::Tensor& logits, const at::Tensor& targets, int64_t ignore_index) {
  const int64_t M = logits.size(0), V = logits.size(1);
  const auto ct = state_dtype(logits.scalar_type());
  CrossEntropyOut f;
  f.loss = ce_out({M}, logits.options().dtype(ct));
  f.lse = ce_out({M}, logits.options().dtype(ct));
  ce_dispatch(logits.scalar_type(), [&]<typename I, typename T>() {
    CePtrs<I, T> p;
    p.V = V;
    p.ignore = ignore_index;
    p.x = static_cast<const I*>(logits.const_data_ptr());
    p.tg = targets.const_data_ptr<int64_t>();
    p.loss = f.loss.mutable_data_ptr<T>();
    p.lse = f.lse.mutable_data_ptr<T>();
    parallel_tasks(M, ce_grain(V), [&](int64_t lo, int64_t hi) { ce_fwd_any(p, lo, hi); });
  });
  return f;
}

at::Tensor backward(const at::Tensor& logits, const at::Tensor& targets, int64_t ignore_index, const at::Tensor& lse,
                    const at::Tensor& gloss, const at::Tensor& glse) {
  const int64_t M = logits.size(0), V = logits.size(1);
  at::Tensor dx = ce_out({M, V}, logits.options());
  ce_dispatch(logits.scalar_type(), [&]<typename I, typename T>() {
    CePtrs<I, T> p;
    p.V = V;
    p.ignore = ignore_index;
    p.x = static_cast<const I*>(logits.const_data_ptr());
    p.tg = targets.const_data_ptr<int64_t>();
    p.lse_in = lse.const_data_ptr<T>();
    p.gloss = cpu::ptr_or_null<T>(gloss);
    p.glse = cpu::ptr_or_null<T>(glse);
    p.dx = static_cast<I*>(dx.mutable_data_ptr());
    parallel_tasks(M, ce_grain(V), [&](int64_t lo, int64_t hi) { ce_bwd_any(p, lo, hi); });
  });
  return dx;
}

}  // namespace ssmlab::ops::cross_entropy_cpu
