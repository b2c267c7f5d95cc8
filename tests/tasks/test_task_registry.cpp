// The task registry and the Task interface: MQAR behind it is unchanged (same segments as make_mqar_splits);
// the test split alone equals the test split of both; per-sequence metrics and loss.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <cmath>

#include "ssmlab/tasks/registry.h"
#include "test_util.h"

namespace tasks_test_task_registry {

namespace {

using namespace ssmlab::tasks;

MqarConfig small() {
  MqarConfig c;
  c.vocab_size = 64;
  c.train = {{16, 2, 40}, {32, 4, 20}};
  c.test = {{16, 2, 10}, {32, 4, 12}};
  return c;
}

TEST(TaskRegistry, ListsMqarAndRejectsUnknownNames) {
  const auto names = task_names();
  ASSERT_FALSE(names.empty());
  EXPECT_EQ(names.front(), "mqar");
  ssmlab::test::expect_error([] { task_info("nope"); }, {"unknown task 'nope'", "mqar"});
  TaskConfigs bad;
  bad.mqar.train = {{64, 17, 10}};
  ssmlab::test::expect_error([&] { make_task("mqar", bad); }, {"task.mqar", "L64_K17"});
}

TEST(TaskRegistry, MqarTaskIsTheGenerator) {
  TaskConfigs cfgs;
  cfgs.mqar = small();
  const TaskPtr task = make_task("mqar", cfgs);
  const TaskShape s = task->shape();
  EXPECT_EQ(s.input, InputKind::tokens);
  EXPECT_EQ(s.target, TargetKind::per_position);
  EXPECT_EQ(s.vocab_size, 64);
  EXPECT_EQ(s.num_outputs, 64);
  const Splits a = task->make_splits();
  const MqarSplits b = make_mqar_splits(small());
  ASSERT_EQ(a.train.size(), b.train.size());
  ASSERT_EQ(a.test.size(), b.test.size());
  for (size_t i = 0; i < a.train.size(); ++i) EXPECT_TRUE(a.train[i].inputs.equal(b.train[i].inputs));
  const auto test = task->make_test();
  ASSERT_EQ(test.size(), b.test.size());
  for (size_t i = 0; i < test.size(); ++i) {
    EXPECT_EQ(test[i].name, b.test[i].name);
    EXPECT_TRUE(test[i].inputs.equal(b.test[i].inputs));
    EXPECT_TRUE(test[i].targets.equal(b.test[i].targets));
  }
}

TEST(TaskMetrics, ClassificationAccuracyAndLoss) {
  const at::Tensor logits = at::tensor({2.0, 0.0, 0.0, 1.0, 5.0, 4.0}, at::kDouble).view({3, 2});
  const at::Tensor labels = at::tensor({0, 1, 1}, at::kLong);
  EXPECT_TRUE(classification_accuracy(logits, labels).equal(at::tensor({1.0, 1.0, 0.0}, at::kDouble)));
  // Mean of -log softmax at the label, by hand.
  auto nll = [](double a, double b, int lab) { return -(lab == 0 ? a : b) + std::log(std::exp(a) + std::exp(b)); };
  const double want = (nll(2, 0, 0) + nll(0, 1, 1) + nll(5, 4, 1)) / 3.0;
  EXPECT_NEAR(mean_cross_entropy(logits, labels).item<double>(), want, 1e-6);
  ssmlab::test::expect_error([&] { classification_accuracy(logits, labels.narrow(0, 0, 2)); }, {"(M, classes)"});
}

TEST(TaskBatches, PerSequenceTargetsSliceWithTheirInputs) {
  Segment seg;
  seg.name = "images";
  seg.inputs = at::arange(5 * 4 * 3, at::kFloat).view({5, 4, 3});
  seg.targets = at::arange(5, at::kLong);
  seg.seq_len = 4;
  const Batch b = batch_at({seg}, 2, 2);  // rows 4..5
  EXPECT_EQ(b.inputs.sizes(), (std::vector<int64_t>{1, 4, 3}));
  EXPECT_EQ(b.targets.item<int64_t>(), 4);
  Segment bad = seg;
  bad.targets = at::arange(4, at::kLong);
  ssmlab::test::expect_error([&] { slice_batch(bad, 0, 0, 1); }, {"images", "(M)"});
}

}  // namespace

}  // namespace tasks_test_task_registry
