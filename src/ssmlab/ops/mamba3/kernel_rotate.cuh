// The rotation-and-scale kernels of the Mamba-3 CUDA path (cuda.cu; README.md beside this file, "CUDA path"); no
// torch types. Per row (b, t, h) and rank r < R, with the pairs (a_i, b_i), i < S (adjacent: (2i, 2i+1); halves:
// (i, i + N/2)) turned by phi_i (c_i = cos phi_i, s_i = sin phi_i) and the other dims passed unchanged:
//   forward   q~_a = q_a c_i - q_b s_i,   q~_b = q_a s_i + q_b c_i;     kk = sc_t Rot(k)
//   backward  dq = Rot^T(dq~), dk = sc_t Rot^T(dkk) (Rot^T turns by -phi);
//             dc_i = sum_r (dq~_a q_a + dq~_b q_b) + sc_t (dkk_a k_a + dkk_b k_b)
//             ds_i = sum_r (dq~_b q_a - dq~_a q_b) + sc_t (dkk_b k_a - dkk_a k_b)
//             dsc_t = sum_{r, n} dkk_n Rot(k)_n
// One warp per row (b, t, h); its lanes stride over the pairs (each lane owns both members of its pairs, so no two
// lanes write one element), then over the unrotated dims; dsc_t is a warp reduction. Inputs of type In (the
// caller's q, k dtype), everything else in the compute type C (float or double). Memory-bound: one read of q, k
// (and of dq~, dkk) and one write of each result.
#pragma once
#include <cstdint>
#include <type_traits>

