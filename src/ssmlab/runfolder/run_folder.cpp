#include "ssmlab/runfolder/run_folder.h"

#include "ssmlab/core/jsonl.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <fstream>
#include <set>
#include <sstream>

#include <toml++/toml.h>

#include "ssmlab/runfolder/layout.h"

namespace ssmlab::runfolder {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

template <class... Args>
[[noreturn]] void fail(const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  throw RunFolderError(os.str());
}

std::string read_text(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("cannot read '", path.string(), "'");
  std::ostringstream os;
  os << in.rdbuf();
  if (in.bad()) fail("cannot read '", path.string(), "': read error");
  return os.str();
}

// The shortest text that reads back as the same double, kept a TOML float ("1.0", not "1").
std::string real_text(double v) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  char buf[64];
  const auto res = std::to_chars(buf, buf + sizeof buf, v);
  std::string text(buf, res.ptr);
  if (text.find_first_of(".en") == std::string::npos) text += ".0";
  return text;
}

std::string quoted(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    if (c == '\n') out += "\\n";
    else out += c;
  }
  return out + "\"";
}

std::string bare_or_quoted_key(std::string_view k) {
  const bool bare = !k.empty() && std::all_of(k.begin(), k.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-';
  });
  return bare ? std::string(k) : quoted(std::string(k));
}

// A value in TOML's inline form (arrays and inline tables as config.toml would spell them).
std::string inline_text(const toml::node& node) {
  if (auto* v = node.as_string()) return quoted(v->get());
  if (auto* v = node.as_integer()) return std::to_string(v->get());
  if (auto* v = node.as_floating_point()) return real_text(v->get());
  if (auto* v = node.as_boolean()) return v->get() ? "true" : "false";
  if (auto* a = node.as_array()) {
    std::string out = "[";
    for (size_t i = 0; i < a->size(); ++i) out += (i ? ", " : "") + inline_text(*a->get(i));
    return out + "]";
  }
  if (auto* t = node.as_table()) {
    std::string out;
    for (const auto& [k, v] : *t)
      out += (out.empty() ? "{ " : ", ") + bare_or_quoted_key(k.str()) + " = " + inline_text(v);
    return out.empty() ? "{}" : out + " }";
  }
  std::ostringstream os;  // dates and times: TOML's own form
  node.visit([&](const auto& n) { os << n; });
  return os.str();
}

ConfigEntry entry_of(std::string key, const toml::node& node) {
  if (auto* v = node.as_string()) return {std::move(key), v->get(), ValueKind::string};
  if (auto* v = node.as_integer()) return {std::move(key), std::to_string(v->get()), ValueKind::integer};
  if (auto* v = node.as_floating_point()) return {std::move(key), real_text(v->get()), ValueKind::real};
  if (auto* v = node.as_boolean()) return {std::move(key), v->get() ? "true" : "false", ValueKind::boolean};
  return {std::move(key), inline_text(node), ValueKind::other};
}

struct Placed {
  ConfigEntry entry;
  toml::source_position at;
};

void flatten(const toml::table& t, const std::string& prefix, std::vector<Placed>& out) {
  for (const auto& [k, node] : t) {
    const std::string key = prefix.empty() ? std::string(k.str()) : prefix + "." + std::string(k.str());
    if (const toml::table* inner = node.as_table()) {
      flatten(*inner, key, out);
    } else if (const toml::array* a = node.as_array(); a && !a->empty() && a->is_array_of_tables()) {
      for (size_t i = 0; i < a->size(); ++i) flatten(*a->get(i)->as_table(), key + "[" + std::to_string(i) + "]", out);
    } else {
      out.push_back({entry_of(key, node), node.source().begin});
    }
  }
}

constexpr int kSearchDepth = 4;  // levels below the root searched for run folders

void find_runs(const fs::path& dir, int depth, std::vector<fs::path>& out) {
  if (is_run_folder(dir)) {
    out.push_back(dir);
    return;
  }
  std::error_code ec;
  // A report folder below the root holds no runs (the root itself may be a sweep that holds report/).
  if (depth == 0 || (depth < kSearchDepth && fs::exists(dir / std::string(kReportPage), ec))) return;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    if (!e.is_directory(ec) || e.is_symlink(ec)) continue;
    const std::string name = e.path().filename().string();
    if (name == kCheckpointsDir || name.starts_with(".")) continue;
    find_runs(e.path(), depth - 1, out);
  }
}

void read_metrics(const fs::path& file, RunFolder& r) { parse_metrics(read_text(file), file.string(), r); }

