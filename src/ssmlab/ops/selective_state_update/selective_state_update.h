// One decode step of the selective scan (Mamba-1 S6), spec §1.1 / §8: the state is updated in place.
// Shapes (docs/GLOSSARY.md):
//   state : (B, E, N), fp32 (fp64 for fp64 x), updated in place      x, dt, z : (B, E)
//   A : (E, N)        B, C : (B, N) or grouped (B, G, N), E % G == 0       D, dt_bias : (E)
//   dt' = softplus(dt + dt_bias) (softplus optional)
//   h = exp(dt' A) * h + dt' * x * B,   y = C . h + D * x,   y *= silu(z)
// Exactly one time step of selective_scan (ops/selective_scan) with initial_state = state: y is its y row and
// the updated state its final_state.
#pragma once
#include <optional>
#include <string>

#include <ATen/core/Tensor.h>

namespace ssmlab::ops {

// Validates the inputs (errors print every shape) and runs the selected backend; returns y (B, E) in x's
// dtype and updates `state` in place. backend: "auto" (the fused CPU kernel on CPU, the CUDA kernel on CUDA,
// where they support the case; else the reference) or "reference". Not differentiable (a decode step).
at::Tensor selective_state_update(at::Tensor& state, const at::Tensor& x, const at::Tensor& dt, const at::Tensor& A,
                                  const at::Tensor& B, const at::Tensor& C, const std::optional<at::Tensor>& D,
                                  const std::optional<at::Tensor>& z, const std::optional<at::Tensor>& dt_bias,
                                  bool dt_softplus, const std::string& backend = "auto");

// The oracle: plain ATen on any device, float64-capable; computes in the state's dtype (inputs converted to
// it), the same operations in the same order as one step of selective_scan_reference.
at::Tensor selective_state_update_reference(at::Tensor& state, const at::Tensor& x, const at::Tensor& dt,
                                            const at::Tensor& A, const at::Tensor& B, const at::Tensor& C,
                                            const std::optional<at::Tensor>& D, const std::optional<at::Tensor>& z,
                                            const std::optional<at::Tensor>& dt_bias, bool dt_softplus);

// The fused CPU kernel (cpu.cpp): one task per (b, e) row of the state, vectorised over N (AVX2 clone picked
// at load time), on ATen's intra-op threads. Throws unless selective_state_update_cpu_supports(...).
at::Tensor selective_state_update_cpu(at::Tensor& state, const at::Tensor& x, const at::Tensor& dt,
                                      const at::Tensor& A, const at::Tensor& B, const at::Tensor& C,
                                      const std::optional<at::Tensor>& D, const std::optional<at::Tensor>& z,
                                      const std::optional<at::Tensor>& dt_bias, bool dt_softplus);
// Every tensor on CPU, x float32/float64/bfloat16/float16, the others floating point, N <= 256.
bool selective_state_update_cpu_supports(const at::Tensor& state, const at::Tensor& x, const at::Tensor& dt,
                                         const at::Tensor& A, const at::Tensor& B, const at::Tensor& C,
                                         const std::optional<at::Tensor>& D, const std::optional<at::Tensor>& z,
                                         const std::optional<at::Tensor>& dt_bias);

// The CUDA kernel (cuda.cu + kernel_update.cuh, cuda_entry.cpp): a group of threads per (b, e) row, states in
// registers, y summed by shuffles within the group; x, dt, z, B, C read in place (row-strided views are fine).
// Throws unless selective_state_update_cuda_supports(...).
at::Tensor selective_state_update_cuda(at::Tensor& state, const at::Tensor& x, const at::Tensor& dt,
                                       const at::Tensor& A, const at::Tensor& B, const at::Tensor& C,
                                       const std::optional<at::Tensor>& D, const std::optional<at::Tensor>& z,
                                       const std::optional<at::Tensor>& dt_bias, bool dt_softplus);
// The build links the CUDA kernels (SSMLAB_WITH_CUDA), every tensor on x's CUDA device, x
// float32/float64/bfloat16/float16, the others floating point, N <= 256. Always false without CUDA kernels.
bool selective_state_update_cuda_supports(const at::Tensor& state, const at::Tensor& x, const at::Tensor& dt,
                                          const at::Tensor& A, const at::Tensor& B, const at::Tensor& C,
                                          const std::optional<at::Tensor>& D, const std::optional<at::Tensor>& z,
                                          const std::optional<at::Tensor>& dt_bias);

// Throws ssmlab::Error naming every offending shape / dtype / device.
void check_selective_state_update_inputs(const at::Tensor& state, const at::Tensor& x, const at::Tensor& dt,
                                         const at::Tensor& A, const at::Tensor& B, const at::Tensor& C,
                                         const std::optional<at::Tensor>& D, const std::optional<at::Tensor>& z,
                                         const std::optional<at::Tensor>& dt_bias);

}  // namespace ssmlab::ops
