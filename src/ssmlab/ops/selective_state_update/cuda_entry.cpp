// The CUDA selective_state_update entry and its supports() predicate. Compiled on every machine; the body
// needs the CUDA kernel (SSMLAB_WITH_CUDA), else supports() is false and the entry throws.
#include <ATen/ATen.h>

#include "ssmlab/core/device.h"
#include "ssmlab/core/error.h"
#include "ssmlab/ops/selective_state_update/selective_state_update.h"
#ifdef SSMLAB_WITH_CUDA
#include "ssmlab/ops/selective_state_update/cuda.h"
#endif

namespace ssmlab::ops {

bool selective_state_update_cuda_supports(const at::Tensor& state, const at::Tensor& x, const at::Tensor& dt,
                                          const at::Tensor& A, const at::Tensor& B, const at::Tensor& C,
                                          const std::optional<at::Tensor>& D, const std::optional<at::Tensor>& z,
                                          const std::optional<at::Tensor>& dt_bias) {
#ifdef SSMLAB_WITH_CUDA
  if (!x.defined() || !x.is_cuda()) return false;
  const auto xt = x.scalar_type();
  if (xt != at::kFloat && xt != at::kDouble && xt != at::kBFloat16 && xt != at::kHalf) return false;
  if (!state.defined() || state.scalar_type() != state_dtype(xt)) return false;
  if (A.dim() != 2 || A.size(1) < 1 || A.size(1) > selective_state_update_cuda_host::kMaxState) return false;
  for (const at::Tensor* t : {&state, &dt, &A, &B, &C})
    if (!t->defined() || t->device() != x.device() || !at::isFloatingType(t->scalar_type())) return false;
  for (const auto* t : {&D, &z, &dt_bias})
    if (*t && ((*t)->device() != x.device() || !at::isFloatingType((*t)->scalar_type()))) return false;
  return true;
#else
  (void)state, (void)x, (void)dt, (void)A, (void)B, (void)C, (void)D, (void)z, (void)dt_bias;
  return false;
#endif
}

at::Tensor selective_state_update_cuda(at::Tensor& state, const at::Tensor& x, const at::Tensor& dt,
                                       const at::Tensor& A, const at::Tensor& B, const at::Tensor& C,
                                       const std::optional<at::Tensor>& D, const std::optional<at::Tensor>& z,
                                       const std::optional<at::Tensor>& dt_bias, bool dt_softplus) {
  SSMLAB_CHECK(selective_state_update_cuda_supports(state, x, dt, A, B, C, D, z, dt_bias),
               "selective_state_update_cuda: unsupported case (needs a build with CUDA kernels, every tensor on x's "
               "CUDA device, x float32/float64/bfloat16/float16, state in the scan's state dtype, 1 <= N <= 256); "
               "got x ", shape_str(x.sizes()), " ", c10::toString(x.scalar_type()), " on ", x.device().str(),
               ", state ", shape_str(state.sizes()), " ", c10::toString(state.scalar_type()));
#ifdef SSMLAB_WITH_CUDA
  const at::NoGradGuard no_grad;
  return selective_state_update_cuda_host::update(state, x, dt, A, B, C, D.value_or(at::Tensor()),
                                                  z.value_or(at::Tensor()), dt_bias.value_or(at::Tensor()),
                                                  dt_softplus);
#else
  (void)dt_softplus;
  fail("selective_state_update_cuda: this build has no CUDA kernels");
#endif
}

}  // namespace ssmlab::ops
