// Fused CPU kernels of the selective scan (README.md beside this file); no autograd here (autograd.cpp
// wraps them). Internal to ops/selective_scan.
//
// The kernels run the recurrence and its adjoint; the elementwise parts around it (delta' =
// softplus(delta + bias), the silu(z) gate and their derivatives) are whole-tensor ATen ops in
// autograd.cpp, which vectorise better than per-step scalar calls.
// Every tensor handed in is CPU, contiguous, and of one compute dtype (float32 or float64):
//   u, dt (B, L, E) (dt = delta' after bias and softplus)   A (E, N)   B, C (B, L, G, N)   D (E)   h0 (B, E, N)
// Optional tensors (D, h0; dy, dfinal) may be undefined = absent (gradients zero).
#pragma once
#include <cstdint>

#include <ATen/core/Tensor.h>

namespace ssmlab::ops::selective_scan_cpu {

inline constexpr int64_t kChunk = 64;      // steps between saved states (backward recomputes a chunk)
inline constexpr int64_t kMaxState = 256;  // largest N the kernels take

struct Inputs {
  at::Tensor u, dt, A, B, C, D, h0;
};

struct Forward {
  at::Tensor y;            // (B, L, E): C . h + D u (before any z gate)
  at::Tensor final_state;  // (B, E, N)
  at::Tensor starts;       // (B, E, ceil(L / kChunk), N): state before steps 0, kChunk, 2 kChunk, ...
};

struct Grads {
  at::Tensor du, ddt, dA, dB, dC;  // ddt: w.r.t. dt (delta' after bias and softplus)
  at::Tensor dD, dh0;              // defined only when the input is
};

Forward forward(const Inputs& in);
// dy: gradient w.r.t. forward's y (before the gate); dfinal: w.r.t. the final state.
Grads backward(const Inputs& in, const at::Tensor& starts, const at::Tensor& dy, const at::Tensor& dfinal);

}  // namespace ssmlab::ops::selective_scan_cpu
