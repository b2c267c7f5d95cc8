// The fused WKV as one autograd Function for both devices: forward and backward are the kernels of cpu.cpp,
// or of cuda.cu for CUDA tensors (where the build links them). Inputs of any float dtype are computed in
// state_dtype(k) (float32, float64 for float64 k); y comes back in k's dtype, the final state in the compute
// dtype, each gradient in its input's dtype.
#include <ATen/ATen.h>
#include <torch/csrc/autograd/custom_function.h>

#include "ssmlab/core/device.h"
#include "ssmlab/core/error.h"
#include "ssmlab/ops/wkv/cpu.h"
#include "ssmlab/ops/wkv/wkv.h"
#ifdef SSMLAB_WITH_CUDA
#include "ssmlab/ops/wkv/cuda.h"
#endif

namespace ssmlab::ops {
namespace {

using at::Tensor;

wkv_cpu::Forward run_forward(const Tensor& w, const Tensor& u, const Tensor& k, const Tensor& v, const Tensor& h0) {
#ifdef SSMLAB_WITH_CUDA
  if (k.is_cuda()) return wkv_cuda_host::forward(w, u, k, v, h0);
#endif
  return wkv_cpu::forward(w, u, k, v, h0);
}

wkv_cpu::Grads run_backward(const Tensor& w, const Tensor& u, const Tensor& k, const Tensor& v, const Tensor& h0,
                            const Tensor& y, const Tensor& states, const Tensor& dy, const Tensor& dfinal) {
#ifdef SSMLAB_WITH_CUDA
  if (k.is_cuda()) return wkv_cuda_host::backward(w, u, k, v, h0, y, states, dy, dfinal);
#endif
  return wkv_cpu::backward(w, u, k, v, h0, y, states, dy, dfinal);
}

class WkvFused : public torch::autograd::Function<WkvFused> {
 public:
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx, const Tensor& w, const Tensor& u,
                                                const Tensor& k, const Tensor& v, const std::optional<Tensor>& h0_opt) {
    const auto ct = state_dtype(k.scalar_type());
    auto conv = [&](const Tensor& t) { return t.defined() ? t.to(ct).contiguous() : Tensor(); };
    const Tensor h0 = conv(h0_opt.value_or(Tensor()));
    auto f = run_forward(conv(w), conv(u), conv(k), conv(v), h0);
    ctx->save_for_backward({w, u, k, v, h0, f.y, f.states});
    ctx->saved_data["has_h0"] = h0_opt.has_value();
    return {f.y.to(k.scalar_type()), f.final_state};
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const Tensor &w = saved[0], &u = saved[1], &k = saved[2], &v = saved[3], &h0 = saved[4], &y = saved[5],
                 &states = saved[6];
    const auto ct = y.scalar_type();
    auto conv = [&](const Tensor& t) { return t.defined() ? t.to(ct).contiguous() : Tensor(); };
    const auto g = run_backward(conv(w), conv(u), conv(k), conv(v), h0, y, states, conv(grads[0]), conv(grads[1]));
    torch::autograd::variable_list out(5);
    out[0] = g.dw.to(w.scalar_type());
    out[1] = g.du.to(u.scalar_type());
    out[2] = g.dk.to(k.scalar_type());
    out[3] = g.dv.to(v.scalar_type());
    if (ctx->saved_data["has_h0"].toBool()) out[4] = g.dh0;
    return out;
  }
};

bool float_type(at::ScalarType dt) {
  return dt == at::kFloat || dt == at::kDouble || dt == at::kBFloat16 || dt == at::kHalf;
}

}  // namespace

bool wkv_cpu_supports(const at::Tensor& k) { return k.is_cpu() && float_type(k.scalar_type()); }

bool wkv_cuda_supports(const at::Tensor& k) {
#ifdef SSMLAB_WITH_CUDA
  return k.is_cuda() && float_type(k.scalar_type());
#else
  (void)k;
  return false;
#endif
}

WkvOut wkv_fused(const at::Tensor& w, const at::Tensor& u, const at::Tensor& k, const at::Tensor& v,
                 const std::optional<at::Tensor>& initial_state) {
  SSMLAB_CHECK(wkv_cpu_supports(k), "wkv_fused: unsupported case (CPU, float32/float64/bfloat16/float16 k); got k ",
               shape_str(k.sizes()), " ", c10::toString(k.scalar_type()), " on ", k.device().str());
  auto outs = WkvFused::apply(w, u, k, v, initial_state);
  return {outs[0], outs[1]};
}

WkvOut wkv_cuda(const at::Tensor& w, const at::Tensor& u, const at::Tensor& k, const at::Tensor& v,
                const std::optional<at::Tensor>& initial_state) {
  SSMLAB_CHECK(wkv_cuda_supports(k), "wkv_cuda: unsupported case (needs a build with the CUDA kernels and a CUDA ",
               "float32/float64/bfloat16/float16 k); got k ", shape_str(k.sizes()), " ", c10::toString(k.scalar_type()),
               " on ", k.device().str());
  auto outs = WkvFused::apply(w, u, k, v, initial_state);
  return {outs[0], outs[1]};
}

}  // namespace ssmlab::ops
