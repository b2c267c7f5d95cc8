// The Mamba-3 scan on ops/ssd_scan's fused kernels (mamba3.h, mamba3_ssd_kernels; README.md, "CUDA path"): the
// preparation and finish of the fused path (detail.h) around the look-ahead SSD core, which IS a Mamba-2 SSD scan
// with per-step log decay a = adt, input weight w = 1, keys B = s k~, queries C = q~ (one group per head) and
// initial state hbar_{-1}. On CUDA the core runs ssd_scan's chunked tensor-core kernels (time-stepped ones for
// fp64 or N > 128); on CPU its fused CPU kernels: the twin that tests this mapping, forward and backward, without
// a GPU (the CUDA kernels themselves are tested by test_ssd_scan_cuda).
//
// MIMO (R > 1) runs as one SSD sequence of T R rows, token-major (row t R + r), with a = adt_t on row (t, 0) and
// 0 on rows (t, r > 0): the state after row (t, R-1) is hbar_t, but row (t, a) reads the state before rows
// (t, b > a) were written, so the read-out misses sum_{b > a} (q~_a . s k~_b) x_b, added here from the token's
// R x R products (a strictly upper-triangular mask).
#include <ATen/ATen.h>
#include <torch/csrc/autograd/custom_function.h>

#include <cmath>
#include <cstdlib>
#include <string>
#include <tuple>

#include "ssmlab/core/error.h"
#include "ssmlab/ops/mamba3/detail.h"
#include "ssmlab/ops/mamba3/mamba3.h"
#include "ssmlab/ops/mamba3/phase_rotate.h"
#include "ssmlab/ops/ssd_scan/cpu.h"
#ifdef SSMLAB_WITH_CUDA
#include "ssmlab/ops/mamba3/cuda.h"
#include "ssmlab/ops/ssd_scan/cuda.h"
#endif

