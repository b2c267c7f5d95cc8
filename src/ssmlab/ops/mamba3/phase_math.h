// The per-element math of the Mamba-3 phase kernels (kernel_phase.cuh) and of their CPU twin (phase_twin.cpp),
// one definition for both (README.md beside this file, "Phase kernels"): the chunk length of the two-level scan,
// the pair layout, and cos/sin of an unreduced float64 phase in the compute dtype. No torch types.
#pragma once
#include <cmath>
#include <cstdint>
#include <type_traits>

#ifdef __CUDACC__
#define SSMLAB_M3_HD __host__ __device__ __forceinline__
#else
#define SSMLAB_M3_HD inline
#endif

namespace ssmlab::ops::mamba3_phase {

// 2 pi as the ATen paths use it (at::remainder(., 2 * M_PI)): the carried phase is reduced by this double.
inline constexpr double kTwoPi = 2 * M_PI;
// pi / 2 split in two doubles (Cody-Waite): hi = the double nearest pi/2, lo = pi/2 - hi to double precision.
inline constexpr double kPio2Hi = 1.5707963267948966;
inline constexpr double kPio2Lo = 6.123233995736766e-17;
inline constexpr double kTwoOverPi = 0.6366197723675814;
// A tile is one chunk of Tc steps of one (batch, head): Tc * S phases (float64) and their cos, sin (compute dtype)
// in shared memory, so Tc * S <= kTileEntries (48 KB for float64 compute, the static shared-memory limit).
inline constexpr int64_t kTileEntries = 2048;
// S above this is refused by the CUDA launchers (N <= 256 there); the CPU twin takes any S.
inline constexpr int64_t kMaxCudaS = 128;

// Steps per chunk for S phases: 64 up to S = 32, else as many as fit a tile (16 at S = 128); at least 1.
SSMLAB_M3_HD int64_t phase_chunk(int64_t s) {
  if (s <= 32) return 64;
  const int64_t tc = kTileEntries / s;
  return tc < 1 ? 1 : tc;
}

// The dims of pair i < N/2: adjacent (2i, 2i+1), halves (i, i + N/2). Pair i is rotated by phi_i iff i < S, else
// both members pass unchanged; for adjacent pairs and odd N the last dim N-1 passes unchanged too.
SSMLAB_M3_HD void pair_dims(int64_t i, int64_t n, bool halves, int64_t& a, int64_t& b) {
  if (halves) {
    a = i;
    b = i + n / 2;
  } else {
    a = 2 * i;
    b = 2 * i + 1;
  }
}

// phase mod 2pi into [0, 2pi), as at::remainder(phase, 2 * M_PI) (fmod is exact).
SSMLAB_M3_HD double wrap_2pi(double phase) {
  double r = ::fmod(phase, kTwoPi);
  if (r < 0) r += kTwoPi;
  return r;
}

// sin and cos of |r| <= pi/4 in float: Cephes' sinf / cosf minimax polynomials for that interval (about 1 ulp), the
// same code on host and device (no slow path, no local memory).
SSMLAB_M3_HD void sincos_quarter(float r, float& s, float& c) {
  const float z = r * r;
  s = ((-1.9515295891e-4f * z + 8.3321608736e-3f) * z - 1.6666654611e-1f) * z * r + r;
  c = ((2.443315711809948e-5f * z - 1.388731625493765e-3f) * z + 4.166664568298827e-2f) * z * z - 0.5f * z + 1.0f;
}

// cos and sin of an unreduced float64 phase, in C.
// double: the phase is first reduced as the ATen path does (wrap_2pi), then sincos in float64.
// float: Cody-Waite reduction in float64 to r = phase - j pi/2, |r| <= pi/4 (error ~ 1e-16 |j| 1e-17, nil for
// any phase a sum can reach), r rounded to float (abs error <= 2^-25 |r| < 3e-8), sincos_quarter of r (~1 ulp),
// then the quadrant j mod 4 exactly: |error| <~ 1.5e-7 against cos/sin of the exact phase,
// the order of rounding cos in float64 to float (6e-8), as the ATen path does.
template <typename C>
SSMLAB_M3_HD void phase_cos_sin(double phase, C& c, C& s) {
  if constexpr (std::is_same_v<C, double>) {
    const double r = wrap_2pi(phase);
#ifdef __CUDA_ARCH__
    ::sincos(r, &s, &c);
#else
    s = std::sin(r);
    c = std::cos(r);
#endif
  } else {
    const double j = ::rint(phase * kTwoOverPi);
    double r = ::fma(-j, kPio2Hi, phase);
    r = ::fma(-j, kPio2Lo, r);
    const float rf = static_cast<float>(r);
    float sf, cf;
    sincos_quarter(rf, sf, cf);
    const double jm = j - 4.0 * ::floor(j * 0.25);  // j mod 4 in {0, 1, 2, 3}, exact for |j| < 2^53
    const int quad = static_cast<int>(jm);
    // cos(r + q pi/2), sin(r + q pi/2)
    switch (quad) {
      case 0: c = cf, s = sf; break;
      case 1: c = -sf, s = cf; break;
      case 2: c = -cf, s = -sf; break;
      default: c = sf, s = -cf; break;
    }
  }
}

// One (q, k) pair's backward through the rotation, the key scale and q.k, for one rank: from the pair of q, k and
// the cotangents of Rot(q) (gq), of scale Rot(k) (gk) and of q.k (gqk), writes the pair's dq, dk and adds the
// pair's terms of d cos (dc), d sin (ds) and d scale (dscale). An unrotated pair (i >= S) has co = 1, si = 0 and
// adds nothing to dc, ds.
template <typename C>
SSMLAB_M3_HD void pair_backward(C qa, C qb, C ka, C kb, C gqa, C gqb, C gka, C gkb, C gqk, C scale, bool rotated, C co,
                                C si, C& dc, C& ds, C& dscale, C& dqa_out, C& dqb_out, C& dka_out, C& dkb_out) {
  const C hka = scale * gka, hkb = scale * gkb;  // the cotangent of Rot(k)
  C kra = ka, krb = kb, dqa = gqa, dqb = gqb, dka = hka, dkb = hkb;
  if (rotated) {
    kra = ka * co - kb * si;
    krb = ka * si + kb * co;
    dqa = gqa * co + gqb * si;
    dqb = gqb * co - gqa * si;
    dka = hka * co + hkb * si;
    dkb = hkb * co - hka * si;
    dc += gqa * qa + gqb * qb + hka * ka + hkb * kb;
    ds += gqb * qa - gqa * qb + hkb * ka - hka * kb;
  }
  dscale += gka * kra + gkb * krb;
  dqa_out = dqa + gqk * ka;
  dqb_out = dqb + gqk * kb;
  dka_out = dka + gqk * qa;
  dkb_out = dkb + gqk * qb;
}

}  // namespace ssmlab::ops::mamba3_phase
