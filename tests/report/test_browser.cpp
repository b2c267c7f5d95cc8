// The report in a real browser (headless Chromium at 1200 x 900, tests/report/browser_check.h): a sweep shaped like
// configs/recency/mqar-depth-cpu.toml (long run names, eight differing keys, segment accuracies, analysis figures and
// paper lines with long text) gives a page that does not overflow the window, whose images all load and whose
// links all resolve, plain and with --embed (that page alone in an empty folder). The check itself is shown to
// fail on a page with each of those faults. Without Chromium these tests fail, saying to run scripts/setup.sh.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <iostream>
#include <sstream>

#include "report/browser_check.h"
#include "report/report_test_util.h"
#include "ssmlab/report/io.h"
#include "ssmlab/report/report.h"

namespace report_test_browser {

namespace {

using namespace ssmlab::report;
using namespace ssmlab::report::testing;
using nlohmann::json;

struct Model {
  const char* mixer;
  const char* transition;
  const char* norm;
  const char* mlp;
  int mlp_expand, max_pos;
  double lr;
};

constexpr Model kModels[] = {{"attention", "standard", "layernorm", "gelu", 4, 64, 1e-3},
                             {"mamba1", "standard", "rmsnorm", "gated", 0, 0, 1e-2},
                             {"mamba1", "polarized_zero", "rmsnorm", "gated", 0, 0, 1e-2},
                             {"h3", "standard", "layernorm", "gelu", 4, 0, 1e-3}};

std::string config_text(const Model& m, int n_layers) {
  std::ostringstream c;
  c << "[run]\nname = \"recency-mqar-depth-cpu\"\nseed = 0\nout_dir = \"runs\"\n\n[model]\nmixer = \"" << m.mixer
    << "\"\nd_model = 64\nn_layers = " << n_layers << "\nnorm = \"" << m.norm << "\"\nmlp_expand = " << m.mlp_expand
    << "\nmlp = \"" << m.mlp << "\"\nmax_position_embeddings = " << m.max_pos
    << "\n\n[model.mixers.mamba1]\nd_state = 16\nd_conv = 4\ntransition = \"" << m.transition
    << "\"\n\n[model.mixers.attention]\nn_heads = 1\n\n[model.mixers.h3]\nd_state = 64\nhead_dim = 2\n\n"
    << "[model.mixers.rwkv6]\nn_heads = 4\n\n[task]\nname = \"mqar\"\nbatch_size = 64\n\n[task.mqar]\nvocab_size = 128\n\n"
    << "[[task.mqar.test]]\nseq_len = 64\nnum_kv_pairs = 8\n\n[task.needle]\nvocab_size = 64\n\n[train]\nlr = " << m.lr
    << "\nepochs = 2\n";
  return c.str();
}

fs::path make_wide_sweep() {
  const auto root = fresh_dir("browser_sweep");
  json manifest = {{"keys", {"model.n_layers", "model.mixer", "model.mixers.mamba1.transition", "model.norm", "model.mlp",
                             "model.mlp_expand", "model.max_position_embeddings", "train.lr"}},
                   {"runs", json::array()}};
  int index = 0;
  for (int n_layers : {2, 4}) {
    for (const Model& m : kModels) {
      char hash[16];
      std::snprintf(hash, sizeof hash, "%08x", 0x9e3779b9u * static_cast<unsigned>(index + 1));
      const std::string name = std::string("recency-mqar-depth-cpu-") + hash;
      const fs::path dir = root / name;
      fs::create_directories(dir / "figures");
      fs::create_directories(dir / "analysis");
      write_file_atomic(dir / "config.toml", config_text(m, n_layers));
      std::string metrics;
      const double q = 0.1 + 0.1 * index;
      for (int s = 50; s <= 1000; s += 50) {
        metrics += json{{"kind", "train"}, {"step", s}, {"epoch", 0}, {"train_loss", 4.0 * std::pow(q, s / 1000.0)}}.dump() + "\n";
        if (s % 250 == 0)
          metrics += json{{"kind", "eval"}, {"step", s}, {"test_acc", q * s / 1000.0}, {"test_loss", 1.0 / s},
                          {"test_acc/L64_K8", q}, {"test_acc/L64_K16", q / 2}}.dump() + "\n";
      }
      write_file_atomic(dir / "metrics.jsonl", metrics);
      write_file_atomic(dir / "results.json", json{{"steps", 1000}, {"test_acc", q}, {"test_loss", 0.123456},
                                                   {"test_acc/L64_K8", q}, {"test_acc/L64_K16", q / 2},
                                                   {"seconds", 117.491030586}, {"train_loss", 0.5}}.dump());
      write_file_atomic(dir / "DONE", "");
      write_file_atomic(dir / "figures/influence.csv",
                        "distance," + std::string(m.mixer) + "\n1,1\n2," + std::to_string(q) + "\n4,0.1\n8,0.01\n");
      if (index == 0)
        write_file_atomic(dir / "figures/recall.json",
                          R"({"kind": "heatmap", "title": "recall by length and depth", "columns": ["256", "512"],
                              "rows": ["1", "2"], "z": [[0.5, 0.25], [0.75, 0.125]]})");
      write_file_atomic(dir / "analysis/attack.json",
                        json{{"analysis", "attack"},
                             {"result", {{"paper", {{{"quantity", "accuracy drop when the trailing 32 pixels of every "
                                                                  "test image are replaced by uniform noise"},
                                                     {"paper", "81.24 (Mamba, CIFAR-10, the recency paper's Table 2)"},
                                                     {"ours", q * 100},
                                                     {"source", "Recency and over-smoothing in state space models, "
                                                                "section 4.1, table 2, row Mamba-1 (S6)"}}}}}}}
                            .dump());
      manifest["runs"].push_back({{"folder", name}, {"index", index}, {"status", "done"}, {"attempts", 1}});
      ++index;
    }
  }
  write_file_atomic(root / "sweep.json", manifest.dump(2));
  return root;
}

// Chromium, or a failure that says to run setup (never a silent pass).
std::optional<fs::path> chromium_or_fail() {
  auto c = find_chromium();
  if (!c) ADD_FAILURE() << kChromiumMissing;
  return c;
}

TEST(ReportBrowser, CheckFindsOverflowDeadLinksAndMissingImages) {
  const auto chromium = chromium_or_fail();
  if (!chromium) return;
  const auto dir = fresh_dir("browser_bad");
  write_file_atomic(dir / "bad.html",
                    "<!DOCTYPE html><html><head><meta charset=\"utf-8\"></head><body>"
                    "<div style=\"width: 2000px\">far too wide</div>"
                    "<img src=\"missing.png\" alt=\"gone\"><img src=\"data:image/png;base64,AAAA\" alt=\"broken\">"
                    "<a href=\"figures/nowhere.svg\">dead</a><a href=\"bad.html\">self</a></body></html>");
  const auto f = browser_check(*chromium, dir / "bad.html");
  ASSERT_TRUE(f.error.empty()) << f.describe();
  EXPECT_EQ(f.inner_width, 1200) << f.describe();
  EXPECT_TRUE(f.overflows()) << f.describe();
  EXPECT_GE(f.scroll_width, 2000) << f.describe();
  EXPECT_EQ(f.bad_images.size(), 2u) << f.describe();
  EXPECT_EQ(f.images, 2u);
  ASSERT_EQ(f.dead_links.size(), 2u) << f.describe();
  EXPECT_EQ(f.dead_links[0], (dir / "missing.png").string());
  EXPECT_EQ(f.dead_links[1], (dir / "figures/nowhere.svg").string());
  EXPECT_FALSE(f.clean());

  write_file_atomic(dir / "good.html", "<!DOCTYPE html><html><body><p>fits</p><a href=\"bad.html\">x</a></body></html>");
  const auto g = browser_check(*chromium, dir / "good.html");
  EXPECT_TRUE(g.clean()) << g.describe();
  EXPECT_EQ(g.local_links, 1u);
  fs::remove_all(dir);
}

TEST(ReportBrowser, ReportFitsTheWindowAndEveryLinkAndImageResolves) {
  const auto chromium = chromium_or_fail();
  if (!chromium) return;
  const auto root = make_wide_sweep();

  const auto plain = write_report(root, {});
  ASSERT_TRUE(plain.problems.empty()) << plain.problems[0];
  const auto p = browser_check(*chromium, plain.html);
  EXPECT_TRUE(p.clean()) << "plain report: " << p.describe();
  EXPECT_EQ(p.images, plain.figures.size()) << p.describe();
  EXPECT_GT(p.local_links, p.images) << "figures link to their SVG, gnuplot script and data: " << p.describe();
  // The results table of this sweep (8 differing keys, 7 metrics) wraps its headers and values to fit its box.
  ASSERT_FALSE(p.scroll_boxes.empty()) << p.describe();
  EXPECT_EQ(p.scroll_boxes[0].what, "table.results");
  EXPECT_LE(p.scroll_boxes[0].content, p.scroll_boxes[0].box) << p.describe();
  std::cout << "[ browser  ] plain report: " << p.describe() << "\n";

  // --embed: report.html alone, copied into an empty folder, is the whole page.
  const auto out = fresh_dir("browser_embed_out");
  const auto embedded = write_report(root, {out, /*embed_images=*/true});
  const auto alone = fresh_dir("browser_embed_alone");
  fs::copy_file(embedded.html, alone / "report.html");
  const auto e = browser_check(*chromium, alone / "report.html");
  EXPECT_TRUE(e.clean()) << "embedded report alone: " << e.describe();
  EXPECT_EQ(e.images, embedded.figures.size()) << e.describe();
  EXPECT_EQ(e.local_links, 0u) << "an embedded page links no local file: " << e.describe();
  std::cout << "[ browser  ] embedded report alone: " << e.describe() << "\n";
  fs::remove_all(root);
  fs::remove_all(out);
  fs::remove_all(alone);
}

}  // namespace

}  // namespace report_test_browser
