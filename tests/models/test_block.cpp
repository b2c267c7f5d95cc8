// Block: the zoology Identity-state-mixer quirk (spec §1.8) — the block adds norm2(residual) to the residual
// — against the formula; step equals forward with it; resid dropout only in training.
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include "ssmlab/mixers/registry.h"
#include "ssmlab/models/block.h"
#include "tolerances.h"

namespace {

ssmlab::mixers::MixerPtr mixer(uint64_t seed) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  ssmlab::mixers::MixerOptions o;
  o.mamba1.d_state = 4;
  return ssmlab::mixers::make_mixer("mamba1", o, {8, 0, 1, "reference"}, gen);
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

}  // namespace
