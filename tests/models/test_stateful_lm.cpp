// LanguageModel::forward_stateful and models::run_segments with the mixers that gained forward_stateful in
// issue 18 (h3 with a truncated kernel, rwkv5, hgrn2): segmented logits equal the one-shot forward in float64,
// next_token_losses is forward's cross-entropy, and the carried states continue into step().
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include <ATen/ATen.h>

#include "ssmlab/models/long_eval.h"
#include "tolerances.h"

namespace models_test_stateful_lm {

namespace {

using ssmlab::models::LanguageModel;
using ssmlab::models::ModelOptions;
using ssmlab::test::all_close;

constexpr int64_t kVocab = 17;

LanguageModel model(const std::string& mixer) {
  ModelOptions o;
  o.mixer = mixer;
  o.d_model = 16;
  o.n_layers = 2;
  o.mlp_expand = 2;
  o.mixers.h3.d_state = 4;
  o.mixers.h3.head_dim = 2;
  o.mixers.h3.l_max = 7;
  o.mixers.rwkv5.head_size = 8;
  o.mixers.hgrn2.n_heads = 2;
  o.mixers.hgrn2.expand_ratio = 3;
  LanguageModel m(o, kVocab, "auto", 3);
  m->eval();
  m->to(at::kDouble);
  return m;
}

class StatefulLm : public ::testing::TestWithParam<std::string> {};

TEST_P(StatefulLm, SegmentsEqualOneShotAndContinueIntoStep) {
  LanguageModel m = model(GetParam());
  ASSERT_TRUE(m->supports_stateful());
  at::manual_seed(8);
  const at::Tensor tokens = at::randint(0, kVocab, {2, 31}, at::kLong);
  at::NoGradGuard no_grad;
  const at::Tensor full = m->forward(tokens);  // (2, 31, V)
  for (int64_t segment : {1, 4, 9, 31}) {
    std::vector<at::Tensor> out;
    ssmlab::models::run_segments(*m, tokens, segment,
                                 [&](int64_t, const at::Tensor& logits) { out.push_back(logits.clone()); });
    EXPECT_TRUE(all_close(at::cat(out, 1), full, ssmlab::test::kFp64Forward, "segment " + std::to_string(segment)));
  }
  auto states = m->init_state(2, at::kCPU);
  m->forward_stateful(tokens.narrow(1, 0, 11), states);
  m->forward_stateful(tokens.narrow(1, 11, 9), states);
  for (int64_t t = 20; t < 31; ++t)
    EXPECT_TRUE(all_close(m->step(tokens.select(1, t), states), full.select(1, t), ssmlab::test::kFp64Forward,
                          "step at " + std::to_string(t)));
  const at::Tensor logp = at::log_softmax(full, -1);
  const at::Tensor expected = -logp.narrow(1, 0, 30).gather(-1, tokens.narrow(1, 1, 30).unsqueeze(-1)).squeeze(-1);
  EXPECT_TRUE(all_close(ssmlab::models::next_token_losses(*m, tokens, 6).to(at::kDouble), expected,
                        ssmlab::test::kFp32Forward, "next_token_losses (float32)"));
}

INSTANTIATE_TEST_SUITE_P(Mixers, StatefulLm, ::testing::Values("h3", "rwkv5", "hgrn2"));

}  // namespace

}  // namespace models_test_stateful_lm
