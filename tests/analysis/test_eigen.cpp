// The eigen-spectrum analysis on models with a known spectrum: Mamba-1 layers whose x_proj is set so that
// S_C^T S_B is diag(d) (symmetric) or [[Q diag(λ) Q^-1, 0], [0, 0]] (not symmetric, real eigenvalues λ); then
// the eigenvalue scenarios seen through the analysis, its files, and the error for a model without the matrix.
#include <gtest/gtest.h>

#include <filesystem>

#include <ATen/ATen.h>

#include "ssmlab/analysis/eigen.h"
#include "ssmlab/analysis/registry.h"
#include "ssmlab/mixers/mamba1.h"
#include "ssmlab/models/language_model.h"
#include "ssmlab/tasks/mqar.h"
#include "test_util.h"
#include "tolerances.h"

namespace analysis_test_eigen {

namespace {

using ssmlab::mixers::Mamba1Impl;
using ssmlab::test::all_close;

ssmlab::models::ModelOptions options(const std::string& mixer, int64_t layers, const std::string& eigen = "none") {
  ssmlab::models::ModelOptions o;
  o.mixer = mixer;
  o.d_model = 8;  // E = 16
  o.n_layers = layers;
  o.mixers.mamba1.d_state = 4;
  o.mixers.mamba1.eigen = eigen;
  o.mixers.attention.n_heads = 2;
  return o;
}

std::shared_ptr<Mamba1Impl> mamba(ssmlab::models::ModelImpl& m, int64_t layer) {
  return std::dynamic_pointer_cast<Mamba1Impl>(m.blocks[static_cast<size_t>(layer)]->mixer);
}

// Sets a layer's B rows to [S | 0] and C rows to [I | 0], so S_C^T S_B = [[S, 0], [0, 0]].
void set_io(Mamba1Impl& m, const at::Tensor& S) {
  at::NoGradGuard no_grad;
  const int64_t R = m.dt_rank(), N = m.state_dim(), E = m.d_inner();
  at::Tensor WB = at::zeros({N, E}), WC = at::zeros({N, E});
  WB.narrow(1, 0, N).copy_(S);
  WC.narrow(1, 0, N).copy_(at::eye(N));
  m.x_proj->weight.narrow(0, R, N).copy_(WB);
  m.x_proj->weight.narrow(0, R + N, N).copy_(WC);
}

TEST(Eigen, KnownSpectraSymmetricAndNot) {
  auto model = std::make_shared<ssmlab::models::LanguageModelImpl>(options("mamba1", 2), 16, "auto", 1);
  set_io(*mamba(*model, 0), at::diag(at::tensor({3.0f, -2.0f, 0.5f, -0.25f})));
  // Q well conditioned (identity plus small entries): Q diag(λ) Q^-1 is not symmetric, its eigenvalues are λ.
  at::manual_seed(3);
  const at::Tensor Q = at::eye(4, at::kDouble) + 0.3 * at::randn({4, 4}, at::kDouble);
  const at::Tensor lambda = at::tensor({1.0, 2.0, -4.0, 5.0}, at::kDouble);
  set_io(*mamba(*model, 1), at::matmul(at::matmul(Q, at::diag(lambda)), at::linalg_inv(Q)).to(at::kFloat));
  const auto spectra = ssmlab::analysis::eigen_spectra(*model, 1e-6);
  ASSERT_EQ(spectra.size(), 2u);

  const auto& s0 = spectra[0];
  EXPECT_EQ(s0.layer, 0);
  EXPECT_TRUE(s0.symmetric);
  EXPECT_EQ(s0.zero, 12);  // E - N
  EXPECT_EQ(s0.positive, 2);
  EXPECT_EQ(s0.negative, 2);
  EXPECT_DOUBLE_EQ(s0.fraction_positive, 0.5);
  EXPECT_TRUE(all_close(at::tensor(s0.eigenvalues, at::kDouble), at::tensor({-2.0, -0.25, 0.5, 3.0}, at::kDouble),
                        ssmlab::test::kFp32Forward, "layer 0 eigenvalues"));
  EXPECT_DOUBLE_EQ(s0.min, s0.eigenvalues.front());
  EXPECT_DOUBLE_EQ(s0.max, s0.eigenvalues.back());

  const auto& s1 = spectra[1];
  EXPECT_EQ(s1.layer, 1);
  EXPECT_FALSE(s1.symmetric);
  EXPECT_EQ(s1.zero, 12);
  EXPECT_EQ(s1.positive, 3);
  EXPECT_EQ(s1.negative, 1);
  EXPECT_DOUBLE_EQ(s1.fraction_positive, 0.75);
  EXPECT_TRUE(all_close(at::tensor(s1.eigenvalues, at::kDouble), at::tensor({-4.0, 1.0, 2.0, 5.0}, at::kDouble),
                        ssmlab::test::kFp32Forward, "layer 1 eigenvalues"));
  EXPECT_LT(s1.max_abs_imag, ssmlab::test::kFp32Forward.atol);
}

TEST(Eigen, ScenariosThroughTheAnalysis) {
  // Trained or not, a constrained model's spectrum has the scenario's signs in every layer.
  struct Case {
    std::string eigen;
    double fraction;
  };
  for (const Case& c : {Case{"positive", 1.0}, Case{"negative", 0.0}, Case{"mixed", 0.5}}) {
    auto model =
        std::make_shared<ssmlab::models::LanguageModelImpl>(options("mamba1", 3, c.eigen), 16, "auto", 2);
    const auto spectra = ssmlab::analysis::eigen_spectra(*model, 1e-6);
    ASSERT_EQ(spectra.size(), 3u) << c.eigen;
    for (const auto& s : spectra) {
      EXPECT_TRUE(s.symmetric) << c.eigen;
      EXPECT_EQ(s.positive + s.negative, 4) << c.eigen << " layer " << s.layer;  // rank N
      EXPECT_DOUBLE_EQ(s.fraction_positive, c.fraction) << c.eigen << " layer " << s.layer;
    }
  }
}

TEST(Eigen, AnalysisWritesFiguresAndSummaryAndNeedsTheMatrix) {
  ssmlab::test::TempDir dir;
  ssmlab::tasks::MqarConfig cfg;
  cfg.vocab_size = 32;
  cfg.train = {{16, 2, 8}};
  cfg.test = {{16, 2, 8}};
  ssmlab::tasks::MqarTask task(cfg);
  const auto test = task.make_test();
  auto model = std::make_shared<ssmlab::models::LanguageModelImpl>(options("mamba1", 2, "negative"), 32, "auto", 3);
  model->eval();
  const ssmlab::analysis::Context ctx{*model, task, test, c10::Device(c10::kCPU), dir.path, "neg", 0};
  ssmlab::analysis::AnalysisOptions opts;
  const auto r = ssmlab::analysis::analysis_info("eigen").run(ctx, opts);
  for (const char* stem : {"eigen", "eigen_fraction", "eigen_spectrum"}) {
    EXPECT_TRUE(std::filesystem::exists(dir.path / "figures" / (std::string(stem) + ".csv"))) << stem;
    EXPECT_TRUE(std::filesystem::exists(dir.path / "figures" / (std::string(stem) + ".json"))) << stem;
  }
  ASSERT_EQ(r.summary["layers"].size(), 2u);
  for (const auto& l : r.summary["layers"]) {
    EXPECT_LT(l["max"].get<double>(), 0.0);
    EXPECT_EQ(l["fraction_positive"].get<double>(), 0.0);
    EXPECT_EQ(l["negative"].get<int64_t>(), 4);
  }
  auto attention = std::make_shared<ssmlab::models::LanguageModelImpl>(options("attention", 2), 16, "auto", 3);
  ssmlab::test::expect_error([&] { ssmlab::analysis::eigen_spectra(*attention, 1e-6); },
                             {"input-output matrix", "attention"});
}

}  // namespace

}  // namespace analysis_test_eigen
