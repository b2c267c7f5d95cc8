// LanguageModel with the peer mixers (issue 5): the attention Transformer of the MQAR table (learned positions,
// GELU MLP, LayerNorm) decodes step by step exactly like forward (the position is carried in states[0]);
// positions past max_position_embeddings are an error; every registered mixer builds a model whose step loop
// equals forward.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include "ssmlab/core/error.h"
#include "ssmlab/models/language_model.h"
#include "tolerances.h"

namespace models_test_language_model_mixers {

namespace {

using ssmlab::models::LanguageModel;
using ssmlab::models::ModelOptions;

at::Tensor decode(LanguageModel& m, const at::Tensor& tokens) {
  auto states = m->init_state(tokens.size(0), at::kCPU);
  for (auto& s : states)
    for (auto& [name, t] : s.tensors) t = t.to(at::kDouble);
  std::vector<at::Tensor> steps;
  for (int64_t t = 0; t < tokens.size(1); ++t) steps.push_back(m->step(tokens.select(1, t), states));
  return at::stack(steps, 1);
}

TEST(LanguageModelMixers, TransformerWithLearnedPositionsDecodes) {
  ModelOptions o;
  o.mixer = "attention";
  o.d_model = 16;
  o.n_layers = 2;
  o.norm = "layernorm";
  o.mlp = "gelu";
  o.mlp_expand = 4;
  o.max_position_embeddings = 12;
  o.mixers.attention.n_heads = 2;
  LanguageModel m(o, 30, "reference", 1);
  m->eval();
  m->to(at::kDouble);
  EXPECT_EQ(m->position_embedding->weight.sizes(), (at::IntArrayRef{12, 16}));
  const at::Tensor tokens = at::randint(0, 30, {2, 12}, at::kLong);
  const at::Tensor logits = m->forward(tokens);
  EXPECT_TRUE(ssmlab::test::all_close(decode(m, tokens), logits, ssmlab::test::kFp64Forward, "decode"));
  // Positions matter: the same token at two positions gives different logits in a one-token prefix.
  const at::Tensor same = at::full({1, 2}, 3, at::kLong);
  const at::Tensor y = m->forward(same);
  EXPECT_GT((y[0][0] - y[0][1]).abs().max().item<double>(), 1e-6);
  EXPECT_THROW(m->forward(at::randint(0, 30, {2, 13}, at::kLong)), ssmlab::Error);
}

TEST(LanguageModelMixers, EveryMixerDecodesLikeForward) {
  for (const auto& name : ssmlab::mixers::mixer_names()) {
    ModelOptions o;
    o.mixer = name;
    o.d_model = 32;  // fits every mixer's width-dependent defaults (mamba2: E = 64 = head_dim)
    o.n_layers = 2;
    o.mlp = "identity";
    o.mixers.mamba1.d_state = 3;
    o.mixers.attention.n_heads = 2;
    o.mixers.s4d.d_state = 4;
    o.mixers.h3.d_state = 4;
    o.mixers.h3.head_dim = 2;
    o.mixers.h3.l_max = 5;
    o.mixers.rwkv5.head_size = 8;
    o.mixers.rwkv6.head_size = 8;
    o.mixers.hgrn2.n_heads = 2;
    o.mixers.hgrn2.expand_ratio = 3;
    LanguageModel m(o, 20, "reference", 3);
    m->eval();
    m->to(at::kDouble);
    const at::Tensor tokens = at::randint(0, 20, {2, 11}, at::kLong);
    EXPECT_TRUE(ssmlab::test::all_close(decode(m, tokens), m->forward(tokens), ssmlab::test::kFp64Forward, name))
        << name;
  }
}

}  // namespace

}  // namespace models_test_language_model_mixers
