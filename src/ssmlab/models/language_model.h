// LanguageModel: embedding -> N x Block -> final norm -> head tied to the embedding (spec §1.1, §1.8).
#pragma once
#include <string>
#include <vector>

#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/embedding.h>

#include "ssmlab/core/fields.h"
#include "ssmlab/mixers/registry.h"
#include "ssmlab/models/block.h"

namespace ssmlab::models {

struct ModelOptions {
  std::string mixer = "mamba1";
  int64_t d_model = 128;
  int64_t n_layers = 2;
  std::string norm = "rmsnorm";
  std::string final_norm = "layernorm";
  double norm_eps = 1e-5;
  int64_t mlp_expand = 0;
  std::string mlp = "gated";
  std::string init = "zoology";
  int64_t max_position_embeddings = 0;
  double embed_dropout = 0.0;
  double resid_dropout = 0.0;
  mixers::MixerOptions mixers;

  template <class V>
  void visit(V& v) {
    v("mixer", mixer, "sequence mixer of every block (ssmlab list)", Check::one_of(mixers::mixer_names()));
    v("d_model", d_model, "model width D", Check::at_least(1));
    v("n_layers", n_layers, "number of residual blocks", Check::at_least(1));
    v("norm", norm, "block norm", Check::one_of({"rmsnorm", "layernorm"}));
    v("final_norm", final_norm, "norm before the head (zoology: layernorm; mamba_ssm: rmsnorm)",
      Check::one_of({"rmsnorm", "layernorm"}));
    v("norm_eps", norm_eps, "epsilon of every norm", Check::positive());
    v("mlp_expand", mlp_expand, "MLP after each mixer with hidden = mlp_expand * D; 0 = none (Mamba blocks)",
      Check::at_least(0));
    v("mlp", mlp,
      "MLP kind; identity: zoology's Identity state mixer, whose block adds norm2(residual) to the residual "
      "(spec §1.8 quirk; H3 and RWKV in the attack models)",
      Check::one_of({"gated", "gelu", "identity"}));
    v("init", init,
      "zoology: every Linear N(0, 0.02), biases 0 (so dt bias 0), out_proj/fc2 N(0, 0.02/sqrt(2 n_layers)); "
      "mamba: mamba_ssm's init (dt log-uniform, out_proj scaled by 1/sqrt(n_layers))",
      Check::one_of({"zoology", "mamba"}));
    v("max_position_embeddings", max_position_embeddings,
      "learned absolute positions added to the token embeddings (zoology's attention models: 1024); 0 = none",
      Check::at_least(0));
    v("embed_dropout", embed_dropout, "dropout on the embeddings (zoology's TransformerBlock at layer 0: 0.1)",
      Check::range(0.0, 0.999));
    v("resid_dropout", resid_dropout, "dropout on each mixer / MLP output before the residual add",
      Check::range(0.0, 0.999));
    v("mixers", mixers, "per-mixer options");
  }
};

class LanguageModelImpl : public torch::nn::Module {
 public:
  // Parameters are drawn from a generator seeded with `seed` (the same seed gives the same model).
  LanguageModelImpl(const ModelOptions& opts, int64_t vocab_size, const std::string& backend, uint64_t seed);

  at::Tensor forward(const at::Tensor& tokens, Trace* trace = nullptr);       // (B, L) int64 -> (B, L, V)
  // (B) -> (B, V). With position embeddings the decoding position is kept in states[0]["position"].
  at::Tensor step(const at::Tensor& token_t, std::vector<mixers::State>& states);
  // tokens (B, l) continuing the sequence whose per-layer states are `states` (init_state, step()s or earlier
  // calls), which are updated -> logits (B, l, V). Cutting a sequence into segments and feeding them in order
  // gives forward()'s logits; long-sequence evaluation (models/long_eval.h) runs on it. Every mixer must
  // support it (Mixer::supports_stateful: mamba1, mamba2); with position embeddings the next position is
  // kept in states[0]["position"] as step() keeps it.
  at::Tensor forward_stateful(const at::Tensor& tokens, std::vector<mixers::State>& states, Trace* trace = nullptr);
  bool supports_stateful() const;  // every block's mixer supports forward_stateful
  std::vector<mixers::State> init_state(int64_t batch, c10::Device device) const;
  int64_t state_size() const;  // summed over layers
  int64_t num_parameters() const;
  const ModelOptions& options() const { return opts_; }

  torch::nn::Embedding embedding{nullptr};
  torch::nn::Embedding position_embedding{nullptr};  // only when max_position_embeddings > 0
  std::vector<Block> blocks;                   // typed view of block_list
  torch::nn::ModuleList block_list;            // parameter names "blocks.<i>...."
  nn::Norm final_norm{nullptr};

 private:
  at::Tensor head(const at::Tensor& h);
  at::Tensor embed(const at::Tensor& tokens, int64_t offset);  // tokens (B, L) at positions offset.. -> (B, L, D)
  void init_weights(at::Generator& gen);

  ModelOptions opts_;
  int64_t vocab_size_;
};
TORCH_MODULE(LanguageModel);

}  // namespace ssmlab::models
