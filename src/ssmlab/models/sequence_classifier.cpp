#include "ssmlab/models/sequence_classifier.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include "ssmlab/core/error.h"
#include "ssmlab/models/init.h"

namespace ssmlab::models {

at::Tensor pixel_sequence(const at::Tensor& images) {
  SSMLAB_CHECK(images.dim() == 4, "pixel_sequence: images must be (B, C, H, W); got ", shape_str(images.sizes()));
  const int64_t B = images.size(0), C = images.size(1);
  return images.reshape({B, C, -1}).permute({0, 2, 1});  // (B, H W, C), p = W row + col
}

SequenceClassifierImpl::SequenceClassifierImpl(const ModelOptions& opts, int64_t in_channels, int64_t num_classes,
                                               const std::string& backend, uint64_t seed)
    : opts_(opts), in_channels_(in_channels) {
  SSMLAB_CHECK(in_channels > 0 && num_classes > 0, "SequenceClassifier: in_channels and num_classes must be > 0; got ",
               in_channels, ", ", num_classes);
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  embedding = register_module("embedding", torch::nn::Linear(in_channels, opts.d_model));
  cls_token = register_parameter("cls_token", at::empty({opts.d_model}));
  if (opts.max_position_embeddings > 0)
    position_embedding = register_module(
        "position_embedding", torch::nn::Embedding(opts.max_position_embeddings, opts.d_model));
  build_backbone(opts, backend, gen);
  classifier =
      register_module("head", torch::nn::Linear(torch::nn::LinearOptions(opts.d_model, num_classes).bias(false)));
  at::NoGradGuard no_grad;
  cls_token.normal_(0.0, 1.0, gen);  // spec §2.4: N(0, 1)
  if (position_embedding) position_embedding->weight.normal_(0.0, 0.02, gen);
  init_linears(*this, opts.init, opts.n_layers, gen);  // also the pixel embedding and the head (zoology)
}

at::Tensor SequenceClassifierImpl::embed(const at::Tensor& x) {
  SSMLAB_CHECK(x.dim() == 3 && x.size(2) == in_channels_ && at::isFloatingType(x.scalar_type()),
               "SequenceClassifier: input must be (B, L, C_in) floating with C_in = ", in_channels_, "; got ",
               shape_str(x.sizes()), " ", c10::toString(x.scalar_type()));
  const int64_t B = x.size(0), L = x.size(1);
  at::Tensor h = embedding(x.to(embedding->weight.scalar_type()));                    // (B, L, D)
  h = at::cat({h, cls_token.view({1, 1, -1}).expand({B, 1, opts_.d_model}).to(h.scalar_type())}, 1);  // (B, L+1, D)
  if (position_embedding) {
    SSMLAB_CHECK(L + 1 <= opts_.max_position_embeddings, "SequenceClassifier: ", L + 1,
                 " positions (with the class token) exceed max_position_embeddings = ", opts_.max_position_embeddings);
    h = h + position_embedding(at::arange(L + 1, x.options().dtype(at::kLong).device(h.device())));
  }
  if (opts_.embed_dropout > 0) h = at::dropout(h, opts_.embed_dropout, is_training());
  return h.to(at::promote_types(h.scalar_type(), at::kFloat));
}

at::Tensor SequenceClassifierImpl::head(const at::Tensor& features) {
  const at::Tensor last = features.select(1, features.size(1) - 1);  // (B, D): the class token's position
  return classifier(last.to(classifier->weight.scalar_type()));     // (B, classes)
}

}  // namespace ssmlab::models
