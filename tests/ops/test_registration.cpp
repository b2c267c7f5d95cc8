// Every ssmlab schema (ops/registration.cpp) is in the dispatcher, calling through it gives the C++
// entry's result, and every op of ssmlab::ops::op_table() has its schemas registered.
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/csrc/autograd/autograd.h>

#include <cstdlib>
#include <string>
#include <tuple>

#include "ssmlab/core/error.h"
#include "ssmlab/ops/backend.h"
#include "ssmlab/ops/causal_conv1d/causal_conv1d.h"
#include "ssmlab/ops/selective_scan/selective_scan.h"
#include "ssmlab/ops/selective_state_update/selective_state_update.h"
#include "tolerances.h"

namespace ops_test_registration {

namespace {

using OptT = std::optional<at::Tensor>;
using ScanSig = std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                                   const at::Tensor&, const at::Tensor&, const OptT&, const OptT&,
                                                   const OptT&, bool, const OptT&);
using UpdateSig = at::Tensor(const at::Tensor&, at::Tensor&, const at::Tensor&, const OptT&, bool);
using ConvSig = std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&, const OptT&, bool,
                                                   const OptT&);

bool has_schema(const std::string& name) {
  return c10::Dispatcher::singleton().findSchema({"ssmlab::" + name, ""}).has_value();
}

TEST(Registration, EverySchemaIsFound) {
  for (const char* name :
       {"selective_scan", "selective_scan_ref", "causal_conv1d", "causal_conv1d_ref", "causal_conv1d_update"})
    EXPECT_TRUE(has_schema(name)) << "ssmlab::" << name << " is not registered";
  for (const char* name : {"causal_conv1d_update_ref", "selective_state_update", "selective_state_update_ref"})
    EXPECT_TRUE(has_schema(name)) << "ssmlab::" << name << " is not registered";
}

TEST(Registration, EveryOpInTheTableHasSchemas) {
  ASSERT_FALSE(ssmlab::ops::op_table().empty());
  for (const auto& info : ssmlab::ops::op_table()) {
    EXPECT_TRUE(has_schema(info.name)) << "op_table lists " << info.name << " but ssmlab::" << info.name
                                       << " is not registered";
    if (info.has_ref) {
      EXPECT_TRUE(has_schema(info.name + "_ref")) << "ssmlab::" << info.name << "_ref is not registered";
    } else {
      // An op without a _ref twin is plain ATen everywhere: it must claim no fused kernel, and the table
      // must not hide a _ref schema that does exist.
      EXPECT_TRUE(info.fused_devices.empty()) << info.name << " has fused kernels but no _ref oracle";
      EXPECT_FALSE(has_schema(info.name + "_ref")) << "ssmlab::" << info.name << "_ref exists; set has_ref";
    }
  }
}

TEST(Registration, SelectiveScanThroughDispatcherMatchesCpp) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(31);
  const int64_t b = 2, l = 19, e = 6, n = 5, g = 2;
  auto r = [&](at::IntArrayRef s) { return at::randn(s, gen, at::kDouble); };
  const at::Tensor u = r({b, l, e}), delta = r({b, l, e}) * 0.5 - 1, A = -(r({e, n}).abs() + 0.1);
  const at::Tensor B = r({b, l, g, n}), C = r({b, l, g, n}), D = r({e}), z = r({b, l, e}), bias = r({e});
  const at::Tensor h0 = r({b, e, n});
  for (const char* name : {"selective_scan", "selective_scan_ref"}) {
    SCOPED_TRACE(name);
    auto op = c10::Dispatcher::singleton().findSchemaOrThrow(ssmlab::str("ssmlab::", name).c_str(), "")
                  .typed<ScanSig>();
    // With every optional input, then with none.
    const auto [y, hT] = op.call(u, delta, A, B, C, D, z, bias, /*delta_softplus=*/true, h0);
    const auto want = ssmlab::ops::selective_scan(u, delta, A, B, C, D, z, bias, /*delta_softplus=*/true, h0);
    EXPECT_TRUE(ssmlab::test::all_close(y, want.y, ssmlab::test::kFp64Forward, "y"));
    EXPECT_TRUE(ssmlab::test::all_close(hT, want.final_state, ssmlab::test::kFp64Forward, "final_state"));
    const at::Tensor dpos = delta.abs() * 0.1;
    const auto [y2, hT2] = op.call(u, dpos, A, B, C, std::nullopt, std::nullopt, std::nullopt, false, std::nullopt);
    const auto want2 = ssmlab::ops::selective_scan(u, dpos, A, B, C, std::nullopt, std::nullopt, std::nullopt,
                                                   /*delta_softplus=*/false, std::nullopt);
    EXPECT_TRUE(ssmlab::test::all_close(y2, want2.y, ssmlab::test::kFp64Forward, "y (no optionals)"));
    EXPECT_TRUE(ssmlab::test::all_close(hT2, want2.final_state, ssmlab::test::kFp64Forward, "final (no optionals)"));
  }
}

