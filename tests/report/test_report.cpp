// `ssmlab report` on synthetic run folders: a sweep of three runs (one unfinished, with a torn last metrics
// line) with analysis figures left as specs and CSVs, and a single run. The page references only files that
// exist, every PNG and SVG is valid, the table has the runs and the differing config keys, a bad spec is listed
// as a problem, and a missing gnuplot stops the report before anything is written.
#include <gtest/gtest.h>

#include <cmath>
#include <set>

#include "report/report_test_util.h"
#include "ssmlab/report/io.h"
#include "ssmlab/report/report.h"
#include "ssmlab/runfolder/run_folder.h"

namespace report_test_report {

namespace {

using namespace ssmlab::report;
using namespace ssmlab::report::testing;
using nlohmann::json;
using ssmlab::runfolder::find_run_folders;
using ssmlab::runfolder::read_run_folder;
using ssmlab::runfolder::RunFolderError;

std::string config_text(int d_model, double lr) {
  return "[run]\nname = \"sweep\"\nseed = 0\nout_dir = \"runs\"\n\n[model]\nmixer = \"mamba1\"\nd_model = " +
         std::to_string(d_model) + "\nn_layers = 2\n\n[[task.mqar.test]]\nseq_len = 32\ncount = 100\n\n[[task.mqar.test]]\n"
         "seq_len = 64\ncount = 100\n\n[train]\nlr = " + std::to_string(lr) + "\n";
}

// A run with train records every 10 steps and eval records every 50, up to `steps`.
void make_run(const fs::path& dir, int d_model, double lr, int steps, bool done, bool torn_tail = false) {
  fs::create_directories(dir);
  write_file_atomic(dir / "config.toml", config_text(d_model, lr));
  std::string m;
  for (int s = 10; s <= steps; s += 10) {
    m += json{{"kind", "train"}, {"step", s}, {"epoch", 0}, {"train_loss", 4.0 / s * d_model}, {"lr", lr}}.dump() + "\n";
    if (s % 50 == 0)
      m += json{{"kind", "eval"}, {"step", s}, {"test_acc", std::min(1.0, s / 200.0 * d_model / 64)},
                {"test_loss", 1.0 / s}, {"test_acc/L32", 0.9}, {"test_acc/L64", 0.5}}.dump() + "\n";
  }
  if (torn_tail) m += "{\"kind\":\"train\",\"st";
  write_file_atomic(dir / "metrics.jsonl", m);
  if (done) {
    write_file_atomic(dir / "results.json", json{{"steps", steps}, {"test_acc", 0.25 * d_model / 32}, {"test_loss", 0.1},
                                                 {"test_acc/L32", 0.9}, {"test_acc/L64", 0.5}}
                                                .dump(2));
    write_file_atomic(dir / "DONE", "");
  }
}

// Every src="..." and href="..." of the page (scanned by hand: std::regex recurses per character and overflows
// the stack on an embedded PNG).
std::vector<std::string> references(const std::string& html) {
  std::vector<std::string> out;
  for (const std::string attr : {" src=\"", " href=\""}) {
    for (size_t at = html.find(attr); at != std::string::npos; at = html.find(attr, at + 1)) {
      const size_t start = at + attr.size(), end = html.find('"', start);
      out.push_back(html.substr(start, end - start));
    }
  }
  return out;
}

fs::path make_sweep() {
  const auto root = fresh_dir("sweep");
  make_run(root / "sweep-a", 32, 0.001, 200, /*done=*/true);
  make_run(root / "sweep-b", 64, 0.001, 200, /*done=*/true);
  make_run(root / "sweep-c", 64, 0.003, 120, /*done=*/false, /*torn_tail=*/true);
  fs::create_directories(root / "sweep-b" / "checkpoints" / "step_00000100");
  const auto figs = root / "sweep-b" / "figures";
  fs::create_directories(figs);
  write_file_atomic(figs / "recall_heatmap.json",
                    R"({"kind": "heatmap", "title": "recall by length and depth", "xlabel": "length",
                        "ylabel": "layers", "columns": ["256", "512"], "rows": ["1", "2"],
                        "z": [[0.5, 0.25], [0.75, null]], "format": "%.3f"})");
  write_file_atomic(figs / "attack.json", R"({"kind": "bars", "title": "attack success", "data": "attack_table.csv"})");
  write_file_atomic(figs / "attack_table.csv", "region,mamba,s4\nfirst,0.9,0.5\nlast,0.1,0.2\n");
  write_file_atomic(figs / "influence.csv", "distance,layer 0,layer 1\n1,1,1\n2,0.5,0.7\n4,0.2,0.6\n");
  write_file_atomic(figs / "broken.json", R"({"kind": "line", "colour": "red", "series": [{"y": [1]}]})");
  return root;
}

TEST(Report, SweepPageReferencesOnlyFilesThatExist) {
  const auto root = make_sweep();
  const auto summary = write_report(root, {});
  EXPECT_EQ(summary.html, root / "report" / "report.html");
  EXPECT_EQ(summary.runs, 3u);
  ASSERT_EQ(summary.problems.size(), 1u);
  EXPECT_NE(summary.problems[0].find("broken.json"), std::string::npos) << summary.problems[0];
  EXPECT_NE(summary.problems[0].find("unknown key 'colour'"), std::string::npos) << summary.problems[0];

  const std::string html = slurp(summary.html);
  EXPECT_EQ(html.rfind("<!DOCTYPE html>", 0), 0u);
  EXPECT_NE(html.find("</html>"), std::string::npos);
  EXPECT_NE(html.find("<style>"), std::string::npos) << "CSS is inline";
  const auto refs = references(html);
  std::set<std::string> pngs, svgs;
  for (const auto& r : refs) {
    ASSERT_FALSE(r.starts_with("/")) << "absolute path: " << r;
    ASSERT_EQ(r.find("://"), std::string::npos) << "external reference: " << r;
    EXPECT_TRUE(fs::exists(root / "report" / r)) << "the page references a missing file: " << r;
    if (r.ends_with(".png")) pngs.insert(r);
    if (r.ends_with(".svg")) svgs.insert(r);
  }
  // train loss, test accuracy, final accuracy vs d_model, and the run's heatmap, bars and bare CSV.
  EXPECT_EQ(pngs.size(), 6u);
  EXPECT_EQ(svgs.size(), 6u);
  EXPECT_EQ(summary.figures.size(), 6u);
  for (const auto& p : pngs) EXPECT_TRUE(is_png(root / "report" / p, 800, 500)) << p;
  for (const auto& s : svgs) EXPECT_TRUE(is_svg(root / "report" / s)) << s;
  for (const char* stem : {"figures/train_loss", "figures/test_acc", "figures/final_test_acc",
                           "figures/runs/sweep-b/recall_heatmap", "figures/runs/sweep-b/attack",
                           "figures/runs/sweep-b/influence"}) {
    EXPECT_TRUE(pngs.count(std::string(stem) + ".png")) << stem;
    EXPECT_TRUE(fs::exists(root / "report" / (std::string(stem) + ".gp"))) << stem;
    EXPECT_TRUE(fs::exists(root / "report" / (std::string(stem) + ".dat"))) << stem;
  }
  EXPECT_FALSE(fs::exists(root / "report/figures/runs/sweep-b/attack_table.png")) << "a spec's data CSV is not a figure";
  const std::string heat_svg = slurp(root / "report/figures/runs/sweep-b/recall_heatmap.svg");
  EXPECT_NE(heat_svg.find("0.750"), std::string::npos) << "cell values are printed in the spec's format";
  EXPECT_EQ(heat_svg.find("NaN"), std::string::npos) << "a missing cell gets no text";

  // The table: one row per run, the differing keys as columns, the shared ones not.
  // (Headers are the short key names, the full name in their title; rows drop the folders' shared "sweep-".)
  for (const char* s : {"title=\"sweep-a\"", "title=\"sweep-b\"", "title=\"sweep-c\"", "title=\"model.d_model\"",
                        "title=\"train.lr\"", "title=\"test_acc/L64\"", ">unfinished<", ">done<"})
    EXPECT_NE(html.find(s), std::string::npos) << s;
  EXPECT_EQ(html.find("title=\"model.n_layers\""), std::string::npos);
  EXPECT_EQ(html.find("title=\"run.out_dir\""), std::string::npos);
  // Rows in the order of the swept values: d_model 32 before 64, then lr 0.001 before 0.003.
  EXPECT_LT(html.find("title=\"sweep-a\""), html.find("title=\"sweep-b\""));
  EXPECT_LT(html.find("title=\"sweep-b\""), html.find("title=\"sweep-c\""));
  EXPECT_NE(html.find("unknown key &#39;colour&#39;"), std::string::npos) << "the problem is on the page";

  // The training curves hold every run; the torn line of the unfinished run is dropped.
  const std::string loss_data = slurp(root / "report/figures/train_loss.dat");
  // Lines are named by the differing keys' values.
  for (const char* s : {"# d_model=32, lr=0.001\n", "# d_model=64, lr=0.001\n", "# d_model=64, lr=0.003\n"})
    EXPECT_NE(loss_data.find(s), std::string::npos) << s;

  // Regenerating reads the same files and gives the same figures (no re-run: nothing else changes).
  const auto again = write_report(root, {});
  EXPECT_EQ(again.figures.size(), 6u);
  EXPECT_EQ(slurp(root / "report/figures/train_loss.dat"), loss_data);
  EXPECT_EQ(references(slurp(again.html)), refs);
  fs::remove_all(root);
}

// Language-model runs (eval records with test_ppl) get a perplexity figure on a log axis, one line per run.
TEST(Report, PerplexityCurvesForLanguageModels) {
  const auto root = fresh_dir("ppl");
  for (int d : {32, 64}) {
    const auto dir = root / ("lm-" + std::to_string(d));
    fs::create_directories(dir);
    write_file_atomic(dir / "config.toml", config_text(d, 0.001));
    std::string m;
    for (int s = 100; s <= 300; s += 100)
      m += json{{"kind", "eval"}, {"step", s}, {"test_acc", 0.1}, {"test_loss", 5.0 - s / 100.0 - d / 64.0},
                {"test_ppl", std::exp(5.0 - s / 100.0 - d / 64.0)}}.dump() + "\n";
    write_file_atomic(dir / "metrics.jsonl", m);
  }
  const auto summary = write_report(root, {});
  ASSERT_TRUE(fs::exists(root / "report/figures/test_ppl.png"));
  const std::string gp = slurp(root / "report/figures/test_ppl.gp"), dat = slurp(root / "report/figures/test_ppl.dat");
  EXPECT_NE(gp.find("logscale y"), std::string::npos) << gp;
  EXPECT_NE(dat.find("# d_model=32\n"), std::string::npos) << dat;
  EXPECT_NE(dat.find("# d_model=64\n"), std::string::npos) << dat;
  EXPECT_NE(dat.find(std::to_string(std::exp(5.0 - 3.0 - 0.5)).substr(0, 5)), std::string::npos) << dat;
  // Runs without perplexity (the MQAR sweep) get no such figure.
  const auto plain = make_sweep();
  write_report(plain, {});
  EXPECT_FALSE(fs::exists(plain / "report/figures/test_ppl.png"));
  fs::remove_all(root);
  fs::remove_all(plain);
}

TEST(Report, ConfigPanelShowsDifferingKeysAndTheChosenMixersOptions) {
  const auto root = fresh_dir("config_panel");
  for (const auto& [name, lr] : {std::pair{"fast", "0.01"}, std::pair{"slow", "0.001"}}) {
    fs::create_directories(root / name);
    write_file_atomic(root / name / "config.toml",
                      std::string("[model]\nmixer = \"mamba1\"\nd_model = 64\n\n[model.mixers.mamba1]\nd_state = 16\n"
                                  "transition = \"polarized_zero\"\n\n[model.mixers.h3]\nd_state = 64\nhead_dim = 2\n\n"
                                  "[model.mixers.attention]\nn_heads = 1\n\n[train]\nlr = ") + lr + "\n");
    write_file_atomic(root / name / "results.json", R"({"steps": 10, "test_acc": 0.5})");
    write_file_atomic(root / name / "DONE", "");
  }
  const auto summary = write_report(root, {});
  const std::string html = slurp(summary.html);
  const auto config = html.find("<h2>Configuration</h2>");
  ASSERT_NE(config, std::string::npos);
  const std::string panel = html.substr(config);
  // The differing key with its values in row order (0.001 first), the chosen mixer's options, no other mixer's.
  EXPECT_NE(panel.find("<code>train.lr</code></td><td class=\"text\">0.001, 0.01<"), std::string::npos) << panel;
  EXPECT_NE(panel.find("Options of the mixer <code>mamba1</code>"), std::string::npos) << panel;
  EXPECT_NE(panel.find("<code>model.mixers.mamba1.transition</code></td><td class=\"text\">polarized_zero<"),
            std::string::npos) << panel;
  EXPECT_EQ(html.find("model.mixers.h3"), std::string::npos) << "an unused mixer's options: " << panel;
  EXPECT_EQ(html.find("model.mixers.attention"), std::string::npos) << "an unused mixer's options: " << panel;
  // The rest (model.d_model, model.mixer) folded below.
  const auto folded = panel.find("<details>");
  ASSERT_NE(folded, std::string::npos) << panel;
  EXPECT_GT(panel.find("<code>model.d_model</code>"), folded);
  // The rows: slow (lr 0.001) before fast.
  EXPECT_LT(html.find("title=\"slow\""), html.find("title=\"fast\""));
  fs::remove_all(root);
}

TEST(Report, EmbeddedPageCarriesItsPngs) {
  const auto root = make_sweep();
  const auto out = fresh_dir("embedded_out");
  const auto summary = write_report(root, {out, /*embed_images=*/true});
  const std::string html = slurp(summary.html);
  EXPECT_EQ(html.find("<img src=\"figures/"), std::string::npos);
  const std::string marker = "<img src=\"data:image/png;base64,";
  size_t n = 0;
  for (size_t at = html.find(marker); at != std::string::npos; at = html.find(marker, at + 1)) ++n;
  EXPECT_EQ(n, 6u);
  const auto start = html.find(marker) + marker.size();
  EXPECT_EQ(html.substr(start, 16), base64(std::string("\x89PNG\r\n\x1a\n\0\0\0\x0d", 12)));
  for (const auto& r : references(html)) {
    if (r.starts_with("data:")) continue;
    EXPECT_TRUE(fs::exists(out / r)) << r;
  }
  fs::remove_all(root);
  fs::remove_all(out);
}

TEST(Report, SingleRunShowsItsSegments) {
  const auto root = fresh_dir("single");
  make_run(root / "quick", 64, 0.01, 100, /*done=*/true);
  const auto summary = write_report(root / "quick", {});
  EXPECT_EQ(summary.runs, 1u);
  EXPECT_TRUE(summary.problems.empty());
  EXPECT_EQ(summary.html, root / "quick" / "report" / "report.html");
  EXPECT_TRUE(is_png(root / "quick/report/figures/test_acc_segments.png"));
  const std::string data = slurp(root / "quick/report/figures/test_acc_segments.dat");
  EXPECT_NE(data.find("# L32"), std::string::npos);
  EXPECT_NE(data.find("# L64"), std::string::npos);
  // Its own report folder is not taken for a run by the next report of the parent.
  EXPECT_EQ(find_run_folders(root), std::vector<fs::path>{root / "quick"});
  fs::remove_all(root);
}

TEST(Report, PaperValuesArePrintedBesideOurs) {
  const auto root = fresh_dir("paper");
  make_run(root / "a", 32, 0.001, 100, /*done=*/true);
  make_run(root / "b", 64, 0.001, 100, /*done=*/true);
  fs::create_directories(root / "a" / "analysis");
  fs::create_directories(root / "b" / "analysis");
  write_file_atomic(root / "a" / "analysis" / "attack.json",
                    R"({"analysis": "attack", "result": {"clean_accuracy": 0.5, "paper": [{"quantity": "drop, trailing 32 px",
                        "paper": 81.24, "ours": 63.125, "source": "recency paper"}, {"quantity": "trend",
                        "paper": "SSMs: large", "ours": 12}]}})");
  write_file_atomic(root / "b" / "analysis" / "attack.json", R"({"analysis": "attack", "result": {"paper": "not a list"}})");
  write_file_atomic(root / "b" / "analysis" / "smoothing.json", R"({"block_out": [1, 2]})");  // no paper lines
  const auto summary = write_report(root, {});
  const std::string html = slurp(summary.html);
  EXPECT_NE(html.find("<h2>Paper vs ours</h2>"), std::string::npos);
  EXPECT_NE(html.find("drop, trailing 32 px"), std::string::npos);
  EXPECT_NE(html.find("81.24"), std::string::npos);
  EXPECT_NE(html.find("63.12"), std::string::npos);
  EXPECT_NE(html.find("SSMs: large"), std::string::npos);
  EXPECT_NE(html.find("not an array"), std::string::npos);  // the malformed file is named, not fatal
  // Without paper lines there is no such section.
  const auto single = write_report(root / "a", {});
  EXPECT_NE(slurp(single.html).find("Paper vs ours"), std::string::npos);
  fs::remove_all(root / "a" / "analysis");
  const auto none = write_report(root / "a", {});
  EXPECT_EQ(slurp(none.html).find("Paper vs ours"), std::string::npos);
  fs::remove_all(root);
}

