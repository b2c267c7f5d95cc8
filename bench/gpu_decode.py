"""GPU decode-step timings (issues 3 and 4): the one-token ops selective_state_update at (B=8, E=3072, N=16),
causal_conv1d_update at (B=8, E=3072, W=4) and ssd_scan_update at (B=8, H=24, P=64, N=128); one decode step of a
whole Mamba-1 layer (d_model 1536, E = 3072, N = 16, R = 96, W = 4) and of a whole Mamba-2 layer (d_model 768,
H = 24, P = 64, N = 128, G = 1, W = 4), built from torch.ops.ssmlab ops and cuBLAS matmuls, timed eagerly (CUDA
events, includes launch gaps) and as a CUDA graph (GPU time only). Target: a layer's decode step <= 10 us.

    python3 bench/gpu_decode.py [build/src/libssmlab_ops.so]
"""
import torch

from gpulib import load_ops, median_ms

ops = load_ops()


def median_us(fn, reps=200, warmup=20):
    return median_ms(fn, reps=reps, warmup=warmup) * 1e3


def graph_us(fn, reps=200, inner=20):
    """GPU time of fn per call, captured `inner` times in one CUDA graph (no launch gaps)."""
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        for _ in range(inner):
            fn()
    return median_us(g.replay, reps=reps // 10 + 5, warmup=3) / inner


def state_update_case(b, e, n, dtype):
    dev = "cuda"
    state = torch.randn(b, e, n, device=dev)
    x, dt, z = (torch.randn(b, e, device=dev, dtype=dtype) for _ in range(3))
    A = -torch.rand(e, n, device=dev) - 0.1
    B, C = (torch.randn(b, n, device=dev, dtype=dtype) for _ in range(2))
    D, bias = torch.randn(e, device=dev), torch.randn(e, device=dev)
    fn = lambda: ops.selective_state_update(state, x, dt, A, B, C, D, z, bias, True)  # noqa: E731
    eager, graph = median_us(fn), graph_us(fn)
    nbytes = 2 * 4 * b * e * n + x.element_size() * 4 * b * e + 4 * e * n
    ref = median_us(lambda: ops.selective_state_update_ref(state, x, dt, A, B, C, D, z, bias, True), reps=50)
    print(f"selective_state_update B={b} E={e} N={n} {str(dtype)[6:]:9s} eager {eager:7.2f} us  graph {graph:6.2f} us "
          f"({nbytes / graph / 1e6:6.2f} TB/s)  reference eager {ref:8.1f} us", flush=True)


def conv_update_case(b, e, w, dtype):
    dev = "cuda"
    state = torch.randn(b, w - 1, e, device=dev, dtype=dtype)
    x = torch.randn(b, e, device=dev, dtype=dtype)
    weight, bias = torch.randn(e, w, device=dev, dtype=dtype), torch.randn(e, device=dev, dtype=dtype)
    fn = lambda: ops.causal_conv1d_update(x, state, weight, bias, True)  # noqa: E731
    eager, graph = median_us(fn), graph_us(fn)
    ref = median_us(lambda: ops.causal_conv1d_update_ref(x, state, weight, bias, True), reps=50)
    print(f"causal_conv1d_update   B={b} E={e} W={w}  {str(dtype)[6:]:9s} eager {eager:7.2f} us  graph {graph:6.2f} us"
          f"  reference eager {ref:8.1f} us", flush=True)


def layer_case(b, d_model, dtype, n=16, w=4):
    """One Mamba-1 decode step as mixers/mamba1.cpp step() computes it."""
    dev = "cuda"
    e, r = 2 * d_model, (d_model + 15) // 16
    mk = lambda *s: torch.randn(*s, device=dev, dtype=dtype) * 0.02  # noqa: E731
    in_w, x_w, dt_w, out_w = mk(2 * e, d_model), mk(r + 2 * n, e), mk(e, r), mk(d_model, e)
    conv_w, conv_b = mk(e, w), mk(e)
    A = -torch.rand(e, n, device=dev) - 0.1
    D, dt_bias = torch.ones(e, device=dev), torch.randn(e, device=dev)
    conv_state = torch.zeros(b, w - 1, e, device=dev, dtype=dtype)
    ssm_state = torch.zeros(b, e, n, device=dev)
    x_t = mk(b, d_model)

    def step():
        xz = x_t @ in_w.t()
        xc = ops.causal_conv1d_update(xz[:, :e], conv_state, conv_w, conv_b, True)
        x_dbl = xc @ x_w.t()
        dt = x_dbl[:, :r] @ dt_w.t()
        y = ops.selective_state_update(ssm_state, xc, dt, A, x_dbl[:, r:r + n], x_dbl[:, r + n:], D, xz[:, e:],
                                       dt_bias, True)
        return y @ out_w.t()

    eager, graph = median_us(step), graph_us(step)
    print(f"Mamba-1 layer decode step B={b} d_model={d_model} E={e} N={n} {str(dtype)[6:]:9s} eager {eager:7.2f} us "
          f" graph {graph:6.2f} us  (target <= 10 us)", flush=True)


def ssd_update_case(b, h, p, n, dtype):
    dev = "cuda"
    x = torch.randn(b, h, p, device=dev, dtype=dtype)
    dt = torch.randn(b, h, device=dev, dtype=dtype)
    A = -torch.rand(h, device=dev) - 1
    B, C = (torch.randn(b, 1, n, device=dev, dtype=dtype) for _ in range(2))
    D, bias = torch.ones(h, device=dev), torch.zeros(h, device=dev)
    S = torch.zeros(b, h, p, n, device=dev)
    fn = lambda: ops.ssd_scan_update(x, dt, A, B, C, S, D, bias, True)  # noqa: E731
    eager, graph = median_us(fn), graph_us(fn)
    nbytes = 2 * 4 * b * h * p * n
    print(f"ssd_scan_update        B={b} H={h} P={p} N={n} {str(dtype)[6:]:9s} eager {eager:7.2f} us  graph {graph:6.2f} us"
          f" ({nbytes / graph / 1e6:6.2f} TB/s of state)", flush=True)


def mamba2_layer_case(b, d_model, dtype, h=24, p=64, n=128, g=1, w=4):
    """One Mamba-2 decode step as mixers/mamba2.cpp step() computes it: in_proj -> (z, xBC, dt), conv update
    over xBC, ssd_scan_update, gated RMSNorm (norm(y * silu(z))), out_proj."""
    dev = "cuda"
    di = h * p
    cc = di + 2 * g * n
    mk = lambda *s: torch.randn(*s, device=dev, dtype=dtype) * 0.02  # noqa: E731
    in_w, out_w = mk(2 * di + 2 * g * n + h, d_model), mk(d_model, di)
    conv_w, conv_b, norm_w = mk(cc, w), mk(cc), torch.ones(di, device=dev, dtype=dtype)
    A = -torch.rand(h, device=dev) - 1
    D, dt_bias = torch.ones(h, device=dev), torch.randn(h, device=dev)
    conv_state = torch.zeros(b, w - 1, cc, device=dev, dtype=dtype)
    ssm_state = torch.zeros(b, h, p, n, device=dev)
    x_t = mk(b, d_model)

    def step():
        zxbcdt = x_t @ in_w.t()
        z, xbc, dt = zxbcdt[:, :di], zxbcdt[:, di:di + cc], zxbcdt[:, di + cc:]
        xbc = ops.causal_conv1d_update(xbc, conv_state, conv_w, conv_b, True)
        x, B, C = xbc[:, :di].view(b, h, p), xbc[:, di:di + g * n].view(b, g, n), xbc[:, di + g * n:].view(b, g, n)
        y = ops.ssd_scan_update(x, dt, A, B, C, ssm_state, D, dt_bias, True).reshape(b, di)
        y = y * torch.nn.functional.silu(z)
        y = y * torch.rsqrt(y.float().pow(2).mean(-1, keepdim=True) + 1e-5).to(dtype) * norm_w
        return y @ out_w.t()

    eager, graph = median_us(step), graph_us(step)
    print(f"Mamba-2 layer decode step B={b} d_model={d_model} H={h} P={p} N={n} {str(dtype)[6:]:9s} eager {eager:7.2f} us "
          f" graph {graph:6.2f} us  (target <= 10 us)", flush=True)


print(torch.cuda.get_device_name())
with torch.no_grad():
    for dtype in (torch.float32, torch.bfloat16):
        state_update_case(8, 3072, 16, dtype)
        conv_update_case(8, 3072, 4, dtype)
        layer_case(8, 1536, dtype)
        ssd_update_case(8, 24, 64, 128, dtype)
        mamba2_layer_case(8, 768, dtype)