std::vector<fs::path> files_in(const fs::path& dir, std::initializer_list<std::string_view> extensions) {
  std::vector<fs::path> out;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return out;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    const std::string ext = e.path().extension().string();
    if (e.is_regular_file(ec) && std::find(extensions.begin(), extensions.end(), ext) != extensions.end())
      out.push_back(e.path());
  }
  std::sort(out.begin(), out.end());
  return out;
}

// `dir` as an absolute path without a trailing separator: its parent is the sweep folder, its name the record's key.
fs::path normal(const fs::path& dir) {
  fs::path p = fs::absolute(dir).lexically_normal();
  return p.has_filename() ? p : p.parent_path();
}

RunFolder read_one(const fs::path& dir, const fs::path& root, const std::map<std::string, SweepRecord>& manifest) {
  RunFolder r;
  r.dir = dir;
  std::error_code ec;
  const fs::path rel = fs::relative(dir, root, ec);
  r.name = ec || rel.empty() ? dir.filename().string() : rel.string();
  if (r.name == "." || r.name.empty()) r.name = fs::weakly_canonical(dir, ec).filename().string();
  const fs::path cfg = config_file(dir);
  if (fs::is_regular_file(cfg, ec)) {
    r.set_config(flatten_config(read_text(cfg), cfg.string()));
  }
  const fs::path metrics = metrics_file(dir);
  const bool has_metrics = fs::is_regular_file(metrics, ec);
  if (has_metrics) read_metrics(metrics, r);
  const fs::path res = results_file(dir);
  if (fs::is_regular_file(res, ec)) {
    json j = json::parse(read_text(res), nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded() || !j.is_object()) fail(res.string(), ": not a JSON object");
    r.results = std::move(j);
  }
  const auto m = manifest.find(normal(dir).filename().string());
  if (m != manifest.end()) {
    r.sweep_index = m->second.index;
    r.sweep_status = m->second.status;
    r.error = m->second.error.substr(0, m->second.error.find('\n'));
  }
  if (fs::exists(done_marker(dir), ec)) r.status = RunStatus::done;
  else if (r.sweep_status == "failed") r.status = RunStatus::failed;
  else if (has_metrics) r.status = RunStatus::unfinished;
  r.figure_files = files_in(figures_dir(dir), {kSpecExtension, kTableExtension});
  r.analysis_files = files_in(analysis_dir(dir), {kSpecExtension});
  return r;
}

}  // namespace

std::vector<ConfigEntry> flatten_config(const std::string& toml_text, const std::string& where) {
  toml::table t;
  try {
    t = toml::parse(toml_text, where);
  } catch (const toml::parse_error& e) {
    fail(where, ":", e.source().begin.line, ": ", e.description());
  }
  std::vector<Placed> placed;
  flatten(t, "", placed);
  std::stable_sort(placed.begin(), placed.end(), [](const Placed& a, const Placed& b) {
    return a.at.line != b.at.line ? a.at.line < b.at.line : a.at.column < b.at.column;
  });
  std::vector<ConfigEntry> out;
  for (auto& p : placed) out.push_back(std::move(p.entry));
  return out;
}

void RunFolder::set_config(std::vector<ConfigEntry> entries) {
  config_entries = std::move(entries);
  config.clear();
  for (const auto& e : config_entries) config[e.key] = e.text;
}

const char* status_name(RunStatus s) {
  switch (s) {
    case RunStatus::done: return "done";
    case RunStatus::unfinished: return "unfinished";
    case RunStatus::failed: return "failed";
    case RunStatus::fresh: return "new";
  }
  return "?";
}

bool is_run_folder(const fs::path& dir) {
  std::error_code ec;
  return fs::is_regular_file(config_file(dir), ec) || fs::is_regular_file(metrics_file(dir), ec);
}

std::vector<fs::path> find_run_folders(const fs::path& root) {
  std::error_code ec;
  if (!fs::is_directory(root, ec))
    fail("'", root.string(), "' is not a folder (expected a run folder or a folder of runs)");
  std::vector<fs::path> out;
  find_runs(root, kSearchDepth, out);
  std::sort(out.begin(), out.end());
  return out;
}

