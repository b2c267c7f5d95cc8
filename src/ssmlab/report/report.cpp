#include "ssmlab/report/report.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <map>
#include <set>
#include <sstream>

#include "ssmlab/report/analyses.h"
#include "ssmlab/report/figure.h"
#include "ssmlab/report/gnuplot.h"
#include "ssmlab/report/io.h"
#include "ssmlab/report/summary.h"
#include "ssmlab/runfolder/layout.h"

namespace ssmlab::report {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

std::string slug(const std::string& s) {
  std::string out;
  for (char c : s) out += (std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.') ? c : '_';
  while (!out.empty() && out.front() == '.') out.erase(out.begin());
  return out.empty() ? "figure" : out;
}

// A figure drawn for the page: where its files are (relative to the report folder) and what to say under it.
struct PageFigure {
  std::string title, caption, png, svg, script, data;
  std::string embedded;  // base64 PNG when embedding
};

class ReportBuilder {
 public:
  ReportBuilder(fs::path out, bool embed) : out_(std::move(out)), embed_(embed) {}

  // Draws `spec` into figures/<sub>/<stem>.*; a failure becomes a listed problem.
  std::optional<PageFigure> draw(const FigureSpec& spec, const std::string& sub, const std::string& stem,
                                 const std::string& source) {
    try {
      const fs::path dir = sub.empty() ? runfolder::figures_dir(out_) : runfolder::figures_dir(out_) / sub;
      const auto r = render_figure(spec, dir, stem);
      PageFigure f{spec.title, spec.caption, rel(r.png), rel(r.svg), rel(r.script), rel(r.data), ""};
      if (embed_) f.embedded = base64(read_file(r.png));
      pngs_.push_back(r.png);
      return f;
    } catch (const ReportError& e) {
      problems_.push_back(source + ": " + e.what());
      return std::nullopt;
    }
  }

  void problem(const std::string& p) { problems_.push_back(p); }
  const std::vector<std::string>& problems() const { return problems_; }
  const std::vector<fs::path>& pngs() const { return pngs_; }

 private:
  std::string rel(const fs::path& p) const { return fs::relative(p, out_).generic_string(); }
  fs::path out_;
  bool embed_;
  std::vector<std::string> problems_;
  std::vector<fs::path> pngs_;
};

// A figure: linked to its SVG, script and data on a plain page; on an embedded page (which may travel alone) the
// inlined PNG with no link at all, its files named as text.
void write_figure_html(std::ostringstream& h, const PageFigure& f) {
  if (!f.embedded.empty()) {
    h << "<figure><img src=\"data:image/png;base64," << f.embedded << "\" alt=\"" << html_escape(f.title)
      << "\"><figcaption>" << html_escape(f.title);
    if (!f.caption.empty()) h << ". " << html_escape(f.caption);
    h << " <span class=\"files\">(" << html_escape(f.svg) << ")</span></figcaption></figure>\n";
    return;
  }
  h << "<figure><a href=\"" << html_escape(f.svg) << "\"><img src=\"" << html_escape(f.png) << "\" alt=\""
    << html_escape(f.title) << "\"></a><figcaption>" << html_escape(f.title);
  if (!f.caption.empty()) h << ". " << html_escape(f.caption);
  h << " <span class=\"files\">[<a href=\"" << html_escape(f.svg) << "\">SVG</a> · <a href=\"" << html_escape(f.png)
    << "\">PNG</a> · <a href=\"" << html_escape(f.script) << "\">gnuplot</a> · <a href=\"" << html_escape(f.data)
    << "\">data</a>]</span></figcaption></figure>\n";
}

// A config key, metric name or config value for a table cell: escaped, with a line-break opportunity after each
// '.', '/' and '_' so a narrow column can wrap it.
std::string breakable(const std::string& text) {
  std::string out;
  for (char c : text) {
    out += html_escape(std::string(1, c));
    if (c == '.' || c == '/' || c == '_') out += "<wbr>";
  }
  return out;
}

// Whether `text` is a whole number ("0.001", "64", "1e-05"): such a cell never breaks.
bool is_number(const std::string& text, double* out) {
  char* end = nullptr;
  *out = std::strtod(text.c_str(), &end);
  return !text.empty() && end == text.c_str() + text.size();
}

std::string swatch(size_t run) {
  return "<span class=\"swatch\" style=\"background:" + group_color(static_cast<int>(run)) + "\"></span>";
}

// What the runs' names share in front, up to a '-', '_' or '/' (the sweep's name): printed once, not on every row.
std::string common_prefix(const std::vector<RunFolder>& runs) {
  if (runs.size() < 2) return "";
  std::string p = runs[0].name;
  for (const auto& r : runs) {
    size_t n = 0;
    while (n < p.size() && n < r.name.size() && p[n] == r.name[n]) ++n;
    p.resize(n);
  }
  const size_t cut = p.find_last_of("-_/");
  if (cut == std::string::npos) return "";
  p.resize(cut + 1);
  for (const auto& r : runs)
    if (r.name.size() <= p.size()) return "";
  return p;
}

// The mixer (model.mixers.NAME...) or task (task.NAME.... / task.NAME[i]...) whose options `key` holds; "" for
// any other key.
std::string option_owner(const std::string& key) {
  for (const std::string prefix : {"model.mixers.", "task."}) {
    if (!key.starts_with(prefix)) continue;
    const size_t end = key.find_first_of(".[", prefix.size());
    if (end == std::string::npos) return "";  // task.batch_size: a key of its own, not a task's options
    return prefix + key.substr(prefix.size(), end - prefix.size());
  }
  return "";
}

// Fits a 1200 px window: the page is at most 1200 px wide with everything inside it; tables wrap their headers and
// text cells and, when still too wide, scroll inside their own box with the run column held at the left.
constexpr const char* kCss = R"(
*, *::before, *::after { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 1.5em auto; max-width: 1200px;
       padding: 0 1em; color: #222; overflow-wrap: break-word; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ddd; padding-bottom: 0.2em; margin-top: 2em; }
h3 { margin-bottom: 0.3em; } .meta { color: #666; } code { background: #f3f3f3; padding: 0 0.25em; border-radius: 3px; }
.scroll { overflow-x: auto; max-width: 100%; margin: 0.5em 0; }
table { border-collapse: separate; border-spacing: 0; font-size: 12.5px; border-top: 1px solid #ddd; border-left: 1px solid #ddd; }
th, td { border-right: 1px solid #ddd; border-bottom: 1px solid #ddd; padding: 0.25em 0.35em; text-align: right;
         vertical-align: top; white-space: nowrap; background: #fff; }
th { background: #f5f5f5; white-space: normal; min-width: 3em; max-width: 11em; vertical-align: bottom; font-weight: 600; }
td.text, th.text { text-align: left; } td.value { white-space: normal; } td.wrap { white-space: normal; min-width: 12em; max-width: 32em; }
tr:nth-child(even) td { background: #fafafa; } td.best { font-weight: bold; color: #1a7f37; }
th.run, td.run { position: sticky; left: 0; z-index: 1; max-width: none; } th.run { background: #f5f5f5; }
.swatch { display: inline-block; width: 0.8em; height: 0.8em; border-radius: 2px; margin-right: 0.4em;
          vertical-align: -0.05em; }
.prefix { color: #888; }
figure { display: inline-block; margin: 0.5em 1em 1em 0; vertical-align: top; max-width: 100%; }
figure img { display: block; max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { color: #444; font-size: 13px; max-width: 800px; } .files { color: #888; }
.problems { background: #fff4f4; border: 1px solid #f0c0c0; padding: 0.5em 1em; }
details { margin: 0.5em 0; } summary { cursor: pointer; }
table.config td.text { white-space: normal; max-width: 40em; }
)";

}  // namespace

std::string html_escape(const std::string& text) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&#39;"; break;
      default: out += c;
    }
  }
  return out;
}

ReportSummary write_report(const fs::path& dir, const ReportOptions& options) {
  std::vector<RunFolder> runs = load_runs(dir);
  if (runs.empty())
    report_fail("no run folder in '", dir.string(), "' (a run folder holds config.toml or metrics.jsonl; folders up "
                "to 4 levels down are searched)");
  find_gnuplot();  // fail before writing anything when the figures cannot be drawn
  const fs::path out = options.out.empty() ? runfolder::report_dir(dir) : options.out;
  std::error_code ec;
  fs::create_directories(runfolder::figures_dir(out), ec);
  if (ec) report_fail("cannot create the report folder '", runfolder::figures_dir(out).string(), "': ", ec.message());

  // Rows, lines and colours follow the swept values; run i has colour i (group_color) in every figure.
  // The differing keys in the sweep's order (its main axes first): the table's columns and the legends' order.
  const auto keys = sweep_key_order(runs, runfolder::differing_keys(runs));
  sort_runs(runs, keys);
  ReportBuilder b(out, options.embed_images);
  const auto lkeys = label_keys(runs, keys);  // the fewest keys that tell the runs apart: the legends
  std::vector<const RunFolder*> run_ptrs;
  for (const auto& r : runs) run_ptrs.push_back(&r);
  const auto labels = run_labels(run_ptrs, lkeys);

  // Training curves and the sweep's summary figure.
  std::vector<PageFigure> curves;
  auto add = [&](std::optional<FigureSpec> spec, const std::string& stem) {
    if (!spec) return;
    if (auto f = b.draw(*spec, "", stem, "figure '" + stem + "'")) curves.push_back(*f);
  };
  add(curve_figure(runs, lkeys, "train_loss", "train", "training loss", "train loss (mean over the logging window)",
                   /*logy=*/true),
      "train_loss");
  if (auto acc = curve_figure(runs, lkeys, "test_acc", "eval", "test accuracy", "test accuracy", /*logy=*/false)) {
    acc->ymin = 0.0;
    acc->ymax = 1.0;
    add(acc, "test_acc");
  }
  // Language models (the text task): validation perplexity, exp of the mean token loss, on a log axis.
  add(curve_figure(runs, lkeys, "test_ppl", "eval", "validation perplexity", "perplexity", /*logy=*/true), "test_ppl");
  if (runs.size() == 1) {  // one run: its test segments one by one
    std::set<std::string> seg_keys;
    for (const auto& e : runs[0].eval)
      for (const auto& [k, v] : e.items())
        if (k.starts_with("test_acc/")) seg_keys.insert(k);
    if (seg_keys.size() > 1) {
      FigureSpec s;
      s.kind = FigureKind::line;
      s.title = "test accuracy per test segment";
      s.xlabel = "step";
      s.ylabel = "test accuracy";
      s.ymin = 0.0;
      s.ymax = 1.0;
      for (const auto& k : seg_keys) {
        Series ser{k.substr(9), {}, {}, {}};
        for (const auto& [x, y] : metric_series(runs[0].eval, k)) {
          ser.x.push_back(x);
          ser.y.push_back(y);
        }
        s.series.push_back(std::move(ser));
      }
      add(s, "test_acc_segments");
    }
  } else {
    add(sweep_figure(runs, keys), "final_test_acc");
  }

  // Figures that analyses left in the run folders, each run's own, and those that several runs share combined.
  std::vector<std::vector<RunFigure>> figures;
  std::vector<std::string> problems;
  for (const auto& r : runs) figures.push_back(read_run_figures(r, problems));
  for (const auto& p : problems) b.problem(p);
  std::vector<PageFigure> combined;
  for (const auto& f : combine_run_figures(labels, figures))
    if (auto pf = b.draw(f.spec, "analyses", slug(f.name), f.source)) combined.push_back(*pf);
  struct RunSection {
    size_t run;
    std::vector<PageFigure> figs;
  };
  std::vector<RunSection> run_figures;
  std::set<std::string> used_subs;
  for (size_t i = 0; i < runs.size(); ++i) {
    if (figures[i].empty()) continue;
    std::string sub = "runs/" + slug(runs[i].name);
    for (int k = 2; used_subs.count(sub); ++k) sub = "runs/" + slug(runs[i].name) + "-" + std::to_string(k);
    used_subs.insert(sub);
    std::vector<PageFigure> figs;
    for (const auto& f : figures[i])
      if (auto pf = b.draw(f.spec, sub, slug(f.name), f.source)) figs.push_back(*pf);
    run_figures.push_back({i, std::move(figs)});
  }

  // The results table: differing config keys, then final metrics.
  std::vector<json> finals;
  for (const auto& r : runs) finals.push_back(runfolder::final_metrics(r));
  const std::vector<std::string> metric_cols = runfolder::metric_order(finals);
  double best_acc = -INFINITY;
  for (const auto& m : finals)
    if (m.contains("test_acc") && m["test_acc"].is_number()) best_acc = std::max(best_acc, m["test_acc"].get<double>());

  std::ostringstream h;
  const std::string title = runs.size() == 1 ? runs[0].name : fs::weakly_canonical(dir, ec).filename().string();
  size_t n_done = 0;
  for (const auto& r : runs) n_done += r.done() ? 1 : 0;
  const std::time_t now = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
  char when[32];
  std::strftime(when, sizeof when, "%Y-%m-%d %H:%M UTC", std::gmtime(&now));
  h << "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
    << "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
    << "<title>ssmlab report: " << html_escape(title) << "</title>\n<style>" << kCss << "</style>\n</head>\n<body>\n"
    << "<h1>ssmlab report: " << html_escape(title) << "</h1>\n"
    << "<p class=\"meta\">" << runs.size() << (runs.size() == 1 ? " run" : " runs") << " in <code>"
    << html_escape(dir.string()) << "</code> (" << n_done << " finished, " << runs.size() - n_done
    << " unfinished), read " << when << " by <code>ssmlab report</code> from the run folders' files alone. ";
  if (options.embed_images)
    h << "The figures are inlined, so this file alone is the page; their SVGs, gnuplot scripts and data were "
      << "written to <code>" << html_escape(runfolder::figures_dir(out).string()) << "</code>.</p>\n";
  else
    h << "Click a figure for its SVG; each figure's gnuplot script and data sit beside it in <code>figures/</code> "
      << "(<code>gnuplot NAME.gp</code> there redraws it).</p>\n";
  if (!b.problems().empty()) {
    h << "<div class=\"problems\"><b>" << b.problems().size()
      << " figure(s) could not be drawn:</b><ul>\n";
    for (const auto& p : b.problems()) h << "<li><code>" << html_escape(p) << "</code></li>\n";
    h << "</ul></div>\n";
  }

  const std::string prefix = common_prefix(runs);
  const auto short_keys = short_key_names(keys);
  h << "<h2>Results</h2>\n<p>Final metrics: <code>results.json</code> of finished runs, the newest evaluation in "
    << "<code>metrics.jsonl</code> of unfinished ones."
    << (keys.empty() ? "" : " The config keys whose values differ between the runs come first (full names under "
                            "Configuration), the rows in the order of their values.")
    << (runs.size() > 1 ? " Each run's colour is its colour in every figure." : "");
  if (!prefix.empty()) h << " Run folders are named <code>" << html_escape(prefix) << "…</code>.";
  h << "</p>\n<div class=\"scroll\"><table class=\"results\">\n<tr><th class=\"text run\">run</th>";
  for (size_t k = 0; k < keys.size(); ++k)
    h << "<th class=\"text\" title=\"" << html_escape(keys[k]) << "\">" << breakable(short_keys[k]) << "</th>";
  h << "<th class=\"text\">status</th>";
  for (const auto& k : metric_cols) h << "<th title=\"" << html_escape(k) << "\">" << breakable(k) << "</th>";
  h << "</tr>\n";
  for (size_t i = 0; i < runs.size(); ++i) {
    const auto& r = runs[i];
    h << "<tr><td class=\"text run\" title=\"" << html_escape(r.name) << "\">" << (runs.size() > 1 ? swatch(i) : "")
      << html_escape(r.name.substr(prefix.size())) << "</td>";
    for (const auto& k : keys) {
      const auto it = r.config.find(k);
      double number = 0;
      h << "<td class=\"text value\">"
        << (it == r.config.end() ? "" : is_number(it->second, &number) ? html_escape(it->second) : breakable(it->second))
        << "</td>";
    }
    h << "<td class=\"text\">" << runfolder::status_name(r.status) << "</td>";
    for (const auto& k : metric_cols) {
      const bool best = k == "test_acc" && runs.size() > 1 && finals[i].contains(k) && finals[i][k].is_number() &&
                        finals[i][k].get<double>() == best_acc;
      h << (best ? "<td class=\"best\">" : "<td>") << (finals[i].contains(k) ? html_escape(format_value(finals[i][k])) : "")
        << "</td>";
    }
    h << "</tr>\n";
  }
  h << "</table></div>\n";

  // The papers' values beside ours, from the analyses' "paper" lines.
  {
    std::vector<std::string> paper_problems;
    std::ostringstream t;
    size_t n_rows = 0;
    for (size_t i = 0; i < runs.size(); ++i)
      for (const auto& p : read_paper_rows(runs[i], paper_problems)) {
        ++n_rows;
        t << "<tr><td class=\"text wrap\">" << (runs.size() > 1 ? swatch(i) : "") << html_escape(labels[i])
          << "</td><td class=\"text\">" << html_escape(p.analysis) << "</td><td class=\"text wrap\">"
          << html_escape(p.quantity) << "</td><td class=\"text wrap\">" << html_escape(p.paper) << "</td><td>"
          << html_escape(p.ours) << "</td><td class=\"text wrap\">" << html_escape(p.source) << "</td></tr>\n";
      }
    for (const auto& p : paper_problems) h << "<p class=\"problems\"><code>" << html_escape(p) << "</code></p>\n";
    if (n_rows > 0)
      h << "<h2>Paper vs ours</h2>\n<p>What each analysis compares with the paper it reproduces "
        << "(<code>analysis/*.json</code>, \"paper\"): the paper's value as it states it, ours from this run.</p>\n"
        << "<div class=\"scroll\"><table class=\"paper\">\n<tr><th class=\"text\">run</th><th class=\"text\">analysis</th>"
        << "<th class=\"text\">quantity</th><th class=\"text\">paper</th><th>ours</th><th class=\"text\">source</th></tr>\n"
        << t.str() << "</table></div>\n";
  }

  if (!curves.empty()) {
    h << "<h2>Training curves</h2>\n<p>From each run's <code>metrics.jsonl</code>"
      << (runs.size() > 1 ? ", one line per run in its colour, named by the config values that tell the runs apart" : "")
      << ".</p>\n";
    for (const auto& f : curves) write_figure_html(h, f);
  }
  if (!combined.empty()) {
    h << "<h2>Analyses (all runs)</h2>\n<p>Figures of the same name in several runs' <code>figures/</code>, drawn "
      << "together: each run in its colour (a run's several lines by dash), named by the config values that tell the "
      << "runs apart.</p>\n";
    for (const auto& f : combined) write_figure_html(h, f);
  }
  if (!run_figures.empty()) {
    h << "<h2>Analysis figures</h2>\n<p>Drawn from the figure specs and CSV files in each run's "
      << "<code>figures/</code> folder.</p>\n";
    for (const auto& [i, figs] : run_figures) {
      h << "<h3>" << (runs.size() > 1 ? swatch(i) : "") << html_escape(runs[i].name);
      if (runs.size() > 1 && labels[i] != runs[i].name) h << " <span class=\"prefix\">(" << html_escape(labels[i]) << ")</span>";
      h << "</h3>\n";
      for (const auto& f : figs) write_figure_html(h, f);
    }
  }

  // The config: the keys that differ with their values, the options of the mixers (and tasks) the runs use, then
  // the rest of what they share, folded. Options of mixers and tasks that no run uses are left out.
  {
    std::set<std::string> used_owners;
    for (const auto& r : runs) {
      if (auto it = r.config.find("model.mixer"); it != r.config.end()) used_owners.insert("model.mixers." + it->second);
      if (auto it = r.config.find("task.name"); it != r.config.end()) used_owners.insert("task." + it->second);
    }
    const std::set<std::string> differing(keys.begin(), keys.end());
    std::map<std::string, std::vector<std::pair<std::string, std::string>>> chosen;  // mixer -> its shared options
    std::vector<std::pair<std::string, std::string>> rest;
    size_t left_out = 0;
    for (const auto& e : runs[0].config_entries) {
      if (differing.count(e.key)) continue;
      const std::string owner = option_owner(e.key);
      const bool has_choice = owner.starts_with("model.mixers.") ? runs[0].config.count("model.mixer") > 0
                                                                 : runs[0].config.count("task.name") > 0;
      if (!owner.empty() && has_choice && !used_owners.count(owner)) {
        ++left_out;
        continue;
      }
      if (owner.starts_with("model.mixers.")) chosen[owner].emplace_back(e.key, e.text);
      else rest.emplace_back(e.key, e.text);
    }
    auto row = [&](const std::string& k, const std::string& v) {
      h << "<tr><td class=\"text\"><code>" << html_escape(k) << "</code></td><td class=\"text\">" << html_escape(v)
        << "</td></tr>\n";
    };
    if (!keys.empty() || !chosen.empty() || !rest.empty()) h << "<h2>Configuration</h2>\n";
    if (!keys.empty()) {
      h << "<p>The keys whose values differ between the runs (the results table's columns), with their values in "
        << "row order:</p>\n<table class=\"config\">\n";
      for (const auto& k : keys) {
        std::vector<std::string> values;
        for (const auto& r : runs) {
          const auto it = r.config.find(k);
          const std::string v = it == r.config.end() ? "(none)" : it->second;
          if (std::find(values.begin(), values.end(), v) == values.end()) values.push_back(v);
        }
        std::string joined;
        for (const auto& v : values) joined += (joined.empty() ? "" : ", ") + v;
        row(k, joined);
      }
      h << "</table>\n";
    }
    for (const auto& [owner, opts] : chosen) {
      h << "<p>Options of the mixer <code>" << html_escape(owner.substr(13)) << "</code>"
        << (runs.size() > 1 ? " (shared by the runs that use it)" : "") << ":</p>\n<table class=\"config\">\n";
      for (const auto& [k, v] : opts) row(k, v);
      h << "</table>\n";
    }
    if (!rest.empty()) {
      h << "<details><summary>" << rest.size() << (runs.size() > 1 ? " other keys shared by every run" : " other keys")
        << " (model, task, training"
        << (left_out ? "; the options of " + std::to_string(left_out) + " keys of mixers and tasks no run uses left out"
                     : std::string())
        << ")</summary>\n<table class=\"config\">\n";
      for (const auto& [k, v] : rest) row(k, v);
      h << "</table></details>\n";
    }
  }
  h << "</body>\n</html>\n";

  ReportSummary summary;
  summary.html = runfolder::report_page(out);
  summary.runs = runs.size();
  summary.figures = b.pngs();
  summary.problems = b.problems();
  write_file_atomic(summary.html, h.str());
  return summary;
}

}  // namespace ssmlab::report
