// The matrix-state recurrence of RWKV-5/6 and HGRN-2 against element-by-element loops written here (both modes,
// with an initial state), and per-mixer facts: HGRN-2's forget gate sits in [gamma, 1) with gamma = l / n;
// RWKV-6's decay depends on the data and RWKV-5's does not; RWKV-5/6 init formulas at the ends of the range.
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <cmath>

#include "ssmlab/core/error.h"
#include "ssmlab/mixers/hgrn2.h"
#include "ssmlab/mixers/linear_attention.h"
#include "ssmlab/mixers/rwkv5.h"
#include "ssmlab/mixers/rwkv6.h"
#include "tolerances.h"

namespace mixers_test_linear_attention {

namespace {

TEST(LinearAttention, EqualsElementLoops) {
  const int64_t B = 2, L = 9, H = 2, K = 3, V = 4;
  at::manual_seed(1);
  auto o = at::TensorOptions().dtype(at::kDouble);
  const at::Tensor q = at::randn({B, L, H, K}, o), k = at::randn({B, L, H, K}, o), v = at::randn({B, L, H, V}, o);
  const at::Tensor log_w = -at::rand({B, L, H, K}, o) * 2.0, u = at::randn({H, K}, o), s0 = at::randn({B, H, K, V}, o);
  for (int variant = 0; variant < 4; ++variant) {
    const bool bonus = variant % 2 == 0, chunked = variant < 2;
    const auto uo = bonus ? std::optional(u) : std::nullopt;
    const auto r = chunked ? ssmlab::mixers::linear_attention(q, k, v, log_w, uo, s0, /*chunk=*/4)
                           : ssmlab::mixers::linear_attention_reference(q, k, v, log_w, uo, s0);
    at::Tensor expect = at::zeros({B, L, H, V}, o), S = s0.clone();
    auto q_ = q.accessor<double, 4>(), k_ = k.accessor<double, 4>(), v_ = v.accessor<double, 4>(),
         w_ = log_w.accessor<double, 4>();
    auto u_ = u.accessor<double, 2>();
    auto e_ = expect.accessor<double, 4>();
    auto S_ = S.accessor<double, 4>();
    for (int64_t b = 0; b < B; ++b)
      for (int64_t t = 0; t < L; ++t)
        for (int64_t h = 0; h < H; ++h) {
          if (bonus)
            for (int64_t j = 0; j < V; ++j)
              for (int64_t i = 0; i < K; ++i)
                e_[b][t][h][j] += q_[b][t][h][i] * (S_[b][h][i][j] + u_[h][i] * k_[b][t][h][i] * v_[b][t][h][j]);
          for (int64_t i = 0; i < K; ++i)
            for (int64_t j = 0; j < V; ++j)
              S_[b][h][i][j] = std::exp(w_[b][t][h][i]) * S_[b][h][i][j] + k_[b][t][h][i] * v_[b][t][h][j];
          if (!bonus)
            for (int64_t j = 0; j < V; ++j)
              for (int64_t i = 0; i < K; ++i) e_[b][t][h][j] += q_[b][t][h][i] * S_[b][h][i][j];
        }
    EXPECT_TRUE(ssmlab::test::all_close(r.o, expect, ssmlab::test::kFp64Forward, bonus ? "bonus o" : "after o"));
    EXPECT_TRUE(ssmlab::test::all_close(r.final_state, S, ssmlab::test::kFp64Forward, "state"));
  }
  EXPECT_THROW(ssmlab::mixers::linear_attention(q, k, v.narrow(1, 0, 3), log_w, u, std::nullopt), ssmlab::Error);
}

// The chunked form against the time loop, forward and every gradient, in float64, on lengths around the chunk
// size, with decays down to e^-40 per step (the pairwise form must not overflow) and an initial state.
TEST(LinearAttention, ChunkedMatchesReferenceWithGradients) {
  auto o = at::TensorOptions().dtype(at::kDouble);
  for (int64_t L : {1, 5, 16, 17, 41})
    for (bool bonus : {true, false}) {
      at::manual_seed(L);
      const int64_t B = 2, H = 2, K = 3, V = 5;
      std::vector<at::Tensor> in{at::randn({B, L, H, K}, o), at::randn({B, L, H, K}, o), at::randn({B, L, H, V}, o),
                                 -at::rand({B, L, H, K}, o) * at::rand({B, L, H, K}, o).gt(0.8) * 40.0 -
                                     at::rand({B, L, H, K}, o) * 0.5,
                                 at::randn({H, K}, o), at::randn({B, H, K, V}, o)};
      auto run = [&](bool chunked) {
        std::vector<at::Tensor> leaves;
        for (const auto& t : in) leaves.push_back(t.detach().clone().requires_grad_(true));
        const auto uo = bonus ? std::optional(leaves[4]) : std::nullopt;
        const auto r = chunked
                           ? ssmlab::mixers::linear_attention(leaves[0], leaves[1], leaves[2], leaves[3], uo, leaves[5], 7)
                           : ssmlab::mixers::linear_attention_reference(leaves[0], leaves[1], leaves[2], leaves[3], uo,
                                                                        leaves[5]);
        at::manual_seed(99);
        const at::Tensor loss = (r.o * at::randn(r.o.sizes(), o)).sum() + (r.final_state * at::randn(r.final_state.sizes(), o)).sum();
        loss.backward();
        std::vector<at::Tensor> out{r.o.detach(), r.final_state.detach()};
        for (const auto& l : leaves) out.push_back(l.grad().defined() ? l.grad() : at::zeros_like(l));
        return out;
      };
      const auto a = run(true), e = run(false);
      const char* names[] = {"o", "state", "dq", "dk", "dv", "dlog_w", "du", "ds0"};
      for (size_t i = 0; i < a.size(); ++i)
        EXPECT_TRUE(ssmlab::test::all_close(a[i], e[i], i < 2 ? ssmlab::test::kFp64Forward : ssmlab::test::kFp64Grad,
                                            names[i]))
            << "L " << L << " bonus " << bonus;
    }
}

TEST(Hgrn2, ForgetGateLowerBoundFollowsTheLayer) {
  ssmlab::mixers::Hgrn2Options o;
  o.n_heads = 2;
  o.expand_ratio = 4;
  for (int64_t layer : {0, 2, 3}) {
    at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(1);
    ssmlab::mixers::Hgrn2Impl m(o, 8, layer, 4, gen);
    EXPECT_DOUBLE_EQ(m.lower_bound(), layer / 4.0);
    ssmlab::Trace trace({"decay"});  // HGRN-2's decay is its forget gate
    m.forward(at::randn({2, 11, 8}) * 5.0, &trace);
    const at::Tensor f = trace.get("decay", 0);
    EXPECT_GE(f.min().item<double>(), layer / 4.0);
    EXPECT_LT(f.max().item<double>(), 1.0);
  }
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(1);
  EXPECT_EQ(ssmlab::mixers::Hgrn2Impl(o, 8, 0, 4, gen).state_size(), 2 * 4 * 4);  // H K V
}

TEST(Rwkv6, DecayDependsOnTheDataAndInitFollowsV6) {
  ssmlab::mixers::Rwkv6Options o;
  o.head_size = 4;
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(2);
  ssmlab::mixers::Rwkv6Impl m(o, 8, 1, 4, gen);
  EXPECT_NEAR(m.time_decay[0].item<double>(), -6.0, 1e-6);
  EXPECT_NEAR(m.time_decay[7].item<double>(), -1.0, 1e-5);
  EXPECT_TRUE(at::all(m.time_maa_w1 == 0).item<bool>());
  {
    at::NoGradGuard no_grad;
    m.time_decay_w1.normal_(0.0, 1.0);  // make the LoRA live
  }
  ssmlab::Trace trace({"decay"});
  m.forward(at::randn({1, 6, 8}), &trace);
  const at::Tensor w = trace.get("decay", 0);  // (B, L, H, K)
  EXPECT_GT((w.select(1, 0) - w.select(1, 3)).abs().max().item<double>(), 1e-6);
  EXPECT_TRUE(((w > 0) & (w < 1)).all().item<bool>());
}

TEST(Rwkv5, InitFollowsV5) {
  ssmlab::mixers::Rwkv5Options o;
  o.head_size = 4;
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(2);
  ssmlab::mixers::Rwkv5Impl m(o, 8, 0, 4, gen);  // layer 0: r0 = 0, r1 = 1
  EXPECT_NEAR(m.time_decay.flatten()[0].item<double>(), -6.0, 1e-6);
  EXPECT_NEAR(m.time_decay.flatten()[7].item<double>(), -1.0, 1e-6);
  EXPECT_NEAR(m.time_mix_k[4].item<double>(), 0.5, 1e-6);  // (4 / 8)^1
  EXPECT_NEAR(m.time_faaaa.flatten()[0].item<double>(), 0.0, 1e-6);  // r0 = 0, (0 + 1) % 3 - 1 = 0
  EXPECT_NEAR(m.time_faaaa.flatten()[1].item<double>(), 0.1, 1e-6);
  EXPECT_EQ(m.state_size(), 8 + 8 * 4);
  EXPECT_THROW(ssmlab::mixers::Rwkv5Impl(o, 10, 0, 4, gen), ssmlab::Error);
}

}  // namespace

}  // namespace mixers_test_linear_attention
