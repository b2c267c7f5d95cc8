// The CPU twin of the Mamba-3 phase kernels (phase_rotate.h; kernel_phase.cuh): the same chunks, the same float64
// sums in the same order (chunk sums from 0, the column prefix from phase0, the in-chunk running sum from the
// chunk's offset; backward: the in-chunk suffix sums, the column suffix from dlast), the same per-element math
// (phase_math.h), as plain loops over the CUDA grid's units. What CPU tests run to check the kernels' algebra.
#include <ATen/ATen.h>

#include <vector>

#include "ssmlab/ops/mamba3/phase_math.h"
#include "ssmlab/ops/mamba3/phase_rotate.h"
#include "ssmlab/ops/poison.h"

namespace ssmlab::ops::mamba3_phase {
namespace {

OutputPoison& phase_twin_poison() {
  static OutputPoison p;
  return p;
}

struct TwinGeom {
  int64_t b, t, r, h, n, s, tc, nc;
  bool halves;
};

TwinGeom twin_geom(const at::Tensor& q, const at::Tensor& theta, bool halves) {
  TwinGeom g{q.size(0), q.size(1), q.size(2), q.size(3), q.size(4), theta.size(3), 0, 0, halves};
  g.tc = phase_chunk(g.s);
  g.nc = (g.t + g.tc - 1) / g.tc;
  return g;
}

// The tile's phases P (float64) and cos, sin (C), as tile_phases in kernel_phase.cuh.
template <typename C>
void twin_tile_phases(const TwinGeom& g, const double* dt, const double* th, const double* off, int64_t bb, int64_t c,
                      int64_t hh, int64_t t0, int64_t len, std::vector<double>& ph, std::vector<C>& cs,
                      std::vector<C>& sn) {
  for (int64_t tl = 0; tl < len; ++tl)
    for (int64_t s = 0; s < g.s; ++s) {
      const int64_t t = t0 + tl;
      ph[tl * g.s + s] = dt[(bb * g.t + t) * g.h + hh] * th[((bb * g.t + t) * g.h + hh) * g.s + s];
    }
  for (int64_t s = 0; s < g.s; ++s) {
    double acc = off[((bb * g.h + hh) * g.nc + c) * g.s + s];
    for (int64_t tl = 0; tl < len; ++tl) {
      acc += ph[tl * g.s + s];
      ph[tl * g.s + s] = acc;
    }
  }
  for (int64_t e = 0; e < len * g.s; ++e) phase_cos_sin<C>(ph[e], cs[e], sn[e]);
}

template <typename C>
void twin_forward(const TwinGeom& g, const C* q, const C* k, const double* dt, const double* th, const C* sc,
                  const double* phase0, PhaseRotateOut& out) {
  double* off = out.offsets.data_ptr<double>();
  double* last = out.phase_last.data_ptr<double>();
  C* qr = out.qr.data_ptr<C>();
  C* kk = out.kk.data_ptr<C>();
  C* qk = out.qk.data_ptr<C>();
  // chunk sums
  for (int64_t bb = 0; bb < g.b; ++bb)
    for (int64_t c = 0; c < g.nc; ++c)
      for (int64_t hh = 0; hh < g.h; ++hh)
        for (int64_t s = 0; s < g.s; ++s) {
          double acc = 0;
          for (int64_t t = c * g.tc; t < std::min(c * g.tc + g.tc, g.t); ++t)
            acc += dt[(bb * g.t + t) * g.h + hh] * th[((bb * g.t + t) * g.h + hh) * g.s + s];
          off[((bb * g.h + hh) * g.nc + c) * g.s + s] = acc;
        }
  // column offsets
  for (int64_t col = 0; col < g.b * g.h * g.s; ++col) {
    double* o = off + (col / g.s) * g.nc * g.s + col % g.s;
    double acc = phase0 ? phase0[col] : 0.0;
    for (int64_t c = 0; c < g.nc; ++c) {
      const double v = o[c * g.s];
      o[c * g.s] = acc;
      acc += v;
    }
    last[col] = wrap_2pi(acc);
  }
  // tiles
  std::vector<double> ph(static_cast<size_t>(g.tc * g.s));
  std::vector<C> cs(ph.size()), sn(ph.size());
  const int64_t npairs = g.n / 2;
  for (int64_t bb = 0; bb < g.b; ++bb)
    for (int64_t c = 0; c < g.nc; ++c)
      for (int64_t hh = 0; hh < g.h; ++hh) {
        const int64_t t0 = c * g.tc, len = std::min(g.tc, g.t - t0);
        twin_tile_phases<C>(g, dt, th, off, bb, c, hh, t0, len, ph, cs, sn);
        for (int64_t tl = 0; tl < len; ++tl) {
          const int64_t t = t0 + tl;
          const C scale = sc[(bb * g.t + t) * g.h + hh];
          for (int64_t r = 0; r < g.r; ++r) {
            const int64_t row = (bb * g.t + t) * g.r + r;
            const int64_t base = (row * g.h + hh) * g.n;
            C dot = 0;
            for (int64_t i = 0; i < npairs; ++i) {
              int64_t ia, ib;
              pair_dims(i, g.n, g.halves, ia, ib);
              const C qa = q[base + ia], qb = q[base + ib], ka = k[base + ia], kb = k[base + ib];
              dot += qa * ka + qb * kb;
              C co = 1, si = 0;
              if (i < g.s) co = cs[tl * g.s + i], si = sn[tl * g.s + i];
              qr[base + ia] = qa * co - qb * si;
              qr[base + ib] = qa * si + qb * co;
              kk[base + ia] = scale * (ka * co - kb * si);
              kk[base + ib] = scale * (ka * si + kb * co);
            }
            if (g.n & 1) {
              const int64_t m = base + g.n - 1;
              dot += q[m] * k[m];
              qr[m] = q[m];
              kk[m] = scale * k[m];
            }
            qk[row * g.h + hh] = dot;
          }
        }
      }
}

template <typename C>
void twin_backward(const TwinGeom& g, const C* q, const C* k, const double* dt, const double* th, const C* sc,
                   const double* off, const C* dqr, const C* dkk, const C* dqk, const double* dlast,
                   PhaseRotateGrads& out) {
  C* dq = out.dq.data_ptr<C>();
  C* dk = out.dk.data_ptr<C>();
  C* dsc = out.dsc.data_ptr<C>();
  C* dtheta = out.dtheta.data_ptr<C>();
  C* ddt = out.ddt.data_ptr<C>();
  double* dphase0 = out.dphase0.data_ptr<double>();
  std::vector<C> gloc(static_cast<size_t>(g.b * g.t * g.h * g.s));
  std::vector<double> dchunk(static_cast<size_t>(g.b * g.h * g.nc * g.s));
  std::vector<double> ph(static_cast<size_t>(g.tc * g.s));
  std::vector<C> cs(ph.size()), sn(ph.size());
  const int64_t npairs = g.n / 2;
  auto grad = [](const C* p, int64_t i) { return p ? p[i] : C(0); };
  for (int64_t bb = 0; bb < g.b; ++bb)
    for (int64_t c = 0; c < g.nc; ++c)
      for (int64_t hh = 0; hh < g.h; ++hh) {
        const int64_t t0 = c * g.tc, len = std::min(g.tc, g.t - t0);
        twin_tile_phases<C>(g, dt, th, off, bb, c, hh, t0, len, ph, cs, sn);
        for (int64_t tl = 0; tl < len; ++tl) {
          const int64_t t = t0 + tl;
          const C scale = sc[(bb * g.t + t) * g.h + hh];
          C dscale = 0;
          for (int64_t i = 0; i < npairs; ++i) {
            int64_t ia, ib;
            pair_dims(i, g.n, g.halves, ia, ib);
            const bool rotated = i < g.s;
            const C co = rotated ? cs[tl * g.s + i] : C(1), si = rotated ? sn[tl * g.s + i] : C(0);
            C dc = 0, ds = 0;
            for (int64_t r = 0; r < g.r; ++r) {
              const int64_t row = (bb * g.t + t) * g.r + r;
              const int64_t base = (row * g.h + hh) * g.n;
              const C qa = q[base + ia], qb = q[base + ib], ka = k[base + ia], kb = k[base + ib];
              const C gqa = grad(dqr, base + ia), gqb = grad(dqr, base + ib);
              const C gka = grad(dkk, base + ia), gkb = grad(dkk, base + ib);
              const C gqk = grad(dqk, row * g.h + hh);
              pair_backward(qa, qb, ka, kb, gqa, gqb, gka, gkb, gqk, scale, rotated, co, si, dc, ds, dscale,
                            dq[base + ia], dq[base + ib], dk[base + ia], dk[base + ib]);
            }
            if (rotated)
              ph[tl * g.s + i] = static_cast<double>(ds) * static_cast<double>(co) -
                                 static_cast<double>(dc) * static_cast<double>(si);
          }
          if (g.n & 1)
            for (int64_t r = 0; r < g.r; ++r) {
              const int64_t row = (bb * g.t + t) * g.r + r;
              const int64_t m = (row * g.h + hh) * g.n + g.n - 1;
              const C gk = grad(dkk, m), gqk = grad(dqk, row * g.h + hh);
              dscale += gk * k[m];
              dq[m] = grad(dqr, m) + gqk * k[m];
              dk[m] = scale * gk + gqk * q[m];
            }
          dsc[(bb * g.t + t) * g.h + hh] = dscale;
        }
        for (int64_t s = 0; s < g.s; ++s) {
          double acc = 0;
          for (int64_t tl = len - 1; tl >= 0; --tl) {
            acc += ph[tl * g.s + s];
            ph[tl * g.s + s] = acc;
          }
          dchunk[((bb * g.h + hh) * g.nc + c) * g.s + s] = acc;
        }
        for (int64_t e = 0; e < len * g.s; ++e)
          gloc[((bb * g.t + t0 + e / g.s) * g.h + hh) * g.s + e % g.s] = static_cast<C>(ph[e]);
      }
  for (int64_t col = 0; col < g.b * g.h * g.s; ++col) {
    double* o = dchunk.data() + (col / g.s) * g.nc * g.s + col % g.s;
    double acc = dlast ? dlast[col] : 0.0;
    for (int64_t c = g.nc - 1; c >= 0; --c) {
      const double v = o[c * g.s];
      o[c * g.s] = acc;
      acc += v;
    }
    dphase0[col] = acc;
  }
  for (int64_t row = 0; row < g.b * g.t * g.h; ++row) {
    const int64_t hh = row % g.h, t = (row / g.h) % g.t, bb = row / (g.h * g.t), c = t / g.tc;
    const double* suf = dchunk.data() + ((bb * g.h + hh) * g.nc + c) * g.s;
    double part = 0;
    for (int64_t s = 0; s < g.s; ++s) {
      const double G = static_cast<double>(gloc[row * g.s + s]) + suf[s];
      dtheta[row * g.s + s] = static_cast<C>(dt[row] * G);
      part += th[row * g.s + s] * G;
    }
    ddt[row] = static_cast<C>(part);
  }
}

at::Tensor twin_in(const at::Tensor& t, at::ScalarType st) {
  return t.defined() ? t.to(at::kCPU, st).contiguous() : at::Tensor();
}

}  // namespace

void set_poison_outputs(bool on) { phase_twin_poison().set(on); }

PhaseRotateOut forward_cpu(const at::Tensor& q, const at::Tensor& k, const at::Tensor& dt, const at::Tensor& theta,
                           const at::Tensor& sc, const at::Tensor& phase0, bool halves) {
  const auto ct = sc.scalar_type();
  TORCH_CHECK(ct == at::kFloat || ct == at::kDouble, "mamba3_phase::forward_cpu: sc must be float32/float64");
  const TwinGeom g = twin_geom(q, theta, halves);
  const auto& poison = phase_twin_poison();
  const auto o = q.options().dtype(ct);
  const auto o64 = q.options().dtype(at::kDouble);
  PhaseRotateOut out;
  out.qr = poison.empty(q.sizes(), o);
  out.kk = poison.empty(q.sizes(), o);
  out.qk = poison.empty({g.b, g.t, g.r, g.h}, o);
  out.phase_last = poison.empty({g.b, g.h, g.s}, o64);
  out.offsets = poison.empty({g.b, g.h, g.nc, g.s}, o64);
  const at::Tensor qc = twin_in(q, ct), kc = twin_in(k, ct), dtd = twin_in(dt, at::kDouble);
  const at::Tensor thd = twin_in(theta, at::kDouble), scc = twin_in(sc, ct), p0 = twin_in(phase0, at::kDouble);
  AT_DISPATCH_FLOATING_TYPES(ct, "mamba3_phase_forward_cpu", [&] {
    twin_forward<scalar_t>(g, qc.const_data_ptr<scalar_t>(), kc.const_data_ptr<scalar_t>(),
                           dtd.const_data_ptr<double>(), thd.const_data_ptr<double>(), scc.const_data_ptr<scalar_t>(),
                           p0.defined() ? p0.const_data_ptr<double>() : nullptr, out);
  });
  return out;
}

PhaseRotateGrads backward_cpu(const at::Tensor& q, const at::Tensor& k, const at::Tensor& dt, const at::Tensor& theta,
                              const at::Tensor& sc, const at::Tensor& offsets, const at::Tensor& dqr,
                              const at::Tensor& dkk, const at::Tensor& dqk, const at::Tensor& dlast, bool halves) {
  const auto ct = sc.scalar_type();
  TORCH_CHECK(ct == at::kFloat || ct == at::kDouble, "mamba3_phase::backward_cpu: sc must be float32/float64");
  const TwinGeom g = twin_geom(q, theta, halves);
  TORCH_CHECK(offsets.scalar_type() == at::kDouble && offsets.sizes() == c10::IntArrayRef({g.b, g.h, g.nc, g.s}),
              "mamba3_phase::backward_cpu: offsets must be the forward's (B, H, nC, S) float64 tensor");
  const auto& poison = phase_twin_poison();
  const auto o = q.options().dtype(ct);
  PhaseRotateGrads out;
  out.dq = poison.empty(q.sizes(), o);
  out.dk = poison.empty(q.sizes(), o);
  out.ddt = poison.empty({g.b, g.t, g.h}, o);
  out.dtheta = poison.empty({g.b, g.t, g.h, g.s}, o);
  out.dsc = poison.empty({g.b, g.t, g.h}, o);
  out.dphase0 = poison.empty({g.b, g.h, g.s}, q.options().dtype(at::kDouble));
  const at::Tensor qc = twin_in(q, ct), kc = twin_in(k, ct), dtd = twin_in(dt, at::kDouble);
  const at::Tensor thd = twin_in(theta, at::kDouble), scc = twin_in(sc, ct), offc = twin_in(offsets, at::kDouble);
  const at::Tensor gq = twin_in(dqr, ct), gk = twin_in(dkk, ct), gqk = twin_in(dqk, ct);
  const at::Tensor gl = twin_in(dlast, at::kDouble);
  AT_DISPATCH_FLOATING_TYPES(ct, "mamba3_phase_backward_cpu", [&] {
    using C = scalar_t;
    auto ptr = [](const at::Tensor& t) { return t.defined() ? t.const_data_ptr<C>() : nullptr; };
    twin_backward<C>(g, qc.const_data_ptr<C>(), kc.const_data_ptr<C>(), dtd.const_data_ptr<double>(),
                     thd.const_data_ptr<double>(), scc.const_data_ptr<C>(), offc.const_data_ptr<double>(), ptr(gq),
                     ptr(gk), ptr(gqk), gl.defined() ? gl.const_data_ptr<double>() : nullptr, out);
  });
  if (g.s == 0) out.ddt.zero_();
  return out;
}

}  // namespace ssmlab::ops::mamba3_phase
