// selective_state_update (ops/selective_state_update): the reference and the fused CPU kernel, looped over the
// time steps of a scan's inputs, against the scalar-loop scan oracle (naive_scan_forward, float64) and against
// selective_scan_reference: every y row and the final state; odd B and E, N in {1, 16, 17, 64, 256}, grouped
// B / C, every optional-input combination, float64 / float32 / bfloat16 / float16; the update is in place
// (also for a non-contiguous state); backend selection; shape and dtype errors.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <string>

#include "ops/selective_scan_naive.h"
#include "ops/state_update_loop.h"
#include "ssmlab/core/device.h"
#include "ssmlab/core/error.h"
#include "ssmlab/ops/selective_scan/selective_scan.h"
#include "ssmlab/ops/selective_state_update/selective_state_update.h"
#include "test_util.h"
#include "tolerances.h"

namespace ops_test_selective_state_update {

namespace {

using ssmlab::test::all_close;
using ssmlab::test::ScanFlags;
using ssmlab::test::ScanInputs;
using ssmlab::test::ScanShape;

const ssmlab::test::StepFn kReference = [](at::Tensor& s, const at::Tensor& x, const at::Tensor& dt,
                                           const at::Tensor& A, const at::Tensor& B, const at::Tensor& C,
                                           const std::optional<at::Tensor>& D, const std::optional<at::Tensor>& z,
                                           const std::optional<at::Tensor>& bias, bool sp) {
  return ssmlab::ops::selective_state_update_reference(s, x, dt, A, B, C, D, z, bias, sp);
};
const ssmlab::test::StepFn kFusedCpu = [](at::Tensor& s, const at::Tensor& x, const at::Tensor& dt,
                                          const at::Tensor& A, const at::Tensor& B, const at::Tensor& C,
                                          const std::optional<at::Tensor>& D, const std::optional<at::Tensor>& z,
                                          const std::optional<at::Tensor>& bias, bool sp) {
  return ssmlab::ops::selective_state_update_cpu(s, x, dt, A, B, C, D, z, bias, sp);
};

std::string describe(const ScanShape& s, const ScanFlags& f, at::ScalarType dtype) {
  return ssmlab::str("B", s.b, " L", s.l, " E", s.e, " N", s.n, " G", s.groups, " D", f.D, " z", f.z, " bias",
                     f.bias, " softplus", f.softplus, " ", c10::toString(dtype));
}

// The step function looped over s.l steps (inputs in `dtype`) vs the scalar scan oracle in float64.
void check_loop(const ssmlab::test::StepFn& step, const ScanShape& s, ScanFlags f, at::ScalarType dtype,
                uint64_t seed) {
  SCOPED_TRACE(describe(s, f, dtype));
  f.h0 = true;
  const ScanInputs in = ssmlab::test::make_scan_inputs(s, f, dtype, seed);
  const auto [y_want, h_want] = ssmlab::test::naive_scan_forward(in);
  at::Tensor state = in.h0.clone();
  const void* storage = state.data_ptr();
  const at::Tensor y = ssmlab::test::loop_steps(step, state, in);
  EXPECT_EQ(y.scalar_type(), dtype);
  EXPECT_EQ(state.data_ptr(), storage) << "state must be updated in place";
  const auto state_tol = dtype == at::kDouble ? ssmlab::test::kFp64Forward : ssmlab::test::kFp32Forward;
  EXPECT_TRUE(all_close(y, y_want, ssmlab::test::forward_tol(dtype), "y"));
  EXPECT_TRUE(all_close(state, h_want, state_tol, "state"));
}

constexpr ScanFlags kAll{true, true, true, true, true};

// One step of the reference is one step of selective_scan_reference (L = 1 with the state as initial state).
TEST(SelectiveStateUpdate, ReferenceIsOneScanStep) {
  for (int64_t groups : {0, 1, 7})
    for (int mask = 0; mask < 16; ++mask) {
      const ScanFlags f{bool(mask & 1), bool(mask & 2), bool(mask & 4), bool(mask & 8), true};
      const ScanShape s{3, 1, 7, 17, groups};
      SCOPED_TRACE(describe(s, f, at::kDouble));
      const ScanInputs in = ssmlab::test::make_scan_inputs(s, f, at::kDouble, 10 + mask + 16 * uint64_t(groups));
      const auto scan = ssmlab::ops::selective_scan_reference(
          in.u, in.delta, in.A, in.B, in.C, ssmlab::test::opt(in.D), ssmlab::test::opt(in.z),
          ssmlab::test::opt(in.delta_bias), in.softplus, in.h0);
      at::Tensor state = in.h0.clone();
      const at::Tensor y = ssmlab::test::loop_steps(kReference, state, in);
      EXPECT_TRUE(all_close(y, scan.y, ssmlab::test::kFp64Forward, "y"));
      EXPECT_TRUE(all_close(state, scan.final_state, ssmlab::test::kFp64Forward, "state"));
    }
}

TEST(SelectiveStateUpdate, ReferenceLoopEqualsNaiveScan) {
  uint64_t seed = 100;
  for (int64_t n : {1, 16, 17})
    for (int mask = 0; mask < 16; ++mask)
      check_loop(kReference, {3, 9, 7, n, mask % 3 == 0 ? 0 : 7}, {bool(mask & 1), bool(mask & 2), bool(mask & 4),
                                                                   bool(mask & 8), true},
                 at::kDouble, seed++);
}

class SelectiveStateUpdateCpu : public ::testing::TestWithParam<at::ScalarType> {};

// The fused CPU kernel: every optional-input combination, state sizes over the vector body and tail, groups.
TEST_P(SelectiveStateUpdateCpu, LoopEqualsNaiveScan) {
  const at::ScalarType dtype = GetParam();
  uint64_t seed = 1000 + 100 * static_cast<uint64_t>(dtype);
  for (int mask = 0; mask < 16; ++mask)
    check_loop(kFusedCpu, {3, 5, 7, 17, mask % 3 == 0 ? 0 : (mask % 3 == 1 ? 1 : 7)},
               {bool(mask & 1), bool(mask & 2), bool(mask & 4), bool(mask & 8), true}, dtype, seed++);
  for (int64_t n : {1, 16, 64, 256}) check_loop(kFusedCpu, {5, 4, 9, n, 3}, kAll, dtype, seed++);
  check_loop(kFusedCpu, {1, 3, 1, 16, 0}, kAll, dtype, seed++);
}

INSTANTIATE_TEST_SUITE_P(Dtypes, SelectiveStateUpdateCpu,
                         ::testing::Values(at::kDouble, at::kFloat, at::kBFloat16, at::kHalf),
                         [](const ::testing::TestParamInfo<at::ScalarType>& i) {
                           return std::string(c10::toString(i.param));
                         });

// A non-contiguous state (a transposed buffer) is updated in place, with the same values.
TEST(SelectiveStateUpdate, NonContiguousStateUpdatedInPlace) {
  const ScanInputs in = ssmlab::test::make_scan_inputs({2, 1, 6, 5, 0}, kAll, at::kFloat, 77);
  for (const auto& [name, fn] : {std::pair{"reference", kReference}, std::pair{"fused cpu", kFusedCpu}}) {
    SCOPED_TRACE(name);
    at::Tensor buf = in.h0.transpose(1, 2).contiguous();  // (B, N, E)
    at::Tensor state = buf.transpose(1, 2);                // (B, E, N) view, not contiguous
    ASSERT_FALSE(state.is_contiguous());
    at::Tensor want = in.h0.clone();
    const at::Tensor y = ssmlab::test::loop_steps(fn, state, in);
    const at::Tensor y_want = ssmlab::test::loop_steps(kReference, want, in);
    EXPECT_TRUE(all_close(y, y_want, ssmlab::test::kFp32Forward, "y"));
    EXPECT_TRUE(all_close(buf.transpose(1, 2), want, ssmlab::test::kFp32Forward, "state through the buffer"));
  }
}

// "auto" on CPU runs the fused kernel (bitwise equal to calling it); "reference" the oracle.
TEST(SelectiveStateUpdate, AutoPicksFusedOnCpu) {
  const ScanInputs in = ssmlab::test::make_scan_inputs({3, 1, 7, 16, 0}, kAll, at::kFloat, 78);
  auto entry = [](const std::string& backend) {
    return [backend](at::Tensor& s, const at::Tensor& x, const at::Tensor& dt, const at::Tensor& A,
                     const at::Tensor& B, const at::Tensor& C, const std::optional<at::Tensor>& D,
                     const std::optional<at::Tensor>& z, const std::optional<at::Tensor>& bias, bool sp) {
      return ssmlab::ops::selective_state_update(s, x, dt, A, B, C, D, z, bias, sp, backend);
    };
  };
  at::Tensor s1 = in.h0.clone(), s2 = in.h0.clone(), s3 = in.h0.clone(), s4 = in.h0.clone();
  EXPECT_TRUE(at::equal(ssmlab::test::loop_steps(entry("auto"), s1, in), ssmlab::test::loop_steps(kFusedCpu, s2, in)));
  EXPECT_TRUE(at::equal(s1, s2));
  EXPECT_TRUE(
      at::equal(ssmlab::test::loop_steps(entry("reference"), s3, in), ssmlab::test::loop_steps(kReference, s4, in)));
  EXPECT_TRUE(at::equal(s3, s4));
}

TEST(SelectiveStateUpdate, ErrorsNameTheBadInput) {
  const auto f = at::TensorOptions().dtype(at::kFloat);
  at::Tensor state = at::zeros({2, 6, 4}, f);
  const at::Tensor x = at::zeros({2, 6}, f), A = at::zeros({6, 4}, f), B = at::zeros({2, 4}, f);
  using ssmlab::ops::selective_state_update;
  using ssmlab::test::expect_error;
  EXPECT_NO_THROW(selective_state_update(state, x, x, A, B, B, {}, {}, {}, true));
  at::Tensor s64 = state.to(at::kDouble);
  expect_error([&] { selective_state_update(s64, x, x, A, B, B, {}, {}, {}, true); },
               {"state must be Float", "state (2, 6, 4) Double"});
  at::Tensor s5 = at::zeros({2, 6, 5}, f);
  expect_error([&] { selective_state_update(s5, x, x, A, B, B, {}, {}, {}, true); },
               {"state must be (B, E, N) = (2, 6, 4)", "state (2, 6, 5)"});
  expect_error([&] { selective_state_update(state, x, x, A, at::zeros({2, 5}, f), B, {}, {}, {}, true); },
               {"B must be (B, N) = (2, 4)", "B (2, 5)"});
  expect_error([&] { selective_state_update(state, x, x, A, at::zeros({2, 4, 4}, f), B, {}, {}, {}, true); },
               {"(B, G, N) with E % G == 0"});
  const at::Tensor Bg = at::zeros({2, 2, 4}, f);
  expect_error([&] { selective_state_update(state, x, x, A, B, Bg, {}, {}, {}, true); }, {"same group layout"});
  expect_error([&] { selective_state_update(state, x, x, A, B, B, at::zeros({5}, f), {}, {}, true); },
               {"D must be (E)", "D (5)"});
  expect_error([&] { selective_state_update(state, x, x, A, B, B, {}, at::zeros({2, 5}, f), {}, true); },
               {"z must match x"});
  expect_error([&] { selective_state_update(state, x, at::zeros({2, 5}, f), A, B, B, {}, {}, {}, true); },
               {"dt must match x"});
  expect_error([&] { selective_state_update(state, x.unsqueeze(1), x, A, B, B, {}, {}, {}, true); },
               {"x must be (B, E)"});
  expect_error([&] { selective_state_update(state, x, x, A, B, B, {}, {}, {}, true, "fastest"); },
               {"unknown ops backend 'fastest'"});
}

}  // namespace

}  // namespace ops_test_selective_state_update
