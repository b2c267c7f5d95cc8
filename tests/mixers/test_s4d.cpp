// S4D (spec §1.5): forward against a direct time-domain convolution with the kernel built here from the
// definitions (ZOH and bilinear); a truncated kernel (l_max) is reproduced by the step loop.
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <complex>

#include "ssmlab/mixers/s4d.h"
#include "tolerances.h"

namespace mixers_test_s4d {

namespace {

using ssmlab::mixers::S4dImpl;
using ssmlab::mixers::S4dOptions;
using cd = std::complex<double>;

std::shared_ptr<S4dImpl> make(S4dOptions o, int64_t d_model, uint64_t seed) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  auto m = std::make_shared<S4dImpl>(o, d_model, gen);
  m->to(at::kDouble);
  at::NoGradGuard no_grad;
  m->ssm->log_dt.uniform_(-2.0, 0.0);  // visible decay and rotation within a few steps
  return m;
}

at::Tensor direct_s4d(const S4dImpl& m, const at::Tensor& x, bool zoh, int64_t l_max) {
  at::NoGradGuard no_grad;
  const auto& s = *m.ssm;
  const int64_t L = x.size(1), H = x.size(2), M = s.modes(), T = l_max > 0 ? std::min(L, l_max) : L;
  at::Tensor K = at::zeros({T, H}, at::kDouble);
  for (int64_t h = 0; h < H; ++h)
    for (int64_t j = 0; j < M; ++j) {
      const double d = std::exp(s.log_dt[h].item<double>());
      const cd A(-std::exp(s.log_A_real[h][j].item<double>()), s.A_imag[h][j].item<double>());
      const cd C(s.C[h][j][0].item<double>(), s.C[h][j][1].item<double>());
      const cd dA = zoh ? std::exp(d * A) : (1.0 + d * A / 2.0) / (1.0 - d * A / 2.0);
      const cd dB = zoh ? (dA - 1.0) / A : d / (1.0 - d * A / 2.0);
      for (int64_t l = 0; l < T; ++l) K[l][h] += 2.0 * (C * dB * std::pow(dA, static_cast<double>(l))).real();
    }
  at::Tensor y = x * m.D;
  for (int64_t t = 0; t < L; ++t)
    for (int64_t l = 0; l < std::min(T, t + 1); ++l) y.select(1, t) += K[l] * x.select(1, t - l);
  return at::glu(at::linear(at::gelu(y), m.output_linear->weight, m.output_linear->bias), -1);
}

TEST(S4d, ForwardEqualsDirectConvolution) {
  for (const std::string disc : {"zoh", "bilinear"})
    for (int64_t l_max : {0, 6}) {
      S4dOptions o;
      o.d_state = 6;
      o.discretization = disc;
      o.l_max = l_max;
      auto m = make(o, 5, 2);
      at::manual_seed(7);
      const at::Tensor x = at::randn({2, 21, 5}, at::kDouble);
      EXPECT_TRUE(ssmlab::test::all_close(m->forward(x), direct_s4d(*m, x, disc == "zoh", l_max),
                                          ssmlab::test::kFp64Forward, "s4d vs direct"))
          << disc << " l_max " << l_max;
    }
}

TEST(S4d, StepReproducesTruncatedKernel) {
  S4dOptions o;
  o.d_state = 4;
  o.l_max = 4;
  auto m = make(o, 3, 5);
  at::manual_seed(8);
  const at::Tensor x = at::randn({2, 13, 3}, at::kDouble);
  const at::Tensor y = m->forward(x);
  auto state = m->init_state(2, at::kCPU);
  for (auto& [name, t] : state.tensors) t = t.to(at::kDouble);
  std::vector<at::Tensor> ys;
  for (int64_t t = 0; t < 13; ++t) ys.push_back(m->step(x.select(1, t), state));
  EXPECT_TRUE(ssmlab::test::all_close(at::stack(ys, 1), y, ssmlab::test::kFp64Forward, "step vs forward"));
  EXPECT_EQ(m->state_size(), 3 * (4 + 4));
}

}  // namespace

}  // namespace mixers_test_s4d