TEST(Registration, SelectiveScanGradientFlowsThroughDispatcher) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(32);
  const at::Tensor u = at::randn({1, 9, 3}, gen, at::kDouble).requires_grad_(true);
  const at::Tensor delta = (at::rand({1, 9, 3}, gen, at::kDouble) * 0.2 + 0.05).requires_grad_(true);
  const at::Tensor A = -(at::rand({3, 4}, gen, at::kDouble) + 0.1);
  const at::Tensor B = at::randn({1, 9, 4}, gen, at::kDouble), C = at::randn({1, 9, 4}, gen, at::kDouble);
  auto op = c10::Dispatcher::singleton().findSchemaOrThrow("ssmlab::selective_scan", "").typed<ScanSig>();
  const auto [y, hT] = op.call(u, delta, A, B, C, std::nullopt, std::nullopt, std::nullopt, false, std::nullopt);
  ASSERT_TRUE(y.requires_grad());
  y.sum().backward();
  ASSERT_TRUE(u.grad().defined());
  const at::Tensor gu = u.grad().clone(), gd = delta.grad().clone();
  u.mutable_grad().reset();
  delta.mutable_grad().reset();
  ssmlab::ops::selective_scan(u, delta, A, B, C, std::nullopt, std::nullopt, std::nullopt, false, std::nullopt)
      .y.sum()
      .backward();
  EXPECT_TRUE(ssmlab::test::all_close(gu, u.grad(), ssmlab::test::kFp64Grad, "d/du"));
  EXPECT_TRUE(ssmlab::test::all_close(gd, delta.grad(), ssmlab::test::kFp64Grad, "d/ddelta"));
}

TEST(Registration, DoubleBackwardThroughDispatcherIsRefused) {
  // ssmlab::<op>_backward is not differentiable: a create_graph=True gradient must fail naming it rather than
  // return a second-order gradient that is silently zero. First-order gradients of the same graph still work.
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(34);
  const at::Tensor u = at::randn({1, 6, 3}, gen, at::kDouble).requires_grad_(true);
  const at::Tensor delta = at::rand({1, 6, 3}, gen, at::kDouble) * 0.2 + 0.05;
  const at::Tensor A = -(at::rand({3, 4}, gen, at::kDouble) + 0.1);
  const at::Tensor B = at::randn({1, 6, 4}, gen, at::kDouble), C = at::randn({1, 6, 4}, gen, at::kDouble);
  auto op = c10::Dispatcher::singleton().findSchemaOrThrow("ssmlab::selective_scan", "").typed<ScanSig>();
  const auto [y, hT] = op.call(u, delta, A, B, C, std::nullopt, std::nullopt, std::nullopt, false, std::nullopt);
  const at::Tensor loss = y.square().sum();
  std::string what;
  try {
    torch::autograd::grad({loss}, {u}, {}, /*retain_graph=*/true, /*create_graph=*/true);
  } catch (const std::exception& e) {
    what = e.what();
  }
  ASSERT_FALSE(what.empty()) << "a double backward through ssmlab::selective_scan was not refused";
  EXPECT_NE(what.find("ssmlab::selective_scan_backward"), std::string::npos) << what;
  EXPECT_NE(what.find("double backward"), std::string::npos) << what;
  const auto g = torch::autograd::grad({loss}, {u});
  ASSERT_TRUE(g[0].defined());
  EXPECT_FALSE(g[0].requires_grad());
}

