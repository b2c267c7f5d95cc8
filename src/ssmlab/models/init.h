// The model-level weight inits of the seed codebases (spec §1.1), shared by LanguageModel and
// SequenceClassifier: they walk every Linear of the model after the mixers drew their own init.
#pragma once
#include <string>

#include <ATen/core/Generator.h>
#include <torch/nn/module.h>

namespace ssmlab::models {

// init: "zoology" — every Linear ~ N(0, 0.02), biases 0 (this also re-draws dt_proj and zeroes its bias, so
// dt ≈ softplus(0) ≈ 0.69), out_proj / fc2 weights from N(0, 0.02 / sqrt(2 n_layers)); conv weights keep
// their init. "mamba" — mamba_ssm's: Linear biases zeroed except dt_proj's; out_proj / fc2 weights
// kaiming-uniform(a = sqrt 5) (= U(+-1/sqrt(fan_in))) divided by sqrt(n_layers).
void init_linears(torch::nn::Module& model, const std::string& init, int64_t n_layers, at::Generator& gen);

}  // namespace ssmlab::models
