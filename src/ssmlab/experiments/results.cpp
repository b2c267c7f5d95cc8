#include "ssmlab/experiments/results.h"

#include <fcntl.h>
#include <sqlite3.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "ssmlab/core/error.h"
#include "ssmlab/core/error_kinds.h"
#include "ssmlab/core/io.h"
#include "ssmlab/experiments/options_io.h"
#include "ssmlab/runfolder/run_folder.h"

namespace ssmlab::experiments {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

// A config value as a typed cell, so that SQLite columns and filters see numbers as numbers.
Cell cell_of(const runfolder::ConfigEntry& e) {
  switch (e.kind) {
    case runfolder::ValueKind::integer: return static_cast<int64_t>(std::stoll(e.text));
    case runfolder::ValueKind::real: return std::strtod(e.text.c_str(), nullptr);
    case runfolder::ValueKind::boolean: return e.text == "true";
    default: return e.text;
  }
}

Cell cell_of(const toml::node& node) {
  if (auto* v = node.as_boolean()) return v->get();
  if (auto* v = node.as_integer()) return v->get();
  if (auto* v = node.as_floating_point()) return v->get();
  if (auto* v = node.as_string()) return v->get();
  return detail::inline_toml(node);
}

Cell cell_of(const json& j) {
  if (j.is_boolean()) return j.get<bool>();
  if (j.is_number_integer()) return j.get<int64_t>();
  if (j.is_number()) return j.get<double>();
  if (j.is_string()) return j.get<std::string>();
  if (j.is_null()) return std::monostate{};
  return j.dump();
}

// The table's status column: the run folder's own state, or what the sweep's manifest says of a run that has
// not finished (running, stopped, pending, failed).
std::string status_text(const runfolder::RunFolder& r) {
  if (r.done()) return "done";
  if (!r.sweep_status.empty() && r.sweep_status != "done-before") return r.sweep_status;
  return runfolder::status_name(r.status);
}

std::string to_lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

bool is_number(const Cell& c) {
  return std::holds_alternative<int64_t>(c) || std::holds_alternative<double>(c) || std::holds_alternative<bool>(c);
}

double number(const Cell& c) {
  if (auto* b = std::get_if<bool>(&c)) return *b ? 1.0 : 0.0;
  if (auto* i = std::get_if<int64_t>(&c)) return static_cast<double>(*i);
  return std::get<double>(c);
}

struct Filter {
  std::string key, op, text;
  Cell value;
};

Filter parse_filter(const std::string& f) {
  static const char* ops[] = {"!=", "<=", ">=", "=", "<", ">"};
  size_t best = std::string::npos;
  std::string op;
  for (const char* o : ops) {
    const size_t p = f.find(o);
    if (p != std::string::npos && (p < best || (p == best && std::string(o).size() > op.size()))) best = p, op = o;
  }
  if (best == std::string::npos || best == 0)
    fail_config("--filter '", f, "': expected key=value (or !=, <, <=, >, >=), e.g. --filter model.mixer=mamba1");
  Filter out{f.substr(0, best), op, f.substr(best + op.size()), {}};
  while (!out.key.empty() && out.key.back() == ' ') out.key.pop_back();
  while (!out.text.empty() && out.text.front() == ' ') out.text.erase(0, 1);
  try {
    const toml::table t = toml::parse("v = " + out.text);
    out.value = cell_of(*t.get("v"));
  } catch (const toml::parse_error&) {
    out.value = out.text;  // a bare word: a string
  }
  return out;
}

bool holds(const Cell& cell, const Filter& f) {
  if (std::holds_alternative<std::monostate>(cell)) return f.op == "!=";
  int cmp = 0;
  if (is_number(cell) && is_number(f.value)) {
    const double a = number(cell), b = number(f.value);
    const bool equal = std::fabs(a - b) <= 1e-9 * std::max({1.0, std::fabs(a), std::fabs(b)});
    cmp = equal ? 0 : (a < b ? -1 : 1);
  } else {
    const std::string a = cell_text(cell), b = cell_text(f.value);
    cmp = a.compare(b) < 0 ? -1 : (a == b ? 0 : 1);
  }
  if (f.op == "=") return cmp == 0;
  if (f.op == "!=") return cmp != 0;
  if (f.op == "<") return cmp < 0;
  if (f.op == "<=") return cmp <= 0;
  if (f.op == ">") return cmp > 0;
  return cmp >= 0;
}

std::string csv_field(const std::string& s) {
  if (s.find_first_of(",\"\n\r") == std::string::npos) return s;
  std::string out = "\"";
  for (char c : s) out += c == '"' ? std::string("\"\"") : std::string(1, c);
  return out + "\"";
}


}  // namespace

