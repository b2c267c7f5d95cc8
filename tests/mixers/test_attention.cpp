// Causal attention (spec §1.7): forward against softmax attention written here with explicit loops over
// positions (causal mask, per-head scaling, fused QKV split, biases), with and without RoPE (the rotation
// written out per pair); RoPE scores depend only on relative positions; the KV cache grows by one per step.
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <cmath>

#include "ssmlab/core/error.h"
#include "ssmlab/mixers/attention.h"
#include "tolerances.h"

namespace mixers_test_attention {

namespace {

using ssmlab::mixers::AttentionImpl;
using ssmlab::mixers::AttentionOptions;

std::shared_ptr<AttentionImpl> make(int64_t heads, bool rope, int64_t d_model = 8, uint64_t seed = 1) {
  AttentionOptions o;
  o.n_heads = heads;
  o.rope = rope;
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  auto m = std::make_shared<AttentionImpl>(o, d_model, gen);
  m->to(at::kDouble);
  m->eval();
  return m;
}

// Rotates one head vector x (P) at position pos: pairs (i, i + P/2) by pos * 10000^(-2i/P).
at::Tensor rope_vec(const at::Tensor& x, int64_t pos) {
  const int64_t P = x.size(0), half = P / 2;
  at::Tensor out = x.clone();
  for (int64_t i = 0; i < half; ++i) {
    const double ang = static_cast<double>(pos) * std::pow(10000.0, -2.0 * static_cast<double>(i) / P);
    const double a = x[i].item<double>(), b = x[i + half].item<double>();
    out[i] = a * std::cos(ang) - b * std::sin(ang);
    out[i + half] = a * std::sin(ang) + b * std::cos(ang);
  }
  return out;
}

at::Tensor loops(const AttentionImpl& m, const at::Tensor& x, int64_t H, bool rope) {
  at::NoGradGuard no_grad;
  const int64_t B = x.size(0), L = x.size(1), D = x.size(2), P = D / H;
  const at::Tensor qkv = at::linear(x, m.Wqkv->weight, m.Wqkv->bias);  // (B, L, 3D): [q | k | v], heads inside
  at::Tensor y = at::zeros({B, L, D}, at::kDouble);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t t = 0; t < L; ++t) {
        at::Tensor q = qkv[b][t].narrow(0, h * P, P);
        if (rope) q = rope_vec(q, t);
        std::vector<double> s;
        for (int64_t j = 0; j <= t; ++j) {
          at::Tensor k = qkv[b][j].narrow(0, D + h * P, P);
          if (rope) k = rope_vec(k, j);
          s.push_back((q * k).sum().item<double>() / std::sqrt(static_cast<double>(P)));
        }
        const double mx = *std::max_element(s.begin(), s.end());
        double z = 0;
        for (double& v : s) z += (v = std::exp(v - mx));
        for (int64_t j = 0; j <= t; ++j) y[b][t].narrow(0, h * P, P) += s[j] / z * qkv[b][j].narrow(0, 2 * D + h * P, P);
      }
  return at::linear(y, m.out_proj->weight, m.out_proj->bias);
}

TEST(Attention, ForwardEqualsSoftmaxLoops) {
  for (bool rope : {false, true})
    for (int64_t H : {1, 2}) {
      auto m = make(H, rope);
      at::manual_seed(3);
      const at::Tensor x = at::randn({2, 9, 8}, at::kDouble);
      EXPECT_TRUE(ssmlab::test::all_close(m->forward(x), loops(*m, x, H, rope), ssmlab::test::kFp64Forward, "attention"))
          << "rope " << rope << " H " << H;
    }
}

TEST(Attention, RopeStepEqualsForwardAndCacheGrows) {
  auto m = make(2, true);
  at::manual_seed(4);
  const at::Tensor x = at::randn({2, 11, 8}, at::kDouble);
  const at::Tensor y = m->forward(x);
  auto state = m->init_state(2, at::kCPU);
  std::vector<at::Tensor> ys;
  for (int64_t t = 0; t < 11; ++t) {
    ys.push_back(m->step(x.select(1, t), state));
    EXPECT_EQ(state.at("k").size(2), t + 1);
  }
  EXPECT_TRUE(ssmlab::test::all_close(at::stack(ys, 1), y, ssmlab::test::kFp64Forward, "rope step"));
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(1);
  AttentionOptions odd;
  odd.n_heads = 8;
  odd.rope = true;  // head dim 1: RoPE needs pairs
  EXPECT_THROW(AttentionImpl(odd, 8, gen), ssmlab::Error);
  odd.n_heads = 3;
  EXPECT_THROW(AttentionImpl(odd, 8, gen), ssmlab::Error);
}

TEST(Attention, DropoutOnlyInTraining) {
  AttentionOptions o;
  o.n_heads = 2;
  o.dropout = 0.5;
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(1);
  auto m = std::make_shared<AttentionImpl>(o, 8, gen);
  const at::Tensor x = at::randn({2, 6, 8});
  m->eval();
  EXPECT_TRUE(at::equal(m->forward(x), m->forward(x)));
  m->train();
  EXPECT_FALSE(at::equal(m->forward(x), m->forward(x)));
}

}  // namespace

namespace {

// The float32 path (SDPA may pick its fused CPU kernel) against the float64 one, forward and gradients.
TEST(Attention, Float32ForwardAndGradientsMatchFloat64) {
  for (bool rope : {false, true}) {
    AttentionOptions o;
    o.n_heads = 2;
    o.rope = rope;
    at::Generator g1 = at::make_generator<at::CPUGeneratorImpl>(5), g2 = at::make_generator<at::CPUGeneratorImpl>(5);
    auto m32 = std::make_shared<AttentionImpl>(o, 16, g1);
    auto m64 = std::make_shared<AttentionImpl>(o, 16, g2);
    m64->to(at::kDouble);
    at::manual_seed(6);
    const at::Tensor x = at::randn({3, 37, 16});
    const at::Tensor x32 = x.clone().requires_grad_(true), x64 = x.to(at::kDouble).requires_grad_(true);
    const at::Tensor gy = at::randn({3, 37, 16});
    const at::Tensor y32 = m32->forward(x32), y64 = m64->forward(x64);
    (y32 * gy).sum().backward();
    (y64 * gy.to(at::kDouble)).sum().backward();
    EXPECT_TRUE(ssmlab::test::all_close(y32, y64, ssmlab::test::kFp32Forward, "y"));
    EXPECT_TRUE(ssmlab::test::all_close(x32.grad(), x64.grad(), ssmlab::test::kFp32Grad, "dx"));
    auto p32 = m32->named_parameters(), p64 = m64->named_parameters();
    for (size_t i = 0; i < p32.size(); ++i)
      EXPECT_TRUE(ssmlab::test::all_close(p32[i].value().grad(), p64[i].value().grad(), ssmlab::test::kFp32Grad,
                                          p32[i].key()))
          << "rope " << rope;
  }
}

}  // namespace

}  // namespace mixers_test_attention
