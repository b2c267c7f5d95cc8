// Fused CPU kernels of the whole Mamba-3 scan (README.md beside this file, "Fused CPU kernel"); no autograd here
// (autograd.cpp wraps them). One task per (batch, head) runs the preparation (phase cumsum, rotation of q and k,
// the key scale s_t), the look-ahead SSD recurrence of detail.h (Prepared)
//   hbar_t = exp(adt_t) hbar_{t-1} + sum_r x_{t,r} (s_t k~_{t,r})^T
//   hbar_{-1} = h0 + (1 - lambda_0) dt_0 sum_r x_prev_r k_prev_r^T
//   y_{t,r} = hbar_t q~_{t,r} - rho_t sum_b (q_{t,r} . k_{t,b}) x_{t,b} + D x_{t,r}
// and, in the backward, the hand derivative of all of it. Every tensor is CPU, contiguous, in one compute dtype
// (float32 or float64):
//   q, k (B, T, R, H, N)   x, y (B, T, R, H, P)   adt, dt, trap (B, T, H)   theta (B, T, H, S)   D (H) or undefined
//   phase0 (B, H, S), h0 (B, H, P, N), k_prev0 (B, R, H, N), x_prev0 (B, R, H, P): all defined or all undefined
//   final (B, H, P, N) = hbar_{T-1}; checkpoints (B, H, ceil(T / kMamba3Checkpoint), P, N): hbar before every
//   kMamba3Checkpoint steps.
#pragma once
#include <ATen/core/Tensor.h>

namespace ssmlab::ops::mamba3_cpu {

inline constexpr int64_t kMamba3Checkpoint = 32;

struct Inputs {
  at::Tensor q, k, x, adt, dt, trap, theta, D;  // D may be undefined (no skip)
  at::Tensor phase0, h0, k_prev0, x_prev0;      // the initial state, or all undefined (zeros)
  bool halves = false;                          // pairs (i, i + N/2); else adjacent (2i, 2i+1)
};

struct Forward {
  at::Tensor y, final_state, checkpoints;
};

// dD is defined when D is; dphase0, dh0, dk_prev0, dx_prev0 when the initial state is.
struct Grads {
  at::Tensor dq, dk, dx, dadt, ddt, dtrap, dtheta, dD, dphase0, dh0, dk_prev0, dx_prev0;
};

// Tests: fill every output buffer with NaN before the kernels write it, so an unwritten element fails.
void set_poison_outputs(bool on);

Forward forward(const Inputs& in);
// dy (B, T, R, H, P) and dfinal (B, H, P, N) may be undefined (zero).
Grads backward(const Inputs& in, const at::Tensor& checkpoints, const at::Tensor& dy, const at::Tensor& dfinal);

}  // namespace ssmlab::ops::mamba3_cpu
