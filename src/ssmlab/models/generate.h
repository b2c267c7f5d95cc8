// Text generation from a LanguageModel: the prompt through forward_stateful (one pass, the recurrent states
// kept), then one token at a time through LanguageModel::step (the recurrent step: constant work per token).
// Sampling: greedy (temperature 0), or softmax(logits / temperature) restricted to the top_k most likely tokens
// and then to the smallest set whose probability reaches top_p, drawn from a generator seeded with `seed`.
#pragma once
#include <cstdint>
#include <optional>
#include <vector>

#include "ssmlab/models/language_model.h"

namespace ssmlab::models {

struct GenerateOptions {
  int64_t max_new_tokens = 32;
  double temperature = 1.0;  // 0: greedy (argmax)
  int64_t top_k = 0;         // 0: all tokens
  double top_p = 1.0;        // 1: no nucleus cut
  uint64_t seed = 0;
  std::optional<int64_t> eos_token_id;  // stop after generating it
  // false: every token re-runs the full forward over the whole sequence (the reference the step is tested
  // against; quadratic in length).
  bool use_step = true;
  // `--cuda-graph`: after the prompt and one eager step, the decode step is captured into a CUDA graph and
  // replayed per token (models/generate_graph.h). Needs use_step, a CUDA device and no position embeddings.
  bool cuda_graph = false;
};

struct GenerateResult {
  std::vector<int64_t> tokens;  // the new tokens (the prompt not included)
  double prompt_seconds = 0;    // the prompt's forward pass
  double decode_seconds = 0;    // the generated tokens after the first
  double tokens_per_second = 0; // generated tokens / (prompt_seconds + decode_seconds)
  int64_t graph_replays = 0;    // cuda_graph: the decode steps that were graph replays
};

// The next token from one row of logits (V): greedy, or sampled as the options say. `gen` is used only when
// sampling.
int64_t sample_token(const at::Tensor& logits, const GenerateOptions& opts, at::Generator& gen);

// prompt: at least one token id in [0, vocab). Runs on the model's device under NoGradGuard, model in eval mode.
GenerateResult generate(LanguageModelImpl& model, const std::vector<int64_t>& prompt, const GenerateOptions& opts);

}  // namespace ssmlab::models
