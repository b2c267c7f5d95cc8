// Loss vs position far past the training length (spec §3.2, the Stuffed Mamba paper's Figure 1 at small scale):
// a language model on the run's text task reads a long prompt (validation text, newlines or a repeated
// sentence) of max_len tokens in segments carrying every layer's state (models::next_token_losses: memory of
// one segment, never L x V), the per-position losses of `samples` sequences are averaged, cut into buckets
// (first and last dropped) and drawn against the bucket centre with a vertical line at T_train. With
// `variants` the training-free mitigations (spec §3.6) are evaluated in the same call and drawn together.
//
// analysis/loss_position.json's result (read by the T_forget aggregation; docs/GLOSSARY.md "learned to
// forget"): t_train, state_size, state_size_ssm (null where a layer has no "ssm" state), learned_to_forget,
// criterion, forget_factor, max_len, bucket, buckets [{x, loss}], mean_loss_within, max_loss_within,
// max_loss_beyond -- all of the first variant (default "none") -- and variants {name: {buckets,
// learned_to_forget, mean_loss_within, max_loss_beyond, ...}}.
#pragma once
#include <cstdint>
#include <string>

#include "ssmlab/analysis/analysis.h"
#include "ssmlab/core/fields.h"

namespace ssmlab::analysis {

struct LossPositionOptions {
  std::string prompt = "text";
  int64_t max_len = 0;
  int64_t t_train = 0;
  int64_t samples = 1;
  int64_t bucket = 0;
  int64_t segment = 512;
  double forget_factor = 2.0;
  std::string forget_on = "loss";
  bool logx = false;
  bool perplexity = false;
  std::string variants = "none";
  double rri_decay = 0.9999;
  double rri_b = 0.75;
  int64_t window = 0;
  int64_t calib_every = 64;
  int64_t calib_samples = 4;

  template <class V>
  void visit(V& v) {
    v("prompt", prompt, "text (validation documents), newlines, or capital (a repeated sentence)",
      Check::one_of({"text", "newlines", "capital"}));
    v("max_len", max_len, "tokens evaluated per sequence; 0 = 32 x T_train", Check::at_least(0));
    v("t_train", t_train, "training length T_train in tokens; 0 = task.text.seq_len (x task.text.segments)",
      Check::at_least(0));
    v("samples", samples, "sequences averaged (text prompts start at different offsets)", Check::at_least(1));
    v("bucket", bucket, "positions per bucket; 0 = T_train / 4 (first and last bucket dropped)", Check::at_least(0));
    v("segment", segment, "tokens per evaluation segment (memory: samples x segment x vocabulary logits)",
      Check::at_least(1));
    v("forget_factor", forget_factor,
      "learned to forget iff every bucket beyond T_train stays below this x the largest bucket within",
      Check::positive());
    v("forget_on", forget_on,
      "what forget_factor multiplies: loss (the paper's secondary note: loss < 2x the in-length maximum) or "
      "perplexity (exp of the loss: beyond < within + ln factor nats, stricter when the loss is large)",
      Check::one_of({"loss", "perplexity"}));
    v("logx", logx, "log x axis");
    v("perplexity", perplexity, "draw exp(bucket mean loss) instead of the loss");
    v("variants", variants,
      "mitigations evaluated in one call, comma-separated: none, rri, state_norm (thresholds calibrated on "
      "validation text within T_train, min(1, tau/|S|)), state_norm_seed (the seed's |S|/tau form), window",
      Check{});
    v("rri_decay", rri_decay, "RRI lambda_alpha (spec §3.6.1: 0.9999)", Check::positive());
    v("rri_b", rri_b, "RRI lambda_B (spec §3.6.1: 0.75)");
    v("window", window, "state-difference window r in tokens; 0 = T_train / 2", Check::at_least(0));
    v("calib_every", calib_every, "state-norm calibration: state norms read every this many tokens",
      Check::at_least(1));
    v("calib_samples", calib_samples, "state-norm calibration: validation sequences of T_train tokens",
      Check::at_least(1));
  }
};

// The analysis: figures/loss_position.{csv,json}, analysis/loss_position.json. Needs a language model on the
// text task.
Result run_loss_position(const Context& ctx, const LossPositionOptions& opts);

}  // namespace ssmlab::analysis
