// Polarized Mamba (spec §1.2): A layout, widths, and on random inputs the defining property — state channel
// 0 never decays (its state is the running sum of its inputs) and the last channel never carries over (its
// state is only the current input) — for the three variants.
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include "ssmlab/core/error.h"
#include "ssmlab/mixers/mamba1.h"
#include "ssmlab/mixers/transitions/transition.h"
#include "tolerances.h"

namespace mixers_test_polarized {

namespace {

using ssmlab::mixers::Mamba1Impl;
using ssmlab::mixers::Mamba1Options;

std::shared_ptr<Mamba1Impl> make(const std::string& transition, int64_t d_state, uint64_t seed = 1,
                                 const std::string& backend = "reference") {
  Mamba1Options o;
  o.d_state = d_state;
  o.transition = transition;
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  return std::make_shared<Mamba1Impl>(o, /*d_model=*/10, backend, gen);
}

TEST(Polarized, ALayoutAndWidths) {
  struct Case {
    std::string kind;
    int64_t ones, zeros;
  };
  for (const Case& c : {Case{"polarized", 1, 1}, Case{"polarized_one", 1, 0}, Case{"polarized_zero", 0, 1}}) {
    auto m = make(c.kind, 5);
    const int64_t E = m->d_inner(), N = 5 + c.ones + c.zeros;
    EXPECT_EQ(m->state_dim(), N) << c.kind;
    EXPECT_EQ(m->transition->state_dim(), N) << c.kind;
    EXPECT_EQ(m->x_proj->weight.size(0), m->dt_rank() + 2 * N) << c.kind;  // B and C learned for every channel
    EXPECT_EQ(m->state_size(), E * (N + 3)) << c.kind;
    EXPECT_EQ(m->init_state(2, at::kCPU).at("ssm").sizes(), (at::IntArrayRef{2, E, N})) << c.kind;
    const at::Tensor A = m->transition->A();
    ASSERT_EQ(A.sizes(), (at::IntArrayRef{E, N})) << c.kind;
    if (c.ones) {
      EXPECT_TRUE(at::all(A.select(1, 0) == 0.0).item<bool>()) << c.kind;
    }
    if (c.zeros) {
      EXPECT_TRUE(at::all(A.select(1, N - 1) == -100.0).item<bool>()) << c.kind;
    }
    const at::Tensor learned = A.narrow(1, c.ones, 5);
    EXPECT_TRUE(ssmlab::test::all_close(learned, -at::arange(1, 6, at::kFloat).expand({E, 5}),
                                        ssmlab::test::kFp32Forward, "learned A"))
        << c.kind;
    // Only A_log is a transition parameter: the polarized values are constants.
    EXPECT_EQ(m->transition->parameters().size(), 1u) << c.kind;
    EXPECT_EQ(m->transition->parameters()[0].sizes(), (at::IntArrayRef{E, 5})) << c.kind;
  }
  EXPECT_THROW(make("polarized_both", 5), ssmlab::Error);
}

// Runs the step loop in float64 on random inputs and returns the states after every step, (B, L, E, N),
// plus the traced dt (B, L, E), B (B, L, N) and conv output x (B, L, E) of the same input.
struct StepRun {
  at::Tensor states, dt, Bm, x;
};
StepRun run_steps(Mamba1Impl& m, const at::Tensor& input) {
  ssmlab::Trace trace({"dt", "B", "x_conv"});
  m.forward(input, &trace);
  auto state = m.init_state(input.size(0), at::kCPU);
  for (auto& [name, t] : state.tensors) t = t.to(at::kDouble);
  std::vector<at::Tensor> hs;
  for (int64_t t = 0; t < input.size(1); ++t) {
    m.step(input.select(1, t), state);
    hs.push_back(state.at("ssm").clone());
  }
  return {at::stack(hs, 1), trace.get("dt", 0), trace.get("B", 0), trace.get("x_conv", 0)};
}

TEST(Polarized, OneChannelNeverDecaysZeroChannelNeverCarries) {
  for (const std::string kind : {"polarized", "polarized_one", "polarized_zero"}) {
    auto m = make(kind, 6, 7);
    m->to(at::kDouble);
    {
      // zoology's init (spec §1.1) zeroes the dt bias: dt ~ softplus(small) ~ 0.69, so exp(-100 dt) ~ 1e-30.
      at::NoGradGuard no_grad;
      m->dt_proj->bias.zero_();
      m->dt_proj->weight.normal_(0.0, 0.02);
    }
    at::manual_seed(11);
    const at::Tensor input = at::randn({3, 41, 10}, at::kDouble) * 2.0;
    const StepRun r = run_steps(*m, input);
    const int64_t N = m->state_dim();
    // The input term of state n at step t: dt_t[e] * B_t[n] * x_t[e]   (B, L, E, N).
    const at::Tensor drive = (r.dt * r.x).unsqueeze(-1) * r.Bm.unsqueeze(2);
    if (kind != "polarized_zero") {
      // Channel 0: h_t = h_{t-1} + drive_t exactly, i.e. the running sum of every input so far.
      EXPECT_TRUE(ssmlab::test::all_close(r.states.select(-1, 0), drive.select(-1, 0).cumsum(1),
                                          ssmlab::test::kFp64Forward, "one channel = running sum"))
          << kind;
    }
    if (kind != "polarized_one") {
      // Last channel: h_t = drive_t to float64 rounding; the carried part exp(-100 dt) h_{t-1} is ~1e-30.
      const at::Tensor last = r.states.select(-1, N - 1), fresh = drive.select(-1, N - 1);
      ASSERT_GT(fresh.abs().max().item<double>(), 1e-3);
      EXPECT_TRUE(ssmlab::test::all_close(last, fresh, ssmlab::test::kFp64Forward, "zero channel = current input"))
          << kind;
    }
    // The check can fail: a learned channel (A = -1 .. -6) both decays and carries over.
    const int64_t regular = kind == "polarized_zero" ? 0 : 1;
    const at::Tensor reg = r.states.select(-1, regular), reg_drive = drive.select(-1, regular);
    EXPECT_GT((reg - reg_drive).abs().max().item<double>(), 1e-3) << kind;
    EXPECT_GT((reg - reg_drive.cumsum(1)).abs().max().item<double>(), 1e-3) << kind;
  }
}

TEST(Polarized, FusedKernelsAgreeWithTheReference) {
  // The fast paths (fused CPU scan in forward, the decode op in step) see A = 0 and A = -100 columns.
  auto ref = make("polarized", 16, 5), fast = make("polarized", 16, 5, "auto");
  at::manual_seed(9);
  const at::Tensor x = at::randn({2, 70, 10});
  const at::Tensor y = ref->forward(x);
  EXPECT_TRUE(ssmlab::test::all_close(fast->forward(x), y, ssmlab::test::kFp32Forward, "fused forward"));
  auto state = fast->init_state(2, at::kCPU);
  std::vector<at::Tensor> ys;
  for (int64_t t = 0; t < 70; ++t) ys.push_back(fast->step(x.select(1, t), state));
  EXPECT_TRUE(ssmlab::test::all_close(at::stack(ys, 1), y, ssmlab::test::kFp32Forward, "fused step"));
}

TEST(Polarized, GradientsReachThePolarizedBAndC) {
  auto m = make("polarized", 4, 3);
  at::manual_seed(2);
  m->forward(at::randn({2, 17, 10})).pow(2).sum().backward();
  const at::Tensor g = m->x_proj->weight.grad();  // rows: [dt_low (R) | B (N) | C (N)], N = 6
  ASSERT_TRUE(g.defined());
  const int64_t R = m->dt_rank(), N = m->state_dim();
  for (int64_t row : {R, R + N - 1, R + N, R + 2 * N - 1}) {
    EXPECT_TRUE(at::isfinite(g[row]).all().item<bool>()) << row;
    EXPECT_GT(g[row].abs().sum().item<double>(), 0.0) << "x_proj row " << row;
  }
}

}  // namespace

}  // namespace mixers_test_polarized
