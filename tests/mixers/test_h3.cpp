// H3 (spec §1.4): forward against a direct time-domain computation written here (FIR shift loop, per-head
// kernel from std::complex powers, direct truncated convolution), with l_max < L as in SB's MQAR config;
// the step loop reproduces the truncated kernel; the zoology init.
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <complex>

#include "ssmlab/core/error.h"
#include "ssmlab/mixers/h3.h"
#include "tolerances.h"

namespace mixers_test_h3 {

namespace {

using ssmlab::mixers::H3Impl;
using ssmlab::mixers::H3Options;
using cd = std::complex<double>;

std::shared_ptr<H3Impl> make(H3Options o, int64_t d_model, uint64_t seed) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  auto m = std::make_shared<H3Impl>(o, d_model, gen);
  m->to(at::kDouble);
  return m;
}

// Bilinear diagonal-SSM kernel K[l, h] = 2 Re sum_m C dB dA^l.
at::Tensor bilinear_kernel(const H3Impl& m, int64_t T) {
  const auto& s = *m.ssm;
  const int64_t H = s.log_dt.size(0), M = s.modes();
  at::Tensor K = at::zeros({T, H}, at::kDouble);
  for (int64_t h = 0; h < H; ++h)
    for (int64_t j = 0; j < M; ++j) {
      const double d = std::exp(s.log_dt[h].item<double>());
      const cd A(-std::exp(s.log_A_real[h][j].item<double>()), s.A_imag[h][j].item<double>());
      const cd C(s.C[h][j][0].item<double>(), s.C[h][j][1].item<double>());
      const cd dA = (1.0 + d * A / 2.0) / (1.0 - d * A / 2.0), dB = d / (1.0 - d * A / 2.0);
      for (int64_t l = 0; l < T; ++l) K[l][h] += 2.0 * (C * dB * std::pow(dA, static_cast<double>(l))).real();
    }
  return K;
}

at::Tensor direct_h3(const H3Impl& m, const at::Tensor& x, int64_t l_max, int64_t N, int64_t P) {
  at::NoGradGuard no_grad;
  const int64_t B = x.size(0), L = x.size(1), D = x.size(2), H = D / P;
  const at::Tensor q = at::linear(x, m.q_proj->weight, m.q_proj->bias);
  const at::Tensor k = at::linear(x, m.k_proj->weight, m.k_proj->bias);
  const at::Tensor v = at::linear(x, m.v_proj->weight, m.v_proj->bias);
  at::Tensor ks = k * m.shift_D;
  for (int64_t t = 0; t < L; ++t)
    for (int64_t j = 0; j < std::min(N, t + 1); ++j) ks.select(1, t) += m.shift_C.select(1, j) * k.select(1, t - j);
  const at::Tensor kv = ks.view({B, L, H, P, 1}) * v.view({B, L, H, 1, P});
  const int64_t T = l_max > 0 ? std::min(L, l_max) : L;
  const at::Tensor K = bilinear_kernel(m, T);
  at::Tensor s = kv * m.D.view({H, 1, 1});
  for (int64_t t = 0; t < L; ++t)
    for (int64_t l = 0; l < std::min(T, t + 1); ++l) s.select(1, t) += K[l].view({H, 1, 1}) * kv.select(1, t - l);
  const at::Tensor y = (q.view({B, L, H, P, 1}) * s).sum(-2).reshape({B, L, D});
  return at::linear(y, m.output_linear->weight, m.output_linear->bias);
}

TEST(H3, ForwardEqualsDirectComputation) {
  for (int64_t l_max : {0, 9}) {
    H3Options o;
    o.d_state = 6;
    o.head_dim = 2;
    o.l_max = l_max;
    auto m = make(o, 8, 4);
    {
      at::NoGradGuard no_grad;
      m->ssm->log_dt.fill_(-1.0);  // dt ~ 0.37: the kernel changes visibly over the 9 taps
    }
    at::manual_seed(1);
    const at::Tensor x = at::randn({2, 23, 8}, at::kDouble);
    EXPECT_TRUE(ssmlab::test::all_close(m->forward(x), direct_h3(*m, x, l_max, 6, 2), ssmlab::test::kFp64Forward,
                                        "h3 vs direct"))
        << "l_max " << l_max;
  }
}

TEST(H3, TruncatedKernelMattersAndStepReproducesIt) {
  H3Options o;
  o.d_state = 4;
  o.head_dim = 2;
  o.l_max = 5;
  auto m = make(o, 6, 2);
  {
    at::NoGradGuard no_grad;
    m->ssm->log_dt.fill_(-2.0);  // slow decay: taps beyond 5 are far from zero
  }
  at::manual_seed(3);
  const at::Tensor x = at::randn({2, 19, 6}, at::kDouble);
  const at::Tensor y = m->forward(x);
  auto state = m->init_state(2, at::kCPU);
  for (auto& [name, t] : state.tensors) t = t.to(at::kDouble);
  std::vector<at::Tensor> ys;
  for (int64_t t = 0; t < 19; ++t) ys.push_back(m->step(x.select(1, t), state));
  EXPECT_TRUE(ssmlab::test::all_close(at::stack(ys, 1), y, ssmlab::test::kFp64Forward, "step vs truncated forward"));
  // The cap changes the output after l_max steps (so the check above exercises the window).
  H3Options full = o;
  full.l_max = 0;
  auto m2 = make(full, 6, 2);
  {
    at::NoGradGuard no_grad;
    m2->ssm->log_dt.fill_(-2.0);
  }
  const at::Tensor y2 = m2->forward(x);
  EXPECT_TRUE(ssmlab::test::all_close(y2.narrow(1, 0, 5), y.narrow(1, 0, 5), ssmlab::test::kFp64Forward, "prefix"));
  EXPECT_GT((y2 - y).abs().max().item<double>(), 1e-4);
}

TEST(H3, ShapesStateAndErrors) {
  H3Options o;
  o.d_state = 64;
  o.head_dim = 2;
  o.l_max = 1025;
  auto m = make(o, 32, 1);  // the attack model's layer (spec §2.4)
  EXPECT_EQ(m->state_size(), 32 * 63 + 16 * 4 * (64 + 1025));
  EXPECT_EQ(m->shift_C.sizes(), (at::IntArrayRef{32, 64}));
  EXPECT_EQ(m->ssm->log_dt.sizes(), (at::IntArrayRef{16}));
  EXPECT_LE(m->shift_C.abs().max().item<double>(), 1.0 / 8.0 + 1e-9);  // kaiming-uniform(sqrt 5) on (D, N)
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(1);
  H3Options bad = o;
  bad.head_dim = 3;
  EXPECT_THROW(H3Impl(bad, 32, gen), ssmlab::Error);
}

}  // namespace

}  // namespace mixers_test_h3
