"""GPU table for the selective scan (issue 3): median time with CUDA events after warm-up, achieved GB/s
from the minimal bytes (inputs read once, outputs written once) and the ratio to the reference op.

    python3 bench/gpu_selective_scan.py [build/src/libssmlab_ops.so]
"""
import sys

import torch

torch.ops.load_library(sys.argv[1] if len(sys.argv) > 1 else "build/src/libssmlab_ops.so")
ops = torch.ops.ssmlab


def median_ms(fn, reps=30, warmup=5):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        torch.cuda.synchronize()
        times.append(a.elapsed_time(b))
    times.sort()
    return times[len(times) // 2]


def case(b, l, e, n, dtype, with_z, ref=True):
    dev = "cuda"
    u, dt = (torch.randn(b, l, e, device=dev, dtype=dtype) for _ in range(2))
    z = torch.randn(b, l, e, device=dev, dtype=dtype) if with_z else None
    A = -torch.rand(e, n, device=dev) - 0.1
    B, C = (torch.randn(b, l, n, device=dev, dtype=dtype) for _ in range(2))
    D, bias = torch.randn(e, device=dev), torch.randn(e, device=dev)
    args = (u, dt, A, B, C, D, z, bias, True, None)
    fwd = median_ms(lambda: ops.selective_scan(*args))
    leaves = [t.requires_grad_() for t in (u, dt, B, C) + ((z,) if with_z else ())]
    y, _ = ops.selective_scan(*args)
    g = torch.randn_like(y)

    def fb():
        y, _ = ops.selective_scan(*args)
        torch.autograd.grad(y, leaves, g)

    fwdbwd = median_ms(fb, reps=10)
    es = torch.tensor([], dtype=dtype).element_size()
    nbytes = es * b * l * e * (3 + (1 if with_z else 0)) + es * 2 * b * l * n
    ref_ms = float("nan")
    if ref:
        ref_ms = median_ms(lambda: ops.selective_scan_ref(*args), reps=3, warmup=1)
    print(f"B={b:4d} L={l:5d} E={e:5d} N={n:3d} {str(dtype)[6:]:9s} z={int(with_z)}  fwd {fwd:8.3f} ms "
          f"({nbytes / fwd / 1e6:7.1f} GB/s)  fwd+bwd {fwdbwd:8.3f} ms (bwd {fwdbwd - fwd:7.3f})  reference fwd {ref_ms:9.2f} ms "
          f"(x{ref_ms / fwd:6.1f})", flush=True)


print(torch.cuda.get_device_name())
for shape in [(8, 2048, 1536, 16), (8, 2048, 1536, 64), (2, 8192, 1536, 16), (256, 256, 256, 16)]:
    for dtype in (torch.float32, torch.bfloat16):
        for with_z in (False, True):
            case(*shape, dtype, with_z, ref=(dtype == torch.float32 and not with_z))
