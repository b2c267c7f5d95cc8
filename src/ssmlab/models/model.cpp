#include "ssmlab/models/model.h"

#include <ATen/ATen.h>

#include "ssmlab/mixers/registry.h"

namespace ssmlab::models {

at::Tensor ModelImpl::forward(const at::Tensor& inputs, Trace* trace) { return head(features(embed(inputs), trace)); }

at::Tensor ModelImpl::run_blocks(at::Tensor h, Trace* trace) {
  for (size_t i = 0; i < blocks.size(); ++i) {
    if (trace) trace->layer = static_cast<int64_t>(i);
    h = blocks[i]->forward(h, trace);
  }
  return h;
}

at::Tensor ModelImpl::features(const at::Tensor& h, Trace* trace) { return final_features(run_blocks(h, trace)); }

at::Tensor ModelImpl::final_features(const at::Tensor& h) {
  at::Tensor out = final_norm(h);
  return head_dropout_ > 0 ? at::dropout(out, head_dropout_, is_training()) : out;
}

void ModelImpl::build_backbone(const ModelOptions& opts, const std::string& backend, at::Generator& gen) {
  head_dropout_ = opts.head_dropout;
  for (int64_t i = 0; i < opts.n_layers; ++i) {
    mixers::MixerArgs args{opts.d_model, i, opts.n_layers, backend};
    auto mixer = mixers::make_mixer(opts.mixer, opts.mixers, args, gen);
    blocks.push_back(
        Block(mixer, opts.norm, opts.norm_eps, opts.d_model, opts.mlp_expand, opts.mlp, opts.resid_dropout));
    block_list->push_back(blocks.back());
  }
  register_module("blocks", block_list);
  final_norm = register_module("final_norm", nn::Norm(opts.final_norm, opts.d_model, opts.norm_eps));
}

int64_t ModelImpl::num_parameters() const {
  int64_t n = 0;
  for (const auto& p : parameters()) n += p.numel();
  return n;
}

int64_t ModelImpl::state_size() const {
  int64_t total = 0;
  for (const auto& b : blocks) total += b->mixer->state_size();
  return total;
}

}  // namespace ssmlab::models
