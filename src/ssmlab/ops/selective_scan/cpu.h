// Fused CPU kernels of the selective scan (README.md beside this file); no autograd here (autograd.cpp
// wraps them). Internal to ops/selective_scan.
//
// Every tensor handed in is CPU, contiguous, and of one compute dtype (float32 or float64):
//   u, delta, z (B, L, E)   A (E, N)   B, C (B, L, G, N)   D, delta_bias (E)   h0 (B, E, N)
// Optional tensors (D, z, delta_bias, h0; dy, dfinal) may be undefined = absent (gradients zero).
#pragma once
#include <cstdint>

#include <ATen/core/Tensor.h>

namespace ssmlab::ops::selective_scan_cpu {

inline constexpr int64_t kChunk = 64;      // steps between saved states (backward recomputes a chunk)
inline constexpr int64_t kMaxState = 256;  // largest N the kernels take

struct Inputs {
  at::Tensor u, delta, A, B, C, D, z, delta_bias, h0;
  bool softplus = false;
};

struct Forward {
  at::Tensor y;            // (B, L, E)
  at::Tensor final_state;  // (B, E, N)
  at::Tensor starts;       // (B, E, ceil(L / kChunk), N): state before steps 0, kChunk, 2 kChunk, ...
};

struct Grads {
  at::Tensor du, ddelta, dA, dB, dC;  // ddelta is w.r.t. the raw delta (before bias and softplus)
  at::Tensor dD, dz, ddelta_bias, dh0;  // defined only when the input is
};

Forward forward(const Inputs& in);
Grads backward(const Inputs& in, const at::Tensor& starts, const at::Tensor& dy, const at::Tensor& dfinal);

}  // namespace ssmlab::ops::selective_scan_cpu
