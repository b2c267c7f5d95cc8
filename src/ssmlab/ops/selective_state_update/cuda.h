// Host launcher of the CUDA selective_state_update (cuda.cu, kernel in kernel_update.cuh). Internal to
// ops/selective_state_update; defined only where the CUDA kernels are linked (SSMLAB_WITH_CUDA).
#pragma once
#include <cstdint>

#include <ATen/core/Tensor.h>

namespace ssmlab::ops::selective_state_update_cuda_host {

inline constexpr int64_t kMaxState = 256;

// Checked inputs on one CUDA device; state in the compute dtype (fp32, fp64 for fp64 x), updated in place.
// z, D, dt_bias may be undefined. Returns y (B, E) in x's dtype.
at::Tensor update(at::Tensor& state, const at::Tensor& x, const at::Tensor& dt, const at::Tensor& A,
                  const at::Tensor& B, const at::Tensor& C, const at::Tensor& D, const at::Tensor& z,
                  const at::Tensor& dt_bias, bool softplus);

}  // namespace ssmlab::ops::selective_state_update_cuda_host
