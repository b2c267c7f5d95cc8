// Independent float64 oracles for the selective-scan tests (spec §1.1), written apart from
// src/ssmlab/ops/selective_scan/reference.cpp on purpose:
//   naive_scan_forward  : scalar loops over b, e, t, n on CPU accessors (no ATen arithmetic at all);
//   naive_scan_autograd : one ATen step per time index on full (B, E, N) tensors (groups expanded by
//                         repeat_interleave, softplus as log1p(exp), silu as z * sigmoid(z)),
//                         differentiated by plain autograd.
// Plus the random-input maker shared by the selective-scan test files.
#pragma once
#include <cmath>
#include <cstdint>
#include <optional>
#include <utility>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <torch/csrc/autograd/autograd.h>

namespace ssmlab::test {

struct ScanInputs {
  at::Tensor u, delta, A, B, C;     // required
  at::Tensor D, z, delta_bias, h0;  // undefined = absent
  bool softplus = false;
};

inline std::optional<at::Tensor> opt(const at::Tensor& t) {
  return t.defined() ? std::optional<at::Tensor>(t) : std::nullopt;
}

struct ScanShape {
  int64_t b, l, e, n;
  int64_t groups;  // 0: B, C are (B, L, N); G >= 1: grouped (B, L, G, N)
};

struct ScanFlags {
  bool D, z, bias, softplus, h0;
};

// Fresh random inputs in `dtype` (the state h0 in fp32, or fp64 for fp64), drawn from `seed`.
// delta is positive after (optional) bias and softplus, A is negative: every state decays.
inline ScanInputs make_scan_inputs(const ScanShape& s, const ScanFlags& f, at::ScalarType dtype, uint64_t seed) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  const auto f64 = at::TensorOptions().dtype(at::kDouble);
  auto randn = [&](at::IntArrayRef sz) { return at::randn(sz, gen, f64); };
  auto rand = [&](at::IntArrayRef sz) { return at::rand(sz, gen, f64); };
  ScanInputs in;
  in.softplus = f.softplus;
  in.u = randn({s.b, s.l, s.e});                                                  // (B, L, E)
  in.delta = f.softplus ? randn({s.b, s.l, s.e}) * 0.5 - 1.0                      // raw, softplus'd later
                        : rand({s.b, s.l, s.e}) * 0.3 + 0.02;                     // (B, L, E), already > 0
  in.A = -(rand({s.e, s.n}) * 1.5 + 0.05);                                        // (E, N), decays 0.05..1.55
  const std::vector<int64_t> bc = s.groups == 0 ? std::vector<int64_t>{s.b, s.l, s.n}
                                                : std::vector<int64_t>{s.b, s.l, s.groups, s.n};
  in.B = randn(bc);
  in.C = randn(bc);
  if (f.D) in.D = randn({s.e});
  if (f.z) in.z = randn({s.b, s.l, s.e});
  if (f.bias) in.delta_bias = f.softplus ? randn({s.e}) * 0.3 : rand({s.e}) * 0.1;
  for (at::Tensor* t : {&in.u, &in.delta, &in.A, &in.B, &in.C, &in.D, &in.z, &in.delta_bias})
    if (t->defined()) *t = t->to(dtype);
  if (f.h0) in.h0 = randn({s.b, s.e, s.n}).to(dtype == at::kDouble ? at::kDouble : at::kFloat);
  return in;
}

// Copies of every defined input as float64 CPU leaves (requires_grad as asked).
inline ScanInputs to_f64_leaves(const ScanInputs& in, bool requires_grad) {
  ScanInputs out = in;
  for (at::Tensor* t : {&out.u, &out.delta, &out.A, &out.B, &out.C, &out.D, &out.z, &out.delta_bias, &out.h0})
    if (t->defined()) *t = t->detach().to(at::kCPU, at::kDouble).clone().requires_grad_(requires_grad);
  return out;
}

inline double softplus_scalar(double x) { return x > 20.0 ? x : std::log1p(std::exp(x)); }

