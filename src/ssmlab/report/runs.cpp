#include "ssmlab/report/runs.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <set>
#include <sstream>

#include <toml++/toml.h>

#include "ssmlab/core/jsonl.h"
#include "ssmlab/report/io.h"

namespace ssmlab::report {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

std::string scalar_text(const toml::node& node) {
  if (auto* s = node.as_string()) return s->get();
  if (auto* i = node.as_integer()) return std::to_string(i->get());
  if (auto* f = node.as_floating_point()) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%g", f->get());
    return buf;
  }
  if (auto* b = node.as_boolean()) return b->get() ? "true" : "false";
  std::ostringstream os;  // dates and times: TOML's own form
  node.visit([&](const auto& n) { os << n; });
  return os.str();
}

void flatten(const toml::node& node, const std::string& prefix, std::map<std::string, std::string>& out) {
  if (auto* t = node.as_table()) {
    for (const auto& [k, v] : *t) flatten(v, prefix.empty() ? std::string(k.str()) : prefix + "." + std::string(k.str()), out);
  } else if (auto* a = node.as_array()) {
    if (a->is_array_of_tables()) {
      for (size_t i = 0; i < a->size(); ++i) flatten(*a->get(i), prefix + "[" + std::to_string(i) + "]", out);
    } else {
      std::string s = "[";
      for (size_t i = 0; i < a->size(); ++i) s += (i ? ", " : "") + scalar_text(*a->get(i));
      out[prefix] = s + "]";
    }
  } else {
    out[prefix] = scalar_text(node);
  }
}

constexpr int kSearchDepth = 4;  // levels below the report's root searched for run folders

void find_runs(const fs::path& dir, int depth, std::vector<fs::path>& out) {
  if (is_run_dir(dir)) {
    out.push_back(dir);
    return;
  }
  if (depth == 0 || (depth < kSearchDepth && fs::exists(dir / "report.html"))) return;  // a report folder below the root
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    if (!e.is_directory(ec) || e.is_symlink(ec)) continue;
    const std::string name = e.path().filename().string();
    if (name == "checkpoints" || name.starts_with(".")) continue;
    find_runs(e.path(), depth - 1, out);
  }
}

}  // namespace

bool is_run_dir(const fs::path& dir) {
  std::error_code ec;
  return fs::is_regular_file(dir / "config.toml", ec) || fs::is_regular_file(dir / "metrics.jsonl", ec);
}

std::vector<fs::path> find_run_dirs(const fs::path& root) {
  std::error_code ec;
  if (!fs::is_directory(root, ec)) report_fail("'", root.string(), "' is not a folder (expected a run folder or a folder of runs)");
  std::vector<fs::path> out;
  find_runs(root, kSearchDepth, out);
  std::sort(out.begin(), out.end());
  return out;
}

std::map<std::string, std::string> flatten_toml(const std::string& text, const std::string& where) {
  std::map<std::string, std::string> out;
  try {
    const toml::table t = toml::parse(text, where);
    flatten(t, "", out);
  } catch (const toml::parse_error& e) {
    std::ostringstream os;
    os << where << ":" << e.source().begin.line << ": " << e.description();
    throw ReportError(os.str());
  }
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

void read_metrics_jsonl(std::string_view text, const std::string& file, RunData& r) {
  for (auto& rec : jsonl::parse<ReportError>(text, file)) {
    const std::string kind = jsonl::kind<ReportError>(rec, file);
    if (kind == "train") r.train.push_back(std::move(rec.value));
    else if (kind == "eval") r.eval.push_back(std::move(rec.value));
  }
}

RunData load_run(const fs::path& dir, const fs::path& root) {
  RunData r;
  r.dir = dir;
  std::error_code ec;
  const fs::path rel = fs::relative(dir, root, ec);
  r.name = ec || rel.empty() ? dir.filename().string() : rel.string();
  if (r.name == ".") r.name = fs::weakly_canonical(dir, ec).filename().string();
  if (fs::is_regular_file(dir / "config.toml", ec))
    r.config = flatten_toml(read_file(dir / "config.toml"), (dir / "config.toml").string());
  if (fs::is_regular_file(dir / "metrics.jsonl", ec))
    read_metrics_jsonl(read_file(dir / "metrics.jsonl"), (dir / "metrics.jsonl").string(), r);
  if (fs::is_regular_file(dir / "results.json", ec)) {
    const fs::path f = dir / "results.json";
    json j = json::parse(read_file(f), nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded() || !j.is_object()) report_fail(f.string(), ": not a JSON object");
    r.results = std::move(j);
  }
  r.done = fs::exists(dir / "DONE", ec);
  if (fs::is_directory(dir / "figures", ec)) {
    for (const auto& e : fs::directory_iterator(dir / "figures", ec)) {
      const auto ext = e.path().extension().string();
      if (e.is_regular_file(ec) && (ext == ".json" || ext == ".csv")) r.figure_files.push_back(e.path());
    }
    std::sort(r.figure_files.begin(), r.figure_files.end());
  }
  return r;
}

}  // namespace ssmlab::report
