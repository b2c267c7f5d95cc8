// Depthwise causal conv1d (the Mamba short convolution), spec §1.1. Shapes:
//   x : (B, L, E)    weight : (E, W), W in 1..4    bias : (E)
//   initial_state, final_state : (B, W-1, E), the last W-1 inputs before / at the end of x
//   out_t[e] = bias[e] + sum_k weight[e, k] * xpad[t + k, e],  xpad = concat(state, x) along time
//   optionally out = silu(out)
#pragma once
#include <optional>
#include <string>

#include <ATen/core/Tensor.h>

namespace ssmlab::ops {

struct CausalConv1dOut {
  at::Tensor out;          // (B, L, E)
  at::Tensor final_state;  // (B, W-1, E)
};

CausalConv1dOut causal_conv1d(const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                              bool silu, const std::optional<at::Tensor>& initial_state,
                              const std::string& backend = "auto");

// The oracle: W shifted multiply-adds in plain ATen; differentiable by autograd; any float dtype.
CausalConv1dOut causal_conv1d_reference(const at::Tensor& x, const at::Tensor& weight,
                                        const std::optional<at::Tensor>& bias, bool silu,
                                        const std::optional<at::Tensor>& initial_state);

void check_causal_conv1d_inputs(const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                                const std::optional<at::Tensor>& initial_state);

}  // namespace ssmlab::ops