namespace ssmlab::ops {
namespace {

using at::Tensor;

// The ssd kernels' inputs: x (B, L, H, P), a (B, L, H), B = C's shape (B, L, H, N), w = 1, no D; contiguous,
// compute dtype. source: the caller's x dtype (bf16: the CUDA chunked forward multiplies in bf16 on the tensor
// cores); q~ and s k~ are computed values, never bf16-exact, so source_bc is the compute dtype.
ssd_scan_cpu::Inputs m3k_inputs(const Tensor& x, const Tensor& a, const Tensor& B, const Tensor& C, const Tensor& S0,
                                at::ScalarType source) {
  ssd_scan_cpu::Inputs in;
  in.x = x.contiguous();
  in.a = a.contiguous();
  in.w = at::ones_like(in.a);
  in.B = B.contiguous();
  in.C = C.contiguous();
  if (S0.defined()) in.S0 = S0.contiguous();
  in.source = source;
  in.source_bc = in.x.scalar_type();
  return in;
}

ssd_scan_cpu::Forward m3k_forward(const ssd_scan_cpu::Inputs& in) {
#ifdef SSMLAB_WITH_CUDA
  if (in.x.is_cuda()) return ssd_scan_cuda::forward(in);
#endif
  return ssd_scan_cpu::forward(in);
}

ssd_scan_cpu::Grads m3k_backward(const ssd_scan_cpu::Inputs& in, const Tensor& starts, const Tensor& dy,
                                 const Tensor& dfin) {
#ifdef SSMLAB_WITH_CUDA
  if (in.x.is_cuda()) return ssd_scan_cuda::backward(in, starts, dy, dfin);
#endif
  return ssd_scan_cpu::backward(in, starts, dy, dfin);
}

// The look-ahead SSD core (rows already laid out) as one autograd Function over x, a, B = s k~, C = q~, S0.
class Mamba3SsdKernelCore : public torch::autograd::Function<Mamba3SsdKernelCore> {
 public:
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx, const Tensor& x,
                                                const Tensor& a, const Tensor& B, const Tensor& C,
                                                const std::optional<Tensor>& S0_opt, int64_t source) {
    const Tensor S0 = S0_opt.value_or(Tensor());
    const auto in = m3k_inputs(x, a, B, C, S0, static_cast<at::ScalarType>(source));
    auto f = m3k_forward(in);
    ctx->save_for_backward({in.x, in.a, in.B, in.C, in.S0, f.starts});
    ctx->saved_data["source"] = source;
    return {f.y, f.final_state};
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto s = ctx->get_saved_variables();
    const auto source = static_cast<at::ScalarType>(ctx->saved_data["source"].toInt());
    const auto in = m3k_inputs(s[0], s[1], s[2], s[3], s[4], source);
    const auto ct = in.x.scalar_type();
    auto conv = [&](const Tensor& t) { return t.defined() ? t.to(ct).contiguous() : Tensor(); };
    const auto g = m3k_backward(in, s[5], conv(grads[0]), conv(grads[1]));
    return {g.dx, g.da, g.dB, g.dC, in.S0.defined() ? g.dS0 : Tensor(), Tensor()};
  }
};

// ---- the rotation and key scale: q~ = Rot(phi, q), kk = sc Rot(phi, k), hand-written backward ------------------

// The ATen twin of kernel_rotate.cuh (CPU, or CUDA without the kernels): the same contract and formulas.
// Pairs as (B, T, R, H, S) views: adjacent (2i, 2i+1), halves (i, i + N/2).
std::pair<Tensor, Tensor> m3k_pairs(const Tensor& v, int64_t s, Mamba3Pairing pairing) {
  if (pairing == Mamba3Pairing::adjacent) {
    const Tensor head = v.narrow(-1, 0, 2 * s).unflatten(-1, {s, 2});
    return {head.select(-1, 0), head.select(-1, 1)};
  }
  return {v.narrow(-1, 0, s), v.narrow(-1, v.size(-1) / 2, s)};
}

mamba3_detail::RotateGrads m3k_rotate_backward_aten(const Tensor& q, const Tensor& k, const Tensor& c,
                                                    const Tensor& sn, const Tensor& sc, const Tensor& dqr_in,
                                                    const Tensor& dkk_in, Mamba3Pairing pairing) {
  const auto ct = c.scalar_type();
  const int64_t s = c.size(3);
  const Tensor qc = q.to(ct), kc = k.to(ct);
  const Tensor dqr = dqr_in.defined() ? dqr_in : at::zeros_like(qc);
  const Tensor dkk = dkk_in.defined() ? dkk_in : at::zeros_like(kc);
  const Tensor c5 = c.unsqueeze(2), s5 = sn.unsqueeze(2), sc5 = sc.unsqueeze(2).unsqueeze(-1);  // (B, T, 1, H, .)
  mamba3_detail::RotateGrads g;
  g.dq = mamba3_detail::rotate(dqr, c5, -s5, pairing);  // Rot^T turns by -phi
  const Tensor gk = dkk * sc5;                           // the cotangent of Rot(k)
  g.dk = mamba3_detail::rotate(gk, c5, -s5, pairing);
  g.dsc = (dkk * mamba3_detail::rotate(kc, c5, s5, pairing)).sum(-1).sum(2);
  if (s == 0) {
    g.dcos = at::zeros_like(c);
    g.dsin = at::zeros_like(sn);
    return g;
  }
  const auto [qa, qb] = m3k_pairs(qc, s, pairing);
  const auto [ka, kb] = m3k_pairs(kc, s, pairing);
  const auto [gqa, gqb] = m3k_pairs(dqr, s, pairing);
  const auto [gka, gkb] = m3k_pairs(gk, s, pairing);
  g.dcos = (gqa * qa + gqb * qb + gka * ka + gkb * kb).sum(2);
  g.dsin = (gqb * qa - gqa * qb + gkb * ka - gka * kb).sum(2);
  return g;
}

// The rotation and key scale as one autograd Function over q, k, cos phi, sin phi, sc: the kernels of cuda.cu for
// CUDA tensors where the build links them, the ATen twin above elsewhere.
class Mamba3RotateScale : public torch::autograd::Function<Mamba3RotateScale> {
 public:
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx, const Tensor& q,
                                                const Tensor& k, const Tensor& c, const Tensor& sn, const Tensor& sc,
                                                int64_t pairing) {
    const auto pr = static_cast<Mamba3Pairing>(pairing);
    const auto ct = c.scalar_type();
    // One input dtype for the kernels (the peers layout's q and k are both fp32; mixed dtypes convert once).
    const Tensor qi = q.scalar_type() == k.scalar_type() ? q.contiguous() : q.to(ct).contiguous();
    const Tensor ki = q.scalar_type() == k.scalar_type() ? k.contiguous() : k.to(ct).contiguous();
    const Tensor cc = c.contiguous(), sc_ = sn.contiguous(), scc = sc.contiguous();
    ctx->save_for_backward({qi, ki, cc, sc_, scc});
    ctx->saved_data["pairing"] = pairing;
    ctx->saved_data["q_dtype"] = static_cast<int64_t>(q.scalar_type());
    ctx->saved_data["k_dtype"] = static_cast<int64_t>(k.scalar_type());
#ifdef SSMLAB_WITH_CUDA
    if (qi.is_cuda()) {
      auto [qr, kk] = mamba3_cuda::rotate_forward(qi, ki, cc, sc_, scc, pr == Mamba3Pairing::halves);
      return {qr, kk};
    }
#endif
    const Tensor c5 = cc.unsqueeze(2), s5 = sc_.unsqueeze(2);
    return {mamba3_detail::rotate(qi.to(ct), c5, s5, pr),
            mamba3_detail::rotate(ki.to(ct), c5, s5, pr) * scc.unsqueeze(2).unsqueeze(-1)};
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto sv = ctx->get_saved_variables();
    const Tensor &q = sv[0], &k = sv[1], &c = sv[2], &sn = sv[3], &sc = sv[4];
    const auto pr = static_cast<Mamba3Pairing>(ctx->saved_data["pairing"].toInt());
    const auto ct = c.scalar_type();
    auto conv = [&](const Tensor& t) { return t.defined() ? t.to(ct).contiguous() : Tensor(); };
    mamba3_detail::RotateGrads g;
#ifdef SSMLAB_WITH_CUDA
    if (q.is_cuda()) {
      auto r = mamba3_cuda::rotate_backward(q, k, c, sn, sc, conv(grads[0]), conv(grads[1]),
                                            pr == Mamba3Pairing::halves);
      g = {r.dq, r.dk, r.dcos, r.dsin, r.dsc};
    }
#endif
    if (!g.dq.defined()) g = m3k_rotate_backward_aten(q, k, c, sn, sc, conv(grads[0]), conv(grads[1]), pr);
    const auto qt = static_cast<at::ScalarType>(ctx->saved_data["q_dtype"].toInt());
    const auto kt = static_cast<at::ScalarType>(ctx->saved_data["k_dtype"].toInt());
    return {g.dq.to(qt), g.dk.to(kt), g.dcos, g.dsin, g.dsc, Tensor()};
  }
};

