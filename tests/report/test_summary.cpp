// What the runs say together: differing keys, final metrics (results.json or the newest eval), and the sweep
// figure's choice of x key (a key zipped with a non-numeric one is not x).
#include <gtest/gtest.h>

#include <cmath>
#include <set>

#include "report/report_test_util.h"
#include "ssmlab/report/gnuplot.h"
#include "ssmlab/report/io.h"
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
  // A line per mixer, named by the mixer alone (max_position_embeddings is zipped with it: it tells nothing more).
  EXPECT_EQ(fig->series[0].name, "mixer=mamba1");
  EXPECT_EQ(fig->series[1].name, "mixer=attention");
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

std::vector<std::string> names(const std::vector<RunFolder>& runs) {
  std::vector<std::string> out;
  for (const auto& r : runs) out.push_back(r.name);
  return out;
}

TEST(ReportSummary, ShortKeyNamesAreTheShortestUniqueSuffixes) {
  EXPECT_EQ(short_key_names({"model.mixers.mamba1.d_state", "model.mixers.h3.d_state", "train.lr", "model.d_model"}),
            (std::vector<std::string>{"mamba1.d_state", "h3.d_state", "lr", "d_model"}));
  EXPECT_EQ(short_key_names({"model.mixers.mamba1.d_state", "train.lr"}), (std::vector<std::string>{"d_state", "lr"}));
  // A key that is a suffix of another keeps its full name; a key without dots is itself.
  EXPECT_EQ(short_key_names({"a.lr", "b.a.lr", "seed"}), (std::vector<std::string>{"a.lr", "b.a.lr", "seed"}));
}

TEST(ReportSummary, LegendsKeepOnlyTheKeysThatTellRunsApart) {
  // configs/sweeps/mqar-cpu.toml: mixer zipped with max_position_embeddings, crossed with lr; the seed is shared.
  std::vector<RunFolder> runs;
  for (const char* mixer : {"mamba1", "attention"})
    for (const char* lr : {"0.001", "0.01"})
      runs.push_back(run(std::string(mixer) + lr, {{"model.mixer", mixer}, {"train.lr", lr}, {"run.seed", "0"},
                                                   {"model.max_position_embeddings", mixer[0] == 'm' ? "0" : "64"}},
                         0.5));
  const auto keys = differing_keys(runs);
  ASSERT_EQ(keys, (std::vector<std::string>{"model.max_position_embeddings", "model.mixer", "train.lr"}));
  const auto legend = label_keys(runs, keys);
  EXPECT_EQ(legend, (std::vector<std::string>{"model.mixer", "train.lr"}));
  EXPECT_EQ(run_label(runs[1], legend), "mixer=mamba1, lr=0.01");
  // Each run's label differs from the others.
  std::set<std::string> labels;
  for (const auto& r : runs) labels.insert(run_label(r, legend));
  EXPECT_EQ(labels.size(), runs.size());

  // Runs that even all keys cannot tell apart keep all keys (run_labels then falls back to folder names).
  std::vector<RunFolder> twins = {run("x", {{"train.lr", "0.1"}, {"model.mixer", "h3"}}, 0.1),
                                  run("y", {{"train.lr", "0.1"}, {"model.mixer", "h3"}}, 0.2),
                                  run("z", {{"train.lr", "0.2"}, {"model.mixer", "h3"}}, 0.2)};
  EXPECT_EQ(label_keys(twins, {"train.lr", "model.mixer"}), (std::vector<std::string>{"train.lr", "model.mixer"}));
  std::vector<const RunFolder*> ptrs;
  for (const auto& r : twins) ptrs.push_back(&r);
  EXPECT_EQ(run_labels(ptrs, {"train.lr"}), (std::vector<std::string>{"x", "y", "z"}));
}

TEST(ReportSummary, RowsFollowTheSweptValuesNotTheFolderNames) {
  // Folder names are hashes; n_layers is numeric (10 after 2, not before), the mixer keeps the sweep's order.
  auto r = [](const std::string& name, const char* layers, const char* mixer, size_t index) {
    RunFolder f = run(name, {{"model.n_layers", layers}, {"model.mixer", mixer}}, 0.5);
    f.sweep_index = index;
    return f;
  };
  std::vector<RunFolder> runs = {r("d4", "10", "mamba1", 3), r("a1", "2", "mamba1", 1), r("c3", "10", "attention", 2),
                                 r("b2", "2", "attention", 0), r("e5", "2", "h3", 4)};
  sort_runs(runs, {"model.n_layers", "model.mixer"});
  EXPECT_EQ(names(runs), (std::vector<std::string>{"b2", "a1", "e5", "c3", "d4"}));
  sort_runs(runs, {"model.mixer", "model.n_layers"});
  EXPECT_EQ(names(runs), (std::vector<std::string>{"b2", "c3", "a1", "d4", "e5"}));
  // Sorting again gives the same order (stable): colours stay with their runs.
  auto again = runs;
  sort_runs(again, {"model.mixer", "model.n_layers"});
  EXPECT_EQ(names(again), names(runs));

  // Learning rates in numeric order, whatever their text; without a sweep, names alphabetically.
  std::vector<RunFolder> lrs = {run("q", {{"train.lr", "0.01"}}, 0.1), run("p", {{"train.lr", "1e-4"}}, 0.1),
                                run("o", {{"train.lr", "0.001"}}, 0.1), run("n", {{"train.lr", "0.1"}}, 0.1)};
  sort_runs(lrs, {"train.lr"});
  EXPECT_EQ(names(lrs), (std::vector<std::string>{"p", "o", "q", "n"}));
  std::vector<RunFolder> mixers = {run("2", {{"model.mixer", "s4d"}}, 0.1), run("1", {{"model.mixer", "h3"}}, 0.1),
                                   run("3", {{"model.mixer", "attention"}}, 0.1)};
  sort_runs(mixers, {"model.mixer"});
  EXPECT_EQ(names(mixers), (std::vector<std::string>{"3", "1", "2"}));
}

