// The fused causal_conv1d as an autograd Function: forward and backward are the CPU kernels of cpu.cpp.
// Inputs are computed in state_dtype(x) (float32, or float64 for float64 x). As in the reference, weight,
// bias and initial_state are first taken to x's dtype; out and final_state come back in x's dtype, each
// gradient in its input's dtype. The backward recomputes the pre-activation (nothing but the inputs is saved).
#include <ATen/ATen.h>
#include <torch/csrc/autograd/custom_function.h>

#include "ssmlab/core/device.h"
#include "ssmlab/core/error.h"
#include "ssmlab/ops/causal_conv1d/causal_conv1d.h"
#include "ssmlab/ops/causal_conv1d/cpu.h"

namespace ssmlab::ops {
namespace {

using at::Tensor;

causal_conv1d_cpu::Inputs prepare(const Tensor& x, const Tensor& weight, const Tensor& bias, const Tensor& state,
                                  bool silu) {
  const auto xt = x.scalar_type(), ct = state_dtype(xt);
  // Rounded to x's dtype first (what the reference computes with), then widened to the compute dtype.
  auto conv = [&](const Tensor& t) { return t.defined() ? t.to(xt).to(ct).contiguous() : Tensor(); };
  causal_conv1d_cpu::Inputs in;
  in.x = conv(x);
  in.weight = conv(weight);
  in.bias = conv(bias);
  in.state = conv(state);
  in.silu = silu;
  return in;
}

class CausalConv1dFused : public torch::autograd::Function<CausalConv1dFused> {
 public:
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx, const Tensor& x,
                                                const Tensor& weight, const std::optional<Tensor>& bias_opt,
                                                bool silu, const std::optional<Tensor>& state_opt) {
    // Optional inputs arrive as std::optional (an undefined Tensor argument breaks apply).
    const Tensor bias = bias_opt.value_or(Tensor()), state = state_opt.value_or(Tensor());
    const auto f = causal_conv1d_cpu::forward(prepare(x, weight, bias, state, silu));
    ctx->save_for_backward({x, weight, bias, state});
    ctx->saved_data["silu"] = silu;
    return {f.out.to(x.scalar_type()), f.final_state.to(x.scalar_type())};
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const Tensor &x = saved[0], &weight = saved[1], &bias = saved[2], &state = saved[3];
    const bool silu = ctx->saved_data["silu"].toBool();
    const auto in = prepare(x, weight, bias, state, silu);
    const auto g = causal_conv1d_cpu::backward(in, grads[0], grads[1]);
    auto as = [](const Tensor& grad, const Tensor& like) { return grad.to(like.scalar_type()); };
    torch::autograd::variable_list out(5);
    out[0] = as(g.dx, x);
    out[1] = as(g.dweight, weight);
    if (bias.defined()) out[2] = as(g.dbias, bias);
    if (state.defined()) out[4] = as(g.dstate, state);
    return out;
  }
};

}  // namespace

bool causal_conv1d_cpu_supports(const at::Tensor& x, const at::Tensor& weight,
                                const std::optional<at::Tensor>& bias,
                                const std::optional<at::Tensor>& initial_state) {
  if (!x.defined() || !weight.defined()) return false;
  const auto dt = x.scalar_type();
  if (dt != at::kFloat && dt != at::kDouble && dt != at::kBFloat16 && dt != at::kHalf) return false;
  if (weight.dim() != 2 || weight.size(1) < 1 || weight.size(1) > causal_conv1d_cpu::kMaxWidth) return false;
  if (!x.is_cpu() || !weight.is_cpu() || !at::isFloatingType(weight.scalar_type())) return false;
  for (const auto* t : {&bias, &initial_state})
    if (*t && (!(*t)->is_cpu() || !at::isFloatingType((*t)->scalar_type()))) return false;
  return true;
}

CausalConv1dOut causal_conv1d_fused(const at::Tensor& x, const at::Tensor& weight,
                                    const std::optional<at::Tensor>& bias, bool silu,
                                    const std::optional<at::Tensor>& initial_state) {
  SSMLAB_CHECK(causal_conv1d_cpu_supports(x, weight, bias, initial_state),
               "causal_conv1d_fused: unsupported case (CPU tensors, float32/float64/bfloat16/float16 x, W in 1..",
               causal_conv1d_cpu::kMaxWidth, "); got x ", shape_str(x.sizes()), " ", c10::toString(x.scalar_type()),
               " on ", x.device().str(), ", weight ", shape_str(weight.sizes()));
  auto outs = CausalConv1dFused::apply(x, weight, bias, silu, initial_state);
  return {outs[0], outs[1]};
}

}  // namespace ssmlab::ops