std::string cell_text(const Cell& c) {
  if (std::holds_alternative<std::monostate>(c)) return "";
  if (auto* b = std::get_if<bool>(&c)) return *b ? "true" : "false";
  if (auto* i = std::get_if<int64_t>(&c)) return std::to_string(*i);
  if (auto* d = std::get_if<double>(&c)) return detail::format_value(*d);
  return std::get<std::string>(c);
}

ResultsTable collect_results(const fs::path& dir, const ResultsOptions& opts) {
  SSMLAB_CHECK(fs::is_directory(dir), "results: ", dir.string(), " is not a directory");
  std::vector<runfolder::RunFolder> runs;
  try {
    runs = runfolder::read_run_folders(dir);
  } catch (const runfolder::RunFolderError& e) {
    fail_data("results: ", e.what());
  }
  SSMLAB_CHECK(!runs.empty(), "results: no run folder (a folder with config.toml or metrics.jsonl, up to 4 levels ",
               "down) under ", dir.string());
  std::stable_sort(runs.begin(), runs.end(), [](const runfolder::RunFolder& a, const runfolder::RunFolder& b) {
    return a.sweep_index != b.sweep_index ? a.sweep_index < b.sweep_index : a.name < b.name;
  });

  // Config columns: keys in file order of first appearance; only those that differ unless all_keys.
  const std::vector<std::string> keys = runfolder::config_keys(runs);
  const std::set<std::string> seen(keys.begin(), keys.end());
  const std::vector<std::string> config_cols = opts.all_keys ? keys : runfolder::differing_keys(runs);
  std::vector<json> finals;
  for (const auto& r : runs) finals.push_back(runfolder::final_metrics(r));
  const std::vector<std::string> metric_cols = runfolder::metric_order(finals);
  const bool any_error = std::any_of(runs.begin(), runs.end(), [](const auto& r) { return !r.error.empty(); });

  ResultsTable table;
  table.columns = {"run", "status"};
  table.columns.insert(table.columns.end(), config_cols.begin(), config_cols.end());
  table.columns.insert(table.columns.end(), metric_cols.begin(), metric_cols.end());
  if (any_error) table.columns.push_back("error");
  table.config_columns = config_cols.size();

  std::vector<Filter> filters;
  for (const auto& f : opts.filters) {
    Filter parsed = parse_filter(f);
    const bool known = std::find(table.columns.begin(), table.columns.end(), parsed.key) != table.columns.end() ||
                       seen.count(parsed.key) > 0;
    if (!known) {
      std::string cols;
      for (const auto& c : table.columns) cols += (cols.empty() ? "" : ", ") + c;
      fail_config("--filter '", f, "': no run has a key or column '", parsed.key, "' (columns: ", cols,
           "; any config key from `ssmlab list keys` works too)");
    }
    filters.push_back(std::move(parsed));
  }

  std::map<std::string, std::set<std::string>> existing;  // filter key -> the values the runs hold
  for (size_t i = 0; i < runs.size(); ++i) {
    const auto& r = runs[i];
    std::map<std::string, Cell> row_by_col;
    for (const auto& e : r.config_entries) row_by_col[e.key] = cell_of(e);
    for (const auto& [k, v] : finals[i].items()) row_by_col[k] = cell_of(v);
    row_by_col["run"] = r.name;
    row_by_col["status"] = status_text(r);
    if (any_error) row_by_col["error"] = r.error.empty() ? Cell{} : Cell{r.error};
    bool keep = true;
    for (const auto& f : filters) {
      const auto it = row_by_col.find(f.key);
      keep = keep && holds(it == row_by_col.end() ? Cell{} : it->second, f);
      existing[f.key].insert(it == row_by_col.end() ? "(none)" : cell_text(it->second));
    }
    if (!keep) continue;
    std::vector<Cell> row;
    for (const auto& c : table.columns) {
      const auto it = row_by_col.find(c);
      row.push_back(it == row_by_col.end() ? Cell{} : it->second);
    }
    table.rows.push_back(std::move(row));
  }
  // A filter that keeps nothing is almost always a typo in the value: say what there is instead.
  if (!filters.empty() && table.rows.empty()) {
    std::string what;
    for (const auto& [key, values] : existing) {
      std::string list;
      size_t shown = 0;
      for (const auto& v : values) {
        if (++shown > 12) {
          list += ", ...";
          break;
        }
        list += (list.empty() ? "" : ", ") + v;
      }
      what += str("; ", key, " has ", list);
    }
    std::string filter_text;
    for (const auto& f : opts.filters) filter_text += (filter_text.empty() ? "" : " ") + ("--filter '" + f + "'");
    fail_config(filter_text, ": no run matches (", runs.size(), " run", runs.size() == 1 ? "" : "s", " under ",
                dir.string(), what, ")");
  }
  return table;
}

