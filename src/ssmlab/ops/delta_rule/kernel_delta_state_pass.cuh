// CUDA kernel of the delta rule's state-only serial pass (chunk_pass.h, "state pass"), float32 on tensor cores.
// No torch types. One kernel serves both directions: per (batch x value head, block of kVc = 32 value columns),
// from X = X0, over the chunks in order (forward) or in reverse (backward):
//
//   Xsave_c = X;   Y_c = P_c + s1 M1_c X;   X <- diag(d_c) X + R_c + s2 M2_c^T Y_c;   finally Xfin = X
//
// forward:  X = S, M1 = W, M2 = Ko, P = U, R = 0, s1 = -1, s2 = +1 (Y = Vn, Xsave = S_entry)
// backward: X = dS, M1 = Ko, M2 = W, P = gVn, R = gS_entry, s1 = +1, s2 = -1 (Y = dVn, Xsave = dSx)
//
// The two products run on the tensor cores (nvcuda::wmma, m16n16k8 tf32) with each operand split into two tf32
// parts and three products summed (hi hi + lo hi + hi lo; about float32 accurate, the same scheme as
// ops/ssd_scan/kernel_ssd_chunked.cuh). X stays in shared memory in float32 for the whole sequence; Y goes through
// shared memory (scaled by s2) as the second product's operand.
//
// Shared memory (floats; every region 128-byte aligned): M1, M2 (Qp x ldm, ldm = Kp + 4), X (Kp x ldx), Y
// (Qp x ldx, ldx = kVc + 4), d (two buffers of Kp). Kp = round_up(K, 16), Qp = round_up(Q, 16); the leading
// dimensions are multiples of 4 floats (wmma's ldm rule) and every tile origin (rows in steps of 8, columns in
// steps of 16 or 8) lands on a 32-byte boundary. The whole buffer is zeroed once; the asynchronous copies write
// only rows < Q and columns < K of M1, M2 and entries < K of d, so every pad stays zero and the padded products
// add exact zeros (X and Y pad rows / columns stay zero too: zero operands, zero P, R and d there).
//
// Pipeline per chunk (cp.async, two commit groups per chunk; "A" = M1 and d, "B" = M2):
//   wait A_c; sync | save X; prefetch P_c, R_c into registers | Y = M1 X | sync | issue A_{c+1} |
//   Y = P + s1 Y (write Y out), Y *= s2; X = d X + R | wait B_c; sync | X += M2^T Y (a warp owns its X tiles) |
//   sync | issue B_{c+1}
// so the load of M1_{c+1} overlaps the elementwise step and the second product, that of M2_{c+1} the next chunk's
// first product.
#pragma once
#include <cuda_pipeline_primitives.h>
#include <mma.h>

#include "ssmlab/ops/wmma_tf32.cuh"

#include <cstdint>

