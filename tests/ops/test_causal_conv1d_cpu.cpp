// The fused CPU causal_conv1d (ops/causal_conv1d/cpu.cpp, autograd.cpp) against the reference run on float64
// copies of the same inputs: output, final state, d/dx, d/dweight, d/dbias, d/dinitial_state; W in 1..4,
// L in {1, 63, 500, 2049}, odd B and E, every combination of bias / SiLU / initial state, float64 / float32 /
// bfloat16 (and float16) inputs; one and two threads; backend selection; and the one-step decode update
// (causal_conv1d_update) looped over t against the whole-sequence forward.
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>
#include <torch/csrc/autograd/autograd.h>

#include <string>
#include <vector>

#include "ssmlab/core/error.h"
#include "ssmlab/ops/causal_conv1d/causal_conv1d.h"
#include "tolerances.h"

namespace ops_test_causal_conv1d_cpu {

namespace {

using ssmlab::test::all_close;
using OptT = std::optional<at::Tensor>;

OptT opt(const at::Tensor& t) { return t.defined() ? OptT(t) : std::nullopt; }

struct Case {
  int64_t b, l, e, w;
  bool bias, silu, state;
  at::ScalarType dtype;
  uint64_t seed;
};

std::string describe(const Case& c) {
  return ssmlab::str("B", c.b, " L", c.l, " E", c.e, " W", c.w, " bias", c.bias, " silu", c.silu, " state", c.state,
                     " ", c.dtype);
}

struct Inputs {
  at::Tensor x, w, bias, h0;  // bias, h0 undefined when absent
};

// Random inputs in c.dtype (drawn in float64 and rounded once).
Inputs make_inputs(const Case& c) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(c.seed);
  auto r = [&](at::IntArrayRef s) { return at::randn(s, gen, at::kDouble).to(c.dtype); };
  Inputs in;
  in.x = r({c.b, c.l, c.e});
  in.w = r({c.e, c.w}) * 0.5;
  if (c.bias) in.bias = r({c.e});
  if (c.state) in.h0 = r({c.b, c.w - 1, c.e});
  return in;
}

// Fresh leaves requiring grad, in `dtype` (kUndefined: keep each tensor's dtype).
Inputs leaves(const Inputs& in, at::ScalarType dtype = at::ScalarType::Undefined) {
  auto leaf = [&](const at::Tensor& t) {
    if (!t.defined()) return at::Tensor();
    return (dtype == at::ScalarType::Undefined ? t.detach().clone() : t.detach().to(dtype)).requires_grad_(true);
  };
  return {leaf(in.x), leaf(in.w), leaf(in.bias), leaf(in.h0)};
}

std::vector<at::Tensor> defined_of(const Inputs& in) {
  std::vector<at::Tensor> v{in.x, in.w};
  if (in.bias.defined()) v.push_back(in.bias);
  if (in.h0.defined()) v.push_back(in.h0);
  return v;
}

std::vector<std::string> names_of(const Inputs& in) {
  std::vector<std::string> v{"d/dx", "d/dweight"};
  if (in.bias.defined()) v.push_back("d/dbias");
  if (in.h0.defined()) v.push_back("d/dinitial_state");
  return v;
}

struct Result {
  ssmlab::ops::CausalConv1dOut fwd;
  std::vector<at::Tensor> grads;  // over defined_of(leaves), zeros where nothing flowed
};

// Forward and the gradients of sum(out * gy) + sum(final_state * gs).
template <typename F>
Result run(const F& conv, const Inputs& lv, const at::Tensor& gy, const at::Tensor& gs) {
  Result r;
  r.fwd = conv(lv.x, lv.w, opt(lv.bias), opt(lv.h0));
  at::Tensor loss = (r.fwd.out.to(at::kDouble) * gy).sum();
  if (gs.numel() > 0) loss = loss + (r.fwd.final_state.to(at::kDouble) * gs).sum();
  const auto xs = defined_of(lv);
  r.grads = torch::autograd::grad({loss}, xs, {}, /*retain_graph=*/false, /*create_graph=*/false,
                                  /*allow_unused=*/true);
  for (size_t i = 0; i < xs.size(); ++i)
    if (!r.grads[i].defined()) r.grads[i] = at::zeros_like(xs[i]);
  return r;
}

auto fused_fn(bool silu) {
  return [silu](const at::Tensor& x, const at::Tensor& w, const OptT& b, const OptT& h0) {
    return ssmlab::ops::causal_conv1d_fused(x, w, b, silu, h0);
  };
}
auto reference_fn(bool silu) {
  return [silu](const at::Tensor& x, const at::Tensor& w, const OptT& b, const OptT& h0) {
    return ssmlab::ops::causal_conv1d_reference(x, w, b, silu, h0);
  };
}
auto entry_fn(bool silu, const std::string& backend) {
  return [silu, backend](const at::Tensor& x, const at::Tensor& w, const OptT& b, const OptT& h0) {
    return ssmlab::ops::causal_conv1d(x, w, b, silu, h0, backend);
  };
}

// Cotangents for out and final_state, rounded to c.dtype so both sides see the same values.
std::pair<at::Tensor, at::Tensor> cotangents(const Case& c) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(c.seed ^ 0x5eed);
  const at::Tensor gy = at::randn({c.b, c.l, c.e}, gen, at::kDouble).to(c.dtype).to(at::kDouble);
  const at::Tensor gs = at::randn({c.b, c.w - 1, c.e}, gen, at::kDouble).to(c.dtype).to(at::kDouble);
  return {gy, gs};
}

