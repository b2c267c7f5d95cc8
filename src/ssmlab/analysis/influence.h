// Influence of a token vs distance (spec §2.2, the recency paper's Figure 1): how much the final features
// y_t (after the final norm, before the head) depend on the input embedding x_s of an earlier position, as a
// function of the distance d = t - s. For each sample, target position t and random unit probe g in R^D, one
// backward pass of g·y_t gives ||∂(g·y_t)/∂x_s||_2 for every s <= t (an unbiased probe of the Jacobian's
// Frobenius norm up to a constant); the curve is the mean of ln(score) over samples, targets and probes at
// each distance. Theorem 3.1 predicts a straight line for SSMs (|∂y_t/∂x_s| = O(exp(-κ d))): its fitted slope
// is -κ, and exp(slope) the effective decay per token. A scalar recurrence h_t = a h_{t-1} + x_t gives exactly
// ln a (tests/analysis/test_influence.cpp).
#pragma once
#include <cstdint>
#include <vector>

#include "ssmlab/analysis/analysis.h"
#include "ssmlab/core/fields.h"

namespace ssmlab::analysis {

struct InfluenceOptions {
  int64_t samples = 8;       // sequences from the task's test split
  int64_t probes = 4;        // random unit directions g per target position
  int64_t targets = 4;       // target positions t per sequence: evenly spaced over the second half, last included
  int64_t max_distance = 0;  // largest distance reported; 0 = the whole sequence
  int64_t fit_from = 1;      // the log-linear fit uses distances fit_from .. max reported

  template <class V>
  void visit(V& v) {
    v("samples", samples, "sequences drawn from the task's test split", Check::at_least(1));
    v("probes", probes, "random unit directions g per target position (one backward pass each)", Check::at_least(1));
    v("targets", targets,
      "target positions t per sequence, evenly spaced over the second half (the last included); a classifier "
      "uses its class token only",
      Check::at_least(1));
    v("max_distance", max_distance, "largest distance t - s reported; 0 = the whole sequence", Check::at_least(0));
    v("fit_from", fit_from, "smallest distance in the log-linear fit of ln influence vs distance", Check::at_least(0));
  }
};

struct InfluenceCurve {
  std::vector<int64_t> distance;  // 0, 1, ... max
  std::vector<double> mean_log;   // mean of ln ||∂(g·y_t)/∂x_s|| at each distance (-inf where a score was 0)
  std::vector<int64_t> count;     // (sample, target, probe) terms at each distance
  double slope = 0.0;             // least-squares slope of mean_log vs distance over [fit_from, max]
  double intercept = 0.0;
};

// The curve for `inputs` (a batch of model inputs on the model's device); `seed` draws the probes.
InfluenceCurve influence_curve(models::ModelImpl& model, const at::Tensor& inputs, const InfluenceOptions& opts,
                               uint64_t seed);

// The analysis: the curve of ctx.model on the task's test inputs, figures/influence.{csv,json} and
// analysis/influence.json (slope, decay per token, the curve).
Result run_influence(const Context& ctx, const InfluenceOptions& opts);

}  // namespace ssmlab::analysis
