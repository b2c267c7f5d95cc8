// CUDA kernels of the SSD scan (README.md beside this file); no torch types. The time-stepped recurrence
// on the per-step coefficients (a = log α, w), as cpu.cpp runs it:
//   S_t = α_t S_{t-1} + w_t x_t ⊗ B_t,   y_t = S_t C_t + D x_t
// One block of kWarps warps per (batch, head). Thread (warp wp, lane ln) owns the state elements of rows
// p = wp + kWarps·r (r < kRows) and columns n = ln + 32·j (j < NPL) in registers; y_t[p] is a warp sum.
// The forward saves the state every kChunk steps; the backward re-runs one chunk at a time from those into
// a global scratch (each thread rereads only what it wrote, so no synchronisation is needed for it) and
// walks the adjoint G_t = dL/dS_t = gy_t ⊗ C_t + α_{t+1} G_{t+1} backwards. Per-step sums over rows (dB,
// dC, da, dw) go through shared memory; dB and dC are written per head and summed over a group's heads by
// the host. Offsets are int64.
#pragma once
#include <cstdint>
#include <type_traits>

#include <cuda_bf16.h>
#include <cuda_fp16.h>

namespace ssmlab::ops::ssd_scan_cuda_kernels {

inline constexpr int kWarps = 8;
inline constexpr int kRows = 8;                 // rows per warp: P <= kWarps * kRows = 64
inline constexpr int kThreads = kWarps * 32;
inline constexpr int kMaxP = kWarps * kRows;
inline constexpr int kMaxN = 256;               // NPL <= 8
inline constexpr int64_t kChunk = 64;

template <typename T>
struct Params {
  int64_t b, l, h, p, n, g, hg, k;
  const T *x, *a, *w, *B, *C, *D, *S0;  // D, S0 may be null
  T *y, *fin, *starts;
  const T *dy, *dfin;                    // may be null (zero cotangent)
  T *dx, *da, *dw, *dBh, *dCh, *dDbh, *dS0, *scratch;  // dDbh, dS0 may be null; scratch (B·H, kChunk, P, N)
};

template <typename T>
__device__ __forceinline__ T warp_sum(T v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

__device__ __forceinline__ float exp_t(float v) { return __expf(v); }
__device__ __forceinline__ double exp_t(double v) { return exp(v); }

template <typename T, int NPL>
__global__ void __launch_bounds__(kThreads) ssd_forward_kernel(Params<T> q) {
  const int64_t bh = blockIdx.x, b = bh / q.h, h = bh % q.h, g = h / q.hg;
  const int wp = threadIdx.x / 32, ln = threadIdx.x % 32;
  const int64_t L = q.l, H = q.h, P = q.p, N = q.n, G = q.g, PN = P * N;
  T S[kRows][NPL];
#pragma unroll
  for (int r = 0; r < kRows; ++r)
#pragma unroll
    for (int j = 0; j < NPL; ++j) {
      const int64_t p = wp + kWarps * r, n = ln + 32 * j;
      S[r][j] = (q.S0 && p < P && n < N) ? q.S0[bh * PN + p * N + n] : T(0);
    }
  const T Dv = q.D ? q.D[h] : T(0);
  for (int64_t t = 0; t < L; ++t) {
    if (t % kChunk == 0) {
      T* dst = q.starts + (bh * q.k + t / kChunk) * PN;
#pragma unroll
      for (int r = 0; r < kRows; ++r)
#pragma unroll
        for (int j = 0; j < NPL; ++j) {
          const int64_t p = wp + kWarps * r, n = ln + 32 * j;
          if (p < P && n < N) dst[p * N + n] = S[r][j];
        }
    }
    const int64_t i = (b * L + t) * H + h;
    const T alpha = exp_t(q.a[i]), w = q.w[i];
    const T* Bt = q.B + ((b * L + t) * G + g) * N;
    const T* Ct = q.C + ((b * L + t) * G + g) * N;
    T Bv[NPL], Cv[NPL];
#pragma unroll
    for (int j = 0; j < NPL; ++j) {
      const int64_t n = ln + 32 * j;
      Bv[j] = n < N ? Bt[n] : T(0);
      Cv[j] = n < N ? Ct[n] : T(0);
    }
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
      const int64_t p = wp + kWarps * r;
      if (p >= P) break;  // warp-uniform
      const T xp = q.x[i * P + p], xw = w * xp;
      T acc = 0;
#pragma unroll
      for (int j = 0; j < NPL; ++j) {
        S[r][j] = alpha * S[r][j] + xw * Bv[j];
        acc += S[r][j] * Cv[j];
      }
      acc = warp_sum(acc);
      if (ln == 0) q.y[i * P + p] = acc + Dv * xp;
    }
  }
#pragma unroll
  for (int r = 0; r < kRows; ++r)
#pragma unroll
    for (int j = 0; j < NPL; ++j) {
      const int64_t p = wp + kWarps * r, n = ln + 32 * j;
      if (p < P && n < N) q.fin[bh * PN + p * N + n] = S[r][j];
    }
}

template <typename T, int NPL>
__global__ void __launch_bounds__(kThreads) ssd_backward_kernel(Params<T> q) {
  __shared__ T smB[kWarps][kMaxN];
  __shared__ T smC[kWarps][kMaxN];
  __shared__ T smS[kWarps][3];
  const int64_t bh = blockIdx.x, b = bh / q.h, h = bh % q.h, g = h / q.hg;
  const int wp = threadIdx.x / 32, ln = threadIdx.x % 32;
  const int64_t L = q.l, H = q.h, P = q.p, N = q.n, G = q.g, PN = P * N;
  T* scratch = q.scratch + bh * kChunk * PN;
  auto own = [&](int r, int j) { return (wp + kWarps * r) * N + ln + 32 * j; };
  auto valid = [&](int r, int j) { return wp + kWarps * r < P && ln + 32 * j < N; };
  T Gm[kRows][NPL];
#pragma unroll
  for (int r = 0; r < kRows; ++r)
#pragma unroll
    for (int j = 0; j < NPL; ++j) Gm[r][j] = (q.dfin && valid(r, j)) ? q.dfin[bh * PN + own(r, j)] : T(0);
  const T Dv = q.D ? q.D[h] : T(0);
  T dD = 0;
  for (int64_t k = q.k - 1; k >= 0; --k) {
    const int64_t t0 = k * kChunk, t1 = (t0 + kChunk < L) ? t0 + kChunk : L;
    const T* start = q.starts + (bh * q.k + k) * PN;
    // Re-run the chunk into scratch[t - t0] = S_t (own elements only).
    {
      T S[kRows][NPL];
#pragma unroll
      for (int r = 0; r < kRows; ++r)
#pragma unroll
        for (int j = 0; j < NPL; ++j) S[r][j] = valid(r, j) ? start[own(r, j)] : T(0);
      for (int64_t t = t0; t < t1; ++t) {
        const int64_t i = (b * L + t) * H + h;
        const T alpha = exp_t(q.a[i]), w = q.w[i];
        const T* Bt = q.B + ((b * L + t) * G + g) * N;
        T* dst = scratch + (t - t0) * PN;
#pragma unroll
        for (int r = 0; r < kRows; ++r) {
          const int64_t p = wp + kWarps * r;
          if (p >= P) break;
          const T xw = w * q.x[i * P + p];
#pragma unroll
          for (int j = 0; j < NPL; ++j) {
            const int64_t n = ln + 32 * j;
            if (n < N) {
              S[r][j] = alpha * S[r][j] + xw * Bt[n];
              dst[p * N + n] = S[r][j];
            }
          }
        }
      }
    }
    for (int64_t t = t1 - 1; t >= t0; --t) {
      const int64_t i = (b * L + t) * H + h;
      const T alpha = exp_t(q.a[i]), w = q.w[i];
      const T* Bt = q.B + ((b * L + t) * G + g) * N;
      const T* Ct = q.C + ((b * L + t) * G + g) * N;
      const T* St = scratch + (t - t0) * PN;
      const T* Sp = t > t0 ? St - PN : start;
      T Bv[NPL], Cv[NPL], dB[NPL], dC[NPL];
#pragma unroll
      for (int j = 0; j < NPL; ++j) {
        const int64_t n = ln + 32 * j;
        Bv[j] = n < N ? Bt[n] : T(0);
        Cv[j] = n < N ? Ct[n] : T(0);
        dB[j] = 0;
        dC[j] = 0;
      }
      T da = 0, dw = 0;
#pragma unroll
      for (int r = 0; r < kRows; ++r) {
        const int64_t p = wp + kWarps * r;
        if (p >= P) break;
        const T gyp = q.dy ? q.dy[i * P + p] : T(0), xp = q.x[i * P + p];
        T gb = 0;
#pragma unroll
        for (int j = 0; j < NPL; ++j) {
          const bool ok = ln + 32 * j < N;
          const T s = ok ? St[own(r, j)] : T(0), sp = ok ? Sp[own(r, j)] : T(0);
          Gm[r][j] += gyp * Cv[j];  // G = dL/dS_t
          dC[j] += gyp * s;
          gb += Gm[r][j] * Bv[j];
          dB[j] += Gm[r][j] * xp;
          da += Gm[r][j] * sp;
          Gm[r][j] *= alpha;        // the carry into S_{t-1}
        }
        gb = warp_sum(gb);
        if (ln == 0) {
          q.dx[i * P + p] = w * gb + Dv * gyp;
          dw += xp * gb;
          dD += gyp * xp;
        }
      }
      da = warp_sum(da);
#pragma unroll
      for (int j = 0; j < NPL; ++j) {
        smB[wp][ln + 32 * j] = dB[j];
        smC[wp][ln + 32 * j] = dC[j];
      }
      if (ln == 0) {
        smS[wp][0] = da;
        smS[wp][1] = dw;
      }
      __syncthreads();
      for (int64_t n = threadIdx.x; n < N; n += kThreads) {
        T sb = 0, sc = 0;
#pragma unroll
        for (int v = 0; v < kWarps; ++v) {
          sb += smB[v][n];
          sc += smC[v][n];
        }
        q.dBh[i * N + n] = w * sb;
        q.dCh[i * N + n] = sc;
      }
      if (threadIdx.x == 0) {
        T sa = 0, sw = 0;
#pragma unroll
        for (int v = 0; v < kWarps; ++v) {
          sa += smS[v][0];
          sw += smS[v][1];
        }
        q.da[i] = alpha * sa;
        q.dw[i] = sw;
      }
      __syncthreads();
    }
  }
#pragma unroll
  for (int r = 0; r < kRows; ++r)
#pragma unroll
    for (int j = 0; j < NPL; ++j)
      if (q.dS0 && valid(r, j)) q.dS0[bh * PN + own(r, j)] = Gm[r][j];
  if (q.dDbh) {
    if (ln == 0) smS[wp][2] = dD;
    __syncthreads();
    if (threadIdx.x == 0) {
      T s = 0;
#pragma unroll
      for (int v = 0; v < kWarps; ++v) s += smS[v][2];
      q.dDbh[bh] = s;
    }
  }
}

// One decode step (ssd_scan_update), the per-step coefficients fused in: one block per (batch, head), the
// same thread layout as the scan; the state is read and written once. x, dt, B, C and y are in the caller's
// dtype In (bf16 / fp16 / the compute dtype T), converted in registers: a 16-bit step launches this one kernel
// instead of five conversion kernels around it (a decode step is launch-bound). A, D and the per-head
// multipliers are in T.
template <typename T, typename In = T>
struct UpdateParams {
  int64_t b, h, p, n, g, hg;
  const In *x, *dt, *B, *C;                             // x (B, H, P), dt (B, H), B, C (B, G, N)
  const T* A;                                           // (H)
  const T *D, *dt_bias, *dt_mult, *decay_mult, *b_mult;  // (H) each, may be null
  bool softplus, clamp;
  T dt_min, dt_max;
  T* state;                                             // state (B, H, P, N) in place
  In* y;                                                // y (B, H, P)
};

template <typename T, typename In>
__device__ __forceinline__ T upd_load(In v) {
  if constexpr (std::is_same_v<In, __nv_bfloat16>)
    return static_cast<T>(__bfloat162float(v));
  else if constexpr (std::is_same_v<In, __half>)
    return static_cast<T>(__half2float(v));
  else
    return static_cast<T>(v);
}

template <typename In, typename T>
__device__ __forceinline__ In upd_store(T v) {
  if constexpr (std::is_same_v<In, __nv_bfloat16>)
    return __float2bfloat16(static_cast<float>(v));
  else if constexpr (std::is_same_v<In, __half>)
    return __float2half(static_cast<float>(v));
  else
    return static_cast<In>(v);
}

template <typename T, typename In, int NPL>
__global__ void __launch_bounds__(kThreads) ssd_update_kernel(UpdateParams<T, In> q) {
  const int64_t bh = blockIdx.x, b = bh / q.h, h = bh % q.h, g = h / q.hg;
  const int wp = threadIdx.x / 32, ln = threadIdx.x % 32;
  const int64_t P = q.p, N = q.n, PN = P * N;
  T d = upd_load<T>(q.dt[bh]) + (q.dt_bias ? q.dt_bias[h] : T(0));
  if (q.softplus) d = d > T(20) ? d : log1p(exp(d));  // torch's softplus threshold
  if (q.clamp) d = fmin(fmax(d, q.dt_min), q.dt_max);
  if (q.dt_mult) d *= q.dt_mult[h];
  T a = d * q.A[h];
  if (q.decay_mult) a += log(q.decay_mult[h]);
  const T alpha = exp(a), w = q.b_mult ? d * q.b_mult[h] : d;
  const T Dv = q.D ? q.D[h] : T(0);
  const In* Bt = q.B + (b * q.g + g) * N;
  const In* Ct = q.C + (b * q.g + g) * N;
  T* S = q.state + bh * PN;
  T Bv[NPL], Cv[NPL];
#pragma unroll
  for (int j = 0; j < NPL; ++j) {
    const int64_t n = ln + 32 * j;
    Bv[j] = n < N ? upd_load<T>(Bt[n]) : T(0);
    Cv[j] = n < N ? upd_load<T>(Ct[n]) : T(0);
  }
#pragma unroll
  for (int r = 0; r < kRows; ++r) {
    const int64_t p = wp + kWarps * r;
    if (p >= P) break;  // warp-uniform
    const T xp = upd_load<T>(q.x[bh * P + p]), xw = w * xp;
    T acc = 0;
#pragma unroll
    for (int j = 0; j < NPL; ++j) {
      const int64_t n = ln + 32 * j;
      if (n < N) {
        const T s = alpha * S[p * N + n] + xw * Bv[j];
        S[p * N + n] = s;
        acc += s * Cv[j];
      }
    }
    acc = warp_sum(acc);
    if (ln == 0) q.y[bh * P + p] = upd_store<In>(acc + Dv * xp);
  }
}

}  // namespace ssmlab::ops::ssd_scan_cuda_kernels
