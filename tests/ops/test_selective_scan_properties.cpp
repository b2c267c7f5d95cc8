// selective_scan properties that need no oracle: a closed-form case, state carry across calls,
// causality under NaN, finite-difference gradients, and the boundary's shape errors.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <string>

#include "ops/selective_scan_naive.h"
#include "ssmlab/core/error.h"
#include "ssmlab/ops/selective_scan/selective_scan.h"
#include "tolerances.h"

namespace ops_test_selective_scan_properties {

namespace {

using ssmlab::test::all_close;
using ssmlab::test::opt;
using ssmlab::test::ScanFlags;
using ssmlab::test::ScanInputs;

constexpr ScanFlags kAll{true, true, true, true, true};

ssmlab::ops::SelectiveScanOut run_op(const ScanInputs& in) {
  return ssmlab::ops::selective_scan(in.u, in.delta, in.A, in.B, in.C, opt(in.D), opt(in.z), opt(in.delta_bias),
                                     /*delta_softplus=*/in.softplus, opt(in.h0), /*backend=*/"reference");
}

std::vector<at::Tensor*> all_tensors(ScanInputs& in) {
  return {&in.u, &in.delta, &in.A, &in.B, &in.C, &in.D, &in.z, &in.delta_bias, &in.h0};
}

// Constant decay a_n = exp(d·A[e, n]) and constant input: h_t = d·B_n·u·(1 - a^{t+1}) / (1 - a), so
// y_t = Σ_n C_n·B_n·d·u·(1 - a_n^{t+1}) / (1 - a_n) + D·u  (geometric sum; h_{-1} = 0).
TEST(SelectiveScanAnalytic, ConstantDecayGivesGeometricSum) {
  const int64_t b = 2, l = 500, e = 3, n = 4;
  for (bool softplus : {false, true}) {
    SCOPED_TRACE(softplus ? "softplus" : "plain delta");
    const double raw = 0.1;
    const double d = softplus ? std::log1p(std::exp(raw)) : raw;
    at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(softplus ? 11 : 12);
    const at::Tensor A = -(at::rand({e, n}, gen, at::kDouble) * 2 + 0.01);    // (E, N)
    const at::Tensor uc = at::randn({b, 1, e}, gen, at::kDouble);              // per (b, e), constant in t
    const at::Tensor Bn = at::randn({n}, gen, at::kDouble), Cn = at::randn({n}, gen, at::kDouble);
    const at::Tensor D = at::randn({e}, gen, at::kDouble);
    ScanInputs in;
    in.softplus = softplus;
    in.u = uc.expand({b, l, e}).contiguous();
    in.delta = at::full({b, l, e}, raw, at::kDouble);
    in.A = A;
    in.B = Bn.expand({b, l, n}).contiguous();
    in.C = Cn.expand({b, l, n}).contiguous();
    in.D = D;
    const auto out = run_op(in);
    at::Tensor y = at::empty({b, l, e}, at::kDouble), h = at::empty({b, e, n}, at::kDouble);
    auto ya = y.accessor<double, 3>();
    auto ha = h.accessor<double, 3>();
    for (int64_t bi = 0; bi < b; ++bi)
      for (int64_t ei = 0; ei < e; ++ei) {
        const double u = uc[bi][0][ei].item<double>();
        for (int64_t t = 0; t < l; ++t) {
          double acc = D[ei].item<double>() * u;
          for (int64_t ni = 0; ni < n; ++ni) {
            const double a = std::exp(d * A[ei][ni].item<double>());
            acc += Cn[ni].item<double>() * Bn[ni].item<double>() * d * u * (1 - std::pow(a, t + 1)) / (1 - a);
          }
          ya[bi][t][ei] = acc;
        }
        for (int64_t ni = 0; ni < n; ++ni) {
          const double a = std::exp(d * A[ei][ni].item<double>());
          ha[bi][ei][ni] = Bn[ni].item<double>() * d * u * (1 - std::pow(a, l)) / (1 - a);
        }
      }
    EXPECT_TRUE(all_close(out.y, y, ssmlab::test::kFp64Forward, "y vs geometric sum"));
    EXPECT_TRUE(all_close(out.final_state, h, ssmlab::test::kFp64Forward, "final_state vs geometric sum"));
  }
}

// Running [0, L) at once equals [0, k) then [k, L) seeded with the first call's final state: outputs,
// final state and every gradient (the second call's initial_state carries the gradient back).
class SelectiveScanStateCarry : public ::testing::TestWithParam<int64_t> {};

TEST_P(SelectiveScanStateCarry, SplitEqualsWhole) {
  const int64_t k = GetParam(), l = 500;
  const ScanInputs in0 = ssmlab::test::make_scan_inputs({2, l, 5, 7, 0}, kAll, at::kDouble, 100 + k);
  ScanInputs in = in0;
  for (at::Tensor* t : all_tensors(in))
    if (t->defined()) *t = t->detach().clone().requires_grad_(true);
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(200 + k);
  const at::Tensor gy = at::randn({2, l, 5}, gen, at::kDouble), gs = at::randn({2, 5, 7}, gen, at::kDouble);

  const auto whole = run_op(in);
  auto part = [&](int64_t t0, int64_t len, const at::Tensor& h) {
    ScanInputs p = in;
    for (at::Tensor* t : {&p.u, &p.delta, &p.B, &p.C, &p.z}) *t = t->narrow(1, t0, len);
    p.h0 = h;
    return run_op(p);
  };
  const auto first = part(0, k, in.h0);
  const auto second = part(k, l - k, first.final_state);
  const at::Tensor y_split = at::cat({first.y, second.y}, 1);
  EXPECT_TRUE(all_close(y_split, whole.y, ssmlab::test::kFp64Forward, "y"));
  EXPECT_TRUE(all_close(second.final_state, whole.final_state, ssmlab::test::kFp64Forward, "final_state"));

  const auto g_whole = ssmlab::test::grads_of(whole.y, whole.final_state, gy, gs, in);
  const auto g_split = ssmlab::test::grads_of(y_split, second.final_state, gy, gs, in);
  const auto names = ssmlab::test::defined_inputs(in);
  for (size_t i = 0; i < names.size(); ++i)
    EXPECT_TRUE(all_close(g_split[i], g_whole[i], ssmlab::test::kFp64Grad, ssmlab::str("d/d", names[i].first)));
}

// k = 128 splits exactly at the reference's chunk boundary; 137 and 499 cut inside a chunk; 1 leaves one step.
INSTANTIATE_TEST_SUITE_P(SelectiveScan, SelectiveScanStateCarry, ::testing::Values(1, 128, 137, 499),
                         [](const ::testing::TestParamInfo<int64_t>& i) { return ssmlab::str("k", i.param); });

// Causality: a NaN in u at time t leaves every output before t (and every other sequence) finite, and
// does reach y at t. In fp64 and fp32.
TEST(SelectiveScanNaN, NaNInInputOnlyPoisonsLaterOutputs) {
  const int64_t t = 37;
  for (at::ScalarType dtype : {at::kDouble, at::kFloat}) {
    SCOPED_TRACE(c10::toString(dtype));
    ScanInputs in = ssmlab::test::make_scan_inputs({2, 63, 4, 16, 0}, kAll, dtype, 300);
    in.u[0][t][1] = std::nan("");
    const auto out = run_op(in);
    EXPECT_TRUE(at::isfinite(out.y.narrow(1, 0, t)).all().item<bool>()) << "an output before t is not finite";
    EXPECT_TRUE(at::isfinite(out.y[1]).all().item<bool>()) << "the NaN leaked into another sequence";
    EXPECT_TRUE(at::isfinite(out.final_state[1]).all().item<bool>());
    EXPECT_TRUE(std::isnan(out.y[0][t][1].item<double>())) << "the NaN did not reach y at t";
    EXPECT_TRUE(at::isnan(out.final_state[0][1]).all().item<bool>()) << "the NaN did not reach the state";
  }
}

// Central finite differences of loss = <y, gy> + <final, gs> against the hand-written backward, in fp64,
// on a tiny case with every optional input; plain and grouped (G = E) B/C.
class SelectiveScanFiniteDiff : public ::testing::TestWithParam<int64_t> {};

TEST_P(SelectiveScanFiniteDiff, BackwardMatchesCentralDifferences) {
  const int64_t groups = GetParam();
  const ScanInputs in0 = ssmlab::test::make_scan_inputs({2, 5, 3, 2, groups}, kAll, at::kDouble, 400 + groups);
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(500 + groups);
  const at::Tensor gy = at::randn({2, 5, 3}, gen, at::kDouble), gs = at::randn({2, 3, 2}, gen, at::kDouble);
  auto loss = [&](const ScanInputs& x) {
    const auto o = run_op(x);
    return ((o.y * gy).sum() + (o.final_state * gs).sum()).item<double>();
  };
  ScanInputs leaves = in0;
  for (at::Tensor* t : all_tensors(leaves))
    if (t->defined()) *t = t->detach().clone().requires_grad_(true);
  const auto o = run_op(leaves);
  const auto analytic = ssmlab::test::grads_of(o.y, o.final_state, gy, gs, leaves);

  ScanInputs probe = in0;  // perturbed in place, one element at a time
  std::vector<at::Tensor*> slots;
  for (at::Tensor* t : all_tensors(probe))
    if (t->defined()) slots.push_back(t);
  const auto names = ssmlab::test::defined_inputs(in0);
  ASSERT_EQ(slots.size(), analytic.size());
  const double h = ssmlab::test::kFiniteDiffStep;
  for (size_t i = 0; i < slots.size(); ++i) {
    at::Tensor numeric = at::empty_like(*slots[i]);
    at::Tensor flat = slots[i]->view({-1}), nflat = numeric.view({-1});
    for (int64_t j = 0; j < flat.numel(); ++j) {
      const double x = flat[j].item<double>();
      flat[j] = x + h;
      const double up = loss(probe);
      flat[j] = x - h;
      const double down = loss(probe);
      flat[j] = x;
      nflat[j] = (up - down) / (2 * h);
    }
    EXPECT_TRUE(all_close(analytic[i], numeric, ssmlab::test::kFiniteDiff, ssmlab::str("d/d", names[i].first)));
  }
}

INSTANTIATE_TEST_SUITE_P(SelectiveScan, SelectiveScanFiniteDiff, ::testing::Values(0, 3),
                         [](const ::testing::TestParamInfo<int64_t>& i) {
                           return i.param == 0 ? std::string("plain") : ssmlab::str("G", i.param);
                         });

// Bad shapes raise ssmlab::Error naming the offending input and printing the shapes that came.
TEST(SelectiveScanErrors, ShapeErrorsNameTheBadInput) {
  const int64_t b = 2, l = 7, e = 6, n = 4;
  const ScanInputs good = ssmlab::test::make_scan_inputs({b, l, e, n, 0}, kAll, at::kDouble, 600);
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(601);
  auto r = [&](at::IntArrayRef s) { return at::randn(s, gen, at::kDouble); };
  struct Case {
    const char* what;
    std::function<void(ScanInputs&)> edit;
    std::string expect;
  };
  const std::vector<Case> cases = {
      {"u 2-D", [&](ScanInputs& x) { x.u = r({l, e}); }, "u must be (B, L, E)"},
      {"delta E", [&](ScanInputs& x) { x.delta = r({b, l, e - 1}); }, "delta must match u"},
      {"A E", [&](ScanInputs& x) { x.A = r({e - 1, n}); }, "A must be (E, N) with E = 6"},
      {"B N", [&](ScanInputs& x) { x.B = r({b, l, n + 1}); }, "B must be (B, L, N) = (2, 7, 4)"},
      {"C L", [&](ScanInputs& x) { x.C = r({b, l - 1, n}); }, "C must be (B, L, N) = (2, 7, 4)"},
      {"G does not divide E", [&](ScanInputs& x) { x.B = r({b, l, 4, n}); x.C = r({b, l, 4, n}); }, "B must be"},
      {"B grouped, C plain", [&](ScanInputs& x) { x.B = r({b, l, 2, n}); }, "B and C must have the same group"},
      {"D", [&](ScanInputs& x) { x.D = r({e + 1}); }, "D must be (E)"},
      {"z", [&](ScanInputs& x) { x.z = r({b, l + 1, e}); }, "z must match u"},
      {"delta_bias", [&](ScanInputs& x) { x.delta_bias = r({e, 1}); }, "delta_bias must be (E)"},
      {"initial_state", [&](ScanInputs& x) { x.h0 = r({b, e, n + 1}); }, "initial_state must be (B, E, N) = (2, 6, 4)"},
      {"integer u", [&](ScanInputs& x) { x.u = x.u.to(at::kInt); }, "must be floating point"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.what);
    ScanInputs x = good;
    c.edit(x);
    try {
      run_op(x);
      ADD_FAILURE() << "no error raised";
    } catch (const ssmlab::Error& err) {
      const std::string msg = err.what();
      EXPECT_NE(msg.find(c.expect), std::string::npos) << "message: " << msg;
      EXPECT_NE(msg.find("got u ("), std::string::npos) << "message does not print the shapes: " << msg;
    }
  }
}

}  // namespace

}  // namespace ops_test_selective_scan_properties
