// The CUDA causal_conv1d (ops/causal_conv1d/cuda.cu, kernel_conv.cuh, autograd_cuda.cpp) against the reference
// run on CPU float64 copies of the same inputs: output, final state, d/dx, d/dweight, d/dbias,
// d/dinitial_state; W in 1..4, L across the 8-row tiles (1 .. 4097), odd B and E (E = 37 takes the scalar
// path, E = 136 the vector path of every dtype), a row-strided x (a narrow of a wider tensor, as a Mamba layer
// passes it), every bias / SiLU / initial-state combination, fp64 / fp32 / bf16 / fp16; one-sided cotangents;
// the CUDA decode step (causal_conv1d_update) against the ATen one and looped against the whole-sequence
// forward; a sequence of more than 2^31 elements (64-bit offsets); backend selection. Without a usable CUDA
// device every test skips (visibly).
//
// Poison: before each CUDA run the caching allocator is handed back blocks filled with NaN, so an output or
// gradient element the kernels never write most likely reads NaN; every result is checked finite.
#include <gtest/gtest.h>

#include <cstdlib>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <torch/csrc/autograd/autograd.h>

#include <limits>
#include <string>
#include <vector>

#include "ssmlab/core/device.h"
#include "ssmlab/core/error.h"
#include "ssmlab/ops/causal_conv1d/causal_conv1d.h"
#include "cuda_test_util.h"
#include "tolerances.h"

