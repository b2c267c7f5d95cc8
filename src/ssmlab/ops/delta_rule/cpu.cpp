// Fused CPU delta rule, forward and backward (cpu.h). A task is one (batch, value head): its K x V state lives in
// a local buffer and every step makes two passes over it (decay + S^T k, then the rank-1 write + S^T q), the inner
// loops running over V contiguous values so they vectorise. The forward saves the state before every
// kDeltaCheckpoint steps; the backward recomputes each such segment's states from its checkpoint into a local
// buffer and walks it in reverse with the state adjoint dS (derivation in README.md).
#include "ssmlab/ops/delta_rule/cpu.h"

#include <algorithm>
#include <limits>
#include <cmath>
#include <cstring>
#include <vector>

#include <ATen/ATen.h>

#include "ssmlab/core/error.h"

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("no-trapping-math")
#endif
#include "ssmlab/ops/cpu_kernels.h"
#include "ssmlab/ops/poison.h"

namespace ssmlab::ops::delta_rule_cpu {
namespace {

using cpu::dot;
using cpu::exp_vec;
using cpu::parallel_tasks;
using cpu::ptr_or_null;

constexpr int64_t kCk = kDeltaCheckpoint;

OutputPoison dr_poison;

at::Tensor dr_out(at::IntArrayRef sizes, const at::TensorOptions& o) { return dr_poison.empty(sizes, o); }

template <typename T>
struct DrPtrs {
  int64_t B, L, H, HV, K, V, nck;
  int64_t VB, nvb;  // value columns per task (the state block K x VB stays in L1), blocks per value head
  int gate;  // 0 none, 1 one per head, 2 one per key channel
  const T *q, *k, *v, *beta, *g, *h0;  // g, h0 may be null
  T *o, *fin, *ck;
  const T *dout, *dfin;                // may be null
  // dq, dk, dbeta, dg: partial sums per column block, (nvb, B, L, HV[, K]); dg, dh0 may be null
  T *dq, *dk, *dv, *dbeta, *dg, *dh0;
};

// The decay of step t for task (b, hv) into a[0..K).
template <typename T>
SSMLAB_CPU_INLINE void dr_decay(const DrPtrs<T>& p, int64_t b, int64_t hv, int64_t t, T* __restrict a) {
  const int64_t K = p.K, i = (b * p.L + t) * p.HV + hv;
  if (p.gate == 1) {
    const T e = exp_vec(p.g[i]);
    for (int64_t d = 0; d < K; ++d) a[d] = e;
  } else if (p.gate == 2) {
    const T* __restrict gt = p.g + i * K;
    for (int64_t d = 0; d < K; ++d) a[d] = exp_vec(gt[d]);
  } else {
    for (int64_t d = 0; d < K; ++d) a[d] = T(1);
  }
}

// 32-byte vectors (GCC vector extensions: the update below must stay in registers, which the auto-vectoriser
// did not manage).
template <typename T>
struct DrVec {
  typedef T v __attribute__((vector_size(32)));
};
template <typename T>
SSMLAB_CPU_INLINE typename DrVec<T>::v dr_ld(const T* p) {
  typename DrVec<T>::v v;
  __builtin_memcpy(&v, p, 32);
  return v;
}
template <typename T>
SSMLAB_CPU_INLINE void dr_st(T* p, typename DrVec<T>::v v) {
  __builtin_memcpy(p, &v, 32);
}

// The forward step in ONE pass over the state block (the read of step t+1 folded into the write of step t):
// with w = S_{t-1}^T (a_t o k_t) (from the previous pass), e = v - w, u = beta e, each row d becomes
//   Sn[d] = a_t[d] Sp[d] + k_t[d] u;   o += q_t[d] Sn[d];   w_next += kn[d] Sn[d]     (kn = a_{t+1} o k_{t+1})
// Sp and Sn may be the same buffer (each value is loaded before it is stored). Columns go in blocks of two
// vectors with the d loop innermost, so u, o and w_next stay in registers and each state value is loaded and
// stored once. a: the decay (ones without a gate); kn: zeros for the last step; e and ot may be null.
template <typename T>
SSMLAB_CPU_INLINE void dr_step1(const T* Sp, T* Sn, int64_t K, int64_t n, const T* __restrict qt,
                                const T* __restrict kt, const T* __restrict vt, T bt, const T* __restrict a,
                                const T* __restrict w, T* __restrict e, T* __restrict ot, const T* __restrict kn,
                                T* __restrict wn) {
  using V = typename DrVec<T>::v;
  constexpr int VW = 32 / sizeof(T);
  int64_t j0 = 0;
  for (; j0 + 2 * VW <= n; j0 += 2 * VW) {
    const V e0 = dr_ld(vt + j0) - dr_ld(w + j0), e1 = dr_ld(vt + j0 + VW) - dr_ld(w + j0 + VW);
    if (e) {
      dr_st(e + j0, e0);
      dr_st(e + j0 + VW, e1);
    }
    const V u0 = bt * e0, u1 = bt * e1;
    V o0 = {}, o1 = {}, s0 = {}, s1 = {};
    for (int64_t d = 0; d < K; ++d) {
      const T ad = a[d], kd = kt[d], qd = qt[d], nd = kn[d];
      V x0 = dr_ld(Sp + d * n + j0), x1 = dr_ld(Sp + d * n + j0 + VW);
      x0 = ad * x0 + kd * u0;
      x1 = ad * x1 + kd * u1;
      dr_st(Sn + d * n + j0, x0);
      dr_st(Sn + d * n + j0 + VW, x1);
      o0 += qd * x0;
      o1 += qd * x1;
      s0 += nd * x0;
      s1 += nd * x1;
    }
    if (ot) {
      dr_st(ot + j0, o0);
      dr_st(ot + j0 + VW, o1);
    }
    dr_st(wn + j0, s0);
    dr_st(wn + j0 + VW, s1);
  }
  for (int64_t j = j0; j < n; ++j) {  // tail columns, one at a time
    const T ej = vt[j] - w[j], uj = bt * ej;
    if (e) e[j] = ej;
    T o = T(0), s = T(0);
    for (int64_t d = 0; d < K; ++d) {
      const T val = a[d] * Sp[d * n + j] + kt[d] * uj;
      Sn[d * n + j] = val;
      o += qt[d] * val;
      s += kn[d] * val;
    }
    if (ot) ot[j] = o;
    wn[j] = s;
  }
}

// w = S^T kd for the first step of a run (S: K x n).
template <typename T>
SSMLAB_CPU_INLINE void dr_read(const T* __restrict S, int64_t K, int64_t n, const T* __restrict kd,
                               T* __restrict w) {
  for (int64_t j = 0; j < n; ++j) w[j] = T(0);
  for (int64_t d = 0; d < K; ++d) {
    const T* __restrict row = S + d * n;
    const T c = kd[d];
    for (int64_t j = 0; j < n; ++j) w[j] += c * row[j];
  }
}

// a_t o k_t into ak (K), with the decay a_t already in a (ones without a gate).
template <typename T>
SSMLAB_CPU_INLINE void dr_scaled_key(const T* __restrict a, const T* __restrict kt, int64_t K, T* __restrict ak) {
  for (int64_t d = 0; d < K; ++d) ak[d] = a[d] * kt[d];
}

// A task: (batch, value head, block of value columns); the columns of S evolve independently, so each task keeps
// its K x n block (n <= VB) in a local buffer small enough for the L1 cache. Steps run dr_step1 (one pass each).
template <typename T>
SSMLAB_CPU_INLINE void dr_forward_range(const DrPtrs<T>& p, int64_t lo, int64_t hi) {
  const int64_t K = p.K, V = p.V, L = p.L, rep = p.HV / p.H;
  std::vector<T> S(K * p.VB), a(2 * K), ak(K), w(p.VB), wn(p.VB);
  for (int64_t task = lo; task < hi; ++task) {
    const int64_t bh = task / p.nvb, vb = task % p.nvb, b = bh / p.HV, hv = bh % p.HV, hh = hv / rep;
    const int64_t j0 = vb * p.VB, n = std::min(p.VB, V - j0);
    for (int64_t d = 0; d < K; ++d) {
      if (p.h0)
        std::memcpy(S.data() + d * n, p.h0 + (bh * K + d) * V + j0, sizeof(T) * n);
      else
        std::fill(S.data() + d * n, S.data() + (d + 1) * n, T(0));
    }
    // a holds the decays of steps t (cur) and t + 1 (nxt), swapped every step (ones without a gate); ak the
    // next step's scaled key (zeros after the last step).
    T* cur = a.data();
    T* nxt = a.data() + K;
    dr_decay(p, b, hv, 0, cur);
    dr_scaled_key(cur, p.k + ((b * L) * p.H + hh) * K, K, ak.data());
    dr_read(S.data(), K, n, ak.data(), w.data());
    for (int64_t t = 0; t < L; ++t) {
      if (t % kCk == 0)
        for (int64_t d = 0; d < K; ++d)
          std::memcpy(p.ck + ((bh * p.nck + t / kCk) * K + d) * V + j0, S.data() + d * n, sizeof(T) * n);
      const int64_t iq = ((b * L + t) * p.H + hh) * K, iv = (b * L + t) * p.HV + hv;
      if (t + 1 < L) {
        dr_decay(p, b, hv, t + 1, nxt);
        dr_scaled_key(nxt, p.k + iq + p.H * K, K, ak.data());
      } else {
        std::fill(ak.begin(), ak.end(), T(0));
      }
      dr_step1(S.data(), S.data(), K, n, p.q + iq, p.k + iq, p.v + iv * V + j0, p.beta[iv], cur, w.data(),
               static_cast<T*>(nullptr), p.o + iv * V + j0, ak.data(), wn.data());
      std::swap(w, wn);
      std::swap(cur, nxt);
    }
    for (int64_t d = 0; d < K; ++d) std::memcpy(p.fin + (bh * K + d) * V + j0, S.data() + d * n, sizeof(T) * n);
  }
}

// Reverse step t with S_t = St, S_{t-1} = Sp, a = its decay, e = v - (a Sp)^T k; dS holds dL/dS_t on entry and
// dL/dS_{t-1} on exit:
//   dq = S_t do;  dS += q do^T;  du = dS^T k;  dk = dS u;  dbeta = du . e;  dv = beta du;  dw = -beta du
//   dS_d = dS + k dw^T;  dk += diag(a) Sp dw;  da = rowsum(dS_d * Sp);  dS <- diag(a) dS_d;  dg = a da
// Per block of value columns: dv and dh0 are the block's own; dq, dk, dbeta and dg are sums over all columns, so
// each block writes its partial sums (leading dimension nvb) and the caller adds them.
template <typename T>
SSMLAB_CPU_INLINE void dr_backward_range(const DrPtrs<T>& p, int64_t lo, int64_t hi) {
  const int64_t K = p.K, V = p.V, L = p.L, rep = p.HV / p.H, KN = K * p.VB;
  std::vector<T> buf((kCk + 1) * KN), es(kCk * p.VB), as(kCk * K), dS(KN), w(p.VB), wn(p.VB), du(p.VB), dw(p.VB),
      dga(K), ak(K);
  const int64_t part = p.B * L * p.HV;  // (b, t, hv) entries per block of the partial sums
  for (int64_t task = lo; task < hi; ++task) {
    const int64_t bh = task / p.nvb, vb = task % p.nvb, b = bh / p.HV, hv = bh % p.HV, hh = hv / rep;
    const int64_t j0 = vb * p.VB, n = std::min(p.VB, V - j0), kn = K * n;
    for (int64_t d = 0; d < K; ++d) {
      if (p.dfin)
        std::memcpy(dS.data() + d * n, p.dfin + (bh * K + d) * V + j0, sizeof(T) * n);
      else
        std::fill(dS.data() + d * n, dS.data() + (d + 1) * n, T(0));
    }
    for (int64_t c = p.nck - 1; c >= 0; --c) {
      const int64_t t0 = c * kCk, m = std::min(kCk, L - t0);
      for (int64_t d = 0; d < K; ++d)
        std::memcpy(buf.data() + d * n, p.ck + ((bh * p.nck + c) * K + d) * V + j0, sizeof(T) * n);
      {
        const int64_t iq0 = ((b * L + t0) * p.H + hh) * K;
        dr_decay(p, b, hv, t0, as.data());
        dr_scaled_key(as.data(), p.k + iq0, K, ak.data());
        dr_read(buf.data(), K, n, ak.data(), w.data());
      }
      for (int64_t j = 0; j < m; ++j) {
        const int64_t t = t0 + j, iq = ((b * L + t) * p.H + hh) * K, iv = (b * L + t) * p.HV + hv;
        if (j + 1 < m) {
          dr_decay(p, b, hv, t + 1, as.data() + (j + 1) * K);
          dr_scaled_key(as.data() + (j + 1) * K, p.k + iq + p.H * K, K, ak.data());
        } else {
          std::fill(ak.begin(), ak.end(), T(0));
        }
        dr_step1(buf.data() + j * kn, buf.data() + (j + 1) * kn, K, n, p.q + iq, p.k + iq, p.v + iv * V + j0,
                 p.beta[iv], as.data() + j * K, w.data(), es.data() + j * n, static_cast<T*>(nullptr), ak.data(),
                 wn.data());
        std::swap(w, wn);
      }
      for (int64_t j = m - 1; j >= 0; --j) {
        const int64_t t = t0 + j, iq = ((b * L + t) * p.H + hh) * K, iv = (b * L + t) * p.HV + hv;
        const int64_t ip = vb * part + iv;  // index of (vb, b, t, hv) in the partial sums
        const T* __restrict St = buf.data() + (j + 1) * kn;
        const T* __restrict Sp = buf.data() + j * kn;
        const T* __restrict a = as.data() + j * K;
        const T* __restrict e = es.data() + j * n;
        const T* __restrict qt = p.q + iq;
        const T* __restrict kt = p.k + iq;
        const T bt = p.beta[iv];
        T* __restrict dqt = p.dq + ip * K;
        T* __restrict dkt = p.dk + ip * K;
        T* __restrict dvt = p.dv + iv * V + j0;
        T* __restrict dSp = dS.data();
        if (p.dout) {
          const T* __restrict dot_ = p.dout + iv * V + j0;
          for (int64_t d = 0; d < K; ++d) {
            dqt[d] = dot(St + d * n, dot_, n);
            T* __restrict row = dSp + d * n;
            const T qd = qt[d];
            for (int64_t jj = 0; jj < n; ++jj) row[jj] += qd * dot_[jj];
          }
        } else {
          for (int64_t d = 0; d < K; ++d) dqt[d] = T(0);
        }
        for (int64_t jj = 0; jj < n; ++jj) du[jj] = T(0);
        for (int64_t d = 0; d < K; ++d) {
          const T* __restrict row = dSp + d * n;
          const T kd = kt[d];
          for (int64_t jj = 0; jj < n; ++jj) du[jj] += kd * row[jj];
          dkt[d] = bt * dot(row, e, n);
        }
        p.dbeta[ip] = dot(du.data(), e, n);
        for (int64_t jj = 0; jj < n; ++jj) {
          dvt[jj] = bt * du[jj];
          dw[jj] = -bt * du[jj];
        }
        for (int64_t d = 0; d < K; ++d) {
          T* __restrict row = dSp + d * n;
          const T* __restrict sp = Sp + d * n;
          const T kd = kt[d], ad = a[d];
          for (int64_t jj = 0; jj < n; ++jj) row[jj] += kd * dw[jj];
          dkt[d] += ad * dot(sp, dw.data(), n);
          if (p.gate) {
            dga[d] = ad * dot(row, sp, n);
            for (int64_t jj = 0; jj < n; ++jj) row[jj] *= ad;
          }
        }
        if (p.gate == 1) {
          T sum = T(0);
          for (int64_t d = 0; d < K; ++d) sum += dga[d];
          p.dg[ip] = sum;
        } else if (p.gate == 2) {
          std::memcpy(p.dg + ip * K, dga.data(), sizeof(T) * K);
        }
      }
    }
    if (p.dh0)
      for (int64_t d = 0; d < K; ++d) std::memcpy(p.dh0 + (bh * K + d) * V + j0, dS.data() + d * n, sizeof(T) * n);
  }
}

SSMLAB_CPU_CLONES void dr_forward_f32(const DrPtrs<float>& p, int64_t lo, int64_t hi) { dr_forward_range(p, lo, hi); }
SSMLAB_CPU_CLONES void dr_forward_f64(const DrPtrs<double>& p, int64_t lo, int64_t hi) { dr_forward_range(p, lo, hi); }
SSMLAB_CPU_CLONES void dr_backward_f32(const DrPtrs<float>& p, int64_t lo, int64_t hi) {
  dr_backward_range(p, lo, hi);
}
SSMLAB_CPU_CLONES void dr_backward_f64(const DrPtrs<double>& p, int64_t lo, int64_t hi) {
  dr_backward_range(p, lo, hi);
}
void dr_run_forward(const DrPtrs<float>& p, int64_t lo, int64_t hi) { dr_forward_f32(p, lo, hi); }
void dr_run_forward(const DrPtrs<double>& p, int64_t lo, int64_t hi) { dr_forward_f64(p, lo, hi); }
void dr_run_backward(const DrPtrs<float>& p, int64_t lo, int64_t hi) { dr_backward_f32(p, lo, hi); }
void dr_run_backward(const DrPtrs<double>& p, int64_t lo, int64_t hi) { dr_backward_f64(p, lo, hi); }

template <typename T>
DrPtrs<T> dr_inputs(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& beta,
                    const at::Tensor& g, const at::Tensor& h0) {
  DrPtrs<T> p{};
  p.B = q.size(0);
  p.L = q.size(1);
  p.H = q.size(2);
  p.K = q.size(3);
  p.HV = v.size(2);
  p.V = v.size(3);
  p.nck = (p.L + kCk - 1) / kCk;
  // Blocks of value columns with a K x VB state of at most 4096 elements (16 KiB in fp32), VB a multiple of 8.
  p.VB = std::max<int64_t>(8, (4096 / std::max<int64_t>(p.K, 1)) / 8 * 8);
  if (p.VB >= p.V) p.VB = p.V;
  p.nvb = (p.V + p.VB - 1) / p.VB;
  p.gate = !g.defined() ? 0 : (g.dim() == 3 ? 1 : 2);
  p.q = q.const_data_ptr<T>();
  p.k = k.const_data_ptr<T>();
  p.v = v.const_data_ptr<T>();
  p.beta = beta.const_data_ptr<T>();
  p.g = ptr_or_null<T>(g);
  p.h0 = ptr_or_null<T>(h0);
  return p;
}

}  // namespace

void set_poison_outputs(bool on) { dr_poison.set(on); }

Forward forward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& beta,
                const at::Tensor& g, const at::Tensor& h0) {
  const int64_t B = q.size(0), L = q.size(1), K = q.size(3), HV = v.size(2), V = v.size(3);
  Forward f;
  f.o = dr_out({B, L, HV, V}, q.options());
  f.final_state = dr_out({B, HV, K, V}, q.options());
  f.checkpoints = dr_out({B, HV, (L + kCk - 1) / kCk, K, V}, q.options());
  AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "delta_rule_cpu_forward", [&] {
    auto p = dr_inputs<scalar_t>(q, k, v, beta, g, h0);
    p.o = f.o.mutable_data_ptr<scalar_t>();
    p.fin = f.final_state.mutable_data_ptr<scalar_t>();
    p.ck = f.checkpoints.mutable_data_ptr<scalar_t>();
    parallel_tasks(B * HV * p.nvb, 1, [&](int64_t lo, int64_t hi) { dr_run_forward(p, lo, hi); });
  });
  return f;
}

