// The fused SSD scan as an autograd Function over the per-step coefficients (a, w): forward and backward are
// the kernels of cpu.cpp, or of cuda.cu for CUDA tensors (where the build links them); the chain from (a, w)
// to dt, A, dt_bias and the intervention multipliers is ATen autograd through ssd_detail::coefficients.
// Inputs of any float dtype are computed in state_dtype(x); y comes back in x's dtype, the final state in the
// compute dtype, each gradient in its input's dtype.
#include <ATen/ATen.h>
#include <torch/csrc/autograd/custom_function.h>

#include "ssmlab/core/device.h"
#include "ssmlab/core/error.h"
#include "ssmlab/ops/ssd_scan/cpu.h"
#include "ssmlab/ops/ssd_scan/ssd_scan.h"
#ifdef SSMLAB_WITH_CUDA
#include "ssmlab/ops/ssd_scan/cuda.h"
#endif

namespace ssmlab::ops {
namespace {

using at::Tensor;

ssd_scan_cpu::Inputs prepare(const Tensor& x, const Tensor& a, const Tensor& w, const Tensor& B, const Tensor& C,
                             const Tensor& D, const Tensor& S0) {
  const auto ct = state_dtype(x.scalar_type());
  auto conv = [&](const Tensor& t) { return t.defined() ? t.to(ct).contiguous() : Tensor(); };
  return {conv(x), conv(a), conv(w), conv(B), conv(C), conv(D), conv(S0), x.scalar_type(),
          B.scalar_type() == C.scalar_type() ? B.scalar_type() : at::kFloat};
}

ssd_scan_cpu::Forward run_forward(const ssd_scan_cpu::Inputs& in) {
#ifdef SSMLAB_WITH_CUDA
  if (in.x.is_cuda()) return ssd_scan_cuda::forward(in);
#endif
  return ssd_scan_cpu::forward(in);
}

ssd_scan_cpu::Grads run_backward(const ssd_scan_cpu::Inputs& in, const Tensor& starts, const Tensor& dy,
                                 const Tensor& dfin) {
#ifdef SSMLAB_WITH_CUDA
  if (in.x.is_cuda()) return ssd_scan_cuda::backward(in, starts, dy, dfin);
#endif
  return ssd_scan_cpu::backward(in, starts, dy, dfin);
}

class SsdScanFused : public torch::autograd::Function<SsdScanFused> {
 public:
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx, const Tensor& x,
                                                const Tensor& a, const Tensor& w, const Tensor& B, const Tensor& C,
                                                const std::optional<Tensor>& D_opt,
                                                const std::optional<Tensor>& S0_opt) {
    // Optional inputs arrive as std::optional (an undefined Tensor breaks Function::apply).
    const Tensor D = D_opt.value_or(Tensor()), S0 = S0_opt.value_or(Tensor());
    const auto in = prepare(x, a, w, B, C, D, S0);
    auto f = run_forward(in);
    ctx->save_for_backward({x, a, w, B, C, D, S0, f.starts});
    return {f.y.to(x.scalar_type()), f.final_state};
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto s = ctx->get_saved_variables();
    const Tensor &x = s[0], &a = s[1], &w = s[2], &B = s[3], &C = s[4], &D = s[5], &S0 = s[6], &starts = s[7];
    const auto in = prepare(x, a, w, B, C, D, S0);
    const auto ct = in.x.scalar_type();
    const Tensor dy = grads[0].defined() ? grads[0].to(ct) : Tensor();
    const Tensor dfin = grads[1].defined() ? grads[1].to(ct) : Tensor();
    auto g = run_backward(in, starts, dy, dfin);
    auto as = [](const Tensor& t, const Tensor& like) { return t.to(like.scalar_type()); };
    torch::autograd::variable_list out(7);
    out[0] = as(g.dx, x);
    out[1] = as(g.da, a);
    out[2] = as(g.dw, w);
    out[3] = as(g.dB, B);
    out[4] = as(g.dC, C);
    if (D.defined()) out[5] = as(g.dD, D);
    if (S0.defined()) out[6] = as(g.dS0, S0);
    return out;
  }
};

}  // namespace

bool ssd_scan_cpu_supports(const at::Tensor& x, const at::Tensor& dt, const at::Tensor& A, const at::Tensor& B,
                           const at::Tensor& C, const SsdScanOptions& opts) {
  if (opts.return_chunk_states) return false;
  const auto t = x.scalar_type();
  if (!(t == at::kFloat || t == at::kDouble || t == at::kBFloat16 || t == at::kHalf)) return false;
  for (const at::Tensor* p : {&x, &dt, &A, &B, &C})
    if (!p->is_cpu()) return false;
  for (const auto* o : {&opts.D, &opts.dt_bias, &opts.initial_state, &opts.dt_mult, &opts.decay_mult, &opts.b_mult})
    if (*o && !(*o)->is_cpu()) return false;
  return true;
}

bool ssd_scan_cuda_supports(const at::Tensor& x, const at::Tensor& dt, const at::Tensor& A, const at::Tensor& B,
                            const at::Tensor& C, const SsdScanOptions& opts) {
#ifdef SSMLAB_WITH_CUDA
  if (opts.return_chunk_states || !x.is_cuda()) return false;
  const auto t = x.scalar_type();
  if (!(t == at::kFloat || t == at::kDouble || t == at::kBFloat16 || t == at::kHalf)) return false;
  if (x.size(3) > ssd_scan_cuda::kMaxP || B.size(3) > ssd_scan_cuda::kMaxN) return false;
  for (const at::Tensor* p : {&dt, &A, &B, &C})
    if (p->device() != x.device()) return false;
  for (const auto* o : {&opts.D, &opts.dt_bias, &opts.initial_state, &opts.dt_mult, &opts.decay_mult, &opts.b_mult})
    if (*o && (*o)->device() != x.device()) return false;
  return true;
#else
  (void)x, (void)dt, (void)A, (void)B, (void)C, (void)opts;
  return false;
#endif
}

SsdScanOut ssd_scan_fused(const at::Tensor& x, const at::Tensor& dt, const at::Tensor& A, const at::Tensor& B,
                          const at::Tensor& C, const SsdScanOptions& opts) {
  SSMLAB_CHECK(ssd_scan_cpu_supports(x, dt, A, B, C, opts) || ssd_scan_cuda_supports(x, dt, A, B, C, opts),
               "ssd_scan_fused: no fused kernel takes this case (CPU, or CUDA with the kernels built and P <= 64, "
               "N <= 256; float types; no chunk states); got x ", shape_str(x.sizes()), " ",
               c10::toString(x.scalar_type()), " on ", x.device().str(), ", B ", shape_str(B.sizes()));
  const auto ct = state_dtype(x.scalar_type());
  const auto coef = ssd_detail::coefficients(dt, A, opts, ct);  // (B, L, H) each, differentiable
  auto outs = SsdScanFused::apply(x, coef.a, coef.w, B, C, opts.D, opts.initial_state);
  return {outs[0], outs[1], at::Tensor()};
}

}  // namespace ssmlab::ops
