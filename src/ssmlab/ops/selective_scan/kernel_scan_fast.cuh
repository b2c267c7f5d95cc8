// The fast CUDA forward and backward of the selective scan (fp32 compute; float / bf16 / fp16 inputs). Same
// Params and the same results as the plain kernels of kernel_scan.cuh (y, final state, chunk-start states
// every kChunk steps; every gradient), which remain for float64 and for grouped B / C whose groups do not
// tile the channel blocks; cuda.cu picks per call.
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
__global__ void __launch_bounds__(kThreads, 3) scan_fwd_fast(const Params p) {
  using namespace detail;
  static_assert(kChunk % T == 0, "tiles must not straddle a saved chunk start");
  static_assert(NS % 4 == 0 || NS < 4, "states per lane are read as float4 (or one by one below 4)");
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
  // Offsets inside one tile fit in 32 bits (host: T * max(x_sl, bc_sl) < 2^31); the tile's base is 64-bit.
  const int x_sl = static_cast<int>(p.x_sl), bc_sl = static_cast<int>(p.bc_sl);
  TileRegs<PU, PB> r;
  auto fetch = [&](int64_t l0) {
    const int tl = static_cast<int>(L - l0 < T ? L - l0 : T);
    const int64_t xt = xb + l0 * p.x_sl + e0, bt = bcb + l0 * p.bc_sl;
    const int erem = static_cast<int>(E - e0 < EB ? E - e0 : EB);
#pragma unroll
    for (int j = 0; j < PU; ++j) {
      const int i = tid + kThreads * j, li = i / EB, ej = i % EB;
      const bool on = i < T * EB && li < tl && ej < erem;
      const int off = li * x_sl + ej;
      r.u[j] = on ? load<float>(u + xt, off) : 0.f;
      r.dl[j] = on ? load<float>(dl + xt, off) : 0.f;
      r.z[j] = (on && z) ? load<float>(z + xt, off) : 0.f;
    }
#pragma unroll
    for (int j = 0; j < PB; ++j) {
      const int i = tid + kThreads * j, li = i / NP, n = i % NP;
      const bool on = i < T * NP && li < tl && n < N;
      const int off = li * bc_sl + n;
      r.b[j] = on ? load<float>(Bm + bt, off) : 0.f;
      r.c[j] = on ? load<float>(Cm + bt, off) : 0.f;
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
      if (p.softplus) dt = dt > 20.f ? dt : __logf(1.f + __expf(dt));
      us[li][ej] = r.u[j];
      dts[li][ej] = dt;
      dtus[li][ej] = dt * r.u[j];
      gs[li][ej] = z ? __fdividef(r.z[j], 1.f + __expf(-r.z[j])) : 1.f;
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
      if constexpr (NS < 4) {
#pragma unroll
        for (int k = 0; k < NS; ++k) {
          h[k] = fmaf(ex2(dt * A2[k]), h[k], dtu * Bs[li][s * NS + k]);
          acc0 = fmaf(Cs[li][s * NS + k], h[k], acc0);
        }
      } else {
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
      }
      float acc = acc0 + acc1;
#pragma unroll
      for (int o = S / 2; o >= 1; o /= 2) acc += __shfl_xor_sync(0xffffffffu, acc, o);
      if (s == 0) ys[li][el] = acc;
    }
    __syncthreads();
    // epilogue: D skip, gate, coalesced store
    {
      in_t* yt = y + xb + l0 * p.x_sl + e0;
      const int erem = static_cast<int>(E - e0 < EB ? E - e0 : EB);
      for (int i = tid; i < tl * EB; i += kThreads) {
        const int li = i / EB, ej = i % EB;
        if (ej >= erem) continue;
        const float out = (ys[li][ej] + (D ? D[e0 + ej] : 0.f) * us[li][ej]) * gs[li][ej];
        yt[li * x_sl + ej] = store_cast<in_t>(out);
      }
    }
  }
  if (e_on) {
    float* fin = static_cast<float*>(p.fin);
#pragma unroll
    for (int k = 0; k < NS; ++k)
      if (s * NS + k < N) fin[(b * E + e) * N + s * NS + k] = h[k];
  }
}


