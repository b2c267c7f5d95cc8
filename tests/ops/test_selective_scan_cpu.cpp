// The fused CPU selective scan (ops/selective_scan/cpu.cpp, autograd.cpp) against the reference run on
// float64 copies of the same inputs: output, final state and every gradient, over optional-input
// combinations, group layouts (plain, G = 1, 2, E), lengths across the 64-step chunk boundary, N up to 64,
// odd B and E, float64 / float32 / bfloat16 / float16 inputs; plus backend selection.
#include <gtest/gtest.h>

#include <cstdlib>
#include <string>

#include <ATen/Parallel.h>

#include "ops/selective_scan_naive.h"
#include "ssmlab/core/error.h"
#include "ssmlab/ops/selective_scan/selective_scan.h"
#include "tolerances.h"

namespace ops_test_selective_scan_cpu {

namespace {

using ssmlab::test::ScanFlags;
using ssmlab::test::ScanInputs;
using ssmlab::test::ScanShape;
using ssmlab::test::opt;

ssmlab::ops::SelectiveScanOut run_fused(const ScanInputs& in) {
  return ssmlab::ops::selective_scan_fused(in.u, in.delta, in.A, in.B, in.C, opt(in.D), opt(in.z),
                                           opt(in.delta_bias), in.softplus, opt(in.h0));
}
ssmlab::ops::SelectiveScanOut run_reference(const ScanInputs& in) {
  return ssmlab::ops::selective_scan_reference(in.u, in.delta, in.A, in.B, in.C, opt(in.D), opt(in.z),
                                               opt(in.delta_bias), in.softplus, opt(in.h0));
}
ssmlab::ops::SelectiveScanOut run_entry(const ScanInputs& in, const std::string& backend) {
  return ssmlab::ops::selective_scan(in.u, in.delta, in.A, in.B, in.C, opt(in.D), opt(in.z), opt(in.delta_bias),
                                     in.softplus, opt(in.h0), backend);
}

ScanInputs leaves_of(const ScanInputs& in) {
  ScanInputs l = in;
  for (at::Tensor* t : {&l.u, &l.delta, &l.A, &l.B, &l.C, &l.D, &l.z, &l.delta_bias, &l.h0})
    if (t->defined()) *t = t->detach().clone().requires_grad_(true);
  return l;
}

std::string describe(const ScanShape& s, const ScanFlags& f, at::ScalarType dtype) {
  return ssmlab::str("B", s.b, " L", s.l, " E", s.e, " N", s.n, " G", s.groups, " D", f.D, " z", f.z, " bias",
                     f.bias, " softplus", f.softplus, " h0", f.h0, " ", c10::toString(dtype));
}

// Fused (inputs in `dtype`) vs reference on float64 copies: y, final state, and every gradient.
using ScanRunner = ssmlab::ops::SelectiveScanOut (*)(const ScanInputs&);

void check_case(const ScanShape& s, const ScanFlags& f, at::ScalarType dtype, uint64_t seed, bool grads = true,
                ScanRunner runner = &run_fused) {
  SCOPED_TRACE(describe(s, f, dtype));
  using ssmlab::test::all_close;
  const ScanInputs in = ssmlab::test::make_scan_inputs(s, f, dtype, seed);
  const ScanInputs got_leaves = leaves_of(in);
  const ScanInputs ref_leaves = ssmlab::test::to_f64_leaves(in, /*requires_grad=*/true);
  const auto got = runner(got_leaves);
  const auto ref = run_reference(ref_leaves);
  EXPECT_EQ(got.y.scalar_type(), dtype);
  EXPECT_EQ(got.final_state.scalar_type(), dtype == at::kDouble ? at::kDouble : at::kFloat);
  EXPECT_TRUE(all_close(got.y, ref.y, ssmlab::test::forward_tol(dtype), "y"));
  EXPECT_TRUE(all_close(got.final_state, ref.final_state, ssmlab::test::forward_tol(dtype), "final_state"));
  if (!grads) return;
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed ^ 0x5eed);
  const at::Tensor gy = at::randn(ref.y.sizes(), gen, at::kDouble);
  const at::Tensor gs = at::randn(ref.final_state.sizes(), gen, at::kDouble);
  const auto g_got = ssmlab::test::grads_of(got.y, got.final_state, gy, gs, got_leaves);
  const auto g_ref = ssmlab::test::grads_of(ref.y, ref.final_state, gy, gs, ref_leaves);
  const auto names = ssmlab::test::defined_inputs(in);
  ASSERT_EQ(g_got.size(), names.size());
  for (size_t i = 0; i < names.size(); ++i) {
    EXPECT_EQ(g_got[i].scalar_type(), names[i].second.scalar_type()) << names[i].first;
    EXPECT_TRUE(all_close(g_got[i], g_ref[i], ssmlab::test::grad_tol(dtype), ssmlab::str("d/d", names[i].first)));
  }
}

constexpr ScanFlags kNone{false, false, false, false, false};
constexpr ScanFlags kAll{true, true, true, true, true};

TEST(SelectiveScanCpu, EveryOptionalInputCombination) {
  for (int64_t groups : {0, 1, 3}) {
    for (int mask = 0; mask < 32; ++mask) {
      const ScanFlags f{bool(mask & 1), bool(mask & 2), bool(mask & 4), bool(mask & 8), bool(mask & 16)};
      check_case({3, 70, 3, 17, groups}, f, at::kDouble, 100 + mask + 32 * groups);
    }
  }
}

TEST(SelectiveScanCpu, LengthsAndStateSizesFloat64) {
  int i = 0;
  for (int64_t l : {1, 63, 64, 65, 500, 2049})
    for (int64_t n : {1, 16, 17, 64}) {
      const int64_t groups = (i % 3 == 0) ? 0 : (i % 3 == 1 ? 1 : 5);
      const ScanFlags f = (i % 2 == 0) ? kAll : ScanFlags{true, false, true, true, false};
      check_case({l >= 500 ? 1 : 3, l, 5, n, groups}, f, at::kDouble, 1000 + i++);
    }
}

TEST(SelectiveScanCpu, GroupsFloat64) {
  for (int64_t groups : {0, 1, 2, 6}) {
    check_case({3, 129, 6, 16, groups}, kAll, at::kDouble, 2000 + groups);
    check_case({1, 63, 6, 17, groups}, {false, true, false, true, false}, at::kDouble, 2100 + groups);
  }
  check_case({5, 40, 9, 4, 3}, kAll, at::kDouble, 2200);
}

TEST(SelectiveScanCpu, Float32) {
  check_case({3, 63, 5, 16, 0}, kAll, at::kFloat, 3000);
  check_case({1, 500, 6, 17, 2}, {true, true, false, true, true}, at::kFloat, 3001);
  check_case({1, 2049, 3, 16, 3}, kAll, at::kFloat, 3002);
  check_case({3, 130, 6, 64, 1}, kNone, at::kFloat, 3003);
  check_case({2, 1, 4, 1, 4}, kAll, at::kFloat, 3004);
}

// float32 forward runs blocks of 8 channels (with a row-by-row tail when G == 1), row by row otherwise.
TEST(SelectiveScanCpu, Float32ChannelBlocks) {
  check_case({2, 130, 13, 16, 0}, kAll, at::kFloat, 3100);   // one block + a tail of 5
  check_case({1, 70, 32, 17, 2}, kAll, at::kFloat, 3101);    // groups of 16 channels: 2 blocks per group
  check_case({2, 65, 24, 5, 3}, {true, false, true, true, false}, at::kFloat, 3102);  // groups of 8
  check_case({1, 40, 12, 16, 3}, kAll, at::kFloat, 3103);    // groups of 4: rows
  check_case({3, 64, 8, 64, 1}, kAll, at::kBFloat16, 3104);  // exactly one block
}

TEST(SelectiveScanCpu, HalfPrecisionInputs) {
  check_case({3, 63, 5, 16, 0}, kAll, at::kBFloat16, 4000);
  check_case({2, 200, 4, 16, 2}, {true, true, true, true, false}, at::kBFloat16, 4001);
  check_case({3, 63, 5, 16, 1}, kAll, at::kHalf, 4002);
}

TEST(SelectiveScanCpu, EmptyLength) {
  check_case({3, 0, 5, 16, 0}, kAll, at::kDouble, 5000);
  check_case({2, 0, 4, 3, 2}, kNone, at::kFloat, 5001, /*grads=*/false);
}

// The channel-split path (few (b, g) pairs: each task's dB/dC in its own scratch, summed after) and the
// plain path give the same results, with one and with several threads.
TEST(SelectiveScanCpu, ThreadCountsAgree) {
  const int saved = at::get_num_threads();
  for (int threads : {1, 2, 3}) {
    at::set_num_threads(threads);
    check_case({1, 100, 8, 16, 0}, kAll, at::kDouble, 6000 + threads);
    check_case({2, 70, 6, 5, 3}, kAll, at::kFloat, 6100 + threads);
  }
  at::set_num_threads(saved);
}

// Gradients that reach only the output or only the final state (the other cotangent undefined).
TEST(SelectiveScanCpu, OneSidedCotangents) {
  const ScanInputs in = ssmlab::test::make_scan_inputs({2, 90, 4, 8, 2}, kAll, at::kDouble, 7000);
  for (int which : {0, 1}) {
    const ScanInputs a = leaves_of(in), b = ssmlab::test::to_f64_leaves(in, true);
    const auto oa = run_fused(a), ob = run_reference(b);
    const at::Tensor la = which == 0 ? oa.y.sum() : oa.final_state.sum();
    const at::Tensor lb = which == 0 ? ob.y.sum() : ob.final_state.sum();
    std::vector<at::Tensor> xa, xb;
    for (const auto& [n, t] : ssmlab::test::defined_inputs(a)) xa.push_back(t);
    for (const auto& [n, t] : ssmlab::test::defined_inputs(b)) xb.push_back(t);
    const auto ga = torch::autograd::grad({la}, xa, {}, false, false, /*allow_unused=*/true);
    const auto gb = torch::autograd::grad({lb}, xb, {}, false, false, /*allow_unused=*/true);
    for (size_t i = 0; i < ga.size(); ++i) {
      const at::Tensor x = ga[i].defined() ? ga[i] : at::zeros_like(xa[i]);
      const at::Tensor y = gb[i].defined() ? gb[i] : at::zeros_like(xb[i]);
      EXPECT_TRUE(ssmlab::test::all_close(x, y, ssmlab::test::kFp64Grad, ssmlab::str("grad ", i, " which ", which)));
    }
  }
}

// "auto" on CPU runs the fused kernel (bitwise equal to calling it directly); "reference" runs the oracle.
TEST(SelectiveScanCpu, BackendSelection) {
  for (at::ScalarType dtype : {at::kFloat, at::kDouble}) {
    const ScanInputs in = ssmlab::test::make_scan_inputs({3, 77, 6, 16, 2}, kAll, dtype, 8000);
    const auto fused = run_fused(in), autob = run_entry(in, "auto");
    EXPECT_TRUE(at::equal(autob.y, fused.y));
    EXPECT_TRUE(at::equal(autob.final_state, fused.final_state));
    const auto ref = run_reference(in), refb = run_entry(in, "reference");
    EXPECT_TRUE(at::equal(refb.y, ref.y));
    EXPECT_TRUE(at::equal(refb.final_state, ref.final_state));
    // Gradients through "auto" equal the fused kernel's, too.
    at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(8001);
    const at::Tensor gy = at::randn(fused.y.sizes(), gen, at::kDouble);
    const at::Tensor gs = at::randn(fused.final_state.sizes(), gen, at::kDouble);
    const ScanInputs la = leaves_of(in), lb = leaves_of(in);
    const auto oa = run_entry(la, "auto");
    const auto ob = run_fused(lb);
    const auto ga = ssmlab::test::grads_of(oa.y, oa.final_state, gy, gs, la);
    const auto gb = ssmlab::test::grads_of(ob.y, ob.final_state, gy, gs, lb);
    for (size_t i = 0; i < ga.size(); ++i) EXPECT_TRUE(at::equal(ga[i], gb[i])) << "grad " << i;
  }
  EXPECT_TRUE(ssmlab::ops::selective_scan_cpu_supports(at::zeros({1, 2, 3}), at::zeros({1, 2, 3}),
                                                       at::zeros({3, 256}), at::zeros({1, 2, 256}),
                                                       at::zeros({1, 2, 256}), {}, {}, {}, {}));
  EXPECT_FALSE(ssmlab::ops::selective_scan_cpu_supports(at::zeros({1, 2, 3}), at::zeros({1, 2, 3}),
                                                        at::zeros({3, 257}), at::zeros({1, 2, 257}),
                                                        at::zeros({1, 2, 257}), {}, {}, {}, {}));
  // N > 256: "auto" falls back to the reference (and still works).
  const ScanInputs big = ssmlab::test::make_scan_inputs({1, 3, 2, 300, 0}, kNone, at::kDouble, 8002);
  EXPECT_TRUE(at::equal(run_entry(big, "auto").y, run_reference(big).y));
}

// ---- time segments side by side (segmented.cpp) ------------------------------------------------------------

// Sets SSMLAB_SCAN_SEGMENTS until destroyed (null: unset).
struct SegmentsEnv {
  explicit SegmentsEnv(const char* v) {
    if (const char* old = std::getenv("SSMLAB_SCAN_SEGMENTS")) old_ = old;
    if (v)
      setenv("SSMLAB_SCAN_SEGMENTS", v, 1);
    else
      unsetenv("SSMLAB_SCAN_SEGMENTS");
  }
  ~SegmentsEnv() {
    if (old_.empty())
      unsetenv("SSMLAB_SCAN_SEGMENTS");
    else
      setenv("SSMLAB_SCAN_SEGMENTS", old_.c_str(), 1);
  }
  SegmentsEnv(const SegmentsEnv&) = delete;
  SegmentsEnv& operator=(const SegmentsEnv&) = delete;
  std::string old_;
};

ssmlab::ops::SelectiveScanOut run_auto(const ScanInputs& in) { return run_entry(in, "auto"); }

// The split scan (forced on the CPU) against the reference: y, final state and every gradient, initial state
// and gate included, segments of 9, 12 and 18 steps of a 36-step sequence, one segment of 1 step, groups.
TEST(SelectiveScanSegments, SplitScanMatchesReference) {
  for (const char* k : {"2", "3", "4"}) {
    SegmentsEnv env(k);
    SCOPED_TRACE(ssmlab::str(k, " segments"));
    check_case({3, 36, 5, 17, 0}, kAll, at::kDouble, 7000);
    check_case({2, 36, 6, 16, 2}, {true, false, true, true, true}, at::kDouble, 7001);
    check_case({2, 36, 6, 4, 0}, {false, true, false, true, false}, at::kDouble, 7002);
    check_case({3, 36, 5, 16, 0}, kAll, at::kFloat, 7003);
    check_case({2, 36, 8, 16, 1}, kAll, at::kBFloat16, 7004);
  }
  SegmentsEnv env("5");
  check_case({2, 5, 3, 4, 0}, kAll, at::kDouble, 7005);  // segments of one step
}

// A wrong split would change the result: the chain of pass 2 must carry the state across segments. With a state
// that decays slowly, dropping h_in (or the decay) moves y far beyond the tolerance; this pins that the comparison
// above can fail.
TEST(SelectiveScanSegments, SplitMattersForTheResult) {
  SegmentsEnv env("4");
  const ScanInputs in = ssmlab::test::make_scan_inputs({1, 32, 3, 4, 0}, kAll, at::kDouble, 7100);
  const auto whole = run_reference(in);
  // The first segment alone from zero equals the whole scan's first 8 steps; the last segment from zero does not
  // equal the whole scan's last 8 steps (the carried state matters).
  ScanInputs last = in;
  for (at::Tensor* t : {&last.u, &last.delta, &last.B, &last.C, &last.z}) *t = t->narrow(1, 24, 8).contiguous();
  last.h0 = at::Tensor();
  const auto from_zero = run_reference(last);
  EXPECT_FALSE(at::allclose(from_zero.y, whole.y.narrow(1, 24, 8), 1e-6, 1e-6));
  EXPECT_TRUE(ssmlab::test::all_close(run_auto(in).y, whole.y, ssmlab::test::kFp64Forward, "y"));
}

TEST(SelectiveScanSegments, Policy) {
  const at::Device cpu(at::kCPU), cuda(at::kCUDA, 0);
  SegmentsEnv env(nullptr);
  EXPECT_EQ(ssmlab::ops::selective_scan_segments(2, 8192, 1536, cpu), 1);        // never on the CPU by default
  EXPECT_EQ(ssmlab::ops::selective_scan_segments(2, 8192, 1536, cuda), 4);       // 3072 rows -> 12288
  EXPECT_EQ(ssmlab::ops::selective_scan_segments(1, 8192, 1536, cuda), 8);
  EXPECT_EQ(ssmlab::ops::selective_scan_segments(8, 2048, 1536, cuda), 1);       // fills the GPU already
  EXPECT_EQ(ssmlab::ops::selective_scan_segments(1, 1024, 1536, cuda), 2);       // segments of >= 512 steps
  EXPECT_EQ(ssmlab::ops::selective_scan_segments(1, 1000, 1536, cuda), 1);       // 2 x 500: too short
  EXPECT_EQ(ssmlab::ops::selective_scan_segments(2, 8190, 1536, cuda), 2);       // 4 does not divide 8190
  {
    SegmentsEnv off("1");
    EXPECT_EQ(ssmlab::ops::selective_scan_segments(2, 8192, 1536, cuda), 1);
  }
  {
    SegmentsEnv forced("3");
    EXPECT_EQ(ssmlab::ops::selective_scan_segments(2, 36, 5, cpu), 3);
    EXPECT_EQ(ssmlab::ops::selective_scan_segments(2, 35, 5, cpu), 1);  // 3 does not divide 35: no split
  }
  {
    SegmentsEnv bad("many");
    EXPECT_THROW(ssmlab::ops::selective_scan_segments(2, 36, 5, cpu), ssmlab::Error);
  }
}

}  // namespace

}  // namespace ops_test_selective_scan_cpu
