// The Mamba-3 scan (ops/mamba3): the float64 reference against hand-computed cases (three SISO steps; the
// adjacent and halves pairings, SISO and MIMO); a split sequence with the carried Mamba3State equals one pass;
// decode (a 29-token prefill then 8 mamba3_step calls) equals the forward, all four carried tensors included;
// the degenerate case (trapezoid weight 1, no rotation) equals ssd_scan's reference with B scaled by dt; gradients
// against finite differences; the chunked quadratic form against the reference (chunk sizes, odd T, fast decay,
// tiny dt, R in {1, 2, 4}, rope S in {N/4, N/2}, initial states) forward and backward; input errors.
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <torch/csrc/autograd/autograd.h>

#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include "ssmlab/core/error.h"
#include "ssmlab/ops/mamba3/mamba3.h"
#include "ssmlab/ops/ssd_scan/ssd_scan.h"
#include "finite_diff.h"
#include "tolerances.h"

namespace ops_test_mamba3 {

namespace {

using at::Tensor;
using ssmlab::ops::Mamba3Options;
using ssmlab::ops::Mamba3Out;
using ssmlab::ops::Mamba3Pairing;
using ssmlab::ops::Mamba3State;
using ssmlab::test::all_close;

struct Shape {
  int64_t b = 2, t = 37, r = 1, h = 3, n = 8, p = 5, s = 2;
  Mamba3Pairing pairing = Mamba3Pairing::adjacent;
};

struct In {
  Tensor q, k, x, adt, dt, trap, theta;
  Mamba3Options o;
};

// q, k ~ 0.5 N(0, 1) + 0.5 (normalised and biased, near the layer's); dt log-uniform in [dt_lo, 0.5];
// adt = -U(0.1, 3) dt (or decay_rate dt when given); trap ~ N(0, 1); theta = pi tanh(N(0, 1)) per head; D ~ N(0, 1);
// an initial state with phase U(0, 2pi), state, k_prev, x_prev ~ 0.5 N(0, 1).
In make(const Shape& s, bool h0, bool with_d, uint64_t seed, double dt_lo = 1e-3,
        std::optional<double> decay_rate = std::nullopt) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  auto r = [&](std::vector<int64_t> sz) { return at::randn(sz, gen, at::kDouble); };
  auto u = [&](std::vector<int64_t> sz) { return at::rand(sz, gen, at::kDouble); };
  In in;
  in.q = r({s.b, s.t, s.r, s.h, s.n}) * 0.5 + 0.5;
  in.k = r({s.b, s.t, s.r, s.h, s.n}) * 0.5 + 0.5;
  in.x = r({s.b, s.t, s.r, s.h, s.p});
  in.dt = at::exp(std::log(dt_lo) + u({s.b, s.t, s.h}) * (std::log(0.5) - std::log(dt_lo)));
  in.adt = decay_rate ? in.dt * *decay_rate : -(u({s.b, s.t, s.h}) * 2.9 + 0.1) * in.dt;
  in.trap = r({s.b, s.t, s.h});
  in.theta = M_PI * at::tanh(r({s.b, s.t, s.h, s.s}));
  in.o.pairing = s.pairing;
  if (with_d) in.o.D = r({s.h});
  if (h0)
    in.o.initial = Mamba3State{u({s.b, s.h, s.s}) * 2 * M_PI, r({s.b, s.h, s.p, s.n}) * 0.5,
                               r({s.b, s.r, s.h, s.n}) * 0.5, r({s.b, s.r, s.h, s.p}) * 0.5};
  return in;
}

Mamba3Out run(const In& in, const std::string& path, int64_t chunk = 64) {
  Mamba3Options o = in.o;
  o.chunk_size = chunk;
  return ssmlab::ops::mamba3_scan(in.q, in.k, in.x, in.adt, in.dt, in.trap, in.theta, o, path);
}

In slice(const In& in, int64_t a, int64_t len, const std::optional<Mamba3State>& init) {
  In p;
  p.q = in.q.narrow(1, a, len), p.k = in.k.narrow(1, a, len), p.x = in.x.narrow(1, a, len);
  p.adt = in.adt.narrow(1, a, len), p.dt = in.dt.narrow(1, a, len), p.trap = in.trap.narrow(1, a, len);
  p.theta = in.theta.narrow(1, a, len);
  p.o = in.o;
  p.o.initial = init;
  return p;
}

// Phases agree modulo 2pi: the wrapped difference is ~0.
::testing::AssertionResult phase_close(const Tensor& a, const Tensor& b, ssmlab::test::Tol tol, const std::string& w) {
  const Tensor d = at::remainder(a.to(at::kDouble) - b.to(at::kDouble) + M_PI, 2 * M_PI) - M_PI;
  return all_close(d, at::zeros_like(d), tol, w);
}

void expect_state_close(const Mamba3State& a, const Mamba3State& b, ssmlab::test::Tol tol, const std::string& w) {
  EXPECT_TRUE(phase_close(a.phase, b.phase, tol, w + " phase"));
  EXPECT_TRUE(all_close(a.state, b.state, tol, w + " state"));
  EXPECT_TRUE(all_close(a.k_prev, b.k_prev, tol, w + " k_prev"));
  EXPECT_TRUE(all_close(a.x_prev, b.x_prev, tol, w + " x_prev"));
}

// Three SISO steps by hand: R = H = P = 1, N = 2, S = 1 (one adjacent pair), adt = log(1/2) (alpha = 1/2), D = 1/4.
//   t = 0: dt 1, lambda 1/2 (trap 0), theta pi/2 -> phi = pi/2, Rot = (v0, v1) -> (-v1, v0).
//          k = (1, 0) -> k~ = (0, 1); q = (1, 0) -> q~ = (0, 1); gamma = 1/2; x = 2: h = (0, 1); y = 1 + 2/4 = 1.5
//   t = 1: dt 2, lambda 1/2, theta pi/4 -> phi = pi, Rot = -I. k = (1, 1) -> (-1, -1); q = (0, 1) -> (0, -1);
//          beta = 1/2 * 2 * 1/2 = 1/2, gamma = 1; x = 1: h = (0, 1/2) + 1/2 * 2 * (0, 1) + (-1, -1) = (-1, 1/2);
//          y = -1/2 + 1/4 = -0.25
//   t = 2: dt 1, lambda 3/4 (trap log 3), theta 3pi/2 -> phi = 5pi/2 = pi/2 (mod 2pi). k = (2, 0) -> (0, 2);
//          q = (1, 2) -> (-2, 1); beta = 1/4 * 1 * 1/2 = 1/8, gamma = 3/4; x = -1:
//          h = (-1/2, 1/4) + 1/8 * (-1, -1) + 3/4 * (-1) * (0, 2) = (-0.625, -1.375); y = 1.25 - 1.375 - 1/4 = -0.375
TEST(Mamba3, HandComputedThreeSteps) {
  In in;
  in.q = at::tensor({1.0, 0.0, 0.0, 1.0, 1.0, 2.0}, at::kDouble).view({1, 3, 1, 1, 2});
  in.k = at::tensor({1.0, 0.0, 1.0, 1.0, 2.0, 0.0}, at::kDouble).view({1, 3, 1, 1, 2});
  in.x = at::tensor({2.0, 1.0, -1.0}, at::kDouble).view({1, 3, 1, 1, 1});
  in.adt = at::full({1, 3, 1}, std::log(0.5), at::kDouble);
  in.dt = at::tensor({1.0, 2.0, 1.0}, at::kDouble).view({1, 3, 1});
  in.trap = at::tensor({0.0, 0.0, std::log(3.0)}, at::kDouble).view({1, 3, 1});
  in.theta = at::tensor({M_PI / 2, M_PI / 4, 3 * M_PI / 2}, at::kDouble).view({1, 3, 1, 1});
  in.o.D = at::tensor({0.25}, at::kDouble);
  const Tensor y_want = at::tensor({1.5, -0.25, -0.375}, at::kDouble).view({1, 3, 1, 1, 1});
  const Mamba3State want{at::tensor({M_PI / 2}, at::kDouble).view({1, 1, 1}),
                         at::tensor({-0.625, -1.375}, at::kDouble).view({1, 1, 1, 2}),
                         at::tensor({0.0, 2.0}, at::kDouble).view({1, 1, 1, 2}),
                         at::tensor({-1.0}, at::kDouble).view({1, 1, 1, 1})};
  for (const char* path : {"reference", "chunked", "fused"}) {
    if (std::string(path) == "fused" && !ssmlab::ops::mamba3_cpu_supports(in.x)) continue;
    for (int64_t chunk : {1, 2, 64}) {
      SCOPED_TRACE(ssmlab::str(path, " chunk ", chunk));
      const auto r = run(in, path, chunk);
      EXPECT_TRUE(all_close(r.y, y_want, ssmlab::test::kFp64Forward, "y"));
      EXPECT_TRUE(all_close(r.final.phase, want.phase, ssmlab::test::kFp64Forward, "phase (reduced into [0, 2pi))"));
      expect_state_close(r.final, want, ssmlab::test::kFp64Forward, "final");
    }
  }
}

// The pairings on a hand case: N = 4, S = 1, P = 1, alpha = 1/2, dt = 1, lambda = 1/2.
//   t = 0: theta 0 (phi 0), x = 2 on rank 0 (0 on rank 1), k = e0 on rank 0: h = gamma x k^T = e0.
//   t = 1: theta pi/2 (phi pi/2), k = x = 0: h = alpha e0 + beta 2 e0 = (1/2 + 1/4 * 2) e0 = e0.
//   Query e1: adjacent rotates (0, 1): e1 -> -e0, y = -1; halves rotates (0, 2): e1 stays, y = 0.
//   Query e2: adjacent leaves it, y = 0; halves: e2 -> -e0, y = -1.
TEST(Mamba3, AdjacentAndHalvesPairingsOnAHandCase) {
  for (int64_t r : {1, 2}) {
    In in;
    in.q = at::zeros({1, 2, r, 1, 4}, at::kDouble);
    in.k = at::zeros({1, 2, r, 1, 4}, at::kDouble);
    in.x = at::zeros({1, 2, r, 1, 1}, at::kDouble);
    in.k.index_put_({0, 0, 0, 0, 0}, 1.0);
    in.x.index_put_({0, 0, 0, 0, 0}, 2.0);
    in.q.index_put_({0, 1, 0, 0, 1}, 1.0);                 // rank 0 reads e1
    if (r == 2) in.q.index_put_({0, 1, 1, 0, 2}, 1.0);     // rank 1 reads e2
    in.adt = at::full({1, 2, 1}, std::log(0.5), at::kDouble);
    in.dt = at::ones({1, 2, 1}, at::kDouble);
    in.trap = at::zeros({1, 2, 1}, at::kDouble);
    in.theta = at::tensor({0.0, M_PI / 2}, at::kDouble).view({1, 2, 1, 1});
    for (Mamba3Pairing pairing : {Mamba3Pairing::adjacent, Mamba3Pairing::halves}) {
      in.o.pairing = pairing;
      const bool adj = pairing == Mamba3Pairing::adjacent;
      std::vector<double> y1 = {adj ? -1.0 : 0.0};
      if (r == 2) y1.push_back(adj ? 0.0 : -1.0);
      const Tensor y1_want = at::tensor(y1, at::kDouble).view({1, r, 1, 1});
      for (const char* path : {"reference", "chunked"}) {
        SCOPED_TRACE(ssmlab::str("R ", r, ", ", ssmlab::ops::to_string(pairing), ", ", path));
        const auto out = run(in, path, 1);
        EXPECT_TRUE(all_close(out.y.select(1, 1), y1_want, ssmlab::test::kFp64Forward, "y at t = 1"));
        EXPECT_TRUE(all_close(out.final.state, at::tensor({1.0, 0.0, 0.0, 0.0}, at::kDouble).view({1, 1, 1, 4}),
                              ssmlab::test::kFp64Forward, "state"));
      }
    }
  }
}

struct Variant {
  int64_t r, s;
  Mamba3Pairing pairing;
  bool h0;
};
const std::vector<Variant>& variants() {
  static const std::vector<Variant> v = {{1, 2, Mamba3Pairing::adjacent, false}, {1, 4, Mamba3Pairing::adjacent, true},
                                         {2, 2, Mamba3Pairing::halves, true},    {4, 4, Mamba3Pairing::halves, false},
                                         {4, 2, Mamba3Pairing::halves, true},    {2, 4, Mamba3Pairing::adjacent, true}};
  return v;
}
std::string label(const Variant& v) {
  return ssmlab::str("R ", v.r, ", S ", v.s, ", ", ssmlab::ops::to_string(v.pairing), ", h0 ", v.h0);
}
Shape shape_of(const Variant& v, int64_t t = 37) {
  Shape s;
  s.t = t, s.r = v.r, s.s = v.s, s.pairing = v.pairing;
  return s;
}

TEST(Mamba3, SplitSequenceWithCarriedStateEqualsOnePass) {
  for (const auto& var : variants()) {
    const In in = make(shape_of(var), var.h0, true, 31);
    for (const char* path : {"reference", "chunked", "fused"}) {
      if (std::string(path) == "fused" && !ssmlab::ops::mamba3_cpu_supports(in.x)) continue;
      SCOPED_TRACE(ssmlab::str(label(var), ", ", path));
      const auto whole = run(in, path, 16);
      const auto first = run(slice(in, 0, 10, in.o.initial), path, 16);
      const auto second = run(slice(in, 10, 27, first.final), path, 16);
      EXPECT_TRUE(all_close(at::cat({first.y, second.y}, 1), whole.y, ssmlab::test::kFp64Forward, "y"));
      expect_state_close(second.final, whole.final, ssmlab::test::kFp64Forward, "final");
    }
  }
}

TEST(Mamba3, DecodeStepsAfterPrefillEqualForward) {
  for (const auto& var : variants()) {
    const In in = make(shape_of(var), var.h0, true, 32);
    const auto want = run(in, "reference");
    for (const char* path : {"reference", "chunked", "fused"}) {
      if (std::string(path) == "fused" && !ssmlab::ops::mamba3_cpu_supports(in.x)) continue;
      SCOPED_TRACE(ssmlab::str(label(var), ", prefill ", path));
      const auto pre = run(slice(in, 0, 29, in.o.initial), path, 16);
      Mamba3State st = pre.final;
      std::vector<Tensor> ys = {pre.y};
      for (int64_t t = 29; t < 37; ++t) {
        auto [y, next] = ssmlab::ops::mamba3_step(in.q.select(1, t), in.k.select(1, t), in.x.select(1, t),
                                                  in.adt.select(1, t), in.dt.select(1, t), in.trap.select(1, t),
                                                  in.theta.select(1, t), st, in.o.pairing, in.o.D);
        ys.push_back(y.unsqueeze(1));
        st = next;
      }
      EXPECT_TRUE(all_close(at::cat(ys, 1), want.y, ssmlab::test::kFp64Forward, "y"));
      expect_state_close(st, want.final, ssmlab::test::kFp64Forward, "decode state");
    }
  }
}

// lambda = 1 (trap logit +inf) and theta = 0: h = exp(dt A) h + dt x k^T, y = h q + D x, i.e. ssd_scan with
// B = k, C = q (one group per head), dt' = dt, no conv.
TEST(Mamba3, TrapezoidOneWithoutRotationEqualsSsdScan) {
  Shape s;
  s.t = 41;
  In in = make(s, false, true, 33);
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(34);
  const Tensor A = -(at::rand({s.h}, gen, at::kDouble) * 2 + 0.2);
  in.adt = in.dt * A;
  in.trap = at::full_like(in.trap, INFINITY);
  in.theta = at::zeros_like(in.theta);
  ssmlab::ops::SsdScanOptions so;
  so.D = in.o.D;
  so.dt_softplus = false;
  so.initial_state = at::randn({s.b, s.h, s.p, s.n}, gen, at::kDouble);
  in.o.initial = Mamba3State{at::zeros({s.b, s.h, s.s}, at::kDouble), *so.initial_state,
                             at::randn({s.b, 1, s.h, s.n}, gen, at::kDouble),
                             at::randn({s.b, 1, s.h, s.p}, gen, at::kDouble)};  // weight 1 - lambda = 0
  const auto want = ssmlab::ops::ssd_scan_reference(in.x.squeeze(2), in.dt, A, in.k.squeeze(2), in.q.squeeze(2), so);
  for (const char* path : {"reference", "chunked", "fused"}) {
    if (std::string(path) == "fused" && !ssmlab::ops::mamba3_cpu_supports(in.x)) continue;
    SCOPED_TRACE(path);
    const auto r = run(in, path, 16);
    EXPECT_TRUE(all_close(r.y.squeeze(2), want.y, ssmlab::test::kFp64Forward, "y"));
    EXPECT_TRUE(all_close(r.final.state, want.final_state, ssmlab::test::kFp64Forward, "state"));
  }
}

// The differentiable inputs of a case, in a fixed order, made leaves.
std::vector<Tensor*> inputs_of(In& in) {
  std::vector<Tensor*> v = {&in.q, &in.k, &in.x, &in.adt, &in.dt, &in.trap, &in.theta};
  if (in.o.D) v.push_back(&*in.o.D);
  if (in.o.initial)
    for (Tensor* t : {&in.o.initial->phase, &in.o.initial->state, &in.o.initial->k_prev, &in.o.initial->x_prev})
      v.push_back(t);
  return v;
}
const char* kInputNames[] = {"q", "k", "x", "adt", "dt", "trap", "theta", "D", "phase0", "state0", "k_prev0", "x_prev0"};

struct Cotangents {
  Tensor y, phase, state, k_prev, x_prev;
};
Cotangents cotangents(const In& in, uint64_t seed) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  const auto o = run(in, "reference");
  auto r = [&](const Tensor& like) { return at::randn(like.sizes(), gen, at::kDouble); };
  return {r(o.y), r(o.final.phase), r(o.final.state), r(o.final.k_prev), r(o.final.x_prev)};
}
Tensor loss_of(const Mamba3Out& o, const Cotangents& c) {
  return (o.y.to(at::kDouble) * c.y).sum() + (o.final.phase.to(at::kDouble) * c.phase).sum() +
         (o.final.state.to(at::kDouble) * c.state).sum() + (o.final.k_prev.to(at::kDouble) * c.k_prev).sum() +
         (o.final.x_prev.to(at::kDouble) * c.x_prev).sum();
}

