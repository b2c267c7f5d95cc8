// Fused CPU Mamba-3 scan, forward and backward (cpu.h). A task is one (batch, head); it walks the sequence in
// segments of kMamba3Checkpoint tokens. Per segment it prepares the tokens (phases from a running fp64 sum of
// dt theta, cos/sin, the rotated q~ and s_t k~, the R x R correction matrix M_t = -rho_t (q_t k_t^T) + D I) into
// small local buffers, then advances its P x N state one block of rows at a time (a block holds <= 4096 values,
// so it stays in L1 for the segment's steps): per step one pass over each row (decay + the R rank-1 writes, the R
// read-out dots accumulated in lanes) and the correction. The backward recomputes each segment's states from its
// checkpoint, walks them in reverse with the state adjoint dS, then runs the preparation's derivative for the
// segment (rotation, key scale, correction, phase suffix sums) by hand (README.md, "Fused CPU kernel").
#include "ssmlab/ops/mamba3/cpu.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include <ATen/ATen.h>

#include "ssmlab/core/error.h"

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("no-trapping-math")
#endif
#include "ssmlab/ops/cpu_kernels.h"
#include "ssmlab/ops/poison.h"

namespace ssmlab::ops::mamba3_cpu {
namespace {

using cpu::dot;
using cpu::exp_vec;
using cpu::parallel_tasks;
using cpu::ptr_or_null;

constexpr int64_t kM3Ck = kMamba3Checkpoint;

OutputPoison m3_poison;

at::Tensor m3_out(at::IntArrayRef sizes, const at::TensorOptions& o) { return m3_poison.empty(sizes, o); }

template <typename T>
struct M3Ptrs {
  int64_t B, T_, R, H, N, P, S, nck, PB;
  bool halves;
  const T *q, *k, *x, *adt, *dt, *trap, *theta, *D;  // D may be null
  const T *phase0, *h0, *kp0, *xp0;                  // all null without an initial state
  T *y, *fin, *ck;
  const T *dy, *dfin;  // may be null
  T *dq, *dk, *dx, *dadt, *ddt, *dtrap, *dtheta, *dD, *dphase0, *dh0, *dkp0, *dxp0;  // dD: (B, H) partial sums
};

// cos and sin of a phase given in fp64. float: quadrant reduction in fp64, then Cephes' sinf/cosf polynomials on
// [-pi/4, pi/4] (about 1 ulp); double: libm.
SSMLAB_CPU_INLINE void m3_sincos(double phi, float& c, float& s) {
  const double j = std::nearbyint(phi * (2 / M_PI));
  const float r = static_cast<float>(phi - j * (M_PI / 2)), z = r * r;
  const float sr = ((-1.9515295891e-4f * z + 8.3321608736e-3f) * z - 1.6666654611e-1f) * z * r + r;
  const float cr =
      ((2.443315711809948e-5f * z - 1.388731625493765e-3f) * z + 4.166664568298827e-2f) * z * z - 0.5f * z + 1.0f;
  switch (static_cast<int64_t>(j) & 3) {  // phi = r + quadrant * pi/2
    case 0: c = cr, s = sr; break;
    case 1: c = -sr, s = cr; break;
    case 2: c = -cr, s = -sr; break;
    default: c = sr, s = -cr; break;
  }
}
SSMLAB_CPU_INLINE void m3_sincos(double phi, double& c, double& s) {
  c = std::cos(phi);
  s = std::sin(phi);
}

// out = scale * Rot(v): pairs (2m, 2m+1) (adjacent) or (m, m + N/2) (halves) turned by the angle with cos c[m],
// sin s[m], m < S; other dims copied.
template <typename T>
SSMLAB_CPU_INLINE void m3_rot(const T* __restrict v, const T* __restrict c, const T* __restrict s, int64_t S,
                              int64_t N, bool halves, T scale, T* __restrict out) {
  for (int64_t n = 0; n < N; ++n) out[n] = scale * v[n];
  const int64_t step = halves ? 1 : 2, off = halves ? N / 2 : 1;
  for (int64_t m = 0; m < S; ++m) {
    const int64_t i = m * step, j = i + off;
    const T u = v[i], w = v[j];
    out[i] = scale * (u * c[m] - w * s[m]);
    out[j] = scale * (u * s[m] + w * c[m]);
  }
}

// out = Rot^T(dv): the cotangent of v from the cotangent dv of Rot(v).
template <typename T>
SSMLAB_CPU_INLINE void m3_rot_t(const T* __restrict dv, const T* __restrict c, const T* __restrict s, int64_t S,
                                int64_t N, bool halves, T* __restrict out) {
  for (int64_t n = 0; n < N; ++n) out[n] = dv[n];
  const int64_t step = halves ? 1 : 2, off = halves ? N / 2 : 1;
  for (int64_t m = 0; m < S; ++m) {
    const int64_t i = m * step, j = i + off;
    const T du = dv[i], dw = dv[j];
    out[i] = du * c[m] + dw * s[m];
    out[j] = dw * c[m] - du * s[m];
  }
}

// dphi[m] += dvr[j] vr[i] - dvr[i] vr[j] for a rotated vector vr = Rot(v) and its cotangent dvr
// (d(u c - w s)/dphi = -(u s + w c), d(u s + w c)/dphi = u c - w s).
template <typename T>
SSMLAB_CPU_INLINE void m3_rot_dphi(const T* __restrict vr, const T* __restrict dvr, int64_t S, int64_t N,
                                   bool halves, T* __restrict dphi) {
  const int64_t step = halves ? 1 : 2, off = halves ? N / 2 : 1;
  for (int64_t m = 0; m < S; ++m) {
    const int64_t i = m * step, j = i + off;
    dphi[m] += dvr[j] * vr[i] - dvr[i] * vr[j];
  }
}

// Per-task scratch for one segment of <= kM3Ck tokens: cos/sin (C S), q~, k~, s k~ (C R N; k~ only for the
// backward), M (C R R), the decay a (C).
template <typename T>
struct M3Seg {
  std::vector<T> cs, sn, qr, kt, kk, M, a;
  M3Seg(int64_t S, int64_t R, int64_t N)
      : cs(kM3Ck * S), sn(kM3Ck * S), qr(kM3Ck * R * N), kt(kM3Ck * R * N), kk(kM3Ck * R * N), M(kM3Ck * R * R),
        a(kM3Ck) {}
};

// The preparation of tokens t0 .. t0 + m - 1 of task (b, h) from their phases phi (m S, fp64), lambda and
// look = (1 - lambda) dt of the task's T tokens.
template <typename T>
SSMLAB_CPU_INLINE void m3_prepare(const M3Ptrs<T>& p, int64_t b, int64_t h, int64_t t0, int64_t m,
                                  const double* phi, const T* lam, const T* look, bool with_kt, M3Seg<T>& g) {
  const int64_t R = p.R, N = p.N, S = p.S, HN = p.H * N;
  for (int64_t j = 0; j < m; ++j) {
    const int64_t t = t0 + j, bt = b * p.T_ + t, is = bt * p.H + h;
    g.a[j] = exp_vec(p.adt[is]);
    T* c = g.cs.data() + j * S;
    T* s = g.sn.data() + j * S;
    for (int64_t i = 0; i < S; ++i) m3_sincos(phi[j * S + i], c[i], s[i]);
    const T rho = t + 1 < p.T_ ? look[t + 1] : T(0);
    const T sig = lam[t] * p.dt[is] + rho;
    for (int64_t r = 0; r < R; ++r) {
      const int64_t iq = (bt * R + r) * HN + h * N, il = (j * R + r) * N;
      m3_rot(p.q + iq, c, s, S, N, p.halves, T(1), g.qr.data() + il);
      if (with_kt) {
        m3_rot(p.k + iq, c, s, S, N, p.halves, T(1), g.kt.data() + il);
        for (int64_t n = 0; n < N; ++n) g.kk[il + n] = sig * g.kt[il + n];
      } else {
        m3_rot(p.k + iq, c, s, S, N, p.halves, sig, g.kk.data() + il);
      }
    }
    for (int64_t r = 0; r < R; ++r)
      for (int64_t bb = 0; bb < R; ++bb) {
        const T gram = dot(p.q + (bt * R + r) * HN + h * N, p.k + (bt * R + bb) * HN + h * N, N);
        g.M[(j * R + r) * R + bb] = -rho * gram + (r == bb && p.D ? p.D[h] : T(0));
      }
  }
}

// sum_b M[r, b] x_b[i] (the diagonal correction and D of rank r's output at state row i).
template <typename T>
SSMLAB_CPU_INLINE T m3_corr(const T* __restrict M, const T* __restrict xs, int64_t HP, int64_t R, int64_t r,
                            int64_t i) {
  T c = T(0);
  for (int64_t bb = 0; bb < R; ++bb) c += M[r * R + bb] * xs[bb * HP + i];
  return c;
}

// One step on the block S (n rows x N): S = a S + sum_r x_r[row] kk_r; y_r[row] = S[row] . qr_r + corr (ys may be
// null: no read-out). q, k: R rows of N; xs, ys: x, y of (b, t, ., h) + row 0 of the block, ranks at stride HP.
template <typename T>
SSMLAB_CPU_INLINE void m3_rows(T* __restrict S, int64_t n, int64_t N, int64_t R, T a, const T* __restrict q,
                               const T* __restrict k, const T* __restrict xs, int64_t HP, const T* __restrict M,
                               T* __restrict ys) {
  for (int64_t i = 0; i < n; ++i) {
    T* __restrict row = S + i * N;
    {
      const T xv = xs[i];
      for (int64_t j = 0; j < N; ++j) row[j] = a * row[j] + xv * k[j];
    }
    for (int64_t r = 1; r < R; ++r) {
      const T xv = xs[r * HP + i];
      const T* __restrict kr = k + r * N;
      for (int64_t j = 0; j < N; ++j) row[j] += xv * kr[j];
    }
    if (ys)
      for (int64_t r = 0; r < R; ++r) ys[r * HP + i] = dot(row, q + r * N, N) + m3_corr(M, xs, HP, R, r, i);
  }
}

// The same step with R a compile-time constant: one pass per row that updates each value and accumulates the R
// read-out dots in 32-byte lanes (vectorises without reassociation flags).
template <typename T, int RR>
SSMLAB_CPU_INLINE void m3_rows_r(T* __restrict S, int64_t n, int64_t N, T a, const T* __restrict q,
                                 const T* __restrict k, const T* __restrict xs, int64_t HP, const T* __restrict M,
                                 T* __restrict ys) {
  constexpr int W = 32 / sizeof(T);
  for (int64_t i = 0; i < n; ++i) {
    T* __restrict row = S + i * N;
    T xv[RR];
    for (int r = 0; r < RR; ++r) xv[r] = xs[r * HP + i];
    T lane[RR][W] = {};
    int64_t j = 0;
    for (; j + W <= N; j += W)
      for (int w = 0; w < W; ++w) {
        T v = a * row[j + w];
        for (int r = 0; r < RR; ++r) v += xv[r] * k[r * N + j + w];
        row[j + w] = v;
        for (int r = 0; r < RR; ++r) lane[r][w] += v * q[r * N + j + w];
      }
    T tail[RR] = {};
    for (; j < N; ++j) {
      T v = a * row[j];
      for (int r = 0; r < RR; ++r) v += xv[r] * k[r * N + j];
      row[j] = v;
      for (int r = 0; r < RR; ++r) tail[r] += v * q[r * N + j];
    }
    if (ys)
      for (int r = 0; r < RR; ++r) {
        for (int w = W / 2; w >= 1; w /= 2)
          for (int u = 0; u < w; ++u) lane[r][u] += lane[r][u + w];
        ys[r * HP + i] = lane[r][0] + tail[r] + m3_corr(M, xs, HP, RR, r, i);
      }
  }
}

template <typename T>
SSMLAB_CPU_INLINE void m3_rows_any(T* S, int64_t n, int64_t N, int64_t R, T a, const T* q, const T* k, const T* xs,
                                   int64_t HP, const T* M, T* ys) {
  switch (R) {
    case 1: m3_rows_r<T, 1>(S, n, N, a, q, k, xs, HP, M, ys); return;
    case 2: m3_rows_r<T, 2>(S, n, N, a, q, k, xs, HP, M, ys); return;
    case 4: m3_rows_r<T, 4>(S, n, N, a, q, k, xs, HP, M, ys); return;
    default: m3_rows(S, n, N, R, a, q, k, xs, HP, M, ys);
  }
}

// lambda_t = sigmoid(trap_t) and look_t = (1 - lambda_t) dt_t of task (b, h).
template <typename T>
SSMLAB_CPU_INLINE void m3_scalars(const M3Ptrs<T>& p, int64_t b, int64_t h, T* lam, T* look) {
  for (int64_t t = 0; t < p.T_; ++t) {
    const int64_t is = (b * p.T_ + t) * p.H + h;
    lam[t] = cpu::sigmoid(p.trap[is]);
    look[t] = (T(1) - lam[t]) * p.dt[is];
  }
}

// phi[j] = phase0 + sum_{t <= t0 + j} dt_t theta_t for j < m, continuing the running sum cum (S, fp64).
template <typename T>
SSMLAB_CPU_INLINE void m3_phases(const M3Ptrs<T>& p, int64_t b, int64_t h, int64_t t0, int64_t m, double* cum,
                                 double* phi) {
  const int64_t S = p.S, bh = b * p.H + h;
  for (int64_t j = 0; j < m; ++j) {
    const int64_t is = (b * p.T_ + t0 + j) * p.H + h;
    const double d = static_cast<double>(p.dt[is]);
    const T* th = p.theta + is * S;
    for (int64_t i = 0; i < S; ++i) {
      cum[i] += d * static_cast<double>(th[i]);
      phi[j * S + i] = (p.phase0 ? static_cast<double>(p.phase0[bh * S + i]) : 0.0) + cum[i];
    }
  }
}

template <typename T>
SSMLAB_CPU_INLINE void m3_forward_range(const M3Ptrs<T>& p, int64_t lo, int64_t hi) {
  const int64_t T_ = p.T_, R = p.R, H = p.H, N = p.N, P = p.P, S = p.S, HP = H * P, PN = P * N;
  std::vector<T> st(PN), lam(T_), look(T_);
  std::vector<double> cum(S), phi(kM3Ck * S);
  M3Seg<T> g(S, R, N);
  for (int64_t bh = lo; bh < hi; ++bh) {
    const int64_t b = bh / H, h = bh % H;
    m3_scalars(p, b, h, lam.data(), look.data());
    // hbar_{-1} = h0 + look_0 sum_r x_prev_r k_prev_r^T.
    if (p.h0) {
      std::memcpy(st.data(), p.h0 + bh * PN, sizeof(T) * PN);
      for (int64_t r = 0; r < R; ++r) {
        const T* xp = p.xp0 + ((b * R + r) * H + h) * P;
        const T* kp = p.kp0 + ((b * R + r) * H + h) * N;
        for (int64_t i = 0; i < P; ++i) {
          const T c = look[0] * xp[i];
          for (int64_t n = 0; n < N; ++n) st[i * N + n] += c * kp[n];
        }
      }
    } else {
      std::fill(st.begin(), st.end(), T(0));
    }
    std::fill(cum.begin(), cum.end(), 0.0);
    for (int64_t c = 0; c < p.nck; ++c) {
      const int64_t t0 = c * kM3Ck, m = std::min(kM3Ck, T_ - t0);
      m3_phases(p, b, h, t0, m, cum.data(), phi.data());
      m3_prepare(p, b, h, t0, m, phi.data(), lam.data(), look.data(), /*with_kt=*/false, g);
      std::memcpy(p.ck + (bh * p.nck + c) * PN, st.data(), sizeof(T) * PN);
      for (int64_t p0 = 0; p0 < P; p0 += p.PB) {
        const int64_t n = std::min(p.PB, P - p0);
        for (int64_t j = 0; j < m; ++j) {
          const int64_t ix = (b * T_ + t0 + j) * R * HP + h * P + p0;
          m3_rows_any(st.data() + p0 * N, n, N, R, g.a[j], g.qr.data() + j * R * N, g.kk.data() + j * R * N,
                      p.x + ix, HP, g.M.data() + j * R * R, p.y + ix);
        }
      }
    }
    std::memcpy(p.fin + bh * PN, st.data(), sizeof(T) * PN);
  }
}

// Backward of task (b, h). Per segment, in reverse: the states recomputed from the checkpoint, block by block,
// then the reverse walk with dS = dL/dhbar_t (per row i of a block, g_r = dy_r[i]):
//   dS[i] += sum_r g_r qr_r;  dqr_r += g_r hbar_t[i];  dM[r, b] += g_r x_b[i];
//   dx_r[i] = dS[i] . kk_r + sum_r' M[r', r] g_r';  dkk_r += x_r[i] dS[i];  da += dS[i] . hbar_{t-1}[i];  dS[i] *= a
// then per token the preparation's derivative: dadt = a da; dG = -rho dM, drho = -<G, dM>, dD += tr dM;
// dsig = sum_r dkk_r . k~_r; dk~ = sig dkk; dphi from q~ and k~ (m3_rot_dphi); dq = Rot^T dqr + dG k,
// dk = Rot^T dk~ + dG^T q; and the phase's suffix sum Gs = sum_{t' >= t} dphi_t': dtheta_t = dt_t Gs,
// ddt_t += theta_t . Gs. After all segments: the initial state's terms and the scalar chain
//   look_t = (1 - lambda_t) dt_t feeds sig_{t-1} and rho_{t-1};  sig_t = lambda_t dt_t + look_{t+1}.
template <typename T>
SSMLAB_CPU_INLINE void m3_backward_range(const M3Ptrs<T>& p, int64_t lo, int64_t hi) {
  const int64_t T_ = p.T_, R = p.R, H = p.H, N = p.N, P = p.P, S = p.S, HN = H * N, HP = H * P, PN = P * N;
  const int64_t KN = p.PB * N, RN = R * N;
  std::vector<T> dS(PN), buf((kM3Ck + 1) * KN), lam(T_), look(T_), dsig(T_), drho(T_), ddtp(T_);
  std::vector<T> dqr(kM3Ck * RN), dkk(kM3Ck * RN), da(kM3Ck), dM(kM3Ck * R * R), dG(R * R), dphi(S), tmp(N);
  std::vector<double> phis(T_ * S), cum(S), gsuf(S);
  M3Seg<T> g(S, R, N);
  for (int64_t bh = lo; bh < hi; ++bh) {
    const int64_t b = bh / H, h = bh % H;
    m3_scalars(p, b, h, lam.data(), look.data());
    std::fill(cum.begin(), cum.end(), 0.0);
    m3_phases(p, b, h, 0, T_, cum.data(), phis.data());
    if (p.dfin)
      std::memcpy(dS.data(), p.dfin + bh * PN, sizeof(T) * PN);
    else
      std::fill(dS.begin(), dS.end(), T(0));
    std::fill(gsuf.begin(), gsuf.end(), 0.0);
    T dD = T(0);
    for (int64_t c = p.nck - 1; c >= 0; --c) {
      const int64_t t0 = c * kM3Ck, m = std::min(kM3Ck, T_ - t0);
      m3_prepare(p, b, h, t0, m, phis.data() + t0 * S, lam.data(), look.data(), /*with_kt=*/true, g);
      std::fill(dqr.begin(), dqr.begin() + m * RN, T(0));
      std::fill(dkk.begin(), dkk.begin() + m * RN, T(0));
      std::fill(da.begin(), da.begin() + m, T(0));
      std::fill(dM.begin(), dM.begin() + m * R * R, T(0));
      for (int64_t p0 = 0; p0 < P; p0 += p.PB) {
        const int64_t n = std::min(p.PB, P - p0), kn = n * N;
        std::memcpy(buf.data(), p.ck + (bh * p.nck + c) * PN + p0 * N, sizeof(T) * kn);
        for (int64_t j = 0; j < m; ++j) {
          const int64_t ix = (b * T_ + t0 + j) * R * HP + h * P + p0;
          T* Sn = buf.data() + (j + 1) * kn;
          std::memcpy(Sn, buf.data() + j * kn, sizeof(T) * kn);
          m3_rows_any(Sn, n, N, R, g.a[j], g.qr.data() + j * RN, g.kk.data() + j * RN, p.x + ix, HP,
                      static_cast<const T*>(nullptr), static_cast<T*>(nullptr));
        }
        for (int64_t j = m - 1; j >= 0; --j) {
          const int64_t ix = (b * T_ + t0 + j) * R * HP + h * P + p0;
          const T a = g.a[j];
          const T* __restrict St = buf.data() + (j + 1) * kn;
          const T* __restrict Sp = buf.data() + j * kn;
          const T* __restrict q = g.qr.data() + j * RN;
          const T* __restrict k = g.kk.data() + j * RN;
          const T* __restrict Mj = g.M.data() + j * R * R;
          const T* __restrict xs = p.x + ix;
          T* __restrict dMj = dM.data() + j * R * R;
          T* __restrict dq = dqr.data() + j * RN;
          T* __restrict dk = dkk.data() + j * RN;
          T* __restrict dxs = p.dx + ix;
          T dasum = T(0);
          for (int64_t i = 0; i < n; ++i) {
            T* __restrict drow = dS.data() + (p0 + i) * N;
            const T* __restrict srow = St + i * N;
            if (p.dy) {
              const T* __restrict dys = p.dy + ix;
              for (int64_t r = 0; r < R; ++r) {
                const T gr = dys[r * HP + i];
                const T* __restrict qr = q + r * N;
                T* __restrict dqv = dq + r * N;
                for (int64_t jj = 0; jj < N; ++jj) {
                  drow[jj] += gr * qr[jj];
                  dqv[jj] += gr * srow[jj];
                }
                for (int64_t bb = 0; bb < R; ++bb) dMj[r * R + bb] += gr * xs[bb * HP + i];
              }
            }
            for (int64_t r = 0; r < R; ++r) {
              const T* __restrict kr = k + r * N;
              T* __restrict dkr = dk + r * N;
              const T xv = xs[r * HP + i];
              T dxv = dot(drow, kr, N);
              if (p.dy)
                for (int64_t r2 = 0; r2 < R; ++r2) dxv += Mj[r2 * R + r] * p.dy[ix + r2 * HP + i];
              dxs[r * HP + i] = dxv;
              for (int64_t jj = 0; jj < N; ++jj) dkr[jj] += xv * drow[jj];
            }
            dasum += dot(drow, Sp + i * N, N);
            for (int64_t jj = 0; jj < N; ++jj) drow[jj] *= a;
          }
          da[j] += dasum;
        }
      }
      // The preparation's derivative, tokens in reverse (for the phase's suffix sum).
      for (int64_t j = m - 1; j >= 0; --j) {
        const int64_t t = t0 + j, bt = b * T_ + t, is = bt * H + h;
        const T* cs = g.cs.data() + j * S;
        const T* sn = g.sn.data() + j * S;
        p.dadt[is] = g.a[j] * da[j];
        const T rho = t + 1 < T_ ? look[t + 1] : T(0);
        const T sig = lam[t] * p.dt[is] + rho;
        T dr = T(0);
        for (int64_t r = 0; r < R; ++r)
          for (int64_t bb = 0; bb < R; ++bb) {
            const T dm = dM[(j * R + r) * R + bb];
            dr -= dm * dot(p.q + (bt * R + r) * HN + h * N, p.k + (bt * R + bb) * HN + h * N, N);
            if (r == bb) dD += dm;
            dG[r * R + bb] = -rho * dm;
          }
        drho[t] = dr;
        std::fill(dphi.begin(), dphi.end(), T(0));
        T ds = T(0);
        for (int64_t r = 0; r < R; ++r) {
          const int64_t il = (j * R + r) * N, iq = (bt * R + r) * HN + h * N;
          const T* dkv = dkk.data() + il;
          ds += dot(dkv, g.kt.data() + il, N);
          for (int64_t n = 0; n < N; ++n) tmp[n] = sig * dkv[n];
          m3_rot_dphi(g.qr.data() + il, dqr.data() + il, S, N, p.halves, dphi.data());
          m3_rot_dphi(g.kt.data() + il, tmp.data(), S, N, p.halves, dphi.data());
          m3_rot_t(dqr.data() + il, cs, sn, S, N, p.halves, p.dq + iq);
          m3_rot_t(tmp.data(), cs, sn, S, N, p.halves, p.dk + iq);
        }
        for (int64_t r = 0; r < R; ++r)
          for (int64_t bb = 0; bb < R; ++bb) {
            const T w = dG[r * R + bb];
            T* dqv = p.dq + (bt * R + r) * HN + h * N;
            T* dkv = p.dk + (bt * R + bb) * HN + h * N;
            const T* qv = p.q + (bt * R + r) * HN + h * N;
            const T* kv = p.k + (bt * R + bb) * HN + h * N;
            for (int64_t n = 0; n < N; ++n) {
              dqv[n] += w * kv[n];
              dkv[n] += w * qv[n];
            }
          }
        dsig[t] = ds;
        const T* th = p.theta + is * S;
        double dd = 0.0;
        for (int64_t i = 0; i < S; ++i) {
          gsuf[i] += static_cast<double>(dphi[i]);
          p.dtheta[is * S + i] = static_cast<T>(static_cast<double>(p.dt[is]) * gsuf[i]);
          dd += static_cast<double>(th[i]) * gsuf[i];
        }
        ddtp[t] = static_cast<T>(dd);
      }
    }
    // dS is now dL/dhbar_{-1}: hbar_{-1} = h0 + look_0 sum_r x_prev_r k_prev_r^T.
    T dlook0 = T(0);
    if (p.h0) {
      std::memcpy(p.dh0 + bh * PN, dS.data(), sizeof(T) * PN);
      for (int64_t r = 0; r < R; ++r) {
        const int64_t ixp = ((b * R + r) * H + h) * P, ikp = ((b * R + r) * H + h) * N;
        const T* xp = p.xp0 + ixp;
        const T* kp = p.kp0 + ikp;
        T* dkp = p.dkp0 + ikp;
        std::fill(dkp, dkp + N, T(0));
        for (int64_t i = 0; i < P; ++i) {
          const T* drow = dS.data() + i * N;
          const T e = dot(drow, kp, N);
          p.dxp0[ixp + i] = look[0] * e;
          dlook0 += xp[i] * e;
          const T c = look[0] * xp[i];
          for (int64_t n = 0; n < N; ++n) dkp[n] += c * drow[n];
        }
      }
      for (int64_t i = 0; i < S; ++i) p.dphase0[bh * S + i] = static_cast<T>(gsuf[i]);
    }
    for (int64_t t = 0; t < T_; ++t) {
      const int64_t is = (b * T_ + t) * H + h;
      const T dlook = t >= 1 ? dsig[t - 1] + drho[t - 1] : dlook0;
      const T l = lam[t], dtv = p.dt[is];
      p.ddt[is] = dsig[t] * l + dlook * (T(1) - l) + ddtp[t];
      p.dtrap[is] = (dsig[t] - dlook) * dtv * l * (T(1) - l);
    }
    if (p.dD) p.dD[bh] = dD;
  }
}

SSMLAB_CPU_CLONES void m3_forward_f32(const M3Ptrs<float>& p, int64_t lo, int64_t hi) { m3_forward_range(p, lo, hi); }
SSMLAB_CPU_CLONES void m3_forward_f64(const M3Ptrs<double>& p, int64_t lo, int64_t hi) { m3_forward_range(p, lo, hi); }
SSMLAB_CPU_CLONES void m3_backward_f32(const M3Ptrs<float>& p, int64_t lo, int64_t hi) {
  m3_backward_range(p, lo, hi);
}
SSMLAB_CPU_CLONES void m3_backward_f64(const M3Ptrs<double>& p, int64_t lo, int64_t hi) {
  m3_backward_range(p, lo, hi);
}
void m3_run_forward(const M3Ptrs<float>& p, int64_t lo, int64_t hi) { m3_forward_f32(p, lo, hi); }
void m3_run_forward(const M3Ptrs<double>& p, int64_t lo, int64_t hi) { m3_forward_f64(p, lo, hi); }
void m3_run_backward(const M3Ptrs<float>& p, int64_t lo, int64_t hi) { m3_backward_f32(p, lo, hi); }
void m3_run_backward(const M3Ptrs<double>& p, int64_t lo, int64_t hi) { m3_backward_f64(p, lo, hi); }

template <typename T>
M3Ptrs<T> m3_inputs(const Inputs& in) {
  M3Ptrs<T> p{};
  p.B = in.q.size(0);
  p.T_ = in.q.size(1);
  p.R = in.q.size(2);
  p.H = in.q.size(3);
  p.N = in.q.size(4);
  p.P = in.x.size(4);
  p.S = in.theta.size(3);
  p.nck = (p.T_ + kM3Ck - 1) / kM3Ck;
  // Blocks of state rows with at most 4096 values (16 KiB in fp32), so a block stays in L1.
  p.PB = std::clamp<int64_t>(4096 / std::max<int64_t>(p.N, 1), 1, std::max<int64_t>(p.P, 1));
  p.halves = in.halves;
  p.q = in.q.const_data_ptr<T>();
  p.k = in.k.const_data_ptr<T>();
  p.x = in.x.const_data_ptr<T>();
  p.adt = in.adt.const_data_ptr<T>();
  p.dt = in.dt.const_data_ptr<T>();
  p.trap = in.trap.const_data_ptr<T>();
  p.theta = in.theta.const_data_ptr<T>();
  p.D = ptr_or_null<T>(in.D);
  p.phase0 = ptr_or_null<T>(in.phase0);
  p.h0 = ptr_or_null<T>(in.h0);
  p.kp0 = ptr_or_null<T>(in.k_prev0);
  p.xp0 = ptr_or_null<T>(in.x_prev0);
  return p;
}

void m3_check(const Inputs& in) {
  const at::Tensor& q = in.q;
  SSMLAB_CHECK(q.defined() && q.dim() == 5 && (q.scalar_type() == at::kFloat || q.scalar_type() == at::kDouble),
               "mamba3_cpu: q must be (B, T, R, H, N) in float32 or float64; got ", tensor_str(q));
  for (const at::Tensor* t : {&in.q, &in.k, &in.x, &in.adt, &in.dt, &in.trap, &in.theta})
    SSMLAB_CHECK(t->defined() && t->is_cpu() && t->is_contiguous() && t->scalar_type() == q.scalar_type(),
                 "mamba3_cpu: inputs must be contiguous CPU tensors of one dtype; got ", tensor_str(*t));
  for (const at::Tensor* t : {&in.D, &in.phase0, &in.h0, &in.k_prev0, &in.x_prev0})
    if (t->defined())
      SSMLAB_CHECK(t->is_cpu() && t->is_contiguous() && t->scalar_type() == q.scalar_type(),
                   "mamba3_cpu: D and the initial state must be contiguous in the compute dtype; got ",
                   tensor_str(*t));
  const bool any = in.phase0.defined() || in.h0.defined() || in.k_prev0.defined() || in.x_prev0.defined();
  const bool all = in.phase0.defined() && in.h0.defined() && in.k_prev0.defined() && in.x_prev0.defined();
  SSMLAB_CHECK(any == all, "mamba3_cpu: the initial state needs all of phase0, h0, k_prev0 and x_prev0");
}

}  // namespace

void set_poison_outputs(bool on) { m3_poison.set(on); }

Forward forward(const Inputs& in) {
  m3_check(in);
  const int64_t B = in.q.size(0), T_ = in.q.size(1), H = in.q.size(3), N = in.q.size(4), P = in.x.size(4);
  const auto o = in.x.options();
  Forward f;
  f.y = m3_out(in.x.sizes(), o);
  f.final_state = m3_out({B, H, P, N}, o);
  f.checkpoints = m3_out({B, H, (T_ + kM3Ck - 1) / kM3Ck, P, N}, o);
  AT_DISPATCH_FLOATING_TYPES(in.q.scalar_type(), "mamba3_cpu_forward", [&] {
    auto p = m3_inputs<scalar_t>(in);
    p.y = f.y.mutable_data_ptr<scalar_t>();
    p.fin = f.final_state.mutable_data_ptr<scalar_t>();
    p.ck = f.checkpoints.mutable_data_ptr<scalar_t>();
    parallel_tasks(B * H, 1, [&](int64_t lo, int64_t hi) { m3_run_forward(p, lo, hi); });
  });
  return f;
}

Grads backward(const Inputs& in, const at::Tensor& checkpoints, const at::Tensor& dy, const at::Tensor& dfinal) {
  m3_check(in);
  const int64_t B = in.q.size(0), H = in.q.size(3);
  const auto o = in.x.options();
  Grads g;
  g.dq = m3_out(in.q.sizes(), o);
  g.dk = m3_out(in.k.sizes(), o);
  g.dx = m3_out(in.x.sizes(), o);
  g.dadt = m3_out(in.adt.sizes(), o);
  g.ddt = m3_out(in.dt.sizes(), o);
  g.dtrap = m3_out(in.trap.sizes(), o);
  g.dtheta = m3_out(in.theta.sizes(), o);
  at::Tensor dD_part;
  if (in.D.defined()) dD_part = m3_out({B, H}, o);
  if (in.h0.defined()) {
    g.dphase0 = m3_out(in.phase0.sizes(), o);
    g.dh0 = m3_out(in.h0.sizes(), o);
    g.dk_prev0 = m3_out(in.k_prev0.sizes(), o);
    g.dx_prev0 = m3_out(in.x_prev0.sizes(), o);
  }
  AT_DISPATCH_FLOATING_TYPES(in.q.scalar_type(), "mamba3_cpu_backward", [&] {
    auto p = m3_inputs<scalar_t>(in);
    p.ck = const_cast<scalar_t*>(checkpoints.const_data_ptr<scalar_t>());
    p.dy = ptr_or_null<scalar_t>(dy);
    p.dfin = ptr_or_null<scalar_t>(dfinal);
    p.dq = g.dq.mutable_data_ptr<scalar_t>();
    p.dk = g.dk.mutable_data_ptr<scalar_t>();
    p.dx = g.dx.mutable_data_ptr<scalar_t>();
    p.dadt = g.dadt.mutable_data_ptr<scalar_t>();
    p.ddt = g.ddt.mutable_data_ptr<scalar_t>();
    p.dtrap = g.dtrap.mutable_data_ptr<scalar_t>();
    p.dtheta = g.dtheta.mutable_data_ptr<scalar_t>();
    p.dD = cpu::mut_or_null<scalar_t>(dD_part);
    p.dphase0 = cpu::mut_or_null<scalar_t>(g.dphase0);
    p.dh0 = cpu::mut_or_null<scalar_t>(g.dh0);
    p.dkp0 = cpu::mut_or_null<scalar_t>(g.dk_prev0);
    p.dxp0 = cpu::mut_or_null<scalar_t>(g.dx_prev0);
    parallel_tasks(B * H, 1, [&](int64_t lo, int64_t hi) { m3_run_backward(p, lo, hi); });
  });
  if (dD_part.defined()) g.dD = dD_part.sum(0);
  return g;
}

}  // namespace ssmlab::ops::mamba3_cpu
