// The diagonal SSM behind S4D and H3: the Vandermonde kernel against a hand-written per-mode recurrence with
// std::complex (ZOH and bilinear), and the FFT causal convolution against a direct double loop.
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <complex>

#include "ssmlab/core/error.h"
#include "ssmlab/mixers/diag_ssm.h"
#include "tolerances.h"

namespace mixers_test_diag_ssm {

namespace {

using ssmlab::mixers::DiagSsmImpl;
using cd = std::complex<double>;

// K[l, h] from the definitions: run h_t = dA h_{t-1} + dB x_t on the impulse x = (1, 0, 0, ...), y = 2 Re C h.
at::Tensor recurrence_kernel(const DiagSsmImpl& ssm, int64_t T, bool zoh) {
  const int64_t H = ssm.log_dt.size(0), M = ssm.modes();
  auto dt = ssm.log_dt.detach().to(at::kDouble).exp();
  auto ar = ssm.log_A_real.detach().to(at::kDouble).exp().neg();
  auto ai = ssm.A_imag.detach().to(at::kDouble);
  auto c = ssm.C.detach().to(at::kDouble);
  at::Tensor K = at::zeros({T, H}, at::kDouble);
  for (int64_t h = 0; h < H; ++h) {
    for (int64_t m = 0; m < M; ++m) {
      const cd A(ar[h][m].item<double>(), ai[h][m].item<double>());
      const cd C(c[h][m][0].item<double>(), c[h][m][1].item<double>());
      const double d = dt[h].item<double>();
      const cd dA = zoh ? std::exp(d * A) : (1.0 + d * A / 2.0) / (1.0 - d * A / 2.0);
      const cd dB = zoh ? (std::exp(d * A) - 1.0) / A : d / (1.0 - d * A / 2.0);
      cd state = 0.0;
      for (int64_t t = 0; t < T; ++t) {
        state = dA * state + dB * (t == 0 ? 1.0 : 0.0);
        K[t][h] += 2.0 * (C * state).real();
      }
    }
  }
  return K;
}

TEST(DiagSsm, KernelEqualsRecurrence) {
  for (const std::string disc : {"zoh", "bilinear"}) {
    at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(3);
    DiagSsmImpl ssm(/*channels=*/3, /*d_state=*/8, disc, 1e-3, 0.1, gen);
    {
      at::NoGradGuard no_grad;  // larger steps so the kernel visibly decays and rotates within T
      ssm.log_dt.copy_(at::tensor({-0.5f, -1.5f, 0.3f}));
    }
    const at::Tensor K = ssm.kernel(37, at::kDouble);
    EXPECT_TRUE(ssmlab::test::all_close(K, recurrence_kernel(ssm, 37, disc == "zoh"), ssmlab::test::kFp64Forward,
                                        "kernel " + disc));
  }
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(3);
  EXPECT_THROW(DiagSsmImpl(3, 7, "zoh", 1e-3, 0.1, gen), ssmlab::Error);
  EXPECT_THROW(DiagSsmImpl(3, 8, "euler", 1e-3, 0.1, gen), ssmlab::Error);
}

TEST(DiagSsm, InitIsS4dLin) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(1);
  DiagSsmImpl ssm(64, 8, "zoh", 1e-3, 0.1, gen);
  EXPECT_TRUE(at::allclose(ssm.log_A_real.exp(), at::full({64, 4}, 0.5f)));
  EXPECT_TRUE(at::allclose(ssm.A_imag[5], at::tensor({0.0f, 1.0f, 2.0f, 3.0f}) * static_cast<float>(M_PI)));
  EXPECT_GE(ssm.log_dt.min().item<double>(), std::log(1e-3) - 1e-6);
  EXPECT_LE(ssm.log_dt.max().item<double>(), std::log(0.1) + 1e-6);
  EXPECT_NEAR(ssm.C.var().item<double>(), 0.5, 0.1);
}

TEST(DiagSsm, FftConvEqualsDirectConvolution) {
  at::manual_seed(2);
  for (auto [L, T] : {std::pair<int64_t, int64_t>{1, 1}, {7, 3}, {63, 63}, {50, 17}, {20, 31}}) {
    const at::Tensor u = at::randn({2, L, 3}, at::kDouble), k = at::randn({T, 3}, at::kDouble);
    at::Tensor direct = at::zeros_like(u);
    for (int64_t t = 0; t < L; ++t)
      for (int64_t l = 0; l < std::min(T, t + 1); ++l) direct.select(1, t) += k[l] * u.select(1, t - l);
    EXPECT_TRUE(ssmlab::test::all_close(ssmlab::mixers::fft_causal_conv(u, k), direct, ssmlab::test::kFp64Forward,
                                        "fft conv"))
        << "L " << L << " T " << T;
  }
}

}  // namespace

}  // namespace mixers_test_diag_ssm
