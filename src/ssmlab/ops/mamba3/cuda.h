// Host launchers of the Mamba-3 CUDA path's own kernels (cuda.cu, kernels in kernel_rotate.cuh); no autograd here
// (ssd_kernels.cpp wraps them, beside their ATen twin). Internal to ops/mamba3. Defined only where the CUDA kernels
// are linked (SSMLAB_WITH_CUDA). The look-ahead SSD core itself runs ops/ssd_scan's kernels (ssd_scan/cuda.h).
#pragma once
#include <ATen/core/Tensor.h>

#include "ssmlab/ops/mamba3/phase_rotate.h"

namespace ssmlab::ops::mamba3_cuda {

// q~ = Rot(phi, q), kk = sc Rot(phi, k) (kernel_rotate.cuh). q, k (B, T, R, H, N) contiguous CUDA tensors of one
// float dtype; cos_phi, sin_phi (B, T, H, S) and sc (B, T, H) contiguous in the compute dtype (float32 or float64),
// on q's device. Returns q~, kk (B, T, R, H, N) in the compute dtype.
std::pair<at::Tensor, at::Tensor> rotate_forward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& cos_phi,
                                                 const at::Tensor& sin_phi, const at::Tensor& sc, bool halves);

struct RotateGrads {
  at::Tensor dq, dk;      // (B, T, R, H, N), compute dtype
  at::Tensor dcos, dsin;  // (B, T, H, S)
  at::Tensor dsc;         // (B, T, H)
};
// The adjoint of rotate_forward for the cotangents dqr, dkk (contiguous, compute dtype; either may be undefined).
RotateGrads rotate_backward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& cos_phi,
                            const at::Tensor& sin_phi, const at::Tensor& sc, const at::Tensor& dqr,
                            const at::Tensor& dkk, bool halves);

// The phase sum, rotation, key scale and q.k (phase_rotate.h: the contract, shared with the CPU twin; kernels in
// kernel_phase.cuh, launchers in phase_kernels.cu): forward 3 launches (chunk sums, column offsets, the rotation with
// the tile's phases in shared memory), backward 3 (the rotation's adjoint with the in-chunk suffix sums of dphi,
// the column suffix sums, dtheta and ddt). S <= 128.
mamba3_phase::PhaseRotateOut phase_rotate_forward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& dt,
                                                  const at::Tensor& theta, const at::Tensor& sc,
                                                  const at::Tensor& phase0, bool halves);
mamba3_phase::PhaseRotateGrads phase_rotate_backward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& dt,
                                                     const at::Tensor& theta, const at::Tensor& sc,
                                                     const at::Tensor& offsets, const at::Tensor& dqr,
                                                     const at::Tensor& dkk, const at::Tensor& dqk,
                                                     const at::Tensor& dlast, bool halves);

}  // namespace ssmlab::ops::mamba3_cuda
