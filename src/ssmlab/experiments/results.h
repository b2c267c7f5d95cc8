// Result tables: every run folder under a directory (config.toml + results.json, or the last eval record
// of metrics.jsonl for an unfinished run; read by runfolder/run_folder.h) as one table whose columns are the run, its status, the config
// keys whose values differ between the runs, and the final metrics. Written as CSV and as a SQLite file
// (table `runs`), each replaced atomically, so several processes may read and rewrite them.
#pragma once
#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

namespace ssmlab::experiments {

// A cell: empty (the run lacks the key), a bool, an integer, a real or text.
using Cell = std::variant<std::monostate, bool, int64_t, double, std::string>;
std::string cell_text(const Cell& c);  // "", true, 3, 0.001 (shortest round-trip), text as is

struct ResultsTable {
  std::vector<std::string> columns;  // "run", "status", differing config keys, then metrics
  std::vector<std::vector<Cell>> rows;
  size_t config_columns = 0;         // columns[2 .. 2 + config_columns) are config keys
};

struct ResultsOptions {
  // "key=value", "key!=value", "key<value", "key<=value", "key>value", "key>=value" over any config key
  // (differing or not), metric, "run" or "status"; all must hold. Numbers compare as numbers.
  std::vector<std::string> filters;
  bool all_keys = false;  // every config key, not only those that differ between the runs
};

// Scans `dir` (itself a run folder, or a tree of them, e.g. a sweep folder) with runfolder::read_run_folders. A
// run's status is done (DONE), else running / stopped / pending / failed as its sweep's sweep.json says, else
// "unfinished" (metrics but no DONE) or "new". Rows follow sweep.json's order, then folder names.
// Throws when `dir` is missing, holds no run folder, a run file is malformed, or a filter is malformed or names no
// column.
ResultsTable collect_results(const std::filesystem::path& dir, const ResultsOptions& opts = {});

std::string to_csv(const ResultsTable& table);  // RFC 4180: quoted when needed, "\n" line ends
void write_csv(const ResultsTable& table, const std::filesystem::path& file);     // atomic
// Table `runs` with column names that need no quoting (sqlite_columns) and a table `column_kinds` (name, kind:
// run / config / metric, key: the column's name in results.csv, e.g. model.mixer). Booleans are the text
// 'true' / 'false', as in results.csv and results.json. Atomic.
void write_sqlite(const ResultsTable& table, const std::filesystem::path& file);

// SQLite names of table columns: every run of characters other than letters, digits and _ becomes one _
// (model.mixer -> model_mixer, test_acc/L32_K4 -> test_acc_L32_K4, task.mqar.train[0].seq_len ->
// task_mqar_train_0_seq_len), trailing ones dropped; a name starting with a digit gets c_ before it, an SQL
// keyword _ after it, and a name already taken (case-insensitively) _2, _3, ...
std::vector<std::string> sqlite_columns(const std::vector<std::string>& columns);

// Aligned text columns for the terminal; reals with 4 significant decimals.
std::string format_table(const ResultsTable& table);

}  // namespace ssmlab::experiments
