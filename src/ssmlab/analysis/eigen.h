// Eigen-spectrum of the input-output matrix (spec §4.1 / §4.2, the token-dynamics paper): per layer, the
// eigenvalues of S_C^T S_B (E, E), read through Mixer::input_output_matrix() (mixers without one are skipped;
// a model with none is an error naming its mixers). Their signs decide whether tokens converge to zero (all
// negative) or diverge (any positive) through depth. The matrix is rank <= N, so the E - N eigenvalues with
// |λ| <= zero_tol · max|λ| count as zero and are left out of the figures and the min / max / fractions (for a
// matrix held in float32, at least 16 E eps_32 · max|λ|: what float32 can resolve). For a
// symmetric matrix (the eigenvalue scenarios: U^T diag(d) U) the eigenvalues are real (eigvalsh); otherwise
// (an unconstrained x_proj) they may be complex: the real parts are reported, with the largest |imaginary part|.
#pragma once
#include <cstdint>
#include <vector>

#include "ssmlab/analysis/analysis.h"
#include "ssmlab/core/fields.h"

namespace ssmlab::analysis {

struct EigenOptions {
  double zero_tol = 1e-8;  // relative: |λ| <= zero_tol · max|λ| counts as zero

  template <class V>
  void visit(V& v) {
    v("zero_tol", zero_tol, "eigenvalues with |λ| <= zero_tol * max|λ| of their layer count as zero (S_C^T S_B "
      "has rank <= N)", Check::range(0.0, 1.0));
  }
};

struct LayerSpectrum {
  int64_t layer = 0;
  std::vector<double> eigenvalues;  // real parts of the nonzero eigenvalues, ascending
  double min = 0.0, max = 0.0;      // over the nonzero eigenvalues (0 when there are none)
  int64_t positive = 0, negative = 0, zero = 0;
  double fraction_positive = 0.0;   // positive / (positive + negative); 0 when all are zero
  bool symmetric = false;
  double max_abs_imag = 0.0;        // 0 for a symmetric matrix
};

// The spectrum of one matrix M (E, E) (any dtype/device; computed in float64 on the CPU).
LayerSpectrum matrix_spectrum(const at::Tensor& M, double zero_tol);

// Every layer of `model` whose mixer has an input-output matrix, in layer order.
std::vector<LayerSpectrum> eigen_spectra(models::ModelImpl& model, double zero_tol);

// The analysis: figures/eigen.{csv,json} (min and max eigenvalue per layer), figures/eigen_fraction.{csv,json}
// (fraction positive per layer), figures/eigen_spectrum.{csv,json} (the sorted nonzero eigenvalues per layer),
// analysis/eigen.json (per layer: min, max, counts, fraction positive, symmetric, max |imag|).
Result run_eigen(const Context& ctx, const EigenOptions& opts);

}  // namespace ssmlab::analysis
