// THE numeric tolerances of the ssmlab test suite, one place for every test (ops, nn, mixers, models).
// A comparison passes when, element by element, |actual - expected| <= atol + rtol * |expected|
// (numpy/torch allclose). The expected side is always an independent computation in float64 on the
// same (already rounded) inputs, so each tolerance budgets only the error of the code under test.
#pragma once
#include <cmath>
#include <string>

#include <ATen/ATen.h>
#include <gtest/gtest.h>

namespace ssmlab::test {

struct Tol {
  double rtol;
  double atol;
};

// float64: unit roundoff 1.1e-16. Time-stepped recurrences of a few thousand steps with decaying states
// lose at most a few hundred ulps; 1e-10 leaves six orders of margin and still catches any logic error.
inline constexpr Tol kFp64Forward{1e-10, 1e-10};
// float64 gradients: sums over B·L (dA, dD, d delta_bias) of cancelling terms; a little looser than forward.
inline constexpr Tol kFp64Grad{1e-9, 1e-9};
// float32: unit roundoff 6e-8; ~1e3 dependent fused multiply-adds per output -> ~1e-5 relative, with room.
inline constexpr Tol kFp32Forward{1e-4, 1e-4};
// float32 gradients: reductions over B·L terms (dA sums up to ~1e4 products) accumulate ~sqrt(n) ulps.
inline constexpr Tol kFp32Grad{1e-3, 1e-3};
// bfloat16: 8-bit mantissa, unit roundoff 3.9e-3; the output is computed in fp32 and rounded once
// (0.4% relative) plus rounding of intermediates such as the conv -> silu boundary.
inline constexpr Tol kBf16Forward{2e-2, 2e-2};
// bfloat16 gradients: rounded once more on the way out and summed over B·L in fp32.
inline constexpr Tol kBf16Grad{5e-2, 5e-2};
// float16: 11-bit mantissa, unit roundoff 4.9e-4; one rounding of the fp32 result plus margin.
inline constexpr Tol kFp16Forward{5e-3, 5e-3};
// float16 gradients: as for bf16, scaled to fp16's finer mantissa.
inline constexpr Tol kFp16Grad{1e-2, 1e-2};
// Two float32 implementations of the same optimizer (ATen's fused AdamW vs torch::optim::AdamW, or a CUDA-graph
// step vs an eager one) after ~20-30 steps of lr <= 1e-2: each step rounds a handful of fp32 operations per element
// (~1e-7 relative of an update of size <= lr), and the difference feeds back through the gradients; 2e-6 absolute is
// ~1e-4 of the parameters' total movement, while a wrong bias correction, weight decay or clip moves them by >= 1e-4.
inline constexpr Tol kFp32Steps{1e-5, 2e-6};
// Central finite differences in float64 with step kFiniteDiffStep: truncation error O(h^2 f''') ~ 1e-12
// plus cancellation eps/h ~ 1e-10, so analytic vs numeric gradients agree to ~1e-7.
inline constexpr Tol kFiniteDiff{1e-6, 1e-7};
inline constexpr double kFiniteDiffStep = 1e-6;
// Eigenvalues computed in float64 (eigvalsh / eigvals of an E x E matrix of rank N): an eigenvalue counts as zero
// when |λ| <= kEigenZeroRel · max|λ|. The exact zeros come out at ~E·eps ~ 1e-14 relative; the scenarios' nonzero
// eigenvalues are >= ~1e-3 relative on the tests' random weights, so 1e-9 separates them with room on both sides.
inline constexpr double kEigenZeroRel = 1e-9;
// SoftSort near its zero-temperature limit: with scores at least 0.1 apart and τ = 1e-3 the off-permutation
// weights are <= exp(-100); 1e-6 is far above that and far below the τ = 1 weights (~0.1-0.5).
inline constexpr double kSoftSortNearPermutation = 1e-6;

// Tolerance for a forward result in `dtype` (the dtype of the inputs under test).
inline Tol forward_tol(at::ScalarType dtype) {
  switch (dtype) {
    case at::kDouble: return kFp64Forward;
    case at::kFloat: return kFp32Forward;
    case at::kBFloat16: return kBf16Forward;
    case at::kHalf: return kFp16Forward;
    default: ADD_FAILURE() << "no tolerance for dtype " << dtype; return kFp64Forward;
  }
}

// Tolerance for a gradient computed from inputs in `dtype`.
inline Tol grad_tol(at::ScalarType dtype) {
  switch (dtype) {
    case at::kDouble: return kFp64Grad;
    case at::kFloat: return kFp32Grad;
    case at::kBFloat16: return kBf16Grad;
    case at::kHalf: return kFp16Grad;
    default: ADD_FAILURE() << "no tolerance for dtype " << dtype; return kFp64Grad;
  }
}

// allclose with a readable failure: the name, the shapes, the worst element and its index.
// Use as EXPECT_TRUE(ssmlab::test::all_close(actual, expected, tol, "dA")).
inline ::testing::AssertionResult all_close(const at::Tensor& actual, const at::Tensor& expected, Tol tol,
                                            const std::string& what) {
  if (!actual.defined() || !expected.defined())
    return ::testing::AssertionFailure() << what << ": undefined tensor (actual " << actual.defined()
                                         << ", expected " << expected.defined() << ")";
  if (actual.sizes() != expected.sizes())
    return ::testing::AssertionFailure() << what << ": shape " << actual.sizes() << " vs expected "
                                         << expected.sizes();
  const at::Tensor a = actual.detach().to(at::kCPU, at::kDouble);
  const at::Tensor e = expected.detach().to(at::kCPU, at::kDouble);
  if (a.numel() == 0) return ::testing::AssertionSuccess();
  const at::Tensor err = (a - e).abs();
  const at::Tensor excess = err - (tol.atol + tol.rtol * e.abs());
  // NaN anywhere (either side) fails: NaN never compares <= anything.
  const bool ok = !at::isnan(a).any().item<bool>() && !at::isnan(e).any().item<bool>() &&
                  (excess <= 0).all().item<bool>();
  if (ok) return ::testing::AssertionSuccess();
  const int64_t i = at::nan_to_num(excess, /*nan=*/1e300).argmax().item<int64_t>();
  return ::testing::AssertionFailure() << what << ": worst at flat index " << i << " of " << actual.sizes()
                                       << ": actual " << a.flatten()[i].item<double>() << ", expected "
                                       << e.flatten()[i].item<double>() << " (|err| "
                                       << err.flatten()[i].item<double>() << ", rtol " << tol.rtol << ", atol "
                                       << tol.atol << "); max |err| " << at::nan_to_num(err, 1e300).max().item<double>();
}

}  // namespace ssmlab::test
