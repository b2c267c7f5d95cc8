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

// The kernels' layout: everything contiguous in the compute dtype, B and C as (B, L, G, N). The raw delta
// (+ bias) is returned in `raw` (for softplus' derivative); in.dt is delta' = softplus(raw) or raw.
selective_scan_cpu::Inputs prepare(const Tensor& u, const Tensor& delta, const Tensor& A, const Tensor& B,
                                   const Tensor& C, const Tensor& D, const Tensor& delta_bias, bool softplus,
                                   const Tensor& h0, Tensor* raw) {
  const auto ct = state_dtype(u.scalar_type());
  auto conv = [&](const Tensor& t) { return t.defined() ? t.to(ct).contiguous() : Tensor(); };
  const int64_t b = u.size(0), l = u.size(1), n = A.size(1), g = B.dim() == 4 ? B.size(2) : 1;
  selective_scan_cpu::Inputs in;
  in.u = conv(u);
  Tensor r = delta_bias.defined() ? delta.to(ct) + delta_bias.to(ct) : conv(delta);
  in.dt = softplus ? at::softplus(r).contiguous() : r.contiguous();
  if (raw) *raw = r;
  in.A = conv(A);
  in.B = conv(B).view({b, l, g, n});
  in.C = conv(C).view({b, l, g, n});
  in.D = conv(D);
  in.h0 = conv(h0);
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
    const auto in = prepare(u, delta, A, B, C, D, delta_bias, softplus, h0, nullptr);
    auto fwd = selective_scan_cpu::forward(in);  // fwd.y = C . h + D u
    Tensor y = fwd.y;
    Tensor y_pre;  // saved only when the gate needs it in the backward
    if (z.defined()) {
      y_pre = fwd.y;
      y = y_pre * at::silu(z.to(y_pre.scalar_type()));
    }
    ctx->save_for_backward({u, delta, A, B, C, D, z, delta_bias, h0, fwd.starts, y_pre});
    ctx->saved_data["softplus"] = softplus;
    return {y.to(u.scalar_type()), fwd.final_state};
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const Tensor &u = saved[0], &delta = saved[1], &A = saved[2], &B = saved[3], &C = saved[4], &D = saved[5],
                 &z = saved[6], &delta_bias = saved[7], &h0 = saved[8], &starts = saved[9], &y_pre = saved[10];
    const bool softplus = ctx->saved_data["softplus"].toBool();
    Tensor raw;
    const auto in = prepare(u, delta, A, B, C, D, delta_bias, softplus, h0, &raw);
    const auto ct = in.u.scalar_type();
    Tensor dy = grads[0].defined() ? grads[0].to(ct) : Tensor();
    Tensor dz;
    if (z.defined() && dy.defined()) {
      const Tensor zc = z.to(ct), sig = at::sigmoid(zc);
      dz = dy * y_pre * sig * (1 + zc * (1 - sig));  // d silu(z) / dz = s (1 + z (1 - s))
      dy = dy * (zc * sig);
    }
    const auto g = selective_scan_cpu::backward(in, starts, dy, grads[1]);
    Tensor ddelta = softplus ? g.ddt * at::sigmoid(raw) : g.ddt;  // d softplus(x) / dx = sigmoid(x)
    auto as = [](const Tensor& grad, const Tensor& like) {
      return grad.reshape(like.sizes()).to(like.scalar_type());
    };
    torch::autograd::variable_list out(10);
    out[0] = as(g.du, u);
    out[1] = as(ddelta, delta);
    out[2] = as(g.dA, A);
    out[3] = as(g.dB, B);
    out[4] = as(g.dC, C);
    if (D.defined()) out[5] = as(g.dD, D);
    if (z.defined()) out[6] = dz.defined() ? as(dz, z) : at::zeros_like(z);
    if (delta_bias.defined()) out[7] = as(ddelta.sum(at::IntArrayRef{0, 1}), delta_bias);
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
