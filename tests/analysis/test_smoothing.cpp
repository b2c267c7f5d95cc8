// Over-smoothing on cases with a known answer: identical token representations have sharpness 0; two tokens at
// distance d have (1/T²)·2d = d/2; attention without positions keeps identical tokens identical through every
// layer (0 at every layer), a recurrence does not.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include "analysis/analysis_test_models.h"
#include "ssmlab/analysis/smoothing.h"
#include "ssmlab/models/language_model.h"

namespace analysis_test_smoothing {

namespace {

using ssmlab::analysis::pairwise_sharpness;

TEST(Smoothing, IdenticalRowsAreZeroAndTwoRowsAreHalfTheirDistance) {
  const at::Tensor row = at::randn({1, 1, 7}, at::TensorOptions().dtype(at::kDouble));
  EXPECT_EQ(pairwise_sharpness(row.expand({1, 50, 7}).contiguous(), false).item<double>(), 0.0);
  at::Tensor two = at::zeros({1, 2, 3}, at::kDouble);
  two[0][1][0] = 3.0;
  two[0][1][1] = 4.0;  // distance 5
  EXPECT_DOUBLE_EQ(pairwise_sharpness(two, false).item<double>(), 2.5);
  // mean norm (0 + 5) / 2 = 2.5: normalised 1
  EXPECT_DOUBLE_EQ(pairwise_sharpness(two, true).item<double>(), 1.0);
}

ssmlab::models::ModelOptions options(const std::string& mixer) {
  ssmlab::models::ModelOptions o;
  o.mixer = mixer;
  o.d_model = 16;
  o.n_layers = 3;
  o.mixers.attention.n_heads = 2;
  o.mixers.mamba1.d_state = 4;
  return o;
}

TEST(Smoothing, AttentionKeepsIdenticalTokensIdentical) {
  auto model = std::make_shared<ssmlab::models::LanguageModelImpl>(options("attention"), 16, "auto", 1);
  model->eval();
  const at::Tensor tokens = at::full({2, 24}, 5, at::TensorOptions().dtype(at::kLong));
  const auto s = ssmlab::analysis::smoothing_layers(*model, tokens);
  ASSERT_EQ(s.block_out.size(), 4u);  // embeddings + 3 layers
  for (size_t l = 0; l < s.block_out.size(); ++l) {  // float32 rounding of equal sums only
    EXPECT_LT(s.block_out_normalised[l], 1e-5) << "layer " << l;
    EXPECT_LT(s.mixer_out_normalised[l], 1e-5) << "layer " << l;
  }
}

TEST(Smoothing, RecurrenceSeparatesIdenticalTokens) {
  auto model = std::make_shared<ssmlab::models::LanguageModelImpl>(options("mamba1"), 16, "auto", 1);
  model->eval();
  const at::Tensor tokens = at::full({2, 24}, 5, at::TensorOptions().dtype(at::kLong));
  const auto s = ssmlab::analysis::smoothing_layers(*model, tokens);
  EXPECT_EQ(s.block_out[0], 0.0);  // the embeddings of one token
  // The recurrence's state fills up along the sequence: far above attention's float32 rounding level.
  EXPECT_GT(s.block_out_normalised[1], 1e-4) << s.block_out_normalised[1];
  EXPECT_GT(s.mixer_out_normalised[1], 1e-4) << s.mixer_out_normalised[1];
}

TEST(Smoothing, ConstructedModelMatchesDirectComputation) {
  auto model = std::make_shared<ssmlab::test::ScalarRecurrenceModel>(0.5);
  const at::Tensor x = at::randn({3, 10, 1}, at::TensorOptions().dtype(at::kDouble));
  const auto s = ssmlab::analysis::smoothing_layers(*model, x);
  ASSERT_EQ(s.block_out.size(), 1u);  // a model without blocks: the embedding row only
  // Direct: mean over t, s of |x_t - x_s| for each sample, then over samples.
  double want = 0;
  for (int64_t b = 0; b < 3; ++b) {
    double acc = 0;
    for (int64_t t = 0; t < 10; ++t)
      for (int64_t u = 0; u < 10; ++u) acc += std::abs(x[b][t][0].item<double>() - x[b][u][0].item<double>());
    want += acc / 100.0 / 3.0;
  }
  EXPECT_NEAR(s.block_out[0], want, 1e-12);
}

}  // namespace

}  // namespace analysis_test_smoothing
