// Host launchers of the CUDA SSD scan (cuda.cu, kernels in kernel_ssd.cuh); no autograd here (autograd.cpp
// wraps them, as it wraps the CPU kernels). Internal to ops/ssd_scan. Defined only where the CUDA kernels
// are linked (SSMLAB_WITH_CUDA). Same contract as cpu.h: every tensor handed in on one CUDA device,
// contiguous, of one compute dtype (float32 or float64); P <= kMaxP, N <= kMaxN.
#pragma once
#include "ssmlab/ops/ssd_scan/cpu.h"

namespace ssmlab::ops::ssd_scan_cuda {

inline constexpr int64_t kMaxP = 64;
inline constexpr int64_t kMaxN = 256;

ssd_scan_cpu::Forward forward(const ssd_scan_cpu::Inputs& in);
ssd_scan_cpu::Grads backward(const ssd_scan_cpu::Inputs& in, const at::Tensor& starts, const at::Tensor& dy,
                             const at::Tensor& dfinal);

}  // namespace ssmlab::ops::ssd_scan_cuda
