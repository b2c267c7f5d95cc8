// The fused selective scan as an autograd Function: forward and backward are the CPU kernels of cpu.cpp.
// Inputs of any float dtype are computed in state_dtype(u) (float32, or float64 for float64 u); y comes
// back in u's dtype, the final state in the compute dtype, each gradient in its input's dtype.
#include <ATen/ATen.h>
#include <torch/csrc/autograd/custom_function.h>

#include "ssmlab/core/device.h"
#include "ssmlab/core/error.h"
#include "ssmlab/ops/selective_scan/cpu.h"
#include "ssmlab/ops/selective_scan/selective_scan.h"

namespace ssmlab::ops {
namespace {

using at::Tensor;

// The kernels' layout: everything contiguous in the compute dtype, B and C as (B, L, G, N).
selective_scan_cpu::Inputs prepare(const Tensor& u, const Tensor& delta, const Tensor& A, const Tensor& B,
                                   const Tensor& C, const Tensor& D, const Tensor& z, const Tensor& delta_bias,
                                   bool softplus, const Tensor& h0) {
  const auto ct = state_dtype(u.scalar_type());
  auto conv = [&](const Tensor& t) { return t.defined() ? t.to(ct).contiguous() : Tensor(); };
  const int64_t b = u.size(0), l = u.size(1), n = A.size(1), g = B.dim() == 4 ? B.size(2) : 1;
  selective_scan_cpu::Inputs in;
  in.u = conv(u);
  in.delta = conv(delta);
  in.A = conv(A);
  in.B = conv(B).view({b, l, g, n});
  in.C = conv(C).view({b, l, g, n});
  in.D = conv(D);
  in.z = conv(z);
  in.delta_bias = conv(delta_bias);
  in.h0 = conv(h0);
  in.softplus = softplus;
  return in;
}

class SelectiveScanFused : public torch::autograd::Function<SelectiveScanFused> {
 public:
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx, const Tensor& u,
                                                const Tensor& delta, const Tensor& A, const Tensor& B,
                                                const Tensor& C, const std::optional<Tensor>& D_opt,
                                                const std::optional<Tensor>& z_opt,
                                                const std::optional<Tensor>& delta_bias_opt, bool softplus,
                                                const std::optional<Tensor>& h0_opt) {
    // Optional inputs arrive as std::optional (see reference.cpp: an undefined Tensor breaks apply).
    const Tensor D = D_opt.value_or(Tensor()), z = z_opt.value_or(Tensor());
    const Tensor delta_bias = delta_bias_opt.value_or(Tensor()), h0 = h0_opt.value_or(Tensor());
    const auto in = prepare(u, delta, A, B, C, D, z, delta_bias, softplus, h0);
    auto fwd = selective_scan_cpu::forward(in);
    ctx->save_for_backward({u, delta, A, B, C, D, z, delta_bias, h0, fwd.starts});
    ctx->saved_data["softplus"] = softplus;
    return {fwd.y.to(u.scalar_type()), fwd.final_state};
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const Tensor &u = saved[0], &delta = saved[1], &A = saved[2], &B = saved[3], &C = saved[4], &D = saved[5],
                 &z = saved[6], &delta_bias = saved[7], &h0 = saved[8], &starts = saved[9];
    const bool softplus = ctx->saved_data["softplus"].toBool();
    const auto in = prepare(u, delta, A, B, C, D, z, delta_bias, softplus, h0);
    const auto g = selective_scan_cpu::backward(in, starts, grads[0], grads[1]);
    auto as = [](const Tensor& grad, const Tensor& like) {
      return grad.reshape(like.sizes()).to(like.scalar_type());
    };
    torch::autograd::variable_list out(10);
    out[0] = as(g.du, u);
    out[1] = as(g.ddelta, delta);
    out[2] = as(g.dA, A);
    out[3] = as(g.dB, B);
    out[4] = as(g.dC, C);
    if (D.defined()) out[5] = as(g.dD, D);
    if (z.defined()) out[6] = as(g.dz, z);
    if (delta_bias.defined()) out[7] = as(g.ddelta_bias, delta_bias);
    if (h0.defined()) out[9] = as(g.dh0, h0);
    return out;
  }
};

}  // namespace

bool selective_scan_cpu_supports(const at::Tensor& u, const at::Tensor& delta, const at::Tensor& A,
                                 const at::Tensor& B, const at::Tensor& C, const std::optional<at::Tensor>& D,
                                 const std::optional<at::Tensor>& z, const std::optional<at::Tensor>& delta_bias,
                                 const std::optional<at::Tensor>& initial_state) {
  const auto dt = u.scalar_type();
  if (dt != at::kFloat && dt != at::kDouble && dt != at::kBFloat16 && dt != at::kHalf) return false;
  if (A.dim() != 2 || A.size(1) > selective_scan_cpu::kMaxState) return false;
  for (const at::Tensor* t : {&u, &delta, &A, &B, &C})
    if (!t->defined() || !t->is_cpu() || !at::isFloatingType(t->scalar_type())) return false;
  for (const auto* t : {&D, &z, &delta_bias, &initial_state})
    if (*t && (!(*t)->is_cpu() || !at::isFloatingType((*t)->scalar_type()))) return false;
  return true;
}

SelectiveScanOut selective_scan_fused(const at::Tensor& u, const at::Tensor& delta, const at::Tensor& A,
                                      const at::Tensor& B, const at::Tensor& C, const std::optional<at::Tensor>& D,
                                      const std::optional<at::Tensor>& z,
                                      const std::optional<at::Tensor>& delta_bias, bool delta_softplus,
                                      const std::optional<at::Tensor>& initial_state) {
  SSMLAB_CHECK(selective_scan_cpu_supports(u, delta, A, B, C, D, z, delta_bias, initial_state),
               "selective_scan_fused: unsupported case (CPU tensors, float32/float64/bfloat16/float16 u, N <= ",
               selective_scan_cpu::kMaxState, "); got u ", shape_str(u.sizes()), " ",
               c10::toString(u.scalar_type()), " on ", u.device().str(), ", A ", shape_str(A.sizes()));
  auto outs = SelectiveScanFused::apply(u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state);
  return {outs[0], outs[1]};
}

}  // namespace ssmlab::ops
