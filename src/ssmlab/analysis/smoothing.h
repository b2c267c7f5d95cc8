// Over-smoothing across layers (spec §2.7, the recency paper's Figure 5): per layer, the mean pairwise distance
// between the token representations of one sequence,
//   sharpness(F) = (1/T²) Σ_{t,s} ||F_t − F_s||_2,   F ∈ R^{T×D},
// for the mixer outputs ("mixer_out") and the block outputs ("block_out", the residual stream after the block),
// averaged over sequences; the normalised variant divides by the sequence's mean ||F_t||_2 (removing the growth
// of the residual stream's scale). Row 0 ("embed") is the input embedding, the baseline. Identical tokens give
// 0 wherever the model keeps them identical (tests/analysis/test_smoothing.cpp).
#pragma once
#include <cstdint>
#include <vector>

#include "ssmlab/analysis/analysis.h"
#include "ssmlab/core/fields.h"

namespace ssmlab::analysis {

struct SmoothingOptions {
  int64_t samples = 16;  // sequences from the task's test split

  template <class V>
  void visit(V& v) {
    v("samples", samples, "sequences drawn from the task's test split", Check::at_least(1));
  }
};

// Mean pairwise distance of the rows of each F (n, T, D) -> (n) float64; normalised divides by mean_t ||F_t||.
at::Tensor pairwise_sharpness(const at::Tensor& F, bool normalised);

struct SmoothingLayers {
  // index 0: the embeddings (block_out = mixer_out = the input of block 0); index l + 1: layer l.
  std::vector<double> mixer_out, block_out, mixer_out_normalised, block_out_normalised;
};

// Per layer sharpness of `model` on `inputs` (a batch on the model's device), from Trace "mixer_out" and
// "block_out" (docs/GLOSSARY.md).
SmoothingLayers smoothing_layers(models::ModelImpl& model, const at::Tensor& inputs);

// The analysis: figures/smoothing.{csv,json}, figures/smoothing_normalised.{csv,json}, analysis/smoothing.json.
Result run_smoothing(const Context& ctx, const SmoothingOptions& opts);

}  // namespace ssmlab::analysis
