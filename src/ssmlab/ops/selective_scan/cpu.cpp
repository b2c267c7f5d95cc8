// Fused CPU selective scan, forward and backward (cpu.h). One (batch, channel) pair's recurrence runs in a
// local state array h[N]; the forward saves h every kChunk steps, the backward re-runs one chunk at a time
// from those and walks the adjoint state backwards, as reference.cpp does with whole tensors.
// Accumulation is in the compute dtype (float for fp32 inputs, double for fp64).
#include "ssmlab/ops/selective_scan/cpu.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include "ssmlab/core/error.h"

namespace ssmlab::ops::selective_scan_cpu {
namespace {

template <typename T>
inline T softplus_of(T x) {
  return x > T(20) ? x : std::log1p(std::exp(x));
}
template <typename T>
inline T sigmoid_of(T x) {
  return T(1) / (T(1) + std::exp(-x));
}

template <typename T>
const T* ptr_or_null(const at::Tensor& t) {
  return t.defined() ? t.const_data_ptr<T>() : nullptr;
}
template <typename T>
T* mut_or_null(at::Tensor& t) {
  return t.defined() ? t.mutable_data_ptr<T>() : nullptr;
}

struct Dims {
  int64_t b, l, e, n, g, eg, k;  // k: number of saved chunk starts
};

Dims dims_of(const Inputs& in) {
  Dims d;
  d.b = in.u.size(0);
  d.l = in.u.size(1);
  d.e = in.u.size(2);
  d.n = in.A.size(1);
  d.g = in.B.size(2);
  d.eg = d.e / d.g;
  d.k = (d.l + kChunk - 1) / kChunk;
  return d;
}

// a[n] = exp(dt * A[n]) for n < N; a separate tight loop so the compiler can vectorise the multiply.
template <typename T>
inline void decay_row(T* __restrict a, const T* __restrict A, T dt, int64_t N) {
  for (int64_t n = 0; n < N; ++n) a[n] = dt * A[n];
  for (int64_t n = 0; n < N; ++n) a[n] = std::exp(a[n]);
}

template <typename T>
void forward_impl(const Dims& d, const Inputs& in, T* __restrict y, T* __restrict fin, T* __restrict starts) {
  const T* __restrict u = in.u.const_data_ptr<T>();
  const T* __restrict dl = in.delta.const_data_ptr<T>();
  const T* __restrict A = in.A.const_data_ptr<T>();
  const T* __restrict Bm = in.B.const_data_ptr<T>();
  const T* __restrict Cm = in.C.const_data_ptr<T>();
  const T* D = ptr_or_null<T>(in.D);
  const T* z = ptr_or_null<T>(in.z);
  const T* bias = ptr_or_null<T>(in.delta_bias);
  const T* h0 = ptr_or_null<T>(in.h0);
  const bool softplus = in.softplus;
  const int64_t L = d.l, E = d.e, N = d.n, G = d.g, K = d.k;
  const int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(1, L * N));
  at::parallel_for(0, d.b * E, grain, [&](int64_t lo, int64_t hi) {
    alignas(64) T h[kMaxState];
    alignas(64) T a[kMaxState];
    for (int64_t be = lo; be < hi; ++be) {
      const int64_t b = be / E, e = be % E, g = e / d.eg;
      const T* __restrict Ar = A + e * N;
      if (h0)
        std::copy(h0 + be * N, h0 + (be + 1) * N, h);
      else
        std::fill(h, h + N, T(0));
      const T Dv = D ? D[e] : T(0);
      const T bv = bias ? bias[e] : T(0);
      for (int64_t t = 0; t < L; ++t) {
        if (t % kChunk == 0) std::copy(h, h + N, starts + (be * K + t / kChunk) * N);
        const int64_t i = (b * L + t) * E + e;
        const T raw = dl[i] + bv;
        const T dt = softplus ? softplus_of(raw) : raw;
        const T ut = u[i], dtu = dt * ut;
        const T* __restrict Bt = Bm + ((b * L + t) * G + g) * N;
        const T* __restrict Ct = Cm + ((b * L + t) * G + g) * N;
        decay_row(a, Ar, dt, N);
        T acc = 0;
        for (int64_t n = 0; n < N; ++n) {
          h[n] = a[n] * h[n] + dtu * Bt[n];
          acc += Ct[n] * h[n];
        }
        T out = acc + Dv * ut;
        if (z) out *= z[i] * sigmoid_of(z[i]);
        y[i] = out;
      }
      std::copy(h, h + N, fin + be * N);
    }
  });
}

// Per-(b, e) partials dA_part (B, E, N), dD_part / dbias_part (B, E) are summed over b by the caller.
template <typename T>
void backward_impl(const Dims& d, const Inputs& in, const T* __restrict starts, const T* dy, const T* dfin,
                   T* __restrict du, T* __restrict ddl, T* __restrict dz, T* __restrict dA_part,
                   T* __restrict dB_s, T* __restrict dC_s, T* __restrict dD_part, T* __restrict dbias_part,
                   T* __restrict dh0, int64_t S) {
  const T* __restrict u = in.u.const_data_ptr<T>();
  const T* __restrict dl = in.delta.const_data_ptr<T>();
  const T* __restrict A = in.A.const_data_ptr<T>();
  const T* __restrict Bm = in.B.const_data_ptr<T>();
  const T* __restrict Cm = in.C.const_data_ptr<T>();
  const T* D = ptr_or_null<T>(in.D);
  const T* z = ptr_or_null<T>(in.z);
  const T* bias = ptr_or_null<T>(in.delta_bias);
  const bool softplus = in.softplus;
  const int64_t Bn = d.b, L = d.l, E = d.e, N = d.n, G = d.g, Eg = d.eg, K = d.k;
  // Tasks: (b, g, s): batch b, group g, slice s of the group's channels. dB / dC rows (b, t, g, :) are
  // shared by the group's channels, so each task owns scratch slice s of dB_s / dC_s (S, B, L, G, N).
  at::parallel_for(0, Bn * G * S, 1, [&](int64_t lo, int64_t hi) {
    std::vector<T> Hbuf(kChunk * N), Abuf(kChunk * N), dts(kChunk), raws(kChunk);
    alignas(64) T gh[kMaxState];
    alignas(64) T dAacc[kMaxState];
    for (int64_t task = lo; task < hi; ++task) {
      const int64_t b = task / (G * S), g = (task / S) % G, s = task % S;
      const int64_t e_lo = g * Eg + (Eg * s) / S, e_hi = g * Eg + (Eg * (s + 1)) / S;
      T* __restrict dB = dB_s + s * Bn * L * G * N;
      T* __restrict dC = dC_s + s * Bn * L * G * N;
      for (int64_t e = e_lo; e < e_hi; ++e) {
        const int64_t be = b * E + e;
        const T* __restrict Ar = A + e * N;
        const T Dv = D ? D[e] : T(0);
        const T bv = bias ? bias[e] : T(0);
        if (dfin)
          std::copy(dfin + be * N, dfin + (be + 1) * N, gh);
        else
          std::fill(gh, gh + N, T(0));
        std::fill(dAacc, dAacc + N, T(0));
        T dDacc = 0, dbacc = 0;
        for (int64_t k = K - 1; k >= 0; --k) {
          const int64_t t0 = k * kChunk, len = std::min(kChunk, L - t0);
          const T* __restrict hs = starts + (be * K + k) * N;
          // Re-run the chunk: decays a_t and states h_t for its steps.
          const T* hp = hs;
          for (int64_t j = 0; j < len; ++j) {
            const int64_t t = t0 + j, i = (b * L + t) * E + e;
            const T raw = dl[i] + bv;
            const T dt = softplus ? softplus_of(raw) : raw;
            raws[j] = raw;
            dts[j] = dt;
            T* __restrict a = Abuf.data() + j * N;
            T* __restrict hc = Hbuf.data() + j * N;
            decay_row(a, Ar, dt, N);
            const T dtu = dt * u[i];
            const T* __restrict Bt = Bm + ((b * L + t) * G + g) * N;
            for (int64_t n = 0; n < N; ++n) hc[n] = a[n] * hp[n] + dtu * Bt[n];
            hp = hc;
          }
          // Adjoint walk: G_t = dL/dh_t = gh + gy_t C_t;  gh <- G_t * a_t (= dL/dh_{t-1}).
          for (int64_t j = len - 1; j >= 0; --j) {
            const int64_t t = t0 + j, i = (b * L + t) * E + e;
            const T* __restrict a = Abuf.data() + j * N;
            const T* __restrict hc = Hbuf.data() + j * N;
            const T* __restrict hprev = j > 0 ? Hbuf.data() + (j - 1) * N : hs;
            const T* __restrict Bt = Bm + ((b * L + t) * G + g) * N;
            const T* __restrict Ct = Cm + ((b * L + t) * G + g) * N;
            T* __restrict dBt = dB + ((b * L + t) * G + g) * N;
            T* __restrict dCt = dC + ((b * L + t) * G + g) * N;
            const T ut = u[i], dt = dts[j];
            T gy = dy ? dy[i] : T(0);
            if (z) {
              T acc = 0;
              for (int64_t n = 0; n < N; ++n) acc += Ct[n] * hc[n];
              const T y_pre = acc + Dv * ut;
              const T zt = z[i], sig = sigmoid_of(zt);
              dz[i] = gy * y_pre * sig * (T(1) + zt * (T(1) - sig));
              gy = gy * zt * sig;
            }
            dDacc += gy * ut;
            const T dtu = dt * ut;
            T gdA = 0, GB = 0;
            for (int64_t n = 0; n < N; ++n) {
              const T Gn = gh[n] + gy * Ct[n];
              const T x = Gn * hprev[n] * a[n];
              gdA += x * Ar[n];
              dAacc[n] += x * dt;
              GB += Gn * Bt[n];
              dBt[n] += Gn * dtu;
              dCt[n] += gy * hc[n];
              gh[n] = Gn * a[n];
            }
            const T gdelta = gdA + GB * ut;
            du[i] = GB * dt + gy * Dv;
            const T graw = softplus ? gdelta * sigmoid_of(raws[j]) : gdelta;
            ddl[i] = graw;
            dbacc += graw;
          }
        }
        std::copy(dAacc, dAacc + N, dA_part + be * N);
        if (dD_part) dD_part[be] = dDacc;
        if (dbias_part) dbias_part[be] = dbacc;
        if (dh0) std::copy(gh, gh + N, dh0 + be * N);
      }
    }
  });
}

void check_inputs(const Inputs& in) {
  const auto ct = in.u.scalar_type();
  SSMLAB_CHECK(ct == at::kFloat || ct == at::kDouble, "selective_scan_cpu: compute dtype must be float32/64");
  SSMLAB_CHECK(in.A.size(1) <= kMaxState, "selective_scan_cpu: N = ", in.A.size(1), " > ", kMaxState);
  for (const at::Tensor* t : {&in.u, &in.delta, &in.A, &in.B, &in.C, &in.D, &in.z, &in.delta_bias, &in.h0})
    if (t->defined())
      SSMLAB_CHECK(t->is_cpu() && t->is_contiguous() && t->scalar_type() == ct,
                   "selective_scan_cpu: inputs must be contiguous CPU tensors of one dtype");
  SSMLAB_CHECK(in.B.dim() == 4 && in.C.dim() == 4, "selective_scan_cpu: B, C must be (B, L, G, N)");
}

}  // namespace

