// Run folders: <out>/config.toml (resolved), metrics.jsonl, checkpoints/, results.json, DONE.
#pragma once
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "ssmlab/experiments/config.h"
#include "ssmlab/train/trainer.h"

namespace ssmlab::experiments {

// Loads a config file with `--set` overrides (errors name the file and key).
Config load_config(const std::filesystem::path& file, const std::vector<std::string>& overrides = {});

// Checks what the option visitors cannot (each MQAR segment against the task); errors start with `source`.
void check_config(const Config& cfg, const std::string& source);

// The text of a run folder's config.toml: the resolved config, train.halt_after_steps left out.
std::string run_config_text(const Config& cfg);

// The run id: 16 hex digits of the FNV-1a 64 hash of run_config_text, so it depends on the resolved
// values only (not on key order or on which file set them). Run folders are <run.name>-<first 8>.
std::string run_id(const Config& cfg);

// The run folder a config trains into: `out` if given, else <run.out_dir>/<run.name>-<hash>.
std::filesystem::path run_dir_for(Config& cfg, const std::optional<std::filesystem::path>& out);

struct RunOutcome {
  std::filesystem::path dir;
  train::FitResult fit;
  bool already_done = false;  // the folder held a finished run: nothing was trained
};

// Trains (or resumes) the run of `cfg` in `dir`. A folder holding another config is an error.
RunOutcome train_run(Config cfg, const std::filesystem::path& dir);

// Re-evaluates a run folder's newest checkpoint on its test segments; writes eval.json there.
train::EvalResult eval_run(const std::filesystem::path& dir, const std::string& device = "");

// Builds the task data of a config (train and test segments, batch sizes).
train::TrainData build_data(const Config& cfg);

}  // namespace ssmlab::experiments
