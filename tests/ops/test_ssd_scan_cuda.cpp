// The CUDA SSD kernels (ops/ssd_scan/cuda.cu: the chunked tensor-core kernels and the time-stepped ones) and the
// chunked ATen algorithm on CUDA against the CPU reference in float64: output, final state and every gradient
// over L in {1, 63, 64, 500, 2049}, n_groups in {1, H}, N from 1 to 256 and P up to 64; float64, float32,
// bfloat16 and float16; each kernel family's forward with the other's backward; the decode step on CUDA. Runs on
// a NaN-poisoned allocator. Skipped (visibly) without a GPU.
#include <gtest/gtest.h>

#include <cstdlib>
#include <vector>

#include <ATen/ATen.h>

#include "ops/ssd_scan_testing.h"
#include "ssmlab/core/device.h"
#include "ssmlab/core/error.h"
#include "ssmlab/ops/ssd_scan/ssd_scan.h"
#include "cuda_test_util.h"
#include "tolerances.h"

namespace ops_test_ssd_scan_cuda {

namespace {

using ssmlab::ops::SsdScanOut;
using ssmlab::test::all_close;
using ssmlab::test::SsdInputs;
using ssmlab::test::SsdShape;

SsdInputs to_device(const SsdInputs& in, at::Device dev) {
  SsdInputs out = in;
  for (auto& [name, t] : ssmlab::test::ssd_leaves(out)) *t = t->to(dev);
  return out;
}

// Sets SSMLAB_SSD_CUDA (the CUDA kernel family: "chunked" or "sequential") until destroyed; null leaves the
// default.
struct AlgorithmScope {
  explicit AlgorithmScope(const char* v) {
    if (v) setenv("SSMLAB_SSD_CUDA", v, 1);
  }
  ~AlgorithmScope() { unsetenv("SSMLAB_SSD_CUDA"); }
  AlgorithmScope(const AlgorithmScope&) = delete;
  AlgorithmScope& operator=(const AlgorithmScope&) = delete;
};

// CUDA run (fused kernels with "auto", or the chunked algorithm) against the CPU reference, forward and every
// gradient, the CUDA inputs in `in`'s dtype, the reference on the same values in float64. fwd_alg / bwd_alg
// pick the kernel family of the forward and of the backward (null: the default choice).
void check(const SsdInputs& cpu_in, bool chunked, ssmlab::test::Tol ftol, ssmlab::test::Tol gtol, uint64_t seed,
           const char* fwd_alg = nullptr, const char* bwd_alg = nullptr) {
  const at::Device cuda(at::kCUDA, 0);
  ssmlab::test::poison_allocator();
  SsdInputs ref = ssmlab::test::ssd_as_leaves(cpu_in, at::kDouble);
  SsdInputs dev = ssmlab::test::ssd_as_leaves(to_device(cpu_in, cuda));
  if (!chunked) {
    ASSERT_TRUE(ssmlab::ops::ssd_scan_cuda_supports(dev.x, dev.dt, dev.A, dev.B, dev.C, dev.opts))
        << "the CUDA kernels should take this case (is this a build with CUDA kernels?)";
  }
  const SsdScanOut r = ssmlab::ops::ssd_scan(ref.x, ref.dt, ref.A, ref.B, ref.C, ref.opts, "reference");
  SsdScanOut d;
  if (chunked) {
    d = ssmlab::ops::ssd_scan_chunked(dev.x, dev.dt, dev.A, dev.B, dev.C, dev.opts);
  } else {
    const AlgorithmScope alg(fwd_alg);
    d = ssmlab::ops::ssd_scan(dev.x, dev.dt, dev.A, dev.B, dev.C, dev.opts, "auto");
  }
  EXPECT_TRUE(ssmlab::test::all_finite(d.y, "y"));
  EXPECT_TRUE(d.y.is_cuda());
  EXPECT_EQ(d.y.scalar_type(), cpu_in.x.scalar_type());
  EXPECT_TRUE(all_close(d.y.cpu(), r.y, ftol, "y"));
  EXPECT_TRUE(all_close(d.final_state.cpu(), r.final_state, ftol, "final_state"));
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  // y's cotangent reaches the kernels rounded to y's dtype; the oracle gets the same rounded values.
  const at::Tensor gy = at::randn(r.y.sizes(), gen, at::kDouble).to(cpu_in.x.scalar_type()).to(at::kDouble);
  const at::Tensor gs = at::randn(r.final_state.sizes(), gen, at::kDouble);
  const auto g_ref = ssmlab::test::ssd_grads(r, gy, gs, ref);
  std::vector<at::Tensor> g_dev;
  {
    const AlgorithmScope alg(bwd_alg);
    g_dev = ssmlab::test::ssd_grads(d, gy.to(cuda), gs.to(cuda), dev);
  }
  const auto names = ssmlab::test::ssd_leaves(ref);
  for (size_t i = 0; i < names.size(); ++i) {
    ASSERT_TRUE(g_dev[i].defined()) << names[i].first;
    EXPECT_TRUE(ssmlab::test::all_finite(g_dev[i], "d/d" + names[i].first));
    EXPECT_TRUE(all_close(g_dev[i].cpu(), g_ref[i], gtol, "d/d" + names[i].first));
  }
}

TEST(SsdScanCuda, Float64LengthsGroupsAndStateSizes) {
  SKIP_WITHOUT_CUDA();
  int i = 0;
  for (int64_t l : {1, 63, 500, 2049})
    for (int64_t g : {1, 4}) {
      const int64_t n = std::vector<int64_t>{1, 17, 64, 128, 256}[i % 5];
      const int64_t p = std::vector<int64_t>{1, 5, 64}[i % 3];
      SCOPED_TRACE(ssmlab::str("L ", l, " G ", g, " N ", n, " P ", p));
      const SsdInputs in = ssmlab::test::make_ssd_inputs({2, l, 4, p, n, g}, at::kDouble, 600 + i++);
      check(in, /*chunked=*/false, ssmlab::test::kFp64Forward, ssmlab::test::kFp64Grad, i);
    }
}

TEST(SsdScanCuda, NoOptionalInputs) {
  SKIP_WITHOUT_CUDA();
  const SsdInputs in = ssmlab::test::make_ssd_inputs({3, 130, 6, 8, 16, 3}, at::kDouble, 700, /*all_options=*/false);
  check(in, /*chunked=*/false, ssmlab::test::kFp64Forward, ssmlab::test::kFp64Grad, 1);
}

TEST(SsdScanCuda, Float32AndBfloat16) {
  SKIP_WITHOUT_CUDA();
  check(ssmlab::test::make_ssd_inputs({2, 777, 4, 64, 128, 1}, at::kFloat, 701), false, ssmlab::test::kFp32Forward,
        ssmlab::test::kFp32Grad, 2);
  check(ssmlab::test::make_ssd_inputs({2, 300, 4, 32, 64, 1}, at::kBFloat16, 702), false,
        ssmlab::test::kBf16Forward, ssmlab::test::kBf16Grad, 3);
}

// The chunked tensor-core kernels (the default for float inputs with P <= 64, N <= 128) in split tf32 on odd
// shapes: L around the 64-step chunk, P and N not multiples of 16, groups.
TEST(SsdScanCuda, ChunkedKernelsFloat32OddShapes) {
  SKIP_WITHOUT_CUDA();
  int i = 0;
  for (int64_t l : {1, 63, 64, 65, 500, 2049})
    for (int64_t g : {1, 3}) {
      const int64_t n = std::vector<int64_t>{1, 17, 64, 128, 16}[i % 5];
      const int64_t p = std::vector<int64_t>{1, 5, 64, 33}[i % 4];
      SCOPED_TRACE(ssmlab::str("L ", l, " G ", g, " N ", n, " P ", p));
      const SsdInputs in = ssmlab::test::make_ssd_inputs({2, l, 3, p, n, g}, at::kFloat, 1000 + i, i % 3 != 2);
      check(in, /*chunked=*/false, ssmlab::test::kFp32Forward, ssmlab::test::kFp32Grad, 1100 + i++, "chunked",
            "chunked");
    }
}

// bfloat16 inputs multiply in bf16 on the tensor cores; float16 inputs take the split-tf32 path.
TEST(SsdScanCuda, ChunkedKernelsHalfPrecision) {
  SKIP_WITHOUT_CUDA();
  for (const auto dt : {at::kBFloat16, at::kHalf}) {
    SCOPED_TRACE(c10::toString(dt));
    const auto ft = dt == at::kHalf ? ssmlab::test::kFp16Forward : ssmlab::test::kBf16Forward;
    const auto gt = dt == at::kHalf ? ssmlab::test::kFp16Grad : ssmlab::test::kBf16Grad;
    check(ssmlab::test::make_ssd_inputs({2, 500, 4, 64, 128, 1}, dt, 1200), false, ft, gt, 5, "chunked", "chunked");
    check(ssmlab::test::make_ssd_inputs({1, 129, 2, 7, 33, 2}, dt, 1201, false), false, ft, gt, 6, "chunked",
          "chunked");
  }
}

// Both kernel families save the state before every 64-step chunk in one layout, so each one's backward takes
// the other's forward; and the time-stepped kernels stay covered in float32.
TEST(SsdScanCuda, KernelFamiliesShareSavedStates) {
  SKIP_WITHOUT_CUDA();
  const SsdInputs in = ssmlab::test::make_ssd_inputs({2, 300, 4, 24, 40, 2}, at::kFloat, 1300);
  check(in, false, ssmlab::test::kFp32Forward, ssmlab::test::kFp32Grad, 7, "chunked", "sequential");
  check(in, false, ssmlab::test::kFp32Forward, ssmlab::test::kFp32Grad, 8, "sequential", "chunked");
  check(in, false, ssmlab::test::kFp32Forward, ssmlab::test::kFp32Grad, 9, "sequential", "sequential");
}

TEST(SsdScanCuda, ChunkedAlgorithmOnCuda) {
  SKIP_WITHOUT_CUDA();
  for (int64_t l : {63, 500}) {
    SsdInputs in = ssmlab::test::make_ssd_inputs({2, l, 4, 8, 16, 4}, at::kDouble, 800 + l);
    in.opts.chunk_size = 64;
    check(in, /*chunked=*/true, ssmlab::test::kFp64Forward, ssmlab::test::kFp64Grad, 4);
  }
}

TEST(SsdScanCuda, DecodeStepMatchesScan) {
  SKIP_WITHOUT_CUDA();
  const at::Device cuda(at::kCUDA, 0);
  const SsdInputs in = ssmlab::test::make_ssd_inputs({2, 20, 4, 8, 16, 2}, at::kFloat, 900);
  const SsdScanOut r = ssmlab::ops::ssd_scan(in.x, in.dt, in.A, in.B, in.C, in.opts, "reference");
  SsdInputs d = to_device(in, cuda);
  at::Tensor S = d.opts.initial_state->clone();
  d.opts.initial_state.reset();
  std::vector<at::Tensor> ys;
  for (int64_t t = 0; t < 20; ++t)
    ys.push_back(ssmlab::ops::ssd_scan_update(d.x.select(1, t), d.dt.select(1, t), d.A, d.B.select(1, t),
                                              d.C.select(1, t), S, d.opts));
  EXPECT_TRUE(all_close(at::stack(ys, 1).cpu(), r.y, ssmlab::test::kFp32Forward, "y"));
  EXPECT_TRUE(all_close(S.cpu(), r.final_state, ssmlab::test::kFp32Forward, "state"));
}

// The decode step on 16-bit inputs: x, dt, B, C read in their own dtype by the kernel (one launch), y returned in
// it; also the mixed case (dt in fp32, the rest bf16), which converts all four to fp32 first. The truth is the
// float64 reference on the same rounded values, y rounded to the output dtype once. Odd sizes (P 24, N 40 over two
// lane groups, two groups) and the fp32 state carried over 20 steps.
TEST(SsdScanCuda, DecodeStep16BitInputsMatchReference) {
  SKIP_WITHOUT_CUDA();
  const at::Device cuda(at::kCUDA, 0);
  for (const auto dt16 : {at::kBFloat16, at::kHalf})
    for (const bool mixed : {false, true}) {
      SCOPED_TRACE(ssmlab::str(c10::toString(dt16), mixed ? ", dt in fp32" : ", dt in the same dtype"));
      SsdInputs in = ssmlab::test::make_ssd_inputs({2, 20, 4, 24, 40, 2}, at::kFloat, 910);
      // Round the sequence tensors to the 16-bit dtype; the reference sees the rounded values in float64.
      SsdInputs ref = in;
      for (at::Tensor* t : {&ref.x, &ref.dt, &ref.B, &ref.C}) *t = t->to(dt16).to(at::kDouble);
      for (auto& [name, t] : ssmlab::test::ssd_leaves(ref)) *t = t->to(at::kDouble);
      const SsdScanOut r = ssmlab::ops::ssd_scan(ref.x, ref.dt, ref.A, ref.B, ref.C, ref.opts, "reference");
      SsdInputs d = to_device(in, cuda);
      d.x = d.x.to(dt16);
      d.B = d.B.to(dt16);
      d.C = d.C.to(dt16);
      d.dt = mixed ? ref.dt.to(cuda, at::kFloat) : d.dt.to(dt16);
      at::Tensor S = d.opts.initial_state->clone();
      d.opts.initial_state.reset();
      std::vector<at::Tensor> ys;
      for (int64_t t = 0; t < 20; ++t) {
        at::Tensor y = ssmlab::ops::ssd_scan_update(d.x.select(1, t), d.dt.select(1, t), d.A, d.B.select(1, t),
                                                    d.C.select(1, t), S, d.opts);
        ASSERT_EQ(y.scalar_type(), dt16);
        ys.push_back(y);
      }
      const ssmlab::test::Tol tol = ssmlab::test::forward_tol(dt16);
      EXPECT_TRUE(all_close(at::stack(ys, 1).cpu().to(at::kDouble), r.y, tol, "y"));
      EXPECT_TRUE(all_close(S.cpu().to(at::kDouble), r.final_state, ssmlab::test::kFp32Forward, "state"));
    }
}

}  // namespace

}  // namespace ops_test_ssd_scan_cuda
