// DeltaNet, Gated DeltaNet and KDA (mixers/deltanet.*): decode equals forward (a prefill of 29 tokens then 8
// steps) including every carried tensor, on the fused and the reference op; the fused mixer against the reference
// mixer forward and backward; Gated DeltaNet with its decay at 1 equals DeltaNet with the same weights; the
// Trace's decay per variant; option errors.
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <torch/csrc/autograd/autograd.h>

#include <string>
#include <vector>

#include "ssmlab/core/error.h"
#include "ssmlab/mixers/deltanet.h"
#include "ssmlab/mixers/registry.h"
#include "tolerances.h"

namespace mixers_test_deltanet {

namespace {

using ssmlab::mixers::DeltaNetImpl;
using ssmlab::mixers::DeltaNetOptions;
using ssmlab::mixers::DeltaVariant;
using ssmlab::mixers::State;
using ssmlab::test::all_close;

constexpr int64_t kD = 24;

DeltaNetOptions small_opts(DeltaVariant v) {
  DeltaNetOptions o;
  o.n_heads = 2;
  o.head_dim = 5;
  o.expand_v = 1.2;  // V = 6
  o.use_gate = v != DeltaVariant::deltanet;
  if (v == DeltaVariant::gated) o.n_v_heads = 4;
  o.chunk_size = 8;
  return o;
}

std::shared_ptr<DeltaNetImpl> make(DeltaVariant v, const std::string& backend, uint64_t seed,
                                   const DeltaNetOptions* opts = nullptr) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  auto m = std::make_shared<DeltaNetImpl>(opts ? *opts : small_opts(v), v, kD, backend, gen);
  // Stronger decays than the init's (dt ~ 1e-3..1e-1), so the gates matter within a few tokens.
  if (m->dt_bias.defined()) {
    at::NoGradGuard ng;
    m->dt_bias.fill_(0.5);
  }
  return m;
}

const std::vector<DeltaVariant> kVariants = {DeltaVariant::deltanet, DeltaVariant::gated, DeltaVariant::kda};

TEST(DeltaNetMixer, DecodeAfterPrefillEqualsForwardIncludingEveryCarriedTensor) {
  for (DeltaVariant v : kVariants)
    for (const char* backend : {"auto", "reference"}) {
      auto m = make(v, backend, 1);
      SCOPED_TRACE(m->kind() + " " + backend);
      m->to(at::kDouble);
      at::manual_seed(2);
      const at::Tensor x = at::randn({2, 37, kD}, at::kDouble);
      const at::Tensor y = m->forward(x);
      State s = m->init_state(2, at::kCPU);
      const at::Tensor y0 = m->forward_stateful(x.narrow(1, 0, 29), s);
      std::vector<at::Tensor> ys = {y0};
      for (int64_t t = 29; t < 37; ++t) ys.push_back(m->step(x.select(1, t), s).unsqueeze(1));
      EXPECT_TRUE(all_close(at::cat(ys, 1), y, ssmlab::test::kFp64Forward, "outputs"));
      State whole = m->init_state(2, at::kCPU);
      m->forward_stateful(x, whole);
      ASSERT_EQ(s.tensors.size(), 4u);
      for (const char* name : {"state", "conv_q", "conv_k", "conv_v"})
        EXPECT_TRUE(all_close(s.at(name), whole.at(name), ssmlab::test::kFp64Forward, name));
      // The conv caches hold the last W - 1 pre-conv inputs.
      const at::Tensor last = m->q_proj(x.narrow(1, 34, 3));
      EXPECT_TRUE(all_close(s.at("conv_q"), last, ssmlab::test::kFp64Forward, "conv_q = last 3 q_proj inputs"));
    }
}

TEST(DeltaNetMixer, FusedMatchesReferenceForwardAndBackward) {
  for (DeltaVariant v : kVariants) {
    auto a = make(v, "auto", 3), r = make(v, "reference", 3);
    SCOPED_TRACE(a->kind());
    at::manual_seed(4);
    const at::Tensor x = at::randn({2, 70, kD});
    const at::Tensor ya = a->forward(x), yr = r->forward(x);
    EXPECT_TRUE(all_close(ya, yr, ssmlab::test::kFp32Forward, "forward"));
    const at::Tensor w = at::randn_like(ya);
    (ya * w).sum().backward();
    (yr * w).sum().backward();
    auto pa = a->named_parameters(), pr = r->named_parameters();
    ASSERT_EQ(pa.size(), pr.size());
    for (size_t i = 0; i < pa.size(); ++i) {
      ASSERT_TRUE(pa[i].value().grad().defined()) << pa[i].key();
      EXPECT_TRUE(all_close(pa[i].value().grad(), pr[i].value().grad(), ssmlab::test::kFp32Grad, "d/d" + pa[i].key()));
    }
  }
}

// Gated DeltaNet whose decay is exactly 1 (A_log = -inf: g = -0 softplus(...) = 0) is DeltaNet with an output gate.
TEST(DeltaNetMixer, GatedWithUnitDecayEqualsDeltaNet) {
  DeltaNetOptions o = small_opts(DeltaVariant::deltanet);
  o.use_gate = true;
  auto gated = make(DeltaVariant::gated, "auto", 5, &o), plain = make(DeltaVariant::deltanet, "auto", 6, &o);
  {
    at::NoGradGuard ng;
    gated->A_log.fill_(-INFINITY);
    auto pg = gated->named_parameters();
    for (auto& p : plain->named_parameters()) {
      ASSERT_TRUE(pg.contains(p.key())) << p.key();
      p.value().copy_(pg[p.key()]);
    }
  }
  gated->to(at::kDouble);
  plain->to(at::kDouble);
  at::manual_seed(7);
  const at::Tensor x = at::randn({2, 19, kD}, at::kDouble);
  EXPECT_TRUE(all_close(gated->forward(x), plain->forward(x), ssmlab::test::kFp64Forward, "output"));
  // With the init's A_log the outputs differ: the test can fail.
  auto gated2 = make(DeltaVariant::gated, "auto", 5, &o);
  gated2->to(at::kDouble);
  {
    at::NoGradGuard ng;
    for (auto& p : gated2->named_parameters())
      if (p.key() != "A_log") p.value().copy_(gated->named_parameters()[p.key()]);
  }
  EXPECT_GT((gated2->forward(x) - plain->forward(x)).abs().max().item<double>(), 1e-6);
}

TEST(DeltaNetMixer, TraceRecordsDecayStateAndKeys) {
  for (DeltaVariant v : kVariants) {
    auto m = make(v, "auto", 8);
    SCOPED_TRACE(m->kind());
    ssmlab::Trace trace;
    m->forward(at::randn({2, 9, kD}), &trace);
    const int64_t hv = m->n_v_heads(), k = m->head_k(), vd = m->head_v();
    const at::Tensor d = trace.get("decay", 0);
    if (v == DeltaVariant::kda) {
      EXPECT_EQ(d.sizes(), (std::vector<int64_t>{2, 9, hv, k}));
    } else {
      EXPECT_EQ(d.sizes(), (std::vector<int64_t>{2, 9, hv}));
    }
    EXPECT_TRUE((d > 0).all().item<bool>() && (d <= 1).all().item<bool>());
    if (v == DeltaVariant::deltanet) EXPECT_TRUE((d == 1).all().item<bool>());
    if (v != DeltaVariant::deltanet) EXPECT_TRUE((d < 1).any().item<bool>());
    EXPECT_EQ(trace.get("state", 0).sizes(), (std::vector<int64_t>{2, hv, k, vd}));
    EXPECT_EQ(trace.get("B", 0).sizes(), (std::vector<int64_t>{2, 9, m->n_heads(), k}));
    EXPECT_EQ(trace.get("beta", 0).sizes(), (std::vector<int64_t>{2, 9, hv}));
  }
}

TEST(DeltaNetMixer, NegativeEigenvaluesDoubleBeta) {
  DeltaNetOptions o = small_opts(DeltaVariant::gated);
  o.allow_neg_eigval = true;
  auto m = make(DeltaVariant::gated, "auto", 9, &o);
  ssmlab::Trace trace;
  m->forward(at::randn({2, 9, kD}), &trace);
  const at::Tensor b = trace.get("beta", 0);
  EXPECT_GT(b.max().item<double>(), 1.0);
  EXPECT_LT(b.max().item<double>(), 2.0);
  EXPECT_GT(b.min().item<double>(), 0.0);
}

TEST(DeltaNetMixer, BadOptionsAreErrors) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(1);
  DeltaNetOptions o;
  o.n_heads = 2;
  o.n_v_heads = 3;
  EXPECT_THROW(DeltaNetImpl(o, DeltaVariant::gated, kD, "auto", gen), ssmlab::Error);
  o = DeltaNetOptions{};
  o.n_heads = 5;  // 24 % 5 != 0 with head_dim 0
  EXPECT_THROW(DeltaNetImpl(o, DeltaVariant::deltanet, kD, "auto", gen), ssmlab::Error);
  o = DeltaNetOptions{};
  o.head_dim = 5;
  o.expand_v = 0.3;  // V = 1.5
  EXPECT_THROW(DeltaNetImpl(o, DeltaVariant::kda, kD, "auto", gen), ssmlab::Error);
  auto m = make(DeltaVariant::deltanet, "auto", 2);
  State s = m->init_state(2, at::kCPU);
  EXPECT_THROW(m->step(at::randn({3, kD}), s), ssmlab::Error);
  EXPECT_THROW(m->forward(at::randn({2, 3, kD + 1})), ssmlab::Error);
}

}  // namespace

}  // namespace mixers_test_deltanet