// Gradients of the float64 reference against central finite differences on three elements of every input.
TEST(Mamba3, ReferenceGradientsMatchFiniteDifferences) {
  for (const auto& var : variants()) {
    SCOPED_TRACE(label(var));
    In in = make(shape_of(var, 6), true, true, 35);
    const Cotangents c = cotangents(in, 36);
    auto loss = [&]() { return loss_of(run(in, "reference"), c); };
    const auto inputs = inputs_of(in);
    ssmlab::test::expect_grads_match_finite_differences(
        loss, inputs, std::vector<std::string>(std::begin(kInputNames), std::begin(kInputNames) + inputs.size()));
  }
}

TEST(Mamba3, ChunkedMatchesReferenceAtEveryChunkSize) {
  for (const auto& var : variants())
    for (int64_t t : {1, 37, 64}) {
      const In in = make(shape_of(var, t), var.h0, true, 40 + t);
      const auto want = run(in, "reference");
      for (int64_t chunk : {1, 7, 16, 64}) {
        SCOPED_TRACE(ssmlab::str(label(var), ", T ", t, ", chunk ", chunk));
        const auto r = run(in, "chunked", chunk);
        EXPECT_TRUE(all_close(r.y, want.y, ssmlab::test::kFp64Forward, "y"));
        expect_state_close(r.final, want.final, ssmlab::test::kFp64Forward, "final");
      }
    }
}

