// Fused CPU kernels of the delta rule (README.md beside this file); no autograd here (autograd.cpp wraps them).
// Every tensor is CPU, contiguous, in one compute dtype (float32 or float64):
//   q, k (B, L, H, K)   v, o (B, L, HV, V)   beta (B, L, HV)   g (B, L, HV) or (B, L, HV, K) or undefined
//   h0, final (B, HV, K, V)   checkpoints (B, HV, ceil(L / kDeltaCheckpoint), K, V): the state before every
//   kDeltaCheckpoint steps.
#pragma once
#include <ATen/core/Tensor.h>

namespace ssmlab::ops::delta_rule_cpu {

inline constexpr int64_t kDeltaCheckpoint = 64;

struct Forward {
  at::Tensor o, final_state, checkpoints;
};

struct Grads {
  at::Tensor dq, dk, dv, dbeta, dg, dh0;  // dg defined when g is, dh0 when h0 is
};

// Tests: fill every output buffer with NaN before the kernels write it, so an unwritten element fails.
void set_poison_outputs(bool on);

// h0 and g may be undefined (zeros; no decay).
Forward forward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& beta,
                const at::Tensor& g, const at::Tensor& h0);
// do_ (B, L, HV, V) and dfinal (B, HV, K, V) may be undefined (zero).
Grads backward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& beta,
               const at::Tensor& g, const at::Tensor& h0, const at::Tensor& checkpoints, const at::Tensor& do_,
               const at::Tensor& dfinal);

}  // namespace ssmlab::ops::delta_rule_cpu
