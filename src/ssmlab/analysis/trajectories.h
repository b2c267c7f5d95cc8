// Token trajectories through depth (spec §4.1, the token-dynamics paper): per layer, the norm ||x_t|| of every
// token's representation and the mean pairwise distance between tokens, from Trace "block_out" (the residual
// stream after each block) and "mixer_out" (docs/GLOSSARY.md). Layer index 0 is the input embeddings, l + 1 the
// output of block l. The rate of a token is the least-squares slope of ln(mean ||x_t||) against the layer index
// (mean over the sampled sequences): > 0 the tokens grow (divergence), < 0 they shrink (convergence to 0). The
// theory: with all eigenvalues of S_C^T S_B negative the tokens converge to 0, with a positive one they diverge,
// later positions faster (tests/analysis/test_trajectories.cpp checks a stack of 1-D simplified S6 layers).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "ssmlab/analysis/analysis.h"
#include "ssmlab/core/fields.h"

namespace ssmlab::analysis {

struct TrajectoryOptions {
  int64_t samples = 16;       // sequences from the task's test split
  int64_t buckets = 4;        // position buckets for the norm-vs-layer figure (equal runs of positions)
  double neutral_rate = 1e-3; // |rate| <= this: "neutral" rather than converging or diverging

  template <class V>
  void visit(V& v) {
    v("samples", samples, "sequences drawn from the task's test split", Check::at_least(1));
    v("buckets", buckets, "position buckets (equal runs of positions) for the norm-vs-layer figure",
      Check::at_least(1));
    v("neutral_rate", neutral_rate,
      "a slope of ln(norm) per layer within +-neutral_rate is reported as neutral, not convergent or divergent",
      Check::at_least(0.0));
  }
};

struct Trajectories {
  int64_t positions = 0;                          // L' (positions of the residual stream)
  std::vector<std::vector<double>> norm;          // [layer 0..n][position]: mean over sequences of ||block_out||
  std::vector<std::vector<double>> mixer_norm;    // [layer 1..n, stored at 0..n-1][position]: ||mixer_out||
  std::vector<double> mean_norm;                  // [layer 0..n]: mean over positions and sequences
  std::vector<double> distance;                   // [layer 0..n]: mean pairwise distance of block_out
  std::vector<double> mixer_distance;             // [layer 1..n at 0..n-1]: of mixer_out
  std::vector<int64_t> bucket_begin, bucket_end;  // position ranges [begin, end)
  std::vector<std::vector<double>> bucket_norm;   // [bucket][layer 0..n]: mean ||block_out|| over the bucket
  std::vector<double> position_rate;              // [position]: slope of ln norm vs layer
  std::vector<double> bucket_rate;                // [bucket]: slope of ln bucket_norm vs layer
  double rate = 0.0;                              // slope of ln mean_norm vs layer
  std::string verdict;                            // "diverge" | "converge" | "neutral"
};

// From the per-layer representations: blocks[0] the embeddings, blocks[l + 1] block l's output, each (n, L', D);
// mixers[l] block l's mixer output (may be empty). Every tensor must have the same (n, L').
Trajectories token_trajectories(const std::vector<at::Tensor>& blocks, const std::vector<at::Tensor>& mixers,
                                const TrajectoryOptions& opts);

// Runs `model` on `inputs` (a batch on its device) with a Trace of block_out and mixer_out and summarises the
// layers it recorded (every block of a Model records both; a model of other layers may record them itself).
Trajectories trajectory_layers(models::ModelImpl& model, const at::Tensor& inputs, const TrajectoryOptions& opts);

// The analysis: figures/trajectories_norm (mean ||x_t|| vs layer, one line per position bucket),
// trajectories_mixer_norm (the same for mixer_out), trajectories_distance (mean pairwise distance vs layer),
// trajectories_rate (slope of ln ||x_t|| per layer vs position), analysis/trajectories.json.
Result run_trajectories(const Context& ctx, const TrajectoryOptions& opts);

}  // namespace ssmlab::analysis
