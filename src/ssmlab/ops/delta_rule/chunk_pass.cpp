// The delta rule as intra-chunk UT/WY in ATen + one serial pass over chunks (chunk_pass.h), and the CUDA path's
// entry (delta_rule_cuda_supports; delta_rule_fused on CUDA inputs runs delta_rule_pass::run with Impl::cuda).
#include "ssmlab/ops/delta_rule/chunk_pass.h"

#include <cstdlib>
#include <limits>
#include <string>

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <torch/csrc/autograd/custom_function.h>

#include "ssmlab/core/device.h"
#include "ssmlab/core/error.h"
#include "ssmlab/ops/poison.h"
#ifdef SSMLAB_WITH_CUDA
#include "ssmlab/ops/delta_rule/cuda.h"
#endif

namespace ssmlab::ops {
namespace delta_rule_pass {
namespace {

using at::Tensor;

OutputPoison dr_pass_poison;

Forward pass_forward(const Inputs& in, bool save, Impl impl) {
#ifdef SSMLAB_WITH_CUDA
  if (impl == Impl::cuda) return delta_rule_cuda::forward(in, save);
#endif
  SSMLAB_CHECK(impl == Impl::aten, "delta_rule: this build has no CUDA delta-rule kernels");
  return forward_aten(in, save);
}

Backward pass_backward(const Inputs& in, const Tensor& dO, const Tensor& dS_final, Impl impl) {
#ifdef SSMLAB_WITH_CUDA
  if (impl == Impl::cuda) return delta_rule_cuda::backward(in, dO, dS_final);
#endif
  SSMLAB_CHECK(impl == Impl::aten, "delta_rule: this build has no CUDA delta-rule kernels");
  return backward_aten(in, dO, dS_final);
}

StateForward state_pass_forward(const StateInputs& in, Impl impl) {
#ifdef SSMLAB_WITH_CUDA
  if (impl == Impl::cuda) return delta_rule_cuda::state_forward(in);
#endif
  SSMLAB_CHECK(impl == Impl::aten, "delta_rule: this build has no CUDA delta-rule kernels");
  return state_forward_aten(in);
}

StateBackward state_pass_backward(const StateInputs& in, const Tensor& gS_entry, const Tensor& gVn,
                                  const Tensor& dS_final, Impl impl) {
#ifdef SSMLAB_WITH_CUDA
  if (impl == Impl::cuda) return delta_rule_cuda::state_backward(in, gS_entry, gVn, dS_final);
#endif
  SSMLAB_CHECK(impl == Impl::aten, "delta_rule: this build has no CUDA delta-rule kernels");
  return state_backward_aten(in, gS_entry, gVn, dS_final);
}

// (..., M, N) contiguous -> (prod(...), M, N) view.
Tensor dr_batched3(const Tensor& t) { return t.reshape({-1, t.size(-2), t.size(-1)}); }

// alpha * a b over the leading dims (a (..., M, P), b (..., P, N)), no extra elementwise pass for alpha.
Tensor dr_scaled_matmul(const Tensor& a, const Tensor& b, double alpha) {
  std::vector<int64_t> sizes(a.sizes().begin(), a.sizes().end());
  sizes.back() = b.size(-1);
  const Tensor a3 = dr_batched3(a), b3 = dr_batched3(b);
  const Tensor out = at::empty({a3.size(0), a3.size(1), b3.size(2)}, a.options());
  return at::baddbmm(out, a3, b3, /*beta=*/0.0, alpha).view(sizes);
}

// The state pass as one autograd Function over (U, W, Ko, d, S0); outputs (S_entry, Vn, final state).
class DeltaStatePass : public torch::autograd::Function<DeltaStatePass> {
 public:
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx, const Tensor& U,
                                                const Tensor& W, const Tensor& Ko, const Tensor& d, const Tensor& S0,
                                                int64_t impl) {
    ctx->set_materialize_grads(false);  // an unused output's gradient stays undefined (the kernels read it as zero)
    auto f = state_pass_forward(StateInputs{U, W, Ko, d, S0}, static_cast<Impl>(impl));
    ctx->save_for_backward({W, Ko, d, S0, f.S_entry, f.Vn});
    ctx->saved_data["impl"] = impl;
    return {f.S_entry, f.Vn, f.final_state};
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto s = ctx->get_saved_variables();
    const Tensor &W = s[0], &Ko = s[1], &d = s[2], &S0 = s[3], &S_entry = s[4], &Vn = s[5];
    auto prep = [&](size_t i) {
      return i < grads.size() && grads[i].defined() ? grads[i].to(W.scalar_type()).contiguous() : Tensor();
    };
    const Tensor gSe = prep(0), gVn = prep(1), dSf = prep(2);
    // The backward pass reads U only for its shape, dtype and device: Vn stands in (U is not saved).
    const auto g = state_pass_backward(StateInputs{Vn, W, Ko, d, S0}, gSe, gVn, dSf,
                                       static_cast<Impl>(ctx->saved_data["impl"].toInt()));
    torch::autograd::variable_list out(6);                                // the last: impl
    out[0] = g.dVn;                                                        // dU
    out[1] = dr_scaled_matmul(g.dVn, S_entry.transpose(-1, -2), -1.0);   // dW  (Q, K)
    out[2] = dr_scaled_matmul(Vn, g.dSx.transpose(-1, -2), 1.0);          // dKo (Q, K)
    out[3] = (g.dSx * S_entry).sum(-1);                                    // dd  (K)
    out[4] = g.dS0;
    return out;
  }
};

// The pass as one autograd Function over (U, W, Qi, A, Ko, d, S0); outputs (O, final state).
class DeltaChunkPass : public torch::autograd::Function<DeltaChunkPass> {
 public:
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx, const Tensor& U,
                                                const Tensor& W, const Tensor& Qi, const Tensor& A, const Tensor& Ko,
                                                const Tensor& d, const Tensor& S0, int64_t impl) {
    const Inputs in{U, W, Qi, A, Ko, d, S0};
    auto f = pass_forward(in, /*save=*/true, static_cast<Impl>(impl));
    ctx->save_for_backward({U, W, Qi, A, Ko, d, S0, f.S_entry, f.Vn});
    ctx->saved_data["impl"] = impl;
    return {f.O, f.final_state};
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto s = ctx->get_saved_variables();
    const Inputs in{s[0], s[1], s[2], s[3], s[4], s[5], s[6]};
    const Tensor &S_entry = s[7], &Vn = s[8];
    const Tensor dO = grads[0].defined() ? grads[0].to(in.U.scalar_type()).contiguous() : at::zeros_like(in.U);
    const Tensor dSf = grads[1].defined() ? grads[1].to(in.U.scalar_type()).contiguous() : Tensor();
    const auto g = pass_backward(in, dO, dSf, static_cast<Impl>(ctx->saved_data["impl"].toInt()));
    const Tensor St = S_entry.transpose(-1, -2);                          // (B, HV, nc, V, K)
    torch::autograd::variable_list out(8);
    out[0] = g.dVn;                                                       // dU
    out[1] = -at::matmul(g.dVn, St);                                      // dW  (Q, K)
    out[2] = at::matmul(dO, St);                                          // dQi (Q, K)
    out[3] = at::matmul(dO, Vn.transpose(-1, -2));                        // dA  (Q, Q)
    out[4] = at::matmul(Vn, g.dSx.transpose(-1, -2));                     // dKo (Q, K)
    out[5] = (g.dSx * S_entry).sum(-1);                                   // dd  (K)
    out[6] = g.dS0;
    return out;
  }
};

}  // namespace

