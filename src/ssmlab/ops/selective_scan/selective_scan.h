// Selective scan (Mamba-1 S6), spec §1.1. Shapes (docs/GLOSSARY.md):
//   u, delta, z : (B, L, E)        A : (E, N)          B, C : (B, L, N) or grouped (B, L, G, N), E % G == 0
//   D, delta_bias : (E)            initial_state, final_state : (B, E, N), fp32 (fp64 for fp64 inputs)
//   delta' = softplus(delta + delta_bias) (softplus optional)
//   h_t = exp(delta'_t A) * h_{t-1} + delta'_t * u_t * B_t,   y_t = C_t . h_t + D * u_t,   y_t *= silu(z_t)
#pragma once
#include <optional>
#include <tuple>

#include <ATen/core/Tensor.h>

namespace ssmlab::ops {

struct SelectiveScanOut {
  at::Tensor y;            // (B, L, E), dtype of u
  at::Tensor final_state;  // (B, E, N), state dtype
};

// Validates the inputs (errors print every shape) and runs the selected backend.
// backend: "auto" (fastest available kernel for the device: the fused CPU kernel where
// selective_scan_cpu_supports, the CUDA kernels where selective_scan_cuda_supports, else the reference)
// or "reference".
SelectiveScanOut selective_scan(const at::Tensor& u, const at::Tensor& delta, const at::Tensor& A,
                                const at::Tensor& B, const at::Tensor& C, const std::optional<at::Tensor>& D,
                                const std::optional<at::Tensor>& z, const std::optional<at::Tensor>& delta_bias,
                                bool delta_softplus, const std::optional<at::Tensor>& initial_state,
                                const std::string& backend = "auto");

// Packed variable-length sequences: u, delta, z (1, T, E) and B, C (1, T, N) / (1, T, G, N) hold S sequences
// back to back; cu_seqlens (S + 1) int64 holds their offsets (0 = cu[0] <= cu[1] <= ... <= cu[S] = T). The state
// starts at each sequence's start from initial_state[s] (S, E, N) or zero, so no sequence sees another's tokens;
// final_state is (S, E, N), the state after each sequence's last token. Gradients reach every input,
// initial_state included. Runs the chosen backend once on the sequences gathered into a (S, max_len, E) batch
// (padding steps have delta' = 0 and B = 0, so they leave the state unchanged) and scatters y back.
SelectiveScanOut selective_scan_varlen(const at::Tensor& u, const at::Tensor& delta, const at::Tensor& A,
                                       const at::Tensor& B, const at::Tensor& C, const std::optional<at::Tensor>& D,
                                       const std::optional<at::Tensor>& z,
                                       const std::optional<at::Tensor>& delta_bias, bool delta_softplus,
                                       const at::Tensor& cu_seqlens, const std::optional<at::Tensor>& initial_state,
                                       const std::string& backend = "auto");

// The oracle: time-stepped, plain ATen, float64-capable, differentiable (autograd Function whose
// backward is a reverse time loop that recomputes states chunk by chunk from saved chunk-start states;
// memory O(B·L·E + B·E·N·L/chunk), never (B, L, E, N) at once).
SelectiveScanOut selective_scan_reference(const at::Tensor& u, const at::Tensor& delta, const at::Tensor& A,
                                          const at::Tensor& B, const at::Tensor& C,
                                          const std::optional<at::Tensor>& D, const std::optional<at::Tensor>& z,
                                          const std::optional<at::Tensor>& delta_bias, bool delta_softplus,
                                          const std::optional<at::Tensor>& initial_state);

// The fused CPU kernels (cpu.cpp, autograd.cpp): same contract and results as the reference up to
// rounding; computes in fp32 (fp64 for fp64 u), bf16/fp16 u computed in fp32 and y returned in u's dtype.
// Throws unless selective_scan_cpu_supports(...) for the inputs. Expects checked inputs.
SelectiveScanOut selective_scan_fused(const at::Tensor& u, const at::Tensor& delta, const at::Tensor& A,
                                      const at::Tensor& B, const at::Tensor& C, const std::optional<at::Tensor>& D,
                                      const std::optional<at::Tensor>& z,
                                      const std::optional<at::Tensor>& delta_bias, bool delta_softplus,
                                      const std::optional<at::Tensor>& initial_state);

// True when the fused CPU kernel takes the case: every tensor on CPU, u float32/float64/bfloat16/float16,
// N <= 256 (any L, B, E, G).
bool selective_scan_cpu_supports(const at::Tensor& u, const at::Tensor& delta, const at::Tensor& A,
                                 const at::Tensor& B, const at::Tensor& C, const std::optional<at::Tensor>& D,
                                 const std::optional<at::Tensor>& z, const std::optional<at::Tensor>& delta_bias,
                                 const std::optional<at::Tensor>& initial_state);

// The CUDA kernels (cuda.cu + kernel_scan.cuh, autograd_cuda.cpp): same contract as selective_scan_fused;
// computes in fp32 (fp64 for fp64 u) with the bias + softplus, D skip and silu(z) gate fused into the scan.
// Throws unless selective_scan_cuda_supports(...) for the inputs. Expects checked inputs.
SelectiveScanOut selective_scan_cuda(const at::Tensor& u, const at::Tensor& delta, const at::Tensor& A,
                                     const at::Tensor& B, const at::Tensor& C, const std::optional<at::Tensor>& D,
                                     const std::optional<at::Tensor>& z,
                                     const std::optional<at::Tensor>& delta_bias, bool delta_softplus,
                                     const std::optional<at::Tensor>& initial_state);

// True when the CUDA kernels take the case: the build links them (SSMLAB_WITH_CUDA), every tensor on u's CUDA
// device, u float32/float64/bfloat16/float16 with delta, z, B, C in u's dtype, 1 <= N <= 256 (any L, B, E, G).
// Always false in a build without CUDA kernels.
bool selective_scan_cuda_supports(const at::Tensor& u, const at::Tensor& delta, const at::Tensor& A,
                                  const at::Tensor& B, const at::Tensor& C, const std::optional<at::Tensor>& D,
                                  const std::optional<at::Tensor>& z, const std::optional<at::Tensor>& delta_bias,
                                  const std::optional<at::Tensor>& initial_state);

// How many time segments "auto" splits a scan of (batch, len, channels) into on `device` (segmented.cpp): 1 (no
// split) on CPU and wherever batch x channels fills the GPU; else the fewest of 2, 4, 8, 16 that reach ~12288
// (batch, channel) rows with segments of >= 512 steps that divide len. SSMLAB_SCAN_SEGMENTS = "1" turns the split
// off, k >= 2 forces k segments wherever k divides len (any device), "auto" / unset is the policy.
int64_t selective_scan_segments(int64_t batch, int64_t len, int64_t channels, const at::Device& device);

using SelectiveScanFn = SelectiveScanOut (*)(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                             const at::Tensor&, const at::Tensor&, const std::optional<at::Tensor>&,
                                             const std::optional<at::Tensor>&, const std::optional<at::Tensor>&, bool,
                                             const std::optional<at::Tensor>&);

// The scan split into `segments` time segments (must divide L) that run side by side: pass 1 runs `scan` on every
// segment from a zero state, pass 2 chains the segments' entry states (h_in[s+1] = exp(A sum delta') h_in[s] +
// h_loc[s]), pass 3 runs `scan` again from them with D and the gate. Same contract and results (up to rounding)
// as `scan`; gradients through autograd. For long sequences with few (batch, channel) rows on a GPU.
SelectiveScanOut selective_scan_segmented(const SelectiveScanFn& scan, int64_t segments, const at::Tensor& u,
                                          const at::Tensor& delta, const at::Tensor& A, const at::Tensor& B,
                                          const at::Tensor& C, const std::optional<at::Tensor>& D,
                                          const std::optional<at::Tensor>& z,
                                          const std::optional<at::Tensor>& delta_bias, bool delta_softplus,
                                          const std::optional<at::Tensor>& initial_state);

// Throws ssmlab::Error naming every offending shape/dtype/device.
void check_selective_scan_inputs(const at::Tensor& u, const at::Tensor& delta, const at::Tensor& A,
                                 const at::Tensor& B, const at::Tensor& C, const std::optional<at::Tensor>& D,
                                 const std::optional<at::Tensor>& z, const std::optional<at::Tensor>& delta_bias,
                                 const std::optional<at::Tensor>& initial_state);

}  // namespace ssmlab::ops
