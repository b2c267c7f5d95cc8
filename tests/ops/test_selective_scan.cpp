// selective_scan (spec §1.1) against the independent float64 oracles of selective_scan_naive.h:
// output, final state and every gradient, over odd sizes, feature combinations, groups and dtypes.
#include <gtest/gtest.h>

#include <string>

#include "ops/selective_scan_naive.h"
#include "ssmlab/core/error.h"
#include "ssmlab/ops/selective_scan/selective_scan.h"
#include "tolerances.h"

namespace ops_test_selective_scan {

namespace {

using ssmlab::test::ScanFlags;
using ssmlab::test::ScanInputs;
using ssmlab::test::ScanShape;
using ssmlab::test::Tol;

struct ScanCase {
  std::string name;
  ScanShape shape;
  ScanFlags flags;
  at::ScalarType dtype;
  bool grads;  // also compare every gradient
};

// gtest (and ctest's test names) print the case by its name, not as raw bytes.
void PrintTo(const ScanCase& c, std::ostream* os) { *os << c.name; }

std::string dtype_name(at::ScalarType t) {
  switch (t) {
    case at::kDouble: return "f64";
    case at::kFloat: return "f32";
    case at::kBFloat16: return "bf16";
    case at::kHalf: return "f16";
    default: return "other";
  }
}

ScanCase make_case(ScanShape s, ScanFlags f, at::ScalarType dtype, bool grads = true) {
  std::string name = ssmlab::str("B", s.b, "L", s.l, "E", s.e, "N", s.n);
  name += s.groups == 0 ? std::string("plain") : ssmlab::str("G", s.groups);
  if (f.D) name += "_D";
  if (f.z) name += "_z";
  if (f.bias) name += "_bias";
  if (f.softplus) name += "_softplus";
  if (f.h0) name += "_h0";
  return {name + "_" + dtype_name(dtype), s, f, dtype, grads};
}

uint64_t seed_of(const std::string& name) { return std::hash<std::string>{}(name) & 0xffffffffu; }

ssmlab::ops::SelectiveScanOut run_op(const ScanInputs& in) {
  using ssmlab::test::opt;
  return ssmlab::ops::selective_scan(in.u, in.delta, in.A, in.B, in.C, opt(in.D), opt(in.z), opt(in.delta_bias),
                                     /*delta_softplus=*/in.softplus, opt(in.h0), /*backend=*/"reference");
}

// Forward against the scalar loops; then (if asked) every gradient against autograd of the ATen loop.
void check_against_naive(const ScanInputs& in, at::ScalarType dtype, bool grads, uint64_t seed) {
  using ssmlab::test::all_close;
  const Tol ftol = ssmlab::test::forward_tol(dtype);
  const auto [y_ref, h_ref] = ssmlab::test::naive_scan_forward(in);
  const auto out = run_op(in);
  EXPECT_EQ(out.y.scalar_type(), dtype);
  EXPECT_EQ(out.final_state.scalar_type(), dtype == at::kDouble ? at::kDouble : at::kFloat);
  EXPECT_TRUE(all_close(out.y, y_ref, ftol, "y"));
  EXPECT_TRUE(all_close(out.final_state, h_ref, ftol, "final_state"));
  if (!grads) return;

  // Random output cotangents (fresh per case) so every term of the backward matters.
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed ^ 0x5eed);
  const at::Tensor gy = at::randn(y_ref.sizes(), gen, at::kDouble);
  const at::Tensor gs = at::randn(h_ref.sizes(), gen, at::kDouble);

  ScanInputs leaves = in;
  for (at::Tensor* t : {&leaves.u, &leaves.delta, &leaves.A, &leaves.B, &leaves.C, &leaves.D, &leaves.z,
                        &leaves.delta_bias, &leaves.h0})
    if (t->defined()) *t = t->detach().clone().requires_grad_(true);
  const auto op_out = run_op(leaves);
  const auto g_op = ssmlab::test::grads_of(op_out.y, op_out.final_state, gy, gs, leaves);

