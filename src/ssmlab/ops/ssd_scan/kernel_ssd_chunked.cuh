// Chunked SSD kernels on tensor cores (README.md beside this file); no torch types. The chunked algorithm of
// chunked.cpp, per chunk of kQ = 64 steps, on the per-step coefficients (a = log α, w): with s_i the in-chunk
// cumulative log-decay, X̄_j = w_j x_j, e_j = exp(s_end - s_j) and S_prev the state before the chunk,
//   forward   S_loc   = Σ_j e_j X̄_j ⊗ B_j                          (chunk_outer_kernel, a block per chunk)
//             S_end   = exp(s_end) S_prev + S_loc                   (state_pass_kernel, sequential over chunks)
//             y_i     = Σ_{j<=i} exp(s_i - s_j)(C_i·B_j) X̄_j + exp(s_i) S_prev C_i + D x_i   (chunk_scan_kernel)
//   backward  Ψ       = Σ_i exp(s_i) dy_i ⊗ C_i                     (chunk_outer_kernel<kGrad>)
//             G_{c-1} = exp(s_end,c) G_c + Ψ_c, G_last = dL/dS_final (state_pass_back_kernel; G_c = dL/dS_end,c)
//             then per chunk (chunk_grad_kernel), with M = L∘CBᵀ, W = L∘(dy X̄ᵀ), L_ij = exp(s_i - s_j)[j <= i]:
//               dX̄ = Mᵀ dy + diag(e) B Gᵀ,   dC = W B + diag(exp s) dy S_prev,   dB = Wᵀ C + diag(e) X̄ G,
//               ds_i = dy_i·(y_i - D x_i) - X̄_i·dX̄_i, plus exp(s_end)<G, S_prev> + Σ_j e_j X̄_j·(B_j Gᵀ) at
//               the chunk's last step; da = reverse cumsum of ds in the chunk, dw_j = x_j·dX̄_j,
//               dx_j = w_j dX̄_j + D dy_j.
// Every matrix product runs on the tensor cores (nvcuda::wmma) from shared-memory tiles zero-padded to
// multiples of 16: Op = __nv_bfloat16 (forward of bf16 inputs; fp32 accumulation) or Op = float, which splits
// each operand into two tf32 parts and sums three products (hi·hi + hi·lo + lo·hi), about fp32 accurate (the
// backward always). Products land in fp32 staging tiles; decays, masks and row scalings are applied there by
// all threads. The saved states (B, H, nk, P, N) are the state before each 64-step chunk, the layout of the
// time-stepped kernels of kernel_ssd.cuh, so either backward consumes either forward's states.
#pragma once
#include <cuda_bf16.h>
#include <mma.h>

#include "ssmlab/ops/wmma_tf32.cuh"

#include <cstddef>
#include <cstdint>
#include <type_traits>

