#include "ssmlab/experiments/analyze.h"

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include "ssmlab/analysis/registry.h"
#include "ssmlab/core/device.h"
#include "ssmlab/core/error.h"
#include "ssmlab/core/io.h"
#include "ssmlab/core/log.h"
#include "ssmlab/experiments/options_io.h"
#include "ssmlab/experiments/run.h"
#include "ssmlab/models/hf_checkpoint.h"
#include "ssmlab/train/checkpoint.h"
#include "ssmlab/runfolder/layout.h"

namespace ssmlab::experiments {

std::vector<AnalysisRun> analyze(const std::vector<std::string>& names, const Config& cfg,
                                 const std::filesystem::path& dir, const std::filesystem::path& weights_from,
                                 const std::string& device) {
  for (const auto& n : names) analysis::analysis_info(n);  // unknown names fail before any work
  const tasks::TaskPtr task = build_task(cfg);
  models::ModelPtr model;
  std::string source = "init (run.seed " + std::to_string(cfg.run.seed) + ")";
  if (!weights_from.empty() && models::is_hf_folder(weights_from) &&
      !std::filesystem::exists(runfolder::config_file(weights_from))) {
    // A Hugging Face folder: the config's model (hf_analysis_config: the folder's options, plus any --set) over
    // the folder's vocabulary, its weights.
    const models::HfModelInfo info = models::read_hf_config(weights_from);
    const int64_t task_vocab = task->shape().vocab_size;
    SSMLAB_CHECK(task_vocab <= info.vocab_size, "the task's tokenizer has ", task_vocab, " ids but the model in ",
                 weights_from.string(), " only ", info.vocab_size);
    auto lm = std::make_shared<models::LanguageModelImpl>(cfg.model, info.vocab_size, cfg.ops.backend,
                                                          static_cast<uint64_t>(cfg.run.seed));
    models::load_hf_weights(*lm, weights_from, info.layout);
    model = lm;
    source = "Hugging Face folder " + weights_from.string();
  } else {
    model = build_model(cfg, *task);
  }
  if (!weights_from.empty() && source.starts_with("init")) {
    const auto latest = train::latest_checkpoint(runfolder::checkpoints_dir(weights_from));
    SSMLAB_CHECK(!latest.empty(), "run folder ", weights_from.string(),
                 " has no checkpoint to analyse (checkpoints/ is empty); train it first, or analyse its config "
                 "for the initialised model");
    train::load_model_weights(latest / runfolder::kCheckpointModel, *model);
    source = "checkpoint " + latest.filename().string();
  }
  const c10::Device dev = parse_device(device.empty() ? cfg.train.device : device);
  model->to(dev);
  model->eval();
  const auto test = task->make_test();
  const analysis::Context ctx{*model, *task, test, dev, dir, cfg.model.mixer, static_cast<uint64_t>(cfg.run.seed)};
  std::vector<AnalysisRun> runs;
  for (const auto& name : names) {
    log::info(str("analysis ", name, " on ", dir.string(), " (", source, ")"));
    AnalysisRun r{name, analysis::analysis_info(name).run(ctx, cfg.analysis), runfolder::analysis_file(dir, name)};
    nlohmann::json j = {{"analysis", name}, {"model", source}, {"label", ctx.label}, {"result", r.result.summary}};
    std::filesystem::create_directories(r.summary_file.parent_path());
    write_file_atomic(r.summary_file, j.dump(2) + "\n");
    runs.push_back(std::move(r));
  }
  return runs;
}

std::vector<std::string> missing_analyses(const std::filesystem::path& dir, const std::vector<std::string>& names) {
  std::vector<std::string> out;
  for (const auto& n : names)
    if (!std::filesystem::exists(runfolder::analysis_file(dir, n))) out.push_back(n);
  return out;
}

}  // namespace ssmlab::experiments
