#include "ssmlab/experiments/run.h"

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include "ssmlab/core/device.h"
#include "ssmlab/core/error.h"
#include "ssmlab/core/io.h"
#include "ssmlab/core/log.h"
#include "ssmlab/experiments/options_io.h"
#include "ssmlab/train/checkpoint.h"

namespace ssmlab::experiments {
namespace {

// halt_after_steps is a per-process testing aid, not part of what a run is: it is left out of the
// run's identity (config.toml, hash) so an interrupted run resumes under the plain config.
Config identity(Config cfg) {
  cfg.train.halt_after_steps = 0;
  return cfg;
}

models::LanguageModel build_model(const Config& cfg) {
  return models::LanguageModel(cfg.model, cfg.task.mqar.vocab_size, cfg.ops.backend,
                               static_cast<uint64_t>(cfg.run.seed));
}

}  // namespace

void check_config(const Config& cfg, const std::string& source) {
  try {
    for (const auto& seg : cfg.task.mqar.train) tasks::check_mqar_segment(cfg.task.mqar, seg);
    for (const auto& seg : cfg.task.mqar.test) tasks::check_mqar_segment(cfg.task.mqar, seg);
  } catch (const Error& e) {
    fail(source, ": task.mqar: ", e.what());
  }
}

Config load_config(const std::filesystem::path& file, const std::vector<std::string>& overrides) {
  Config cfg = load_options<Config>(file, overrides);
  check_config(cfg, file.string());
  return cfg;
}

std::string run_config_text(const Config& cfg) { return to_toml_string(identity(cfg)); }

std::string run_id(const Config& cfg) { return config_hash(identity(cfg)); }

std::filesystem::path run_dir_for(Config& cfg, const std::optional<std::filesystem::path>& out) {
  if (out) return *out;
  return std::filesystem::path(cfg.run.out_dir) / (cfg.run.name + "-" + run_id(cfg).substr(0, 8));
}

train::TrainData build_data(const Config& cfg) {
  train::TrainData data;
  auto splits = tasks::make_mqar_splits(cfg.task.mqar);
  data.train = std::move(splits.train);
  data.test = std::move(splits.test);
  data.batch_size = cfg.task.batch_size;
  data.test_batch_size = cfg.task.test_batch_size;
  return data;
}

RunOutcome train_run(Config cfg, const std::filesystem::path& dir) {
  RunOutcome out;
  out.dir = dir;
  std::filesystem::create_directories(dir);
  Config id = identity(cfg);
  const std::string resolved = to_toml_string(id);
  const auto cfg_file = dir / "config.toml";
  if (std::filesystem::exists(cfg_file)) {
    const std::string existing = read_file(cfg_file);
    SSMLAB_CHECK(existing == resolved, "run folder ", dir.string(),
                 " holds a run of a different config (its config.toml differs from this one); "
                 "choose another --out, or delete the folder to start over");
  } else {
    write_file_atomic(cfg_file, resolved);
  }
  if (std::filesystem::exists(dir / "DONE")) {
    out.already_done = true;
    return out;
  }
  const train::TrainData data = build_data(cfg);
  at::manual_seed(static_cast<uint64_t>(cfg.run.seed));  // dropout and any other torch-side randomness
  auto model = build_model(cfg);
  log::info(str("model: ", cfg.model.mixer, " x ", cfg.model.n_layers, ", d_model ", cfg.model.d_model, ", ",
                model->num_parameters(), " parameters, state ", model->state_size(), " numbers per sequence"));
  out.fit = train::fit(model, data, cfg.train, dir);
  if (out.fit.halted) return out;
  nlohmann::json results = {{"steps", out.fit.steps},
                            {"test_acc", out.fit.last_eval.accuracy},
                            {"test_loss", out.fit.last_eval.loss},
                            {"early_stopped", out.fit.early_stopped},
                            {"num_parameters", model->num_parameters()},
                            {"state_size", model->state_size()}};
  for (const auto& [name, acc] : out.fit.last_eval.per_segment) results["test_acc/" + name] = acc;
  write_file_atomic(dir / "results.json", results.dump(2) + "\n");
  write_file_atomic(dir / "DONE", "");
  return out;
}

train::EvalResult eval_run(const std::filesystem::path& dir, const std::string& device) {
  const auto cfg_file = dir / "config.toml";
  SSMLAB_CHECK(std::filesystem::exists(cfg_file), dir.string(), " is not a run folder: it has no config.toml");
  Config cfg = load_config(cfg_file);
  if (!device.empty()) cfg.train.device = device;
  const auto latest = train::latest_checkpoint(dir / "checkpoints");
  SSMLAB_CHECK(!latest.empty(), "run folder ", dir.string(), " has no checkpoint yet (checkpoints/ is empty)");
  auto model = build_model(cfg);
  train::load_model_weights(latest / "model.safetensors", *model);
  const c10::Device dev = parse_device(cfg.train.device);
  model->to(dev);
  const auto data = build_data(cfg);
  const auto r = train::evaluate(model, data.test, cfg.task.test_batch_size, dev, cfg.train.precision);
  nlohmann::json j = {{"checkpoint", latest.filename().string()}, {"test_acc", r.accuracy}, {"test_loss", r.loss}};
  for (const auto& [name, acc] : r.per_segment) j["test_acc/" + name] = acc;
  write_file_atomic(dir / "eval.json", j.dump(2) + "\n");
  return r;
}

}  // namespace ssmlab::experiments
