"""GPU table for the selective scan (issue 3): median time with CUDA events after warm-up, achieved GB/s
from the minimal bytes (inputs read once, outputs written once) as a fraction of a device copy measured in
the same run, the backward time (fwd+bwd minus fwd), and the ratios to the reference op and to HF
transformers' pure-PyTorch Mamba scan (mamba_selective_scan's torch path) where transformers is installed.

    python3 bench/gpu_selective_scan.py [build/src/libssmlab_ops.so]
"""
import torch

from gpulib import copy_gbs, load_ops, median_ms

ops = load_ops()


def hf_scan_ms(u, dt, A, B, C, D, z, bias):
    """HF transformers' pure-PyTorch Mamba scan (transformers.models.mamba.modeling_mamba.mamba_selective_scan,
    the torch path under its kernel-hub decorator: it materialises exp(dt A) as (B, E, L, N) and loops over L
    in Python), forward only, same inputs; None where transformers is not installed."""
    try:
        from transformers.models.mamba import modeling_mamba as hm
    except Exception as exc:  # not installed
        return None, f"transformers not importable ({type(exc).__name__})"
    fn = getattr(hm.mamba_selective_scan, "__wrapped__", hm.mamba_selective_scan)
    args = (u.detach().transpose(1, 2), dt.detach().transpose(1, 2), A, B.detach().transpose(1, 2),
            C.detach().transpose(1, 2))
    zt = z.detach().transpose(1, 2) if z is not None else None
    with torch.no_grad():
        return median_ms(lambda: fn(*args, D=D, z=zt, delta_bias=bias, delta_softplus=True), reps=3, warmup=1), ""


def case(b, l, e, n, dtype, with_z, roof_gbs, ref=True, hf=False):
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
    # minimal bytes of the forward: u, delta (, z) read and y written once, B and C read once
    nbytes = es * b * l * e * (3 + (1 if with_z else 0)) + es * 2 * b * l * n
    gbs = nbytes / fwd / 1e6
    ref_ms = median_ms(lambda: ops.selective_scan_ref(*args), reps=3, warmup=1) if ref else float("nan")
    hf_txt = ""
    if hf:
        hf_ms, why = hf_scan_ms(u, dt, A, B, C, D, z, bias)
        hf_txt = f"  HF torch scan {hf_ms:8.2f} ms (x{hf_ms / fwd:6.1f})" if hf_ms else f"  HF: {why}"
    print(f"B={b:4d} L={l:5d} E={e:5d} N={n:3d} {str(dtype)[6:]:9s} z={int(with_z)}  fwd {fwd:7.3f} ms "
          f"{gbs:7.1f} GB/s ({100 * gbs / roof_gbs:4.1f}% of copy)  bwd {fwdbwd - fwd:7.3f} ms  "
          f"reference fwd {ref_ms:8.2f} ms (x{ref_ms / fwd:6.1f}){hf_txt}", flush=True)


print(torch.cuda.get_device_name())
roof = copy_gbs()
print(f"device-to-device copy: {roof:.0f} GB/s (read + write)")
for shape in [(8, 2048, 1536, 16), (8, 2048, 1536, 64), (2, 8192, 1536, 16), (256, 256, 256, 16)]:
    for dtype in (torch.float32, torch.bfloat16):
        for with_z in (False, True):
            case(*shape, dtype, with_z, roof, ref=(dtype == torch.float32 and not with_z),
                 hf=with_z)
