// LanguageModel: shapes, tied head, step == forward, zoology init override (spec §1.1), Trace.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <cmath>

#include "ssmlab/core/error.h"
#include "ssmlab/models/language_model.h"
#include "tolerances.h"

namespace models_test_language_model {

namespace {

using ssmlab::models::LanguageModel;
using ssmlab::models::ModelOptions;

ModelOptions small(int64_t layers = 2) {
  ModelOptions o;
  o.d_model = 16;
  o.n_layers = layers;
  o.mixers.mamba1.d_state = 4;
  return o;
}

TEST(LanguageModel, ShapesTiedHeadAndErrors) {
  LanguageModel m(small(), 50, "reference", 1);
  const at::Tensor tokens = at::randint(0, 50, {3, 9}, at::kLong);
  EXPECT_EQ(m->forward(tokens).sizes(), (at::IntArrayRef{3, 9, 50}));
  // Tied: the head has no parameter of its own, so every parameter is the embedding, a norm or a block's.
  for (const auto& p : m->named_parameters())
    EXPECT_TRUE(p.key().starts_with("embedding") || p.key().starts_with("blocks.") ||
                p.key().starts_with("final_norm"))
        << p.key();
  EXPECT_THROW(m->forward(at::randn({3, 9})), ssmlab::Error);
  EXPECT_EQ(m->state_size(), 2 * 32 * (4 + 3));
}

// model.head_dropout (seed 003's Dropout(0.3) before the head): no parameters, the same init, nothing in eval
// mode; in training mode about p of the head's input features are zeroed (the rest scaled by 1 / (1 - p)).
TEST(LanguageModel, HeadDropoutOnlyWhileTraining) {
  ModelOptions o = small();
  LanguageModel plain(o, 30, "reference", 3);
  o.head_dropout = 0.5;
  LanguageModel dropped(o, 30, "reference", 3);
  const at::Tensor tokens = at::randint(0, 30, {4, 11}, at::kLong);
  plain->eval();
  dropped->eval();
  EXPECT_TRUE(at::equal(plain->forward(tokens), dropped->forward(tokens)));
  dropped->train();
  plain->train();
  const at::Tensor h = dropped->embed(tokens);
  const at::Tensor f = dropped->features(h), f0 = plain->features(plain->embed(tokens));
  const double zero = (f == 0).to(at::kDouble).mean().item<double>();
  EXPECT_GT(zero, 0.35);
  EXPECT_LT(zero, 0.65);
  const at::Tensor kept = f != 0;
  EXPECT_TRUE(at::allclose(f.masked_select(kept), 2.0 * f0.masked_select(kept), 1e-5, 1e-6));
  EXPECT_FALSE(at::equal(plain->forward(tokens), dropped->forward(tokens)));
  // The state-carrying path reads the same features.
  auto states = dropped->init_state(4, at::kCPU);
  dropped->eval();
  EXPECT_TRUE(at::allclose(dropped->forward_stateful(tokens, states), plain->forward(tokens), 1e-5, 1e-6));
}

TEST(LanguageModel, StepEqualsForward) {
  for (const std::string mlp : {"none", "gated"}) {
    ModelOptions o = small(3);
    if (mlp == "gated") o.mlp_expand = 2;
    LanguageModel m(o, 40, "reference", 2);
    m->to(at::kDouble);
    const at::Tensor tokens = at::randint(0, 40, {2, 17}, at::kLong);
    const at::Tensor logits = m->forward(tokens);
    auto states = m->init_state(2, at::kCPU);
    for (auto& s : states)
      for (auto& [name, t] : s.tensors) t = t.to(at::kDouble);
    std::vector<at::Tensor> steps;
    for (int64_t t = 0; t < 17; ++t) steps.push_back(m->step(tokens.select(1, t), states));
    EXPECT_TRUE(ssmlab::test::all_close(at::stack(steps, 1).to(at::kDouble), logits.to(at::kDouble),
                                        ssmlab::test::kFp64Forward, "step logits"))
        << mlp;
  }
}

TEST(LanguageModel, ZoologyInitOverride) {
  ModelOptions o = small(4);
  o.d_model = 128;
  o.init = "zoology";
  LanguageModel m(o, 300, "reference", 3);
  for (const auto& p : m->named_parameters()) {
    const std::string& k = p.key();
    const at::Tensor v = p.value().detach();
    if (k.ends_with("dt_proj.bias")) {
      EXPECT_TRUE(at::all(v == 0).item<bool>()) << k << ": zoology zeroes every Linear bias, dt_proj's too";
    } else if (k.ends_with("out_proj.weight")) {
      EXPECT_NEAR(v.std().item<double>(), 0.02 / std::sqrt(8.0), 0.1 * 0.02 / std::sqrt(8.0)) << k;
    } else if (k.ends_with("proj.weight") || k == "embedding.weight") {
      EXPECT_NEAR(v.std().item<double>(), 0.02, 0.1 * 0.02) << k;
      EXPECT_NEAR(v.mean().item<double>(), 0.0, 0.02) << k;
    }
  }
  o.init = "mamba";
  LanguageModel mm(o, 300, "reference", 3);
  for (const auto& p : mm->named_parameters())
    if (p.key().ends_with("dt_proj.bias")) {
      const at::Tensor dt = at::softplus(p.value().detach());
      EXPECT_GE(dt.min().item<double>(), 1e-3 * 0.999) << "mamba init keeps the log-uniform dt";
      EXPECT_LE(dt.max().item<double>(), 0.1 * 1.001);
    }
}

TEST(LanguageModel, TraceRecordsPerLayer) {
  LanguageModel m(small(2), 20, "reference", 4);
  ssmlab::Trace trace({"block_out", "dt"});
  m->forward(at::randint(0, 20, {1, 5}, at::kLong), &trace);
  EXPECT_TRUE(trace.has("block_out", 0) && trace.has("block_out", 1));
  EXPECT_EQ(trace.get("dt", 1).sizes(), (at::IntArrayRef{1, 5, 32}));
  EXPECT_FALSE(trace.has("mixer_out", 0));
  EXPECT_GT(trace.get("dt", 0).min().item<double>(), 0.0);  // softplus
}

}  // namespace

}  // namespace models_test_language_model
