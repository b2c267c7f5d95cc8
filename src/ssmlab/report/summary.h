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

// The order of the rows and the colours of a report: by the swept keys in `key_order` (numbers in numeric order,
// other values in the order the sweep first ran them, alphabetically without a sweep.json), then by the sweep's
// index, then by folder name. Stable, so the same runs always get the same places.
void sort_runs(std::vector<RunFolder>& runs, const std::vector<std::string>& key_order);

// The differing keys in the order the sweeps list them ("keys" of each run's parent sweep.json), then the other
// differing keys in their own order.
std::vector<std::string> sweep_key_order(const std::vector<RunFolder>& runs, const std::vector<std::string>& differing);

// The fewest of `keys` that still tell the runs apart, for short legends: keys that the others determine (a
// key zipped with another, e.g. model.norm with model.mixer) are dropped, those with fewer distinct values first.
// run.name and run.out_dir never label a run. All of `keys` (less those two) when even they do not tell the runs
// apart.
std::vector<std::string> label_keys(const std::vector<RunFolder>& runs, const std::vector<std::string>& keys);

// Shortest dotted suffixes that are still unique among `keys`: model.mixers.mamba1.d_state -> d_state, or
// mamba1.d_state where model.mixers.h3.d_state is among them too.
std::vector<std::string> short_key_names(const std::vector<std::string>& keys);

// "d_model=64, lr=0.01": the run's values of `keys` (short_key_names; run.name and run.out_dir left out).
std::string run_label(const RunFolder& r, const std::vector<std::string>& keys);

// One label per run: run_label over `keys`, or the folder names for all where a label is empty or two coincide
// (runs that differ only in run.name or run.seed).
std::vector<std::string> run_labels(const std::vector<const RunFolder*>& runs, const std::vector<std::string>& keys);

// (step, value) of `key` over `records` that hold it as a finite number.
std::vector<std::pair<double, double>> metric_series(const std::vector<nlohmann::json>& records,
                                                     const std::string& key);

// `key` of the `kind` ("train" or "eval") records against the step, one line per run that has it, named by
// run_labels over `keys` (label_keys), in the run's colour (Series::group = its index in `runs`).
std::optional<FigureSpec> curve_figure(const std::vector<RunFolder>& runs, const std::vector<std::string>& keys,
                                       const std::string& key, const std::string& kind, const std::string& title,
                                       const std::string& ylabel, bool logy);

// Final test accuracy against the numeric key of `keys` with the most distinct values, one line per combination
// of the other keys (run.name and run.seed aside): the shape of the papers' sweep figures (accuracy vs width, a
// line per depth). Lines are named by the label_keys other than x; each point has its run's colour
// (Series::point_groups, the run's index in `runs`). Nothing when no key is numeric or no run has a test accuracy.
std::optional<FigureSpec> sweep_figure(const std::vector<RunFolder>& runs, const std::vector<std::string>& keys);

}  // namespace ssmlab::report
