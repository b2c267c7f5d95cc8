// SequenceClassifier for pixel sequences (spec §2.4, SB attack/model.py): Linear(C_in -> D) embedding of each
// pixel, a learned class token appended at the END (position L), optional learned positions, N x Block, final
// norm, and a Linear(D -> classes, no bias) head reading the last position (zoology's "clstok" pooling).
#pragma once
#include <string>
#include <vector>

#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/embedding.h>
#include <torch/nn/modules/linear.h>

#include "ssmlab/models/block.h"
#include "ssmlab/models/language_model.h"

namespace ssmlab::models {

// Images (B, C, H, W) -> pixel sequences (B, H W, C) in row-major raster order: pixel p = W row + col.
at::Tensor pixel_sequence(const at::Tensor& images);

class SequenceClassifierImpl : public torch::nn::Module {
 public:
  // The model options are LanguageModel's (mixer, width, depth, norms, MLP, init, positions, dropouts).
  // Parameters are drawn from a generator seeded with `seed`.
  SequenceClassifierImpl(const ModelOptions& opts, int64_t in_channels, int64_t num_classes,
                         const std::string& backend, uint64_t seed);

  // x (B, L, C_in) floating -> logits (B, classes).
  at::Tensor forward(const at::Tensor& x, Trace* trace = nullptr);
  int64_t num_parameters() const;
  const ModelOptions& options() const { return opts_; }

  torch::nn::Linear embedding{nullptr};           // "linproj": C_in -> D with bias
  at::Tensor cls_token;                           // (D), N(0, 1)
  torch::nn::Embedding position_embedding{nullptr};
  std::vector<Block> blocks;
  torch::nn::ModuleList block_list;
  nn::Norm final_norm{nullptr};
  torch::nn::Linear head{nullptr};                // D -> classes, no bias (untied)

 private:
  ModelOptions opts_;
  int64_t in_channels_;
};
TORCH_MODULE(SequenceClassifier);

}  // namespace ssmlab::models
