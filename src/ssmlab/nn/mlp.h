// Channel mixers for the residual Block: the gated MLP (SwiGLU-style, fc1 D -> 2H, silu(gate)·value,
// fc2 H -> D) and the plain GELU MLP of zoology's TransformerBlock (spec §1.7).
#pragma once
#include <string>

#include <torch/nn/module.h>
#include <torch/nn/modules/linear.h>

namespace ssmlab::nn {

class MlpImpl : public torch::nn::Module {
 public:
  // kind: "gated" | "gelu"; hidden = expand * dim.
  MlpImpl(const std::string& kind, int64_t dim, int64_t expand);
  at::Tensor forward(const at::Tensor& x);  // (B, L, D) -> (B, L, D)

  torch::nn::Linear fc1{nullptr}, fc2{nullptr};

 private:
  std::string kind_;
};
TORCH_MODULE(Mlp);

}  // namespace ssmlab::nn
