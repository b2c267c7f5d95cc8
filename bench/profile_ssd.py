"""One forward and one backward of the Mamba-2 SSD scan at the GPU table's first shape, for a profiler:

    PROFILE_SCRIPT=bench/profile_ssd.py KERNELS=regex:chunk_ scripts/gpu-profile.sh [B L H P N dtype]
"""
import sys

import torch

torch.ops.load_library(sys.argv[1])
b, l, h, p, n = (int(x) for x in (sys.argv[2:7] if len(sys.argv) > 6 else (8, 2048, 24, 64, 128)))
dtype = getattr(torch, sys.argv[7]) if len(sys.argv) > 7 else torch.bfloat16
dev = "cuda"
x = torch.randn(b, l, h, p, device=dev, dtype=dtype, requires_grad=True)
dt = (torch.randn(b, l, h, device=dev) * 0.5 - 2.0).to(dtype).requires_grad_()
A = -(torch.rand(h, device=dev) * 15 + 1)
B, C = ((torch.randn(b, l, 1, n, device=dev) / n ** 0.5).to(dtype).requires_grad_() for _ in range(2))
D, bias = torch.ones(h, device=dev), torch.randn(h, device=dev) * 0.3
y = torch.ops.ssmlab.ssd_scan(x, dt, A, B, C, D, bias, True, 0.0, None, None, 64)[0]
y.backward(torch.randn_like(y))
torch.cuda.synchronize()
