// The delta rule as "intra-chunk UT/WY in ATen + one serial pass over chunks" (README.md beside this file,
// "CUDA"): the form the CUDA path runs. Internal to ops/delta_rule.
//
// The intra-chunk part (chunk-local cumulative decays, T = (I + A)^-1, U, W, the masked Q K^T products) is
// batched ATen with autograd, exactly as chunked.cpp computes it. The serial pass over chunks is one autograd
// Function with a hand-written backward; its forward and backward each have two implementations with one
// contract: a loop of ATen matmuls over chunks (any device: the CPU tests check the decomposition and the
// backward formulas with it) and one CUDA kernel per direction (cuda.cu, where the build has CUDA kernels).
//
// Pass contract, per (batch, value head), chunk c = 0..nc-1, all tensors contiguous in one dtype (fp32 / fp64):
//   U (B, HV, nc, Q, V)   W, Qi, Ko (B, HV, nc, Q, K)   A (B, HV, nc, Q, Q) lower triangular incl. diagonal
//   d (B, HV, nc, K) chunk decay per key row          S0 (B, HV, K, V) entry state
// forward, from S = S0:
//   Vn_c = U_c - W_c S;   O_c = Qi_c S + A_c Vn_c;   S <- diag(d_c) S + Ko_c^T Vn_c
// giving O (B, HV, nc, Q, V), the final S, and (save) the entry state of every chunk S_entry (B, HV, nc, K, V)
// and Vn (B, HV, nc, Q, V).
// backward, from dS = dS_final (zero if undefined), c = nc-1..0 (dSx_c = the gradient of chunk c's exit state):
//   dSx_c = dS;   dVn_c = A_c^T dO_c + Ko_c dS;   dS <- diag(d_c) dS + Qi_c^T dO_c - W_c^T dVn_c
// giving dVn, dSx (B, HV, nc, K, V) and dS0 = the last dS. The remaining gradients are batched products
// (chunk_pass.cpp): dU = dVn, dW = -dVn S_entry^T, dQi = dO S_entry^T, dA = dO Vn^T, dKo = Vn dSx^T,
// dd = rowsum(dSx * S_entry).
//
// The state pass (the default for float32 compute on CUDA, and what Impl::aten runs): the same recurrence with the
// output products taken out, since O_c = Qi_c S_entry_c + A_c Vn_c needs only the saved S_entry and Vn and is
// parallel over chunks (batched matmuls under autograd, chunk_pass.cpp). Inputs U, W, Ko, d, S0 as above:
//   forward, from S = S0:  S_entry_c = S;   Vn_c = U_c - W_c S;   S <- diag(d_c) S + Ko_c^T Vn_c
// giving S_entry, Vn and the final S. Backward, from the incoming gradients gS_entry (of S_entry), gVn (of Vn) and
// dS_final (each zero if undefined; through O they are Qi^T dO and A^T dO), from dS = dS_final, c = nc-1..0:
//   dSx_c = dS;   dVn_c = gVn_c + Ko_c dS;   dS <- gS_entry_c + diag(d_c) dS - W_c^T dVn_c
// giving dVn, dSx and dS0 = the last dS; then dU = dVn, dW = -dVn S_entry^T, dKo = Vn dSx^T,
// dd = rowsum(dSx * S_entry) as above. Both directions are one recurrence X <- diag(d) X + R + s2 M2^T (P + s1 M1 X)
// (kernel_delta_state_pass.cuh).
#pragma once
#include <ATen/core/Tensor.h>

#include "ssmlab/ops/delta_rule/delta_rule.h"

namespace ssmlab::ops::delta_rule_pass {

struct Inputs {
  at::Tensor U, W, Qi, A, Ko, d, S0;
};
struct Forward {
  at::Tensor O, final_state, S_entry, Vn;  // S_entry, Vn defined when saved
};
struct Backward {
  at::Tensor dVn, dSx, dS0;
};

struct StateInputs {
  at::Tensor U, W, Ko, d, S0;
};
struct StateForward {
  at::Tensor S_entry, Vn, final_state;
};
// The state pass's gradients are the full pass's (dVn, dSx per chunk, dS0).
using StateBackward = Backward;

// The ATen implementation of the pass (any device).
Forward forward_aten(const Inputs& in, bool save);
Backward backward_aten(const Inputs& in, const at::Tensor& dO, const at::Tensor& dS_final);

// The ATen implementation of the state pass (any device); gS_entry, gVn, dS_final may be undefined (zero).
StateForward state_forward_aten(const StateInputs& in);
StateBackward state_backward_aten(const StateInputs& in, const at::Tensor& gS_entry, const at::Tensor& gVn,
                                  const at::Tensor& dS_final);

// Tests: fill every output buffer of the CUDA kernels with NaN before they write it.
void set_poison_outputs(bool on);
at::Tensor poisoned_empty(at::IntArrayRef sizes, const at::TensorOptions& o);  // at::empty, NaN while on

// Which implementation of the pass runs: Impl::aten runs the state pass (ATen loop) with the output batched outside
// it; Impl::cuda runs the state-pass kernel for float32 compute (unless SSMLAB_DELTA_CUDA=simt or simple), else the
// full-pass SIMT kernels.
enum class Impl { aten, cuda };

// The whole delta rule in this form (delta_rule.h's contract; checked inputs). Impl::cuda needs CUDA inputs that
// delta_rule_cuda_supports(q) accepts; the chunk size is then capped at 64 (the result does not depend on it).
DeltaRuleOut run(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& beta,
                 const DeltaRuleOptions& opts, Impl impl);

}  // namespace ssmlab::ops::delta_rule_pass