namespace ssmlab::ops::delta_state_kernels {

using namespace nvcuda;

inline constexpr int kThreads = 256;
inline constexpr int kWarps = kThreads / 32;
inline constexpr int kVc = 32;     // value columns per block
inline constexpr int kMaxQ = 64;
inline constexpr int kMaxK = 256;
inline constexpr int kSmallK = 128;  // kernels for K <= kSmallK: two blocks per SM (<= 128 registers)
inline constexpr int kMaxYPer = kMaxQ * kVc / kThreads;   // Y elements per thread in the elementwise step (8)

__host__ __device__ constexpr int dsp_pad16(int n) { return (n + 15) / 16 * 16; }
__host__ __device__ constexpr int dsp_align32(int n) { return (n + 31) / 32 * 32; }

struct StateParams {
  int64_t bh;         // B * HV
  int nc, q, k, v;
  const float* M1;    // (bh, nc, Q, K)
  const float* M2;    // (bh, nc, Q, K)
  const float* d;     // (bh, nc, K)
  const float* P;     // (bh, nc, Q, V) or null (zero)
  const float* R;     // (bh, nc, K, V) or null (zero)
  const float* X0;    // (bh, K, V) or null (zero)
  float* Xsave;       // (bh, nc, K, V)
  float* Y;           // (bh, nc, Q, V)
  float* Xfin;        // (bh, K, V)
  float s1, s2;
  bool vec;           // 16-byte copies of M1 / M2 rows (K % 4 == 0, both pointers 16-byte aligned)
};

// Float offsets of the shared-memory regions, identical on host (launch size) and device.
struct StateLayout {
  int kp, qp, ldm, ldx;
  int m1, m2, x, y, d, floats;
  __host__ __device__ constexpr StateLayout(int k, int q)
      : kp(dsp_pad16(k)), qp(dsp_pad16(q)), ldm(dsp_pad16(k) + 4), ldx(kVc + 4), m1(0),
        m2(dsp_align32(dsp_pad16(q) * (dsp_pad16(k) + 4))),
        x(2 * dsp_align32(dsp_pad16(q) * (dsp_pad16(k) + 4))),
        y(2 * dsp_align32(dsp_pad16(q) * (dsp_pad16(k) + 4)) + dsp_align32(dsp_pad16(k) * (kVc + 4))),
        d(2 * dsp_align32(dsp_pad16(q) * (dsp_pad16(k) + 4)) + dsp_align32(dsp_pad16(k) * (kVc + 4)) +
          dsp_align32(dsp_pad16(q) * (kVc + 4))),
        floats(2 * dsp_align32(dsp_pad16(q) * (dsp_pad16(k) + 4)) + dsp_align32(dsp_pad16(k) * (kVc + 4)) +
               dsp_align32(dsp_pad16(q) * (kVc + 4)) + dsp_align32(2 * dsp_pad16(k))) {}
};

// rows x cols row-major global matrix -> shared memory rows of leading dimension ld (asynchronous; the caller
// commits). vec: 16-byte pieces (cols % 4 == 0, src 16-byte aligned, dst 16-byte aligned with ld % 4 == 0).
__device__ __forceinline__ void dsp_stage_async(float* dst, int ld, const float* __restrict__ src, int rows, int cols,
                                                bool vec) {
  if (vec) {
    const int c4 = cols >> 2;
    for (int i = threadIdx.x; i < rows * c4; i += kThreads) {
      const int r = i / c4, c = (i - r * c4) << 2;
      __pipeline_memcpy_async(dst + r * ld + c, src + static_cast<int64_t>(r) * cols + c, 16);
    }
  } else {
    for (int i = threadIdx.x; i < rows * cols; i += kThreads) {
      const int r = i / cols, c = i - r * cols;
      __pipeline_memcpy_async(dst + r * ld + c, src + static_cast<int64_t>(r) * cols + c, 4);
    }
  }
}

using DspAcc = wmma::fragment<wmma::accumulator, 16, 16, 8, float>;
template <class Layout>
using DspA = wmma::fragment<wmma::matrix_a, 16, 16, 8, wmma::precision::tf32, Layout>;
using DspB = wmma::fragment<wmma::matrix_b, 16, 16, 8, wmma::precision::tf32, wmma::row_major>;

// Y (Qp x kVc, ld ldx) = M1 (Qp x Kp, row-major, ld ldm) X (Kp x kVc, ld ldx). One 16 x 16 tile per warp
// (Qp / 16 * 2 <= 8 tiles), even and odd k-steps in separate accumulators (two dependency chains).
__device__ __forceinline__ void dsp_product1(float* Y, const float* M1, const float* X, const StateLayout& L) {
  const int warp = threadIdx.x >> 5;
  const int tiles = (L.qp >> 4) * (kVc >> 4);
  if (warp >= tiles) return;  // warp-uniform
  const int i0 = (warp / (kVc >> 4)) * 16, j0 = (warp % (kVc >> 4)) * 16;
  DspAcc acc[2], cor[2];
#pragma unroll
  for (int u = 0; u < 2; ++u) {
    wmma::fill_fragment(acc[u], 0.f);
    wmma::fill_fragment(cor[u], 0.f);
  }
#pragma unroll 1
  for (int k0 = 0; k0 < L.kp; k0 += 16) {
#pragma unroll
    for (int u = 0; u < 2; ++u) {
      const int kk = k0 + 8 * u;  // Kp is a multiple of 16: both halves exist
      DspA<wmma::row_major> ah, al;
      DspB bh, bl;
      wmma::load_matrix_sync(ah, M1 + i0 * L.ldm + kk, L.ldm);
      wmma::load_matrix_sync(bh, X + kk * L.ldx + j0, L.ldx);
      wmma_tf32::split(ah, al);
      wmma_tf32::split(bh, bl);
      wmma::mma_sync(acc[u], ah, bh, acc[u]);
      wmma::mma_sync(cor[u], al, bh, cor[u]);
      wmma::mma_sync(cor[u], ah, bl, cor[u]);
    }
  }
#pragma unroll
  for (int e = 0; e < acc[0].num_elements; ++e) acc[0].x[e] = (acc[0].x[e] + acc[1].x[e]) + (cor[0].x[e] + cor[1].x[e]);
  wmma::store_matrix_sync(Y + i0 * L.ldx + j0, acc[0], L.ldx, wmma::mem_row_major);
}

// X (Kp x kVc) += M2^T Y: M2 is Qp x Kp row-major, so M2^T's element (i, k) = M2[k * ldm + i] (a col-major
// operand). Tiles t = warp, warp + 8, ... ((Kp / 16) * 2 <= 32), two at a time; the two tiles of a pair share
// their column block (8 is even), so one Y fragment serves both. Each X tile is read and written by its warp only.
__device__ __forceinline__ void dsp_product2(float* X, const float* M2, const float* Y, const StateLayout& L) {
  constexpr int tn = kVc >> 4;
  static_assert(kWarps % tn == 0, "the tiles of a pair must share their column block");
  const int warp = threadIdx.x >> 5;
  const int tiles = (L.kp >> 4) * tn;
  for (int tb = warp; tb < tiles; tb += 2 * kWarps) {
    const int nt = tb + kWarps < tiles ? 2 : 1;  // warp-uniform
    const int j0 = (tb % tn) * 16;
    int i0[2];
    DspAcc acc[2], cor[2];
#pragma unroll
    for (int u = 0; u < 2; ++u) {
      const int t = u < nt ? tb + u * kWarps : tb;
      i0[u] = (t / tn) * 16;
      wmma::load_matrix_sync(acc[u], X + i0[u] * L.ldx + j0, L.ldx, wmma::mem_row_major);
      wmma::fill_fragment(cor[u], 0.f);
    }
#pragma unroll 2
    for (int k0 = 0; k0 < L.qp; k0 += 8) {
      DspB bh, bl;
      wmma::load_matrix_sync(bh, Y + k0 * L.ldx + j0, L.ldx);
      wmma_tf32::split(bh, bl);
#pragma unroll
      for (int u = 0; u < 2; ++u) {
        if (u >= nt) break;
        DspA<wmma::col_major> ah, al;
        wmma::load_matrix_sync(ah, M2 + k0 * L.ldm + i0[u], L.ldm);
        wmma_tf32::split(ah, al);
        wmma::mma_sync(acc[u], ah, bh, acc[u]);
        wmma::mma_sync(cor[u], al, bh, cor[u]);
        wmma::mma_sync(cor[u], ah, bl, cor[u]);
      }
    }
#pragma unroll
    for (int u = 0; u < 2; ++u) {
      if (u >= nt) break;
#pragma unroll
      for (int e = 0; e < acc[u].num_elements; ++e) acc[u].x[e] += cor[u].x[e];
      wmma::store_matrix_sync(X + i0[u] * L.ldx + j0, acc[u], L.ldx, wmma::mem_row_major);
    }
  }
}

// kBigK: K up to kMaxK (one block per SM: the shared memory allows no second one), else K <= kSmallK (two blocks
// per SM, registers capped at 128 by the launch bounds).
template <bool kReverse, bool kBigK>
__global__ void __launch_bounds__(kThreads, kBigK ? 1 : 2) delta_state_pass_kernel(const StateParams p) {
  constexpr int kMaxXPer = (kBigK ? kMaxK : kSmallK) * kVc / kThreads;  // X elements per thread (32 or 16)
  extern __shared__ __align__(128) float dsp_smem[];
  const StateLayout L(p.k, p.q);
  float* M1 = dsp_smem + L.m1;
  float* M2 = dsp_smem + L.m2;
  float* X = dsp_smem + L.x;
  float* Y = dsp_smem + L.y;
  float* D = dsp_smem + L.d;
  const int K = p.k, Q = p.q, V = p.v, tid = threadIdx.x;
  const int64_t bh = blockIdx.x;
  const int j0 = static_cast<int>(blockIdx.y) * kVc;
  const int vcols = V - j0 < kVc ? V - j0 : kVc;
  const int nX = L.kp * kVc, nY = L.qp * kVc;  // elementwise extents (pads included)

  for (int i = tid; i < L.floats; i += kThreads) dsp_smem[i] = 0.f;
  __syncthreads();  // the zeros land before any asynchronous copy into the same buffers
  for (int i = tid; i < K * kVc; i += kThreads) {
    const int r = i / kVc, c = i - r * kVc;
    X[r * L.ldx + c] = (c < vcols && p.X0 != nullptr) ? p.X0[(bh * K + r) * V + j0 + c] : 0.f;
  }
  {  // chunk of the first iteration: group A (M1, d into buffer 0), group B (M2)
    const int c = kReverse ? p.nc - 1 : 0;
    const int64_t ch = bh * p.nc + c;
    dsp_stage_async(M1, L.ldm, p.M1 + ch * Q * K, Q, K, p.vec);
    dsp_stage_async(D, 0, p.d + ch * K, 1, K, false);
    __pipeline_commit();
    dsp_stage_async(M2, L.ldm, p.M2 + ch * Q * K, Q, K, p.vec);
    __pipeline_commit();
  }
  for (int it = 0; it < p.nc; ++it) {
    const int c = kReverse ? p.nc - 1 - it : it;
    const int64_t ch = bh * p.nc + c;
    const float* dcur = D + (it & 1) * L.kp;
    __pipeline_wait_prior(1);  // this thread's group A of chunk c has landed (B may be in flight)
    __syncthreads();           // ... every thread's; X of the previous chunk is complete
    // Save the state entering this chunk; prefetch P and R (registers, same element order as the update below).
    for (int i = tid; i < K * kVc; i += kThreads) {
      const int r = i / kVc, cc = i - r * kVc;
      if (cc < vcols) p.Xsave[(ch * K + r) * V + j0 + cc] = X[r * L.ldx + cc];
    }
    float pr[kMaxYPer], rr[kMaxXPer];
#pragma unroll
    for (int t = 0; t < kMaxYPer; ++t) {
      const int i = tid + t * kThreads, r = i / kVc, cc = i - r * kVc;
      pr[t] = (p.P != nullptr && r < Q && cc < vcols) ? p.P[(ch * Q + r) * V + j0 + cc] : 0.f;
    }
#pragma unroll
    for (int t = 0; t < kMaxXPer; ++t) {
      const int i = tid + t * kThreads, r = i / kVc, cc = i - r * kVc;
      rr[t] = (kReverse && p.R != nullptr && r < K && cc < vcols) ? p.R[(ch * K + r) * V + j0 + cc] : 0.f;
    }
    dsp_product1(Y, M1, X, L);
    __syncthreads();  // Y = M1 X complete; every read of M1 and X done
    if (it + 1 < p.nc) {
      const int64_t nx = bh * p.nc + (kReverse ? c - 1 : c + 1);
      dsp_stage_async(M1, L.ldm, p.M1 + nx * Q * K, Q, K, p.vec);
      dsp_stage_async(D + ((it + 1) & 1) * L.kp, 0, p.d + nx * K, 1, K, false);
    }
    __pipeline_commit();  // group A of the next chunk (empty after the last chunk)
#pragma unroll
    for (int t = 0; t < kMaxYPer; ++t) {
      const int i = tid + t * kThreads;
      if (i >= nY) break;
      const int r = i / kVc, cc = i - r * kVc;
      const float y = pr[t] + p.s1 * Y[r * L.ldx + cc];
      if (r < Q && cc < vcols) p.Y[(ch * Q + r) * V + j0 + cc] = y;
      Y[r * L.ldx + cc] = p.s2 * y;
    }
#pragma unroll
    for (int t = 0; t < kMaxXPer; ++t) {
      const int i = tid + t * kThreads;
      if (i >= nX) break;
      const int r = i / kVc, cc = i - r * kVc;
      X[r * L.ldx + cc] = dcur[r] * X[r * L.ldx + cc] + rr[t];
    }
    __pipeline_wait_prior(1);  // group B of chunk c (M2) has landed; A of the next chunk may be in flight
    __syncthreads();           // Y, X and M2 complete for every warp
    dsp_product2(X, M2, Y, L);
    __syncthreads();  // X complete; every read of M2 and Y done
    if (it + 1 < p.nc) {
      const int64_t nx = bh * p.nc + (kReverse ? c - 1 : c + 1);
      dsp_stage_async(M2, L.ldm, p.M2 + nx * Q * K, Q, K, p.vec);
    }
    __pipeline_commit();  // group B of the next chunk
  }
  __pipeline_wait_prior(0);
  __syncthreads();
  for (int i = tid; i < K * kVc; i += kThreads) {
    const int r = i / kVc, cc = i - r * kVc;
    if (cc < vcols) p.Xfin[(bh * K + r) * V + j0 + cc] = X[r * L.ldx + cc];
  }
}

}  // namespace ssmlab::ops::delta_state_kernels
