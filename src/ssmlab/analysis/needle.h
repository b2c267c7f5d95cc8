// Needle grid (spec §2.3, the recency paper's Figure 2 at small scale): retrieval accuracy of a model trained on
// the needle task (tasks/needle.h) as a heatmap over context length x needle depth. For every length and depth
// bin, `count` fresh examples (the task's layout, depths spread evenly in the bin, seeds from the analysis seed)
// are read in one forward; an example counts as retrieved when the argmax at every key-digit position is the key
// digit (teacher-forced, which equals greedy decoding of the key). The paper: Mamba fails when the needle is early
// in a long context, a Transformer is uniform. Lengths beyond training are allowed (a model with learned positions
// only up to its max_position_embeddings).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "ssmlab/analysis/analysis.h"
#include "ssmlab/core/fields.h"

namespace ssmlab::analysis {

struct NeedleGridOptions {
  std::string lengths;   // comma-separated; "" = the task's test lengths
  int64_t bins = 10;     // depth bins
  int64_t count = 20;    // examples per (length, bin)
  int64_t batch_size = 64;

  template <class V>
  void visit(V& v) {
    v("lengths", lengths, "context lengths, comma-separated (e.g. \"128,256,512,1024\"); \"\" = the task's test lengths");
    v("bins", bins, "needle depth bins (spec §3.4: 10)", Check::at_least(1));
    v("count", count, "examples per (length, depth bin)", Check::at_least(1));
    v("batch_size", batch_size, "examples per forward", Check::at_least(1));
  }
};

// Fraction of the examples whose every counted target is the argmax: logits (M, L, V), targets (M, L) -> (M) bool
// as float64 (rows without a counted target are NaN).
at::Tensor exact_match(const at::Tensor& logits, const at::Tensor& targets);

// The analysis: figures/needle_grid.{csv,json} (heatmap, rows = depth bins, columns = lengths),
// analysis/needle_grid.json. Needs the needle task.
Result run_needle_grid(const Context& ctx, const NeedleGridOptions& opts);

}  // namespace ssmlab::analysis
