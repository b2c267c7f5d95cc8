// Passkey retrieval (spec §3.4, Stuffed Mamba's passkey-retrieval/passkey.py) on a language model trained on a
// text task: the prompt, in the task's tokenizer,
//   prefix + n_blocks haystack blocks, block number floor(depth (n_blocks - 1)) replaced by the needle, + suffix
//   n_blocks = floor((context_len - len(prefix) - len(suffix)) / len(block))   (lengths in tokens, each piece
//              encoded alone; the prompt is encoded as one string, so its length can differ by a token or two)
// with the exact strings below and K a uniformly random 5-digit key ("00000".."99999", seeded). The prompt is
// prefilled with models::run_segments (each layer's state carried across segments, memory bounded by one
// segment), then `new_tokens` tokens are decoded greedily with LanguageModelImpl::step continuing those states;
// a sample is correct iff K occurs in the decoded text (tokenizer decode). No BOS token (the paper's default).
//
// Grid: for every context length, `samples` prompts with depth_i = (i + 0.5) / samples; the heatmap bins them by
// depth (bin b collects depths <= (b + 1) / bins, the paper's 10 bins), the curve is the accuracy per length over
// the deepest `curve_bins` bins (0: all samples). T_recall = the largest length whose accuracy is >= threshold
// (the paper's 95%). Expected (spec §3.4, §3.5): near-perfect within the training length, near zero beyond ~2x it
// for a model trained short; T_recall grows with the state size. The seed's evaluation script crashes when its
// output file does not exist yet (spec §6.15); nothing here resumes from a partial output, so nothing carries it.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "ssmlab/analysis/analysis.h"
#include "ssmlab/core/fields.h"
#include "ssmlab/core/rng.h"
#include "ssmlab/models/language_model.h"
#include "ssmlab/text/tokenizer.h"

namespace ssmlab::analysis {

// The prompt strings of spec §3.4, byte for byte.
inline constexpr const char* kPasskeyPrefix =
    "There is an important info hidden inside a lot of irrelevant text. Find it and memorize it.\n\n";
inline constexpr const char* kPasskeyBlock =
    "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again.\n";
inline constexpr const char* kPasskeySuffix = "\nWhat is the pass key? The passkey is";

struct PasskeyOptions {
  std::string lengths = "256,512,1024";  // context lengths in tokens (the paper: l·1024, l = 1..128)
  int64_t samples = 20;                  // prompts per length (the paper: 200)
  int64_t bins = 10;                     // depth bins of the heatmap
  int64_t new_tokens = 5;                // greedy decoding length (the paper: max_new_tokens = 5)
  int64_t segment = 1024;                // prefill segment length (tokens per forward_stateful call)
  int64_t batch_size = 8;                // prompts prefilled together (prompts of one token length)
  double threshold = 0.95;               // T_recall: accuracy at least this
  int64_t curve_bins = 0;                // accuracy curve over the deepest k bins; 0 = all samples
  int64_t t_train = 0;                   // training length for the paper rows; 0 = the text task's seq_len
  std::string key;                       // "" = a random 5-digit key per sample; else this key for every sample

  template <class V>
  void visit(V& v) {
    v("lengths", lengths, "context lengths in tokens, comma-separated (e.g. \"256,512,1024\"; the paper: l·1024)");
    v("samples", samples, "prompts per length, depth_i = (i + 0.5) / samples (the paper: 200)", Check::at_least(1));
    v("bins", bins, "depth bins of the heatmap (bin b: depths <= (b + 1) / bins; the paper: 10)", Check::at_least(1));
    v("new_tokens", new_tokens, "tokens decoded greedily after the prompt (the paper: 5)", Check::at_least(1));
    v("segment", segment, "prefill segment length in tokens (states carried across segments)", Check::at_least(1));
    v("batch_size", batch_size, "prompts prefilled together", Check::at_least(1));
    v("threshold", threshold, "T_recall = the largest length with accuracy >= threshold (the paper: 0.95)",
      Check::unit());
    v("curve_bins", curve_bins, "accuracy curve over the deepest k depth bins; 0 = all samples", Check::at_least(0));
    v("t_train", t_train, "training length in tokens for the paper rows; 0 = task.text.seq_len", Check::at_least(0));
    v("key", key, "\"\" = a seeded random 5-digit key per sample (the paper); digits = that key for every sample");
  }
};

// "The passkey is {K}. Remember it. {K} is the passkey.\n"
std::string passkey_needle(const std::string& key);

// floor((context_len - len(prefix) - len(suffix)) / len(block)), lengths in tokens of `tok`; ConfigError when no
// block fits (naming the length and the minimum).
int64_t passkey_blocks(const text::Tokenizer& tok, int64_t context_len);
// The block the needle replaces: floor(depth (n_blocks - 1)); depth in [0, 1].
int64_t passkey_needle_block(int64_t n_blocks, double depth);

struct PasskeyPrompt {
  std::string text;              // the whole prompt
  std::vector<uint32_t> tokens;  // tok.encode(text)
  int64_t n_blocks = 0, needle_block = 0;
};
PasskeyPrompt make_passkey_prompt(const text::Tokenizer& tok, int64_t context_len, double depth,
                                  const std::string& key);

// depth_i = (i + 0.5) / n, i = 0 .. n-1.
std::vector<double> passkey_depths(int64_t n);
// The bin of a depth: the smallest b with depth <= (b + 1) / bins (depths above 1 go to the last bin).
int64_t passkey_depth_bin(double depth, int64_t bins);
// A uniformly random 5-digit key "00000".."99999".
std::string random_passkey(Rng& rng);
// The substring criterion: `key` occurs in `decoded`.
bool passkey_correct(const std::string& key, const std::string& decoded);
// The largest length whose accuracy is >= threshold; nullopt when none is.
std::optional<int64_t> passkey_t_recall(const std::vector<int64_t>& lengths, const std::vector<double>& accuracy,
                                        double threshold);

// Greedy continuation of prompts (B, L) int64 (one length for all): run_segments prefills them `segment` tokens
// at a time, then new_tokens tokens are decoded with step() from the carried states; the first is the argmax of
// the prompt's last logits. -> (B, new_tokens) int64 on the CPU. Under NoGradGuard in eval mode (restored).
at::Tensor greedy_continue(models::LanguageModelImpl& model, const at::Tensor& prompts, int64_t new_tokens,
                           int64_t segment);

// The analysis: figures/passkey.{csv,json} (heatmap: rows depth bins, columns lengths), figures/passkey_curve.
// {csv,json} (accuracy vs length) and analysis/passkey.json. Needs a LanguageModel and the text task.
Result run_passkey(const Context& ctx, const PasskeyOptions& opts);

}  // namespace ssmlab::analysis
