// Text generation (rules: generate.h).
#include "ssmlab/models/generate.h"

#include <chrono>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include "ssmlab/core/error.h"
#include "ssmlab/core/error_kinds.h"
#include "ssmlab/models/generate_graph.h"

namespace ssmlab::models {

int64_t sample_token(const at::Tensor& logits, const GenerateOptions& opts, at::Generator& gen) {
  const at::Tensor l = logits.detach().to(at::kCPU, at::kDouble).reshape({-1});  // (V)
  if (opts.temperature == 0.0) return l.argmax().item<int64_t>();
  at::Tensor scaled = l / opts.temperature;
  const int64_t V = scaled.size(0);
  if (opts.top_k > 0 && opts.top_k < V) {
    const double kth = std::get<0>(scaled.topk(opts.top_k)).min().item<double>();
    scaled = at::where(scaled < kth, at::full_like(scaled, -INFINITY), scaled);
  }
  at::Tensor probs = at::softmax(scaled, 0);
  if (opts.top_p < 1.0) {
    auto [sorted, order] = probs.sort(/*dim=*/0, /*descending=*/true);
    const at::Tensor before = at::cumsum(sorted, 0) - sorted;  // probability of the tokens ranked above
    const at::Tensor drop = before >= opts.top_p;               // the first token is always kept
    sorted = at::where(drop, at::zeros_like(sorted), sorted);
    probs = at::zeros_like(probs).scatter(0, order, sorted);
  }
  return at::multinomial(probs, 1, /*replacement=*/false, gen).item<int64_t>();
}

GenerateResult generate(LanguageModelImpl& model, const std::vector<int64_t>& prompt, const GenerateOptions& opts) {
  if (prompt.empty()) fail_config("generate: the prompt has no tokens");
  if (opts.max_new_tokens < 0) fail_config("generate: max_new_tokens must be >= 0; got ", opts.max_new_tokens);
  if (!(opts.temperature >= 0.0)) fail_config("generate: temperature must be >= 0; got ", opts.temperature);
  if (opts.top_k < 0) fail_config("generate: top_k must be >= 0; got ", opts.top_k);
  if (!(opts.top_p > 0.0 && opts.top_p <= 1.0)) fail_config("generate: top_p must be in (0, 1]; got ", opts.top_p);
  const int64_t V = model.vocab_size();
  for (int64_t t : prompt)
    if (t < 0 || t >= V) fail_config("generate: prompt token ", t, " is outside the vocabulary of ", V);
  if (opts.use_step && !model.supports_stateful())
    fail_config("generate: mixer '", model.options().mixer, "' has no recurrent step; use the full forward");
  const c10::Device dev = model.embedding->weight.device();
  if (opts.cuda_graph) {
    if (!opts.use_step)
      fail_config("generate: --cuda-graph captures the recurrent step; it does not go with --full-forward "
                  "(use_step = false)");
    if (!dev.is_cuda())
      fail_config("generate: --cuda-graph needs the model on a CUDA device; it is on ", dev.str(),
                  " (give --device cuda, or decode without --cuda-graph)");
    if (model.position_embedding)
      fail_config("generate: --cuda-graph cannot capture a model with position embeddings "
                  "(model.max_position_embeddings > 0: the step reads its position on the host); decode without "
                  "--cuda-graph");
  }
  at::NoGradGuard no_grad;
  model.eval();
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(opts.seed);
  using clock = std::chrono::steady_clock;
  auto sync = [&] {
    if (dev.is_cuda()) at::zeros({1}, at::TensorOptions().device(dev)).cpu();  // waits for the queue
  };
  GenerateResult r;
  std::vector<int64_t> seq = prompt;
  const auto t0 = clock::now();
  at::Tensor logits;  // (V) of the last position
  std::vector<mixers::State> states;
  const at::Tensor ids = at::tensor(prompt, at::kLong).view({1, -1}).to(dev);
  if (opts.use_step) {
    states = model.init_state(1, dev);
    logits = model.forward_stateful(ids, states).select(1, -1).squeeze(0);
  } else {
    logits = model.forward(ids).select(1, -1).squeeze(0);
  }
  sync();
  const auto t1 = clock::now();
  for (int64_t i = 0; i < opts.max_new_tokens; ++i) {
    const int64_t next = sample_token(logits, opts, gen);
    r.tokens.push_back(next);
    seq.push_back(next);
    if (opts.eos_token_id && next == *opts.eos_token_id) break;
    if (i + 1 == opts.max_new_tokens) break;
    if (opts.cuda_graph && i == 1) {
      // One eager step is done (i == 0): every state tensor has its final shape and dtype.
      r.graph_replays = decode_with_cuda_graph(model, states, next, opts.max_new_tokens - i - 1, opts, gen, r.tokens);
      break;
    }
    if (opts.use_step) {
      logits = model.step(at::full({1}, next, at::TensorOptions().dtype(at::kLong).device(dev)), states).squeeze(0);
    } else {
      logits = model.forward(at::tensor(seq, at::kLong).view({1, -1}).to(dev)).select(1, -1).squeeze(0);
    }
  }
  sync();
  const auto t2 = clock::now();
  r.prompt_seconds = std::chrono::duration<double>(t1 - t0).count();
  r.decode_seconds = std::chrono::duration<double>(t2 - t1).count();
  const double total = r.prompt_seconds + r.decode_seconds;
  r.tokens_per_second = total > 0 ? static_cast<double>(r.tokens.size()) / total : 0.0;
  return r;
}

}  // namespace ssmlab::models