namespace ssmlab::ops::mamba3_cuda_kernels {

inline constexpr int kWarpsPerBlock = 8;
inline constexpr int kThreads = kWarpsPerBlock * 32;

template <typename In, typename C>
struct RotateParams {
  int64_t rows;          // B T H
  int64_t h, r, n, s;    // heads, ranks, state size, rotated pairs
  bool halves;           // pairs (i, i + N/2), else (2i, 2i+1)
  const In *q, *k;       // (B, T, R, H, N), contiguous
  const C *cosv, *sinv;  // (B, T, H, S)
  const C* scale;        // (B, T, H): sc_t
  C *qr, *kk;            // forward outputs (B, T, R, H, N)
  const C *dqr, *dkk;    // backward: cotangents (B, T, R, H, N), either may be null (zero)
  C *dq, *dk;            // (B, T, R, H, N)
  C *dcos, *dsin;        // (B, T, H, S)
  C* dscale;             // (B, T, H)
};

template <typename C, typename In>
__device__ __forceinline__ C load_as(const In* p, int64_t i) {
  if constexpr (std::is_same_v<In, float> || std::is_same_v<In, double>)
    return static_cast<C>(p[i]);
  else
    return static_cast<C>(static_cast<float>(p[i]));  // 16-bit types convert through float
}

// The members of pair i.
__device__ __forceinline__ void pair_of(int64_t i, int64_t n, bool halves, int64_t& a, int64_t& b) {
  if (halves) {
    a = i;
    b = i + n / 2;
  } else {
    a = 2 * i;
    b = 2 * i + 1;
  }
}

// The j-th unrotated dim, j < N - 2S: adjacent: 2S + j; halves: [S, N/2) then [N/2 + S, N).
__device__ __forceinline__ int64_t unrotated_dim(int64_t j, int64_t n, int64_t s, bool halves) {
  if (!halves) return 2 * s + j;
  const int64_t first = n / 2 - s;
  return j < first ? s + j : n / 2 + s + (j - first);
}

template <typename In, typename C>
__global__ void __launch_bounds__(kThreads) rotate_forward_kernel(RotateParams<In, C> p) {
  const int lane = threadIdx.x & 31;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + (threadIdx.x >> 5);
  if (row >= p.rows) return;
  const int64_t bt = row / p.h, hh = row % p.h, unrot = p.n - 2 * p.s;
  const C sc = p.scale[row];
  const C* cr = p.cosv + row * p.s;
  const C* sr = p.sinv + row * p.s;
  for (int64_t r = 0; r < p.r; ++r) {
    const int64_t base = ((bt * p.r + r) * p.h + hh) * p.n;
    for (int64_t i = lane; i < p.s; i += 32) {
      int64_t a, b;
      pair_of(i, p.n, p.halves, a, b);
      const C c = cr[i], sn = sr[i];
      const C qa = load_as<C>(p.q, base + a), qb = load_as<C>(p.q, base + b);
      const C ka = load_as<C>(p.k, base + a), kb = load_as<C>(p.k, base + b);
      p.qr[base + a] = qa * c - qb * sn;
      p.qr[base + b] = qa * sn + qb * c;
      p.kk[base + a] = sc * (ka * c - kb * sn);
      p.kk[base + b] = sc * (ka * sn + kb * c);
    }
    for (int64_t j = lane; j < unrot; j += 32) {
      const int64_t m = base + unrotated_dim(j, p.n, p.s, p.halves);
      p.qr[m] = load_as<C>(p.q, m);
      p.kk[m] = sc * load_as<C>(p.k, m);
    }
  }
}

template <typename In, typename C>
__global__ void __launch_bounds__(kThreads) rotate_backward_kernel(RotateParams<In, C> p) {
  const int lane = threadIdx.x & 31;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + (threadIdx.x >> 5);
  if (row >= p.rows) return;  // whole warps leave together (one row per warp): the reduction below is safe
  const int64_t bt = row / p.h, hh = row % p.h, unrot = p.n - 2 * p.s;
  const C sc = p.scale[row];
  const C* cr = p.cosv + row * p.s;
  const C* sr = p.sinv + row * p.s;
  auto grad = [](const C* g, int64_t i) { return g ? g[i] : C(0); };
  C dsc = 0;
  for (int64_t i = lane; i < p.s; i += 32) {
    int64_t a, b;
    pair_of(i, p.n, p.halves, a, b);
    const C c = cr[i], sn = sr[i];
    C dc = 0, dsn = 0;
    for (int64_t r = 0; r < p.r; ++r) {
      const int64_t base = ((bt * p.r + r) * p.h + hh) * p.n;
      const C qa = load_as<C>(p.q, base + a), qb = load_as<C>(p.q, base + b);
      const C ka = load_as<C>(p.k, base + a), kb = load_as<C>(p.k, base + b);
      const C gqa = grad(p.dqr, base + a), gqb = grad(p.dqr, base + b);
      const C gka = grad(p.dkk, base + a), gkb = grad(p.dkk, base + b);
      p.dq[base + a] = gqa * c + gqb * sn;
      p.dq[base + b] = gqb * c - gqa * sn;
      p.dk[base + a] = sc * (gka * c + gkb * sn);
      p.dk[base + b] = sc * (gkb * c - gka * sn);
      dc += gqa * qa + gqb * qb + sc * (gka * ka + gkb * kb);
      dsn += gqb * qa - gqa * qb + sc * (gkb * ka - gka * kb);
      dsc += gka * (ka * c - kb * sn) + gkb * (ka * sn + kb * c);
    }
    p.dcos[row * p.s + i] = dc;
    p.dsin[row * p.s + i] = dsn;
  }
  for (int64_t j = lane; j < unrot; j += 32) {
    const int64_t d = unrotated_dim(j, p.n, p.s, p.halves);
    for (int64_t r = 0; r < p.r; ++r) {
      const int64_t m = ((bt * p.r + r) * p.h + hh) * p.n + d;
      const C gq = grad(p.dqr, m), gk = grad(p.dkk, m);
      p.dq[m] = gq;
      p.dk[m] = sc * gk;
      dsc += gk * load_as<C>(p.k, m);
    }
  }
  for (int off = 16; off > 0; off >>= 1) dsc += __shfl_xor_sync(0xffffffffu, dsc, off);
  if (lane == 0) p.dscale[row] = dsc;
}

}  // namespace ssmlab::ops::mamba3_cuda_kernels
