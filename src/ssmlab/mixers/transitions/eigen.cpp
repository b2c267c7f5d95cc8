#include "ssmlab/mixers/transitions/eigen.h"

#include <ATen/ATen.h>

#include "ssmlab/core/error.h"

namespace ssmlab::mixers {

const std::vector<std::string>& eigen_scenarios() {
  static const std::vector<std::string> names = {"none", "positive", "negative", "mixed"};
  return names;
}

int64_t mixed_positive_states(int64_t n) { return (n + 1) / 2; }

namespace {

void check(const at::Tensor& X, int64_t R, int64_t N, const EigenScenario& s) {
  bool known = false;
  for (const auto& k : eigen_scenarios()) known = known || k == s.kind;
  SSMLAB_CHECK(known, "unknown eigenvalue scenario '", s.kind, "': expected none, positive, negative or mixed");
  SSMLAB_CHECK(X.dim() == 2 && X.size(0) == R + 2 * N, "eigen scenario: x_proj weight must be (R + 2N, E) = (",
               R + 2 * N, ", E); got ", shape_str(X.sizes()));
  if (s.kind == "none") return;
  SSMLAB_CHECK(N <= X.size(1), "eigen scenario '", s.kind, "': the state size N = ", N,
               " must not exceed the inner width E = ", X.size(1), " (U is unit upper-triangular, N x E)");
  SSMLAB_CHECK(s.kind != "mixed" || N >= 2, "eigen scenario 'mixed' needs d_state >= 2 (one positive and one "
               "negative state); got N = ", N);
  SSMLAB_CHECK(s.margin >= 0, "eigen scenario: margin must be >= 0; got ", s.margin);
}

}  // namespace

at::Tensor eigen_diagonal(const at::Tensor& X, int64_t R, int64_t N, const EigenScenario& s) {
  check(X, R, N, s);
  if (s.kind == "none") return at::Tensor();
  const at::Tensor sp = at::softplus(X.narrow(0, R + N, N).select(1, 0));  // (N)
  if (s.kind == "positive") return sp + s.margin;
  if (s.kind == "negative") return -sp - s.margin;
  // mixed: + for the first ceil(N/2) states, - for the rest
  at::Tensor sign = at::ones({N}, sp.options());
  sign.narrow(0, mixed_positive_states(N), N - mixed_positive_states(N)).fill_(-1.0);
  return sign * (s.mixed_margin ? sp + s.margin : sp);
}

at::Tensor eigen_x_proj_weight(const at::Tensor& X, int64_t R, int64_t N, const EigenScenario& s) {
  check(X, R, N, s);
  if (s.kind == "none") return X;
  const int64_t E = X.size(1);
  const at::Tensor U = at::triu(X.narrow(0, R, N), /*diagonal=*/1) + at::eye(N, E, X.options());  // (N, E)
  const at::Tensor d = eigen_diagonal(X, R, N, s);                                                // (N)
  return at::cat({X.narrow(0, 0, R), d.unsqueeze(1) * U, U}, 0);                                  // (R + 2N, E)
}

}  // namespace ssmlab::mixers