std::string to_csv(const ResultsTable& t) {
  std::string out;
  auto line = [&](const std::vector<std::string>& cells) {
    for (size_t c = 0; c < cells.size(); ++c) {
      if (c) out += ',';
      out += csv_field(cells[c]);
    }
    out += '\n';
  };
  line(t.columns);
  for (const auto& row : t.rows) {
    std::vector<std::string> cells;
    for (const auto& v : row) cells.push_back(cell_text(v));
    line(cells);
  }
  return out;
}

void write_csv(const ResultsTable& table, const fs::path& file) {
  if (file.has_parent_path()) fs::create_directories(file.parent_path());
  write_file_atomic(file, to_csv(table));
}

std::vector<std::string> sqlite_columns(const std::vector<std::string>& columns) {
  std::vector<std::string> out;
  std::set<std::string> taken;
  for (const auto& col : columns) {
    std::string n;
    for (char c : col) {
      const bool word = std::isalnum(static_cast<unsigned char>(c)) || c == '_';
      if (word) n += c;
      else if (!n.empty() && n.back() != '_') n += '_';  // model.mixer -> model_mixer, a[0].b -> a_0_b
    }
    const bool ends_in_word = !col.empty() && (std::isalnum(static_cast<unsigned char>(col.back())) || col.back() == '_');
    if (!ends_in_word && !n.empty() && n.back() == '_') n.pop_back();
    if (n.empty() || std::isdigit(static_cast<unsigned char>(n[0]))) n = "c_" + n;
    if (sqlite3_keyword_check(n.c_str(), static_cast<int>(n.size()))) n += '_';  // e.g. a metric named "order"
    std::string unique = n;
    for (int k = 2; !taken.insert(to_lower(unique)).second; ++k) unique = str(n, '_', k);  // SQLite folds case
    out.push_back(unique);
  }
  return out;
}