// Fast decay (adt ~ -20 per token: exp(c) underflows inside a chunk) and tiny dt (1e-6 .. 1e-4).
TEST(Mamba3, ChunkedMatchesReferenceWithFastDecayAndTinyDt) {
  for (const auto& var : variants()) {
    for (int which : {0, 1}) {
      SCOPED_TRACE(ssmlab::str(label(var), which == 0 ? ", fast decay" : ", tiny dt"));
      In in = make(shape_of(var, 37), var.h0, true, 50 + which);
      if (which == 0) {
        in.dt = in.dt * 0 + 0.5;
        in.adt = at::full_like(in.adt, -20.0);
      } else {
        in.dt = in.dt * 1e-4;
        in.adt = in.adt * 1e-4;
      }
      const auto want = run(in, "reference");
      EXPECT_TRUE(at::isfinite(want.y).all().item<bool>());
      for (int64_t chunk : {16, 64}) {
        const auto r = run(in, "chunked", chunk);
        EXPECT_TRUE(all_close(r.y, want.y, ssmlab::test::kFp64Forward, "y"));
        expect_state_close(r.final, want.final, ssmlab::test::kFp64Forward, "final");
      }
    }
  }
}

// Odd N (adjacent pairs, the last dim unrotated) and S = 0 (no rotation), both pairings.
TEST(Mamba3, ChunkedAndFusedMatchReferenceWithOddNAndNoRotation) {
  for (const auto& [n, s, pairing] : {std::tuple<int64_t, int64_t, Mamba3Pairing>{7, 3, Mamba3Pairing::adjacent},
                                      {7, 0, Mamba3Pairing::adjacent}, {6, 0, Mamba3Pairing::halves},
                                      {6, 3, Mamba3Pairing::halves}}) {
    Shape sh;
    sh.t = 23, sh.r = 2, sh.n = n, sh.s = s, sh.pairing = pairing;
    const In in = make(sh, true, true, 64 + n + s);
    const auto want = run(in, "reference");
    for (const char* path : {"chunked", "fused"}) {
      SCOPED_TRACE(ssmlab::str("N ", n, ", S ", s, ", ", ssmlab::ops::to_string(pairing), ", ", path));
      const auto r = run(in, path, 8);
      EXPECT_TRUE(all_close(r.y, want.y, ssmlab::test::kFp64Forward, "y"));
      expect_state_close(r.final, want.final, ssmlab::test::kFp64Forward, "final");
    }
  }
}

