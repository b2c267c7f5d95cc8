// Fused CPU kernels of causal_conv1d (README.md beside this file): forward and backward; no autograd here
// (autograd.cpp wraps them). Internal to ops/causal_conv1d.
//
// Every tensor handed in is CPU, contiguous, and of one compute dtype (float32 or float64):
//   x (B, L, E)   weight (E, W), W in 1..4   bias (E)   state (B, W-1, E) (the inputs before x)
// Optional tensors (bias, state; dout, dfinal) may be undefined = absent (zeros).
// Rows (b, t) are vectorised over E (contiguous) and spread over ATen's intra-op threads.
#pragma once
#include <cstdint>

#include <ATen/core/Tensor.h>

namespace ssmlab::ops::causal_conv1d_cpu {

inline constexpr int64_t kMaxWidth = 4;

struct Inputs {
  at::Tensor x, weight, bias, state;
  bool silu = false;
};

struct Forward {
  at::Tensor out;          // (B, L, E), after the optional SiLU
  at::Tensor final_state;  // (B, W-1, E): the last W-1 rows of xpad = concat(state, x)
};

struct Grads {
  at::Tensor dx;       // (B, L, E)
  at::Tensor dweight;  // (E, W)
  at::Tensor dbias;    // (E); defined only when bias is
  at::Tensor dstate;   // (B, W-1, E); defined only when state is
};

Forward forward(const Inputs& in);
// dout: gradient w.r.t. forward's out (after the SiLU; the pre-activation is recomputed);
// dfinal: w.r.t. the final state. Either may be undefined (zero).
Grads backward(const Inputs& in, const at::Tensor& dout, const at::Tensor& dfinal);

}  // namespace ssmlab::ops::causal_conv1d_cpu
