// ops/cross_entropy on CUDA: the one-block-per-row kernels ("auto" and cross_entropy_fused on a CUDA device) and the
// row-blocked ATen path against the float64 oracle run on the CPU on float64 copies of the same (rounded) logits:
// loss, lse and d/dlogits for output gradients on both loss and lse; float64 / float32 / bfloat16 / float16 logits;
// odd sizes (M 1, 7, 300, 4099; V 1, 3, 129, 1000, 50257); ignored rows (none, some, all); out-of-range targets
// (NaN rows, not an error, on CUDA); extreme logits (+-1e4, -inf); logits with a row stride; outputs poisoned
// with NaN (the kernels' own switch and the caching allocator). Skips without a GPU.
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <torch/csrc/autograd/autograd.h>

#include <cmath>
#include <functional>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "cross_entropy_test_util.h"
#include "cuda_test_util.h"
#include "ssmlab/core/error.h"
#include "ssmlab/ops/cross_entropy/cross_entropy.h"
#include "ssmlab/ops/cross_entropy/cuda.h"
#include "test_util.h"
#include "tolerances.h"

namespace ops_test_cross_entropy_cuda {

namespace {

using at::Tensor;
using ssmlab::test::all_close;
namespace ops = ssmlab::ops;
constexpr int64_t kCeIgn = ops::kCrossEntropyIgnoreIndex;

using ssmlab::test::ce_oracle;
using ssmlab::test::ce_run;
using ssmlab::test::CeNamedPath;
using ssmlab::test::CeResult;

std::vector<CeNamedPath> ce_cuda_paths() {
  return {{"auto", [](const Tensor& x, const Tensor& t) { return ops::cross_entropy(x, t, kCeIgn, "auto"); }},
          {"fused", [](const Tensor& x, const Tensor& t) { return ops::cross_entropy_fused(x, t, kCeIgn); }},
          {"blocked M/3", [](const Tensor& x, const Tensor& t) {
             return ops::cross_entropy_blocked(x, t, kCeIgn, std::max<int64_t>(2, x.size(0) / 3));
           }}};
}


struct CeCase {
  int64_t m, v;
  at::ScalarType dtype;
  double scale, ignore_frac;
};

struct CeInputs {
  Tensor x, targets, gloss, glse;  // on the GPU
};

CeInputs ce_make(const CeCase& c, uint64_t seed) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  const auto cuda = at::TensorOptions().device(at::kCUDA);
  CeInputs in;
  in.x = (at::randn({c.m, c.v}, gen, at::kDouble) * c.scale).to(c.dtype).to(cuda.dtype(c.dtype));
  Tensor t = at::randint(c.v, {c.m}, gen, at::TensorOptions().dtype(at::kLong));
  t.masked_fill_(at::rand({c.m}, gen, at::kDouble).lt(c.ignore_frac), kCeIgn);
  in.targets = t.to(cuda.dtype(at::kLong));
  in.gloss = at::randn({c.m}, gen, at::kDouble).to(cuda.dtype(at::kDouble));
  in.glse = at::randn({c.m}, gen, at::kDouble).to(cuda.dtype(at::kDouble));
  return in;
}

void ce_expect_matches_oracle(const CeCase& c, uint64_t seed) {
  SCOPED_TRACE(ssmlab::str("M", c.m, " V", c.v, " ", c.dtype, " scale ", c.scale, " ignored ", c.ignore_frac));
  const CeInputs in = ce_make(c, seed);
  ASSERT_TRUE(ops::cross_entropy_fused_supports(in.x, in.targets));
  const CeResult want = ce_oracle(in.x, in.targets, in.gloss, in.glse);
  const auto ftol = ssmlab::test::forward_tol(c.dtype), gtol = ssmlab::test::grad_tol(c.dtype);
  const auto out_dtype = c.dtype == at::kDouble ? at::kDouble : at::kFloat;
  for (const auto& p : ce_cuda_paths()) {
    SCOPED_TRACE(p.name);
    ssmlab::test::poison_allocator();
    const CeResult got = ce_run(p.run, in.x, in.targets, in.gloss, in.glse);
    EXPECT_EQ(got.loss.scalar_type(), out_dtype);
    EXPECT_EQ(got.dx.scalar_type(), c.dtype);
    EXPECT_TRUE(ssmlab::test::all_finite(got.loss, "loss"));
    EXPECT_TRUE(ssmlab::test::all_finite(got.dx, "dlogits"));
    EXPECT_TRUE(all_close(got.loss, want.loss, ftol, "loss"));
    EXPECT_TRUE(all_close(got.lse, want.lse, ftol, "lse"));
    EXPECT_TRUE(all_close(got.dx, want.dx, gtol, "dlogits"));
  }
}

// Flips the kernels' NaN switch for one scope.
struct CePoisonKernels {
  CePoisonKernels() { ops::cross_entropy_cuda::set_poison_outputs(true); }
  ~CePoisonKernels() { ops::cross_entropy_cuda::set_poison_outputs(false); }
  CePoisonKernels(const CePoisonKernels&) = delete;
  CePoisonKernels& operator=(const CePoisonKernels&) = delete;
};

constexpr std::pair<int64_t, int64_t> kCeCudaSizes[] = {{1, 1}, {1, 3}, {7, 1000}, {300, 129}, {4099, 3}, {7, 50257}};

TEST(CrossEntropyCuda, MatchesOracleEveryDtypeOddSizes) {
  SKIP_WITHOUT_CUDA();
  const CePoisonKernels poison;
  uint64_t seed = 700;
  for (const auto dt : {at::kDouble, at::kFloat, at::kBFloat16, at::kHalf})
    for (const auto& [m, v] : kCeCudaSizes) ce_expect_matches_oracle({m, v, dt, dt == at::kHalf ? 2.0 : 5.0, 0.2}, seed++);
}

TEST(CrossEntropyCuda, IgnoredRowsAndAllIgnored) {
  SKIP_WITHOUT_CUDA();
  for (const double frac : {0.0, 0.5}) ce_expect_matches_oracle({33, 17, at::kFloat, 2.0, frac}, 710);
  const CeInputs in = ce_make({9, 11, at::kBFloat16, 2.0, 1.0}, 711);
  ASSERT_TRUE(in.targets.eq(kCeIgn).all().item<bool>());
  for (const auto& p : ce_cuda_paths()) {
    SCOPED_TRACE(p.name);
    const CeResult got = ce_run(p.run, in.x, in.targets, at::full({9}, 1e30, in.gloss.options()),
                                at::zeros({9}, in.glse.options()));
    EXPECT_TRUE(got.loss.eq(0).all().item<bool>()) << got.loss;
    EXPECT_TRUE(got.dx.eq(0).all().item<bool>());
  }
}

TEST(CrossEntropyCuda, OutOfRangeTargetGivesNanRowNotError) {
  SKIP_WITHOUT_CUDA();
  CeInputs in = ce_make({5, 7, at::kFloat, 1.0, 0.0}, 720);
  in.targets.index_put_({1}, 7);   // == V
  in.targets.index_put_({3}, -3);  // negative, not ignore_index
  for (const auto& p : ce_cuda_paths()) {
    SCOPED_TRACE(p.name);
    const CeResult got = ce_run(p.run, in.x, in.targets, at::ones({5}, in.gloss.options()),
                                at::zeros({5}, in.glse.options()));
    // at::tensor has no Bool overload on CPU: build the mask from integers; compare on the CPU.
    const Tensor want_bad = at::tensor({0, 1, 0, 1, 0}, at::kInt).to(at::kBool);
    EXPECT_TRUE(at::equal(at::isnan(got.loss).cpu(), want_bad)) << got.loss;
    EXPECT_TRUE(at::isfinite(got.loss.index({0})).item<bool>());
    EXPECT_TRUE(at::isnan(got.dx.index({1})).all().item<bool>());
    EXPECT_TRUE(at::isfinite(got.dx.index({0})).all().item<bool>());
  }
}

TEST(CrossEntropyCuda, ExtremeLogitsAndRowStride) {
  SKIP_WITHOUT_CUDA();
  const double inf = std::numeric_limits<double>::infinity();
  const Tensor x64 = at::tensor({1e4, -1e4, 0.0, -inf, 1e4, -1e4, 0.0, -inf, -1e4, -1e4, -1e4, -1e4 + 1}, at::kDouble)
                         .reshape({3, 4});
  const Tensor t = at::tensor({int64_t{0}, int64_t{2}, int64_t{3}}, at::kLong);
  for (const auto dt : {at::kDouble, at::kFloat, at::kBFloat16}) {
    SCOPED_TRACE(c10::toString(dt));
    // Logits as a column slice of a wider tensor: rows contiguous, row stride 6 (the kernels read it in place).
    const Tensor wide = at::zeros({3, 6}, at::kDouble);
    wide.narrow(1, 1, 4).copy_(x64);
    const Tensor x = wide.to(dt).cuda().narrow(1, 1, 4);
    ASSERT_EQ(x.stride(0), 6);
    const Tensor g1 = at::ones({3}, at::kDouble).cuda(), g0 = at::zeros({3}, at::kDouble).cuda();
    const CeResult want = ce_oracle(x, t.cuda(), g1, g0);
    for (const auto& p : ce_cuda_paths()) {
      SCOPED_TRACE(p.name);
      const CeResult got = ce_run(p.run, x, t.cuda(), g1, g0);
      EXPECT_TRUE(all_close(got.loss, want.loss, ssmlab::test::forward_tol(dt), "loss"));
      EXPECT_TRUE(all_close(got.dx, want.dx, ssmlab::test::grad_tol(dt), "dlogits"));
    }
  }
}

}  // namespace

}  // namespace ops_test_cross_entropy_cuda
