// The fused CPU delta rule as one autograd Function: forward and backward are the kernels of cpu.cpp (CUDA inputs
// go to chunk_pass.cpp and its kernels instead). Inputs of any float dtype are computed in state_dtype(q)
// (float32, float64 for float64 q); o comes back in q's dtype, the final state in the compute dtype, each gradient
// in its input's dtype.
#include <ATen/ATen.h>
#include <torch/csrc/autograd/custom_function.h>

#include "ssmlab/core/device.h"
#include "ssmlab/core/error.h"
#include "ssmlab/ops/delta_rule/chunk_pass.h"
#include "ssmlab/ops/delta_rule/cpu.h"
#include "ssmlab/ops/delta_rule/delta_rule.h"

namespace ssmlab::ops {
namespace {

using at::Tensor;

class DeltaRuleFused : public torch::autograd::Function<DeltaRuleFused> {
 public:
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx, const Tensor& q,
                                                const Tensor& k, const Tensor& v, const Tensor& beta,
                                                const std::optional<Tensor>& g_opt,
                                                const std::optional<Tensor>& h0_opt) {
    const auto ct = state_dtype(q.scalar_type());
    auto conv = [&](const Tensor& t) { return t.defined() ? t.to(ct).contiguous() : Tensor(); };
    const Tensor g = conv(g_opt.value_or(Tensor())), h0 = conv(h0_opt.value_or(Tensor()));
    const Tensor qc = conv(q), kc = conv(k), vc = conv(v), bc = conv(beta);
    auto f = delta_rule_cpu::forward(qc, kc, vc, bc, g, h0);
    ctx->save_for_backward({qc, kc, vc, bc, g, h0, f.checkpoints});
    ctx->saved_data["dtypes"] = std::vector<int64_t>{
        static_cast<int64_t>(q.scalar_type()), static_cast<int64_t>(k.scalar_type()),
        static_cast<int64_t>(v.scalar_type()), static_cast<int64_t>(beta.scalar_type()),
        static_cast<int64_t>(g_opt ? g_opt->scalar_type() : ct),
        static_cast<int64_t>(h0_opt ? h0_opt->scalar_type() : ct)};
    return {f.o.to(q.scalar_type()), f.final_state};
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const Tensor &q = saved[0], &k = saved[1], &v = saved[2], &beta = saved[3], &g = saved[4], &h0 = saved[5],
                 &ck = saved[6];
    const auto ct = q.scalar_type();
    auto conv = [&](const Tensor& t) { return t.defined() ? t.to(ct).contiguous() : Tensor(); };
    const auto r = delta_rule_cpu::backward(q, k, v, beta, g, h0, ck, conv(grads[0]), conv(grads[1]));
    const auto dts = ctx->saved_data["dtypes"].toIntVector();
    auto as = [&](const Tensor& t, size_t i) {
      return t.defined() ? t.to(static_cast<at::ScalarType>(dts[i])) : Tensor();
    };
    return {as(r.dq, 0), as(r.dk, 1), as(r.dv, 2), as(r.dbeta, 3), as(r.dg, 4), as(r.dh0, 5)};
  }
};

bool delta_float_type(at::ScalarType dt) {
  return dt == at::kFloat || dt == at::kDouble || dt == at::kBFloat16 || dt == at::kHalf;
}

}  // namespace

bool delta_rule_cpu_supports(const at::Tensor& q) { return q.is_cpu() && delta_float_type(q.scalar_type()); }

DeltaRuleOut delta_rule_fused(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& beta,
                              const DeltaRuleOptions& opts) {
  if (delta_rule_cuda_supports(q)) return delta_rule_pass::run(q, k, v, beta, opts, delta_rule_pass::Impl::cuda);
  SSMLAB_CHECK(delta_rule_cpu_supports(q), "delta_rule_fused: unsupported case (CPU, or CUDA with the kernels built "
               "and K <= 256; float32/float64/bfloat16/float16 q); got q ", shape_str(q.sizes()), " ",
               c10::toString(q.scalar_type()), " on ", q.device().str());
  auto outs = DeltaRuleFused::apply(q, k, v, beta, opts.g, opts.initial_state);
  return {outs[0], outs[1]};
}

}  // namespace ssmlab::ops
