"""GPU table for causal_conv1d (issue 3): forward and backward of the CUDA kernels at long and short shapes,
median time with CUDA events after warm-up, achieved bandwidth from the minimal bytes (forward: x read, out
written; backward: x and dout read, dx written; weights and states are O(E) and left out), next to a
device-to-device copy measured in the same run, and the ratio to the reference op.

    python3 bench/gpu_causal_conv1d.py [build/src/libssmlab_ops.so]
"""
import functools

import torch

from gpulib import copy_gbs, load_ops
from gpulib import median_ms as _median_ms

ops = load_ops()
median_ms = functools.partial(_median_ms, reps=50, warmup=10)


def case(b, l, e, w, dtype, copy, ref=True):
    dev = "cuda"
    x = torch.randn(b, l, e, device=dev, dtype=dtype)
    weight = torch.randn(e, w, device=dev, dtype=dtype)
    bias = torch.randn(e, device=dev, dtype=dtype)
    fwd = median_ms(lambda: ops.causal_conv1d(x, weight, bias, True, None))
    xg = x.clone().requires_grad_()
    wg, bg = weight.clone().requires_grad_(), bias.clone().requires_grad_()
    out, _ = ops.causal_conv1d(xg, wg, bg, True, None)
    g = torch.randn_like(out)
    # Backward alone: the graph is kept and re-run.
    bwd = median_ms(lambda: torch.autograd.grad(out, (xg, wg, bg), g, retain_graph=True))
    es = x.element_size()
    fwd_tbs = 2 * es * b * l * e / fwd / 1e9
    bwd_tbs = 3 * es * b * l * e / bwd / 1e9
    ref_ms = float("nan")
    if ref:
        ref_ms = median_ms(lambda: ops.causal_conv1d_ref(x, weight, bias, True, None), reps=10, warmup=2)
    print(f"B={b:4d} L={l:5d} E={e:5d} W={w} {str(dtype)[6:]:9s} fwd {fwd * 1e3:8.1f} us {fwd_tbs:5.2f} TB/s "
          f"({fwd_tbs / copy:4.2f} of copy)  bwd {bwd * 1e3:8.1f} us {bwd_tbs:5.2f} TB/s ({bwd_tbs / copy:4.2f} of copy)"
          f"  reference fwd {ref_ms * 1e3:9.1f} us (x{ref_ms / fwd:5.1f})", flush=True)


print(torch.cuda.get_device_name())
copy = copy_gbs() / 1e3  # TB/s
print(f"device-to-device copy: {copy:.2f} TB/s (targets: conv fwd >= 2.2 TB/s, bwd >= 1.8 TB/s)")
for shape in [(8, 2048, 1536, 4), (2, 8192, 1536, 4), (256, 256, 256, 4), (64, 256, 1536, 4), (8, 2048, 1536, 2)]:
    for dtype in (torch.float32, torch.bfloat16):
        case(*shape, dtype, copy)
