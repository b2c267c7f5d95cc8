// Host launchers of the CUDA causal_conv1d (cuda.cu, kernels in kernel_conv.cuh); no autograd here
// (autograd_cuda.cpp wraps them). Internal to ops/causal_conv1d. Defined only where the CUDA kernels are linked
// (SSMLAB_WITH_CUDA).
//
// x is (B, L, E) on a CUDA device, float32 / float64 / bfloat16 / float16, with E contiguous (any row strides);
// weight (E, W) W in 1..4, bias (E), state (B, W-1, E) of any float dtype: as in the reference they are
// rounded to x's dtype, then computed in fp32 (fp64 for fp64 x). Undefined tensors = absent / zero.
#pragma once
#include <cstdint>

#include <ATen/core/Tensor.h>

namespace ssmlab::ops::causal_conv1d_cuda_host {

struct Forward {
  at::Tensor out;          // (B, L, E), x's dtype
  at::Tensor final_state;  // (B, W-1, E), x's dtype
};

struct Grads {
  at::Tensor dx;       // (B, L, E), x's dtype
  at::Tensor dweight;  // (E, W), weight's dtype
  at::Tensor dbias;    // (E), bias's dtype; defined only when bias is
  at::Tensor dstate;   // (B, W-1, E), state's dtype; defined only when state is
};

Forward forward(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias, const at::Tensor& state,
                bool silu);
// dout: gradient w.r.t. forward's out (after the SiLU); dfinal: w.r.t. the final state; either may be undefined.
Grads backward(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias, const at::Tensor& state,
               bool silu, const at::Tensor& dout, const at::Tensor& dfinal);

// The decode step (causal_conv1d_update) on checked CUDA inputs: x_t (B, E) with E contiguous, state
// (B, W-1, E) of x's dtype or the compute dtype (updated in place), weight (E, W) and bias (E) of x's dtype or
// the compute dtype. Returns out_t (B, E) in x's dtype.
at::Tensor update(const at::Tensor& x_t, at::Tensor& state, const at::Tensor& weight, const at::Tensor& bias,
                  bool silu);
// Whether update() takes these dtypes / layouts (else the caller runs the ATen version).
bool update_supports(const at::Tensor& x_t, const at::Tensor& state, const at::Tensor& weight,
                     const at::Tensor& bias);

}  // namespace ssmlab::ops::causal_conv1d_cuda_host
