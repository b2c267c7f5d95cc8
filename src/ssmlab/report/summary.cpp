#include "ssmlab/report/summary.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <map>
#include <set>
#include <tuple>

#include "ssmlab/report/io.h"
#include "ssmlab/runfolder/layout.h"

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

std::vector<std::string> short_key_names(const std::vector<std::string>& keys) {
  auto suffix = [](const std::string& k, size_t parts) {  // the last `parts` dotted components
    size_t at = k.size();
    for (size_t i = 0; i < parts; ++i) {
      const size_t dot = at == 0 ? std::string::npos : k.rfind('.', at - 1);
      if (dot == std::string::npos) return k;
      at = dot;
    }
    return k.substr(at + 1);
  };
  std::vector<std::string> out;
  for (const auto& k : keys) {
    std::string name = k;
    for (size_t parts = 1; parts < 16; ++parts) {
      const std::string s = suffix(k, parts);
      size_t same = 0;
      for (const auto& other : keys) same += suffix(other, parts) == s ? 1 : 0;
      if (same == 1 || s == k) {
        name = s;
        break;
      }
    }
    out.push_back(name);
  }
  return out;
}

std::string run_label(const RunFolder& r, const std::vector<std::string>& keys) {
  std::vector<std::string> used;
  for (const auto& k : keys)
    if (k != "run.name" && k != "run.out_dir") used.push_back(k);
  const auto names = short_key_names(used);
  std::string label;
  for (size_t i = 0; i < used.size(); ++i) {
    const auto it = r.config.find(used[i]);
    label += (label.empty() ? "" : ", ") + names[i] + "=" + (it == r.config.end() ? "-" : it->second);
  }
  return label;
}

std::vector<std::string> label_keys(const std::vector<RunFolder>& runs, const std::vector<std::string>& keys) {
  std::vector<std::string> cand;
  for (const auto& k : keys)
    if (k != "run.name" && k != "run.out_dir") cand.push_back(k);
  auto value = [](const RunFolder& r, const std::string& k) {
    const auto it = r.config.find(k);
    return it == r.config.end() ? std::string("\x1e") : it->second;  // a missing key differs from every value
  };
  std::vector<bool> keep(cand.size(), true);
  auto tells_apart = [&] {
    std::set<std::string> seen;
    for (const auto& r : runs) {
      std::string t;
      for (size_t i = 0; i < cand.size(); ++i)
        if (keep[i]) t += value(r, cand[i]) + "\x1f";
      if (!seen.insert(t).second) return false;
    }
    return true;
  };
  if (!tells_apart()) return cand;
  std::vector<size_t> order(cand.size());
  std::vector<size_t> distinct(cand.size());
  std::vector<bool> numeric(cand.size(), true);
  for (size_t i = 0; i < cand.size(); ++i) {
    order[i] = i;
    std::set<std::string> v;
    for (const auto& r : runs) {
      v.insert(value(r, cand[i]));
      double x = 0;
      numeric[i] = numeric[i] && parse_number(value(r, cand[i]), &x);
    }
    distinct[i] = v.size();
  }
  // Dropped first: fewest values; among equals a numeric key before a named one (mixer=h3 says more than the
  // max_position_embeddings=0 zipped with it), then the later key (the sweep's first keys are its main axes).
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    if (distinct[a] != distinct[b]) return distinct[a] < distinct[b];
    if (numeric[a] != numeric[b]) return static_cast<bool>(numeric[a]);
    return a > b;
  });
  for (size_t i : order) {
    keep[i] = false;
    if (!tells_apart()) keep[i] = true;
  }
  std::vector<std::string> out;
  for (size_t i = 0; i < cand.size(); ++i)
    if (keep[i]) out.push_back(cand[i]);
  return out;
}

std::vector<std::string> sweep_key_order(const std::vector<RunFolder>& runs, const std::vector<std::string>& differing) {
  const std::set<std::string> wanted(differing.begin(), differing.end());
  std::vector<std::string> out;
  std::set<std::string> taken, sweeps;
  auto take = [&](const std::string& k) {
    if (wanted.count(k) && taken.insert(k).second) out.push_back(k);
  };
  for (const auto& r : runs) {
    const auto manifest = r.dir.parent_path() / runfolder::kSweepManifest;
    if (r.sweep_index == SIZE_MAX || !sweeps.insert(manifest.string()).second) continue;
    try {  // only the order of the rows depends on it: a manifest without "keys" leaves the keys' own order
      const json j = json::parse(read_file(manifest));
      if (j.is_object() && j.contains("keys") && j["keys"].is_array())
        for (const auto& k : j["keys"])
          if (k.is_string()) take(k.get<std::string>());
    } catch (const json::exception&) {
    } catch (const ReportError&) {
    }
  }
  for (const auto& k : differing) take(k);
  return out;
}

