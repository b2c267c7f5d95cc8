// Influence vs distance on cases with a known answer: a scalar linear recurrence with constant decay a has
// ln|∂y_t/∂x_s| = (t - s) ln a exactly; attention at initialisation attends nearly uniformly, so its influence
// does not decay with distance; Mamba-1 at initialisation decays.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <cmath>
#include <fstream>

#include "analysis/analysis_test_models.h"
#include "ssmlab/analysis/influence.h"
#include "ssmlab/analysis/registry.h"
#include "ssmlab/models/language_model.h"
#include "ssmlab/tasks/mqar.h"
#include "test_util.h"

namespace analysis_test_influence {

namespace {

using ssmlab::analysis::InfluenceOptions;
using ssmlab::analysis::influence_curve;

TEST(Influence, ScalarRecurrenceIsExactlyPowerOfDecay) {
  for (const double a : {0.5, 0.9, 0.99}) {
    auto model = std::make_shared<ssmlab::test::ScalarRecurrenceModel>(a);
    const at::Tensor x = at::randn({3, 40, 1}, at::TensorOptions().dtype(at::kDouble));
    InfluenceOptions o;
    o.targets = 5;
    o.probes = 2;
    const auto c = influence_curve(*model, x, o, /*seed=*/1);
    ASSERT_EQ(c.distance.size(), 40u);
    for (size_t d = 0; d < c.distance.size(); ++d) {
      ASSERT_GT(c.count[d], 0) << "distance " << d;
      EXPECT_NEAR(c.mean_log[d], static_cast<double>(d) * std::log(a), 1e-9) << "a " << a << " distance " << d;
    }
    EXPECT_NEAR(c.slope, std::log(a), 1e-9);
    EXPECT_NEAR(c.intercept, 0.0, 1e-8);
  }
}

TEST(Influence, MaxDistanceAndCounts) {
  auto model = std::make_shared<ssmlab::test::ScalarRecurrenceModel>(0.8);
  const at::Tensor x = at::randn({2, 20, 1}, at::TensorOptions().dtype(at::kDouble));
  InfluenceOptions o;
  o.targets = 1;  // the last position only
  o.probes = 3;
  o.max_distance = 7;
  const auto c = influence_curve(*model, x, o, 1);
  ASSERT_EQ(c.distance.size(), 8u);
  for (size_t d = 0; d < 8; ++d) EXPECT_EQ(c.count[d], 2 * 3) << d;  // samples x probes, one target
}

ssmlab::models::ModelOptions lm_options(const std::string& mixer) {
  ssmlab::models::ModelOptions o;
  o.mixer = mixer;
  o.d_model = 32;
  o.n_layers = 2;
  o.mixers.attention.n_heads = 2;
  o.mixers.mamba1.d_state = 8;
  return o;
}

double slope_of(const std::string& mixer, int64_t L) {
  auto model = std::make_shared<ssmlab::models::LanguageModelImpl>(lm_options(mixer), 64, "auto", 3);
  model->eval();
  const at::Tensor tokens = at::randint(1, 64, {4, L}, at::TensorOptions().dtype(at::kLong));
  InfluenceOptions o;
  o.targets = 2;
  o.probes = 2;
  return influence_curve(*model, tokens, o, 5).slope;
}

TEST(Influence, AttentionDoesNotDecayMambaDoes) {
  at::manual_seed(0);
  const double attn = slope_of("attention", 64), mamba = slope_of("mamba1", 64);
  // A decay of a per token gives slope ln a; attention at init is flat within noise, far from any such decay.
  EXPECT_LT(std::abs(attn), 0.02) << "attention slope " << attn;
  EXPECT_LT(mamba, -0.1) << "mamba1 slope " << mamba;
}

TEST(Influence, AnalysisWritesFigureAndSummary) {
  ssmlab::test::TempDir dir;
  ssmlab::tasks::MqarConfig cfg;
  cfg.vocab_size = 32;
  cfg.train = {{16, 2, 8}};
  cfg.test = {{16, 2, 8}};
  ssmlab::tasks::MqarTask task(cfg);
  const auto test = task.make_test();
  auto model = std::make_shared<ssmlab::models::LanguageModelImpl>(lm_options("mamba1"), 32, "auto", 3);
  model->eval();
  const ssmlab::analysis::Context ctx{*model, task, test, c10::Device(c10::kCPU), dir.path, "mamba1", 0};
  ssmlab::analysis::AnalysisOptions opts;
  opts.influence.samples = 4;
  const auto r = ssmlab::analysis::analysis_info("influence").run(ctx, opts);
  EXPECT_TRUE(std::filesystem::exists(dir.path / "figures" / "influence.csv"));
  EXPECT_TRUE(std::filesystem::exists(dir.path / "figures" / "influence.json"));
  EXPECT_LT(r.summary["slope"].get<double>(), 0.0);
  EXPECT_EQ(r.summary["samples"].get<int64_t>(), 4);
  std::ifstream csv(dir.path / "figures" / "influence.csv");
  std::string header;
  std::getline(csv, header);
  EXPECT_EQ(header, "distance,mamba1");
}

TEST(Influence, UnknownAnalysisNamesTheKnownOnes) {
  ssmlab::test::expect_error([] { ssmlab::analysis::parse_analysis_list("influence, nope"); },
                             {"nope", "influence", "smoothing"});
  EXPECT_EQ(ssmlab::analysis::parse_analysis_list(" influence ,smoothing,"),
            (std::vector<std::string>{"influence", "smoothing"}));
  ssmlab::test::expect_error([] { ssmlab::analysis::parse_analysis_list("smoothing,smoothing"); }, {"twice"});
}

}  // namespace

}  // namespace analysis_test_influence
