#include "ssmlab/models/init.h"

#include <cmath>

#include <ATen/ATen.h>
#include <torch/nn/modules/linear.h>

#include "ssmlab/core/error.h"

namespace ssmlab::models {

void init_linears(torch::nn::Module& model, const std::string& init, int64_t n_layers, at::Generator& gen) {
  SSMLAB_CHECK(init == "zoology" || init == "mamba", "unknown init '", init, "': expected zoology or mamba");
  at::NoGradGuard no_grad;
  if (init == "zoology") {
    const double small = 0.02 / std::sqrt(2.0 * static_cast<double>(n_layers));
    for (auto& item : model.named_modules(/*name_prefix=*/"", /*include_self=*/false)) {
      auto* linear = item.value()->as<torch::nn::Linear>();
      if (linear == nullptr) continue;
      const std::string& name = item.key();
      const bool residual_out = name.ends_with("out_proj") || name.ends_with("fc2");
      linear->weight.normal_(0.0, residual_out ? small : 0.02, gen);
      if (linear->bias.defined()) linear->bias.zero_();
    }
    return;
  }
  for (auto& item : model.named_modules(/*name_prefix=*/"", /*include_self=*/false)) {
    auto* linear = item.value()->as<torch::nn::Linear>();
    if (linear == nullptr) continue;
    const std::string& name = item.key();
    if (linear->bias.defined() && !name.ends_with("dt_proj")) linear->bias.zero_();
    if (name.ends_with("out_proj") || name.ends_with("fc2")) {
      const double bound = 1.0 / std::sqrt(static_cast<double>(linear->weight.size(1)));
      linear->weight.uniform_(-bound, bound, gen).div_(std::sqrt(static_cast<double>(n_layers)));
    }
  }
}

}  // namespace ssmlab::models