void sort_runs(std::vector<RunFolder>& runs, const std::vector<std::string>& key_order) {
  const size_t n = runs.size();
  std::vector<size_t> by_sweep(n);  // the runs in the order the sweep ran them, then by name
  for (size_t i = 0; i < n; ++i) by_sweep[i] = i;
  std::sort(by_sweep.begin(), by_sweep.end(), [&](size_t a, size_t b) {
    return runs[a].sweep_index != runs[b].sweep_index ? runs[a].sweep_index < runs[b].sweep_index
                                                      : runs[a].name < runs[b].name;
  });
  bool any_sweep = false;
  for (const auto& r : runs) any_sweep = any_sweep || r.sweep_index != SIZE_MAX;
  // Per key, each run's rank: its number, or the place of its value in the sweep's (or alphabetical) order.
  std::vector<std::vector<double>> rank(key_order.size(), std::vector<double>(n, 0.0));
  for (size_t k = 0; k < key_order.size(); ++k) {
    std::vector<std::string> values(n);
    bool numeric = true;
    for (size_t i = 0; i < n; ++i) {
      const auto it = runs[i].config.find(key_order[k]);
      values[i] = it == runs[i].config.end() ? "" : it->second;
      double v = 0;
      if (numeric && parse_number(values[i], &v)) rank[k][i] = v;
      else numeric = false;
    }
    if (numeric) continue;
    std::map<std::string, size_t> place;
    if (any_sweep) {
      for (size_t i : by_sweep) place.emplace(values[i], place.size());
    } else {
      for (const auto& v : values) place.emplace(v, 0);
      size_t p = 0;
      for (auto& [v, at] : place) at = p++;
    }
    for (size_t i = 0; i < n; ++i) rank[k][i] = static_cast<double>(place[values[i]]);
  }
  std::vector<size_t> order(n);
  for (size_t i = 0; i < n; ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    for (size_t k = 0; k < key_order.size(); ++k)
      if (rank[k][a] != rank[k][b]) return rank[k][a] < rank[k][b];
    if (runs[a].sweep_index != runs[b].sweep_index) return runs[a].sweep_index < runs[b].sweep_index;
    return runs[a].name < runs[b].name;
  });
  std::vector<RunFolder> sorted;
  sorted.reserve(n);
  for (size_t i : order) sorted.push_back(std::move(runs[i]));
  runs = std::move(sorted);
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
  for (size_t i = 0; i < runs.size(); ++i) {
    const RunFolder& r = runs[i];
    const auto pts = metric_series(kind == "train" ? r.train : r.eval, key);
    if (pts.empty()) continue;
    with.push_back(&r);
    Series ser;
    ser.group = static_cast<int>(i);
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
  // One line per combination of the other keys, in the order of the runs; each point remembers its run.
  std::vector<std::string> others, short_others;
  for (const auto& k : keys_used)
    if (k != best) others.push_back(k);
  for (const auto& k : label_keys(runs, keys))
    if (k != best && k != "run.seed") short_others.push_back(k);
  struct Line {
    std::string full, name;
    std::vector<std::tuple<double, double, int>> pts;  // x, test accuracy, run
  };
  std::vector<Line> lines;
  double lo = INFINITY, hi = -INFINITY;
  for (size_t i = 0; i < runs.size(); ++i) {
    const RunFolder& r = runs[i];
    const json m = runfolder::final_metrics(r);
    if (!m.contains("test_acc") || !m["test_acc"].is_number()) continue;
    const std::string full = run_label(r, others);
    double x = 0;
    parse_number(r.config.at(best), &x);
    lo = std::min(lo, x);
    hi = std::max(hi, x);
    auto it = std::find_if(lines.begin(), lines.end(), [&](const Line& l) { return l.full == full; });
    if (it == lines.end()) it = lines.insert(lines.end(), Line{full, run_label(r, short_others), {}});
    it->pts.emplace_back(x, m["test_acc"].get<double>(), static_cast<int>(i));
  }
  if (lines.empty()) return std::nullopt;
  std::set<std::string> names;
  for (const auto& l : lines) names.insert(l.name);
  const bool short_names_clash = names.size() != lines.size();
  FigureSpec s;
  s.kind = FigureKind::line;
  s.title = "final test accuracy vs " + best;
  s.xlabel = best;
  s.ylabel = "test accuracy";
  s.logx = lo > 0 && hi / lo >= 4;  // widths, state sizes, learning rates: usually swept geometrically
  s.ymin = 0.0;
  s.ymax = 1.0;
  s.style = "linespoints";
  for (auto& l : lines) {
    std::sort(l.pts.begin(), l.pts.end());
    const std::string& name = short_names_clash ? l.full : l.name;
    Series ser{name.empty() ? "test_acc" : name, {}, {}, {}};
    for (const auto& [x, y, run] : l.pts) {
      ser.x.push_back(x);
      ser.y.push_back(y);
      ser.point_groups.push_back(run);
    }
    s.series.push_back(std::move(ser));
  }
  return s;
}

}  // namespace ssmlab::report
