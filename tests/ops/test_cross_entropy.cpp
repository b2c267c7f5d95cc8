// ops/cross_entropy: the fused CPU kernel, the row-blocked ATen path (several blocks, and its automatic block) and
// the "auto" entry against the float64 oracle run on float64 copies of the same (rounded) logits: loss, lse and
// d/dlogits for output gradients on both loss and lse; float64 / float32 / bfloat16 (and float16) logits; odd
// sizes (M 1, 7, 4099; V 1, 3, 129, 1000, 50257); ignored rows (none, some, all); extreme logits (1e4, -1e4, -inf);
// NaN-poisoned kernel outputs; a hand-computed case; finite differences in float64; the dispatcher schema; bad
// inputs; tasks::mean_cross_entropy against the formula it replaced (at::cross_entropy_loss on float32 logits).
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/csrc/autograd/autograd.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "ssmlab/core/error.h"
#include "ssmlab/ops/cross_entropy/cpu.h"
#include "ssmlab/ops/cross_entropy/cross_entropy.h"
#include "ssmlab/tasks/task.h"
#include "cross_entropy_test_util.h"
#include "test_util.h"
#include "tolerances.h"

namespace ops_test_cross_entropy {

namespace {

using at::Tensor;
using ssmlab::test::all_close;
namespace ops = ssmlab::ops;
constexpr int64_t kIgn = ops::kCrossEntropyIgnoreIndex;

using Path = ssmlab::test::CePath;
using NamedPath = ssmlab::test::CeNamedPath;
using Result = ssmlab::test::CeResult;
using ssmlab::test::ce_oracle;
using ssmlab::test::ce_run;

// Every fast path; "blocked M/4" runs several blocks of max(3, M / 4) rows (a short last one where 4 does not
// divide M), the automatic block count being one block at the tests' sizes.
std::vector<NamedPath> fast_paths() {
  return {{"fused", [](const Tensor& x, const Tensor& t) { return ops::cross_entropy_fused(x, t, kIgn); }},
          {"blocked M/4",
           [](const Tensor& x, const Tensor& t) {
             return ops::cross_entropy_blocked(x, t, kIgn, std::max<int64_t>(3, x.size(0) / 4));
           }},
          {"blocked", [](const Tensor& x, const Tensor& t) { return ops::cross_entropy_blocked(x, t, kIgn); }},
          {"auto", [](const Tensor& x, const Tensor& t) { return ops::cross_entropy(x, t, kIgn, "auto"); }}};
}


struct Case {
  int64_t m, v;
  at::ScalarType dtype;
  double scale;        // logits = scale * randn
  double ignore_frac;  // share of rows with target kIgn
};

std::string describe(const Case& c) {
  return ssmlab::str("M", c.m, " V", c.v, " ", c.dtype, " scale ", c.scale, " ignored ", c.ignore_frac);
}

struct Inputs {
  Tensor x, targets, gloss, glse;
};

Inputs make(const Case& c, uint64_t seed) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  Inputs in;
  in.x = (at::randn({c.m, c.v}, gen, at::kDouble) * c.scale).to(c.dtype);
  in.targets = at::randint(c.v, {c.m}, gen, at::TensorOptions().dtype(at::kLong));
  const Tensor drop = at::rand({c.m}, gen, at::kDouble).lt(c.ignore_frac);
  in.targets.masked_fill_(drop, kIgn);
  in.gloss = at::randn({c.m}, gen, at::kDouble);
  in.glse = at::randn({c.m}, gen, at::kDouble);
  return in;
}

void expect_matches_oracle(const Case& c, uint64_t seed) {
  SCOPED_TRACE(describe(c));
  const Inputs in = make(c, seed);
  const Result want = ce_oracle(in.x, in.targets, in.gloss, in.glse);
  const auto ftol = ssmlab::test::forward_tol(c.dtype), gtol = ssmlab::test::grad_tol(c.dtype);
  const auto out_dtype = c.dtype == at::kDouble ? at::kDouble : at::kFloat;
  for (const auto& p : fast_paths()) {
    SCOPED_TRACE(p.name);
    const Result got = ce_run(p.run, in.x, in.targets, in.gloss, in.glse);
    EXPECT_EQ(got.loss.scalar_type(), out_dtype);
    EXPECT_EQ(got.lse.scalar_type(), out_dtype);
    EXPECT_EQ(got.dx.scalar_type(), c.dtype);
    EXPECT_TRUE(all_close(got.loss, want.loss, ftol, "loss"));
    EXPECT_TRUE(all_close(got.lse, want.lse, ftol, "lse"));
    EXPECT_TRUE(all_close(got.dx, want.dx, gtol, "dlogits"));
  }
}

TEST(CrossEntropy, HandComputedCase) {
  // Row 0: logits (1, 2, 3), target 2; row 1: zeros, target 1; row 2: ignored.
  const Tensor x = at::tensor({1.0, 2.0, 3.0, 0.0, 0.0, 0.0, 5.0, -1.0, 2.0}, at::kDouble).reshape({3, 3});
  const Tensor t = at::tensor({int64_t{2}, int64_t{1}, kIgn}, at::kLong);
  const double s0 = std::exp(1.0) + std::exp(2.0) + std::exp(3.0), s2 = std::exp(5.0) + std::exp(-1.0) + std::exp(2.0);
  const Tensor want_loss = at::tensor({std::log(s0) - 3.0, std::log(3.0), 0.0}, at::kDouble);
  const Tensor want_lse = at::tensor({std::log(s0), std::log(3.0), std::log(s2)}, at::kDouble);
  // d(sum loss)/dx = softmax - onehot on counted rows, 0 on the ignored one.
  const Tensor want_dx = at::tensor({std::exp(1.0) / s0, std::exp(2.0) / s0, std::exp(3.0) / s0 - 1.0, 1.0 / 3,
                                     1.0 / 3 - 1.0, 1.0 / 3, 0.0, 0.0, 0.0},
                                    at::kDouble)
                             .reshape({3, 3});
  std::vector<NamedPath> paths = fast_paths();
  paths.push_back({"reference", [](const Tensor& a, const Tensor& b) { return ops::cross_entropy_reference(a, b, kIgn); }});
  for (const auto& p : paths) {
    SCOPED_TRACE(p.name);
    const Result got = ce_run(p.run, x, t, at::ones({3}, at::kDouble), at::zeros({3}, at::kDouble));
    EXPECT_TRUE(all_close(got.loss, want_loss, ssmlab::test::kFp64Forward, "loss"));
    EXPECT_TRUE(all_close(got.lse, want_lse, ssmlab::test::kFp64Forward, "lse"));
    EXPECT_TRUE(all_close(got.dx, want_dx, ssmlab::test::kFp64Grad, "dlogits"));
  }
}

// (M, V): M in {1, 7} with V in {1, 3, 1000}; M 4099 (many threads' tasks, a short last block) with V 3 and 129.
constexpr std::pair<int64_t, int64_t> kOddSizes[] = {{1, 1}, {1, 3}, {1, 1000}, {7, 1},      {7, 3},
                                                     {7, 1000}, {4099, 1}, {4099, 3}, {4099, 129}};

TEST(CrossEntropy, MatchesOracleFloat64OddSizes) {
  uint64_t seed = 100;
  for (const auto& [m, v] : kOddSizes) expect_matches_oracle({m, v, at::kDouble, 2.0, 0.2}, seed++);
  expect_matches_oracle({7, 50257, at::kDouble, 3.0, 0.2}, seed++);
}

TEST(CrossEntropy, MatchesOracleFloat32AndBfloat16) {
  uint64_t seed = 200;
  for (const auto dt : {at::kFloat, at::kBFloat16}) {
    for (const auto& [m, v] : kOddSizes) expect_matches_oracle({m, v, dt, 2.0, 0.2}, seed++);
    // A vocabulary-sized row; peaked (scale 6) so that gradient entries near 1 exist beside the tiny ones.
    expect_matches_oracle({7, 50257, dt, 6.0, 0.2}, seed++);
  }
  expect_matches_oracle({7, 1000, at::kHalf, 2.0, 0.2}, seed++);
}

TEST(CrossEntropy, IgnoredRows) {
  for (const double frac : {0.0, 0.5, 1.0}) expect_matches_oracle({33, 17, at::kFloat, 2.0, frac}, 300);
  // Every row ignored and only the loss differentiated: loss and gradient exactly zero, on every path.
  const Inputs in = make({9, 11, at::kFloat, 2.0, 1.0}, 301);
  ASSERT_TRUE(in.targets.eq(kIgn).all().item<bool>());
  for (const auto& p : fast_paths()) {
    SCOPED_TRACE(p.name);
    const Result got = ce_run(p.run, in.x, in.targets, at::ones({9}, at::kDouble) * 1e30, at::zeros({9}, at::kDouble));
    EXPECT_TRUE(got.loss.eq(0).all().item<bool>()) << got.loss;
    EXPECT_TRUE(got.dx.eq(0).all().item<bool>());
  }
}

TEST(CrossEntropy, ExtremeLogits) {
  const double inf = std::numeric_limits<double>::infinity();
  // Rows: (1e4, -1e4, 0, -inf) with targets 0 and 2, and (-1e4, -1e4, -1e4, -1e4 + 1) with target 3.
  const Tensor x64 = at::tensor({1e4, -1e4, 0.0, -inf, 1e4, -1e4, 0.0, -inf, -1e4, -1e4, -1e4, -1e4 + 1}, at::kDouble)
                         .reshape({3, 4});
  const Tensor t = at::tensor({int64_t{0}, int64_t{2}, int64_t{3}}, at::kLong);
  const double s3 = 3.0 + std::exp(1.0);
  const Tensor want_loss = at::tensor({0.0, 1e4, std::log(s3) - 1.0}, at::kDouble);
  const Tensor want_dx = at::tensor({0.0, 0.0, 0.0, 0.0, 1.0, 0.0, -1.0, 0.0, 1 / s3, 1 / s3, 1 / s3,
                                     std::exp(1.0) / s3 - 1.0},
                                    at::kDouble)
                             .reshape({3, 4});
  for (const auto dt : {at::kDouble, at::kFloat, at::kBFloat16}) {
    SCOPED_TRACE(c10::toString(dt));
    // bf16 cannot hold -1e4 + 1 apart from -1e4: its last row is compared with the oracle only.
    const Tensor x = x64.to(dt);
    const Result want = ce_oracle(x, t, at::ones({3}, at::kDouble), at::zeros({3}, at::kDouble));
    for (const auto& p : fast_paths()) {
      SCOPED_TRACE(p.name);
      const Result got = ce_run(p.run, x, t, at::ones({3}, at::kDouble), at::zeros({3}, at::kDouble));
      EXPECT_TRUE(all_close(got.loss, want.loss, ssmlab::test::forward_tol(dt), "loss vs oracle"));
      EXPECT_TRUE(all_close(got.dx, want.dx, ssmlab::test::grad_tol(dt), "dlogits vs oracle"));
      const int64_t rows = dt == at::kBFloat16 ? 2 : 3;
      EXPECT_TRUE(all_close(got.loss.narrow(0, 0, rows), want_loss.narrow(0, 0, rows), ssmlab::test::forward_tol(dt),
                            "loss vs closed form"));
      EXPECT_TRUE(all_close(got.dx.narrow(0, 0, rows), want_dx.narrow(0, 0, rows), ssmlab::test::grad_tol(dt),
                            "dlogits vs closed form"));
    }
  }
  // A target on a -inf logit costs +inf (as -log_softmax does).
  const Tensor row = at::tensor({0.0, -inf, 1.0}, at::kFloat).reshape({1, 3});
  const Tensor tgt = at::tensor({int64_t{1}}, at::kLong);
  for (const auto& p : fast_paths()) {
    const auto out = p.run(row, tgt);
    EXPECT_TRUE(std::isinf(out.loss.item<double>()) && out.loss.item<double>() > 0) << p.name << " " << out.loss;
  }
}

// The fused kernels allocate their outputs; with poisoning on they start as NaN, so a missed element shows.
struct CePoison {
  CePoison() { ops::cross_entropy_cpu::set_poison_outputs(true); }
  ~CePoison() { ops::cross_entropy_cpu::set_poison_outputs(false); }
  CePoison(const CePoison&) = delete;
  CePoison& operator=(const CePoison&) = delete;
};

TEST(CrossEntropy, PoisonedOutputsAreOverwritten) {
  const CePoison poison;
  // Ignored rows with and without an lse gradient take the zero-fill and the general branch respectively.
  for (const auto dt : {at::kDouble, at::kFloat, at::kBFloat16}) {
    const Inputs in = make({37, 129, dt, 2.0, 0.4}, 400);
    const Result want = ce_oracle(in.x, in.targets, in.gloss, in.glse);
    for (const Tensor& glse : {in.glse, at::zeros_like(in.glse)}) {
      const Result got = ce_run(fast_paths()[0].run, in.x, in.targets, in.gloss, glse);
      const Result w = glse.eq(0).all().item<bool>() ? ce_oracle(in.x, in.targets, in.gloss, glse) : want;
      EXPECT_TRUE(all_close(got.loss, w.loss, ssmlab::test::forward_tol(dt), "loss"));
      EXPECT_TRUE(all_close(got.lse, w.lse, ssmlab::test::forward_tol(dt), "lse"));
      EXPECT_TRUE(all_close(got.dx, w.dx, ssmlab::test::grad_tol(dt), "dlogits"));
    }
  }
}

TEST(CrossEntropy, GradientMatchesFiniteDifferences) {
  const Inputs in = make({5, 7, at::kDouble, 2.0, 0.3}, 500);
  const double h = ssmlab::test::kFiniteDiffStep;
  for (const auto& p : fast_paths()) {
    SCOPED_TRACE(p.name);
    auto f = [&](const Tensor& x) {
      const auto out = p.run(x, in.targets);
      return ((out.loss * in.gloss).sum() + (out.lse * in.glse).sum()).item<double>();
    };
    const Result got = ce_run(p.run, in.x, in.targets, in.gloss, in.glse);
    Tensor num = at::empty_like(in.x);
    for (int64_t i = 0; i < in.x.numel(); ++i) {
      Tensor xp = in.x.clone(), xm = in.x.clone();
      xp.view(-1)[i] += h;
      xm.view(-1)[i] -= h;
      num.view(-1)[i] = (f(xp) - f(xm)) / (2 * h);
    }
    EXPECT_TRUE(all_close(got.dx, num, ssmlab::test::kFiniteDiff, "dlogits vs finite differences"));
  }
}

TEST(CrossEntropy, DispatcherSchemaMatchesCppEntry) {
  using Sig = std::tuple<Tensor, Tensor>(const Tensor&, const Tensor&, int64_t);
  const Inputs in = make({6, 9, at::kDouble, 2.0, 0.3}, 600);
  const Result want = ce_oracle(in.x, in.targets, in.gloss, in.glse);
  for (const char* name : {"ssmlab::cross_entropy", "ssmlab::cross_entropy_ref"}) {
    SCOPED_TRACE(name);
    auto op = c10::Dispatcher::singleton().findSchemaOrThrow(name, "").typed<Sig>();
    // Through the schema's Autograd kernel (its backward recomputes through the C++ entry).
    const Result got = ce_run(
        [&](const Tensor& x, const Tensor& t) {
          auto [loss, lse] = op.call(x, t, kIgn);
          return ops::CrossEntropyOut{loss, lse};
        },
        in.x, in.targets, in.gloss, in.glse);
    EXPECT_TRUE(all_close(got.loss, want.loss, ssmlab::test::kFp64Forward, "loss"));
    EXPECT_TRUE(all_close(got.lse, want.lse, ssmlab::test::kFp64Forward, "lse"));
    EXPECT_TRUE(all_close(got.dx, want.dx, ssmlab::test::kFp64Grad, "dlogits"));
  }
  // The Meta kernel: shapes and dtypes only.
  auto op = c10::Dispatcher::singleton().findSchemaOrThrow("ssmlab::cross_entropy", "").typed<Sig>();
  auto [ml, ms] = op.call(at::empty({5, 8}, at::TensorOptions().device(at::kMeta).dtype(at::kBFloat16)),
                          at::empty({5}, at::TensorOptions().device(at::kMeta).dtype(at::kLong)), kIgn);
  EXPECT_EQ(ml.dim(), 1);
  EXPECT_EQ(ml.size(0), 5);
  EXPECT_EQ(ml.scalar_type(), at::kFloat);
  EXPECT_EQ(ms.scalar_type(), at::kFloat);
}

TEST(CrossEntropy, BadInputsAreErrors) {
  const Tensor x = at::randn({4, 5}), t = at::tensor({int64_t{0}, int64_t{1}, kIgn, int64_t{4}}, at::kLong);
  using ssmlab::test::expect_error;
  expect_error([&] { ops::cross_entropy(x.reshape({20}), t); }, {"logits must be (M, V)"});
  expect_error([&] { ops::cross_entropy(at::randn({4, 0}), t); }, {"V >= 1"});
  expect_error([&] { ops::cross_entropy(x, t.narrow(0, 0, 3)); }, {"targets must be (M) with M = 4"});
  expect_error([&] { ops::cross_entropy(x, t.to(at::kInt)); }, {"targets must be int64"});
  expect_error([&] { ops::cross_entropy(x.to(at::kLong), t); }, {"logits must be floating point"});
  const Tensor bad = at::tensor({int64_t{0}, int64_t{5}, kIgn, int64_t{1}}, at::kLong);
  for (const char* backend : {"auto", "reference"})
    expect_error([&] { ops::cross_entropy(x, bad, kIgn, backend); }, {"target 5 at row 1", "[0, 5)"});
  expect_error([&] { ops::cross_entropy(x, t.neg(), kIgn); }, {"target -1 at row 1"});
  expect_error([&] { ops::cross_entropy(x, t, kIgn, "fast"); }, {"unknown ops backend 'fast'"});
  expect_error([&] { ops::cross_entropy_blocked(x, t, kIgn, -2); }, {"block_rows must be >= 0"});
  // The blocked path (what runs off the CPU, where targets are not read on the host) gives NaN for such a row.
  const auto out = ops::cross_entropy_blocked(x, bad, kIgn, 2);
  EXPECT_TRUE(std::isnan(out.loss[1].item<double>()));
  EXPECT_TRUE(std::isfinite(out.loss[0].item<double>()) && out.loss[2].item<double>() == 0.0);
}

TEST(CrossEntropy, BlockRowsBoundTheWidenedCopy) {
  EXPECT_EQ(ops::cross_entropy_block_rows(32768, 50257), ops::kCrossEntropyBlockElements / 50257);
  EXPECT_EQ(ops::cross_entropy_block_rows(7, 50257), 7);
  EXPECT_EQ(ops::cross_entropy_block_rows(10, int64_t{1} << 30), 1);
}

// tasks::mean_cross_entropy (now on ops::cross_entropy) against what it computed before: cross_entropy_loss on
// float32 logits, mean over counted targets; forward and gradient, some targets ignored; NaN when none counts.
TEST(CrossEntropy, MeanCrossEntropyEqualsOldFormula) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(700);
  const int64_t b = 3, l = 11, v = 37;
  Tensor targets = at::randint(v, {b, l}, gen, at::TensorOptions().dtype(at::kLong));
  targets.masked_fill_(at::rand({b, l}, gen).lt(0.3), kIgn);
  for (const auto dt : {at::kFloat, at::kBFloat16, at::kDouble}) {
    SCOPED_TRACE(c10::toString(dt));
    const Tensor logits = (at::randn({b, l, v}, gen, at::kDouble) * 3).to(dt);
    const Tensor a = logits.clone().requires_grad_(true), o = logits.clone().requires_grad_(true);
    const Tensor got = ssmlab::tasks::mean_cross_entropy(a, targets);
    const Tensor want = at::cross_entropy_loss(o.reshape({-1, v}).to(at::kFloat), targets.reshape({-1}), {},
                                               at::Reduction::Mean, kIgn);
    EXPECT_EQ(got.scalar_type(), at::kFloat);
    EXPECT_TRUE(all_close(got, want, ssmlab::test::kFp32Forward, "mean loss"));
    got.backward();
    want.backward();
    // The old formula differentiates in float32 (bf16 gradients then rounded), so float32's tolerance at best.
    const auto gtol = dt == at::kBFloat16 ? ssmlab::test::kBf16Grad : ssmlab::test::kFp32Grad;
    EXPECT_TRUE(all_close(a.grad(), o.grad(), gtol, "dlogits"));
  }
  const Tensor none = at::full({2, 3}, kIgn, at::kLong);
  EXPECT_TRUE(std::isnan(ssmlab::tasks::mean_cross_entropy(at::randn({2, 3, 4}), none).item<double>()));
  EXPECT_TRUE(std::isnan(at::cross_entropy_loss(at::randn({6, 4}), none.reshape({-1}), {}, at::Reduction::Mean, kIgn)
                             .item<double>()));
}

}  // namespace

}  // namespace ops_test_cross_entropy
