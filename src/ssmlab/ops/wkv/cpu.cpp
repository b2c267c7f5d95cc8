// Fused CPU WKV, forward and backward (cpu.h). A task is one sequence b and a block of channels; the channels
// of a block advance in lockstep through time so the inner loop vectorises. The forward keeps the state
// before every step (the backward's only saved activations besides y); the backward walks time in reverse
// with the adjoints of a and b held in the same scaled form as the state (derivation in README.md).
#include "ssmlab/ops/wkv/cpu.h"

#include <algorithm>
#include <cmath>

#include <ATen/ATen.h>

#include "ssmlab/core/error.h"
#include "ssmlab/ops/wkv/wkv.h"

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("no-trapping-math")
#endif
#include "ssmlab/ops/cpu_kernels.h"

namespace ssmlab::ops::wkv_cpu {
namespace {

using cpu::exp_vec;
using cpu::ptr_or_null;
using cpu::parallel_tasks;

constexpr int64_t kBlock = 64;  // channels per task

template <typename T>
struct Ptrs {
  int64_t b, l, c;
  const T *w, *u, *k, *v, *h0;  // h0 may be null
  T *y, *fin, *states;
  // backward
  const T *dy, *dfin;  // may be null
  T *dk, *dv, *dw_part, *du_part, *dh0;  // dw_part, du_part (B, C); dh0 may be null
};

template <typename T>
SSMLAB_CPU_INLINE void forward_rows(const Ptrs<T>& p, int64_t task) {
  const int64_t C = p.c, L = p.l, nblk = (C + kBlock - 1) / kBlock;
  const int64_t b = task / nblk, c0 = (task % nblk) * kBlock, n = std::min(kBlock, C - c0);
  alignas(64) T aa[kBlock], bb[kBlock], pp[kBlock];
  for (int64_t j = 0; j < n; ++j) {
    aa[j] = p.h0 ? p.h0[(b * 3 + 0) * C + c0 + j] : T(0);
    bb[j] = p.h0 ? p.h0[(b * 3 + 1) * C + c0 + j] : T(0);
    pp[j] = p.h0 ? p.h0[(b * 3 + 2) * C + c0 + j] : T(kWkvEmpty);
  }
  const T* __restrict w = p.w + c0;
  const T* __restrict u = p.u + c0;
  for (int64_t t = 0; t < L; ++t) {
    const int64_t i = (b * L + t) * C + c0;
    const T* __restrict kt = p.k + i;
    const T* __restrict vt = p.v + i;
    T* __restrict yt = p.y + i;
    T* __restrict st = p.states + (b * L + t) * 3 * C + c0;
    for (int64_t j = 0; j < n; ++j) {
      st[j] = aa[j];
      st[C + j] = bb[j];
      st[2 * C + j] = pp[j];
      const T ww = u[j] + kt[j];
      T o = pp[j] > ww ? pp[j] : ww;
      T e1 = exp_vec(pp[j] - o), e2 = exp_vec(ww - o);
      yt[j] = (e1 * aa[j] + e2 * vt[j]) / (e1 * bb[j] + e2);
      const T wp = w[j] + pp[j];
      o = wp > kt[j] ? wp : kt[j];
      e1 = exp_vec(wp - o);
      e2 = exp_vec(kt[j] - o);
      aa[j] = e1 * aa[j] + e2 * vt[j];
      bb[j] = e1 * bb[j] + e2;
      pp[j] = o;
    }
  }
  for (int64_t j = 0; j < n; ++j) {
    p.fin[(b * 3 + 0) * C + c0 + j] = aa[j];
    p.fin[(b * 3 + 1) * C + c0 + j] = bb[j];
    p.fin[(b * 3 + 2) * C + c0 + j] = pp[j];
  }
}

// Adjoints: ga = dL/da e^pp, gb = dL/db e^pp (scaled like the state); at step t (state before it: aa, bb, pp)
//   o = max(pp, u + k), e1 = e^{pp - o}, e2 = e^{u + k - o}, den = e1 bb + e2, y = (e1 aa + e2 v) / den
//   p' = max(pp + w, k), f1 = e^{pp + w - p'}, f2 = e^{k - p'}
//   dk += f2 (v ga' + gb'), dv += f2 ga', dw += f1 (aa ga' + bb gb')     (ga', gb': after step t)
//   du = dk_direct = e2 (v - y) g / den, dv += e2 g / den
//   ga = e1 g / den + f1 ga',  gb = -e1 y g / den + f1 gb'
template <typename T>
SSMLAB_CPU_INLINE void backward_rows(const Ptrs<T>& p, int64_t task) {
  const int64_t C = p.c, L = p.l, nblk = (C + kBlock - 1) / kBlock;
  const int64_t b = task / nblk, c0 = (task % nblk) * kBlock, n = std::min(kBlock, C - c0);
  alignas(64) T ga[kBlock], gb[kBlock], dw[kBlock], du[kBlock];
  for (int64_t j = 0; j < n; ++j) {
    ga[j] = p.dfin ? p.dfin[(b * 3 + 0) * C + c0 + j] : T(0);
    gb[j] = p.dfin ? p.dfin[(b * 3 + 1) * C + c0 + j] : T(0);
    dw[j] = T(0);
    du[j] = T(0);
  }
  const T* __restrict w = p.w + c0;
  const T* __restrict u = p.u + c0;
  for (int64_t t = L - 1; t >= 0; --t) {
    const int64_t i = (b * L + t) * C + c0;
    const T* __restrict kt = p.k + i;
    const T* __restrict vt = p.v + i;
    const T* __restrict yt = p.y + i;
    const T* __restrict st = p.states + (b * L + t) * 3 * C + c0;
    T* __restrict dkt = p.dk + i;
    T* __restrict dvt = p.dv + i;
    for (int64_t j = 0; j < n; ++j) {
      const T aa = st[j], bb = st[C + j], pp = st[2 * C + j];
      const T g = p.dy ? p.dy[i + j] : T(0);
      const T ww = u[j] + kt[j];
      const T o = pp > ww ? pp : ww;
      const T e1 = exp_vec(pp - o), e2 = exp_vec(ww - o);
      const T gd = g / (e1 * bb + e2);
      const T wp = w[j] + pp;
      const T p1 = wp > kt[j] ? wp : kt[j];
      const T f1 = exp_vec(wp - p1), f2 = exp_vec(kt[j] - p1);
      const T direct = e2 * (vt[j] - yt[j]) * gd;
      dkt[j] = f2 * (vt[j] * ga[j] + gb[j]) + direct;
      dvt[j] = f2 * ga[j] + e2 * gd;
      dw[j] += f1 * (aa * ga[j] + bb * gb[j]);
      du[j] += direct;
      ga[j] = e1 * gd + f1 * ga[j];
      gb[j] = -e1 * yt[j] * gd + f1 * gb[j];
    }
  }
  for (int64_t j = 0; j < n; ++j) {
    p.dw_part[b * C + c0 + j] = dw[j];
    p.du_part[b * C + c0 + j] = du[j];
    if (p.dh0) {
      const T aa0 = p.h0[(b * 3 + 0) * C + c0 + j], bb0 = p.h0[(b * 3 + 1) * C + c0 + j];
      p.dh0[(b * 3 + 0) * C + c0 + j] = ga[j];
      p.dh0[(b * 3 + 1) * C + c0 + j] = gb[j];
      p.dh0[(b * 3 + 2) * C + c0 + j] = aa0 * ga[j] + bb0 * gb[j];
    }
  }
}

SSMLAB_CPU_CLONES void forward_f32(const Ptrs<float>& p, int64_t lo, int64_t hi) {
  for (int64_t t = lo; t < hi; ++t) forward_rows(p, t);
}
SSMLAB_CPU_CLONES void forward_f64(const Ptrs<double>& p, int64_t lo, int64_t hi) {
  for (int64_t t = lo; t < hi; ++t) forward_rows(p, t);
}
SSMLAB_CPU_CLONES void backward_f32(const Ptrs<float>& p, int64_t lo, int64_t hi) {
  for (int64_t t = lo; t < hi; ++t) backward_rows(p, t);
}
SSMLAB_CPU_CLONES void backward_f64(const Ptrs<double>& p, int64_t lo, int64_t hi) {
  for (int64_t t = lo; t < hi; ++t) backward_rows(p, t);
}
void run_forward(const Ptrs<float>& p, int64_t lo, int64_t hi) { forward_f32(p, lo, hi); }
void run_forward(const Ptrs<double>& p, int64_t lo, int64_t hi) { forward_f64(p, lo, hi); }
void run_backward(const Ptrs<float>& p, int64_t lo, int64_t hi) { backward_f32(p, lo, hi); }
void run_backward(const Ptrs<double>& p, int64_t lo, int64_t hi) { backward_f64(p, lo, hi); }

template <typename T>
Ptrs<T> inputs_of(const at::Tensor& w, const at::Tensor& u, const at::Tensor& k, const at::Tensor& v,
                  const at::Tensor& h0) {
  Ptrs<T> p{};
  p.b = k.size(0);
  p.l = k.size(1);
  p.c = k.size(2);
  p.w = w.const_data_ptr<T>();
  p.u = u.const_data_ptr<T>();
  p.k = k.const_data_ptr<T>();
  p.v = v.const_data_ptr<T>();
  p.h0 = ptr_or_null<T>(h0);
  return p;
}

int64_t tasks_of(const at::Tensor& k) { return k.size(0) * ((k.size(2) + kBlock - 1) / kBlock); }

}  // namespace

Forward forward(const at::Tensor& w, const at::Tensor& u, const at::Tensor& k, const at::Tensor& v,
                const at::Tensor& h0) {
  const int64_t B = k.size(0), L = k.size(1), C = k.size(2);
  Forward f;
  f.y = at::empty({B, L, C}, k.options());
  f.final_state = at::empty({B, 3, C}, k.options());
  f.states = at::empty({B, L, 3, C}, k.options());
  AT_DISPATCH_FLOATING_TYPES(k.scalar_type(), "wkv_cpu_forward", [&] {
    auto p = inputs_of<scalar_t>(w, u, k, v, h0);
    p.y = f.y.mutable_data_ptr<scalar_t>();
    p.fin = f.final_state.mutable_data_ptr<scalar_t>();
    p.states = f.states.mutable_data_ptr<scalar_t>();
    const int64_t grain = std::max<int64_t>(1, 4096 / std::max<int64_t>(1, L));
    parallel_tasks(tasks_of(k), grain, [&](int64_t lo, int64_t hi) { run_forward(p, lo, hi); });
  });
  return f;
}

Grads backward(const at::Tensor& w, const at::Tensor& u, const at::Tensor& k, const at::Tensor& v,
               const at::Tensor& h0, const at::Tensor& y, const at::Tensor& states, const at::Tensor& dy,
               const at::Tensor& dfinal) {
  const int64_t B = k.size(0), L = k.size(1), C = k.size(2);
  Grads g;
  g.dk = at::empty({B, L, C}, k.options());
  g.dv = at::empty({B, L, C}, k.options());
  at::Tensor dw_part = at::empty({B, C}, k.options()), du_part = at::empty({B, C}, k.options());
  if (h0.defined()) g.dh0 = at::empty({B, 3, C}, k.options());
  AT_DISPATCH_FLOATING_TYPES(k.scalar_type(), "wkv_cpu_backward", [&] {
    auto p = inputs_of<scalar_t>(w, u, k, v, h0);
    p.y = const_cast<scalar_t*>(y.const_data_ptr<scalar_t>());
    p.states = const_cast<scalar_t*>(states.const_data_ptr<scalar_t>());
    p.dy = ptr_or_null<scalar_t>(dy);
    p.dfin = ptr_or_null<scalar_t>(dfinal);
    p.dk = g.dk.mutable_data_ptr<scalar_t>();
    p.dv = g.dv.mutable_data_ptr<scalar_t>();
    p.dw_part = dw_part.mutable_data_ptr<scalar_t>();
    p.du_part = du_part.mutable_data_ptr<scalar_t>();
    p.dh0 = g.dh0.defined() ? g.dh0.mutable_data_ptr<scalar_t>() : nullptr;
    const int64_t grain = std::max<int64_t>(1, 4096 / std::max<int64_t>(1, L));
    parallel_tasks(tasks_of(k), grain, [&](int64_t lo, int64_t hi) { run_backward(p, lo, hi); });
  });
  g.dw = dw_part.sum(0);
  g.du = du_part.sum(0);
  return g;
}

}  // namespace ssmlab::ops::wkv_cpu
