// The phase kernels of the Mamba-3 CUDA path (phase_rotate.h has the contract; README.md, "Phase kernels"); no
// torch types. A tile is (b, chunk c of Tc steps, h), tiles ordered (b, c, h) so that concurrent tiles touch
// neighbouring heads of the same tokens. Five kernels:
//   chunk_sum   one warp per tile, lanes over s: off[b, h, c, s] = sum_{t in c} dt_t theta_t,s (float64)
//   offsets     one thread per column (b, h, s): off <- phase0 + exclusive prefix over c; phase_last = wrap(total)
//   forward     one block per tile: the tile's phases (off + a sequential in-chunk sum in shared memory, float64),
//               cos/sin in C into shared memory, then its warps take the tile's tokens: per rank, lanes over the
//               N/2 pairs (one 2-vector load per pair where aligned), qr, kk written, q.k by a warp reduction
//   backward    one block per tile: the same phases, then per token dq, dk, dsc and dphi (summed over ranks in a
//               lane's registers, one lane per pair), then the in-chunk suffix sums of dphi (local, into gloc) and
//               the chunk totals (into dchunk)
//   suffix      one thread per column: dchunk <- dlast + exclusive suffix over c; dphase0 = the whole sum
//   finish      one warp per (b, t, h), lanes over s: Gs = gloc + dchunk[c(t)], dtheta = dt Gs, ddt = theta . Gs
// Every sum of the phase and of its cotangent is float64; a lane owns whole pairs, so no two lanes write one element.
#pragma once
#include <cstdint>
#include <type_traits>

#include "ssmlab/ops/mamba3/phase_math.h"

