// The fused CPU SSD kernel (ops/ssd_scan/cpu.cpp) against the reference: output, final state and every
// gradient in float64 on odd sizes (L = 1, 63, 500, 2049 crosses the 64-step save interval, partial last
// chunk), n_groups in {1, H}, with NaN-filled kernel outputs so an unwritten element fails; float32 and
// bfloat16 against the fp64 reference; absent optional inputs and one-sided cotangents.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include "ops/ssd_scan_testing.h"
#include "ssmlab/core/error.h"
#include "ssmlab/ops/ssd_scan/cpu.h"
#include "ssmlab/ops/ssd_scan/ssd_scan.h"
#include "tolerances.h"

namespace ops_test_ssd_scan_cpu {

namespace {

using ssmlab::ops::SsdScanOut;
using ssmlab::test::all_close;
using ssmlab::test::SsdInputs;
using ssmlab::test::SsdShape;

// NaN-filled kernel outputs for the scope of a test.
struct Poison {
  Poison() { ssmlab::ops::ssd_scan_cpu::set_poison_outputs(true); }
  ~Poison() { ssmlab::ops::ssd_scan_cpu::set_poison_outputs(false); }
};

SsdScanOut fused(const SsdInputs& in) {
  EXPECT_TRUE(ssmlab::ops::ssd_scan_cpu_supports(in.x, in.dt, in.A, in.B, in.C, in.opts));
  return ssmlab::ops::ssd_scan_fused(in.x, in.dt, in.A, in.B, in.C, in.opts);
}

SsdScanOut reference(const SsdInputs& in) {
  return ssmlab::ops::ssd_scan(in.x, in.dt, in.A, in.B, in.C, in.opts, "reference");
}

// Forward and every gradient of the fused kernel against the reference on the same inputs.
void compare(const SsdInputs& in, ssmlab::test::Tol ftol, ssmlab::test::Tol gtol, bool use_dy, bool use_dfin,
             uint64_t seed) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  const int64_t b = in.x.size(0), l = in.x.size(1), h = in.x.size(2), p = in.x.size(3), n = in.B.size(3);
  const at::Tensor gy = use_dy ? at::randn({b, l, h, p}, gen, at::kDouble) : at::zeros({b, l, h, p}, at::kDouble);
  const at::Tensor gs = use_dfin ? at::randn({b, h, p, n}, gen, at::kDouble) : at::zeros({b, h, p, n}, at::kDouble);
  SsdInputs ref = ssmlab::test::ssd_as_leaves(in, at::kDouble), fu = ssmlab::test::ssd_as_leaves(in);
  const SsdScanOut r = reference(ref);
  const SsdScanOut f = fused(fu);
  EXPECT_EQ(f.y.scalar_type(), in.x.scalar_type());
  EXPECT_TRUE(all_close(f.y, r.y, ftol, "y"));
  EXPECT_TRUE(all_close(f.final_state, r.final_state, ftol, "final_state"));
  // Only the outputs that feed the loss get a cotangent (the other's grad is undefined in the backward).
  at::Tensor loss_r = at::zeros({}, at::kDouble), loss_f = at::zeros({}, at::kDouble);
  if (use_dy) {
    loss_r = loss_r + (r.y.to(at::kDouble) * gy).sum();
    loss_f = loss_f + (f.y.to(at::kDouble) * gy).sum();
  }
  if (use_dfin) {
    loss_r = loss_r + (r.final_state.to(at::kDouble) * gs).sum();
    loss_f = loss_f + (f.final_state.to(at::kDouble) * gs).sum();
  }
  std::vector<at::Tensor> lr, lf;
  const auto names = ssmlab::test::ssd_leaves(ref);
  for (auto& [name, t] : ssmlab::test::ssd_leaves(ref)) lr.push_back(*t);
  for (auto& [name, t] : ssmlab::test::ssd_leaves(fu)) lf.push_back(*t);
  const auto g_r = torch::autograd::grad({loss_r}, lr, {}, false, false, /*allow_unused=*/true);
  const auto g_f = torch::autograd::grad({loss_f}, lf, {}, false, false, /*allow_unused=*/true);
  for (size_t i = 0; i < names.size(); ++i) {
    ASSERT_TRUE(g_f[i].defined()) << names[i].first;
    EXPECT_EQ(g_f[i].scalar_type(), lf[i].scalar_type()) << names[i].first;
    // The reference's autograd leaves a gradient undefined where the input does not reach the loss.
    const at::Tensor expected = g_r[i].defined() ? g_r[i] : at::zeros_like(lr[i]);
    EXPECT_TRUE(all_close(g_f[i], expected, gtol, "d/d" + names[i].first));
  }
}

struct CpuCase {
  int64_t l, g;
};
// Short names in ctest's list (gtest prints an unprintable parameter as its bytes).
void PrintTo(const CpuCase& c, std::ostream* os) { *os << "L" << c.l << "_G" << c.g; }

class SsdScanCpuVsReference : public ::testing::TestWithParam<CpuCase> {};

TEST_P(SsdScanCpuVsReference, Fp64OutputsAndGradients) {
  Poison poison;
  const auto [l, g] = GetParam();
  const int64_t h = 6;
  const SsdInputs in = ssmlab::test::make_ssd_inputs({3, l, h, 5, 17, g == 1 ? 1 : h}, at::kDouble, 300 + l + g);
  compare(in, ssmlab::test::kFp64Forward, ssmlab::test::kFp64Grad, true, true, 1 + l);
}

INSTANTIATE_TEST_SUITE_P(SsdScanCpu, SsdScanCpuVsReference,
                         ::testing::Values(CpuCase{1, 1}, CpuCase{1, 6}, CpuCase{63, 1}, CpuCase{63, 6},
                                           CpuCase{500, 1}, CpuCase{500, 6}, CpuCase{2049, 1}, CpuCase{2049, 6}),
                         [](const ::testing::TestParamInfo<CpuCase>& i) {
                           return ssmlab::str("L", i.param.l, "_G", i.param.g);
                         });

TEST(SsdScanCpu, NoOptionsAndOneSidedCotangents) {
  Poison poison;
  const SsdInputs in = ssmlab::test::make_ssd_inputs({2, 130, 4, 3, 8, 2}, at::kDouble, 41, /*all_options=*/false);
  compare(in, ssmlab::test::kFp64Forward, ssmlab::test::kFp64Grad, true, false, 2);
  compare(in, ssmlab::test::kFp64Forward, ssmlab::test::kFp64Grad, false, true, 3);
  const SsdInputs all = ssmlab::test::make_ssd_inputs({2, 70, 4, 3, 8, 4}, at::kDouble, 42);
  compare(all, ssmlab::test::kFp64Forward, ssmlab::test::kFp64Grad, false, true, 4);
}

// Large heads save states every chunk_len(P, N) < 64 steps (16 here): L = 100 crosses 7 chunks.
TEST(SsdScanCpu, LargeHeadsShorterSaveInterval) {
  Poison poison;
  ASSERT_EQ(ssmlab::ops::ssd_scan_cpu::chunk_len(64, 128), 16);
  const SsdInputs in = ssmlab::test::make_ssd_inputs({1, 100, 2, 64, 128, 1}, at::kDouble, 46);
  compare(in, ssmlab::test::kFp64Forward, ssmlab::test::kFp64Grad, true, true, 6);
}

TEST(SsdScanCpu, Float32AgainstFp64Reference) {
  Poison poison;
  const SsdInputs in = ssmlab::test::make_ssd_inputs({2, 777, 4, 16, 32, 2}, at::kFloat, 43);
  compare(in, ssmlab::test::kFp32Forward, ssmlab::test::kFp32Grad, true, true, 5);
}

TEST(SsdScanCpu, Bfloat16ForwardAgainstFp64Reference) {
  Poison poison;
  const SsdInputs in = ssmlab::test::make_ssd_inputs({2, 300, 4, 8, 16, 1}, at::kBFloat16, 44);
  SsdInputs in64 = in;
  for (auto& [name, t] : ssmlab::test::ssd_leaves(in64)) *t = t->to(at::kDouble);
  const SsdScanOut r = reference(in64), f = fused(in);
  EXPECT_EQ(f.y.scalar_type(), at::kBFloat16);
  EXPECT_TRUE(all_close(f.y, r.y, ssmlab::test::kBf16Forward, "y"));
  EXPECT_TRUE(all_close(f.final_state, r.final_state, ssmlab::test::kFp32Forward, "final_state"));
}

// "auto" on CPU takes the fused kernel, except for chunk-state export, which the chunked algorithm serves.
TEST(SsdScanCpu, AutoPicksFusedUnlessChunkStates) {
  SsdInputs in = ssmlab::test::make_ssd_inputs({1, 20, 2, 3, 4, 1}, at::kDouble, 45);
  EXPECT_TRUE(ssmlab::ops::ssd_scan_cpu_supports(in.x, in.dt, in.A, in.B, in.C, in.opts));
  in.opts.return_chunk_states = true;
  EXPECT_FALSE(ssmlab::ops::ssd_scan_cpu_supports(in.x, in.dt, in.A, in.B, in.C, in.opts));
  const SsdScanOut out = ssmlab::ops::ssd_scan(in.x, in.dt, in.A, in.B, in.C, in.opts, "auto");
  ASSERT_TRUE(out.chunk_states.defined());
  EXPECT_EQ(out.chunk_states.size(1), 1);
}

}  // namespace

}  // namespace ops_test_ssd_scan_cpu
