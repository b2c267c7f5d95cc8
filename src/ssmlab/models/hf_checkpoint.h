// Hugging Face checkpoints of Mamba and Mamba-2 language models, in and out (issue 15).
//
// A folder holds config.json and model.safetensors, or shards named by model.safetensors.index.json. Two layouts:
//   transformers  MambaForCausalLM / Mamba2ForCausalLM (config "model_type": "mamba" | "mamba2"), parameters
//                 backbone.embeddings.weight, backbone.layers.<i>.{norm.weight, mixer.*}, backbone.norm_f.weight,
//                 lm_head.weight (absent or equal to the embedding when tied)
//   mamba_ssm     MambaLMHeadModel's config.json (d_model, n_layer, ssm_cfg {"layer": "Mamba1" | "Mamba2", ...},
//                 pad_vocab_size_multiple, tie_embeddings), backbone.embedding.weight, the rest as above
// Every config field that changes the forward is mapped to ModelOptions or refused with a ConfigError naming it
// (hf_checkpoint.cpp lists them); fields that only initialise or select an implementation are ignored; a field
// ssmlab does not know is refused. Weights are strict: each parameter present with its shape, nothing left over.
// The Mamba-2 gated RMSNorm groups by d_inner / n_groups (mamba_ssm, and transformers since its n_groups > 1
// fix); `norm_groups` "whole" gives older transformers' normalisation over the whole width.
#pragma once
#include <filesystem>
#include <map>
#include <optional>
#include <string>

#include <ATen/core/Tensor.h>

#include "ssmlab/models/language_model.h"
#include "ssmlab/models/options.h"

namespace ssmlab::models {

struct HfModelInfo {
  std::filesystem::path folder;
  std::string layout;          // "transformers" | "mamba_ssm"
  ModelOptions options;        // mixer mamba1 | mamba2, rmsnorm block and final norms, no MLP
  int64_t vocab_size = 0;      // embedding rows (mamba_ssm: padded to pad_vocab_size_multiple)
  std::optional<int64_t> eos_token_id;
};

// A folder holding config.json (whatever else it holds).
bool is_hf_folder(const std::filesystem::path& path);
// `name` as a folder, or as a model id ("owner/name") in the local Hugging Face cache: $HF_HUB_CACHE, else
// $HF_HOME/hub, else ~/.cache/huggingface/hub; the snapshot refs/main names (or the only snapshot). No network.
// A ConfigError names the places looked at when neither exists.
std::filesystem::path resolve_hf_model(const std::string& name);
// config.json -> options. norm_groups: "" (the layout's default, "groups") or "groups" | "whole".
HfModelInfo read_hf_config(const std::filesystem::path& folder, const std::string& norm_groups = "");
// The folder's tensors: model.safetensors, or the shards of model.safetensors.index.json (strict: every listed
// tensor in its shard, every shard's tensor listed, no tensor twice). A folder with only pytorch_model.bin is
// refused (a pickle; convert it to safetensors first).
std::map<std::string, at::Tensor> read_hf_weights(const std::filesystem::path& folder);
// Copies the folder's tensors into `model` (built from the folder's options, in any float dtype); `layout` as
// read_hf_config gives it. DataErrors name a missing, misshapen or left-over tensor.
void load_hf_weights(LanguageModelImpl& model, const std::filesystem::path& folder, const std::string& layout);
// The model of an HF folder in `dtype` (float32 or float64), evaluation mode, on CPU.
LanguageModel load_hf_model(const std::filesystem::path& folder, at::ScalarType dtype = at::kFloat,
                            HfModelInfo* info = nullptr, const std::string& norm_groups = "");

// The transformers names of a LanguageModel's parameters (a ConfigError when the model is not one transformers'
// MambaForCausalLM / Mamba2ForCausalLM can hold, naming the option that stops it): name -> tensor as stored
// (conv1d weights (C, 1, W)); tied models leave lm_head.weight out.
std::map<std::string, at::Tensor> hf_state_dict(LanguageModelImpl& model);
// Writes `model` as a transformers folder: config.json + model.safetensors (the parameters' dtype), into `out`
// (created; files replaced). eos_token_id goes into the config when given.
void export_hf(LanguageModelImpl& model, const std::filesystem::path& out,
               std::optional<int64_t> eos_token_id = std::nullopt);

}  // namespace ssmlab::models
