// State carrying for every registered mixer (Mixer::forward_stateful, issue 18): for each mixer whose
// supports_stateful() is true, in float64, a sequence cut into odd segments (7 + 13 + 1 + rest) gives forward()'s
// output, and the final state equals the state after step()-ing the same tokens; segments after step()s continue
// the one-shot output; gradients through a carried (not detached) state equal the one-shot gradients; Block's
// state snapshots (Trace::state_every) work. A registry test fails for a new mixer with a recurrent step but no
// forward_stateful unless it is listed below as a deliberate exception.
#include <gtest/gtest.h>

#include <map>
#include <set>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <torch/csrc/autograd/autograd.h>

#include "mixers/small_mixers.h"
#include "ssmlab/core/error.h"
#include "ssmlab/models/block.h"
#include "ssmlab/mixers/registry.h"
#include "test_util.h"
#include "tolerances.h"

namespace mixers_test_stateful_all {

namespace {

using ssmlab::mixers::MixerOptions;
using ssmlab::mixers::MixerPtr;
using ssmlab::mixers::State;
using ssmlab::test::all_close;
using ssmlab::test::kMixerDim;

// Mixers deliberately without forward_stateful, with the reason.
const std::map<std::string, std::string>& exceptions() {
  static const std::map<std::string, std::string> e = {
      {"attention",
       "its decode state is a KV cache that grows with the sequence (state_per_token), so segment-by-segment "
       "evaluation would not bound memory; step() remains its state-carrying path"},
  };
  return e;
}

// A case: registry mixer + options (the small defaults, or a variant such as a truncated kernel).
struct Case {
  std::string label;
  std::string mixer;
  MixerOptions opts = ssmlab::test::small_mixer_options();
};
void PrintTo(const Case& c, std::ostream* os) { *os << c.label; }

std::vector<Case> cases() {
  std::vector<Case> out;
  for (const auto& name : ssmlab::mixers::mixer_names())
    if (!exceptions().count(name)) out.push_back({name, name});
  // The truncated-kernel (l_max) paths of the FFT mixers: a window shorter than some segments, longer than others.
  Case s4d_window{"s4d_lmax6", "s4d"};
  s4d_window.opts.s4d.l_max = 6;
  Case s4d_bilinear{"s4d_bilinear", "s4d"};
  s4d_bilinear.opts.s4d.discretization = "bilinear";
  Case h3_window{"h3_lmax9", "h3"};
  h3_window.opts.h3.l_max = 9;
  Case mamba3_mimo{"mamba3_mimo", "mamba3"};
  mamba3_mimo.opts.mamba3.mimo = true;
  mamba3_mimo.opts.mamba3.mimo_rank = 3;
  mamba3_mimo.opts.mamba3.outproj_norm = true;
  out.push_back(mamba3_mimo);
  out.push_back(s4d_window);
  out.push_back(s4d_bilinear);
  out.push_back(h3_window);
  return out;
}

MixerPtr make(const Case& c, uint64_t seed) {
  auto m = ssmlab::test::make_small_mixer(c.mixer, seed, c.opts);
  m->to(at::kDouble);
  if (c.mixer == "s4d" || c.mixer == "h3") {
    // Larger steps than the init's (dt <= 0.1), so the modes decay and rotate visibly within a few tokens.
    at::NoGradGuard no_grad;
    for (auto& p : m->named_parameters())
      if (p.key().ends_with("log_dt")) p.value().uniform_(-2.0, 0.0);
  }
  return m;
}

State state_in(const MixerPtr& m, int64_t batch) {
  auto s = m->init_state(batch, at::kCPU);
  for (auto& [name, t] : s.tensors)
    if (at::isFloatingType(t.scalar_type())) t = t.to(at::kDouble);
  return s;
}

// forward_stateful over pieces of the given lengths (the last takes the rest), concatenated.
at::Tensor in_pieces(const MixerPtr& m, const at::Tensor& x, std::vector<int64_t> lengths, State& s) {
  std::vector<at::Tensor> ys;
  int64_t t0 = 0;
  for (size_t i = 0; i < lengths.size() && t0 < x.size(1); ++i) {
    const int64_t l = i + 1 == lengths.size() ? x.size(1) - t0 : std::min(lengths[i], x.size(1) - t0);
    ys.push_back(m->forward_stateful(x.narrow(1, t0, l), s));
    EXPECT_EQ(ys.back().sizes(), (at::IntArrayRef{x.size(0), l, kMixerDim}));
    t0 += l;
  }
  return at::cat(ys, 1);
}

void expect_same_state(const State& a, const State& b, const std::string& what) {
  EXPECT_EQ(a.tensors.size(), b.tensors.size()) << what;
  for (const auto& [name, t] : b.tensors) {
    ASSERT_TRUE(a.tensors.count(name)) << what << ": no '" << name << "'";
    EXPECT_TRUE(all_close(a.at(name).to(at::kDouble), t.to(at::kDouble), ssmlab::test::kFp64Forward,
                          what + " state '" + name + "'"));
  }
}

class StatefulAll : public ::testing::TestWithParam<Case> {};

TEST_P(StatefulAll, OddSegmentsEqualOneShotAndStepLoop) {
  auto m = make(GetParam(), 11);
  ASSERT_TRUE(m->supports_stateful());
  at::manual_seed(3);
  const at::Tensor x = at::randn({2, 37, kMixerDim}, at::kDouble);
  at::NoGradGuard no_grad;
  const at::Tensor y = m->forward(x);
  State seg = state_in(m, 2);
  EXPECT_TRUE(all_close(in_pieces(m, x, {7, 13, 1, 0}, seg), y, ssmlab::test::kFp64Forward, "7+13+1+rest"));
  State stepped = state_in(m, 2);
  for (int64_t t = 0; t < x.size(1); ++t) m->step(x.select(1, t), stepped);
  expect_same_state(seg, stepped, "segments vs steps");
  // One segment of the whole sequence and segments of one token are the same path's extremes.
  State whole = state_in(m, 2);
  EXPECT_TRUE(all_close(m->forward_stateful(x, whole), y, ssmlab::test::kFp64Forward, "one segment"));
  expect_same_state(whole, stepped, "one segment vs steps");
  State ones = state_in(m, 2);
  EXPECT_TRUE(all_close(in_pieces(m, x, std::vector<int64_t>(37, 1), ones), y, ssmlab::test::kFp64Forward, "1 x 37"));
}

TEST_P(StatefulAll, SegmentsAfterStepsContinueTheSequence) {
  auto m = make(GetParam(), 12);
  at::manual_seed(4);
  const at::Tensor x = at::randn({3, 30, kMixerDim}, at::kDouble);
  at::NoGradGuard no_grad;
  const at::Tensor y = m->forward(x);
  State s = state_in(m, 3);
  const int64_t t_steps = 5;
  for (int64_t t = 0; t < t_steps; ++t) m->step(x.select(1, t), s);
  const at::Tensor rest = in_pieces(m, x.narrow(1, t_steps, 30 - t_steps), {9, 1, 0}, s);
  EXPECT_TRUE(all_close(rest, y.narrow(1, t_steps, 30 - t_steps), ssmlab::test::kFp64Forward, "after steps"));
  // And steps after segments: the state a segment leaves is step()'s.
  State s2 = state_in(m, 3);
  m->forward_stateful(x.narrow(1, 0, 20), s2);
  std::vector<at::Tensor> ys;
  for (int64_t t = 20; t < 30; ++t) ys.push_back(m->step(x.select(1, t), s2));
  EXPECT_TRUE(all_close(at::stack(ys, 1), y.narrow(1, 20, 10), ssmlab::test::kFp64Forward, "steps after segment"));
}

// Gradients reach the parameters through the carried state when it is not detached: the loss of the second
// segment, computed from the first segment's state, has the one-shot forward's gradient.
TEST_P(StatefulAll, GradientsFlowThroughTheCarriedState) {
  auto m = make(GetParam(), 13);
  at::manual_seed(5);
  const at::Tensor x = at::randn({2, 19, kMixerDim}, at::kDouble);
  const at::Tensor w = at::randn({2, 19 - 8, kMixerDim}, at::kDouble);
  std::vector<at::Tensor> params;
  for (auto& p : m->parameters())
    if (p.requires_grad()) params.push_back(p);
  const at::Tensor one_shot = (m->forward(x).narrow(1, 8, 11) * w).sum();
  const auto g1 = torch::autograd::grad({one_shot}, params, {}, /*retain_graph=*/false, false, /*allow_unused=*/true);
  State s = state_in(m, 2);
  m->forward_stateful(x.narrow(1, 0, 8), s);
  const at::Tensor segmented = (m->forward_stateful(x.narrow(1, 8, 11), s) * w).sum();
  const auto g2 = torch::autograd::grad({segmented}, params, {}, false, false, /*allow_unused=*/true);
  ASSERT_EQ(g1.size(), g2.size());
  int64_t nonzero = 0;
  for (size_t i = 0; i < g1.size(); ++i) {
    ASSERT_EQ(g1[i].defined(), g2[i].defined()) << "parameter " << i;
    if (!g1[i].defined()) continue;
    EXPECT_TRUE(all_close(g2[i], g1[i], ssmlab::test::kFp64Grad, "grad " + std::to_string(i)));
    nonzero += g1[i].abs().max().item<double>() > 0;
  }
  EXPECT_GT(nonzero, 0);
}

// Block's state snapshots run forward_stateful segment by segment: the output is forward()'s and the last
// snapshot is the final state that one forward_stateful call records.
TEST_P(StatefulAll, BlockStateSnapshots) {
  auto m = make(GetParam(), 14);
  ssmlab::models::Block block(m, "rmsnorm", 1e-5, kMixerDim, 2, "gelu", 0.0);
  block->to(at::kDouble);
  block->eval();
  at::manual_seed(6);
  const at::Tensor x = at::randn({2, 23, kMixerDim}, at::kDouble);
  at::NoGradGuard no_grad;
  const at::Tensor y = block->forward(x);
  ssmlab::Trace trace;
  trace.state_every = 5;
  EXPECT_TRUE(all_close(block->forward(x, &trace), y, ssmlab::test::kFp64Forward, "block with snapshots"));
  const at::Tensor snaps = trace.get("state", 0);
  EXPECT_EQ(snaps.size(1), 5);  // ceil(23 / 5)
  ssmlab::Trace one;
  State s = state_in(m, 2);
  m->forward_stateful(block->norm1(x), s, &one);
  EXPECT_TRUE(all_close(snaps.select(1, 4), one.get("state", 0), ssmlab::test::kFp64Forward, "last snapshot"));
  EXPECT_TRUE(trace.has("mixer_out", 0));
  EXPECT_EQ(trace.get("mixer_out", 0).size(1), 23);
}

TEST_P(StatefulAll, BadStatesAreNamed) {
  auto m = make(GetParam(), 15);
  State empty;
  EXPECT_THROW(m->forward_stateful(at::randn({2, 4, kMixerDim}, at::kDouble), empty), ssmlab::Error);
  State wrong_batch = state_in(m, 3);
  EXPECT_THROW(m->forward_stateful(at::randn({2, 4, kMixerDim}, at::kDouble), wrong_batch), ssmlab::Error);
  State s = state_in(m, 2);
  EXPECT_THROW(m->forward_stateful(at::randn({2, 4, kMixerDim + 1}, at::kDouble), s), ssmlab::Error);
}

INSTANTIATE_TEST_SUITE_P(EveryRecurrentMixer, StatefulAll, ::testing::ValuesIn(cases()),
                         [](const ::testing::TestParamInfo<Case>& i) { return i.param.label; });

// Every registered mixer carries its state across segments, except the listed exceptions, which say so.
TEST(StatefulRegistry, EveryRecurrentMixerHasForwardStateful) {
  for (const auto& name : ssmlab::mixers::mixer_names()) {
    auto m = ssmlab::test::make_small_mixer(name, 1);
    if (exceptions().count(name)) {
      EXPECT_FALSE(m->supports_stateful()) << name << " is listed as an exception but supports forward_stateful";
      State s = m->init_state(1, at::kCPU);
      ssmlab::test::expect_error([&] { m->forward_stateful(at::randn({1, 4, kMixerDim}), s); },
                                 {"mixer '" + name + "'", "forward_stateful"});
    } else {
      EXPECT_TRUE(m->supports_stateful()) << name << ": a mixer with a recurrent step() needs forward_stateful "
                                          << "(or an entry with its reason in this test's exceptions())";
    }
  }
}

}  // namespace

}  // namespace mixers_test_stateful_all
