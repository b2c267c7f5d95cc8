// State statistics past the training length (spec §3.3, the Stuffed Mamba paper's state-collapse analysis): the
// prompt (default newlines) is fed `chunk` tokens at a time with every layer's state carried
// (LanguageModel::forward_stateful, Trace names `state` and `decay`) up to max_len; after each chunk, per layer
// and head (the state's dim 1): mean, unbiased variance, RMS and median of the state's elements. Figures: mean
// and variance vs position (selected layers / heads; default the layer whose variance grows most beyond
// T_train, its first 8 heads) with the T_train line; a histogram of one head's state elements at T_train vs
// 2.5 x T_train (40 bins over the joint range, log counts); the decay α per layer (chunk mean, averaged over
// heads); the cumulative retention of the first token Π_{j<=t} α_j (exp of a running sum of ln α, per head of
// the selected layer, at chunk ends). Mixers whose `decay` is not per position (RWKV-4/5, S4D, H3) give no
// decay figures.
#pragma once
#include <cstdint>
#include <string>

#include "ssmlab/analysis/analysis.h"
#include "ssmlab/core/fields.h"

namespace ssmlab::analysis {

struct StateStatsOptions {
  std::string prompt = "newlines";
  int64_t max_len = 0;
  int64_t t_train = 0;
  int64_t chunk = 0;
  int64_t samples = 1;
  std::string layers;
  std::string heads;

  template <class V>
  void visit(V& v) {
    v("prompt", prompt, "text (validation documents), newlines, or capital (a repeated sentence)",
      Check::one_of({"text", "newlines", "capital"}));
    v("max_len", max_len, "tokens fed per sequence; 0 = 4 x T_train (at least 2.5 x T_train + a chunk)",
      Check::at_least(0));
    v("t_train", t_train, "training length T_train in tokens; 0 = task.text.seq_len (x task.text.segments)",
      Check::at_least(0));
    v("chunk", chunk,
      "tokens per chunk: statistics are taken after each; 0 = 128 (spec §3.3), or T_train / 2 where T_train < 256 "
      "(a chunk must end inside T_train for the histogram at T_train)",
      Check::at_least(0));
    v("samples", samples, "sequences (statistics pool their states)", Check::at_least(1));
    v("layers", layers, "layers drawn, comma-separated; \"\" = the layer whose variance grows most");
    v("heads", heads, "heads drawn, comma-separated; \"\" = the first 8 of each drawn layer");
  }
};

// The analysis: figures/state_stats_{mean,var,hist,decay,retention}.{csv,json}, analysis/state_stats.json.
Result run_state_stats(const Context& ctx, const StateStatsOptions& opts);

}  // namespace ssmlab::analysis