TEST(Report, MissingGnuplotStopsTheReport) {
  const auto root = make_sweep();
  {
    ScopedEnv bad("SSMLAB_GNUPLOT", (root / "no-such-gnuplot").string());
    try {
      write_report(root, {});
      ADD_FAILURE() << "a report without gnuplot did not fail";
    } catch (const ReportError& e) {
      EXPECT_NE(std::string(e.what()).find("gnuplot"), std::string::npos) << e.what();
    }
  }
  EXPECT_FALSE(fs::exists(root / "report" / "report.html"));
  fs::remove_all(root);
}

TEST(Report, NoRunsAndBrokenRunFilesAreErrors) {
  const auto root = fresh_dir("empty");
  fs::create_directories(root / "not-a-run");
  EXPECT_THROW(write_report(root, {}), ReportError);
  make_run(root / "r", 32, 0.001, 100, /*done=*/true);
  write_file_atomic(root / "r" / "metrics.jsonl", "{\"kind\":\"train\",\"step\":10}\nnot json\n{\"kind\":\"eval\"}\n");
  try {
    read_run_folder(root / "r", root);
    ADD_FAILURE() << "a malformed middle line was accepted";
  } catch (const RunFolderError& e) {
    EXPECT_NE(std::string(e.what()).find("metrics.jsonl:2"), std::string::npos) << e.what();
  }
  write_file_atomic(root / "r" / "config.toml", "[model\nd_model = 3\n");
  EXPECT_THROW(read_run_folder(root / "r", root), RunFolderError);
  EXPECT_THROW(write_report(root, {}), ReportError);
  fs::remove_all(root);
}

TEST(Report, HtmlEscape) { EXPECT_EQ(html_escape("<a href=\"x\">&'"), "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"); }

}  // namespace

}  // namespace report_test_report
