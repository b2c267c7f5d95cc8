// generate --cuda-graph (models/generate_graph.h). On CPU: the option is refused with an error naming the flag, and
// the step that keeps its state in the same tensors (step_in_static_state, what the graph replays) gives the
// eager step's logits and states exactly, for Mamba-1 (state updated in place) and Mamba-2 (state rebound: the
// copy-back is exercised). On CUDA (skipped without a GPU): the graph-decoded tokens equal the eager step's, greedy
// in fp32 and under bf16 autocast, with a stop token, and sampled; the decode is really replayed.
#include <ATen/ATen.h>
#include <ATen/autocast_mode.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "cuda_test_util.h"
#include "ssmlab/core/error_kinds.h"
#include "ssmlab/models/generate.h"
#include "ssmlab/models/generate_graph.h"
#include "ssmlab/models/hf_checkpoint.h"

namespace models_test_generate_graph {

namespace {

namespace fs = std::filesystem;
using ssmlab::models::GenerateOptions;

fs::path graph_fixture(const std::string& name) { return fs::path(SSMLAB_SOURCE_DIR) / "tests/fixtures/hf" / name; }

std::string graph_error_text(ssmlab::models::LanguageModel& model, const GenerateOptions& o) {
  try {
    ssmlab::models::generate(*model, {1, 2, 3}, o);
  } catch (const ssmlab::ConfigError& e) {
    return e.what();
  }
  return "(no ConfigError)";
}

TEST(GenerateGraph, RefusedOnCpuAndWithFullForward) {
  auto model = ssmlab::models::load_hf_model(graph_fixture("mamba1-tf"));
  GenerateOptions o;
  o.max_new_tokens = 4;
  o.temperature = 0.0;
  o.cuda_graph = true;
  const std::string on_cpu = graph_error_text(model, o);
  EXPECT_NE(on_cpu.find("--cuda-graph"), std::string::npos) << on_cpu;
  EXPECT_NE(on_cpu.find("CUDA device"), std::string::npos) << on_cpu;
  EXPECT_NE(on_cpu.find("cpu"), std::string::npos) << on_cpu;
  o.use_step = false;
  const std::string full = graph_error_text(model, o);
  EXPECT_NE(full.find("--cuda-graph"), std::string::npos) << full;
  EXPECT_NE(full.find("--full-forward"), std::string::npos) << full;
  // Without the option the same call decodes.
  o.cuda_graph = false;
  EXPECT_EQ(ssmlab::models::generate(*model, {1, 2, 3}, o).tokens.size(), 4u);
}

std::vector<ssmlab::mixers::State> deep_copy(const std::vector<ssmlab::mixers::State>& states) {
  std::vector<ssmlab::mixers::State> out(states.size());
  for (size_t i = 0; i < states.size(); ++i)
    for (const auto& [k, v] : states[i].tensors) out[i][k] = v.defined() ? v.clone() : v;
  return out;
}

TEST(GenerateGraph, StaticStateStepEqualsStep) {
  for (const char* name : {"mamba1-tf", "mamba2-tf-g2"}) {
    SCOPED_TRACE(name);
    auto model = ssmlab::models::load_hf_model(graph_fixture(name), at::kDouble);
    at::NoGradGuard no_grad;
    const at::Tensor prompt = at::tensor(std::vector<int64_t>{3, 17, 5, 40, 9}, at::kLong).view({1, -1});
    auto eager = model->init_state(1, c10::Device(c10::kCPU));
    model->forward_stateful(prompt, eager);
    auto kept = deep_copy(eager);
    std::vector<std::map<std::string, const void*>> addresses(kept.size());
    for (size_t i = 0; i < kept.size(); ++i)
      for (const auto& [k, v] : kept[i].tensors) addresses[i][k] = v.data_ptr();
    bool rebound = false;  // did the eager step replace a state tensor (so the copy-back was needed)?
    int64_t token = 7;
    for (int step = 0; step < 6; ++step) {
      const at::Tensor t = at::full({1}, token, at::kLong);
      const at::Tensor before_ssm = eager[0]["ssm"];
      const at::Tensor want = model->step(t, eager);
      rebound = rebound || !eager[0]["ssm"].is_same(before_ssm);
      const at::Tensor got = ssmlab::models::step_in_static_state(*model, t, kept);
      EXPECT_TRUE(at::equal(got, want)) << "logits, step " << step;
      for (size_t i = 0; i < kept.size(); ++i)
        for (const auto& [k, v] : kept[i].tensors) {
          EXPECT_EQ(v.data_ptr(), addresses[i][k]) << "layer " << i << " " << k << " moved, step " << step;
          ASSERT_TRUE(eager[i][k].defined()) << k;
          EXPECT_TRUE(at::equal(v, eager[i][k])) << "layer " << i << " " << k << ", step " << step;
        }
      token = want.argmax(-1).item<int64_t>();
    }
    // Mamba-1 updates its state in place, Mamba-2 rebinds its SSM state: both paths are covered.
    EXPECT_EQ(rebound, std::string(name) == "mamba2-tf-g2");
  }
}

// bf16 autocast on CUDA for the guard's lifetime.
class CudaBf16Autocast {
 public:
  explicit CudaBf16Autocast(bool on) : on_(on) {
    if (!on_) return;
    at::autocast::set_autocast_dtype(at::kCUDA, at::kBFloat16);
    at::autocast::set_autocast_enabled(at::kCUDA, true);
  }
  ~CudaBf16Autocast() {
    if (!on_) return;
    at::autocast::clear_cache();
    at::autocast::set_autocast_enabled(at::kCUDA, false);
  }
  CudaBf16Autocast(const CudaBf16Autocast&) = delete;
  CudaBf16Autocast& operator=(const CudaBf16Autocast&) = delete;