// ---------------------------------------------------------------------------------------------------------
// The fast backward. Same block layout as the forward (batch row b, EB channels, S lanes x NS states per
// channel). Chunks of kChunk steps are walked last to first, from the forward's saved chunk-start states:
//   R. re-run the chunk forward in sub-tiles of T steps, keeping each sub-tile's start state (shared memory);
//   then for each sub-tile, last to first:
//   B1. re-run the sub-tile from its start, keeping every state h_t (shared memory) and C . h_t + D u_t;
//   B2. per (l, e): the gate's gradient dz and the gradient gy reaching the ungated output;
//   B3. the adjoint walk G_t = gh + gy_t C_t, gh <- G_t a_t with the per-step sums over n (d delta', du) met
//       by shuffles among a channel's S lanes, and the per-step sums over channels (dB, dC) reduce-scattered
//       across the warp's channels by shuffles, then summed over the block's warps in shared memory and
//       written once per block into a per-block partial (host sums the partials: no atomics, deterministic).
// dA, dD and d bias are summed in registers over time and added once per (b, e) with atomics.
template <int S, int NS>
struct ReduceScatter {
  // Sums v[0..2 NS) over the 32 / S channels of a warp that share lane position s. Afterwards the lane owns
  // kOut consecutive sums, of original indices [first, first + kOut).
  static constexpr int kLevels = S == 32 ? 0 : (S == 16 ? 1 : (S == 8 ? 2 : (S == 4 ? 3 : (S == 2 ? 4 : 5))));
  static constexpr int kOut = (2 * NS) >> kLevels;
  static_assert(kOut >= 1, "too few values per lane for the warp's channels");
  __device__ __forceinline__ static int run(float (&v)[2 * NS], int lane) {
    int first = 0;
#pragma unroll
    for (int lvl = 0; lvl < kLevels; ++lvl) {
      const int o = S << lvl;
      const int half = (2 * NS) >> (lvl + 1);
      const bool up = (lane & o) != 0;
#pragma unroll
      for (int i = 0; i < half; ++i) {
        const float send = up ? v[i] : v[i + half];
        const float keep = up ? v[i + half] : v[i];
        v[i] = keep + __shfl_xor_sync(0xffffffffu, send, o);
      }
      if (up) first += half;
    }
    return first;
  }
};

template <int S, int NS, int T>
struct BwdConfig {
  static constexpr int EB = kThreads / S;
  static constexpr int NP = S * NS;
  static constexpr int NSUB = kChunk / T;
  static constexpr int kWarps = kThreads / 32;
  // dynamic shared memory: hbuf[T][NS][kThreads], hsub[NSUB][NS][kThreads]
  static constexpr int kDynamicBytes = (T + NSUB) * NS * kThreads * 4;
};

