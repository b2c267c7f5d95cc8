// Fused CPU kernels of the Mamba-3 scan's sequential part (README.md beside this file); no autograd here
// (autograd.cpp wraps them). They run the look-ahead SSD recurrence of detail.h (Prepared):
//   hbar_t = exp(adt_t) hbar_{t-1} + sum_r x_{t,r} kk_{t,r}^T,   y_{t,r} = hbar_t qr_{t,r}
// Every tensor is CPU, contiguous, in one compute dtype (float32 or float64):
//   qr, kk (B, T, R, H, N)   x, y (B, T, R, H, P)   adt (B, T, H)   h0, final (B, H, P, N) (h0 may be undefined)
//   checkpoints (B, H, ceil(T / kMamba3Checkpoint), P, N): hbar before every kMamba3Checkpoint steps.
#pragma once
#include <ATen/core/Tensor.h>

namespace ssmlab::ops::mamba3_cpu {

inline constexpr int64_t kMamba3Checkpoint = 32;

struct Forward {
  at::Tensor y, final_state, checkpoints;
};

struct Grads {
  at::Tensor dqr, dkk, dx, dadt, dh0;  // dh0 defined when h0 is
};

// Tests: fill every output buffer with NaN before the kernels write it, so an unwritten element fails.
void set_poison_outputs(bool on);

Forward forward(const at::Tensor& qr, const at::Tensor& kk, const at::Tensor& x, const at::Tensor& adt,
                const at::Tensor& h0);
// dy (B, T, R, H, P) and dfinal (B, H, P, N) may be undefined (zero).
Grads backward(const at::Tensor& qr, const at::Tensor& kk, const at::Tensor& x, const at::Tensor& adt,
               const at::Tensor& h0, const at::Tensor& checkpoints, const at::Tensor& dy, const at::Tensor& dfinal);

}  // namespace ssmlab::ops::mamba3_cpu