void write_sqlite(const ResultsTable& t, const fs::path& file) {
  if (file.has_parent_path()) fs::create_directories(file.parent_path());
  const fs::path tmp = file.string() + str(".tmp.", getpid());
  fs::remove(tmp);
  sqlite3* db = nullptr;
  auto check = [&](int rc, const char* what) {
    if (rc == SQLITE_OK || rc == SQLITE_DONE || rc == SQLITE_ROW) return;
    const std::string msg = db ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
    sqlite3_close(db);
    fs::remove(tmp);
    fail("results: writing ", file.string(), ": ", what, ": ", msg);
  };
  check(sqlite3_open_v2(tmp.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, nullptr), "open");
  // The file becomes visible only by the rename below, so no journal is needed while building it.
  check(sqlite3_exec(db, "PRAGMA journal_mode=OFF; BEGIN;", nullptr, nullptr, nullptr), "begin");
  std::string create = "CREATE TABLE runs (", insert = "INSERT INTO runs VALUES (";
  std::vector<std::string> kinds;
  const std::vector<std::string> names = sqlite_columns(t.columns);
  for (size_t c = 0; c < t.columns.size(); ++c) {
    // Booleans are the text 'true' / 'false', as in results.csv and results.json (README, "Results").
    bool all_int = true, all_num = true;
    for (const auto& row : t.rows) {
      const Cell& v = row[c];
      if (std::holds_alternative<std::monostate>(v)) continue;
      all_int = all_int && std::holds_alternative<int64_t>(v);
      all_num = all_num && (std::holds_alternative<int64_t>(v) || std::holds_alternative<double>(v));
    }
    const char* type = all_int ? "INTEGER" : all_num ? "REAL" : "TEXT";
    create += str(c ? ", " : "", names[c], " ", type);
    insert += c ? ", ?" : "?";
    kinds.push_back(c < 2 ? "run" : c < 2 + t.config_columns ? "config" : t.columns[c] == "error" ? "run" : "metric");
  }
  check(sqlite3_exec(db, (create + ");").c_str(), nullptr, nullptr, nullptr), "create table runs");
  check(sqlite3_exec(db, "CREATE TABLE column_kinds (name TEXT, kind TEXT, key TEXT);", nullptr, nullptr, nullptr),
        "create table column_kinds");
  sqlite3_stmt* st = nullptr;
  check(sqlite3_prepare_v2(db, (insert + ");").c_str(), -1, &st, nullptr), "prepare insert");
  for (const auto& row : t.rows) {
    for (size_t c = 0; c < row.size(); ++c) {
      const int i = static_cast<int>(c) + 1;
      const Cell& v = row[c];
      if (auto* b = std::get_if<bool>(&v)) sqlite3_bind_text(st, i, *b ? "true" : "false", -1, SQLITE_STATIC);
      else if (auto* n = std::get_if<int64_t>(&v)) sqlite3_bind_int64(st, i, *n);
      else if (auto* d = std::get_if<double>(&v)) sqlite3_bind_double(st, i, *d);
      else if (auto* s = std::get_if<std::string>(&v)) sqlite3_bind_text(st, i, s->c_str(), -1, SQLITE_TRANSIENT);
      else sqlite3_bind_null(st, i);
    }
    const int rc = sqlite3_step(st);
    if (rc != SQLITE_DONE) sqlite3_finalize(st);
    check(rc, "insert a row");
    sqlite3_reset(st);
  }
  sqlite3_finalize(st);
  check(sqlite3_prepare_v2(db, "INSERT INTO column_kinds VALUES (?, ?, ?);", -1, &st, nullptr), "prepare columns");
  for (size_t c = 0; c < t.columns.size(); ++c) {
    sqlite3_bind_text(st, 1, names[c].c_str(), -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 2, kinds[c].c_str(), -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 3, t.columns[c].c_str(), -1, SQLITE_TRANSIENT);
    const int rc = sqlite3_step(st);
    if (rc != SQLITE_DONE) sqlite3_finalize(st);
    check(rc, "insert a column");
    sqlite3_reset(st);
  }
  sqlite3_finalize(st);
  check(sqlite3_exec(db, "COMMIT;", nullptr, nullptr, nullptr), "commit");
  check(sqlite3_close(db), "close");
  db = nullptr;
  const int fd = open(tmp.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd >= 0) {
    fsync(fd);
    close(fd);
  }
  std::error_code ec;
  fs::rename(tmp, file, ec);
  if (ec) {
    fs::remove(tmp);
    fail("results: cannot rename ", tmp.string(), " to ", file.string(), ": ", ec.message());
  }
  sync_directory(file.has_parent_path() ? file.parent_path() : fs::path("."));
}

std::string format_table(const ResultsTable& t) {
  std::vector<std::vector<std::string>> cells;
  cells.push_back(t.columns);
  for (const auto& row : t.rows) {
    std::vector<std::string> line;
    for (const auto& v : row) {
      if (auto* d = std::get_if<double>(&v)) {
        char buf[32];
        std::snprintf(buf, sizeof buf, "%.4g", *d);
        line.emplace_back(buf);
      } else {
        line.push_back(cell_text(v));
      }
    }
    cells.push_back(std::move(line));
  }
  std::vector<size_t> width(t.columns.size(), 0);
  for (const auto& line : cells)
    for (size_t c = 0; c < line.size(); ++c) width[c] = std::max(width[c], line[c].size());
  std::string out;
  for (size_t r = 0; r < cells.size(); ++r) {
    std::string line;
    for (size_t c = 0; c < cells[r].size(); ++c) {
      line += cells[r][c];
      if (c + 1 < cells[r].size()) line += std::string(width[c] - cells[r][c].size() + 2, ' ');
    }
    out += line + "\n";
    if (r == 0) {
      size_t total = 0;
      for (size_t c = 0; c < width.size(); ++c) total += width[c] + (c + 1 < width.size() ? 2 : 0);
      out += std::string(total, '-') + "\n";
    }
  }
  return out;
}

}  // namespace ssmlab::experiments