template <typename in_t, int S, int NS, int T>
__global__ void __launch_bounds__(kThreads, 2)
    scan_bwd_fast(const Params p, float* __restrict__ dBpart, float* __restrict__ dCpart) {
  using namespace detail;
  using Cfg = BwdConfig<S, NS, T>;
  using RS = ReduceScatter<S, NS>;
  constexpr int EB = Cfg::EB, NP = Cfg::NP, NSUB = Cfg::NSUB, kWarps = Cfg::kWarps;
  static_assert(kChunk % T == 0, "sub-tiles must tile a chunk");
  __shared__ __align__(16) float Bs[T][NP];
  __shared__ __align__(16) float Cs[T][NP];
  __shared__ float dts[T][EB], dtus[T][EB], us[T][EB], sig[T][EB], gys[T][EB], yps[T][EB], dus[T][EB],
      dds[T][EB];
  __shared__ float red[kWarps][T][2][NP];
  extern __shared__ float dyn[];
  float* hbuf = dyn;                         // [T][NS][kThreads]
  float* hsub = dyn + T * NS * kThreads;     // [NSUB][NS][kThreads]

  const int tid = threadIdx.x, el = tid / S, s = tid % S, lane = tid & 31, warp = tid >> 5;
  const int64_t b = blockIdx.y, e0 = static_cast<int64_t>(blockIdx.x) * EB, e = e0 + el;
  const int64_t N = p.dstate, L = p.len, E = p.dim, K = p.chunks;
  const bool e_on = e < E;
  const int64_t g = e0 / p.dim_per_group;
  const int erem = static_cast<int>(E - e0 < EB ? E - e0 : EB);

  const in_t* __restrict__ u = static_cast<const in_t*>(p.u);
  const in_t* __restrict__ dl = static_cast<const in_t*>(p.delta);
  const in_t* __restrict__ z = static_cast<const in_t*>(p.z);
  const in_t* __restrict__ Bm = static_cast<const in_t*>(p.Bm);
  const in_t* __restrict__ Cm = static_cast<const in_t*>(p.Cm);
  const in_t* __restrict__ dy = static_cast<const in_t*>(p.dy);
  const float* __restrict__ A = static_cast<const float*>(p.A);
  const float* __restrict__ D = static_cast<const float*>(p.D);
  const float* __restrict__ bias = static_cast<const float*>(p.bias);
  const float* __restrict__ starts = static_cast<const float*>(p.starts);
  in_t* __restrict__ du = static_cast<in_t*>(p.du);
  in_t* __restrict__ ddelta = static_cast<in_t*>(p.ddelta);
  in_t* __restrict__ dz = static_cast<in_t*>(p.dz);

  constexpr float kLog2e = 1.4426950408889634f, kLn2 = 0.6931471805599453f;
  float A2[NS], gh[NS], dAacc[NS];
#pragma unroll
  for (int k = 0; k < NS; ++k) {
    const int64_t n = s * NS + k;
    const bool on = e_on && n < N;
    A2[k] = on ? A[e * N + n] * kLog2e : 0.f;
    gh[k] = (on && p.dfin) ? static_cast<const float*>(p.dfin)[(b * E + e) * N + n] : 0.f;
    dAacc[k] = 0.f;
  }
  const float Dv = (D && e_on) ? D[e] : 0.f;
  float dD_acc = 0.f, dbias_acc = 0.f;

  const int64_t xb = b * p.x_sb + e0, bcb = b * p.bc_sb + g * p.bc_sg;
  const int x_sl = static_cast<int>(p.x_sl), bc_sl = static_cast<int>(p.bc_sl);

  // Loads delta' (and u, sigmoid(raw)) for steps [l0, l0 + tl) and the rows of B (and C) into shared memory.
  auto stage = [&](int64_t l0, int tl, bool full) {
    const int64_t xt = xb + l0 * p.x_sl, bt = bcb + l0 * p.bc_sl;
    for (int i = tid; i < T * EB; i += kThreads) {
      const int li = i / EB, ej = i % EB;
      float uv = 0.f, dt = 0.f, sg = 1.f;
      if (li < tl && ej < erem) {
        const int off = li * x_sl + ej;
        uv = load<float>(u + xt, off);
        const float raw = load<float>(dl + xt, off) + (bias ? bias[e0 + ej] : 0.f);
        dt = raw;
        if (p.softplus) {
          dt = raw > 20.f ? raw : __logf(1.f + __expf(raw));
          sg = __fdividef(1.f, 1.f + __expf(-raw));
        }
      }
      dts[li][ej] = dt;
      dtus[li][ej] = dt * uv;
      if (full) {
        us[li][ej] = uv;
        sig[li][ej] = sg;
      }
    }
    for (int i = tid; i < T * NP; i += kThreads) {
      const int li = i / NP, n = i % NP;
      float bv = 0.f, cv = 0.f;
      if (li < tl && n < N) {
        const int off = li * bc_sl + n;
        bv = load<float>(Bm + bt, off);
        if (full) cv = load<float>(Cm + bt, off);
      }
      Bs[li][n] = bv;
      if (full) Cs[li][n] = cv;
    }
  };

  for (int64_t c = K - 1; c >= 0; --c) {
    const int64_t t0 = c * kChunk;
    // R. sub-tile start states of this chunk
    {
      float h[NS];
      const float* st = starts + ((b * E + (e_on ? e : e0)) * K + c) * N;
#pragma unroll
      for (int k = 0; k < NS; ++k) h[k] = (e_on && s * NS + k < N) ? st[s * NS + k] : 0.f;
#pragma unroll 1
      for (int j = 0; j < NSUB; ++j) {
        const int64_t l0 = t0 + j * T;
        if (l0 >= L) break;
#pragma unroll
        for (int k = 0; k < NS; ++k) hsub[(j * NS + k) * kThreads + tid] = h[k];
        if (j == NSUB - 1 || l0 + T >= L) break;  // the last sub-tile's end state is not needed
        const int tl = T;
        __syncthreads();
        stage(l0, tl, false);
        __syncthreads();
#pragma unroll 4
        for (int li = 0; li < tl; ++li) {
          const float dt = dts[li][el], dtu = dtus[li][el];
#pragma unroll
          for (int k = 0; k < NS; ++k) h[k] = fmaf(ex2(dt * A2[k]), h[k], dtu * Bs[li][s * NS + k]);
        }
      }
    }
#pragma unroll 1
    for (int j = NSUB - 1; j >= 0; --j) {
      const int64_t l0 = t0 + j * T;
      if (l0 >= L) continue;
      const int tl = static_cast<int>(L - l0 < T ? L - l0 : T);
      __syncthreads();
      stage(l0, tl, true);
      __syncthreads();
      // B1. states of the sub-tile and the pre-gate output
      {
        float h[NS];
#pragma unroll
        for (int k = 0; k < NS; ++k) h[k] = hsub[(j * NS + k) * kThreads + tid];
#pragma unroll 2
        for (int li = 0; li < tl; ++li) {
          const float dt = dts[li][el], dtu = dtus[li][el];
          float acc = 0.f;
#pragma unroll
          for (int k = 0; k < NS; ++k) {
            h[k] = fmaf(ex2(dt * A2[k]), h[k], dtu * Bs[li][s * NS + k]);
            acc = fmaf(Cs[li][s * NS + k], h[k], acc);
          }
#pragma unroll
          for (int k = 0; k < NS; ++k) hbuf[(li * NS + k) * kThreads + tid] = h[k];
#pragma unroll
          for (int o = S / 2; o >= 1; o /= 2) acc += __shfl_xor_sync(0xffffffffu, acc, o);
          if (s == 0) yps[li][el] = acc + Dv * us[li][el];
        }
      }
      __syncthreads();
      // B2. output cotangent through the gate
      {
        const int64_t xt = xb + l0 * p.x_sl;
        for (int i = tid; i < tl * EB; i += kThreads) {
          const int li = i / EB, ej = i % EB;
          if (ej >= erem) {
            gys[li][ej] = 0.f;
            continue;
          }
          const int off = li * x_sl + ej;
          float gy = dy ? load<float>(dy + xt, off) : 0.f;
          if (z) {
            const float zt = load<float>(z + xt, off);
            const float sg = __fdividef(1.f, 1.f + __expf(-zt));
            dz[xt + off] = store_cast<in_t>(gy * yps[li][ej] * sg * (1.f + zt * (1.f - sg)));
            gy *= zt * sg;
          }
          gys[li][ej] = gy;
        }
      }
      __syncthreads();
      // B3. adjoint walk, last step first
#pragma unroll 1
      for (int li = tl - 1; li >= 0; --li) {
        const float dt = dts[li][el], dtu = dtus[li][el], gy = gys[li][el];
        float v[2 * NS];
        float xa = 0.f, gb = 0.f;
#pragma unroll
        for (int k = 0; k < NS; ++k) {
          {
            const int kk = k;
            const float bq = Bs[li][s * NS + k], cq = Cs[li][s * NS + k];
            const float hcur = hbuf[(li * NS + kk) * kThreads + tid];
            const float hprev = li > 0 ? hbuf[((li - 1) * NS + kk) * kThreads + tid]
                                       : hsub[(j * NS + kk) * kThreads + tid];
            const float a = ex2(dt * A2[kk]);
            const float G = fmaf(gy, cq, gh[kk]);
            const float x = G * hprev * a;
            dAacc[kk] = fmaf(x, dt, dAacc[kk]);
            xa = fmaf(x, A2[kk], xa);
            gb = fmaf(G, bq, gb);
            gh[kk] = G * a;
            v[kk] = G * dtu;
            v[NS + kk] = gy * hcur;
          }
        }
#pragma unroll
        for (int o = S / 2; o >= 1; o /= 2) {
          xa += __shfl_xor_sync(0xffffffffu, xa, o);
          gb += __shfl_xor_sync(0xffffffffu, gb, o);
        }
        const int first = RS::run(v, lane);
#pragma unroll
        for (int i = 0; i < RS::kOut; ++i) {
          const int idx = first + i, q = idx / NS, n = s * NS + idx % NS;
          red[warp][li][q][n] = v[i];
        }
        if (s == 0) {
          const float uv = us[li][el];
          const float ddt = xa * kLn2 + gb * uv;
          const float dr = ddt * sig[li][el];
          dbias_acc += dr;
          dD_acc = fmaf(gy, uv, dD_acc);
          dus[li][el] = fmaf(gb, dt, gy * Dv);
          dds[li][el] = dr;
        }
      }
      __syncthreads();
      // outputs of the sub-tile: du, d delta (coalesced) and this block's dB, dC partial rows
      {
        const int64_t xt = xb + l0 * p.x_sl;
        for (int i = tid; i < tl * EB; i += kThreads) {
          const int li = i / EB, ej = i % EB;
          if (ej >= erem) continue;
          const int off = li * x_sl + ej;
          du[xt + off] = store_cast<in_t>(dus[li][ej]);
          ddelta[xt + off] = store_cast<in_t>(dds[li][ej]);
        }
        // partial layout: (gridDim.x, B, L, N)
        const int64_t pb = (static_cast<int64_t>(blockIdx.x) * p.batch + b) * L * N;
        for (int i = tid; i < tl * NP; i += kThreads) {
          const int li = i / NP, n = i % NP;
          if (n >= N) continue;
          float sb = 0.f, sc = 0.f;
#pragma unroll
          for (int w = 0; w < kWarps; ++w) {
            sb += red[w][li][0][n];
            sc += red[w][li][1][n];
          }
          dBpart[pb + (l0 + li) * N + n] = sb;
          dCpart[pb + (l0 + li) * N + n] = sc;
        }
      }
    }
  }
  if (e_on) {
    float* dA = static_cast<float*>(p.dA);
#pragma unroll
    for (int k = 0; k < NS; ++k) {
      const int64_t n = s * NS + k;
      if (n < N) {
        atomicAdd(dA + e * N + n, dAacc[k]);
        if (p.dh0) static_cast<float*>(p.dh0)[(b * E + e) * N + n] = gh[k];
      }
    }
    if (s == 0) {
      if (p.dD) atomicAdd(static_cast<float*>(p.dD) + e, dD_acc);
      if (p.dbias) atomicAdd(static_cast<float*>(p.dbias) + e, dbias_acc);
    }
  }
}

}  // namespace fast

}  // namespace ssmlab::ops::selective_scan_cuda
