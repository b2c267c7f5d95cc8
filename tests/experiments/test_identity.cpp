// Run identity: the run id depends on the values that define the run, so adding an option with a default
// renames no run and an older run folder still resumes; what does not define the run (its name, output folder,
// analyses, other mixers' and tasks' options) does not change the id.
#include <gtest/gtest.h>

#include <sstream>

#include "ssmlab/core/io.h"
#include "ssmlab/experiments/identity.h"
#include "ssmlab/experiments/options_io.h"
#include "ssmlab/experiments/run.h"
#include "ssmlab/experiments/validate.h"
#include "test_util.h"

namespace experiments_test_identity {

namespace {

using ssmlab::experiments::Config;
using ssmlab::experiments::run_id;

Config quickstart() { return ssmlab::experiments::load_config(std::string(SSMLAB_SOURCE_DIR) + "/configs/quickstart.toml"); }

TEST(Identity, DefaultsAreEmpty) { EXPECT_EQ(ssmlab::experiments::identity_text(Config{}), ""); }

TEST(Identity, WhatDoesNotDefineTheRunKeepsTheId) {
  const Config base = quickstart();
  const std::string id = run_id(base);
  Config c = base;
  c.run.name = "other";
  c.run.out_dir = "elsewhere";
  c.train.halt_after_steps = 5;
  c.train.dist_backend = "gloo";  // how ranks talk, not what they compute
  c.analysis.after_training = "influence";
  c.analysis.influence.samples = 3;
  c.model.mixers.mamba2.d_state = 7;  // not the chosen mixer
  c.model.mixers.attention.n_heads = 4;
  EXPECT_EQ(run_id(c), id);
  Config text = base;
  text.task.name = "text";
  const std::string text_id = run_id(text);
  text.task.text.cache_dir = "/elsewhere/tokens";  // the token file cache, not its content
  EXPECT_EQ(run_id(text), text_id);
  text.task.text.seq_len = 64;
  EXPECT_NE(run_id(text), text_id);
}

TEST(Identity, WhatDefinesTheRunChangesTheId) {
  const Config base = quickstart();
  const std::string id = run_id(base);
  auto differs = [&](auto change, const char* what) {
    Config c = base;
    change(c);
    EXPECT_NE(run_id(c), id) << what;
  };
  differs([](Config& c) { c.run.seed = 1; }, "seed");
  differs([](Config& c) { c.model.mixers.mamba1.d_state = 8; }, "chosen mixer's option");
  differs([](Config& c) { c.model.mixer = "attention"; }, "mixer");
  differs([](Config& c) { c.train.lr = 3e-3; }, "lr");
  differs([](Config& c) { c.task.mqar.train[0].count = 10; }, "a segment's count");
  differs([](Config& c) { c.ops.backend = "reference"; }, "backend");
}

// A run folder written before an option existed has a config.toml without that key; it must name the same run.
// Every key at its default value in the quickstart is removed in turn from the resolved text.
TEST(Identity, ARemovedDefaultKeyKeepsTheId) {
  const Config base = quickstart();
  const std::string id = run_id(base);
  const std::string text = ssmlab::experiments::run_config_text(base);
  const std::string defaults_text = ssmlab::experiments::to_toml_string(Config{});
  std::istringstream lines(text);
  std::string line;
  int removed = 0;
  std::vector<std::string> all;
  while (std::getline(lines, line)) all.push_back(line);
  std::string section;
  for (size_t i = 0; i < all.size(); ++i) {
    const std::string& l = all[i];
    if (!l.empty() && l[0] == '[') section = l;
    if (l.empty() || l[0] == '[' || l.find(" = ") == std::string::npos) continue;
    if (section.rfind("[[", 0) == 0) continue;  // array-of-tables items: their keys are positional
    // Only keys whose line also appears in the defaults' text under the same section header are at default.
    const size_t sec = defaults_text.find(section + "\n");
    if (sec == std::string::npos) continue;
    const size_t next = defaults_text.find("\n[", sec + 1);
    const std::string block = defaults_text.substr(sec, next == std::string::npos ? std::string::npos : next - sec);
    if (block.find("\n" + l + "\n") == std::string::npos) continue;
    std::string without;
    for (size_t j = 0; j < all.size(); ++j)
      if (j != i) without += all[j] + "\n";
    const Config c = ssmlab::experiments::load_options_from_string<Config>(without, "old-config.toml");
    EXPECT_EQ(run_id(c), id) << "removing '" << l << "' under " << section;
    ++removed;
  }
  EXPECT_GT(removed, 50) << "the quickstart should have many keys at their defaults";
}

TEST(Identity, ResumeCheckNamesTheDifferingKeys) {
  ssmlab::test::TempDir dir;
  Config a = quickstart();
  a.train.max_steps = 1;
  a.train.eval_every = 1;
  a.task.mqar.train[0].count = 64;
  a.task.mqar.test[0].count = 16;
  a.train.tensorboard = false;
  ssmlab::experiments::train_run(a, dir.path);
  Config b = a;
  b.train.lr = 0.5;
  ssmlab::test::expect_error([&] { ssmlab::experiments::train_run(b, dir.path); },
                             {"different config", "train.lr", "0.5"});
  // A config.toml without a default-valued key (an older version's folder) is the same run: no error, no retrain.
  std::string text = ssmlab::experiments::run_config_text(a);
  const auto pos = text.find("tensorboard = false\n");
  ASSERT_NE(pos, std::string::npos);
  const auto beta = text.find("beta1 = 0.9\n");
  ASSERT_NE(beta, std::string::npos);
  text.erase(beta, std::string("beta1 = 0.9\n").size());
  ssmlab::write_file_atomic(dir.path / "config.toml", text);
  const auto out = ssmlab::experiments::train_run(a, dir.path);
  EXPECT_TRUE(out.already_done);
  EXPECT_NE(ssmlab::read_file(dir.path / "config.toml").find("beta1 = 0.9"), std::string::npos)
      << "the folder's config.toml gains the keys added since it was written";
}

}  // namespace

namespace {

TEST(Bounds, MemoryLowerBoundRefusesImpossibleRuns) {
  Config c = quickstart();
  EXPECT_NO_THROW(ssmlab::experiments::check_memory(c, "q.toml", 24e9));
  c.task.mqar.vocab_size = 1 << 30;  // a billion-token vocabulary at D = 64: ~1 TB of embedding with AdamW
  ssmlab::test::expect_error([&] { ssmlab::experiments::check_memory(c, "q.toml", 24e9); },
                             {"q.toml", "needs at least", "vocabulary 1073741824", "this machine has 24 GB"});
  c = quickstart();
  c.task.mqar.train[0].count = int64_t{1} << 36;  // 2^36 sequences of 32 tokens
  ssmlab::test::expect_error([&] { ssmlab::experiments::check_memory(c, "q.toml", 24e9); }, {"tokens"});
  EXPECT_GT(ssmlab::experiments::physical_memory_bytes(), 1e9);
}

}  // namespace

}  // namespace experiments_test_identity
