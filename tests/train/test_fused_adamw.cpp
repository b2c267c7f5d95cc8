// train.optimizer_impl = "fused" (train/fused_adamw.*): ATen's fused AdamW over torch::optim::AdamW's groups and
// state gives torch::optim::AdamW's numbers to fp32 rounding (20 steps, weight decay, clipping, an lr schedule, a
// no-decay group, amsgrad); the device-side clip equals clip_grad_norm_; a checkpoint taken from it resumes
// exactly; the trainer with it resumes exactly and matches the torch optimizer; the config errors of
// train.optimizer_impl and train.cuda_graph.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/utils/clip_grad.h>
#include <torch/optim/adamw.h>

#include "ssmlab/core/error_kinds.h"
#include "ssmlab/experiments/identity.h"
#include "ssmlab/experiments/run.h"
#include "ssmlab/train/checkpoint.h"
#include "ssmlab/train/fused_adamw.h"
#include "test_util.h"
#include "tolerances.h"
#include "train/train_test_util.h"

namespace train_test_fused_adamw {

namespace {

namespace fs = std::filesystem;
using ssmlab::test::all_close;
using ssmlab::test::kFp32Steps;
using ssmlab::train::FusedAdamW;

// Two linear layers, a gain vector and a parameter the forward never uses (no gradient: AdamW keeps no state).
struct FaNet : torch::nn::Module {
  torch::nn::Linear a{nullptr}, b{nullptr};
  at::Tensor gain, unused;
  FaNet() {
    a = register_module("a", torch::nn::Linear(8, 16));
    b = register_module("b", torch::nn::Linear(16, 4));
    gain = register_parameter("gain", at::ones({16}));
    unused = register_parameter("unused", at::ones({3}));
  }
  at::Tensor forward(const at::Tensor& x) { return b(at::tanh(a(x)) * gain); }
};

// The trainer's layout: a decaying group of matrices, a no-decay group of biases and gains (and the unused one).
std::unique_ptr<torch::optim::AdamW> fa_make_adamw(FaNet& n, bool amsgrad) {
  std::vector<torch::optim::OptimizerParamGroup> groups;
  groups.emplace_back(std::vector<at::Tensor>{n.a->weight, n.b->weight},
                      std::make_unique<torch::optim::AdamWOptions>(
                          torch::optim::AdamWOptions(1e-2).betas({0.9, 0.99}).eps(1e-8).weight_decay(0.1).amsgrad(amsgrad)));
  groups.emplace_back(std::vector<at::Tensor>{n.a->bias, n.b->bias, n.gain, n.unused},
                      std::make_unique<torch::optim::AdamWOptions>(
                          torch::optim::AdamWOptions(1e-2).betas({0.9, 0.99}).eps(1e-8).weight_decay(0.0).amsgrad(amsgrad)));
  return std::make_unique<torch::optim::AdamW>(std::move(groups), torch::optim::AdamWOptions(1e-2));
}

void fa_copy_params(FaNet& to, FaNet& from) {
  at::NoGradGuard no_grad;
  const auto t = to.parameters(), f = from.parameters();
  for (size_t i = 0; i < t.size(); ++i) t[i].copy_(f[i]);
}

void fa_set_lr(torch::optim::AdamW& opt, double lr) {
  for (auto& g : opt.param_groups()) static_cast<torch::optim::AdamWOptions&>(g.options()).lr(lr);
}

// Cosine from 1e-2 over 20 steps, like the trainer's schedule.
double fa_lr(int step) { return 1e-2 * (0.55 + 0.45 * std::cos(M_PI * step / 20.0)); }

// One batch per step from a generator of its own, so that every run sees the same data.
std::pair<at::Tensor, at::Tensor> fa_batch(int step) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(1000 + step);
  return {at::randn({32, 8}, gen), 10.0 * at::randn({32, 4}, gen)};
}

const torch::optim::AdamWParamState& fa_state(torch::optim::AdamW& opt, const at::Tensor& p) {
  return dynamic_cast<const torch::optim::AdamWParamState&>(*opt.state().at(p.unsafeGetTensorImpl()));
}

class FusedAdamWVsTorch : public ::testing::TestWithParam<bool> {};

TEST_P(FusedAdamWVsTorch, TwentyStepsWithDecayClipScheduleAndGroups) {
  const bool amsgrad = GetParam();
  at::manual_seed(11);
  FaNet ref, fused_net;
  fa_copy_params(fused_net, ref);
  auto ref_opt = fa_make_adamw(ref, amsgrad), opt = fa_make_adamw(fused_net, amsgrad);
  FusedAdamW fused(*opt);
  const auto start = ref.parameters();
  std::vector<at::Tensor> initial;
  for (const auto& p : start) initial.push_back(p.detach().clone());
  int clipped = 0;
  for (int s = 0; s < 20; ++s) {
    fa_set_lr(*ref_opt, fa_lr(s));
    fa_set_lr(*opt, fa_lr(s));
    const auto [x, y] = fa_batch(s);
    ref_opt->zero_grad();
    opt->zero_grad();
    at::mse_loss(ref.forward(x), y).backward();
    at::mse_loss(fused_net.forward(x), y).backward();
    const double norm_ref = torch::nn::utils::clip_grad_norm_(ref.parameters(), 1.0);
    const at::Tensor norm = ssmlab::train::clip_grad_norm_nosync(fused_net.parameters(), 1.0);
    ASSERT_TRUE(norm.defined());
    EXPECT_NEAR(norm.item<double>(), norm_ref, 1e-5 * norm_ref) << "step " << s;
    clipped += norm_ref > 1.0;
    ref_opt->step();
    fused.step();
  }
  EXPECT_GT(clipped, 5) << "the clip must be active in this test";
  const auto ps = ref.parameters(), fs_ = fused_net.parameters();
  for (size_t i = 0; i < ps.size(); ++i) {
    const std::string what = "parameter #" + std::to_string(i);
    if (ps[i].is_same(ref.unused)) {  // the unused parameter: untouched, no state in either optimizer
      EXPECT_TRUE(at::equal(fs_[i], initial[i])) << what;
      EXPECT_EQ(opt->state().count(fs_[i].unsafeGetTensorImpl()), 0u);
      EXPECT_EQ(ref_opt->state().count(ps[i].unsafeGetTensorImpl()), 0u);
      continue;
    }
    // The parameters moved far more than the tolerance: the comparison says something.
    EXPECT_GT((ps[i] - initial[i]).abs().max().item<double>(), 1e3 * kFp32Steps.atol) << what;
    EXPECT_TRUE(all_close(fs_[i], ps[i], kFp32Steps, what));
    const auto &sr = fa_state(*ref_opt, ps[i]), &sf = fa_state(*opt, fs_[i]);
    EXPECT_EQ(sf.step(), 20) << what;
    EXPECT_EQ(sr.step(), 20) << what;
    EXPECT_EQ(fused.device_step(fs_[i]).item<double>(), 20.0) << what;
    EXPECT_TRUE(all_close(sf.exp_avg(), sr.exp_avg(), kFp32Steps, what + " exp_avg"));
    EXPECT_TRUE(all_close(sf.exp_avg_sq(), sr.exp_avg_sq(), {1e-5, 1e-6}, what + " exp_avg_sq"));
    if (amsgrad) {
      EXPECT_TRUE(all_close(sf.max_exp_avg_sq(), sr.max_exp_avg_sq(), {1e-5, 1e-6}, what + " max_exp_avg_sq"));
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Amsgrad, FusedAdamWVsTorch, ::testing::Bool());

// An lr tensor (the capturable form) gives exactly the numbers of the groups' lr.
TEST(FusedAdamW, TensorLrEqualsGroupLr) {
  at::manual_seed(5);
  FaNet n1, n2;
  fa_copy_params(n2, n1);
  auto o1 = fa_make_adamw(n1, false), o2 = fa_make_adamw(n2, false);
  FusedAdamW f1(*o1), f2(*o2);
  const at::Tensor lr = at::zeros({}, at::kDouble);
  for (int s = 0; s < 5; ++s) {
    const auto [x, y] = fa_batch(s);
    fa_set_lr(*o1, fa_lr(s));
    lr.fill_(fa_lr(s));
    o1->zero_grad();
    o2->zero_grad();
    at::mse_loss(n1.forward(x), y).backward();
    at::mse_loss(n2.forward(x), y).backward();
    f1.step();
    f2.step(lr);
  }
  const auto p1 = n1.parameters(), p2 = n2.parameters();
  for (size_t i = 0; i < p1.size(); ++i) EXPECT_TRUE(at::equal(p1[i], p2[i])) << "parameter #" << i;
}

TEST(ClipGradNormNoSync, EqualsClipGradNorm) {
  for (const double max_norm : {0.5, 1e6}) {  // clipping, and a norm far below the limit (coefficient 1)
    at::manual_seed(3);
    std::vector<at::Tensor> a, b;
    for (const auto& shape : std::vector<std::vector<int64_t>>{{7, 5}, {13}, {2, 3, 4}, {6}}) {
      a.push_back(at::randn(shape).requires_grad_());
      b.push_back(a.back().detach().clone().requires_grad_());
    }
    for (size_t i = 0; i + 1 < a.size(); ++i) {  // the last one has no gradient
      a[i].mutable_grad() = at::randn(a[i].sizes()) * 3.0;
      b[i].mutable_grad() = a[i].grad().clone();
    }
    const double ref = torch::nn::utils::clip_grad_norm_(a, max_norm);
    const at::Tensor norm = ssmlab::train::clip_grad_norm_nosync(b, max_norm);
    EXPECT_NEAR(norm.item<double>(), ref, 1e-6 * ref);
    for (size_t i = 0; i + 1 < a.size(); ++i) {
      if (max_norm > 1e3) {
        EXPECT_TRUE(at::equal(b[i].grad(), a[i].grad())) << "unclipped gradients are left as they are";
      } else {
        EXPECT_TRUE(all_close(b[i].grad(), a[i].grad(), {1e-6, 1e-7}, "clipped gradient"));
      }
    }
    EXPECT_FALSE(b.back().grad().defined());
    if (max_norm < 1.0) {
      double total = 0.0;
      for (size_t i = 0; i + 1 < b.size(); ++i) total += b[i].grad().pow(2).sum().item<double>();
      EXPECT_NEAR(std::sqrt(total), max_norm, 1e-5) << "after clipping the norm is the limit";
    }
  }
  std::vector<at::Tensor> none{at::ones({2}).requires_grad_()};
  EXPECT_FALSE(ssmlab::train::clip_grad_norm_nosync(none, 1.0).defined());
}

// A checkpoint written from the fused optimizer and loaded into a fresh one (whose device step counters had run
// ahead) continues bit for bit like the run that never stopped.
TEST(FusedAdamW, CheckpointResumeIsExact) {
  ssmlab::test::TempDir tmp;
  at::manual_seed(21);
  FaNet a, b;
  auto oa = fa_make_adamw(a, false), ob = fa_make_adamw(b, false);
  FusedAdamW fa(*oa), fb(*ob);
  auto train = [](FaNet& n, torch::optim::AdamW& opt, FusedAdamW& f, int from, int to) {
    for (int s = from; s < to; ++s) {
      const auto [x, y] = fa_batch(s);
      fa_set_lr(opt, fa_lr(s));
      opt.zero_grad();
      at::mse_loss(n.forward(x), y).backward();
      ssmlab::train::clip_grad_norm_nosync(n.parameters(), 1.0);
      f.step();
    }
  };
  train(b, *ob, fb, 0, 3);  // b's own history, replaced by the load
  train(a, *oa, fa, 0, 10);
  // The host counts lag behind the device ones after graph replays; sync_host_steps restores them.
  for (auto& [key, st] : oa->state()) dynamic_cast<torch::optim::AdamWParamState&>(*st).step(0);
  fa.sync_host_steps();
  EXPECT_EQ(fa_state(*oa, a.a->weight).step(), 10);
  ssmlab::train::TrainState ts;
  ts.step = 10;
  ssmlab::train::save_checkpoint(tmp.path / "step_00000010", a, *oa, ts);
  const auto saved = ssmlab::models::load_safetensors(tmp.path / "step_00000010" / "optimizer.safetensors");
  EXPECT_EQ(saved.tensors.at("a.weight.step").item<int64_t>(), 10);
  ssmlab::train::load_checkpoint(tmp.path / "step_00000010", b, *ob);
  fb.reset_device_steps();
  train(a, *oa, fa, 10, 20);
  train(b, *ob, fb, 10, 20);
  const auto pa = a.parameters(), pb = b.parameters();
  for (size_t i = 0; i < pa.size(); ++i) EXPECT_TRUE(at::equal(pa[i], pb[i])) << "parameter #" << i;
  EXPECT_EQ(fb.device_step(b.a->weight).item<double>(), 20.0);
  EXPECT_EQ(fa_state(*ob, b.a->weight).step(), 20);
}

// ---- the trainer with train.optimizer_impl ----

ssmlab::experiments::Config fa_tiny() {
  ssmlab::experiments::Config c;
  c.run.seed = 5;
  c.model.d_model = 16;
  c.model.n_layers = 1;
  c.model.mixers.mamba1.d_state = 4;
  c.task.batch_size = 16;
  c.task.test_batch_size = 32;
  c.task.mqar.vocab_size = 32;
  c.task.mqar.train = {{16, 2, 200}};  // 13 batches a pass, the last one partial (8 rows)
  c.task.mqar.test = {{16, 2, 32}};
  c.train.lr = 1e-2;
  c.train.epochs = 3;
  c.train.log_every = 3;
  c.train.schedule = "cosine";
  c.train.warmup_steps = 4;
  c.train.grad_clip = 0.5;
  c.train.decay = "matrices";
  c.train.early_stop_acc = 0.0;
  c.train.threads = 1;
  c.train.tensorboard = false;
  return c;
}

TEST(TrainerFusedOptimizer, IsTheDefault) {
  EXPECT_EQ(ssmlab::train::TrainOptions{}.optimizer_impl, "fused");
  EXPECT_FALSE(ssmlab::train::TrainOptions{}.cuda_graph);
}

TEST(TrainerFusedOptimizer, MatchesTorchOptimizer) {
  ssmlab::test::TempDir tmp;
  auto c = fa_tiny();
  c.train.optimizer_impl = "fused";
  ssmlab::experiments::train_run(c, tmp.path / "fused");
  c.train.optimizer_impl = "torch";
  ssmlab::experiments::train_run(c, tmp.path / "torch");
  const auto mf = ssmlab::test::metrics_without_timing(tmp.path / "fused");
  const auto mt = ssmlab::test::metrics_without_timing(tmp.path / "torch");
  ASSERT_EQ(mf.size(), mt.size());
  int compared = 0;
  for (size_t i = 0; i < mf.size(); ++i) {
    ASSERT_EQ(mf[i]["kind"], mt[i]["kind"]);
    ASSERT_EQ(mf[i]["step"], mt[i]["step"]);
    for (const char* key : {"train_loss", "test_loss"}) {
      if (!mf[i].contains(key)) continue;
      const double f = mf[i][key], t = mt[i][key];
      EXPECT_NEAR(f, t, 1e-4 * std::abs(t)) << key << " at step " << mf[i]["step"];
      ++compared;
    }
  }
  EXPECT_GT(compared, 10);
}

TEST(TrainerFusedOptimizer, ResumeIsExact) {
  ssmlab::test::TempDir tmp;
  auto c = fa_tiny();
  c.train.optimizer_impl = "fused";
  c.train.checkpoint_every = 10;
  const fs::path a = tmp.path / "straight", b = tmp.path / "resumed";
  ssmlab::experiments::train_run(c, a);
  auto h = c;
  h.train.halt_after_steps = 20;  // mid-epoch, from the checkpoint of step 20
  ASSERT_TRUE(ssmlab::experiments::train_run(h, b).fit.halted);
  const auto r = ssmlab::experiments::train_run(c, b);
  EXPECT_TRUE(r.fit.resumed);
  EXPECT_EQ(ssmlab::test::metrics_without_timing(a), ssmlab::test::metrics_without_timing(b));
  EXPECT_EQ(ssmlab::test::results_json(a), ssmlab::test::results_json(b));
}

template <class E, class F>
std::string fa_error_of(F&& f) {
  try {
    f();
  } catch (const E& e) {
    return e.what();
  }
  return "(no error)";
}

TEST(TrainerFusedOptimizer, ConfigErrors) {
  ssmlab::test::TempDir tmp;
  auto c = fa_tiny();
  c.train.cuda_graph = true;
  std::string m = fa_error_of<ssmlab::ConfigError>([&] { ssmlab::experiments::train_run(c, tmp.path / "a"); });
  EXPECT_NE(m.find("train.cuda_graph"), std::string::npos) << m;
  EXPECT_NE(m.find("cpu"), std::string::npos) << m;
  c.train.optimizer_impl = "torch";
  m = fa_error_of<ssmlab::ConfigError>([&] { ssmlab::experiments::train_run(c, tmp.path / "b"); });
  EXPECT_NE(m.find("train.optimizer_impl"), std::string::npos) << m;
  // Unknown implementations and non-bool flags are refused when the config is read.
  const fs::path file = tmp.path / "c.toml";
  std::ofstream(file) << "[train]\nepochs = 1\n";
  m = fa_error_of<ssmlab::ConfigError>([&] { ssmlab::experiments::load_config(file, {"train.optimizer_impl=adam"}); });
  EXPECT_NE(m.find("train.optimizer_impl"), std::string::npos) << m;
  EXPECT_NE(m.find("fused"), std::string::npos) << m;
  m = fa_error_of<ssmlab::ConfigError>([&] { ssmlab::experiments::load_config(file, {"train.cuda_graph=3"}); });
  EXPECT_NE(m.find("train.cuda_graph"), std::string::npos) << m;
  // The flag is not part of a run's identity: a folder trained eagerly resumes with graphs on, and back.
  auto g = fa_tiny();
  g.train.cuda_graph = true;
  EXPECT_EQ(ssmlab::experiments::identity_hash(fa_tiny()), ssmlab::experiments::identity_hash(g));
}

}  // namespace

}  // namespace train_test_fused_adamw
