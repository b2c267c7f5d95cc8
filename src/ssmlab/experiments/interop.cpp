// Hugging Face folders where ssmlab takes a run (interop.h).
#include "ssmlab/experiments/interop.h"

#include <ATen/ATen.h>

#include "ssmlab/core/device.h"
#include "ssmlab/core/error.h"
#include "ssmlab/core/error_kinds.h"
#include "ssmlab/experiments/options_io.h"
#include "ssmlab/experiments/run.h"
#include "ssmlab/experiments/validate.h"
#include "ssmlab/models/hf_checkpoint.h"
#include "ssmlab/runfolder/layout.h"
#include "ssmlab/tasks/text.h"
#include "ssmlab/text/hf_tokenizer.h"
#include "ssmlab/train/checkpoint.h"

namespace ssmlab::experiments {
namespace fs = std::filesystem;

namespace {

struct RunModel {
  Config cfg;
  tasks::TaskPtr task;
  std::shared_ptr<models::LanguageModelImpl> model;
  std::string checkpoint;
};

RunModel interop_load_run(const fs::path& dir) {
  RunModel r;
  r.cfg = load_config(runfolder::config_file(dir));
  const auto latest = train::latest_checkpoint(runfolder::checkpoints_dir(dir));
  if (latest.empty()) fail_config("run folder ", dir.string(), " has no checkpoint yet (checkpoints/ is empty)");
  r.task = build_task(r.cfg);
  auto model = build_model(r.cfg, *r.task);
  r.model = std::dynamic_pointer_cast<models::LanguageModelImpl>(model);
  if (!r.model)
    fail_config("run folder ", dir.string(), " holds a ", model->kind(), ", not a language model (task.name = ",
                r.cfg.task.name, ")");
  train::load_model_weights(latest / runfolder::kCheckpointModel, *r.model);
  r.checkpoint = latest.filename().string();
  return r;
}

}  // namespace

LoadedLanguageModel load_language_model(const std::string& target, at::ScalarType dtype, const std::string& device,
                                        const std::string& tokenizer_json) {
  LoadedLanguageModel out;
  const fs::path t(target);
  if (fs::is_directory(t) && fs::exists(runfolder::config_file(t))) {
    RunModel r = interop_load_run(t);
    out.model = models::LanguageModel(r.model);
    if (auto* text_task = dynamic_cast<const tasks::TextTask*>(r.task.get())) {
      out.tokenizer = text_task->tokenizer_ptr();
      if (auto eos = out.tokenizer->end_of_text()) out.eos_token_id = *eos;
    }
    out.source = "run folder " + target + " (checkpoint " + r.checkpoint + ")";
  } else {
    const fs::path folder = models::resolve_hf_model(target);
    models::HfModelInfo info;
    out.model = models::load_hf_model(folder, dtype, &info);
    out.eos_token_id = info.eos_token_id;
    if (fs::is_regular_file(folder / "tokenizer.json"))
      out.tokenizer = std::make_shared<text::HfTokenizer>(folder / "tokenizer.json");
    out.source = "Hugging Face folder " + folder.string();
  }
  if (!tokenizer_json.empty()) out.tokenizer = std::make_shared<text::HfTokenizer>(tokenizer_json);
  out.model->to(dtype);
  out.model->to(parse_device(device));
  out.model->eval();
  return out;
}

fs::path export_run(const fs::path& run_dir, const fs::path& out) {
  if (!fs::exists(runfolder::config_file(run_dir)))
    fail_config(run_dir.string(), " is not a run folder: it has no config.toml");
  RunModel r = interop_load_run(run_dir);
  std::optional<int64_t> eos;
  if (auto* text_task = dynamic_cast<const tasks::TextTask*>(r.task.get()))
    if (auto e = text_task->tokenizer().end_of_text()) eos = *e;
  models::export_hf(*r.model, out, eos);
  return out;
}

Config hf_analysis_config(const fs::path& folder, const std::vector<std::string>& sets) {
  const models::HfModelInfo info = models::read_hf_config(folder);
  Config base;
  base.model = info.options;
  base.task.name = "text";
  if (fs::is_regular_file(folder / "tokenizer.json")) {
    base.task.text.tokenizer.kind = "tokenizer_json";
    base.task.text.tokenizer.tokenizer_json = (folder / "tokenizer.json").string();
  }
  base.run.name = "hf-" + folder.filename().string();
  const std::string source = (folder / "config.json").string();
  Config cfg = load_options_from_string<Config>(to_toml_string(base), source, sets);
  check_config(cfg, source);
  validate_config(cfg, source);
  return cfg;
}

}  // namespace ssmlab::experiments
