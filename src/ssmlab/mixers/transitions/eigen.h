// Eigenvalue scenarios of Mamba-1 (spec §4.2, TD mamba_llm_{pos,neg,real}.py): a reparametrisation of x_proj's
// weight X (R + 2N, E), rows [dt (R) | B (N) | C (N)], that fixes the sign structure of the input-output matrix
// S_C^T S_B = W_C^T W_B (E, E):
//   W_dt = X[0:R]                                  (unchanged)
//   P    = X[R:R+N]   U = strict_upper(P) with U[i, i] = 1   (N, E), unit upper-triangular in its first N x N block
//   c    = X[R+N:R+2N, 0]                          (the first column of the C rows; the rest of those rows is unused)
//   W_C  = U,  W_B = diag(d) U  =>  S_C^T S_B = U^T diag(d) U, symmetric, rank N
//   positive: d = softplus(c) + margin        (PSD)
//   negative: d = -softplus(c) - margin       (NSD)
//   mixed:    d_i = +softplus(c_i) for i < N/2, -softplus(c_i) for i >= N/2   (indefinite; no margin in the seed)
// The seed hard-codes N = 16 (spec §6.12); here N is the scan's state size (any d_state <= E). For odd N,
// "i < N/2" (real division) makes the first ceil(N/2) states positive. The raw X stays the parameter (saved and
// loaded as x_proj.weight), and gradients reach P (its strict upper part) and c through this function.
#pragma once
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

namespace ssmlab::mixers {

struct EigenScenario {
  std::string kind = "none";   // none | positive | negative | mixed
  double margin = 0.7;         // added to |d| in the positive and negative scenarios (the seed's 0.7)
  bool mixed_margin = false;   // the seed's mixed scenario has no margin; true adds it there too
};

const std::vector<std::string>& eigen_scenarios();  // none, positive, negative, mixed

// Number of states with d > 0 in the mixed scenario: ceil(N / 2).
int64_t mixed_positive_states(int64_t n);

// X (R + 2N, E) raw -> the effective x_proj weight (R + 2N, E) of the scenario (X itself for "none").
// Errors name the scenario when N > E, or N < 2 for mixed (it needs both signs).
at::Tensor eigen_x_proj_weight(const at::Tensor& X, int64_t R, int64_t N, const EigenScenario& s);

// The diagonal d (N) of the scenario from the raw X (undefined for "none").
at::Tensor eigen_diagonal(const at::Tensor& X, int64_t R, int64_t N, const EigenScenario& s);

}  // namespace ssmlab::mixers