namespace ssmlab::ops::mamba3_phase_kernels {

namespace pm = ssmlab::ops::mamba3_phase;

inline constexpr int kPhWarps = 8;
inline constexpr int kPhThreads = kPhWarps * 32;
inline constexpr int kColThreads = 128;  // offsets / suffix: threads per block, one column each
// Blocks per SM the rotation kernels are register-bounded for: 4 (64 registers, 32 warps) for float compute (32 KB
// of shared memory a block); float64 compute is held to 4 blocks by its 48 KB anyway and is left unbounded.
template <typename C>
inline constexpr int kPhMinBlocks = std::is_same_v<C, float> ? 4 : 1;

template <typename P>
struct PhaseSrc {              // dt (B, T, H), theta (B, T, H, S) with element strides
  const P* dt;
  int64_t dt_b, dt_t, dt_h;
  const P* th;
  int64_t th_b, th_t, th_h, th_s;
};

struct PhaseGeom {
  int64_t b, t, r, h, n, s;
  int64_t tc, nc;              // steps per chunk, chunks
  bool halves;
  bool vec2;                   // adjacent pairs loaded / stored as one 2-vector (N even, every pointer aligned)
};

template <typename In, typename C, typename P>
struct PhaseRotParams {
  PhaseGeom g;
  PhaseSrc<P> src;
  const In *q, *k;             // (B, T, R, H, N)
  const C* sc;                 // (B, T, H)
  double* off;                 // (B, H, nC, S)
  const double* phase0;        // (B, H, S) or null
  double* phase_last;          // (B, H, S)
  C *qr, *kk, *qk;             // forward outputs
  const C *dqr, *dkk, *dqk;    // backward cotangents, each may be null
  const double* dlast;         // (B, H, S) or null
  C *dq, *dk, *dsc;            // backward outputs
  C* gloc;                     // (B, T, H, S): in-chunk suffix sums of dphi, then read by finish
  double* dchunk;              // (B, H, nC, S)
  double* dphase0;             // (B, H, S)
  C *dtheta, *ddt;             // (B, T, H, S), (B, T, H)
};

template <typename C, typename T>
__device__ __forceinline__ C ph_as(T v) {
  if constexpr (std::is_same_v<T, float> || std::is_same_v<T, double>)
    return static_cast<C>(v);
  else
    return static_cast<C>(static_cast<float>(v));  // 16-bit types convert through float
}

template <typename T>
struct alignas(2 * sizeof(T)) PhTwo {
  T a, b;
};

template <typename C, typename In>
__device__ __forceinline__ void ph_load_pair(const In* p, int64_t ia, int64_t ib, bool vec2, C& a, C& b) {
  if (vec2) {
    const PhTwo<In> v = *reinterpret_cast<const PhTwo<In>*>(p + ia);
    a = ph_as<C>(v.a);
    b = ph_as<C>(v.b);
  } else {
    a = ph_as<C>(p[ia]);
    b = ph_as<C>(p[ib]);
  }
}

template <typename C>
__device__ __forceinline__ void ph_store_pair(C* p, int64_t ia, int64_t ib, bool vec2, C a, C b) {
  if (vec2) {
    PhTwo<C> v;
    v.a = a;
    v.b = b;
    *reinterpret_cast<PhTwo<C>*>(p + ia) = v;
  } else {
    p[ia] = a;
    p[ib] = b;
  }
}

template <typename T>
__device__ __forceinline__ T ph_warp_sum(T v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

template <typename P>
__device__ __forceinline__ double ph_step(const PhaseSrc<P>& src, int64_t bb, int64_t t, int64_t hh, int64_t s) {
  return static_cast<double>(src.dt[bb * src.dt_b + t * src.dt_t + hh * src.dt_h]) *
         static_cast<double>(src.th[bb * src.th_b + t * src.th_t + hh * src.th_h + s * src.th_s]);
}

// ---- chunk sums and the column scans --------------------------------------------------------------------------

template <typename P>
__global__ void __launch_bounds__(kPhThreads) phase_chunk_sum_kernel(PhaseSrc<P> src, PhaseGeom g, double* off) {
  const int lane = threadIdx.x & 31;
  const int64_t tile = static_cast<int64_t>(blockIdx.x) * kPhWarps + (threadIdx.x >> 5);
  if (tile >= g.b * g.nc * g.h) return;
  const int64_t hh = tile % g.h, c = (tile / g.h) % g.nc, bb = tile / (g.h * g.nc);
  const int64_t t0 = c * g.tc, t1 = t0 + g.tc < g.t ? t0 + g.tc : g.t;
  for (int64_t s = lane; s < g.s; s += 32) {
    double acc = 0;
#pragma unroll 8
    for (int64_t t = t0; t < t1; ++t) acc += ph_step(src, bb, t, hh, s);
    off[((bb * g.h + hh) * g.nc + c) * g.s + s] = acc;
  }
}

// off (B, H, nC, S) holds chunk sums: replaced by phase0 + the sum of the chunks before; phase_last = wrap(all).
__global__ void __launch_bounds__(kColThreads) phase_offsets_kernel(double* off, const double* phase0,
                                                                    double* phase_last, int64_t cols, int64_t s,
                                                                    int64_t nc) {
  const int64_t col = static_cast<int64_t>(blockIdx.x) * kColThreads + threadIdx.x;
  if (col >= cols) return;
  double* o = off + (col / s) * nc * s + col % s;
  double acc = phase0 ? phase0[col] : 0.0;
  for (int64_t c0 = 0; c0 < nc; c0 += 8) {  // 8 loads in flight, then the dependent adds
    double v[8];
#pragma unroll
    for (int j = 0; j < 8; ++j) v[j] = c0 + j < nc ? o[(c0 + j) * s] : 0.0;
#pragma unroll
    for (int j = 0; j < 8; ++j)
      if (c0 + j < nc) {
        o[(c0 + j) * s] = acc;
        acc += v[j];
      }
  }
  phase_last[col] = pm::wrap_2pi(acc);
}

// dchunk (B, H, nC, S) holds the chunks' dphi totals: replaced by dlast + the sum of the chunks after; dphase0 =
// dlast + all.
__global__ void __launch_bounds__(kColThreads) phase_suffix_kernel(double* dchunk, const double* dlast,
                                                                   double* dphase0, int64_t cols, int64_t s,
                                                                   int64_t nc) {
  const int64_t col = static_cast<int64_t>(blockIdx.x) * kColThreads + threadIdx.x;
  if (col >= cols) return;
  double* o = dchunk + (col / s) * nc * s + col % s;
  double acc = dlast ? dlast[col] : 0.0;
  for (int64_t c0 = nc - 1; c0 >= 0; c0 -= 8) {
    double v[8];
#pragma unroll
    for (int j = 0; j < 8; ++j) v[j] = c0 - j >= 0 ? o[(c0 - j) * s] : 0.0;
#pragma unroll
    for (int j = 0; j < 8; ++j)
      if (c0 - j >= 0) {
        o[(c0 - j) * s] = acc;
        acc += v[j];
      }
  }
  dphase0[col] = acc;
}

// ---- the tile's phases -------------------------------------------------------------------------------------------

// Fills ph[tl S + s] with P_{t0 + tl, s} (float64) and cs, sn with its cos, sin in C, for tl < len; the whole block
// calls it (it synchronises).
template <typename C, typename P>
__device__ __forceinline__ void tile_phases(const PhaseSrc<P>& src, const double* off, const PhaseGeom& g,
                                            int64_t bb, int64_t c, int64_t hh, int64_t t0, int64_t len, double* ph,
                                            C* cs, C* sn) {
  const int64_t cnt = len * g.s;
  for (int64_t e = threadIdx.x; e < cnt; e += kPhThreads) ph[e] = ph_step(src, bb, t0 + e / g.s, hh, e % g.s);
  __syncthreads();
  for (int64_t s = threadIdx.x; s < g.s; s += kPhThreads) {
    double acc = off[((bb * g.h + hh) * g.nc + c) * g.s + s];
    for (int64_t tl = 0; tl < len; ++tl) {
      acc += ph[tl * g.s + s];
      ph[tl * g.s + s] = acc;
    }
  }
  __syncthreads();
  for (int64_t e = threadIdx.x; e < cnt; e += kPhThreads) pm::phase_cos_sin<C>(ph[e], cs[e], sn[e]);
  __syncthreads();
}

// ---- forward -----------------------------------------------------------------------------------------------------

template <typename In, typename C, typename P>
__global__ void __launch_bounds__(kPhThreads, kPhMinBlocks<C>) phase_rotate_forward_kernel(PhaseRotParams<In, C, P> p) {
  __shared__ double ph[pm::kTileEntries];
  __shared__ C cs[pm::kTileEntries];
  __shared__ C sn[pm::kTileEntries];
  const PhaseGeom& g = p.g;
  const int64_t tile = blockIdx.x;
  const int64_t hh = tile % g.h, c = (tile / g.h) % g.nc, bb = tile / (g.h * g.nc);
  const int64_t t0 = c * g.tc, len = t0 + g.tc < g.t ? g.tc : g.t - t0;
  tile_phases<C, P>(p.src, p.off, g, bb, c, hh, t0, len, ph, cs, sn);
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int64_t npairs = g.n / 2;
  for (int64_t tl = warp; tl < len; tl += kPhWarps) {
    const int64_t t = t0 + tl;
    const C scale = p.sc[(bb * g.t + t) * g.h + hh];
    const C* crow = cs + tl * g.s;
    const C* srow = sn + tl * g.s;
    for (int64_t r = 0; r < g.r; ++r) {
      const int64_t row = (bb * g.t + t) * g.r + r;  // (b, t, r)
      const int64_t base = (row * g.h + hh) * g.n;
      const In* q = p.q + base;
      const In* k = p.k + base;
      C* qr = p.qr + base;
      C* kk = p.kk + base;
      C dot = 0;
      for (int64_t i = lane; i < npairs; i += 32) {
        int64_t ia, ib;
        pm::pair_dims(i, g.n, g.halves, ia, ib);
        C qa, qb, ka, kb;
        ph_load_pair(q, ia, ib, g.vec2, qa, qb);
        ph_load_pair(k, ia, ib, g.vec2, ka, kb);
        dot += qa * ka + qb * kb;
        if (i < g.s) {
          const C co = crow[i], si = srow[i];
          ph_store_pair(qr, ia, ib, g.vec2, qa * co - qb * si, qa * si + qb * co);
          ph_store_pair(kk, ia, ib, g.vec2, scale * (ka * co - kb * si), scale * (ka * si + kb * co));
        } else {
          ph_store_pair(qr, ia, ib, g.vec2, qa, qb);
          ph_store_pair(kk, ia, ib, g.vec2, scale * ka, scale * kb);
        }
      }
      if ((g.n & 1) && lane == 0) {  // adjacent pairs, odd N: the last dim passes unchanged
        const int64_t m = g.n - 1;
        const C qv = ph_as<C>(q[m]), kv = ph_as<C>(k[m]);
        dot += qv * kv;
        qr[m] = qv;
        kk[m] = scale * kv;
      }
      dot = ph_warp_sum(dot);
      if (lane == 0) p.qk[row * g.h + hh] = dot;
    }
  }
}

// ---- backward ----------------------------------------------------------------------------------------------------

template <typename In, typename C, typename P>
__global__ void __launch_bounds__(kPhThreads, kPhMinBlocks<C>) phase_rotate_backward_kernel(PhaseRotParams<In, C, P> p) {
  __shared__ double ph[pm::kTileEntries];  // phases, then dphi, then its in-chunk suffix sums
  __shared__ C cs[pm::kTileEntries];
  __shared__ C sn[pm::kTileEntries];
  const PhaseGeom& g = p.g;
  const int64_t tile = blockIdx.x;
  const int64_t hh = tile % g.h, c = (tile / g.h) % g.nc, bb = tile / (g.h * g.nc);
  const int64_t t0 = c * g.tc, len = t0 + g.tc < g.t ? g.tc : g.t - t0;
  tile_phases<C, P>(p.src, p.off, g, bb, c, hh, t0, len, ph, cs, sn);  // ends with a barrier: ph is free below
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int64_t npairs = g.n / 2;
  for (int64_t tl = warp; tl < len; tl += kPhWarps) {
    const int64_t t = t0 + tl;
    const C scale = p.sc[(bb * g.t + t) * g.h + hh];
    const C* crow = cs + tl * g.s;
    const C* srow = sn + tl * g.s;
    C dsc = 0;
    for (int64_t i = lane; i < npairs; i += 32) {
      int64_t ia, ib;
      pm::pair_dims(i, g.n, g.halves, ia, ib);
      const bool rotated = i < g.s;
      const C co = rotated ? crow[i] : C(1), si = rotated ? srow[i] : C(0);
      C dc = 0, ds = 0;
      for (int64_t r = 0; r < g.r; ++r) {
        const int64_t row = (bb * g.t + t) * g.r + r;
        const int64_t base = (row * g.h + hh) * g.n;
        C qa, qb, ka, kb, gqa = 0, gqb = 0, gka = 0, gkb = 0;
        ph_load_pair(p.q + base, ia, ib, g.vec2, qa, qb);
        ph_load_pair(p.k + base, ia, ib, g.vec2, ka, kb);
        if (p.dqr) ph_load_pair(p.dqr + base, ia, ib, g.vec2, gqa, gqb);
        if (p.dkk) ph_load_pair(p.dkk + base, ia, ib, g.vec2, gka, gkb);
        const C gqk = p.dqk ? p.dqk[row * g.h + hh] : C(0);
        C dqa, dqb, dka, dkb;
        pm::pair_backward(qa, qb, ka, kb, gqa, gqb, gka, gkb, gqk, scale, rotated, co, si, dc, ds, dsc, dqa, dqb, dka,
                          dkb);
        ph_store_pair(p.dq + base, ia, ib, g.vec2, dqa, dqb);
        ph_store_pair(p.dk + base, ia, ib, g.vec2, dka, dkb);
      }
      if (rotated)
        ph[tl * g.s + i] = static_cast<double>(ds) * static_cast<double>(co) -
                           static_cast<double>(dc) * static_cast<double>(si);
    }
    if ((g.n & 1) && lane == 0) {
      const int64_t m = g.n - 1;
      for (int64_t r = 0; r < g.r; ++r) {
        const int64_t row = (bb * g.t + t) * g.r + r;
        const int64_t idx = (row * g.h + hh) * g.n + m;
        const C qv = ph_as<C>(p.q[idx]), kv = ph_as<C>(p.k[idx]);
        const C gq = p.dqr ? p.dqr[idx] : C(0), gk = p.dkk ? p.dkk[idx] : C(0);
        const C gqk = p.dqk ? p.dqk[row * g.h + hh] : C(0);
        dsc += gk * kv;
        p.dq[idx] = gq + gqk * kv;
        p.dk[idx] = scale * gk + gqk * qv;
      }
    }
    dsc = ph_warp_sum(dsc);
    if (lane == 0) p.dsc[(bb * g.t + t) * g.h + hh] = dsc;
  }
  __syncthreads();
  for (int64_t s = threadIdx.x; s < g.s; s += kPhThreads) {
    double acc = 0;
    for (int64_t tl = len - 1; tl >= 0; --tl) {
      acc += ph[tl * g.s + s];
      ph[tl * g.s + s] = acc;
    }
    p.dchunk[((bb * g.h + hh) * g.nc + c) * g.s + s] = acc;
  }
  __syncthreads();
  const int64_t cnt = len * g.s;
  for (int64_t e = threadIdx.x; e < cnt; e += kPhThreads)
    p.gloc[((bb * g.t + t0 + e / g.s) * g.h + hh) * g.s + e % g.s] = static_cast<C>(ph[e]);
}

// After phase_suffix_kernel: Gs = gloc + dchunk[c(t)] per (b, t, h, s); one warp per (b, t, h).
template <typename In, typename C, typename P>
__global__ void __launch_bounds__(kPhThreads) phase_grad_finish_kernel(PhaseRotParams<In, C, P> p) {
  const PhaseGeom& g = p.g;
  const int lane = threadIdx.x & 31;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kPhWarps + (threadIdx.x >> 5);  // (b, t, h)
  if (row >= g.b * g.t * g.h) return;  // whole warps leave together: the reduction below is safe
  const int64_t hh = row % g.h, t = (row / g.h) % g.t, bb = row / (g.h * g.t), c = t / g.tc;
  const double dtv = static_cast<double>(p.src.dt[bb * p.src.dt_b + t * p.src.dt_t + hh * p.src.dt_h]);
  const double* suf = p.dchunk + ((bb * g.h + hh) * g.nc + c) * g.s;
  double part = 0;
  for (int64_t s = lane; s < g.s; s += 32) {
    const double G = static_cast<double>(p.gloc[row * g.s + s]) + suf[s];
    p.dtheta[row * g.s + s] = static_cast<C>(dtv * G);
    part += static_cast<double>(
                p.src.th[bb * p.src.th_b + t * p.src.th_t + hh * p.src.th_h + s * p.src.th_s]) * G;
  }
  part = ph_warp_sum(part);
  if (lane == 0) p.ddt[row] = static_cast<C>(part);
}

}  // namespace ssmlab::ops::mamba3_phase_kernels
