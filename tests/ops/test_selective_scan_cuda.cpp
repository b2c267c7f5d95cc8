// The CUDA selective scan (ops/selective_scan/cuda.cu, kernel_scan.cuh, autograd_cuda.cpp) against the
// reference run on CPU float64 copies of the same inputs: output, final state and every gradient (u, delta,
// A, B, C, D, z, delta_bias, initial_state), over lengths across the 64-step chunk boundary (1 .. 4097), N in
// {1, 16, 17, 64, 256} (every max-N bucket), odd B and E, grouped B / C, every optional-input combination,
// fp32 / fp64 / bf16 / fp16; a 70000-step case against the fused CPU kernel in float64 (64-bit indexing, long
// sequences); backend selection. Without a usable CUDA device every test skips (visibly).
//
// Poison: before each CUDA run the caching allocator is handed back blocks filled with NaN, so an output or
// gradient element the kernels never write most likely reads NaN; every result is checked finite.
#include <gtest/gtest.h>

#include <limits>
#include <string>
#include <vector>

#include <ATen/ATen.h>

#include "ops/selective_scan_naive.h"
#include "ssmlab/core/device.h"
#include "ssmlab/core/error.h"
#include "ssmlab/ops/selective_scan/selective_scan.h"
#include "cuda_test_util.h"
#include "tolerances.h"

