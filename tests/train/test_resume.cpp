// Resume from every checkpoint (issue 13): before the first evaluation, between evaluations, after an early stop;
// and a kill at each stage of the end of a run (injected with SSMLAB_FAULT_AT, core/fault.h) leaves a folder that
// the same command completes to the uninterrupted run's results.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <fstream>

#include <nlohmann/json.hpp>

#include "ssmlab/core/io.h"
#include "ssmlab/experiments/run.h"
#include "ssmlab/experiments/run_lock.h"
#include "test_util.h"
#include "train/train_test_util.h"

namespace train_test_resume {

namespace {

namespace fs = std::filesystem;
using ssmlab::experiments::Config;

Config tiny() {
  Config c;
  c.run.seed = 3;
  c.model.d_model = 16;
  c.model.n_layers = 1;
  c.model.mixers.mamba1.d_state = 4;
  c.task.batch_size = 16;
  c.task.test_batch_size = 32;
  c.task.mqar.vocab_size = 32;
  c.task.mqar.train = {{16, 2, 256}};
  c.task.mqar.test = {{16, 2, 32}};
  c.train.lr = 1e-2;
  c.train.epochs = 4;
  c.train.log_every = 3;
  c.train.early_stop_acc = 0.0;
  c.train.threads = 1;
  c.train.tensorboard = false;
  return c;
}

std::vector<nlohmann::json> metrics(const fs::path& dir) { return ssmlab::test::metrics_without_timing(dir); }

nlohmann::json results(const fs::path& dir) { return ssmlab::test::results_json(dir); }

// Trains `c` straight into one folder and, halted after `halt` steps then resumed, into another; both must end equal.
void expect_resume_equal(const Config& c, int64_t halt, const ssmlab::test::TempDir& tmp) {
  const fs::path a = tmp.path / "straight", b = tmp.path / "resumed";
  ssmlab::experiments::train_run(c, a);
  Config h = c;
  h.train.halt_after_steps = halt;
  ASSERT_TRUE(ssmlab::experiments::train_run(h, b).fit.halted);
  const auto r = ssmlab::experiments::train_run(c, b);
  EXPECT_TRUE(r.fit.resumed);
  EXPECT_EQ(metrics(a), metrics(b));
  EXPECT_EQ(results(a), results(b));
}

TEST(Resume, FromACheckpointBeforeTheFirstEvaluation) {
  ssmlab::test::TempDir tmp;
  Config c = tiny();
  c.train.max_steps = 30;
  c.train.eval_every = 20;
  c.train.checkpoint_every = 3;  // checkpoints at 3 and 6 hold no accuracy yet
  expect_resume_equal(c, 7, tmp);
}

TEST(Resume, BetweenEvaluationsWithCheckpointsOffTheirGrid) {
  ssmlab::test::TempDir tmp;
  Config c = tiny();
  c.train.max_steps = 31;  // the last step is neither an evaluation nor a checkpoint multiple
  c.train.eval_every = 10;
  c.train.checkpoint_every = 7;
  expect_resume_equal(c, 16, tmp);
}

TEST(Resume, AnEarlyStopIsNotTrainedPast) {
  ssmlab::test::TempDir tmp;
  Config c = tiny();
  c.train.eval_every = 5;
  c.train.early_stop_acc = 0.01;  // the first evaluation stops the run
  const fs::path d = tmp.path / "run";
  const auto first = ssmlab::experiments::train_run(c, d);
  ASSERT_TRUE(first.fit.early_stopped);
  ASSERT_LT(first.fit.steps, 4 * 16) << "stopped before the end of its 4 epochs";
  const auto before = metrics(d);
  const auto res = results(d);
  // As if killed after the final checkpoint: no results, no DONE.
  fs::remove(d / "DONE");
  fs::remove(d / "results.json");
  const auto again = ssmlab::experiments::train_run(c, d);
  EXPECT_TRUE(again.fit.resumed);
  EXPECT_TRUE(again.fit.early_stopped);
  EXPECT_EQ(again.fit.steps, first.fit.steps);
  EXPECT_EQ(metrics(d), before);
  EXPECT_EQ(results(d), res);
  EXPECT_TRUE(fs::exists(d / "DONE"));
}

int run_binary(const fs::path& config, const fs::path& out, const std::string& fault) {
  const std::string cmd = (fault.empty() ? "" : "SSMLAB_FAULT_AT=" + fault + " ") + "'" +
                          (fs::path(SSMLAB_BINARY_DIR) / "ssmlab").string() + "' train '" + config.string() +
                          "' --out '" + out.string() + "' > '" + out.string() + ".log' 2>&1";
  return ssmlab::test::shell_status(cmd);
}

TEST(Resume, AKillAtEachStageOfTheEndOfARunIsCompletedByTheSameCommand) {
  ssmlab::test::TempDir tmp;
  Config c = tiny();
  c.train.max_steps = 20;
  c.train.eval_every = 8;
  const fs::path cfg = tmp.path / "tiny.toml";
  ssmlab::write_file_atomic(cfg, ssmlab::experiments::run_config_text(c));
  const fs::path straight = tmp.path / "straight";
  ASSERT_EQ(run_binary(cfg, straight, ""), 0);
  for (const std::string point : {"before_final_checkpoint", "after_final_checkpoint", "after_results"}) {
    const fs::path d = tmp.path / point;
    EXPECT_EQ(run_binary(cfg, d, point), 137) << point;
    EXPECT_FALSE(fs::exists(d / "DONE")) << point;
    ASSERT_EQ(run_binary(cfg, d, ""), 0) << point << ": " << ssmlab::read_file(d.string() + ".log");
    EXPECT_TRUE(fs::exists(d / "DONE")) << point;
    EXPECT_EQ(results(d), results(straight)) << point;
    EXPECT_EQ(metrics(d), metrics(straight)) << point;
  }
}

}  // namespace

namespace {

TEST(RunLock, ASecondWriterIsRefusedWithTheHoldersName) {
  ssmlab::test::TempDir tmp;
  const fs::path d = tmp.path / "run";
  {
    const ssmlab::experiments::RunLock held(d);
    const auto holder = ssmlab::experiments::run_lock_holder(d);
    ASSERT_TRUE(holder.has_value());
    EXPECT_NE(holder->find("pid " + std::to_string(::getpid())), std::string::npos) << *holder;
    Config c = tiny();
    c.train.max_steps = 2;
    ssmlab::test::expect_error([&] { ssmlab::experiments::train_run(c, d); },
                               {"is being written by", "pid " + std::to_string(::getpid()), "one writer"});
  }
  EXPECT_FALSE(ssmlab::experiments::run_lock_holder(d).has_value()) << "released with its owner";
  Config c = tiny();
  c.train.max_steps = 2;
  EXPECT_NO_THROW(ssmlab::experiments::train_run(c, d));
}

}  // namespace

}  // namespace train_test_resume
