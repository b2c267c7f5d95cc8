// The fast CUDA forward of the selective scan (fp32 compute; float / bf16 / fp16 inputs). Same Params and the
// same outputs as scan_fwd_kernel in kernel_scan.cuh (y, final state, chunk-start states every kChunk steps),
// so the backward is shared; cuda.cu picks this kernel when fast_fwd_supported(...).
//
// Work split: a block of kThreads threads covers one batch row b and EB = kThreads / S consecutive channels;
// S adjacent lanes share a channel e and each owns NS consecutive states n (S * NS >= N, padded states have
// A = B = C = 0 and stay 0). Time runs in tiles of T steps:
//   1. staging: the block loads u, delta (+ bias, softplus) for its T x EB (l, e) pairs once, coalesced along
//      e, computes delta' and delta' * u once per pair (not once per lane), and the T x N rows of B and C of
//      its group, all into shared memory;
//   2. scan: every lane runs its NS states over the T steps in registers (one exp2 per state per step,
//      A prescaled by log2 e); the S partial sums of C . h meet by shuffles; one lane per channel writes the
//      row to shared memory;
//   3. epilogue: the block adds D * u, applies silu(z) and writes y, coalesced.
// Chunk-start states for the backward are written when a tile starts at a multiple of kChunk (T divides it).
#pragma once
#include "ssmlab/ops/selective_scan/kernel_scan.cuh"

