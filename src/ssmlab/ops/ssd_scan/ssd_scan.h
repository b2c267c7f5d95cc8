// Mamba-2 SSD scan (state-space duality), spec §1.3. Shapes (docs/GLOSSARY.md):
//   x : (B, L, H, P)      dt : (B, L, H)      A, D, dt_bias : (H)      B, C : (B, L, G, N), H % G == 0
//   initial_state, final_state : (B, H, P, N), fp32 (fp64 for fp64 x)
//   dt'_t  = clamp(softplus(dt_t + dt_bias), dt_min, dt_max) · dt_mult        (softplus, bias optional)
//   a_t    = dt'_t · A + log(decay_mult)          (log-decay; alpha_t = exp(a_t) = decay_mult · exp(dt' A))
//   S_t    = exp(a_t) · S_{t-1} + (dt'_t · b_mult) · x_t ⊗ B_t[g(h)]        (S: P x N per head)
//   y_t    = S_t · C_t[g(h)] + D · x_t
// dt_mult, decay_mult, b_mult are the inference interventions of spec §3.6.1 (RRI: decay_mult = λ_α,
// b_mult = λ_B); all default to 1 and are per head.
#pragma once
#include <limits>
#include <optional>
#include <string>

#include <ATen/core/Tensor.h>

namespace ssmlab::ops {

struct SsdScanOptions {
  std::optional<at::Tensor> D;              // (H) skip
  std::optional<at::Tensor> dt_bias;        // (H)
  bool dt_softplus = true;
  double dt_min = 0.0;                      // clamp of dt' after softplus (mamba_ssm's dt_limit)
  double dt_max = std::numeric_limits<double>::infinity();
  std::optional<at::Tensor> initial_state;  // (B, H, P, N)
  int64_t chunk_size = 64;                  // Q of the chunked algorithm; the result does not depend on it
  bool return_chunk_states = false;         // fill SsdScanOut::chunk_states
  std::optional<at::Tensor> dt_mult;        // (H) interventions (spec §3.6.1), 1 when absent
  std::optional<at::Tensor> decay_mult;     // (H), > 0
  std::optional<at::Tensor> b_mult;         // (H)
};

struct SsdScanOut {
  at::Tensor y;             // (B, L, H, P), dtype of x
  at::Tensor final_state;   // (B, H, P, N), state dtype
  // (B, ceil(L / chunk_size), H, P, N): the state after each chunk (the last one is final_state); the
  // reference exports at the same positions. Undefined unless return_chunk_states.
  at::Tensor chunk_states;
};

// Validates the inputs (errors print every shape) and runs the selected backend. backend: "auto" (the path
// ssd_scan_path names: the fused kernel where ssd_scan_cpu_supports / ssd_scan_cuda_supports, except on CPU
// with gradients needed and large heads, where the chunked algorithm is faster; else the chunked ATen
// algorithm on any device, the log says so once) or "reference" (the time-stepped oracle).
SsdScanOut ssd_scan(const at::Tensor& x, const at::Tensor& dt, const at::Tensor& A, const at::Tensor& B,
                    const at::Tensor& C, const SsdScanOptions& opts = {}, const std::string& backend = "auto");

// The implementation ssd_scan(..., backend) runs.
enum class SsdScanPath { reference, chunked, fused };
const char* to_string(SsdScanPath path);

// "auto" on CPU when gradients will be taken (GradMode on and an input requires grad) and ATen runs one
// thread: the chunked algorithm at chunk Q = kSsdCpuTrainChunk when P·N >= kSsdCpuTrainChunkedMinPN, the
// fused kernel below. The fused kernel wins every forward and small heads' forward+backward; its
// time-stepped backward loses to the chunked algorithm's matmuls from P·N = 2048 up. With more threads the
// fused kernel stays: the chunked algorithm's many small parallel ATen ops were 4-40x slower on a shared
// 2-core machine (ops/ssd_scan/README.md, "auto on CPU", has the numbers).
// Q = 64 is the fastest chunk measured there (256, the mixer's default, is 1.5-4x slower on CPU); results
// do not depend on Q, and a chunk-state export keeps the caller's chunk_size.
inline constexpr int64_t kSsdCpuTrainChunkedMinPN = 2048;
inline constexpr int64_t kSsdCpuTrainChunk = 64;

// The path ssd_scan(x, ..., opts, backend) takes for these inputs, without running it (backend "auto" or
// "reference"; inputs as ssd_scan's, unchecked here).
SsdScanPath ssd_scan_path(const at::Tensor& x, const at::Tensor& dt, const at::Tensor& A, const at::Tensor& B,
                          const at::Tensor& C, const SsdScanOptions& opts, const std::string& backend = "auto");

// The oracle: time-stepped recurrence in plain ATen, float64-capable, differentiable by autograd through
// ATen. Holds one state (B, H, P, N) at a time (no (B, L, H, P, N) buffer), so no-grad runs at any length
// use memory O(B·L·H·P + B·H·P·N). Expects checked inputs.
SsdScanOut ssd_scan_reference(const at::Tensor& x, const at::Tensor& dt, const at::Tensor& A, const at::Tensor& B,
                              const at::Tensor& C, const SsdScanOptions& opts);

// The chunked SSD algorithm (spec §1.3, Dao & Gu 2024 §6) in ATen: per chunk of Q steps the quadratic
// (attention-like) form (L ∘ C Bᵀ) X̄, the chunk's end state, then a sequential pass over chunks carrying the
// state. Differentiable by autograd; runs on any device. Memory O(B·L·H·(P + Q) + B·(L/Q)·H·P·N).
// Expects checked inputs.
SsdScanOut ssd_scan_chunked(const at::Tensor& x, const at::Tensor& dt, const at::Tensor& A, const at::Tensor& B,
                            const at::Tensor& C, const SsdScanOptions& opts);

// The fused kernels (cpu.cpp / cuda.cu, autograd.cpp). CPU: the time-stepped recurrence per (batch, head), the
// state held locally, vectorised over N, parallel over B·H. CUDA: the chunked algorithm on tensor cores
// (kernel_ssd_chunked.cuh; float inputs with P <= 64, N <= 128), else the time-stepped recurrence with one block
// per (batch, head) and the state in registers (kernel_ssd.cuh); README.md says which and why. Backward from
// states saved every 64 steps. Same contract and results as the reference up to rounding; computes in fp32
// (fp64 for fp64 x; bf16 tensor-core products in the CUDA forward of bf16 x). Throws unless ssd_scan_cpu_supports(...) or
// ssd_scan_cuda_supports(...). Expects checked inputs.
SsdScanOut ssd_scan_fused(const at::Tensor& x, const at::Tensor& dt, const at::Tensor& A, const at::Tensor& B,
                          const at::Tensor& C, const SsdScanOptions& opts);

// True when the fused CPU kernel takes the case: every tensor on CPU, x float32/float64/bfloat16/float16, and
// no chunk-state export (return_chunk_states is served by the chunked algorithm).
bool ssd_scan_cpu_supports(const at::Tensor& x, const at::Tensor& dt, const at::Tensor& A, const at::Tensor& B,
                           const at::Tensor& C, const SsdScanOptions& opts);

// True when the CUDA kernels (cuda.cu) take the case: the build links them
// (SSMLAB_WITH_CUDA), every tensor on x's CUDA device, x float32/float64/bfloat16/float16 (computed in fp32,
// fp64 for fp64), P <= 64, N <= 256, no chunk-state export. ssd_scan_fused runs them for CUDA inputs.
bool ssd_scan_cuda_supports(const at::Tensor& x, const at::Tensor& dt, const at::Tensor& A, const at::Tensor& B,
                            const at::Tensor& C, const SsdScanOptions& opts);

// One decode step: x_t (B, H, P), dt_t (B, H), B_t, C_t (B, G, N) continue the recurrence held in `state`
// (B, H, P, N), which is updated in place (it keeps its dtype; compute in fp32, fp64 for fp64 x_t). Returns
// y_t (B, H, P) in x_t's dtype. Uses opts' D, dt_bias, dt_softplus, dt limits and interventions; an
// initial_state or return_chunk_states there is an error. One fused kernel for CUDA inputs where the build
// links it (state contiguous in the compute dtype, P <= 64, N <= 256), else plain ATen; not differentiable.
// Looping it over t gives ssd_scan's y rows and, at the end, its final_state.
at::Tensor ssd_scan_update(const at::Tensor& x_t, const at::Tensor& dt_t, const at::Tensor& A, const at::Tensor& B_t,
                           const at::Tensor& C_t, at::Tensor& state, const SsdScanOptions& opts = {});

// Throws ssmlab::Error naming every offending shape/dtype/device or option.
void check_ssd_scan_inputs(const at::Tensor& x, const at::Tensor& dt, const at::Tensor& A, const at::Tensor& B,
                           const at::Tensor& C, const SsdScanOptions& opts);

namespace ssd_detail {
// The per-step coefficients shared by every backend, in the compute dtype (fp32, fp64 for fp64 x):
// log-decay a (B, L, H) and input weight w = dt' · b_mult (B, L, H). Differentiable.
struct Coefficients {
  at::Tensor a, w;
};
Coefficients coefficients(const at::Tensor& dt, const at::Tensor& A, const SsdScanOptions& opts,
                          at::ScalarType compute);
}  // namespace ssd_detail

}  // namespace ssmlab::ops
