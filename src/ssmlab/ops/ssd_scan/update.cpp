// One decode step of the SSD recurrence (ssd_scan.h): the state is updated in place. Plain ATen, or the fused
// CUDA kernel (cuda.cu) for CUDA inputs where the build links it.
#include <ATen/ATen.h>

#include "ssmlab/core/device.h"
#include "ssmlab/core/error.h"
#include "ssmlab/ops/ssd_scan/ssd_scan.h"
#ifdef SSMLAB_WITH_CUDA
#include "ssmlab/ops/ssd_scan/cuda.h"
#endif

namespace ssmlab::ops {

at::Tensor ssd_scan_update(const at::Tensor& x_t, const at::Tensor& dt_t, const at::Tensor& A, const at::Tensor& B_t,
                           const at::Tensor& C_t, at::Tensor& state, const SsdScanOptions& opts) {
  SSMLAB_CHECK(x_t.defined() && x_t.dim() == 3 && dt_t.defined() && dt_t.dim() == 2 && B_t.defined() &&
                   B_t.dim() == 3 && C_t.defined() && C_t.dim() == 3 && state.defined(),
               "ssd_scan_update: expected x_t (B, H, P), dt_t (B, H), B_t and C_t (B, G, N) and a state; got x_t ",
               x_t.defined() ? shape_str(x_t.sizes()) : "undefined", ", dt_t ",
               dt_t.defined() ? shape_str(dt_t.sizes()) : "undefined", ", B_t ",
               B_t.defined() ? shape_str(B_t.sizes()) : "undefined", ", C_t ",
               C_t.defined() ? shape_str(C_t.sizes()) : "undefined");
  SSMLAB_CHECK(!opts.initial_state && !opts.return_chunk_states,
               "ssd_scan_update: the state argument is the initial state; initial_state and return_chunk_states "
               "must be unset");
  const int64_t b = x_t.size(0), h = x_t.size(1), p = x_t.size(2), g = B_t.size(1), n = B_t.size(2);
  SSMLAB_CHECK(state.dim() == 4 && state.size(0) == b && state.size(1) == h && state.size(2) == p &&
                   state.size(3) == n,
               "ssd_scan_update: state must be (B, H, P, N) = ", shape_str({b, h, p, n}), "; got ",
               shape_str(state.sizes()));
  // The full checks of ssd_scan on the one-step sequence (B, 1, ...).
  check_ssd_scan_inputs(x_t.unsqueeze(1), dt_t.unsqueeze(1), A, B_t.unsqueeze(1), C_t.unsqueeze(1), opts);
  const auto ct = state_dtype(x_t.scalar_type());
#ifdef SSMLAB_WITH_CUDA
  // The fused CUDA step where it takes the case (state contiguous in the compute dtype, P <= 64, N <= 256).
  if (x_t.is_cuda() && state.scalar_type() == ct && state.is_contiguous() && p <= ssd_scan_cuda::kMaxP &&
      n <= ssd_scan_cuda::kMaxN)
    return ssd_scan_cuda::update(x_t, dt_t, A, B_t, C_t, state, opts);
#endif
  const int64_t hg = h / g;
  at::NoGradGuard no_grad;
  const auto coef = ssd_detail::coefficients(dt_t, A, opts, ct);                        // (B, H)
  const at::Tensor x = x_t.to(ct).view({b, g, hg, p, 1});                              // (B, G, Hg, P, 1)
  const at::Tensor alpha = at::exp(coef.a).view({b, g, hg, 1, 1});
  const at::Tensor w = coef.w.view({b, g, hg, 1, 1});
  at::Tensor S = state.to(ct).view({b, g, hg, p, n});                                  // (B, G, Hg, P, N)
  S = alpha * S + (w * x) * B_t.to(ct).view({b, g, 1, 1, n});
  at::Tensor y = at::matmul(S, C_t.to(ct).view({b, g, 1, n, 1})).view({b, h, p});    // (B, H, P)
  if (opts.D) y = y + opts.D->to(ct).view({h, 1}) * x_t.to(ct);
  state.copy_(S.view({b, h, p, n}));
  return y.to(x_t.scalar_type());
}

}  // namespace ssmlab::ops
