// CUDA kernels of the selective scan (README.md beside this file). No torch types: raw pointers and a plain
// Params struct with 64-bit sizes and strides (every offset is computed in int64, so L = 10^6 is fine).
//
// Work split: one warp per (batch b, channel e) pair. The state recurrence is independent per state index n,
// so lane l owns the states n = l, l + 32, ..., l + 32 (NPL - 1) (NPL = MAXN / 32, a template on the max-N
// bucket 32 / 64 / 128 / 256, so the per-lane arrays are indexed only by compile-time constants and live in
// registers). The couplings over n (y = C . h, and in the backward sum_n x A and sum_n G B) are warp
// reductions by shuffles. B_t / C_t rows are read by the warp as one coalesced row.
//
// Compute type `acc_t` is float for float / bf16 / half inputs and double for double inputs. The elementwise
// parts are fused: delta' = softplus(delta + bias), the D skip, and the silu(z) gate (forward and backward).
//
// Forward saves the state before steps 0, kChunk, 2 kChunk, ... into starts (B, E, K, N), K = ceil(L / kChunk)
// (exactly as cpu.cpp). Backward walks the chunks last to first: re-runs the chunk from its saved start into a
// per-lane buffer (kChunk x NPL values, local memory), then walks the adjoint state backwards:
//   G_t = dL/dh_t = gh + gy_t C_t ;  gh <- G_t * a_t (= dL/dh_{t-1}).
// Reductions that several warps share go through atomicAdd into acc_t buffers the host zeroed:
// dA (E, N) and dD, dbias (E) over b; dB, dC (B, L, G, N) over the channels of a group.
#pragma once
#include <cstdint>
#include <type_traits>

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

namespace ssmlab::ops::selective_scan_cuda {

inline constexpr int64_t kChunk = 64;      // steps between saved states (must match the host)
inline constexpr int kMaxState = 256;      // largest N
inline constexpr int kWarpsPerBlock = 4;   // (b, e) pairs per block

struct Params {
  int64_t batch, len, dim, dstate, ngroups, chunks;  // B, L, E, N, G, K
  int64_t dim_per_group;                             // E / G
  // Element strides. u, delta, z, y, dy, du, ddelta, dz share the layout (B, L, E): (sb, sl, 1).
  int64_t x_sb, x_sl;
  // B, C, dB, dC: (B, L, G, N) with strides (sb, sl, sg, 1).
  int64_t bc_sb, bc_sl, bc_sg;
  bool softplus;

  // inputs (in_t: u's dtype; acc_t: compute dtype)
  const void* u;
  const void* delta;
  const void* z;     // may be null
  const void* Bm;
  const void* Cm;
  const void* A;     // acc_t (E, N) contiguous
  const void* D;     // acc_t (E) or null
  const void* bias;  // acc_t (E) or null
  const void* h0;    // acc_t (B, E, N) contiguous or null

  // forward outputs
  void* y;       // in_t (B, L, E) layout x_*
  void* fin;     // acc_t (B, E, N)
  void* starts;  // acc_t (B, E, K, N)

