// RWKV-4 time mixer (spec §1.6): the whole mixer against the unstabilised formula written here in float64
// (token shift, mixes, closed-form WKV, sigmoid gate); the fused-kernel and reference backends agree; the
// paper's init including the n_layer = 12 quirk.
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <cmath>

#include "ssmlab/core/error.h"
#include "ssmlab/mixers/rwkv4.h"
#include "tolerances.h"

namespace mixers_test_rwkv4 {

namespace {

using ssmlab::mixers::Rwkv4Impl;
using ssmlab::mixers::Rwkv4Options;

std::shared_ptr<Rwkv4Impl> make(int64_t d_model, int64_t layer, int64_t n_layers, const std::string& backend,
                                Rwkv4Options o = {}, uint64_t seed = 1) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  return std::make_shared<Rwkv4Impl>(o, d_model, layer, n_layers, backend, gen);
}

at::Tensor formula(const Rwkv4Impl& m, const at::Tensor& x) {
  at::NoGradGuard no_grad;
  const int64_t L = x.size(1);
  const at::Tensor xx = at::cat({at::zeros_like(x.narrow(1, 0, 1)), x.narrow(1, 0, L - 1)}, 1);
  auto mix = [&](const at::Tensor& mu) { return x * mu + xx * (1 - mu); };
  const at::Tensor k = at::linear(mix(m.time_mix_k), m.key->weight);
  const at::Tensor v = at::linear(mix(m.time_mix_v), m.value->weight);
  const at::Tensor r = at::linear(mix(m.time_mix_r), m.receptance->weight);
  const at::Tensor w = -at::exp(m.time_decay), u = m.time_first;
  std::vector<at::Tensor> ys;
  for (int64_t t = 0; t < L; ++t) {
    at::Tensor num = at::exp(u + k.select(1, t)) * v.select(1, t), den = at::exp(u + k.select(1, t));
    for (int64_t i = 0; i < t; ++i) {
      const at::Tensor e = at::exp(w * static_cast<double>(t - 1 - i) + k.select(1, i));
      num = num + e * v.select(1, i);
      den = den + e;
    }
    ys.push_back(num / den);
  }
  return at::linear(at::sigmoid(r) * at::stack(ys, 1), m.output->weight);
}

TEST(Rwkv4, ForwardEqualsUnstabilisedFormula) {
  for (const std::string backend : {"reference", "auto"}) {
    auto m = make(6, 1, 3, backend);
    m->to(at::kDouble);
    at::manual_seed(2);
    const at::Tensor x = at::randn({2, 17, 6}, at::kDouble);
    EXPECT_TRUE(ssmlab::test::all_close(m->forward(x), formula(*m, x), ssmlab::test::kFp64Forward, backend));
  }
}

TEST(Rwkv4, FusedAndReferenceBackendsAgreeWithGradients) {
  auto a = make(70, 2, 3, "auto"), r = make(70, 2, 3, "reference");
  at::manual_seed(3);
  const at::Tensor x = at::randn({2, 65, 70});
  const at::Tensor ya = a->forward(x), yr = r->forward(x);
  EXPECT_TRUE(ssmlab::test::all_close(ya, yr, ssmlab::test::kFp32Forward, "y"));
  ya.pow(2).sum().backward();
  yr.pow(2).sum().backward();
  auto pa = a->named_parameters(), pr = r->named_parameters();
  for (size_t i = 0; i < pa.size(); ++i)
    EXPECT_TRUE(ssmlab::test::all_close(pa[i].value().grad(), pr[i].value().grad(), ssmlab::test::kFp32Grad,
                                        pa[i].key()));
}

TEST(Rwkv4, PaperInitWithTheTwelveLayerQuirk) {
  const int64_t C = 64, layer = 1;
  auto m = make(C, layer, /*n_layers=*/3, "reference");  // SB's 3-layer attack model; the init reads n = 12
  const double n = 12.0, l = layer;
  for (int64_t c : {int64_t{0}, int64_t{17}, C - 1}) {
    const double x = static_cast<double>(c);
    EXPECT_NEAR(m->time_decay[c].item<double>(), -5.0 + 8.0 * std::pow(x / (C - 1), 0.7 + 1.3 * l / (n - 1)), 1e-5);
    EXPECT_NEAR(m->time_first[c].item<double>(), std::log(0.3) + 0.5 * (((c + 1) % 3) - 1), 1e-6);
    EXPECT_NEAR(m->time_mix_k[c].item<double>(), std::pow(x / C, 1.0 - l / n), 1e-6);
    EXPECT_NEAR(m->time_mix_v[c].item<double>(), std::pow(x / C, 1.0 - l / n) + 0.3 * l / (n - 1), 1e-6);
    EXPECT_NEAR(m->time_mix_r[c].item<double>(), std::pow(x / C, 0.5 * (1.0 - l / n)), 1e-6);
  }
  EXPECT_NEAR(m->time_decay[0].item<double>(), -5.0, 1e-6);
  EXPECT_NEAR(m->time_decay[C - 1].item<double>(), 3.0, 1e-5);
  // init_n_layers = 0 uses the model's depth instead: layer 1 of 3 gives a different decay curve.
  Rwkv4Options own;
  own.init_n_layers = 0;
  auto m3 = make(C, layer, 3, "reference", own);
  EXPECT_NEAR(m3->time_decay[17].item<double>(), -5.0 + 8.0 * std::pow(17.0 / 63.0, 0.7 + 1.3 * 0.5), 1e-5);
  EXPECT_GT(std::abs(m3->time_decay[17].item<double>() - m->time_decay[17].item<double>()), 1e-2);
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(1);
  EXPECT_THROW(Rwkv4Impl(own, C, 0, 1, "reference", gen), ssmlab::Error);
}

}  // namespace

}  // namespace mixers_test_rwkv4
