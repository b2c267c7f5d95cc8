"""What the GPU tables (bench/gpu_*.py) share: loading the ops library, CUDA-event timing, and the
device-copy bandwidth that each table prints as its byte roofline. Not a table itself (gpu-check.sh runs
bench/gpu_*.py)."""
import sys

import torch


def load_ops(argv=None):
    """Loads libssmlab_ops.so (argv[1], else build/src/) and returns torch.ops.ssmlab."""
    argv = sys.argv if argv is None else argv
    torch.ops.load_library(argv[1] if len(argv) > 1 else "build/src/libssmlab_ops.so")
    return torch.ops.ssmlab


def median_ms(fn, reps=30, warmup=5):
    """Median of `reps` CUDA-event timings of fn() after `warmup` calls, in milliseconds."""
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


def copy_gbs():
    """Device-to-device copy of 1 GiB: bytes read + written per second, in GB/s."""
    src = torch.empty(1 << 30, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    ms = median_ms(lambda: dst.copy_(src), reps=10)
    return 2 * src.numel() / ms / 1e6