TEST(ReportSummary, SweepKeyOrderComesFromTheManifest) {
  using namespace ssmlab::report::testing;
  const auto root = fresh_dir("key_order");
  write_file_atomic(root / "sweep.json", R"({"keys": ["model.n_layers", "model.mixer", "train.lr"], "runs": []})");
  RunFolder a = run("a", {{"model.n_layers", "2"}, {"model.mixer", "h3"}, {"train.lr", "0.1"}}, 0.5);
  a.dir = root / "a";
  a.sweep_index = 0;
  const std::vector<RunFolder> runs = {a};
  // Alphabetical in, the sweep's order out; a differing key the sweep does not list comes last.
  EXPECT_EQ(sweep_key_order(runs, {"model.d_model", "model.mixer", "model.n_layers", "train.lr"}),
            (std::vector<std::string>{"model.n_layers", "model.mixer", "train.lr", "model.d_model"}));
  // A key the sweep lists but that does not differ is not added.
  EXPECT_EQ(sweep_key_order(runs, {"train.lr"}), (std::vector<std::string>{"train.lr"}));
  fs::remove_all(root);
}

TEST(ReportSummary, ARunHasOneColourInEveryFigure) {
  // Run 1 has no evaluation: the test accuracy figure has runs 0 and 2, which keep their colours (groups) 0 and 2.
  std::vector<RunFolder> runs = {run("a", {{"train.lr", "0.001"}}, 0.2), run("b", {{"train.lr", "0.01"}}, 0.4),
                                 run("c", {{"train.lr", "0.1"}}, 0.8)};
  for (size_t i = 0; i < runs.size(); ++i) {
    for (int s = 1; s <= 3; ++s) {
      runs[i].train.push_back(json{{"kind", "train"}, {"step", s * 10}, {"train_loss", 1.0 / (s + i)}});
      if (i != 1) runs[i].eval.push_back(json{{"kind", "eval"}, {"step", s * 10}, {"test_acc", 0.1 * s}});
    }
  }
  const std::vector<std::string> keys = {"train.lr"};
  const auto loss = curve_figure(runs, keys, "train_loss", "train", "loss", "loss", true);
  const auto acc = curve_figure(runs, keys, "test_acc", "eval", "acc", "acc", false);
  const auto sweep = sweep_figure(runs, keys);
  ASSERT_TRUE(loss && acc && sweep);
  ASSERT_EQ(loss->series.size(), 3u);
  ASSERT_EQ(acc->series.size(), 2u);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(loss->series[i].group, i) << loss->series[i].name;
  EXPECT_EQ(acc->series[0].group, 0);
  EXPECT_EQ(acc->series[1].group, 2) << "run c keeps its colour when run b has no line";
  EXPECT_EQ(acc->series[1].name, loss->series[2].name);
  // The sweep figure: one line, each point in its run's colour.
  ASSERT_EQ(sweep->series.size(), 1u);
  EXPECT_EQ(sweep->series[0].point_groups, (std::vector<int>{0, 1, 2}));

  // group_color: twenty different colours, then again; the scripts draw each run's line in its colour.
  std::set<std::string> colours;
  for (int g = 0; g < 20; ++g) colours.insert(group_color(g));
  EXPECT_EQ(colours.size(), 20u);
  EXPECT_EQ(group_color(20), group_color(0));
  const std::string loss_gp = gnuplot_script(*loss, "loss", "loss.dat"), acc_gp = gnuplot_script(*acc, "acc", "acc.dat");
  auto plot_line = [](const std::string& gp, int index) {  // the plot clause of block `index`
    const auto at = gp.find("index " + std::to_string(index) + " using 1:2 with ");
    return at == std::string::npos ? std::string() : gp.substr(at, gp.find('\n', at) - at);
  };
  EXPECT_NE(plot_line(loss_gp, 2).find("lc rgb '" + group_color(2) + "'"), std::string::npos) << loss_gp;
  EXPECT_NE(plot_line(acc_gp, 1).find("lc rgb '" + group_color(2) + "'"), std::string::npos) << acc_gp;
  EXPECT_EQ(acc_gp.find("lc rgb '" + group_color(1) + "' dt"), std::string::npos) << "no other run takes b's colour";
}

}  // namespace

}  // namespace report_test_summary