Forward forward(const Inputs& in) {
  check_inputs(in);
  const Dims d = dims_of(in);
  const auto opt = in.u.options();
  Forward out;
  out.y = at::empty({d.b, d.l, d.e}, opt);
  out.final_state = at::empty({d.b, d.e, d.n}, opt);
  out.starts = at::empty({d.b, d.e, d.k, d.n}, opt);
  AT_DISPATCH_FLOATING_TYPES(in.u.scalar_type(), "selective_scan_cpu_fwd", [&] {
    forward_impl<scalar_t>(d, in, out.y.mutable_data_ptr<scalar_t>(), out.final_state.mutable_data_ptr<scalar_t>(),
                           out.starts.mutable_data_ptr<scalar_t>());
  });
  return out;
}

Grads backward(const Inputs& in, const at::Tensor& starts, const at::Tensor& dy_in, const at::Tensor& dfin_in) {
  check_inputs(in);
  const Dims d = dims_of(in);
  const auto opt = in.u.options();
  const auto ct = in.u.scalar_type();
  const at::Tensor dy = dy_in.defined() ? dy_in.to(ct).contiguous() : at::Tensor();
  const at::Tensor dfin = dfin_in.defined() ? dfin_in.to(ct).contiguous() : at::Tensor();
  // Channel slices per (b, g) so that small B * G still spreads over the threads (scratch dB/dC per slice).
  const int64_t threads = at::get_num_threads();
  const int64_t bg = std::max<int64_t>(1, d.b * d.g);
  const int64_t S = bg >= 4 * threads ? 1 : std::clamp<int64_t>((4 * threads + bg - 1) / bg, 1, d.eg);

  Grads gr;
  gr.du = at::empty({d.b, d.l, d.e}, opt);
  gr.ddelta = at::empty({d.b, d.l, d.e}, opt);
  if (in.z.defined()) gr.dz = at::empty({d.b, d.l, d.e}, opt);
  at::Tensor dA_part = at::empty({d.b, d.e, d.n}, opt);
  at::Tensor dB_s = at::zeros({S, d.b, d.l, d.g, d.n}, opt);
  at::Tensor dC_s = at::zeros({S, d.b, d.l, d.g, d.n}, opt);
  at::Tensor dD_part = in.D.defined() ? at::empty({d.b, d.e}, opt) : at::Tensor();
  at::Tensor dbias_part = in.delta_bias.defined() ? at::empty({d.b, d.e}, opt) : at::Tensor();
  if (in.h0.defined()) gr.dh0 = at::empty({d.b, d.e, d.n}, opt);
  AT_DISPATCH_FLOATING_TYPES(ct, "selective_scan_cpu_bwd", [&] {
    backward_impl<scalar_t>(d, in, starts.const_data_ptr<scalar_t>(), ptr_or_null<scalar_t>(dy),
                            ptr_or_null<scalar_t>(dfin), gr.du.mutable_data_ptr<scalar_t>(),
                            gr.ddelta.mutable_data_ptr<scalar_t>(), mut_or_null<scalar_t>(gr.dz),
                            dA_part.mutable_data_ptr<scalar_t>(), dB_s.mutable_data_ptr<scalar_t>(),
                            dC_s.mutable_data_ptr<scalar_t>(), mut_or_null<scalar_t>(dD_part),
                            mut_or_null<scalar_t>(dbias_part), mut_or_null<scalar_t>(gr.dh0), S);
  });
  gr.dA = dA_part.sum(0);
  gr.dB = S == 1 ? dB_s[0] : dB_s.sum(0);
  gr.dC = S == 1 ? dC_s[0] : dC_s.sum(0);
  if (dD_part.defined()) gr.dD = dD_part.sum(0);
  if (dbias_part.defined()) gr.ddelta_bias = dbias_part.sum(0);
  return gr;
}

}  // namespace ssmlab::ops::selective_scan_cpu