void set_poison_outputs(bool on) { dr_pass_poison.set(on); }
at::Tensor poisoned_empty(at::IntArrayRef sizes, const at::TensorOptions& o) { return dr_pass_poison.empty(sizes, o); }

Forward forward_aten(const Inputs& in, bool save) {
  const int64_t nc = in.U.size(2);
  Tensor S = in.S0;
  std::vector<Tensor> os, entries, vns;
  for (int64_t c = 0; c < nc; ++c) {
    const Tensor vn = in.U.select(2, c) - at::matmul(in.W.select(2, c), S);              // (B, HV, Q, V)
    os.push_back(at::matmul(in.Qi.select(2, c), S) + at::matmul(in.A.select(2, c), vn));
    if (save) {
      entries.push_back(S);
      vns.push_back(vn);
    }
    S = in.d.select(2, c).unsqueeze(-1) * S + at::matmul(in.Ko.select(2, c).transpose(-1, -2), vn);
  }
  Forward f;
  f.O = nc > 0 ? at::stack(os, 2) : at::zeros_like(in.U);
  f.final_state = S.clone();
  if (save) {
    f.S_entry = nc > 0 ? at::stack(entries, 2) : at::zeros({in.S0.size(0), in.S0.size(1), 0, in.S0.size(2),
                                                           in.S0.size(3)}, in.S0.options());
    f.Vn = nc > 0 ? at::stack(vns, 2) : at::zeros_like(in.U);
  }
  return f;
}

