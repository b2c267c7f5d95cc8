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
#include "ssmlab/train/checkpoint.h"
#include "ssmlab/runfolder/layout.h"

namespace ssmlab::experiments {

std::vector<AnalysisRun> analyze(const std::vector<std::string>& names, const Config& cfg,
                                 const std::filesystem::path& dir, const std::filesystem::path& weights_from,
                                 const std::string& device) {
  for (const auto& n : names) analysis::analysis_info(n);  // unknown names fail before any work
  const tasks::TaskPtr task = build_task(cfg);
  const models::ModelPtr model = build_model(cfg, *task);
  std::string source = "init (run.seed " + std::to_string(cfg.run.seed) + ")";
  if (!weights_from.empty()) {
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
