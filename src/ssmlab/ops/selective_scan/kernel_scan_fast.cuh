// The fast CUDA forward of the selective scan (fp32 compute; float / bf16 / fp16 inputs). Same Params and the
// same outputs as scan_fwd_kernel in kernel_scan.cuh (y, final state, chunk-start states every kChunk steps),
// so the backward is shared; cuda.cu picks this kernel when fast_fwd_supported(...).
//
// Work split: a block of kThreads threads covers one batch row b and EB = kThreads / S consecutive channels;
// S adjacent lanes share a channel e and each owns NS consecutive states n (S * NS >= N, padded states have
// A = B = C = 0 and stay 0). Time runs in tiles of T steps:
//   1. staging: the block loads u, delta, z for its T x EB (l, e) pairs once, coalesced along e, and the
//      T x N rows of B and C of its group; the loads of tile t + 1 are issued into registers before tile t is
//      scanned (software pipelining), then delta' = softplus(delta + bias), delta' * u and silu(z) are
//      computed once per pair (not once per lane) into shared memory;
//   2. scan: every lane runs its NS states over the T steps in registers (one exp2 per state per step,
//      A prescaled by log2 e); the S partial sums of C . h meet by shuffles; one lane per channel writes the
//      row to shared memory;
//   3. epilogue: the block adds D * u, applies the gate and writes y, coalesced.
// Chunk-start states for the backward are written when a tile starts at a multiple of kChunk (T divides it).
#pragma once
#include "ssmlab/ops/selective_scan/kernel_scan.cuh"

namespace ssmlab::ops::selective_scan_cuda {

namespace fast {

inline constexpr int kThreads = 128;

__device__ __forceinline__ float ex2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

// One tile's global inputs, held in registers while the previous tile is scanned (software pipelining):
// element i of the (l, e) grid is tid + kThreads * i (row-major, EB channels per row), of the (l, n) grid
// likewise with NP states per row.
template <int PU, int PB>
struct TileRegs {
  float u[PU], dl[PU], z[PU], b[PB], c[PB];
};

template <typename in_t, int S, int NS, int T>
__global__ void __launch_bounds__(kThreads) scan_fwd_fast(const Params p) {
  using namespace detail;
  static_assert(kChunk % T == 0, "tiles must not straddle a saved chunk start");
  static_assert(NS % 4 == 0, "states per lane are read as float4");
  constexpr int EB = kThreads / S;
  constexpr int NP = S * NS;  // padded N
  constexpr int PU = (T * EB + kThreads - 1) / kThreads;
  constexpr int PB = (T * NP + kThreads - 1) / kThreads;
  __shared__ __align__(16) float Bs[T][NP];
  __shared__ __align__(16) float Cs[T][NP];
  __shared__ float dts[T][EB], dtus[T][EB], us[T][EB], gs[T][EB], ys[T][EB];

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
  TileRegs<PU, PB> r;
  auto fetch = [&](int64_t l0) {
    const int tl = static_cast<int>(L - l0 < T ? L - l0 : T);
#pragma unroll
    for (int j = 0; j < PU; ++j) {
      const int i = tid + kThreads * j, li = i / EB;
      const int64_t ee = e0 + i % EB;
      const bool on = i < T * EB && li < tl && ee < E;
      const int64_t xi = xb + (l0 + li) * p.x_sl + ee;
      r.u[j] = on ? load<float>(u, xi) : 0.f;
      r.dl[j] = on ? load<float>(dl, xi) : 0.f;
      r.z[j] = (on && z) ? load<float>(z, xi) : 0.f;
    }
#pragma unroll
    for (int j = 0; j < PB; ++j) {
      const int i = tid + kThreads * j, li = i / NP, n = i % NP;
      const bool on = i < T * NP && li < tl && n < N;
      const int64_t bi = bcb + (l0 + li) * p.bc_sl + n;
      r.b[j] = on ? load<float>(Bm, bi) : 0.f;
      r.c[j] = on ? load<float>(Cm, bi) : 0.f;
    }
  };
  auto commit = [&]() {
#pragma unroll
    for (int j = 0; j < PU; ++j) {
      const int i = tid + kThreads * j;
      if (i >= T * EB) break;
      const int li = i / EB, ej = i % EB;
      const int64_t ee = e0 + ej;
      float dt = r.dl[j] + ((bias && ee < E) ? bias[ee] : 0.f);
      if (p.softplus) dt = dt > 20.f ? dt : log1pf(__expf(dt));
      us[li][ej] = r.u[j];
      dts[li][ej] = dt;
      dtus[li][ej] = dt * r.u[j];
      gs[li][ej] = z ? r.z[j] / (1.f + __expf(-r.z[j])) : 1.f;
    }
#pragma unroll
    for (int j = 0; j < PB; ++j) {
      const int i = tid + kThreads * j;
      if (i >= T * NP) break;
      Bs[i / NP][i % NP] = r.b[j];
      Cs[i / NP][i % NP] = r.c[j];
    }
  };

  if (L > 0) fetch(0);
  for (int64_t l0 = 0; l0 < L; l0 += T) {
    const int tl = static_cast<int>(L - l0 < T ? L - l0 : T);
    __syncthreads();  // the previous tile's epilogue is done with the shared arrays
    commit();
    __syncthreads();
    if (l0 + T < L) fetch(l0 + T);  // in flight while this tile is scanned
    if (l0 % kChunk == 0 && e_on) {
      float* st = starts + ((b * E + e) * K + l0 / kChunk) * N;
#pragma unroll
      for (int k = 0; k < NS; ++k)
        if (s * NS + k < N) st[s * NS + k] = h[k];
    }
    // scan
#pragma unroll 4
    for (int li = 0; li < tl; ++li) {
      const float dt = dts[li][el], dtu = dtus[li][el];
      float acc0 = 0.f, acc1 = 0.f;
#pragma unroll
      for (int k = 0; k < NS; k += 4) {
        const float4 bv = *reinterpret_cast<const float4*>(&Bs[li][s * NS + k]);
        const float4 cv = *reinterpret_cast<const float4*>(&Cs[li][s * NS + k]);
        h[k + 0] = fmaf(ex2(dt * A2[k + 0]), h[k + 0], dtu * bv.x);
        h[k + 1] = fmaf(ex2(dt * A2[k + 1]), h[k + 1], dtu * bv.y);
        h[k + 2] = fmaf(ex2(dt * A2[k + 2]), h[k + 2], dtu * bv.z);
        h[k + 3] = fmaf(ex2(dt * A2[k + 3]), h[k + 3], dtu * bv.w);
        acc0 = fmaf(cv.x, h[k + 0], acc0);
        acc1 = fmaf(cv.y, h[k + 1], acc1);
        acc0 = fmaf(cv.z, h[k + 2], acc0);
        acc1 = fmaf(cv.w, h[k + 3], acc1);
      }
      float acc = acc0 + acc1;
#pragma unroll
      for (int o = S / 2; o >= 1; o /= 2) acc += __shfl_xor_sync(0xffffffffu, acc, o);
      if (s == 0) ys[li][el] = acc;
    }
    __syncthreads();
    // epilogue: D skip, gate, coalesced store
    for (int i = tid; i < tl * EB; i += kThreads) {
      const int li = i / EB, ej = i % EB;
      const int64_t ee = e0 + ej;
      if (ee >= E) continue;
      const float out = (ys[li][ej] + (D ? D[ee] : 0.f) * us[li][ej]) * gs[li][ej];
      y[xb + (l0 + li) * p.x_sl + ee] = store_cast<in_t>(out);
    }
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
