// "auto" on CPU (ops/ssd_scan/README.md, "auto on CPU"): the policy picks the chunked algorithm at Q 64 when
// gradients are needed, P·N >= 2048 and ATen runs one thread, the fused kernel otherwise, and ssd_scan runs the path ssd_scan_path
// names; float16 on every CPU path (reference, chunked, fused, auto) against the fp64 reference, output,
// final state and every gradient.
#include <functional>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/core/grad_mode.h>

#include "ops/ssd_scan_testing.h"
#include "ssmlab/core/error.h"
#include "ssmlab/ops/ssd_scan/ssd_scan.h"
#include "tolerances.h"

namespace ops_test_ssd_scan_cpu_auto {

namespace {

using ssmlab::ops::SsdScanOptions;
using ssmlab::ops::SsdScanOut;
using ssmlab::ops::SsdScanPath;
using ssmlab::test::all_close;
using ssmlab::test::SsdInputs;

SsdScanPath path(const SsdInputs& in, const std::string& backend = "auto") {
  return ssmlab::ops::ssd_scan_path(in.x, in.dt, in.A, in.B, in.C, in.opts, backend);
}

SsdScanOut run(const SsdInputs& in, const std::string& backend = "auto") {
  return ssmlab::ops::ssd_scan(in.x, in.dt, in.A, in.B, in.C, in.opts, backend);
}

SsdScanOut chunked(const SsdInputs& in, int64_t q) {
  SsdScanOptions o = in.opts;
  o.chunk_size = q;
  return ssmlab::ops::ssd_scan_chunked(in.x, in.dt, in.A, in.B, in.C, o);
}

// ATen's thread count for a scope (the policy depends on it).
struct Threads {
  explicit Threads(int n) : saved(at::get_num_threads()) { at::set_num_threads(n); }
  ~Threads() { at::set_num_threads(saved); }
  int saved;
};

::testing::AssertionResult same_path(SsdScanPath actual, SsdScanPath expected) {
  if (actual == expected) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "path " << ssmlab::ops::to_string(actual) << ", expected "
                                       << ssmlab::ops::to_string(expected);
}

TEST(SsdScanCpuAuto, PolicyByHeadSizeAndGradients) {
  Threads one(1);
  ASSERT_EQ(ssmlab::ops::kSsdCpuTrainChunkedMinPN, 2048);
  const SsdInputs small = ssmlab::test::make_ssd_inputs({1, 10, 2, 8, 16, 1}, at::kFloat, 1);   // P·N 128
  const SsdInputs edge = ssmlab::test::make_ssd_inputs({1, 10, 2, 32, 63, 1}, at::kFloat, 2);   // P·N 2016
  const SsdInputs large = ssmlab::test::make_ssd_inputs({1, 10, 2, 32, 64, 1}, at::kFloat, 3);  // P·N 2048
  // Inference (no input requires grad): the fused kernel at every head size.
  for (const SsdInputs* in : {&small, &edge, &large}) EXPECT_TRUE(same_path(path(*in), SsdScanPath::fused));
  // Training: the chunked algorithm from P·N 2048 up.
  EXPECT_TRUE(same_path(path(ssmlab::test::ssd_as_leaves(small)), SsdScanPath::fused));
  EXPECT_TRUE(same_path(path(ssmlab::test::ssd_as_leaves(edge)), SsdScanPath::fused));
  const SsdInputs large_grad = ssmlab::test::ssd_as_leaves(large);
  EXPECT_TRUE(same_path(path(large_grad), SsdScanPath::chunked));
  // One optional input requiring grad is enough; grad mode off is inference again.
  SsdInputs only_state = large;
  only_state.opts.initial_state = only_state.opts.initial_state->clone().requires_grad_(true);
  EXPECT_TRUE(same_path(path(only_state), SsdScanPath::chunked));
  {
    at::NoGradGuard no_grad;
    EXPECT_TRUE(same_path(path(large_grad), SsdScanPath::fused));
  }
  EXPECT_TRUE(same_path(path(large_grad, "reference"), SsdScanPath::reference));
  SsdInputs states = large;
  states.opts.return_chunk_states = true;
  EXPECT_TRUE(same_path(path(states), SsdScanPath::chunked));
  {
    Threads two(2);  // more threads: the fused kernel
    ASSERT_EQ(at::get_num_threads(), 2);
    EXPECT_TRUE(same_path(path(large_grad), SsdScanPath::fused));
  }
}

// ssd_scan runs what ssd_scan_path names: with grads at P·N 2048 its output is the chunked algorithm's at
// Q 64 bit for bit (whatever chunk_size says, here the mixer's 256), not the fused kernel's; without grads
// it is the fused kernel's.
TEST(SsdScanCpuAuto, RunsTheNamedPath) {
  Threads one(1);
  SsdInputs in = ssmlab::test::make_ssd_inputs({1, 300, 2, 32, 64, 1}, at::kFloat, 4);
  in.opts.chunk_size = 256;
  const SsdInputs leaves = ssmlab::test::ssd_as_leaves(in);
  const SsdScanOut a = run(leaves);
  EXPECT_TRUE(at::equal(a.y, chunked(leaves, 64).y));
  EXPECT_FALSE(at::equal(a.y, chunked(leaves, 256).y)) << "auto must run Q 64, not the caller's 256";
  EXPECT_FALSE(at::equal(a.y, ssmlab::ops::ssd_scan_fused(in.x, in.dt, in.A, in.B, in.C, in.opts).y));
  EXPECT_TRUE(at::equal(run(in).y, ssmlab::ops::ssd_scan_fused(in.x, in.dt, in.A, in.B, in.C, in.opts).y));
}

// Every CPU path on float16 inputs (computed in fp32): y in fp16 within one fp16 rounding, the fp32 final state
// and every gradient against the fp64 reference on the same rounded inputs. The second shape (P·N 2048) runs
// "auto" through the training policy's chunked algorithm.
TEST(SsdScanCpuFp16, EveryPathAgainstFp64Reference) {
  Threads one(1);
  struct Path {
    std::string name;
    std::function<SsdScanOut(const SsdInputs&)> run;
  };
  const std::vector<Path> paths = {
      {"reference", [](const SsdInputs& in) { return run(in, "reference"); }},
      {"chunked Q 16", [](const SsdInputs& in) { return chunked(in, 16); }},
      {"fused",
       [](const SsdInputs& in) { return ssmlab::ops::ssd_scan_fused(in.x, in.dt, in.A, in.B, in.C, in.opts); }},
      {"auto", [](const SsdInputs& in) { return run(in, "auto"); }},
  };
  for (ssmlab::test::SsdShape s : {ssmlab::test::SsdShape{2, 150, 4, 8, 16, 2}, {1, 70, 2, 32, 64, 1}}) {
    const SsdInputs in = ssmlab::test::make_ssd_inputs(s, at::kHalf, 50 + s.p);
    ASSERT_TRUE(ssmlab::ops::ssd_scan_cpu_supports(in.x, in.dt, in.A, in.B, in.C, in.opts));
    at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(s.l);
    const at::Tensor gy = at::randn({s.b, s.l, s.h, s.p}, gen, at::kDouble);
    const at::Tensor gs = at::randn({s.b, s.h, s.p, s.n}, gen, at::kDouble);
    SsdInputs ref = ssmlab::test::ssd_as_leaves(in, at::kDouble);
    const SsdScanOut r = run(ref, "reference");
    const auto g_r = ssmlab::test::ssd_grads(r, gy, gs, ref);
    for (const Path& p : paths) {
      SCOPED_TRACE(ssmlab::str(p.name, " at P ", s.p, " N ", s.n));
      SsdInputs leaves = ssmlab::test::ssd_as_leaves(in);
      const SsdScanOut out = p.run(leaves);
      EXPECT_EQ(out.y.scalar_type(), at::kHalf);
      EXPECT_EQ(out.final_state.scalar_type(), at::kFloat);
      EXPECT_TRUE(all_close(out.y, r.y, ssmlab::test::kFp16Forward, "y"));
      EXPECT_TRUE(all_close(out.final_state, r.final_state, ssmlab::test::kFp32Forward, "final_state"));
      const auto g = ssmlab::test::ssd_grads(out, gy, gs, leaves);
      const auto names = ssmlab::test::ssd_leaves(leaves);
      for (size_t i = 0; i < names.size(); ++i) {
        ASSERT_TRUE(g[i].defined()) << names[i].first;
        EXPECT_EQ(g[i].scalar_type(), names[i].second->scalar_type()) << names[i].first;
        EXPECT_TRUE(all_close(g[i], g_r[i], ssmlab::test::kFp16Grad, "d/d" + names[i].first));
      }
    }
  }
}

}  // namespace

}  // namespace ops_test_ssd_scan_cpu_auto
