// The `text` task: windows tile the token file (across or within documents), targets are the next tokens, counts
// draw distinct windows by seed, the vocabulary is the tokenizer's; the shipped Brown config trains a few steps.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <cstdio>
#include <set>
#include <string>

#include "ssmlab/core/rng.h"
#include "ssmlab/experiments/run.h"
#include "ssmlab/tasks/registry.h"
#include "ssmlab/tasks/text.h"
#include "test_util.h"
#include "text/text_test_util.h"
#include "train/train_test_util.h"

namespace tasks_test_text {

namespace {

namespace fs = std::filesystem;
using namespace ssmlab;

// Eight documents of 20 + 13 d random letters each (so no two windows are equal), read with the byte tokenizer.
tasks::TextConfig byte_config(const fs::path& dir) { return test::random_letters_text(dir, 8, 20, 13, 9); }

TEST(TextTask, AcrossWindowsTileTheSplitAndTargetsAreTheNextTokens) {
  test::TempDir dir;
  const tasks::TextTask task(byte_config(dir.path));
  const auto tf = task.token_file();
  const int64_t L = 16;
  const auto starts = tasks::text_window_starts(*tf, 0, L, /*within=*/false);
  const int64_t train_tokens = tf->validation_begin();
  ASSERT_EQ(static_cast<int64_t>(starts.size()), (train_tokens - 1) / L);
  for (size_t i = 0; i < starts.size(); ++i) EXPECT_EQ(starts[i], static_cast<int64_t>(i) * L);
  const auto val_starts = tasks::text_window_starts(*tf, 1, L, false);
  ASSERT_FALSE(val_starts.empty());
  EXPECT_EQ(val_starts.front(), train_tokens) << "validation windows start in the validation documents";
  EXPECT_LE(val_starts.back() + L + 1, tf->size());

  const auto splits = task.make_splits();
  ASSERT_EQ(splits.train.size(), 1u);
  ASSERT_EQ(splits.test.size(), 1u);
  const auto& seg = splits.train[0];
  EXPECT_EQ(seg.name, "train");
  EXPECT_EQ(splits.test[0].name, "validation");
  ASSERT_EQ(seg.inputs.sizes(), (std::vector<int64_t>{static_cast<int64_t>(starts.size()), L}));
  EXPECT_TRUE(at::equal(seg.inputs.narrow(1, 1, L - 1), seg.targets.narrow(1, 0, L - 1)));
  // Every row is the token file at one of the starts, each start used once.
  std::set<int64_t> used;
  for (int64_t i = 0; i < seg.inputs.size(0); ++i) {
    const int64_t first = seg.inputs[i][0].item<int64_t>();
    bool found = false;
    for (int64_t s : starts) {
      if (used.count(s)) continue;
      const auto w = tf->tokens(s, L + 1);
      bool same = static_cast<int64_t>(w[0]) == first;
      for (int64_t t = 0; same && t < L; ++t)
        same = static_cast<int64_t>(w[static_cast<size_t>(t)]) == seg.inputs[i][t].item<int64_t>() &&
               static_cast<int64_t>(w[static_cast<size_t>(t + 1)]) == seg.targets[i][t].item<int64_t>();
      if (same) {
        used.insert(s);
        found = true;
        break;
      }
    }
    EXPECT_TRUE(found) << "row " << i << " is no window of the token file";
  }
}

TEST(TextTask, WithinWindowsStayInsideOneDocument) {
  test::TempDir dir;
  auto cfg = byte_config(dir.path);
  cfg.windows = "within";
  const tasks::TextTask task(cfg);
  const auto tf = task.token_file();
  int64_t expected = 0;
  for (int64_t d = 0; d < tf->num_train_documents(); ++d) expected += (tf->offset(d + 1) - tf->offset(d) - 1) / 16;
  const auto starts = tasks::text_window_starts(*tf, 0, 16, /*within=*/true);
  EXPECT_EQ(static_cast<int64_t>(starts.size()), expected);
  for (int64_t s : starts) {
    int64_t d = 0;
    while (tf->offset(d + 1) <= s) ++d;
    EXPECT_LE(s + 17, tf->offset(d + 1)) << "window at " << s << " leaves document " << d;
  }
  EXPECT_EQ(task.make_splits().train[0].inputs.size(0), expected);
}

TEST(TextTask, CountsDrawDistinctWindowsBySeed) {
  test::TempDir dir;
  auto cfg = byte_config(dir.path);
  cfg.train_count = 5;
  cfg.test_count = 2;
  const auto a = tasks::TextTask(cfg).make_splits();
  EXPECT_EQ(a.train[0].inputs.size(0), 5);
  EXPECT_EQ(a.test[0].inputs.size(0), 2);
  EXPECT_TRUE(at::equal(tasks::TextTask(cfg).make_splits().train[0].inputs, a.train[0].inputs));
  std::set<std::vector<int64_t>> rows;
  for (int64_t i = 0; i < 5; ++i) {
    const at::Tensor r = a.train[0].inputs[i].contiguous();
    rows.insert(std::vector<int64_t>(r.data_ptr<int64_t>(), r.data_ptr<int64_t>() + 16));
  }
  EXPECT_EQ(rows.size(), 5u) << "no window twice";
  cfg.seed = 4;  // another split and other draws
  EXPECT_FALSE(at::equal(tasks::TextTask(cfg).make_splits().train[0].inputs, a.train[0].inputs));
  cfg.train_count = 100000;
  test::expect_error([&] { tasks::TextTask(cfg).make_splits(); }, {"train asks for 100000 windows", "holds"});
  cfg.train_count = 0;
  cfg.seq_len = 100000;
  test::expect_error([&] { tasks::TextTask(cfg).make_splits(); }, {"no window of 100001 tokens"});
}

TEST(TextTask, VocabularyIsTheTokenizers) {
  test::TempDir dir;
  auto cfg = byte_config(dir.path);
  const tasks::TextTask byte_task(cfg);
  EXPECT_EQ(byte_task.shape().vocab_size, 256);
  EXPECT_EQ(byte_task.shape().num_outputs, 256);
  EXPECT_EQ(byte_task.shape().input, tasks::InputKind::tokens);
  EXPECT_EQ(byte_task.shape().target, tasks::TargetKind::per_position);
  EXPECT_TRUE(byte_task.reports_perplexity());
  if (test::gpt2() == nullptr) GTEST_SKIP() << "GPT-2 files not found";
  cfg.tokenizer.kind = "gpt2";
  cfg.tokenizer.bpe_encoder = (test::gpt2_dir() / "encoder.json").string();
  cfg.tokenizer.bpe_merges = (test::gpt2_dir() / "vocab.bpe").string();
  const tasks::TextTask bpe_task(cfg);
  EXPECT_EQ(bpe_task.shape().vocab_size, 50257);
  const auto splits = bpe_task.make_splits();
  EXPECT_LT(splits.train[0].inputs.max().item<int64_t>(), 50257);
  // A missing tokenizer file is a DataError through the registry too, naming the file.
  tasks::TaskConfigs all;
  all.text = cfg;
  all.text.tokenizer.bpe_merges = (dir.path / "missing.bpe").string();
  test::expect_data_error([&] { tasks::make_task("text", all); }, {"task.text", "missing.bpe"});
}

TEST(TextTask, ListedByTheCli) {
  const std::string cmd = std::string(SSMLAB_BINARY_DIR) + "/ssmlab list tasks 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  ASSERT_NE(p, nullptr);
  std::string out;
  char buf[512];
  while (fgets(buf, sizeof buf, p)) out += buf;
  EXPECT_EQ(pclose(p), 0) << out;
  EXPECT_NE(out.find("text"), std::string::npos) << out;
}

TEST(TextTask, BrownCpuConfigLoadsAndTrainsAFewSteps) {
  if (test::gpt2() == nullptr || !fs::exists(test::brown_archive()))
    GTEST_SKIP() << "needs ../shared/data/gpt2-bpe and ../shared/data/brown";
  test::TempDir dir;
  const fs::path config = fs::path(SSMLAB_SOURCE_DIR) / "configs/text/brown-mamba-cpu.toml";
  auto c = experiments::load_config(config, {"task.text.cache_dir=\"" + (dir.path / "cache").string() + "\"",
                                             "task.text.train_count=24", "task.text.test_count=8",
                                             "train.max_steps=3", "train.log_every=1", "train.threads=1"});
  EXPECT_EQ(c.task.name, "text");
  EXPECT_EQ(c.task.text.corpus.kind, "brown");
  EXPECT_EQ(c.task.text.tokenizer.kind, "gpt2");
  const auto out = experiments::train_run(c, dir.path / "run");
  EXPECT_EQ(out.fit.steps, 3);
  const auto results = test::results_json(dir.path / "run");
  ASSERT_TRUE(results.contains("test_ppl")) << results.dump();
  const double ppl = results["test_ppl"].get<double>();
  EXPECT_TRUE(std::isfinite(ppl));
  EXPECT_GT(ppl, 1.0);
  EXPECT_LT(ppl, 2.0 * 50257) << "a few steps from a fresh model: near the vocabulary size at most";
}

}  // namespace

}  // namespace tasks_test_text
