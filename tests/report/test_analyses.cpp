// Figures that analyses leave in several runs, combined: the same name of kind line or layers in two runs gives one
// figure with both runs' series (a colour per run, named by the run's differing config values); different names,
// other kinds or a name in one run only give none.
#include <gtest/gtest.h>

#include "report/report_test_util.h"
#include "ssmlab/report/analyses.h"
#include "ssmlab/report/io.h"
#include "ssmlab/report/report.h"
#include "ssmlab/runfolder/run_folder.h"

namespace report_test_analyses {

namespace {

using namespace ssmlab::report;
using namespace ssmlab::report::testing;

void make_run(const fs::path& dir, int d_model, bool with_figures) {
  fs::create_directories(dir / "figures");
  write_file_atomic(dir / "config.toml", "[model]\nmixer = \"mamba1\"\nd_model = " + std::to_string(d_model) + "\n");
  write_file_atomic(dir / "results.json", R"({"steps": 10, "test_acc": 0.5})");
  write_file_atomic(dir / "DONE", "");
  if (!with_figures) return;
  const double s = d_model / 32.0;
  write_file_atomic(dir / "figures/influence.csv", "distance,mamba1\n1,1\n2," + std::to_string(0.5 * s) + "\n4,0.25\n");
  write_file_atomic(dir / "figures/smoothing.csv", "layer,mixer_out,block_out\n0,0.1,0.2\n1,0.3,0.4\n");
  write_file_atomic(dir / "figures/attack.json", R"({"kind": "bars", "categories": ["first", "last"],
                                                     "series": [{"name": "success", "y": [0.9, 0.1]}]})");
  write_file_atomic(dir / ("figures/only_" + std::to_string(d_model) + ".csv"), "x,y\n1,2\n2,3\n");
}

RunFigure line(const std::string& name, std::vector<std::string> series) {
  RunFigure f{name, name + ".csv", {}};
  f.spec.kind = FigureKind::line;
  f.spec.title = name;
  for (auto& s : series) f.spec.series.push_back({s, {1, 2}, {3, 4}, {}});
  return f;
}

TEST(ReportAnalyses, SameNameInTwoRunsCombines) {
  const std::vector<std::vector<RunFigure>> figures = {
      {line("influence", {"mamba1"}), line("smoothing", {"mixer_out", "block_out"})},
      {line("influence", {"mamba1"}), line("smoothing", {"mixer_out", "block_out"}), line("other", {"y"})}};
  const auto combined = combine_run_figures({"d_model=32", "d_model=64"}, figures);
  ASSERT_EQ(combined.size(), 2u);
  EXPECT_EQ(combined[0].name, "influence");
  ASSERT_EQ(combined[0].spec.series.size(), 2u);
  EXPECT_EQ(combined[0].spec.series[0].name, "d_model=32") << "a run with one series: its label alone";
  EXPECT_EQ(combined[0].spec.series[1].name, "d_model=64");
  EXPECT_EQ(combined[0].spec.series[0].group, 0);
  EXPECT_EQ(combined[0].spec.series[1].group, 1);
  EXPECT_EQ(combined[1].name, "smoothing");
  std::vector<std::string> names;
  std::vector<int> groups;
  for (const auto& s : combined[1].spec.series) names.push_back(s.name), groups.push_back(s.group);
  EXPECT_EQ(names, (std::vector<std::string>{"d_model=32 mixer_out", "d_model=32 block_out", "d_model=64 mixer_out",
                                             "d_model=64 block_out"}));
  EXPECT_EQ(groups, (std::vector<int>{0, 0, 1, 1}));
}

TEST(ReportAnalyses, ARunKeepsItsColourWhenAnotherLacksTheFigure) {
  const std::vector<std::vector<RunFigure>> figures = {{line("other", {"y"})}, {line("influence", {"mamba1"})},
                                                       {line("influence", {"mamba1"})}};
  const auto combined = combine_run_figures({"lr=0.1", "lr=0.2", "lr=0.3"}, figures);
  ASSERT_EQ(combined.size(), 1u);
  ASSERT_EQ(combined[0].spec.series.size(), 2u);
  EXPECT_EQ(combined[0].spec.series[0].group, 1) << "run 1's colour, as in the training curves";
  EXPECT_EQ(combined[0].spec.series[1].group, 2);
}

TEST(ReportAnalyses, DifferentNamesAndOtherKindsDoNotCombine) {
  RunFigure bars = line("attack", {"success"});
  bars.spec.kind = FigureKind::bars;
  const std::vector<std::vector<RunFigure>> figures = {{line("influence", {"a"}), bars},
                                                       {line("smoothing", {"b"}), bars}};
  EXPECT_TRUE(combine_run_figures({"x", "y"}, figures).empty());
}

TEST(ReportAnalyses, ReportDrawsCombinedFiguresBeforeEachRuns) {
  const auto root = fresh_dir("analyses");
  make_run(root / "a", 32, /*with_figures=*/true);
  make_run(root / "b", 64, /*with_figures=*/true);
  make_run(root / "c", 128, /*with_figures=*/false);
  const auto summary = write_report(root, {});
  EXPECT_TRUE(summary.problems.empty()) << summary.problems.front();
  for (const char* stem : {"influence", "smoothing"})
    EXPECT_TRUE(is_png(root / "report/figures/analyses" / (std::string(stem) + ".png"))) << stem;
  EXPECT_FALSE(fs::exists(root / "report/figures/analyses/attack.png")) << "bars are not combined";
  EXPECT_FALSE(fs::exists(root / "report/figures/analyses/only_32.png")) << "a name in one run only";
  const std::string data = slurp(root / "report/figures/analyses/smoothing.dat");
  for (const char* s : {"# d_model=32 mixer_out\n", "# d_model=32 block_out\n", "# d_model=64 mixer_out\n",
                        "# d_model=64 block_out\n"})
    EXPECT_NE(data.find(s), std::string::npos) << s << " in\n" << data;
  EXPECT_NE(slurp(root / "report/figures/analyses/influence.dat").find("# d_model=64\n"), std::string::npos);
  const std::string script = slurp(root / "report/figures/analyses/smoothing.gp");
  EXPECT_NE(script.find("lc rgb '#1f77b4' dt 2"), std::string::npos) << "the first run's second series: " << script;
  EXPECT_NE(script.find("lc rgb '#ff7f0e' dt 1"), std::string::npos) << "the second run's colour: " << script;
  // Each run's own figures are still drawn, after the combined ones.
  EXPECT_TRUE(is_png(root / "report/figures/runs/a/influence.png"));
  EXPECT_TRUE(is_png(root / "report/figures/runs/b/only_64.png"));
  const std::string html = slurp(summary.html);
  const auto all = html.find("<h2>Analyses (all runs)</h2>"), each = html.find("<h2>Analysis figures</h2>");
  ASSERT_NE(all, std::string::npos);
  ASSERT_NE(each, std::string::npos);
  EXPECT_LT(all, each);
  EXPECT_LT(html.find("figures/analyses/influence.png"), each);
  fs::remove_all(root);
}

}  // namespace

}  // namespace report_test_analyses
