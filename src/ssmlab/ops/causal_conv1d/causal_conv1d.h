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

// The fused CPU kernels (cpu.cpp, autograd.cpp): same contract and results as the reference up to
// rounding; computes in fp32 (fp64 for fp64 x; bf16/fp16 x computed in fp32 and returned in x's dtype).
// Differentiable w.r.t. x, weight, bias and initial_state. Throws unless causal_conv1d_cpu_supports(...)
// for the inputs. Expects checked inputs.
CausalConv1dOut causal_conv1d_fused(const at::Tensor& x, const at::Tensor& weight,
                                    const std::optional<at::Tensor>& bias, bool silu,
                                    const std::optional<at::Tensor>& initial_state);

// True when the fused CPU kernel takes the case: every tensor on CPU and floating point, x
// float32/float64/bfloat16/float16, W in 1..4 (any B, L, E).
bool causal_conv1d_cpu_supports(const at::Tensor& x, const at::Tensor& weight,
                                const std::optional<at::Tensor>& bias,
                                const std::optional<at::Tensor>& initial_state);

// The CUDA kernels (cuda.cu + kernel_conv.cuh, autograd_cuda.cpp): same contract and results as the reference
// up to rounding; computes in fp32 (fp64 for fp64 x), bias and SiLU fused, vector loads along E where
// E and the row strides allow. Differentiable w.r.t. x, weight, bias and initial_state. Throws unless
// causal_conv1d_cuda_supports(...) for the inputs. Expects checked inputs.
CausalConv1dOut causal_conv1d_cuda(const at::Tensor& x, const at::Tensor& weight,
                                   const std::optional<at::Tensor>& bias, bool silu,
                                   const std::optional<at::Tensor>& initial_state);

// True when the CUDA kernels take the case: the build links them (SSMLAB_WITH_CUDA), every tensor on x's CUDA
// device and floating point, x float32/float64/bfloat16/float16, W in 1..4, B, L, E >= 1. Always false in a
// build without CUDA kernels.
bool causal_conv1d_cuda_supports(const at::Tensor& x, const at::Tensor& weight,
                                 const std::optional<at::Tensor>& bias,
                                 const std::optional<at::Tensor>& initial_state);

// One decode step: x_t (B, E) is the next input after the W-1 inputs held in state (B, W-1, E). Returns
// out_t (B, E) in x_t's dtype, computed as causal_conv1d would for that position (fp32 for bf16/fp16,
// fp64 for fp64), and shifts state in place to its last W-2 rows followed by x_t (state keeps its dtype).
// Looping it over t from initial_state gives causal_conv1d's out rows and, at the end, its final_state.
// backend "auto" runs the CUDA kernel for CUDA inputs where it takes the dtypes (state and weight/bias each in
// x's dtype or the compute dtype), else the plain ATen reference below; "reference" always runs that.
// Not differentiable through autograd.
at::Tensor causal_conv1d_update(const at::Tensor& x_t, at::Tensor& state, const at::Tensor& weight,
                                const std::optional<at::Tensor>& bias, bool silu, const std::string& backend = "auto");

// The decode step's oracle: plain ATen on any device, same contract as causal_conv1d_update. Expects checked
// inputs (check_causal_conv1d_update_inputs).
at::Tensor causal_conv1d_update_reference(const at::Tensor& x_t, at::Tensor& state, const at::Tensor& weight,
                                          const std::optional<at::Tensor>& bias, bool silu);

// The decode step's CUDA kernel (autograd_cuda.cpp, cuda.cu): one thread per (b, e). Supports: the build links
// the CUDA kernels, every tensor on x_t's CUDA device, x_t float32/float64/bfloat16/float16, state and weight
// each in x_t's dtype or the compute dtype (fp32, fp64 for fp64 x_t), bias in weight's dtype.
at::Tensor causal_conv1d_update_cuda(const at::Tensor& x_t, at::Tensor& state, const at::Tensor& weight,
                                     const std::optional<at::Tensor>& bias, bool silu);
bool causal_conv1d_update_cuda_supports(const at::Tensor& x_t, const at::Tensor& state, const at::Tensor& weight,
                                        const std::optional<at::Tensor>& bias);

void check_causal_conv1d_update_inputs(const at::Tensor& x_t, const at::Tensor& state, const at::Tensor& weight,
                                       const std::optional<at::Tensor>& bias);

void check_causal_conv1d_inputs(const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                                const std::optional<at::Tensor>& initial_state);

}  // namespace ssmlab::ops
