// [model] options: the backbone every Model shares (mixer, width, depth, norms, MLP, init, positions, dropouts).
#pragma once
#include <string>

#include "ssmlab/core/fields.h"
#include "ssmlab/mixers/registry.h"

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
  double head_dropout = 0.0;
  bool tie_embeddings = true;
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
    v("head_dropout", head_dropout,
      "dropout on the final normed features before the head, training only (seed 003's LM: a hard-coded 0.3)",
      Check::range(0.0, 0.999));
    v("tie_embeddings", tie_embeddings,
      "language models: the head is the token embedding transposed (true) or its own lm_head weight (V, D) "
      "(false: transformers' Mamba2ForCausalLM default, mamba_ssm's tie_embeddings = false)");
    v("mixers", mixers, "per-mixer options");
  }
};

}  // namespace ssmlab::models
