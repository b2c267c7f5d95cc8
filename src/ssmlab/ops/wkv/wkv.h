// RWKV-4 WKV recurrence with the running-max stabilisation (spec §1.6; RWKV-LM v4 wkv_cuda.cu). Shapes
// (docs/GLOSSARY.md, C = channels):
//   w, u : (C)        w = -exp(time_decay) (log of the per-step decay e^w), u = time_first
//   k, v : (B, L, C)  y : (B, L, C)
//   state : (B, 3, C) = (aa, bb, pp): a = aa e^pp = sum_{i<t} e^{(t-1-i) w + k_i} v_i, b = bb e^pp likewise
//           without v; the empty state is (0, 0, -1e38).
//   y_t = (a_t + e^{u + k_t} v_t) / (b_t + e^{u + k_t});  a_{t+1} = e^w a_t + e^{k_t} v_t,  b_{t+1} likewise.
// pp is a gauge (the log scale of aa, bb): gradients treat a loss on the final state as a loss on a and b
// (exact for anything that continues the recurrence); d pp0 = aa0 d aa0 + bb0 d bb0 accordingly.
#pragma once
#include <optional>
#include <string>

#include <ATen/core/Tensor.h>

namespace ssmlab::ops {

struct WkvOut {
  at::Tensor y;            // (B, L, C), dtype of k
  at::Tensor final_state;  // (B, 3, C), state dtype (fp32, fp64 for fp64 k)
};

// The pp of an empty state (-inf in the paper's kernel; finite so that w + pp stays ordered).
inline constexpr double kWkvEmpty = -1e38;

// An empty state (0, 0, -1e38) for `batch` sequences of `channels`.
at::Tensor wkv_empty_state(int64_t batch, int64_t channels, const at::TensorOptions& options);

// Validates the inputs (errors print every shape) and runs the selected backend: "auto" (the fused CPU kernel,
// the CUDA kernel where linked, else the reference) or "reference".
WkvOut wkv(const at::Tensor& w, const at::Tensor& u, const at::Tensor& k, const at::Tensor& v,
           const std::optional<at::Tensor>& initial_state, const std::string& backend = "auto");

// The oracle: time-stepped plain ATen (the stabilised recurrence), float64-capable, differentiable by autograd.
WkvOut wkv_reference(const at::Tensor& w, const at::Tensor& u, const at::Tensor& k, const at::Tensor& v,
                     const std::optional<at::Tensor>& initial_state);

// The fused CPU kernels (cpu.cpp, autograd.cpp): computes in fp32 (fp64 for fp64 k); y in k's dtype.
WkvOut wkv_fused(const at::Tensor& w, const at::Tensor& u, const at::Tensor& k, const at::Tensor& v,
                 const std::optional<at::Tensor>& initial_state);
bool wkv_cpu_supports(const at::Tensor& k);

// The CUDA kernels (cuda.cu, kernel_wkv.cuh, autograd.cpp); same contract as wkv_fused. Throws unless
// wkv_cuda_supports (the build links them, k on CUDA, float32/float64/bfloat16/float16).
WkvOut wkv_cuda(const at::Tensor& w, const at::Tensor& u, const at::Tensor& k, const at::Tensor& v,
                const std::optional<at::Tensor>& initial_state);
bool wkv_cuda_supports(const at::Tensor& k);

void check_wkv_inputs(const at::Tensor& w, const at::Tensor& u, const at::Tensor& k, const at::Tensor& v,
                      const std::optional<at::Tensor>& initial_state);

}  // namespace ssmlab::ops
