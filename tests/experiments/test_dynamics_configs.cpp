// The token-dynamics configs (configs/dynamics/): each loads, the pairs differ in the intended key, a tiny run of
// an eigenvalue scenario and of reordering completes with its analyses, and the cross-key rules are ConfigErrors
// naming the key.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <set>

#include <nlohmann/json.hpp>

#include "ssmlab/core/error_kinds.h"
#include "ssmlab/core/io.h"
#include "ssmlab/experiments/run.h"
#include "ssmlab/experiments/sweep.h"
#include "ssmlab/experiments/validate.h"
#include "ssmlab/runfolder/layout.h"
#include "ssmlab/tasks/seqimage.h"
#include "test_util.h"

namespace experiments_test_dynamics_configs {

namespace {

namespace fs = std::filesystem;
using ssmlab::experiments::Config;

std::string file_text(const fs::path& p) {
  std::ifstream in(p);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

fs::path dynamics(const std::string& name) { return fs::path(SSMLAB_SOURCE_DIR) / "configs/dynamics" / name; }

TEST(DynamicsConfigs, EachLoadsWithItsScenario) {
  int n = 0;
  for (const auto& entry : fs::directory_iterator(fs::path(SSMLAB_SOURCE_DIR) / "configs/dynamics")) {
    if (entry.path().extension() != ".toml") continue;
    // Sweep files (a [sweep] table) expand; the others load as one run's config.
    if (file_text(entry.path()).find("[sweep]") != std::string::npos)
      EXPECT_NO_THROW(ssmlab::experiments::load_sweep(entry.path())) << entry.path();
    else
      EXPECT_NO_THROW(ssmlab::experiments::load_config(entry.path())) << entry.path();
    ++n;
  }
  EXPECT_GE(n, 10);
  for (const std::string sc : {"none", "positive", "negative", "mixed"}) {
    const Config c = ssmlab::experiments::load_config(dynamics("mqar-" + sc + "-cpu.toml"));
    EXPECT_EQ(c.model.mixers.mamba1.eigen, sc);
    EXPECT_EQ(c.model.mixers.mamba1.reorder, "off");
    EXPECT_EQ(c.analysis.after_training, "eigen,trajectories");
  }
  for (const std::string stem : {"fmnist-%-cpu", "cifar10-%", "fmnist-%"}) {
    auto file = [&](const std::string& tag) {
      std::string s = stem;
      return dynamics(s.replace(s.find('%'), 1, tag) + ".toml");
    };
    const Config plain = ssmlab::experiments::load_config(file("mamba"));
    const Config reorder = ssmlab::experiments::load_config(file("reorder"));
    EXPECT_EQ(plain.model.mixers.mamba1.reorder, "off") << stem;
    EXPECT_EQ(reorder.model.mixers.mamba1.reorder, "first") << stem;
    EXPECT_EQ(plain.task.name, "seqimage") << stem;
    // The pair differs only in the reorder key (and the run name).
    Config same = reorder;
    same.model.mixers.mamba1.reorder = "off";
    same.run.name = plain.run.name;
    EXPECT_EQ(ssmlab::experiments::run_config_text(same), ssmlab::experiments::run_config_text(plain)) << stem;
  }
}

Config tiny(Config c) {
  c.train.max_steps = 2;
  c.train.eval_every = 0;
  c.train.epochs = 1;
  c.train.tensorboard = false;
  c.train.threads = 1;
  return c;
}

// A swept value as the sweep prints it ("none" with its TOML quotes, 1 without).
std::string unquote(std::string v) {
  if (v.size() >= 2 && v.front() == '"' && v.back() == '"') v = v.substr(1, v.size() - 2);
  return v;
}

// The comparison sweeps: every scenario (or reorder setting) under each of two seeds, everything else the same.
TEST(DynamicsConfigs, ComparisonSweepsVaryOnlyTheScenarioAndTheSeed) {
  using ssmlab::experiments::load_sweep;
  struct Case {
    std::string file, key;
    std::vector<std::string> values;
  };
  for (const Case& c : {Case{"lm-eigen.toml", "model.mixers.mamba1.eigen", {"none", "positive", "negative", "mixed"}},
                        Case{"reorder-cifar10.toml", "model.mixers.mamba1.reorder", {"off", "first"}},
                        Case{"reorder-fmnist.toml", "model.mixers.mamba1.reorder", {"off", "first"}}}) {
    const auto sweep = load_sweep(dynamics(c.file));
    ASSERT_EQ(sweep.runs.size(), c.values.size() * 2) << c.file;
    std::set<std::pair<std::string, std::string>> seen;
    for (const auto& r : sweep.runs) {
      std::string value, seed;
      for (const auto& [k, v] : r.overrides) {
        if (k == c.key) value = unquote(v);
        else if (k == "run.seed") seed = v;
        else ADD_FAILURE() << c.file << ": unexpected swept key " << k;
      }
      seen.insert({value, seed});
      // Apart from the swept keys, every run's config is the first run's.
      Config same = r.config;
      same.model.mixers.mamba1.eigen = sweep.runs[0].config.model.mixers.mamba1.eigen;
      same.model.mixers.mamba1.reorder = sweep.runs[0].config.model.mixers.mamba1.reorder;
      same.run.seed = sweep.runs[0].config.run.seed;
      EXPECT_EQ(ssmlab::experiments::run_config_text(same), ssmlab::experiments::run_config_text(sweep.runs[0].config))
          << c.file << " " << r.label();
    }
    for (const auto& v : c.values)
      for (const std::string seed : {"0", "1"}) EXPECT_TRUE(seen.count({v, seed})) << c.file << " " << v << " " << seed;
  }
  const auto lm = load_sweep(dynamics("lm-eigen.toml")).runs[0].config;
  EXPECT_EQ(lm.task.name, "text");
  EXPECT_EQ(lm.model.n_layers, 12);
  EXPECT_EQ(lm.train.precision, "bf16");
  EXPECT_EQ(load_sweep(dynamics("reorder-cifar10.toml")).runs[0].config.task.seqimage.dataset, "cifar10");
  EXPECT_EQ(load_sweep(dynamics("reorder-fmnist.toml")).runs[0].config.task.seqimage.dataset, "fashion_mnist");
}

// The CPU twin of the LM sweep trains, with its eigen analysis, in each scenario's sign (on a small text written
// here, with the byte tokenizer, so the test needs no data files).
TEST(DynamicsConfigs, TinyTextLmRunPerScenario) {
  ssmlab::test::TempDir dir;
  fs::create_directories(dir.path / "corpus");
  for (int d = 0; d < 4; ++d) {
    std::ofstream doc(dir.path / "corpus" / ("doc" + std::to_string(d) + ".txt"));
    for (int i = 0; i < 60; ++i) doc << "The state of document " << d << " line " << i << " holds a few words.\n";
  }
  for (const std::string sc : {"positive", "negative"}) {
    Config c = tiny(ssmlab::experiments::load_config(dynamics("lm-eigen-cpu.toml")));
    c.model.mixers.mamba1.eigen = sc;
    c.model.n_layers = 2;
    c.model.d_model = 16;
    c.task.text.corpus.kind = "files";
    c.task.text.corpus.path = (dir.path / "corpus").string();
    c.task.text.tokenizer.kind = "byte";
    c.task.text.seq_len = 16;
    c.task.text.train_count = 16;
    c.task.text.test_count = 4;
    c.task.text.validation_fraction = 0.25;
    c.task.text.cache_dir = (dir.path / "tokens").string();
    const auto o = ssmlab::experiments::train_run(c, dir.path / ("run-" + sc));
    ASSERT_TRUE(fs::exists(ssmlab::runfolder::done_marker(o.dir))) << sc;
    std::ifstream in(o.dir / "analysis" / "eigen.json");
    const auto eig = nlohmann::json::parse(in)["result"];
    ASSERT_EQ(eig["layers"].size(), 2u) << eig.dump();
    for (const auto& layer : eig["layers"]) {
      if (sc == "positive") EXPECT_GT(layer["min"].get<double>(), 0.0) << layer.dump();
      else EXPECT_LT(layer["max"].get<double>(), 0.0) << layer.dump();
    }
  }
}


TEST(DynamicsConfigs, TinyScenarioRunWritesEigenAndTrajectories) {
  ssmlab::test::TempDir dir;
  Config c = tiny(ssmlab::experiments::load_config(dynamics("mqar-negative-cpu.toml")));
  c.task.mqar.train[0].count = 128;
  c.task.mqar.test[0].count = 16;
  c.analysis.trajectories.samples = 4;
  const auto out = ssmlab::experiments::train_run(c, dir.path);
  EXPECT_EQ(out.analyses, (std::vector<std::string>{"eigen", "trajectories"}));
  EXPECT_TRUE(fs::exists(ssmlab::runfolder::results_file(dir.path)));
  const auto eigen = nlohmann::json::parse(ssmlab::read_file(ssmlab::runfolder::analysis_file(dir.path, "eigen")));
  ASSERT_EQ(eigen["result"]["layers"].size(), 4u);
  for (const auto& l : eigen["result"]["layers"]) EXPECT_EQ(l["fraction_positive"].get<double>(), 0.0);
  EXPECT_TRUE(fs::exists(ssmlab::runfolder::analysis_file(dir.path, "trajectories")));
  EXPECT_TRUE(fs::exists(dir.path / "figures" / "trajectories_norm.csv"));
}

TEST(DynamicsConfigs, TinyReorderRunOnFashionMnist) {
  Config c = tiny(ssmlab::experiments::load_config(dynamics("fmnist-reorder-cpu.toml")));
  const std::string data = ssmlab::tasks::seqimage_path(c.task.seqimage);
  if (!fs::exists(data)) GTEST_SKIP() << "no Fashion-MNIST at " << data;
  ssmlab::test::TempDir dir;
  c.task.seqimage.train[0].count = 64;
  c.task.seqimage.test[0].count = 32;
  c.analysis.trajectories.samples = 4;
  const auto out = ssmlab::experiments::train_run(c, dir.path);
  EXPECT_EQ(out.analyses, (std::vector<std::string>{"eigen", "trajectories"}));
  EXPECT_TRUE(fs::exists(ssmlab::runfolder::results_file(dir.path)));
}

TEST(DynamicsConfigs, CrossKeyRulesAreConfigErrorsNamingTheKey) {
  auto error_of = [](const Config& c) -> std::string {
    try {
      ssmlab::experiments::validate_config(c, "test.toml");
    } catch (const ssmlab::ConfigError& e) {
      return e.what();
    }
    return "";
  };
  Config c = ssmlab::experiments::load_config(dynamics("mqar-none-cpu.toml"));
  EXPECT_EQ(error_of(c), "");
  Config r = c;
  r.model.mixers.mamba1.reorder = "first";  // an LM task: the sort would leak the future
  std::string e = error_of(r);
  EXPECT_NE(e.find("model.mixers.mamba1.reorder"), std::string::npos) << e;
  EXPECT_NE(e.find("mqar"), std::string::npos) << e;
  Config m = c;
  m.model.mixers.mamba1.eigen = "mixed";
  m.model.mixers.mamba1.d_state = 1;
  e = error_of(m);
  EXPECT_NE(e.find("model.mixers.mamba1.eigen"), std::string::npos) << e;
  Config big = c;
  big.model.mixers.mamba1.eigen = "positive";
  big.model.mixers.mamba1.d_state = 200;  // > E = 128
  e = error_of(big);
  EXPECT_NE(e.find("model.mixers.mamba1.eigen"), std::string::npos) << e;
  EXPECT_NE(e.find("128"), std::string::npos) << e;
}

}  // namespace

}  // namespace experiments_test_dynamics_configs
