// CUDA kernels of the delta rule's serial pass over chunks (chunk_pass.h has the contract and the formulas).
// One block per (batch x value head, block of 32 value columns); 256 threads = 32 lanes (one value column each)
// x 8 row groups. The block holds its K x 32 slice of the state (forward) or of its gradient (backward) in shared
// memory, in the compute dtype (fp32, or fp64), for the whole sequence, and walks the chunks in order (forward)
// or in reverse (backward). Per chunk it stages the chunk's Q x K operands in shared memory. The value columns
// never mix, so the blocks of one head are independent.
//
// Products: a thread computes rows r = group + 8 i of a 32-column tile, lane = column. Every row operand it reads
// from shared memory is the same address for the whole warp (a broadcast), every column operand is 32 consecutive
// words: no bank conflicts.
#pragma once
#include <cstdint>

namespace ssmlab::ops::delta_pass_kernels {

constexpr int kThreads = 256;
constexpr int kCols = 32;                     // value columns per block, one per lane
constexpr int kGroups = kThreads / kCols;     // 8 row groups (one per warp)
constexpr int kMaxQ = 64;                     // chunk rows: at most kMaxQ / kGroups = 8 per thread
constexpr int kRowsPerThread = kMaxQ / kGroups;
constexpr int kMaxK = 256;

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

// Copies n contiguous values from global to shared memory, all threads of the block.
template <typename T>
__device__ __forceinline__ void stage(T* dst, const T* __restrict__ src, int n) {
  for (int i = threadIdx.x; i < n; i += kThreads) dst[i] = src[i];
}

// acc[i] (row r = group + 8 i < q) += sum_p X[r * ldx + p] * Y[p * kCols + lane], p < np.
template <typename T>
__device__ __forceinline__ void rows_times_cols(T (&acc)[kRowsPerThread], const T* X, int ldx, const T* Y, int np,
                                                int q, int group, int lane) {
  for (int p = 0; p < np; ++p) {
    const T y = Y[p * kCols + lane];
#pragma unroll
    for (int i = 0; i < kRowsPerThread; ++i) {
      const int r = group + kGroups * i;
      if (r < q) acc[i] += X[r * ldx + p] * y;
    }
  }
}

// acc[i] (row r = group + 8 i < q) += sum_p X[p * ldx + r] * Y[p * kCols + lane], p < np (X transposed).
template <typename T>
__device__ __forceinline__ void rowsT_times_cols(T (&acc)[kRowsPerThread], const T* X, int ldx, const T* Y, int np,
                                                 int rows, int row0, int group, int lane) {
  for (int p = 0; p < np; ++p) {
    const T y = Y[p * kCols + lane];
#pragma unroll
    for (int i = 0; i < kRowsPerThread; ++i) {
      const int r = row0 + group + kGroups * i;
      if (r < rows) acc[i] += X[p * ldx + r] * y;
    }
  }
}

// Forward: shared memory S (K x 32), X (Q x K: W, then Qi, then Ko), Am (Q x Q), Vs (Q x 32), dk (K).
template <typename T>
__global__ void __launch_bounds__(kThreads) delta_pass_forward_kernel(const Params<T> p) {
  extern __shared__ __align__(16) unsigned char delta_pass_smem[];
  const int Q = p.q, K = p.k, V = p.v;
  T* S = reinterpret_cast<T*>(delta_pass_smem);
  T* X = S + K * kCols;
  T* Am = X + Q * K;
  T* Vs = Am + Q * Q;
  T* dk = Vs + Q * kCols;
  const int lane = threadIdx.x % kCols, group = threadIdx.x / kCols;
  const int64_t bh = blockIdx.x;
  const int j = blockIdx.y * kCols + lane;
  const bool col = j < V;
  for (int r = group; r < K; r += kGroups)
    S[r * kCols + lane] = (col && p.S0 != nullptr) ? p.S0[(bh * K + r) * V + j] : T(0);
  for (int c = 0; c < p.nc; ++c) {
    const int64_t ch = bh * p.nc + c;
    __syncthreads();  // the previous chunk's state update (and the entry state) are complete; X is free
    stage(X, p.W + ch * Q * K, Q * K);
    if (p.Sentry != nullptr && col)
      for (int r = group; r < K; r += kGroups) p.Sentry[(ch * K + r) * V + j] = S[r * kCols + lane];
    __syncthreads();
    {  // Vn = U - W S
      T acc[kRowsPerThread];
#pragma unroll
      for (int i = 0; i < kRowsPerThread; ++i) acc[i] = T(0);
      rows_times_cols(acc, X, K, S, K, Q, group, lane);
#pragma unroll
      for (int i = 0; i < kRowsPerThread; ++i) {
        const int r = group + kGroups * i;
        if (r >= Q) continue;
        const T vn = (col ? p.U[(ch * Q + r) * V + j] : T(0)) - acc[i];
        Vs[r * kCols + lane] = col ? vn : T(0);
        if (p.Vn != nullptr && col) p.Vn[(ch * Q + r) * V + j] = vn;
      }
    }
    __syncthreads();  // Vs complete; X free
    stage(X, p.Qi + ch * Q * K, Q * K);
    stage(Am, p.A + ch * Q * Q, Q * Q);
    __syncthreads();
    {  // O = Qi S + A Vn
      T acc[kRowsPerThread];
#pragma unroll
      for (int i = 0; i < kRowsPerThread; ++i) acc[i] = T(0);
      rows_times_cols(acc, X, K, S, K, Q, group, lane);
      rows_times_cols(acc, Am, Q, Vs, Q, Q, group, lane);
#pragma unroll
      for (int i = 0; i < kRowsPerThread; ++i) {
        const int r = group + kGroups * i;
        if (r < Q && col) p.O[(ch * Q + r) * V + j] = acc[i];
      }
    }
    __syncthreads();  // X free
    stage(X, p.Ko + ch * Q * K, Q * K);
    stage(dk, p.d + ch * K, K);
    __syncthreads();
    // S <- diag(d) S + Ko^T Vn: rows of S in passes of 8 per thread; a thread reads and writes only its own
    // elements of S.
    for (int row0 = 0; row0 < K; row0 += kGroups * kRowsPerThread) {
      T acc[kRowsPerThread];
#pragma unroll
      for (int i = 0; i < kRowsPerThread; ++i) acc[i] = T(0);
      rowsT_times_cols(acc, X, K, Vs, Q, K, row0, group, lane);
#pragma unroll
      for (int i = 0; i < kRowsPerThread; ++i) {
        const int r = row0 + group + kGroups * i;
        if (r < K) S[r * kCols + lane] = dk[r] * S[r * kCols + lane] + acc[i];
      }
    }
  }
  __syncthreads();
  if (col)
    for (int r = group; r < K; r += kGroups) p.Sfin[(bh * K + r) * V + j] = S[r * kCols + lane];
}

// Backward: shared memory dS (K x 32), X1 (Q x K: Ko, then Qi), X2 (Q x K: W), Am (Q x Q), dOs, dVs (Q x 32),
// dk (K).
template <typename T>
__global__ void __launch_bounds__(kThreads) delta_pass_backward_kernel(const Params<T> p) {
  extern __shared__ __align__(16) unsigned char delta_pass_smem[];
  const int Q = p.q, K = p.k, V = p.v;
  T* dS = reinterpret_cast<T*>(delta_pass_smem);
  T* X1 = dS + K * kCols;
  T* X2 = X1 + Q * K;
  T* Am = X2 + Q * K;
  T* dOs = Am + Q * Q;
  T* dVs = dOs + Q * kCols;
  T* dk = dVs + Q * kCols;
  const int lane = threadIdx.x % kCols, group = threadIdx.x / kCols;
  const int64_t bh = blockIdx.x;
  const int j = blockIdx.y * kCols + lane;
  const bool col = j < V;
  for (int r = group; r < K; r += kGroups)
    dS[r * kCols + lane] = (col && p.dSfin != nullptr) ? p.dSfin[(bh * K + r) * V + j] : T(0);
  for (int c = p.nc - 1; c >= 0; --c) {
    const int64_t ch = bh * p.nc + c;
    __syncthreads();  // the previous (later) chunk's update of dS is complete; the staging buffers are free
    if (col)
      for (int r = group; r < K; r += kGroups) p.dSx[(ch * K + r) * V + j] = dS[r * kCols + lane];
    stage(X1, p.Ko + ch * Q * K, Q * K);
    stage(X2, p.W + ch * Q * K, Q * K);
    stage(Am, p.A + ch * Q * Q, Q * Q);
    stage(dk, p.d + ch * K, K);
    for (int r = group; r < Q; r += kGroups) dOs[r * kCols + lane] = col ? p.dO[(ch * Q + r) * V + j] : T(0);
    __syncthreads();
    {  // dVn = A^T dO + Ko dS
      T acc[kRowsPerThread];
#pragma unroll
      for (int i = 0; i < kRowsPerThread; ++i) acc[i] = T(0);
      rowsT_times_cols(acc, Am, Q, dOs, Q, Q, 0, group, lane);
      rows_times_cols(acc, X1, K, dS, K, Q, group, lane);
#pragma unroll
      for (int i = 0; i < kRowsPerThread; ++i) {
        const int r = group + kGroups * i;
        if (r >= Q) continue;
        dVs[r * kCols + lane] = col ? acc[i] : T(0);
        if (col) p.dVn[(ch * Q + r) * V + j] = acc[i];
      }
    }
    __syncthreads();  // dVs complete, every read of dS and X1 done
    stage(X1, p.Qi + ch * Q * K, Q * K);
    __syncthreads();
    // dS <- diag(d) dS + Qi^T dO - W^T dVn (own elements only)
    for (int row0 = 0; row0 < K; row0 += kGroups * kRowsPerThread) {
      T acc[kRowsPerThread], neg[kRowsPerThread];
#pragma unroll
      for (int i = 0; i < kRowsPerThread; ++i) acc[i] = neg[i] = T(0);
      rowsT_times_cols(acc, X1, K, dOs, Q, K, row0, group, lane);
      rowsT_times_cols(neg, X2, K, dVs, Q, K, row0, group, lane);
#pragma unroll
      for (int i = 0; i < kRowsPerThread; ++i) {
        const int r = row0 + group + kGroups * i;
        if (r < K) dS[r * kCols + lane] = dk[r] * dS[r * kCols + lane] + (acc[i] - neg[i]);
      }
    }
  }
  __syncthreads();
  if (col)
    for (int r = group; r < K; r += kGroups) p.dS0[(bh * K + r) * V + j] = dS[r * kCols + lane];
}

}  // namespace ssmlab::ops::delta_pass_kernels
