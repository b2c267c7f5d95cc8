// The Mamba-3 scan, SISO and MIMO (../shared/spec/mamba3-gdn-spec.md A.3, A.4, A.6). Per (batch, head), state
// h (P x N), cumulative phase phi (S), and the previous token's rotated key k~_prev (R x N) and input x_prev
// (R x P), all zero at the start unless an initial Mamba3State is given:
//   phi   = (phi + dt_t theta_t) mod 2pi                    (S phases; the decode step does not reduce mod 2pi)
//   q~_r  = Rot(phi, q_{t,r});  k~_r = Rot(phi, k_{t,r})    (pairs (2i, 2i+1) "adjacent" or (i, i + N/2) "halves",
//                                                            i < S; other dims pass unchanged)
//   alpha = exp(adt_t);  lambda = sigmoid(trap_t);  beta = (1 - lambda) dt_t alpha;  gamma = lambda dt_t
//   h     = alpha h + beta sum_r x_prev_r k~_prev_r^T + gamma sum_r x_{t,r} k~_r^T
//   y_{t,r} = h q~_r + D x_{t,r};   k~_prev, x_prev = k~, x_t
// SISO is R = 1. Shapes (docs/GLOSSARY.md): q, k (B, T, R, H, N); x, y (B, T, R, H, P); adt, dt, trap (B, T, H);
// theta (B, T, H, S); D (H). States: phase (B, H, S), state (B, H, P, N) in fp32 (fp64 for fp64 x); k_prev
// (B, R, H, N) in k's dtype; x_prev (B, R, H, P) in x's dtype. README.md beside this file has the chunked form.
#pragma once
#include <optional>
#include <string>
#include <utility>

#include <ATen/core/Tensor.h>

