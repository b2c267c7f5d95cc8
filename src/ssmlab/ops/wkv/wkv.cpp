#include "ssmlab/ops/wkv/wkv.h"

#include <ATen/ATen.h>

#include "ssmlab/core/device.h"
#include "ssmlab/core/error.h"
#include "ssmlab/ops/backend.h"

namespace ssmlab::ops {

at::Tensor wkv_empty_state(int64_t batch, int64_t channels, const at::TensorOptions& options) {
  at::Tensor s = at::zeros({batch, 3, channels}, options);
  s.select(1, 2).fill_(kWkvEmpty);
  return s;
}

void check_wkv_inputs(const at::Tensor& w, const at::Tensor& u, const at::Tensor& k, const at::Tensor& v,
                      const std::optional<at::Tensor>& initial_state) {
  auto all = [&] {
    std::string s = str("w ", tensor_str(w), ", u ", tensor_str(u), ", k ", tensor_str(k), ", v ", tensor_str(v));
    if (initial_state) s += str(", initial_state ", tensor_str(*initial_state));
    return s;
  };
  SSMLAB_CHECK(w.defined() && u.defined() && k.defined() && v.defined(), "wkv: w, u, k and v are required; got ",
               all());
  SSMLAB_CHECK(k.dim() == 3, "wkv: k must be (B, L, C); got ", all());
  const int64_t b = k.size(0), c = k.size(2);
  SSMLAB_CHECK(v.sizes() == k.sizes(), "wkv: v must match k (B, L, C); got ", all());
  SSMLAB_CHECK(w.dim() == 1 && w.size(0) == c, "wkv: w must be (C) with C = ", c, "; got ", all());
  SSMLAB_CHECK(u.dim() == 1 && u.size(0) == c, "wkv: u must be (C) with C = ", c, "; got ", all());
  if (initial_state)
    SSMLAB_CHECK(initial_state->dim() == 3 && initial_state->size(0) == b && initial_state->size(1) == 3 &&
                     initial_state->size(2) == c,
                 "wkv: initial_state must be (B, 3, C) = ", shape_str({b, 3, c}), "; got ", all());
  for (const at::Tensor* t : {&w, &u, &v})
    SSMLAB_CHECK(t->device() == k.device(), "wkv: all inputs must be on one device; got ", all());
  if (initial_state)
    SSMLAB_CHECK(initial_state->device() == k.device(), "wkv: all inputs must be on one device; got ", all());
  for (const at::Tensor* t : {&w, &u, &k, &v})
    SSMLAB_CHECK(at::isFloatingType(t->scalar_type()), "wkv: inputs must be floating point; got ", all());
}

WkvOut wkv(const at::Tensor& w, const at::Tensor& u, const at::Tensor& k, const at::Tensor& v,
           const std::optional<at::Tensor>& initial_state, const std::string& backend) {
  check_wkv_inputs(w, u, k, v, initial_state);
  const bool fused_ok = k.is_cpu() ? wkv_cpu_supports(k) : k.is_cuda() && wkv_cuda_supports(k);
  switch (resolve_backend(backend, "wkv", k.device(), fused_ok)) {
    case Backend::fused:
      return k.is_cuda() ? wkv_cuda(w, u, k, v, initial_state) : wkv_fused(w, u, k, v, initial_state);
    case Backend::reference:
      break;
  }
  return wkv_reference(w, u, k, v, initial_state);
}

}  // namespace ssmlab::ops
