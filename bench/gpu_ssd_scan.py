"""GPU table for the Mamba-2 SSD scan (issue 4) at the issue's shapes: wall time per call (host clock around
the call, launches included, synchronised), GPU time (CUDA events), TFLOP/s of the chunked algorithm's
matmul work, GB/s from the minimal bytes, forward and forward+backward, the reference op on small shapes, and
the ratio to HF transformers' pure-PyTorch Mamba-2 scan (mamba2_chunk_scan's torch path) where installed.
One decode step of the scan (ssd_scan_update) at (B=8, H=24, P=64, N=128). Each line names the CUDA kernel
family (SSMLAB_SSD_CUDA): "chunked" (tensor cores, the default) or "sequential" (time-stepped), measured side
by side in one run.

    python3 bench/gpu_ssd_scan.py [build/src/libssmlab_ops.so]
"""
import os
import time

import torch

from gpulib import load_ops
from gpulib import median_ms as gpu_ms

ops = load_ops()


def wall_ms(fn, reps=30, warmup=5):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append((time.perf_counter() - t0) * 1e3)
    times.sort()
    return times[len(times) // 2]


def hf_ms(x, dt, A, B, C, D, bias):
    """HF transformers' pure-PyTorch Mamba-2 scan (transformers.models.mamba2.modeling_mamba2.mamba2_chunk_scan,
    the torch path under its kernel-hub decorator: chunked SSD in ATen ops), same inputs, forward, wall time."""
    try:
        from transformers.models.mamba2 import modeling_mamba2 as hm
    except Exception as exc:
        return None, f"transformers not importable ({type(exc).__name__})"
    fn = getattr(hm.mamba2_chunk_scan, "__wrapped__", hm.mamba2_chunk_scan)
    try:
        args = [t.detach() for t in (x, dt, A, B, C)]
        with torch.no_grad():
            return wall_ms(lambda: fn(*args, 256, D=D, dt_bias=bias, dt_softplus=True), reps=3, warmup=1), ""
    except Exception as exc:  # API drift across transformers versions, or out of memory
        return None, f"HF mamba2_chunk_scan failed ({type(exc).__name__}: {str(exc)[:80]})"


def flops(b, l, h, p, n, q):
    """Matmul FLOPs of the chunked algorithm: C Bᵀ (per group), (L∘CBᵀ) X, chunk states, C·S_prev."""
    return 2 * b * l * q * n + 2 * b * h * l * q * p + 2 * b * h * l * p * n * 2


def case(b, l, h, p, n, dtype, ref, alg="chunked", hf=True):
    os.environ["SSMLAB_SSD_CUDA"] = alg
    dev = "cuda"
    x = torch.randn(b, l, h, p, device=dev, dtype=dtype)
    dt = (torch.randn(b, l, h, device=dev) * 0.5 - 2.0).to(dtype)
    A = -(torch.rand(h, device=dev) * 15 + 1)
    B, C = ((torch.randn(b, l, 1, n, device=dev) / n ** 0.5).to(dtype) for _ in range(2))
    D, bias = torch.ones(h, device=dev), torch.randn(h, device=dev) * 0.3
    q = 64  # the CUDA kernels' chunk; the op's chunk_size argument only steers the ATen chunked path
    args = (x, dt, A, B, C, D, bias, True, 0.0, None, None, q)
    fwd_gpu = gpu_ms(lambda: ops.ssd_scan(*args))
    fwd_wall = wall_ms(lambda: ops.ssd_scan(*args))
    leaves = [t.requires_grad_() for t in (x, dt, B, C)]
    y = ops.ssd_scan(*args)[0]
    g = torch.randn_like(y)

    def fb():
        y = ops.ssd_scan(*args)[0]
        torch.autograd.grad(y, leaves, g)

    fb_gpu, fb_wall = gpu_ms(fb, reps=10), wall_ms(fb, reps=10)
    es = torch.tensor([], dtype=dtype).element_size()
    nbytes = es * (2 * b * l * h * p + 2 * b * l * n + b * l * h)
    tflops = flops(b, l, h, p, n, q) / fwd_gpu / 1e9
    line = (f"{alg:10s} B={b:3d} L={l:5d} H={h:2d} P={p} N={n} {str(dtype)[6:]:8s} fwd wall {fwd_wall:7.3f} ms gpu "
            f"{fwd_gpu:7.3f} ms {tflops:6.2f} TFLOP/s {nbytes / fwd_gpu / 1e6:7.1f} GB/s | fwd+bwd wall {fb_wall:7.3f} "
            f"ms gpu {fb_gpu:7.3f} ms")
    if ref:
        with torch.no_grad():
            ref_ms = wall_ms(lambda: ops.ssd_scan_ref(*args), reps=3, warmup=1)
        line += f" | reference fwd {ref_ms:8.2f} ms (x{ref_ms / fwd_wall:6.1f})"
    if os.environ.get("SSD_PROFILE") and b == 8:  # per-kernel GPU time of 3 forward+backward calls
        from torch.profiler import ProfilerActivity, profile
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(3):
                fb()
            torch.cuda.synchronize()
        print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=12), flush=True)
    if hf:
        hf, why = hf_ms(x, dt, A, B, C, D, bias)
        line += f" | HF torch scan {hf:8.2f} ms (x{hf / fwd_wall:6.1f})" if hf else f" | HF: {why}"
    print(line, flush=True)
    os.environ.pop("SSMLAB_SSD_CUDA")


def decode(b, h, p, n):
    dev = "cuda"
    x = torch.randn(b, h, p, device=dev)
    dt = torch.randn(b, h, device=dev)
    A = -torch.rand(h, device=dev) - 1
    B, C = (torch.randn(b, 1, n, device=dev) for _ in range(2))
    D, bias = torch.ones(h, device=dev), torch.zeros(h, device=dev)
    S = torch.zeros(b, h, p, n, device=dev)
    step = lambda: ops.ssd_scan_update(x, dt, A, B, C, S, D, bias, True)
    print(f"decode step B={b} H={h} P={p} N={n}: wall {wall_ms(step, reps=100) * 1e3:7.1f} us, gpu "
          f"{gpu_ms(step, reps=100) * 1e3:7.1f} us", flush=True)


print(torch.cuda.get_device_name())
for shape in [(8, 2048, 24, 64, 128), (2, 8192, 24, 64, 128), (256, 256, 8, 64, 128)]:
    for dtype in (torch.float32, torch.bfloat16):
        case(*shape, dtype, ref=False)
        if shape[0] == 8:
            case(*shape, dtype, ref=False, alg="sequential", hf=False)
case(1, 512, 8, 64, 128, torch.float32, ref=True)
decode(8, 24, 64, 128)