namespace ssmlab::ops {

enum class Mamba3Pairing { adjacent, halves };  // SISO: pairs (2i, 2i+1); MIMO: (i, i + N/2); i < S
const char* to_string(Mamba3Pairing pairing);
// "adjacent" or "halves"; anything else is an ssmlab::Error naming the choices.
Mamba3Pairing mamba3_pairing_from(const std::string& name);

struct Mamba3State {  // the carried decode / chunk-boundary state (spec A.3, A.6)
  at::Tensor phase;   // (B, H, S)     fp32 (fp64 for fp64 inputs): cumulative phase phi
  at::Tensor state;   // (B, H, P, N)  fp32 (fp64): h
  at::Tensor k_prev;  // (B, R, H, N)  rotated key k~ of the last token (dtype of k)
  at::Tensor x_prev;  // (B, R, H, P)  per-rank input of the last token (dtype of x)
};

struct Mamba3Options {
  Mamba3Pairing pairing = Mamba3Pairing::adjacent;
  std::optional<at::Tensor> D;         // (H) skip, y_{t,r} += D_h x_{t,r}
  std::optional<Mamba3State> initial;  // absent: zeros (MIMO included: a prefill may start from a state)
  int64_t chunk_size = 64;             // result must not depend on it
};

struct Mamba3Out {
  at::Tensor y;  // (B, T, R, H, P), dtype of x, pre-gate, incl. D
  Mamba3State final;
};

// q, k: (B, T, R, H, N) normalised + per-head-biased, NOT rotated (groups already expanded to heads);
// x: (B, T, R, H, P) per-rank input (SISO: R = 1; MIMO: x * mimo_x[h, r]);
// adt, dt, trap: (B, T, H) fp32 (fp64 ok): A*dt (< 0), dt, the trapezoid weight as a pre-sigmoid LOGIT;
// theta: (B, T, H, S) fp32 angle rates AFTER pi*tanh, per head (head h advances phi_h by dt_h * theta_h; the layer
//   shares one (B, T, S) vector across heads and passes an expand()ed view).
// backend: "auto" (the fused kernel on CPU, ssd_scan's kernels on CUDA (mamba3_ssd_kernels), the chunked ATen form
// elsewhere, logged once) | "reference" (the time-stepped oracle) | "chunked" | "fused". Differentiable w.r.t. every tensor input on every path.
Mamba3Out mamba3_scan(const at::Tensor& q, const at::Tensor& k, const at::Tensor& x, const at::Tensor& adt,
                      const at::Tensor& dt, const at::Tensor& trap, const at::Tensor& theta,
                      const Mamba3Options& opts = {}, const std::string& backend = "auto");

// One decode step (spec A.6): q, k (B, R, H, N), x (B, R, H, P), adt/dt/trap (B, H), theta (B, H, S);
// returns y (B, R, H, P) and the next state (no mod 2pi on phi, as upstream's decode). Plain ATen on every device.
// Differentiable is not needed (it is, through ATen, but nothing relies on it).
std::pair<at::Tensor, Mamba3State> mamba3_step(const at::Tensor& q, const at::Tensor& k, const at::Tensor& x,
                                               const at::Tensor& adt, const at::Tensor& dt, const at::Tensor& trap,
                                               const at::Tensor& theta, const Mamba3State& state,
                                               Mamba3Pairing pairing, const std::optional<at::Tensor>& D);

// ---- below: the backends and checks behind mamba3_scan (tests and benchmarks call them directly) -------------

enum class Mamba3Path { reference, chunked, fused };
const char* to_string(Mamba3Path path);
// The path mamba3_scan(..., backend) runs for inputs like q (and x, when given: P enters the CUDA limits; throws on
// an unknown backend name). "auto": fused where mamba3_cpu_supports(q) or mamba3_cuda_supports(q, x), else chunked.
Mamba3Path mamba3_path(const at::Tensor& q, const std::string& backend = "auto", const at::Tensor& x = {});

// The oracle: the recurrence above one time step at a time on whole (B, R, H, .) tensors in plain ATen,
// differentiable by autograd; computes in fp32 (fp64 for fp64 x). Expects checked inputs.
Mamba3Out mamba3_reference(const at::Tensor& q, const at::Tensor& k, const at::Tensor& x, const at::Tensor& adt,
                           const at::Tensor& dt, const at::Tensor& trap, const at::Tensor& theta,
                           const Mamba3Options& opts);

// The chunked quadratic ("SSD") form (spec A.3, A.4; README.md) in plain ATen, any device, differentiable by
// autograd: chunks of C tokens become C*R rows. Expects checked inputs.
Mamba3Out mamba3_chunked(const at::Tensor& q, const at::Tensor& k, const at::Tensor& x, const at::Tensor& adt,
                         const at::Tensor& dt, const at::Tensor& trap, const at::Tensor& theta,
                         const Mamba3Options& opts);

// CUDA inputs: mamba3_ssd_kernels (below). CPU: the fused CPU kernel (cpu.cpp, autograd.cpp): the whole scan
// (phases, rotation, key scale, recurrence, diagonal correction, D) per (batch, head), with a hand-written backward;
// only the carried phase and last rotated key are ATen. Throws unless mamba3_cpu_supports(x). Expects checked inputs.
Mamba3Out mamba3_fused(const at::Tensor& q, const at::Tensor& k, const at::Tensor& x, const at::Tensor& adt,
                       const at::Tensor& dt, const at::Tensor& trap, const at::Tensor& theta,
                       const Mamba3Options& opts);
bool mamba3_cpu_supports(const at::Tensor& x);

// The CUDA path (ssd_kernels.cpp; README.md, "CUDA path"): the fused path's preparation and finish around
// ops/ssd_scan's fused kernels, which run the look-ahead SSD core (MIMO as T R rows plus an in-token term). On
// CUDA: ssd_scan's chunked tensor-core kernels (fp32 compute, N <= 128; bf16 products in the forward of bf16 x),
// its time-stepped kernels otherwise (fp64, N <= 256). On CPU: ssd_scan's fused CPU kernels, the twin that tests
// the mapping without a GPU. mamba3_fused runs it for CUDA inputs. Throws unless mamba3_ssd_kernels_support(q, x).
// Expects checked inputs.
Mamba3Out mamba3_ssd_kernels(const at::Tensor& q, const at::Tensor& k, const at::Tensor& x, const at::Tensor& adt,
                             const at::Tensor& dt, const at::Tensor& trap, const at::Tensor& theta,
                             const Mamba3Options& opts);
// CPU tensors, or CUDA ones where the build links the kernels (SSMLAB_WITH_CUDA) with N <= 256, P <= 64; float types.
bool mamba3_ssd_kernels_support(const at::Tensor& q, const at::Tensor& x);
// What "auto" takes on CUDA: mamba3_ssd_kernels_support, unless SSMLAB_MAMBA3_CUDA=chunked (the bypass: the
// chunked ATen form). x may be undefined (then only q's dtype and N are checked).
bool mamba3_cuda_supports(const at::Tensor& q, const at::Tensor& x = {});
// SSMLAB_MAMBA3_CUDA, read on every call: "kernels" (unset), "chunked" ("auto" on CUDA runs the ATen quadratic
// form), "fp32" (16-bit inputs multiply in split tf32 instead of bf16 in the kernels' forward) or "aten_phase" (the
// kernels with the older preparation: phases, cos/sin and q.k in ATen, the rotation kernel of kernel_rotate.cuh,
// for comparison with the phase kernels of kernel_phase.cuh); else an Error.
std::string mamba3_cuda_mode();

// Throws ssmlab::Error naming every offending shape, dtype or device.
void check_mamba3_inputs(const at::Tensor& q, const at::Tensor& k, const at::Tensor& x, const at::Tensor& adt,
                         const at::Tensor& dt, const at::Tensor& trap, const at::Tensor& theta,
                         const Mamba3Options& opts);

}  // namespace ssmlab::ops
