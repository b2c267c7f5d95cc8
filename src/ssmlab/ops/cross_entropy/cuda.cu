// CUDA kernels of cross_entropy (cuda.h): one block per row. The forward keeps a running (max, sum of
// exp(x - max)) per thread over a strided walk of the row, merges them in the warp and then over the warps, and
// thread 0 writes loss and lse; the backward recomputes softmax from the saved lse and writes the gradient row in
// the logits' dtype. Neither makes a float32 copy of the logits: the whole op reads the logits twice (forward
// and backward) and writes the gradient once.
#include "ssmlab/ops/cross_entropy/cuda.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "ssmlab/core/device.h"
#include "ssmlab/core/error.h"

namespace ssmlab::ops::cross_entropy_cuda {
namespace {

using at::Tensor;

constexpr int kCeThreads = 256;
constexpr int kCeWarps = kCeThreads / 32;

template <typename A>
__device__ __forceinline__ A ce_exp(A x);
template <>
__device__ __forceinline__ float ce_exp<float>(float x) { return __expf(x); }
template <>
__device__ __forceinline__ double ce_exp<double>(double x) { return exp(x); }

template <typename A>
__device__ __forceinline__ A ce_log(A x);
template <>
__device__ __forceinline__ float ce_log<float>(float x) { return logf(x); }
template <>
__device__ __forceinline__ double ce_log<double>(double x) { return log(x); }

// Adds x to the running pair (m, s) with s = sum exp(x_i - m). A -inf x adds nothing (also while m is -inf, where
// exp(x - m) would be exp(NaN)); a NaN x makes s NaN.
template <typename A>
__device__ __forceinline__ void ce_push(A& m, A& s, A x) {
  if (x > m) {
    s = s * ce_exp<A>(m - x) + A(1);  // m = -inf: exp(-inf) = 0
    m = x;
  } else if (x != -INFINITY) {
    s += ce_exp<A>(x - m);
  }
}

// Merges (m2, s2) into (m, s).
template <typename A>
__device__ __forceinline__ void ce_merge(A& m, A& s, A m2, A s2) {
  const A mm = m > m2 ? m : m2;
  if (mm == -INFINITY) {  // both empty so far
    s = s + s2;
    m = mm;
    return;
  }
  s = s * ce_exp<A>(m - mm) + s2 * ce_exp<A>(m2 - mm);
  m = mm;
}

template <typename X, typename A>
__global__ void __launch_bounds__(kCeThreads) ce_forward_kernel(const X* __restrict__ logits, int64_t row_stride,
                                                                  const int64_t* __restrict__ targets, int64_t M,
                                                                  int64_t V, int64_t ignore_index,
                                                                  A* __restrict__ loss, A* __restrict__ lse) {
  __shared__ A sm_m[kCeWarps];
  __shared__ A sm_s[kCeWarps];
  for (int64_t r = blockIdx.x; r < M; r += gridDim.x) {
    const X* x = logits + r * row_stride;
    A m = -INFINITY, s = A(0);
    for (int64_t v = threadIdx.x; v < V; v += kCeThreads) ce_push<A>(m, s, static_cast<A>(x[v]));
    for (int off = 16; off > 0; off >>= 1) {
      const A m2 = __shfl_xor_sync(0xffffffffu, m, off);
      const A s2 = __shfl_xor_sync(0xffffffffu, s, off);
      ce_merge<A>(m, s, m2, s2);
    }
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    if (lane == 0) {
      sm_m[warp] = m;
      sm_s[warp] = s;
    }
    __syncthreads();
    if (threadIdx.x == 0) {
      A bm = sm_m[0], bs = sm_s[0];
      for (int w = 1; w < kCeWarps; ++w) ce_merge<A>(bm, bs, sm_m[w], sm_s[w]);
      // s is relative to the row max; an all -inf row has max 0 and s = 0 (lse -inf), as the CPU kernel.
      const A mx = bm == -INFINITY ? A(0) : bm;
      const A logs = ce_log<A>(bs);
      lse[r] = mx + logs;
      const int64_t t = targets[r];
      if (t == ignore_index) {
        loss[r] = A(0);
      } else if (t < 0 || t >= V) {
        loss[r] = static_cast<A>(NAN);
      } else {
        loss[r] = logs - (static_cast<A>(x[t]) - mx);
      }
    }
    __syncthreads();  // sm_* are reused by the next row
  }
}

template <typename X, typename A>
__global__ void __launch_bounds__(kCeThreads) ce_backward_kernel(const X* __restrict__ logits, int64_t row_stride,
                                                                   const int64_t* __restrict__ targets, int64_t M,
                                                                   int64_t V, int64_t ignore_index,
                                                                   const A* __restrict__ lse,
                                                                   const A* __restrict__ gloss,
                                                                   const A* __restrict__ glse, X* __restrict__ dx) {
  for (int64_t r = blockIdx.x; r < M; r += gridDim.x) {
    const X* x = logits + r * row_stride;
    X* d = dx + r * V;
    const int64_t t = targets[r];
    const bool counted = t != ignore_index;
    const bool valid = t >= 0 && t < V;
    A gl = counted && gloss != nullptr ? gloss[r] : A(0);
    if (counted && !valid) gl = static_cast<A>(NAN);
    const A c = gl + (glse != nullptr ? glse[r] : A(0));
    const A l = lse[r];
    for (int64_t v = threadIdx.x; v < V; v += kCeThreads) {
      A g = ce_exp<A>(static_cast<A>(x[v]) - l) * c;
      if (v == t) g -= gl;
      d[v] = static_cast<X>(g);
    }
  }
}

int64_t ce_grid(int64_t M) {
  // One block per row up to a cap; the kernels loop over rows beyond it.
  return std::max<int64_t>(1, std::min<int64_t>(M, int64_t{1} << 20));
}

}  // namespace

bool supports(const Tensor& logits, const Tensor& targets) {
  if (!logits.defined() || !targets.defined() || !logits.is_cuda() || !targets.is_cuda()) return false;
  if (logits.device() != targets.device() || logits.dim() != 2 || targets.dim() != 1) return false;
  const auto dt = logits.scalar_type();
  if (!(dt == at::kFloat || dt == at::kDouble || dt == at::kBFloat16 || dt == at::kHalf)) return false;
  return targets.scalar_type() == at::kLong && (logits.size(1) <= 1 || logits.stride(1) == 1);
}

CrossEntropyOut forward(const Tensor& logits, const Tensor& targets, int64_t ignore_index) {
  SSMLAB_CHECK(supports(logits, targets), "cross_entropy_cuda::forward: unsupported logits ", logits.sizes(),
               " / targets");
  const c10::cuda::CUDAGuard guard(logits.device());
  const int64_t M = logits.size(0), V = logits.size(1);
  const auto acc = state_dtype(logits.scalar_type());
  const Tensor tg = targets.contiguous();
  CrossEntropyOut f{out_empty({M}, logits.options().dtype(acc)), out_empty({M}, logits.options().dtype(acc))};
  if (M == 0) return f;
  const auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, logits.scalar_type(), "cross_entropy_cuda_fwd", [&] {
    using A = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;
    ce_forward_kernel<scalar_t, A><<<static_cast<unsigned>(ce_grid(M)), kCeThreads, 0, stream>>>(
        logits.const_data_ptr<scalar_t>(), logits.stride(0), tg.const_data_ptr<int64_t>(), M, V, ignore_index,
        f.loss.mutable_data_ptr<A>(), f.lse.mutable_data_ptr<A>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return f;
}

Tensor backward(const Tensor& logits, const Tensor& targets, int64_t ignore_index, const Tensor& lse,
                const Tensor& gloss, const Tensor& glse) {
  SSMLAB_CHECK(supports(logits, targets), "cross_entropy_cuda::backward: unsupported logits ", logits.sizes(),
               " / targets");
  const c10::cuda::CUDAGuard guard(logits.device());
  const int64_t M = logits.size(0), V = logits.size(1);
  const auto acc = state_dtype(logits.scalar_type());
  const Tensor tg = targets.contiguous();
  const Tensor l = lse.to(acc).contiguous();
  const Tensor gl = gloss.defined() ? gloss.to(acc).contiguous() : Tensor();
  const Tensor ge = glse.defined() ? glse.to(acc).contiguous() : Tensor();
  Tensor dx = out_empty({M, V}, logits.options());
  if (M == 0 || V == 0) return dx;
  const auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, logits.scalar_type(), "cross_entropy_cuda_bwd", [&] {
    using A = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;
    ce_backward_kernel<scalar_t, A><<<static_cast<unsigned>(ce_grid(M)), kCeThreads, 0, stream>>>(
        logits.const_data_ptr<scalar_t>(), logits.stride(0), tg.const_data_ptr<int64_t>(), M, V, ignore_index,
        l.const_data_ptr<A>(), gl.defined() ? gl.const_data_ptr<A>() : nullptr,
        ge.defined() ? ge.const_data_ptr<A>() : nullptr, dx.mutable_data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return dx;
}

}  // namespace ssmlab::ops::cross_entropy_cuda
