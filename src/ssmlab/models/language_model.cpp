#include "ssmlab/models/language_model.h"

#include <cmath>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include "ssmlab/core/error.h"
#include "ssmlab/models/init.h"

namespace ssmlab::models {

LanguageModelImpl::LanguageModelImpl(const ModelOptions& opts, int64_t vocab_size, const std::string& backend,
                                     uint64_t seed)
    : opts_(opts), vocab_size_(vocab_size) {
  SSMLAB_CHECK(vocab_size > 0, "LanguageModel: vocab_size must be > 0, got ", vocab_size);
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  embedding = register_module("embedding", torch::nn::Embedding(vocab_size, opts.d_model));
  if (opts.max_position_embeddings > 0)
    position_embedding = register_module(
        "position_embedding", torch::nn::Embedding(opts.max_position_embeddings, opts.d_model));
  build_backbone(opts, backend, gen);
  init_weights(gen);
  if (!opts.tie_embeddings) {
    // Registered and drawn last, so a tied model keeps its parameters and init stream.
    lm_head = register_module("lm_head", torch::nn::Linear(torch::nn::LinearOptions(opts.d_model, vocab_size).bias(false)));
    at::NoGradGuard no_grad;
    lm_head->weight.normal_(0.0, 0.02, gen);
  }
}

void LanguageModelImpl::init_weights(at::Generator& gen) {
  at::NoGradGuard no_grad;
  embedding->weight.normal_(0.0, 0.02, gen);  // both inits (spec §1.1)
  if (position_embedding) position_embedding->weight.normal_(0.0, 0.02, gen);  // zoology (spec §1.7)
  init_linears(*this, opts_.init, opts_.n_layers, gen);
}

at::Tensor LanguageModelImpl::head(const at::Tensor& features) {
  const at::Tensor& w = lm_head ? lm_head->weight : embedding->weight;                 // (V, D)
  return at::matmul(features, w.to(features.scalar_type()).t());                      // (..., V)
}

at::Tensor LanguageModelImpl::embed_at(const at::Tensor& tokens, int64_t offset) {
  at::Tensor h = embedding(tokens);  // (B, L, D)
  if (!position_embedding) return h;
  const int64_t L = tokens.size(1), max_pos = opts_.max_position_embeddings;
  SSMLAB_CHECK(offset + L <= max_pos, "LanguageModel: positions up to ", offset + L,
               " exceed max_position_embeddings = ", max_pos);
  return h + position_embedding(at::arange(offset, offset + L, tokens.options().dtype(at::kLong)));  // (B, L, D)
}

at::Tensor LanguageModelImpl::embed(const at::Tensor& tokens) {
  SSMLAB_CHECK(tokens.dim() == 2 && tokens.scalar_type() == at::kLong,
               "LanguageModel: tokens must be (B, L) int64; got ", shape_str(tokens.sizes()), " ",
               c10::toString(tokens.scalar_type()));
  at::Tensor h = embed_at(tokens, 0);  // (B, L, D)
  if (opts_.embed_dropout > 0) h = at::dropout(h, opts_.embed_dropout, is_training());
  return h.to(at::promote_types(h.scalar_type(), at::kFloat));  // the residual stream is fp32 at least
}

at::Tensor LanguageModelImpl::forward_stateful(const at::Tensor& tokens, std::vector<mixers::State>& states,
                                               Trace* trace) {
  SSMLAB_CHECK(tokens.dim() == 2 && tokens.scalar_type() == at::kLong,
               "LanguageModel.forward_stateful: tokens must be (B, L) int64; got ", shape_str(tokens.sizes()), " ",
               c10::toString(tokens.scalar_type()));
  SSMLAB_CHECK(states.size() == blocks.size(), "LanguageModel.forward_stateful: ", states.size(), " states for ",
               blocks.size(), " blocks");
  SSMLAB_CHECK(supports_stateful(), "LanguageModel.forward_stateful: mixer '", opts_.mixer,
               "' has no state-carrying forward (supported: mamba1, mamba2, s4d, h3, rwkv4, rwkv5, rwkv6, "
               "hgrn2, deltanet, gated_deltanet, kda, mamba3; not attention)");
  int64_t offset = 0;
  if (position_embedding) {
    at::Tensor& pos = states[0]["position"];  // () int64, the next position
    if (!pos.defined()) pos = at::zeros({}, at::kLong);
    offset = pos.item<int64_t>();
    pos = pos + tokens.size(1);
  }
  at::Tensor h = embed_at(tokens, offset);  // (B, l, D)
  if (opts_.embed_dropout > 0) h = at::dropout(h, opts_.embed_dropout, is_training());
  h = h.to(at::promote_types(h.scalar_type(), at::kFloat));
  for (size_t i = 0; i < blocks.size(); ++i) {
    if (trace) trace->layer = static_cast<int64_t>(i);
    h = blocks[i]->forward_stateful(h, states[i], trace);
  }
  return head(final_features(h));
}

bool LanguageModelImpl::supports_stateful() const {
  for (const auto& b : blocks)
    if (!b->mixer->supports_stateful()) return false;
  return true;
}

at::Tensor LanguageModelImpl::step(const at::Tensor& token_t, std::vector<mixers::State>& states) {
  SSMLAB_CHECK(states.size() == blocks.size(), "LanguageModel.step: ", states.size(), " states for ", blocks.size(),
               " blocks");
  int64_t offset = 0;
  if (position_embedding) {
    at::Tensor& pos = states[0]["position"];  // () int64, the next position
    if (!pos.defined()) pos = at::zeros({}, at::kLong);
    offset = pos.item<int64_t>();
    pos = pos + 1;
  }
  at::Tensor h = embed_at(token_t.unsqueeze(1), offset).squeeze(1);  // (B, D)
  h = h.to(at::promote_types(h.scalar_type(), at::kFloat));
  for (size_t i = 0; i < blocks.size(); ++i) h = blocks[i]->step(h, states[i]);
  return head(final_features(h));
}

std::vector<mixers::State> LanguageModelImpl::init_state(int64_t batch, c10::Device device) const {
  std::vector<mixers::State> states;
  for (const auto& b : blocks) states.push_back(b->mixer->init_state(batch, device));
  return states;
}

}  // namespace ssmlab::models
