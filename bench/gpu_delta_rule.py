"""GPU table for the gated delta rule (issue 23) at the peers kit's shape (fla's chunk_gated_delta_rule, B8 T2048
H16 K128 V128 bf16, per-head gate): GPU time (CUDA events) of forward and forward+backward through
torch.ops.ssmlab.delta_rule, for the CUDA kernels ("auto") and the chunked ATen algorithm (SSMLAB_DELTA_CUDA=chunked),
side by side in one run, the error of each against a float64 loop on a short slice, and the top kernels of the
"auto" forward+backward (torch.profiler).

    python3 bench/gpu_delta_rule.py [build/src/libssmlab_ops.so]
"""
import faulthandler

faulthandler.enable()  # a crash in the extension prints the Python stack (2026-12-07: the timing rows vanished)

import math
import os

import torch

from gpulib import load_ops
from gpulib import median_ms as gpu_ms

ops = load_ops()
# SSMLAB_DELTA_CUDA values to time, in order ("kernels" = unset); DR_MODES="kernels simple" skips the ATen form.
MODES = os.environ.get("DR_MODES", "kernels simple chunked").split()
dev = "cuda"


def inputs(b, t, h, k, v, dtype, gen_seed=0):
    torch.manual_seed(gen_seed)
    nrm = torch.nn.functional.normalize
    q = (nrm(torch.randn(b, t, h, k, device=dev), dim=-1) * k ** -0.5).to(dtype)
    kk = nrm(torch.randn(b, t, h, k, device=dev), dim=-1).to(dtype)
    vv = torch.randn(b, t, h, v, device=dev).to(dtype)
    dtv = torch.exp(torch.rand(b, t, h, device=dev) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3))
    g = -torch.empty(b, t, h, device=dev).uniform_(1.0, 16.0) * dtv
    beta = torch.rand(b, t, h, device=dev).to(dtype)
    return q, kk, vv, beta, g


def loop64(q, k, v, beta, g):
    q, k, v, beta, g = (x.double() for x in (q, k, v, beta, g))
    b, t, h, dk = k.shape
    S = torch.zeros(b, h, dk, v.shape[-1], dtype=torch.float64, device=q.device)
    outs = []
    for i in range(t):
        S = S * g[:, i].exp()[..., None, None]
        u = beta[:, i, :, None] * (v[:, i] - torch.einsum("bhkv,bhk->bhv", S, k[:, i]))
        S = S + k[:, i, ..., None] * u[..., None, :]
        outs.append(torch.einsum("bhkv,bhk->bhv", S, q[:, i]))
    return torch.stack(outs, 1)


