// Host launchers of the CUDA SSD scan (cuda.cu, kernels in kernel_ssd.cuh); no autograd here (autograd.cpp
// wraps them, as it wraps the CPU kernels). Internal to ops/ssd_scan. Defined only where the CUDA kernels
// are linked (SSMLAB_WITH_CUDA). Same contract as cpu.h: every tensor handed in on one CUDA device,
// contiguous, of one compute dtype (float32 or float64); P <= kMaxP, N <= kMaxN.
#pragma once
#include "ssmlab/ops/ssd_scan/cpu.h"
#include "ssmlab/ops/ssd_scan/ssd_scan.h"

namespace ssmlab::ops::ssd_scan_cuda {

inline constexpr int64_t kMaxP = 64;
inline constexpr int64_t kMaxN = 256;

ssd_scan_cpu::Forward forward(const ssd_scan_cpu::Inputs& in);
ssd_scan_cpu::Grads backward(const ssd_scan_cpu::Inputs& in, const at::Tensor& starts, const at::Tensor& dy,
                             const at::Tensor& dfinal);

// One decode step with the coefficients fused (ssd_scan_update's contract): x_t (B, H, P), dt_t (B, H),
// B_t, C_t (B, G, N) of any float dtype; state (B, H, P, N) contiguous in the compute dtype of x_t, updated
// in place. Returns y_t in x_t's dtype.
at::Tensor update(const at::Tensor& x_t, const at::Tensor& dt_t, const at::Tensor& A, const at::Tensor& B_t,
                  const at::Tensor& C_t, at::Tensor& state, const SsdScanOptions& opts);

}  // namespace ssmlab::ops::ssd_scan_cuda
