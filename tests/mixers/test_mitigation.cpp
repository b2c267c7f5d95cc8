// The Mitigable interface (mixers/mitigation.h, spec §3.6): Mamba-1's RRI on a hand-computed recurrence (also
// across the pieces its rescaling needs, and in step()), Mamba-2's seed form of state normalisation (spec §6.9)
// by hand, per-head thresholds turning state normalisation on by themselves, set/get round trips and the
// errors for mitigations a mixer does not have. (Mamba-2's RRI, min-form state norm and window by hand:
// tests/mixers/test_mamba2.cpp.)
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <cmath>

#include "ssmlab/core/error_kinds.h"
#include "ssmlab/mixers/mamba1.h"
#include "ssmlab/mixers/mamba2.h"
#include "tolerances.h"

namespace mixers_test_mitigation {

namespace {

using namespace ssmlab::mixers;
using ssmlab::test::all_close;

std::shared_ptr<Mamba1Impl> mitigation_m1(Mamba1Options o, uint64_t seed) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  auto m = std::make_shared<Mamba1Impl>(o, 12, "reference", gen);
  m->to(at::kDouble);
  return m;
}

std::shared_ptr<Mamba2Impl> mitigation_m2(Mamba2Options o, uint64_t seed) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  auto m = std::make_shared<Mamba2Impl>(o, 12, "reference", gen);
  m->to(at::kDouble);
  return m;
}

State state64(const MixerImpl& m, int64_t batch) {
  State s = m.init_state(batch, at::kCPU);
  for (auto& [name, t] : s.tensors)
    if (name != "pos") t = t.to(at::kDouble);
  return s;
}

Mamba2Options m2_small() {
  Mamba2Options o;
  o.d_state = 5;
  o.head_dim = 6;  // E 24 -> H 4
  o.chunk_size = 4;
  return o;
}

// Mamba-1 RRI: S_t = λ_α exp(Δ_t A) S_{t-1} + Δ_t x_t ⊗ λ_B B_t, built by hand from the plain model's trace
// (dt, x_conv and B do not depend on the state), compared with the final state of the model with RRI --
// also with λ_α = 0.5, where the rescaling cuts the call into pieces of 28 tokens.
TEST(Mitigation, Mamba1RriIsTheHandRecurrence) {
  Mamba1Options o;
  o.d_state = 4;
  for (double lam : {0.97, 0.5}) {
    auto plain = mitigation_m1(o, 3);
    auto m = mitigation_m1(o, 3);
    Mitigations mit = m->mitigations();
    mit.decay_mult = lam;
    mit.b_mult = 0.75;
    m->set_mitigations(mit);
    const int64_t L = 70;
    const at::Tensor x = at::randn({2, L, 12}, at::kDouble);
    ssmlab::Trace trace({"dt", "x_conv", "B"});
    plain->forward(x, &trace);
    const at::Tensor dt = trace.get("dt", 0), xc = trace.get("x_conv", 0), B = trace.get("B", 0);
    const at::Tensor A = plain->transition->A().detach().to(at::kDouble);  // (E, N)
    at::Tensor S = at::zeros({2, 24, 4}, at::kDouble);
    for (int64_t t = 0; t < L; ++t) {
      const at::Tensor d = dt.select(1, t).unsqueeze(-1);                          // (B, E, 1)
      S = lam * at::exp(d * A) * S + d * xc.select(1, t).unsqueeze(-1) * (0.75 * B.select(1, t)).unsqueeze(1);
    }
    State s = state64(*m, 2);
    const at::Tensor y = m->forward_stateful(x, s);
    EXPECT_TRUE(all_close(s.at("ssm"), S, ssmlab::test::kFp64Forward, "RRI state")) << "lambda " << lam;
    // forward (no state), a step loop and uneven stateful pieces give the same outputs.
    EXPECT_TRUE(all_close(m->forward(x), y, ssmlab::test::kFp64Forward, "forward")) << lam;
    State s2 = state64(*m, 2);
    std::vector<at::Tensor> ys = {m->forward_stateful(x.narrow(1, 0, 5), s2)};
    for (int64_t t = 5; t < 9; ++t) ys.push_back(m->step(x.select(1, t), s2).unsqueeze(1));
    ys.push_back(m->forward_stateful(x.narrow(1, 9, L - 9), s2));
    EXPECT_TRUE(all_close(at::cat(ys, 1), y, ssmlab::test::kFp64Forward, "pieces and steps")) << lam;
    EXPECT_GT((y - plain->forward(x)).abs().max().item<double>(), 1e-6);
  }
}