def rel(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


def row(name, b, t, h, k, v, dtype):
    X = inputs(b, t, h, k, v, dtype)
    small = [x[:1, :256].contiguous() for x in X]
    truth = loop64(*small)
    go = torch.randn(b, t, h, v, device=dev, dtype=dtype)
    for mode in MODES:
        if mode == "kernels":
            os.environ.pop("SSMLAB_DELTA_CUDA", None)
        else:
            os.environ["SSMLAB_DELTA_CUDA"] = mode
        err = rel(ops.delta_rule(*small[:4], small[4], None, 64)[0], truth)
        with torch.no_grad():
            f_ms = gpu_ms(lambda: ops.delta_rule(*X[:4], X[4], None, 64), reps=10, warmup=2)
        L = [x.detach().clone().requires_grad_() for x in X]
        fb_ms = gpu_ms(lambda: torch.autograd.grad(ops.delta_rule(*L[:4], L[4], None, 64)[0], L, go), reps=5,
                       warmup=1)
        # One line per mode, printed at once: a crash in a later mode keeps the rows already measured.
        print(f"| {name} B{b} T{t} H{h} K{k} V{v} {str(dtype).split('.')[-1]} | {mode} | {f_ms:.3f} | {fb_ms:.3f} | "
              f"{err:.1e} |", flush=True)
    os.environ.pop("SSMLAB_DELTA_CUDA", None)
    return X, go


def loop64_full(q, k, v, beta, g, h0):
    """Any gate (None, (B, T, HV), (B, T, HV, K)), grouped value heads, initial state; returns (o, final)."""
    rep = v.shape[2] // q.shape[2]
    q, k = (t.repeat_interleave(rep, 2) for t in (q, k))
    S = h0
    outs = []
    for i in range(q.shape[1]):
        if g is not None:
            a = g[:, i].exp()
            S = S * (a[..., None, None] if a.dim() == 2 else a[..., None])
        u = beta[:, i, :, None] * (v[:, i] - torch.einsum("bhkv,bhk->bhv", S, k[:, i]))
        S = S + k[:, i, ..., None] * u[..., None, :]
        outs.append(torch.einsum("bhkv,bhk->bhv", S, q[:, i]))
    return torch.stack(outs, 1), S


def agreement():
    """The kernels ("auto") against the float64 loop: o, final state and every gradient, odd sizes, each gate
    kind, fp64 / fp32 / bf16; prints the worst relative error per case and returns False on a failure."""
    ok = True
    nrm = torch.nn.functional.normalize
    tol = {torch.float64: 1e-10, torch.float32: 1e-4, torch.bfloat16: 2e-2}
    for (b, t, h, hv, k, v, gate) in [(2, 45, 2, 4, 17, 37, 0), (2, 45, 2, 4, 17, 37, 1), (1, 70, 1, 2, 9, 5, 2),
                                      (2, 130, 2, 2, 128, 70, 1), (1, 64, 1, 1, 256, 32, 1)]:
        for dt in (torch.float64, torch.float32, torch.bfloat16):
            if k > 128 and dt == torch.float64:
                continue
            torch.manual_seed(1)
            X = [nrm(torch.randn(b, t, h, k, dtype=torch.float64, device=dev), dim=-1) * k ** -0.5,
                 nrm(torch.randn(b, t, h, k, dtype=torch.float64, device=dev), dim=-1),
                 torch.randn(b, t, hv, v, dtype=torch.float64, device=dev),
                 torch.sigmoid(torch.randn(b, t, hv, dtype=torch.float64, device=dev)) * 2]
            gshape = {1: (b, t, hv), 2: (b, t, hv, k)}.get(gate)
            gg = None
            if gshape:
                gg = torch.nn.functional.logsigmoid(torch.randn(*gshape, dtype=torch.float64, device=dev) + 1)
            h0 = torch.randn(b, hv, k, v, dtype=torch.float64, device=dev) * 0.5
            wide = torch.float32 if dt == torch.bfloat16 else dt
            Y = [x.to(dt) for x in X] + ([gg.to(wide)] if gate else []) + [h0.to(wide)]
            T = [y.double().requires_grad_() for y in Y]
            Y = [y.requires_grad_() for y in Y]
            go = torch.randn(b, t, hv, v, dtype=torch.float64, device=dev)
            gs = torch.randn(b, hv, k, v, dtype=torch.float64, device=dev)
            o_t, s_t = loop64_full(*T[:4], T[4] if gate else None, T[-1])
            G_t = torch.autograd.grad((o_t * go).sum() + (s_t * gs).sum(), T)
            o, s = ops.delta_rule(*Y[:4], Y[4] if gate else None, Y[-1], 64)
            G = torch.autograd.grad((o.double() * go).sum() + (s.double() * gs).sum(), Y)
            errs = [rel(o, o_t), rel(s, s_t)] + [rel(a, c) for a, c in zip(G, G_t)]
            fin = all(torch.isfinite(x).all().item() for x in [o, s, *G])
            good = fin and max(errs) <= tol[dt]
            ok = ok and good
            print(f"agreement B{b} T{t} H{h} HV{hv} K{k} V{v} gate {gate} {str(dt).split('.')[-1]}: worst rel err "
                  f"{max(errs):.1e} (o {errs[0]:.1e}, final {errs[1]:.1e}) {'ok' if good else 'FAIL'}", flush=True)
    return ok


print("delta_rule on", torch.cuda.get_device_name(), "torch", torch.__version__)
AGREE = agreement()
os.environ["SSMLAB_DELTA_CUDA"] = "simple"
print("the same with SSMLAB_DELTA_CUDA=simple (scalar row loads):")
AGREE = agreement() and AGREE
os.environ.pop("SSMLAB_DELTA_CUDA", None)
print("| case | mode | fwd ms | fwd+bwd ms | err vs fp64 (B0, T256) |")
print("| --- | --- | --- | --- | --- |")
X, go = row("gdn", 8, 2048, 16, 128, 128, torch.bfloat16)
row("gdn", 8, 2048, 16, 128, 128, torch.float32)
row("gdn", 2, 4096, 8, 64, 64, torch.bfloat16)
try:
    from torch.profiler import ProfilerActivity, profile
    L = [x.detach().clone().requires_grad_() for x in X]
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(3):
            torch.autograd.grad(ops.delta_rule(*L[:4], L[4], None, 64)[0], L, go)
        torch.cuda.synchronize()
    print("top CUDA kernels of 3 x fwd+bwd (kernels), bf16 gdn:")
    print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=14, max_name_column_width=60))
except Exception as exc:  # profiler unavailable
    print(f"profile skipped: {type(exc).__name__}: {exc}")
if not AGREE:
    raise SystemExit("gpu_delta_rule: the CUDA kernels disagree with the float64 loop (lines marked FAIL)")
