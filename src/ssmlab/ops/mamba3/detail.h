// Internals shared by the Mamba-3 backends (mamba3.h): the rotation, one time step, and the preparation and
// finishing steps around the chunked and fused cores (README.md beside this file, "Quadratic form").
#pragma once
#include <optional>

#include <ATen/core/Tensor.h>

#include "ssmlab/ops/mamba3/mamba3.h"

namespace ssmlab::ops::mamba3_detail {

// The compute dtype: fp64 for fp64 x, else fp32.
at::ScalarType compute_dtype(const at::Tensor& x);

// Rot(phi, v) on the last dim of v (N), with cos/sin of phi (S on the last dim) broadcasting against v's other
// dims. adjacent: pairs (2i, 2i+1); halves: pairs (i, i + N/2); i < S. Differentiable.
at::Tensor rotate(const at::Tensor& v, const at::Tensor& cos_phi, const at::Tensor& sin_phi, Mamba3Pairing pairing);

// sum_r x_r k_r^T for x (B, R, H, P), k (B, R, H, N): (B, H, P, N).
at::Tensor rank_outer(const at::Tensor& x, const at::Tensor& k);

// One step of the recurrence (mamba3.h) in the compute dtype on whole (B, R, H, .) tensors, differentiable:
// updates st and returns y (B, R, H, P) incl. D. mod_2pi: reduce the phase into [0, 2pi) (the scan) or not
// (the decode step).
struct StepState {
  at::Tensor phase, h, k_prev, x_prev;  // (B, H, S), (B, H, P, N), (B, R, H, N), (B, R, H, P), compute dtype
};
at::Tensor step(const at::Tensor& q, const at::Tensor& k, const at::Tensor& x, const at::Tensor& adt,
                const at::Tensor& dt, const at::Tensor& trap, const at::Tensor& theta, StepState& st,
                Mamba3Pairing pairing, bool mod_2pi, const std::optional<at::Tensor>& D);

// The initial state in the compute dtype (zeros where opts.initial is absent).
StepState initial_state(const at::Tensor& q, const at::Tensor& x, int64_t S, const Mamba3Options& opts);

// The SSD view of the scan (README.md): with rho_t = (1 - lambda_{t+1}) dt_{t+1} (0 at the last token) and
// s_t = lambda_t dt_t + rho_t, the look-ahead state hbar_t = h_t + rho_t sum_r x_{t,r} k~_{t,r}^T obeys
//   hbar_t = exp(adt_t) hbar_{t-1} + sum_r x_{t,r} (s_t k~_{t,r})^T,   hbar_{-1} = h0 + (1 - lambda_0) dt_0 x_prev k~_prev^T
// and y_{t,r} = hbar_t q~_{t,r} - rho_t sum_b (q_{t,r} . k_{t,b}) x_{t,b} + D x_{t,r}; hbar_{T-1} = h_{T-1}.
struct Prepared {
  at::Tensor qr, kk, x, adt;  // q~, s k~ (B, T, R, H, N); x (B, T, R, H, P); adt (B, T, H); compute dtype
  at::Tensor rho;             // (B, T, H)
  at::Tensor h0;              // hbar_{-1} (B, H, P, N), undefined without an initial state
  at::Tensor kr_last;         // k~ of the last token (B, R, H, N)
  at::Tensor phase_last;      // (B, H, S) in [0, 2pi)
  at::Tensor qk;              // q_r . k_r (B, T, R, H) from the phase kernels, or undefined (finish computes it)
};
Prepared prepare(const at::Tensor& q, const at::Tensor& k, const at::Tensor& x, const at::Tensor& adt,
                 const at::Tensor& dt, const at::Tensor& trap, const at::Tensor& theta, const Mamba3Options& opts);
// y_core (B, T, R, H, P) = hbar_t q~ rows and hbar_final from a core; adds the diagonal correction and D.
Mamba3Out finish(const Prepared& p, const at::Tensor& q, const at::Tensor& k, const at::Tensor& x,
                 const Mamba3Options& opts, const at::Tensor& y_core, const at::Tensor& h_final);
// The result for T = 0: an empty y and the initial state (copied) or zeros.
Mamba3Out empty_scan(const at::Tensor& q, const at::Tensor& k, const at::Tensor& x, int64_t S,
                     const Mamba3Options& opts);

// The chunked SSD core in ATen (chunked.cpp): y_core and hbar_final from Prepared's qr, kk, x, adt, h0.
std::pair<at::Tensor, at::Tensor> chunked_core(const Prepared& p, int64_t chunk_size);
// The same core on ops/ssd_scan's fused kernels (ssd_kernels.cpp), CPU or CUDA by p's device; source: the dtype
// the kernels treat as the inputs' (bf16: bf16 tensor-core products in the CUDA forward).
std::pair<at::Tensor, at::Tensor> ssd_kernel_core(const Prepared& p, at::ScalarType source);

// q~ = Rot(phi, q) and kk = sc Rot(phi, k) for q, k (B, T, R, H, N), cos/sin of phi (B, T, H, S) and sc (B, T, H) in
// the compute dtype, as one autograd Function with a hand-written backward (ssd_kernels.cpp): the kernels of
// cuda.cu on CUDA, the same formulas in ATen elsewhere (the twin). Outputs in cos's dtype.
std::pair<at::Tensor, at::Tensor> rotate_scale(const at::Tensor& q, const at::Tensor& k, const at::Tensor& cos_phi,
                                               const at::Tensor& sin_phi, const at::Tensor& sc, Mamba3Pairing pairing);
struct RotateGrads {
  at::Tensor dq, dk, dcos, dsin, dsc;
};
// The phase sum, rotation, key scale and per-rank q.k as one autograd Function (ssd_kernels.cpp; phase_rotate.h:
// the kernels of phase_kernels.cu on CUDA, their CPU twin elsewhere): q, k (B, T, R, H, N), dt (B, T, H), theta
// (B, T, H, S), sc (B, T, H) in the compute dtype, phase0 (B, H, S) or none. Returns q~, s k~ (B, T, R, H, N) and
// q.k (B, T, R, H) in sc's dtype and the last phase (B, H, S) in float64, reduced into [0, 2pi).
struct PhaseRotated {
  at::Tensor qr, kk, qk, phase_last;
};
PhaseRotated phase_rotate(const at::Tensor& q, const at::Tensor& k, const at::Tensor& dt, const at::Tensor& theta,
                          const at::Tensor& sc, const std::optional<at::Tensor>& phase0, Mamba3Pairing pairing);
// prepare() on the phase kernels (phase_rotate): the CUDA path's preparation unless SSMLAB_MAMBA3_CUDA=aten_phase.
Prepared prepare_phase_kernels(const at::Tensor& q, const at::Tensor& k, const at::Tensor& x, const at::Tensor& adt,
                               const at::Tensor& dt, const at::Tensor& trap, const at::Tensor& theta,
                               const Mamba3Options& opts);
// prepare() with q~, s k~ from rotate_scale, the phases in ATen (SSMLAB_MAMBA3_CUDA=aten_phase; the same Prepared).
Prepared prepare_fused_rotation(const at::Tensor& q, const at::Tensor& k, const at::Tensor& x, const at::Tensor& adt,
                                const at::Tensor& dt, const at::Tensor& trap, const at::Tensor& theta,
                                const Mamba3Options& opts);

}  // namespace ssmlab::ops::mamba3_detail
