// causal_conv1d (the Mamba short convolution, spec §1.1) against at::conv1d (groups = E, padding W-1,
// first L outputs), forward and backward; state carry; shape errors.
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <torch/csrc/autograd/autograd.h>

#include <functional>
#include <string>

#include "ssmlab/core/error.h"
#include "ssmlab/ops/causal_conv1d/causal_conv1d.h"
#include "tolerances.h"

namespace ops_test_causal_conv1d {

namespace {

using ssmlab::test::all_close;

std::optional<at::Tensor> opt(const at::Tensor& t) { return t.defined() ? std::optional<at::Tensor>(t) : std::nullopt; }

// The independent oracle: PyTorch's grouped conv1d on (B, E, L) in float64.
at::Tensor conv1d_oracle(const at::Tensor& x, const at::Tensor& w, const at::Tensor& bias, bool silu) {
  const int64_t l = x.size(1), e = x.size(2), width = w.size(1);
  at::Tensor out = at::conv1d(x.transpose(1, 2), w.unsqueeze(1), bias, /*stride=*/1, /*padding=*/width - 1,
                              /*dilation=*/1, /*groups=*/e);       // (B, E, L + W - 1)
  out = out.narrow(2, 0, l).transpose(1, 2);                        // (B, L, E)
  return silu ? out * at::sigmoid(out) : out;
}

class CausalConv1dVsConv1d : public ::testing::TestWithParam<int64_t> {};

// Output and the gradients of x, weight, bias, with and without bias and SiLU, in fp64, fp32 and
// (forward only) bf16, on odd sizes; one instance per width W.
TEST_P(CausalConv1dVsConv1d, ForwardAndBackward) {
  const int64_t width = GetParam(), b = 3, e = 5;
  for (bool with_bias : {false, true}) {
    for (bool silu : {false, true}) {
      for (at::ScalarType dtype : {at::kDouble, at::kFloat, at::kBFloat16}) {
        for (int64_t l : {1, 63, 500}) {
          SCOPED_TRACE(ssmlab::str(c10::toString(dtype), " L=", l, " bias=", with_bias, " silu=", silu));
          at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(1000 * width + 10 * l + with_bias + 2 * silu);
          const at::Tensor x = at::randn({b, l, e}, gen, at::kDouble).to(dtype).requires_grad_(true);
          const at::Tensor w = at::randn({e, width}, gen, at::kDouble).to(dtype).requires_grad_(true);
          const at::Tensor bias =
              with_bias ? at::randn({e}, gen, at::kDouble).to(dtype).requires_grad_(true) : at::Tensor();
          const at::Tensor gy = at::randn({b, l, e}, gen, at::kDouble);
          const auto got = ssmlab::ops::causal_conv1d(x, w, opt(bias), /*silu=*/silu,
                                                      /*initial_state=*/std::nullopt, /*backend=*/"reference");
          EXPECT_EQ(got.out.scalar_type(), dtype);
          EXPECT_EQ(got.final_state.sizes(), (at::IntArrayRef{b, width - 1, e}));

          auto leaf64 = [](const at::Tensor& t) {
            return t.defined() ? t.detach().to(at::kDouble).requires_grad_(true) : at::Tensor();
          };
          const at::Tensor x64 = leaf64(x), w64 = leaf64(w), b64 = leaf64(bias);
          const at::Tensor want = conv1d_oracle(x64, w64, b64, silu);
          EXPECT_TRUE(all_close(got.out, want, ssmlab::test::forward_tol(dtype), "out"));
          if (dtype == at::kBFloat16) continue;  // bf16 is checked forward only

          std::vector<at::Tensor> xs{x, w}, xs64{x64, w64};
          if (with_bias) xs.push_back(bias), xs64.push_back(b64);
          const auto g = torch::autograd::grad({(got.out.to(at::kDouble) * gy).sum()}, xs);
          const auto g64 = torch::autograd::grad({(want * gy).sum()}, xs64);
          const char* names[] = {"d/dx", "d/dweight", "d/dbias"};
          for (size_t i = 0; i < g.size(); ++i)
            EXPECT_TRUE(all_close(g[i], g64[i], ssmlab::test::grad_tol(dtype), names[i]));
        }
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(CausalConv1d, CausalConv1dVsConv1d, ::testing::Values(1, 2, 3, 4),
                         [](const ::testing::TestParamInfo<int64_t>& i) { return ssmlab::str("W", i.param); });

// State carry: [0, k) then [k, L) seeded with the first final_state equals the whole sequence (output,
// final state, gradients); final_state is the last W-1 inputs; an initial_state acts as W-1 inputs before x.
class CausalConv1dState : public ::testing::TestWithParam<int64_t> {};

TEST_P(CausalConv1dState, SplitEqualsWholeAndFinalStateIsLastInputs) {
  const int64_t width = GetParam(), b = 2, l = 41, e = 7;
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(77 + width);
  const at::Tensor x = at::randn({b, l, e}, gen, at::kDouble).requires_grad_(true);
  const at::Tensor w = at::randn({e, width}, gen, at::kDouble).requires_grad_(true);
  const at::Tensor bias = at::randn({e}, gen, at::kDouble).requires_grad_(true);
  const at::Tensor h0 = at::randn({b, width - 1, e}, gen, at::kDouble).requires_grad_(true);
  const at::Tensor gy = at::randn({b, l, e}, gen, at::kDouble);
  const auto tol = ssmlab::test::kFp64Forward;
  auto conv = [&](const at::Tensor& xs, const std::optional<at::Tensor>& state) {
    return ssmlab::ops::causal_conv1d(xs, w, bias, /*silu=*/true, state, /*backend=*/"reference");
  };

  // No initial state: final_state is exactly the last W-1 inputs.
  const auto plain = conv(x, std::nullopt);
  EXPECT_TRUE(all_close(plain.final_state, x.narrow(1, l - (width - 1), width - 1), tol, "final_state"));
  // initial_state acts as W-1 inputs before x (oracle: conv1d over the concatenation, outputs after it).
  const auto seeded = conv(x, h0);
  const at::Tensor xcat = at::cat({h0, x}, 1);
  const at::Tensor want = conv1d_oracle(xcat, w, bias, true).narrow(1, width - 1, l);
  EXPECT_TRUE(all_close(seeded.out, want, tol, "out with initial_state"));

  for (int64_t k : {int64_t{1}, int64_t{2}, int64_t{20}, l - 1}) {
    SCOPED_TRACE(ssmlab::str("k=", k));
    const auto first = conv(x.narrow(1, 0, k), h0);
    const auto second = conv(x.narrow(1, k, l - k), first.final_state);
    const at::Tensor out = at::cat({first.out, second.out}, 1);
    EXPECT_TRUE(all_close(out, seeded.out, tol, "out"));
    EXPECT_TRUE(all_close(second.final_state, seeded.final_state, tol, "final_state"));
    // Short pieces (k < W-1): the first final_state mixes initial_state and x.
    EXPECT_TRUE(all_close(first.final_state, xcat.narrow(1, k, width - 1), tol, "first final_state"));
    const auto g_split = torch::autograd::grad({(out * gy).sum() + second.final_state.sum()}, {x, w, bias, h0},
                                               {}, /*retain_graph=*/false, /*create_graph=*/false,
                                               /*allow_unused=*/true);
    const auto g_whole = torch::autograd::grad({(seeded.out * gy).sum() + seeded.final_state.sum()},
                                               {x, w, bias, h0}, {}, /*retain_graph=*/true,
                                               /*create_graph=*/false, /*allow_unused=*/true);
    const char* names[] = {"d/dx", "d/dweight", "d/dbias", "d/dinitial_state"};
    for (size_t i = 0; i < 4; ++i) {
      if (!g_whole[i].defined() && !g_split[i].defined()) continue;  // W = 1: no state, nothing flows
      EXPECT_TRUE(all_close(g_split[i], g_whole[i], ssmlab::test::kFp64Grad, names[i]));
    }
  }
}

INSTANTIATE_TEST_SUITE_P(CausalConv1d, CausalConv1dState, ::testing::Values(1, 2, 3, 4),
                         [](const ::testing::TestParamInfo<int64_t>& i) { return ssmlab::str("W", i.param); });

TEST(CausalConv1dErrors, ShapeErrorsNameTheBadInput) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(9);
  auto r = [&](at::IntArrayRef s) { return at::randn(s, gen, at::kDouble); };
  struct Case {
    const char* what;
    std::function<ssmlab::ops::CausalConv1dOut()> call;
    std::string expect;
  };
  auto conv = [](const at::Tensor& x, const at::Tensor& w, const std::optional<at::Tensor>& bias,
                 const std::optional<at::Tensor>& state) {
    return ssmlab::ops::causal_conv1d(x, w, bias, /*silu=*/false, state);
  };
  const std::vector<Case> cases = {
      {"x 2-D", [&] { return conv(r({5, 3}), r({3, 4}), std::nullopt, std::nullopt); }, "x must be (B, L, E)"},
      {"weight E", [&] { return conv(r({2, 5, 3}), r({4, 4}), std::nullopt, std::nullopt); },
       "weight must be (E, W) with E = 3"},
      {"W = 5", [&] { return conv(r({2, 5, 3}), r({3, 5}), std::nullopt, std::nullopt); }, "W in 1..4"},
      {"weight 1-D", [&] { return conv(r({2, 5, 3}), r({3}), std::nullopt, std::nullopt); }, "weight must be"},
      {"bias", [&] { return conv(r({2, 5, 3}), r({3, 4}), r({4}), std::nullopt); }, "bias must be (E)"},
      {"initial_state W", [&] { return conv(r({2, 5, 3}), r({3, 4}), std::nullopt, r({2, 2, 3})); },
       "initial_state must be (B, W-1, E) = (2, 3, 3)"},
      {"integer x", [&] { return conv(r({2, 5, 3}).to(at::kInt), r({3, 4}), std::nullopt, std::nullopt); },
       "floating point"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.what);
    try {
      c.call();
      ADD_FAILURE() << "no error raised";
    } catch (const ssmlab::Error& err) {
      EXPECT_NE(std::string(err.what()).find(c.expect), std::string::npos) << "message: " << err.what();
    }
  }
}

}  // namespace

}  // namespace ops_test_causal_conv1d