 private:
  bool on_;
};

TEST(GenerateGraphCuda, TokensEqualTheEagerStep) {
  SKIP_WITHOUT_CUDA();
  const std::vector<int64_t> prompt = {3, 17, 5, 40, 9, 11, 2};
  const int64_t n = 40;
  for (const char* name : {"mamba1-tf", "mamba2-tf-g2"}) {
    auto model = ssmlab::models::load_hf_model(graph_fixture(name));
    model->to(at::Device(at::kCUDA, 0));
    for (bool bf16 : {false, true}) {
      SCOPED_TRACE(std::string(name) + (bf16 ? " bf16 autocast" : " fp32"));
      CudaBf16Autocast autocast(bf16);
      GenerateOptions o;
      o.max_new_tokens = n;
      o.temperature = 0.0;
      const auto eager = ssmlab::models::generate(*model, prompt, o);
      o.cuda_graph = true;
      const auto graph = ssmlab::models::generate(*model, prompt, o);
      ASSERT_EQ(eager.tokens.size(), static_cast<size_t>(n));
      EXPECT_EQ(graph.tokens, eager.tokens);
      EXPECT_EQ(graph.graph_replays, n - 4);  // the prefill's token, one eager step, two warm-ups
      std::printf("[ graph    ] %s %s: %lld new tokens, eager %.0f tokens/s, CUDA graph %.0f tokens/s\n", name,
                  bf16 ? "bf16" : "fp32", static_cast<long long>(n), eager.tokens_per_second,
                  graph.tokens_per_second);
      // A stop token that first comes late (past a 16-token read-back batch when it can): both stop after it.
      size_t late = eager.tokens.size() - 1;
      while (late > 0 && std::find(eager.tokens.begin(), eager.tokens.begin() + static_cast<std::ptrdiff_t>(late),
                                   eager.tokens[late]) != eager.tokens.begin() + static_cast<std::ptrdiff_t>(late))
        --late;  // the last position whose token has not come before
      o.eos_token_id = eager.tokens[late];
      o.cuda_graph = false;
      const auto eager_eos = ssmlab::models::generate(*model, prompt, o);
      EXPECT_EQ(eager_eos.tokens.size(), late + 1);
      o.cuda_graph = true;
      EXPECT_EQ(ssmlab::models::generate(*model, prompt, o).tokens, eager_eos.tokens);
      // Sampling (the draws on the host from the replayed logits): the same draws as the eager step's.
      if (!bf16) {
        o.eos_token_id.reset();
        o.temperature = 0.8;
        o.top_k = 20;
        o.seed = 5;
        o.cuda_graph = false;
        const auto sampled = ssmlab::models::generate(*model, prompt, o);
        o.cuda_graph = true;
        const auto graph_sampled = ssmlab::models::generate(*model, prompt, o);
        EXPECT_EQ(graph_sampled.tokens, sampled.tokens);
        EXPECT_EQ(graph_sampled.graph_replays, n - 4);
      }
    }
  }
}

}  // namespace

}  // namespace models_test_generate_graph
