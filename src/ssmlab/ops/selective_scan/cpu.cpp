// Fused CPU selective scan, forward and backward (cpu.h). One (batch, channel) pair's recurrence runs in a
// local state array h[N]; the forward saves h every kChunk steps, the backward re-runs one chunk at a time
// from those and walks the adjoint state backwards, as reference.cpp does with whole tensors.
// Accumulation is in the compute dtype (float for fp32 inputs, double for fp64).
#include "ssmlab/ops/selective_scan/cpu.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/TensorIterator.h>

#include "ssmlab/core/error.h"
#include "ssmlab/ops/cpu_kernels.h"

// Lets the compiler if-convert the clamps in exp_vec (floating-point exception flags are never read here;
// results are unchanged), so the n loops vectorise.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("no-trapping-math")
#endif

namespace ssmlab::ops::selective_scan_cpu {
namespace {

using cpu::dot;
using cpu::exp_vec;
using cpu::mut_or_null;
using cpu::ptr_or_null;
using cpu::parallel_tasks;

// Plain pointers and sizes: what the row kernels see.
template <typename T>
struct Ptrs {
  int64_t b, l, e, n, g, eg, k;  // k: number of saved chunk starts
  const T *u, *dt, *A, *B, *C, *D, *h0;  // D, h0 may be null
  // forward outputs
  T *y, *fin, *starts;
  // backward
  const T *dy, *dfin;  // may be null (zero cotangent)
  T *du, *ddt, *dA_part, *dB_s, *dC_s, *dD_part, *dh0;  // dD_part, dh0 may be null
  int64_t S;  // channel slices per (b, g) in the backward
};

template <typename T>
Ptrs<T> ptrs_of(const Inputs& in) {
  Ptrs<T> p{};
  p.b = in.u.size(0);
  p.l = in.u.size(1);
  p.e = in.u.size(2);
  p.n = in.A.size(1);
  p.g = in.B.size(2);
  p.eg = p.e / p.g;
  p.k = (p.l + kChunk - 1) / kChunk;
  p.u = in.u.const_data_ptr<T>();
  p.dt = in.dt.const_data_ptr<T>();
  p.A = in.A.const_data_ptr<T>();
  p.B = in.B.const_data_ptr<T>();
  p.C = in.C.const_data_ptr<T>();
  p.D = ptr_or_null<T>(in.D);
  p.h0 = ptr_or_null<T>(in.h0);
  return p;
}

// Forward for (b, e) pairs be in [lo, hi): be = b * E + e.
template <typename T>
SSMLAB_CPU_INLINE void forward_rows(const Ptrs<T>& p, int64_t lo, int64_t hi) {
  alignas(64) T h[kMaxState];
  alignas(64) T a[kMaxState];
  const int64_t L = p.l, E = p.e, N = p.n, G = p.g, K = p.k;
  for (int64_t be = lo; be < hi; ++be) {
    const int64_t b = be / E, e = be % E, g = e / p.eg;
    const T* __restrict Ar = p.A + e * N;
    if (p.h0)
      std::copy(p.h0 + be * N, p.h0 + (be + 1) * N, h);
    else
      std::fill(h, h + N, T(0));
    const T Dv = p.D ? p.D[e] : T(0);
    for (int64_t t = 0; t < L; ++t) {
      if (t % kChunk == 0) std::copy(h, h + N, p.starts + (be * K + t / kChunk) * N);
      const int64_t i = (b * L + t) * E + e;
      const T dt = p.dt[i];
      const T ut = p.u[i], dtu = dt * ut;
      const T* __restrict Bt = p.B + ((b * L + t) * G + g) * N;
      const T* __restrict Ct = p.C + ((b * L + t) * G + g) * N;
      for (int64_t n = 0; n < N; ++n) a[n] = exp_vec(dt * Ar[n]);
      for (int64_t n = 0; n < N; ++n) h[n] = a[n] * h[n] + dtu * Bt[n];
      p.y[i] = dot(Ct, h, N) + Dv * ut;
    }
    std::copy(h, h + N, p.fin + be * N);
  }
}

// Forward vectorised across channels: a task is batch b and a block of kBlock consecutive channels of one
// group; each step loads the block's u, delta' contiguously, and for every state n updates kBlock channels
// at once (B_t[n], C_t[n] broadcast), so y accumulates without horizontal sums. float only.
inline constexpr int64_t kBlock = 8;

SSMLAB_CPU_INLINE void forward_blocks(const Ptrs<float>& p, int64_t lo, int64_t hi) {
  constexpr int64_t W = kBlock;
  alignas(64) float h[kMaxState][W];
  alignas(64) float Ab[kMaxState][W];
  const int64_t L = p.l, E = p.e, N = p.n, G = p.g, K = p.k, nblk = E / W;
  for (int64_t task = lo; task < hi; ++task) {
    const int64_t b = task / nblk, e0 = (task % nblk) * W, g = e0 / p.eg;
    for (int64_t n = 0; n < N; ++n)
      for (int64_t w = 0; w < W; ++w) {
        Ab[n][w] = p.A[(e0 + w) * N + n];
        h[n][w] = p.h0 ? p.h0[(b * E + e0 + w) * N + n] : 0.f;
      }
    float Dv[W];
    for (int64_t w = 0; w < W; ++w) Dv[w] = p.D ? p.D[e0 + w] : 0.f;
    for (int64_t t = 0; t < L; ++t) {
      if (t % kChunk == 0)
        for (int64_t w = 0; w < W; ++w)
          for (int64_t n = 0; n < N; ++n) p.starts[((b * E + e0 + w) * K + t / kChunk) * N + n] = h[n][w];
      const int64_t i = (b * L + t) * E + e0;
      const float* __restrict ut = p.u + i;
      const float* __restrict dtt = p.dt + i;
      const float* __restrict Bt = p.B + ((b * L + t) * G + g) * N;
      const float* __restrict Ct = p.C + ((b * L + t) * G + g) * N;
      float dt[W], dtu[W], y[W];
      for (int64_t w = 0; w < W; ++w) {
        dt[w] = dtt[w];
        dtu[w] = dt[w] * ut[w];
        y[w] = Dv[w] * ut[w];
      }
      for (int64_t n = 0; n < N; ++n) {
        const float bn = Bt[n], cn = Ct[n];
        for (int64_t w = 0; w < W; ++w) {
          h[n][w] = exp_vec(dt[w] * Ab[n][w]) * h[n][w] + dtu[w] * bn;
          y[w] += cn * h[n][w];
        }
      }
      for (int64_t w = 0; w < W; ++w) p.y[i + w] = y[w];
    }
    for (int64_t w = 0; w < W; ++w)
      for (int64_t n = 0; n < N; ++n) p.fin[(b * E + e0 + w) * N + n] = h[n][w];
  }
}

SSMLAB_CPU_CLONES void forward_blocks_f32(const Ptrs<float>& p, int64_t lo, int64_t hi) { forward_blocks(p, lo, hi); }

SSMLAB_CPU_CLONES void forward_rows_f32(const Ptrs<float>& p, int64_t lo, int64_t hi) { forward_rows(p, lo, hi); }
SSMLAB_CPU_CLONES void forward_rows_f64(const Ptrs<double>& p, int64_t lo, int64_t hi) { forward_rows(p, lo, hi); }
void forward_rows_any(const Ptrs<float>& p, int64_t lo, int64_t hi) { forward_rows_f32(p, lo, hi); }
void forward_rows_any(const Ptrs<double>& p, int64_t lo, int64_t hi) { forward_rows_f64(p, lo, hi); }

// Backward for tasks in [lo, hi): task = (b * G + g) * S + s, i.e. batch b, group g, slice s of the group's
// channels. dB / dC rows (b, t, g, :) are shared by a group's channels, so a task accumulates them in its
// own scratch slice s of dB_s / dC_s (S, B, L, G, N) (zeroed by the caller). dA_part (B, E, N) and
// dD_part (B, E) hold per-(b, e) partials that the caller sums over b.
template <typename T>
SSMLAB_CPU_INLINE void backward_rows(const Ptrs<T>& p, int64_t lo, int64_t hi) {
  const int64_t Bn = p.b, L = p.l, E = p.e, N = p.n, G = p.g, Eg = p.eg, K = p.k, S = p.S;
  std::vector<T> Hbuf(kChunk * N), Abuf(kChunk * N);
  alignas(64) T gh[kMaxState];
  alignas(64) T Gv[kMaxState];
  alignas(64) T xv[kMaxState];
  alignas(64) T dAacc[kMaxState];
  for (int64_t task = lo; task < hi; ++task) {
    const int64_t b = task / (G * S), g = (task / S) % G, s = task % S;
    const int64_t e_lo = g * Eg + (Eg * s) / S, e_hi = g * Eg + (Eg * (s + 1)) / S;
    T* dB = p.dB_s + s * Bn * L * G * N;
    T* dC = p.dC_s + s * Bn * L * G * N;
    for (int64_t e = e_lo; e < e_hi; ++e) {
      const int64_t be = b * E + e;
      const T* __restrict Ar = p.A + e * N;
      const T Dv = p.D ? p.D[e] : T(0);
      if (p.dfin)
        std::copy(p.dfin + be * N, p.dfin + (be + 1) * N, gh);
      else
        std::fill(gh, gh + N, T(0));
      std::fill(dAacc, dAacc + N, T(0));
      T dDacc = 0;
      for (int64_t k = K - 1; k >= 0; --k) {
        const int64_t t0 = k * kChunk, len = std::min(kChunk, L - t0);
        const T* hs = p.starts + (be * K + k) * N;
        // Re-run the chunk from its saved start: decays a_t and states h_t.
        const T* hp = hs;
        for (int64_t j = 0; j < len; ++j) {
          const int64_t t = t0 + j, i = (b * L + t) * E + e;
          const T dt = p.dt[i];
          T* __restrict a = Abuf.data() + j * N;
          T* __restrict hc = Hbuf.data() + j * N;
          const T dtu = dt * p.u[i];
          const T* __restrict Bt = p.B + ((b * L + t) * G + g) * N;
          for (int64_t n = 0; n < N; ++n) a[n] = exp_vec(dt * Ar[n]);
          for (int64_t n = 0; n < N; ++n) hc[n] = a[n] * hp[n] + dtu * Bt[n];
          hp = hc;
        }
        // Adjoint walk: G_t = dL/dh_t = gh + gy_t C_t;  gh <- G_t * a_t (= dL/dh_{t-1}).
        for (int64_t j = len - 1; j >= 0; --j) {
          const int64_t t = t0 + j, i = (b * L + t) * E + e;
          const T* __restrict a = Abuf.data() + j * N;
          const T* __restrict hc = Hbuf.data() + j * N;
          const T* __restrict hprev = j > 0 ? Hbuf.data() + (j - 1) * N : hs;
          const T* __restrict Bt = p.B + ((b * L + t) * G + g) * N;
          const T* __restrict Ct = p.C + ((b * L + t) * G + g) * N;
          T* __restrict dBt = dB + ((b * L + t) * G + g) * N;
          T* __restrict dCt = dC + ((b * L + t) * G + g) * N;
          const T ut = p.u[i], dt = p.dt[i];
          const T gy = p.dy ? p.dy[i] : T(0);
          dDacc += gy * ut;
          const T dtu = dt * ut;
          // Three short loops (few streams each, so each vectorises): G_t; the decay terms; dB, dC.
          for (int64_t n = 0; n < N; ++n) Gv[n] = gh[n] + gy * Ct[n];
          for (int64_t n = 0; n < N; ++n) {
            const T x = Gv[n] * hprev[n] * a[n];
            xv[n] = x;
            dAacc[n] += x * dt;
            gh[n] = Gv[n] * a[n];
          }
          for (int64_t n = 0; n < N; ++n) {
            dBt[n] += Gv[n] * dtu;
            dCt[n] += gy * hc[n];
          }
          const T GB = dot(Gv, Bt, N);
          p.ddt[i] = dot(xv, Ar, N) + GB * ut;
          p.du[i] = GB * dt + gy * Dv;
        }
      }
      std::copy(dAacc, dAacc + N, p.dA_part + be * N);
      if (p.dD_part) p.dD_part[be] = dDacc;
      if (p.dh0) std::copy(gh, gh + N, p.dh0 + be * N);
    }
  }
}

SSMLAB_CPU_CLONES void backward_rows_f32(const Ptrs<float>& p, int64_t lo, int64_t hi) { backward_rows(p, lo, hi); }
SSMLAB_CPU_CLONES void backward_rows_f64(const Ptrs<double>& p, int64_t lo, int64_t hi) { backward_rows(p, lo, hi); }
void backward_rows_any(const Ptrs<float>& p, int64_t lo, int64_t hi) { backward_rows_f32(p, lo, hi); }
void backward_rows_any(const Ptrs<double>& p, int64_t lo, int64_t hi) { backward_rows_f64(p, lo, hi); }

// float32 forward in channel blocks wherever every block lies in one group (a tail of E % kBlock channels,
// G == 1, runs row by row); false where the rows kernel must run.
bool forward_by_blocks(const Ptrs<float>& p) {
  const int64_t b = p.b, l = p.l, e = p.e, n = p.n;
  if (!(p.eg % kBlock == 0 || (p.g == 1 && e >= kBlock))) return false;
  const int64_t nblk = e / kBlock, tail = e - nblk * kBlock;
  const int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(1, l * n * kBlock));
  parallel_tasks(b * nblk, grain, [&](int64_t lo, int64_t hi) { forward_blocks_f32(p, lo, hi); });
  if (tail > 0)
    parallel_tasks(b, 1, [&](int64_t lo, int64_t hi) {
      for (int64_t bb = lo; bb < hi; ++bb) forward_rows_any(p, bb * e + nblk * kBlock, (bb + 1) * e);
    });
  return true;
}
bool forward_by_blocks(const Ptrs<double>&) { return false; }

void check_inputs(const Inputs& in) {
  const auto ct = in.u.scalar_type();
  SSMLAB_CHECK(ct == at::kFloat || ct == at::kDouble, "selective_scan_cpu: compute dtype must be float32/64");
  SSMLAB_CHECK(in.A.size(1) <= kMaxState, "selective_scan_cpu: N = ", in.A.size(1), " > ", kMaxState);
  for (const at::Tensor* t : {&in.u, &in.dt, &in.A, &in.B, &in.C, &in.D, &in.h0})
    if (t->defined())
      SSMLAB_CHECK(t->is_cpu() && t->is_contiguous() && t->scalar_type() == ct,
                   "selective_scan_cpu: inputs must be contiguous CPU tensors of one dtype");
  SSMLAB_CHECK(in.B.dim() == 4 && in.C.dim() == 4, "selective_scan_cpu: B, C must be (B, L, G, N)");
}

}  // namespace

