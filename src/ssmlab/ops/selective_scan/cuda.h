// Host launchers of the CUDA selective scan (cuda.cu, kernels in kernel_scan.cuh); no autograd here
// (autograd_cuda.cpp wraps them). Internal to ops/selective_scan. Defined only where the CUDA kernels are
// linked (SSMLAB_WITH_CUDA).
//
// Inputs are the checked inputs of the public entry, all on one CUDA device; u, delta, z, B, C share one
// dtype in_t (float32, float64, bfloat16, float16); A, D, delta_bias of any float dtype; initial state in the
// state dtype (fp32, fp64 for fp64 u). Undefined tensors = absent optional inputs / zero cotangents.
// Compute is in fp32 (fp64 for fp64 u); the delta bias + softplus, D skip and silu(z) gate are fused.
#pragma once
#include <cstdint>

#include <ATen/core/Tensor.h>

namespace ssmlab::ops::selective_scan_cuda_host {

inline constexpr int64_t kMaxState = 256;

struct Forward {
  at::Tensor y;            // (B, L, E), u's dtype, gated
  at::Tensor final_state;  // (B, E, N), state dtype
  at::Tensor starts;       // (B, E, ceil(L / 64), N), state dtype: states before steps 0, 64, 128, ...
};

// Gradients, each in its input's dtype and shape; undefined where the input is absent.
struct Grads {
  at::Tensor du, ddelta, dA, dB, dC, dD, dz, ddelta_bias, dh0;
};

Forward forward(const at::Tensor& u, const at::Tensor& delta, const at::Tensor& A, const at::Tensor& B,
                const at::Tensor& C, const at::Tensor& D, const at::Tensor& z, const at::Tensor& delta_bias,
                bool softplus, const at::Tensor& h0);

// dy: gradient w.r.t. forward's (gated) y; dfinal: w.r.t. the final state.
Grads backward(const at::Tensor& u, const at::Tensor& delta, const at::Tensor& A, const at::Tensor& B,
               const at::Tensor& C, const at::Tensor& D, const at::Tensor& z, const at::Tensor& delta_bias,
               bool softplus, const at::Tensor& h0, const at::Tensor& starts, const at::Tensor& dy,
               const at::Tensor& dfinal);

}  // namespace ssmlab::ops::selective_scan_cuda_host
