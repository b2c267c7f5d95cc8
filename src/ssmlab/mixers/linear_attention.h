// The matrix-state recurrence shared by RWKV-5, RWKV-6 and HGRN-2 (spec §1.6), per head with key dim K and
// value dim V, state S (K, V), per-key decay w_t in (0, 1]:
//   bonus mode (RWKV-5/6):  o_t = q_t (S_{t-1} + diag(u) k_t^T v_t),   S_t = diag(w_t) S_{t-1} + k_t^T v_t
//   after mode (HGRN-2):    S_t = diag(w_t) S_{t-1} + k_t^T v_t,        o_t = q_t S_t
// Two plain-ATen forms, both differentiable by autograd, state carried in and out so forward and step share
// them; computed in fp32 (fp64 for fp64 inputs):
//   linear_attention_reference: the time loop (the oracle);
//   linear_attention: chunked (chunks of `chunk` steps): within a chunk the pairwise decay products
//   exp(b_t - b_s) (b = cumulative log decay, s <= t, so every exponent is <= 0) form a (C, C) score matrix per
//   head; the state passes between chunks. Memory O(B L C H K) for the scores. No fused kernel yet.
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
                                    const std::optional<at::Tensor>& initial_state, int64_t chunk = 16);
LinearAttentionOut linear_attention_reference(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                              const at::Tensor& log_w, const std::optional<at::Tensor>& u,
                                              const std::optional<at::Tensor>& initial_state);

}  // namespace ssmlab::mixers