namespace ops_test_selective_scan_cuda {

namespace {

using ssmlab::test::ScanFlags;
using ssmlab::test::ScanInputs;
using ssmlab::test::ScanShape;
using ssmlab::test::opt;

const at::Device kCuda(at::kCUDA, 0);

using ssmlab::test::poison_allocator;

ScanInputs to_cuda_leaves(const ScanInputs& in) {
  ScanInputs l = in;
  for (at::Tensor* t : {&l.u, &l.delta, &l.A, &l.B, &l.C, &l.D, &l.z, &l.delta_bias, &l.h0})
    if (t->defined()) *t = t->detach().to(kCuda).clone().requires_grad_(true);
  return l;
}

ssmlab::ops::SelectiveScanOut run_cuda(const ScanInputs& in) {
  poison_allocator();
  return ssmlab::ops::selective_scan_cuda(in.u, in.delta, in.A, in.B, in.C, opt(in.D), opt(in.z),
                                          opt(in.delta_bias), in.softplus, opt(in.h0));
}
ssmlab::ops::SelectiveScanOut run_reference(const ScanInputs& in) {
  return ssmlab::ops::selective_scan_reference(in.u, in.delta, in.A, in.B, in.C, opt(in.D), opt(in.z),
                                               opt(in.delta_bias), in.softplus, opt(in.h0));
}
ssmlab::ops::SelectiveScanOut run_fused_cpu(const ScanInputs& in) {
  return ssmlab::ops::selective_scan_fused(in.u, in.delta, in.A, in.B, in.C, opt(in.D), opt(in.z),
                                           opt(in.delta_bias), in.softplus, opt(in.h0));
}
ssmlab::ops::SelectiveScanOut run_entry(const ScanInputs& in, const std::string& backend) {
  return ssmlab::ops::selective_scan(in.u, in.delta, in.A, in.B, in.C, opt(in.D), opt(in.z), opt(in.delta_bias),
                                     in.softplus, opt(in.h0), backend);
}

std::string describe(const ScanShape& s, const ScanFlags& f, at::ScalarType dtype) {
  return ssmlab::str("B", s.b, " L", s.l, " E", s.e, " N", s.n, " G", s.groups, " D", f.D, " z", f.z, " bias",
                     f.bias, " softplus", f.softplus, " h0", f.h0, " ", c10::toString(dtype));
}

using ssmlab::test::all_finite;

enum class Oracle { reference, fused_cpu };

// CUDA (inputs in `dtype`) vs the oracle on CPU float64 copies: y, final state, and every gradient.
using CudaRunner = ssmlab::ops::SelectiveScanOut (*)(const ScanInputs&);

void check_case(const ScanShape& s, const ScanFlags& f, at::ScalarType dtype, uint64_t seed, bool grads = true,
                Oracle oracle = Oracle::reference, CudaRunner runner = &run_cuda) {
  SCOPED_TRACE(describe(s, f, dtype));
  using ssmlab::test::all_close;
  const ScanInputs in = ssmlab::test::make_scan_inputs(s, f, dtype, seed);
  const ScanInputs got_leaves = to_cuda_leaves(in);
  const ScanInputs ref_leaves = ssmlab::test::to_f64_leaves(in, /*requires_grad=*/true);
  ASSERT_TRUE(ssmlab::ops::selective_scan_cuda_supports(got_leaves.u, got_leaves.delta, got_leaves.A,
                                                        got_leaves.B, got_leaves.C, opt(got_leaves.D),
                                                        opt(got_leaves.z), opt(got_leaves.delta_bias),
                                                        opt(got_leaves.h0)))
      << "selective_scan_cuda_supports is false: was this built with the CUDA kernels (SSMLAB_WITH_CUDA)?";
  const auto got = runner(got_leaves);
  const auto ref = oracle == Oracle::reference ? run_reference(ref_leaves) : run_fused_cpu(ref_leaves);
  EXPECT_EQ(got.y.scalar_type(), dtype);
  EXPECT_TRUE(got.y.is_cuda());
  EXPECT_EQ(got.final_state.scalar_type(), dtype == at::kDouble ? at::kDouble : at::kFloat);
  EXPECT_TRUE(all_finite(got.y, "y"));
  EXPECT_TRUE(all_finite(got.final_state, "final_state"));
  EXPECT_TRUE(all_close(got.y, ref.y, ssmlab::test::forward_tol(dtype), "y"));
  EXPECT_TRUE(all_close(got.final_state, ref.final_state, ssmlab::test::forward_tol(dtype), "final_state"));
  if (!grads) return;
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed ^ 0x5eed);
  // The cotangent of a bf16 / fp16 y is itself rounded to that dtype on its way into the backward; the
  // oracle gets the same rounded cotangent (tolerances.h: the expected side sees the same inputs).
  const at::Tensor gy = at::randn(ref.y.sizes(), gen, at::kDouble).to(dtype).to(at::kDouble);
  const at::Tensor gs = at::randn(ref.final_state.sizes(), gen, at::kDouble);
  poison_allocator();
  const auto g_got = ssmlab::test::grads_of(got.y, got.final_state, gy.to(kCuda), gs.to(kCuda), got_leaves);
  const auto g_ref = ssmlab::test::grads_of(ref.y, ref.final_state, gy, gs, ref_leaves);
  const auto names = ssmlab::test::defined_inputs(in);
  ASSERT_EQ(g_got.size(), names.size());
  for (size_t i = 0; i < names.size(); ++i) {
    const std::string what = ssmlab::str("d/d", names[i].first);
    EXPECT_EQ(g_got[i].scalar_type(), names[i].second.scalar_type()) << what;
    EXPECT_TRUE(g_got[i].is_cuda()) << what;
    EXPECT_TRUE(all_finite(g_got[i], what));
    EXPECT_TRUE(all_close(g_got[i], g_ref[i], ssmlab::test::grad_tol(dtype), what));
  }
}

constexpr ScanFlags kNone{false, false, false, false, false};
constexpr ScanFlags kAll{true, true, true, true, true};

TEST(SelectiveScanCuda, EveryOptionalInputCombination) {
  SKIP_WITHOUT_CUDA();
  for (int64_t groups : {0, 1, 3}) {
    for (int mask = 0; mask < 32; ++mask) {
      const ScanFlags f{bool(mask & 1), bool(mask & 2), bool(mask & 4), bool(mask & 8), bool(mask & 16)};
      check_case({3, 70, 3, 17, groups}, f, at::kFloat, 100 + mask + 32 * groups);
    }
  }
}

TEST(SelectiveScanCuda, LengthsAndStateSizesFloat32) {
  SKIP_WITHOUT_CUDA();
  int i = 0;
  for (int64_t l : {1, 63, 500, 2049, 4097})
    for (int64_t n : {1, 16, 17, 64, 256}) {
      const int64_t groups = (i % 3 == 0) ? 0 : (i % 3 == 1 ? 1 : 5);
      const ScanFlags f = (i % 2 == 0) ? kAll : ScanFlags{true, false, true, true, false};
      check_case({l >= 2049 ? 1 : 3, l, 5, n, groups}, f, at::kFloat, 1000 + i++);
    }
}

TEST(SelectiveScanCuda, Float64) {
  SKIP_WITHOUT_CUDA();
  check_case({3, 130, 5, 17, 0}, kAll, at::kDouble, 1500);
  check_case({1, 700, 6, 64, 2}, {true, true, false, true, true}, at::kDouble, 1501);
  check_case({3, 65, 7, 256, 1}, kAll, at::kDouble, 1502);
  check_case({2, 64, 3, 1, 3}, kNone, at::kDouble, 1503);
}

TEST(SelectiveScanCuda, Groups) {
  SKIP_WITHOUT_CUDA();
  for (int64_t groups : {0, 1, 2, 6}) {
    check_case({3, 129, 6, 16, groups}, kAll, at::kFloat, 2000 + groups);
    check_case({1, 63, 6, 17, groups}, {false, true, false, true, false}, at::kFloat, 2100 + groups);
  }
  check_case({5, 40, 9, 4, 3}, kAll, at::kFloat, 2200);
  // Groups that tile the tiled forward's channel blocks (32 channels per block at N <= 64, 16 at N <= 128).
  check_case({3, 100, 64, 16, 2}, kAll, at::kFloat, 2202);
  check_case({2, 70, 96, 64, 3}, kAll, at::kFloat, 2203);
  check_case({2, 70, 96, 33, 3}, {true, true, false, true, true}, at::kBFloat16, 2204);
  check_case({1, 40, 32, 100, 2}, kAll, at::kFloat, 2205);
  // Many channels per group: the dB / dC atomics see heavy contention.
  check_case({2, 300, 67, 16, 1}, kAll, at::kFloat, 2201);
}

// The tiled kernels pick 16, 8 or 4 lanes per channel at N <= 16 from the number of (b, e) pairs per SM
// (cuda.cu); on a 132-SM H100 / H200 these three shapes take one variant each.
TEST(SelectiveScanCuda, LanesPerChannelVariants) {
  SKIP_WITHOUT_CUDA();
  check_case({1, 70, 301, 16, 0}, kAll, at::kFloat, 2300);    // 16 lanes
  check_case({3, 70, 1536, 16, 0}, kAll, at::kFloat, 2301);   // 8 lanes
  check_case({3, 70, 2880, 16, 0}, kAll, at::kBFloat16, 2302);  // 4 lanes
}

TEST(SelectiveScanCuda, HalfPrecisionInputs) {
  SKIP_WITHOUT_CUDA();
  check_case({3, 63, 5, 16, 0}, kAll, at::kBFloat16, 4000);
  check_case({2, 200, 4, 16, 2}, {true, true, true, true, false}, at::kBFloat16, 4001);
  check_case({3, 500, 7, 64, 1}, kAll, at::kBFloat16, 4002);
  check_case({1, 2049, 5, 17, 5}, {true, false, true, true, true}, at::kBFloat16, 4003);
  check_case({3, 63, 5, 16, 1}, kAll, at::kHalf, 4004);
  check_case({2, 130, 3, 256, 0}, kAll, at::kHalf, 4005);
}

TEST(SelectiveScanCuda, EmptyLength) {
  SKIP_WITHOUT_CUDA();
  check_case({3, 0, 5, 16, 0}, kAll, at::kFloat, 5000);
  check_case({2, 0, 4, 3, 2}, kNone, at::kFloat, 5001, /*grads=*/false);
}

// 70000 steps (1094 saved chunks) against the fused CPU kernel on float64 copies: forward and gradients.
TEST(SelectiveScanCuda, LongSequenceFloat32) {
  SKIP_WITHOUT_CUDA();
  check_case({1, 70000, 3, 16, 0}, kAll, at::kFloat, 5500, /*grads=*/true, Oracle::fused_cpu);
  check_case({2, 70000, 5, 17, 5}, {true, true, true, true, false}, at::kFloat, 5501, /*grads=*/false,
             Oracle::fused_cpu);
}

// Non-contiguous inputs (u, delta, z as transposed (B, E, L) storage; B, C sliced): same results.
TEST(SelectiveScanCuda, NonContiguousInputs) {
  SKIP_WITHOUT_CUDA();
  const ScanInputs in = ssmlab::test::make_scan_inputs({3, 100, 5, 16, 0}, kAll, at::kFloat, 5600);
  ScanInputs a = to_cuda_leaves(in);
  ScanInputs b = a;
  b.u = a.u.detach().transpose(1, 2).contiguous().transpose(1, 2);
  b.delta = a.delta.detach().transpose(1, 2).contiguous().transpose(1, 2);
  b.z = a.z.detach().transpose(1, 2).contiguous().transpose(1, 2);
  b.B = at::cat({a.B.detach(), a.B.detach()}, -1).narrow(-1, 0, 16);
  b.C = at::cat({a.C.detach(), a.C.detach()}, -1).narrow(-1, 16, 16);
  ASSERT_FALSE(b.u.is_contiguous());
  ASSERT_FALSE(b.B.is_contiguous());
  const auto oa = run_cuda(a), ob = run_cuda(b);
  EXPECT_TRUE(ssmlab::test::all_close(ob.y, oa.y, ssmlab::test::kFp32Forward, "y (non-contiguous)"));
  EXPECT_TRUE(ssmlab::test::all_close(ob.final_state, oa.final_state, ssmlab::test::kFp32Forward, "final_state"));
}

// Gradients that reach only the output or only the final state (the other cotangent undefined).
TEST(SelectiveScanCuda, OneSidedCotangents) {
  SKIP_WITHOUT_CUDA();
  const ScanInputs in = ssmlab::test::make_scan_inputs({2, 90, 4, 8, 2}, kAll, at::kFloat, 7000);
  for (int which : {0, 1}) {
    SCOPED_TRACE(which == 0 ? "loss = y.sum()" : "loss = final_state.sum()");
    const ScanInputs a = to_cuda_leaves(in), b = ssmlab::test::to_f64_leaves(in, true);
    const auto oa = run_cuda(a), ob = run_reference(b);
    const at::Tensor la = which == 0 ? oa.y.sum() : oa.final_state.sum();
    const at::Tensor lb = which == 0 ? ob.y.sum() : ob.final_state.sum();
    std::vector<at::Tensor> xa, xb;
    std::vector<std::string> names;
    for (const auto& [n, t] : ssmlab::test::defined_inputs(a)) {
      xa.push_back(t);
      names.emplace_back(n);
    }
    for (const auto& [n, t] : ssmlab::test::defined_inputs(b)) xb.push_back(t);
    poison_allocator();
    const auto ga = torch::autograd::grad({la}, xa, {}, false, false, /*allow_unused=*/true);
    const auto gb = torch::autograd::grad({lb}, xb, {}, false, false, /*allow_unused=*/true);
    for (size_t i = 0; i < ga.size(); ++i) {
      const at::Tensor x = ga[i].defined() ? ga[i] : at::zeros_like(xa[i]);
      const at::Tensor y = gb[i].defined() ? gb[i] : at::zeros_like(xb[i]);
      EXPECT_TRUE(all_finite(x, ssmlab::str("d/d", names[i])));
      EXPECT_TRUE(ssmlab::test::all_close(x, y, ssmlab::test::kFp32Grad, ssmlab::str("d/d", names[i])));
    }
  }
}

// "auto" on CUDA runs the CUDA kernel (forward bitwise equal to calling it directly); "reference" the oracle.
TEST(SelectiveScanCuda, BackendSelection) {
  SKIP_WITHOUT_CUDA();
  const ScanInputs in = to_cuda_leaves(ssmlab::test::make_scan_inputs({3, 77, 6, 16, 2}, kAll, at::kFloat, 8000));
  const auto direct = run_cuda(in), autob = run_entry(in, "auto");
  EXPECT_TRUE(at::equal(autob.y, direct.y) && at::equal(autob.final_state, direct.final_state))
      << "selective_scan(..., \"auto\") on CUDA did not run the CUDA kernel: is \"cuda\" listed in "
         "selective_scan's fused_devices in src/ssmlab/ops/backend.cpp?";
  const auto refb = run_entry(in, "reference");
  EXPECT_TRUE(refb.y.is_cuda());
  EXPECT_TRUE(ssmlab::test::all_close(refb.y, direct.y, ssmlab::test::kFp32Forward, "reference vs cuda y"));
  // Unsupported cases fall back to the reference and still work: N > 256, mixed dtypes.
  ScanInputs big = to_cuda_leaves(ssmlab::test::make_scan_inputs({1, 3, 2, 300, 0}, kNone, at::kFloat, 8002));
  EXPECT_FALSE(ssmlab::ops::selective_scan_cuda_supports(big.u, big.delta, big.A, big.B, big.C, {}, {}, {}, {}));
  EXPECT_TRUE(ssmlab::test::all_close(run_entry(big, "auto").y, run_reference(big).y, ssmlab::test::kFp32Forward,
                                      "N = 300 fallback"));
  ScanInputs mixed = in;
  mixed.B = in.B.detach().to(at::kDouble);
  EXPECT_FALSE(ssmlab::ops::selective_scan_cuda_supports(mixed.u, mixed.delta, mixed.A, mixed.B, mixed.C,
                                                         opt(mixed.D), opt(mixed.z), opt(mixed.delta_bias),
                                                         opt(mixed.h0)));
  // CPU tensors are never taken by the CUDA kernels.
  const ScanInputs cpu = ssmlab::test::make_scan_inputs({1, 3, 2, 4, 0}, kNone, at::kFloat, 8003);
  EXPECT_FALSE(ssmlab::ops::selective_scan_cuda_supports(cpu.u, cpu.delta, cpu.A, cpu.B, cpu.C, {}, {}, {}, {}));
}

// Without CUDA kernels in the build, or for CPU tensors, supports() is false (runs on every machine).
TEST(SelectiveScanCuda, SupportsIsFalseForCpuTensors) {
  const ScanInputs cpu = ssmlab::test::make_scan_inputs({1, 3, 2, 4, 0}, kNone, at::kFloat, 8004);
  EXPECT_FALSE(ssmlab::ops::selective_scan_cuda_supports(cpu.u, cpu.delta, cpu.A, cpu.B, cpu.C, {}, {}, {}, {}));
  EXPECT_THROW(ssmlab::ops::selective_scan_cuda(cpu.u, cpu.delta, cpu.A, cpu.B, cpu.C, {}, {}, {}, false, {}),
               ssmlab::Error);
}

// The time-split scan (segmented.cpp) on the CUDA kernels, forced to 2 and 4 segments (auto picks it only for long
// sequences with few rows): y, final state and every gradient against the float64 reference, odd sizes across the
// 64-step chunk boundary, initial state and gate, fp32 and bf16.
ssmlab::ops::SelectiveScanOut run_cuda_auto(const ScanInputs& in) {
  poison_allocator();
  return run_entry(in, "auto");
}

TEST(SelectiveScanCuda, TimeSegmentsMatchReference) {
  SKIP_WITHOUT_CUDA();
  for (const char* k : {"2", "4"}) {
    setenv("SSMLAB_SCAN_SEGMENTS", k, 1);
    SCOPED_TRACE(ssmlab::str(k, " segments"));
    check_case({3, 260, 37, 16, 0}, {true, true, true, true, true}, at::kFloat, 8800, true, Oracle::reference,
               &run_cuda_auto);
    check_case({2, 260, 40, 17, 2}, {true, true, true, true, false}, at::kBFloat16, 8801, true, Oracle::reference,
               &run_cuda_auto);
    check_case({1, 520, 16, 64, 0}, {false, false, true, true, true}, at::kDouble, 8802, true, Oracle::reference,
               &run_cuda_auto);
  }
  unsetenv("SSMLAB_SCAN_SEGMENTS");
}

}  // namespace

}  // namespace ops_test_selective_scan_cuda
