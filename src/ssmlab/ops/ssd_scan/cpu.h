// Fused CPU kernels of the SSD scan (README.md beside this file); no autograd here (autograd.cpp wraps
// them). Internal to ops/ssd_scan.
//
// The kernels run the recurrence S_t = α_t S_{t-1} + w_t x_t ⊗ B_t, y_t = S_t C_t + D x_t and its adjoint
// on the per-step coefficients a = log α and w (ssd_detail::coefficients, plain ATen, so the chain to dt,
// A, dt_bias and the interventions is autograd's). Every tensor handed in is CPU, contiguous, of one
// compute dtype (float32 or float64):
//   x (B, L, H, P)   a, w (B, L, H)   B, C (B, L, G, N)   D (H)   S0 (B, H, P, N)
// Optional tensors (D, S0; dy, dfinal) may be undefined = absent.
#pragma once
#include <algorithm>
#include <cstdint>

#include <ATen/core/Tensor.h>

namespace ssmlab::ops::ssd_scan_cpu {

// Steps between saved states (the backward recomputes one chunk into a (K, P, N) buffer): 64, fewer for
// large heads so that buffer stays near 512 KiB of fp32 (L2-resident), never below 8.
inline int64_t chunk_len(int64_t p, int64_t n) {
  const int64_t k = (int64_t{1} << 17) / std::max<int64_t>(1, p * n);
  return std::clamp<int64_t>(k, 8, 64);
}

struct Inputs {
  at::Tensor x, a, w, B, C, D, S0;
  // dtype of the caller's x before the conversion to the compute dtype: the CUDA chunked kernels multiply in
  // bf16 on the tensor cores for bf16 inputs, in split tf32 (about fp32 accuracy) otherwise.
  at::ScalarType source = at::kFloat;
  at::ScalarType source_bc = at::kFloat;  // B's (and C's) dtype before the conversion
};

struct Forward {
  at::Tensor y;            // (B, L, H, P)
  at::Tensor final_state;  // (B, H, P, N)
  at::Tensor starts;       // (B, H, ceil(L / K), P, N), K = chunk_len(P, N): the state before steps 0, K, 2K, ...
};

struct Grads {
  at::Tensor dx, da, dw, dB, dC;  // dB, dC (B, L, G, N)
  at::Tensor dD, dS0;             // defined only when the input is
};

Forward forward(const Inputs& in);
Grads backward(const Inputs& in, const at::Tensor& starts, const at::Tensor& dy, const at::Tensor& dfinal);

// Tests: when true, the kernels allocate their outputs filled with NaN, so an element they fail to write
// shows up in the comparison against the reference.
void set_poison_outputs(bool on);

}  // namespace ssmlab::ops::ssd_scan_cpu