std::map<std::string, SweepRecord> read_sweep_manifest(const fs::path& sweep) {
  std::map<std::string, SweepRecord> out;
  const fs::path file = sweep_manifest(sweep);
  std::error_code ec;
  if (!fs::is_regular_file(file, ec)) return out;
  try {
    const json m = json::parse(read_text(file));
    for (const auto& r : m.at("runs")) {
      SweepRecord rec;
      rec.index = r.value("index", SIZE_MAX);
      rec.status = r.value("status", "");
      rec.error = r.value("error", "");
      out[r.at("folder").get<std::string>()] = std::move(rec);
    }
  } catch (const json::exception& e) {
    fail(file.string(), ": not a sweep manifest (", e.what(), ")");
  }
  return out;
}

RunFolder read_run_folder(const fs::path& dir, const fs::path& root) {
  return read_one(dir, root, read_sweep_manifest(normal(dir).parent_path()));
}

std::vector<RunFolder> read_run_folders(const fs::path& root) {
  std::map<fs::path, std::map<std::string, SweepRecord>> manifests;  // by sweep folder
  std::vector<RunFolder> out;
  for (const auto& dir : find_run_folders(root)) {
    const fs::path sweep = normal(dir).parent_path();
    auto it = manifests.find(sweep);
    if (it == manifests.end()) it = manifests.emplace(sweep, read_sweep_manifest(sweep)).first;
    out.push_back(read_one(dir, root, it->second));
  }
  return out;
}

std::vector<std::string> config_keys(const std::vector<RunFolder>& runs) {
  std::vector<std::string> keys;
  std::set<std::string> seen;
  for (const auto& r : runs)
    for (const auto& e : r.config_entries)
      if (seen.insert(e.key).second) keys.push_back(e.key);
  return keys;
}

namespace {

std::string unquoted(std::string v) {
  if (v.size() >= 2 && (v.front() == '"' || v.front() == '\'') && v.back() == v.front()) v = v.substr(1, v.size() - 2);
  return v;
}

// Whether key k means anything for run r: the options of a mixer other than its model.mixer, or of a task other
// than its task.name, do not (they are in every config.toml, with whatever values, and change nothing).
bool used_by(const std::string& k, const RunFolder& r) {
  auto chosen = [&](const std::string& prefix, const std::string& selector) {
    if (k.rfind(prefix, 0) != 0) return true;
    const auto it = r.config.find(selector);
    if (it == r.config.end()) return true;
    const std::string rest = k.substr(prefix.size());
    const auto cut = rest.find_first_of(".[");
    if (cut == std::string::npos) return true;  // a plain field of the section (task.name), not a sub-table's
    const std::string name = rest.substr(0, cut);
    return name == unquoted(it->second);
  };
  return chosen("model.mixers.", "model.mixer") && chosen("task.", "task.name");
}

}  // namespace

std::vector<std::string> differing_keys(const std::vector<RunFolder>& runs) {
  std::vector<std::string> out;
  for (const auto& k : config_keys(runs)) {
    if (k == "run.out_dir") continue;
    std::set<std::string> values;
    for (const auto& r : runs) {
      if (!used_by(k, r)) continue;
      const auto it = r.config.find(k);
      values.insert(it == r.config.end() ? std::string("\x01missing") : it->second);
    }
    if (values.size() > 1) out.push_back(k);
  }
  return out;
}

json final_metrics(const RunFolder& r) {
  if (r.results) return *r.results;
  json j = json::object();
  if (const json* e = r.newest_eval()) {
    j = *e;
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

std::vector<std::string> metric_order(const std::vector<json>& finals) {
  std::set<std::string> keys;
  for (const auto& f : finals)
    for (const auto& [k, v] : f.items()) keys.insert(k);
  std::vector<std::string> out;
  for (const char* k : {"steps", "test_acc", "test_loss"})
    if (keys.count(k)) out.push_back(k);
  for (const auto& k : keys)
    if (k.starts_with("test_acc/")) out.push_back(k);
  for (const auto& k : keys)
    if (std::find(out.begin(), out.end(), k) == out.end()) out.push_back(k);
  return out;
}

void parse_metrics(std::string_view text, const std::string& file, RunFolder& r) {
  // Limits, torn last line and wrong field types as everywhere metrics.jsonl is read (core/jsonl.h).
  for (auto& rec : jsonl::parse<RunFolderError>(text, file)) {
    const std::string kind = jsonl::kind<RunFolderError>(rec, file);
    if (kind != "train" && kind != "eval") continue;
    if (!jsonl::number<RunFolderError>(rec, "step", file))
      jsonl::fail_at<RunFolderError>(file, rec.line, "a ", kind, " record needs a numeric \"step\"");
    (kind == "train" ? r.train : r.eval).push_back(std::move(rec.value));
  }
}

}  // namespace ssmlab::runfolder
