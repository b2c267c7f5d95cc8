// The matrix-state recurrence shared by RWKV-5, RWKV-6 and HGRN-2 (spec §1.6), per head with key dim K and
// value dim V, state S (K, V), per-key decay w_t in (0, 1]:
//   bonus mode (RWKV-5/6):  o_t = q_t (S_{t-1} + diag(u) k_t^T v_t),   S_t = diag(w_t) S_{t-1} + k_t^T v_t
//   after mode (HGRN-2):    S_t = diag(w_t) S_{t-1} + k_t^T v_t,        o_t = q_t S_t
// Plain ATen, time-stepped (a reference-grade loop, differentiable by autograd; no fused kernel yet), state
// carried in and out so forward and step share it. Computes in fp32 (fp64 for fp64 inputs).
#pragma once
#include <optional>

#include <ATen/core/Tensor.h>

namespace ssmlab::mixers {

struct LinearAttentionOut {
  at::Tensor o;            // (B, L, H, V), dtype of q
  at::Tensor final_state;  // (B, H, K, V), state dtype
};

// q, k, log_w (B, L, H, K); v (B, L, H, V); u (H, K) for the bonus mode, nullopt for the after mode;
// initial_state (B, H, K, V) or nullopt (zeros). log_w = log of the decay (<= 0).
LinearAttentionOut linear_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                    const at::Tensor& log_w, const std::optional<at::Tensor>& u,
                                    const std::optional<at::Tensor>& initial_state);

}  // namespace ssmlab::mixers
