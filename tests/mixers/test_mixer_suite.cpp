// The common mixer suite (docs/ARCHITECTURE.md, "The mixer contract"), run for every name in the registry:
// shapes and shape errors; causality; the step loop equals forward (float64); finite gradients reaching every
// parameter; determinism given a seed; the state_size formula against init_state; Trace reports mixer_out.
// Mixer-specific behaviour (init, paper quirks, the per-mixer hand-written recurrence) lives in each
// mixer's own test file.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include "ssmlab/core/error.h"
#include "ssmlab/mixers/registry.h"
#include "mixers/small_mixers.h"
#include "tolerances.h"

namespace mixers_test_mixer_suite {

namespace {

using ssmlab::mixers::MixerOptions;
using ssmlab::mixers::MixerPtr;

constexpr int64_t kDim = ssmlab::test::kMixerDim;

MixerPtr make(const std::string& name, uint64_t seed, const MixerOptions& opts = ssmlab::test::small_mixer_options()) {
  return ssmlab::test::make_small_mixer(name, seed, opts);
}

ssmlab::mixers::State state_in(const MixerPtr& m, int64_t batch, at::ScalarType dtype) {
  auto s = m->init_state(batch, at::kCPU);
  for (auto& [name, t] : s.tensors) t = t.to(dtype);
  return s;
}

class MixerSuite : public ::testing::TestWithParam<std::string> {};

TEST_P(MixerSuite, ShapesAndErrors) {
  auto m = make(GetParam(), 1);
  EXPECT_EQ(m->kind(), GetParam());
  for (int64_t L : {1, 2, 9}) {
    const at::Tensor y = m->forward(at::randn({3, L, kDim}));
    EXPECT_EQ(y.sizes(), (at::IntArrayRef{3, L, kDim})) << "L " << L;
    EXPECT_EQ(y.scalar_type(), at::kFloat);
  }
  EXPECT_THROW(m->forward(at::randn({3, 5, kDim + 1})), ssmlab::Error);
  EXPECT_THROW(m->forward(at::randn({5, kDim})), ssmlab::Error);
  auto state = m->init_state(3, at::kCPU);
  EXPECT_EQ(m->step(at::randn({3, kDim}), state).sizes(), (at::IntArrayRef{3, kDim}));
  EXPECT_THROW(m->step(at::randn({3, 4, kDim}), state), ssmlab::Error);
  EXPECT_THROW(m->step(at::randn({3, kDim - 1}), state), ssmlab::Error);
}

TEST_P(MixerSuite, Causal) {
  auto m = make(GetParam(), 2);
  m->to(at::kDouble);
  at::manual_seed(4);
  const int64_t L = 31, t0 = 17;
  const at::Tensor x = at::randn({2, L, kDim}, at::kDouble);
  at::Tensor x2 = x.clone();
  x2.narrow(1, t0, L - t0).normal_();
  const at::Tensor y = m->forward(x), y2 = m->forward(x2);
  // Exact for recurrences; FFT convolutions mix rounding across positions, hence the float64 tolerance.
  EXPECT_TRUE(ssmlab::test::all_close(y2.narrow(1, 0, t0), y.narrow(1, 0, t0), ssmlab::test::kFp64Forward, "prefix"));
  EXPECT_GT((y2.narrow(1, t0, L - t0) - y.narrow(1, t0, L - t0)).abs().max().item<double>(), 1e-6);
}

TEST_P(MixerSuite, StepLoopEqualsForward) {
  auto m = make(GetParam(), 3);
  m->to(at::kDouble);
  at::manual_seed(5);
  const at::Tensor x = at::randn({2, 23, kDim}, at::kDouble);
  const at::Tensor y = m->forward(x);
  auto state = state_in(m, 2, at::kDouble);
  std::vector<at::Tensor> ys;
  for (int64_t t = 0; t < x.size(1); ++t) ys.push_back(m->step(x.select(1, t), state));
  EXPECT_TRUE(ssmlab::test::all_close(at::stack(ys, 1), y, ssmlab::test::kFp64Forward, "step vs forward"));
}

TEST_P(MixerSuite, GradientsFiniteAndReachEveryParameter) {
  auto m = make(GetParam(), 4);
  m->train();
  {
    // Paper inits that start a factor at zero (RWKV-6's LoRA) block the other factor's gradient at step 0;
    // a small perturbation keeps "every parameter is used" testable (an unused parameter stays at zero grad).
    at::NoGradGuard no_grad;
    at::manual_seed(16);
    for (auto& p : m->parameters()) p.add_(at::randn_like(p) * 0.01);
  }
  at::manual_seed(6);
  const at::Tensor x = at::randn({2, 19, kDim}).requires_grad_(true);
  m->forward(x).pow(2).sum().backward();
  ASSERT_TRUE(x.grad().defined());
  EXPECT_TRUE(at::isfinite(x.grad()).all().item<bool>());
  EXPECT_GT(x.grad().abs().sum().item<double>(), 0.0);
  for (const auto& p : m->named_parameters()) {
    ASSERT_TRUE(p.value().grad().defined()) << p.key();
    EXPECT_TRUE(at::isfinite(p.value().grad()).all().item<bool>()) << p.key();
    EXPECT_GT(p.value().grad().abs().sum().item<double>(), 0.0) << p.key();
  }
}

TEST_P(MixerSuite, DeterministicGivenSeed) {
  auto a = make(GetParam(), 9), b = make(GetParam(), 9), c = make(GetParam(), 10);
  auto pa = a->named_parameters(), pb = b->named_parameters(), pc = c->named_parameters();
  ASSERT_EQ(pa.size(), pb.size());
  ASSERT_GT(pa.size(), 0u);
  bool any_diff = false;
  for (size_t i = 0; i < pa.size(); ++i) {
    EXPECT_EQ(pa[i].key(), pb[i].key());
    EXPECT_TRUE(at::equal(pa[i].value(), pb[i].value())) << pa[i].key();
    any_diff = any_diff || !at::equal(pa[i].value(), pc[i].value());
  }
  EXPECT_TRUE(any_diff) << "seeds 9 and 10 gave identical parameters";
  const at::Tensor x = at::randn({2, 7, kDim});
  EXPECT_TRUE(at::equal(a->forward(x), b->forward(x)));
}

TEST_P(MixerSuite, StateSizeMatchesState) {
  auto m = make(GetParam(), 5);
  ASSERT_GT(m->state_size(), 0);
  const int64_t batch = 3, steps = 4;
  auto state = m->init_state(batch, at::kCPU);
  for (int64_t t = 0; t < steps; ++t) m->step(at::randn({batch, kDim}), state);
  int64_t numel = 0;
  for (const auto& [name, t] : state.tensors) {
    EXPECT_EQ(t.size(0), batch) << name;
    numel += t.numel();
  }
  const int64_t expected = m->state_size() * (m->state_per_token() ? steps : 1);
  EXPECT_EQ(numel, batch * expected);
}

TEST_P(MixerSuite, TraceReportsMixerOut) {
  auto m = make(GetParam(), 6);
  ssmlab::Trace trace({"mixer_out"});
  trace.layer = 2;
  const at::Tensor y = m->forward(at::randn({2, 5, kDim}), &trace);
  ASSERT_TRUE(trace.has("mixer_out", 2));
  EXPECT_TRUE(at::equal(trace.get("mixer_out", 2), y));
  EXPECT_EQ(trace.values().size(), 1u);  // only what was asked for
}

INSTANTIATE_TEST_SUITE_P(EveryMixer, MixerSuite, ::testing::ValuesIn(ssmlab::mixers::mixer_names()),
                         [](const ::testing::TestParamInfo<std::string>& info) { return info.param; });

}  // namespace

}  // namespace mixers_test_mixer_suite
