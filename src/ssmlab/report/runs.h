// Reading run folders (written by experiments/run.cpp and train/trainer.cpp) without LibTorch: the resolved
// config.toml flattened to dotted keys, metrics.jsonl records, results.json, and the figure files analyses leave
// in figures/ (docs/ARCHITECTURE.md, "Figure specs").
#pragma once
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

namespace ssmlab::report {

struct RunData {
  std::filesystem::path dir;
  std::string name;                           // the folder relative to the report's root ("." for the root)
  std::map<std::string, std::string> config;  // dotted key -> value as text ("task.mqar.train[0].seq_len")
  std::vector<nlohmann::json> train, eval;    // metrics.jsonl records by kind, in file order
  std::optional<nlohmann::json> results;      // results.json
  bool done = false;                          // the DONE marker
  std::vector<std::filesystem::path> figure_files;  // figures/*.json and figures/*.csv, sorted
};

// Whether `dir` is a run folder: it holds config.toml or metrics.jsonl.
bool is_run_dir(const std::filesystem::path& dir);

// `root` itself if it is a run folder, else the run folders below it (up to 4 levels; checkpoints/ and folders
// holding a report.html are not entered), sorted by path. Throws ReportError if `root` is not a folder.
std::vector<std::filesystem::path> find_run_dirs(const std::filesystem::path& root);

// Reads one run folder. Malformed files are errors naming the file and line, except a half-written last line
// of metrics.jsonl (a run killed mid-write), which is dropped.
RunData load_run(const std::filesystem::path& dir, const std::filesystem::path& root);

// The train and eval records of a metrics.jsonl text into `r` (core/jsonl.h: line limits, a half-written last
// line dropped, a "kind" that is not a string an error naming `file` and the line).
void read_metrics_jsonl(std::string_view text, const std::string& file, RunData& r);

// A TOML document flattened to dotted keys; values as text (strings unquoted, floats in %g form).
std::map<std::string, std::string> flatten_toml(const std::string& text, const std::string& where);

// (step, value) of `key` over `records` that hold it as a finite number.
std::vector<std::pair<double, double>> metric_series(const std::vector<nlohmann::json>& records,
                                                     const std::string& key);

}  // namespace ssmlab::report
