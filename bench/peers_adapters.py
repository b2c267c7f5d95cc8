"""The project's side of the peers kit (../shared/peers/README.md, "Adapters"): each function takes a public
reference kernel's own layout, calls ssmlab's op through torch.ops.ssmlab (libssmlab_ops.so must already be
loaded: the kit loads it before importing this file) and returns the reference's layout. Autograd flows through
every tensor argument (the ops' Autograd kernels, ops/op_autograd.h).

    python3 bench/peers_adapters.py [build/src/libssmlab_ops.so] [cpu|cuda]

runs the self-check: gated_delta_rule against a float64 loop of the recurrence, outputs, final state and every
gradient (exit 1 on a mismatch). Registered with ctest as python.peers_adapters (tests/python/tests.cmake).
"""
import sys

import torch


def gated_delta_rule(q, k, v, g, beta, scale, initial_state=None, output_final_state=False):
    """fla's chunk_gated_delta_rule: q, k (B, T, H, K), already L2-normalised; v (B, T, HV, V); g (B, T, HV) fp32,
    the log of the per-step decay (<= 0); beta (B, T, HV) after the sigmoid; initial_state (B, HV, K, V) fp32 or
    None. Returns (o (B, T, HV, V) in v's dtype, final_state (B, HV, K, V) fp32 or None).
    S <- exp(g_t) S;  S <- S + k_t (beta_t (v_t - S^T k_t))^T;  o_t = S^T (scale q_t).
    ssmlab's delta_rule takes the same layout; the scale is applied to q here, in q's dtype, as fla's callers
    would (o is linear in q)."""
    if scale is None:
        scale = q.shape[-1] ** -0.5
    o, final = torch.ops.ssmlab.delta_rule(q * scale, k, v, beta, g, initial_state, 64)
    if o.dtype != v.dtype:
        o = o.to(v.dtype)
    return o, (final if output_final_state else None)


# ---- self-check --------------------------------------------------------------------------------------------------
def _gdn_loop64(q, k, v, g, beta, scale, h0):
    """The recurrence step by step in float64 on whole (B, HV, K, V) tensors (value head j reads key head
    j // (HV // H))."""
    rep = v.shape[2] // q.shape[2]
    q, k = (t.repeat_interleave(rep, 2) for t in (q, k))
    b, t, hv, dk = k.shape
    S = h0.clone() if h0 is not None else torch.zeros(b, hv, dk, v.shape[-1], dtype=torch.float64, device=q.device)
    outs = []
    for i in range(t):
        S = S * g[:, i].exp()[..., None, None]
        u = beta[:, i, :, None] * (v[:, i] - torch.einsum("bhkv,bhk->bhv", S, k[:, i]))
        S = S + k[:, i, ..., None] * u[..., None, :]
        outs.append(torch.einsum("bhkv,bhk->bhv", S, scale * q[:, i]))
    return torch.stack(outs, 1), S


def _self_check(device):
    gen = torch.Generator().manual_seed(0)
    nrm = torch.nn.functional.normalize
    failures = []
    # Odd sizes: T spans several chunks of 64 plus a remainder; grouped value heads; with and without h0.
    for (b, t, h, hv, dk, dv, with_h0, dtype, tol) in [(2, 150, 2, 4, 16, 24, True, torch.float64, 1e-10),
                                                     (1, 70, 1, 1, 8, 5, False, torch.float64, 1e-10),
                                                     (2, 97, 2, 2, 16, 12, True, torch.float32, 2e-4)]:
        def r(*shape):
            return torch.randn(*shape, generator=gen, dtype=torch.float64)
        q, k = nrm(r(b, t, h, dk), dim=-1), nrm(r(b, t, h, dk), dim=-1)
        v = r(b, t, hv, dv)
        g = torch.nn.functional.logsigmoid(r(b, t, hv) + 2.0)
        beta = torch.sigmoid(r(b, t, hv))
        h0 = r(b, hv, dk, dv) * 0.5 if with_h0 else None
        scale = dk ** -0.5
        go, gs = r(b, t, hv, dv), r(b, hv, dk, dv)
        # Truth: float64 autograd through the loop.
        X = [x.clone().requires_grad_() for x in (q, k, v, g, beta) + ((h0,) if with_h0 else ())]
        o_t, s_t = _gdn_loop64(*X[:5], scale, X[5] if with_h0 else None)
        G_t = torch.autograd.grad((o_t * go).sum() + (s_t * gs).sum(), X)
        # Under test: the adapter on `device` in `dtype` (g, h0 in fp32 or fp64 as fla's layout has them).
        Y = [x.to(device=device, dtype=dtype) for x in (q, k, v, beta)]
        gd = g.to(device=device, dtype=torch.float64 if dtype == torch.float64 else torch.float32)
        Y = Y[:3] + [gd, Y[3]]
        if with_h0:
            Y.append(h0.to(device=device, dtype=gd.dtype))
        Y = [y.requires_grad_() for y in Y]
        o, s = gated_delta_rule(*Y[:5], scale, initial_state=Y[5] if with_h0 else None, output_final_state=True)
        G = torch.autograd.grad((o.double() * go.to(device)).sum() + (s.double() * gs.to(device)).sum(), Y)

        def err(a, b_):
            a, b_ = a.detach().double().cpu(), b_.detach().double().cpu()
            return ((a - b_).norm() / b_.norm().clamp_min(1e-30)).item()
        checks = {"o": err(o, o_t), "final_state": err(s, s_t)}
        checks.update({f"d{n}": err(G[i], G_t[i]) for i, n in enumerate(["q", "k", "v", "g", "beta", "h0"][:len(G)])})
        case = f"B{b} T{t} H{h} HV{hv} K{dk} V{dv} h0={with_h0} {str(dtype).split('.')[-1]} on {device}"
        bad = {n: e for n, e in checks.items() if not e <= tol}
        print(f"{case}: max rel err {max(checks.values()):.2e} (tol {tol:.0e})" + (f"  FAIL {bad}" if bad else ""))
        if bad:
            failures.append(case)
        if o.dtype != Y[2].dtype or o.shape != Y[2].shape or tuple(s.shape) != (b, hv, dk, dv):
            failures.append(f"{case}: layout o {tuple(o.shape)} {o.dtype}, final {tuple(s.shape)}")
    # output_final_state=False gives None, as fla does.
    if gated_delta_rule(*(x.to(device) for x in (q, k, v, g, beta)), 0.5)[1] is not None:
        failures.append("output_final_state=False must give None")
    return failures


if __name__ == "__main__":
    lib = sys.argv[1] if len(sys.argv) > 1 else "build/src/libssmlab_ops.so"
    dev = sys.argv[2] if len(sys.argv) > 2 else "cpu"
    torch.ops.load_library(lib)
    fails = _self_check(dev)
    if fails:
        print("peers_adapters: FAILED:\n  " + "\n  ".join(fails))
        sys.exit(1)
    print("peers_adapters: gated_delta_rule agrees with the float64 loop")