Forward forward(const Inputs& in) {
  check_inputs(in);
  const auto opt = in.u.options();
  const int64_t b = in.u.size(0), l = in.u.size(1), e = in.u.size(2), n = in.A.size(1);
  const int64_t k = (l + kChunk - 1) / kChunk;
  Forward out;
  out.y = at::empty({b, l, e}, opt);
  out.final_state = at::empty({b, e, n}, opt);
  out.starts = at::empty({b, e, k, n}, opt);
  AT_DISPATCH_FLOATING_TYPES(in.u.scalar_type(), "selective_scan_cpu_fwd", [&] {
    Ptrs<scalar_t> p = ptrs_of<scalar_t>(in);
    p.y = out.y.mutable_data_ptr<scalar_t>();
    p.fin = out.final_state.mutable_data_ptr<scalar_t>();
    p.starts = out.starts.mutable_data_ptr<scalar_t>();
    if (forward_by_blocks(p)) return;
    const int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(1, l * n));
    parallel_tasks(b * e, grain, [&](int64_t lo, int64_t hi) { forward_rows_any(p, lo, hi); });
  });
  return out;
}

Grads backward(const Inputs& in, const at::Tensor& starts, const at::Tensor& dy_in, const at::Tensor& dfin_in) {
  check_inputs(in);
  const auto opt = in.u.options();
  const auto ct = in.u.scalar_type();
  const int64_t b = in.u.size(0), l = in.u.size(1), e = in.u.size(2), n = in.A.size(1), g = in.B.size(2);
  const at::Tensor dy = dy_in.defined() ? dy_in.to(ct).contiguous() : at::Tensor();
  const at::Tensor dfin = dfin_in.defined() ? dfin_in.to(ct).contiguous() : at::Tensor();
  // Channel slices per (b, g) so that few (b, g) pairs still spread over the threads (each slice has its
  // own dB/dC scratch, summed after). Results depend on the thread count only through that sum's order.
  const int64_t threads = at::get_num_threads();
  const int64_t bg = std::max<int64_t>(1, b * g);
  const int64_t S = bg >= 4 * threads ? 1 : std::clamp<int64_t>((4 * threads + bg - 1) / bg, 1, std::max<int64_t>(1, e / g));

  Grads gr;
  gr.du = at::empty({b, l, e}, opt);
  gr.ddt = at::empty({b, l, e}, opt);
  at::Tensor dA_part = at::empty({b, e, n}, opt);
  at::Tensor dB_s = at::zeros({S, b, l, g, n}, opt);
  at::Tensor dC_s = at::zeros({S, b, l, g, n}, opt);
  at::Tensor dD_part = in.D.defined() ? at::empty({b, e}, opt) : at::Tensor();
  if (in.h0.defined()) gr.dh0 = at::empty({b, e, n}, opt);
  AT_DISPATCH_FLOATING_TYPES(ct, "selective_scan_cpu_bwd", [&] {
    Ptrs<scalar_t> p = ptrs_of<scalar_t>(in);
    p.starts = const_cast<scalar_t*>(starts.const_data_ptr<scalar_t>());
    p.dy = ptr_or_null<scalar_t>(dy);
    p.dfin = ptr_or_null<scalar_t>(dfin);
    p.du = gr.du.mutable_data_ptr<scalar_t>();
    p.ddt = gr.ddt.mutable_data_ptr<scalar_t>();
    p.dA_part = dA_part.mutable_data_ptr<scalar_t>();
    p.dB_s = dB_s.mutable_data_ptr<scalar_t>();
    p.dC_s = dC_s.mutable_data_ptr<scalar_t>();
    p.dD_part = mut_or_null<scalar_t>(dD_part);
    p.dh0 = mut_or_null<scalar_t>(gr.dh0);
    p.S = S;
    parallel_tasks(b * g * S, 1, [&](int64_t lo, int64_t hi) { backward_rows_any(p, lo, hi); });
  });
  gr.dA = dA_part.sum(0);
  gr.dB = S == 1 ? dB_s[0] : dB_s.sum(0);
  gr.dC = S == 1 ? dC_s[0] : dC_s.sum(0);
  if (dD_part.defined()) gr.dD = dD_part.sum(0);
  return gr;
}

}  // namespace ssmlab::ops::selective_scan_cpu
