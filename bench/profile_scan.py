"""One forward and one backward of the selective scan at a GPU-table shape, for a profiler:

    ncu --section SpeedOfLight ... python3 bench/profile_scan.py LIB [B L E N dtype z]
"""
import sys

import torch

torch.ops.load_library(sys.argv[1])
b, l, e, n = (int(x) for x in (sys.argv[2:6] if len(sys.argv) > 5 else (8, 2048, 1536, 16)))
dtype = getattr(torch, sys.argv[6]) if len(sys.argv) > 6 else torch.bfloat16
with_z = (sys.argv[7] == "1") if len(sys.argv) > 7 else True
dev = "cuda"
u, dt = (torch.randn(b, l, e, device=dev, dtype=dtype, requires_grad=True) for _ in range(2))
z = torch.randn(b, l, e, device=dev, dtype=dtype, requires_grad=True) if with_z else None
A = (-torch.rand(e, n, device=dev) - 0.1).requires_grad_()
B, C = (torch.randn(b, l, n, device=dev, dtype=dtype, requires_grad=True) for _ in range(2))
D, bias = torch.randn(e, device=dev), torch.randn(e, device=dev)
y, _ = torch.ops.ssmlab.selective_scan(u, dt, A, B, C, D, z, bias, True, None)
y.backward(torch.randn_like(y))
torch.cuda.synchronize()