// Both Autograd paths of a dispatcher call give the C++ entry's gradients: the default keeps the entry's own graph
// from the forward (eager CPU/CUDA calls: no second forward in the backward), SSMLAB_OP_AUTOGRAD=recompute saves the
// inputs and recomputes. Each frees its graph after one backward unless retain_graph (a second backward then
// fails naming the op), and with retain_graph repeats the same gradients; an input that does not require grad
// gets none.
TEST(Registration, BothAutogradPathsGiveTheEntrysGradients) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(36);
  const at::Tensor u0 = at::randn({2, 7, 3}, gen, at::kDouble);
  const at::Tensor delta0 = at::rand({2, 7, 3}, gen, at::kDouble) * 0.2 + 0.05;
  const at::Tensor A0 = -(at::rand({3, 4}, gen, at::kDouble) + 0.1);
  const at::Tensor B = at::randn({2, 7, 4}, gen, at::kDouble), C = at::randn({2, 7, 4}, gen, at::kDouble);
  const at::Tensor z = at::randn({2, 7, 3}, gen, at::kDouble);
  const at::Tensor gy = at::randn({2, 7, 3}, gen, at::kDouble), gs = at::randn({2, 3, 4}, gen, at::kDouble);
  // The truth: the C++ entry's own autograd.
  const at::Tensor u = u0.clone().requires_grad_(true), delta = delta0.clone().requires_grad_(true);
  const at::Tensor A = A0.clone().requires_grad_(true);
  const auto r = ssmlab::ops::selective_scan(u, delta, A, B, C, std::nullopt, z, std::nullopt, true, std::nullopt);
  const auto want = torch::autograd::grad({r.y, r.final_state}, {u, delta, A}, {gy, gs});
  auto op = c10::Dispatcher::singleton().findSchemaOrThrow("ssmlab::selective_scan", "").typed<ScanSig>();
  for (const char* mode : {static_cast<const char*>(nullptr), "recompute"}) {
    SCOPED_TRACE(mode ? mode : "kept graph (default)");
    if (mode)
      setenv("SSMLAB_OP_AUTOGRAD", mode, 1);
    else
      unsetenv("SSMLAB_OP_AUTOGRAD");
    const at::Tensor u1 = u0.clone().requires_grad_(true), d1 = delta0.clone().requires_grad_(true);
    const at::Tensor A1 = A0.clone();  // no grad: must get none
    const auto [y, hT] = op.call(u1, d1, A1, B, C, std::nullopt, z, std::nullopt, true, std::nullopt);
    ASSERT_TRUE(y.requires_grad());
    for (int rep = 0; rep < 2; ++rep) {
      const auto g = torch::autograd::grad({y, hT}, {u1, d1}, {gy, gs}, /*retain_graph=*/true);
      EXPECT_TRUE(ssmlab::test::all_close(g[0], want[0], ssmlab::test::kFp64Grad, "d/du"));
      EXPECT_TRUE(ssmlab::test::all_close(g[1], want[1], ssmlab::test::kFp64Grad, "d/ddelta"));
    }
    torch::autograd::backward({y, hT}, {gy, gs});  // frees the graph
    EXPECT_FALSE(A1.grad().defined());
    EXPECT_TRUE(ssmlab::test::all_close(u1.grad(), want[0], ssmlab::test::kFp64Grad, "u.grad"));
    std::string what;
    try {
      y.sum().backward();  // a fresh sum node: the failure must come from the op's own (freed) node
    } catch (const std::exception& e) {
      what = e.what();
    }
    EXPECT_NE(what.find("ssmlab::selective_scan"), std::string::npos) << "a second backward after a freed graph: "
                                                                      << what;
  }
  unsetenv("SSMLAB_OP_AUTOGRAD");
}

TEST(Registration, CausalConv1dThroughDispatcherMatchesCpp) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(33);
  const at::Tensor x = at::randn({2, 11, 5}, gen, at::kDouble), w = at::randn({5, 4}, gen, at::kDouble);
  const at::Tensor bias = at::randn({5}, gen, at::kDouble), h0 = at::randn({2, 3, 5}, gen, at::kDouble);
  for (const char* name : {"causal_conv1d", "causal_conv1d_ref"}) {
    SCOPED_TRACE(name);
    auto op = c10::Dispatcher::singleton().findSchemaOrThrow(ssmlab::str("ssmlab::", name).c_str(), "")
                  .typed<ConvSig>();
    const auto [out, fs] = op.call(x, w, bias, /*silu=*/true, h0);
    const auto want = ssmlab::ops::causal_conv1d(x, w, bias, /*silu=*/true, h0);
    EXPECT_TRUE(ssmlab::test::all_close(out, want.out, ssmlab::test::kFp64Forward, "out"));
    EXPECT_TRUE(ssmlab::test::all_close(fs, want.final_state, ssmlab::test::kFp64Forward, "final_state"));
    const auto [out2, fs2] = op.call(x, w, std::nullopt, /*silu=*/false, std::nullopt);
    const auto want2 = ssmlab::ops::causal_conv1d(x, w, std::nullopt, /*silu=*/false, std::nullopt);
    EXPECT_TRUE(ssmlab::test::all_close(out2, want2.out, ssmlab::test::kFp64Forward, "out (no optionals)"));
    EXPECT_TRUE(ssmlab::test::all_close(fs2, want2.final_state, ssmlab::test::kFp64Forward, "final (no optionals)"));
  }
}