std::vector<Tensor> grads_of(In in, const std::string& path, const Cotangents& c, int64_t chunk) {
  auto inputs = inputs_of(in);
  std::vector<Tensor> leaves;
  for (Tensor* t : inputs) {
    *t = t->detach().clone().requires_grad_();
    leaves.push_back(*t);
  }
  return torch::autograd::grad({loss_of(run(in, path, chunk), c)}, leaves, {}, false, false, /*allow_unused=*/true);
}

TEST(Mamba3, ChunkedGradientsMatchReference) {
  for (const auto& var : variants()) {
    SCOPED_TRACE(label(var));
    const In in = make(shape_of(var, 19), true, true, 60);
    const Cotangents c = cotangents(in, 61);
    const auto want = grads_of(in, "reference", c, 64);
    const auto got = grads_of(in, "chunked", c, 7);
    for (size_t i = 0; i < want.size(); ++i)
      EXPECT_TRUE(all_close(got[i], want[i], ssmlab::test::kFp64Grad, kInputNames[i]));
  }
}

TEST(Mamba3, EmptySequenceReturnsTheInitialState) {
  const Variant var{2, 2, Mamba3Pairing::halves, true};
  const In in = make(shape_of(var, 5), true, true, 62);
  for (const char* path : {"reference", "chunked", "fused"}) {
    if (std::string(path) == "fused" && !ssmlab::ops::mamba3_cpu_supports(in.x)) continue;
    SCOPED_TRACE(path);
    const auto r = run(slice(in, 0, 0, in.o.initial), path);
    EXPECT_EQ(r.y.size(1), 0);
    expect_state_close(r.final, *in.o.initial, ssmlab::test::kFp64Forward, "final");
  }
}

