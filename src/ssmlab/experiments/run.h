// Run folders: <out>/config.toml (resolved), metrics.jsonl, checkpoints/, results.json, DONE, and what analyses
// write (analysis/, figures/).
#pragma once
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "ssmlab/experiments/config.h"
#include "ssmlab/models/model.h"
#include "ssmlab/tasks/task.h"
#include "ssmlab/train/trainer.h"

namespace ssmlab::experiments {

// Loads a config file with `--set` overrides (errors name the file and key).
Config load_config(const std::filesystem::path& file, const std::vector<std::string>& overrides = {});

// Checks what the option visitors cannot (the task's own rules, e.g. each MQAR segment; the analysis list);
// errors start with `source`.
void check_config(const Config& cfg, const std::string& source);

// The text of a run folder's config.toml: the resolved config (every key), train.halt_after_steps left out.
std::string run_config_text(const Config& cfg);

// The run id: 16 hex digits of the hash of the run's identity (experiments/identity.h: the values that define
// the run and differ from the defaults). Run folders are <run.name>-<first 8>.
std::string run_id(const Config& cfg);

// The run folder a config trains into: `out` if given, else <run.out_dir>/<run.name>-<hash>.
std::filesystem::path run_dir_for(Config& cfg, const std::optional<std::filesystem::path>& out);

// The task of a config (tasks/registry.h) and the model its shape asks for: token inputs with per-position
// targets -> LanguageModel (tied head over the vocabulary); feature inputs with one label per sequence ->
// SequenceClassifier. Parameters are drawn from run.seed.
tasks::TaskPtr build_task(const Config& cfg);
models::ModelPtr build_model(const Config& cfg, const tasks::Task& task);

struct RunOutcome {
  std::filesystem::path dir;
  train::FitResult fit;
  bool already_done = false;  // the folder held a finished run: nothing was trained
  std::vector<std::string> analyses;  // analyses run after training (analysis.after_training)
};

// Trains (or resumes) the run of `cfg` in `dir`, then runs the analyses of analysis.after_training that the
// folder does not hold yet. A folder holding a run of another identity is an error naming the keys that differ.
RunOutcome train_run(Config cfg, const std::filesystem::path& dir);

// Re-evaluates a run folder's newest checkpoint on its test segments; writes eval.json there.
train::EvalResult eval_run(const std::filesystem::path& dir, const std::string& device = "");

// Builds the task data of a config (train and test segments, batch sizes).
train::TrainData build_data(const Config& cfg, const tasks::Task& task);

}  // namespace ssmlab::experiments
