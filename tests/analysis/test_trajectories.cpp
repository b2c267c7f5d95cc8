// Token trajectories against the theory (spec §4.1): on a stack of simplified 1-D S6 layers the sign of the
// input-output matrix mu = S_C^T S_B decides the fate of the tokens: mu < 0, they converge to 0; mu > 0, they
// diverge, later positions faster. The analysis must report convergence and divergence accordingly; then its
// figures and summary on a real model.
#include <gtest/gtest.h>

#include <filesystem>

#include <ATen/ATen.h>

#include "analysis/analysis_test_models.h"
#include "ssmlab/analysis/registry.h"
#include "ssmlab/analysis/trajectories.h"
#include "ssmlab/models/language_model.h"
#include "ssmlab/tasks/mqar.h"
#include "test_util.h"
#include "tolerances.h"

namespace analysis_test_trajectories {

namespace {

using ssmlab::analysis::TrajectoryOptions;

// 16 sequences of 16 tokens with |x| in [0.2, 0.4] and random signs: small enough that the divergent case does
// not blow up within 16 layers of step 0.05, with a slow decay (a = 0.05) so later tokens see more of the past.
at::Tensor tokens(uint64_t seed) {
  at::manual_seed(seed);
  const at::Tensor mag = at::rand({16, 16, 1}, at::kDouble) * 0.2 + 0.2;
  const at::Tensor sign = at::where(at::rand({16, 16, 1}, at::kDouble) < 0.5, -1.0, 1.0);
  return mag * sign;
}

ssmlab::analysis::Trajectories run(double mu, uint64_t seed) {
  auto model = std::make_shared<ssmlab::test::SimplifiedS6Stack>(mu, /*layers=*/16, /*step=*/0.05, /*a=*/0.05);
  TrajectoryOptions o;
  o.buckets = 4;
  return ssmlab::analysis::trajectory_layers(*model, tokens(seed), o);
}

TEST(Trajectories, NegativeInputOutputMatrixConvergesPositiveDiverges) {
  for (uint64_t seed : {1, 2, 3}) {
    const auto neg = run(-1.0, seed), pos = run(1.0, seed);
    ASSERT_EQ(neg.norm.size(), 17u);  // embeddings + 16 layers
    ASSERT_EQ(neg.mixer_norm.size(), 16u);
    EXPECT_EQ(neg.verdict, "converge") << "seed " << seed << " rate " << neg.rate;
    EXPECT_EQ(pos.verdict, "diverge") << "seed " << seed << " rate " << pos.rate;
    EXPECT_LT(neg.mean_norm.back(), neg.mean_norm.front());
    EXPECT_GT(pos.mean_norm.back(), pos.mean_norm.front());
    // Converging tokens also come together; diverging ones spread apart.
    EXPECT_LT(neg.distance.back(), neg.distance.front());
    EXPECT_GT(pos.distance.back(), pos.distance.front());
    // Later positions move faster (the paper's reason to reorder): bucket rates grow in magnitude with position.
    for (size_t b = 0; b + 1 < pos.bucket_rate.size(); ++b) {
      EXPECT_GT(pos.bucket_rate[b + 1], pos.bucket_rate[b]) << "seed " << seed << " bucket " << b;
      EXPECT_LT(neg.bucket_rate[b + 1], neg.bucket_rate[b]) << "seed " << seed << " bucket " << b;
    }
    for (double r : pos.position_rate) EXPECT_GT(r, 0.0);
    for (double r : neg.position_rate) EXPECT_LT(r, 0.0);
  }
  // mu = 0: the layers do nothing, the tokens stay put.
  const auto zero = run(0.0, 1);
  EXPECT_EQ(zero.verdict, "neutral");
  EXPECT_NEAR(zero.rate, 0.0, ssmlab::test::kFp64Forward.atol);
}

TEST(Trajectories, DirectComputationOfNormsAndBuckets) {
  // Two layers of known tokens: norms per position, bucket means and the ln-norm slope by hand.
  at::Tensor e = at::zeros({1, 4, 2}, at::kDouble);
  e[0][0][0] = 3.0;
  e[0][0][1] = 4.0;  // norm 5
  e[0][1][0] = 1.0;  // norm 1
  e[0][2][1] = 2.0;  // norm 2
  e[0][3][0] = 2.0;  // norm 2
  const at::Tensor l1 = e * 2.0, l2 = e * 4.0;
  TrajectoryOptions o;
  o.buckets = 2;
  const auto t = ssmlab::analysis::token_trajectories({e, l1, l2}, {l1, l2}, o);
  ASSERT_EQ(t.bucket_begin, (std::vector<int64_t>{0, 2}));
  ASSERT_EQ(t.bucket_end, (std::vector<int64_t>{2, 4}));
  EXPECT_DOUBLE_EQ(t.norm[0][0], 5.0);
  EXPECT_DOUBLE_EQ(t.bucket_norm[0][0], 3.0);
  EXPECT_DOUBLE_EQ(t.bucket_norm[1][2], 8.0);
  EXPECT_NEAR(t.rate, std::log(2.0), ssmlab::test::kFp64Forward.atol);  // every norm doubles per layer
  for (double r : t.position_rate) EXPECT_NEAR(r, std::log(2.0), ssmlab::test::kFp64Forward.atol);
  EXPECT_EQ(t.verdict, "diverge");
  EXPECT_THROW(ssmlab::analysis::token_trajectories({e, at::zeros({1, 3, 2}, at::kDouble)}, {}, o), ssmlab::Error);
}

TEST(Trajectories, AnalysisWritesFiguresAndSummary) {
  ssmlab::test::TempDir dir;
  ssmlab::tasks::MqarConfig cfg;
  cfg.vocab_size = 32;
  cfg.train = {{16, 2, 8}};
  cfg.test = {{16, 2, 8}};
  ssmlab::tasks::MqarTask task(cfg);
  const auto test = task.make_test();
  ssmlab::models::ModelOptions mo;
  mo.d_model = 16;
  mo.n_layers = 3;
  mo.mixers.mamba1.d_state = 4;
  auto model = std::make_shared<ssmlab::models::LanguageModelImpl>(mo, 32, "auto", 3);
  model->eval();
  const ssmlab::analysis::Context ctx{*model, task, test, c10::Device(c10::kCPU), dir.path, "mamba1", 0};
  ssmlab::analysis::AnalysisOptions opts;
  opts.trajectories.samples = 4;
  const auto r = ssmlab::analysis::analysis_info("trajectories").run(ctx, opts);
  for (const char* stem : {"trajectories_norm", "trajectories_mixer_norm", "trajectories_distance",
                           "trajectories_rate"}) {
    EXPECT_TRUE(std::filesystem::exists(dir.path / "figures" / (std::string(stem) + ".csv"))) << stem;
    EXPECT_TRUE(std::filesystem::exists(dir.path / "figures" / (std::string(stem) + ".json"))) << stem;
  }
  EXPECT_EQ(r.summary["samples"].get<int64_t>(), 4);
  EXPECT_EQ(r.summary["mean_norm"].size(), 4u);  // embeddings + 3 layers
  EXPECT_EQ(r.summary["position_rate"].size(), 16u);
  const std::string v = r.summary["verdict"].get<std::string>();
  EXPECT_TRUE(v == "converge" || v == "diverge" || v == "neutral") << v;
}

}  // namespace

}  // namespace analysis_test_trajectories
