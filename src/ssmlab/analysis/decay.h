// Decay diversity (spec §2.7, the recency paper's channel-diversity CDF, the motivation of polarization): for
// every (channel, state) of every layer, the spread A_max - A_min of the per-token decay Ā_t (Trace `decay`,
// docs/GLOSSARY.md: exp(Δ_t A) for the selective SSMs, the forget gates of RWKV-6 / HGRN-2) over every position
// of every sequence analysed; the empirical CDF of the spreads across channels. A time-invariant decay (S4D, H3,
// RWKV-4/5: recorded without the leading (B, L)) has spread 0 in every channel. The paper: in a trained Mamba
// "more than 60% of channels have A_max - A_min < 0.5", i.e. few channels can both keep and forget.
#pragma once
#include <cstdint>
#include <vector>

#include "ssmlab/analysis/analysis.h"
#include "ssmlab/core/fields.h"

namespace ssmlab::analysis {

struct DecayOptions {
  int64_t samples = 16;     // sequences from the task's test split
  int64_t batch_size = 4;   // sequences per forward (Mamba-1's decay is (B, L, E, N): memory grows with it)
  double threshold = 0.5;   // the paper's cut: fraction of channels with spread below it

  template <class V>
  void visit(V& v) {
    v("samples", samples, "sequences drawn from the task's test split", Check::at_least(1));
    v("batch_size", batch_size, "sequences per forward (the decay record is large for Mamba-1)", Check::at_least(1));
    v("threshold", threshold, "report the fraction of channels whose spread is below this (the paper: 0.5)",
      Check::unit());
  }
};

// Running per-channel extremes of one layer's decay: every dimension after (B, L) is a channel.
struct DecayRange {
  at::Tensor max, min;  // float64, the decay's channel shape; undefined before the first update
  bool time_invariant = false;
  // decay (B, L, ...) per position, or (...) when time-invariant (then the spread is 0).
  void update(const at::Tensor& decay, bool per_position);
  at::Tensor spread() const;  // (channels) flattened, float64: max - min
};

// Whether a recorded decay is per position: rank >= 3 with leading (batch, length) (docs/GLOSSARY.md: a
// time-invariant decay is recorded without them).
bool decay_is_per_position(const at::Tensor& decay, int64_t batch, int64_t length);

// Per layer, the spread of every channel of the decay over `inputs` (on the model's device), run in batches.
// Layers without a `decay` record (attention) are absent from the result (an empty tensor).
std::vector<at::Tensor> decay_spreads(models::ModelImpl& model, const at::Tensor& inputs, int64_t batch_size);

// The analysis: figures/decay_diversity.{csv,json} (CDF per layer), analysis/decay_diversity.json.
Result run_decay_diversity(const Context& ctx, const DecayOptions& opts);

}  // namespace ssmlab::analysis