TEST(Mitigation, Mamba1HasRriOnly) {
  auto m = mitigation_m1(Mamba1Options{}, 1);
  EXPECT_EQ(m->mitigations_supported(), std::vector<std::string>{"rri"});
  Mitigations mit;
  mit.window = 8;
  EXPECT_THROW(m->set_mitigations(mit), ssmlab::ConfigError);
  mit.window = 0;
  mit.state_norm_tau = at::ones({4});
  EXPECT_THROW(m->set_mitigations(mit), ssmlab::ConfigError);
  mit.state_norm_tau = at::Tensor();
  mit.decay_mult = 0.0;
  EXPECT_THROW(m->set_mitigations(mit), ssmlab::ConfigError);
}

// The seed code's state normalisation (spec §6.9): after each segment, S <- S·‖S‖_F/τ where ‖S‖_F > τ (it
// grows the state). By hand from a plain model, as tests/mixers/test_mamba2.cpp does for the min form.
TEST(Mitigation, Mamba2SeedStateNormByHand) {
  Mamba2Options o = m2_small();
  o.interventions.segment = 8;
  o.interventions.state_norm_tau = 0.05;
  o.interventions.state_norm_form = "seed";
  auto m = mitigation_m2(o, 6), plain = mitigation_m2(m2_small(), 6);
  const at::Tensor x = at::randn({2, 16, 12}, at::kDouble) * 3;
  const at::Tensor y = m->forward(x);
  State s = state64(*plain, 2);
  const at::Tensor y1 = plain->forward_stateful(x.narrow(1, 0, 8), s);
  at::Tensor S = s.at("ssm").clone();
  int64_t scaled = 0;
  for (int64_t b = 0; b < 2; ++b)
    for (int64_t h = 0; h < m->n_heads(); ++h) {
      const double norm = std::sqrt(S[b][h].pow(2).sum().item<double>());
      if (norm > 0.05) {
        S[b][h] *= norm / 0.05;
        ++scaled;
      }
    }
  ASSERT_GT(scaled, 0) << "the threshold must bind somewhere";
  s["ssm"] = S;
  const at::Tensor y2 = plain->forward_stateful(x.narrow(1, 8, 8), s);
  EXPECT_TRUE(all_close(y, at::cat({y1, y2}, 1), ssmlab::test::kFp64Forward, "seed state norm"));
}

// Per-head thresholds set through the interface turn state normalisation on (no scalar τ needed) and equal
// the scalar τ of the config; the getter returns what was set; the window rounds the segment to a divisor.
TEST(Mitigation, Mamba2SetAndGet) {
  Mamba2Options o = m2_small();
  o.interventions.segment = 8;
  auto m = mitigation_m2(o, 8);
  Mamba2Options os = o;
  os.interventions.state_norm_tau = 0.05;
  auto scalar = mitigation_m2(os, 8);
  const at::Tensor x = at::randn({2, 24, 12}, at::kDouble) * 3;
  const at::Tensor y0 = m->forward(x);
  Mitigations mit = m->mitigations();
  EXPECT_FALSE(mit.state_norm_tau.defined());
  mit.state_norm_tau = at::full({4}, 0.05, at::kDouble);
  m->set_mitigations(mit);
  const at::Tensor y = m->forward(x);
  EXPECT_TRUE(all_close(y, scalar->forward(x), ssmlab::test::kFp64Forward, "per-head = scalar tau"));
  EXPECT_GT((y - y0).abs().max().item<double>(), 1e-6);
  EXPECT_TRUE(all_close(m->mitigations().state_norm_tau, mit.state_norm_tau, ssmlab::test::kFp64Forward, "get"));
  // The scalar config τ reads back per head.
  EXPECT_TRUE(all_close(scalar->mitigations().state_norm_tau, at::full({4}, 0.05, at::kDouble),
                        ssmlab::test::kFp64Forward, "scalar get"));
  mit.window = 12;  // not a multiple of segment 8: segment becomes 4
  m->set_mitigations(mit);
  EXPECT_EQ(m->options().interventions.segment, 4);
  EXPECT_EQ(m->mitigations().window, 12);
  m->forward(x);
  // Back to nothing: the plain output again.
  m->set_mitigations(Mitigations{});
  EXPECT_TRUE(all_close(m->forward(x), y0, ssmlab::test::kFp64Forward, "restored"));
  Mitigations bad;
  bad.state_norm_tau = at::ones({3}, at::kDouble);
  EXPECT_THROW(m->set_mitigations(bad), ssmlab::ConfigError);
  bad.state_norm_tau = at::Tensor();
  bad.state_norm_form = "max";
  EXPECT_THROW(m->set_mitigations(bad), ssmlab::ConfigError);
}

}  // namespace

}  // namespace mixers_test_mitigation