Grads backward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& beta,
               const at::Tensor& g, const at::Tensor& h0, const at::Tensor& checkpoints, const at::Tensor& do_,
               const at::Tensor& dfinal) {
  const int64_t B = q.size(0), L = q.size(1), H = q.size(2), K = q.size(3), HV = v.size(2), V = v.size(3);
  Grads r;
  at::Tensor dq_p, dk_p, dbeta_p, dg_p;  // partial sums over column blocks, (nvb, ...)
  r.dv = dr_out({B, L, HV, V}, q.options());
  if (h0.defined()) r.dh0 = dr_out({B, HV, K, V}, q.options());
  AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "delta_rule_cpu_backward", [&] {
    auto p = dr_inputs<scalar_t>(q, k, v, beta, g, h0);
    dq_p = dr_out({p.nvb, B, L, HV, K}, q.options());
    dk_p = dr_out({p.nvb, B, L, HV, K}, q.options());
    dbeta_p = dr_out({p.nvb, B, L, HV}, q.options());
    if (g.defined()) {
      std::vector<int64_t> gs = {p.nvb};
      for (int64_t s : g.sizes()) gs.push_back(s);
      dg_p = dr_out(gs, q.options());
    }
    p.ck = const_cast<scalar_t*>(checkpoints.const_data_ptr<scalar_t>());
    p.dout = ptr_or_null<scalar_t>(do_);
    p.dfin = ptr_or_null<scalar_t>(dfinal);
    p.dq = dq_p.mutable_data_ptr<scalar_t>();
    p.dk = dk_p.mutable_data_ptr<scalar_t>();
    p.dv = r.dv.mutable_data_ptr<scalar_t>();
    p.dbeta = dbeta_p.mutable_data_ptr<scalar_t>();
    p.dg = dg_p.defined() ? dg_p.mutable_data_ptr<scalar_t>() : nullptr;
    p.dh0 = r.dh0.defined() ? r.dh0.mutable_data_ptr<scalar_t>() : nullptr;
    parallel_tasks(B * HV * p.nvb, 1, [&](int64_t lo, int64_t hi) { dr_run_backward(p, lo, hi); });
  });
  auto blocks = [](const at::Tensor& t) { return t.size(0) == 1 ? t.squeeze(0) : t.sum(0); };
  const at::Tensor dq_e = blocks(dq_p), dk_e = blocks(dk_p);  // (B, L, HV, K)
  r.dbeta = blocks(dbeta_p);
  if (dg_p.defined()) r.dg = blocks(dg_p);
  const int64_t rep = HV / H;
  r.dq = rep == 1 ? dq_e : dq_e.view({B, L, H, rep, K}).sum(3);
  r.dk = rep == 1 ? dk_e : dk_e.view({B, L, H, rep, K}).sum(3);
  return r;
}

}  // namespace ssmlab::ops::delta_rule_cpu