void expect_error(const std::function<void()>& f, const std::string& needle) {
  try {
    f();
    ADD_FAILURE() << "no error; expected one mentioning '" << needle << "'";
  } catch (const ssmlab::Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

TEST(Mamba3, BadInputsAreErrorsNamingTheProblem) {
  const Variant var{2, 2, Mamba3Pairing::halves, true};
  const In in = make(shape_of(var, 4), true, true, 63);
  auto call = [&](const In& c) { return [c] { run(c, "reference"); }; };
  In bad = in;
  bad.q = in.q.squeeze(0).select(0, 0);
  expect_error(call(bad), "q must be (B, T, R, H, N)");
  bad = in, bad.k = in.k.narrow(4, 0, 6);
  expect_error(call(bad), "k must match q");
  bad = in, bad.x = in.x.narrow(2, 0, 1);
  expect_error(call(bad), "x must be (B, T, R, H, P)");
  bad = in, bad.adt = in.adt.narrow(1, 0, 3);
  expect_error(call(bad), "adt must be (B, T, H)");
  bad = in, bad.dt = in.dt.unsqueeze(-1);
  expect_error(call(bad), "dt must be (B, T, H)");
  bad = in, bad.trap = in.trap.narrow(2, 0, 1);
  expect_error(call(bad), "trap must be (B, T, H)");
  bad = in, bad.theta = in.theta.select(3, 0);
  expect_error(call(bad), "theta must be (B, T, H, S)");
  bad = in, bad.theta = at::zeros({2, 4, 3, 5}, at::kDouble);
  expect_error(call(bad), "S <= N/2");
  bad = in, bad.o.pairing = Mamba3Pairing::adjacent, bad.theta = at::zeros({2, 4, 3, 5}, at::kDouble);
  expect_error(call(bad), "2 S <= N");
  bad = in, bad.o.D = at::zeros({2}, at::kDouble);
  expect_error(call(bad), "D must be (H)");
  bad = in, bad.o.initial->phase = at::zeros({2, 3, 3}, at::kDouble);
  expect_error(call(bad), "initial.phase must be (B, H, S)");
  bad = in, bad.o.initial->state = at::zeros({2, 3, 8, 5}, at::kDouble);
  expect_error(call(bad), "initial.state must be (B, H, P, N)");
  bad = in, bad.o.initial->k_prev = at::zeros({2, 1, 3, 8}, at::kDouble);
  expect_error(call(bad), "initial.k_prev must be (B, R, H, N)");
  bad = in, bad.o.initial->x_prev = at::zeros({2, 2, 3, 4}, at::kDouble);
  expect_error(call(bad), "initial.x_prev must be (B, R, H, P)");
  bad = in, bad.o.initial->x_prev = Tensor();
  expect_error(call(bad), "needs all of phase, state, k_prev and x_prev");
  bad = in, bad.x = in.x.to(at::kLong);
  expect_error(call(bad), "floating point");
  bad = in, bad.o.chunk_size = 0;
  expect_error([bad] { run(bad, "chunked", 0); }, "chunk_size");
  expect_error([in] { run(in, "fast"); }, "unknown backend 'fast'");
  expect_error([&] {
    ssmlab::ops::mamba3_step(in.q.select(1, 0), in.k.select(1, 0), in.x.select(1, 0), in.adt.select(1, 0),
                             in.dt.select(1, 0), in.trap.select(1, 0), in.theta.select(1, 0),
                             Mamba3State{in.o.initial->phase, in.o.initial->state.narrow(3, 0, 4),
                                         in.o.initial->k_prev, in.o.initial->x_prev},
                             in.o.pairing, in.o.D);
  }, "initial.state must be (B, H, P, N)");
  expect_error([&] {
    ssmlab::ops::mamba3_step(in.q, in.k, in.x, in.adt, in.dt, in.trap, in.theta, *in.o.initial, in.o.pairing, in.o.D);
  }, "mamba3_step: expected q, k (B, R, H, N)");
}

}  // namespace

}  // namespace ops_test_mamba3
