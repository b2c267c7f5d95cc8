// What a set of runs says as a whole, for the report page: the config keys that differ between them, each
// run's final metrics, and the figures drawn from metrics.jsonl (training curves, the sweep's summary).
#pragma once
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "ssmlab/report/figure.h"
#include "ssmlab/report/runs.h"

namespace ssmlab::report {

// Keys whose values differ between runs (a key missing from some runs differs too); run.out_dir never counts
// (where a run was written is not what the run is).
std::vector<std::string> differing_keys(const std::vector<RunData>& runs);

// The final metrics of a run: results.json, else the newest eval record (an unfinished run), "step" as "steps".
nlohmann::json final_metrics(const RunData& r);

// "d_model=64, lr=0.01": the run's values of `keys` (short names; run.name, run.seed and run.out_dir left out).
std::string run_label(const RunData& r, const std::vector<std::string>& keys);

// `key` of the `kind` ("train" or "eval") records against the step, one line per run that has it, named by
// run_label over `keys` (the differing keys), or by folder where that names nothing or twice.
std::optional<FigureSpec> curve_figure(const std::vector<RunData>& runs, const std::vector<std::string>& keys,
                                       const std::string& key, const std::string& kind, const std::string& title,
                                       const std::string& ylabel, bool logy);

// Final test accuracy against the numeric key of `keys` with the most distinct values, one line per combination
// of the other keys (run.name and run.seed aside): the shape of the papers' sweep figures (accuracy vs width, a
// line per depth). Nothing when no key is numeric or no run has a test accuracy.
std::optional<FigureSpec> sweep_figure(const std::vector<RunData>& runs, const std::vector<std::string>& keys);

}  // namespace ssmlab::report
