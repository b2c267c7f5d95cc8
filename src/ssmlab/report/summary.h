// What a set of runs says as a whole, for the report page: labels from the config keys that differ between them
// (runfolder::differing_keys) and the figures drawn from metrics.jsonl (training curves, the sweep's summary).
#pragma once
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "ssmlab/report/figure.h"
#include "ssmlab/runfolder/run_folder.h"

namespace ssmlab::report {

using runfolder::RunFolder;

// The run folders of `root` (runfolder::read_run_folders), their errors raised as ReportError.
std::vector<RunFolder> load_runs(const std::filesystem::path& root);

// "d_model=64, lr=0.01": the run's values of `keys` (short names; run.name, run.seed and run.out_dir left out).
std::string run_label(const RunFolder& r, const std::vector<std::string>& keys);

// One label per run: run_label over `keys`, or the folder names for all where a label is empty or two coincide
// (runs that differ only in run.name or run.seed).
std::vector<std::string> run_labels(const std::vector<const RunFolder*>& runs, const std::vector<std::string>& keys);

// (step, value) of `key` over `records` that hold it as a finite number.
std::vector<std::pair<double, double>> metric_series(const std::vector<nlohmann::json>& records,
                                                     const std::string& key);

// `key` of the `kind` ("train" or "eval") records against the step, one line per run that has it, named by
// run_labels over `keys` (the differing keys).
std::optional<FigureSpec> curve_figure(const std::vector<RunFolder>& runs, const std::vector<std::string>& keys,
                                       const std::string& key, const std::string& kind, const std::string& title,
                                       const std::string& ylabel, bool logy);

// Final test accuracy against the numeric key of `keys` with the most distinct values, one line per combination
// of the other keys (run.name and run.seed aside): the shape of the papers' sweep figures (accuracy vs width, a
// line per depth). Nothing when no key is numeric or no run has a test accuracy.
std::optional<FigureSpec> sweep_figure(const std::vector<RunFolder>& runs, const std::vector<std::string>& keys);

}  // namespace ssmlab::report
