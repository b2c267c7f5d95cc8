// The fused CPU Mamba-3 path (mamba3.h): the whole scan (preparation, look-ahead SSD recurrence, diagonal
// correction, D) is one autograd Function whose forward and backward are the kernels of cpu.cpp. Only the small
// carried outputs (the last phase and rotated key, the last input) are computed in ATen beside it.
#include <cmath>

#include <ATen/ATen.h>
#include <torch/csrc/autograd/custom_function.h>

#include "ssmlab/core/error.h"
#include "ssmlab/ops/mamba3/cpu.h"
#include "ssmlab/ops/mamba3/detail.h"
#include "ssmlab/ops/mamba3/mamba3.h"

namespace ssmlab::ops {
namespace {

using at::Tensor;

class Mamba3FusedScan : public torch::autograd::Function<Mamba3FusedScan> {
 public:
  // All tensors contiguous in the compute dtype; D and the initial state (all four or none) may be absent.
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx, const Tensor& q,
                                                const Tensor& k, const Tensor& x, const Tensor& adt,
                                                const Tensor& dt, const Tensor& trap, const Tensor& theta,
                                                const std::optional<Tensor>& D, const std::optional<Tensor>& phase0,
                                                const std::optional<Tensor>& h0, const std::optional<Tensor>& k_prev0,
                                                const std::optional<Tensor>& x_prev0, bool halves) {
    mamba3_cpu::Inputs in{q, k, x, adt, dt, trap, theta, D.value_or(Tensor()), phase0.value_or(Tensor()),
                          h0.value_or(Tensor()), k_prev0.value_or(Tensor()), x_prev0.value_or(Tensor()), halves};
    auto f = mamba3_cpu::forward(in);
    ctx->save_for_backward({q, k, x, adt, dt, trap, theta, in.D, in.phase0, in.h0, in.k_prev0, in.x_prev0,
                            f.checkpoints});
    ctx->saved_data["halves"] = halves;
    return {f.y, f.final_state};
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto s = ctx->get_saved_variables();
    mamba3_cpu::Inputs in{s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7], s[8], s[9], s[10], s[11],
                          ctx->saved_data["halves"].toBool()};
    auto conv = [&](const Tensor& t) { return t.defined() ? t.to(s[0].scalar_type()).contiguous() : Tensor(); };
    auto g = mamba3_cpu::backward(in, s[12], conv(grads[0]), conv(grads[1]));
    // One gradient per forward argument, in order (the last, `halves`, is not a tensor).
    return {g.dq,   g.dk,     g.dx,  g.dadt,     g.ddt,      g.dtrap, g.dtheta,
            g.dD,   g.dphase0, g.dh0, g.dk_prev0, g.dx_prev0, Tensor()};
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
  const int64_t t_len = q.size(1), s = theta.size(3);
  if (t_len == 0) return d::empty_scan(q, k, x, s, opts);
  const auto ct = d::compute_dtype(x);
  auto c = [&](const Tensor& t) { return t.to(ct).contiguous(); };
  std::optional<Tensor> D, ph0, h0, kp0, xp0;
  if (opts.D) D = c(*opts.D);
  if (opts.initial) {
    ph0 = c(opts.initial->phase);
    h0 = c(opts.initial->state);
    kp0 = c(opts.initial->k_prev);
    xp0 = c(opts.initial->x_prev);
  }
  auto outs = Mamba3FusedScan::apply(c(q), c(k), c(x), c(adt), c(dt), c(trap), c(theta), D, ph0, h0, kp0, xp0,
                                     opts.pairing == Mamba3Pairing::halves);
  Mamba3Out out;
  out.y = outs[0].to(x.scalar_type());
  out.final.state = outs[1];
  // The carried phase (fp64 sum, reduced into [0, 2pi)) and the last token's rotated key, in ATen.
  const Tensor phase0 = opts.initial ? opts.initial->phase.to(at::kDouble)
                                     : at::zeros({q.size(0), q.size(3), s}, x.options().dtype(at::kDouble));
  const Tensor phi =
      at::remainder(phase0 + (dt.to(at::kDouble).unsqueeze(-1) * theta.to(at::kDouble)).sum(1), 2 * M_PI);
  out.final.phase = phi.to(ct);
  out.final.k_prev = d::rotate(k.select(1, t_len - 1).to(ct), at::cos(phi).to(ct).unsqueeze(1),
                               at::sin(phi).to(ct).unsqueeze(1), opts.pairing)
                         .to(k.scalar_type());
  out.final.x_prev = x.select(1, t_len - 1).clone(at::MemoryFormat::Contiguous);
  return out;
}

}  // namespace ssmlab::ops