// The decode step through the dispatcher: same output as the C++ entry, and the state is updated in place.
TEST(Registration, CausalConv1dUpdateThroughDispatcherMatchesCppAndMutatesState) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(34);
  const at::Tensor x = at::randn({3, 5}, gen, at::kDouble), w = at::randn({5, 4}, gen, at::kDouble);
  const at::Tensor bias = at::randn({5}, gen, at::kDouble), h0 = at::randn({3, 3, 5}, gen, at::kDouble);
  auto op = c10::Dispatcher::singleton().findSchemaOrThrow("ssmlab::causal_conv1d_update", "").typed<UpdateSig>();
  at::Tensor s_op = h0.clone(), s_cpp = h0.clone();
  const void* storage = s_op.data_ptr();
  const at::Tensor out = op.call(x, s_op, w, bias, /*silu=*/true);
  const at::Tensor want = ssmlab::ops::causal_conv1d_update(x, s_cpp, w, bias, /*silu=*/true);
  EXPECT_TRUE(ssmlab::test::all_close(out, want, ssmlab::test::kFp64Forward, "out"));
  EXPECT_EQ(s_op.data_ptr(), storage);
  EXPECT_TRUE(ssmlab::test::all_close(s_op, s_cpp, ssmlab::test::kFp64Forward, "state"));
  EXPECT_TRUE(ssmlab::test::all_close(s_op, at::cat({h0.narrow(1, 1, 2), x.unsqueeze(1)}, 1),
                                      ssmlab::test::kFp64Forward, "state is shifted"));
}

// The selective-scan decode step through the dispatcher (both schemas): the C++ entry's y, and the state updated
// in place in its own storage.
TEST(Registration, SelectiveStateUpdateThroughDispatcherMutatesState) {
  using StateUpdateSig = at::Tensor(at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                    const at::Tensor&, const at::Tensor&, const OptT&, const OptT&, const OptT&, bool);
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(35);
  const int64_t b = 3, e = 6, n = 5, g = 2;
  auto r = [&](at::IntArrayRef s) { return at::randn(s, gen, at::kDouble); };
  const at::Tensor x = r({b, e}), dt = r({b, e}) * 0.5 - 1, A = -(r({e, n}).abs() + 0.1);
  const at::Tensor B = r({b, g, n}), C = r({b, g, n}), D = r({e}), z = r({b, e}), bias = r({e}), h0 = r({b, e, n});
  for (const char* name : {"selective_state_update", "selective_state_update_ref"}) {
    SCOPED_TRACE(name);
    auto op = c10::Dispatcher::singleton().findSchemaOrThrow(ssmlab::str("ssmlab::", name).c_str(), "")
                  .typed<StateUpdateSig>();
    at::Tensor s_op = h0.clone(), s_cpp = h0.clone();
    const void* storage = s_op.data_ptr();
    const at::Tensor y = op.call(s_op, x, dt, A, B, C, D, z, bias, /*dt_softplus=*/true);
    const at::Tensor want =
        ssmlab::ops::selective_state_update(s_cpp, x, dt, A, B, C, D, z, bias, /*dt_softplus=*/true, "reference");
    EXPECT_TRUE(ssmlab::test::all_close(y, want, ssmlab::test::kFp64Forward, "y"));
    EXPECT_EQ(s_op.data_ptr(), storage);
    EXPECT_TRUE(ssmlab::test::all_close(s_op, s_cpp, ssmlab::test::kFp64Forward, "state"));
    EXPECT_FALSE(at::equal(s_op, h0)) << "state not updated";
  }
}

}  // namespace

}  // namespace ops_test_registration
