// CUDA kernel of selective_state_update (README.md beside this file). No torch types: raw pointers and a plain
// Params struct with 64-bit sizes and strides.
//
// Work split: a group of TPG threads per state row (b, e); thread `sub` of the group owns the 16-byte chunks
// c = sub, sub + TPG, ... of the row (CH = 4 fp32 / 2 fp64 states each), so a warp reads and writes its rows
// as one contiguous span, 16 bytes per thread per load. TPG and the chunks per thread are fixed by the max-N
// bucket (a template), so the per-thread state lives in registers. y = C . h is summed across the group by
// xor shuffles (groups are aligned within the warp). Compute type acc_t: float for float / bf16 / half x,
// double for double x; dt bias + softplus, the D skip and the silu(z) gate are fused.
#pragma once
#include <cstdint>
#include <type_traits>

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

namespace ssmlab::ops::selective_state_update_cuda {

inline constexpr int kMaxState = 256;
inline constexpr int kThreads = 128;

struct Params {
  int64_t batch, dim, dstate, ngroups, dim_per_group;  // B, E, N, G, E / G
  int64_t x_sb, dt_sb, z_sb;                           // (B, E) batch strides (E stride 1)
  int64_t b_sb, b_sg, c_sb, c_sg;                      // B, C: (B, G, N) strides (N stride 1)
  bool softplus;
  bool vec;  // N % CH == 0 and state, A 16-byte aligned: whole chunks are loaded as one vector
  const void* x;      // in_t
  const void* dt;     // in_t
  const void* z;      // in_t or null
  const void* Bm;     // in_t
  const void* Cm;     // in_t
  const void* A;      // acc_t (E, N) contiguous
  const void* D;      // acc_t (E) or null
  const void* bias;   // acc_t (E) or null
  void* state;        // acc_t (B, E, N) contiguous, updated in place
  void* y;            // in_t (B, E) contiguous
};

namespace detail {

template <typename T, int N>
struct __align__(sizeof(T) * N) Pack {
  T v[N];
};

template <typename acc_t, typename T>
__device__ __forceinline__ acc_t to_acc(T v) {
  if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    return static_cast<acc_t>(__bfloat162float(v));
  } else if constexpr (std::is_same_v<T, __half>) {
    return static_cast<acc_t>(__half2float(v));
  } else {
    return static_cast<acc_t>(v);
  }
}

template <typename T, typename acc_t>
__device__ __forceinline__ T from_acc(acc_t v) {
  if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    return __float2bfloat16(static_cast<float>(v));
  } else if constexpr (std::is_same_v<T, __half>) {
    return __float2half(static_cast<float>(v));
  } else {
    return static_cast<T>(v);
  }
}

__device__ __forceinline__ float exp_(float v) { return __expf(v); }
__device__ __forceinline__ double exp_(double v) { return exp(v); }
__device__ __forceinline__ float log1p_(float v) { return log1pf(v); }
__device__ __forceinline__ double log1p_(double v) { return log1p(v); }

// softplus as at::softplus (beta 1, threshold 20).
template <typename T>
__device__ __forceinline__ T softplus(T v) {
  return v > T(20) ? v : log1p_(exp_(v));
}

}  // namespace detail

// Chunk width, threads per row and chunks per thread of a max-N bucket.
template <typename acc_t, int MAXN>
struct Shape {
  static constexpr int CH = static_cast<int>(16 / sizeof(acc_t));
  static constexpr int TPG = MAXN / CH < 32 ? (MAXN / CH > 0 ? MAXN / CH : 1) : 32;
  static constexpr int CPT = (MAXN + CH * TPG - 1) / (CH * TPG);
};

// grid: ceil(B * E * TPG / kThreads) blocks of kThreads threads.
template <typename in_t, typename acc_t, int MAXN>
__global__ void __launch_bounds__(kThreads) state_update_kernel(const Params p) {
  using namespace detail;
  using Sh = Shape<acc_t, MAXN>;
  constexpr int CH = Sh::CH, TPG = Sh::TPG, CPT = Sh::CPT;
  static_assert(kThreads % TPG == 0 && 32 % TPG == 0, "groups must tile the warp");
  const int64_t row = (static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x) / TPG;
  const int sub = static_cast<int>(threadIdx.x % TPG);
  const bool active = row < p.batch * p.dim;  // no early return: the whole warp takes part in the shuffles
  const int64_t N = p.dstate;
  const int64_t b = active ? row / p.dim : 0, e = active ? row % p.dim : 0, grp = e / p.dim_per_group;

  acc_t part = 0, u = 0;
  if (active) {
    const in_t* __restrict__ Bp = static_cast<const in_t*>(p.Bm) + b * p.b_sb + grp * p.b_sg;
    const in_t* __restrict__ Cp = static_cast<const in_t*>(p.Cm) + b * p.c_sb + grp * p.c_sg;
    const acc_t* __restrict__ a = static_cast<const acc_t*>(p.A) + e * N;
    acc_t* __restrict__ h = static_cast<acc_t*>(p.state) + row * N;
    acc_t d = to_acc<acc_t>(static_cast<const in_t*>(p.dt)[b * p.dt_sb + e]);
    if (p.bias != nullptr) d += static_cast<const acc_t*>(p.bias)[e];
    if (p.softplus) d = softplus(d);
    u = to_acc<acc_t>(static_cast<const in_t*>(p.x)[b * p.x_sb + e]);
    const acc_t du = d * u;
#pragma unroll
    for (int k = 0; k < CPT; ++k) {
      const int64_t n0 = static_cast<int64_t>(sub + TPG * k) * CH;
      if (n0 >= N) continue;
      if (p.vec) {
        Pack<acc_t, CH> hv = *reinterpret_cast<const Pack<acc_t, CH>*>(h + n0);
        const Pack<acc_t, CH> av = *reinterpret_cast<const Pack<acc_t, CH>*>(a + n0);
#pragma unroll
        for (int j = 0; j < CH; ++j) {
          const acc_t hn = exp_(d * av.v[j]) * hv.v[j] + du * to_acc<acc_t>(Bp[n0 + j]);
          hv.v[j] = hn;
          part += to_acc<acc_t>(Cp[n0 + j]) * hn;
        }
        *reinterpret_cast<Pack<acc_t, CH>*>(h + n0) = hv;
      } else {
#pragma unroll
        for (int j = 0; j < CH; ++j) {
          const int64_t n = n0 + j;
          if (n < N) {
            const acc_t hn = exp_(d * a[n]) * h[n] + du * to_acc<acc_t>(Bp[n]);
            h[n] = hn;
            part += to_acc<acc_t>(Cp[n]) * hn;
          }
        }
      }
    }
  }
#pragma unroll
  for (int o = TPG / 2; o >= 1; o /= 2) part += __shfl_xor_sync(0xffffffffu, part, o);
  if (active && sub == 0) {
    acc_t y = part;
    if (p.D != nullptr) y += static_cast<const acc_t*>(p.D)[e] * u;
    if (p.z != nullptr) {
      const acc_t zv = to_acc<acc_t>(static_cast<const in_t*>(p.z)[b * p.z_sb + e]);
      y *= zv * (acc_t(1) / (acc_t(1) + exp_(-zv)));  // silu as the CUDA scan computes it
    }
    static_cast<in_t*>(p.y)[row] = from_acc<in_t>(y);
  }
}

}  // namespace ssmlab::ops::selective_state_update_cuda
