// The CUDA selective scan as an autograd Function: forward and backward are the kernels of cuda.cu
// (kernel_scan.cuh), which fuse the delta bias + softplus, the D skip and the silu(z) gate themselves.
// y comes back in u's dtype, the final state in the state dtype, each gradient in its input's dtype.
// Compiled on every machine; the body needs the CUDA kernels (SSMLAB_WITH_CUDA), else supports() is false
// and selective_scan_cuda throws.
#include <ATen/ATen.h>
#include <torch/csrc/autograd/custom_function.h>

#include "ssmlab/core/error.h"
#include "ssmlab/ops/selective_scan/selective_scan.h"
#ifdef SSMLAB_WITH_CUDA
#include "ssmlab/ops/selective_scan/cuda.h"
#endif

namespace ssmlab::ops {

#ifdef SSMLAB_WITH_CUDA
namespace {

using at::Tensor;

class SelectiveScanCuda : public torch::autograd::Function<SelectiveScanCuda> {
 public:
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx, const Tensor& u,
                                                const Tensor& delta, const Tensor& A, const Tensor& B,
                                                const Tensor& C, const std::optional<Tensor>& D_opt,
                                                const std::optional<Tensor>& z_opt,
                                                const std::optional<Tensor>& delta_bias_opt, bool softplus,
                                                const std::optional<Tensor>& h0_opt) {
    // Optional inputs arrive as std::optional (an undefined Tensor breaks apply; see reference.cpp).
    const Tensor D = D_opt.value_or(Tensor()), z = z_opt.value_or(Tensor());
    const Tensor delta_bias = delta_bias_opt.value_or(Tensor()), h0 = h0_opt.value_or(Tensor());
    auto fwd = selective_scan_cuda_host::forward(u, delta, A, B, C, D, z, delta_bias, softplus, h0);
    ctx->save_for_backward({u, delta, A, B, C, D, z, delta_bias, h0, fwd.starts});
    ctx->saved_data["softplus"] = softplus;
    return {fwd.y, fwd.final_state};
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const Tensor &u = saved[0], &delta = saved[1], &A = saved[2], &B = saved[3], &C = saved[4], &D = saved[5],
                 &z = saved[6], &delta_bias = saved[7], &h0 = saved[8], &starts = saved[9];
    const bool softplus = ctx->saved_data["softplus"].toBool();
    const auto g = selective_scan_cuda_host::backward(u, delta, A, B, C, D, z, delta_bias, softplus, h0, starts,
                                                      grads[0], grads[1]);
    torch::autograd::variable_list out(10);
    out[0] = g.du;
    out[1] = g.ddelta;
    out[2] = g.dA;
    out[3] = g.dB;
    out[4] = g.dC;
    if (D.defined()) out[5] = g.dD;
    if (z.defined()) out[6] = g.dz;
    if (delta_bias.defined()) out[7] = g.ddelta_bias;
    if (h0.defined()) out[9] = g.dh0;
    return out;
  }
};

}  // namespace
#endif  // SSMLAB_WITH_CUDA

bool selective_scan_cuda_supports(const at::Tensor& u, const at::Tensor& delta, const at::Tensor& A,
                                  const at::Tensor& B, const at::Tensor& C, const std::optional<at::Tensor>& D,
                                  const std::optional<at::Tensor>& z, const std::optional<at::Tensor>& delta_bias,
                                  const std::optional<at::Tensor>& initial_state) {
#ifdef SSMLAB_WITH_CUDA
  if (!u.defined() || !u.is_cuda()) return false;
  const auto dt = u.scalar_type();
  if (dt != at::kFloat && dt != at::kDouble && dt != at::kBFloat16 && dt != at::kHalf) return false;
  if (A.dim() != 2 || A.size(1) < 1 || A.size(1) > selective_scan_cuda_host::kMaxState) return false;
  // The kernels read u, delta, z, B, C in one dtype; mixed dtypes go to the reference.
  for (const at::Tensor* t : {&delta, &B, &C})
    if (!t->defined() || t->device() != u.device() || t->scalar_type() != dt) return false;
  if (z && (z->device() != u.device() || z->scalar_type() != dt)) return false;
  if (!A.is_cuda() || A.device() != u.device() || !at::isFloatingType(A.scalar_type())) return false;
  for (const auto* t : {&D, &delta_bias, &initial_state})
    if (*t && ((*t)->device() != u.device() || !at::isFloatingType((*t)->scalar_type()))) return false;
  return true;
#else
  (void)u, (void)delta, (void)A, (void)B, (void)C, (void)D, (void)z, (void)delta_bias, (void)initial_state;
  return false;
#endif
}

SelectiveScanOut selective_scan_cuda(const at::Tensor& u, const at::Tensor& delta, const at::Tensor& A,
                                     const at::Tensor& B, const at::Tensor& C, const std::optional<at::Tensor>& D,
                                     const std::optional<at::Tensor>& z,
                                     const std::optional<at::Tensor>& delta_bias, bool delta_softplus,
                                     const std::optional<at::Tensor>& initial_state) {
  SSMLAB_CHECK(selective_scan_cuda_supports(u, delta, A, B, C, D, z, delta_bias, initial_state),
               "selective_scan_cuda: unsupported case (needs a build with CUDA kernels, every tensor on one CUDA "
               "device, u float32/float64/bfloat16/float16 with delta, z, B, C of the same dtype, 1 <= N <= 256); "
               "got u ", shape_str(u.sizes()), " ", c10::toString(u.scalar_type()), " on ", u.device().str(),
               ", delta ", c10::toString(delta.scalar_type()), ", B ", c10::toString(B.scalar_type()), ", C ",
               c10::toString(C.scalar_type()), ", A ", shape_str(A.sizes()));
#ifdef SSMLAB_WITH_CUDA
  auto outs = SelectiveScanCuda::apply(u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state);
  return {outs[0], outs[1]};
#else
  (void)delta_softplus;
  fail("selective_scan_cuda: this build has no CUDA kernels");
#endif
}

}  // namespace ssmlab::ops
