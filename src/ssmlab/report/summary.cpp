#include "ssmlab/report/summary.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <map>
#include <set>

namespace ssmlab::report {
namespace {

using nlohmann::json;

// Config keys that never make a column or a legend: where the run was written is not what the run is.
const std::set<std::string> kIgnoredKeys = {"run.out_dir"};

bool parse_number(const std::string& s, double* out) {
  if (s.empty()) return false;
  char* end = nullptr;
  *out = std::strtod(s.c_str(), &end);
  return end != s.c_str() && *end == '\0' && std::isfinite(*out);
}

}  // namespace

std::string run_label(const RunData& r, const std::vector<std::string>& keys) {
  std::string label;
  for (const auto& k : keys) {
    if (k == "run.name" || k == "run.seed" || k == "run.out_dir") continue;
    const auto it = r.config.find(k);
    label += (label.empty() ? "" : ", ") + k.substr(k.rfind('.') + 1) + "=" + (it == r.config.end() ? "-" : it->second);
  }
  return label;
}

std::vector<std::string> differing_keys(const std::vector<RunData>& runs) {
  std::set<std::string> all;
  for (const auto& r : runs)
    for (const auto& [k, v] : r.config) all.insert(k);
  std::vector<std::string> out;
  for (const auto& k : all) {
    if (kIgnoredKeys.count(k)) continue;
    std::set<std::string> values;
    for (const auto& r : runs) {
      const auto it = r.config.find(k);
      values.insert(it == r.config.end() ? std::string("\x01missing") : it->second);
    }
    if (values.size() > 1) out.push_back(k);
  }
  return out;
}

json final_metrics(const RunData& r) {
  if (r.results) return *r.results;
  json j = json::object();
  if (!r.eval.empty()) {
    j = r.eval.back();
    j.erase("kind");
    j.erase("epoch");
  } else if (!r.train.empty()) {
    j["steps"] = r.train.back().value("step", json());
  }
  if (j.contains("step")) {
    j["steps"] = j["step"];
    j.erase("step");
  }
  return j;
}

std::optional<FigureSpec> curve_figure(const std::vector<RunData>& runs, const std::vector<std::string>& keys,
                                       const std::string& key, const std::string& kind, const std::string& title,
                                       const std::string& ylabel, bool logy) {
  FigureSpec s;
  s.kind = FigureKind::line;
  s.title = title;
  s.xlabel = "step";
  s.ylabel = ylabel;
  s.logy = logy;
  s.style = "lines";
  for (const auto& r : runs) {
    const auto pts = metric_series(kind == "train" ? r.train : r.eval, key);
    if (pts.empty()) continue;
    const std::string label = run_label(r, keys);
    Series ser{label.empty() ? r.name : label, {}, {}, {}};
    for (const auto& [x, y] : pts) {
      ser.x.push_back(x);
      ser.y.push_back(y);
    }
    s.series.push_back(std::move(ser));
  }
  if (s.series.empty()) return std::nullopt;
  if (s.series.size() == 1 && runs.size() == 1) s.series[0].name = key;
  std::set<std::string> names;  // runs that differ only in run.name or run.seed: their folder names tell them apart
  bool clash = false;
  for (const auto& ser : s.series) clash = clash || !names.insert(ser.name).second;
  if (clash) {
    size_t i = 0;
    for (const auto& r : runs)
      if (!metric_series(kind == "train" ? r.train : r.eval, key).empty()) s.series[i++].name = r.name;
  }
  size_t most = 0;
  for (const auto& ser : s.series) most = std::max(most, ser.x.size());
  if (most <= 40) s.style = "linespoints";
  return s;
}

std::optional<FigureSpec> sweep_figure(const std::vector<RunData>& runs, const std::vector<std::string>& keys) {
  std::vector<std::string> keys_used;
  for (const auto& k : keys)
    if (k != "run.name" && k != "run.seed") keys_used.push_back(k);
  // The x key: numeric in every run with 2+ values. Among those, the one that leaves the fewest lines (the other
  // keys' combinations), so a key zipped with another (determined by it) does not become x with one point per
  // line; then the one with the most values; then the first by name.
  auto value_of = [](const RunData& r, const std::string& k) {
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
    const json m = final_metrics(r);
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
