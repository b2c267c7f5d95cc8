// What the runs say together: differing keys, final metrics (results.json or the newest eval), and the sweep
// figure's choice of x key (a key zipped with a non-numeric one is not x).
#include <gtest/gtest.h>

#include "ssmlab/report/summary.h"

namespace report_test_summary {

namespace {

using namespace ssmlab::report;
using nlohmann::json;
using ssmlab::runfolder::differing_keys;
using ssmlab::runfolder::final_metrics;

RunFolder run(const std::string& name, std::map<std::string, std::string> config, double acc) {
  RunFolder r;
  r.name = name;
  config["run.out_dir"] = "runs/" + name;  // never a differing key
  std::vector<ssmlab::runfolder::ConfigEntry> entries;
  for (const auto& [k, v] : config) entries.push_back({k, v, ssmlab::runfolder::ValueKind::string});
  r.set_config(std::move(entries));
  r.results = json{{"steps", 100}, {"test_acc", acc}};
  r.status = ssmlab::runfolder::RunStatus::done;
  return r;
}

TEST(ReportSummary, ZippedKeyIsNotTheXAxis) {
  // model.mixer zipped with model.max_position_embeddings, crossed with train.lr (configs/sweeps/mqar-cpu.toml).
  const std::vector<RunFolder> runs = {
      run("a", {{"model.mixer", "mamba1"}, {"model.max_position_embeddings", "0"}, {"train.lr", "0.001"}}, 0.3),
      run("b", {{"model.mixer", "mamba1"}, {"model.max_position_embeddings", "0"}, {"train.lr", "0.01"}}, 0.9),
      run("c", {{"model.mixer", "attention"}, {"model.max_position_embeddings", "64"}, {"train.lr", "0.001"}}, 1.0),
      run("d", {{"model.mixer", "attention"}, {"model.max_position_embeddings", "64"}, {"train.lr", "0.01"}}, 0.27),
  };
  const auto keys = differing_keys(runs);
  EXPECT_EQ(keys, (std::vector<std::string>{"model.max_position_embeddings", "model.mixer", "train.lr"}));
  const auto fig = sweep_figure(runs, keys);
  ASSERT_TRUE(fig.has_value());
  EXPECT_EQ(fig->xlabel, "train.lr");
  EXPECT_TRUE(fig->logx) << "a 10x range of learning rates";
  ASSERT_EQ(fig->series.size(), 2u);
  for (const auto& s : fig->series) EXPECT_EQ(s.x, (std::vector<double>{0.001, 0.01})) << s.name;
  EXPECT_EQ(fig->series[0].name, "max_position_embeddings=0, mixer=mamba1");
  EXPECT_EQ(fig->series[0].y, (std::vector<double>{0.3, 0.9}));
}

TEST(ReportSummary, NoNumericKeyNoSweepFigure) {
  const std::vector<RunFolder> runs = {run("a", {{"model.mixer", "mamba1"}}, 0.3),
                                     run("b", {{"model.mixer", "s4d"}}, 0.5)};
  EXPECT_FALSE(sweep_figure(runs, differing_keys(runs)).has_value());
}

TEST(ReportSummary, FinalMetricsOfAnUnfinishedRunAreItsNewestEval) {
  RunFolder r;
  r.eval = {json{{"kind", "eval"}, {"step", 50}, {"epoch", 0}, {"test_acc", 0.25}},
            json{{"kind", "eval"}, {"step", 100}, {"epoch", 0}, {"test_acc", 0.5}}};
  const json m = final_metrics(r);
  EXPECT_EQ(m, (json{{"steps", 100}, {"test_acc", 0.5}}));
  RunFolder done = run("x", {}, 0.75);
  EXPECT_EQ(final_metrics(done)["test_acc"], 0.75);
}

}  // namespace

}  // namespace report_test_summary
