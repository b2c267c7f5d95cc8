// The fused CPU Mamba-3 path (mamba3.h): the elementwise preparation and the diagonal correction in ATen under
// autograd (detail.h), the sequential look-ahead SSD core as one autograd Function whose forward and backward
// are the kernels of cpu.cpp.
#include <ATen/ATen.h>
#include <torch/csrc/autograd/custom_function.h>

#include "ssmlab/core/error.h"
#include "ssmlab/ops/mamba3/cpu.h"
#include "ssmlab/ops/mamba3/detail.h"
#include "ssmlab/ops/mamba3/mamba3.h"

namespace ssmlab::ops {
namespace {

using at::Tensor;

class Mamba3FusedCore : public torch::autograd::Function<Mamba3FusedCore> {
 public:
  // All inputs contiguous in the compute dtype; h0 may be undefined.
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx, const Tensor& qr,
                                                const Tensor& kk, const Tensor& x, const Tensor& adt,
                                                const std::optional<Tensor>& h0_opt) {
    const Tensor h0 = h0_opt.value_or(Tensor());
    auto f = mamba3_cpu::forward(qr, kk, x, adt, h0);
    ctx->save_for_backward({qr, kk, x, adt, h0, f.checkpoints});
    return {f.y, f.final_state};
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const Tensor &qr = saved[0], &kk = saved[1], &x = saved[2], &adt = saved[3], &h0 = saved[4], &ck = saved[5];
    auto conv = [&](const Tensor& t) { return t.defined() ? t.to(qr.scalar_type()).contiguous() : Tensor(); };
    const auto g = mamba3_cpu::backward(qr, kk, x, adt, h0, ck, conv(grads[0]), conv(grads[1]));
    return {g.dqr, g.dkk, g.dx, g.dadt, g.dh0};
  }
};

bool m3_float_type(at::ScalarType dt) {
  return dt == at::kFloat || dt == at::kDouble || dt == at::kBFloat16 || dt == at::kHalf;
}

}  // namespace

bool mamba3_cpu_supports(const at::Tensor& x) { return x.is_cpu() && m3_float_type(x.scalar_type()); }

Mamba3Out mamba3_fused(const at::Tensor& q, const at::Tensor& k, const at::Tensor& x, const at::Tensor& adt,
                       const at::Tensor& dt, const at::Tensor& trap, const at::Tensor& theta,
                       const Mamba3Options& opts) {
  namespace d = mamba3_detail;
  if (x.is_cuda()) return mamba3_ssd_kernels(q, k, x, adt, dt, trap, theta, opts);  // ssd_kernels.cpp
  SSMLAB_CHECK(mamba3_cpu_supports(x), "mamba3_fused: unsupported case (CPU, float32/float64/bfloat16/float16 x); "
               "got x ", tensor_str(x));
  if (q.size(1) == 0) return d::empty_scan(q, k, x, theta.size(3), opts);
  const d::Prepared p = d::prepare(q, k, x, adt, dt, trap, theta, opts);
  std::optional<Tensor> h0;
  if (p.h0.defined()) h0 = p.h0.contiguous();
  auto outs = Mamba3FusedCore::apply(p.qr.contiguous(), p.kk.contiguous(), p.x.contiguous(), p.adt.contiguous(), h0);
  return d::finish(p, q, k, x, opts, outs[0], outs[1]);
}

}  // namespace ssmlab::ops