// Fused (inputs in c.dtype) vs reference on float64 copies; returns the fused result.
Result check_case(const Case& c) {
  SCOPED_TRACE(describe(c));
  const Inputs in = make_inputs(c);
  const Inputs got_lv = leaves(in), ref_lv = leaves(in, at::kDouble);
  const auto [gy, gs] = cotangents(c);
  Result got = run(fused_fn(c.silu), got_lv, gy, gs);
  const Result ref = run(reference_fn(c.silu), ref_lv, gy, gs);
  EXPECT_EQ(got.fwd.out.scalar_type(), c.dtype);
  EXPECT_EQ(got.fwd.final_state.scalar_type(), c.dtype);
  EXPECT_EQ(got.fwd.final_state.sizes(), (at::IntArrayRef{c.b, c.w - 1, c.e}));
  EXPECT_TRUE(all_close(got.fwd.out, ref.fwd.out, ssmlab::test::forward_tol(c.dtype), "out"));
  // The final state is a copy of inputs: exact.
  EXPECT_TRUE(at::equal(got.fwd.final_state.to(at::kDouble), ref.fwd.final_state)) << "final_state";
  const auto names = names_of(in);
  const auto xs = defined_of(got_lv);
  for (size_t i = 0; i < names.size(); ++i) {
    EXPECT_EQ(got.grads[i].scalar_type(), xs[i].scalar_type()) << names[i];
    EXPECT_TRUE(all_close(got.grads[i], ref.grads[i], ssmlab::test::grad_tol(c.dtype), names[i]));
  }
  return got;
}

class CausalConv1dCpuVsReference : public ::testing::TestWithParam<int64_t> {};

// Every (bias, silu, initial_state) combination, every length, float64 / float32 / bfloat16.
TEST_P(CausalConv1dCpuVsReference, LengthsOptionsAndDtypes) {
  const int64_t w = GetParam();
  uint64_t seed = 100 * w;
  for (at::ScalarType dtype : {at::kDouble, at::kFloat, at::kBFloat16})
    for (int64_t l : {1, 63, 500, 2049})
      for (int mask = 0; mask < 8; ++mask)
        check_case({3, l, 37, w, bool(mask & 1), bool(mask & 2), bool(mask & 4), dtype, seed++});
}

// float16 inputs, a wide E (vector body plus tail) and B = 1.
TEST_P(CausalConv1dCpuVsReference, HalfAndShapes) {
  const int64_t w = GetParam();
  check_case({3, 63, 37, w, true, true, true, at::kHalf, 900 + uint64_t(w)});
  check_case({1, 500, 257, w, true, true, true, at::kFloat, 910 + uint64_t(w)});
  check_case({5, 130, 1, w, false, true, true, at::kDouble, 920 + uint64_t(w)});
  check_case({1, 2, 9, w, true, false, true, at::kDouble, 930 + uint64_t(w)});  // L < W - 1 for W = 4
}

INSTANTIATE_TEST_SUITE_P(CausalConv1d, CausalConv1dCpuVsReference, ::testing::Values(1, 2, 3, 4),
                         [](const ::testing::TestParamInfo<int64_t>& i) { return ssmlab::str("W", i.param); });

