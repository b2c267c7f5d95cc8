// The fused CPU Mamba-3 path (ops/mamba3/cpu.cpp + autograd.cpp) against the float64 reference, forward and
// backward (every input's gradient, loss on y and on every carried tensor), with every kernel output buffer
// NaN-filled before the kernels write it: odd sizes around the 32-step checkpoints, SISO (adjacent) and MIMO
// (halves, R 2, 3 and 4), rope S in {N/4, N/2}, with and without an initial state, float64 and float32, several
// state-row blocks (N 300: blocks of 13 rows); "auto" picks the fused kernel on CPU; the dispatcher schemas.
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/csrc/autograd/autograd.h>

#include <cmath>
#include <string>
#include <vector>

#include "ssmlab/core/error.h"
#include "ssmlab/ops/mamba3/cpu.h"
#include "ssmlab/ops/mamba3/mamba3.h"
#include "tolerances.h"

namespace ops_test_mamba3_cpu {

namespace {

using at::Tensor;
using ssmlab::ops::Mamba3Options;
using ssmlab::ops::Mamba3Out;
using ssmlab::ops::Mamba3Pairing;
using ssmlab::ops::Mamba3State;
using ssmlab::test::all_close;

struct Case {
  int64_t b, t, r, h, n, p, s;
  Mamba3Pairing pairing;
  bool h0;
};
std::string label(const Case& c) {
  return ssmlab::str("B ", c.b, " T ", c.t, " R ", c.r, " H ", c.h, " N ", c.n, " P ", c.p, " S ", c.s, " ",
                     ssmlab::ops::to_string(c.pairing), " h0 ", c.h0);
}

struct In {
  Tensor q, k, x, adt, dt, trap, theta;
  Mamba3Options o;
};

In make(const Case& c, uint64_t seed) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  auto r = [&](std::vector<int64_t> sz) { return at::randn(sz, gen, at::kDouble); };
  auto u = [&](std::vector<int64_t> sz) { return at::rand(sz, gen, at::kDouble); };
  In in;
  in.q = r({c.b, c.t, c.r, c.h, c.n}) * 0.5 + 0.5;
  in.k = r({c.b, c.t, c.r, c.h, c.n}) * 0.5 + 0.5;
  in.x = r({c.b, c.t, c.r, c.h, c.p});
  in.dt = at::exp(std::log(1e-3) + u({c.b, c.t, c.h}) * (std::log(0.5) - std::log(1e-3)));
  in.adt = -(u({c.b, c.t, c.h}) * 2.9 + 0.1) * in.dt;
  in.trap = r({c.b, c.t, c.h});
  in.theta = M_PI * at::tanh(r({c.b, c.t, c.h, c.s}));
  in.o.pairing = c.pairing;
  in.o.D = r({c.h});
  if (c.h0)
    in.o.initial = Mamba3State{u({c.b, c.h, c.s}) * 2 * M_PI, r({c.b, c.h, c.p, c.n}) * 0.5,
                               r({c.b, c.r, c.h, c.n}) * 0.5, r({c.b, c.r, c.h, c.p}) * 0.5};
  return in;
}

// The differentiable inputs with their names (D and the initial state where present).
std::vector<std::pair<std::string, Tensor*>> inputs_of(In& in) {
  std::vector<std::pair<std::string, Tensor*>> v = {{"q", &in.q},       {"k", &in.k},   {"x", &in.x},
                                                    {"adt", &in.adt},   {"dt", &in.dt}, {"trap", &in.trap},
                                                    {"theta", &in.theta}};
  if (in.o.D) v.emplace_back("D", &*in.o.D);
  if (in.o.initial) {
    v.emplace_back("phase0", &in.o.initial->phase);
    v.emplace_back("state0", &in.o.initial->state);
    v.emplace_back("k_prev0", &in.o.initial->k_prev);
    v.emplace_back("x_prev0", &in.o.initial->x_prev);
  }
  return v;
}

struct Poison {
  Poison() { ssmlab::ops::mamba3_cpu::set_poison_outputs(true); }
  ~Poison() { ssmlab::ops::mamba3_cpu::set_poison_outputs(false); }
};

// Fused in dtype `dt` against the float64 reference: outputs, and the gradients of a loss weighting y and every
// carried tensor (or only y, or only the final state) with random cotangents.
void compare_fused(const In& in64, at::ScalarType dt, bool loss_y, bool loss_state, uint64_t seed) {
  Poison poison;
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  auto leaves_of = [&](at::ScalarType t, In& x) {
    x = in64;
    std::vector<Tensor> leaves;
    for (auto& [name, v] : inputs_of(x)) {
      *v = v->detach().to(t).clone().requires_grad_();
      leaves.push_back(*v);
    }
    return leaves;
  };
  In xr, xf;
  const auto lr = leaves_of(at::kDouble, xr), lf = leaves_of(dt, xf);
  std::vector<std::string> names;
  for (auto& [name, v] : inputs_of(xr)) names.push_back(name);
  auto run = [](const In& x, const char* path) {
    return ssmlab::ops::mamba3_scan(x.q, x.k, x.x, x.adt, x.dt, x.trap, x.theta, x.o, path);
  };
  const Mamba3Out r = run(xr, "reference"), f = run(xf, "fused");
  EXPECT_EQ(f.y.scalar_type(), dt);
  EXPECT_EQ(f.final.state.scalar_type(), dt == at::kDouble ? at::kDouble : at::kFloat);
  const auto ft = ssmlab::test::forward_tol(dt), gt = ssmlab::test::grad_tol(dt);
  EXPECT_TRUE(all_close(f.y, r.y, ft, "y"));
  EXPECT_TRUE(all_close(f.final.state, r.final.state, ft, "state"));
  EXPECT_TRUE(all_close(f.final.phase, r.final.phase, ft, "phase"));
  EXPECT_TRUE(all_close(f.final.k_prev, r.final.k_prev, ft, "k_prev"));
  EXPECT_TRUE(all_close(f.final.x_prev, r.final.x_prev, ft, "x_prev"));
  auto cot = [&](const Tensor& like) { return at::randn(like.sizes(), gen, at::kDouble); };
  const Tensor gy = cot(r.y), gp = cot(r.final.phase), gs = cot(r.final.state), gk = cot(r.final.k_prev);
  auto loss = [&](const Mamba3Out& o) {
    Tensor l = at::zeros({}, at::kDouble);
    if (loss_y) l = l + (o.y.to(at::kDouble) * gy).sum();
    if (loss_state)
      l = l + (o.final.phase.to(at::kDouble) * gp).sum() + (o.final.state.to(at::kDouble) * gs).sum() +
          (o.final.k_prev.to(at::kDouble) * gk).sum();
    return l;
  };
  const auto g_r = torch::autograd::grad({loss(r)}, lr, {}, false, false, /*allow_unused=*/true);
  const auto g_f = torch::autograd::grad({loss(f)}, lf, {}, false, false, /*allow_unused=*/true);
  for (size_t i = 0; i < lr.size(); ++i) {
    const Tensor want = g_r[i].defined() ? g_r[i] : at::zeros_like(lr[i]);
    const Tensor got = g_f[i].defined() ? g_f[i] : at::zeros_like(lf[i]);
    EXPECT_EQ(got.scalar_type(), dt) << names[i];
    EXPECT_TRUE(all_close(got, want, gt, "d/d" + names[i]));
  }
}

const std::vector<Case>& cases() {
  static const std::vector<Case> c = {
      {2, 1, 1, 3, 8, 5, 2, Mamba3Pairing::adjacent, true},   {2, 31, 1, 3, 8, 5, 4, Mamba3Pairing::adjacent, false},
      {1, 32, 2, 2, 8, 3, 2, Mamba3Pairing::halves, true},    {2, 33, 4, 3, 6, 5, 3, Mamba3Pairing::halves, true},
      {1, 70, 1, 2, 12, 7, 3, Mamba3Pairing::adjacent, true}, {1, 65, 4, 1, 16, 9, 8, Mamba3Pairing::halves, false},
      {1, 40, 3, 2, 10, 5, 2, Mamba3Pairing::halves, true}};  // R 3: the kernel's generic-rank step
  return c;
}

TEST(Mamba3Fused, MatchesReferenceForwardAndBackwardFloat64) {
  for (const auto& c : cases()) {
    SCOPED_TRACE(label(c));
    compare_fused(make(c, 70 + c.t), at::kDouble, true, true, 71);
  }
}

TEST(Mamba3Fused, MatchesReferenceWithOneSidedCotangents) {
  const Case c{2, 45, 2, 2, 8, 5, 2, Mamba3Pairing::halves, true};
  compare_fused(make(c, 72), at::kDouble, true, false, 73);
  compare_fused(make(c, 72), at::kDouble, false, true, 74);
}

// N 300 splits P = 29 state rows into blocks of 4096 / 300 = 13 rows: 13 + 13 + 3.
TEST(Mamba3Fused, MatchesReferenceAcrossStateRowBlocks) {
  for (const auto& c : {Case{1, 40, 1, 2, 300, 29, 75, Mamba3Pairing::adjacent, true},
                        Case{1, 37, 2, 1, 300, 29, 150, Mamba3Pairing::halves, true}}) {
    SCOPED_TRACE(label(c));
    compare_fused(make(c, 75), at::kDouble, true, true, 76);
  }
}

TEST(Mamba3Fused, MatchesReferenceFloat32) {
  for (const auto& c : {Case{2, 70, 1, 3, 16, 8, 4, Mamba3Pairing::adjacent, true},
                        Case{1, 67, 4, 2, 16, 8, 8, Mamba3Pairing::halves, true},
                        Case{2, 33, 2, 2, 8, 5, 2, Mamba3Pairing::halves, false}}) {
    SCOPED_TRACE(label(c));
    compare_fused(make(c, 77), at::kFloat, true, true, 78);
  }
}

// The whole scan is one kernel per (batch, head): more tasks than threads (B 3 x H 3), four 32-token segments with
// a short last one, no D, and theta shared by the heads as the layer passes it (an expand()ed view).
TEST(Mamba3Fused, MatchesReferenceManyTasksNoSkipSharedTheta) {
  for (const auto& c : {Case{3, 97, 1, 3, 10, 6, 3, Mamba3Pairing::adjacent, true},
                        Case{3, 97, 2, 3, 10, 6, 5, Mamba3Pairing::halves, false}}) {
    SCOPED_TRACE(label(c));
    In in = make(c, 80);
    in.o.D.reset();
    in.theta = in.theta.select(2, 0).unsqueeze(2).expand({c.b, c.t, c.h, c.s});
    compare_fused(in, at::kDouble, true, true, 81);
    compare_fused(in, at::kFloat, true, true, 82);
  }
}

// Large phases (many turns: dt theta up to ~1.5 per step over 300 steps, an initial phase of 40 turns) in float32:
// the kernel's fp64 phase sum and quadrant-reduced float sin/cos against the float64 reference.
TEST(Mamba3Fused, MatchesReferenceWithManyTurnsFloat32) {
  const Case c{1, 300, 1, 2, 8, 4, 4, Mamba3Pairing::adjacent, true};
  In in = make(c, 83);
  in.dt = in.dt * 0 + 0.5;
  in.adt = in.adt * 0 - 0.05;
  in.theta = M_PI * at::tanh(3 * in.theta);
  in.o.initial->phase = in.o.initial->phase + 80 * M_PI;
  compare_fused(in, at::kFloat, true, true, 84);
}

TEST(Mamba3Fused, AutoTakesTheFusedKernelOnCpu) {
  const Tensor x = at::zeros({1, 2, 1, 1, 2});
  EXPECT_EQ(ssmlab::ops::mamba3_path(x), ssmlab::ops::Mamba3Path::fused);
  EXPECT_EQ(ssmlab::ops::mamba3_path(x, "reference"), ssmlab::ops::Mamba3Path::reference);
  EXPECT_EQ(ssmlab::ops::mamba3_path(x, "chunked"), ssmlab::ops::Mamba3Path::chunked);
  EXPECT_STREQ(ssmlab::ops::to_string(ssmlab::ops::Mamba3Path::fused), "fused");
  EXPECT_EQ(ssmlab::ops::mamba3_pairing_from("halves"), Mamba3Pairing::halves);
  EXPECT_THROW(ssmlab::ops::mamba3_pairing_from("pairs"), ssmlab::Error);
}

// The schemas give the C++ entry's results and differentiate through <op>_backward.
TEST(Mamba3Fused, DispatcherSchemasMatchCppAndDifferentiate) {
  using Opt = std::optional<Tensor>;
  using Tup = std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor>;
  using ScanSig = Tup(const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                      const Tensor&, const Opt&, const Opt&, const Opt&, const Opt&, const Opt&, c10::string_view,
                      int64_t);
  const Case c{2, 9, 2, 3, 6, 4, 3, Mamba3Pairing::halves, true};
  const In in = make(c, 79);
  const Mamba3State& s0 = *in.o.initial;
  auto ref = [&](const Tensor& x) {
    return ssmlab::ops::mamba3_scan(in.q, in.k, x, in.adt, in.dt, in.trap, in.theta, in.o, "reference");
  };
  for (const char* name : {"mamba3_scan", "mamba3_scan_ref"}) {
    SCOPED_TRACE(name);
    auto op =
        c10::Dispatcher::singleton().findSchemaOrThrow(ssmlab::str("ssmlab::", name).c_str(), "").typed<ScanSig>();
    const Tensor x = in.x.clone().requires_grad_();
    const auto [y, phase, state, k_prev, x_prev] = op.call(in.q, in.k, x, in.adt, in.dt, in.trap, in.theta, in.o.D,
                                                           s0.phase, s0.state, s0.k_prev, s0.x_prev, "halves", 4);
    const Tensor x_ref = in.x.clone().requires_grad_();
    const auto want = ref(x_ref);
    EXPECT_TRUE(all_close(y, want.y, ssmlab::test::kFp64Forward, "y"));
    EXPECT_TRUE(all_close(state, want.final.state, ssmlab::test::kFp64Forward, "state"));
    EXPECT_TRUE(all_close(phase, want.final.phase, ssmlab::test::kFp64Forward, "phase"));
    EXPECT_TRUE(all_close(k_prev, want.final.k_prev, ssmlab::test::kFp64Forward, "k_prev"));
    EXPECT_TRUE(all_close(x_prev, want.final.x_prev, ssmlab::test::kFp64Forward, "x_prev"));
    ASSERT_TRUE(y.requires_grad());
    const Tensor gx = torch::autograd::grad({(y * y).sum() + state.sum()}, {x})[0];
    const Tensor gx_want = torch::autograd::grad({(want.y * want.y).sum() + want.final.state.sum()}, {x_ref})[0];
    EXPECT_TRUE(all_close(gx, gx_want, ssmlab::test::kFp64Grad, "d/dx"));
  }
  using StepSig = Tup(const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                      const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Opt&,
                      c10::string_view);
  auto step = c10::Dispatcher::singleton().findSchemaOrThrow("ssmlab::mamba3_step", "").typed<StepSig>();
  const auto [y, phase, state, k_prev, x_prev] =
      step.call(in.q.select(1, 0), in.k.select(1, 0), in.x.select(1, 0), in.adt.select(1, 0), in.dt.select(1, 0),
                in.trap.select(1, 0), in.theta.select(1, 0), s0.phase, s0.state, s0.k_prev, s0.x_prev, in.o.D,
                "halves");
  auto [y_want, next] = ssmlab::ops::mamba3_step(in.q.select(1, 0), in.k.select(1, 0), in.x.select(1, 0),
                                                 in.adt.select(1, 0), in.dt.select(1, 0), in.trap.select(1, 0),
                                                 in.theta.select(1, 0), s0, Mamba3Pairing::halves, in.o.D);
  EXPECT_TRUE(all_close(y, y_want, ssmlab::test::kFp64Forward, "step y"));
  EXPECT_TRUE(all_close(state, next.state, ssmlab::test::kFp64Forward, "step state"));
  EXPECT_TRUE(all_close(phase, next.phase, ssmlab::test::kFp64Forward, "step phase"));
  try {
    ssmlab::ops::mamba3_pairing_from("diagonal");
    ADD_FAILURE() << "no error for an unknown pairing";
  } catch (const ssmlab::Error& e) {
    EXPECT_NE(std::string(e.what()).find("unknown rotation pairing 'diagonal'"), std::string::npos) << e.what();
  }
}

}  // namespace

}  // namespace ops_test_mamba3_cpu
