// Fused CPU kernels of the WKV recurrence (README.md beside this file); no autograd here (autograd.cpp wraps
// them). Every tensor is CPU, contiguous, in one compute dtype (float32 or float64):
//   w, u (C)   k, v, y (B, L, C)   h0, final (B, 3, C)   states (B, L, 3, C): (aa, bb, pp) before each step.
#pragma once
#include <ATen/core/Tensor.h>

namespace ssmlab::ops::wkv_cpu {

struct Forward {
  at::Tensor y, final_state, states;
};

struct Grads {
  at::Tensor dw, du, dk, dv, dh0;  // dh0 defined only when h0 is given
};

// h0 may be undefined (the empty state).
Forward forward(const at::Tensor& w, const at::Tensor& u, const at::Tensor& k, const at::Tensor& v,
                const at::Tensor& h0);
// dy (B, L, C) and dfinal (B, 3, C) may be undefined (zero); dfinal's pp row is ignored (wkv.h: gauge).
Grads backward(const at::Tensor& w, const at::Tensor& u, const at::Tensor& k, const at::Tensor& v,
               const at::Tensor& h0, const at::Tensor& y, const at::Tensor& states, const at::Tensor& dy,
               const at::Tensor& dfinal);

}  // namespace ssmlab::ops::wkv_cpu
