// The CUDA selective_state_update (ops/selective_state_update/cuda.cu, kernel_update.cuh) looped over the time
// steps of a scan's inputs, against the scalar-loop scan oracle in float64 (naive_scan_forward) and against the
// reference step on CPU float64 copies: every y row and the final state; N in every bucket and across the
// 16-byte chunks (1, 3, 16, 17, 32, 33, 64, 100, 128, 256), odd B and E, grouped B / C, every optional-input
// combination, fp64 / fp32 / bf16 / fp16; the row-strided views a Mamba layer passes (x, z from (B, 2E);
// B, C from (B, R + 2N)); a non-contiguous state; backend selection. Without a usable CUDA device every test
// skips (visibly). Before each step the caching allocator is handed back NaN-filled blocks, so an unwritten y
// element most likely reads NaN.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <limits>
#include <string>
#include <vector>

#include "ops/selective_scan_naive.h"
#include "ops/state_update_loop.h"
#include "ssmlab/core/device.h"
#include "ssmlab/core/error.h"
#include "ssmlab/ops/selective_state_update/selective_state_update.h"
#include "cuda_test_util.h"
#include "tolerances.h"

namespace ops_test_selective_state_update_cuda {

namespace {

using ssmlab::test::all_close;
using ssmlab::test::ScanFlags;
using ssmlab::test::ScanInputs;
using ssmlab::test::ScanShape;

const at::Device kCuda(at::kCUDA, 0);

using ssmlab::test::poison_allocator;

const ssmlab::test::StepFn kCudaStep = [](at::Tensor& s, const at::Tensor& x, const at::Tensor& dt,
                                          const at::Tensor& A, const at::Tensor& B, const at::Tensor& C,
                                          const std::optional<at::Tensor>& D, const std::optional<at::Tensor>& z,
                                          const std::optional<at::Tensor>& bias, bool sp) {
  poison_allocator();
  return ssmlab::ops::selective_state_update_cuda(s, x, dt, A, B, C, D, z, bias, sp);
};

std::string describe(const ScanShape& s, const ScanFlags& f, at::ScalarType dtype, bool strided) {
  return ssmlab::str("B", s.b, " L", s.l, " E", s.e, " N", s.n, " G", s.groups, " D", f.D, " z", f.z, " bias",
                     f.bias, " softplus", f.softplus, " strided", strided, " ", c10::toString(dtype));
}

// `t` on the GPU; with `strided`, as the first columns of a wider tensor (a row-strided view).
at::Tensor on_gpu(const at::Tensor& t, bool strided, int64_t extra) {
  if (!t.defined()) return t;
  at::Tensor g = t.to(kCuda);
  if (!strided) return g;
  std::vector<int64_t> wide(g.sizes().begin(), g.sizes().end());
  wide.back() += extra;
  at::Tensor w = at::zeros(wide, g.options());
  w.narrow(-1, 0, g.size(-1)).copy_(g);
  return w.narrow(-1, 0, g.size(-1));
}

// The CUDA step looped over s.l steps (inputs in `dtype`) vs the scalar scan oracle in float64, and each step
// vs the reference step on CPU float64 copies.
void check_case(const ScanShape& s, ScanFlags f, at::ScalarType dtype, uint64_t seed, bool strided = false) {
  SCOPED_TRACE(describe(s, f, dtype, strided));
  f.h0 = true;
  const ScanInputs in = ssmlab::test::make_scan_inputs(s, f, dtype, seed);
  ScanInputs g = in;
  // x, dt, z as from a (B, L, 2E) projection; B, C as from a (B, L, R + 2N) one (odd extra: unaligned rows).
  g.u = on_gpu(in.u, strided, s.e);
  g.delta = on_gpu(in.delta, strided, 3);
  g.z = on_gpu(in.z, strided, s.e);
  g.B = on_gpu(in.B, strided, 5);
  g.C = on_gpu(in.C, strided, 7);
  for (at::Tensor* t : {&g.A, &g.D, &g.delta_bias}) *t = on_gpu(*t, false, 0);
  at::Tensor state = in.h0.to(kCuda);
  ASSERT_TRUE(ssmlab::ops::selective_state_update_cuda_supports(
      state, g.u.select(1, 0), g.delta.select(1, 0), g.A, g.B.select(1, 0), g.C.select(1, 0), ssmlab::test::opt(g.D),
      g.z.defined() ? std::optional<at::Tensor>(g.z.select(1, 0)) : std::nullopt, ssmlab::test::opt(g.delta_bias)))
      << "selective_state_update_cuda_supports is false: was this built with the CUDA kernels (SSMLAB_WITH_CUDA)?";
  const void* storage = state.data_ptr();
  const at::Tensor y = ssmlab::test::loop_steps(kCudaStep, state, g);
  EXPECT_EQ(state.data_ptr(), storage) << "state must be updated in place";
  EXPECT_EQ(y.scalar_type(), dtype);
  EXPECT_TRUE(y.is_cuda());
  const at::Tensor yc = y.cpu().to(at::kDouble);
  EXPECT_EQ(yc.numel(), at::isfinite(yc).sum().item<int64_t>()) << "y not finite: unwritten (NaN poison)?";
  const auto [y_want, h_want] = ssmlab::test::naive_scan_forward(in);
  const auto state_tol = dtype == at::kDouble ? ssmlab::test::kFp64Forward : ssmlab::test::kFp32Forward;
  EXPECT_TRUE(all_close(y, y_want, ssmlab::test::forward_tol(dtype), "y vs naive scan"));
  EXPECT_TRUE(all_close(state, h_want, state_tol, "state vs naive scan"));
  // The reference step on float64 copies, looped: the same values.
  const ScanInputs r = ssmlab::test::to_f64_leaves(in, /*requires_grad=*/false);
  at::Tensor state_ref = r.h0.clone();
  const ssmlab::test::StepFn ref = [](at::Tensor& st, const at::Tensor& x, const at::Tensor& dt, const at::Tensor& A,
                                      const at::Tensor& B, const at::Tensor& C, const std::optional<at::Tensor>& D,
                                      const std::optional<at::Tensor>& z, const std::optional<at::Tensor>& bias,
                                      bool sp) {
    return ssmlab::ops::selective_state_update_reference(st, x, dt, A, B, C, D, z, bias, sp);
  };
  const at::Tensor y_ref = ssmlab::test::loop_steps(ref, state_ref, r);
  EXPECT_TRUE(all_close(y, y_ref, ssmlab::test::forward_tol(dtype), "y vs reference step"));
  EXPECT_TRUE(all_close(state, state_ref, state_tol, "state vs reference step"));
}

constexpr ScanFlags kAll{true, true, true, true, true};

TEST(SelectiveStateUpdateCuda, EveryOptionalInputCombination) {
  SKIP_WITHOUT_CUDA();
  for (int64_t groups : {0, 1, 3})
    for (int mask = 0; mask < 16; ++mask)
      check_case({3, 4, 9, 17, groups}, {bool(mask & 1), bool(mask & 2), bool(mask & 4), bool(mask & 8), true},
                 at::kFloat, 100 + mask + 16 * uint64_t(groups));
}

class SelectiveStateUpdateCudaDtype : public ::testing::TestWithParam<at::ScalarType> {};

TEST_P(SelectiveStateUpdateCudaDtype, StateSizesAndLayouts) {
  SKIP_WITHOUT_CUDA();
  const at::ScalarType dtype = GetParam();
  uint64_t seed = 1000 + 100 * static_cast<uint64_t>(dtype);
  for (int64_t n : {1, 3, 16, 17, 32, 33, 64, 100, 128, 256}) {
    check_case({3, 3, 7, n, n % 2 == 0 ? 7 : 0}, kAll, dtype, seed++);
    check_case({2, 2, 12, n, 3}, kAll, dtype, seed++, /*strided=*/true);
  }
  check_case({1, 2, 1, 16, 0}, kAll, dtype, seed++);
  check_case({5, 2, 3072, 16, 0}, kAll, dtype, seed++, /*strided=*/true);
}

INSTANTIATE_TEST_SUITE_P(Dtypes, SelectiveStateUpdateCudaDtype,
                         ::testing::Values(at::kDouble, at::kFloat, at::kBFloat16, at::kHalf),
                         [](const ::testing::TestParamInfo<at::ScalarType>& i) {
                           return std::string(c10::toString(i.param));
                         });

// A non-contiguous state (a transposed buffer) is updated in place, through the buffer.
TEST(SelectiveStateUpdateCuda, NonContiguousState) {
  SKIP_WITHOUT_CUDA();
  ScanFlags f = kAll;
  const ScanInputs in = ssmlab::test::make_scan_inputs({2, 1, 6, 16, 0}, f, at::kFloat, 77);
  ScanInputs g = in;
  for (at::Tensor* t : {&g.u, &g.delta, &g.A, &g.B, &g.C, &g.D, &g.z, &g.delta_bias}) *t = t->to(kCuda);
  at::Tensor buf = in.h0.to(kCuda).transpose(1, 2).contiguous();
  at::Tensor state = buf.transpose(1, 2);
  ASSERT_FALSE(state.is_contiguous());
  const at::Tensor y = ssmlab::test::loop_steps(kCudaStep, state, g);
  const auto [y_want, h_want] = ssmlab::test::naive_scan_forward(in);
  EXPECT_TRUE(all_close(y, y_want, ssmlab::test::kFp32Forward, "y"));
  EXPECT_TRUE(all_close(buf.transpose(1, 2), h_want, ssmlab::test::kFp32Forward, "state through the buffer"));
}

// "auto" on CUDA runs the CUDA kernel (bitwise equal to calling it); an fp64 state for fp32 x is an error.
TEST(SelectiveStateUpdateCuda, AutoPicksCudaKernelAndChecksDtype) {
  SKIP_WITHOUT_CUDA();
  const ScanInputs in = ssmlab::test::make_scan_inputs({3, 1, 7, 16, 0}, kAll, at::kBFloat16, 79);
  ScanInputs g = in;
  for (at::Tensor* t : {&g.u, &g.delta, &g.A, &g.B, &g.C, &g.D, &g.z, &g.delta_bias, &g.h0}) *t = t->to(kCuda);
  const ssmlab::test::StepFn entry = [](at::Tensor& s, const at::Tensor& x, const at::Tensor& dt, const at::Tensor& A,
                                        const at::Tensor& B, const at::Tensor& C, const std::optional<at::Tensor>& D,
                                        const std::optional<at::Tensor>& z, const std::optional<at::Tensor>& bias,
                                        bool sp) {
    return ssmlab::ops::selective_state_update(s, x, dt, A, B, C, D, z, bias, sp, "auto");
  };
  at::Tensor s1 = g.h0.clone(), s2 = g.h0.clone();
  EXPECT_TRUE(at::equal(ssmlab::test::loop_steps(entry, s1, g), ssmlab::test::loop_steps(kCudaStep, s2, g)));
  EXPECT_TRUE(at::equal(s1, s2));
  at::Tensor s64 = g.h0.to(at::kDouble);
  EXPECT_THROW(ssmlab::test::loop_steps(entry, s64, g), ssmlab::Error);
}

}  // namespace

}  // namespace ops_test_selective_state_update_cuda
