#include "ssmlab/ops/selective_scan/selective_scan.h"

#include <ATen/ATen.h>

#include "ssmlab/core/error.h"
#include "ssmlab/ops/backend.h"

namespace ssmlab::ops {

namespace {
std::string describe(const at::Tensor& t) {
  return t.defined() ? str(shape_str(t.sizes()), " ", c10::toString(t.scalar_type()), " on ", t.device().str())
                     : std::string("undefined");
}
}  // namespace

void check_selective_scan_inputs(const at::Tensor& u, const at::Tensor& delta, const at::Tensor& A,
                                 const at::Tensor& B, const at::Tensor& C, const std::optional<at::Tensor>& D,
                                 const std::optional<at::Tensor>& z, const std::optional<at::Tensor>& delta_bias,
                                 const std::optional<at::Tensor>& initial_state) {
  auto all = [&] {
    std::string s = str("u ", describe(u), ", delta ", describe(delta), ", A ", describe(A), ", B ", describe(B),
                        ", C ", describe(C));
    if (D) s += str(", D ", describe(*D));
    if (z) s += str(", z ", describe(*z));
    if (delta_bias) s += str(", delta_bias ", describe(*delta_bias));
    if (initial_state) s += str(", initial_state ", describe(*initial_state));
    return s;
  };
  SSMLAB_CHECK(u.defined() && delta.defined() && A.defined() && B.defined() && C.defined(),
               "selective_scan: u, delta, A, B and C are required; got ", all());
  SSMLAB_CHECK(u.dim() == 3, "selective_scan: u must be (B, L, E); got ", all());
  const int64_t b = u.size(0), l = u.size(1), e = u.size(2);
  SSMLAB_CHECK(delta.sizes() == u.sizes(), "selective_scan: delta must match u (B, L, E); got ", all());
  SSMLAB_CHECK(A.dim() == 2 && A.size(0) == e, "selective_scan: A must be (E, N) with E = ", e, "; got ", all());
  const int64_t n = A.size(1);
  auto check_bc = [&](const at::Tensor& t, const char* name) {
    const bool plain = t.dim() == 3 && t.size(0) == b && t.size(1) == l && t.size(2) == n;
    const bool grouped = t.dim() == 4 && t.size(0) == b && t.size(1) == l && t.size(3) == n && t.size(2) >= 1 &&
                         e % t.size(2) == 0;
    SSMLAB_CHECK(plain || grouped, "selective_scan: ", name, " must be (B, L, N) = ", shape_str({b, l, n}),
                 " or (B, L, G, N) with E % G == 0; got ", all());
  };
  check_bc(B, "B");
  check_bc(C, "C");
  SSMLAB_CHECK(B.dim() == C.dim() && (B.dim() == 3 || B.size(2) == C.size(2)),
               "selective_scan: B and C must have the same group layout; got ", all());
  if (D) SSMLAB_CHECK(D->dim() == 1 && D->size(0) == e, "selective_scan: D must be (E); got ", all());
  if (z) SSMLAB_CHECK(z->sizes() == u.sizes(), "selective_scan: z must match u (B, L, E); got ", all());
  if (delta_bias)
    SSMLAB_CHECK(delta_bias->dim() == 1 && delta_bias->size(0) == e,
                 "selective_scan: delta_bias must be (E); got ", all());
  if (initial_state)
    SSMLAB_CHECK(initial_state->dim() == 3 && initial_state->size(0) == b && initial_state->size(1) == e &&
                     initial_state->size(2) == n,
                 "selective_scan: initial_state must be (B, E, N) = ", shape_str({b, e, n}), "; got ", all());
  for (const at::Tensor* t : {&delta, &A, &B, &C})
    SSMLAB_CHECK(t->device() == u.device(), "selective_scan: all inputs must be on one device; got ", all());
  for (const auto* t : {&D, &z, &delta_bias, &initial_state})
    if (*t) SSMLAB_CHECK((*t)->device() == u.device(), "selective_scan: all inputs must be on one device; got ", all());
  for (const at::Tensor* t : {&u, &delta, &A, &B, &C})
    SSMLAB_CHECK(at::isFloatingType(t->scalar_type()), "selective_scan: inputs must be floating point; got ", all());
}

SelectiveScanOut selective_scan(const at::Tensor& u, const at::Tensor& delta, const at::Tensor& A,
                                const at::Tensor& B, const at::Tensor& C, const std::optional<at::Tensor>& D,
                                const std::optional<at::Tensor>& z, const std::optional<at::Tensor>& delta_bias,
                                bool delta_softplus, const std::optional<at::Tensor>& initial_state,
                                const std::string& backend) {
  check_selective_scan_inputs(u, delta, A, B, C, D, z, delta_bias, initial_state);
  // Fast kernels plug in here per device (ops/backend.cpp lists them); where none supports the case,
  // resolve_backend picks the reference and the log says so once.
  const bool fused_ok =
      u.is_cpu() ? selective_scan_cpu_supports(u, delta, A, B, C, D, z, delta_bias, initial_state)
                 : u.is_cuda() && selective_scan_cuda_supports(u, delta, A, B, C, D, z, delta_bias, initial_state);
  switch (resolve_backend(backend, "selective_scan", u.device(), fused_ok)) {
    case Backend::fused:
      if (u.is_cuda())
        return selective_scan_cuda(u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state);
      return selective_scan_fused(u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state);
    case Backend::reference:
      break;
  }
  return selective_scan_reference(u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state);
}

}  // namespace ssmlab::ops
