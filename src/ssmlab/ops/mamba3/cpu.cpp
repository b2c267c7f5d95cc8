// Fused CPU Mamba-3 scan core, forward and backward (cpu.h). A task is one (batch, head, block of state rows):
// the rows of hbar (P x N) evolve independently, so each task keeps its PB x N block (<= 4096 values) in a local
// buffer (L1) and per step makes one update pass over it (decay + the R rank-1 writes) and R read-out dots, the
// inner loops running over N contiguous values so they vectorise. The forward saves hbar before every
// kMamba3Checkpoint steps; the backward recomputes each segment's states from its checkpoint and walks it in
// reverse with the state adjoint dS (README.md, "Fused CPU kernel").
#include "ssmlab/ops/mamba3/cpu.h"

#include <algorithm>
#include <atomic>
#include <cstring>
#include <limits>
#include <vector>

#include <ATen/ATen.h>

#include "ssmlab/core/error.h"

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("no-trapping-math")
#endif
#include "ssmlab/ops/cpu_kernels.h"

namespace ssmlab::ops::mamba3_cpu {
namespace {

using cpu::dot;
using cpu::exp_vec;
using cpu::parallel_tasks;
using cpu::ptr_or_null;

constexpr int64_t kM3Ck = kMamba3Checkpoint;

std::atomic<bool> m3_poison{false};

at::Tensor m3_out(at::IntArrayRef sizes, const at::TensorOptions& o) {
  return m3_poison.load() ? at::full(sizes, std::numeric_limits<double>::quiet_NaN(), o) : at::empty(sizes, o);
}

template <typename T>
struct M3Ptrs {
  int64_t B, T_, R, H, N, P, nck;
  int64_t PB, npb;  // state rows per task, row blocks per head
  const T *qr, *kk, *x, *adt, *h0;  // h0 may be null
  T *y, *fin, *ck;
  const T *dy, *dfin;               // may be null
  // dqr, dkk, dadt: partial sums per row block, (npb, B, T, R, H, N) and (npb, B, T, H); dh0 may be null
  T *dqr, *dkk, *dx, *dadt, *dh0;
};

// One step on the block S (n rows x N): S = a S + sum_r x_r[row] kk_r; y_r[row] = S[row] . qr_r (y may be null).
// q, k: the R rank rows of (b, t, ., h) at stride HN; xs: x of (b, t, ., h) + p0 at stride HP.
template <typename T>
SSMLAB_CPU_INLINE void m3_step(T* __restrict S, int64_t n, int64_t N, int64_t R, T a, const T* __restrict q,
                               const T* __restrict k, const T* __restrict xs, int64_t HN, int64_t HP,
                               T* __restrict ys) {
  for (int64_t i = 0; i < n; ++i) {
    T* __restrict row = S + i * N;
    {
      const T xv = xs[i];
      const T* __restrict k0 = k;
      for (int64_t j = 0; j < N; ++j) row[j] = a * row[j] + xv * k0[j];
    }
    for (int64_t r = 1; r < R; ++r) {
      const T xv = xs[r * HP + i];
      const T* __restrict kr = k + r * HN;
      for (int64_t j = 0; j < N; ++j) row[j] += xv * kr[j];
    }
    if (ys)
      for (int64_t r = 0; r < R; ++r) ys[r * HP + i] = dot(row, q + r * HN, N);
  }
}

template <typename T>
SSMLAB_CPU_INLINE void m3_forward_range(const M3Ptrs<T>& p, int64_t lo, int64_t hi) {
  const int64_t N = p.N, P = p.P, H = p.H, R = p.R, T_ = p.T_, HN = H * N, HP = H * P;
  std::vector<T> S(p.PB * N);
  for (int64_t task = lo; task < hi; ++task) {
    const int64_t bh = task / p.npb, pb = task % p.npb, b = bh / H, h = bh % H;
    const int64_t p0 = pb * p.PB, n = std::min(p.PB, P - p0);
    if (p.h0)
      std::memcpy(S.data(), p.h0 + (bh * P + p0) * N, sizeof(T) * n * N);
    else
      std::fill(S.begin(), S.begin() + n * N, T(0));
    for (int64_t t = 0; t < T_; ++t) {
      if (t % kM3Ck == 0)
        std::memcpy(p.ck + ((bh * p.nck + t / kM3Ck) * P + p0) * N, S.data(), sizeof(T) * n * N);
      const int64_t bt = b * T_ + t;
      const int64_t iq = bt * R * HN + h * N, ix = bt * R * HP + h * P + p0;
      m3_step(S.data(), n, N, R, exp_vec(p.adt[bt * H + h]), p.qr + iq, p.kk + iq, p.x + ix, HN, HP, p.y + ix);
    }
    std::memcpy(p.fin + (bh * P + p0) * N, S.data(), sizeof(T) * n * N);
  }
}

// Reverse step t with S_t = St, S_{t-1} = Sp, a = exp(adt_t); dS holds dL/dS_t (after adding the read-out) and
// leaves as dL/dS_{t-1}. Per row i of the block:
//   dS[i] += sum_r dy_r[i] qr_r;  dqr_r += dy_r[i] St[i];  dx_r[i] = dS[i] . kk_r;  dkk_r += x_r[i] dS[i];
//   da += dS[i] . Sp[i];  dS[i] *= a;     dadt = a da
// dqr, dkk and dadt sum over rows, so each row block writes partial sums (leading dimension npb).
template <typename T>
SSMLAB_CPU_INLINE void m3_backward_range(const M3Ptrs<T>& p, int64_t lo, int64_t hi) {
  const int64_t N = p.N, P = p.P, H = p.H, R = p.R, T_ = p.T_, HN = H * N, HP = H * P, KN = p.PB * N;
  std::vector<T> buf((kM3Ck + 1) * KN), dS(KN);
  const int64_t part_n = p.B * T_ * R * HN, part_a = p.B * T_ * H;  // elements per block of the partial sums
  for (int64_t task = lo; task < hi; ++task) {
    const int64_t bh = task / p.npb, pb = task % p.npb, b = bh / H, h = bh % H;
    const int64_t p0 = pb * p.PB, n = std::min(p.PB, P - p0), kn = n * N;
    if (p.dfin)
      std::memcpy(dS.data(), p.dfin + (bh * P + p0) * N, sizeof(T) * kn);
    else
      std::fill(dS.begin(), dS.begin() + kn, T(0));
    for (int64_t c = p.nck - 1; c >= 0; --c) {
      const int64_t t0 = c * kM3Ck, m = std::min(kM3Ck, T_ - t0);
      std::memcpy(buf.data(), p.ck + ((bh * p.nck + c) * P + p0) * N, sizeof(T) * kn);
      for (int64_t j = 0; j < m; ++j) {
        const int64_t bt = b * T_ + t0 + j;
        const int64_t iq = bt * R * HN + h * N, ix = bt * R * HP + h * P + p0;
        T* Sn = buf.data() + (j + 1) * kn;
        std::memcpy(Sn, buf.data() + j * kn, sizeof(T) * kn);
        m3_step(Sn, n, N, R, exp_vec(p.adt[bt * H + h]), p.qr + iq, p.kk + iq, p.x + ix, HN, HP,
                static_cast<T*>(nullptr));
      }
      for (int64_t j = m - 1; j >= 0; --j) {
        const int64_t bt = b * T_ + t0 + j;
        const int64_t iq = bt * R * HN + h * N, ix = bt * R * HP + h * P + p0;
        const T a = exp_vec(p.adt[bt * H + h]);
        const T* __restrict St = buf.data() + (j + 1) * kn;
        const T* __restrict Sp = buf.data() + j * kn;
        const T* __restrict q = p.qr + iq;
        const T* __restrict k = p.kk + iq;
        const T* __restrict xs = p.x + ix;
        T* __restrict dq = p.dqr + pb * part_n + iq;
        T* __restrict dk = p.dkk + pb * part_n + iq;
        T* __restrict dxs = p.dx + ix;
        for (int64_t r = 0; r < R; ++r)
          for (int64_t jj = 0; jj < N; ++jj) dq[r * HN + jj] = dk[r * HN + jj] = T(0);
        T da = T(0);
        for (int64_t i = 0; i < n; ++i) {
          T* __restrict drow = dS.data() + i * N;
          const T* __restrict st = St + i * N;
          if (p.dy) {
            const T* __restrict dys = p.dy + ix;
            for (int64_t r = 0; r < R; ++r) {
              const T g = dys[r * HP + i];
              const T* __restrict qr = q + r * HN;
              T* __restrict dqr = dq + r * HN;
              for (int64_t jj = 0; jj < N; ++jj) {
                drow[jj] += g * qr[jj];
                dqr[jj] += g * st[jj];
              }
            }
          }
          for (int64_t r = 0; r < R; ++r) {
            const T* __restrict kr = k + r * HN;
            T* __restrict dkr = dk + r * HN;
            const T xv = xs[r * HP + i];
            dxs[r * HP + i] = dot(drow, kr, N);
            for (int64_t jj = 0; jj < N; ++jj) dkr[jj] += xv * drow[jj];
          }
          da += dot(drow, Sp + i * N, N);
          for (int64_t jj = 0; jj < N; ++jj) drow[jj] *= a;
        }
        p.dadt[pb * part_a + bt * H + h] = a * da;
      }
    }
    if (p.dh0) std::memcpy(p.dh0 + (bh * P + p0) * N, dS.data(), sizeof(T) * kn);
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
M3Ptrs<T> m3_inputs(const at::Tensor& qr, const at::Tensor& kk, const at::Tensor& x, const at::Tensor& adt,
                    const at::Tensor& h0) {
  M3Ptrs<T> p{};
  p.B = qr.size(0);
  p.T_ = qr.size(1);
  p.R = qr.size(2);
  p.H = qr.size(3);
  p.N = qr.size(4);
  p.P = x.size(4);
  p.nck = (p.T_ + kM3Ck - 1) / kM3Ck;
  // Blocks of state rows with at most 4096 values (16 KiB in fp32), so a block stays in L1.
  p.PB = std::clamp<int64_t>(4096 / std::max<int64_t>(p.N, 1), 1, p.P);
  p.npb = (p.P + p.PB - 1) / p.PB;
  p.qr = qr.const_data_ptr<T>();
  p.kk = kk.const_data_ptr<T>();
  p.x = x.const_data_ptr<T>();
  p.adt = adt.const_data_ptr<T>();
  p.h0 = ptr_or_null<T>(h0);
  return p;
}

void m3_check(const at::Tensor& qr, const at::Tensor& kk, const at::Tensor& x, const at::Tensor& adt,
              const at::Tensor& h0) {
  for (const at::Tensor* t : {&qr, &kk, &x, &adt})
    SSMLAB_CHECK(t->defined() && t->is_cpu() && t->is_contiguous() && t->scalar_type() == qr.scalar_type(),
                 "mamba3_cpu: inputs must be contiguous CPU tensors of one dtype; got ", tensor_str(*t));
  SSMLAB_CHECK(qr.scalar_type() == at::kFloat || qr.scalar_type() == at::kDouble,
               "mamba3_cpu: computes in float32 or float64; got ", tensor_str(qr));
  if (h0.defined())
    SSMLAB_CHECK(h0.is_cpu() && h0.is_contiguous() && h0.scalar_type() == qr.scalar_type(),
                 "mamba3_cpu: h0 must be contiguous in the compute dtype; got ", tensor_str(h0));
}

}  // namespace

void set_poison_outputs(bool on) { m3_poison.store(on); }

Forward forward(const at::Tensor& qr, const at::Tensor& kk, const at::Tensor& x, const at::Tensor& adt,
                const at::Tensor& h0) {
  m3_check(qr, kk, x, adt, h0);
  const int64_t B = qr.size(0), T_ = qr.size(1), H = qr.size(3), N = qr.size(4), P = x.size(4);
  Forward f;
  f.y = m3_out(x.sizes(), x.options());
  f.final_state = m3_out({B, H, P, N}, x.options());
  f.checkpoints = m3_out({B, H, (T_ + kM3Ck - 1) / kM3Ck, P, N}, x.options());
  AT_DISPATCH_FLOATING_TYPES(qr.scalar_type(), "mamba3_cpu_forward", [&] {
    auto p = m3_inputs<scalar_t>(qr, kk, x, adt, h0);
    p.y = f.y.mutable_data_ptr<scalar_t>();
    p.fin = f.final_state.mutable_data_ptr<scalar_t>();
    p.ck = f.checkpoints.mutable_data_ptr<scalar_t>();
    parallel_tasks(B * H * p.npb, 1, [&](int64_t lo, int64_t hi) { m3_run_forward(p, lo, hi); });
  });
  return f;
}

Grads backward(const at::Tensor& qr, const at::Tensor& kk, const at::Tensor& x, const at::Tensor& adt,
               const at::Tensor& h0, const at::Tensor& checkpoints, const at::Tensor& dy, const at::Tensor& dfinal) {
  m3_check(qr, kk, x, adt, h0);
  const int64_t B = qr.size(0), H = qr.size(3), N = qr.size(4), P = x.size(4);
  Grads g;
  at::Tensor dq_p, dk_p, da_p;  // partial sums over row blocks, (npb, ...)
  g.dx = m3_out(x.sizes(), x.options());
  if (h0.defined()) g.dh0 = m3_out({B, H, P, N}, x.options());
  AT_DISPATCH_FLOATING_TYPES(qr.scalar_type(), "mamba3_cpu_backward", [&] {
    auto p = m3_inputs<scalar_t>(qr, kk, x, adt, h0);
    std::vector<int64_t> qs = {p.npb}, as = {p.npb};
    for (int64_t s : qr.sizes()) qs.push_back(s);
    for (int64_t s : adt.sizes()) as.push_back(s);
    dq_p = m3_out(qs, x.options());
    dk_p = m3_out(qs, x.options());
    da_p = m3_out(as, x.options());
    p.ck = const_cast<scalar_t*>(checkpoints.const_data_ptr<scalar_t>());
    p.dy = ptr_or_null<scalar_t>(dy);
    p.dfin = ptr_or_null<scalar_t>(dfinal);
    p.dqr = dq_p.mutable_data_ptr<scalar_t>();
    p.dkk = dk_p.mutable_data_ptr<scalar_t>();
    p.dx = g.dx.mutable_data_ptr<scalar_t>();
    p.dadt = da_p.mutable_data_ptr<scalar_t>();
    p.dh0 = g.dh0.defined() ? g.dh0.mutable_data_ptr<scalar_t>() : nullptr;
    parallel_tasks(B * H * p.npb, 1, [&](int64_t lo, int64_t hi) { m3_run_backward(p, lo, hi); });
  });
  auto blocks = [](const at::Tensor& t) { return t.size(0) == 1 ? t.squeeze(0) : t.sum(0); };
  g.dqr = blocks(dq_p);
  g.dkk = blocks(dk_p);
  g.dadt = blocks(da_p);
  return g;
}

}  // namespace ssmlab::ops::mamba3_cpu
