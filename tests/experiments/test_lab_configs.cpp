// The recency lab's shipped configs (configs/recency/, configs/needle/; issue 17): every sweep expands, the CPU
// attack sweep trains the same four models as the paper-size one, and each lab sweep runs to completion on
// CPU-sized data (counts and widths cut down here, every swept model kept) with its analyses written, the paper's
// values beside ours.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "ssmlab/experiments/run.h"
#include "ssmlab/experiments/sweep.h"
#include "ssmlab/runfolder/layout.h"
#include "test_util.h"

namespace experiments_test_lab_configs {

namespace {

namespace fs = std::filesystem;
using namespace ssmlab::experiments;

fs::path lab(const std::string& rel) { return fs::path(SSMLAB_SOURCE_DIR) / "configs" / rel; }

// An analysis' summary: analysis/NAME.json's "result".
nlohmann::json read_json(const fs::path& p) {
  std::ifstream in(p);
  return nlohmann::json::parse(in)["result"];
}

// The model.* assignments of each run, in order.
std::vector<std::string> model_labels(const Sweep& s) {
  std::vector<std::string> out;
  for (const auto& r : s.runs) {
    std::string l;
    for (const auto& [k, v] : r.overrides)
      if (k.starts_with("model.")) l += k + "=" + v + " ";
    out.push_back(l);
  }
  return out;
}

TEST(LabConfigs, AttackCpuSweepsThePapersFourModels) {
  const Sweep gpu = load_sweep(lab("recency/attack.toml")), cpu = load_sweep(lab("recency/attack-cpu.toml"));
  ASSERT_EQ(gpu.runs.size(), 4u);
  EXPECT_EQ(model_labels(gpu), model_labels(cpu));
  EXPECT_EQ(gpu.runs[0].config.train.epochs, 100);
  EXPECT_EQ(gpu.runs[0].config.task.seqimage.downsample, 1);
  EXPECT_EQ(load_sweep(lab("recency/mqar-depth.toml")).runs.size(), 12u);  // 6 models x depths 2, 4
  EXPECT_EQ(load_sweep(lab("recency/depth-scaling.toml")).runs.size(), 15u);  // 3 models x 5 depths
  EXPECT_EQ(load_sweep(lab("recency/needle.toml")).runs.size(), 3u);
}

// Runs every run of `sweep` (already cut down by the caller) in `dir` and returns the run folders.
std::vector<fs::path> run_all(const Sweep& sweep, const fs::path& dir, const std::function<void(Config&)>& shrink) {
  std::vector<fs::path> out;
  for (const auto& r : sweep.runs) {
    Config cfg = r.config;
    shrink(cfg);
    cfg.train.device = "cpu";
    cfg.train.threads = 1;
    const RunOutcome o = train_run(cfg, dir / r.folder);
    EXPECT_TRUE(fs::exists(ssmlab::runfolder::done_marker(o.dir))) << r.label();
    out.push_back(o.dir);
  }
  return out;
}

TEST(LabConfigs, AttackCpuRunsToCompletionWithItsAnalyses) {
  ssmlab::test::TempDir tmp;
  // Fashion-MNIST from Debian's dataset-fashion-mnist (scripts/setup.sh installs it): 7 x 7 after pooling.
  const Sweep s = load_sweep(lab("recency/attack-cpu.toml"),
                             {"task.seqimage.dataset=\"fashion_mnist\"", "task.seqimage.path=\"\"", "train.epochs=1",
                              "analysis.attack.target_labels=\"0,7\"", "analysis.decay_diversity.samples=8"});
  const auto dirs = run_all(s, tmp.path, [](Config& c) {
    c.task.seqimage.train[0].count = 128;
    c.task.seqimage.test[0].count = 64;
  });
  ASSERT_EQ(dirs.size(), 4u);
  for (const auto& d : dirs) {
    const auto attack = read_json(d / "analysis" / "attack.json");
    EXPECT_EQ(attack["image"]["row_width"], 7);
    EXPECT_EQ(attack["noise"].size(), 4u);        // 8 and 24 pixels x leading, trailing
    EXPECT_EQ(attack["target"].size(), 2u * 3 * 2);  // 2 row counts x 3 regions x 2 labels
    EXPECT_FALSE(attack["paper"].empty());
    EXPECT_TRUE(fs::exists(d / "analysis" / "decay_diversity.json"));
    EXPECT_TRUE(fs::exists(d / "analysis" / "smoothing.json"));
  }
  // attention (the 4th) has no decay; the recurrent ones have a CDF.
  EXPECT_FALSE(read_json(dirs[3] / "analysis" / "decay_diversity.json")["applicable"].get<bool>());
  EXPECT_TRUE(read_json(dirs[0] / "analysis" / "decay_diversity.json")["applicable"].get<bool>());
}

TEST(LabConfigs, NeedleAndMqarSweepsRunToCompletion) {
  ssmlab::test::TempDir tmp;
  const Sweep needle = load_sweep(lab("recency/needle-cpu.toml"),
                                  {"train.epochs=1", "analysis.needle_grid.count=4",
                                   "analysis.needle_grid.lengths=\"64,128\""});
  const auto nd = run_all(needle, tmp.path / "needle", [](Config& c) {
    c.task.needle.train = {{64, 64}};
    c.task.needle.test = {{64, 2}};
  });
  for (const auto& d : nd) {
    const auto g = read_json(d / "analysis" / "needle_grid.json");
    EXPECT_EQ(g["accuracy"].size(), 10u);  // depth bins
    EXPECT_EQ(g["accuracy"][0].size(), 2u);  // lengths
  }
  // Multi-depth MQAR: every model at both depths, narrow and on one tiny segment.
  const Sweep mqar = load_sweep(lab("recency/mqar-depth.toml"),
                                {"train.epochs=1", "model.d_model=16", "task.mqar.vocab_size=2048",
                                 "analysis.decay_diversity.samples=4", "analysis.smoothing.samples=4"});
  run_all(mqar, tmp.path / "mqar", [](Config& c) {
    c.task.mqar.train = {{32, 4, 64}};
    c.task.mqar.test = {{32, 4, 16}};
  });
}

}  // namespace

}  // namespace experiments_test_lab_configs