namespace ops_test_causal_conv1d_cuda {

namespace {

using ssmlab::test::all_close;
using OptT = std::optional<at::Tensor>;

const at::Device kCuda(at::kCUDA, 0);

OptT opt(const at::Tensor& t) { return t.defined() ? OptT(t) : std::nullopt; }

using ssmlab::test::poison_allocator;

using ssmlab::test::all_finite;

struct Case {
  int64_t b, l, e, w;
  bool bias, silu, state;
  at::ScalarType dtype;
  uint64_t seed;
  bool strided = false;  // x is x_wide[..., :E] of a (B, L, 2E + 8) tensor
};

std::string describe(const Case& c) {
  return ssmlab::str("B", c.b, " L", c.l, " E", c.e, " W", c.w, " bias", c.bias, " silu", c.silu, " state", c.state,
                     " strided", c.strided, " ", c10::toString(c.dtype));
}

struct Inputs {
  at::Tensor x, w, bias, h0;  // bias, h0 undefined when absent
};

// Random inputs in c.dtype on CPU (drawn in float64 and rounded once).
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

// Leaves requiring grad on `device` in `dtype` (kUndefined: keep). With `strided`, x is a narrow view of a
// wider leaf (the gradient is read from the view's base).
struct Leaves {
  Inputs in;
  at::Tensor x_base;  // the leaf behind x (x itself unless strided)
};

Leaves make_leaves(const Inputs& in, at::Device device, at::ScalarType dtype, bool strided) {
  auto leaf = [&](const at::Tensor& t) {
    if (!t.defined()) return at::Tensor();
    at::Tensor v = t.detach().to(device);
    if (dtype != at::ScalarType::Undefined) v = v.to(dtype);
    return v.clone().requires_grad_(true);
  };
  Leaves l;
  l.in = {leaf(in.x), leaf(in.w), leaf(in.bias), leaf(in.h0)};
  l.x_base = l.in.x;
  if (strided) {
    const int64_t b = in.x.size(0), len = in.x.size(1), e = in.x.size(2);
    at::Tensor wide = at::zeros({b, len, 2 * e + 8}, l.in.x.options().requires_grad(false));
    wide.narrow(2, 0, e).copy_(l.in.x.detach());
    l.x_base = wide.requires_grad_(true);
    l.in.x = l.x_base.narrow(2, 0, e);
  }
  return l;
}

struct Result {
  ssmlab::ops::CausalConv1dOut fwd;
  std::vector<at::Tensor> grads;  // x, weight, [bias], [initial_state]
};

template <typename F>
Result run(const F& conv, const Leaves& lv, const at::Tensor& gy, const at::Tensor& gs, int which = 2) {
  Result r;
  r.fwd = conv(lv.in.x, lv.in.w, opt(lv.in.bias), opt(lv.in.h0));
  const at::Device dev = r.fwd.out.device();
  at::Tensor loss = at::zeros({}, gy.options().device(dev));
  if (which != 1) loss = loss + (r.fwd.out.to(at::kDouble) * gy.to(dev)).sum();
  if (which != 0 && gs.numel() > 0) loss = loss + (r.fwd.final_state.to(at::kDouble) * gs.to(dev)).sum();
  std::vector<at::Tensor> xs{lv.x_base, lv.in.w};
  if (lv.in.bias.defined()) xs.push_back(lv.in.bias);
  if (lv.in.h0.defined()) xs.push_back(lv.in.h0);
  r.grads = torch::autograd::grad({loss}, xs, {}, false, false, /*allow_unused=*/true);
  for (size_t i = 0; i < xs.size(); ++i)
    if (!r.grads[i].defined()) r.grads[i] = at::zeros_like(xs[i]);
  if (lv.x_base.sizes() != lv.in.x.sizes()) r.grads[0] = r.grads[0].narrow(2, 0, lv.in.x.size(2));
  return r;
}

std::vector<std::string> names_of(const Inputs& in) {
  std::vector<std::string> v{"d/dx", "d/dweight"};
  if (in.bias.defined()) v.push_back("d/dbias");
  if (in.h0.defined()) v.push_back("d/dinitial_state");
  return v;
}

auto cuda_fn(bool silu) {
  return [silu](const at::Tensor& x, const at::Tensor& w, const OptT& b, const OptT& h0) {
    poison_allocator();
    return ssmlab::ops::causal_conv1d_cuda(x, w, b, silu, h0);
  };
}
auto reference_fn(bool silu) {
  return [silu](const at::Tensor& x, const at::Tensor& w, const OptT& b, const OptT& h0) {
    return ssmlab::ops::causal_conv1d_reference(x, w, b, silu, h0);
  };
}

// CUDA (inputs in c.dtype) vs the reference on CPU float64 copies; `which`: 0 out only, 1 final state only, 2 both.
void check_case(const Case& c, int which = 2) {
  SCOPED_TRACE(describe(c) + (which == 2 ? "" : which == 0 ? " (out cotangent only)" : " (final cotangent only)"));
  const Inputs in = make_inputs(c);
  const Leaves got_lv = make_leaves(in, kCuda, at::ScalarType::Undefined, c.strided);
  const Leaves ref_lv = make_leaves(in, at::kCPU, at::kDouble, false);
  ASSERT_TRUE(ssmlab::ops::causal_conv1d_cuda_supports(got_lv.in.x, got_lv.in.w, opt(got_lv.in.bias),
                                                       opt(got_lv.in.h0)))
      << "causal_conv1d_cuda_supports is false: was this built with the CUDA kernels (SSMLAB_WITH_CUDA)?";
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(c.seed ^ 0x5eed);
  const at::Tensor gy = at::randn({c.b, c.l, c.e}, gen, at::kDouble).to(c.dtype).to(at::kDouble);
  const at::Tensor gs = at::randn({c.b, c.w - 1, c.e}, gen, at::kDouble).to(c.dtype).to(at::kDouble);
  const Result got = run(cuda_fn(c.silu), got_lv, gy, gs, which);
  const Result ref = run(reference_fn(c.silu), ref_lv, gy, gs, which);
  EXPECT_EQ(got.fwd.out.scalar_type(), c.dtype);
  EXPECT_TRUE(got.fwd.out.is_cuda());
  EXPECT_EQ(got.fwd.final_state.scalar_type(), c.dtype);
  EXPECT_EQ(got.fwd.final_state.sizes(), (at::IntArrayRef{c.b, c.w - 1, c.e}));
  EXPECT_TRUE(all_finite(got.fwd.out, "out"));
  EXPECT_TRUE(all_close(got.fwd.out, ref.fwd.out, ssmlab::test::forward_tol(c.dtype), "out"));
  // The final state is a copy of inputs: exact.
  EXPECT_TRUE(at::equal(got.fwd.final_state.cpu().to(at::kDouble), ref.fwd.final_state)) << "final_state";
  const auto names = names_of(in);
  const std::vector<at::Tensor> like{in.x, in.w, in.bias, in.h0};
  for (size_t i = 0; i < names.size(); ++i) {
    EXPECT_TRUE(got.grads[i].is_cuda()) << names[i];
    EXPECT_TRUE(all_finite(got.grads[i], names[i]));
    EXPECT_TRUE(all_close(got.grads[i], ref.grads[i], ssmlab::test::grad_tol(c.dtype), names[i]));
  }
  EXPECT_EQ(got.grads[0].scalar_type(), c.dtype) << "d/dx dtype";
}

class CausalConv1dCudaVsReference : public ::testing::TestWithParam<int64_t> {};

// Every (bias, silu, initial_state) combination over lengths across the tiles, scalar (E = 37) and vector
// (E = 136) paths, float64 / float32 / bfloat16.
TEST_P(CausalConv1dCudaVsReference, LengthsOptionsAndDtypes) {
  SKIP_WITHOUT_CUDA();
  const int64_t w = GetParam();
  uint64_t seed = 100 * w;
  for (at::ScalarType dtype : {at::kDouble, at::kFloat, at::kBFloat16})
    for (int64_t l : {1, 2, 17, 63, 500, 2049})
      for (int64_t e : {37, 136})
        for (int mask = 0; mask < 8; ++mask)
          check_case({3, l, e, w, bool(mask & 1), bool(mask & 2), bool(mask & 4), dtype, seed++});
}

// float16, B = 1, E = 1, a strided x (vector path on a row stride of 2E + 8, scalar path where it is odd),
// and a long sequence over many backward tiles and grid rows.
TEST_P(CausalConv1dCudaVsReference, HalfStridedAndShapes) {
  SKIP_WITHOUT_CUDA();
  const int64_t w = GetParam();
  const uint64_t s = 900 + 10 * uint64_t(w);
  check_case({3, 63, 37, w, true, true, true, at::kHalf, s});
  check_case({3, 300, 136, w, true, true, true, at::kHalf, s + 1});
  check_case({1, 500, 1, w, true, true, true, at::kFloat, s + 2});
  check_case({5, 130, 8, w, false, true, true, at::kDouble, s + 3});
  check_case({3, 77, 136, w, true, true, true, at::kBFloat16, s + 4, /*strided=*/true});
  check_case({3, 77, 37, w, true, false, true, at::kFloat, s + 5, /*strided=*/true});
  check_case({2, 4097, 264, w, true, true, true, at::kFloat, s + 6});
  check_case({1, 3, 9, w, true, false, true, at::kDouble, s + 7});  // L < W - 1 for W = 4 ... and L = 3
}

// 16-bit inputs through both forward row widths: 4-byte rows (the default) and 8-byte rows
// (SSMLAB_CONV_FWD_VEC16=4), E a multiple of 4 (both vector paths) and not (the scalar fallback), a strided x.
TEST_P(CausalConv1dCudaVsReference, SixteenBitForwardRowWidths) {
  SKIP_WITHOUT_CUDA();
  const int64_t w = GetParam();
  for (const char* v : {static_cast<const char*>(nullptr), "4"}) {
    if (v)
      setenv("SSMLAB_CONV_FWD_VEC16", v, 1);
    else
      unsetenv("SSMLAB_CONV_FWD_VEC16");
    SCOPED_TRACE(v ? "8-byte 16-bit rows" : "4-byte 16-bit rows");
    const uint64_t s = 1900 + 10 * uint64_t(w);
    check_case({3, 300, 136, w, true, true, true, at::kBFloat16, s});
    check_case({2, 77, 38, w, true, true, true, at::kBFloat16, s + 1});
    check_case({3, 77, 136, w, true, true, true, at::kHalf, s + 2, /*strided=*/true});
    check_case({1, 63, 37, w, true, false, true, at::kHalf, s + 3});
  }
  unsetenv("SSMLAB_CONV_FWD_VEC16");
}

// Gradients that reach only the output or only the final state (the other cotangent absent; for W = 1 there
// is no final state, so only the output side).
TEST_P(CausalConv1dCudaVsReference, OneSidedCotangents) {
  SKIP_WITHOUT_CUDA();
  const int64_t w = GetParam();
  for (int which : {0, 1}) {
    if (which == 1 && w == 1) continue;
    check_case({2, 90, 7, w, true, true, true, at::kDouble, 7000 + uint64_t(w), false}, which);
    check_case({2, 2, 16, w, true, true, true, at::kFloat, 7100 + uint64_t(w), false}, which);
  }
}

INSTANTIATE_TEST_SUITE_P(CausalConv1d, CausalConv1dCudaVsReference, ::testing::Values(1, 2, 3, 4),
                         [](const ::testing::TestParamInfo<int64_t>& i) { return ssmlab::str("W", i.param); });

// A Mamba layer in bf16 with fp32 parameters and state: weight, bias and initial state are rounded to x's dtype
// (as the reference takes them), their gradients come back in fp32. Oracle: the reference in float64 on the
// rounded values (rounding passes gradients through unchanged).
TEST(CausalConv1dCuda, MixedDtypesBf16InputFp32Parameters) {
  SKIP_WITHOUT_CUDA();
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(8100);
  const int64_t b = 3, l = 70, e = 40, w = 4;
  const at::Tensor x = at::randn({b, l, e}, gen, at::kDouble).to(at::kBFloat16);
  const at::Tensor wt = at::randn({e, w}, gen, at::kDouble).to(at::kFloat) * 0.5;
  const at::Tensor bias = at::randn({e}, gen, at::kDouble).to(at::kFloat);
  const at::Tensor h0 = at::randn({b, w - 1, e}, gen, at::kDouble).to(at::kFloat);
  const at::Tensor gy = at::randn({b, l, e}, gen, at::kDouble).to(at::kBFloat16).to(at::kDouble);
  auto leaf = [](const at::Tensor& t, at::Device d) { return t.detach().to(d).clone().requires_grad_(true); };
  const at::Tensor xg = leaf(x, kCuda), wg = leaf(wt, kCuda), bg = leaf(bias, kCuda), hg = leaf(h0, kCuda);
  poison_allocator();
  const auto got = ssmlab::ops::causal_conv1d_cuda(xg, wg, bg, /*silu=*/true, hg);
  auto r64 = [](const at::Tensor& t) { return t.detach().to(at::kBFloat16).to(at::kDouble).requires_grad_(true); };
  const at::Tensor xr = r64(x), wr = r64(wt), br = r64(bias), hr = r64(h0);
  const auto ref = ssmlab::ops::causal_conv1d_reference(xr, wr, br, /*silu=*/true, hr);
  EXPECT_EQ(got.out.scalar_type(), at::kBFloat16);
  EXPECT_TRUE(all_close(got.out, ref.out, ssmlab::test::kBf16Forward, "out"));
  EXPECT_TRUE(at::equal(got.final_state.cpu().to(at::kDouble), ref.final_state)) << "final_state";
  const auto g_got = torch::autograd::grad({(got.out.to(at::kDouble) * gy.to(kCuda)).sum()}, {xg, wg, bg, hg});
  const auto g_ref = torch::autograd::grad({(ref.out * gy).sum()}, {xr, wr, br, hr});
  const char* names[] = {"d/dx", "d/dweight", "d/dbias", "d/dinitial_state"};
  const at::ScalarType want[] = {at::kBFloat16, at::kFloat, at::kFloat, at::kFloat};
  for (int i = 0; i < 4; ++i) {
    EXPECT_EQ(g_got[i].scalar_type(), want[i]) << names[i];
    EXPECT_TRUE(all_finite(g_got[i], names[i]));
    EXPECT_TRUE(all_close(g_got[i], g_ref[i], ssmlab::test::kBf16Grad, names[i]));
  }
}

// "auto" on CUDA runs the CUDA kernel (bitwise equal to calling it); "reference" the oracle.
TEST(CausalConv1dCuda, AutoPicksCudaKernel) {
  SKIP_WITHOUT_CUDA();
  const Case c{3, 77, 40, 4, true, true, true, at::kBFloat16, 8000};
  const Inputs in = make_inputs(c);
  const at::Tensor x = in.x.to(kCuda), w = in.w.to(kCuda), b = in.bias.to(kCuda), h0 = in.h0.to(kCuda);
  const auto a = ssmlab::ops::causal_conv1d(x, w, b, true, h0, "auto");
  const auto k = ssmlab::ops::causal_conv1d_cuda(x, w, b, true, h0);
  EXPECT_TRUE(at::equal(a.out, k.out));
  EXPECT_TRUE(at::equal(a.final_state, k.final_state));
  const auto r = ssmlab::ops::causal_conv1d(x, w, b, true, h0, "reference");
  const auto rr = ssmlab::ops::causal_conv1d_reference(x, w, b, true, h0);
  EXPECT_TRUE(at::equal(r.out, rr.out));
  EXPECT_FALSE(ssmlab::ops::causal_conv1d_cuda_supports(x, at::zeros({40, 5}, w.options()), {}, {}));
  EXPECT_FALSE(ssmlab::ops::causal_conv1d_cuda_supports(x.cpu(), w.cpu(), {}, {}));
  EXPECT_THROW(ssmlab::ops::causal_conv1d_cuda(x.cpu(), w.cpu(), {}, false, {}), ssmlab::Error);
}

// A sequence of B·L·E > 2^31 elements: out rows and the final state near the end match the reference run on
// the tail alone (the conv is local: rows [t0, L) depend on x rows [t0 - W + 1, L) only).
TEST(CausalConv1dCuda, SixtyFourBitOffsets) {
  SKIP_WITHOUT_CUDA();
  const int64_t e = 8, l = (int64_t{1} << 28) + 37, w = 4, tail = 100;  // 2^31 + 296 elements of bf16
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(4242);
  const at::Tensor w_cpu = at::randn({e, w}, gen, at::kDouble).to(at::kBFloat16);
  const at::Tensor bias_cpu = at::randn({e}, gen, at::kDouble).to(at::kBFloat16);
  at::Tensor x;
  try {
    x = at::empty({1, l, e}, at::TensorOptions().dtype(at::kBFloat16).device(kCuda)).normal_();
  } catch (const c10::Error&) {
    GTEST_SKIP() << "not enough GPU memory for a 2^31-element sequence (about 9 GB)";
  }
  const auto got = ssmlab::ops::causal_conv1d_cuda(x, w_cpu.to(kCuda), bias_cpu.to(kCuda), true, std::nullopt);
  const at::Tensor x_tail = x.narrow(1, l - tail - (w - 1), tail + w - 1).cpu().to(at::kDouble);
  const at::Tensor h0 = x_tail.narrow(1, 0, w - 1), xt = x_tail.narrow(1, w - 1, tail);
  const auto ref = ssmlab::ops::causal_conv1d_reference(xt, w_cpu.to(at::kDouble), bias_cpu.to(at::kDouble), true, h0);
  EXPECT_TRUE(all_close(got.out.narrow(1, l - tail, tail), ref.out, ssmlab::test::kBf16Forward, "out tail"));
  EXPECT_TRUE(at::equal(got.final_state.cpu().to(at::kDouble), ref.final_state)) << "final_state";
}

// The CUDA decode step: the same output and state as the ATen step, in place, for state and weight in x's
// dtype or fp32; and looped over t, the rows and final state of the whole-sequence CUDA forward.
TEST(CausalConv1dCuda, UpdateMatchesReferenceAndLoopEqualsForward) {
  SKIP_WITHOUT_CUDA();
  uint64_t seed = 9000;
  for (int64_t w = 1; w <= 4; ++w)
    for (at::ScalarType dtype : {at::kDouble, at::kFloat, at::kBFloat16, at::kHalf})
      for (bool fp32_state : {false, true})
        for (int mask = 0; mask < 4; ++mask) {
          const Case c{3, 9, 37, w, bool(mask & 1), bool(mask & 2), true, dtype, seed++};
          SCOPED_TRACE(describe(c) + (fp32_state ? " fp32 state/weight" : ""));
          const Inputs in = make_inputs(c);
          const auto st = fp32_state ? ssmlab::state_dtype(dtype) : dtype;
          const at::Tensor x = in.x.to(kCuda), wt = in.w.to(kCuda).to(st);
          const at::Tensor bias = in.bias.defined() ? in.bias.to(kCuda).to(st) : at::Tensor();
          at::Tensor s_cuda = in.h0.to(kCuda).to(st), s_ref = s_cuda.clone();
          ASSERT_TRUE(ssmlab::ops::causal_conv1d_update_cuda_supports(x.select(1, 0), s_cuda, wt, opt(bias)));
          const void* storage = s_cuda.data_ptr();
          std::vector<at::Tensor> outs;
          for (int64_t t = 0; t < c.l; ++t) {
            poison_allocator();
            const at::Tensor o = ssmlab::ops::causal_conv1d_update(x.select(1, t), s_cuda, wt, opt(bias), c.silu);
            const at::Tensor r =
                ssmlab::ops::causal_conv1d_update(x.select(1, t), s_ref, wt, opt(bias), c.silu, "reference");
            EXPECT_EQ(o.scalar_type(), dtype);
            EXPECT_TRUE(all_finite(o, "update out"));
            EXPECT_TRUE(all_close(o, r, ssmlab::test::forward_tol(dtype), ssmlab::str("update out t=", t)));
            EXPECT_TRUE(at::equal(s_cuda, s_ref)) << "state after step " << t;
            outs.push_back(o);
          }
          EXPECT_EQ(s_cuda.data_ptr(), storage);
          const auto whole = ssmlab::ops::causal_conv1d_cuda(x, wt, opt(bias), c.silu, in.h0.to(kCuda).to(st));
          EXPECT_TRUE(all_close(at::stack(outs, 1), whole.out, ssmlab::test::forward_tol(dtype), "loop vs forward"));
          EXPECT_TRUE(at::equal(s_cuda.to(dtype), whole.final_state)) << "state after the loop";
        }
}

// The update kernel is taken for CUDA inputs of supported dtypes; mixed-device inputs are an error.
TEST(CausalConv1dCuda, UpdateSupportsAndErrors) {
  SKIP_WITHOUT_CUDA();
  const auto f = at::TensorOptions().device(kCuda);
  at::Tensor s = at::zeros({2, 3, 5}, f);
  EXPECT_TRUE(ssmlab::ops::causal_conv1d_update_cuda_supports(at::zeros({2, 5}, f), s, at::zeros({5, 4}, f), {}));
  EXPECT_FALSE(ssmlab::ops::causal_conv1d_update_cuda_supports(at::zeros({2, 5}, f.dtype(at::kBFloat16)),
                                                               s.to(at::kDouble), at::zeros({5, 4}, f), {}));
  EXPECT_THROW(ssmlab::ops::causal_conv1d_update(at::zeros({2, 5}, f), s, at::zeros({5, 4}), {}, false),
               ssmlab::Error);
}

}  // namespace

}  // namespace ops_test_causal_conv1d_cuda
