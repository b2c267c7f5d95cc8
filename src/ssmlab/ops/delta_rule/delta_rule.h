// The (gated) delta rule of DeltaNet, Gated DeltaNet and KDA (../shared/spec/mamba3-gdn-spec.md B.3, B.6, B.7).
// Shapes (docs/GLOSSARY.md): H query/key heads, HV value heads (HV % H == 0: value head j reads key head
// j / (HV / H), grouped value attention), K key dim, V value dim:
//   q, k : (B, L, H, K)      v : (B, L, HV, V)      beta : (B, L, HV)
//   g (optional log decay, <= 0): (B, L, HV) one gate per head (Gated DeltaNet) or (B, L, HV, K) one per key
//     channel (KDA); absent: no decay (DeltaNet)
//   state, initial_state, final_state : (B, HV, K, V), fp32 (fp64 for fp64 q); o : (B, L, HV, V)
// Per (batch, value head), with a_t = exp(g_t) (a scalar, or a vector over the key rows of S):
//   S   = diag(a_t) S                          decay (rows = key channels)
//   u_t = beta_t (v_t - S^T k_t)               correction against the decayed state
//   S   = S + k_t u_t^T                        S_t = diag(a_t)(I - beta_t k_t k_t^T) S_{t-1} + beta_t k_t v_t^T
//   o_t = S^T q_t
// q and k are used as given: the mixers L2-normalise them and scale q by K^-1/2. beta is any real (the mixers
// give (0, 1), or (0, 2) with negative eigenvalues); beta = 0 leaves the state as the decay left it.
#pragma once
#include <optional>
#include <string>

#include <ATen/core/Tensor.h>

namespace ssmlab::ops {

struct DeltaRuleOptions {
  std::optional<at::Tensor> g;              // (B, L, HV) or (B, L, HV, K) log decay; absent: none
  std::optional<at::Tensor> initial_state;  // (B, HV, K, V); absent: zeros
  int64_t chunk_size = 64;                  // Q of the chunked algorithm; the result does not depend on it
};

struct DeltaRuleOut {
  at::Tensor o;            // (B, L, HV, V), dtype of q
  at::Tensor final_state;  // (B, HV, K, V), state dtype
};

// The implementation delta_rule(..., backend) runs: the time-stepped oracle, the chunked UT/WY algorithm in
// ATen (any device), or the fused kernels (CPU: cpu.cpp; CUDA: the UT/WY chunk form with its serial pass over
// chunks as one CUDA kernel per direction, chunk_pass.h).
enum class DeltaRulePath { reference, chunked, fused };
const char* to_string(DeltaRulePath path);

// Validates the inputs (errors print every shape) and runs the selected backend: "auto" (the fused CPU kernel
// for CPU inputs; the CUDA kernels for CUDA inputs where delta_rule_cuda_supports(q); elsewhere the chunked ATen
// algorithm, logged once) or "reference" (the time-stepped oracle). The environment variable
// SSMLAB_DELTA_CUDA=chunked (read on every call) sends "auto" on CUDA to the chunked ATen algorithm instead.
DeltaRuleOut delta_rule(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& beta,
                        const DeltaRuleOptions& opts = {}, const std::string& backend = "auto");
DeltaRulePath delta_rule_path(const at::Tensor& q, const std::string& backend = "auto");

// The oracle: the recurrence above, one time step at a time on whole (B, HV, K, V) tensors, in plain ATen
// (differentiable by autograd); fp32, or fp64 for fp64 q. Expects checked inputs.
DeltaRuleOut delta_rule_reference(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                  const at::Tensor& beta, const DeltaRuleOptions& opts);

// The chunked UT/WY form (spec B.6) in plain ATen, differentiable by autograd, any device: per chunk of Q steps
// with G = the chunk-local cumulative log decay (per key channel), Gamma_ts = exp(G_t - G_s) (s <= t),
//   A = strictly_lower(diag(beta) (K Gamma K^T)),  T = (I + A)^-1,  U = T diag(beta) V,  W = T diag(beta) (K e^G)
// then serially over chunks, from the chunk-entry state S:
//   V' = U - W S,  O = (Q e^G) S + lower_incl(Q Gamma K^T) V',  S <- diag(e^{G_Q}) S + (K e^{G_Q - G})^T V'.
// Every exponent is <= 0 (masked before exp). Memory O(B L HV Q K) for the pairwise decays. Expects checked
// inputs.
DeltaRuleOut delta_rule_chunked(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& beta,
                                const DeltaRuleOptions& opts);

// The fused kernels. CPU (cpu.cpp, autograd.cpp): the recurrence per (batch, value head) with the state held
// locally, vectorised over V, parallel over B HV; a hand-written backward from states saved every 64 steps.
// CUDA (chunk_pass.cpp, cuda.cu): the intra-chunk UT/WY part in batched ATen, the serial pass over chunks as one
// kernel per direction (state on chip per (batch, value head, 32 value columns)), chunk size capped at 64.
// Computes in fp32 (fp64 for fp64 q); o in q's dtype. Throws unless delta_rule_cpu_supports(q) or
// delta_rule_cuda_supports(q). Expects checked inputs.
DeltaRuleOut delta_rule_fused(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& beta,
                              const DeltaRuleOptions& opts);
bool delta_rule_cpu_supports(const at::Tensor& q);
// CUDA q of a float dtype, a build with the CUDA kernels, K <= 256 with the kernels' shared memory fitting the
// device (fp32 compute: every K <= 256; fp64: K <= 128), and SSMLAB_DELTA_CUDA not "chunked".
bool delta_rule_cuda_supports(const at::Tensor& q);

// One decode step: q_t, k_t (B, H, K), v_t (B, HV, V), beta_t (B, HV), g_t (B, HV) or (B, HV, K) or nullopt
// continue the recurrence held in `state` (B, HV, K, V), updated in place (it keeps its dtype; compute in fp32,
// fp64 for fp64 q_t). Returns o_t (B, HV, V) in q_t's dtype. Plain ATen on every device; not differentiable.
// Looping it over t gives delta_rule's o rows and, at the end, its final_state.
at::Tensor delta_rule_update(const at::Tensor& q_t, const at::Tensor& k_t, const at::Tensor& v_t,
                             const at::Tensor& beta_t, at::Tensor& state, const std::optional<at::Tensor>& g_t);

// Throws ssmlab::Error naming every offending shape, dtype or device.
void check_delta_rule_inputs(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& beta,
                             const DeltaRuleOptions& opts);

}  // namespace ssmlab::ops