// ---- the phase sum, rotation, key scale and q.k in one Function (phase_rotate.h) ---------------------------------

// Inputs q, k, dt, theta, sc, phase0 (optional); outputs q~, s k~, q.k (compute dtype) and the last phase (float64).
// Saves q, k, dt, theta, sc and the (B, H, nC, S) chunk offsets; the backward recomputes the phases from them.
class Mamba3PhaseRotate : public torch::autograd::Function<Mamba3PhaseRotate> {
 public:
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx, const Tensor& q,
                                                const Tensor& k, const Tensor& dt, const Tensor& theta,
                                                const Tensor& sc, const std::optional<Tensor>& phase0_opt,
                                                int64_t pairing) {
    const bool halves = static_cast<Mamba3Pairing>(pairing) == Mamba3Pairing::halves;
    const auto ct = sc.scalar_type();
    // One input dtype for the kernels (the peers layout's q and k are both fp32; mixed dtypes convert once).
    const Tensor qi = q.scalar_type() == k.scalar_type() ? q.contiguous() : q.to(ct).contiguous();
    const Tensor ki = q.scalar_type() == k.scalar_type() ? k.contiguous() : k.to(ct).contiguous();
    const Tensor scc = sc.contiguous();
    const Tensor p0 = phase0_opt ? phase0_opt->to(at::kDouble).contiguous() : Tensor();
    mamba3_phase::PhaseRotateOut o;
#ifdef SSMLAB_WITH_CUDA
    if (qi.is_cuda()) o = mamba3_cuda::phase_rotate_forward(qi, ki, dt, theta, scc, p0, halves);
#endif
    if (!o.qr.defined()) o = mamba3_phase::forward_cpu(qi, ki, dt, theta, scc, p0, halves);
    ctx->save_for_backward({qi, ki, dt, theta, scc, o.offsets});
    ctx->saved_data["halves"] = halves;
    ctx->saved_data["q_dtype"] = static_cast<int64_t>(q.scalar_type());
    ctx->saved_data["k_dtype"] = static_cast<int64_t>(k.scalar_type());
    ctx->saved_data["phase0_dtype"] =
        static_cast<int64_t>(phase0_opt ? phase0_opt->scalar_type() : at::kDouble);
    ctx->saved_data["has_phase0"] = phase0_opt.has_value();
    return {o.qr, o.kk, o.qk, o.phase_last};
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto sv = ctx->get_saved_variables();
    const Tensor &q = sv[0], &k = sv[1], &dt = sv[2], &theta = sv[3], &sc = sv[4], &off = sv[5];
    const bool halves = ctx->saved_data["halves"].toBool();
    const auto ct = sc.scalar_type();
    auto conv = [](const Tensor& t, at::ScalarType st) { return t.defined() ? t.to(st).contiguous() : Tensor(); };
    const Tensor dqr = conv(grads[0], ct), dkk = conv(grads[1], ct), dqk = conv(grads[2], ct);
    const Tensor dlast = conv(grads[3], at::kDouble);
    mamba3_phase::PhaseRotateGrads g;
#ifdef SSMLAB_WITH_CUDA
    if (q.is_cuda()) g = mamba3_cuda::phase_rotate_backward(q, k, dt, theta, sc, off, dqr, dkk, dqk, dlast, halves);
#endif
    if (!g.dq.defined()) g = mamba3_phase::backward_cpu(q, k, dt, theta, sc, off, dqr, dkk, dqk, dlast, halves);
    const auto qt = static_cast<at::ScalarType>(ctx->saved_data["q_dtype"].toInt());
    const auto kt = static_cast<at::ScalarType>(ctx->saved_data["k_dtype"].toInt());
    const auto pt = static_cast<at::ScalarType>(ctx->saved_data["phase0_dtype"].toInt());
    const Tensor dphase0 = ctx->saved_data["has_phase0"].toBool() ? g.dphase0.to(pt) : Tensor();
    return {g.dq.to(qt), g.dk.to(kt), g.ddt.to(dt.scalar_type()), g.dtheta.to(theta.scalar_type()), g.dsc, dphase0,
            Tensor()};
  }
};

