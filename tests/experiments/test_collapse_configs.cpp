// The state-collapse lab's configs (configs/collapse/, issue 18): the forget sweeps expand to state sizes x
// training lengths with the tokens per step held fixed and the analyses listed, and passkey-cpu.toml trains and
// writes its passkey grid end to end (cut down to a few steps and prompts).
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <set>

#include <nlohmann/json.hpp>

#include "ssmlab/analysis/registry.h"
#include "ssmlab/experiments/run.h"
#include "ssmlab/experiments/sweep.h"
#include "ssmlab/runfolder/layout.h"
#include "test_util.h"
#include "text/text_test_util.h"

namespace experiments_test_collapse_configs {

namespace {

namespace fs = std::filesystem;
using namespace ssmlab;
using namespace ssmlab::experiments;

fs::path collapse(const std::string& rel) { return fs::path(SSMLAB_SOURCE_DIR) / "configs/collapse" / rel; }

bool has_analysis(const std::string& name) {
  for (const auto& n : analysis::analysis_names())
    if (n == name) return true;
  return false;
}

// The sweep as shipped; before the loss_position analysis is merged into this build, with passkey alone.
Sweep load_forget_sweep(const std::string& file) {
  if (has_analysis("loss_position")) return load_sweep(collapse(file));
  return load_sweep(collapse(file), {"analysis.after_training=\"passkey\""});
}

void check_forget_grid(const Sweep& s, size_t sizes, size_t lengths, int64_t tokens_per_step) {
  ASSERT_EQ(s.runs.size(), sizes * lengths);
  std::set<int64_t> d_state, seq_len;
  std::set<std::pair<int64_t, int64_t>> cells;
  for (const auto& r : s.runs) {
    const Config& c = r.config;
    EXPECT_EQ(c.model.mixer, "mamba2");
    EXPECT_EQ(c.task.name, "text");
    d_state.insert(c.model.mixers.mamba2.d_state);
    seq_len.insert(c.task.text.seq_len);
    cells.insert({c.model.mixers.mamba2.d_state, c.task.text.seq_len});
    EXPECT_EQ(c.task.batch_size * c.task.text.seq_len, tokens_per_step) << r.folder;
    EXPECT_NE(c.analysis.after_training.find("passkey"), std::string::npos);
  }
  EXPECT_EQ(d_state.size(), sizes);
  EXPECT_EQ(seq_len.size(), lengths);
  EXPECT_EQ(cells.size(), sizes * lengths);
}

TEST(CollapseConfigs, ForgetSweepsCoverStateSizesTimesLengths) {
  check_forget_grid(load_forget_sweep("forget-cpu.toml"), 4, 3, 1024);
  check_forget_grid(load_forget_sweep("forget.toml"), 4, 6, 16384);
  // As shipped, both list loss_position before passkey (the GPU sweep state_stats between them).
  const std::pair<const char*, const char*> lists[] = {{"forget-cpu.toml", "loss_position,passkey"},
                                                       {"forget.toml", "loss_position,state_stats,passkey"}};
  for (const auto& [f, list] : lists) {
    std::ifstream in(collapse(f));
    const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    EXPECT_NE(text.find("after_training = \"" + std::string(list) + "\""), std::string::npos) << f;
  }
  // The GPU sweep evaluates in batches of the training batch (a 64-token model would otherwise take 1,600
  // validation batches of 4 windows).
  for (const auto& r : load_forget_sweep("forget.toml").runs)
    EXPECT_EQ(r.config.task.test_batch_size, r.config.task.batch_size) << r.folder;
}

TEST(CollapseConfigs, PasskeyCpuTrainsAndWritesItsGrid) {
  if (test::gpt2() == nullptr || !fs::exists(test::brown_archive()))
    GTEST_SKIP() << "needs ../shared/data/gpt2-bpe and ../shared/data/brown";
  test::TempDir dir;
  auto c = load_config(collapse("passkey-cpu.toml"),
                       {"task.text.cache_dir=\"" + (dir.path / "cache").string() + "\"", "task.text.train_count=16",
                        "task.text.test_count=8", "train.max_steps=2", "train.threads=1",
                        "analysis.passkey.lengths=\"128,256\"", "analysis.passkey.samples=4"});
  EXPECT_EQ(c.analysis.after_training, "passkey");
  const auto out = train_run(c, dir.path / "run");
  EXPECT_EQ(out.fit.steps, 2);
  std::ifstream in(runfolder::analysis_file(dir.path / "run", "passkey"));
  const auto j = nlohmann::json::parse(in)["result"];
  EXPECT_EQ(j["lengths"], nlohmann::json::array({128, 256}));
  EXPECT_EQ(j["samples"].size(), 8u);
  EXPECT_EQ(j["tokenizer"], "gpt2");
  EXPECT_EQ(j["t_train"], 128);
  for (const auto& s : j["samples"]) {
    EXPECT_EQ(s["key"].get<std::string>().size(), 5u);
    // GPT-2 prompt of about the target length.
    EXPECT_LE(s["tokens"].get<int64_t>(), s["length"].get<int64_t>() + 4);
    EXPECT_GT(s["tokens"].get<int64_t>(), s["length"].get<int64_t>() - 60);
  }
  EXPECT_TRUE(fs::exists(runfolder::figure_spec_file(dir.path / "run", "passkey")));
  EXPECT_TRUE(fs::exists(runfolder::figure_spec_file(dir.path / "run", "passkey_curve")));
}

}  // namespace

}  // namespace experiments_test_collapse_configs
