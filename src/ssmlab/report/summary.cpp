#include "ssmlab/report/summary.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <map>
#include <set>

#include "ssmlab/report/io.h"

namespace ssmlab::report {
namespace {

using nlohmann::json;

bool parse_number(const std::string& s, double* out) {
  if (s.empty()) return false;
  char* end = nullptr;
  *out = std::strtod(s.c_str(), &end);
  return end != s.c_str() && *end == '\0' && std::isfinite(*out);
}

}  // namespace

std::vector<RunFolder> load_runs(const std::filesystem::path& root) {
  try {
    return runfolder::read_run_folders(root);
  } catch (const runfolder::RunFolderError& e) {
    throw ReportError(e.what());
  }
}

std::string run_label(const RunFolder& r, const std::vector<std::string>& keys) {
  std::string label;
  for (const auto& k : keys) {
    if (k == "run.name" || k == "run.seed" || k == "run.out_dir") continue;
    const auto it = r.config.find(k);
    label += (label.empty() ? "" : ", ") + k.substr(k.rfind('.') + 1) + "=" + (it == r.config.end() ? "-" : it->second);
  }
  return label;
}

std::vector<std::string> run_labels(const std::vector<const RunFolder*>& runs, const std::vector<std::string>& keys) {
  std::vector<std::string> out;
  std::set<std::string> names;
  bool clash = false;
  for (const RunFolder* r : runs) {
    out.push_back(run_label(*r, keys));
    clash = clash || out.back().empty() || !names.insert(out.back()).second;
  }
  if (clash)
    for (size_t i = 0; i < runs.size(); ++i) out[i] = runs[i]->name;
  return out;
}

std::vector<std::pair<double, double>> metric_series(const std::vector<json>& records, const std::string& key) {
  std::vector<std::pair<double, double>> out;
  for (const auto& r : records) {
    const auto it = r.find(key);
    const auto st = r.find("step");
    if (it == r.end() || st == r.end() || !it->is_number() || !st->is_number()) continue;
    const double v = it->get<double>();
    if (std::isfinite(v)) out.emplace_back(st->get<double>(), v);
  }
  return out;
}

std::optional<FigureSpec> curve_figure(const std::vector<RunFolder>& runs, const std::vector<std::string>& keys,
                                       const std::string& key, const std::string& kind, const std::string& title,
                                       const std::string& ylabel, bool logy) {
  FigureSpec s;
  s.kind = FigureKind::line;
  s.title = title;
  s.xlabel = "step";
  s.ylabel = ylabel;
  s.logy = logy;
  s.style = "lines";
  std::vector<const RunFolder*> with;
  for (const auto& r : runs) {
    const auto pts = metric_series(kind == "train" ? r.train : r.eval, key);
    if (pts.empty()) continue;
    with.push_back(&r);
    Series ser;
    for (const auto& [x, y] : pts) {
      ser.x.push_back(x);
      ser.y.push_back(y);
    }
    s.series.push_back(std::move(ser));
  }
  if (s.series.empty()) return std::nullopt;
  const auto labels = run_labels(with, keys);
  for (size_t i = 0; i < s.series.size(); ++i) s.series[i].name = labels[i];
  if (s.series.size() == 1 && runs.size() == 1) s.series[0].name = key;
  size_t most = 0;
  for (const auto& ser : s.series) most = std::max(most, ser.x.size());
  if (most <= 40) s.style = "linespoints";
  return s;
}

std::optional<FigureSpec> sweep_figure(const std::vector<RunFolder>& runs, const std::vector<std::string>& keys) {
  std::vector<std::string> keys_used;
  for (const auto& k : keys)
    if (k != "run.name" && k != "run.seed") keys_used.push_back(k);
  // The x key: numeric in every run with 2+ values. Among those, the one that leaves the fewest lines (the other
  // keys' combinations), so a key zipped with another (determined by it) does not become x with one point per
  // line; then the one with the most values; then the first by name.
  auto value_of = [](const RunFolder& r, const std::string& k) {
    const auto it = r.config.find(k);
    return it == r.config.end() ? std::string("-") : it->second;
  };
  std::string best;
  size_t best_lines = 0, best_distinct = 0;
  for (const auto& k : keys_used) {
    std::set<double> distinct;
    std::set<std::string> lines;
    bool numeric = true;
    for (const auto& r : runs) {
      double v = 0;
      if (!r.config.count(k) || !parse_number(r.config.at(k), &v)) {
        numeric = false;
        break;
      }
      distinct.insert(v);
      std::string label;
      for (const auto& other : keys_used)
        if (other != k) label += value_of(r, other) + "\x1f";
      lines.insert(label);
    }
    if (!numeric || distinct.size() < 2) continue;
    if (best.empty() || lines.size() < best_lines || (lines.size() == best_lines && distinct.size() > best_distinct)) {
      best = k;
      best_lines = lines.size();
      best_distinct = distinct.size();
    }
  }
  if (best.empty()) return std::nullopt;
  std::map<std::string, std::vector<std::pair<double, double>>> lines;
  double lo = INFINITY, hi = -INFINITY;
  for (const auto& r : runs) {
    const json m = runfolder::final_metrics(r);
    if (!m.contains("test_acc") || !m["test_acc"].is_number()) continue;
    std::vector<std::string> others;
    for (const auto& k : keys_used)
      if (k != best) others.push_back(k);
    const std::string label = run_label(r, others);
    double x = 0;
    parse_number(r.config.at(best), &x);
    lo = std::min(lo, x);
    hi = std::max(hi, x);
    lines[label.empty() ? "test_acc" : label].emplace_back(x, m["test_acc"].get<double>());
  }
  if (lines.empty()) return std::nullopt;
  FigureSpec s;
  s.kind = FigureKind::line;
  s.title = "final test accuracy vs " + best;
  s.xlabel = best;
  s.ylabel = "test accuracy";
  s.logx = lo > 0 && hi / lo >= 4;  // widths, state sizes, learning rates: usually swept geometrically
  s.ymin = 0.0;
  s.ymax = 1.0;
  s.style = "linespoints";
  for (auto& [label, pts] : lines) {
    std::sort(pts.begin(), pts.end());
    Series ser{label, {}, {}, {}};
    for (const auto& [x, y] : pts) {
      ser.x.push_back(x);
      ser.y.push_back(y);
    }
    s.series.push_back(std::move(ser));
  }
  return s;
}

}  // namespace ssmlab::report
