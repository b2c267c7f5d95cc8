// Shared by the ssd_scan tests: random inputs, an independent scalar-loop oracle in float64 and a gradient
// helper. The scalar loop is written from the recurrence in ops/ssd_scan/ssd_scan.h with plain doubles, so it
// shares no code with the op.
#pragma once
#include <cmath>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <torch/csrc/autograd/autograd.h>

#include "ssmlab/ops/ssd_scan/ssd_scan.h"

namespace ssmlab::test {

struct SsdShape {
  int64_t b, l, h, p, n, g;
};

struct SsdInputs {
  at::Tensor x, dt, A, B, C;
  ops::SsdScanOptions opts;
};

// Random inputs in `dtype` (states and per-head vectors in the state dtype). dt around softplus^-1 of
// 0.01-0.3 and A in [-8, -0.5] give decays from ~0.1 to ~1 per step, as in trained Mamba-2 layers.
// all_options: D, dt_bias, initial_state, dt limits and the three intervention vectors.
inline SsdInputs make_ssd_inputs(SsdShape s, at::ScalarType dtype, uint64_t seed, bool all_options = true) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  const auto st = dtype == at::kDouble ? at::kDouble : at::kFloat;
  auto r = [&](at::IntArrayRef sz, at::ScalarType t) { return at::randn(sz, gen, at::kDouble).to(t); };
  auto u = [&](at::IntArrayRef sz, double lo, double hi, at::ScalarType t) {
    return at::empty(sz, at::kDouble).uniform_(lo, hi, gen).to(t);
  };
  SsdInputs in;
  in.x = r({s.b, s.l, s.h, s.p}, dtype);
  in.dt = (r({s.b, s.l, s.h}, at::kDouble) * 0.5 - 2.5).to(dtype);
  in.A = -u({s.h}, 0.5, 8.0, st);
  in.B = (r({s.b, s.l, s.g, s.n}, at::kDouble) / std::sqrt(double(s.n))).to(dtype);
  in.C = (r({s.b, s.l, s.g, s.n}, at::kDouble) / std::sqrt(double(s.n))).to(dtype);
  in.opts.dt_softplus = true;
  if (all_options) {
    in.opts.D = r({s.h}, st);
    in.opts.dt_bias = u({s.h}, -1.0, 1.0, st);
    in.opts.initial_state = r({s.b, s.h, s.p, s.n}, st);
    in.opts.dt_min = 1e-3;
    in.opts.dt_max = 0.5;
    in.opts.dt_mult = u({s.h}, 0.5, 1.5, st);
    in.opts.decay_mult = u({s.h}, 0.9, 1.0, st);
    in.opts.b_mult = u({s.h}, 0.5, 1.0, st);
  }
  return in;
}

// The inputs that require gradients, by name, in a fixed order.
inline std::vector<std::pair<std::string, at::Tensor*>> ssd_leaves(SsdInputs& in) {
  std::vector<std::pair<std::string, at::Tensor*>> v = {
      {"x", &in.x}, {"dt", &in.dt}, {"A", &in.A}, {"B", &in.B}, {"C", &in.C}};
  for (auto& [name, t] : std::vector<std::pair<std::string, std::optional<at::Tensor>*>>{
           {"D", &in.opts.D}, {"dt_bias", &in.opts.dt_bias}, {"initial_state", &in.opts.initial_state},
           {"dt_mult", &in.opts.dt_mult}, {"decay_mult", &in.opts.decay_mult}, {"b_mult", &in.opts.b_mult}})
    if (*t) v.emplace_back(name, &**t);
  return v;
}

// A copy whose tensors are fresh leaves requiring gradients (optionally cast to `dtype`).
inline SsdInputs ssd_as_leaves(const SsdInputs& in, std::optional<at::ScalarType> dtype = std::nullopt) {
  SsdInputs out = in;
  for (auto& [name, t] : ssd_leaves(out)) {
    at::Tensor v = t->detach();
    if (dtype) v = v.to(*dtype);
    *t = v.clone().requires_grad_(true);
  }
  return out;
}

// Gradients of <y, gy> + <final_state, gs> w.r.t. every leaf of ssd_leaves(in), in that order.
inline std::vector<at::Tensor> ssd_grads(const ops::SsdScanOut& out, const at::Tensor& gy, const at::Tensor& gs,
                                         SsdInputs& in) {
  at::Tensor loss = (out.y.to(at::kDouble) * gy).sum() + (out.final_state.to(at::kDouble) * gs).sum();
  std::vector<at::Tensor> leaves;
  for (auto& [name, t] : ssd_leaves(in)) leaves.push_back(*t);
  return torch::autograd::grad({loss}, leaves, {}, /*retain_graph=*/false, /*create_graph=*/false,
                               /*allow_unused=*/true);
}

// The recurrence with scalar double loops: returns (y (B, L, H, P), final_state (B, H, P, N)) in float64.
inline std::pair<at::Tensor, at::Tensor> ssd_naive(const SsdInputs& in) {
  const auto& o = in.opts;
  auto d = [](const at::Tensor& t) { return t.detach().to(at::kDouble).contiguous(); };
  const at::Tensor x = d(in.x), dt = d(in.dt), A = d(in.A), B = d(in.B), C = d(in.C);
  const int64_t nb = x.size(0), l = x.size(1), h = x.size(2), p = x.size(3), g = B.size(2), n = B.size(3);
  auto vec = [&](const std::optional<at::Tensor>& t, double dflt) {
    std::vector<double> v(h, dflt);
    if (t) {
      const at::Tensor c = d(*t);
      for (int64_t i = 0; i < h; ++i) v[i] = c[i].item<double>();
    }
    return v;
  };
  const auto D = vec(o.D, 0.0), bias = vec(o.dt_bias, 0.0), dtm = vec(o.dt_mult, 1.0), dm = vec(o.decay_mult, 1.0),
             bm = vec(o.b_mult, 1.0);
  at::Tensor S = o.initial_state ? d(*o.initial_state).clone() : at::zeros({nb, h, p, n}, at::kDouble);
  at::Tensor y = at::zeros({nb, l, h, p}, at::kDouble);
  auto xa = x.accessor<double, 4>();
  auto dta = dt.accessor<double, 3>();
  auto Aa = A.accessor<double, 1>();
  auto Ba = B.accessor<double, 4>();
  auto Ca = C.accessor<double, 4>();
  auto Sa = S.accessor<double, 4>();
  auto ya = y.accessor<double, 4>();
  for (int64_t b = 0; b < nb; ++b)
    for (int64_t hh = 0; hh < h; ++hh) {
      const int64_t gg = hh / (h / g);
      for (int64_t t = 0; t < l; ++t) {
        double delta = dta[b][t][hh] + bias[hh];
        if (o.dt_softplus) delta = delta > 20.0 ? delta : std::log1p(std::exp(delta));
        delta = std::min(std::max(delta, o.dt_min), o.dt_max) * dtm[hh];
        const double alpha = dm[hh] * std::exp(delta * Aa[hh]);
        for (int64_t pp = 0; pp < p; ++pp) {
          double acc = 0.0;
          for (int64_t nn = 0; nn < n; ++nn) {
            Sa[b][hh][pp][nn] = alpha * Sa[b][hh][pp][nn] + delta * bm[hh] * xa[b][t][hh][pp] * Ba[b][t][gg][nn];
            acc += Sa[b][hh][pp][nn] * Ca[b][t][gg][nn];
          }
          ya[b][t][hh][pp] = acc + D[hh] * xa[b][t][hh][pp];
        }
      }
    }
  return {y, S};
}

}  // namespace ssmlab::test
