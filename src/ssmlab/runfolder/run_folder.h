// The one reader of run folders (layout.h), shared by `ssmlab results` (experiments/results.*) and `ssmlab report`
// (report/*): the resolved config flattened to dotted keys, the metrics.jsonl records, results.json, the run's
// status, and the files analyses left in figures/ and analysis/. Torch-free, so the report layer can use it.
#pragma once
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

namespace ssmlab::runfolder {

// A malformed run file (config.toml, metrics.jsonl, results.json, sweep.json) or a folder that is not there; the
// message names the file (and line where there is one) and what is wrong.
class RunFolderError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// The TOML type behind a flattened value. `other`: arrays of values, inline tables, dates (their TOML text).
enum class ValueKind { string, integer, real, boolean, other };

struct ConfigEntry {
  std::string key;   // "model.d_model", "task.mqar.train[0].seq_len"
  std::string text;  // strings unquoted; reals in the shortest form that reads back the same ("0.001", "1.0")
  ValueKind kind = ValueKind::string;
};

// A TOML document flattened to dotted keys in file order; arrays of tables become key[i]. `where` names the
// source in errors ("<file>:<line>: <what>").
std::vector<ConfigEntry> flatten_config(const std::string& toml_text, const std::string& where);

// done: the DONE marker. failed: the sweep's manifest says so (and there is no DONE). unfinished: it has a
// metrics.jsonl (interrupted, halted or still running). fresh: nothing yet.
enum class RunStatus { done, unfinished, failed, fresh };
const char* status_name(RunStatus s);  // "done", "unfinished", "failed", "new"

struct RunFolder {
  std::filesystem::path dir;
  std::string name;                            // the folder relative to the scanned root (its own name for the root)
  std::vector<ConfigEntry> config_entries;     // config.toml flattened, file order
  std::map<std::string, std::string> config;   // the same: dotted key -> value text
  std::vector<nlohmann::json> train, eval;     // metrics.jsonl records by kind, in file order
  std::optional<nlohmann::json> results;       // results.json
  RunStatus status = RunStatus::fresh;
  std::string sweep_status;                    // its record in the parent's sweep.json ("" without one)
  std::string error;                           // that record's error, first line
  size_t sweep_index = SIZE_MAX;               // that record's position in the sweep
  std::vector<std::filesystem::path> figure_files;    // figures/*.json and figures/*.csv, sorted
  std::vector<std::filesystem::path> analysis_files;  // analysis/*.json, sorted

  // Sets config_entries and config together (they must agree).
  void set_config(std::vector<ConfigEntry> entries);
  bool done() const { return status == RunStatus::done; }
  // The last eval record of metrics.jsonl, or null.
  const nlohmann::json* newest_eval() const { return eval.empty() ? nullptr : &eval.back(); }
};

// Whether `dir` is a run folder: it holds config.toml or metrics.jsonl.
bool is_run_folder(const std::filesystem::path& dir);

// `root` itself if it is a run folder, else the run folders below it (up to 4 levels; checkpoints/, hidden folders,
// symlinks and report folders, i.e. those holding a report.html, are not entered), sorted by path. Throws when
// `root` is not a folder.
std::vector<std::filesystem::path> find_run_folders(const std::filesystem::path& root);

// One record of a sweep.json manifest (experiments/runner.*), keyed by its folder relative to the sweep.
struct SweepRecord {
  size_t index = SIZE_MAX;
  std::string status, error;
};
// The manifest of the sweep folder `sweep` (empty without one); throws when it is malformed.
std::map<std::string, SweepRecord> read_sweep_manifest(const std::filesystem::path& sweep);

// Reads the run folder `dir` (named relative to `root`); its status also takes the parent folder's sweep.json.
// Malformed files are errors naming the file and line, except a half-written last line of metrics.jsonl (a run
// killed mid-write), which is dropped.
RunFolder read_run_folder(const std::filesystem::path& dir, const std::filesystem::path& root);
// Every run folder find_run_folders finds, read (each sweep.json once).
std::vector<RunFolder> read_run_folders(const std::filesystem::path& root);

// Every config key of the runs, in file order of first appearance.
std::vector<std::string> config_keys(const std::vector<RunFolder>& runs);
// The keys whose values differ between runs (a key that some runs lack differs too), in the same order;
// run.out_dir never counts (where a run was written is not what the run is).
std::vector<std::string> differing_keys(const std::vector<RunFolder>& runs);

// metrics.jsonl text into r.train / r.eval: lines above the size or nesting limits, records of the wrong type
// ("kind" not a string, "step" not a number) and malformed lines other than a half-written last one are
// RunFolderErrors naming the file and line.
void parse_metrics(std::string_view text, const std::string& file, RunFolder& r);

// The final metrics of a run: results.json; else its newest eval record without kind and epoch, "step" as "steps";
// else {"steps": the last train step}; else {}.
nlohmann::json final_metrics(const RunFolder& run);
// Metric names in table order: steps, test_acc, test_loss, then test_acc/<segment>, then the rest by name.
std::vector<std::string> metric_order(const std::vector<nlohmann::json>& finals);

}  // namespace ssmlab::runfolder
