// RWKV-4 WKV (ops/wkv): the reference against the unstabilised closed form in float64; the fused CPU kernel
// against the reference, forward and every gradient (w, u, k, v, initial state, through y and the final
// state), on odd sizes (L = 1, 63, 500, 2049; C across the 64-channel block), float64 and float32, with the
// output buffers poisoned with NaN first; large keys where the unstabilised float32 form overflows; state
// carry across chunks; the dispatcher; input errors.
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/csrc/autograd/autograd.h>

#include <limits>

#include "ssmlab/core/error.h"
#include "ssmlab/ops/wkv/wkv.h"
#include "test_util.h"
#include "tolerances.h"

namespace ops_test_wkv {

namespace {

using ssmlab::test::all_close;

struct In {
  at::Tensor w, u, k, v, h0;  // h0 may be undefined
};

// Paper-like ranges: w = -exp(time_decay) with time_decay in [-5, 3]; u around log 0.3; k, v ~ N(0, 1).
In make(int64_t b, int64_t l, int64_t c, at::ScalarType dtype, bool with_state, uint64_t seed) {
  at::manual_seed(seed);
  auto o = at::TensorOptions().dtype(dtype);
  In in;
  in.w = -at::exp(at::rand({c}, o) * 8.0 - 5.0);
  in.u = at::randn({c}, o) * 0.5 + std::log(0.3);
  in.k = at::randn({b, l, c}, o);
  in.v = at::randn({b, l, c}, o);
  if (with_state) {
    in.h0 = at::stack({at::randn({b, c}, o), at::rand({b, c}, o) + 0.5, at::randn({b, c}, o)}, 1);  // bb > 0
  }
  return in;
}

std::optional<at::Tensor> opt(const at::Tensor& t) { return t.defined() ? std::optional(t) : std::nullopt; }

// The closed form of spec §1.6 with an initial (a0, b0) = (aa0 e^pp0, bb0 e^pp0), in float64.
std::pair<at::Tensor, at::Tensor> closed_form(const In& in) {
  const at::Tensor w = in.w.to(at::kDouble), u = in.u.to(at::kDouble), k = in.k.to(at::kDouble),
                   v = in.v.to(at::kDouble);
  const int64_t B = k.size(0), L = k.size(1), C = k.size(2);
  at::Tensor a0 = at::zeros({B, C}, at::kDouble), b0 = at::zeros({B, C}, at::kDouble);
  if (in.h0.defined()) {
    const at::Tensor h = in.h0.to(at::kDouble);
    a0 = h.select(1, 0) * at::exp(h.select(1, 2));
    b0 = h.select(1, 1) * at::exp(h.select(1, 2));
  }
  std::vector<at::Tensor> ys;
  at::Tensor a, b;
  for (int64_t t = 0; t <= L; ++t) {
    a = at::exp(w * static_cast<double>(t)) * a0;  // the initial sums decay t times
    b = at::exp(w * static_cast<double>(t)) * b0;
    for (int64_t i = 0; i < t; ++i) {
      const at::Tensor e = at::exp(w * static_cast<double>(t - 1 - i) + k.select(1, i));
      a = a + e * v.select(1, i);
      b = b + e;
    }
    if (t == L) break;
    const at::Tensor bonus = at::exp(u + k.select(1, t));
    ys.push_back((a + bonus * v.select(1, t)) / (b + bonus));
  }
  return {at::stack(ys, 1), at::stack({a, b}, 1)};
}

// The final state as the sums it stands for: (aa e^pp, bb e^pp)  (B, 2, C).
at::Tensor unscaled(const at::Tensor& s) {
  return at::stack({s.select(1, 0) * at::exp(s.select(1, 2)), s.select(1, 1) * at::exp(s.select(1, 2))}, 1);
}

TEST(Wkv, ReferenceEqualsUnstabilisedFormula) {
  for (int64_t L : {1, 2, 7, 33})
    for (bool with_state : {false, true}) {
      const In in = make(2, L, 5, at::kDouble, with_state, 10 + L);
      const auto r = ssmlab::ops::wkv_reference(in.w, in.u, in.k, in.v, opt(in.h0));
      const auto [y, ab] = closed_form(in);
      EXPECT_TRUE(all_close(r.y, y, ssmlab::test::kFp64Forward, "y")) << "L " << L << " state " << with_state;
      EXPECT_TRUE(all_close(unscaled(r.final_state), ab, ssmlab::test::kFp64Forward, "final a, b")) << "L " << L;
    }
}

// Hands freed, NaN-filled blocks of each output size back to the allocator so an unwritten element of a
// kernel's output most likely reads NaN (glibc reuses freed chunks of these sizes).
void poison(std::initializer_list<int64_t> sizes, at::ScalarType dtype) {
  std::vector<at::Tensor> blocks;
  for (int64_t n : sizes)
    for (int rep = 0; rep < 2; ++rep)
      blocks.push_back(at::full({n}, std::numeric_limits<double>::quiet_NaN(), at::TensorOptions().dtype(dtype)));
}

struct Result {
  at::Tensor y, fin, dw, du, dk, dv, dh0;
};

Result run(const In& in_, bool fused, uint64_t seed) {
  In in = in_;
  for (at::Tensor* t : {&in.w, &in.u, &in.k, &in.v, &in.h0})
    if (t->defined()) *t = t->detach().clone().requires_grad_(true);
  const int64_t B = in.k.size(0), L = in.k.size(1), C = in.k.size(2);
  if (fused) poison({B * L * C, B * L * 3 * C, B * 3 * C}, in.k.scalar_type());
  const auto r = fused ? ssmlab::ops::wkv_fused(in.w, in.u, in.k, in.v, opt(in.h0))
                       : ssmlab::ops::wkv_reference(in.w, in.u, in.k, in.v, opt(in.h0));
  at::manual_seed(seed);
  // Cotangents drawn in float64 (the same values whatever the dtype under test).
  const at::Tensor gy = at::randn(r.y.sizes(), at::kDouble).to(r.y.scalar_type());
  const at::Tensor gs = at::randn({B, 2, C}, at::kDouble).to(r.final_state.scalar_type());
  // A loss on the final state through the sums it stands for (the gauge pp carries no meaning of its own).
  const at::Tensor loss = (r.y * gy).sum() + (unscaled(r.final_state) * gs).sum();
  std::vector<at::Tensor> leaves{in.w, in.u, in.k, in.v};
  if (in.h0.defined()) leaves.push_back(in.h0);
  const auto g = torch::autograd::grad({loss}, leaves);
  return {r.y.detach(), r.final_state.detach(), g[0], g[1], g[2], g[3], in.h0.defined() ? g[4] : at::Tensor()};
}

void compare(const Result& a, const Result& e, at::ScalarType dtype, const std::string& what) {
  const auto ft = ssmlab::test::forward_tol(dtype), gt = ssmlab::test::grad_tol(dtype);
  EXPECT_TRUE(all_close(a.y, e.y, ft, what + " y"));
  EXPECT_TRUE(all_close(unscaled(a.fin), unscaled(e.fin), ft, what + " final state"));
  EXPECT_TRUE(all_close(a.dw, e.dw, gt, what + " dw"));
  EXPECT_TRUE(all_close(a.du, e.du, gt, what + " du"));
  EXPECT_TRUE(all_close(a.dk, e.dk, gt, what + " dk"));
  EXPECT_TRUE(all_close(a.dv, e.dv, gt, what + " dv"));
  if (e.dh0.defined()) {
    EXPECT_TRUE(all_close(a.dh0, e.dh0, gt, what + " dh0"));
  }
}

TEST(Wkv, FusedCpuMatchesReferenceFloat64) {
  struct Shape {
    int64_t b, l, c;
  };
  for (const Shape s : {Shape{1, 1, 1}, Shape{2, 63, 5}, Shape{3, 500, 67}, Shape{1, 2049, 3}})
    for (bool with_state : {false, true}) {
      const In in = make(s.b, s.l, s.c, at::kDouble, with_state, 20 + s.l);
      const std::string what = "B" + std::to_string(s.b) + " L" + std::to_string(s.l) + " C" +
                               std::to_string(s.c) + (with_state ? " h0" : "");
      compare(run(in, /*fused=*/true, 1), run(in, /*fused=*/false, 1), at::kDouble, what);
    }
}

TEST(Wkv, FusedCpuFloat32MatchesFloat64Reference) {
  for (int64_t L : {1, 63, 500}) {
    const In in32 = make(2, L, 67, at::kFloat, /*with_state=*/true, 30 + L);
    In in64 = in32;
    for (at::Tensor* t : {&in64.w, &in64.u, &in64.k, &in64.v, &in64.h0}) *t = t->to(at::kDouble);
    compare(run(in32, true, 2), run(in64, false, 2), at::kFloat, "fp32 L" + std::to_string(L));
  }
}

TEST(Wkv, LargeKeysStayFiniteWhereTheUnstabilisedFormOverflows) {
  In in = make(2, 40, 9, at::kFloat, false, 5);
  in.k = in.k * 20.0 + 80.0;  // e^k up to ~e^160: overflows float32 (max ~e^88.7)
  EXPECT_FALSE(at::isfinite(at::exp(in.k)).all().item<bool>());
  In in64 = in;
  for (at::Tensor* t : {&in64.w, &in64.u, &in64.k, &in64.v}) *t = t->to(at::kDouble);
  const auto [y64, ab] = closed_form(in64);
  for (bool fused : {true, false}) {
    const auto r = fused ? ssmlab::ops::wkv_fused(in.w, in.u, in.k, in.v, std::nullopt)
                         : ssmlab::ops::wkv_reference(in.w, in.u, in.k, in.v, std::nullopt);
    EXPECT_TRUE(all_close(r.y, y64, ssmlab::test::kFp32Forward, fused ? "fused y" : "reference y"));
  }
}

TEST(Wkv, StateCarryAcrossChunksEqualsOneCall) {
  const In in = make(2, 37, 70, at::kDouble, false, 6);
  for (const std::string backend : {"auto", "reference"}) {
    const auto whole = ssmlab::ops::wkv(in.w, in.u, in.k, in.v, std::nullopt, backend);
    const auto first = ssmlab::ops::wkv(in.w, in.u, in.k.narrow(1, 0, 20), in.v.narrow(1, 0, 20), std::nullopt, backend);
    const auto second = ssmlab::ops::wkv(in.w, in.u, in.k.narrow(1, 20, 17), in.v.narrow(1, 20, 17),
                                         first.final_state, backend);
    EXPECT_TRUE(all_close(at::cat({first.y, second.y}, 1), whole.y, ssmlab::test::kFp64Forward, backend + " y"));
    EXPECT_TRUE(all_close(second.final_state, whole.final_state, ssmlab::test::kFp64Forward, backend + " state"));
  }
}

TEST(Wkv, DispatcherCallsTheEntry) {
  const In in = make(2, 9, 4, at::kFloat, true, 7);
  using Sig = std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                                 const at::Tensor&, const std::optional<at::Tensor>&);
  for (const std::string name : {"wkv", "wkv_ref"}) {
    auto op = c10::Dispatcher::singleton().findSchemaOrThrow(("ssmlab::" + name).c_str(), "").typed<Sig>();
    const auto [y, s] = op.call(in.w, in.u, in.k, in.v, in.h0);
    const auto r = ssmlab::ops::wkv(in.w, in.u, in.k, in.v, in.h0, name == "wkv" ? "auto" : "reference");
    EXPECT_TRUE(at::equal(y, r.y)) << name;
    EXPECT_TRUE(at::equal(s, r.final_state)) << name;
  }
}

TEST(Wkv, InputErrorsNameTheProblem) {
  const In in = make(2, 5, 4, at::kFloat, false, 8);
  using ssmlab::test::expect_error;
  expect_error([&] { ssmlab::ops::wkv(in.w, in.u, in.k, in.v.narrow(1, 0, 4), std::nullopt); }, {"v must match k"});
  expect_error([&] { ssmlab::ops::wkv(in.w.narrow(0, 0, 3), in.u, in.k, in.v, std::nullopt); },
               {"w must be (C)", "(3)"});
  expect_error([&] { ssmlab::ops::wkv(in.w, in.u, in.k, in.v, at::zeros({2, 2, 4})); }, {"initial_state"});
  expect_error([&] { ssmlab::ops::wkv(in.w, in.u, in.k.select(0, 0), in.v, std::nullopt); }, {"(B, L, C)"});
  expect_error([&] { ssmlab::ops::wkv(in.w, in.u, in.k, in.v, std::nullopt, "fast"); }, {"fast"});
}

}  // namespace

}  // namespace ops_test_wkv
