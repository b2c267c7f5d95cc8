// Generation (models/generate.h): greedy decoding with the recurrent step equals argmax over the full forward
// of the growing sequence, and the sampling filters keep what they say.
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>

#include "ssmlab/core/error_kinds.h"
#include "ssmlab/models/generate.h"
#include "ssmlab/models/hf_checkpoint.h"
#include "test_util.h"
#include "tolerances.h"

namespace models_test_generate {

namespace {

namespace fs = std::filesystem;

fs::path gen_fixture(const std::string& name) { return fs::path(SSMLAB_SOURCE_DIR) / "tests/fixtures/hf" / name; }

TEST(Generate, GreedyStepEqualsArgmaxOfTheFullForward) {
  for (const char* name : {"mamba1-tf", "mamba2-tf-g2"}) {
    SCOPED_TRACE(name);
    auto model = ssmlab::models::load_hf_model(gen_fixture(name), at::kDouble);
    const std::vector<int64_t> prompt = {3, 17, 5, 40, 9};
    ssmlab::models::GenerateOptions o;
    o.max_new_tokens = 12;
    o.temperature = 0.0;
    const auto step = ssmlab::models::generate(*model, prompt, o);
    ASSERT_EQ(step.tokens.size(), 12u);
    // The full forward over prompt + generated: each generated token is the argmax at the position before it.
    std::vector<int64_t> seq = prompt;
    seq.insert(seq.end(), step.tokens.begin(), step.tokens.end());
    at::NoGradGuard no_grad;
    const at::Tensor logits = model->forward(at::tensor(seq, at::kLong).view({1, -1}));  // (1, T, V)
    for (size_t i = 0; i < step.tokens.size(); ++i)
      EXPECT_EQ(logits[0][static_cast<int64_t>(prompt.size() + i - 1)].argmax().item<int64_t>(), step.tokens[i]) << i;
    // And the full-forward decoding path gives the same tokens.
    o.use_step = false;
    EXPECT_EQ(ssmlab::models::generate(*model, prompt, o).tokens, step.tokens);
    EXPECT_GT(step.tokens_per_second, 0.0);
  }
}

TEST(Generate, StepLogitsEqualForwardLogits) {
  auto model = ssmlab::models::load_hf_model(gen_fixture("mamba2-tf-g1"), at::kDouble);
  at::NoGradGuard no_grad;
  const at::Tensor ids = at::tensor(std::vector<int64_t>{1, 2, 3, 4, 5, 6, 7, 8, 9}, at::kLong).view({1, -1});
  const at::Tensor full = model->forward(ids);  // (1, 9, V)
  auto states = model->init_state(1, c10::Device(c10::kCPU));
  for (int64_t t = 0; t < 9; ++t)
    EXPECT_TRUE(ssmlab::test::all_close(model->step(ids.select(1, t), states), full.select(1, t),
                                        ssmlab::test::kFp64Forward, "step " + std::to_string(t)));
}

TEST(Generate, SamplingFilters) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(7);
  const at::Tensor logits = at::tensor(std::vector<double>{0.0, 3.0, 2.9, -1.0, 1.0});
  ssmlab::models::GenerateOptions o;
  o.temperature = 0.0;
  EXPECT_EQ(ssmlab::models::sample_token(logits, o, gen), 1);
  // top_k 2: only ids 1 and 2 ever come out; both do.
  o.temperature = 1.0;
  o.top_k = 2;
  std::set<int64_t> seen;
  for (int i = 0; i < 200; ++i) seen.insert(ssmlab::models::sample_token(logits, o, gen));
  EXPECT_EQ(seen, (std::set<int64_t>{1, 2}));
  // top_p just above p(1): ids 1 and 2 (the smallest set reaching p); at p <= p(1) only id 1.
  o.top_k = 0;
  const double p1 = at::softmax(logits, 0)[1].item<double>();
  o.top_p = p1 * 0.99;
  seen.clear();
  for (int i = 0; i < 100; ++i) seen.insert(ssmlab::models::sample_token(logits, o, gen));
  EXPECT_EQ(seen, (std::set<int64_t>{1}));
  o.top_p = p1 + 0.01;
  seen.clear();
  for (int i = 0; i < 300; ++i) seen.insert(ssmlab::models::sample_token(logits, o, gen));
  EXPECT_EQ(seen, (std::set<int64_t>{1, 2}));
  // The same seed gives the same draws.
  o.top_p = 1.0;
  auto model = ssmlab::models::load_hf_model(gen_fixture("mamba1-tf"), at::kFloat);
  o.max_new_tokens = 8;
  o.seed = 11;
  EXPECT_EQ(ssmlab::models::generate(*model, {1, 2}, o).tokens, ssmlab::models::generate(*model, {1, 2}, o).tokens);
  // Bad options are ConfigErrors naming the option.
  o.top_p = 0.0;
  ssmlab::test::expect_error([&] { ssmlab::models::generate(*model, {1}, o); }, {"top_p"});
  o.top_p = 1.0;
  ssmlab::test::expect_error([&] { ssmlab::models::generate(*model, {99}, o); }, {"99", "vocabulary"});
  ssmlab::test::expect_error([&] { ssmlab::models::generate(*model, {}, o); }, {"prompt"});
}

}  // namespace

}  // namespace models_test_generate
