// train.cuda_graph (train/cuda_graph.*): the device-side loss log (sum, first non-finite loss and its step) on
// CPU; on a GPU, a small MQAR training with the step captured into a CUDA graph gives the eager run's metrics to
// fp32 rounding (fp32 and bf16, a last partial batch that runs eagerly between replays), resumes exactly, and a
// NaN appearing inside a replayed step is reported with its step. Without a usable CUDA device the GPU tests skip
// (visibly).
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <limits>
#include <string>

#include <ATen/ATen.h>

#include "cuda_test_util.h"
#include "ssmlab/core/error.h"
#include "ssmlab/experiments/run.h"
#include "ssmlab/train/cuda_graph.h"
#include "ssmlab/train/trainer.h"
#include "test_util.h"
#include "train/train_test_util.h"

namespace train_test_cuda_graph {

namespace {

namespace fs = std::filesystem;
using ssmlab::experiments::Config;
using ssmlab::train::DeviceLossLog;

const double kNaN = std::numeric_limits<double>::quiet_NaN();

TEST(DeviceLossLog, SumsAndRemembersTheFirstNonFiniteStep) {
  DeviceLossLog log(at::kCPU);
  log.set_step(1);
  log.record(at::scalar_tensor(0.5f));
  log.set_step(2);
  log.record(at::scalar_tensor(0.25f));
  auto t = log.take();
  EXPECT_EQ(t.loss_sum, 0.75);
  EXPECT_EQ(t.bad_step, 0);
  t = log.take();  // the sum starts again at every take
  EXPECT_EQ(t.loss_sum, 0.0);
  log.set_step(3);
  log.record(at::scalar_tensor(1.0f));
  log.set_step(4);
  log.record(at::scalar_tensor(std::numeric_limits<float>::infinity()));
  log.set_step(5);
  log.record(at::scalar_tensor(kNaN, at::kDouble));
  t = log.take();
  EXPECT_EQ(t.bad_step, 4) << "the first non-finite step, not the latest";
  EXPECT_TRUE(std::isinf(t.bad_loss));
  EXPECT_FALSE(std::isfinite(t.loss_sum));
  log.set_step(6);
  log.record(at::scalar_tensor(2.0f));
  t = log.take();
  EXPECT_EQ(t.bad_step, 4) << "kept until the run ends";
  EXPECT_EQ(t.loss_sum, 2.0);
}

// Two train segments of other lengths (a graph each): 15 full batches of 16 of L = 32, then 15 of L = 64 and a
// last one of 8 rows (runs eagerly after the replays).
Config cg_tiny() {
  Config c;
  c.run.seed = 9;
  c.model.d_model = 32;
  c.model.n_layers = 2;
  c.model.mixers.mamba1.d_state = 8;
  c.task.batch_size = 16;
  c.task.test_batch_size = 64;
  c.task.mqar.vocab_size = 128;
  c.task.mqar.train = {{32, 4, 240}, {64, 8, 248}};
  c.task.mqar.test = {{32, 4, 64}, {64, 8, 64}};
  c.train.device = "cuda";
  c.train.lr = 3e-3;
  c.train.epochs = 1;
  c.train.log_every = 5;
  c.train.warmup_steps = 3;
  c.train.grad_clip = 1.0;
  c.train.decay = "matrices";
  c.train.early_stop_acc = 0.0;
  c.train.tensorboard = false;
  return c;
}

// Same records, losses and accuracies to fp32 rounding.
void cg_expect_same_metrics(const fs::path& eager, const fs::path& graphed, double rtol) {
  const auto me = ssmlab::test::metrics_without_timing(eager), mg = ssmlab::test::metrics_without_timing(graphed);
  ASSERT_EQ(me.size(), mg.size());
  int compared = 0;
  for (size_t i = 0; i < me.size(); ++i) {
    ASSERT_EQ(me[i]["kind"], mg[i]["kind"]);
    ASSERT_EQ(me[i]["step"], mg[i]["step"]);
    for (const auto& [key, v] : me[i].items()) {
      if (!v.is_number_float()) continue;
      const double e = v, g = mg[i][key];
      EXPECT_TRUE(std::isfinite(g)) << key << " at step " << me[i]["step"];
      if (key.rfind("test_acc", 0) == 0) {  // one flipped argmax of a segment's >= 256 test queries: <= 1/256
        EXPECT_NEAR(g, e, 2.5 / 256) << key << " at step " << me[i]["step"];
      } else {
        EXPECT_NEAR(g, e, rtol * std::abs(e) + 1e-7) << key << " at step " << me[i]["step"];
      }
      ++compared;
    }
  }
  EXPECT_GT(compared, 8);
}

void cg_graph_equals_eager(const std::string& precision, double rtol) {
  SKIP_WITHOUT_CUDA();
  ssmlab::test::TempDir tmp;
  Config c = cg_tiny();
  c.train.precision = precision;
  const auto eager = ssmlab::experiments::train_run(c, tmp.path / "eager");
  c.train.cuda_graph = true;
  const auto graphed = ssmlab::experiments::train_run(c, tmp.path / "graph");
  EXPECT_EQ(eager.fit.graph_steps, 0);
  EXPECT_EQ(graphed.fit.graph_steps, 30) << "every full batch goes through the graph, the partial one does not";
  EXPECT_EQ(graphed.fit.steps, 31);
  cg_expect_same_metrics(tmp.path / "eager", tmp.path / "graph", rtol);
}

TEST(CudaGraphTraining, SameMetricsAsEagerFp32) { cg_graph_equals_eager("fp32", 1e-4); }

TEST(CudaGraphTraining, SameMetricsAsEagerBf16) { cg_graph_equals_eager("bf16", 1e-3); }

TEST(CudaGraphTraining, ResumeIsExact) {
  SKIP_WITHOUT_CUDA();
  ssmlab::test::TempDir tmp;
  Config c = cg_tiny();
  c.train.cuda_graph = true;
  c.train.checkpoint_every = 10;
  const fs::path a = tmp.path / "straight", b = tmp.path / "resumed";
  ssmlab::experiments::train_run(c, a);
  Config h = c;
  h.train.halt_after_steps = 20;
  ASSERT_TRUE(ssmlab::experiments::train_run(h, b).fit.halted);
  const auto r = ssmlab::experiments::train_run(c, b);
  EXPECT_TRUE(r.fit.resumed);
  EXPECT_GT(r.fit.graph_steps, 0);
  cg_expect_same_metrics(a, b, 1e-5);
}

// MQAR whose loss turns NaN at the `nan_at`-th call, counted on the device (so inside replays too).
class NanAtCallTask : public ssmlab::tasks::Task {
 public:
  NanAtCallTask(ssmlab::tasks::TaskPtr base, int64_t nan_at)
      : base_(std::move(base)), nan_at_(nan_at), calls_(at::zeros({}, at::TensorOptions().device(at::kCUDA))) {}
  std::string name() const override { return base_->name(); }
  ssmlab::tasks::TaskShape shape() const override { return base_->shape(); }
  ssmlab::tasks::Splits make_splits() const override { return base_->make_splits(); }
  at::Tensor loss(const at::Tensor& outputs, const at::Tensor& targets) const override {
    calls_.add_(1);
    // Device-side only (no host copy, which a capture refuses).
    const at::Tensor poison = at::where(calls_.eq(static_cast<double>(nan_at_)), at::full({}, kNaN, calls_.options()),
                                        at::zeros({}, calls_.options()));
    return base_->loss(outputs, targets) + poison;
  }
  int64_t loss_count(const at::Tensor& targets) const override { return base_->loss_count(targets); }
  at::Tensor accuracy(const at::Tensor& outputs, const at::Tensor& targets) const override {
    return base_->accuracy(outputs, targets);
  }

