#include "ssmlab/nn/norm.h"

#include <ATen/ATen.h>

#include "ssmlab/core/error.h"

namespace ssmlab::nn {

NormImpl::NormImpl(const std::string& kind, int64_t dim, double eps) : kind_(kind), eps_(eps) {
  SSMLAB_CHECK(kind == "rmsnorm" || kind == "layernorm", "unknown norm '", kind, "': expected rmsnorm or layernorm");
  weight_ = register_parameter("weight", at::ones({dim}));
  if (kind == "layernorm") bias_ = register_parameter("bias", at::zeros({dim}));
}

at::Tensor NormImpl::forward(const at::Tensor& x) {
  const at::Tensor xf = x.to(at::promote_types(x.scalar_type(), at::kFloat));  // fp32 at least
  at::Tensor y;
  if (kind_ == "rmsnorm") {
    y = xf * at::rsqrt(xf.pow(2).mean(-1, /*keepdim=*/true) + eps_) * weight_;
  } else {
    y = at::layer_norm(xf, {xf.size(-1)}, weight_, bias_, eps_);
  }
  return y.to(x.scalar_type());
}

}  // namespace ssmlab::nn
