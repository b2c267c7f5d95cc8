#include "ssmlab/models/language_model.h"

#include <cmath>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include "ssmlab/core/error.h"

namespace ssmlab::models {

LanguageModelImpl::LanguageModelImpl(const ModelOptions& opts, int64_t vocab_size, const std::string& backend,
                                     uint64_t seed)
    : opts_(opts), vocab_size_(vocab_size) {
  SSMLAB_CHECK(vocab_size > 0, "LanguageModel: vocab_size must be > 0, got ", vocab_size);
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  embedding = register_module("embedding", torch::nn::Embedding(vocab_size, opts.d_model));
  for (int64_t i = 0; i < opts.n_layers; ++i) {
    mixers::MixerArgs args{opts.d_model, i, opts.n_layers, backend};
    auto mixer = mixers::make_mixer(opts.mixer, opts.mixers, args, gen);
    blocks.push_back(Block(mixer, opts.norm, opts.norm_eps, opts.d_model, opts.mlp_expand, opts.mlp));
    block_list->push_back(blocks.back());
  }
  register_module("blocks", block_list);
  final_norm = register_module("final_norm", nn::Norm(opts.final_norm, opts.d_model, opts.norm_eps));
  init_weights(gen);
}

void LanguageModelImpl::init_weights(at::Generator& gen) {
  at::NoGradGuard no_grad;
  embedding->weight.normal_(0.0, 0.02, gen);  // both inits (spec §1.1)
  if (opts_.init == "zoology") {
    // zoology's _init_weights (spec §1.1 "Important override"): every Linear ~ N(0, 0.02), bias 0 — this
    // also re-draws dt_proj and zeroes its bias (dt ≈ softplus(0) ≈ 0.69); out_proj / fc2 weights are
    // re-drawn from N(0, 0.02 / sqrt(2 n_layers)). Conv1d keeps its default init.
    const double small = 0.02 / std::sqrt(2.0 * static_cast<double>(opts_.n_layers));
    for (auto& item : named_modules(/*name_prefix=*/"", /*include_self=*/false)) {
      auto* linear = item.value()->as<torch::nn::Linear>();
      if (linear == nullptr) continue;
      const std::string& name = item.key();
      const bool residual_out = name.ends_with("out_proj") || name.ends_with("fc2");
      linear->weight.normal_(0.0, residual_out ? small : 0.02, gen);
      if (linear->bias.defined()) linear->bias.zero_();
    }
  } else {
    // mamba_ssm's _init_weights: Linear biases zeroed except dt_proj's; out_proj / fc2 weights
    // kaiming-uniform(a = sqrt 5) (= U(+-1/sqrt(fan_in))) divided by sqrt(n_layers).
    for (auto& item : named_modules(/*name_prefix=*/"", /*include_self=*/false)) {
      auto* linear = item.value()->as<torch::nn::Linear>();
      if (linear == nullptr) continue;
      const std::string& name = item.key();
      if (linear->bias.defined() && !name.ends_with("dt_proj")) linear->bias.zero_();
      if (name.ends_with("out_proj") || name.ends_with("fc2")) {
        const double bound = 1.0 / std::sqrt(static_cast<double>(linear->weight.size(1)));
        linear->weight.uniform_(-bound, bound, gen).div_(std::sqrt(static_cast<double>(opts_.n_layers)));
      }
    }
  }
}

at::Tensor LanguageModelImpl::head(const at::Tensor& h) {
  const at::Tensor normed = final_norm(h);                                    // (..., D)
  return at::matmul(normed, embedding->weight.to(normed.scalar_type()).t());  // (..., V), tied head
}

at::Tensor LanguageModelImpl::forward(const at::Tensor& tokens, Trace* trace) {
  SSMLAB_CHECK(tokens.dim() == 2 && tokens.scalar_type() == at::kLong,
               "LanguageModel: tokens must be (B, L) int64; got ", shape_str(tokens.sizes()), " ",
               c10::toString(tokens.scalar_type()));
  at::Tensor h = embedding(tokens);  // (B, L, D)
  h = h.to(at::promote_types(h.scalar_type(), at::kFloat));  // the residual stream is fp32 at least
  for (size_t i = 0; i < blocks.size(); ++i) {
    if (trace) trace->layer = static_cast<int64_t>(i);
    h = blocks[i]->forward(h, trace);
  }
  return head(h);
}

at::Tensor LanguageModelImpl::step(const at::Tensor& token_t, std::vector<mixers::State>& states) {
  SSMLAB_CHECK(states.size() == blocks.size(), "LanguageModel.step: ", states.size(), " states for ", blocks.size(),
               " blocks");
  at::Tensor h = embedding(token_t);  // (B, D)
  h = h.to(at::promote_types(h.scalar_type(), at::kFloat));
  for (size_t i = 0; i < blocks.size(); ++i) h = blocks[i]->step(h, states[i]);
  return head(h);
}

std::vector<mixers::State> LanguageModelImpl::init_state(int64_t batch, c10::Device device) const {
  std::vector<mixers::State> states;
  for (const auto& b : blocks) states.push_back(b->mixer->init_state(batch, device));
  return states;
}

int64_t LanguageModelImpl::state_size() const {
  int64_t total = 0;
  for (const auto& b : blocks) total += b->mixer->state_size();
  return total;
}

int64_t LanguageModelImpl::num_parameters() const {
  int64_t n = 0;
  for (const auto& p : parameters()) n += p.numel();
  return n;
}

}  // namespace ssmlab::models