namespace ssmlab::ops::selective_scan_cuda {

namespace fast {

inline constexpr int kThreads = 64;

__device__ __forceinline__ float ex2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

template <typename in_t, int S, int NS, int T>
__global__ void __launch_bounds__(kThreads) scan_fwd_fast(const Params p) {
  using namespace detail;
  static_assert(kChunk % T == 0, "tiles must not straddle a saved chunk start");
  static_assert(NS % 4 == 0, "states per lane are read as float4");
  constexpr int EB = kThreads / S;
  constexpr int NP = S * NS;  // padded N
  __shared__ __align__(16) float Bs[T][NP];
  __shared__ __align__(16) float Cs[T][NP];
  __shared__ float dts[T][EB], dtus[T][EB], us[T][EB], ys[T][EB];

  const int tid = threadIdx.x, el = tid / S, s = tid % S;
  const int64_t b = blockIdx.y, e0 = static_cast<int64_t>(blockIdx.x) * EB, e = e0 + el;
  const int64_t N = p.dstate, L = p.len, E = p.dim, K = p.chunks;
  const bool e_on = e < E;
  const int64_t g = e0 / p.dim_per_group;  // host guarantees one group per block

  const in_t* __restrict__ u = static_cast<const in_t*>(p.u);
  const in_t* __restrict__ dl = static_cast<const in_t*>(p.delta);
  const in_t* __restrict__ z = static_cast<const in_t*>(p.z);
  const in_t* __restrict__ Bm = static_cast<const in_t*>(p.Bm);
  const in_t* __restrict__ Cm = static_cast<const in_t*>(p.Cm);
  const float* __restrict__ A = static_cast<const float*>(p.A);
  const float* __restrict__ D = static_cast<const float*>(p.D);
  const float* __restrict__ bias = static_cast<const float*>(p.bias);
  in_t* __restrict__ y = static_cast<in_t*>(p.y);
  float* __restrict__ starts = static_cast<float*>(p.starts);

  constexpr float kLog2e = 1.4426950408889634f;
  float h[NS], A2[NS];
#pragma unroll
  for (int k = 0; k < NS; ++k) {
    const int64_t n = s * NS + k;
    const bool on = e_on && n < N;
    A2[k] = on ? A[e * N + n] * kLog2e : 0.f;
    h[k] = (on && p.h0) ? static_cast<const float*>(p.h0)[(b * E + e) * N + n] : 0.f;
  }

  const int64_t xb = b * p.x_sb, bcb = b * p.bc_sb + g * p.bc_sg;
  for (int64_t l0 = 0; l0 < L; l0 += T) {
    const int tl = static_cast<int>(L - l0 < T ? L - l0 : T);
    if (l0 % kChunk == 0 && e_on) {
      float* st = starts + ((b * E + e) * K + l0 / kChunk) * N;
#pragma unroll
      for (int k = 0; k < NS; ++k)
        if (s * NS + k < N) st[s * NS + k] = h[k];
    }
    // 1. staging
    for (int i = tid; i < T * EB; i += kThreads) {
      const int li = i / EB, ej = i % EB;
      const int64_t ee = e0 + ej;
      float uv = 0.f, dt = 0.f;
      if (li < tl && ee < E) {
        const int64_t xi = xb + (l0 + li) * p.x_sl + ee;
        uv = load<float>(u, xi);
        dt = load<float>(dl, xi) + (bias ? bias[ee] : 0.f);
        if (p.softplus) dt = dt > 20.f ? dt : log1pf(__expf(dt));
      }
      us[li][ej] = uv;
      dts[li][ej] = dt;
      dtus[li][ej] = dt * uv;
    }
    for (int i = tid; i < T * NP; i += kThreads) {
      const int li = i / NP, n = i % NP;
      float bv = 0.f, cv = 0.f;
      if (li < tl && n < N) {
        const int64_t bi = bcb + (l0 + li) * p.bc_sl + n;
        bv = load<float>(Bm, bi);
        cv = load<float>(Cm, bi);
      }
      Bs[li][n] = bv;
      Cs[li][n] = cv;
    }
    __syncthreads();
    // 2. scan
#pragma unroll 4
    for (int li = 0; li < tl; ++li) {
      const float dt = dts[li][el], dtu = dtus[li][el];
      float acc = 0.f;
#pragma unroll
      for (int k = 0; k < NS; k += 4) {
        const float4 bv = *reinterpret_cast<const float4*>(&Bs[li][s * NS + k]);
        const float4 cv = *reinterpret_cast<const float4*>(&Cs[li][s * NS + k]);
        h[k + 0] = fmaf(ex2(dt * A2[k + 0]), h[k + 0], dtu * bv.x);
        h[k + 1] = fmaf(ex2(dt * A2[k + 1]), h[k + 1], dtu * bv.y);
        h[k + 2] = fmaf(ex2(dt * A2[k + 2]), h[k + 2], dtu * bv.z);
        h[k + 3] = fmaf(ex2(dt * A2[k + 3]), h[k + 3], dtu * bv.w);
        acc = fmaf(cv.x, h[k + 0], acc);
        acc = fmaf(cv.y, h[k + 1], acc);
        acc = fmaf(cv.z, h[k + 2], acc);
        acc = fmaf(cv.w, h[k + 3], acc);
      }
#pragma unroll
      for (int o = S / 2; o >= 1; o /= 2) acc += __shfl_xor_sync(0xffffffffu, acc, o);
      if (s == 0) ys[li][el] = acc;
    }
    __syncthreads();
    // 3. epilogue
    for (int i = tid; i < tl * EB; i += kThreads) {
      const int li = i / EB, ej = i % EB;
      const int64_t ee = e0 + ej;
      if (ee >= E) continue;
      const int64_t xi = xb + (l0 + li) * p.x_sl + ee;
      float out = ys[li][ej] + (D ? D[ee] : 0.f) * us[li][ej];
      if (z) {
        const float zt = load<float>(z, xi);
        out *= zt / (1.f + __expf(-zt));
      }
      y[xi] = store_cast<in_t>(out);
    }
    __syncthreads();
  }
  if (e_on) {
    float* fin = static_cast<float*>(p.fin);
#pragma unroll
    for (int k = 0; k < NS; ++k)
      if (s * NS + k < N) fin[(b * E + e) * N + s * NS + k] = h[k];
  }
}

}  // namespace fast

}  // namespace ssmlab::ops::selective_scan_cuda
