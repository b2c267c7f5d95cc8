// Model: what the trainer trains and analyses probe. LanguageModel and SequenceClassifier implement it over one
// shared backbone: input embedding (token embedding, or a projection of feature vectors, plus learned positions
// and a class token where the model has them) -> N x Block -> final norm -> head.
//
//   forward(inputs) = head(features(embed(inputs)))
//
// An analysis that needs gradients with respect to the input embeddings calls embed() itself, makes the result
// a leaf that requires grad, and runs features() from it (analysis/influence.cpp). Analyses see only this
// interface, Block/Mixer and Trace names (docs/GLOSSARY.md), never a concrete mixer.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include <torch/nn/modules/container/modulelist.h>

#include "ssmlab/core/trace.h"
#include "ssmlab/models/block.h"
#include "ssmlab/models/options.h"

namespace ssmlab::models {

class ModelImpl : public torch::nn::Module {
 public:
  ~ModelImpl() override = default;

  // inputs: (B, L) int64 tokens or (B, L, C) features -> outputs: (B, L, V) per-position logits
  // (LanguageModel) or (B, classes) (SequenceClassifier).
  at::Tensor forward(const at::Tensor& inputs, Trace* trace = nullptr);

  // inputs -> the residual stream entering block 0: (B, L', D), at least fp32; L' = L, or L + 1 with the
  // class token (appended last). Positions and embedding dropout (training mode only) are applied here.
  virtual at::Tensor embed(const at::Tensor& inputs) = 0;
  // The backbone from given embeddings: N blocks then the final norm (and, training only, head_dropout),
  // (B, L', D) -> (B, L', D). Gradients
  // flow back to `h`. Sets trace->layer before each block.
  virtual at::Tensor features(const at::Tensor& h, Trace* trace = nullptr);
  // Final features (B, L', D) -> outputs (see forward).
  virtual at::Tensor head(const at::Tensor& features) = 0;
  // Which position of features() the head reads for one output per sequence (the class token: L' - 1), or
  // -1 when the head reads every position.
  virtual int64_t readout_position(int64_t embedded_len) const { return -1; }

  virtual std::string kind() const = 0;  // "language_model" | "sequence_classifier" (or a test model's)
  int64_t num_layers() const { return static_cast<int64_t>(blocks.size()); }
  int64_t num_parameters() const;
  int64_t state_size() const;  // recurrent state numbers per sequence, summed over the blocks' mixers

  std::vector<Block> blocks;  // typed view of block_list; parameter names "blocks.<i>...."
  torch::nn::ModuleList block_list;
  nn::Norm final_norm{nullptr};

 protected:
  // Registers "blocks" (each mixer drawing its init from `gen`, in layer order) and "final_norm".
  void build_backbone(const ModelOptions& opts, const std::string& backend, at::Generator& gen);
  // blocks only (no final norm), for the state-carrying and decoding paths of LanguageModel.
  at::Tensor run_blocks(at::Tensor h, Trace* trace);
  // The final norm, then `model.head_dropout` in training mode: what the head reads.
  at::Tensor final_features(const at::Tensor& h);
  double head_dropout_ = 0.0;
};

using ModelPtr = std::shared_ptr<ModelImpl>;

}  // namespace ssmlab::models