Backward backward_aten(const Inputs& in, const Tensor& dO, const Tensor& dS_final) {
  const int64_t nc = in.U.size(2);
  Tensor dS = dS_final.defined() ? dS_final : at::zeros_like(in.S0);
  std::vector<Tensor> dvns(nc), dsxs(nc);
  for (int64_t c = nc - 1; c >= 0; --c) {
    dsxs[c] = dS;
    const Tensor dvn = at::matmul(in.A.select(2, c).transpose(-1, -2), dO.select(2, c)) +
                       at::matmul(in.Ko.select(2, c), dS);                                 // (B, HV, Q, V)
    dvns[c] = dvn;
    dS = in.d.select(2, c).unsqueeze(-1) * dS + at::matmul(in.Qi.select(2, c).transpose(-1, -2), dO.select(2, c)) -
         at::matmul(in.W.select(2, c).transpose(-1, -2), dvn);
  }
  Backward g;
  g.dVn = nc > 0 ? at::stack(dvns, 2) : at::zeros_like(in.U);
  g.dSx = nc > 0 ? at::stack(dsxs, 2)
                 : at::zeros({in.S0.size(0), in.S0.size(1), 0, in.S0.size(2), in.S0.size(3)}, in.S0.options());
  g.dS0 = dS.clone();
  return g;
}

StateForward state_forward_aten(const StateInputs& in) {
  const int64_t nc = in.U.size(2);
  Tensor S = in.S0;
  std::vector<Tensor> entries, vns;
  for (int64_t c = 0; c < nc; ++c) {
    const Tensor vn = in.U.select(2, c) - at::matmul(in.W.select(2, c), S);              // (B, HV, Q, V)
    entries.push_back(S);
    vns.push_back(vn);
    S = in.d.select(2, c).unsqueeze(-1) * S + at::matmul(in.Ko.select(2, c).transpose(-1, -2), vn);
  }
  StateForward f;
  f.S_entry = nc > 0 ? at::stack(entries, 2)
                     : at::zeros({in.S0.size(0), in.S0.size(1), 0, in.S0.size(2), in.S0.size(3)}, in.S0.options());
  f.Vn = nc > 0 ? at::stack(vns, 2) : at::zeros_like(in.U);
  f.final_state = S.clone();
  return f;
}

StateBackward state_backward_aten(const StateInputs& in, const Tensor& gS_entry, const Tensor& gVn,
                                  const Tensor& dS_final) {
  const int64_t nc = in.U.size(2);
  Tensor dS = dS_final.defined() ? dS_final : at::zeros_like(in.S0);
  std::vector<Tensor> dvns(nc), dsxs(nc);
  for (int64_t c = nc - 1; c >= 0; --c) {
    dsxs[c] = dS;
    Tensor dvn = at::matmul(in.Ko.select(2, c), dS);                                       // (B, HV, Q, V)
    if (gVn.defined()) dvn = dvn + gVn.select(2, c);
    dvns[c] = dvn;
    dS = in.d.select(2, c).unsqueeze(-1) * dS - at::matmul(in.W.select(2, c).transpose(-1, -2), dvn);
    if (gS_entry.defined()) dS = dS + gS_entry.select(2, c);
  }
  StateBackward g;
  g.dVn = nc > 0 ? at::stack(dvns, 2) : at::zeros_like(in.U);
  g.dSx = nc > 0 ? at::stack(dsxs, 2)
                 : at::zeros({in.S0.size(0), in.S0.size(1), 0, in.S0.size(2), in.S0.size(3)}, in.S0.options());
  g.dS0 = dS.clone();
  return g;
}