bool m3k_float_type(at::ScalarType t) {
  return t == at::kFloat || t == at::kDouble || t == at::kBFloat16 || t == at::kHalf;
}

}  // namespace

std::string mamba3_cuda_mode() {
  const char* v = std::getenv("SSMLAB_MAMBA3_CUDA");
  const std::string m = v ? std::string(v) : std::string();
  SSMLAB_CHECK(m.empty() || m == "kernels" || m == "chunked" || m == "fp32" || m == "aten_phase",
               "SSMLAB_MAMBA3_CUDA='", m, "': expected unset, \"kernels\", \"chunked\" (the ATen quadratic form on "
               "CUDA), \"fp32\" (the kernels in split tf32 for 16-bit inputs) or \"aten_phase\" (the kernels with the "
               "phases, cos/sin and q.k in ATen and the older rotation kernel, as before the phase kernels)");
  return m.empty() ? std::string("kernels") : m;
}

bool mamba3_ssd_kernels_support(const at::Tensor& q, const at::Tensor& x) {
  if (!q.defined() || !x.defined() || q.device() != x.device()) return false;
  if (!m3k_float_type(q.scalar_type()) || !m3k_float_type(x.scalar_type())) return false;
  if (q.is_cpu()) return true;
#ifdef SSMLAB_WITH_CUDA
  return q.is_cuda() && q.dim() == 5 && x.dim() == 5 && q.size(4) <= ssd_scan_cuda::kMaxN &&
         x.size(4) <= ssd_scan_cuda::kMaxP;
#else
  return false;
#endif
}

bool mamba3_cuda_supports(const at::Tensor& q, const at::Tensor& x) {
  if (!q.defined() || !q.is_cuda()) return false;
#ifdef SSMLAB_WITH_CUDA
  if (mamba3_cuda_mode() == "chunked") return false;
  if (!x.defined())  // the path question without x (mamba3_path(q)): dtype and N only
    return m3k_float_type(q.scalar_type()) && q.dim() == 5 && q.size(4) <= ssd_scan_cuda::kMaxN;
  return mamba3_ssd_kernels_support(q, x);
#else
  (void)x;
  return false;
#endif
}

