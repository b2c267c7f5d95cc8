#include "ssmlab/nn/mlp.h"

#include <ATen/ATen.h>

#include "ssmlab/core/error.h"

namespace ssmlab::nn {

MlpImpl::MlpImpl(const std::string& kind, int64_t dim, int64_t expand) : kind_(kind) {
  SSMLAB_CHECK(kind == "gated" || kind == "gelu", "unknown mlp kind '", kind, "': expected gated or gelu");
  const int64_t hidden = expand * dim;
  const bool gated = kind == "gated";
  fc1 = register_module("fc1", torch::nn::Linear(torch::nn::LinearOptions(dim, gated ? 2 * hidden : hidden).bias(!gated)));
  fc2 = register_module("fc2", torch::nn::Linear(torch::nn::LinearOptions(hidden, dim).bias(!gated)));
}

at::Tensor MlpImpl::forward(const at::Tensor& x) {
  at::Tensor h = fc1(x);  // (B, L, H) or (B, L, 2H)
  if (kind_ == "gated") {
    auto parts = h.chunk(2, -1);
    h = parts[0] * at::silu(parts[1]);  // (B, L, H)
  } else {
    h = at::gelu(h);
  }
  return fc2(h);
}

}  // namespace ssmlab::nn