DeltaRuleOut run(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& beta,
                 const DeltaRuleOptions& opts, Impl impl) {
  const auto ct = state_dtype(q.scalar_type());
  const int64_t b = q.size(0), l = q.size(1), h = q.size(2), kd = q.size(3), hv = v.size(2), vd = v.size(3);
  const int64_t rep = hv / h;
  const auto fopt = q.options().dtype(ct);
  const Tensor S0 = opts.initial_state ? opts.initial_state->to(ct).contiguous() : at::zeros({b, hv, kd, vd}, fopt);
  if (l == 0) return {at::zeros({b, 0, hv, vd}, q.options()), S0.clone()};
  int64_t qc = std::min(opts.chunk_size, l);
  bool state_form = impl == Impl::aten;
#ifdef SSMLAB_WITH_CUDA
  if (impl == Impl::cuda) {
    qc = std::min<int64_t>(qc, delta_rule_cuda::kMaxQ);
    state_form = delta_rule_cuda::state_pass_selected(ct);
  }
#endif
  const int64_t nc = (l + qc - 1) / qc, lp = nc * qc;
  // The intra-chunk part, as chunked.cpp: (B, L, HV, X) -> (B, HV, nc, Q, X), zero-padded steps at the end
  // (k = q = beta = g = 0 leave the state unchanged). The cast to the compute dtype comes before the repetition of
  // grouped key heads, so the backward sums a key head's value-head gradients before its one rounding to a 16-bit
  // input dtype. q, k, v chunks are made contiguous once (the matmuls below then need no copies of their own).
  auto pad_time = [&](const Tensor& t) {
    if (lp == l) return t;
    std::vector<int64_t> pad(2 * (t.dim() - 1), 0);
    pad.back() = lp - l;
    return at::constant_pad_nd(t, pad, 0.0);
  };
  auto chunks = [&](const Tensor& t) {
    const int64_t x = t.size(3);
    return pad_time(t).view({b, nc, qc, hv, x}).permute({0, 3, 1, 2, 4});
  };
  auto expand = [&](const Tensor& t) { return rep == 1 ? t : t.repeat_interleave(rep, 2); };
  const Tensor qh = chunks(expand(q.to(ct))).contiguous(), kh = chunks(expand(k.to(ct))).contiguous(),
               vh = chunks(v.to(ct)).contiguous();                                    // (B, HV, nc, Q, K|V)
  const Tensor bh = chunks(beta.to(ct).unsqueeze(-1));                                 // (B, HV, nc, Q, 1)
  const Tensor g = opts.g ? chunks((opts.g->dim() == 3 ? opts.g->unsqueeze(-1) : *opts.g).to(ct))
                          : at::zeros({b, hv, nc, qc, 1}, fopt);
  const Tensor G = at::cumsum(g, 3);                                                   // (B, HV, nc, Q, kg)
  const Tensor upper = at::ones({qc, qc}, q.options().dtype(at::kBool)).triu(1).unsqueeze(-1);
  const Tensor gam = at::exp((G.unsqueeze(-2) - G.unsqueeze(-3)).masked_fill(upper, -INFINITY));  // (.., Q, Q, kg)
  Tensor KK, QK;
  if (G.size(-1) == 1) {
    const Tensor gm = gam.squeeze(-1);
    KK = at::matmul(kh, kh.transpose(-1, -2)) * gm;
    QK = at::matmul(qh, kh.transpose(-1, -2)) * gm;
  } else {
    KK = (kh.unsqueeze(-2) * kh.unsqueeze(-3) * gam).sum(-1);
    QK = (qh.unsqueeze(-2) * kh.unsqueeze(-3) * gam).sum(-1);
  }
  const Tensor M = at::eye(qc, fopt) + KK.tril(-1) * bh;                              // I + diag(beta) A, unit lower
  const Tensor eG = at::exp(G);
  // T = M^-1 by one batched triangular solve against I (Q right-hand sides); Tb = T diag(beta) (beta on T's
  // columns, a Q x Q scaling instead of two Q x K|V ones), then U = Tb V and W = Tb (K e^G) as batched matmuls.
  const Tensor I = at::eye(qc, fopt).expand_as(M).contiguous();
  const Tensor T = at::linalg_solve_triangular(M, I, /*upper=*/false, /*left=*/true, /*unitriangular=*/true);
  const Tensor Tb = T * bh.transpose(-1, -2);
  const Tensor U = at::matmul(Tb, vh);
  const Tensor W = at::matmul(Tb, opts.g ? kh * eG : kh);
  const Tensor G_last = G.narrow(3, qc - 1, 1);                                        // (B, HV, nc, 1, kg)
  const Tensor Qi = opts.g ? (qh * eG).contiguous() : qh;
  const Tensor Ko = opts.g ? (kh * at::exp(G_last - G)).contiguous() : kh;
  const Tensor d = at::exp(G_last).squeeze(3).expand({b, hv, nc, kd}).contiguous();   // (B, HV, nc, K)
  const Tensor A = QK.contiguous();
  auto needs_grad = [](std::initializer_list<const Tensor*> ts) {
    if (!at::GradMode::is_enabled()) return false;
    for (const Tensor* t : ts)
      if (t->requires_grad()) return true;
    return false;
  };
  Tensor O, S;
  if (state_form) {
    // The serial pass gives every chunk's entry state and Vn; O_c = Qi_c S_entry_c + A_c Vn_c is then batched over
    // all chunks at once.
    const StateInputs in{U.contiguous(), W.contiguous(), Ko, d, S0};
    Tensor Se, Vn;
    if (needs_grad({&in.U, &in.W, &in.Ko, &in.d, &in.S0})) {
      auto outs = DeltaStatePass::apply(in.U, in.W, in.Ko, in.d, in.S0, static_cast<int64_t>(impl));
      Se = outs[0];
      Vn = outs[1];
      S = outs[2];
    } else {
      auto f = state_pass_forward(in, impl);
      Se = f.S_entry;
      Vn = f.Vn;
      S = f.final_state;
    }
    O = at::baddbmm(dr_batched3(at::matmul(A, Vn)), dr_batched3(Qi), dr_batched3(Se)).view({b, hv, nc, qc, vd});
  } else {
    const Inputs in{U.contiguous(), W.contiguous(), Qi, A, Ko, d, S0};
    if (needs_grad({&in.U, &in.W, &in.Qi, &in.A, &in.Ko, &in.d, &in.S0})) {
      auto outs = DeltaChunkPass::apply(in.U, in.W, in.Qi, in.A, in.Ko, in.d, in.S0, static_cast<int64_t>(impl));
      O = outs[0];
      S = outs[1];
    } else {
      auto f = pass_forward(in, /*save=*/false, impl);
      O = f.O;
      S = f.final_state;
    }
  }
  // (B, HV, nc, Q, V) -> (B, L, HV, V) in the input dtype: the cast keeps O's permuted strides (one pass), the
  // reshape then copies the (16-bit, for 16-bit inputs) result into place.
  const Tensor o = O.permute({0, 2, 3, 1, 4}).to(q.scalar_type()).reshape({b, lp, hv, vd}).narrow(1, 0, l);
  return {o, S};
}

}  // namespace delta_rule_pass

bool delta_rule_cuda_supports(const at::Tensor& q) {
#ifdef SSMLAB_WITH_CUDA
  if (!q.is_cuda()) return false;
  const auto t = q.scalar_type();
  if (!(t == at::kFloat || t == at::kDouble || t == at::kBFloat16 || t == at::kHalf)) return false;
  const char* env = std::getenv("SSMLAB_DELTA_CUDA");
  if (env != nullptr && std::string(env) == "chunked") return false;
  return delta_rule_cuda::shared_memory_fits(q.size(3), delta_rule_cuda::kMaxQ, state_dtype(t), q.device().index());
#else
  (void)q;
  return false;
#endif
}

}  // namespace ssmlab::ops
