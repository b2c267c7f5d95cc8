// Shared helpers of the fused CPU kernels (ops/*/cpu.cpp): ISA clones, a vectorisable exp, and a
// parallel loop on ATen's intra-op thread pool. Include after `#pragma GCC optimize("no-trapping-math")`
// so the clamps in exp_vec if-convert and the callers' loops vectorise.
#pragma once
#include <bit>
#include <cmath>
#include <cstdint>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/TensorIterator.h>

namespace ssmlab::ops::cpu {

// Row kernels marked SSMLAB_CPU_CLONES are compiled twice, for x86-64-v3 (AVX2 + FMA) and for the baseline,
// and picked at load time by CPU features (GCC function multiversioning). Not "arch=haswell": GCC resolves
// that clone with __builtin_cpu_is("haswell"), the CPU *model*, so AMD and newer Intel CPUs would get the
// baseline clone.
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define SSMLAB_CPU_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define SSMLAB_CPU_CLONES
#endif
#define SSMLAB_CPU_INLINE inline __attribute__((always_inline))

// exp for float that the compiler can vectorise: 2^k (exponent bits) times a degree-7 polynomial on
// r = x - k ln2 (Cephes expf, ~1 ulp). x is clamped to [-87, 88] (results below ~1.6e-38 are returned as
// that, not 0; above ~1.6e38 saturate; decays exp(delta A) with A < 0 never reach either).
SSMLAB_CPU_INLINE float exp_vec(float x) {
  x = x < -87.0f ? -87.0f : x;
  x = x > 88.0f ? 88.0f : x;
  constexpr float magic = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer held in the low bits
  float kf = x * 1.44269504088896341f + magic;
  const int32_t k = __builtin_bit_cast(int32_t, kf) - 0x4B400000;
  kf -= magic;
  float r = x - kf * 0.693359375f;
  r = r - kf * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  return p * __builtin_bit_cast(float, (k + 127) << 23);
}
// float64 keeps the libm exp (fp64 is the tests' and analyses' precision, not the training one).
SSMLAB_CPU_INLINE double exp_vec(double x) { return std::exp(x); }

// sum_n a[n] * b[n] with 32 bytes of independent lanes (vectorises without reassociation flags), the lanes
// summed as a tree (log2 of the lane count dependent adds), then the tail.
template <typename T>
SSMLAB_CPU_INLINE T dot(const T* __restrict a, const T* __restrict b, int64_t N) {
  constexpr int W = 32 / sizeof(T);
  T lane[W] = {};
  int64_t n = 0;
  for (; n + W <= N; n += W)
    for (int j = 0; j < W; ++j) lane[j] += a[n + j] * b[n + j];
  for (int w = W / 2; w >= 1; w /= 2)
    for (int j = 0; j < w; ++j) lane[j] += lane[j + w];
  T s = lane[0];
  for (; n < N; ++n) s += a[n] * b[n];
  return s;
}

// Data pointer of an optional (possibly undefined) tensor, or null.
template <typename T>
const T* ptr_or_null(const at::Tensor& t) {
  return t.defined() ? t.const_data_ptr<T>() : nullptr;
}
template <typename T>
T* mut_or_null(at::Tensor& t) {
  return t.defined() ? t.mutable_data_ptr<T>() : nullptr;
}

template <typename T>
SSMLAB_CPU_INLINE T sigmoid(T z) {
  return T(1) / (T(1) + exp_vec(-z));
}

// Runs fn(lo, hi) over [0, n) on ATen's intra-op threads. at::parallel_for is a header template whose
// OpenMP pragmas need -fopenmp in *this* translation unit (the build does not pass it, so it would run
// serially); TensorIterator::for_each runs the same parallel_for compiled inside libtorch.
template <typename F>
void parallel_tasks(int64_t n, int64_t grain, const F& fn) {
  if (n <= 0) return;
  if (n <= grain || at::get_num_threads() <= 1 || at::in_parallel_region()) {
    fn(int64_t{0}, n);
    return;
  }
  at::Tensor idx = at::arange(n, at::TensorOptions().dtype(at::kLong));
  auto iter = at::TensorIterator::borrowing_nullary_op(idx);
  iter.for_each(
      [&](char** data, const int64_t* strides, int64_t size0, int64_t size1) {
        for (int64_t j = 0; j < size1; ++j) {
          const char* base = data[0] + j * strides[1];
          if (strides[0] == static_cast<int64_t>(sizeof(int64_t))) {
            const int64_t lo = *reinterpret_cast<const int64_t*>(base);
            fn(lo, lo + size0);
          } else {
            for (int64_t i = 0; i < size0; ++i) {
              const int64_t v = *reinterpret_cast<const int64_t*>(base + i * strides[0]);
              fn(v, v + 1);
            }
          }
        }
      },
      grain);
}

}  // namespace ssmlab::ops::cpu
