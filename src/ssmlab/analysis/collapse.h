// Shared pieces of the state-collapse analyses (spec §3, issue 18: loss_position, state_stats): the run's
// training length, the prompts, bucketing of per-position losses, the state statistics, and the training-free
// mitigations (spec §3.6) applied through the Mitigable interface (mixers/mitigation.h) with the state-norm
// calibration pass. Everything here sees the Model / Block / Mixer interfaces and Trace names only.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

#include "ssmlab/analysis/analysis.h"
#include "ssmlab/mixers/mitigation.h"
#include "ssmlab/models/language_model.h"
#include "ssmlab/tasks/text.h"

namespace ssmlab::analysis {

// The run's model as a LanguageModel and its task as the text task; ConfigError naming `who` and what the run
// has otherwise.
models::LanguageModelImpl& collapse_language_model(const Context& ctx, const char* who);
const tasks::TextTask& collapse_text_task(const Context& ctx, const char* who);

// T_train in tokens: task.text.seq_len x task.text.segments where the text task has a `segments` key (TBPTT,
// spec §3.5), else seq_len.
int64_t collapse_t_train(const tasks::TextTask& task);

// Prompt tokens (samples, len) int64 on the CPU (spec §3.2): "text": the validation documents of the run's
// corpus as one stream (each ended by the end-of-text id), repeated when shorter than len, sample i starting
// at i/samples of the stream; "newlines": the tokenisation of 1024 newline characters, repeated; "capital": the
// tokenisation of a fixed three-sentence string about capitals, repeated. ConfigError for another name.
at::Tensor collapse_prompt(const tasks::TextTask& task, const std::string& prompt, int64_t samples, int64_t len);
inline const std::vector<std::string>& collapse_prompt_names() {
  static const std::vector<std::string> names = {"text", "newlines", "capital"};
  return names;
}

// Per-position losses (n) cut into buckets of `bucket` positions, b = 0 .. ceil(n / bucket) - 1 (the last may
// be short); the first and the last bucket are dropped (spec §3.2). Each kept bucket: its positions
// [begin, end), centre x = (begin + end) / 2 and the mean loss. Error when fewer than three buckets exist.
struct LossBucket {
  int64_t begin = 0, end = 0;
  double x = 0, loss = 0;
};
std::vector<LossBucket> bucket_losses(const std::vector<double>& losses, int64_t bucket);

// The "learned to forget" criterion (docs/GLOSSARY.md): buckets inside T_train (end <= t_train) and beyond it
// (begin >= t_train); the model has learned to forget iff every bucket beyond stays below factor x the largest
// bucket inside (on_perplexity: exp(loss) compared, i.e. every bucket beyond < the largest inside + ln factor).
// Error when either side has no bucket.
struct ForgetVerdict {
  double max_within = 0, mean_within = 0, max_beyond = 0;
  int64_t within = 0, beyond = 0;  // bucket counts
  bool learned_to_forget = false;
};
ForgetVerdict forget_verdict(const std::vector<LossBucket>& buckets, int64_t t_train, double factor,
                             bool on_perplexity = false);

// Statistics of one state per head: state (B, H, ...) -> (H, 4) float64 columns mean, unbiased variance,
// RMS sqrt(mean(s^2)) and median (the lower middle element, torch's median), each over the batch and every
// dimension after the head's.
at::Tensor state_head_stats(const at::Tensor& state);
// Cumulative retention of the first token per head (spec §3.3): log_decay (T, H) -> (T, H) with
// out[t] = exp(Σ_{j<=t} log α_j), carried on from `log_start` (H) (the running sum so far; undefined = 0).
at::Tensor cumulative_retention(const at::Tensor& log_decay, const at::Tensor& log_start = at::Tensor());

// Per layer, the largest per-head Frobenius norm of the recorded `state` (B, H, ...) over the batch and over
// every `every` tokens of `tokens` (B, L) fed with forward_stateful (after each chunk: the points where state
// normalisation acts), as (H) float64; undefined for a layer that records no `state`. The calibration of
// state-normalisation thresholds on in-distribution text within T_train (spec §3.6.2).
std::vector<at::Tensor> calibrate_state_norm(models::LanguageModelImpl& model, const at::Tensor& tokens,
                                             int64_t every);

// Mitigation variants of loss_position (spec §3.6): "none", "rri" (λ_α, λ_B), "state_norm" (the calibrated
// thresholds, min(1, τ/‖S‖) form), "state_norm_seed" (the same thresholds, the seed's ‖S‖/τ form), "window"
// (r tokens). Applied to every layer whose mixer is Mitigable; ConfigError when no layer supports a variant.
struct VariantSettings {
  double rri_decay = 0.9999, rri_b = 0.75;
  int64_t window = 0;
  std::vector<at::Tensor> tau;  // per layer, from calibrate_state_norm
};
inline const std::vector<std::string>& collapse_variant_names() {
  static const std::vector<std::string> names = {"none", "rri", "state_norm", "state_norm_seed", "window"};
  return names;
}
// Sets the variant on top of `base` (the mixers' settings before, one per layer, from save_mitigations).
void apply_variant(models::LanguageModelImpl& model, const std::string& variant, const VariantSettings& s,
                   const std::vector<std::optional<mixers::Mitigations>>& base);
std::vector<std::optional<mixers::Mitigations>> save_mitigations(models::LanguageModelImpl& model);
void restore_mitigations(models::LanguageModelImpl& model, const std::vector<std::optional<mixers::Mitigations>>& base);

// Σ over layers of init_state(1)'s "ssm" numel (N_S = L·H·P·N, spec §3.1), or -1 when a layer has none.
int64_t ssm_state_numbers(models::LanguageModelImpl& model);

// Figure helper: rows of a line CSV (`columns` values each, x first) get one more column drawn as a vertical
// line at x from ymin to ymax (two rows at x, NaN in the other columns; NaN in the new column elsewhere);
// rows stay sorted by x.
void add_vertical_line(std::vector<std::vector<double>>& rows, size_t columns, double x, double ymin, double ymax);

}  // namespace ssmlab::analysis