  // backward
  const void* dy;    // in_t, layout x_*, or null (zero cotangent)
  const void* dfin;  // acc_t (B, E, N) or null
  void* du;          // in_t, layout x_*
  void* ddelta;      // in_t, layout x_* (w.r.t. the raw delta: bias and softplus applied)
  void* dz;          // in_t, layout x_*, or null when z is null
  void* dA;          // acc_t (E, N), zeroed, atomics
  void* dB;          // acc_t (B, L, G, N) layout bc_*, zeroed, atomics
  void* dC;          // acc_t, as dB
  void* dD;          // acc_t (E), zeroed, atomics, or null
  void* dbias;       // acc_t (E), zeroed, atomics, or null
  void* dh0;         // acc_t (B, E, N) or null
};

namespace detail {

template <typename T>
__device__ __forceinline__ float to_f(T v);
template <>
__device__ __forceinline__ float to_f<float>(float v) { return v; }
template <>
__device__ __forceinline__ float to_f<__nv_bfloat16>(__nv_bfloat16 v) { return __bfloat162float(v); }
template <>
__device__ __forceinline__ float to_f<__half>(__half v) { return __half2float(v); }

template <typename acc_t, typename in_t>
__device__ __forceinline__ acc_t load(const in_t* p, int64_t i) {
  if constexpr (sizeof(acc_t) == 8) {
    return static_cast<acc_t>(p[i]);  // double input
  } else {
    return to_f<in_t>(p[i]);
  }
}

template <typename in_t, typename acc_t>
__device__ __forceinline__ in_t store_cast(acc_t v) {
  if constexpr (sizeof(in_t) == sizeof(acc_t)) {
    return static_cast<in_t>(v);
  } else if constexpr (sizeof(in_t) == 2) {
    if constexpr (std::is_same_v<in_t, __nv_bfloat16>) return __float2bfloat16(v);
    else return __float2half(v);
  } else {
    return static_cast<in_t>(v);
  }
}

__device__ __forceinline__ float exp_(float x) { return __expf(x); }
__device__ __forceinline__ double exp_(double x) { return exp(x); }
__device__ __forceinline__ float log1p_(float x) { return log1pf(x); }
__device__ __forceinline__ double log1p_(double x) { return log1p(x); }

// softplus as at::softplus (beta 1, threshold 20).
template <typename T>
__device__ __forceinline__ T softplus(T x) { return x > T(20) ? x : log1p_(exp_(x)); }
template <typename T>
__device__ __forceinline__ T sigmoid(T x) { return T(1) / (T(1) + exp_(-x)); }

template <typename T>
__device__ __forceinline__ T warp_sum(T v) {
#pragma unroll
  for (int o = 16; o >= 1; o /= 2) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

}  // namespace detail

// grid: ceil(B * E / kWarpsPerBlock) blocks of 32 * kWarpsPerBlock threads.
template <typename in_t, typename acc_t, int MAXN>
__global__ void __launch_bounds__(32 * kWarpsPerBlock)
    scan_fwd_kernel(const Params p) {
  using namespace detail;
  constexpr int NPL = MAXN / 32;
  const int lane = threadIdx.x & 31;
  const int64_t be = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + (threadIdx.x >> 5);
  if (be >= p.batch * p.dim) return;  // whole warp leaves together
  const int64_t b = be / p.dim, e = be % p.dim, g = e / p.dim_per_group;
  const int64_t N = p.dstate, L = p.len, K = p.chunks;

  const in_t* __restrict__ u = static_cast<const in_t*>(p.u);
  const in_t* __restrict__ dl = static_cast<const in_t*>(p.delta);
  const in_t* __restrict__ z = static_cast<const in_t*>(p.z);
  const in_t* __restrict__ Bm = static_cast<const in_t*>(p.Bm);
  const in_t* __restrict__ Cm = static_cast<const in_t*>(p.Cm);
  const acc_t* __restrict__ A = static_cast<const acc_t*>(p.A);
  in_t* __restrict__ y = static_cast<in_t*>(p.y);
  acc_t* __restrict__ starts = static_cast<acc_t*>(p.starts);

  acc_t h[NPL], Ar[NPL];
#pragma unroll
  for (int k = 0; k < NPL; ++k) {
    const int n = lane + 32 * k;
    const bool on = n < N;
    Ar[k] = on ? A[e * N + n] : acc_t(0);
    h[k] = (on && p.h0) ? static_cast<const acc_t*>(p.h0)[be * N + n] : acc_t(0);
  }
  const acc_t Dv = p.D ? static_cast<const acc_t*>(p.D)[e] : acc_t(0);
  const acc_t bias = p.bias ? static_cast<const acc_t*>(p.bias)[e] : acc_t(0);

  const int64_t xb = b * p.x_sb + e;
  const int64_t bcb = b * p.bc_sb + g * p.bc_sg;
  for (int64_t t = 0; t < L; ++t) {
    if (t % kChunk == 0) {
      acc_t* s = starts + (be * K + t / kChunk) * N;
#pragma unroll
      for (int k = 0; k < NPL; ++k)
        if (lane + 32 * k < N) s[lane + 32 * k] = h[k];
    }
    const int64_t xi = xb + t * p.x_sl;
    const int64_t bi = bcb + t * p.bc_sl;
    const acc_t ut = load<acc_t>(u, xi);
    acc_t dt = load<acc_t>(dl, xi) + bias;
    if (p.softplus) dt = softplus(dt);
    const acc_t dtu = dt * ut;
    acc_t part = 0;
#pragma unroll
    for (int k = 0; k < NPL; ++k) {
      const int n = lane + 32 * k;
      if (n < N) {
        const acc_t a = exp_(dt * Ar[k]);
        h[k] = a * h[k] + dtu * load<acc_t>(Bm, bi + n);
        part += load<acc_t>(Cm, bi + n) * h[k];
      }
    }
    acc_t out = warp_sum(part) + Dv * ut;
    if (z) {
      const acc_t zt = load<acc_t>(z, xi);
      out *= zt * sigmoid(zt);
    }
    if (lane == 0) y[xi] = store_cast<in_t>(out);
  }
  acc_t* fin = static_cast<acc_t*>(p.fin);
#pragma unroll
  for (int k = 0; k < NPL; ++k)
    if (lane + 32 * k < N) fin[be * N + lane + 32 * k] = h[k];
}

template <typename in_t, typename acc_t, int MAXN>
__global__ void __launch_bounds__(32 * kWarpsPerBlock)
    scan_bwd_kernel(const Params p) {
  using namespace detail;
  constexpr int NPL = MAXN / 32;
  const int lane = threadIdx.x & 31;
  const int64_t be = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + (threadIdx.x >> 5);
  if (be >= p.batch * p.dim) return;
  const int64_t b = be / p.dim, e = be % p.dim, g = e / p.dim_per_group;
  const int64_t N = p.dstate, L = p.len, K = p.chunks;

  const in_t* __restrict__ u = static_cast<const in_t*>(p.u);
  const in_t* __restrict__ dl = static_cast<const in_t*>(p.delta);
  const in_t* __restrict__ z = static_cast<const in_t*>(p.z);
  const in_t* __restrict__ Bm = static_cast<const in_t*>(p.Bm);
  const in_t* __restrict__ Cm = static_cast<const in_t*>(p.Cm);
  const in_t* __restrict__ dy = static_cast<const in_t*>(p.dy);
  const acc_t* __restrict__ A = static_cast<const acc_t*>(p.A);
  const acc_t* __restrict__ starts = static_cast<const acc_t*>(p.starts);
  in_t* __restrict__ du = static_cast<in_t*>(p.du);
  in_t* __restrict__ ddelta = static_cast<in_t*>(p.ddelta);
  in_t* __restrict__ dz = static_cast<in_t*>(p.dz);
  acc_t* __restrict__ dB = static_cast<acc_t*>(p.dB);
  acc_t* __restrict__ dC = static_cast<acc_t*>(p.dC);

  acc_t Ar[NPL], gh[NPL], dAacc[NPL];
#pragma unroll
  for (int k = 0; k < NPL; ++k) {
    const int n = lane + 32 * k;
    const bool on = n < N;
    Ar[k] = on ? A[e * N + n] : acc_t(0);
    gh[k] = (on && p.dfin) ? static_cast<const acc_t*>(p.dfin)[be * N + n] : acc_t(0);
    dAacc[k] = 0;
  }
  const acc_t Dv = p.D ? static_cast<const acc_t*>(p.D)[e] : acc_t(0);
  const acc_t bias = p.bias ? static_cast<const acc_t*>(p.bias)[e] : acc_t(0);
  acc_t dDacc = 0, dbias_acc = 0;

  // States h_t of the current chunk (per lane, its NPL states), step-indexed at run time: local memory.
  acc_t hbuf[kChunk][NPL];

  const int64_t xb = b * p.x_sb + e;
  const int64_t bcb = b * p.bc_sb + g * p.bc_sg;
  for (int64_t c = K - 1; c >= 0; --c) {
    const int64_t t0 = c * kChunk;
    const int len = static_cast<int>(L - t0 < kChunk ? L - t0 : kChunk);
    acc_t hs[NPL];  // chunk start state
#pragma unroll
    for (int k = 0; k < NPL; ++k) {
      const int n = lane + 32 * k;
      hs[k] = n < N ? starts[(be * K + c) * N + n] : acc_t(0);
    }
    // Re-run the chunk from its saved start.
    {
      acc_t hc[NPL];
#pragma unroll
      for (int k = 0; k < NPL; ++k) hc[k] = hs[k];
      for (int j = 0; j < len; ++j) {
        const int64_t t = t0 + j, xi = xb + t * p.x_sl, bi = bcb + t * p.bc_sl;
        acc_t dt = load<acc_t>(dl, xi) + bias;
        if (p.softplus) dt = softplus(dt);
        const acc_t dtu = dt * load<acc_t>(u, xi);
#pragma unroll
        for (int k = 0; k < NPL; ++k) {
          const int n = lane + 32 * k;
          if (n < N) hc[k] = exp_(dt * Ar[k]) * hc[k] + dtu * load<acc_t>(Bm, bi + n);
          hbuf[j][k] = hc[k];
        }
      }
    }
    // Adjoint walk backwards through the chunk.
    for (int j = len - 1; j >= 0; --j) {
      const int64_t t = t0 + j, xi = xb + t * p.x_sl, bi = bcb + t * p.bc_sl;
      const acc_t ut = load<acc_t>(u, xi);
      const acc_t raw = load<acc_t>(dl, xi) + bias;
      const acc_t dt = p.softplus ? softplus(raw) : raw;
      const acc_t dtu = dt * ut;
      acc_t Cv[NPL], Bv[NPL], a[NPL];
#pragma unroll
      for (int k = 0; k < NPL; ++k) {
        const int n = lane + 32 * k;
        const bool on = n < N;
        Cv[k] = on ? load<acc_t>(Cm, bi + n) : acc_t(0);
        Bv[k] = on ? load<acc_t>(Bm, bi + n) : acc_t(0);
        a[k] = on ? exp_(dt * Ar[k]) : acc_t(0);
      }
      acc_t gy = dy ? load<acc_t>(dy, xi) : acc_t(0);  // w.r.t. the gated output
      if (z) {
        // y_pre = C . h_t + D u is needed for dz: one more warp reduction.
        acc_t part = 0;
#pragma unroll
        for (int k = 0; k < NPL; ++k) part += Cv[k] * hbuf[j][k];
        const acc_t ypre = warp_sum(part) + Dv * ut;
        const acc_t zt = load<acc_t>(z, xi), s = sigmoid(zt);
        if (lane == 0) dz[xi] = store_cast<in_t>(gy * ypre * s * (acc_t(1) + zt * (acc_t(1) - s)));
        gy *= zt * s;
      }
      dDacc += gy * ut;
      acc_t xa = 0, gb = 0;  // partial sums over this lane's n of x_n A_n and G_n B_n
#pragma unroll
      for (int k = 0; k < NPL; ++k) {
        const int n = lane + 32 * k;
        if (n < N) {
          const acc_t hprev = j > 0 ? hbuf[j - 1][k] : hs[k];
          const acc_t G = gh[k] + gy * Cv[k];
          const acc_t x = G * hprev * a[k];
          dAacc[k] += x * dt;
          xa += x * Ar[k];
          gb += G * Bv[k];
          gh[k] = G * a[k];
          atomicAdd(dB + bi + n, G * dtu);
          atomicAdd(dC + bi + n, gy * hbuf[j][k]);
        }
      }
      xa = warp_sum(xa);
      gb = warp_sum(gb);
      const acc_t ddt = xa + gb * ut;
      const acc_t dr = p.softplus ? ddt * sigmoid(raw) : ddt;  // d softplus(x)/dx = sigmoid(x)
      dbias_acc += dr;
      if (lane == 0) {
        du[xi] = store_cast<in_t>(gb * dt + gy * Dv);
        ddelta[xi] = store_cast<in_t>(dr);
      }
    }
  }
  acc_t* dA = static_cast<acc_t*>(p.dA);
#pragma unroll
  for (int k = 0; k < NPL; ++k) {
    const int n = lane + 32 * k;
    if (n < N) {
      atomicAdd(dA + e * N + n, dAacc[k]);
      if (p.dh0) static_cast<acc_t*>(p.dh0)[be * N + n] = gh[k];
    }
  }
  if (lane == 0) {
    if (p.dD) atomicAdd(static_cast<acc_t*>(p.dD) + e, dDacc);
    if (p.dbias) atomicAdd(static_cast<acc_t*>(p.dbias) + e, dbias_acc);
  }
}

}  // namespace ssmlab::ops::selective_scan_cuda