namespace ssmlab::ops::ssd_chunked_kernels {

using namespace nvcuda;

inline constexpr int kQ = 64;  // chunk length (= kernel_ssd.cuh's kChunk)
inline constexpr int kWarps = 16;
inline constexpr int kThreads = kWarps * 32;
inline constexpr int kMaxP = 64;
inline constexpr int kMaxN = 128;

struct Params {
  int64_t b, l, h, p, n, g, hg, nk;
  int pp, np;                                   // P, N rounded up to 16
  const float *x, *a, *w, *B, *C, *D, *S0;      // D, S0 may be null
  float *y, *states, *cdecay, *fin;             // states (B, H, nk, P, N), cdecay (B, H, nk)
  const float *dy, *dfin;                       // may be null (zero cotangent)
  float* dstates;                               // (B, H, nk, P, N): Ψ, then G
  float *dx, *da, *dw, *dBh, *dCh, *dDp, *dS0;  // dBh, dCh (B, L, H, N); dDp (B, H, nk) or null; dS0 or null
  bool bc_exact, dy_exact;                      // B and C / dy hold bf16 values (exact in tf32)
  bool tf32_dbc;  // 16-bit inputs: the products that only feed dB and dC run in plain tf32 (one product)
};

template <typename Op>
struct OpTraits;
template <>
struct OpTraits<__nv_bfloat16> {
  static constexpr int kPad = 8;  // row padding (elements): keeps 32-byte tile alignment, staggers banks
  static constexpr int kK = 16;
};
template <>
struct OpTraits<float> {
  static constexpr int kPad = 4;
  static constexpr int kK = 8;
};

__host__ __device__ constexpr size_t align128(size_t v) { return (v + 127) & ~size_t(127); }

// Shared-memory layouts (byte offsets), computed identically on host (launch
// size) and device.
template <typename Op>
struct OuterLayout {  // chunk_outer_kernel: s | A rows (kQ x pp) | B rows (kQ x
                      // np) | fp32 stage (pp x np)
  size_t s, xa, xb, stg, bytes;
  int lda, ldb, lds;
  __host__ __device__ OuterLayout(int pp, int np) {
    lda = pp + OpTraits<Op>::kPad;
    ldb = np + OpTraits<Op>::kPad;
    lds = np + 4;
    s = 0;
    xa = align128(kQ * sizeof(float));
    xb = xa + align128(size_t(kQ) * lda * sizeof(Op));
    stg = xb + align128(size_t(kQ) * ldb * sizeof(Op));
    bytes = stg + align128(size_t(pp) * lds * sizeof(float));
  }
};

template <typename Op>
struct ScanLayout {  // chunk_scan_kernel: s | C | R (B, then S_prev) | X̄ | M |
                     // fp32 stage (kQ x kQ)
  size_t s, cs, r, xs, ms, stg, bytes;
  int ldn, ldp, ldq, lds;
  __host__ __device__ ScanLayout(int pp, int np) {
    ldn = np + OpTraits<Op>::kPad;
    ldp = pp + OpTraits<Op>::kPad;
    ldq = kQ + OpTraits<Op>::kPad;
    lds = kQ + 4;
    s = 0;
    cs = align128(kQ * sizeof(float));
    r = cs + align128(size_t(kQ) * ldn * sizeof(Op));
    xs = r + align128(size_t(kQ) * ldn * sizeof(Op));
    ms = xs + align128(size_t(kQ) * ldp * sizeof(Op));
    stg = ms + align128(size_t(kQ) * ldq * sizeof(Op));
    bytes = stg + align128(size_t(kQ) * lds * sizeof(float));
  }
};

template <typename Op>
struct GradLayout {  // chunk_grad_kernel: s, ds, V, red | C | B | X̄ | dy | R
                     // (S_prev, then G) | M | W | stages
  size_t s, ds, v, red, cs, bs, xs, dys, r, ms, ws, stq, stp, bytes;
  int ldn, ldp, ldq, ldsq, ldsp;
  __host__ __device__ GradLayout(int pp, int np) {
    ldn = np + OpTraits<Op>::kPad;
    ldp = pp + OpTraits<Op>::kPad;
    ldq = kQ + OpTraits<Op>::kPad;
    ldsq = (np > kQ ? np : kQ) + 4;
    ldsp = kQ + 4;
    s = 0;
    ds = kQ * sizeof(float);
    v = 2 * kQ * sizeof(float);
    red = 3 * kQ * sizeof(float);
    cs = align128(red + 2 * kWarps * sizeof(float));
    bs = cs + align128(size_t(kQ) * ldn * sizeof(Op));
    xs = bs + align128(size_t(kQ) * ldn * sizeof(Op));
    dys = xs + align128(size_t(kQ) * ldp * sizeof(Op));
    r = dys + align128(size_t(kQ) * ldp * sizeof(Op));
    ms = r + align128(size_t(pp) * ldn * sizeof(Op));
    ws = ms + align128(size_t(kQ) * ldq * sizeof(Op));
    stq = ws + align128(size_t(kQ) * ldq * sizeof(Op));
    stp = stq + align128(size_t(kQ) * ldsq * sizeof(float));
    bytes = stp + align128(size_t(kQ) * ldsp * sizeof(float));
  }
};

__device__ __forceinline__ void put(__nv_bfloat16* p, float v) { *p = __float2bfloat16(v); }
__device__ __forceinline__ void put(float* p, float v) { *p = v; }

template <class Lay>
__device__ __forceinline__ int offset(int r, int c, int ld) {
  if constexpr (std::is_same_v<Lay, wmma::row_major>)
    return r * ld + c;
  else
    return c * ld + r;
}

// Cm (M x N, fp32, row-major, ldc) = [Cm +] A (M x K) · B (K x N); M, N, K multiples of 16. A's element
// (i, k) sits at offset<LA>(i, k, lda), B's (k, j) at offset<LB>(k, j, ldb). Warp w takes output tiles w,
// w + kWarps, ..., two at a time (independent accumulator chains for latency); a caller that accumulates onto
// an earlier product of the same M x N gets the same warp per tile. Split tf32 keeps hi·hi and the two
// correction products in separate accumulators.
// exact (split tf32 only): kExactA / kExactB mark an operand whose values tf32 holds exactly (bf16 data), so
// its low part and the products with it are skipped.
inline constexpr int kExactA = 1, kExactB = 2;
inline constexpr int kPlain = kExactA | kExactB;  // plain tf32: one product, no low parts

template <class LA, class LB, typename Op>
__device__ void gemm(float* Cm, int ldc, const Op* A, int lda, const Op* B, int ldb, int M, int N, int K,
                     bool accumulate, int exact = 0) {
  constexpr int kk = OpTraits<Op>::kK;
  constexpr bool kBf16 = std::is_same_v<Op, __nv_bfloat16>;
  using Acc = wmma::fragment<wmma::accumulator, 16, 16, kk, float>;
  const int warp = threadIdx.x >> 5;
  const int tn = N >> 4, tiles = (M >> 4) * tn;
  for (int tb = warp; tb < tiles; tb += 2 * kWarps) {
    const int nt = tb + kWarps < tiles ? 2 : 1;  // warp-uniform
    int i0[2], j0[2];
    Acc acc[2], cor[2];
#pragma unroll
    for (int u = 0; u < 2; ++u) {
      const int t = u < nt ? tb + u * kWarps : tb;
      i0[u] = (t / tn) * 16;
      j0[u] = (t % tn) * 16;
      if (accumulate)
        wmma::load_matrix_sync(acc[u], Cm + i0[u] * ldc + j0[u], ldc, wmma::mem_row_major);
      else
        wmma::fill_fragment(acc[u], 0.f);
      if constexpr (!kBf16) wmma::fill_fragment(cor[u], 0.f);
    }
    for (int k0 = 0; k0 < K; k0 += kk) {
#pragma unroll
      for (int u = 0; u < 2; ++u) {
        if (u >= nt) break;
        if constexpr (kBf16) {
          wmma::fragment<wmma::matrix_a, 16, 16, kk, __nv_bfloat16, LA> fa;
          wmma::fragment<wmma::matrix_b, 16, 16, kk, __nv_bfloat16, LB> fb;
          wmma::load_matrix_sync(fa, A + offset<LA>(i0[u], k0, lda), lda);
          wmma::load_matrix_sync(fb, B + offset<LB>(k0, j0[u], ldb), ldb);
          wmma::mma_sync(acc[u], fa, fb, acc[u]);
        } else {
          wmma::fragment<wmma::matrix_a, 16, 16, kk, wmma::precision::tf32, LA> ah, al;
          wmma::fragment<wmma::matrix_b, 16, 16, kk, wmma::precision::tf32, LB> bh, bl;
          wmma::load_matrix_sync(ah, A + offset<LA>(i0[u], k0, lda), lda);
          wmma::load_matrix_sync(bh, B + offset<LB>(k0, j0[u], ldb), ldb);
          if (!(exact & kExactA)) wmma_tf32::split(ah, al);
          if (!(exact & kExactB)) wmma_tf32::split(bh, bl);
          wmma::mma_sync(acc[u], ah, bh, acc[u]);
          if (!(exact & kExactA)) wmma::mma_sync(cor[u], al, bh, cor[u]);
          if (!(exact & kExactB)) wmma::mma_sync(cor[u], ah, bl, cor[u]);
        }
      }
    }
#pragma unroll
    for (int u = 0; u < 2; ++u) {
      if (u >= nt) break;
      if constexpr (!kBf16) {
#pragma unroll
        for (int e = 0; e < acc[u].num_elements; ++e) acc[u].x[e] += cor[u].x[e];
      }
      wmma::store_matrix_sync(Cm + i0[u] * ldc + j0[u], acc[u], ldc, wmma::mem_row_major);
    }
  }
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// s[i] = a_{t0} + ... + a_{t0+i} (zero past the sequence end) by warp 0; the
// caller synchronises.
__device__ __forceinline__ void chunk_cumsum(float* s, const Params& q, int64_t b, int64_t h, int64_t t0, int valid) {
  static_assert(kQ == 64, "chunk_cumsum takes two steps per lane");
  if (threadIdx.x >= 32) return;
  const int ln = threadIdx.x, i0 = 2 * ln, i1 = i0 + 1;
  const float v0 = i0 < valid ? q.a[(b * q.l + t0 + i0) * q.h + h] : 0.f;
  const float v1 = i1 < valid ? q.a[(b * q.l + t0 + i1) * q.h + h] : 0.f;
  const float pair = v0 + v1;
  float inc = pair;
#pragma unroll
  for (int o = 1; o < 32; o <<= 1) {
    const float u = __shfl_up_sync(0xffffffffu, inc, o);
    if (ln >= o) inc += u;
  }
  s[i0] = inc - pair + v0;
  s[i1] = inc;
}

// Sum over the block; every thread gets the result. red: kWarps floats of
// shared memory.
__device__ __forceinline__ float block_sum(float v, float* red) {
  v = warp_sum(v);
  if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = v;
  __syncthreads();
  float t = 0.f;
#pragma unroll
  for (int k = 0; k < kWarps; ++k) t += red[k];
  __syncthreads();
  return t;
}

// f(i, c) for i < rows, c < cols: each thread keeps one column and walks rows (one division per thread rather
// than per cell; consecutive threads take consecutive columns, so row-major global accesses coalesce).
template <typename F>
__device__ __forceinline__ void for_cells(int rows, int cols, F f) {
  if (cols <= 0) return;
  if (cols > kThreads) {
    for (int e = threadIdx.x; e < rows * cols; e += kThreads) f(e / cols, e % cols);
    return;
  }
  const int per = kThreads / cols, i0 = threadIdx.x / cols, c = threadIdx.x - i0 * cols;
  if (i0 >= per) return;
  for (int i = i0; i < rows; i += per) f(i, c);
}

__device__ __forceinline__ void put4(float* p, float4 v) { *reinterpret_cast<float4*>(p) = v; }
__device__ __forceinline__ void put4(__nv_bfloat16* p, float4 v) {
  const __nv_bfloat162 lo = __floats2bfloat162_rn(v.x, v.y), hi = __floats2bfloat162_rn(v.z, v.w);
  uint2 u;
  u.x = *reinterpret_cast<const unsigned*>(&lo);
  u.y = *reinterpret_cast<const unsigned*>(&hi);
  *reinterpret_cast<uint2*>(p) = u;
}

// dst[i][c] = row(i)[c] · scale(i) for i < valid, c < W, zeros elsewhere over rows x Wp (Wp = W rounded up to
// 16). Rows of W % 4 == 0 floats start 16-byte aligned (their strides are multiples of W) and go as float4, one
// row per Wp / 4 threads; others element by element.
template <typename Op, typename Row, typename Scale>
__device__ __forceinline__ void stage_tile(Op* dst, int ld, int rows, int valid, int W, int Wp, Row row, Scale scale) {
  if ((W & 3) == 0) {
    const int tpr = Wp >> 2, rpp = kThreads / tpr;
    const int r0 = threadIdx.x / tpr, c = (threadIdx.x - r0 * tpr) * 4;
    if (r0 >= rpp) return;
    for (int i = r0; i < rows; i += rpp) {
      float4 v = make_float4(0.f, 0.f, 0.f, 0.f);
      if (i < valid && c < W) {
        v = *reinterpret_cast<const float4*>(row(i) + c);
        const float sc = scale(i);
        v.x *= sc;
        v.y *= sc;
        v.z *= sc;
        v.w *= sc;
      }
      put4(dst + i * ld + c, v);
    }
  } else {
    for (int e = threadIdx.x; e < rows * Wp; e += kThreads) {
      const int i = e / Wp, c = e - i * Wp;
      put(dst + i * ld + c, (i < valid && c < W) ? row(i)[c] * scale(i) : 0.f);
    }
  }
}

__device__ __forceinline__ float one(int) { return 1.f; }

// Stage rows of a (B, L, G, N) tensor (B or C of this chunk) into a kQ x np tile, zeros outside.
template <typename Op>
__device__ __forceinline__ void stage_bc(Op* dst, int ld, const float* src, const Params& q, int64_t b, int64_t g,
                                         int64_t t0, int valid) {
  const float* base = src + ((b * q.l + t0) * q.g + g) * q.n;
  const int64_t stride = q.g * q.n;
  stage_tile(
      dst, ld, kQ, valid, static_cast<int>(q.n), q.np, [&](int i) { return base + i * stride; }, one);
}

// Stage a (P, N) fp32 state into a pp x np tile, zeros outside.
template <typename Op>
__device__ __forceinline__ void stage_state(Op* dst, int ld, const float* src, const Params& q) {
  const int N = static_cast<int>(q.n);
  stage_tile(
      dst, ld, q.pp, static_cast<int>(q.p), N, q.np, [&](int p) { return src + p * N; }, one);
}

// Stage rows of x (B, L, H, P) (or dy; null reads as zeros) times scale(i) into a kQ x pp tile, zeros outside.
template <typename Op, typename Scale>
__device__ __forceinline__ void stage_rows(Op* dst, int ld, const float* src, Scale scale, const Params& q, int64_t b,
                                           int64_t h, int64_t t0, int valid) {
  const int64_t stride = q.h * q.p;
  const float* base = src ? src + ((b * q.l + t0) * q.h + h) * q.p : nullptr;
  stage_tile(
      dst, ld, kQ, src ? valid : 0, static_cast<int>(q.p), q.pp, [&](int i) { return base + i * stride; }, scale);
}

// Forward (kGrad false): states[c] = Σ_j e_j X̄_j ⊗ B_j, cdecay[c] = s_end.
// Backward (kGrad true): dstates[c] = Ψ = Σ_i exp(s_i) dy_i ⊗ C_i, cdecay[c] =
// s_end. Grid (nk, B·H).
template <typename Op, bool kGrad>
__global__ void __launch_bounds__(kThreads) chunk_outer_kernel(Params q) {
  extern __shared__ __align__(128) unsigned char smem[];
  const OuterLayout<Op> lay(q.pp, q.np);
  float* s = reinterpret_cast<float*>(smem + lay.s);
  Op* xa = reinterpret_cast<Op*>(smem + lay.xa);
  Op* xb = reinterpret_cast<Op*>(smem + lay.xb);
  float* stg = reinterpret_cast<float*>(smem + lay.stg);
  const int c = blockIdx.x;
  const int64_t bh = blockIdx.y, b = bh / q.h, h = bh % q.h, g = h / q.hg;
  const int64_t t0 = int64_t(c) * kQ;
  const int valid = static_cast<int>(q.l - t0 < kQ ? q.l - t0 : kQ);
  const int pp = q.pp, np = q.np, P = static_cast<int>(q.p), N = static_cast<int>(q.n);
  chunk_cumsum(s, q, b, h, t0, valid);
  __syncthreads();
  const float s_end = s[kQ - 1];
  if constexpr (kGrad) {
    stage_rows(
        xa, lay.lda, q.dy, [&](int i) { return __expf(s[i]); }, q, b, h, t0, valid);
    stage_bc(xb, lay.ldb, q.C, q, b, g, t0, valid);
  } else {
    const float* w = q.w + (b * q.l + t0) * q.h + h;
    stage_rows(
        xa, lay.lda, q.x, [&](int i) { return w[i * q.h] * __expf(s_end - s[i]); }, q, b, h, t0, valid);
    stage_bc(xb, lay.ldb, q.B, q, b, g, t0, valid);
  }
  __syncthreads();
  gemm<wmma::col_major, wmma::row_major>(stg, lay.lds, xa, lay.lda, xb, lay.ldb, pp, np, kQ, false,
                                         q.bc_exact ? kExactB : 0);
  __syncthreads();
  float* dst = (kGrad ? q.dstates : q.states) + (bh * q.nk + c) * P * N;
  for_cells(P, N, [&](int p, int n) { dst[p * N + n] = stg[p * lay.lds + n]; });
  if (threadIdx.x == 0) q.cdecay[bh * q.nk + c] = s_end;
}

// The pass over chunks of one state element, forward or in reverse: st[c·PN] holds v_c on entry and leaves
// holding the carry before chunk c, carry <- exp(cd[c]) carry + v_c. The loads run one group of 4 chunks
// ahead of the stores, so several DRAM reads are in flight per thread.
template <bool kReverse>
__device__ __forceinline__ float pass_chunks(float* st, const float* cd, int64_t nk, int64_t PN, float carry) {
  auto chunk = [&](int64_t k) { return kReverse ? nk - 1 - k : k; };
  float cur[4], nxt[4];
#pragma unroll
  for (int u = 0; u < 4; ++u) cur[u] = u < nk ? st[chunk(u) * PN] : 0.f;
  for (int64_t k0 = 0; k0 < nk; k0 += 4) {
#pragma unroll
    for (int u = 0; u < 4; ++u) nxt[u] = k0 + 4 + u < nk ? st[chunk(k0 + 4 + u) * PN] : 0.f;
#pragma unroll
    for (int u = 0; u < 4; ++u) {
      if (k0 + u < nk) {
        const int64_t c = chunk(k0 + u);
        st[c * PN] = carry;
        carry = __expf(cd[c]) * carry + cur[u];
      }
    }
#pragma unroll
    for (int u = 0; u < 4; ++u) cur[u] = nxt[u];
  }
  return carry;
}

// states[c] <- the state before chunk c (from the chunk-local states in place), fin <- the final state.
// Grid (ceil(P·N / kThreads), B·H).
__global__ void __launch_bounds__(kThreads) state_pass_kernel(Params q) {
  const int64_t bh = blockIdx.y, PN = q.p * q.n, e = int64_t(blockIdx.x) * kThreads + threadIdx.x;
  if (e >= PN) return;
  const float S0 = q.S0 ? q.S0[bh * PN + e] : 0.f;
  q.fin[bh * PN + e] = pass_chunks<false>(q.states + bh * q.nk * PN + e, q.cdecay + bh * q.nk, q.nk, PN, S0);
}

// dstates[c] <- G_c = dL/dS_end,c (from Ψ in place), dS0 <- dL/dS0 = exp(s_end,0) G_0 + Ψ_0.
// Grid (ceil(P·N / kThreads), B·H).
__global__ void __launch_bounds__(kThreads) state_pass_back_kernel(Params q) {
  const int64_t bh = blockIdx.y, PN = q.p * q.n, e = int64_t(blockIdx.x) * kThreads + threadIdx.x;
  if (e >= PN) return;
  const float Gf = q.dfin ? q.dfin[bh * PN + e] : 0.f;
  const float G0 = pass_chunks<true>(q.dstates + bh * q.nk * PN + e, q.cdecay + bh * q.nk, q.nk, PN, Gf);
  if (q.dS0) q.dS0[bh * PN + e] = G0;
}

// stg[i][j] *= f(i) over rows < kQ, columns < ncols.
template <typename F>
__device__ __forceinline__ void scale_rows(float* stg, int ld, int ncols, F f) {
  for_cells(kQ, ncols, [&](int i, int c) { stg[i * ld + c] *= f(i); });
}

// out[i] = Σ_{p < P} stg[i][p] · vec_i[p] with vec_i the row of a (B, L, H, P)
// tensor (times scale[r] when given); warp w takes rows w, w + kWarps, ...;
// rows past the sequence end give 0.
__device__ __forceinline__ void row_dots(float* out, const float* stg, int ld, const float* vec, const float* scale,
                                         const Params& q, int64_t b, int64_t h, int64_t t0, int valid) {
  const int warp = threadIdx.x >> 5, ln = threadIdx.x & 31, P = static_cast<int>(q.p);
  for (int i = warp; i < kQ; i += kWarps) {
    float acc = 0.f;
    if (vec && i < valid) {
      const int64_t r = (b * q.l + t0 + i) * q.h + h;
      for (int p = ln; p < P; p += 32) acc += stg[i * ld + p] * vec[r * P + p];
      if (scale) acc *= scale[r];
    }
    acc = warp_sum(acc);
    if (ln == 0) out[i] = acc;
  }
}

// y of one chunk from the states before it. Grid (nk, B·H).
template <typename Op>
__global__ void __launch_bounds__(kThreads) chunk_scan_kernel(Params q) {
  extern __shared__ __align__(128) unsigned char smem[];
  const ScanLayout<Op> lay(q.pp, q.np);
  float* s = reinterpret_cast<float*>(smem + lay.s);
  Op* cs = reinterpret_cast<Op*>(smem + lay.cs);
  Op* rs = reinterpret_cast<Op*>(smem + lay.r);
  Op* xs = reinterpret_cast<Op*>(smem + lay.xs);
  Op* ms = reinterpret_cast<Op*>(smem + lay.ms);
  float* stg = reinterpret_cast<float*>(smem + lay.stg);
  const int c = blockIdx.x;
  const int64_t bh = blockIdx.y, b = bh / q.h, h = bh % q.h, g = h / q.hg;
  const int64_t t0 = int64_t(c) * kQ;
  const int valid = static_cast<int>(q.l - t0 < kQ ? q.l - t0 : kQ);
  const int pp = q.pp, np = q.np, P = static_cast<int>(q.p);
  chunk_cumsum(s, q, b, h, t0, valid);
  const float* wrow = q.w + (b * q.l + t0) * q.h + h;
  stage_bc(cs, lay.ldn, q.C, q, b, g, t0, valid);
  stage_bc(rs, lay.ldn, q.B, q, b, g, t0, valid);
  stage_rows(
      xs, lay.ldp, q.x, [&](int i) { return wrow[i * q.h]; }, q, b, h, t0, valid);
  __syncthreads();
  gemm<wmma::row_major, wmma::col_major>(stg, lay.lds, cs, lay.ldn, rs, lay.ldn, kQ, kQ, np, false);  // C Bᵀ
  __syncthreads();
  for (int e = threadIdx.x; e < kQ * kQ; e += kThreads) {
    const int i = e / kQ, j = e % kQ;
    put(ms + i * lay.ldq + j, j <= i ? __expf(s[i] - s[j]) * stg[i * lay.lds + j] : 0.f);
  }
  stage_state(rs, lay.ldn, q.states + (bh * q.nk + c) * q.p * q.n, q);
  __syncthreads();
  gemm<wmma::row_major, wmma::col_major>(stg, lay.lds, cs, lay.ldn, rs, lay.ldn, kQ, pp, np, false);  // C S_prevᵀ
  __syncthreads();
  scale_rows(stg, lay.lds, pp, [&](int i) { return __expf(s[i]); });
  __syncthreads();
  gemm<wmma::row_major, wmma::row_major>(stg, lay.lds, ms, lay.ldq, xs, lay.ldp, kQ, pp, kQ, true);  // + M X̄
  __syncthreads();
  const float Dv = q.D ? q.D[h] : 0.f;
  for_cells(valid, P, [&](int i, int p) {
    const int64_t o = ((b * q.l + t0 + i) * q.h + h) * P + p;
    q.y[o] = stg[i * lay.lds + p] + Dv * q.x[o];
  });
}

// Every gradient of one chunk, given G_c in dstates and S_prev in states. Grid
// (nk, B·H).
template <typename Op>
__global__ void __launch_bounds__(kThreads) chunk_grad_kernel(Params q) {
  extern __shared__ __align__(128) unsigned char smem[];
  const GradLayout<Op> lay(q.pp, q.np);
  float* s = reinterpret_cast<float*>(smem + lay.s);
  float* ds = reinterpret_cast<float*>(smem + lay.ds);
  float* sv = reinterpret_cast<float*>(smem + lay.v);
  float* red = reinterpret_cast<float*>(smem + lay.red);
  Op* cs = reinterpret_cast<Op*>(smem + lay.cs);
  Op* bs = reinterpret_cast<Op*>(smem + lay.bs);
  Op* xs = reinterpret_cast<Op*>(smem + lay.xs);
  Op* dys = reinterpret_cast<Op*>(smem + lay.dys);
  Op* rs = reinterpret_cast<Op*>(smem + lay.r);
  Op* ms = reinterpret_cast<Op*>(smem + lay.ms);
  Op* ws = reinterpret_cast<Op*>(smem + lay.ws);
  float* stq = reinterpret_cast<float*>(smem + lay.stq);
  float* stp = reinterpret_cast<float*>(smem + lay.stp);
  const int c = blockIdx.x;
  const int64_t bh = blockIdx.y, b = bh / q.h, h = bh % q.h, g = h / q.hg;
  const int64_t t0 = int64_t(c) * kQ, PN = q.p * q.n;
  const int valid = static_cast<int>(q.l - t0 < kQ ? q.l - t0 : kQ);
  const int pp = q.pp, np = q.np, P = static_cast<int>(q.p), N = static_cast<int>(q.n);
  const int xbc = q.bc_exact ? kExactA : 0, xdy = q.dy_exact ? kExactA : 0;  // as the A operand; << 1 as B
  const float* Sprev = q.states + (bh * q.nk + c) * PN;
  const float* Gc = q.dstates + (bh * q.nk + c) * PN;
  chunk_cumsum(s, q, b, h, t0, valid);
  const float* wrow = q.w + (b * q.l + t0) * q.h + h;
  stage_bc(cs, lay.ldn, q.C, q, b, g, t0, valid);
  stage_bc(bs, lay.ldn, q.B, q, b, g, t0, valid);
  stage_rows(
      xs, lay.ldp, q.x, [&](int i) { return wrow[i * q.h]; }, q, b, h, t0, valid);
  stage_rows(dys, lay.ldp, q.dy, one, q, b, h, t0, valid);
  stage_state(rs, lay.ldn, Sprev, q);
  float gs = 0.f;  // <G_c, S_prev> in fp32
  for (int64_t e = threadIdx.x; e < PN; e += kThreads) gs += Gc[e] * Sprev[e];
  gs = block_sum(gs, red);  // synchronises: the tiles above are complete
  const float s_end = s[kQ - 1];
  auto decay_to_end = [&](int i) { return __expf(s_end - s[i]); };
  auto decay_from_start = [&](int i) { return __expf(s[i]); };

  // A. M = L∘(C Bᵀ), W = L∘(dy X̄ᵀ).
  gemm<wmma::row_major, wmma::col_major>(stq, lay.ldsq, cs, lay.ldn, bs, lay.ldn, kQ, kQ, np, false, xbc | (xbc << 1));
  gemm<wmma::row_major, wmma::col_major>(stp, lay.ldsp, dys, lay.ldp, xs, lay.ldp, kQ, kQ, pp, false,
                                         q.tf32_dbc ? kPlain : xdy);
  __syncthreads();
  for (int e = threadIdx.x; e < kQ * kQ; e += kThreads) {
    const int i = e / kQ, j = e % kQ;
    const float Lij = j <= i ? __expf(s[i] - s[j]) : 0.f;
    put(ms + i * lay.ldq + j, Lij * stq[i * lay.ldsq + j]);
    put(ws + i * lay.ldq + j, Lij * stp[i * lay.ldsp + j]);
  }
  __syncthreads();
  // B. y_ssm = diag(exp s) C S_prevᵀ + M X̄;  ds_i = dy_i · y_ssm_i.
  gemm<wmma::row_major, wmma::col_major>(stp, lay.ldsp, cs, lay.ldn, rs, lay.ldn, kQ, pp, np, false, xbc);
  // D (first half). dC = diag(exp s) dy S_prev (+ W B below), into the other
  // stage.
  gemm<wmma::row_major, wmma::row_major>(stq, lay.ldsq, dys, lay.ldp, rs, lay.ldn, kQ, np, pp, false,
                                         q.tf32_dbc ? kPlain : xdy);
  __syncthreads();
  scale_rows(stp, lay.ldsp, pp, decay_from_start);
  scale_rows(stq, lay.ldsq, np, decay_from_start);
  __syncthreads();
  gemm<wmma::row_major, wmma::row_major>(stp, lay.ldsp, ms, lay.ldq, xs, lay.ldp, kQ, pp, kQ, true);
  gemm<wmma::row_major, wmma::row_major>(stq, lay.ldsq, ws, lay.ldq, bs, lay.ldn, kQ, np, kQ, true,
                                         q.tf32_dbc ? kPlain : xbc << 1);
  __syncthreads();
  row_dots(ds, stp, lay.ldsp, q.dy, nullptr, q, b, h, t0, valid);
  for_cells(valid, N, [&](int i, int n) { q.dCh[((b * q.l + t0 + i) * q.h + h) * N + n] = stq[i * lay.ldsq + n]; });
  __syncthreads();  // ds written, stq read; R may now take G
  stage_state(rs, lay.ldn, Gc, q);
  __syncthreads();
  // C. dX̄ = diag(e) B Gᵀ + Mᵀ dy;  V_j = e_j X̄_j·(B_j Gᵀ).
  gemm<wmma::row_major, wmma::col_major>(stp, lay.ldsp, bs, lay.ldn, rs, lay.ldn, kQ, pp, np, false, xbc);
  // E (first half). dB = diag(e) X̄ G (+ Wᵀ C below).
  gemm<wmma::row_major, wmma::row_major>(stq, lay.ldsq, xs, lay.ldp, rs, lay.ldn, kQ, np, pp, false,
                                         q.tf32_dbc ? kPlain : 0);
  __syncthreads();
  scale_rows(stp, lay.ldsp, pp, decay_to_end);
  scale_rows(stq, lay.ldsq, np, decay_to_end);
  __syncthreads();
  row_dots(sv, stp, lay.ldsp, q.x, q.w, q, b, h, t0, valid);
  __syncthreads();
  gemm<wmma::col_major, wmma::row_major>(stp, lay.ldsp, ms, lay.ldq, dys, lay.ldp, kQ, pp, kQ, true, xdy << 1);
  gemm<wmma::col_major, wmma::row_major>(stq, lay.ldsq, ws, lay.ldq, cs, lay.ldn, kQ, np, kQ, true,
                                         q.tf32_dbc ? kPlain : xbc << 1);
  __syncthreads();
  for_cells(valid, N, [&](int i, int n) { q.dBh[((b * q.l + t0 + i) * q.h + h) * N + n] = stq[i * lay.ldsq + n]; });
  // Per row: dx, dw, ds -= w dw, dD.
  const float Dv = q.D ? q.D[h] : 0.f;
  const int warp = threadIdx.x >> 5, ln = threadIdx.x & 31;
  float dd = 0.f;
  for (int i = warp; i < valid; i += kWarps) {
    const int64_t r = (b * q.l + t0 + i) * q.h + h;
    const float wr = q.w[r];
    float dwr = 0.f;
    for (int p = ln; p < P; p += 32) {
      const float gx = stp[i * lay.ldsp + p], xv = q.x[r * P + p], gy = q.dy ? q.dy[r * P + p] : 0.f;
      q.dx[r * P + p] = wr * gx + Dv * gy;
      dwr += xv * gx;
      dd += gy * xv;
    }
    dwr = warp_sum(dwr);
    if (ln == 0) {
      q.dw[r] = dwr;
      ds[i] -= wr * dwr;
    }
  }
  float vsum = 0.f;
  for (int i = threadIdx.x; i < kQ; i += kThreads) vsum += sv[i];
  vsum = block_sum(vsum, red);  // also publishes ds
  dd = block_sum(dd, red + kWarps);
  if (q.dDp && threadIdx.x == 0) q.dDp[bh * q.nk + c] = dd;
  // F. da = reverse cumsum of ds (the s_end terms sit at the last step of the
  // chunk).
  if (threadIdx.x < 32) {
    const int ln2 = threadIdx.x, i0 = 2 * ln2, i1 = i0 + 1;
    const float v0 = ds[i0];
    const float v1 = ds[i1] + (i1 == kQ - 1 ? __expf(s_end) * gs + vsum : 0.f);
    const float pair = v0 + v1;
    float inc = pair;  // suffix sums: scan over lanes from the top
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
      const float u = __shfl_down_sync(0xffffffffu, inc, o);
      if (ln2 + o < 32) inc += u;
    }
    // inc = Σ of pairs ln2..31; da_{i1} = inc - v0, da_{i0} = inc.
    if (i0 < valid) q.da[(b * q.l + t0 + i0) * q.h + h] = inc;
    if (i1 < valid) q.da[(b * q.l + t0 + i1) * q.h + h] = inc - v0;
  }
}

}  // namespace ssmlab::ops::ssd_chunked_kernels
