"""Calls ssmlab's ops from Python through torch.ops, checks them against a float64 loop, and runs
torch.autograd.gradcheck on the selective scan.

    python3 python/example.py [build/src/libssmlab_ops.so] [cpu|cuda]
"""
import sys

import torch

lib = sys.argv[1] if len(sys.argv) > 1 else "build/src/libssmlab_ops.so"
device = sys.argv[2] if len(sys.argv) > 2 else ("cuda" if torch.cuda.is_available() else "cpu")
torch.ops.load_library(lib)


def naive_scan(u, delta, A, B, C, D, z, bias):
    """h_t = exp(d_t A) h_{t-1} + d_t u_t B_t;  y_t = C_t h_t + D u_t;  y *= silu(z)."""
    d = torch.nn.functional.softplus(delta + bias)
    b, l, e = u.shape
    h = torch.zeros(b, e, A.shape[1], dtype=u.dtype, device=u.device)
    ys = []
    for t in range(l):
        h = torch.exp(d[:, t, :, None] * A) * h + (d[:, t] * u[:, t])[:, :, None] * B[:, t, None, :]
        ys.append((h * C[:, t, None, :]).sum(-1) + D * u[:, t])
    return torch.stack(ys, 1) * torch.nn.functional.silu(z), h


torch.manual_seed(0)
b, l, e, n = 2, 33, 5, 4
kw = dict(dtype=torch.float64, device=device)
u, delta, z = (torch.randn(b, l, e, **kw) for _ in range(3))
A = -torch.rand(e, n, **kw) - 0.5
B, C = torch.randn(b, l, n, **kw), torch.randn(b, l, n, **kw)
D, bias = torch.randn(e, **kw), torch.randn(e, **kw)

y, h = torch.ops.ssmlab.selective_scan(u, delta, A, B, C, D, z, bias, True, None)
y_ref, h_ref = naive_scan(u, delta, A, B, C, D, z, bias)
print("max |y - y_ref| =", (y - y_ref).abs().max().item(), " max |h - h_ref| =", (h - h_ref).abs().max().item())
assert torch.allclose(y, y_ref, rtol=1e-10, atol=1e-10) and torch.allclose(h, h_ref, rtol=1e-10, atol=1e-10)

inputs = [t.clone().requires_grad_() for t in (u, delta, A, B, C, D, z, bias)]
ok = torch.autograd.gradcheck(
    lambda *x: torch.ops.ssmlab.selective_scan(*x, True, None)[0], inputs, eps=1e-6, atol=1e-6)
print("gradcheck:", ok)
