// Fused CPU SSD scan, forward and backward (cpu.h). One task per (batch, head) keeps its state S (P x N) in
// a local buffer and walks the recurrence, vectorised over n; the forward saves S every K steps (chunk_len),
// the backward re-runs one chunk at a time from those into a (K, P, N) buffer and walks the adjoint
// G_t = dL/dS_t backwards:  G_t = gy_t ⊗ C_t + α_{t+1} G_{t+1}.
// dB and dC are written per head and summed over a group's heads afterwards (no races between tasks).
#include "ssmlab/ops/ssd_scan/cpu.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include <ATen/ATen.h>

#include "ssmlab/ops/cpu_kernels.h"
#include "ssmlab/ops/poison.h"

// Lets the compiler if-convert the clamps in exp_vec (exception flags are never read here).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("no-trapping-math")
#endif

namespace ssmlab::ops::ssd_scan_cpu {
namespace {

using cpu::exp_vec;
using cpu::mut_or_null;
using cpu::ptr_or_null;
using cpu::parallel_tasks;

OutputPoison g_poison;

at::Tensor out_like(at::IntArrayRef sizes, const at::TensorOptions& o) { return g_poison.empty(sizes, o); }

template <typename T>
struct Ptrs {
  int64_t b, l, h, p, n, g, hg, k, kc;  // k chunks of kc steps
  const T *x, *a, *w, *B, *C, *D, *S0;
  T *y, *fin, *starts;
  const T *dy, *dfin;
  T *dx, *da, *dw, *dBh, *dCh, *dDbh, *dS0;  // dBh, dCh (B, L, H, N); dDbh (B, H)
};

template <typename T>
Ptrs<T> ptrs_of(const Inputs& in) {
  Ptrs<T> q{};
  q.b = in.x.size(0);
  q.l = in.x.size(1);
  q.h = in.x.size(2);
  q.p = in.x.size(3);
  q.g = in.B.size(2);
  q.n = in.B.size(3);
  q.hg = q.h / q.g;
  q.kc = chunk_len(q.p, q.n);
  q.k = (q.l + q.kc - 1) / q.kc;
  q.x = in.x.const_data_ptr<T>();
  q.a = in.a.const_data_ptr<T>();
  q.w = in.w.const_data_ptr<T>();
  q.B = in.B.const_data_ptr<T>();
  q.C = in.C.const_data_ptr<T>();
  q.D = ptr_or_null<T>(in.D);
  q.S0 = ptr_or_null<T>(in.S0);
  return q;
}

// sum_n a[n] * b[n] with W independent lanes, so it vectorises without reassociation flags.
template <typename T>
SSMLAB_CPU_INLINE T dot(const T* __restrict a, const T* __restrict b, int64_t N) {
  constexpr int W = 32 / sizeof(T);
  T lane[W] = {};
  int64_t n = 0;
  for (; n + W <= N; n += W)
    for (int j = 0; j < W; ++j) lane[j] += a[n + j] * b[n + j];
  T s = 0;
  for (int j = 0; j < W; ++j) s += lane[j];
  for (; n < N; ++n) s += a[n] * b[n];
  return s;
}

// One step of the state for every p: S[p, :] = α S[p, :] + (w x_p) B; y_p = S[p, :] · C + D x_p.
template <typename T>
SSMLAB_CPU_INLINE void step_rows(T* __restrict S, const T* __restrict xt, const T* __restrict Bt,
                                 const T* __restrict Ct, T alpha, T w, T Dv, T* __restrict yt, int64_t P,
                                 int64_t N) {
  for (int64_t pp = 0; pp < P; ++pp) {
    T* __restrict row = S + pp * N;
    const T xw = w * xt[pp];
    for (int64_t n = 0; n < N; ++n) row[n] = alpha * row[n] + xw * Bt[n];
    if (yt) yt[pp] = dot(row, Ct, N) + Dv * xt[pp];
  }
}

template <typename T>
void forward_tasks(const Ptrs<T>& q, int64_t lo, int64_t hi) {
  const int64_t L = q.l, H = q.h, P = q.p, N = q.n, G = q.g, PN = P * N;
  std::vector<T> buf(PN);
  T* S = buf.data();
  for (int64_t bh = lo; bh < hi; ++bh) {
    const int64_t b = bh / H, h = bh % H, g = h / q.hg;
    if (q.S0)
      std::copy(q.S0 + bh * PN, q.S0 + (bh + 1) * PN, S);
    else
      std::fill(S, S + PN, T(0));
    const T Dv = q.D ? q.D[h] : T(0);
    for (int64_t t = 0; t < L; ++t) {
      if (t % q.kc == 0) std::copy(S, S + PN, q.starts + (bh * q.k + t / q.kc) * PN);
      const int64_t i = (b * L + t) * H + h;
      const T* xt = q.x + i * P;
      const T* Bt = q.B + ((b * L + t) * G + g) * N;
      const T* Ct = q.C + ((b * L + t) * G + g) * N;
      step_rows(S, xt, Bt, Ct, exp_vec(q.a[i]), q.w[i], Dv, q.y + i * P, P, N);
    }
    std::copy(S, S + PN, q.fin + bh * PN);
  }
}

SSMLAB_CPU_CLONES void forward_f32(const Ptrs<float>& q, int64_t lo, int64_t hi) { forward_tasks(q, lo, hi); }
SSMLAB_CPU_CLONES void forward_f64(const Ptrs<double>& q, int64_t lo, int64_t hi) { forward_tasks(q, lo, hi); }
void forward_any(const Ptrs<float>& q, int64_t lo, int64_t hi) { forward_f32(q, lo, hi); }
void forward_any(const Ptrs<double>& q, int64_t lo, int64_t hi) { forward_f64(q, lo, hi); }

template <typename T>
void backward_tasks(const Ptrs<T>& q, int64_t lo, int64_t hi) {
  const int64_t L = q.l, H = q.h, P = q.p, N = q.n, G = q.g, PN = P * N;
  std::vector<T> Gbuf(PN), states(q.kc * PN);
  T* Gm = Gbuf.data();
  for (int64_t bh = lo; bh < hi; ++bh) {
    const int64_t b = bh / H, h = bh % H, g = h / q.hg;
    if (q.dfin)
      std::copy(q.dfin + bh * PN, q.dfin + (bh + 1) * PN, Gm);
    else
      std::fill(Gm, Gm + PN, T(0));
    const T Dv = q.D ? q.D[h] : T(0);
    T dD = 0;
    for (int64_t k = q.k - 1; k >= 0; --k) {
      const int64_t t0 = k * q.kc, t1 = std::min(L, t0 + q.kc);
      const T* start = q.starts + (bh * q.k + k) * PN;
      // Re-run the chunk: states[t - t0] = S_t.
      std::copy(start, start + PN, states.data());
      for (int64_t t = t0; t < t1; ++t) {
        T* S = states.data() + (t - t0) * PN;
        if (t > t0) std::copy(S - PN, S, S);
        const int64_t i = (b * L + t) * H + h;
        step_rows<T>(S, q.x + i * P, q.B + ((b * L + t) * G + g) * N, nullptr, exp_vec(q.a[i]), q.w[i], T(0),
                     nullptr, P, N);
      }
      for (int64_t t = t1 - 1; t >= t0; --t) {
        const int64_t i = (b * L + t) * H + h;
        const T* __restrict S = states.data() + (t - t0) * PN;
        const T* __restrict Sp = t > t0 ? S - PN : start;
        const T* __restrict xt = q.x + i * P;
        const T* __restrict Bt = q.B + ((b * L + t) * G + g) * N;
        const T* __restrict Ct = q.C + ((b * L + t) * G + g) * N;
        const T* __restrict gy = q.dy ? q.dy + i * P : nullptr;
        T* __restrict dB = q.dBh + i * N;
        T* __restrict dC = q.dCh + i * N;
        const T alpha = exp_vec(q.a[i]), w = q.w[i];
        std::fill(dB, dB + N, T(0));
        std::fill(dC, dC + N, T(0));
        T da = 0, dw = 0;
        for (int64_t pp = 0; pp < P; ++pp) {
          T* __restrict Gr = Gm + pp * N;
          const T* __restrict Sr = S + pp * N;
          const T* __restrict Spr = Sp + pp * N;
          const T gyp = gy ? gy[pp] : T(0), xp = xt[pp];
          for (int64_t n = 0; n < N; ++n) {
            Gr[n] += gyp * Ct[n];  // G = dL/dS_t
            dC[n] += gyp * Sr[n];
          }
          const T gbp = dot(Gr, Bt, N), gs = dot(Gr, Spr, N);
          for (int64_t n = 0; n < N; ++n) {
            dB[n] += Gr[n] * xp;
            Gr[n] *= alpha;        // becomes α_t G_t, the carry into S_{t-1}
          }
          da += gs;
          dw += xp * gbp;
          q.dx[i * P + pp] = w * gbp + Dv * gyp;
          dD += gyp * xp;
        }
        for (int64_t n = 0; n < N; ++n) dB[n] *= w;
        q.da[i] = alpha * da;
        q.dw[i] = dw;
      }
    }
    if (q.dS0) std::copy(Gm, Gm + PN, q.dS0 + bh * PN);
    if (q.dDbh) q.dDbh[bh] = dD;
  }
}

SSMLAB_CPU_CLONES void backward_f32(const Ptrs<float>& q, int64_t lo, int64_t hi) { backward_tasks(q, lo, hi); }
SSMLAB_CPU_CLONES void backward_f64(const Ptrs<double>& q, int64_t lo, int64_t hi) { backward_tasks(q, lo, hi); }
void backward_any(const Ptrs<float>& q, int64_t lo, int64_t hi) { backward_f32(q, lo, hi); }
void backward_any(const Ptrs<double>& q, int64_t lo, int64_t hi) { backward_f64(q, lo, hi); }

}  // namespace

void set_poison_outputs(bool on) { g_poison.set(on); }

Forward forward(const Inputs& in) {
  const int64_t b = in.x.size(0), l = in.x.size(1), h = in.x.size(2), p = in.x.size(3), n = in.B.size(3);
  const int64_t kc = chunk_len(p, n), k = (l + kc - 1) / kc;
  const auto o = in.x.options();
  Forward f;
  f.y = out_like({b, l, h, p}, o);
  f.final_state = out_like({b, h, p, n}, o);
  f.starts = at::empty({b, h, k, p, n}, o);
  AT_DISPATCH_FLOATING_TYPES(in.x.scalar_type(), "ssd_scan_cpu_forward", [&] {
    Ptrs<scalar_t> q = ptrs_of<scalar_t>(in);
    q.y = f.y.mutable_data_ptr<scalar_t>();
    q.fin = f.final_state.mutable_data_ptr<scalar_t>();
    q.starts = f.starts.mutable_data_ptr<scalar_t>();
    parallel_tasks(b * h, 1, [&](int64_t lo, int64_t hi) { forward_any(q, lo, hi); });
  });
  return f;
}

Grads backward(const Inputs& in, const at::Tensor& starts, const at::Tensor& dy, const at::Tensor& dfinal) {
  const int64_t b = in.x.size(0), l = in.x.size(1), h = in.x.size(2), p = in.x.size(3), g = in.B.size(2),
                n = in.B.size(3);
  const auto o = in.x.options();
  Grads gr;
  gr.dx = out_like({b, l, h, p}, o);
  gr.da = out_like({b, l, h}, o);
  gr.dw = out_like({b, l, h}, o);
  at::Tensor dBh = out_like({b, l, h, n}, o), dCh = out_like({b, l, h, n}, o);
  at::Tensor dDbh = in.D.defined() ? out_like({b, h}, o) : at::Tensor();
  if (in.S0.defined()) gr.dS0 = out_like({b, h, p, n}, o);
  const at::Tensor dyc = dy.defined() ? dy.contiguous() : dy, dfc = dfinal.defined() ? dfinal.contiguous() : dfinal;
  AT_DISPATCH_FLOATING_TYPES(in.x.scalar_type(), "ssd_scan_cpu_backward", [&] {
    Ptrs<scalar_t> q = ptrs_of<scalar_t>(in);
    q.starts = const_cast<scalar_t*>(starts.const_data_ptr<scalar_t>());
    q.dy = ptr_or_null<scalar_t>(dyc);
    q.dfin = ptr_or_null<scalar_t>(dfc);
    q.dx = gr.dx.mutable_data_ptr<scalar_t>();
    q.da = gr.da.mutable_data_ptr<scalar_t>();
    q.dw = gr.dw.mutable_data_ptr<scalar_t>();
    q.dBh = dBh.mutable_data_ptr<scalar_t>();
    q.dCh = dCh.mutable_data_ptr<scalar_t>();
    q.dDbh = mut_or_null<scalar_t>(dDbh);
    q.dS0 = mut_or_null<scalar_t>(gr.dS0);
    parallel_tasks(b * h, 1, [&](int64_t lo, int64_t hi) { backward_any(q, lo, hi); });
  });
  gr.dB = dBh.view({b, l, g, h / g, n}).sum(3);  // (B, L, G, N)
  gr.dC = dCh.view({b, l, g, h / g, n}).sum(3);
  if (dDbh.defined()) gr.dD = dDbh.sum(0);
  return gr;
}

}  // namespace ssmlab::ops::ssd_scan_cpu
