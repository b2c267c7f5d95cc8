// Mamba-2 mixer (spec §1.3): the forward against a hand-wired pipeline (in_proj split, conv, scalar-loop scan,
// grouped gated RMSNorm, out_proj); step == forward with and without interventions; the state-carrying path
// == one shot; state normalisation and the sliding window against hand-built expectations (spec §3.6);
// init statistics; errors.
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <cmath>

#include "ops/ssd_scan_testing.h"
#include "ssmlab/core/error.h"
#include "ssmlab/mixers/mamba2.h"
#include "ssmlab/mixers/registry.h"
#include "ssmlab/ops/causal_conv1d/causal_conv1d.h"
#include "test_util.h"
#include "tolerances.h"

namespace mixers_test_mamba2 {

namespace {

using ssmlab::mixers::Mamba2Impl;
using ssmlab::mixers::Mamba2Options;
using ssmlab::mixers::State;
using ssmlab::test::all_close;

Mamba2Options small(int64_t groups = 1) {
  Mamba2Options o;
  o.d_state = 6;
  o.head_dim = 4;
  o.n_groups = groups;
  o.chunk_size = 8;
  return o;
}

// fp64 model (states too) built from `seed`.
std::shared_ptr<Mamba2Impl> make(int64_t d_model, const Mamba2Options& o, uint64_t seed = 1,
                                 const std::string& backend = "reference") {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  auto m = std::make_shared<Mamba2Impl>(o, d_model, backend, gen);
  m->to(at::kDouble);
  return m;
}

State state64(const Mamba2Impl& m, int64_t batch) {
  State s = m.init_state(batch, at::kCPU);
  for (auto& [name, t] : s.tensors)
    if (name != "pos") t = t.to(at::kDouble);
  return s;
}

at::Tensor step_loop(Mamba2Impl& m, const at::Tensor& x, State& s) {
  std::vector<at::Tensor> ys;
  for (int64_t t = 0; t < x.size(1); ++t) ys.push_back(m.step(x.select(1, t), s));
  return at::stack(ys, 1);
}

// The mixer's forward written out from spec §1.3 with the reference conv and the scalar-loop scan.
at::Tensor by_hand(Mamba2Impl& m, const at::Tensor& x) {
  at::NoGradGuard ng;
  const auto& o = m.options();
  const int64_t b = x.size(0), l = x.size(1), E = m.d_inner(), H = m.n_heads(), P = o.head_dim, N = o.d_state,
                G = o.n_groups;
  const at::Tensor zxbcdt = at::matmul(x, m.in_proj->weight.t());
  const at::Tensor z = zxbcdt.narrow(-1, 0, E);
  const at::Tensor xBC = zxbcdt.narrow(-1, E, E + 2 * G * N);
  const at::Tensor dt = zxbcdt.narrow(-1, 2 * E + 2 * G * N, H);
  const at::Tensor xc =
      ssmlab::ops::causal_conv1d_reference(xBC, m.conv_weight, m.conv_bias, /*silu=*/true, std::nullopt).out;
  ssmlab::test::SsdInputs in;
  in.x = xc.narrow(-1, 0, E).reshape({b, l, H, P});
  in.B = xc.narrow(-1, E, G * N).reshape({b, l, G, N});
  in.C = xc.narrow(-1, E + G * N, G * N).reshape({b, l, G, N});
  in.dt = dt;
  in.A = -at::exp(m.A_log);
  in.opts.D = m.D;
  in.opts.dt_bias = m.dt_bias;
  in.opts.dt_softplus = true;
  const at::Tensor y = ssmlab::test::ssd_naive(in).first.reshape({b, l, E});
  const at::Tensor gated = (y * z * at::sigmoid(z)).view({b, l, G, E / G});
  const at::Tensor normed = gated / at::sqrt(gated.pow(2).mean(-1, true) + o.norm_eps);
  return at::matmul(normed.view({b, l, E}) * m.norm_weight, m.out_proj->weight.t());
}

TEST(Mamba2, ShapesStateSizeAndErrors) {
  auto m = make(12, small(3));  // E 24, H 6, G 3
  EXPECT_EQ(m->d_inner(), 24);
  EXPECT_EQ(m->n_heads(), 6);
  EXPECT_EQ(m->state_size(), 6 * 4 * 6 + (24 + 2 * 3 * 6) * 3);
  EXPECT_EQ(m->in_proj->weight.size(0), 2 * 24 + 2 * 3 * 6 + 6);
  EXPECT_EQ(m->forward(at::randn({3, 7, 12}, at::kDouble)).sizes(), (at::IntArrayRef{3, 7, 12}));
  EXPECT_THROW(m->forward(at::randn({3, 7, 11}, at::kDouble)), ssmlab::Error);
  State s = state64(*m, 2);
  ssmlab::test::expect_error([&] { m->step(at::randn({3, 12}, at::kDouble), s); }, {"init_state", "batch 3"});
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(1);
  Mamba2Options bad = small();
  bad.head_dim = 5;
  ssmlab::test::expect_error([&] { Mamba2Impl(bad, 12, "reference", gen); }, {"multiple of head_dim"});
  bad = small(4);
  ssmlab::test::expect_error([&] { Mamba2Impl(bad, 12, "reference", gen); }, {"multiple of n_groups"});
  bad = small();
  bad.interventions.window = 12;
  bad.interventions.segment = 8;
  ssmlab::test::expect_error([&] { Mamba2Impl(bad, 12, "reference", gen); }, {"multiple of interventions.segment"});
}

TEST(Mamba2, ForwardMatchesHandWiredPipeline) {
  for (int64_t groups : {1, 3}) {
    auto m = make(12, small(groups), 2 + groups);
    const at::Tensor x = at::randn({2, 29, 12}, at::kDouble);
    for (const char* backend : {"reference", "auto"}) {
      auto mb = make(12, small(groups), 2 + groups, backend);
      EXPECT_TRUE(all_close(mb->forward(x), by_hand(*m, x), ssmlab::test::kFp64Forward,
                            ssmlab::str("G ", groups, " backend ", backend)));
    }
  }
}

TEST(Mamba2, StepLoopEqualsForward) {
  for (int64_t d_conv : {1, 2, 4}) {
    for (int64_t groups : {1, 6}) {
      Mamba2Options o = small(groups);
      o.d_conv = d_conv;
      auto m = make(12, o, 5 + d_conv);
      const at::Tensor x = at::randn({2, 23, 12}, at::kDouble);
      State s = state64(*m, 2);
      EXPECT_TRUE(all_close(step_loop(*m, x, s), m->forward(x), ssmlab::test::kFp64Forward, "step vs forward"))
          << "d_conv " << d_conv << " G " << groups;
    }
  }
}

// The long-sequence path: uneven pieces through forward_stateful (eval_segment 16 inside) equal one shot.
TEST(Mamba2, StatefulPiecesEqualOneShot) {
  Mamba2Options o = small(2);
  o.interventions.eval_segment = 16;
  auto m = make(12, o, 8);
  const at::Tensor x = at::randn({2, 300, 12}, at::kDouble);
  Mamba2Options whole = o;
  whole.interventions.eval_segment = 1000;
  const at::Tensor y = make(12, whole, 8)->forward(x);
  State s = state64(*m, 2);
  std::vector<at::Tensor> ys;
  int64_t t0 = 0;
  for (int64_t len : {1, 40, 7, 100, 152}) {
    ys.push_back(m->forward_stateful(x.narrow(1, t0, len), s));
    t0 += len;
  }
  EXPECT_TRUE(all_close(at::cat(ys, 1), y, ssmlab::test::kFp64Forward, "pieces vs one shot"));
  // and the carried state equals the one-shot final state
  State s2 = state64(*m, 2);
  m->forward_stateful(x, s2);
  EXPECT_TRUE(all_close(s.at("ssm"), s2.at("ssm"), ssmlab::test::kFp64Forward, "ssm state"));
  EXPECT_TRUE(all_close(s.at("conv"), s2.at("conv"), ssmlab::test::kFp64Forward, "conv state"));
}

// RRI and dt_mult reach the scan: the model with interventions equals the hand-wired pipeline whose scan
// gets the same multipliers (the multipliers' semantics are checked by hand in tests/ops/test_ssd_scan.cpp).
TEST(Mamba2, RriAndDtMultReachTheScan) {
  Mamba2Options o = small(1);
  o.interventions.decay_mult = 0.9;
  o.interventions.b_mult = 0.75;
  o.interventions.dt_mult = 1.5;
  auto m = make(12, o, 4), plain = make(12, small(1), 4);
  const at::Tensor x = at::randn({2, 19, 12}, at::kDouble);
  const at::Tensor y = m->forward(x), y0 = plain->forward(x);
  EXPECT_GT((y - y0).abs().max().item<double>(), 1e-3);
  // Same weights (same seed), so the states differ only by the multipliers:
  State s = state64(*m, 2), s0 = state64(*plain, 2);
  m->forward_stateful(x.narrow(1, 0, 1), s);
  plain->forward_stateful(x.narrow(1, 0, 1), s0);
  // After one token from zero: S = dt'·dt_mult·b_mult·x ⊗ B, so S = 1.5 · 0.75 · S_plain.
  EXPECT_TRUE(all_close(s.at("ssm"), s0.at("ssm") * 1.125, ssmlab::test::kFp64Forward, "first-token state"));
}

// The A and B knobs of spec §1.3 as parameter edits of a plain model with the same weights:
// a_mult c  <=>  A_log + log c;   a_offset c  <=>  A_log = log(exp(A_log) - c).
TEST(Mamba2, AMultAndAOffsetAreParameterEdits) {
  const at::Tensor x = at::randn({2, 21, 12}, at::kDouble);
  for (int which = 0; which < 2; ++which) {
    Mamba2Options o = small(2);
    if (which == 0) o.interventions.a_mult = 0.7;
    if (which == 1) o.interventions.a_offset = 0.4;
    auto m = make(12, o, 13), edited = make(12, small(2), 13);
    {
      at::NoGradGuard ng;
      if (which == 0) edited->A_log.add_(std::log(0.7));
      if (which == 1) edited->A_log.copy_(at::log(at::exp(edited->A_log) - 0.4));  // A_init_min 1 > 0.4
    }
    const at::Tensor y = m->forward(x);
    EXPECT_TRUE(all_close(y, edited->forward(x), ssmlab::test::kFp64Forward, which == 0 ? "a_mult" : "a_offset"));
    EXPECT_GT((y - make(12, small(2), 13)->forward(x)).abs().max().item<double>(), 1e-6);
  }
}

// B clip: after one token from a zero state S[p, n] = w x_p B_n, so clipping scales column n by
// min(B_n, c) / B_n (B read from the plain model's trace).
TEST(Mamba2, BClipByHand) {
  Mamba2Options o = small(1);
  o.interventions.b_clip = 0.05;
  auto m = make(12, o, 14), plain = make(12, small(1), 14);
  const at::Tensor x = at::randn({2, 1, 12}, at::kDouble);
  ssmlab::Trace trace;
  State s = state64(*m, 2), s0 = state64(*plain, 2);
  m->forward_stateful(x, s);
  plain->forward_stateful(x, s0, &trace);
  const at::Tensor B = trace.get("B", 0).select(1, 0).select(1, 0);                  // (2, N), G = 1
  ASSERT_GT((B > 0.05).sum().item<int64_t>(), 0) << "the clip must bind somewhere";
  const at::Tensor ratio = at::where(B > 0.05, 0.05 / B, at::ones_like(B));            // (2, N)
  EXPECT_TRUE(all_close(s.at("ssm"), s0.at("ssm") * ratio.view({2, 1, 1, -1}), ssmlab::test::kFp64Forward, "b_clip"));
}

// State normalisation (spec §3.6.2): after each segment, S <- S·min(1, τ/‖S‖_F) per (batch, head); the next
// segment starts from the scaled state. Built by hand from a model without the intervention.
TEST(Mamba2, StateNormalisationByHand) {
  Mamba2Options o = small(1);
  o.interventions.segment = 8;
  o.interventions.state_norm_tau = 0.05;
  auto m = make(12, o, 6), plain = make(12, small(1), 6);
  const at::Tensor x = at::randn({2, 16, 12}, at::kDouble) * 3;
  const at::Tensor y = m->forward(x);
  State s = state64(*plain, 2);
  const at::Tensor y1 = plain->forward_stateful(x.narrow(1, 0, 8), s);
  at::Tensor S = s.at("ssm").clone();
  int64_t scaled = 0;
  for (int64_t b = 0; b < 2; ++b)
    for (int64_t h = 0; h < m->n_heads(); ++h) {
      const double norm = std::sqrt(S[b][h].pow(2).sum().item<double>());
      if (norm > 0.05) {
        S[b][h] *= 0.05 / norm;
        ++scaled;
      }
    }
  ASSERT_GT(scaled, 0) << "the threshold must bind somewhere for the test to mean anything";
  s["ssm"] = S;
  const at::Tensor y2 = plain->forward_stateful(x.narrow(1, 8, 8), s);
  EXPECT_TRUE(all_close(y, at::cat({y1, y2}, 1), ssmlab::test::kFp64Forward, "state norm"));
  // Per-head thresholds (a calibration pass) override the scalar: huge ones change nothing.
  m->state_norm_tau = at::full({m->n_heads()}, 1e9, at::kDouble);
  EXPECT_TRUE(all_close(m->forward(x), plain->forward(x), ssmlab::test::kFp64Forward, "tau 1e9"));
}

// Sliding window by state difference (spec §3.6.3), window r = 8: tokens in [k·r, (k+1)·r) read the state
// built from tokens (k-1)·r onwards only. By hand: run the plain model to (k-1)·r, zero its SSM state (the
// conv state is untouched), and continue to the end of the window.
TEST(Mamba2, SlidingWindowByHand) {
  Mamba2Options o = small(2);
  o.interventions.segment = 4;
  o.interventions.window = 8;
  auto m = make(12, o, 7), plain = make(12, small(2), 7);
  const int64_t L = 40, r = 8;
  const at::Tensor x = at::randn({2, L, 12}, at::kDouble);
  const at::Tensor y = m->forward(x);
  const at::Tensor y_plain = plain->forward(x);
  EXPECT_TRUE(all_close(y.narrow(1, 0, 2 * r), y_plain.narrow(1, 0, 2 * r), ssmlab::test::kFp64Forward,
                        "first two windows see everything"));
  for (int64_t k = 2; k * r < L; ++k) {
    State s = state64(*plain, 2);
    plain->forward_stateful(x.narrow(1, 0, (k - 1) * r), s);
    s["ssm"] = at::zeros_like(s.at("ssm"));
    const at::Tensor yk = plain->forward_stateful(x.narrow(1, (k - 1) * r, 2 * r), s).narrow(1, r, r);
    EXPECT_TRUE(all_close(y.narrow(1, k * r, r), yk, ssmlab::test::kFp64Forward, ssmlab::str("window ", k)));
  }
  EXPECT_GT((y - y_plain).abs().max().item<double>(), 1e-6);
}

// With every intervention on, step == forward == uneven stateful pieces (boundaries by absolute position).
TEST(Mamba2, InterventionsStepEqualsForward) {
  Mamba2Options o = small(2);
  o.interventions.segment = 4;
  o.interventions.window = 8;
  o.interventions.state_norm_tau = 0.2;
  o.interventions.decay_mult = 0.95;
  o.interventions.b_mult = 0.8;
  auto m = make(12, o, 9);
  const at::Tensor x = at::randn({2, 37, 12}, at::kDouble) * 2;
  const at::Tensor y = m->forward(x);
  State s = state64(*m, 2);
  EXPECT_TRUE(all_close(step_loop(*m, x, s), y, ssmlab::test::kFp64Forward, "step loop"));
  State s2 = state64(*m, 2);
  const at::Tensor a = m->forward_stateful(x.narrow(1, 0, 3), s2);
  const at::Tensor b = step_loop(*m, x.narrow(1, 3, 6), s2);
  const at::Tensor c = m->forward_stateful(x.narrow(1, 9, 28), s2);
  EXPECT_TRUE(all_close(at::cat({a, b, c}, 1), y, ssmlab::test::kFp64Forward, "mixed pieces"));
}

TEST(Mamba2, Causal) {
  auto m = make(12, small(2), 10);
  const at::Tensor x = at::randn({2, 30, 12}, at::kDouble);
  at::Tensor x2 = x.clone();
  x2.narrow(1, 17, 13).normal_();
  const at::Tensor y = m->forward(x), y2 = m->forward(x2);
  EXPECT_TRUE(all_close(y2.narrow(1, 0, 17), y.narrow(1, 0, 17), ssmlab::test::kFp64Forward, "prefix"));
  EXPECT_GT((y2.narrow(1, 17, 13) - y.narrow(1, 17, 13)).abs().max().item<double>(), 1e-6);
}

TEST(Mamba2, InitMatchesMambaSsm) {
  Mamba2Options o;  // defaults: N 128, P 64, G 1
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(3);
  Mamba2Impl m(o, 512, "reference", gen);  // E 1024, H 16
  ASSERT_EQ(m.n_heads(), 16);
  const at::Tensor A = at::exp(m.A_log.detach().to(at::kDouble));
  EXPECT_GE(A.min().item<double>(), 1.0 - 1e-6);
  EXPECT_LE(A.max().item<double>(), 16.0 + 1e-5);
  EXPECT_GT(A.max().item<double>() - A.min().item<double>(), 5.0);
  const at::Tensor dt = at::softplus(m.dt_bias.detach().to(at::kDouble));
  EXPECT_GE(dt.min().item<double>(), o.dt_min * (1 - 1e-5));
  EXPECT_LE(dt.max().item<double>(), o.dt_max * (1 + 1e-5));
  EXPECT_TRUE(at::all(m.D == 1).item<bool>());
  EXPECT_TRUE(at::all(m.norm_weight == 1).item<bool>());
  EXPECT_NEAR(m.in_proj->weight.detach().var().item<double>(), 1.0 / (3.0 * 512), 0.05 / (3.0 * 512));
  const auto names = m.named_parameters();
  for (const char* n : {"in_proj.weight", "conv1d.weight", "conv1d.bias", "dt_bias", "A_log", "D", "norm.weight",
                        "out_proj.weight"})
    EXPECT_TRUE(names.contains(n)) << n;
}

TEST(Mamba2, GradientsFiniteAndNonZero) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(11);
  Mamba2Impl m(small(2), 12, "auto", gen);
  const at::Tensor y = m.forward(at::randn({2, 40, 12}));
  y.pow(2).sum().backward();
  for (const auto& p : m.named_parameters()) {
    ASSERT_TRUE(p.value().grad().defined()) << p.key();
    EXPECT_TRUE(at::isfinite(p.value().grad()).all().item<bool>()) << p.key();
    EXPECT_GT(p.value().grad().abs().sum().item<double>(), 0.0) << p.key();
  }
}

TEST(Mamba2, TraceReportsDecayAndState) {
  auto m = make(12, small(1), 12);
  ssmlab::Trace trace;
  const at::Tensor x = at::randn({2, 9, 12}, at::kDouble);
  m->forward(x, &trace);
  ASSERT_TRUE(trace.has("decay", 0) && trace.has("dt", 0) && trace.has("state", 0));
  const at::Tensor decay = trace.get("decay", 0), dt = trace.get("dt", 0);
  EXPECT_EQ(decay.sizes(), (at::IntArrayRef{2, 9, 6}));  // H = 2 * 12 / 4
  EXPECT_TRUE(all_close(decay, at::exp(dt * -at::exp(m->A_log.detach())), ssmlab::test::kFp64Forward, "decay"));
  EXPECT_EQ(trace.get("state", 0).sizes(), (at::IntArrayRef{2, 6, 4, 6}));
}

TEST(Mamba2, RegistryBuildsIt) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(1);
  ssmlab::mixers::MixerOptions opts;
  opts.mamba2 = small();
  auto m = ssmlab::mixers::make_mixer("mamba2", opts, {8, 0, 1, "reference"}, gen);
  EXPECT_EQ(m->kind(), "mamba2");
}

}  // namespace

}  // namespace mixers_test_mamba2
