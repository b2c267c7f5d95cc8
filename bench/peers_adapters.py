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


def _mamba3_siso(Q, K, V, ADT, DT, Trap, Q_bias, K_bias, Angles, D=None, Z=None, chunk_size=64):
    """mamba_ssm's mamba3_siso_combined: Q, K (B, T, G, N) RMS-normalised C and B before their per-head biases
    Q_bias, K_bias (H, N); V, Z (B, T, H, P); ADT = A dt, DT (B, H, T) fp32; Trap (B, H, T) pre-sigmoid logit;
    Angles (B, T, H, S) fp32 raw rates; D (H). Returns out (B, T, H, P) in V's dtype: y * silu(Z) (y without Z).
    Maps to ssmlab's mamba3_scan (ops/mamba3, SISO: R = 1, adjacent pairs): groups expanded to heads and the biases
    added here (q, k in fp32), the (B, H, T) inputs transposed to (B, T, H), theta = pi tanh(Angles); the phase
    sum with DT (mod 2 pi), the rotation, the trapezoid and D are the op's."""
    h = V.shape[2]
    rep = h // Q.shape[2]

    def wide(t):  # at least fp32 (fp64 stays fp64)
        return t.to(torch.promote_types(t.dtype, torch.float32))

    def heads(t, bias):  # (B, T, G, N) -> (B, T, 1, H, N), + bias (H, N)
        t = t.repeat_interleave(rep, dim=2) if rep > 1 else t
        return (wide(t) + wide(bias)).unsqueeze(2)

    def bth(t):  # (B, H, T) -> (B, T, H)
        return wide(t).transpose(1, 2)

    theta = torch.pi * torch.tanh(wide(Angles))
    y = torch.ops.ssmlab.mamba3_scan(heads(Q, Q_bias), heads(K, K_bias), V.unsqueeze(2), bth(ADT), bth(DT),
                                     bth(Trap), theta, D, None, None, None, None, "adjacent", chunk_size)[0]
    y = y.squeeze(2)
    if Z is not None:
        y = y * torch.nn.functional.silu(Z.to(y.dtype))
    return y.to(V.dtype)


def _has_op(name):
    try:
        getattr(torch.ops.ssmlab, name)
        return True
    except (AttributeError, RuntimeError):
        return False


def __getattr__(name):
    """mamba3_siso exists only where the loaded ops library has ssmlab::mamba3_scan (the kit then times mamba_ssm
    alone and says so)."""
    if name == "mamba3_siso" and _has_op("mamba3_scan"):
        return _mamba3_siso
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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


