// Mamba-1's token-dynamics options (spec §4.2, §4.3): the eigenvalue scenarios of x_proj (S_C^T S_B PSD / NSD /
// indefinite on random weights for any d_state, the seed's construction, gradients reaching P and c, the fast
// and reference paths, step vs forward) and token reordering (SoftSort's rows and its limit, the hard
// permutation, the scan seeing tokens sorted by importance, gradients reaching the importance weights, the
// seed's quirks as options, the sequence classifier).
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include "ssmlab/core/error.h"
#include "ssmlab/mixers/mamba1.h"
#include "ssmlab/mixers/softsort.h"
#include "ssmlab/models/sequence_classifier.h"
#include "cuda_test_util.h"
#include "test_util.h"
#include "tolerances.h"

namespace mixers_test_mamba1_dynamics {

namespace {

using ssmlab::mixers::Mamba1Impl;
using ssmlab::mixers::Mamba1Options;
using ssmlab::test::all_close;

constexpr int64_t kD = 10;  // d_model; E = 20

std::shared_ptr<Mamba1Impl> make(const Mamba1Options& o, uint64_t seed = 1, const std::string& backend = "reference",
                                 int64_t d_model = kD) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  return std::make_shared<Mamba1Impl>(o, d_model, backend, gen, /*layer_idx=*/0);
}

Mamba1Options plain_options(int64_t d_state) {
  Mamba1Options o;
  o.d_state = d_state;
  return o;
}

Mamba1Options eigen_options(const std::string& kind, int64_t d_state) {
  Mamba1Options o;
  o.d_state = d_state;
  o.eigen = kind;
  return o;
}

// Counts of positive and negative eigenvalues of a symmetric float64 matrix, zero by kEigenZeroRel.
std::pair<int64_t, int64_t> sign_counts(const at::Tensor& M) {
  const at::Tensor ev = at::linalg_eigvalsh(M);
  const double cut = ssmlab::test::kEigenZeroRel * ev.abs().max().item<double>();
  return {(ev > cut).sum().item<int64_t>(), (ev < -cut).sum().item<int64_t>()};
}

TEST(EigenScenario, SignsOfTheInputOutputMatrixOnRandomWeights) {
  for (const int64_t N : {1, 2, 3, 5, 8, 16}) {
    for (const std::string kind : {"positive", "negative", "mixed"}) {
      if (kind == "mixed" && N < 2) {
        EXPECT_THROW(make(eigen_options(kind, N)), ssmlab::Error) << "mixed needs two states";
        continue;
      }
      for (uint64_t seed : {1, 2, 3}) {
        // E = 48 >= N; P's entries at std 0.5 keep U far from singular (unit triangular matrices with large
        // random entries have exponentially small singular values).
        auto m = make(eigen_options(kind, N), seed, "reference", /*d_model=*/24);
        m->to(at::kDouble);
        {
          at::NoGradGuard no_grad;
          at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(100 + seed);
          m->x_proj->weight.normal_(0.0, 0.5, gen);  // random raw weights, c of either sign
        }
        const at::Tensor M = m->input_output_matrix().value().detach();
        const int64_t E = m->d_inner();
        ASSERT_EQ(M.sizes(), (at::IntArrayRef{E, E}));
        EXPECT_TRUE(all_close(M, M.t(), ssmlab::test::kFp64Forward, "symmetric"));
        const auto [pos, neg] = sign_counts(M);
        const std::string what = kind + " N=" + std::to_string(N) + " seed " + std::to_string(seed);
        if (kind == "positive") {
          EXPECT_EQ(pos, N) << what;  // PSD of rank N
          EXPECT_EQ(neg, 0) << what;
        } else if (kind == "negative") {
          EXPECT_EQ(pos, 0) << what;  // NSD of rank N
          EXPECT_EQ(neg, N) << what;
        } else {
          EXPECT_EQ(pos, (N + 1) / 2) << what;  // indefinite
          EXPECT_EQ(neg, N / 2) << what;
        }
      }
    }
  }
}

TEST(EigenScenario, UnconstrainedIsNotSignDefinite) {
  // The check above can fail: an unconstrained x_proj gives eigenvalues of both signs (complex in general).
  auto m = make(eigen_options("none", 8), 4);
  m->to(at::kDouble);
  const at::Tensor ev = at::linalg_eigvals(m->input_output_matrix().value().detach());
  const at::Tensor re = at::real(ev);
  const double cut = ssmlab::test::kEigenZeroRel * at::abs(ev).max().item<double>();
  EXPECT_GT((re > cut).sum().item<int64_t>(), 0);
  EXPECT_GT((re < -cut).sum().item<int64_t>(), 0);
}

TEST(EigenScenario, EffectiveWeightIsTheSeedsConstruction) {
  // Element by element from the raw X (spec §4.2): U = strict upper part of P with a unit diagonal; the C rows are
  // U; the B rows are d_i U_i with d from the first column of the C rows; the dt rows are unchanged.
  for (const std::string kind : {"positive", "negative", "mixed"}) {
    Mamba1Options o = eigen_options(kind, 5);
    auto m = make(o, 7);
    m->to(at::kDouble);
    const int64_t R = m->dt_rank(), N = 5, E = m->d_inner();
    const at::Tensor X = m->x_proj->weight.detach();
    const at::Tensor W = m->x_proj_weight().detach();
    at::Tensor want = at::zeros_like(X);
    auto softplus = [](double c) { return std::log1p(std::exp(c)); };
    for (int64_t r = 0; r < R; ++r)
      for (int64_t e = 0; e < E; ++e) want[r][e] = X[r][e].item<double>();
    for (int64_t i = 0; i < N; ++i) {
      const double sp = softplus(X[R + N + i][0].item<double>());
      const double d = kind == "positive" ? sp + 0.7 : kind == "negative" ? -sp - 0.7 : (i < 3 ? sp : -sp);
      for (int64_t e = 0; e < E; ++e) {
        const double u = e > i ? X[R + i][e].item<double>() : e == i ? 1.0 : 0.0;
        want[R + i][e] = d * u;
        want[R + N + i][e] = u;
      }
    }
    EXPECT_TRUE(all_close(W, want, ssmlab::test::kFp64Forward, kind + " effective x_proj"));
  }
  // The mixed margin option adds 0.7 there too; margin 0 removes it from positive.
  Mamba1Options o = eigen_options("mixed", 4);
  o.eigen_mixed_margin = true;
  auto m = make(o, 3);
  {
    at::NoGradGuard no_grad;
    m->x_proj->weight.narrow(0, m->dt_rank() + 4, 4).select(1, 0).fill_(-50.0);  // softplus(c) ~ 0
  }
  const at::Tensor d = ssmlab::mixers::eigen_diagonal(m->x_proj->weight.detach(), m->dt_rank(), 4,
                                                      {"mixed", 0.7, true});
  EXPECT_TRUE(all_close(d, at::tensor({0.7, 0.7, -0.7, -0.7}, at::kFloat), ssmlab::test::kFp32Forward, "margins"));
}

TEST(EigenScenario, GradientsReachPAndC) {
  auto m = make(eigen_options("mixed", 4), 5);
  m->train();
  at::manual_seed(3);
  const at::Tensor x = at::randn({2, 9, kD});
  m->forward(x).pow(2).sum().backward();
  const at::Tensor g = m->x_proj->weight.grad();
  ASSERT_TRUE(g.defined());
  const int64_t R = m->dt_rank(), N = 4;
  const at::Tensor gP = g.narrow(0, R, N), gC = g.narrow(0, R + N, N);
  const int64_t E = m->d_inner();
  EXPECT_EQ((at::triu(gP, 1).abs() > 0).sum().item<int64_t>(), N * E - N * (N + 1) / 2);  // every free entry of U
  EXPECT_EQ(at::tril(gP, 0).abs().max().item<float>(), 0.0f);  // the fixed diagonal and the unused lower part
  EXPECT_TRUE((gC.select(1, 0).abs() > 0).all().item<bool>()) << gC.select(1, 0);  // every c_i
  EXPECT_EQ(gC.narrow(1, 1, gC.size(1) - 1).abs().max().item<float>(), 0.0f);      // the rest of the C rows: unused
  EXPECT_GT(g.narrow(0, 0, R).abs().sum().item<float>(), 0.0f);                   // dt rows as usual
}

TEST(EigenScenario, FastPathsAndStepAgreeWithTheReference) {
  for (const std::string kind : {"positive", "negative", "mixed"}) {
    auto ref = make(eigen_options(kind, 6), 9), fast = make(eigen_options(kind, 6), 9, "auto");
    at::manual_seed(2);
    const at::Tensor x = at::randn({2, 33, kD});
    EXPECT_TRUE(all_close(fast->forward(x), ref->forward(x), ssmlab::test::kFp32Forward, kind + " auto vs ref"));
    // The constrained mixer equals an unconstrained one holding the effective weight (x_proj is all that changes).
    auto plain = make(eigen_options("none", 6), 9);
    {
      at::NoGradGuard no_grad;
      plain->x_proj->weight.copy_(ref->x_proj_weight());
    }
    EXPECT_TRUE(all_close(plain->forward(x), ref->forward(x), ssmlab::test::kFp32Forward, kind + " = plain"));
    // step() uses the same weight.
    ref->to(at::kDouble);
    const at::Tensor xd = x.to(at::kDouble);
    auto state = ref->init_state(2, at::kCPU);
    for (auto& [name, t] : state.tensors) t = t.to(at::kDouble);
    std::vector<at::Tensor> ys;
    for (int64_t t = 0; t < xd.size(1); ++t) ys.push_back(ref->step(xd.select(1, t), state));
    EXPECT_TRUE(all_close(at::stack(ys, 1), ref->forward(xd), ssmlab::test::kFp64Forward, kind + " step"));
  }
}

TEST(EigenScenario, CudaPathAgreesWithTheCpuReference) {
  SKIP_WITHOUT_CUDA();
  // Only x_proj's weight changes: the mixer's CUDA scan and conv see it like any other weight.
  for (const std::string kind : {"positive", "negative", "mixed"}) {
    auto ref = make(eigen_options(kind, 16), 12), gpu = make(eigen_options(kind, 16), 12, "auto");
    gpu->to(at::Device(at::kCUDA, 0));
    at::manual_seed(6);
    const at::Tensor x = at::randn({2, 65, kD});
    const at::Tensor y = gpu->forward(x.to(at::Device(at::kCUDA, 0)));
    EXPECT_TRUE(all_close(y.cpu(), ref->forward(x), ssmlab::test::kFp32Forward, kind + " cuda vs reference"));
    y.pow(2).sum().backward();
    const at::Tensor g = gpu->x_proj->weight.grad().cpu();
    const int64_t R = gpu->dt_rank(), N = 16;
    EXPECT_GT(at::triu(g.narrow(0, R, N), 1).abs().sum().item<float>(), 0.0f) << kind;
    EXPECT_TRUE((g.narrow(0, R + N, N).select(1, 0).abs() > 0).all().item<bool>()) << kind;
  }
}

TEST(EigenScenario, DefaultIsUnconstrainedAndBadScenariosFail) {
  auto m = make(Mamba1Options{}, 2);
  EXPECT_TRUE(at::equal(m->x_proj_weight(), m->x_proj->weight));
  Mamba1Options o = eigen_options("positive", 16);
  EXPECT_NO_THROW(make(o));
  o.d_state = 21;  // N > E = 20
  ssmlab::test::expect_error([&] { make(o); }, {"positive", "21", "20"});
  o = eigen_options("sideways", 4);
  ssmlab::test::expect_error([&] { make(o); }, {"sideways"});
}

// ---- SoftSort and token reordering ----

at::Tensor distinct_scores(int64_t B, int64_t L, uint64_t seed) {
  // A random order of 0, 0.1, ..., 0.1 (L - 1) per row: entries at least 0.1 apart.
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  std::vector<at::Tensor> rows;
  for (int64_t b = 0; b < B; ++b)
    rows.push_back(at::randperm(L, gen, at::TensorOptions().dtype(at::kLong)).to(at::kDouble) * 0.1);
  return at::stack(rows, 0);
}

TEST(SoftSort, RowsSumToOneAndApproachThePermutation) {
  const at::Tensor v = distinct_scores(3, 12, 1);
  const at::Tensor hard = ssmlab::mixers::softsort(v, 1.0, true).detach();
  double previous = 2.0;
  for (double tau : {10.0, 1.0, 0.1, 0.01, 0.001}) {
    const at::Tensor P = ssmlab::mixers::softsort(v, tau, false);
    ASSERT_EQ(P.sizes(), (at::IntArrayRef{3, 12, 12}));
    EXPECT_TRUE(all_close(P.sum(-1), at::ones({3, 12}, at::kDouble), ssmlab::test::kFp64Forward, "row sums"));
    EXPECT_TRUE((P >= 0).all().item<bool>());
    const double dist = (P - hard).abs().max().item<double>();
    EXPECT_LT(dist, previous) << "tau " << tau;  // closer to the permutation as the temperature falls
    previous = dist;
  }
  EXPECT_LT(previous, ssmlab::test::kSoftSortNearPermutation);
  const at::Tensor warm = ssmlab::mixers::softsort(v, 1.0, false);
  EXPECT_GT((warm - hard).abs().max().item<double>(), 0.1);  // at τ = 1 it is far from a permutation
}

TEST(SoftSort, HardIsAnExactPermutationSortingDescending) {
  at::manual_seed(5);
  const at::Tensor v = at::randn({4, 17}, at::kDouble);
  const at::Tensor P = ssmlab::mixers::softsort(v, 0.5, true).detach();
  EXPECT_TRUE(((P == 0) | (P == 1)).all().item<bool>());
  EXPECT_TRUE(at::equal(P.sum(-1), at::ones({4, 17}, at::kDouble)));
  EXPECT_TRUE(at::equal(P.sum(-2), at::ones({4, 17}, at::kDouble)));
  const at::Tensor sorted = at::matmul(P, v.unsqueeze(-1)).squeeze(-1);
  EXPECT_TRUE(at::equal(sorted, std::get<0>(v.sort(-1, /*descending=*/true))));
  // Straight-through: the hard forward carries the soft gradient.
  const at::Tensor w = v.clone().requires_grad_(true);
  (ssmlab::mixers::softsort(w, 0.5, true) * at::randn({4, 17, 17}, at::kDouble)).sum().backward();
  EXPECT_GT(w.grad().abs().sum().item<double>(), 0.0);
  EXPECT_THROW(ssmlab::mixers::softsort(v, 0.0, false), ssmlab::Error);
}

Mamba1Options reorder_options(bool hard) {
  Mamba1Options o;
  o.d_state = 4;
  o.reorder = "all";
  o.reorder_hard = hard;
  return o;
}

TEST(Reorder, ScanSeesTokensSortedByImportanceMostImportantLast) {
  // The twin without reordering has the same weights (importance is drawn last), so its x_conv is the unsorted
  // scan input; the score s = importance · dt_proj(x_proj(xc)[:R]) is computed here from the parameters.
  auto m = make(reorder_options(true), 4), twin = make(plain_options(4), 4);
  m->to(at::kDouble);
  twin->to(at::kDouble);
  at::manual_seed(8);
  const at::Tensor x = at::randn({2, 15, kD}, at::kDouble);
  ssmlab::Trace sorted_trace({"x_conv"}), plain_trace({"x_conv"});
  m->forward(x, &sorted_trace);
  twin->forward(x, &plain_trace);
  const at::Tensor xc = plain_trace.get("x_conv", 0);  // (B, L, E)
  const int64_t R = m->dt_rank();
  const at::Tensor dt_full = at::linear(at::linear(xc, m->x_proj->weight.narrow(0, 0, R)), m->dt_proj->weight,
                                        m->dt_proj->bias);
  const at::Tensor s = at::linear(dt_full, m->importance->weight).squeeze(-1);  // (B, L)
  const at::Tensor order = std::get<1>(s.sort(-1));                              // ascending importance
  const at::Tensor want = at::gather(xc, 1, order.unsqueeze(-1).expand_as(xc));
  EXPECT_TRUE(all_close(sorted_trace.get("x_conv", 0), want, ssmlab::test::kFp64Forward, "sorted scan input"));
  EXPECT_FALSE(at::equal(order, at::arange(15).expand({2, 15})));  // the check can fail: the order is not the identity
}

TEST(Reorder, GradientsReachTheImportanceWeights) {
  for (bool hard : {false, true}) {
    auto m = make(reorder_options(hard), 6);
    m->train();
    ASSERT_TRUE(m->importance);
    at::manual_seed(1);
    m->forward(at::randn({2, 11, kD})).pow(2).sum().backward();
    const at::Tensor g = m->importance->weight.grad();
    ASSERT_TRUE(g.defined()) << "hard " << hard;
    EXPECT_TRUE(at::isfinite(g).all().item<bool>()) << "hard " << hard;
    EXPECT_GT(g.abs().sum().item<float>(), 0.0f) << "hard " << hard;
  }
}

TEST(Reorder, QuirksAreOptionsAndDecodingIsRefused) {
  at::manual_seed(2);
  const at::Tensor x = at::randn({2, 13, kD}, at::kDouble);
  auto run = [&](bool unpermute, bool permute_z) {
    Mamba1Options o = reorder_options(true);
    o.reorder_unpermute = unpermute;
    o.reorder_permute_z = permute_z;
    auto m = make(o, 3);
    m->to(at::kDouble);
    return m->forward(x);
  };
  const at::Tensor seed_like = run(false, false), unpermuted = run(true, false), z_too = run(false, true);
  const at::Tensor both = run(true, true);
  EXPECT_GT((seed_like - unpermuted).abs().max().item<double>(), 1e-6);
  EXPECT_GT((seed_like - z_too).abs().max().item<double>(), 1e-6);
  // Hard, z permuted and output un-permuted: the row of a token holds that token's own gated output, so the
  // un-permuted output is the permuted-z output mapped back. Check the map: sorting `both` gives `z_too`.
  auto m = make(reorder_options(true), 3);
  m->to(at::kDouble);
  ssmlab::Trace trace({"x_conv"});
  m->forward(x, &trace);
  auto twin = make(plain_options(4), 3);
  twin->to(at::kDouble);
  ssmlab::Trace plain({"x_conv"});
  twin->forward(x, &plain);
  const at::Tensor P = m->reorder_permutation(plain.get("x_conv", 0)).detach();  // (B, L, L), exact
  // out_proj is linear without bias: P · ((P^T y) W^T) = y W^T.
  EXPECT_TRUE(all_close(at::matmul(P, both), z_too, ssmlab::test::kFp64Forward, "unpermute = P^T"));
  auto state = m->init_state(2, at::kCPU);
  ssmlab::test::expect_error([&] { m->step(x.select(1, 0), state); }, {"reorder"});
  ssmlab::test::expect_error([&] { m->forward_stateful(x, state); }, {"reorder"});
  EXPECT_FALSE(m->supports_stateful());
}

TEST(Reorder, FirstBlockOfTheSequenceClassifier) {
  ssmlab::models::ModelOptions o;
  o.mixer = "mamba1";
  o.d_model = 12;
  o.n_layers = 3;
  o.mixers.mamba1.d_state = 4;
  o.mixers.mamba1.reorder = "first";
  auto model = std::make_shared<ssmlab::models::SequenceClassifierImpl>(o, 1, 10, "auto", 5);
  std::vector<bool> has;
  for (auto& b : model->blocks) has.push_back(static_cast<bool>(std::dynamic_pointer_cast<Mamba1Impl>(b->mixer)->importance));
  EXPECT_EQ(has, (std::vector<bool>{true, false, false}));
  model->train();
  at::manual_seed(4);
  const at::Tensor logits = model->forward(at::rand({3, 20, 1}));
  EXPECT_EQ(logits.sizes(), (at::IntArrayRef{3, 10}));
  logits.logsumexp(-1).sum().backward();
  const auto m0 = std::dynamic_pointer_cast<Mamba1Impl>(model->blocks[0]->mixer);
  EXPECT_GT(m0->importance->weight.grad().abs().sum().item<float>(), 0.0f);
  // The default model has no importance parameters (unchanged parameter set).
  o.mixers.mamba1.reorder = "off";
  auto plain = std::make_shared<ssmlab::models::SequenceClassifierImpl>(o, 1, 10, "auto", 5);
  EXPECT_EQ(model->parameters().size(), plain->parameters().size() + 1);
}

}  // namespace

}  // namespace mixers_test_mamba1_dynamics
