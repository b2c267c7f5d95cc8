// Block: the zoology Identity-state-mixer quirk (spec §1.8) — the block adds norm2(residual) to the residual
// — against the formula; step equals forward with it; resid dropout only in training; state snapshots
// (Trace::state_every) against the plain forward and prefix runs, and their error for a non-stateful mixer.
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include "ssmlab/core/error.h"
#include "ssmlab/mixers/registry.h"
#include "ssmlab/models/block.h"
#include "tolerances.h"

namespace models_test_block {

namespace {

ssmlab::mixers::MixerPtr mixer(uint64_t seed, const std::string& kind = "mamba1") {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  ssmlab::mixers::MixerOptions o;
  o.mamba1.d_state = 4;
  o.mamba2.d_state = 5;
  o.mamba2.head_dim = 4;
  o.mamba2.chunk_size = 4;
  o.attention.n_heads = 2;
  return ssmlab::mixers::make_mixer(kind, o, {8, 0, 1, "reference"}, gen);
}

TEST(Block, IdentityStateMixerAddsTheNormedResidual) {
  ssmlab::models::Block b(mixer(1), "layernorm", 1e-5, 8, 0, "identity");
  b->to(at::kDouble);
  {
    at::NoGradGuard no_grad;  // a non-trivial LayerNorm affine so the formula check is specific
    for (auto& p : b->norm2->parameters()) p.normal_();
  }
  at::manual_seed(2);
  const at::Tensor x = at::randn({2, 13, 8}, at::kDouble);
  const at::Tensor r = x + b->mixer->forward(b->norm1(x));
  const at::Tensor expect = r + b->norm2(r);
  EXPECT_TRUE(ssmlab::test::all_close(b->forward(x), expect, ssmlab::test::kFp64Forward, "identity quirk"));
  EXPECT_FALSE(b->mlp);
  auto state = b->mixer->init_state(2, at::kCPU);
  for (auto& [n, t] : state.tensors) t = t.to(at::kDouble);
  std::vector<at::Tensor> ys;
  for (int64_t t = 0; t < 13; ++t) ys.push_back(b->step(x.select(1, t), state));
  EXPECT_TRUE(ssmlab::test::all_close(at::stack(ys, 1), expect, ssmlab::test::kFp64Forward, "step"));
}

TEST(Block, ResidDropoutOnlyInTraining) {
  ssmlab::models::Block b(mixer(3), "rmsnorm", 1e-5, 8, 2, "gelu", /*resid_dropout=*/0.5);
  const at::Tensor x = at::randn({2, 7, 8});
  b->eval();
  EXPECT_TRUE(at::equal(b->forward(x), b->forward(x)));
  b->train();
  EXPECT_FALSE(at::equal(b->forward(x), b->forward(x)));
}

// Snapshot i of Trace::state_every = K is the state after position min((i + 1) K, L) - 1: the final state of the
// plain forward on that prefix. The block's output, and the other names, are the plain forward's.
TEST(Block, StateSnapshotsEveryKSteps) {
  for (const std::string kind : {"mamba1", "mamba2"}) {
    ssmlab::models::Block b(mixer(4, kind), "rmsnorm", 1e-5, 8, 2, "gelu");
    b->to(at::kDouble);
    at::manual_seed(5);
    const int64_t L = 11;
    const at::Tensor x = at::randn({2, L, 8}, at::kDouble);
    ssmlab::Trace plain;
    const at::Tensor y = b->forward(x, &plain);
    for (int64_t K : {1, 4, 11, 20}) {
      ssmlab::Trace trace;
      trace.state_every = K;
      trace.layer = 3;
      const at::Tensor ys = b->forward(x, &trace);
      EXPECT_TRUE(ssmlab::test::all_close(ys, y, ssmlab::test::kFp64Forward, kind + " output"));
      const int64_t S = (L + K - 1) / K;
      const at::Tensor snaps = trace.get("state", 3);  // (B, S, ...state dims)
      const at::Tensor final_state = plain.get("state", 0);
      std::vector<int64_t> expect{2, S};
      for (int64_t d = 1; d < final_state.dim(); ++d) expect.push_back(final_state.size(d));
      ASSERT_EQ(snaps.sizes(), at::IntArrayRef(expect)) << kind << " K " << K;
      EXPECT_TRUE(ssmlab::test::all_close(snaps.select(1, S - 1), final_state, ssmlab::test::kFp64Forward,
                                          kind + " last snapshot"));
      for (int64_t i = 0; i < S; ++i) {
        const int64_t end = std::min((i + 1) * K, L);
        ssmlab::Trace prefix({"state"});
        b->forward(x.narrow(1, 0, end), &prefix);
        EXPECT_TRUE(ssmlab::test::all_close(snaps.select(1, i), prefix.get("state", 0), ssmlab::test::kFp64Forward,
                                            kind + " snapshot " + std::to_string(i)));
      }
      for (const char* name : {"dt", "B", "mixer_in", "mixer_out", "block_out"})
        EXPECT_TRUE(ssmlab::test::all_close(trace.get(name, 3), plain.get(name, 0), ssmlab::test::kFp64Forward,
                                            kind + " " + name));
    }
  }
}

TEST(Block, StateSnapshotsRecordStateEvenWhenNotNamedAndKeepExplicitNames) {
  ssmlab::models::Block b(mixer(6), "rmsnorm", 1e-5, 8, 0, "gelu");
  ssmlab::Trace trace({"decay"});
  trace.state_every = 3;
  b->forward(at::randn({1, 7, 8}), &trace);
  EXPECT_EQ(trace.get("state", 0).size(1), 3);
  EXPECT_EQ(trace.get("decay", 0).sizes(), (at::IntArrayRef{1, 7, 16, 4}));  // (B, L, E, N)
  EXPECT_FALSE(trace.has("dt", 0));
}

TEST(Block, StateSnapshotsNeedAStatefulMixer) {
  ssmlab::models::Block b(mixer(7, "attention"), "rmsnorm", 1e-5, 8, 0, "gelu");
  ssmlab::Trace trace;
  trace.state_every = 2;
  try {
    b->forward(at::randn({1, 5, 8}), &trace);
    ADD_FAILURE() << "expected an ssmlab::Error";
  } catch (const ssmlab::Error& e) {
    EXPECT_NE(std::string(e.what()).find("'attention'"), std::string::npos) << e.what();
  }
  trace.state_every = -1;
  EXPECT_THROW(b->forward(at::randn({1, 5, 8}), &trace), ssmlab::Error);
}

}  // namespace

}  // namespace models_test_block
