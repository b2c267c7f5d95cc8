// CUDA kernels of the delta rule's serial pass over chunks (chunk_pass.h has the contract and the formulas).
// One block per (batch x value head, block of 32 value columns); 256 threads = 32 lanes (one value column each)
// x 8 row groups (one per warp). The block holds its K x 32 slice of the state (forward) or of its gradient
// (backward) in shared memory, in the compute dtype (fp32, or fp64), for the whole sequence, and walks the chunks
// in order (forward) or in reverse (backward). Per chunk it stages the chunk's Q x K operands in shared memory.
// The value columns never mix, so the blocks of one head are independent.
//
// Shared-memory layout: key extents padded to Kp = round_up(K, 8) and chunk extents to Qp = round_up(Q, 8), pads
// zero (row-major Q x Kp operands, Q x Qp for A, Kp x 32 state, Qp x 32 chunk tiles), so that every product may
// run over the padded extent.
// Products: a thread computes 8 rows of a 32-column tile, lane = column. Every row operand it reads is the same
// address for the whole warp (a broadcast), every column operand 32 consecutive words: no bank conflicts. With
// kVec (fp32 only) the row operands are read 4 at a time (one 16-byte broadcast load instead of four).
#pragma once
#include <cstdint>
#include <type_traits>

namespace ssmlab::ops::delta_pass_kernels {

constexpr int kThreads = 256;
constexpr int kCols = 32;                     // value columns per block, one per lane
constexpr int kGroups = kThreads / kCols;     // 8 row groups (one per warp)
constexpr int kMaxQ = 64;                     // chunk rows: at most kMaxQ / kGroups = 8 per thread
constexpr int kRows = kMaxQ / kGroups;        // rows per thread in one product pass
constexpr int kMaxK = 256;

__host__ __device__ constexpr int pad8(int n) { return (n + 7) / 8 * 8; }

template <typename T>
struct Params {
  int64_t bh;      // B * HV
  int nc, q, k, v;
  // forward
  const T* U;      // (bh, nc, Q, V)
  const T* W;      // (bh, nc, Q, K)
  const T* Qi;     // (bh, nc, Q, K)
  const T* A;      // (bh, nc, Q, Q)
  const T* Ko;     // (bh, nc, Q, K)
  const T* d;      // (bh, nc, K)
  const T* S0;     // (bh, K, V)
  T* O;            // (bh, nc, Q, V)
  T* Sfin;         // (bh, K, V)
  T* Sentry;       // (bh, nc, K, V) or null
  T* Vn;           // (bh, nc, Q, V) or null
  // backward
  const T* dO;     // (bh, nc, Q, V)
  const T* dSfin;  // (bh, K, V) or null (zero)
  T* dVn;          // (bh, nc, Q, V)
  T* dSx;          // (bh, nc, K, V)
  T* dS0;          // (bh, K, V)
};

// Shared-memory elements of the two kernels (the host sizes the launch with these).
__host__ __device__ constexpr int64_t forward_smem_elems(int k, int q) {
  return int64_t{pad8(k)} * kCols + int64_t{q} * pad8(k) + int64_t{q} * pad8(q) + int64_t{pad8(q)} * kCols + pad8(k);
}
__host__ __device__ constexpr int64_t backward_smem_elems(int k, int q) {
  return int64_t{pad8(k)} * kCols + 2 * int64_t{q} * pad8(k) + int64_t{q} * pad8(q) + 2 * int64_t{pad8(q)} * kCols +
         pad8(k);
}

// Copies a rows x cols row-major global matrix into shared memory with leading dimension ld >= cols, zeroing the
// pad columns; all threads of the block.
template <typename T>
__device__ __forceinline__ void stage(T* dst, const T* __restrict__ src, int rows, int cols, int ld) {
  for (int i = threadIdx.x; i < rows * ld; i += kThreads) {
    const int r = i / ld, c = i - r * ld;
    dst[i] = c < cols ? src[r * cols + c] : T(0);
  }
}

// acc[i] (row r = group + 8 i < rows) += sum_{p < np} X[r * ldx + p] * Y[p * kCols + lane].
// np and ldx are multiples of 8; X 16-byte aligned.
template <typename T, bool kVec>
__device__ __forceinline__ void rows_times_cols(T (&acc)[kRows], const T* X, int ldx, const T* Y, int np, int rows,
                                                int group, int lane) {
  if constexpr (kVec && std::is_same_v<T, float>) {
    for (int p = 0; p < np; p += 4) {
      const float y0 = Y[p * kCols + lane], y1 = Y[(p + 1) * kCols + lane], y2 = Y[(p + 2) * kCols + lane],
                  y3 = Y[(p + 3) * kCols + lane];
#pragma unroll
      for (int i = 0; i < kRows; ++i) {
        const int r = group + kGroups * i;
        if (r < rows) {
          const float4 x = *reinterpret_cast<const float4*>(X + r * ldx + p);
          acc[i] += x.x * y0 + x.y * y1 + x.z * y2 + x.w * y3;
        }
      }
    }
  } else {
    for (int p = 0; p < np; ++p) {
      const T y = Y[p * kCols + lane];
#pragma unroll
      for (int i = 0; i < kRows; ++i) {
        const int r = group + kGroups * i;
        if (r < rows) acc[i] += X[r * ldx + p] * y;
      }
    }
  }
}

// acc[i] (row r = row0 + 8 group + i) += sum_{p < np} X[p * ldx + r] * Y[p * kCols + lane] (X transposed). A row
// group wholly at or past ldx (a multiple of 8) does nothing; rows past the caller's extent inside ldx read the zero
// pads or values the caller discards.
template <typename T, bool kVec>
__device__ __forceinline__ void rowsT_times_cols(T (&acc)[kRows], const T* X, int ldx, const T* Y, int np, int row0,
                                                 int group, int lane) {
  const int r0 = row0 + kRows * group;
  if (r0 >= ldx) return;
  if constexpr (kVec && std::is_same_v<T, float>) {
    for (int p = 0; p < np; ++p) {
      const float y = Y[p * kCols + lane];
      const float4 a = *reinterpret_cast<const float4*>(X + p * ldx + r0);
      const float4 b = *reinterpret_cast<const float4*>(X + p * ldx + r0 + 4);
      acc[0] += a.x * y;
      acc[1] += a.y * y;
      acc[2] += a.z * y;
      acc[3] += a.w * y;
      acc[4] += b.x * y;
      acc[5] += b.y * y;
      acc[6] += b.z * y;
      acc[7] += b.w * y;
    }
  } else {
    for (int p = 0; p < np; ++p) {
      const T y = Y[p * kCols + lane];
#pragma unroll
      for (int i = 0; i < kRows; ++i) acc[i] += X[p * ldx + r0 + i] * y;
    }
  }
}

template <typename T>
__device__ __forceinline__ void zero(T (&acc)[kRows]) {
#pragma unroll
  for (int i = 0; i < kRows; ++i) acc[i] = T(0);
}

// Forward: shared memory S (Kp x 32), X (Q x Kp: W, then Qi, then Ko), Am (Q x Qp), Vs (Qp x 32), dk (Kp).
template <typename T, bool kVec>
__global__ void __launch_bounds__(kThreads) delta_pass_forward_kernel(const Params<T> p) {
  extern __shared__ __align__(16) unsigned char delta_pass_smem[];
  const int Q = p.q, K = p.k, V = p.v, Kp = pad8(K), Qp = pad8(Q);
  T* S = reinterpret_cast<T*>(delta_pass_smem);
  T* X = S + Kp * kCols;
  T* Am = X + Q * Kp;
  T* Vs = Am + Q * Qp;
  T* dk = Vs + Qp * kCols;
  const int lane = threadIdx.x % kCols, group = threadIdx.x / kCols;
  const int64_t bh = blockIdx.x;
  const int j = blockIdx.y * kCols + lane;
  const bool col = j < V;
  for (int r = group; r < Kp; r += kGroups)
    S[r * kCols + lane] = (col && r < K && p.S0 != nullptr) ? p.S0[(bh * K + r) * V + j] : T(0);
  for (int r = Q + group; r < Qp; r += kGroups) Vs[r * kCols + lane] = T(0);  // pad rows, never written again
  for (int c = 0; c < p.nc; ++c) {
    const int64_t ch = bh * p.nc + c;
    __syncthreads();  // the previous chunk's state update (and the entry state) are complete; X is free
    stage(X, p.W + ch * Q * K, Q, K, Kp);
    if (p.Sentry != nullptr && col)
      for (int r = group; r < K; r += kGroups) p.Sentry[(ch * K + r) * V + j] = S[r * kCols + lane];
    __syncthreads();
    {  // Vn = U - W S
      T acc[kRows];
      zero(acc);
      rows_times_cols<T, kVec>(acc, X, Kp, S, Kp, Q, group, lane);
#pragma unroll
      for (int i = 0; i < kRows; ++i) {
        const int r = group + kGroups * i;
        if (r >= Q) continue;
        const T vn = (col ? p.U[(ch * Q + r) * V + j] : T(0)) - acc[i];
        Vs[r * kCols + lane] = col ? vn : T(0);
        if (p.Vn != nullptr && col) p.Vn[(ch * Q + r) * V + j] = vn;
      }
    }
    __syncthreads();  // Vs complete; X free
    stage(X, p.Qi + ch * Q * K, Q, K, Kp);
    stage(Am, p.A + ch * Q * Q, Q, Q, Qp);
    __syncthreads();
    {  // O = Qi S + A Vn
      T acc[kRows];
      zero(acc);
      rows_times_cols<T, kVec>(acc, X, Kp, S, Kp, Q, group, lane);
      rows_times_cols<T, kVec>(acc, Am, Qp, Vs, Qp, Q, group, lane);
#pragma unroll
      for (int i = 0; i < kRows; ++i) {
        const int r = group + kGroups * i;
        if (r < Q && col) p.O[(ch * Q + r) * V + j] = acc[i];
      }
    }
    __syncthreads();  // X free
    stage(X, p.Ko + ch * Q * K, Q, K, Kp);
    stage(dk, p.d + ch * K, 1, K, Kp);
    __syncthreads();
    // S <- diag(d) S + Ko^T Vn, in passes of 64 rows; a thread reads and writes only its own elements of S.
    for (int row0 = 0; row0 < K; row0 += kGroups * kRows) {
      T acc[kRows];
      zero(acc);
      rowsT_times_cols<T, kVec>(acc, X, Kp, Vs, Q, row0, group, lane);
#pragma unroll
      for (int i = 0; i < kRows; ++i) {
        const int r = row0 + kRows * group + i;
        if (r < K) S[r * kCols + lane] = dk[r] * S[r * kCols + lane] + acc[i];
      }
    }
  }
  __syncthreads();
  if (col)
    for (int r = group; r < K; r += kGroups) p.Sfin[(bh * K + r) * V + j] = S[r * kCols + lane];
}

// Backward: shared memory dS (Kp x 32), X1 (Q x Kp: Ko, then Qi), X2 (Q x Kp: W), Am (Q x Qp), dOs, dVs
// (Qp x 32), dk (Kp).
template <typename T, bool kVec>
__global__ void __launch_bounds__(kThreads) delta_pass_backward_kernel(const Params<T> p) {
  extern __shared__ __align__(16) unsigned char delta_pass_smem[];
  const int Q = p.q, K = p.k, V = p.v, Kp = pad8(K), Qp = pad8(Q);
  T* dS = reinterpret_cast<T*>(delta_pass_smem);
  T* X1 = dS + Kp * kCols;
  T* X2 = X1 + Q * Kp;
  T* Am = X2 + Q * Kp;
  T* dOs = Am + Q * Qp;
  T* dVs = dOs + Qp * kCols;
  T* dk = dVs + Qp * kCols;
  const int lane = threadIdx.x % kCols, group = threadIdx.x / kCols;
  const int64_t bh = blockIdx.x;
  const int j = blockIdx.y * kCols + lane;
  const bool col = j < V;
  for (int r = group; r < Kp; r += kGroups)
    dS[r * kCols + lane] = (col && r < K && p.dSfin != nullptr) ? p.dSfin[(bh * K + r) * V + j] : T(0);
  for (int r = Q + group; r < Qp; r += kGroups) dOs[r * kCols + lane] = dVs[r * kCols + lane] = T(0);
  for (int c = p.nc - 1; c >= 0; --c) {
    const int64_t ch = bh * p.nc + c;
    __syncthreads();  // the previous (later) chunk's update of dS is complete; the staging buffers are free
    if (col)
      for (int r = group; r < K; r += kGroups) p.dSx[(ch * K + r) * V + j] = dS[r * kCols + lane];
    stage(X1, p.Ko + ch * Q * K, Q, K, Kp);
    stage(X2, p.W + ch * Q * K, Q, K, Kp);
    stage(Am, p.A + ch * Q * Q, Q, Q, Qp);
    stage(dk, p.d + ch * K, 1, K, Kp);
    for (int r = group; r < Q; r += kGroups) dOs[r * kCols + lane] = col ? p.dO[(ch * Q + r) * V + j] : T(0);
    __syncthreads();
    {  // dVn = A^T dO + Ko dS; rows of the transposed product are 8 contiguous per group, of the other 8 strided
      T accT[kRows], acc[kRows];
      zero(accT);
      zero(acc);
      rowsT_times_cols<T, kVec>(accT, Am, Qp, dOs, Q, 0, group, lane);
      rows_times_cols<T, kVec>(acc, X1, Kp, dS, Kp, Q, group, lane);
      // Exchange through dVs: first the transposed part (rows kRows * group + i), then add the other.
#pragma unroll
      for (int i = 0; i < kRows; ++i) {
        const int r = kRows * group + i;
        if (r < Q) dVs[r * kCols + lane] = col ? accT[i] : T(0);
      }
      __syncthreads();
#pragma unroll
      for (int i = 0; i < kRows; ++i) {
        const int r = group + kGroups * i;
        if (r >= Q) continue;
        const T dv = col ? dVs[r * kCols + lane] + acc[i] : T(0);
        dVs[r * kCols + lane] = dv;
        if (col) p.dVn[(ch * Q + r) * V + j] = dv;
      }
    }
    __syncthreads();  // dVs complete, every read of dS and X1 done
    stage(X1, p.Qi + ch * Q * K, Q, K, Kp);
    __syncthreads();
    // dS <- diag(d) dS + Qi^T dO - W^T dVn (own elements only)
    for (int row0 = 0; row0 < K; row0 += kGroups * kRows) {
      T acc[kRows], neg[kRows];
      zero(acc);
      zero(neg);
      rowsT_times_cols<T, kVec>(acc, X1, Kp, dOs, Q, row0, group, lane);
      rowsT_times_cols<T, kVec>(neg, X2, Kp, dVs, Q, row0, group, lane);
#pragma unroll
      for (int i = 0; i < kRows; ++i) {
        const int r = row0 + kRows * group + i;
        if (r < K) dS[r * kCols + lane] = dk[r] * dS[r * kCols + lane] + (acc[i] - neg[i]);
      }
    }
  }
  __syncthreads();
  if (col)
    for (int r = group; r < K; r += kGroups) p.dS0[(bh * K + r) * V + j] = dS[r * kCols + lane];
}

}  // namespace ssmlab::ops::delta_pass_kernels
