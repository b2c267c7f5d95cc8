// Normalisation layers: RMSNorm (Mamba blocks, spec §1.1) and LayerNorm (zoology's final norm).
// Computed in fp32 whatever the input dtype (residual stream stays fp32), returned in the input dtype.
#pragma once
#include <string>

#include <torch/nn/module.h>

namespace ssmlab::nn {

class NormImpl : public torch::nn::Module {
 public:
  // kind: "rmsnorm" | "layernorm".
  NormImpl(const std::string& kind, int64_t dim, double eps);
  at::Tensor forward(const at::Tensor& x);  // (..., D) -> (..., D)
  const std::string& kind() const { return kind_; }

 private:
  std::string kind_;
  double eps_;
  at::Tensor weight_, bias_;  // bias only for layernorm
};
TORCH_MODULE(Norm);

}  // namespace ssmlab::nn