// One and two threads: both match the reference, and (partial sums are per chunk, fixed by the shapes) the
// results are bitwise equal.
TEST(CausalConv1dCpu, OneAndTwoThreads) {
  const int saved = at::get_num_threads();
  for (const Case& c : {Case{3, 2049, 37, 4, true, true, true, at::kFloat, 6000},
                        Case{3, 2049, 37, 3, true, false, true, at::kDouble, 6001},
                        Case{1, 500, 129, 2, false, true, false, at::kFloat, 6002}}) {
    std::vector<Result> rs;
    for (int threads : {1, 2}) {
      at::set_num_threads(threads);
      SCOPED_TRACE(ssmlab::str(threads, " threads"));
      rs.push_back(check_case(c));
    }
    SCOPED_TRACE(describe(c));
    EXPECT_TRUE(at::equal(rs[0].fwd.out, rs[1].fwd.out)) << "out";
    EXPECT_TRUE(at::equal(rs[0].fwd.final_state, rs[1].fwd.final_state)) << "final_state";
    for (size_t i = 0; i < rs[0].grads.size(); ++i) EXPECT_TRUE(at::equal(rs[0].grads[i], rs[1].grads[i])) << i;
  }
  at::set_num_threads(saved);
}

// Gradients that reach only the output or only the final state (the other cotangent undefined).
TEST(CausalConv1dCpu, OneSidedCotangents) {
  const Case c{2, 90, 7, 4, true, true, true, at::kDouble, 7000};
  const Inputs in = make_inputs(c);
  for (int which : {0, 1}) {
    SCOPED_TRACE(which == 0 ? "out only" : "final_state only");
    const Inputs a = leaves(in), b = leaves(in);
    const auto oa = ssmlab::ops::causal_conv1d_fused(a.x, a.w, a.bias, true, a.h0);
    const auto ob = ssmlab::ops::causal_conv1d_reference(b.x, b.w, b.bias, true, b.h0);
    const at::Tensor la = which == 0 ? oa.out.sum() : oa.final_state.sum();
    const at::Tensor lb = which == 0 ? ob.out.sum() : ob.final_state.sum();
    const auto xa = defined_of(a), xb = defined_of(b);
    const auto ga = torch::autograd::grad({la}, xa, {}, false, false, /*allow_unused=*/true);
    const auto gb = torch::autograd::grad({lb}, xb, {}, false, false, /*allow_unused=*/true);
    const auto names = names_of(in);
    for (size_t i = 0; i < ga.size(); ++i) {
      const at::Tensor x = ga[i].defined() ? ga[i] : at::zeros_like(xa[i]);
      const at::Tensor y = gb[i].defined() ? gb[i] : at::zeros_like(xb[i]);
      EXPECT_TRUE(all_close(x, y, ssmlab::test::kFp64Grad, names[i]));
    }
  }
}

// "auto" on CPU runs the fused kernel (bitwise equal to calling it, gradients too); "reference" the oracle.
TEST(CausalConv1dCpu, AutoPicksFused) {
  for (at::ScalarType dtype : {at::kFloat, at::kDouble, at::kBFloat16}) {
    const Case c{3, 77, 37, 4, true, true, true, dtype, 8000};
    SCOPED_TRACE(describe(c));
    const Inputs in = make_inputs(c);
    const auto [gy, gs] = cotangents(c);
    const Result a = run(entry_fn(true, "auto"), leaves(in), gy, gs);
    const Result f = run(fused_fn(true), leaves(in), gy, gs);
    EXPECT_TRUE(at::equal(a.fwd.out, f.fwd.out));
    EXPECT_TRUE(at::equal(a.fwd.final_state, f.fwd.final_state));
    for (size_t i = 0; i < a.grads.size(); ++i) EXPECT_TRUE(at::equal(a.grads[i], f.grads[i])) << "grad " << i;
    const auto r = ssmlab::ops::causal_conv1d_reference(in.x, in.w, in.bias, true, in.h0);
    const auto rb = ssmlab::ops::causal_conv1d(in.x, in.w, in.bias, true, in.h0, "reference");
    EXPECT_TRUE(at::equal(rb.out, r.out));
    EXPECT_TRUE(at::equal(rb.final_state, r.final_state));
  }
  const at::Tensor x = at::zeros({1, 2, 3});
  EXPECT_TRUE(ssmlab::ops::causal_conv1d_cpu_supports(x, at::zeros({3, 4}), at::zeros({3}), at::zeros({1, 3, 3})));
  EXPECT_TRUE(ssmlab::ops::causal_conv1d_cpu_supports(x.to(at::kBFloat16), at::zeros({3, 1}), {}, {}));
  EXPECT_FALSE(ssmlab::ops::causal_conv1d_cpu_supports(x, at::zeros({3, 5}), {}, {}));
  EXPECT_FALSE(ssmlab::ops::causal_conv1d_cpu_supports(x.to(at::kInt), at::zeros({3, 4}), {}, {}));
  EXPECT_THROW(ssmlab::ops::causal_conv1d_fused(x, at::zeros({3, 5}), {}, false, {}), ssmlab::Error);
}

