// Checks, backend choice, the decode step and the helpers shared by the Mamba-3 backends (mamba3.h, detail.h).
#include "ssmlab/ops/mamba3/mamba3.h"

#include <cmath>
#include <functional>
#include <vector>

#include <ATen/ATen.h>

#include "ssmlab/core/device.h"
#include "ssmlab/core/error.h"
#include "ssmlab/core/log.h"
#include "ssmlab/ops/mamba3/detail.h"

namespace ssmlab::ops {

namespace mamba3_detail {

at::ScalarType compute_dtype(const at::Tensor& x) { return state_dtype(x.scalar_type()); }

at::Tensor rotate(const at::Tensor& v, const at::Tensor& cos_phi, const at::Tensor& sin_phi, Mamba3Pairing pairing) {
  const int64_t n = v.size(-1), s = cos_phi.size(-1);
  if (s == 0) return v;
  if (pairing == Mamba3Pairing::adjacent) {
    const at::Tensor head = v.narrow(-1, 0, 2 * s).unflatten(-1, {s, 2});
    const at::Tensor a = head.select(-1, 0), b = head.select(-1, 1);
    const at::Tensor rot = at::stack({a * cos_phi - b * sin_phi, a * sin_phi + b * cos_phi}, -1).flatten(-2);
    return 2 * s == n ? rot : at::cat({rot, v.narrow(-1, 2 * s, n - 2 * s)}, -1);
  }
  const int64_t half = n / 2;
  const at::Tensor a = v.narrow(-1, 0, s), b = v.narrow(-1, half, s);
  return at::cat({a * cos_phi - b * sin_phi, v.narrow(-1, s, half - s), a * sin_phi + b * cos_phi,
                  v.narrow(-1, half + s, n - half - s)},
                 -1);
}

at::Tensor rank_outer(const at::Tensor& x, const at::Tensor& k) {
  return at::matmul(x.permute({0, 2, 3, 1}), k.permute({0, 2, 1, 3}));  // (B, H, P, R) (B, H, R, N)
}

at::Tensor step(const at::Tensor& q, const at::Tensor& k, const at::Tensor& x, const at::Tensor& adt,
                const at::Tensor& dt, const at::Tensor& trap, const at::Tensor& theta, StepState& st,
                Mamba3Pairing pairing, bool mod_2pi, const std::optional<at::Tensor>& D) {
  st.phase = st.phase + dt.unsqueeze(-1) * theta;                                   // (B, H, S)
  if (mod_2pi) st.phase = at::remainder(st.phase, 2 * M_PI);
  const at::Tensor c = at::cos(st.phase).unsqueeze(1), s = at::sin(st.phase).unsqueeze(1);  // (B, 1, H, S)
  const at::Tensor qr = rotate(q, c, s, pairing), kr = rotate(k, c, s, pairing);   // (B, R, H, N)
  const at::Tensor lam = at::sigmoid(trap), alpha = at::exp(adt);                   // (B, H)
  const at::Tensor beta = (1 - lam) * dt * alpha, gamma = lam * dt;
  auto hw = [](const at::Tensor& w) { return w.unsqueeze(-1).unsqueeze(-1); };       // (B, H, 1, 1)
  st.h = hw(alpha) * st.h + hw(beta) * rank_outer(st.x_prev, st.k_prev) + hw(gamma) * rank_outer(x, kr);
  at::Tensor y = at::matmul(st.h, qr.permute({0, 2, 3, 1})).permute({0, 3, 1, 2});  // (B, H, P, R) -> (B, R, H, P)
  if (D) y = y + D->view({1, 1, -1, 1}) * x;
  st.k_prev = kr;
  st.x_prev = x;
  return y;
}

StepState initial_state(const at::Tensor& q, const at::Tensor& x, int64_t S, const Mamba3Options& opts) {
  const auto ct = compute_dtype(x);
  const int64_t b = q.size(0), r = q.size(2), h = q.size(3), n = q.size(4), p = x.size(4);
  const auto o = x.options().dtype(ct);
  if (opts.initial)
    return {opts.initial->phase.to(ct), opts.initial->state.to(ct), opts.initial->k_prev.to(ct),
            opts.initial->x_prev.to(ct)};
  return {at::zeros({b, h, S}, o), at::zeros({b, h, p, n}, o), at::zeros({b, r, h, n}, o), at::zeros({b, r, h, p}, o)};
}

Prepared prepare(const at::Tensor& q, const at::Tensor& k, const at::Tensor& x, const at::Tensor& adt,
                 const at::Tensor& dt, const at::Tensor& trap, const at::Tensor& theta, const Mamba3Options& opts) {
  const auto ct = compute_dtype(x);
  const int64_t b = q.size(0), t = q.size(1), h = q.size(3), s = theta.size(3);
  Prepared p;
  // Phases in fp64 whatever the compute dtype (a cumulative sum over T steps), reduced into [0, 2pi).
  const at::Tensor phase0 = opts.initial ? opts.initial->phase.to(at::kDouble)
                                         : at::zeros({b, h, s}, x.options().dtype(at::kDouble));
  const at::Tensor phi = at::remainder(
      phase0.unsqueeze(1) + at::cumsum(dt.to(at::kDouble).unsqueeze(-1) * theta.to(at::kDouble), 1), 2 * M_PI);
  const at::Tensor c = at::cos(phi).to(ct), sn = at::sin(phi).to(ct);                // (B, T, H, S)
  const at::Tensor lam = at::sigmoid(trap.to(ct)), dtc = dt.to(ct);                 // (B, T, H)
  const at::Tensor look = (1 - lam) * dtc;                                          // (1 - lambda_t) dt_t
  p.rho = at::cat({look.narrow(1, 1, t - 1), at::zeros({b, 1, h}, look.options())}, 1);
  const at::Tensor sc = (lam * dtc + p.rho).unsqueeze(2).unsqueeze(-1);             // s_t (B, T, 1, H, 1)
  const at::Tensor qc = q.to(ct), kc = k.to(ct);
  const int64_t n = q.size(4), half = n / 2;
  if (opts.pairing == Mamba3Pairing::adjacent && n % 2 == 1) {
    p.qr = rotate(qc, c.unsqueeze(2), sn.unsqueeze(2), opts.pairing);
    p.kk = rotate(kc, c.unsqueeze(2), sn.unsqueeze(2), opts.pairing) * sc;
  } else {
    // Full-width coefficients, Rot(v) = v o Cw + swap(v) o Sw, with swap exchanging the two members of each pair:
    // fewer passes over the (B, T, R, H, N) tensors than rotating the pairs one by one (the reference does that).
    const auto o = c.options();
    at::Tensor Cw, Sw;
    std::function<at::Tensor(const at::Tensor&)> swap;
    if (opts.pairing == Mamba3Pairing::adjacent) {
      const at::Tensor one = at::ones({b, t, h, n - 2 * s}, o), zero = at::zeros({b, t, h, n - 2 * s}, o);
      Cw = at::cat({c.repeat_interleave(2, -1), one}, -1);
      Sw = at::cat({at::stack({-sn, sn}, -1).flatten(-2), zero}, -1);
      swap = [half](const at::Tensor& v) { return v.unflatten(-1, {half, 2}).flip(-1).flatten(-2); };
    } else {
      const at::Tensor one = at::ones({b, t, h, half - s}, o), zero = at::zeros({b, t, h, half - s}, o);
      Cw = at::cat({c, one, c, one}, -1);
      Sw = at::cat({-sn, zero, sn, zero}, -1);
      swap = [half](const at::Tensor& v) { return at::roll(v, half, -1); };
    }
    Cw = Cw.unsqueeze(2), Sw = Sw.unsqueeze(2);                                      // (B, T, 1, H, N)
    p.qr = qc * Cw + swap(qc) * Sw;
    p.kk = kc * (Cw * sc) + swap(kc) * (Sw * sc);
  }
  p.x = x.to(ct);
  p.adt = adt.to(ct);
  if (opts.initial)
    p.h0 = opts.initial->state.to(ct) + look.select(1, 0).unsqueeze(-1).unsqueeze(-1) *
                                            rank_outer(opts.initial->x_prev.to(ct), opts.initial->k_prev.to(ct));
  p.kr_last = rotate(kc.select(1, t - 1), c.select(1, t - 1).unsqueeze(1), sn.select(1, t - 1).unsqueeze(1),
                     opts.pairing);
  p.phase_last = phi.select(1, t - 1).to(ct);
  return p;
}

Mamba3Out finish(const Prepared& p, const at::Tensor& q, const at::Tensor& k, const at::Tensor& x,
                 const Mamba3Options& opts, const at::Tensor& y_core, const at::Tensor& h_final) {
  const auto ct = p.x.scalar_type();
  const int64_t h = q.size(3);
  // Diagonal correction: rho_t sum_b (q_{t,a} . k_{t,b}) x_{t,b} (rotation-invariant: same angle for q and k).
  const at::Tensor rho = p.rho.unsqueeze(2).unsqueeze(-1);                          // (B, T, 1, H, 1)
  at::Tensor y;
  if (q.size(2) == 1) {  // SISO: y = y_core + (D - rho q.k) x, one pass over x
    const at::Tensor qk = p.qk.defined() ? p.qk.unsqueeze(-1) : (q.to(ct) * k.to(ct)).sum(-1, /*keepdim=*/true);
    at::Tensor coef = -rho * qk;
    if (opts.D) coef = coef + opts.D->to(ct).view({1, 1, 1, h, 1});
    y = y_core + coef * p.x;
  } else {
    const at::Tensor qh = q.to(ct).transpose(2, 3), kh = k.to(ct).transpose(2, 3);  // (B, T, H, R, N)
    const at::Tensor corr = at::matmul(at::matmul(qh, kh.transpose(-1, -2)), p.x.transpose(2, 3)).transpose(2, 3);
    y = y_core - rho * corr;
    if (opts.D) y = y + opts.D->to(ct).view({1, 1, 1, h, 1}) * p.x;
  }
  Mamba3Out out;
  out.y = y.to(x.scalar_type());
  out.final.phase = p.phase_last;
  out.final.state = h_final;
  out.final.k_prev = p.kr_last.to(k.scalar_type());
  out.final.x_prev = x.select(1, x.size(1) - 1).clone(at::MemoryFormat::Contiguous);
  return out;
}

Mamba3Out empty_scan(const at::Tensor& q, const at::Tensor& k, const at::Tensor& x, int64_t S,
                     const Mamba3Options& opts) {
  const StepState st = initial_state(q, x, S, opts);
  Mamba3Out out;
  out.y = at::zeros({q.size(0), 0, q.size(2), q.size(3), x.size(4)}, x.options());
  out.final.phase = st.phase.clone();
  out.final.state = st.h.clone();
  out.final.k_prev = st.k_prev.to(k.scalar_type()).clone();
  out.final.x_prev = st.x_prev.to(x.scalar_type()).clone();
  return out;
}

}  // namespace mamba3_detail

const char* to_string(Mamba3Pairing pairing) {
  return pairing == Mamba3Pairing::adjacent ? "adjacent" : "halves";
}

Mamba3Pairing mamba3_pairing_from(const std::string& name) {
  if (name == "adjacent") return Mamba3Pairing::adjacent;
  if (name == "halves") return Mamba3Pairing::halves;
  throw Error(str("mamba3: unknown rotation pairing '", name, "': expected \"adjacent\" (pairs (2i, 2i+1), SISO) or "
                  "\"halves\" (pairs (i, i + N/2), MIMO)"));
}

const char* to_string(Mamba3Path path) {
  switch (path) {
    case Mamba3Path::reference: return "reference";
    case Mamba3Path::chunked: return "chunked";
    case Mamba3Path::fused: return "fused";
  }
  return "?";
}

void check_mamba3_inputs(const at::Tensor& q, const at::Tensor& k, const at::Tensor& x, const at::Tensor& adt,
                         const at::Tensor& dt, const at::Tensor& trap, const at::Tensor& theta,
                         const Mamba3Options& o) {
  auto all = [&] {
    std::string s = str("q ", tensor_str(q), ", k ", tensor_str(k), ", x ", tensor_str(x), ", adt ", tensor_str(adt),
                        ", dt ", tensor_str(dt), ", trap ", tensor_str(trap), ", theta ", tensor_str(theta));
    if (o.D) s += str(", D ", tensor_str(*o.D));
    if (o.initial)
      s += str(", initial.phase ", tensor_str(o.initial->phase), ", initial.state ", tensor_str(o.initial->state),
               ", initial.k_prev ", tensor_str(o.initial->k_prev), ", initial.x_prev ", tensor_str(o.initial->x_prev));
    return s;
  };
  SSMLAB_CHECK(q.defined() && k.defined() && x.defined() && adt.defined() && dt.defined() && trap.defined() &&
                   theta.defined(),
               "mamba3_scan: q, k, x, adt, dt, trap and theta are required; got ", all());
  SSMLAB_CHECK(q.dim() == 5, "mamba3_scan: q must be (B, T, R, H, N); got ", all());
  const int64_t b = q.size(0), t = q.size(1), r = q.size(2), h = q.size(3), n = q.size(4);
  SSMLAB_CHECK(r >= 1 && h >= 1 && n >= 1, "mamba3_scan: R, H and N must be >= 1; got ", all());
  SSMLAB_CHECK(k.sizes() == q.sizes(), "mamba3_scan: k must match q (B, T, R, H, N); got ", all());
  SSMLAB_CHECK(x.dim() == 5 && x.size(0) == b && x.size(1) == t && x.size(2) == r && x.size(3) == h && x.size(4) >= 1,
               "mamba3_scan: x must be (B, T, R, H, P) with (B, T, R, H) = ", shape_str({b, t, r, h}), " as q's; got ",
               all());
  const int64_t p = x.size(4);
  for (const auto& [name, w] : {std::pair<const char*, const at::Tensor*>{"adt", &adt}, {"dt", &dt}, {"trap", &trap}})
    SSMLAB_CHECK(w->dim() == 3 && w->size(0) == b && w->size(1) == t && w->size(2) == h, "mamba3_scan: ", name,
                 " must be (B, T, H) = ", shape_str({b, t, h}), "; got ", all());
  SSMLAB_CHECK(theta.dim() == 4 && theta.size(0) == b && theta.size(1) == t && theta.size(2) == h,
               "mamba3_scan: theta must be (B, T, H, S) with (B, T, H) = ", shape_str({b, t, h}), "; got ", all());
  const int64_t s = theta.size(3);
  if (o.pairing == Mamba3Pairing::adjacent)
    SSMLAB_CHECK(2 * s <= n, "mamba3_scan: adjacent pairing rotates pairs (2i, 2i+1) for i < S, so 2 S <= N; got S = ",
                 s, ", N = ", n, " (", all(), ")");
  else
    SSMLAB_CHECK(n % 2 == 0 && s <= n / 2, "mamba3_scan: halves pairing rotates pairs (i, i + N/2) for i < S, so N "
                 "must be even and S <= N/2; got S = ", s, ", N = ", n, " (", all(), ")");
  if (o.D) SSMLAB_CHECK(o.D->dim() == 1 && o.D->size(0) == h, "mamba3_scan: D must be (H) = (", h, "); got ", all());
  std::vector<const at::Tensor*> ts = {&q, &k, &x, &adt, &dt, &trap, &theta};
  if (o.D) ts.push_back(&*o.D);
  if (o.initial) {
    const Mamba3State& i = *o.initial;
    SSMLAB_CHECK(i.phase.defined() && i.state.defined() && i.k_prev.defined() && i.x_prev.defined(),
                 "mamba3_scan: an initial state needs all of phase, state, k_prev and x_prev; got ", all());
    SSMLAB_CHECK(i.phase.sizes() == c10::IntArrayRef({b, h, s}),
                 "mamba3_scan: initial.phase must be (B, H, S) = ", shape_str({b, h, s}), "; got ", all());
    SSMLAB_CHECK(i.state.sizes() == c10::IntArrayRef({b, h, p, n}),
                 "mamba3_scan: initial.state must be (B, H, P, N) = ", shape_str({b, h, p, n}), "; got ", all());
    SSMLAB_CHECK(i.k_prev.sizes() == c10::IntArrayRef({b, r, h, n}),
                 "mamba3_scan: initial.k_prev must be (B, R, H, N) = ", shape_str({b, r, h, n}), "; got ", all());
    SSMLAB_CHECK(i.x_prev.sizes() == c10::IntArrayRef({b, r, h, p}),
                 "mamba3_scan: initial.x_prev must be (B, R, H, P) = ", shape_str({b, r, h, p}), "; got ", all());
    for (const at::Tensor* e : {&i.phase, &i.state, &i.k_prev, &i.x_prev}) ts.push_back(e);
  }
  for (const at::Tensor* e : ts) {
    SSMLAB_CHECK(e->device() == q.device(), "mamba3_scan: all inputs must be on one device; got ", all());
    SSMLAB_CHECK(at::isFloatingType(e->scalar_type()), "mamba3_scan: inputs must be floating point; got ", all());
  }
  SSMLAB_CHECK(o.chunk_size >= 1, "mamba3_scan: chunk_size must be >= 1; got ", o.chunk_size);
}

Mamba3Path mamba3_path(const at::Tensor& q, const std::string& backend, const at::Tensor& x) {
  SSMLAB_CHECK(backend == "auto" || backend == "reference" || backend == "chunked" || backend == "fused",
               "mamba3_scan: unknown backend '", backend, "': expected \"auto\", \"reference\", \"chunked\" or "
               "\"fused\"");
  if (backend == "reference") return Mamba3Path::reference;
  if (backend == "chunked") return Mamba3Path::chunked;
  if (backend == "fused") return Mamba3Path::fused;
  return mamba3_cpu_supports(q) || mamba3_cuda_supports(q, x) ? Mamba3Path::fused : Mamba3Path::chunked;
}

Mamba3Out mamba3_scan(const at::Tensor& q, const at::Tensor& k, const at::Tensor& x, const at::Tensor& adt,
                      const at::Tensor& dt, const at::Tensor& trap, const at::Tensor& theta, const Mamba3Options& opts,
                      const std::string& backend) {
  const Mamba3Path path = mamba3_path(q, backend, x);
  check_mamba3_inputs(q, k, x, adt, dt, trap, theta, opts);
  switch (path) {
    case Mamba3Path::reference: return mamba3_reference(q, k, x, adt, dt, trap, theta, opts);
    case Mamba3Path::fused: return mamba3_fused(q, k, x, adt, dt, trap, theta, opts);
    case Mamba3Path::chunked: break;
  }
  if (backend == "auto") {
    const std::string dev = c10::DeviceTypeName(q.device().type(), /*lower_case=*/true);
    log::warn_once("mamba3_scan:chunked:" + dev, str("ops: no fused mamba3_scan kernel for ", dev, " (",
                                                    c10::toString(x.scalar_type()), ", N ", q.size(4), ", P ",
                                                    x.size(4), "; CUDA: kernels built, N <= 256, P <= 64, "
                                                    "SSMLAB_MAMBA3_CUDA not 'chunked'"
                                                    "); running the chunked quadratic form in ATen"));
  }
  return mamba3_chunked(q, k, x, adt, dt, trap, theta, opts);
}

std::pair<at::Tensor, Mamba3State> mamba3_step(const at::Tensor& q, const at::Tensor& k, const at::Tensor& x,
                                               const at::Tensor& adt, const at::Tensor& dt, const at::Tensor& trap,
                                               const at::Tensor& theta, const Mamba3State& state,
                                               Mamba3Pairing pairing, const std::optional<at::Tensor>& D) {
  auto got = [&] {
    return str("q ", tensor_str(q), ", k ", tensor_str(k), ", x ", tensor_str(x), ", adt ", tensor_str(adt), ", dt ",
               tensor_str(dt), ", trap ", tensor_str(trap), ", theta ", tensor_str(theta));
  };
  SSMLAB_CHECK(q.defined() && q.dim() == 4 && k.defined() && k.dim() == 4 && x.defined() && x.dim() == 4 &&
                   adt.defined() && adt.dim() == 2 && dt.defined() && dt.dim() == 2 && trap.defined() &&
                   trap.dim() == 2 && theta.defined() && theta.dim() == 3,
               "mamba3_step: expected q, k (B, R, H, N), x (B, R, H, P), adt, dt, trap (B, H) and theta (B, H, S); "
               "got ", got());
  Mamba3Options o;
  o.pairing = pairing;
  o.D = D;
  o.initial = state;
  check_mamba3_inputs(q.unsqueeze(1), k.unsqueeze(1), x.unsqueeze(1), adt.unsqueeze(1), dt.unsqueeze(1),
                      trap.unsqueeze(1), theta.unsqueeze(1), o);
  const auto ct = mamba3_detail::compute_dtype(x);
  mamba3_detail::StepState st{state.phase.to(ct), state.state.to(ct), state.k_prev.to(ct), state.x_prev.to(ct)};
  std::optional<at::Tensor> Dc;
  if (D) Dc = D->to(ct);
  const at::Tensor y = mamba3_detail::step(q.to(ct), k.to(ct), x.to(ct), adt.to(ct), dt.to(ct), trap.to(ct),
                                           theta.to(ct), st, pairing, /*mod_2pi=*/false, Dc);
  Mamba3State next;
  next.phase = st.phase;
  next.state = st.h;
  next.k_prev = st.k_prev.to(k.scalar_type());
  next.x_prev = x.clone(at::MemoryFormat::Contiguous);
  return {y.to(x.scalar_type()), next};
}

}  // namespace ssmlab::ops
