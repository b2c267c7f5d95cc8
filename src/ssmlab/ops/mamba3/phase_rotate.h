// The phase sum, rotation, key scale and per-rank q.k of the Mamba-3 CUDA path as one contract, forward and
// hand-written backward (README.md beside this file, "Phase kernels"); no autograd here (ssd_kernels.cpp wraps it).
// CUDA: kernel_phase.cuh via phase_kernels.cu (mamba3_cuda::phase_rotate_*, cuda.h); CPU: the twin below, the same
// algorithm (chunks, sums, shared per-element math of phase_math.h) as plain loops, so CPU tests check the algebra.
//
// Forward, per (b, h): P_t = phase0 + sum_{u <= t} dt_u theta_u (float64, two levels: chunks of Tc steps,
// phase_math.h phase_chunk), c, s = cos, sin P_t (phase_math.h phase_cos_sin), then per rank r
//   qr = Rot(P_t, q),  kk = sc_t Rot(P_t, k),  qk_r = q_r . k_r,  phase_last = P_{T-1} mod 2pi (float64)
// Backward, with G the cotangents: dq = Rot^T(Gqr) + Gqk k, dk = sc Rot^T(Gkk) + Gqk q, dsc = sum Gkk . Rot(k),
//   dphi_t,i = -sin(P) dcos + cos(P) dsin (dcos, dsin as kernel_rotate.cuh), Gs_t = Glast + sum_{u >= t} dphi_u,
//   dtheta_t = dt_t Gs_t, ddt_t = theta_t . Gs_t, dphase0 = Gs_0.
#pragma once
#include <ATen/core/Tensor.h>

namespace ssmlab::ops::mamba3_phase {

struct PhaseRotateOut {
  at::Tensor qr, kk;        // (B, T, R, H, N), compute dtype
  at::Tensor qk;            // (B, T, R, H), compute dtype
  at::Tensor phase_last;    // (B, H, S) float64 in [0, 2pi)
  at::Tensor offsets;       // (B, H, nC, S) float64: phase0 + the sum of the chunks before chunk c (for backward)
};

struct PhaseRotateGrads {
  at::Tensor dq, dk;        // (B, T, R, H, N), compute dtype
  at::Tensor ddt;           // (B, T, H), compute dtype
  at::Tensor dtheta;        // (B, T, H, S), compute dtype
  at::Tensor dsc;           // (B, T, H), compute dtype
  at::Tensor dphase0;       // (B, H, S) float64
};

// Contract (both backends): q, k (B, T, R, H, N) contiguous, one float dtype; dt (B, T, H) and theta (B, T, H, S)
// float types, any strides (an expand()ed theta is read in place on CUDA); sc (B, T, H) contiguous in the compute
// dtype C (float32 or float64), which every output but the float64 ones takes; phase0 (B, H, S) float64 contiguous
// or undefined (zeros). The cotangents: dqr, dkk (B, T, R, H, N), dqk (B, T, R, H) contiguous C, dlast (B, H, S)
// float64 contiguous; any may be undefined (zero).
PhaseRotateOut forward_cpu(const at::Tensor& q, const at::Tensor& k, const at::Tensor& dt, const at::Tensor& theta,
                           const at::Tensor& sc, const at::Tensor& phase0, bool halves);
PhaseRotateGrads backward_cpu(const at::Tensor& q, const at::Tensor& k, const at::Tensor& dt, const at::Tensor& theta,
                              const at::Tensor& sc, const at::Tensor& offsets, const at::Tensor& dqr,
                              const at::Tensor& dkk, const at::Tensor& dqk, const at::Tensor& dlast, bool halves);

// Test hook: the CPU twin's outputs start NaN-filled while on (ops/poison.h).
void set_poison_outputs(bool on);

}  // namespace ssmlab::ops::mamba3_phase
