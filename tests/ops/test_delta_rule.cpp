// The delta rule (ops/delta_rule): the float64 reference against a hand-computed two-step case and a scalar
// loop written here; the chunked UT/WY form against the reference (every gate kind, beta in (0, 1) and (0, 2),
// grouped value heads, initial state, chunk sizes 1..64, strong decay); degenerate cross-checks (gate 1 equals
// DeltaNet, beta = 0 keeps the state); a split sequence with the carried state; the decode step; gradients
// against finite differences; the fused CPU kernel forward and backward against the reference on odd sizes with
// NaN-filled outputs, float64 and float32; input errors; the dispatcher schemas.
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/csrc/autograd/autograd.h>

#include <cmath>
#include <string>
#include <vector>

#include "ssmlab/core/error.h"
#include "ssmlab/ops/delta_rule/cpu.h"
#include "ssmlab/ops/delta_rule/delta_rule.h"
#include "finite_diff.h"
#include "tolerances.h"

namespace ops_test_delta_rule {

namespace {

using at::Tensor;
using ssmlab::ops::DeltaRuleOptions;
using ssmlab::ops::DeltaRuleOut;
using ssmlab::test::all_close;

enum Gate { kNone = 0, kHead = 1, kKey = 2 };

struct Shape {
  int64_t b = 2, l = 37, h = 2, hv = 4, k = 5, v = 3;
};

struct In {
  Tensor q, k, v, beta;
  DeltaRuleOptions o;
};

// L2-normalised q and k (q scaled by K^-1/2, as the mixers give them); beta = beta_max sigmoid(N(0, 1));
// g = logsigmoid(N(0, 1)) / 2 with about a fifth of the gates forced to 0 (no decay), or `g_const` everywhere.
In make(const Shape& s, Gate gate, double beta_max, bool h0, uint64_t seed, at::ScalarType dt = at::kDouble,
        std::optional<double> g_const = std::nullopt) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  auto r = [&](std::vector<int64_t> sz) { return at::randn(sz, gen, at::kDouble); };
  auto l2 = [](const Tensor& t) { return t / (t.pow(2).sum(-1, true) + 1e-6).sqrt(); };
  In in;
  in.q = (l2(r({s.b, s.l, s.h, s.k})) / std::sqrt(static_cast<double>(s.k))).to(dt);
  in.k = l2(r({s.b, s.l, s.h, s.k})).to(dt);
  in.v = r({s.b, s.l, s.hv, s.v}).to(dt);
  in.beta = (beta_max * at::sigmoid(r({s.b, s.l, s.hv}))).to(dt);
  if (gate != kNone) {
    std::vector<int64_t> gs = {s.b, s.l, s.hv};
    if (gate == kKey) gs.push_back(s.k);
    Tensor g = at::log_sigmoid(r(gs)) * 0.5;
    g = g.masked_fill(at::rand(gs, gen, at::kDouble) < 0.2, 0.0);
    if (g_const) g = at::full(gs, *g_const, at::kDouble);
    in.o.g = g.to(dt);
  }
  if (h0) in.o.initial_state = (r({s.b, s.hv, s.k, s.v}) * 0.5).to(dt);
  return in;
}

DeltaRuleOut run(const In& in, const std::string& path, int64_t chunk = 64) {
  DeltaRuleOptions o = in.o;
  o.chunk_size = chunk;
  if (path == "chunked") return ssmlab::ops::delta_rule_chunked(in.q, in.k, in.v, in.beta, o);
  if (path == "fused") return ssmlab::ops::delta_rule_fused(in.q, in.k, in.v, in.beta, o);
  return ssmlab::ops::delta_rule(in.q, in.k, in.v, in.beta, o, path);
}

// The recurrence with scalar loops over plain doubles (independent of ATen's ops).
DeltaRuleOut scalar_loop(const In& in) {
  const Tensor q = in.q.to(at::kDouble).contiguous(), k = in.k.to(at::kDouble).contiguous();
  const Tensor v = in.v.to(at::kDouble).contiguous(), be = in.beta.to(at::kDouble).contiguous();
  const int64_t B = q.size(0), L = q.size(1), H = q.size(2), K = q.size(3), HV = v.size(2), V = v.size(3);
  auto qa = q.accessor<double, 4>(), ka = k.accessor<double, 4>(), va = v.accessor<double, 4>();
  auto ba = be.accessor<double, 3>();
  Tensor o = at::zeros({B, L, HV, V}, at::kDouble);
  Tensor fin = in.o.initial_state ? in.o.initial_state->to(at::kDouble).clone() : at::zeros({B, HV, K, V}, at::kDouble);
  auto oa = o.accessor<double, 4>();
  auto sa = fin.accessor<double, 4>();
  Tensor g = in.o.g ? in.o.g->to(at::kDouble).contiguous() : Tensor();
  for (int64_t b = 0; b < B; ++b)
    for (int64_t j = 0; j < HV; ++j) {
      const int64_t hh = j / (HV / H);
      for (int64_t t = 0; t < L; ++t) {
        for (int64_t d = 0; d < K; ++d) {
          double a = 1.0;
          if (g.defined()) a = std::exp(g.dim() == 3 ? g[b][t][j].item<double>() : g[b][t][j][d].item<double>());
          for (int64_t e = 0; e < V; ++e) sa[b][j][d][e] *= a;
        }
        for (int64_t e = 0; e < V; ++e) {
          double w = 0.0;
          for (int64_t d = 0; d < K; ++d) w += sa[b][j][d][e] * ka[b][t][hh][d];
          const double u = ba[b][t][j] * (va[b][t][j][e] - w);
          for (int64_t d = 0; d < K; ++d) sa[b][j][d][e] += ka[b][t][hh][d] * u;
          double out = 0.0;
          for (int64_t d = 0; d < K; ++d) out += sa[b][j][d][e] * qa[b][t][hh][d];
          oa[b][t][j][e] = out;
        }
      }
    }
  return {o, fin};
}

struct Variant {
  Gate gate;
  double beta_max;
  bool h0;
};
const std::vector<Variant>& variants() {
  static const std::vector<Variant> v = {{kNone, 1.0, false}, {kNone, 2.0, true}, {kHead, 1.0, true},
                                         {kHead, 2.0, false}, {kKey, 1.0, false}, {kKey, 2.0, true}};
  return v;
}
std::string label(const Variant& v) {
  return ssmlab::str("gate ", static_cast<int>(v.gate), ", beta_max ", v.beta_max, ", h0 ", v.h0);
}

// Two steps worked by hand: K = 2, V = 1, H = HV = 1, no initial state.
//   t = 1: k = (1, 0), v = 2, beta = 0.5, no decay: u = 0.5 (2 - 0) = 1, S = (1, 0)^T; q = (1, 1): o = 1.
//   t = 2: decay 1/2: S = (0.5, 0); k = (0.6, 0.8), v = 1, beta = 1: S^T k = 0.3, u = 0.7,
//          S = (0.5 + 0.42, 0.56) = (0.92, 0.56); q = (1, -1): o = 0.36.
TEST(DeltaRule, HandComputedTwoSteps) {
  In in;
  in.q = at::tensor({1.0, 1.0, 1.0, -1.0}, at::kDouble).view({1, 2, 1, 2});
  in.k = at::tensor({1.0, 0.0, 0.6, 0.8}, at::kDouble).view({1, 2, 1, 2});
  in.v = at::tensor({2.0, 1.0}, at::kDouble).view({1, 2, 1, 1});
  in.beta = at::tensor({0.5, 1.0}, at::kDouble).view({1, 2, 1});
  in.o.g = at::tensor({0.0, std::log(0.5)}, at::kDouble).view({1, 2, 1});
  const Tensor o_want = at::tensor({1.0, 0.36}, at::kDouble).view({1, 2, 1, 1});
  const Tensor s_want = at::tensor({0.92, 0.56}, at::kDouble).view({1, 1, 2, 1});
  for (const char* path : {"reference", "chunked", "fused"}) {
    SCOPED_TRACE(path);
    for (int64_t chunk : {1, 2}) {
      const auto r = run(in, path, chunk);
      EXPECT_TRUE(all_close(r.o, o_want, ssmlab::test::kFp64Forward, "o"));
      EXPECT_TRUE(all_close(r.final_state, s_want, ssmlab::test::kFp64Forward, "final_state"));
    }
  }
  // The same decay as a per-key gate (both channels 1/2 at t = 2).
  in.o.g = at::tensor({0.0, 0.0, std::log(0.5), std::log(0.5)}, at::kDouble).view({1, 2, 1, 2});
  const auto r = run(in, "reference");
  EXPECT_TRUE(all_close(r.o, o_want, ssmlab::test::kFp64Forward, "o (per-key gate)"));
}

TEST(DeltaRule, ReferenceMatchesScalarLoop) {
  for (const auto& var : variants()) {
    SCOPED_TRACE(label(var));
    const In in = make({2, 9, 2, 4, 3, 2}, var.gate, var.beta_max, var.h0, 11);
    const auto want = scalar_loop(in);
    const auto r = run(in, "reference");
    EXPECT_TRUE(all_close(r.o, want.o, ssmlab::test::kFp64Forward, "o"));
    EXPECT_TRUE(all_close(r.final_state, want.final_state, ssmlab::test::kFp64Forward, "final_state"));
  }
}

TEST(DeltaRule, ChunkedMatchesReferenceAtEveryChunkSize) {
  for (const auto& var : variants())
    for (int64_t l : {1, 37, 100}) {
      const In in = make({2, l, 2, 4, 5, 3}, var.gate, var.beta_max, var.h0, 12 + l);
      const auto want = run(in, "reference");
      for (int64_t chunk : {1, 5, 16, 64}) {
        SCOPED_TRACE(ssmlab::str(label(var), ", L ", l, ", chunk ", chunk));
        const auto r = run(in, "chunked", chunk);
        EXPECT_TRUE(all_close(r.o, want.o, ssmlab::test::kFp64Forward, "o"));
        EXPECT_TRUE(all_close(r.final_state, want.final_state, ssmlab::test::kFp64Forward, "final_state"));
      }
    }
}

TEST(DeltaRule, StrongDecayChunkedAndFusedStayFinite) {
  for (Gate gate : {kHead, kKey}) {
    SCOPED_TRACE(static_cast<int>(gate));
    const In in = make({1, 70, 1, 1, 4, 3}, gate, 1.0, true, 13, at::kDouble, -20.0);
    const auto want = scalar_loop(in);
    for (const char* path : {"reference", "chunked", "fused"}) {
      const auto r = run(in, path, 64);
      EXPECT_TRUE(all_close(r.o, want.o, ssmlab::test::kFp64Forward, std::string(path) + " o"));
      EXPECT_TRUE(all_close(r.final_state, want.final_state, ssmlab::test::kFp64Forward, std::string(path) + " S"));
    }
  }
}

TEST(DeltaRule, ChunkedGradientsMatchReference) {
  for (const auto& var : variants()) {
    SCOPED_TRACE(label(var));
    const In in = make({1, 11, 1, 2, 3, 2}, var.gate, var.beta_max, true, 14);
    auto grads = [&](const std::string& path) {
      In x = in;
      std::vector<Tensor> leaves = {x.q.clone().requires_grad_(), x.k.clone().requires_grad_(),
                                    x.v.clone().requires_grad_(), x.beta.clone().requires_grad_(),
                                    x.o.initial_state->clone().requires_grad_()};
      x.q = leaves[0], x.k = leaves[1], x.v = leaves[2], x.beta = leaves[3], x.o.initial_state = leaves[4];
      if (x.o.g) {
        leaves.push_back(x.o.g->clone().requires_grad_());
        x.o.g = leaves.back();
      }
      const auto r = run(x, path, 4);
      const Tensor loss = (r.o * at::cos(r.o)).sum() + (r.final_state * r.final_state).sum();
      return torch::autograd::grad({loss}, leaves);
    };
    const auto a = grads("reference"), c = grads("chunked");
    for (size_t i = 0; i < a.size(); ++i)
      EXPECT_TRUE(all_close(c[i], a[i], ssmlab::test::kFp64Grad, "grad " + std::to_string(i)));
  }
}

TEST(DeltaRule, GateOneEqualsDeltaNet) {
  const In plain = make({2, 23, 1, 2, 4, 3}, kNone, 1.0, true, 15);
  for (Gate gate : {kHead, kKey}) {
    In gated = plain;
    gated.o.g = gate == kHead ? at::zeros({2, 23, 2}, at::kDouble) : at::zeros({2, 23, 2, 4}, at::kDouble);
    for (const char* path : {"reference", "chunked", "fused"}) {
      SCOPED_TRACE(ssmlab::str(path, " gate ", static_cast<int>(gate)));
      const auto a = run(plain, path, 8), b = run(gated, path, 8);
      EXPECT_TRUE(all_close(b.o, a.o, ssmlab::test::kFp64Forward, "o"));
      EXPECT_TRUE(all_close(b.final_state, a.final_state, ssmlab::test::kFp64Forward, "final_state"));
    }
  }
}

// beta = 0 writes nothing: without decay the state stays h0 and o_t = h0^T q_t; with a gate it only decays.
TEST(DeltaRule, BetaZeroLeavesTheStateUnchanged) {
  for (Gate gate : {kNone, kHead}) {
    In in = make({2, 17, 2, 2, 4, 3}, gate, 1.0, true, 16);
    in.beta = at::zeros_like(in.beta);
    const Tensor h0 = *in.o.initial_state;
    Tensor decay = at::ones({2, 2, 1, 1}, at::kDouble);
    Tensor o_want;
    if (gate == kNone) {
      o_want = at::matmul(in.q.unsqueeze(-2), h0.unsqueeze(1)).squeeze(-2);  // (B, L, HV, V) with H = HV
    } else {
      const Tensor cum = at::exp(at::cumsum(*in.o.g, 1));                     // (B, L, HV)
      o_want = at::matmul(in.q.unsqueeze(-2), h0.unsqueeze(1)).squeeze(-2) * cum.unsqueeze(-1);
      decay = cum.select(1, 16).view({2, 2, 1, 1});
    }
    for (const char* path : {"reference", "chunked", "fused"}) {
      SCOPED_TRACE(ssmlab::str(path, " gate ", static_cast<int>(gate)));
      const auto r = run(in, path, 5);
      EXPECT_TRUE(all_close(r.final_state, h0 * decay, ssmlab::test::kFp64Forward, "final_state"));
      EXPECT_TRUE(all_close(r.o, o_want, ssmlab::test::kFp64Forward, "o"));
    }
  }
}

TEST(DeltaRule, SplitSequenceWithCarriedStateEqualsOnePass) {
  for (const auto& var : variants()) {
    const In in = make({2, 45, 2, 4, 5, 3}, var.gate, var.beta_max, var.h0, 17);
    for (const char* path : {"reference", "chunked", "fused"}) {
      SCOPED_TRACE(ssmlab::str(label(var), ", ", path));
      const auto whole = run(in, path, 16);
      auto part = [&](int64_t a, int64_t n, const std::optional<Tensor>& s0) {
        In p;
        p.q = in.q.narrow(1, a, n), p.k = in.k.narrow(1, a, n), p.v = in.v.narrow(1, a, n);
        p.beta = in.beta.narrow(1, a, n);
        if (in.o.g) p.o.g = in.o.g->narrow(1, a, n);
        p.o.initial_state = s0;
        return run(p, path, 16);
      };
      const auto first = part(0, 19, in.o.initial_state);
      const auto second = part(19, 26, first.final_state);
      EXPECT_TRUE(all_close(at::cat({first.o, second.o}, 1), whole.o, ssmlab::test::kFp64Forward, "o"));
      EXPECT_TRUE(all_close(second.final_state, whole.final_state, ssmlab::test::kFp64Forward, "final_state"));
    }
  }
}

TEST(DeltaRule, DecodeStepsEqualForward) {
  for (const auto& var : variants()) {
    SCOPED_TRACE(label(var));
    const In in = make({2, 13, 2, 4, 5, 3}, var.gate, var.beta_max, var.h0, 18);
    const auto want = run(in, "reference");
    Tensor state = in.o.initial_state ? in.o.initial_state->clone() : at::zeros({2, 4, 5, 3}, at::kDouble);
    std::vector<Tensor> os;
    for (int64_t t = 0; t < 13; ++t) {
      std::optional<Tensor> gt;
      if (in.o.g) gt = in.o.g->select(1, t);
      os.push_back(ssmlab::ops::delta_rule_update(in.q.select(1, t), in.k.select(1, t), in.v.select(1, t),
                                                  in.beta.select(1, t), state, gt));
    }
    EXPECT_TRUE(all_close(at::stack(os, 1), want.o, ssmlab::test::kFp64Forward, "o"));
    EXPECT_TRUE(all_close(state, want.final_state, ssmlab::test::kFp64Forward, "state"));
  }
}

// d(loss)/d(input) of the float64 reference against central finite differences on a few elements of each input.
TEST(DeltaRule, ReferenceGradientsMatchFiniteDifferences) {
  for (const auto& var : variants()) {
    SCOPED_TRACE(label(var));
    In in = make({1, 6, 1, 2, 3, 2}, var.gate, var.beta_max, true, 19);
    at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(20);
    const Tensor wo = at::randn({1, 6, 2, 2}, gen, at::kDouble), ws = at::randn({1, 2, 3, 2}, gen, at::kDouble);
    std::vector<Tensor*> inputs = {&in.q, &in.k, &in.v, &in.beta, &*in.o.initial_state};
    if (in.o.g) inputs.push_back(&*in.o.g);
    auto loss = [&]() {
      const auto r = run(in, "reference");
      return (r.o * wo).sum() + (r.final_state * ws).sum();
    };
    std::vector<std::string> names;
    for (size_t i = 0; i < inputs.size(); ++i) names.push_back(ssmlab::str("input ", i));
    ssmlab::test::expect_grads_match_finite_differences(loss, inputs, names);
  }
}

struct Poison {
  Poison() { ssmlab::ops::delta_rule_cpu::set_poison_outputs(true); }
  ~Poison() { ssmlab::ops::delta_rule_cpu::set_poison_outputs(false); }
};

// The fused kernel's outputs and every gradient against the float64 reference's autograd.
void compare_fused(const In& in64, at::ScalarType dt, bool use_do, bool use_dfin, uint64_t seed) {
  Poison poison;
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  const int64_t b = in64.q.size(0), l = in64.q.size(1), k = in64.q.size(3), hv = in64.v.size(2), v = in64.v.size(3);
  const Tensor go = at::randn({b, l, hv, v}, gen, at::kDouble), gs = at::randn({b, hv, k, v}, gen, at::kDouble);
  auto leaves_of = [&](at::ScalarType t, In& x) {
    auto leaf = [&](const Tensor& a) { return a.detach().to(t).clone().requires_grad_(); };
    x.q = leaf(in64.q), x.k = leaf(in64.k), x.v = leaf(in64.v), x.beta = leaf(in64.beta);
    std::vector<Tensor> leaves = {x.q, x.k, x.v, x.beta};
    if (in64.o.g) {
      x.o.g = leaf(*in64.o.g);
      leaves.push_back(*x.o.g);
    }
    if (in64.o.initial_state) {
      x.o.initial_state = leaf(*in64.o.initial_state);
      leaves.push_back(*x.o.initial_state);
    }
    return leaves;
  };
  In xr, xf;
  const auto lr = leaves_of(at::kDouble, xr), lf = leaves_of(dt, xf);
  const auto r = run(xr, "reference"), f = run(xf, "fused");
  EXPECT_EQ(f.o.scalar_type(), dt);
  const auto ft = ssmlab::test::forward_tol(dt), gt = ssmlab::test::grad_tol(dt);
  EXPECT_TRUE(all_close(f.o, r.o, ft, "o"));
  EXPECT_TRUE(all_close(f.final_state, r.final_state, ft, "final_state"));
  Tensor loss_r = at::zeros({}, at::kDouble), loss_f = at::zeros({}, at::kDouble);
  if (use_do) {
    loss_r = loss_r + (r.o * go).sum();
    loss_f = loss_f + (f.o.to(at::kDouble) * go).sum();
  }
  if (use_dfin) {
    loss_r = loss_r + (r.final_state * gs).sum();
    loss_f = loss_f + (f.final_state.to(at::kDouble) * gs).sum();
  }
  const auto g_r = torch::autograd::grad({loss_r}, lr, {}, false, false, /*allow_unused=*/true);
  const auto g_f = torch::autograd::grad({loss_f}, lf, {}, false, false, /*allow_unused=*/true);
  const char* names[] = {"q", "k", "v", "beta", "g or h0", "h0"};
  for (size_t i = 0; i < lr.size(); ++i) {
    ASSERT_TRUE(g_f[i].defined()) << names[i];
    EXPECT_EQ(g_f[i].scalar_type(), dt) << names[i];
    const Tensor want = g_r[i].defined() ? g_r[i] : at::zeros_like(lr[i]);
    EXPECT_TRUE(all_close(g_f[i], want, gt, std::string("d/d") + names[i]));
  }
}

// L = 1, 63, 64, 65 and 130 around the 64-step checkpoints; grouped and plain heads; odd K and V.
TEST(DeltaRuleFused, MatchesReferenceForwardAndBackwardFloat64) {
  for (const auto& var : variants())
    for (int64_t l : {1, 63, 64, 65, 130}) {
      SCOPED_TRACE(ssmlab::str(label(var), ", L ", l));
      const Shape s = l == 130 ? Shape{1, l, 1, 3, 7, 5} : Shape{2, l, 2, 4, 5, 3};
      compare_fused(make(s, var.gate, var.beta_max, var.h0, 21 + l), at::kDouble, true, true, 22);
    }
}

// K 130 splits V = 50 into column blocks of 24 (the kernel keeps a K x 24 state block per task): 24 + 24 + 2.
TEST(DeltaRuleFused, MatchesReferenceAcrossValueColumnBlocks) {
  for (const auto& var : variants()) {
    SCOPED_TRACE(label(var));
    compare_fused(make({2, 70, 1, 2, 130, 50}, var.gate, var.beta_max, var.h0, 29), at::kDouble, true, true, 30);
  }
}

// The forward's vector blocks (two 32-byte vectors of columns: 16 in float32, 8 in float64) and the scalar tail:
// V = 40 is 2 blocks + 8 tail columns in float32, 5 blocks in float64; V = 19 ends on a 3-column tail.
TEST(DeltaRuleFused, MatchesReferenceOnVectorBlocksAndTails) {
  for (const auto& var : variants())
    for (int64_t vd : {40, 19}) {
      SCOPED_TRACE(ssmlab::str(label(var), ", V ", vd));
      const In in = make({1, 67, 2, 2, 12, vd}, var.gate, var.beta_max, var.h0, 31);
      compare_fused(in, at::kFloat, true, true, 32);
      compare_fused(in, at::kDouble, true, true, 33);
    }
}

TEST(DeltaRuleFused, MatchesReferenceFloat32AndOneSidedCotangents) {
  for (const auto& var : variants()) {
    SCOPED_TRACE(label(var));
    const In in = make({2, 70, 1, 2, 16, 9}, var.gate, var.beta_max, var.h0, 23);
    compare_fused(in, at::kFloat, true, true, 24);
    compare_fused(in, at::kDouble, true, false, 25);
    compare_fused(in, at::kDouble, false, true, 26);
  }
}

TEST(DeltaRule, AutoTakesTheFusedKernelOnCpu) {
  const Tensor q = at::zeros({1, 2, 1, 2});
  EXPECT_EQ(ssmlab::ops::delta_rule_path(q), ssmlab::ops::DeltaRulePath::fused);
  EXPECT_EQ(ssmlab::ops::delta_rule_path(q, "reference"), ssmlab::ops::DeltaRulePath::reference);
  EXPECT_STREQ(ssmlab::ops::to_string(ssmlab::ops::DeltaRulePath::chunked), "chunked");
}

void expect_error(const std::function<void()>& f, const std::string& needle) {
  try {
    f();
    ADD_FAILURE() << "no error; expected one mentioning '" << needle << "'";
  } catch (const ssmlab::Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

TEST(DeltaRule, BadInputsAreErrorsNamingTheProblem) {
  const In in = make({1, 4, 2, 4, 3, 2}, kHead, 1.0, true, 27);
  auto call = [&](const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& b, DeltaRuleOptions o) {
    return [=] { ssmlab::ops::delta_rule(q, k, v, b, o); };
  };
  expect_error(call(in.q.squeeze(0), in.k, in.v, in.beta, in.o), "q must be (B, L, H, K)");
  expect_error(call(in.q, in.k.narrow(3, 0, 2), in.v, in.beta, in.o), "k must match q");
  expect_error(call(in.q, in.k, in.v.narrow(2, 0, 3), in.beta, in.o), "HV a multiple of H");
  expect_error(call(in.q, in.k, in.v, in.beta.narrow(1, 0, 3), in.o), "beta must be (B, L, HV)");
  DeltaRuleOptions bad = in.o;
  bad.g = at::zeros({1, 4, 3});
  expect_error(call(in.q, in.k, in.v, in.beta, bad), "g must be (B, L, HV)");
  bad = in.o;
  bad.initial_state = at::zeros({1, 4, 2, 3});
  expect_error(call(in.q, in.k, in.v, in.beta, bad), "initial_state must be (B, HV, K, V)");
  bad = in.o;
  bad.chunk_size = 0;
  expect_error(call(in.q, in.k, in.v, in.beta, bad), "chunk_size");
  expect_error([&] { ssmlab::ops::delta_rule(in.q, in.k, in.v, in.beta, in.o, "fast"); }, "fast");
  Tensor state = at::zeros({1, 4, 3, 3});
  expect_error([&] {
    ssmlab::ops::delta_rule_update(in.q.select(1, 0), in.k.select(1, 0), in.v.select(1, 0), in.beta.select(1, 0),
                                   state, std::nullopt);
  }, "state must be (B, HV, K, V)");
}

TEST(DeltaRule, DispatcherSchemasMatchCppAndDifferentiate) {
  using Sig = std::tuple<Tensor, Tensor>(const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                                         const std::optional<Tensor>&, const std::optional<Tensor>&, int64_t);
  const In in = make({2, 9, 1, 2, 3, 4}, kKey, 2.0, true, 28);
  for (const char* name : {"delta_rule", "delta_rule_ref"}) {
    SCOPED_TRACE(name);
    auto op = c10::Dispatcher::singleton().findSchemaOrThrow(ssmlab::str("ssmlab::", name).c_str(), "").typed<Sig>();
    const Tensor v = in.v.clone().requires_grad_();
    const auto [o, s] = op.call(in.q, in.k, v, in.beta, in.o.g, in.o.initial_state, 4);
    const auto want = run(in, "reference");
    EXPECT_TRUE(all_close(o, want.o, ssmlab::test::kFp64Forward, "o"));
    EXPECT_TRUE(all_close(s, want.final_state, ssmlab::test::kFp64Forward, "final_state"));
    ASSERT_TRUE(o.requires_grad());
    const Tensor gv = torch::autograd::grad({o.sum()}, {v})[0];
    In x = in;
    x.v = in.v.clone().requires_grad_();
    const Tensor gv_want = torch::autograd::grad({run(x, "reference").o.sum()}, {x.v})[0];
    EXPECT_TRUE(all_close(gv, gv_want, ssmlab::test::kFp64Grad, "d/dv"));
  }
}

}  // namespace

}  // namespace ops_test_delta_rule