// Scalar-loop forward: y (B, L, E) and final state (B, E, N), both float64.
inline std::pair<at::Tensor, at::Tensor> naive_scan_forward(const ScanInputs& in0) {
  const ScanInputs in = to_f64_leaves(in0, false);
  const int64_t b = in.u.size(0), l = in.u.size(1), e = in.u.size(2), n = in.A.size(1);
  const int64_t g = in.B.dim() == 4 ? in.B.size(2) : 1, per_group = e / g;
  const at::Tensor Bg = in.B.reshape({b, l, g, n}).contiguous(), Cg = in.C.reshape({b, l, g, n}).contiguous();
  // Absent optional inputs become neutral stand-ins so the loop below has one shape.
  const at::Tensor h0 = in.h0.defined() ? in.h0 : at::zeros({b, e, n}, at::kDouble);
  const at::Tensor bias = in.delta_bias.defined() ? in.delta_bias : at::zeros({e}, at::kDouble);
  const at::Tensor D = in.D.defined() ? in.D : at::zeros({e}, at::kDouble);
  const at::Tensor z = in.z.defined() ? in.z : at::zeros({b, l, e}, at::kDouble);
  const auto u = in.u.accessor<double, 3>(), dl = in.delta.accessor<double, 3>(), za = z.accessor<double, 3>();
  const auto A = in.A.accessor<double, 2>();
  const auto Bv = Bg.accessor<double, 4>(), Cv = Cg.accessor<double, 4>();
  const auto h0a = h0.accessor<double, 3>();
  const auto bias_a = bias.accessor<double, 1>(), Da = D.accessor<double, 1>();
  at::Tensor y = at::zeros({b, l, e}, at::kDouble), hT = at::zeros({b, e, n}, at::kDouble);
  auto ya = y.accessor<double, 3>();
  auto ha = hT.accessor<double, 3>();
  std::vector<double> h(n);
  for (int64_t bi = 0; bi < b; ++bi) {
    for (int64_t ei = 0; ei < e; ++ei) {
      const int64_t gi = ei / per_group;
      for (int64_t ni = 0; ni < n; ++ni) h[ni] = h0a[bi][ei][ni];
      for (int64_t t = 0; t < l; ++t) {
        double dt = dl[bi][t][ei] + bias_a[ei];
        if (in.softplus) dt = softplus_scalar(dt);
        const double ut = u[bi][t][ei];
        double acc = 0.0;
        for (int64_t ni = 0; ni < n; ++ni) {
          h[ni] = std::exp(dt * A[ei][ni]) * h[ni] + dt * Bv[bi][t][gi][ni] * ut;
          acc += Cv[bi][t][gi][ni] * h[ni];
        }
        acc += Da[ei] * ut;
        if (in.z.defined()) acc *= za[bi][t][ei] / (1.0 + std::exp(-za[bi][t][ei]));
        ya[bi][t][ei] = acc;
      }
      for (int64_t ni = 0; ni < n; ++ni) ha[bi][ei][ni] = h[ni];
    }
  }
  return {y, hT};
}

// Per-time-step ATen forward on float64 leaves, for plain autograd. Returns y (B, L, E), final (B, E, N).
inline std::pair<at::Tensor, at::Tensor> naive_scan_autograd(const ScanInputs& in) {
  const int64_t b = in.u.size(0), l = in.u.size(1), e = in.u.size(2), n = in.A.size(1);
  const int64_t g = in.B.dim() == 4 ? in.B.size(2) : 1;
  const at::Tensor Be = in.B.reshape({b, l, g, n}).repeat_interleave(e / g, 2);  // (B, L, E, N)
  const at::Tensor Ce = in.C.reshape({b, l, g, n}).repeat_interleave(e / g, 2);  // (B, L, E, N)
  at::Tensor raw = in.delta_bias.defined() ? in.delta + in.delta_bias : in.delta;  // (B, L, E)
  const at::Tensor dt = in.softplus ? at::log1p(at::exp(raw)) : raw;
  const auto dts = dt.unbind(1), us = in.u.unbind(1), Bs = Be.unbind(1), Cs = Ce.unbind(1);
  at::Tensor h = in.h0.defined() ? in.h0 : at::zeros({b, e, n}, in.u.options().requires_grad(false));
  std::vector<at::Tensor> ys;
  ys.reserve(l);
  for (int64_t t = 0; t < l; ++t) {
    const at::Tensor d = dts[t].unsqueeze(-1);                          // (B, E, 1)
    h = at::exp(d * in.A) * h + d * us[t].unsqueeze(-1) * Bs[t];        // (B, E, N)
    ys.push_back((h * Cs[t]).sum(-1));                                  // (B, E)
  }
  at::Tensor y = l > 0 ? at::stack(ys, 1) : at::zeros({b, 0, e}, in.u.options());  // (B, L, E)
  if (in.D.defined()) y = y + in.u * in.D;
  if (in.z.defined()) y = y * (in.z * at::sigmoid(in.z));
  return {y, h};
}

// The inputs that are defined, in a fixed order, with their names (u delta A B C D z delta_bias h0).
inline std::vector<std::pair<const char*, at::Tensor>> defined_inputs(const ScanInputs& in) {
  std::vector<std::pair<const char*, at::Tensor>> out;
  const std::pair<const char*, const at::Tensor*> all[] = {
      {"u", &in.u}, {"delta", &in.delta}, {"A", &in.A}, {"B", &in.B}, {"C", &in.C},
      {"D", &in.D}, {"z", &in.z}, {"delta_bias", &in.delta_bias}, {"initial_state", &in.h0}};
  for (const auto& [name, t] : all)
    if (t->defined()) out.emplace_back(name, *t);
  return out;
}

// Gradients of loss = <y, gy> + <final, gs> w.r.t. the defined inputs, in defined_inputs order.
inline std::vector<at::Tensor> grads_of(const at::Tensor& y, const at::Tensor& final_state, const at::Tensor& gy,
                                        const at::Tensor& gs, const ScanInputs& leaves) {
  const at::Tensor loss = (y.to(at::kDouble) * gy).sum() + (final_state.to(at::kDouble) * gs).sum();
  std::vector<at::Tensor> xs;
  for (const auto& [name, t] : defined_inputs(leaves)) xs.push_back(t);
  return torch::autograd::grad({loss}, xs, /*grad_outputs=*/{}, /*retain_graph=*/false, /*create_graph=*/false,
                               /*allow_unused=*/false);
}

}  // namespace ssmlab::test
