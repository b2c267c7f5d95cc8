// Trainer end to end on tiny MQAR runs: it learns; the same seed gives the same metrics; a run
// stopped mid-way and resumed ends exactly like an uninterrupted one.
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include <cmath>
#include <filesystem>
#include <fstream>

#include "ssmlab/core/error.h"
#include "ssmlab/experiments/run.h"
#include "ssmlab/train/checkpoint.h"
#include "ssmlab/train/schedule.h"
#include "train/train_test_util.h"

namespace train_test_trainer {

namespace {

namespace fs = std::filesystem;
using ssmlab::experiments::Config;

Config tiny() {
  Config c;
  c.run.seed = 7;
  c.model.d_model = 32;
  c.model.n_layers = 2;
  c.model.mixers.mamba1.d_state = 8;
  c.task.batch_size = 16;
  c.task.test_batch_size = 64;
  c.task.mqar.vocab_size = 32;
  c.task.mqar.train = {{16, 2, 512}};
  c.task.mqar.test = {{16, 2, 64}};
  c.train.lr = 1e-2;
  c.train.epochs = 4;
  c.train.log_every = 4;
  c.train.early_stop_acc = 0.0;
  c.train.threads = 1;
  c.ops.backend = "reference";
  return c;
}

fs::path fresh_dir(const std::string& name) {
  const fs::path d = fs::temp_directory_path() / ("ssmlab_test_" + name + "_" + std::to_string(::getpid()));
  fs::remove_all(d);
  return d;
}

std::vector<nlohmann::json> metrics(const fs::path& dir) { return ssmlab::test::metrics_without_timing(dir); }

TEST(Trainer, TinyRunLearns) {
  Config c = tiny();
  c.train.epochs = 8;
  const fs::path dir = fresh_dir("learns");
  auto out = ssmlab::experiments::train_run(c, dir);
  ASSERT_FALSE(out.fit.halted);
  const auto m = metrics(dir);
  double first_loss = -1, last_loss = -1;
  for (const auto& j : m)
    if (j["kind"] == "train") {
      if (first_loss < 0) first_loss = j["train_loss"];
      last_loss = j["train_loss"];
    }
  EXPECT_LT(last_loss, 0.5 * first_loss) << "training loss should fall well below its start (" << first_loss << ")";
  // 16 possible values per query: chance is 1/16.
  EXPECT_GT(out.fit.last_eval.accuracy, 0.2);
  EXPECT_TRUE(fs::exists(dir / "DONE"));
  EXPECT_TRUE(fs::exists(dir / "results.json"));
  EXPECT_TRUE(fs::exists(dir / "config.toml"));
  fs::remove_all(dir);
}

TEST(Trainer, Bf16AutocastTrains) {
  Config c = tiny();
  c.train.precision = "bf16";
  c.train.max_steps = 96;
  const fs::path dir = fresh_dir("bf16");
  auto out = ssmlab::experiments::train_run(c, dir);
  double first_loss = -1, last_loss = -1;
  for (const auto& j : metrics(dir))
    if (j["kind"] == "train") {
      if (first_loss < 0) first_loss = j["train_loss"];
      last_loss = j["train_loss"];
    }
  EXPECT_TRUE(std::isfinite(last_loss));
  EXPECT_LT(last_loss, 0.9 * first_loss) << "bf16 training should make progress";
  EXPECT_TRUE(std::isfinite(out.fit.last_eval.accuracy));
  // Autocast is switched off again after training: a plain matmul stays fp32.
  EXPECT_EQ(at::matmul(at::randn({2, 2}), at::randn({2, 2})).scalar_type(), at::kFloat);
  fs::remove_all(dir);
}

TEST(Trainer, KilledAndResumedEqualsUninterrupted) {
  Config c = tiny();
  c.train.max_steps = 40;
  c.train.eval_every = 10;
  c.train.checkpoint_every = 8;
  c.train.keep_checkpoints = 2;
  const fs::path a = fresh_dir("straight"), b = fresh_dir("resumed");
  auto ra = ssmlab::experiments::train_run(c, a);
  Config halted = c;
  halted.train.halt_after_steps = 21;  // dies 5 steps after its last checkpoint (16)
  auto rb1 = ssmlab::experiments::train_run(halted, b);
  ASSERT_TRUE(rb1.fit.halted);
  EXPECT_FALSE(fs::exists(b / "DONE"));
  auto rb2 = ssmlab::experiments::train_run(c, b);
  EXPECT_TRUE(rb2.fit.resumed);
  EXPECT_EQ(rb2.fit.steps, 40);
  EXPECT_EQ(metrics(a), metrics(b));
  EXPECT_DOUBLE_EQ(ra.fit.last_eval.accuracy, rb2.fit.last_eval.accuracy);
  // Bitwise-equal final weights.
  const auto ta = ssmlab::models::load_safetensors(ssmlab::train::latest_checkpoint(a / "checkpoints") / "model.safetensors");
  const auto tb = ssmlab::models::load_safetensors(ssmlab::train::latest_checkpoint(b / "checkpoints") / "model.safetensors");
  ASSERT_EQ(ta.tensors.size(), tb.tensors.size());
  for (const auto& [name, t] : ta.tensors) EXPECT_TRUE(at::equal(t, tb.tensors.at(name))) << name;
  fs::remove_all(a);
  fs::remove_all(b);
}

TEST(Trainer, SameSeedSameMetricsAndFinishedRunIsSkipped) {
  Config c = tiny();
  c.train.max_steps = 12;
  const fs::path a = fresh_dir("seed_a"), b = fresh_dir("seed_b");
  ssmlab::experiments::train_run(c, a);
  ssmlab::experiments::train_run(c, b);
  EXPECT_EQ(metrics(a), metrics(b));
  auto again = ssmlab::experiments::train_run(c, a);
  EXPECT_TRUE(again.already_done);
  Config other = c;
  other.run.seed = 8;
  EXPECT_THROW(ssmlab::experiments::train_run(other, a), ssmlab::Error);  // a folder holds one config
  fs::remove_all(a);
  fs::remove_all(b);
}

TEST(Trainer, DivergenceIsAClearError) {
  Config c = tiny();
  c.train.lr = 1e30;
  c.train.grad_clip = 0.0;
  c.train.max_steps = 30;
  const fs::path d = fresh_dir("diverge");
  try {
    ssmlab::experiments::train_run(c, d);
    FAIL() << "expected an error";
  } catch (const ssmlab::Error& e) {
    EXPECT_NE(std::string(e.what()).find("training diverged"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(fs::exists(d / "DONE"));
  fs::remove_all(d);
}

TEST(Trainer, EvalRunMatchesResults) {
  Config c = tiny();
  c.train.max_steps = 10;
  const fs::path d = fresh_dir("eval");
  auto r = ssmlab::experiments::train_run(c, d);
  const auto e = ssmlab::experiments::eval_run(d);
  EXPECT_DOUBLE_EQ(e.accuracy, r.fit.last_eval.accuracy);
  EXPECT_TRUE(fs::exists(d / "eval.json"));
  EXPECT_THROW(ssmlab::experiments::eval_run(d / "checkpoints"), ssmlab::Error);
  fs::remove_all(d);
}

TEST(Schedule, WarmupCosineAndEpochCosine) {
  ssmlab::train::TrainOptions o;
  o.lr = 1.0;
  o.warmup_steps = 10;
  o.min_lr_ratio = 0.1;
  EXPECT_DOUBLE_EQ(ssmlab::train::learning_rate(o, 0, 110, 0), 0.1);
  EXPECT_DOUBLE_EQ(ssmlab::train::learning_rate(o, 9, 110, 0), 1.0);
  EXPECT_NEAR(ssmlab::train::learning_rate(o, 60, 110, 0), 0.55, 1e-12);  // half-way down
  EXPECT_NEAR(ssmlab::train::learning_rate(o, 110, 110, 0), 0.1, 1e-12);
  o.schedule = "constant";
  EXPECT_DOUBLE_EQ(ssmlab::train::learning_rate(o, 4, 110, 0), 0.5);  // warmup applies
  EXPECT_DOUBLE_EQ(ssmlab::train::learning_rate(o, 70, 110, 0), 1.0);
  o.schedule = "cosine_epoch";
  o.epochs = 4;
  o.min_lr_ratio = 0.0;
  EXPECT_NEAR(ssmlab::train::learning_rate(o, 123, 1000, 2), 0.5, 1e-12);
}

}  // namespace

}  // namespace train_test_trainer
