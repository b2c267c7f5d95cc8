// The seqimage task (spec §2.4): pixel order p = W row + col with channels in order and values x / 255;
// average-pool downsampling; segments are the first `count` of a seeded permutation, deterministic, with the
// train seeds drawn first; the class token is last and the head reads only it; `ssmlab list tasks` shows the
// task; a small synthetic IDX folder trains above chance through experiments::train_run.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <cstdio>

#include "data/data_test_files.h"
#include "ssmlab/core/rng.h"
#include "ssmlab/experiments/run.h"
#include "ssmlab/models/sequence_classifier.h"
#include "ssmlab/tasks/registry.h"
#include "ssmlab/tasks/seqimage.h"
#include "test_util.h"

namespace tasks_test_seqimage {

namespace {

using namespace ssmlab;
using test::Bytes;

TEST(SeqImage, PixelOrderIsRowMajorWithChannelsInOrder) {
  at::Tensor images = at::zeros({2, 3, 4, 5}, at::kByte);  // (N, C, H, W)
  images[1][2][3][1] = 255;                                // image 1, channel 2, row 3, col 1
  images[1][0][3][1] = 51;                                 // channel 0 of the same pixel
  images[0][1][0][4] = 102;
  const at::Tensor x = tasks::image_sequences(images, 1);
  EXPECT_EQ(x.sizes(), (std::vector<int64_t>{2, 20, 3}));
  EXPECT_EQ(x.scalar_type(), at::kFloat);
  EXPECT_FLOAT_EQ(x[1][5 * 3 + 1][2].item<float>(), 1.0f);  // p = W row + col
  EXPECT_FLOAT_EQ(x[1][5 * 3 + 1][0].item<float>(), 0.2f);
  EXPECT_FLOAT_EQ(x[0][4][1].item<float>(), 0.4f);
  EXPECT_FLOAT_EQ(x.sum().item<float>(), 1.6f);  // nothing else is set
  test::expect_error([&] { tasks::image_sequences(images, 2); }, {"downsample 2", "4 x 5"});
}

TEST(SeqImage, DownsampleAveragesBlocks) {
  const at::Tensor images = at::arange(16, at::kByte).view({1, 1, 4, 4}).mul(10);  // value 10 (4 row + col)
  const at::Tensor x = tasks::image_sequences(images, 2);                          // (1, 4, 1)
  EXPECT_EQ(x.sizes(), (std::vector<int64_t>{1, 4, 1}));
  // Top-left block holds 0, 10, 40, 50: mean 25; top-right 20, 30, 60, 70: mean 45; then 105, 125.
  const at::Tensor want = at::tensor({25.0f, 45.0f, 105.0f, 125.0f}).div(255.0f).view({1, 4, 1});
  EXPECT_TRUE(at::allclose(x, want)) << x;
}

// An IDX folder whose image i is filled with the value i (train: n_train images, test: n_test).
void write_numbered_idx(const std::filesystem::path& dir, uint32_t n_train, uint32_t n_test) {
  auto value = [](uint32_t i, uint32_t, uint32_t) { return static_cast<int>(i); };
  std::vector<uint8_t> train_labels, test_labels;
  for (uint32_t i = 0; i < n_train; ++i) train_labels.push_back(static_cast<uint8_t>(i % 10));
  for (uint32_t i = 0; i < n_test; ++i) test_labels.push_back(static_cast<uint8_t>(i % 10));
  test::write_gzip(dir / "train-images-idx3-ubyte.gz", test::idx_images(n_train, 2, 2, value));
  test::write_gzip(dir / "train-labels-idx1-ubyte.gz", test::idx_labels(train_labels));
  test::write_bytes(dir / "t10k-images-idx3-ubyte", test::idx_images(n_test, 2, 2, value));
  test::write_bytes(dir / "t10k-labels-idx1-ubyte", test::idx_labels(test_labels));
}

// Which image (by its fill value) each row of a segment holds.
std::vector<int64_t> image_ids(const tasks::Segment& seg) {
  const at::Tensor ids = seg.inputs.select(2, 0).select(1, 0).mul(255).round().to(at::kLong);
  return std::vector<int64_t>(ids.data_ptr<int64_t>(), ids.data_ptr<int64_t>() + ids.numel());
}

TEST(SeqImage, SegmentsAreTheFirstCountOfASeededPermutation) {
  test::TempDir dir;
  write_numbered_idx(dir.path, 40, 20);
  tasks::TaskConfigs c;
  c.seqimage.dataset = "idx";
  c.seqimage.path = dir.path.string();
  c.seqimage.train = {{"", 12}};
  c.seqimage.test = {{"", 5}, {"", 7}, {"clean", 0}};
  const tasks::TaskPtr task = tasks::make_task("seqimage", c);
  const tasks::TaskShape s = task->shape();
  EXPECT_EQ(s.input, tasks::InputKind::features);
  EXPECT_EQ(s.in_channels, 1);
  EXPECT_EQ(s.target, tasks::TargetKind::per_sequence);
  EXPECT_EQ(s.num_outputs, 10);

  const tasks::Splits a = task->make_splits(), b = task->make_splits();
  ASSERT_EQ(a.train.size(), 1u);
  ASSERT_EQ(a.test.size(), 3u);
  EXPECT_EQ(a.train[0].name, "train");
  EXPECT_EQ(a.test[0].name, "test");
  EXPECT_EQ(a.test[1].name, "test_2");
  EXPECT_EQ(a.test[2].name, "clean");
  EXPECT_EQ(a.test[2].inputs.size(0), 20);  // count 0: the whole split
  EXPECT_EQ(a.train[0].seq_len, 4);
  EXPECT_TRUE(a.train[0].inputs.equal(b.train[0].inputs)) << "deterministic";

  // The seeds: a split Rng seeded with the task seed, train seeds first, then test seeds (spec §2.4).
  Rng split(123);
  const auto train_seed = static_cast<uint64_t>(split.randint(0, int64_t{1} << 31));
  const auto test_seed = static_cast<uint64_t>(split.randint(int64_t{1} << 31, int64_t{1} << 32));
  const tasks::SeqImageSeeds seeds = tasks::seqimage_seeds(c.seqimage);
  EXPECT_EQ(seeds.train[0], train_seed);
  EXPECT_EQ(seeds.test[0], test_seed);
  const at::Tensor perm = tasks::seeded_permutation(40, train_seed);
  EXPECT_TRUE(std::get<0>(perm.sort()).equal(at::arange(40, at::kLong))) << "a permutation";
  EXPECT_FALSE(perm.equal(at::arange(40, at::kLong)));
  const std::vector<int64_t> want(perm.data_ptr<int64_t>(), perm.data_ptr<int64_t>() + 12);
  EXPECT_EQ(image_ids(a.train[0]), want);
  for (int64_t i = 0; i < 12; ++i) EXPECT_EQ(a.train[0].targets[i].item<int64_t>(), want[i] % 10);
  const at::Tensor test_perm = tasks::seeded_permutation(20, test_seed);
  const int64_t* tp = test_perm.data_ptr<int64_t>();
  EXPECT_EQ(image_ids(a.test[0]), std::vector<int64_t>(tp, tp + 5));

  const auto test_only = task->make_test();
  ASSERT_EQ(test_only.size(), 3u);
  for (size_t i = 0; i < 3; ++i) EXPECT_TRUE(test_only[i].inputs.equal(a.test[i].inputs)) << i;

  c.seqimage.seed = 7;
  const auto other = tasks::make_task("seqimage", c)->make_splits();
  EXPECT_NE(image_ids(other.train[0]), image_ids(a.train[0])) << "another task seed, another order";
  c.seqimage.train = {{"", 41}};
  test::expect_error([&] { tasks::make_task("seqimage", c)->make_splits(); }, {"'train'", "41 images", "holds 40"});
  c.seqimage.path = "";
  test::expect_error([&] { tasks::make_task("seqimage", c); }, {"task.seqimage", "idx needs a path"});
}

TEST(SeqImage, CifarFolderGivesRgbPixelSequences) {
  test::TempDir dir;
  auto pixel = [](int c, int row, int col) { return c == 2 && row == 1 && col == 3 ? 255 : (c == 0 ? 51 : 0); };
  for (int i = 1; i <= 5; ++i) {
    Bytes b;
    for (int r = 0; r < 2; ++r) test::append_cifar_record(b, static_cast<uint8_t>(i), pixel);
    test::write_bytes(dir.path / ("data_batch_" + std::to_string(i) + ".bin"), b);
  }
  Bytes t;
  test::append_cifar_record(t, 4, pixel);
  test::write_bytes(dir.path / "test_batch.bin", t);
  tasks::TaskConfigs c;
  c.seqimage.path = dir.path.string();
  const tasks::TaskPtr task = tasks::make_task("seqimage", c);
  EXPECT_EQ(task->shape().in_channels, 3);
  const auto splits = task->make_splits();
  const at::Tensor x = splits.train[0].inputs;  // (10, 1024, 3)
  EXPECT_EQ(x.sizes(), (std::vector<int64_t>{10, 1024, 3}));
  EXPECT_FLOAT_EQ(x[4][32 * 1 + 3][2].item<float>(), 1.0f);
  EXPECT_FLOAT_EQ(x[4][32 * 1 + 3][1].item<float>(), 0.0f);
  EXPECT_FLOAT_EQ(x[4][0][0].item<float>(), 0.2f);
  EXPECT_FLOAT_EQ(x.select(2, 2).sum().item<float>(), 10.0f);
  EXPECT_EQ(splits.test[0].targets.item<int64_t>(), 4);
  c.seqimage.downsample = 4;
  EXPECT_EQ(tasks::make_task("seqimage", c)->make_test()[0].inputs.sizes(), (std::vector<int64_t>{1, 64, 3}));
}

TEST(SeqImage, ClassTokenIsLastAndTheHeadReadsOnlyIt) {
  models::ModelOptions mo;
  mo.d_model = 8;
  mo.n_layers = 1;
  mo.mixers.mamba1.d_state = 4;
  models::SequenceClassifierImpl model(mo, 3, 10, "auto", 3);
  model.eval();
  at::NoGradGuard no_grad;
  const at::Tensor x = at::rand({2, 6, 3});
  const at::Tensor h = model.embed(x);  // (2, 7, 8)
  ASSERT_EQ(h.sizes(), (std::vector<int64_t>{2, 7, 8}));
  for (int b = 0; b < 2; ++b) EXPECT_TRUE(at::allclose(h[b][6], model.cls_token)) << "class token at L";
  EXPECT_FALSE(at::allclose(h[0][5], model.cls_token));
  const at::Tensor f = at::randn({2, 7, 8});
  const at::Tensor out = model.head(f);  // (2, 10)
  at::Tensor g = f.clone();
  g.narrow(1, 0, 6).normal_();  // every position but the last
  EXPECT_TRUE(at::allclose(model.head(g), out)) << "the head reads the last position only";
  g[1][6][0] += 1.0;
  EXPECT_FALSE(at::allclose(model.head(g)[1], out[1]));
  EXPECT_TRUE(at::allclose(model.head(g)[0], out[0]));
  EXPECT_EQ(model.readout_position(7), 6);
}

TEST(SeqImage, ListedByTheCli) {
  const std::string cmd = std::string(SSMLAB_BINARY_DIR) + "/ssmlab list tasks 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  ASSERT_NE(p, nullptr);
  std::string out;
  char buf[512];
  while (fgets(buf, sizeof buf, p)) out += buf;
  EXPECT_EQ(pclose(p), 0) << out;
  EXPECT_NE(out.find("seqimage"), std::string::npos) << out;
  EXPECT_NE(out.find("mqar"), std::string::npos) << out;
}

// Four classes of 8 x 8 images: class k has mean brightness 30 + 60 k, plus uniform noise of +-25.
void write_brightness_idx(const std::filesystem::path& dir, uint32_t n_train, uint32_t n_test) {
  Rng rng(11);
  using Part = std::pair<std::string, uint32_t>;
  for (const auto& [prefix, n] : {Part{"train", n_train}, Part{"t10k", n_test}}) {
    std::vector<uint8_t> labels;
    for (uint32_t i = 0; i < n; ++i) labels.push_back(static_cast<uint8_t>(rng.randint(0, 4)));
    auto value = [&](uint32_t i, uint32_t, uint32_t) { return 30 + 60 * labels[i] + rng.randint(-25, 26); };
    test::write_gzip(dir / (prefix + "-images-idx3-ubyte.gz"), test::idx_images(n, 8, 8, value));
    test::write_bytes(dir / (prefix + "-labels-idx1-ubyte"), test::idx_labels(labels));
  }
}

TEST(SeqImage, TrainRunLearnsASyntheticIdxFolderAboveChance) {
  test::TempDir dir;
  const auto data_dir = dir.path / "data";
  std::filesystem::create_directories(data_dir);
  write_brightness_idx(data_dir, 512, 128);
  experiments::Config c;
  c.task.name = "seqimage";
  c.task.seqimage.dataset = "idx";
  c.task.seqimage.path = data_dir.string();
  c.task.seqimage.downsample = 2;  // 16 pixels per image
  c.task.batch_size = 32;
  c.task.test_batch_size = 128;
  c.model.d_model = 16;
  c.model.n_layers = 1;
  c.model.mixers.mamba1.d_state = 4;
  c.train.epochs = 6;
  c.train.lr = 1e-2;
  c.train.weight_decay = 0;
  c.train.schedule = "constant";
  c.train.early_stop_acc = 0;
  c.train.threads = 1;
  c.train.tensorboard = false;
  const auto out = experiments::train_run(c, dir.path / "run");
  EXPECT_EQ(out.fit.steps, 6 * 16);
  EXPECT_GT(out.fit.last_eval.accuracy, 0.6) << "chance is 0.25 over the four classes used (0.1 over ten)";
  ASSERT_EQ(out.fit.last_eval.per_segment.size(), 1u);
  EXPECT_EQ(out.fit.last_eval.per_segment[0].first, "test");
  EXPECT_TRUE(std::filesystem::exists(dir.path / "run" / "results.json"));
}

}  // namespace

}  // namespace tasks_test_seqimage
