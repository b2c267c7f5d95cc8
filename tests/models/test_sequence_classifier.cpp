// SequenceClassifier (spec §2.4): row-major pixel flattening, the class token appended at the end and read by
// the head, zoology init of the pixel embedding and head, errors; shipped attack configs build it per mixer.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include "ssmlab/core/error.h"
#include "ssmlab/models/sequence_classifier.h"
#include "tolerances.h"

namespace models_test_sequence_classifier {

namespace {

using ssmlab::models::ModelOptions;
using ssmlab::models::SequenceClassifier;

TEST(PixelSequence, RowMajorRaster) {
  const at::Tensor img = at::arange(2 * 3 * 4 * 5, at::kFloat).view({2, 3, 4, 5});
  const at::Tensor seq = ssmlab::models::pixel_sequence(img);
  ASSERT_EQ(seq.sizes(), (at::IntArrayRef{2, 20, 3}));
  for (int64_t row : {0, 2, 3})
    for (int64_t col : {0, 4})
      for (int64_t c = 0; c < 3; ++c)
        EXPECT_EQ(seq[1][5 * row + col][c].item<float>(), img[1][c][row][col].item<float>());
  EXPECT_THROW(ssmlab::models::pixel_sequence(at::zeros({3, 4, 5})), ssmlab::Error);
}

ModelOptions small(const std::string& mixer) {
  ModelOptions o;
  o.mixer = mixer;
  o.d_model = 8;
  o.n_layers = 2;
  o.mixers.mamba1.d_state = 4;
  o.mixers.attention.n_heads = 2;
  return o;
}

TEST(SequenceClassifier, ShapesClassTokenAndInit) {
  ModelOptions o = small("mamba1");
  SequenceClassifier m(o, 3, 10, "reference", 1);
  m->eval();
  at::manual_seed(1);
  const at::Tensor x = at::rand({4, 17, 3});
  const at::Tensor y = m->forward(x);
  EXPECT_EQ(y.sizes(), (at::IntArrayRef{4, 10}));
  EXPECT_FALSE(m->classifier->bias.defined());
  EXPECT_TRUE(at::all(m->embedding->bias == 0).item<bool>());        // zoology: Linear biases 0
  EXPECT_NEAR(m->embedding->weight.std().item<double>(), 0.02, 0.015);  // N(0, 0.02) (24 draws)
  // The head reads the last position (the class token) after every pixel: changing the last pixel, which
  // only reaches the output through the mixers, changes that example's logits; the class token changes them too.
  at::Tensor x2 = x.clone();
  x2[0][16].fill_(5.0);
  const at::Tensor y2 = m->forward(x2);
  EXPECT_GT((y2[0] - y[0]).abs().max().item<double>(), 0.0);
  EXPECT_TRUE(at::equal(y2.narrow(0, 1, 3), y.narrow(0, 1, 3)));
  {
    at::NoGradGuard no_grad;
    m->cls_token.add_(1.0);
  }
  EXPECT_GT((m->forward(x) - y).abs().max().item<double>(), 1e-6);
  EXPECT_THROW(m->forward(at::rand({4, 17, 2})), ssmlab::Error);
  EXPECT_THROW(SequenceClassifier(o, 3, 0, "reference", 1), ssmlab::Error);
}

TEST(SequenceClassifier, AttentionWithPositionsAndEveryMixerBuilds) {
  ModelOptions o = small("attention");
  o.max_position_embeddings = 18;
  o.norm = "layernorm";
  o.mlp = "gelu";
  o.mlp_expand = 1;
  SequenceClassifier m(o, 3, 10, "reference", 2);
  EXPECT_EQ(m->forward(at::rand({2, 17, 3})).sizes(), (at::IntArrayRef{2, 10}));
  EXPECT_THROW(m->forward(at::rand({2, 18, 3})), ssmlab::Error);  // 19 positions with the class token
  for (const auto& name : ssmlab::mixers::mixer_names()) {
    ModelOptions oo = small(name);
    oo.d_model = 32;  // fits every mixer's width-dependent defaults (mamba2: E = 64 = head_dim)
    oo.mixers.rwkv5.head_size = 8;
    oo.mixers.rwkv6.head_size = 8;
    oo.mixers.hgrn2.n_heads = 2;
    oo.mixers.h3.head_dim = 2;
    oo.mixers.s4d.d_state = 4;
    oo.mixers.h3.d_state = 4;
    oo.mlp = "identity";
    SequenceClassifier mm(oo, 3, 5, "reference", 3);
    const at::Tensor y = mm->forward(at::rand({2, 9, 3}));
    EXPECT_EQ(y.sizes(), (at::IntArrayRef{2, 5})) << name;
    EXPECT_TRUE(at::isfinite(y).all().item<bool>()) << name;
  }
}

}  // namespace

}  // namespace models_test_sequence_classifier
