// Decay diversity (spec §2.7) on cases with a known answer: a per-position decay fed in batches gives spreads
// equal to its max - min per channel; a time-invariant decay gives 0 in every channel (S4D, RWKV-4 from the
// registry); a selective SSM (Mamba-1) spreads.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include "ssmlab/analysis/decay.h"
#include "ssmlab/models/language_model.h"
#include "test_util.h"

namespace analysis_test_decay {

namespace {

using namespace ssmlab::analysis;

TEST(DecayDiversity, SpreadIsMaxMinusMinOverEveryPositionAndBatch) {
  // A per-position decay sigmoid(x), fed batch by batch as decay_spreads does.
  at::manual_seed(11);
  const at::Tensor x = at::randn({6, 9, 2}, at::kDouble);
  DecayRange range;
  for (int64_t b = 0; b < 6; b += 4) {
    const at::Tensor part = x.narrow(0, b, std::min<int64_t>(4, 6 - b));
    ASSERT_TRUE(decay_is_per_position(at::sigmoid(part), part.size(0), 9));
    range.update(at::sigmoid(part), true);
  }
  const at::Tensor s = at::sigmoid(x).flatten(0, 1);
  const at::Tensor want = std::get<0>(s.max(0)) - std::get<0>(s.min(0));
  // sigmoid of a slice and of the whole tensor may round differently in the last bit (vectorised body vs tail),
  // so compare to a few ulps rather than exactly (exact equality failed now and then with unseeded inputs).
  EXPECT_TRUE(at::allclose(range.spread(), want, 0, 1e-15));
  DecayRange constant;
  const at::Tensor c = at::full({2, 3}, 0.9, at::kDouble);
  EXPECT_FALSE(decay_is_per_position(c, 2, 3));  // rank 2: never per position
  constant.update(c, false);
  constant.update(c, false);
  EXPECT_EQ(constant.spread().abs().max().item<double>(), 0.0);
  EXPECT_EQ(constant.spread().numel(), 6);
  EXPECT_THROW(DecayRange().spread(), ssmlab::Error);
}

ssmlab::models::ModelOptions options(const std::string& mixer) {
  ssmlab::models::ModelOptions o;
  o.mixer = mixer;
  o.d_model = 16;
  o.n_layers = 2;
  o.mixers.mamba1.d_state = 4;
  o.mixers.s4d.d_state = 8;
  return o;
}

TEST(DecayDiversity, TimeInvariantMixersSpreadZeroSelectiveOnesDoNot) {
  const at::Tensor tokens = at::randint(0, 16, {5, 20}, at::kLong);
  for (const std::string mixer : {"s4d", "rwkv4", "mamba1"}) {
    auto model = std::make_shared<ssmlab::models::LanguageModelImpl>(options(mixer), 16, "auto", 3);
    model->eval();
    const auto spreads = decay_spreads(*model, tokens, 2);
    ASSERT_EQ(spreads.size(), 2u) << mixer;
    for (const auto& s : spreads) {
      ASSERT_TRUE(s.defined()) << mixer;
      if (mixer == "mamba1") {
        EXPECT_EQ(s.numel(), 32 * 4) << "E x N channels";
        EXPECT_GT(s.max().item<double>(), 0.0) << mixer;
        EXPECT_GE(s.min().item<double>(), 0.0) << mixer;
      } else {
        EXPECT_EQ(s.abs().max().item<double>(), 0.0) << mixer;
      }
    }
  }
  auto attention = std::make_shared<ssmlab::models::LanguageModelImpl>(options("attention"), 16, "auto", 3);
  for (const auto& s : decay_spreads(*attention, tokens, 2)) EXPECT_FALSE(s.defined());
}

}  // namespace

}  // namespace analysis_test_decay
