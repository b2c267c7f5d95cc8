// One trainer for every Model: a SequenceClassifier learns a per-sequence task through train::fit (the same
// function that trains the MQAR language models), and the model a task asks for is the one built.
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include "ssmlab/experiments/run.h"
#include "ssmlab/models/sequence_classifier.h"
#include "ssmlab/train/trainer.h"
#include "test_util.h"

namespace train_test_trainer_models {

namespace {

using namespace ssmlab;

// Two classes of feature sequences (M, L, 2): channel 0 is +-1 (the class) plus noise, channel 1 is noise.
class SignTask : public tasks::Task {
 public:
  std::string name() const override { return "sign"; }
  tasks::TaskShape shape() const override {
    tasks::TaskShape s;
    s.input = tasks::InputKind::features;
    s.in_channels = 2;
    s.target = tasks::TargetKind::per_sequence;
    s.num_outputs = 2;
    return s;
  }
  tasks::Splits make_splits() const override { return {{segment("train", 256, 1)}, {segment("test", 64, 2)}}; }

 private:
  static tasks::Segment segment(const std::string& name, int64_t m, uint64_t seed) {
    at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
    const at::Tensor labels = at::randint(2, {m}, gen, at::TensorOptions().dtype(at::kLong));
    at::Tensor x = 0.3 * at::randn({m, 12, 2}, gen, at::TensorOptions());
    x.select(2, 0).add_((labels.to(at::kFloat) * 2 - 1).unsqueeze(1));
    return {name, x, labels, 12};
  }
};

TEST(TrainerModels, ClassifierLearnsThroughTheSameTrainer) {
  test::TempDir dir;
  SignTask task;
  models::ModelOptions mo;
  mo.d_model = 16;
  mo.n_layers = 1;
  mo.mixers.mamba1.d_state = 4;
  models::SequenceClassifierImpl model(mo, 2, 2, "auto", 5);
  train::TrainData data;
  auto splits = task.make_splits();
  data.train = splits.train;
  data.test = splits.test;
  data.batch_size = 32;
  data.test_batch_size = 64;
  train::TrainOptions o;
  o.epochs = 6;
  o.lr = 1e-2;
  o.weight_decay = 0;
  o.early_stop_acc = 0;
  o.threads = 1;
  o.tensorboard = false;
  const auto before = train::evaluate(model, task, data.test, 64, c10::Device(c10::kCPU), "fp32");
  const auto r = train::fit(model, task, data, o, dir.path);
  EXPECT_EQ(r.steps, 6 * 8);
  EXPECT_GT(r.last_eval.accuracy, 0.9) << "accuracy before training " << before.accuracy;
  EXPECT_LT(r.last_eval.loss, before.loss);
  ASSERT_EQ(r.last_eval.per_segment.size(), 1u);
  EXPECT_EQ(r.last_eval.per_segment[0].first, "test");
}

TEST(TrainerModels, TheTaskShapePicksTheModel) {
  experiments::Config c;
  c.task.mqar.vocab_size = 2048;
  const auto task = experiments::build_task(c);
  const auto model = experiments::build_model(c, *task);
  EXPECT_EQ(model->kind(), "language_model");
  EXPECT_EQ(model->readout_position(10), -1);
  SignTask sign;
  const auto clf = experiments::build_model(c, sign);
  EXPECT_EQ(clf->kind(), "sequence_classifier");
  const at::Tensor x = at::randn({3, 12, 2});
  EXPECT_EQ(clf->embed(x).size(1), 13) << "the class token is appended";
  EXPECT_EQ(clf->forward(x).sizes(), (std::vector<int64_t>{3, 2}));
  EXPECT_EQ(clf->readout_position(13), 12);
}

}  // namespace

}  // namespace train_test_trainer_models
