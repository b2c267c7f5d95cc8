// The CUDA causal_conv1d as an autograd Function: forward and backward are the kernels of cuda.cu
// (kernel_conv.cuh), bias and SiLU fused; the backward recomputes the pre-activation (only the inputs are
// saved). out and final_state come back in x's dtype, each gradient in its input's dtype. Also the CUDA decode
// step (causal_conv1d_update_cuda). Compiled on every machine; the bodies need the CUDA kernels
// (SSMLAB_WITH_CUDA), else the supports() predicates are false and the entries throw.
#include <ATen/ATen.h>
#include <torch/csrc/autograd/custom_function.h>

#include "ssmlab/core/error.h"
#include "ssmlab/ops/causal_conv1d/causal_conv1d.h"
#ifdef SSMLAB_WITH_CUDA
#include "ssmlab/ops/causal_conv1d/cuda.h"
#endif

namespace ssmlab::ops {

#ifdef SSMLAB_WITH_CUDA
namespace {

using at::Tensor;

class CausalConv1dCuda : public torch::autograd::Function<CausalConv1dCuda> {
 public:
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx, const Tensor& x,
                                                const Tensor& weight, const std::optional<Tensor>& bias_opt,
                                                bool silu, const std::optional<Tensor>& state_opt) {
    // Optional inputs arrive as std::optional (an undefined Tensor argument breaks apply).
    const Tensor bias = bias_opt.value_or(Tensor()), state = state_opt.value_or(Tensor());
    auto f = causal_conv1d_cuda_host::forward(x, weight, bias, state, silu);
    ctx->save_for_backward({x, weight, bias, state});
    ctx->saved_data["silu"] = silu;
    return {f.out, f.final_state};
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const Tensor &x = saved[0], &weight = saved[1], &bias = saved[2], &state = saved[3];
    const bool silu = ctx->saved_data["silu"].toBool();
    const auto g = causal_conv1d_cuda_host::backward(x, weight, bias, state, silu, grads[0], grads[1]);
    torch::autograd::variable_list out(5);
    out[0] = g.dx;
    out[1] = g.dweight;
    if (bias.defined()) out[2] = g.dbias;
    if (state.defined()) out[4] = g.dstate;
    return out;
  }
};

}  // namespace
#endif  // SSMLAB_WITH_CUDA

bool causal_conv1d_cuda_supports(const at::Tensor& x, const at::Tensor& weight,
                                 const std::optional<at::Tensor>& bias,
                                 const std::optional<at::Tensor>& initial_state) {
#ifdef SSMLAB_WITH_CUDA
  if (!x.defined() || !weight.defined() || !x.is_cuda() || x.dim() != 3) return false;
  const auto dt = x.scalar_type();
  if (dt != at::kFloat && dt != at::kDouble && dt != at::kBFloat16 && dt != at::kHalf) return false;
  if (x.size(0) < 1 || x.size(1) < 1 || x.size(2) < 1) return false;
  if (weight.dim() != 2 || weight.size(1) < 1 || weight.size(1) > 4) return false;
  if (weight.device() != x.device() || !at::isFloatingType(weight.scalar_type())) return false;
  for (const auto* t : {&bias, &initial_state})
    if (*t && ((*t)->device() != x.device() || !at::isFloatingType((*t)->scalar_type()))) return false;
  return true;
#else
  (void)x, (void)weight, (void)bias, (void)initial_state;
  return false;
#endif
}

CausalConv1dOut causal_conv1d_cuda(const at::Tensor& x, const at::Tensor& weight,
                                   const std::optional<at::Tensor>& bias, bool silu,
                                   const std::optional<at::Tensor>& initial_state) {
  SSMLAB_CHECK(causal_conv1d_cuda_supports(x, weight, bias, initial_state),
               "causal_conv1d_cuda: unsupported case (needs a build with CUDA kernels, every tensor on x's CUDA "
               "device, x float32/float64/bfloat16/float16, W in 1..4, B, L, E >= 1); got x ",
               shape_str(x.sizes()), " ", c10::toString(x.scalar_type()), " on ", x.device().str(), ", weight ",
               shape_str(weight.sizes()), " on ", weight.device().str());
#ifdef SSMLAB_WITH_CUDA
  auto outs = CausalConv1dCuda::apply(x, weight, bias, silu, initial_state);
  return {outs[0], outs[1]};
#else
  (void)silu;
  fail("causal_conv1d_cuda: this build has no CUDA kernels");
#endif
}

bool causal_conv1d_update_cuda_supports(const at::Tensor& x_t, const at::Tensor& state, const at::Tensor& weight,
                                        const std::optional<at::Tensor>& bias) {
#ifdef SSMLAB_WITH_CUDA
  return causal_conv1d_cuda_host::update_supports(x_t, state, weight, bias.value_or(at::Tensor()));
#else
  (void)x_t, (void)state, (void)weight, (void)bias;
  return false;
#endif
}

at::Tensor causal_conv1d_update_cuda(const at::Tensor& x_t, at::Tensor& state, const at::Tensor& weight,
                                     const std::optional<at::Tensor>& bias, bool silu) {
  SSMLAB_CHECK(causal_conv1d_update_cuda_supports(x_t, state, weight, bias),
               "causal_conv1d_update_cuda: unsupported case (needs a build with CUDA kernels, every tensor on x's "
               "CUDA device, x float32/float64/bfloat16/float16, state and weight each of x's dtype or the compute "
               "dtype, bias of weight's dtype); got x ", shape_str(x_t.sizes()), " ", c10::toString(x_t.scalar_type()),
               " on ", x_t.device().str(), ", state ", c10::toString(state.scalar_type()), ", weight ",
               c10::toString(weight.scalar_type()));
#ifdef SSMLAB_WITH_CUDA
  const at::NoGradGuard no_grad;
  return causal_conv1d_cuda_host::update(x_t, state, weight, bias.value_or(at::Tensor()), silu);
#else
  (void)silu;
  fail("causal_conv1d_update_cuda: this build has no CUDA kernels");
#endif
}

}  // namespace ssmlab::ops