namespace mamba3_detail {

std::pair<at::Tensor, at::Tensor> rotate_scale(const at::Tensor& q, const at::Tensor& k, const at::Tensor& cos_phi,
                                               const at::Tensor& sin_phi, const at::Tensor& sc,
                                               Mamba3Pairing pairing) {
  auto outs = Mamba3RotateScale::apply(q, k, cos_phi, sin_phi, sc, static_cast<int64_t>(pairing));
  return {outs[0], outs[1]};
}

PhaseRotated phase_rotate(const at::Tensor& q, const at::Tensor& k, const at::Tensor& dt, const at::Tensor& theta,
                          const at::Tensor& sc, const std::optional<at::Tensor>& phase0, Mamba3Pairing pairing) {
  auto outs = Mamba3PhaseRotate::apply(q, k, dt, theta, sc, phase0, static_cast<int64_t>(pairing));
  return {outs[0], outs[1], outs[2], outs[3]};
}

// prepare() (mamba3.cpp) on the phase kernels: the phases never exist as a (B, T, H, S) tensor outside the kernels;
// the last one (float64) gives the carried phase and the last rotated key in ATen. The same Prepared, plus q.k.
Prepared prepare_phase_kernels(const at::Tensor& q, const at::Tensor& k, const at::Tensor& x, const at::Tensor& adt,
                               const at::Tensor& dt, const at::Tensor& trap, const at::Tensor& theta,
                               const Mamba3Options& opts) {
  const auto ct = compute_dtype(x);
  const int64_t b = q.size(0), t = q.size(1), h = q.size(3);
  Prepared p;
  const Tensor lam = at::sigmoid(trap.to(ct)), dtc = dt.to(ct);  // (B, T, H)
  const Tensor look = (1 - lam) * dtc;                           // (1 - lambda_t) dt_t
  p.rho = at::cat({look.narrow(1, 1, t - 1), at::zeros({b, 1, h}, look.options())}, 1);
  std::optional<Tensor> phase0;
  if (opts.initial) phase0 = opts.initial->phase;
  const PhaseRotated pr = phase_rotate(q, k, dt, theta, lam * dtc + p.rho, phase0, opts.pairing);
  p.qr = pr.qr;
  p.kk = pr.kk;
  p.qk = pr.qk;
  p.x = x.to(ct);
  p.adt = adt.to(ct);
  if (opts.initial)
    p.h0 = opts.initial->state.to(ct) + look.select(1, 0).unsqueeze(-1).unsqueeze(-1) *
                                            rank_outer(opts.initial->x_prev.to(ct), opts.initial->k_prev.to(ct));
  const Tensor c_last = at::cos(pr.phase_last).to(ct).unsqueeze(1), s_last = at::sin(pr.phase_last).to(ct).unsqueeze(1);
  p.kr_last = rotate(k.select(1, t - 1).to(ct), c_last, s_last, opts.pairing);
  p.phase_last = pr.phase_last.to(ct);
  return p;
}

// prepare() (mamba3.cpp) with q~ and s k~ from rotate_scale: one kernel per direction on CUDA instead of a dozen
// ATen passes over (B, T, R, H, N). The same Prepared, term for term.
Prepared prepare_fused_rotation(const at::Tensor& q, const at::Tensor& k, const at::Tensor& x, const at::Tensor& adt,
                                const at::Tensor& dt, const at::Tensor& trap, const at::Tensor& theta,
                                const Mamba3Options& opts) {
  const auto ct = compute_dtype(x);
  const int64_t b = q.size(0), t = q.size(1), h = q.size(3), s = theta.size(3);
  Prepared p;
  // Phases in fp64 whatever the compute dtype (a cumulative sum over T steps), reduced into [0, 2pi).
  const Tensor phase0 = opts.initial ? opts.initial->phase.to(at::kDouble)
                                     : at::zeros({b, h, s}, x.options().dtype(at::kDouble));
  const Tensor phi = at::remainder(
      phase0.unsqueeze(1) + at::cumsum(dt.to(at::kDouble).unsqueeze(-1) * theta.to(at::kDouble), 1), 2 * M_PI);
  const Tensor c = at::cos(phi).to(ct), sn = at::sin(phi).to(ct);  // (B, T, H, S)
  const Tensor lam = at::sigmoid(trap.to(ct)), dtc = dt.to(ct);   // (B, T, H)
  const Tensor look = (1 - lam) * dtc;                            // (1 - lambda_t) dt_t
  p.rho = at::cat({look.narrow(1, 1, t - 1), at::zeros({b, 1, h}, look.options())}, 1);
  std::tie(p.qr, p.kk) = rotate_scale(q, k, c, sn, lam * dtc + p.rho, opts.pairing);
  p.x = x.to(ct);
  p.adt = adt.to(ct);
  if (opts.initial)
    p.h0 = opts.initial->state.to(ct) + look.select(1, 0).unsqueeze(-1).unsqueeze(-1) *
                                            rank_outer(opts.initial->x_prev.to(ct), opts.initial->k_prev.to(ct));
  p.kr_last = rotate(k.select(1, t - 1).to(ct), c.select(1, t - 1).unsqueeze(1), sn.select(1, t - 1).unsqueeze(1),
                     opts.pairing);
  p.phase_last = phi.select(1, t - 1).to(ct);
  return p;
}

std::pair<at::Tensor, at::Tensor> ssd_kernel_core(const Prepared& p, at::ScalarType source) {
  const int64_t b = p.qr.size(0), t = p.qr.size(1), r = p.qr.size(2), h = p.qr.size(3);
  const int64_t pd = p.x.size(4);
  Tensor a = p.adt;  // (B, T, H)
  if (r > 1) a = at::cat({p.adt.unsqueeze(2), at::zeros({b, t, r - 1, h}, p.adt.options())}, 2);  // (B, T, R, H)
  auto rows = [&](const Tensor& v) { return v.reshape({b, t * r, h, v.size(4)}); };
  std::optional<Tensor> h0;
  if (p.h0.defined()) h0 = p.h0;
  auto outs = Mamba3SsdKernelCore::apply(rows(p.x), a.reshape({b, t * r, h}), rows(p.kk), rows(p.qr), h0,
                                         static_cast<int64_t>(source));
  Tensor y = outs[0].view({b, t, r, h, pd});
  if (r > 1) {
    // Row (t, a) read the state before rows (t, b > a): add (q~_a . s k~_b) x_b for b > a.
    const Tensor qh = p.qr.transpose(2, 3), kh = p.kk.transpose(2, 3), xh = p.x.transpose(2, 3);  // (B, T, H, R, .)
    const Tensor later = at::matmul(qh, kh.transpose(-1, -2)).triu(1);                             // (B, T, H, R, R)
    y = y + at::matmul(later, xh).transpose(2, 3);
  }
  return {y, outs[1]};
}

}  // namespace mamba3_detail

