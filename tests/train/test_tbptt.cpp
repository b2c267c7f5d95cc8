// Truncated BPTT (spec §3.5; train/trainer.h batch_gradients): with one segment it is exactly the plain step;
// with P segments the loss is the one-shot loss over the whole window, and the gradient is the full-BPTT
// gradient minus exactly the path through the carried state (assembled here by hand: the vector-Jacobian product
// of the state segment 1 leaves with d loss_2 / d state); the trainer runs it from Segment::bptt_segments; the
// text task's `segments` option makes windows of seq_len x segments + 1 tokens; the WSD schedule's values.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <filesystem>

#include <ATen/ATen.h>
#include <torch/csrc/autograd/autograd.h>

#include "ssmlab/core/rng.h"
#include "ssmlab/models/language_model.h"
#include "ssmlab/tasks/text.h"
#include "ssmlab/train/schedule.h"
#include "ssmlab/train/trainer.h"
#include "test_util.h"
#include "text/text_test_util.h"
#include "tolerances.h"
#include "train/train_test_util.h"

namespace train_test_tbptt {

namespace {

namespace fs = std::filesystem;
using ssmlab::models::LanguageModel;
using ssmlab::models::ModelOptions;
using ssmlab::test::all_close;

constexpr int64_t kVocab = 19;

// A language-modelling task over given tensors: mean cross-entropy over the counted targets, computed in the
// logits' dtype (the base Task's loss rounds to fp32), so float64 models give float64 losses and gradients.
class TokensTask : public ssmlab::tasks::Task {
 public:
  at::Tensor loss(const at::Tensor& outputs, const at::Tensor& targets) const override {
    return at::cross_entropy_loss(outputs.reshape({-1, outputs.size(-1)}), targets.reshape({-1}), {},
                                  at::Reduction::Mean, ssmlab::tasks::kIgnoreIndex);
  }
  std::string name() const override { return "tokens"; }
  ssmlab::tasks::TaskShape shape() const override {
    ssmlab::tasks::TaskShape s;
    s.vocab_size = kVocab;
    s.num_outputs = kVocab;
    return s;
  }
  ssmlab::tasks::Splits make_splits() const override { return {}; }
};

ModelOptions options(const std::string& mixer) {
  ModelOptions o;
  o.mixer = mixer;
  o.d_model = 16;
  o.n_layers = 2;
  o.mlp_expand = 2;
  o.mixers.mamba2.d_state = 6;
  o.mixers.mamba2.head_dim = 8;
  o.mixers.mamba2.chunk_size = 4;
  o.mixers.s4d.d_state = 4;
  o.mixers.rwkv6.head_size = 8;
  o.mixers.rwkv6.mix_rank = 3;
  o.mixers.rwkv6.decay_rank = 4;
  o.mixers.hgrn2.n_heads = 2;
  o.mixers.hgrn2.expand_ratio = 4;
  o.mixers.attention.n_heads = 2;
  return o;
}

LanguageModel model(const std::string& mixer, uint64_t seed = 5) {
  LanguageModel m(options(mixer), kVocab, "auto", seed);
  m->eval();  // no dropout (there is none by default; eval keeps it certain)
  m->to(at::kDouble);
  return m;
}

std::vector<at::Tensor> grads_of(LanguageModel& m) {
  std::vector<at::Tensor> g;
  for (auto& p : m->parameters()) g.push_back(p.grad().defined() ? p.grad().clone() : at::zeros_like(p));
  return g;
}

void zero_grads(LanguageModel& m) {
  for (auto& p : m->parameters())
    if (p.grad().defined()) p.mutable_grad() = at::Tensor();
}

struct Batch {
  at::Tensor inputs, targets;
};

// (3, 24) tokens; targets the next tokens, with a few ignored positions (in the later segments) so that the
// segments' weights differ.
Batch batch() {
  at::manual_seed(21);
  const at::Tensor w = at::randint(0, kVocab, {3, 25}, at::kLong);
  Batch b{w.narrow(1, 0, 24).contiguous(), w.narrow(1, 1, 24).contiguous()};
  b.targets.index_put_({0, 14}, ssmlab::tasks::kIgnoreIndex);
  b.targets.index_put_({2, 20}, ssmlab::tasks::kIgnoreIndex);
  b.targets.index_put_({1, 23}, ssmlab::tasks::kIgnoreIndex);
  return b;
}

class Tbptt : public ::testing::TestWithParam<std::string> {};

TEST_P(Tbptt, OneSegmentIsThePlainStep) {
  auto m = model(GetParam());
  const TokensTask task;
  const Batch b = batch();
  const at::Tensor loss = task.loss(m->forward(b.inputs), b.targets);
  loss.backward();
  const auto expected = grads_of(m);
  zero_grads(m);
  const double v = ssmlab::train::batch_gradients(*m, task, b.inputs, b.targets, 1, "fp32", at::kCPU);
  EXPECT_EQ(v, loss.item<double>());
  const auto got = grads_of(m);
  for (size_t i = 0; i < got.size(); ++i) EXPECT_TRUE(at::equal(got[i], expected[i])) << "parameter " << i;
}

TEST_P(Tbptt, LossIsTheOneShotLossForAnySegmentCount) {
  auto m = model(GetParam());
  const TokensTask task;
  const Batch b = batch();
  double one_shot;
  {
    at::NoGradGuard no_grad;
    one_shot = task.loss(m->forward(b.inputs), b.targets).item<double>();
  }
  for (int64_t P : {2, 3, 4, 8}) {
    zero_grads(m);
    const double v = ssmlab::train::batch_gradients(*m, task, b.inputs, b.targets, P, "fp32", at::kCPU);
    EXPECT_NEAR(v, one_shot, 1e-10 * std::abs(one_shot)) << "P = " << P;
    // Without the carried state (every segment from a fresh one) the loss is another number: the check above
    // can tell.
    at::NoGradGuard no_grad;
    const int64_t l = 24 / P;
    double fresh = 0.0;
    for (int64_t p = 0; p < P; ++p) {
      const at::Tensor tg = b.targets.narrow(1, p * l, l);
      fresh += task.loss(m->forward(b.inputs.narrow(1, p * l, l)), tg).item<double>() *
               static_cast<double>(task.loss_count(tg));
    }
    fresh /= static_cast<double>(task.loss_count(b.targets));
    EXPECT_GT(std::abs(fresh - one_shot), 1e-8) << "P = " << P;  // 30x the tolerance above at least
  }
}

// Full BPTT = truncated + the path through the state: with P = 2 and segment losses l1, l2 over n1, n2 counted
// targets (n = n1 + n2), L = (n1 l1(θ) + n2 l2(θ, s1(θ))) / n, so
//   dL/dθ (one-shot) = [truncated gradient] + (n2 / n) (d l2 / d s1)^T (d s1 / d θ).
TEST_P(Tbptt, GradientIsFullBpttMinusTheStatePath) {
  auto m = model(GetParam());
  const TokensTask task;
  const Batch b = batch();
  std::vector<at::Tensor> params;
  for (auto& p : m->parameters()) params.push_back(p);
  // Full BPTT: the one-shot forward.
  const at::Tensor full_loss = task.loss(m->forward(b.inputs), b.targets);
  const auto g_full = torch::autograd::grad({full_loss}, params, {}, false, false, /*allow_unused=*/true);
  // Truncated, by the trainer's function.
  zero_grads(m);
  ssmlab::train::batch_gradients(*m, task, b.inputs, b.targets, 2, "fp32", at::kCPU);
  const auto g_trunc = grads_of(m);
  // The state path, by hand: s1 with its graph, then l2 from a detached copy that is a leaf.
  auto states = m->init_state(3, at::kCPU);
  m->forward_stateful(b.inputs.narrow(1, 0, 12), states);
  std::vector<at::Tensor> s1, s1_leaf;
  auto detached = states;
  for (size_t l = 0; l < states.size(); ++l)
    for (auto& [name, t] : detached[l].tensors) {
      if (!at::isFloatingType(t.scalar_type()) || !t.requires_grad()) continue;
      s1.push_back(states[l].at(name));
      t = t.detach().clone().requires_grad_(true);
      s1_leaf.push_back(t);
    }
  ASSERT_FALSE(s1.empty());
  const at::Tensor tg2 = b.targets.narrow(1, 12, 12);
  const at::Tensor l2 = task.loss(m->forward_stateful(b.inputs.narrow(1, 12, 12), detached), tg2);
  const auto v = torch::autograd::grad({l2}, s1_leaf, {}, false, false, /*allow_unused=*/true);
  std::vector<at::Tensor> outs, gos;
  for (size_t i = 0; i < s1.size(); ++i)
    if (v[i].defined()) {
      outs.push_back(s1[i]);
      gos.push_back(v[i]);
    }
  ASSERT_FALSE(outs.empty());
  const auto vjp = torch::autograd::grad(outs, params, gos, false, false, /*allow_unused=*/true);
  const double w2 = static_cast<double>(task.loss_count(tg2)) / static_cast<double>(task.loss_count(b.targets));
  EXPECT_LT(w2, 0.5);  // the ignored targets sit in segment 2
  double state_path = 0.0;
  for (size_t i = 0; i < params.size(); ++i) {
    const at::Tensor gf = g_full[i].defined() ? g_full[i] : at::zeros_like(params[i]);
    const at::Tensor path = vjp[i].defined() ? w2 * vjp[i] : at::zeros_like(params[i]);
    state_path = std::max(state_path, path.abs().max().item<double>());
    EXPECT_TRUE(all_close(g_trunc[i] + path, gf, ssmlab::test::kFp64Grad, "parameter " + std::to_string(i)));
  }
  // The truncation removes something: the state path is not negligible at these sizes.
  EXPECT_GT(state_path, 1e-6);
}

INSTANTIATE_TEST_SUITE_P(Mixers, Tbptt, ::testing::Values("mamba2", "mamba1", "rwkv6", "s4d", "hgrn2"));

TEST(TbpttErrors, NamedProblems) {
  const TokensTask task;
  const Batch b = batch();
  auto attn = model("attention");
  ssmlab::test::expect_error(
      [&] { ssmlab::train::batch_gradients(*attn, task, b.inputs, b.targets, 2, "fp32", at::kCPU); },
      {"mixer 'attention'", "forward_stateful", "segments = 1"});
  auto m = model("mamba2");
  ssmlab::test::expect_error(
      [&] { ssmlab::train::batch_gradients(*m, task, b.inputs, b.targets, 5, "fp32", at::kCPU); },
      {"24 positions", "5 equal segments"});
  ssmlab::test::expect_error(
      [&] { ssmlab::train::batch_gradients(*m, task, b.inputs, b.targets, 0, "fp32", at::kCPU); },
      {"segments must be >= 1"});
}

// The trainer takes P from the segment: the first step's logged loss is the plain one's (the same forward),
// the parameters after it differ (truncated gradients).
TEST(TbpttTrainer, FitRunsTheSegmentsOfTheData) {
  const TokensTask task;
  at::manual_seed(3);
  const at::Tensor w = at::randint(0, kVocab, {8, 33}, at::kLong);
  ssmlab::train::TrainOptions o;
  o.epochs = 1;
  o.max_steps = 1;
  o.log_every = 1;
  o.tensorboard = false;
  o.early_stop_acc = 0.0;
  o.threads = 1;
  auto run = [&](int64_t P, const fs::path& dir) {
    ssmlab::train::TrainData data;
    ssmlab::tasks::Segment seg{"train", w.narrow(1, 0, 32).contiguous(), w.narrow(1, 1, 32).contiguous(), 32};
    seg.bptt_segments = P;
    data.train = {seg};
    data.test = {seg};
    data.batch_size = 8;
    auto m = model("mamba2");
    fs::create_directories(dir);
    ssmlab::train::fit(*m, task, data, o, dir);
    std::vector<at::Tensor> p;
    for (auto& t : m->parameters()) p.push_back(t.detach().clone());
    return std::make_pair(ssmlab::test::metrics_without_timing(dir), p);
  };
  ssmlab::test::TempDir dir;
  const auto [m1, p1] = run(1, dir.path / "P1");
  const auto [m4, p4] = run(4, dir.path / "P4");
  ASSERT_FALSE(m1.empty());
  ASSERT_FALSE(m4.empty());
  EXPECT_EQ(m1[0]["kind"], "train");
  EXPECT_NEAR(m4[0]["train_loss"].get<double>(), m1[0]["train_loss"].get<double>(), 1e-10);
  double diff = 0.0;
  for (size_t i = 0; i < p1.size(); ++i) diff = std::max(diff, (p1[i] - p4[i]).abs().max().item<double>());
  EXPECT_GT(diff, 1e-9) << "truncated BPTT must change the update";
}

// The text task: segments = P makes windows of seq_len x P + 1 tokens, marked for P pieces; T_train is their
// length.
TEST(TbpttText, SegmentsMakeLongerWindows) {
  ssmlab::test::TempDir dir;
  ssmlab::tasks::TextConfig c = ssmlab::test::random_letters_text(dir.path, 6, 60, 7, 4);
  c.seed = ssmlab::tasks::TextConfig{}.seed;  // the default split seed
  c.seq_len = 5;
  c.segments = 3;
  c.validation_fraction = 0.3;
  EXPECT_EQ(c.train_length(), 15);
  const ssmlab::tasks::TextTask task(c);
  const auto splits = task.make_splits();
  const auto starts = ssmlab::tasks::text_window_starts(*task.token_file(), 0, 15, false);
  ASSERT_EQ(splits.train[0].inputs.sizes(), (at::IntArrayRef{static_cast<int64_t>(starts.size()), 15}));
  EXPECT_EQ(splits.train[0].bptt_segments, 3);
  EXPECT_EQ(splits.train[0].seq_len, 15);
  EXPECT_EQ(splits.test[0].inputs.size(1), 15);
  EXPECT_TRUE(at::equal(splits.train[0].inputs.narrow(1, 1, 14), splits.train[0].targets.narrow(1, 0, 14)));
  c.segments = 0;
  ssmlab::test::expect_error([&] { ssmlab::tasks::TextTask bad(c); }, {"segments must be >= 1"});
}

// WSD (spec §3.5): linear warmup, stable at lr, linear decay over the final fraction to min_lr_ratio x lr.
TEST(WsdSchedule, ValuesAtKnownSteps) {
  ssmlab::train::TrainOptions o;
  o.schedule = "wsd";
  o.lr = 2.0;
  o.warmup_steps = 10;
  o.min_lr_ratio = 0.0;
  o.wsd_decay_fraction = 0.1;
  using ssmlab::train::learning_rate;
  EXPECT_DOUBLE_EQ(learning_rate(o, 0, 200, 0), 0.2);   // warmup (step + 1) / 10
  EXPECT_DOUBLE_EQ(learning_rate(o, 4, 200, 0), 1.0);
  EXPECT_DOUBLE_EQ(learning_rate(o, 9, 200, 0), 2.0);
  EXPECT_DOUBLE_EQ(learning_rate(o, 10, 200, 0), 2.0);  // stable
  EXPECT_DOUBLE_EQ(learning_rate(o, 179, 200, 0), 2.0);
  EXPECT_DOUBLE_EQ(learning_rate(o, 180, 200, 0), 2.0);  // decay over the last 20 steps: (200 - s) / 20
  EXPECT_DOUBLE_EQ(learning_rate(o, 190, 200, 0), 1.0);
  EXPECT_DOUBLE_EQ(learning_rate(o, 199, 200, 0), 0.1);
  EXPECT_DOUBLE_EQ(learning_rate(o, 200, 200, 0), 0.0);
  o.min_lr_ratio = 0.5;  // floor 1.0
  EXPECT_DOUBLE_EQ(learning_rate(o, 190, 200, 0), 1.5);
  o.wsd_decay_fraction = 0.25;  // ceil(0.25 x 30) = 8 decay steps
  o.warmup_steps = 0;
  EXPECT_DOUBLE_EQ(learning_rate(o, 21, 30, 0), 2.0);
  EXPECT_DOUBLE_EQ(learning_rate(o, 22, 30, 0), 2.0);
  EXPECT_DOUBLE_EQ(learning_rate(o, 26, 30, 0), 1.5);
}

}  // namespace

}  // namespace train_test_tbptt