  const ScanInputs leaves64 = ssmlab::test::to_f64_leaves(in, /*requires_grad=*/true);
  const auto [y64, h64] = ssmlab::test::naive_scan_autograd(leaves64);
  EXPECT_TRUE(all_close(y64, y_ref, ssmlab::test::kFp64Forward, "naive autograd loop vs scalar loops"));
  const auto g_ref = ssmlab::test::grads_of(y64, h64, gy, gs, leaves64);

  const auto names = ssmlab::test::defined_inputs(in);
  ASSERT_EQ(g_op.size(), names.size());
  for (size_t i = 0; i < names.size(); ++i) {
    EXPECT_EQ(g_op[i].scalar_type(), names[i].second.scalar_type()) << names[i].first;
    EXPECT_TRUE(all_close(g_op[i], g_ref[i], ssmlab::test::grad_tol(dtype), ssmlab::str("d/d", names[i].first)));
  }
}

class SelectiveScanVsNaive : public ::testing::TestWithParam<ScanCase> {};

TEST_P(SelectiveScanVsNaive, OutputFinalStateAndGradients) {
  const ScanCase& c = GetParam();
  const uint64_t seed = seed_of(c.name);
  const ScanInputs in = ssmlab::test::make_scan_inputs(c.shape, c.flags, c.dtype, seed);
  check_against_naive(in, c.dtype, c.grads, seed);
}

constexpr ScanFlags kNone{false, false, false, false, false};
constexpr ScanFlags kAll{true, true, true, true, true};

// Odd sizes (L = 1, 63, 500, 2049; N = 1, 16, 17; odd B and E), every group layout (plain, G = 1, 2, E),
// each optional input both on and off somewhere. The reference's chunk is min(128, L) at these sizes,
// so L = 500 crosses 4 chunks (last one partial) and L = 2049 crosses 17.
const ScanCase kCases[] = {
    make_case({1, 1, 3, 1, 0}, kNone, at::kDouble),
    make_case({3, 1, 5, 17, 5}, kAll, at::kDouble),
    make_case({3, 63, 5, 16, 0}, kAll, at::kDouble),
    make_case({3, 63, 6, 17, 2}, {true, false, false, false, false}, at::kDouble),
    make_case({1, 63, 7, 1, 7}, {false, true, true, false, true}, at::kDouble),
    make_case({1, 500, 4, 16, 4}, {false, true, false, true, false}, at::kDouble),
    make_case({2, 500, 3, 17, 1}, {false, false, true, false, true}, at::kDouble),
    make_case({3, 500, 6, 16, 2}, kAll, at::kDouble),
    make_case({1, 2049, 3, 16, 0}, kAll, at::kDouble),
    make_case({1, 2049, 2, 17, 2}, {true, false, true, false, true}, at::kDouble),
    make_case({3, 63, 5, 17, 0}, kAll, at::kFloat),
    make_case({1, 500, 6, 16, 2}, {true, true, false, true, true}, at::kFloat),
    make_case({1, 2049, 3, 16, 3}, kAll, at::kFloat),
    make_case({3, 63, 5, 16, 0}, kAll, at::kBFloat16, /*grads=*/false),
    make_case({2, 500, 4, 16, 2}, {true, true, true, true, false}, at::kBFloat16, /*grads=*/false),
    make_case({3, 63, 5, 16, 1}, kAll, at::kHalf, /*grads=*/false),
};

INSTANTIATE_TEST_SUITE_P(SelectiveScan, SelectiveScanVsNaive, ::testing::ValuesIn(kCases),
                         [](const ::testing::TestParamInfo<ScanCase>& i) { return i.param.name; });

// All 32 combinations of (D, z, delta_bias, softplus, initial_state), grouped and plain, on a tiny shape.
TEST(SelectiveScanFlags, EveryCombinationMatchesNaive) {
  for (int64_t groups : {0, 2}) {
    for (int mask = 0; mask < 32; ++mask) {
      const ScanFlags f{bool(mask & 1), bool(mask & 2), bool(mask & 4), bool(mask & 8), bool(mask & 16)};
      const ScanCase c = make_case({2, 9, 4, 3, groups}, f, at::kDouble);
      SCOPED_TRACE(c.name);
      const uint64_t seed = seed_of(c.name);
      check_against_naive(ssmlab::test::make_scan_inputs(c.shape, c.flags, c.dtype, seed), c.dtype, true, seed);
    }
  }
}

// Many chunks at a chunk length below the 128 cap: B·E·N = 49152 makes the reference pick 85-step chunks,
// so L = 200 runs three chunks, the last one partial (forward only: the autograd oracle would need GBs here).
TEST(SelectiveScanChunks, ShortChunksMatchNaiveForward) {
  const ScanCase c = make_case({3, 200, 64, 256, 0}, kAll, at::kDouble, /*grads=*/false);
  check_against_naive(ssmlab::test::make_scan_inputs(c.shape, c.flags, c.dtype, seed_of(c.name)), c.dtype, false, 0);
}

// Non-contiguous inputs (a transposed (B, E, L) buffer, as mamba_ssm lays them out) and a
// non-contiguous upstream gradient give the same results as contiguous ones.
TEST(SelectiveScanLayout, NonContiguousInputsAndGradients) {
  const ScanShape s{2, 37, 6, 5, 2};
  const ScanInputs in = ssmlab::test::make_scan_inputs(s, kAll, at::kDouble, 77);
  ScanInputs nc = in;
  for (at::Tensor* t : {&nc.u, &nc.delta, &nc.z}) *t = t->transpose(1, 2).contiguous().transpose(1, 2);
  nc.B = in.B.permute({0, 2, 3, 1}).contiguous().permute({0, 3, 1, 2});
  nc.C = in.C.permute({0, 2, 3, 1}).contiguous().permute({0, 3, 1, 2});
  nc.A = in.A.t().contiguous().t();
  ASSERT_FALSE(nc.u.is_contiguous());
  const auto ref = run_op(in);
  const auto got = run_op(nc);
  EXPECT_TRUE(ssmlab::test::all_close(got.y, ref.y, ssmlab::test::kFp64Forward, "y"));
  EXPECT_TRUE(ssmlab::test::all_close(got.final_state, ref.final_state, ssmlab::test::kFp64Forward, "final"));

  // Upstream gradient that reaches the op transposed: loss = <y^T, W> gives dL/dy = W^T (non-contiguous).
  auto grads = [](const ScanInputs& x) {
    ScanInputs l = x;
    for (at::Tensor* t : {&l.u, &l.delta, &l.A, &l.B, &l.C, &l.D, &l.z, &l.delta_bias, &l.h0})
      if (t->defined()) t->requires_grad_(true);
    const auto o = run_op(l);
    at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(5);
    const at::Tensor w = at::randn({o.y.size(0), o.y.size(2), o.y.size(1)}, gen, at::kDouble);
    const at::Tensor loss = (o.y.transpose(1, 2) * w).sum() + o.final_state.sum();
    std::vector<at::Tensor> xs;
    for (const auto& [name, t] : ssmlab::test::defined_inputs(l)) xs.push_back(t);
    return torch::autograd::grad({loss}, xs);
  };
  ScanInputs in_leaf = in, nc_leaf = nc;
  for (ScanInputs* x : {&in_leaf, &nc_leaf})
    for (at::Tensor* t : {&x->u, &x->delta, &x->A, &x->B, &x->C, &x->D, &x->z, &x->delta_bias, &x->h0})
      if (t->defined()) *t = t->detach().clone(at::MemoryFormat::Preserve);
  const auto g1 = grads(in_leaf), g2 = grads(nc_leaf);
  ASSERT_EQ(g1.size(), g2.size());
  for (size_t i = 0; i < g1.size(); ++i)
    EXPECT_TRUE(ssmlab::test::all_close(g2[i], g1[i], ssmlab::test::kFp64Grad, ssmlab::str("grad ", i)));
}

}  // namespace

}  // namespace ops_test_selective_scan
