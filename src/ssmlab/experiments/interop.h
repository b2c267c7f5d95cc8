// Hugging Face folders where ssmlab takes a run (issue 15): `ssmlab export` (a run's model as a transformers
// folder), `ssmlab generate` (a run folder, an HF folder or a cached model id) and `ssmlab analyze` on an HF
// folder (a config whose model is the folder's and whose task is the text task with its tokenizer.json).
#pragma once
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "ssmlab/experiments/config.h"
#include "ssmlab/models/language_model.h"
#include "ssmlab/text/tokenizer.h"

namespace ssmlab::experiments {

struct LoadedLanguageModel {
  models::LanguageModel model{nullptr};
  text::TokenizerPtr tokenizer;       // null when none is known (then only token ids can be given)
  std::optional<int64_t> eos_token_id;
  std::string source;                 // "run folder X (checkpoint Y)" | "Hugging Face folder X"
};

// target: a run folder (config.toml + a checkpoint; its text task's tokenizer), or a Hugging Face folder or a
// model id in the local cache (its tokenizer.json when present). tokenizer_json overrides the tokenizer.
// dtype float32 or float64; device "cpu", "cuda", "auto".
LoadedLanguageModel load_language_model(const std::string& target, at::ScalarType dtype, const std::string& device,
                                        const std::string& tokenizer_json = "");

// Writes the newest checkpoint of a run folder's LanguageModel as a transformers folder in `out` (config.json,
// model.safetensors; tokenizer.json is not written). Returns out.
std::filesystem::path export_run(const std::filesystem::path& run_dir, const std::filesystem::path& out);

// The config an analysis of an HF folder runs under: model = the folder's, task = text with the folder's
// tokenizer.json (if it has one), then `sets` (task.text.corpus and friends).
Config hf_analysis_config(const std::filesystem::path& folder, const std::vector<std::string>& sets);

}  // namespace ssmlab::experiments