Mamba3Out mamba3_ssd_kernels(const at::Tensor& q, const at::Tensor& k, const at::Tensor& x, const at::Tensor& adt,
                             const at::Tensor& dt, const at::Tensor& trap, const at::Tensor& theta,
                             const Mamba3Options& opts) {
  namespace d = mamba3_detail;
  SSMLAB_CHECK(mamba3_ssd_kernels_support(q, x),
               "mamba3_scan: the SSD-kernel path takes CPU tensors, or CUDA tensors where the build links the CUDA "
               "kernels with N <= 256 and P <= 64, of float32/float64/bfloat16/float16; got q ",
               tensor_str(q), ", x ", tensor_str(x));
  if (q.size(1) == 0) return d::empty_scan(q, k, x, theta.size(3), opts);
  const std::string mode = mamba3_cuda_mode();
  const d::Prepared p = mode == "aten_phase" ? d::prepare_fused_rotation(q, k, x, adt, dt, trap, theta, opts)
                                             : d::prepare_phase_kernels(q, k, x, adt, dt, trap, theta, opts);
  const bool wide = x.is_cuda() && mode == "fp32";
  const auto [y_core, h_final] = d::ssd_kernel_core(p, wide ? p.x.scalar_type() : x.scalar_type());
  return d::finish(p, q, k, x, opts, y_core, h_final);
}

}  // namespace ssmlab::ops
