// Mamba-1 mixer: step == forward, causality, init statistics (spec §1.1), state_size, shape errors.
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <cmath>

#include "ssmlab/core/error.h"
#include "ssmlab/mixers/mamba1.h"
#include "ssmlab/mixers/registry.h"
#include "tolerances.h"

namespace mixers_test_mamba1 {

namespace {

using ssmlab::mixers::Mamba1Impl;
using ssmlab::mixers::Mamba1Options;

std::shared_ptr<Mamba1Impl> make(int64_t d_model, Mamba1Options o = {}, uint64_t seed = 1) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  return std::make_shared<Mamba1Impl>(o, d_model, "reference", gen);
}

TEST(Mamba1, ShapesAndStateSize) {
  Mamba1Options o;
  o.d_state = 5;
  o.d_conv = 3;
  auto m = make(12, o);
  EXPECT_EQ(m->d_inner(), 24);
  EXPECT_EQ(m->dt_rank(), 1);  // ceil(12 / 16)
  EXPECT_EQ(m->state_size(), 24 * (5 + 2));
  const at::Tensor y = m->forward(at::randn({3, 7, 12}));
  EXPECT_EQ(y.sizes(), (at::IntArrayRef{3, 7, 12}));
  EXPECT_THROW(m->forward(at::randn({3, 7, 11})), ssmlab::Error);
  ssmlab::mixers::State state = m->init_state(3, at::kCPU);
  EXPECT_THROW(m->step(at::randn({3, 7, 12}), state), ssmlab::Error);
}

TEST(Mamba1, StepLoopEqualsForward) {
  at::manual_seed(3);
  for (int64_t d_conv : {1, 2, 4}) {
    Mamba1Options o;
    o.d_state = 7;
    o.d_conv = d_conv;
    auto m = make(10, o, 5 + d_conv);
    m->to(at::kDouble);
    const at::Tensor x = at::randn({2, 23, 10}, at::kDouble);
    const at::Tensor y = m->forward(x);
    auto state = m->init_state(2, at::kCPU);
    for (auto& [name, t] : state.tensors) t = t.to(at::kDouble);
    std::vector<at::Tensor> ys;
    for (int64_t t = 0; t < x.size(1); ++t) ys.push_back(m->step(x.select(1, t), state));
    EXPECT_TRUE(ssmlab::test::all_close(at::stack(ys, 1), y, ssmlab::test::kFp64Forward, "step vs forward"))
        << "d_conv " << d_conv;
  }
}

TEST(Mamba1, Causal) {
  at::manual_seed(4);
  auto m = make(8);
  const at::Tensor x = at::randn({2, 30, 8});
  at::Tensor x2 = x.clone();
  x2.narrow(1, 17, 13).normal_();
  const at::Tensor y = m->forward(x), y2 = m->forward(x2);
  EXPECT_TRUE(ssmlab::test::all_close(y2.narrow(1, 0, 17), y.narrow(1, 0, 17), {0.0, 0.0}, "prefix"));
  EXPECT_GT((y2.narrow(1, 17, 13) - y.narrow(1, 17, 13)).abs().max().item<double>(), 1e-6);
}

TEST(Mamba1, InitMatchesMambaSsm) {
  Mamba1Options o;
  o.d_state = 16;
  const int64_t d_model = 64;
  auto m = make(d_model, o);
  const int64_t E = m->d_inner();
  // A_log = log(1..N) in every channel (S4D-real), so A = -(n + 1).
  const at::Tensor A = m->transition->A();
  const at::Tensor expect = -at::arange(1, 17, at::kFloat).expand({E, 16});
  EXPECT_TRUE(ssmlab::test::all_close(A, expect, ssmlab::test::kFp32Forward, "A"));
  EXPECT_TRUE(at::all(m->D == 1).item<bool>());
  // dt = softplus(bias) is log-uniform in [dt_min, dt_max]: its log has mean (log .001 + log .1) / 2.
  const at::Tensor dt = at::softplus(m->dt_proj->bias.detach().to(at::kDouble));
  EXPECT_GE(dt.min().item<double>(), o.dt_min * (1 - 1e-6));
  EXPECT_LE(dt.max().item<double>(), o.dt_max * (1 + 1e-6));
  const double mean_log = at::log(dt).mean().item<double>();
  const double expected_mean = 0.5 * (std::log(1e-3) + std::log(0.1));
  const double sd = (std::log(0.1) - std::log(1e-3)) / std::sqrt(12.0) / std::sqrt(static_cast<double>(E));
  EXPECT_NEAR(mean_log, expected_mean, 4 * sd);
  // dt_proj weight ~ U(+-R^-1/2), R = 4.
  const at::Tensor w = m->dt_proj->weight.detach();
  EXPECT_LE(w.abs().max().item<double>(), 0.5 + 1e-6);
  EXPECT_NEAR(w.pow(2).mean().item<double>(), 0.25 / 3.0, 0.25 / 3.0 * 0.2);
  // in_proj default init U(+-1/sqrt(D)): variance 1/(3D).
  EXPECT_NEAR(m->in_proj->weight.detach().var().item<double>(), 1.0 / (3.0 * d_model), 0.1 / (3.0 * d_model));
}

TEST(Mamba1, SameSeedSameWeights) {
  auto a = make(16, {}, 9), b = make(16, {}, 9), c = make(16, {}, 10);
  auto pa = a->parameters(), pb = b->parameters(), pc = c->parameters();
  ASSERT_EQ(pa.size(), pb.size());
  bool any_diff = false;
  for (size_t i = 0; i < pa.size(); ++i) {
    EXPECT_TRUE(at::equal(pa[i], pb[i])) << "parameter " << i;
    any_diff = any_diff || !at::equal(pa[i], pc[i]);
  }
  EXPECT_TRUE(any_diff);
}

TEST(Mamba1, GradientsFiniteAndNonZero) {
  at::manual_seed(6);
  auto m = make(8);
  const at::Tensor y = m->forward(at::randn({2, 40, 8}));
  y.pow(2).sum().backward();
  for (const auto& p : m->named_parameters()) {
    ASSERT_TRUE(p.value().grad().defined()) << p.key();
    EXPECT_TRUE(at::isfinite(p.value().grad()).all().item<bool>()) << p.key();
    EXPECT_GT(p.value().grad().abs().sum().item<double>(), 0.0) << p.key();
  }
}

TEST(Mamba1, RegistryBuildsIt) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(1);
  ssmlab::mixers::MixerOptions opts;
  auto m = ssmlab::mixers::make_mixer("mamba1", opts, {8, 0, 1, "reference"}, gen);
  EXPECT_EQ(m->kind(), "mamba1");
  EXPECT_THROW(ssmlab::mixers::make_mixer("nope", opts, {8, 0, 1, "reference"}, gen), ssmlab::Error);
}

}  // namespace

}  // namespace mixers_test_mamba1