 private:
  ssmlab::tasks::TaskPtr base_;
  int64_t nan_at_;
  at::Tensor calls_;  // float32 on the GPU
};

TEST(CudaGraphTraining, NanInAReplayNamesItsStep) {
  SKIP_WITHOUT_CUDA();
  ssmlab::test::TempDir tmp;
  Config c = cg_tiny();
  c.train.cuda_graph = true;
  c.train.log_every = 10;
  const auto base = ssmlab::experiments::build_task(c);
  const NanAtCallTask task(base, 8);  // steps 1-3 warm up, 4 is captured and replayed: step 8 is a replay
  const auto data = ssmlab::experiments::build_data(c, task);
  const auto model = ssmlab::experiments::build_model(c, task);
  std::string msg = "(no error)";
  try {
    ssmlab::train::fit(*model, task, data, c.train, tmp.path);
  } catch (const ssmlab::Error& e) {
    msg = e.what();
  }
  EXPECT_NE(msg.find("at step 8 "), std::string::npos) << msg;
  EXPECT_NE(msg.find("CUDA-graph"), std::string::npos) << msg;
  EXPECT_NE(msg.find("seen at step 10"), std::string::npos) << msg;  // read at the first log step
  EXPECT_FALSE(fs::exists(tmp.path / "checkpoints" / "step_00000010")) << "no checkpoint of the diverged weights";
}

}  // namespace

}  // namespace train_test_cuda_graph
