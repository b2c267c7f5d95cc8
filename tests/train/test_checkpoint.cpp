#include <gtest/gtest.h>

#include "test_util.h"
#include <unistd.h>

#include <filesystem>
#include <initializer_list>
#include <memory>
#include <mutex>
#include <string>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/linear.h>
#include <torch/optim/adamw.h>

#include "ssmlab/core/error.h"
#include "ssmlab/core/io.h"
#include "ssmlab/train/checkpoint.h"

namespace train_test_checkpoint {

namespace fs = std::filesystem;
using namespace ssmlab::train;

namespace {

using ssmlab::test::expect_error;
using ssmlab::test::TempDir;

void seed_torch(uint64_t seed) {
  at::Generator gen = at::detail::getDefaultCPUGenerator();
  std::lock_guard<std::mutex> lock(gen.mutex());
  gen.set_current_seed(seed);
}

// Linear layers, a buffer, and a layer the forward never uses (AdamW keeps no state for it).
struct NetImpl : torch::nn::Module {
  explicit NetImpl(int64_t hidden = 8, bool extra = false, at::ScalarType buffer_dtype = at::kFloat) {
    fc1 = register_module("fc1", torch::nn::Linear(4, hidden));
    fc2 = register_module("fc2", torch::nn::Linear(hidden, 3));
    unused = register_module("unused", torch::nn::Linear(2, 2));
    scale = register_buffer("scale", at::full({3}, 0.5, buffer_dtype));
    if (extra) register_buffer("extra", at::zeros({2}));
  }
  at::Tensor forward(const at::Tensor& x) { return fc2(at::tanh(fc1(x))) * scale; }  // (B, 3)
  torch::nn::Linear fc1{nullptr}, fc2{nullptr}, unused{nullptr};
  at::Tensor scale;
};
TORCH_MODULE(Net);

// Two param groups with their own options, so that per-group options round-trip too.
std::unique_ptr<torch::optim::AdamW> make_adamw(Net& net, bool amsgrad, double lr0 = 1e-2) {
  std::vector<at::Tensor> first = net->fc1->parameters(), rest = net->fc2->parameters();
  for (const auto& p : net->unused->parameters()) rest.push_back(p);
  std::vector<torch::optim::OptimizerParamGroup> groups;
  groups.emplace_back(first, std::make_unique<torch::optim::AdamWOptions>(
                                 torch::optim::AdamWOptions(lr0).weight_decay(0.1).amsgrad(amsgrad)));
  groups.emplace_back(rest);
  return std::make_unique<torch::optim::AdamW>(groups,
                                               torch::optim::AdamWOptions(3e-3).betas({0.8, 0.99}).amsgrad(amsgrad));
}

void train(Net& net, torch::optim::AdamW& opt, int steps) {
  at::Generator data = at::make_generator<at::CPUGeneratorImpl>(/*seed=*/123);
  const at::Tensor x = at::randn({16, 4}, data), y = at::randn({16, 3}, data);  // (B, 4), (B, 3)
  for (int i = 0; i < steps; ++i) {
    opt.zero_grad();
    at::Tensor loss = (net->forward(x) - y).pow(2).mean();
    loss.backward();
    opt.step();
  }
}

void expect_same_tensors(const torch::nn::Module& a, const torch::nn::Module& b) {
  auto pa = a.named_parameters(), pb = b.named_parameters();
  ASSERT_EQ(pa.size(), pb.size());
  for (const auto& p : pa) EXPECT_TRUE(at::equal(p.value(), pb[p.key()])) << p.key();
  auto ba = a.named_buffers(), bb = b.named_buffers();
  for (const auto& p : ba) EXPECT_TRUE(at::equal(p.value(), bb[p.key()])) << p.key();
}

void check_resume(bool amsgrad) {
  TempDir tmp;
  seed_torch(1);
  Net a;
  auto opt_a = make_adamw(a, amsgrad);
  train(a, *opt_a, 3);
  TrainState st;
  st.step = 3;
  st.epoch = 1;
  st.rng_state = "1 2 3";
  st.extra = {{"best_loss", 0.25}};
  const fs::path dir = checkpoint_dir(tmp.path, 3);
  save_checkpoint(dir, *a, *opt_a, st);
  const at::Tensor draw_after_save = at::randn({5});
  train(a, *opt_a, 1);

  seed_torch(99);  // different initial weights and generator state
  Net b;
  auto opt_b = make_adamw(b, amsgrad, /*lr0=*/0.5);
  train(b, *opt_b, 2);  // b's optimizer state must be replaced, not merged
  const TrainState back = load_checkpoint(dir, *b, *opt_b);
  EXPECT_EQ(back.step, 3);
  EXPECT_EQ(back.epoch, 1);
  EXPECT_EQ(back.rng_state, "1 2 3");
  EXPECT_EQ(back.extra, st.extra);
  EXPECT_FALSE(back.torch_rng_state_b64.empty());
  EXPECT_TRUE(at::equal(at::randn({5}), draw_after_save)) << "torch CPU generator restored";
  EXPECT_EQ(opt_b->param_groups()[0].options().get_lr(), 1e-2);
  EXPECT_EQ(opt_b->state().size(), opt_a->state().size());
  EXPECT_EQ(opt_b->state().size(), 4u) << "fc1 and fc2 weights and biases; 'unused' never got state";

  train(b, *opt_b, 1);
  expect_same_tensors(*a, *b);
}

}  // namespace

TEST(Checkpoint, ResumeGivesBitwiseTheSameParameters) { check_resume(/*amsgrad=*/false); }
TEST(Checkpoint, ResumeGivesBitwiseTheSameParametersWithAmsgrad) { check_resume(/*amsgrad=*/true); }

TEST(Checkpoint, OptimizerWithoutStateStaysWithoutState) {
  TempDir tmp;
  Net a, b;
  auto opt_a = make_adamw(a, false), opt_b = make_adamw(b, false);
  train(b, *opt_b, 1);
  save_checkpoint(tmp.path / "ck", *a, *opt_a, {});
  load_checkpoint(tmp.path / "ck", *b, *opt_b);
  EXPECT_TRUE(opt_b->state().empty());
  expect_same_tensors(*a, *b);
}

TEST(Checkpoint, LoadModelWeightsRoundTrip) {
  TempDir tmp;
  Net a, b;
  auto opt = make_adamw(a, false);
  train(a, *opt, 2);
  save_checkpoint(tmp.path / "ck", *a, *opt, {});
  load_model_weights(tmp.path / "ck" / "model.safetensors", *b);
  expect_same_tensors(*a, *b);
}

TEST(Checkpoint, ShapeOrDtypeMismatchNamesTensorAndShapes) {
  TempDir tmp;
  Net a(/*hidden=*/8);
  auto opt_a = make_adamw(a, false);
  save_checkpoint(tmp.path / "ck", *a, *opt_a, {});
  const std::string file = (tmp.path / "ck" / "model.safetensors").string();

  Net b(/*hidden=*/5);
  auto opt_b = make_adamw(b, false);
  const at::Tensor before = b->fc1->weight.clone();
  expect_error([&] { load_checkpoint(tmp.path / "ck", *b, *opt_b); },
               {file, "fc1.weight", "expected (5, 4) Float, found (8, 4) Float", "fc2.weight"});
  EXPECT_TRUE(at::equal(b->fc1->weight, before)) << "a failed load changes nothing";

  Net c(/*hidden=*/8, /*extra=*/false, /*buffer_dtype=*/at::kDouble);
  expect_error([&] { load_model_weights(file, *c); }, {file, "scale", "expected (3) Double, found (3) Float"});
}

TEST(Checkpoint, MissingAndUnexpectedTensorsAreErrors) {
  TempDir tmp;
  Net plain, with_extra(/*hidden=*/8, /*extra=*/true);
  auto opt_plain = make_adamw(plain, false), opt_extra = make_adamw(with_extra, false);
  save_checkpoint(tmp.path / "plain", *plain, *opt_plain, {});
  save_checkpoint(tmp.path / "extra", *with_extra, *opt_extra, {});
  expect_error([&] { load_model_weights(tmp.path / "plain" / "model.safetensors", *with_extra); },
               {"model.safetensors", "missing tensor 'extra'", "(2) Float"});
  expect_error([&] { load_checkpoint(tmp.path / "extra", *plain, *opt_plain); },
               {"model.safetensors", "unexpected tensor 'extra'"});
  expect_error([&] { load_checkpoint(tmp.path / "absent", *plain, *opt_plain); }, {"absent", "does not exist"});
}

TEST(Checkpoint, CorruptStateJsonNamesTheFile) {
  TempDir tmp;
  Net a;
  auto opt = make_adamw(a, false);
  save_checkpoint(tmp.path / "ck", *a, *opt, {});
  fs::remove(tmp.path / "ck" / "checksums.json");  // as an old checkpoint: the parser, not the checksum, must catch these
  const fs::path state = tmp.path / "ck" / "state.json";
  ssmlab::write_file_atomic(state, "{\"step\": ");
  expect_error([&] { load_checkpoint(tmp.path / "ck", *a, *opt); }, {state.string(), "bad JSON"});
  ssmlab::write_file_atomic(state, R"({"step": "3", "epoch": 0, "rng_state": "", "torch_rng_state_b64": ""})");
  expect_error([&] { load_checkpoint(tmp.path / "ck", *a, *opt); }, {state.string(), "\"step\" must be an integer"});
  ssmlab::write_file_atomic(state, R"({"step": 3, "epoch": 0, "rng_state": "", "torch_rng_state_b64": "AAAA"})");
  expect_error([&] { load_checkpoint(tmp.path / "ck", *a, *opt); }, {state.string(), "not a CPU generator state"});
}

TEST(Checkpoint, FailedSaveKeepsThePreviousCheckpoint) {
  TempDir tmp;
  Net a;
  auto opt = make_adamw(a, false);
  const fs::path dir = tmp.path / "step_00000001";
  save_checkpoint(dir, *a, *opt, {});
  const std::string before = ssmlab::read_file(dir / "model.safetensors");
  a->register_buffer("bad", at::zeros({2}, at::kComplexFloat));
  expect_error([&] { save_checkpoint(dir, *a, *opt, {}); }, {"unsupported dtype", "'bad'"});
  EXPECT_EQ(ssmlab::read_file(dir / "model.safetensors"), before);
  EXPECT_FALSE(fs::exists(tmp.path / "step_00000001.tmp"));
}

TEST(Checkpoint, SavingOverAnExistingFolderReplacesIt) {
  TempDir tmp;
  Net a;
  auto opt = make_adamw(a, false);
  const fs::path dir = checkpoint_dir(tmp.path, 7);
  TrainState st;  // the step must match the folder's name (train/state_file.h); the epoch tells the saves apart
  st.step = 7;
  st.epoch = 1;
  save_checkpoint(dir, *a, *opt, st);
  ssmlab::write_file_atomic(dir / "stray.txt", "old");
  st.epoch = 2;
  save_checkpoint(dir, *a, *opt, st);
  EXPECT_EQ(load_checkpoint(dir, *a, *opt).epoch, 2);
  EXPECT_FALSE(fs::exists(dir / "stray.txt"));
  EXPECT_EQ(std::distance(fs::directory_iterator(tmp.path), fs::directory_iterator()), 1);
}

TEST(Checkpoint, LatestIgnoresTempAndIncompleteFolders) {
  TempDir tmp;
  EXPECT_TRUE(latest_checkpoint(tmp.path / "absent").empty());
  EXPECT_TRUE(latest_checkpoint(tmp.path).empty());
  Net a;
  auto opt = make_adamw(a, false);
  save_checkpoint(checkpoint_dir(tmp.path, 5), *a, *opt, {});
  fs::copy(checkpoint_dir(tmp.path, 5), tmp.path / "step_00000010.tmp");
  fs::create_directories(tmp.path / "step_00000007");  // incomplete: no files
  fs::create_directories(tmp.path / "step_x9");
  fs::create_directories(tmp.path / "other");
  EXPECT_EQ(latest_checkpoint(tmp.path), checkpoint_dir(tmp.path, 5));
  save_checkpoint(checkpoint_dir(tmp.path, 123456789), *a, *opt, {});  // past 8 digits: numeric order
  EXPECT_EQ(latest_checkpoint(tmp.path), tmp.path / "step_123456789");
}

TEST(Checkpoint, PruneKeepsTheNewestK) {
  TempDir tmp;
  Net a;
  auto opt = make_adamw(a, false);
  for (int64_t step : {1, 2, 3, 10}) save_checkpoint(checkpoint_dir(tmp.path, step), *a, *opt, {});
  fs::create_directories(tmp.path / "step_00000002.tmp");  // stale, from a crash
  prune_checkpoints(tmp.path, 0);
  EXPECT_TRUE(fs::exists(checkpoint_dir(tmp.path, 1))) << "keep_last <= 0 keeps everything";
  prune_checkpoints(tmp.path, 2);
  EXPECT_FALSE(fs::exists(checkpoint_dir(tmp.path, 1)));
  EXPECT_FALSE(fs::exists(checkpoint_dir(tmp.path, 2)));
  EXPECT_FALSE(fs::exists(tmp.path / "step_00000002.tmp"));
  EXPECT_TRUE(fs::exists(checkpoint_dir(tmp.path, 3)));
  EXPECT_TRUE(fs::exists(checkpoint_dir(tmp.path, 10)));
  EXPECT_EQ(latest_checkpoint(tmp.path), checkpoint_dir(tmp.path, 10));
}

}  // namespace train_test_checkpoint
