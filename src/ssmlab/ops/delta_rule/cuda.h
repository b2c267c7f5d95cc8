// Host launchers of the CUDA delta-rule pass over chunks (cuda.cu, kernels in kernel_delta_pass.cuh); no
// autograd here (chunk_pass.cpp wraps them). Internal to ops/delta_rule. Defined only where the CUDA kernels are
// linked (SSMLAB_WITH_CUDA). The contract is chunk_pass.h's: every tensor on one CUDA device, contiguous, in one
// compute dtype (float32 or float64); K <= kMaxK, Q <= kMaxQ, and shared_memory_fits(K, Q, dtype).
#pragma once
#include <cstddef>

#include "ssmlab/ops/delta_rule/chunk_pass.h"

namespace ssmlab::ops::delta_rule_cuda {

inline constexpr int64_t kMaxK = 256;
inline constexpr int64_t kMaxQ = 64;

// Bytes of dynamic shared memory the forward / backward kernel needs for key dim k and chunk q.
size_t forward_smem_bytes(int64_t k, int64_t q, size_t elem);
size_t backward_smem_bytes(int64_t k, int64_t q, size_t elem);
// Whether both kernels fit the shared memory of `device` (K <= kMaxK, Q <= kMaxQ, float32 or float64 compute).
bool shared_memory_fits(int64_t k, int64_t q, c10::ScalarType compute, c10::DeviceIndex device);

// Whether the pass for this compute dtype runs the state-only tensor-core kernel (chunk_pass.h's state pass:
// float32 unless SSMLAB_DELTA_CUDA is simt or simple) rather than the SIMT kernels of the full pass.
bool state_pass_selected(c10::ScalarType compute);

// The state pass (float32 only); gS_entry, gVn, dS_final may be undefined (zero).
delta_rule_pass::StateForward state_forward(const delta_rule_pass::StateInputs& in);
delta_rule_pass::StateBackward state_backward(const delta_rule_pass::StateInputs& in, const at::Tensor& gS_entry,
                                              const at::Tensor& gVn, const at::Tensor& dS_final);

// The full pass (SIMT kernels, float32 or float64).
delta_rule_pass::Forward forward(const delta_rule_pass::Inputs& in, bool save);
delta_rule_pass::Backward backward(const delta_rule_pass::Inputs& in, const at::Tensor& dO,
                                   const at::Tensor& dS_final);

}  // namespace ssmlab::ops::delta_rule_cuda
