// SequenceClassifier for pixel sequences (spec §2.4, SB attack/model.py): Linear(C_in -> D) embedding of each
// pixel, a learned class token appended at the END (position L), optional learned positions, N x Block, final
// norm, and a Linear(D -> classes, no bias) head reading the last position (zoology's "clstok" pooling).
// A Model (models/model.h).
#pragma once
#include <string>
#include <vector>

#include <torch/nn/modules/embedding.h>
#include <torch/nn/modules/linear.h>

#include "ssmlab/models/model.h"
#include "ssmlab/models/options.h"

namespace ssmlab::models {

// Images (B, C, H, W) -> pixel sequences (B, H W, C) in row-major raster order: pixel p = W row + col.
at::Tensor pixel_sequence(const at::Tensor& images);

class SequenceClassifierImpl : public ModelImpl {
 public:
  // The model options are LanguageModel's (mixer, width, depth, norms, MLP, init, positions, dropouts).
  // Parameters are drawn from a generator seeded with `seed`.
  SequenceClassifierImpl(const ModelOptions& opts, int64_t in_channels, int64_t num_classes,
                         const std::string& backend, uint64_t seed);

  // forward (Model): x (B, L, C_in) floating -> logits (B, classes).
  at::Tensor embed(const at::Tensor& x) override;        // (B, L, C_in) -> (B, L + 1, D), class token last
  at::Tensor head(const at::Tensor& features) override;  // (B, L + 1, D) -> (B, classes), read at L
  int64_t readout_position(int64_t embedded_len) const override { return embedded_len - 1; }
  std::string kind() const override { return "sequence_classifier"; }
  const ModelOptions& options() const { return opts_; }

  torch::nn::Linear embedding{nullptr};           // "linproj": C_in -> D with bias
  at::Tensor cls_token;                           // (D), N(0, 1)
  torch::nn::Embedding position_embedding{nullptr};
  torch::nn::Linear classifier{nullptr};          // D -> classes, no bias (untied); parameter name "head"

 private:
  ModelOptions opts_;
  int64_t in_channels_;
};
TORCH_MODULE(SequenceClassifier);

}  // namespace ssmlab::models
