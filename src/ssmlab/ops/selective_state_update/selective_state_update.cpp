#include "ssmlab/ops/selective_state_update/selective_state_update.h"

#include <ATen/ATen.h>

#include "ssmlab/core/device.h"
#include "ssmlab/core/error.h"
#include "ssmlab/ops/backend.h"

namespace ssmlab::ops {

void check_selective_state_update_inputs(const at::Tensor& state, const at::Tensor& x, const at::Tensor& dt,
                                         const at::Tensor& A, const at::Tensor& B, const at::Tensor& C,
                                         const std::optional<at::Tensor>& D, const std::optional<at::Tensor>& z,
                                         const std::optional<at::Tensor>& dt_bias) {
  auto all = [&] {
    std::string s = str("state ", tensor_str(state), ", x ", tensor_str(x), ", dt ", tensor_str(dt), ", A ", tensor_str(A),
                        ", B ", tensor_str(B), ", C ", tensor_str(C));
    if (D) s += str(", D ", tensor_str(*D));
    if (z) s += str(", z ", tensor_str(*z));
    if (dt_bias) s += str(", dt_bias ", tensor_str(*dt_bias));
    return s;
  };
  SSMLAB_CHECK(state.defined() && x.defined() && dt.defined() && A.defined() && B.defined() && C.defined(),
               "selective_state_update: state, x, dt, A, B and C are required; got ", all());
  SSMLAB_CHECK(x.dim() == 2, "selective_state_update: x must be (B, E); got ", all());
  const int64_t b = x.size(0), e = x.size(1);
  SSMLAB_CHECK(dt.sizes() == x.sizes(), "selective_state_update: dt must match x (B, E); got ", all());
  SSMLAB_CHECK(A.dim() == 2 && A.size(0) == e, "selective_state_update: A must be (E, N) with E = ", e, "; got ",
               all());
  const int64_t n = A.size(1);
  SSMLAB_CHECK(state.dim() == 3 && state.size(0) == b && state.size(1) == e && state.size(2) == n,
               "selective_state_update: state must be (B, E, N) = ", shape_str({b, e, n}), "; got ", all());
  auto check_bc = [&](const at::Tensor& t, const char* name) {
    const bool plain = t.dim() == 2 && t.size(0) == b && t.size(1) == n;
    const bool grouped = t.dim() == 3 && t.size(0) == b && t.size(2) == n && t.size(1) >= 1 && e % t.size(1) == 0;
    SSMLAB_CHECK(plain || grouped, "selective_state_update: ", name, " must be (B, N) = ", shape_str({b, n}),
                 " or (B, G, N) with E % G == 0; got ", all());
  };
  check_bc(B, "B");
  check_bc(C, "C");
  SSMLAB_CHECK(B.dim() == C.dim() && (B.dim() == 2 || B.size(1) == C.size(1)),
               "selective_state_update: B and C must have the same group layout; got ", all());
  if (D) SSMLAB_CHECK(D->dim() == 1 && D->size(0) == e, "selective_state_update: D must be (E); got ", all());
  if (z) SSMLAB_CHECK(z->sizes() == x.sizes(), "selective_state_update: z must match x (B, E); got ", all());
  if (dt_bias)
    SSMLAB_CHECK(dt_bias->dim() == 1 && dt_bias->size(0) == e, "selective_state_update: dt_bias must be (E); got ",
                 all());
  for (const at::Tensor* t : {&state, &dt, &A, &B, &C})
    SSMLAB_CHECK(t->device() == x.device(), "selective_state_update: all inputs must be on one device; got ", all());
  for (const auto* t : {&D, &z, &dt_bias})
    if (*t)
      SSMLAB_CHECK((*t)->device() == x.device(), "selective_state_update: all inputs must be on one device; got ",
                   all());
  for (const at::Tensor* t : {&x, &dt, &A, &B, &C})
    SSMLAB_CHECK(at::isFloatingType(t->scalar_type()), "selective_state_update: inputs must be floating point; got ",
                 all());
  for (const auto* t : {&D, &z, &dt_bias})
    if (*t)
      SSMLAB_CHECK(at::isFloatingType((*t)->scalar_type()),
                   "selective_state_update: inputs must be floating point; got ", all());
  SSMLAB_CHECK(state.scalar_type() == state_dtype(x.scalar_type()),
               "selective_state_update: state must be ", c10::toString(state_dtype(x.scalar_type())),
               " (the scan's state dtype: float64 for float64 x, else float32); got ", all());
}

at::Tensor selective_state_update(at::Tensor& state, const at::Tensor& x, const at::Tensor& dt, const at::Tensor& A,
                                  const at::Tensor& B, const at::Tensor& C, const std::optional<at::Tensor>& D,
                                  const std::optional<at::Tensor>& z, const std::optional<at::Tensor>& dt_bias,
                                  bool dt_softplus, const std::string& backend) {
  check_selective_state_update_inputs(state, x, dt, A, B, C, D, z, dt_bias);
  // Fast kernels plug in per device (ops/backend.cpp lists them); where none supports the case,
  // resolve_backend picks the reference and the log says so once.
  const bool fused_ok = x.is_cpu()
                            ? selective_state_update_cpu_supports(state, x, dt, A, B, C, D, z, dt_bias)
                            : x.is_cuda() && selective_state_update_cuda_supports(state, x, dt, A, B, C, D, z, dt_bias);
  switch (resolve_backend(backend, "selective_state_update", x.device(), fused_ok)) {
    case Backend::fused:
      if (x.is_cuda()) return selective_state_update_cuda(state, x, dt, A, B, C, D, z, dt_bias, dt_softplus);
      return selective_state_update_cpu(state, x, dt, A, B, C, D, z, dt_bias, dt_softplus);
    case Backend::reference:
      break;
  }
  return selective_state_update_reference(state, x, dt, A, B, C, D, z, dt_bias, dt_softplus);
}

}  // namespace ssmlab::ops
