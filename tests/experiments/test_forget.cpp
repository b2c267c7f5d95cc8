// `ssmlab forget` (experiments/forget.h, spec §3.5) on constructed run folders: T_forget per state size is the
// smallest training length that learned to forget, sizes that never forgot are reported and left out of the fit,
// a set of points on a line is fitted exactly (R^2 = 1) and noisy points give the hand-computed least squares;
// missing or malformed loss_position.json is a DataError naming the file; the CLI prints the table and writes
// the JSON and the figure spec.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <string>

#include <nlohmann/json.hpp>

#include "ssmlab/core/error_kinds.h"
#include "ssmlab/experiments/forget.h"
#include "test_util.h"
#include "text/text_test_util.h"
#include "tolerances.h"

namespace experiments_test_forget {

namespace {

namespace fs = std::filesystem;
using namespace ssmlab;
using namespace ssmlab::experiments;
using nlohmann::json;

// A run folder (config.toml makes it one) with analysis/loss_position.json holding `summary`, wrapped as
// experiments::analyze writes it ("result") unless `top_level`.
fs::path make_run(const fs::path& root, const std::string& name, const json& summary, bool top_level = false) {
  const fs::path dir = root / name;
  test::write_text(dir / "config.toml", "[run]\nname = \"" + name + "\"\n");
  const json file = top_level ? summary : json{{"analysis", "loss_position"}, {"result", summary}};
  test::write_text(dir / "analysis/loss_position.json", file.dump(2));
  return dir;
}

json summary(int64_t t_train, int64_t size, json ssm, bool learned) {
  return {{"t_train", t_train}, {"state_size", size}, {"state_size_ssm", ssm}, {"learned_to_forget", learned},
          {"criterion", "max loss past 4 T_train < 1.5 x loss at T_train"}};
}

// Sizes 1000, 2000, 4000 (SSM part) learn to forget from T = 3 N_S + 100 on; size 8000 never does.
void write_sweep(const fs::path& root) {
  int i = 0;
  for (int64_t n : {1000, 2000, 4000})
    for (int64_t t : {1100, 3100, 6100, 12100}) {
      const bool learned = t >= 3 * n + 100;
      const bool top_level = i % 2 == 0;  // both file shapes
      make_run(root, "run" + std::to_string(i), summary(t, n + 77, n, learned), top_level);
      ++i;
    }
  for (int64_t t : {1100, 3100, 6100, 12100}) make_run(root, "run" + std::to_string(i++), summary(t, 8077, 8000, false));
}

TEST(Forget, ThresholdPerSizeAndAnExactLinearFit) {
  test::TempDir dir;
  write_sweep(dir.path);
  const ForgetTable t = collect_forget(dir.path);
  EXPECT_EQ(t.size_field, "state_size_ssm");
  ASSERT_EQ(t.groups.size(), 4u);
  EXPECT_EQ(t.runs.size(), 16u);
  EXPECT_EQ(t.groups[0].state_size, 1000);
  EXPECT_EQ(t.groups[0].t_forget, 3100);
  EXPECT_EQ(t.groups[1].t_forget, 6100);
  EXPECT_EQ(t.groups[2].t_forget, 12100);
  EXPECT_FALSE(t.groups[3].t_forget.has_value());  // never forgot: "> 12100", not in the fit
  EXPECT_EQ(t.groups[3].t_train.back(), 12100);
  // (1000, 3100), (2000, 6100), (4000, 12100): T = 3 N + 100 exactly.
  ASSERT_TRUE(t.fit.has_value());
  EXPECT_EQ(t.fit->points, 3);
  EXPECT_NEAR(t.fit->slope, 3.0, 1e-12);
  EXPECT_NEAR(t.fit->intercept, 100.0, 1e-9);
  ASSERT_TRUE(t.fit->r2.has_value());
  EXPECT_NEAR(*t.fit->r2, 1.0, 1e-12);
  // The paper's line at these tiny sizes predicts negative lengths: not drawn, and the reason is given.
  EXPECT_FALSE(t.paper_line);
  EXPECT_NE(t.paper_line_why.find("<= 0"), std::string::npos) << t.paper_line_why;
  const std::string table = format_forget(t);
  EXPECT_NE(table.find("> 12100"), std::string::npos) << table;
  EXPECT_NE(table.find("T_forget = 3 * N_S + 100"), std::string::npos) << table;
  const json j = forget_json(t);
  EXPECT_EQ(j["groups"][3]["t_forget"], nullptr);
  EXPECT_EQ(j["groups"][3]["t_forget_text"], "> 12100");
  EXPECT_EQ(j["paper"][0]["ours"], "positive");
  EXPECT_EQ(j["paper"][1]["ours"], 1.0);
}

TEST(Forget, LeastSquaresOnNoisyPointsIsTheHandComputedLine) {
  // x = 1, 2, 3, 4; y = 2, 3, 5, 6: mean x 2.5, mean y 4, Sxx 5, Sxy 3 + 0.5 + 0.5 + 3 = 7 -> slope 1.4,
  // intercept 4 - 1.4 * 2.5 = 0.5; residuals 0.1, -0.3, 0.3, -0.1 -> SS_res 0.2, SS_tot 10, R^2 0.98.
  const auto f = fit_line({1, 2, 3, 4}, {2, 3, 5, 6});
  ASSERT_TRUE(f.has_value());
  EXPECT_NEAR(f->slope, 1.4, 1e-12);
  EXPECT_NEAR(f->intercept, 0.5, 1e-12);
  EXPECT_NEAR(*f->r2, 0.98, 1e-12);
  EXPECT_FALSE(fit_line({2, 2}, {1, 5}).has_value());  // one distinct x
  const auto flat = fit_line({1, 2, 3}, {4, 4, 4});
  ASSERT_TRUE(flat.has_value());
  EXPECT_NEAR(flat->slope, 0.0, 1e-12);
  EXPECT_FALSE(flat->r2.has_value());  // no variance to explain
}

TEST(Forget, FallsBackToTheTotalStateSizeAndNeedsEveryRunAtALength) {
  test::TempDir dir;
  // No SSM part in one run -> every run grouped by state_size. Size 500: at 2000 one of two seeds failed, so the
  // threshold is 4000.
  make_run(dir.path, "a", summary(2000, 500, nullptr, true));
  make_run(dir.path, "b", summary(2000, 500, 400, false));
  make_run(dir.path, "c", summary(4000, 500, 400, true));
  make_run(dir.path, "d", summary(1000, 900, 700, true));
  const ForgetTable t = collect_forget(dir.path);
  EXPECT_EQ(t.size_field, "state_size");
  ASSERT_EQ(t.groups.size(), 2u);
  EXPECT_EQ(t.groups[0].state_size, 500);
  EXPECT_EQ(t.groups[0].runs, (std::vector<int64_t>{2, 1}));
  EXPECT_EQ(t.groups[0].t_forget, 4000);
  EXPECT_EQ(t.groups[1].t_forget, 1000);
  ASSERT_TRUE(t.fit.has_value());
  EXPECT_NEAR(t.fit->slope, -7.5, 1e-12);  // (500, 4000), (900, 1000)
  EXPECT_FALSE(t.paper_line);
  EXPECT_NE(t.paper_line_why.find("state_size_ssm"), std::string::npos);
  const json j = forget_json(t);
  EXPECT_EQ(j["paper"][0]["ours"], "negative");
}

TEST(Forget, PaperLineIsDrawnOnlyWhereItIsPositive) {
  // 5.172 N_S / 1e6 - 4.469 > 0 from N_S = 864,076 on: sizes 1M and 2M qualify.
  EXPECT_NEAR(paper_t_forget_tokens(1e6), 703.0, 1e-9);
  EXPECT_LT(paper_t_forget_tokens(8e5), 0.0);
  ForgetRun a{"a", 4096, 1000100, 1000000, true, "c"}, b{"b", 8192, 2000100, 2000000, true, "c"};
  const ForgetTable t = forget_table({a, b});
  EXPECT_TRUE(t.paper_line);
  test::TempDir dir;
  write_forget(t, dir.path);
  const std::string csv = test::read_text(dir.path / "figures/forget_threshold.csv");
  EXPECT_NE(csv.find("paper"), std::string::npos) << csv;
  EXPECT_NE(csv.find("\n1000000,4096,NaN,"), std::string::npos) << csv;
}

TEST(Forget, MissingOrMalformedFilesAreDataErrorsNamingTheFile) {
  test::TempDir dir;
  make_run(dir.path, "good", summary(1000, 10, 8, true));
  test::write_text(dir.path / "bare/config.toml", "[run]\n");
  const std::string bare = (dir.path / "bare/analysis/loss_position.json").string();
  test::expect_data_error([&] { collect_forget(dir.path); }, {bare, "missing", "ssmlab analyze loss_position"});
  std::vector<fs::path> skipped;
  const ForgetTable t = collect_forget(dir.path, /*skip_missing=*/true, &skipped);
  EXPECT_EQ(t.runs.size(), 1u);
  ASSERT_EQ(skipped.size(), 1u);
  EXPECT_EQ(skipped[0], dir.path / "bare");

  const fs::path bad = dir.path / "bare/analysis/loss_position.json";
  test::write_text(bad, "{\"t_train\": 12,");
  test::expect_data_error([&] { collect_forget(dir.path); }, {bad.string(), "not valid JSON"});
  test::write_text(bad, "[1, 2]");
  test::expect_data_error([&] { collect_forget(dir.path); }, {bad.string(), "JSON object"});
  test::write_text(bad, json{{"result", {{"state_size", 4}}}}.dump());
  test::expect_data_error([&] { collect_forget(dir.path); }, {bad.string(), "'t_train'"});
  json wrong = summary(1000, 10, 8, true);
  wrong["t_train"] = "1K";
  test::write_text(bad, wrong.dump());
  test::expect_data_error([&] { collect_forget(dir.path); }, {bad.string(), "'t_train'", "\"1K\""});
  wrong = summary(1000, 10, 8, true);
  wrong["learned_to_forget"] = 1;
  test::write_text(bad, wrong.dump());
  test::expect_data_error([&] { collect_forget(dir.path); }, {bad.string(), "'learned_to_forget'"});
  wrong = summary(1000, 10, 8, true);
  wrong.erase("criterion");
  test::write_text(bad, wrong.dump());
  test::expect_data_error([&] { collect_forget(dir.path); }, {bad.string(), "'criterion'", "missing"});

  fs::create_directories(dir.path / "empty");
  test::expect_data_error([&] { collect_forget(dir.path / "empty"); }, {"no run folder"});
  fs::remove(bad);
  test::expect_data_error([&] { collect_forget(dir.path / "bare", /*skip_missing=*/true); }, {"no run"});
}

TEST(Forget, CommandPrintsTheTableAndWritesTheFiles) {
  test::TempDir dir;
  write_sweep(dir.path);
  const std::string cmd = std::string(SSMLAB_BINARY_DIR) + "/ssmlab forget " + dir.path.string() + " --no-draw 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  ASSERT_NE(p, nullptr);
  std::string out;
  char buf[512];
  while (fgets(buf, sizeof buf, p)) out += buf;
  EXPECT_EQ(pclose(p), 0) << out;
  EXPECT_NE(out.find("> 12100"), std::string::npos) << out;
  EXPECT_NE(out.find("R^2 1"), std::string::npos) << out;
  const json j = json::parse(test::read_text(dir.path / "forget/forget.json"));
  EXPECT_EQ(j["groups"].size(), 4u);
  EXPECT_TRUE(fs::exists(dir.path / "forget/figures/forget_threshold.json"));
  // A second call does not mistake its own output folder for a run.
  p = popen(cmd.c_str(), "r");
  out.clear();
  while (fgets(buf, sizeof buf, p)) out += buf;
  EXPECT_EQ(pclose(p), 0) << out;
}

}  // namespace

}  // namespace experiments_test_forget