// causal_conv1d_update looped over t from the initial state gives the whole-sequence out rows, and the state
// after the loop is the final state; in place, in the state's storage.
TEST(CausalConv1dCpu, UpdateLoopEqualsForward) {
  uint64_t seed = 9000;
  for (int64_t w = 1; w <= 4; ++w)
    for (at::ScalarType dtype : {at::kDouble, at::kFloat, at::kBFloat16})
      for (int64_t l : {1, 2, 63})
        for (int mask = 0; mask < 8; ++mask) {
          const Case c{3, l, 37, w, bool(mask & 1), bool(mask & 2), bool(mask & 4), dtype, seed++};
          SCOPED_TRACE(describe(c));
          const Inputs in = make_inputs(c);
          const auto fused = ssmlab::ops::causal_conv1d_fused(in.x, in.w, opt(in.bias), c.silu, opt(in.h0));
          const Inputs in64 = leaves(in, at::kDouble);
          const auto ref = ssmlab::ops::causal_conv1d_reference(in64.x, in64.w, opt(in64.bias), c.silu, opt(in64.h0));
          at::Tensor state = in.h0.defined() ? in.h0.clone() : at::zeros({c.b, w - 1, c.e}, in.x.options());
          const void* storage = state.data_ptr();
          std::vector<at::Tensor> outs;
          for (int64_t t = 0; t < l; ++t)
            outs.push_back(ssmlab::ops::causal_conv1d_update(in.x.select(1, t), state, in.w, opt(in.bias), c.silu));
          const at::Tensor out = at::stack(outs, 1);
          EXPECT_EQ(out.scalar_type(), dtype);
          EXPECT_TRUE(all_close(out, ref.out, ssmlab::test::forward_tol(dtype), "update loop vs reference"));
          EXPECT_TRUE(all_close(out, fused.out, ssmlab::test::forward_tol(dtype), "update loop vs fused"));
          EXPECT_TRUE(at::equal(state, fused.final_state)) << "state after the loop";
          EXPECT_EQ(state.data_ptr(), storage);
        }
}

TEST(CausalConv1dCpu, UpdateShapeErrors) {
  at::Tensor state = at::zeros({2, 3, 5});
  const at::Tensor w = at::zeros({5, 4});
  EXPECT_THROW(ssmlab::ops::causal_conv1d_update(at::zeros({2, 1, 5}), state, w, {}, false), ssmlab::Error);
  EXPECT_THROW(ssmlab::ops::causal_conv1d_update(at::zeros({2, 5}), state, at::zeros({5, 3}), {}, false),
               ssmlab::Error);
  EXPECT_THROW(ssmlab::ops::causal_conv1d_update(at::zeros({3, 5}), state, w, {}, false), ssmlab::Error);
  EXPECT_THROW(ssmlab::ops::causal_conv1d_update(at::zeros({2, 5}), state, w, at::zeros({4}), false), ssmlab::Error);
  try {
    at::Tensor bad = at::zeros({2, 2, 5});
    ssmlab::ops::causal_conv1d_update(at::zeros({2, 5}), bad, w, {}, false);
    ADD_FAILURE() << "no error raised";
  } catch (const ssmlab::Error& err) {
    EXPECT_NE(std::string(err.what()).find("state must be (B, W-1, E) = (2, 3, 5)"), std::string::npos) << err.what();
  }
}

}  // namespace

}  // namespace ops_test_causal_conv1d_cpu
