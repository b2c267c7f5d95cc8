// Runs analyses (analysis/registry.h) on the model of a run folder (its newest checkpoint) or on a freshly
// initialised model of a config, and writes their outputs into the folder: figures/ (CSV + figure specs for
// `ssmlab report`) and analysis/<name>.json (the numbers, with what model they came from).
#pragma once
#include <filesystem>
#include <string>
#include <vector>

#include "ssmlab/analysis/analysis.h"
#include "ssmlab/experiments/config.h"

namespace ssmlab::experiments {

struct AnalysisRun {
  std::string name;
  analysis::Result result;
  std::filesystem::path summary_file;  // analysis/<name>.json
};

// Outputs go to `dir`. `weights_from`: a run folder whose newest checkpoint's weights are analysed (an error when
// it has none); empty: the model as initialised from run.seed. `device` overrides train.device when not empty.
std::vector<AnalysisRun> analyze(const std::vector<std::string>& names, const Config& cfg,
                                 const std::filesystem::path& dir, const std::filesystem::path& weights_from,
                                 const std::string& device = "");

// Those of `names` whose analysis/<name>.json the folder does not hold.
std::vector<std::string> missing_analyses(const std::filesystem::path& dir, const std::vector<std::string>& names);

}  // namespace ssmlab::experiments