def _m3_loop64(Q, K, V, ADT, DT, Trap, Q_bias, K_bias, Angles, D, Z):
    """Spec A.3 step by step in float64, in mamba_ssm's layout (adjacent pairs, phase mod 2 pi)."""
    b, t, g, n = Q.shape
    h, p, s = V.shape[2], V.shape[3], Angles.shape[3]
    q = Q.repeat_interleave(h // g, 2) + Q_bias
    k = K.repeat_interleave(h // g, 2) + K_bias
    theta = torch.pi * torch.tanh(Angles)
    phi = torch.zeros(b, h, s, dtype=torch.float64)
    st = torch.zeros(b, h, p, n, dtype=torch.float64)
    kp, xp = torch.zeros(b, h, n, dtype=torch.float64), torch.zeros(b, h, p, dtype=torch.float64)

    def rot(v):
        ve, vo = v[..., 0:2 * s:2], v[..., 1:2 * s:2]
        c, sn = torch.cos(phi), torch.sin(phi)
        pairs = torch.stack([ve * c - vo * sn, ve * sn + vo * c], -1).reshape(*v.shape[:-1], 2 * s)
        return torch.cat([pairs, v[..., 2 * s:]], -1)
    ys = []
    for i in range(t):
        dt_ = DT[:, :, i]
        phi = torch.remainder(phi + dt_[..., None] * theta[:, i], 2 * torch.pi)
        qt, kt, xt = rot(q[:, i]), rot(k[:, i]), V[:, i]
        alpha = torch.exp(ADT[:, :, i])
        lam = torch.sigmoid(Trap[:, :, i])
        beta, gamma = (1 - lam) * dt_ * alpha, lam * dt_
        st = (alpha[..., None, None] * st + beta[..., None, None] * xp[..., :, None] * kp[..., None, :]
              + gamma[..., None, None] * xt[..., :, None] * kt[..., None, :])
        ys.append(torch.einsum("bhpn,bhn->bhp", st, qt) + D[:, None] * xt)
        kp, xp = kt, xt
    return torch.stack(ys, 1) * torch.nn.functional.silu(Z)


def _self_check_m3(device):
    """mamba3_siso (fp64 and fp32) against _m3_loop64: out and the gradients of all 11 inputs."""
    gen = torch.Generator().manual_seed(1)
    failures = []
    b, t, g, h, n, p, s = 2, 45, 2, 4, 16, 8, 4

    def r(*shape):
        return torch.randn(*shape, generator=gen, dtype=torch.float64)
    rms = torch.nn.functional.rms_norm
    DT = torch.exp(torch.rand(b, h, t, generator=gen, dtype=torch.float64) * 4 - 6)
    X = [rms(r(b, t, g, n), (n,)), rms(r(b, t, g, n), (n,)), r(b, t, h, p),
         -torch.rand(b, h, t, generator=gen, dtype=torch.float64) * 15 * DT - 1e-4 * DT, DT, r(b, h, t),
         1 + 0.1 * r(h, n), 1 + 0.1 * r(h, n), r(b, t, h, s), 1 + 0.1 * r(h), r(b, t, h, p)]
    go = r(b, t, h, p)
    T = [x.clone().requires_grad_() for x in X]
    o_t = _m3_loop64(*T)
    G_t = torch.autograd.grad((o_t * go).sum(), T)
    for dtype, tol in [(torch.float64, 1e-9), (torch.float32, 1e-3)]:
        keep64 = {3, 4, 6, 7, 8, 9}  # ADT, DT, biases, Angles, D stay fp32 / fp64 as mamba_ssm has them
        Y = [x.to(device=device, dtype=(dtype if i not in keep64 or dtype == torch.float64 else torch.float32))
             .requires_grad_() for i, x in enumerate(X)]
        o = _mamba3_siso(*Y[:9], D=Y[9], Z=Y[10])
        G = torch.autograd.grad((o.double() * go.to(device)).sum(), Y)

        def err(a, b_):
            a, b_ = a.detach().double().cpu(), b_.detach().double().cpu()
            return ((a - b_).norm() / b_.norm().clamp_min(1e-30)).item()
        errs = [err(o, o_t)] + [err(a, c) for a, c in zip(G, G_t)]
        case = f"mamba3_siso B{b} T{t} G{g} H{h} N{n} P{p} S{s} {str(dtype).split('.')[-1]} on {device}"
        print(f"{case}: max rel err {max(errs):.2e} (tol {tol:.0e})")
        if not max(errs) <= tol:
            failures.append(f"{case}: errors {['%.1e' % e for e in errs]}")
    return failures


if __name__ == "__main__":
    lib = sys.argv[1] if len(sys.argv) > 1 else "build/src/libssmlab_ops.so"
    dev = sys.argv[2] if len(sys.argv) > 2 else "cpu"
    torch.ops.load_library(lib)
    fails = _self_check(dev)
    if _has_op("mamba3_scan"):
        fails += _self_check_m3(dev)
    else:
        print("peers_adapters: this ops library has no ssmlab::mamba3_scan: mamba3_siso not checked")
    if fails:
        print("peers_adapters: FAILED:\n  " + "\n  ".join(fails))
        sys.exit(1)
    print("peers_adapters: the adapters agree with their float64 loops")
