// The run-folder layout: every file and folder name that the trainer, the runner, `ssmlab results`, `ssmlab report`
// and the analyses agree on, in one place (docs/ARCHITECTURE.md, "Configs, runs, sweeps"). Torch-free, header-only.
//
//   <sweep>/sweep.json                        the runner's manifest (one record per run folder, atomically replaced)
//   <sweep>/results.csv, results.sqlite       `ssmlab results` tables
//   <run>/config.toml                         the resolved config
//   <run>/metrics.jsonl                       append-only records ({"kind": "train" | "eval", "step": ...})
//   <run>/results.json, DONE                  final metrics, then the marker that the run finished
//   <run>/eval.json                           `ssmlab eval` of the newest checkpoint
//   <run>/checkpoints/step_XXXXXXXX/          model.safetensors, optimizer.safetensors, state.json
//   <run>/analysis/NAME.json                  one analysis' results
//   <run>/figures/NAME.{json,csv}             figure specs and tables for `ssmlab report`
//   <run>/train.log, .lock                    the runner's log of the child and its flock
//   <run>/events.out.tfevents.<time>.<host>   TensorBoard mirror of metrics.jsonl
//   <dir>/report/report.html, report/figures/ `ssmlab report DIR`
#pragma once
#include <filesystem>
#include <string>
#include <string_view>

namespace ssmlab::runfolder {

// Files and folders of one run.
inline constexpr std::string_view kConfigFile = "config.toml";
inline constexpr std::string_view kMetricsFile = "metrics.jsonl";
inline constexpr std::string_view kResultsFile = "results.json";
inline constexpr std::string_view kDoneMarker = "DONE";
inline constexpr std::string_view kEvalFile = "eval.json";
inline constexpr std::string_view kCheckpointsDir = "checkpoints";
inline constexpr std::string_view kAnalysisDir = "analysis";
inline constexpr std::string_view kFiguresDir = "figures";
inline constexpr std::string_view kTrainLog = "train.log";
inline constexpr std::string_view kLockFile = ".lock";
inline constexpr std::string_view kEventsPrefix = "events.out.tfevents.";

// Inside checkpoints/: one folder per save, step_<8+ digits>, holding three files.
inline constexpr std::string_view kCheckpointPrefix = "step_";
inline constexpr std::string_view kCheckpointModel = "model.safetensors";
inline constexpr std::string_view kCheckpointOptimizer = "optimizer.safetensors";
inline constexpr std::string_view kCheckpointState = "state.json";

// Files of a sweep folder (the parent of its run folders).
inline constexpr std::string_view kSweepManifest = "sweep.json";
inline constexpr std::string_view kResultsCsv = "results.csv";
inline constexpr std::string_view kResultsSqlite = "results.sqlite";

// `ssmlab report DIR` writes DIR/report/report.html and its figures beside it.
inline constexpr std::string_view kReportDir = "report";
inline constexpr std::string_view kReportPage = "report.html";

// Figure and analysis files: NAME plus these extensions.
inline constexpr std::string_view kSpecExtension = ".json";
inline constexpr std::string_view kTableExtension = ".csv";

namespace detail {
inline std::filesystem::path join(const std::filesystem::path& dir, std::string_view name) {
  return dir / std::string(name);
}
}  // namespace detail

inline std::filesystem::path config_file(const std::filesystem::path& run) { return detail::join(run, kConfigFile); }
inline std::filesystem::path metrics_file(const std::filesystem::path& run) { return detail::join(run, kMetricsFile); }
inline std::filesystem::path results_file(const std::filesystem::path& run) { return detail::join(run, kResultsFile); }
inline std::filesystem::path done_marker(const std::filesystem::path& run) { return detail::join(run, kDoneMarker); }
inline std::filesystem::path eval_file(const std::filesystem::path& run) { return detail::join(run, kEvalFile); }
inline std::filesystem::path checkpoints_dir(const std::filesystem::path& run) {
  return detail::join(run, kCheckpointsDir);
}
inline std::filesystem::path analysis_dir(const std::filesystem::path& run) { return detail::join(run, kAnalysisDir); }
inline std::filesystem::path figures_dir(const std::filesystem::path& run) { return detail::join(run, kFiguresDir); }
inline std::filesystem::path train_log(const std::filesystem::path& run) { return detail::join(run, kTrainLog); }
inline std::filesystem::path lock_file(const std::filesystem::path& run) { return detail::join(run, kLockFile); }

// analysis/NAME.json: where an analysis leaves its results.
inline std::filesystem::path analysis_file(const std::filesystem::path& run, const std::string& name) {
  return analysis_dir(run) / (name + std::string(kSpecExtension));
}
// figures/NAME.json (a figure spec) and figures/NAME.csv (its table, or a bare line plot).
inline std::filesystem::path figure_spec_file(const std::filesystem::path& run, const std::string& name) {
  return figures_dir(run) / (name + std::string(kSpecExtension));
}
inline std::filesystem::path figure_table_file(const std::filesystem::path& run, const std::string& name) {
  return figures_dir(run) / (name + std::string(kTableExtension));
}

inline std::filesystem::path sweep_manifest(const std::filesystem::path& sweep) {
  return detail::join(sweep, kSweepManifest);
}
inline std::filesystem::path results_csv(const std::filesystem::path& sweep) {
  return detail::join(sweep, kResultsCsv);
}
inline std::filesystem::path results_sqlite(const std::filesystem::path& sweep) {
  return detail::join(sweep, kResultsSqlite);
}
inline std::filesystem::path report_dir(const std::filesystem::path& dir) { return detail::join(dir, kReportDir); }
inline std::filesystem::path report_page(const std::filesystem::path& report) {
  return detail::join(report, kReportPage);
}

}  // namespace ssmlab::runfolder
