// The state-collapse analyses (analysis/collapse.h, loss_position, state_stats; spec §3.2, §3.3, §3.6):
// bucketing and the learned-to-forget verdict on hand-made losses, each state statistic on a hand-made state,
// retention on a constructed decay sequence, the state-norm calibration against a hand loop, loss_position's
// summary contract and its buckets against next_token_losses, and state_stats on constructed models whose
// state grows without bound (decay 1) or stays bounded (decay ~0).
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <string>

#include "analysis_test_models.h"
#include "ssmlab/analysis/collapse.h"
#include "ssmlab/analysis/loss_position.h"
#include "ssmlab/analysis/state_stats.h"
#include "ssmlab/core/error_kinds.h"
#include "ssmlab/core/rng.h"
#include "ssmlab/mixers/mamba2.h"
#include "ssmlab/models/language_model.h"
#include "ssmlab/models/long_eval.h"
#include "ssmlab/tasks/needle.h"
#include "ssmlab/tasks/text.h"
#include "test_util.h"
#include "text/text_test_util.h"
#include "tolerances.h"

namespace analysis_test_collapse {

namespace {

namespace fs = std::filesystem;
using namespace ssmlab;
using ssmlab::test::all_close;

// Twelve documents of random letters (byte tokenizer), a quarter held out for validation.
tasks::TextConfig collapse_text_config(const fs::path& dir) { return test::random_letters_text(dir, 12, 60, 17, 4); }

models::LanguageModel collapse_lm(const std::string& mixer = "mamba2") {
  models::ModelOptions o;
  o.mixer = mixer;
  o.d_model = 16;
  o.n_layers = 2;
  o.mixers.mamba2.d_state = 6;
  o.mixers.mamba2.head_dim = 8;  // E 32 -> H 4
  o.mixers.mamba2.chunk_size = 8;
  o.mixers.mamba1.d_state = 4;
  models::LanguageModel m(o, 256, "auto", 11);
  m->eval();
  m->to(at::kDouble);
  return m;
}

TEST(Collapse, BucketsDropTheFirstAndLastAndAverageTheRest) {
  std::vector<double> losses;
  for (int i = 0; i < 14; ++i) losses.push_back(i);
  // Buckets of 4: [0,4) dropped, [4,8), [8,12), [12,14) dropped.
  const auto b = analysis::bucket_losses(losses, 4);
  ASSERT_EQ(b.size(), 2u);
  EXPECT_EQ(b[0].begin, 4);
  EXPECT_EQ(b[0].end, 8);
  EXPECT_DOUBLE_EQ(b[0].x, 6.0);
  EXPECT_DOUBLE_EQ(b[0].loss, 5.5);
  EXPECT_DOUBLE_EQ(b[1].x, 10.0);
  EXPECT_DOUBLE_EQ(b[1].loss, 9.5);
  // 12 positions in buckets of 4: exactly 3 buckets, one kept.
  losses.resize(12);
  EXPECT_EQ(analysis::bucket_losses(losses, 4).size(), 1u);
  losses.resize(8);
  EXPECT_THROW(analysis::bucket_losses(losses, 4), Error);
  EXPECT_THROW(analysis::bucket_losses(losses, 0), Error);
}

TEST(Collapse, ForgetVerdictComparesBeyondWithTheLargestWithin) {
  // T_train 8, buckets of 2 over 24 positions: kept [2,4), [4,6), [6,8) within, [8,10) .. [20,22) beyond.
  std::vector<double> losses(24, 3.0);
  losses[4] = losses[5] = 4.0;  // the largest bucket within: 4
  auto flat = analysis::forget_verdict(analysis::bucket_losses(losses, 2), 8, 2.0);
  EXPECT_TRUE(flat.learned_to_forget);
  EXPECT_EQ(flat.within, 3);
  EXPECT_EQ(flat.beyond, 7);
  EXPECT_DOUBLE_EQ(flat.max_within, 4.0);
  EXPECT_NEAR(flat.mean_within, 10.0 / 3.0, 1e-12);
  EXPECT_DOUBLE_EQ(flat.max_beyond, 3.0);
  losses[18] = losses[19] = 7.9;  // below 2 x 4
  EXPECT_TRUE(analysis::forget_verdict(analysis::bucket_losses(losses, 2), 8, 2.0).learned_to_forget);
  losses[18] = losses[19] = 8.1;  // above
  EXPECT_FALSE(analysis::forget_verdict(analysis::bucket_losses(losses, 2), 8, 2.0).learned_to_forget);
  // On perplexity the bound is 4 + ln 2 nats: 4.6 passes, 4.8 (and the 7.9 that the loss criterion accepts) fail.
  losses[18] = losses[19] = 4.6;
  EXPECT_TRUE(analysis::forget_verdict(analysis::bucket_losses(losses, 2), 8, 2.0, true).learned_to_forget);
  losses[18] = losses[19] = 4.8;
  EXPECT_FALSE(analysis::forget_verdict(analysis::bucket_losses(losses, 2), 8, 2.0, true).learned_to_forget);
  EXPECT_TRUE(analysis::forget_verdict(analysis::bucket_losses(losses, 2), 8, 2.0, false).learned_to_forget);
  losses[18] = losses[19] = NAN;  // an overflowing loss is no forgetting
  EXPECT_FALSE(analysis::forget_verdict(analysis::bucket_losses(losses, 2), 8, 2.0).learned_to_forget);
  // No bucket inside T_train (the first is dropped): a clear error.
  EXPECT_THROW(analysis::forget_verdict(analysis::bucket_losses(losses, 8), 8, 2.0), Error);
}

TEST(Collapse, StateStatisticsOnAHandMadeState) {
  // (B 1, H 2, 2, 2): head 0 = 1 2 3 4, head 1 = -1 -1 5 100.
  const at::Tensor S = at::tensor({1.0, 2.0, 3.0, 4.0, -1.0, -1.0, 5.0, 100.0}, at::kDouble).view({1, 2, 2, 2});
  const at::Tensor st = analysis::state_head_stats(S);
  ASSERT_EQ(st.sizes(), (at::IntArrayRef{2, 4}));
  // head 0: mean 2.5, var (2.25 + 0.25 + 0.25 + 2.25) / 3, rms sqrt(30 / 4), median (lower middle) 2
  EXPECT_NEAR(st[0][0].item<double>(), 2.5, 1e-12);
  EXPECT_NEAR(st[0][1].item<double>(), 5.0 / 3.0, 1e-12);
  EXPECT_NEAR(st[0][2].item<double>(), std::sqrt(7.5), 1e-12);
  EXPECT_NEAR(st[0][3].item<double>(), 2.0, 1e-12);
  // head 1: mean 103 / 4, var Σ(v - m)^2 / 3, rms sqrt((1 + 1 + 25 + 10000) / 4), median -1
  const double m = 103.0 / 4;
  const double var = ((-1 - m) * (-1 - m) * 2 + (5 - m) * (5 - m) + (100 - m) * (100 - m)) / 3;
  EXPECT_NEAR(st[1][0].item<double>(), m, 1e-12);
  EXPECT_NEAR(st[1][1].item<double>(), var, 1e-9);
  EXPECT_NEAR(st[1][2].item<double>(), std::sqrt(10027.0 / 4), 1e-12);
  EXPECT_NEAR(st[1][3].item<double>(), -1.0, 1e-12);
  // The batch pools with the head's other elements: two sequences of head 0 = {1,2} and {3,4}.
  const at::Tensor S2 = at::tensor({1.0, 2.0, 3.0, 4.0}, at::kDouble).view({2, 1, 2});
  EXPECT_NEAR(analysis::state_head_stats(S2)[0][1].item<double>(), 5.0 / 3.0, 1e-12);
  EXPECT_THROW(analysis::state_head_stats(at::zeros({3})), Error);
}

TEST(Collapse, RetentionIsTheRunningProductOfTheDecays) {
  // Two heads: α = 0.5 constant, and α_t = 1 - 1/(t + 2).
  const int64_t T = 30;
  at::Tensor a = at::empty({T, 2}, at::kDouble);
  for (int64_t t = 0; t < T; ++t) {
    a[t][0] = 0.5;
    a[t][1] = 1.0 - 1.0 / static_cast<double>(t + 2);
  }
  const at::Tensor r = analysis::cumulative_retention(at::log(a));
  double p1 = 1.0;
  for (int64_t t = 0; t < T; ++t) {
    p1 *= a[t][1].item<double>();
    EXPECT_NEAR(r[t][0].item<double>(), std::pow(0.5, static_cast<double>(t + 1)), 1e-14);
    EXPECT_NEAR(r[t][1].item<double>(), p1, 1e-14);
    EXPECT_NEAR(p1, 1.0 / static_cast<double>(t + 2), 1e-14);  // telescoping: Π (j+1)/(j+2)
  }
  // Carried on from a running sum: the second half continues the first.
  const at::Tensor first = at::log(a.narrow(0, 0, 10)).sum(0);
  EXPECT_TRUE(all_close(analysis::cumulative_retention(at::log(a.narrow(0, 10, 20)), first), r.narrow(0, 10, 20),
                        test::kFp64Forward, "carried"));
}

TEST(Collapse, CalibrationGivesTheLargestStateNormSeen) {
  auto lm = collapse_lm();
  const at::Tensor tokens = at::randint(0, 256, {3, 37}, at::kLong);
  const auto tau = analysis::calibrate_state_norm(*lm, tokens, 8);
  ASSERT_EQ(tau.size(), 2u);
  // By hand: the states after every 8 tokens (and after the last), per head the largest norm over the batch.
  auto states = lm->init_state(3, at::kCPU);
  std::vector<at::Tensor> best(2);
  for (int64_t t0 = 0; t0 < 37; t0 += 8) {
    lm->forward_stateful(tokens.narrow(1, t0, std::min<int64_t>(8, 37 - t0)), states);
    for (size_t l = 0; l < 2; ++l) {
      const at::Tensor S = states[l].at("ssm");  // (3, H, P, N)
      at::Tensor n = at::zeros({S.size(1)}, at::kDouble);
      for (int64_t b = 0; b < 3; ++b)
        for (int64_t h = 0; h < S.size(1); ++h)
          n[h] = std::max(n[h].item<double>(), std::sqrt(S[b][h].pow(2).sum().item<double>()));
      best[l] = best[l].defined() ? at::maximum(best[l], n) : n;
    }
  }
  for (size_t l = 0; l < 2; ++l) {
    ASSERT_TRUE(tau[l].defined());
    EXPECT_GT(tau[l].min().item<double>(), 0.0);
    EXPECT_TRUE(all_close(tau[l], best[l], test::kFp64Forward, "calibrated tau"));
  }
}

TEST(Collapse, LossPositionWritesTheContractAndItsBucketsAreTheLosses) {
  test::TempDir dir;
  const tasks::TextTask task(collapse_text_config(dir.path));
  auto lm = collapse_lm();
  const auto data = task.make_test();
  const analysis::Context ctx{*lm, task, data, c10::Device(c10::kCPU), dir.path, "mamba2", 0};
  analysis::LossPositionOptions o;
  o.samples = 2;
  o.bucket = 4;
  o.max_len = 160;  // 10 x T_train
  o.segment = 24;
  o.variants = "none,rri,state_norm,state_norm_seed,window";
  const auto before = analysis::save_mitigations(*lm);
  const analysis::Result r = analysis::run_loss_position(ctx, o);
  const auto& s = r.summary;
  EXPECT_EQ(s["t_train"].get<int64_t>(), 16);
  EXPECT_EQ(s["state_size"].get<int64_t>(), lm->state_size());
  EXPECT_EQ(s["state_size_ssm"].get<int64_t>(), 2 * 4 * 8 * 6);  // L·H·P·N
  EXPECT_TRUE(s["learned_to_forget"].is_boolean());
  EXPECT_TRUE(s["criterion"].is_string());
  EXPECT_EQ(s["max_len"].get<int64_t>(), 160);
  ASSERT_EQ(s["buckets"].size(), 38u);  // 40 buckets, first and last dropped
  EXPECT_DOUBLE_EQ(s["buckets"][0]["x"].get<double>(), 6.0);
  for (const char* k : {"mean_loss_within", "max_loss_beyond"}) EXPECT_TRUE(s[k].is_number()) << k;
  for (const char* v : {"none", "rri", "state_norm", "state_norm_seed", "window"})
    EXPECT_TRUE(s["variants"].contains(v)) << v;
  // The verdict recomputed from the written buckets.
  double within = 0, beyond = 0;
  for (const auto& b : s["buckets"]) {
    const double x = b["x"].get<double>(), l = b["loss"].get<double>();
    if (x + 2 <= 16) within = std::max(within, l);
    if (x - 2 >= 16) beyond = std::max(beyond, l);
  }
  EXPECT_EQ(s["learned_to_forget"].get<bool>(), beyond < 2.0 * within);
  // The first bucket is the mean of positions 4..7 of next_token_losses on the same prompt, over the samples.
  const at::Tensor tokens = analysis::collapse_prompt(task, "text", 2, 161);
  const at::Tensor losses = models::next_token_losses(*lm, tokens, 7);
  EXPECT_NEAR(s["buckets"][0]["loss"].get<double>(), losses.narrow(1, 4, 4).to(at::kDouble).mean().item<double>(),
              1e-6);
  // Mitigations change the curve and are undone afterwards.
  EXPECT_NE(s["variants"]["rri"]["buckets"][30]["loss"].get<double>(),
            s["variants"]["none"]["buckets"][30]["loss"].get<double>());
  const auto after = analysis::save_mitigations(*lm);
  for (size_t l = 0; l < after.size(); ++l) {
    ASSERT_TRUE(after[l].has_value());
    EXPECT_EQ(after[l]->decay_mult, before[l]->decay_mult);
    EXPECT_EQ(after[l]->window, 0);
    EXPECT_FALSE(after[l]->state_norm_tau.defined());
  }
  EXPECT_TRUE(fs::exists(dir.path / "figures" / "loss_position.csv"));
  EXPECT_TRUE(fs::exists(dir.path / "figures" / "loss_position.json"));
  EXPECT_EQ(s["state_norm_tau"].size(), 2u);
}

TEST(Collapse, LossPositionNamesWhatIsMissing) {
  test::TempDir dir;
  const tasks::TextTask task(collapse_text_config(dir.path));
  auto lm = collapse_lm();
  const auto data = task.make_test();
  const analysis::Context ctx{*lm, task, data, c10::Device(c10::kCPU), dir.path, "mamba2", 0};
  analysis::LossPositionOptions o;
  o.max_len = 16;  // not past T_train
  EXPECT_THROW(analysis::run_loss_position(ctx, o), ConfigError);
  o.max_len = 64;
  o.variants = "none,bogus";
  EXPECT_THROW(analysis::run_loss_position(ctx, o), ConfigError);
  // A mixer without the mitigation: mamba1 has RRI only.
  auto m1 = collapse_lm("mamba1");
  const analysis::Context ctx1{*m1, task, data, c10::Device(c10::kCPU), dir.path, "mamba1", 0};
  o.variants = "window";
  EXPECT_THROW(analysis::run_loss_position(ctx1, o), ConfigError);
  o.variants = "none,rri";
  EXPECT_NO_THROW(analysis::run_loss_position(ctx1, o));
  // A task other than text.
  tasks::NeedleConfig nc;
  nc.vocab_size = 32;
  nc.key_digits = 3;
  nc.block_len = 8;
  nc.depth_bins = 4;
  nc.train = {{64, 4}};
  nc.test = {{64, 2}};
  const tasks::NeedleTask needle(nc);
  const auto ndata = needle.make_test();
  const analysis::Context nctx{*lm, needle, ndata, c10::Device(c10::kCPU), dir.path, "mamba2", 0};
  EXPECT_THROW(analysis::run_loss_position(nctx, o), ConfigError);
  EXPECT_THROW(analysis::run_state_stats(nctx, analysis::StateStatsOptions{}), ConfigError);
}

// A Mamba-2 LM whose every head has decay α = exp(dt·A) = 1 (A = -exp(-60)) and a large step: on the constant
// newlines prompt every token adds the same Δ x ⊗ B to the state, which grows linearly without bound, so the
// variance grows ~ t^2. With A = -16 and the same step the decay is ~0 and the state stays put.
double variance_growth(double a_log) {
  test::TempDir dir;
  const tasks::TextTask task(collapse_text_config(dir.path));
  auto lm = collapse_lm();
  {
    at::NoGradGuard ng;
    for (auto& b : lm->blocks) {
      auto* m = dynamic_cast<mixers::Mamba2Impl*>(b->mixer.get());
      m->A_log.fill_(a_log);
      m->dt_bias.fill_(3.0);
    }
  }
  const auto data = task.make_test();
  const analysis::Context ctx{*lm, task, data, c10::Device(c10::kCPU), dir.path, "m", 0};
  analysis::StateStatsOptions o;
  o.chunk = 8;
  o.max_len = 96;  // T_train 16: 12 chunks, histogram at 16 and 40
  const analysis::Result r = analysis::run_state_stats(ctx, o);
  EXPECT_EQ(r.summary["histogram"]["t"][0].get<int64_t>(), 16);
  EXPECT_EQ(r.summary["histogram"]["t"][1].get<int64_t>(), 40);
  for (const char* f : {"state_stats_mean.csv", "state_stats_var.csv", "state_stats_hist.csv",
                        "state_stats_decay.csv", "state_stats_retention.csv"})
    EXPECT_TRUE(fs::exists(dir.path / "figures" / f)) << f;
  const auto& seq_mean = r.summary["decay_seq_mean"];
  const double alpha = seq_mean[0][0].get<double>();
  if (a_log < -50) {
    EXPECT_NEAR(alpha, 1.0, 1e-12);
  }
  const int64_t layer = r.summary["layers_drawn"][0].get<int64_t>();
  return r.summary["layers"][layer]["variance_growth"].get<double>();
}

TEST(Collapse, StateStatsShowAStateGrowingWithoutBound) {
  const double growing = variance_growth(-60.0);
  const double bounded = variance_growth(std::log(16.0));
  // Linear growth from t = 16 to t = 96: the variance (~ t^2 after the conv's warm-up) grows about 36-fold.
  EXPECT_GT(growing, 10.0);
  EXPECT_LT(bounded, 1.5);
}

// The default chunk is 128 (spec §3.3) but at most T_train / 2, so a model trained on 16 tokens still gets its
// histograms at T_train and 2.5 x T_train (a 128-token chunk would end past both: a config error on the forget
// sweep's 64-token runs).
TEST(Collapse, StateStatsDefaultChunkFitsAShortTrainingLength) {
  test::TempDir dir;
  const tasks::TextTask task(collapse_text_config(dir.path));
  auto lm = collapse_lm();
  const auto data = task.make_test();
  const analysis::Context ctx{*lm, task, data, c10::Device(c10::kCPU), dir.path, "m", 0};
  const analysis::Result r = analysis::run_state_stats(ctx, analysis::StateStatsOptions{});
  EXPECT_EQ(r.summary["chunk"].get<int64_t>(), 8);
  EXPECT_EQ(r.summary["histogram"]["t"][0].get<int64_t>(), 16);
  EXPECT_EQ(r.summary["histogram"]["t"][1].get<int64_t>(), 40);
}

}  // namespace

}  // namespace analysis_test_collapse
