// LanguageModel: token embedding (+ learned positions) -> N x Block -> final norm -> head tied to the embedding
// (spec §1.1, §1.8), or its own lm_head weight with model.tie_embeddings = false. A Model (models/model.h).
#pragma once
#include <string>
#include <vector>

#include <torch/nn/modules/embedding.h>
#include <torch/nn/modules/linear.h>

#include "ssmlab/models/model.h"
#include "ssmlab/models/options.h"

namespace ssmlab::models {

class LanguageModelImpl : public ModelImpl {
 public:
  // Parameters are drawn from a generator seeded with `seed` (the same seed gives the same model).
  LanguageModelImpl(const ModelOptions& opts, int64_t vocab_size, const std::string& backend, uint64_t seed);

  // forward (Model): tokens (B, L) int64 -> logits (B, L, V).
  at::Tensor embed(const at::Tensor& tokens) override;  // (B, L) -> (B, L, D) fp32 at least
  at::Tensor head(const at::Tensor& features) override;  // (..., D) -> (..., V), tied or lm_head
  std::string kind() const override { return "language_model"; }

  // (B) -> (B, V). With position embeddings the decoding position is kept in states[0]["position"].
  at::Tensor step(const at::Tensor& token_t, std::vector<mixers::State>& states);
  // tokens (B, l) continuing the sequence whose per-layer states are `states` (init_state, step()s or earlier
  // calls), which are updated -> logits (B, l, V). Cutting a sequence into segments and feeding them in order
  // gives forward()'s logits; long-sequence evaluation (models/long_eval.h) runs on it. Every mixer must
  // support it (Mixer::supports_stateful: every recurrent mixer, not attention); with position embeddings the
  // next position is kept in states[0]["position"] as step() keeps it.
  at::Tensor forward_stateful(const at::Tensor& tokens, std::vector<mixers::State>& states, Trace* trace = nullptr);
  bool supports_stateful() const;  // every block's mixer supports forward_stateful
  std::vector<mixers::State> init_state(int64_t batch, c10::Device device) const;
  const ModelOptions& options() const { return opts_; }
  int64_t vocab_size() const { return vocab_size_; }

  torch::nn::Embedding embedding{nullptr};
  torch::nn::Embedding position_embedding{nullptr};  // only when max_position_embeddings > 0
  torch::nn::Linear lm_head{nullptr};  // (V, D) weight, no bias; only when tie_embeddings is false

 private:
  at::Tensor embed_at(const at::Tensor& tokens, int64_t offset);  // tokens (B, L) at positions offset.. -> (B, L, D)
  void init_weights(at::Generator& gen);

  ModelOptions opts_;
  int64_t vocab_size_;
};
TORCH_MODULE(LanguageModel);

}  // namespace ssmlab::models
