#include "ssmlab/experiments/run.h"

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include "ssmlab/core/device.h"
#include "ssmlab/core/error.h"
#include "ssmlab/core/fault.h"
#include "ssmlab/core/io.h"
#include "ssmlab/core/log.h"
#include "ssmlab/experiments/analyze.h"
#include "ssmlab/experiments/identity.h"
#include "ssmlab/experiments/options_io.h"
#include "ssmlab/experiments/run_lock.h"
#include "ssmlab/experiments/tensorboard.h"
#include "ssmlab/experiments/validate.h"
#include "ssmlab/models/language_model.h"
#include "ssmlab/models/sequence_classifier.h"
#include "ssmlab/train/checkpoint.h"
#include "ssmlab/train/distributed.h"
#include "ssmlab/runfolder/layout.h"

namespace ssmlab::experiments {
namespace {

// halt_after_steps is a per-process testing aid, not part of what a run is: it is left out of config.toml so
// an interrupted run resumes under the plain config.
Config without_halt(Config cfg) {
  cfg.train.halt_after_steps = 0;
  return cfg;
}

}  // namespace

void check_config(const Config& cfg, const std::string& source) {
  try {
    tasks::task_info(cfg.task.name).check(cfg.task);
  } catch (const Error& e) {
    fail(source, ": task.", cfg.task.name, ": ", e.what());
  }
  try {
    analysis::parse_analysis_list(cfg.analysis.after_training);
  } catch (const Error& e) {
    fail(source, ": analysis.after_training: ", e.what());
  }
}

Config load_config(const std::filesystem::path& file, const std::vector<std::string>& overrides) {
  Config cfg = load_options<Config>(file, overrides);
  check_config(cfg, file.string());
  validate_config(cfg, file.string());
  return cfg;
}

std::string run_config_text(const Config& cfg) { return to_toml_string(without_halt(cfg)); }

std::string run_id(const Config& cfg) { return identity_hash(cfg); }

std::filesystem::path run_dir_for(Config& cfg, const std::optional<std::filesystem::path>& out) {
  if (out) return *out;
  return std::filesystem::path(cfg.run.out_dir) / (cfg.run.name + "-" + run_id(cfg).substr(0, 8));
}

tasks::TaskPtr build_task(const Config& cfg) { return tasks::make_task(cfg.task.name, cfg.task); }

models::ModelPtr build_model(const Config& cfg, const tasks::Task& task) {
  const tasks::TaskShape s = task.shape();
  const auto seed = static_cast<uint64_t>(cfg.run.seed);
  if (s.input == tasks::InputKind::tokens && s.target == tasks::TargetKind::per_position)
    return std::make_shared<models::LanguageModelImpl>(cfg.model, s.vocab_size, cfg.ops.backend, seed);
  if (s.input == tasks::InputKind::features && s.target == tasks::TargetKind::per_sequence)
    return std::make_shared<models::SequenceClassifierImpl>(cfg.model, s.in_channels, s.num_outputs,
                                                            cfg.ops.backend, seed);
  fail("task '", task.name(), "' asks for ", s.input == tasks::InputKind::tokens ? "token" : "feature",
       " inputs with ", s.target == tasks::TargetKind::per_position ? "per-position" : "per-sequence",
       " targets; no model takes that pair (language model: tokens + per-position; sequence classifier: "
       "features + per-sequence)");
}

train::TrainData build_data(const Config& cfg, const tasks::Task& task) {
  train::TrainData data;
  auto splits = task.make_splits();
  data.train = std::move(splits.train);
  data.test = std::move(splits.test);
  data.batch_size = cfg.task.batch_size;
  data.test_batch_size = cfg.task.test_batch_size;
  return data;
}

RunOutcome train_run(Config cfg, const std::filesystem::path& dir) {
  RunOutcome out;
  out.dir = dir;
  // Data-parallel ranks other than 0 train and read the folder, but write nothing there (train/distributed.h).
  if (const train::ProcessGroup* g = train::current_group(); g != nullptr && g->rank() != 0) {
    if (std::filesystem::exists(runfolder::done_marker(dir))) {
      out.already_done = true;
      return out;
    }
    const tasks::TaskPtr task = build_task(cfg);
    const train::TrainData data = build_data(cfg, *task);
    at::manual_seed(static_cast<uint64_t>(cfg.run.seed));
    const models::ModelPtr model = build_model(cfg, *task);
    out.fit = train::fit(*model, *task, data, cfg.train, dir, nullptr);
    return out;
  }
  std::filesystem::create_directories(dir);
  const RunLock lock(dir);  // one writer per run folder, until this returns
  const std::string resolved = run_config_text(cfg);
  const auto cfg_file = runfolder::config_file(dir);
  if (std::filesystem::exists(cfg_file)) {
    Config existing;
    try {
      existing = load_options_from_string<Config>(read_file(cfg_file), cfg_file.string());
    } catch (const Error& e) {
      fail("run folder ", dir.string(), " holds a config.toml this version cannot read (", e.what(),
           "); choose another --out, or delete the folder to start over");
    }
    const std::string diff = identity_diff(cfg, existing);
    SSMLAB_CHECK(diff.empty(), "run folder ", dir.string(), " holds a run of a different config (", diff,
                 "); choose another --out, or delete the folder to start over");
    // Same run: the folder's config.toml gains options added since it was written (and their defaults).
    if (read_file(cfg_file) != resolved) write_file_atomic(cfg_file, resolved);
  } else {
    write_file_atomic(cfg_file, resolved);
  }
  const auto analyses = analysis::parse_analysis_list(cfg.analysis.after_training);
  if (std::filesystem::exists(runfolder::done_marker(dir))) {
    out.already_done = true;
    out.analyses = missing_analyses(dir, analyses);
    if (!out.analyses.empty()) analyze(out.analyses, cfg, dir, /*weights_from=*/dir);
    return out;
  }
  const tasks::TaskPtr task = build_task(cfg);
  const train::TrainData data = build_data(cfg, *task);
  at::manual_seed(static_cast<uint64_t>(cfg.run.seed));  // dropout and any other torch-side randomness
  const models::ModelPtr model = build_model(cfg, *task);
  log::info(str("model: ", model->kind(), ", ", cfg.model.mixer, " x ", cfg.model.n_layers, ", d_model ",
                cfg.model.d_model, ", ", model->num_parameters(), " parameters, state ", model->state_size(),
                " numbers per sequence"));
  // Where TensorBoard finds the run, and its hparams.
  const train::TbSession tb = cfg.train.tensorboard ? tb_session(cfg, dir) : train::TbSession{dir, {}, {}, {}};
  out.fit = train::fit(*model, *task, data, cfg.train, dir, &tb);
  if (out.fit.halted) return out;
  nlohmann::json results = train::eval_fields(out.fit.last_eval, task->reports_perplexity());
  results.update({{"steps", out.fit.steps},
                  {"early_stopped", out.fit.early_stopped},
                  {"num_parameters", model->num_parameters()},
                  {"state_size", model->state_size()}});
  write_file_atomic(runfolder::results_file(dir), results.dump(2) + "\n");
  fault_point("after_results");
  write_file_atomic(runfolder::done_marker(dir), "");
  out.analyses = analyses;
  if (!analyses.empty()) analyze(analyses, cfg, dir, /*weights_from=*/dir);
  return out;
}

train::EvalResult eval_run(const std::filesystem::path& dir, const std::string& device) {
  const auto cfg_file = runfolder::config_file(dir);
  SSMLAB_CHECK(std::filesystem::exists(cfg_file), dir.string(), " is not a run folder: it has no config.toml");
  Config cfg = load_config(cfg_file);
  if (!device.empty()) cfg.train.device = device;
  const auto latest = train::latest_checkpoint(runfolder::checkpoints_dir(dir));
  SSMLAB_CHECK(!latest.empty(), "run folder ", dir.string(), " has no checkpoint yet (checkpoints/ is empty)");
  const tasks::TaskPtr task = build_task(cfg);
  const models::ModelPtr model = build_model(cfg, *task);
  train::load_model_weights(latest / runfolder::kCheckpointModel, *model);
  const c10::Device dev = parse_device(cfg.train.device);
  model->to(dev);
  const auto test = task->make_test();
  const auto r = train::evaluate(*model, *task, test, cfg.task.test_batch_size, dev, cfg.train.precision);
  nlohmann::json j = train::eval_fields(r, task->reports_perplexity());
  j["checkpoint"] = latest.filename().string();
  write_file_atomic(runfolder::eval_file(dir), j.dump(2) + "\n");
  return r;
}

}  // namespace ssmlab::experiments
