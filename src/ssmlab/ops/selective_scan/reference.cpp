// The selective-scan oracle (README.md beside this file). Plain ATen, time-stepped, any float dtype
// (computes in fp32, or fp64 for fp64 inputs). The forward keeps the state at the start of every chunk;
// the backward re-runs one chunk at a time from those and walks the adjoint state backwards in time.
//
// Internal layout: channels are split into groups, E = G * Eg, so that grouped B/C broadcast:
//   u, delta'      (B, L, G, Eg)        A (G, Eg, N)        B, C (B, L, G, 1, N)
//   chunk buffers  (B, c, G, Eg, N)     state h (B, G, Eg, N)
#include <ATen/ATen.h>
#include <torch/csrc/autograd/custom_function.h>

#include "ssmlab/core/device.h"
#include "ssmlab/ops/selective_scan/selective_scan.h"

namespace ssmlab::ops {
namespace {

using at::Tensor;

// Steps per chunk: bounded so one chunk buffer (B, c, E, N) stays near 4M elements.
int64_t chunk_len(int64_t b, int64_t e, int64_t n, int64_t l) {
  const int64_t per_step = std::max<int64_t>(1, b * e * n);
  return std::clamp<int64_t>((int64_t{1} << 22) / per_step, 1, std::min<int64_t>(128, std::max<int64_t>(l, 1)));
}

struct Prepared {
  Tensor u, delta, delta_raw, A, B, C;  // internal layout, compute dtype; delta is after bias + softplus
  int64_t b, l, e, n, g, eg;
};

Prepared prepare(const Tensor& u, const Tensor& delta, const Tensor& A, const Tensor& B, const Tensor& C,
                 const Tensor& delta_bias, bool softplus) {
  Prepared p;
  const auto ct = state_dtype(u.scalar_type());
  p.b = u.size(0);
  p.l = u.size(1);
  p.e = u.size(2);
  p.n = A.size(1);
  p.g = B.dim() == 4 ? B.size(2) : 1;
  p.eg = p.e / p.g;
  p.u = u.to(ct).view({p.b, p.l, p.g, p.eg});
  Tensor d = delta.to(ct);
  if (delta_bias.defined()) d = d + delta_bias.to(ct);
  p.delta_raw = d.view({p.b, p.l, p.g, p.eg});
  p.delta = softplus ? at::softplus(p.delta_raw) : p.delta_raw;
  p.A = A.to(ct).view({p.g, p.eg, p.n});
  p.B = B.to(ct).reshape({p.b, p.l, p.g, 1, p.n});
  p.C = C.to(ct).reshape({p.b, p.l, p.g, 1, p.n});
  return p;
}

// States of steps [t0, t1) from h (the state before t0), into H (B, c, G, Eg, N). Returns dA of the chunk.
Tensor run_chunk(const Prepared& p, int64_t t0, int64_t t1, const Tensor& h_start, Tensor& H) {
  using namespace at::indexing;
  const Tensor dl = p.delta.index({Slice(), Slice(t0, t1)}).unsqueeze(-1);            // (B, c, G, Eg, 1)
  const Tensor dA = at::exp(dl * p.A);                                                   // (B, c, G, Eg, N)
  const Tensor dBu = (dl * p.u.index({Slice(), Slice(t0, t1)}).unsqueeze(-1)) *        //
                     p.B.index({Slice(), Slice(t0, t1)});                               // (B, c, G, Eg, N)
  H = at::empty_like(dA);
  Tensor h = h_start;
  for (int64_t t = 0; t < t1 - t0; ++t) {
    Tensor out = H.select(1, t);
    at::addcmul_out(out, dBu.select(1, t), dA.select(1, t), h);  // h_t = dA_t * h_{t-1} + dBu_t
    h = out;
  }
  return dA;
}

class SelectiveScanRef : public torch::autograd::Function<SelectiveScanRef> {
 public:
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx, const Tensor& u,
                                                const Tensor& delta, const Tensor& A, const Tensor& B,
                                                const Tensor& C, const std::optional<Tensor>& D_opt,
                                                const std::optional<Tensor>& z_opt,
                                                const std::optional<Tensor>& delta_bias_opt, bool softplus,
                                                const std::optional<Tensor>& h0_opt) {
    using namespace at::indexing;
    // Optional inputs arrive as std::optional so that Function::apply records an absent one as a
    // non-variable argument; an undefined at::Tensor there makes apply throw ("tensor does not have a device").
    const Tensor D = D_opt.value_or(Tensor()), z = z_opt.value_or(Tensor());
    const Tensor delta_bias = delta_bias_opt.value_or(Tensor()), h0 = h0_opt.value_or(Tensor());
    const Prepared p = prepare(u, delta, A, B, C, delta_bias, softplus);
    const auto ct = p.u.scalar_type();
    const int64_t c = chunk_len(p.b, p.e, p.n, p.l);
    const int64_t n_chunks = (p.l + c - 1) / c;
    Tensor h = h0.defined() ? h0.to(ct).reshape({p.b, p.g, p.eg, p.n}).clone()
                            : at::zeros({p.b, p.g, p.eg, p.n}, p.u.options());
    Tensor starts = at::empty({n_chunks, p.b, p.g, p.eg, p.n}, p.u.options());
    Tensor y = at::empty({p.b, p.l, p.g, p.eg}, p.u.options());
    for (int64_t k = 0; k < n_chunks; ++k) {
      const int64_t t0 = k * c, t1 = std::min(p.l, t0 + c);
      starts[k].copy_(h);
      Tensor H;
      run_chunk(p, t0, t1, h, H);
      y.index_put_({Slice(), Slice(t0, t1)}, (H * p.C.index({Slice(), Slice(t0, t1)})).sum(-1));
      h = H.select(1, t1 - t0 - 1);
    }
    if (p.l == 0) starts = at::empty({0}, p.u.options());
    Tensor yv = y.view({p.b, p.l, p.e});
    if (D.defined()) yv = yv + D.to(ct) * u.to(ct);
    if (z.defined()) yv = yv * at::silu(z.to(ct));
    ctx->save_for_backward({u, delta, A, B, C, D, z, delta_bias, h0, starts});
    ctx->saved_data["softplus"] = softplus;
    ctx->saved_data["chunk"] = c;
    return {yv.to(u.scalar_type()), h.reshape({p.b, p.e, p.n}).clone()};
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    using namespace at::indexing;
    const auto saved = ctx->get_saved_variables();
    const Tensor &u = saved[0], &delta = saved[1], &A = saved[2], &B = saved[3], &C = saved[4], &D = saved[5],
                 &z = saved[6], &delta_bias = saved[7], &h0 = saved[8], &starts = saved[9];
    const bool softplus = ctx->saved_data["softplus"].toBool();
    const int64_t c = ctx->saved_data["chunk"].toInt();
    const Prepared p = prepare(u, delta, A, B, C, delta_bias, softplus);
    const auto ct = p.u.scalar_type();
    const auto opt = p.u.options();
    const int64_t n_chunks = (p.l + c - 1) / c;

    Tensor gy = grads[0].defined() ? grads[0].to(ct).view({p.b, p.l, p.g, p.eg})
                                   : at::zeros({p.b, p.l, p.g, p.eg}, opt);
    Tensor g_h = grads[1].defined() ? grads[1].to(ct).reshape({p.b, p.g, p.eg, p.n}).clone()
                                    : at::zeros({p.b, p.g, p.eg, p.n}, opt);
    const Tensor Dv = D.defined() ? D.to(ct).view({p.g, p.eg}) : Tensor();
    const Tensor zv = z.defined() ? z.to(ct).view({p.b, p.l, p.g, p.eg}) : Tensor();

    Tensor g_u = at::empty({p.b, p.l, p.g, p.eg}, opt);
    Tensor g_delta = at::empty({p.b, p.l, p.g, p.eg}, opt);  // w.r.t. delta' (after softplus)
    Tensor g_z = z.defined() ? at::empty({p.b, p.l, p.g, p.eg}, opt) : Tensor();
    Tensor g_B = at::empty({p.b, p.l, p.g, p.n}, opt);
    Tensor g_C = at::empty({p.b, p.l, p.g, p.n}, opt);
    Tensor g_A = at::zeros({p.g, p.eg, p.n}, opt);
    Tensor g_D = D.defined() ? at::zeros({p.g, p.eg}, opt) : Tensor();

    for (int64_t k = n_chunks - 1; k >= 0; --k) {
      const int64_t t0 = k * c, t1 = std::min(p.l, t0 + c), len = t1 - t0;
      const auto span = Slice(t0, t1);
      const Tensor h_start = starts[k];
      Tensor H;
      const Tensor dA = run_chunk(p, t0, t1, h_start, H);                       // (B, c, G, Eg, N)
      const Tensor Cc = p.C.index({Slice(), span});                               // (B, c, G, 1, N)
      const Tensor Bc = p.B.index({Slice(), span});
      const Tensor uc = p.u.index({Slice(), span});                               // (B, c, G, Eg)
      const Tensor dl = p.delta.index({Slice(), span});
      Tensor gyc = gy.index({Slice(), span});
      if (z.defined()) {
        const Tensor zc = zv.index({Slice(), span});
        Tensor y_pre = (H * Cc).sum(-1);
        if (D.defined()) y_pre = y_pre + Dv * uc;
        const Tensor sig = at::sigmoid(zc);
        g_z.index_put_({Slice(), span}, gyc * y_pre * sig * (1 + zc * (1 - sig)));  // d silu = s(1 + z(1 - s))
        gyc = gyc * zc * sig;
      }
      if (D.defined()) g_D += (gyc * uc).sum(at::IntArrayRef{0, 1});
      g_C.index_put_({Slice(), span}, (gyc.unsqueeze(-1) * H).sum(3));
      // Adjoint walk: G_t = dL/dh_t = gy_t C_t + dA_{t+1} G_{t+1}.
      const Tensor gyC = gyc.unsqueeze(-1) * Cc;                                 // (B, c, G, Eg, N)
      Tensor G = at::empty_like(H);
      for (int64_t t = len - 1; t >= 0; --t) {
        Tensor out = G.select(1, t);
        at::add_out(out, g_h, gyC.select(1, t));
        g_h = out * dA.select(1, t);
      }
      Tensor H_prev = at::cat({h_start.unsqueeze(1), H.narrow(1, 0, len - 1)}, 1);
      const Tensor gdA_dA = G * H_prev * dA;                                      // dL/d(delta' A) per element
      const Tensor GB = (G * Bc).sum(-1);                                         // (B, c, G, Eg)
      g_delta.index_put_({Slice(), span}, (gdA_dA * p.A).sum(-1) + GB * uc);
      g_A += (gdA_dA * dl.unsqueeze(-1)).sum(at::IntArrayRef{0, 1});
      Tensor gu = GB * dl;
      if (D.defined()) gu = gu + gyc * Dv;
      g_u.index_put_({Slice(), span}, gu);
      g_B.index_put_({Slice(), span}, (G * (dl * uc).unsqueeze(-1)).sum(3));
    }

    Tensor g_raw = softplus ? g_delta * at::sigmoid(p.delta_raw) : g_delta;
    auto as = [](const Tensor& g, const Tensor& like) { return g.reshape(like.sizes()).to(like.scalar_type()); };
    torch::autograd::variable_list out(10);
    out[0] = as(g_u, u);
    out[1] = as(g_raw, delta);
    out[2] = as(g_A, A);
    out[3] = as(g_B, B);
    out[4] = as(g_C, C);
    if (D.defined()) out[5] = as(g_D, D);
    if (z.defined()) out[6] = as(g_z, z);
    if (delta_bias.defined()) out[7] = as(g_raw.sum(at::IntArrayRef{0, 1}), delta_bias);
    if (h0.defined()) out[9] = as(g_h, h0);
    return out;
  }
};

}  // namespace

SelectiveScanOut selective_scan_reference(const at::Tensor& u, const at::Tensor& delta, const at::Tensor& A,
                                          const at::Tensor& B, const at::Tensor& C,
                                          const std::optional<at::Tensor>& D, const std::optional<at::Tensor>& z,
                                          const std::optional<at::Tensor>& delta_bias, bool delta_softplus,
                                          const std::optional<at::Tensor>& initial_state) {
  auto outs = SelectiveScanRef::apply(u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state);
  return {outs[0], outs[1]};
}

}  // namespace ssmlab::ops
