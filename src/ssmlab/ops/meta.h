// Meta (fake) kernels of the ssmlab::<op> schemas (meta.cpp); same signatures as the schemas. Registered for the
// Meta key in registration.cpp.
#pragma once
#include <optional>
#include <tuple>

#include <ATen/core/Tensor.h>

namespace ssmlab::ops::meta {

using OptTensor = std::optional<at::Tensor>;

std::tuple<at::Tensor, at::Tensor> selective_scan(const at::Tensor& u, const at::Tensor& delta, const at::Tensor& A,
                                                  const at::Tensor& B, const at::Tensor& C, const OptTensor& D,
                                                  const OptTensor& z, const OptTensor& delta_bias, bool delta_softplus,
                                                  const OptTensor& initial_state);
std::tuple<at::Tensor, at::Tensor> selective_scan_varlen(const at::Tensor& u, const at::Tensor& delta,
                                                         const at::Tensor& A, const at::Tensor& B, const at::Tensor& C,
                                                         const at::Tensor& cu_seqlens, const OptTensor& D,
                                                         const OptTensor& z, const OptTensor& delta_bias,
                                                         bool delta_softplus, const OptTensor& initial_state);
std::tuple<at::Tensor, at::Tensor> causal_conv1d(const at::Tensor& x, const at::Tensor& weight, const OptTensor& bias,
                                                 bool silu, const OptTensor& initial_state);
at::Tensor causal_conv1d_update(const at::Tensor& x, at::Tensor& state, const at::Tensor& weight,
                                const OptTensor& bias, bool silu);
at::Tensor selective_state_update(at::Tensor& state, const at::Tensor& x, const at::Tensor& dt, const at::Tensor& A,
                                  const at::Tensor& B, const at::Tensor& C, const OptTensor& D, const OptTensor& z,
                                  const OptTensor& dt_bias, bool dt_softplus);
std::tuple<at::Tensor, at::Tensor> wkv(const at::Tensor& w, const at::Tensor& u, const at::Tensor& k,
                                       const at::Tensor& v, const OptTensor& initial_state);
std::tuple<at::Tensor, at::Tensor, at::Tensor> ssd_scan(const at::Tensor& x, const at::Tensor& dt,
                                                        const at::Tensor& A, const at::Tensor& B, const at::Tensor& C,
                                                        const OptTensor& D, const OptTensor& dt_bias, bool dt_softplus,
                                                        double dt_min, std::optional<double> dt_max,
                                                        const OptTensor& initial_state, int64_t chunk_size,
                                                        bool return_chunk_states, const OptTensor& dt_mult,
                                                        const OptTensor& decay_mult, const OptTensor& b_mult);
at::Tensor ssd_scan_update(const at::Tensor& x, const at::Tensor& dt, const at::Tensor& A, const at::Tensor& B,
                           const at::Tensor& C, at::Tensor& state, const OptTensor& D, const OptTensor& dt_bias,
                           bool dt_softplus, double dt_min, std::optional<double> dt_max, const OptTensor& dt_mult,
                           const OptTensor& decay_mult, const OptTensor& b_mult);

std::tuple<at::Tensor, at::Tensor> delta_rule(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                              const at::Tensor& beta, const OptTensor& g,
                                              const OptTensor& initial_state, int64_t chunk_size);
at::Tensor delta_rule_update(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& beta,
                             at::Tensor& state, const OptTensor& g);
using Mamba3Tuple = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;
Mamba3Tuple mamba3_scan(const at::Tensor& q, const at::Tensor& k, const at::Tensor& x, const at::Tensor& adt,
                        const at::Tensor& dt, const at::Tensor& trap, const at::Tensor& theta, const OptTensor& D,
                        const OptTensor& phase, const OptTensor& state, const OptTensor& k_prev,
                        const OptTensor& x_prev, c10::string_view pairing, int64_t chunk_size);
Mamba3Tuple mamba3_step(const at::Tensor& q, const at::Tensor& k, const at::Tensor& x, const at::Tensor& adt,
                        const at::Tensor& dt, const at::Tensor& trap, const at::Tensor& theta, const at::Tensor& phase,
                        const at::Tensor& state, const at::Tensor& k_prev, const at::Tensor& x_prev, const OptTensor& D,
                        c10::string_view pairing);

std::tuple<at::Tensor, at::Tensor> cross_entropy(const at::Tensor& logits, const at::Tensor& targets,
                                                 int64_t ignore_index);

}  // namespace ssmlab::ops::meta
