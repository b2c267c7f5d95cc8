"""ssmlab's ops from Python: torch.library.opcheck of every ssmlab::<op> schema (the <op>_backward schemas
included), gradcheck of every differentiable op, and torch.compile(fullgraph=True) of a small module calling the
ops, forward and backward, against eager.

    .venv/bin/python tests/python/test_ops.py [build/src/libssmlab_ops.so] [--device cpu|cuda]

Registered with ctest as python.ops (CPU) and, where the build has CUDA kernels and torch sees a GPU,
python.ops_cuda (tests/python/tests.cmake). Exits 1 with a message when torch cannot be imported (scripts/setup.sh
makes .venv/bin/python import it), when an ssmlab schema has no sample here, or when any check fails.
SSMLAB_OPCHECK_ONLY=op1,op2 limits the opchecks to those ops (for debugging; ctest does not set it).
"""
import argparse
import importlib.util
import os
import sys
import time

parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
parser.add_argument("lib", nargs="?", default="build/src/libssmlab_ops.so", help="path to libssmlab_ops.so")
parser.add_argument("legacy_device", nargs="?", choices=("cpu", "cuda"), help=argparse.SUPPRESS)
parser.add_argument("--device", choices=("cpu", "cuda"), default=None, help="where the tensors live (default cpu)")
cli = parser.parse_args()
if cli.device and cli.legacy_device and cli.device != cli.legacy_device:
    parser.error(f"device given twice: {cli.legacy_device} and --device {cli.device}")
if not os.path.isfile(cli.lib):
    sys.exit(f"test_ops.py: {cli.lib} does not exist: build it with `cd build && ninja -j1 ssmlab_ops`")

try:
    import warnings

    warnings.filterwarnings("ignore", message="Failed to initialize NumPy")
    import torch
except Exception as e:  # noqa: BLE001 - any import failure means the same thing here
    sys.exit(f"test_ops.py: cannot import torch with {sys.executable} ({type(e).__name__}: {e}); "
             "run scripts/setup.sh, which makes .venv/bin/python import torch")

LIB = cli.lib
DEVICE = cli.device or cli.legacy_device or "cpu"
if DEVICE == "cuda" and not torch.cuda.is_available():
    sys.exit("test_ops.py: --device cuda asked for, but torch.cuda.is_available() is False")
torch.ops.load_library(LIB)

TEST_UTILS = ("test_schema", "test_autograd_registration", "test_faketensor", "test_aot_dispatch_static",
              "test_aot_dispatch_dynamic")
F64 = dict(dtype=torch.float64, device=DEVICE)
gen = torch.Generator().manual_seed(0)


def rnd(*shape, scale=1.0, shift=0.0, grad=True):
    t = (torch.randn(*shape, generator=gen, dtype=torch.float64) * scale + shift).to(DEVICE)
    return t.requires_grad_(grad)


def pos(*shape, lo=0.1, hi=1.0, grad=True):
    t = (torch.rand(*shape, generator=gen, dtype=torch.float64) * (hi - lo) + lo).to(DEVICE)
    return t.requires_grad_(grad)


# ---- samples: (args, kwargs) per schema, odd sizes, optional inputs present and absent -------------------------
def scan_samples(b=2, l=7, e=6, n=5, g=2):
    full = ((rnd(b, l, e), rnd(b, l, e, scale=0.5, shift=-1), -pos(e, n), rnd(b, l, g, n), rnd(b, l, g, n)),
            dict(D=rnd(e), z=rnd(b, l, e), delta_bias=rnd(e, scale=0.1), delta_softplus=True,
                 initial_state=rnd(b, e, n)))
    bare = ((rnd(1, 5, 3), pos(1, 5, 3, hi=0.3), -pos(3, 4), rnd(1, 5, 4), rnd(1, 5, 4)), {})
    return [full, bare]


def varlen_samples(e=5, n=3):
    cu = torch.tensor([0, 3, 3, 8], dtype=torch.long, device=DEVICE)
    t = 8
    full = ((rnd(1, t, e), rnd(1, t, e, scale=0.5, shift=-1), -pos(e, n), rnd(1, t, n), rnd(1, t, n), cu),
            dict(D=rnd(e), z=rnd(1, t, e), delta_bias=rnd(e, scale=0.1), delta_softplus=True,
                 initial_state=rnd(3, e, n)))
    bare = ((rnd(1, t, e), pos(1, t, e, hi=0.3), -pos(e, n), rnd(1, t, n), rnd(1, t, n), cu), {})
    return [full, bare]


def conv_samples(b=2, l=9, e=5, w=4):
    full = ((rnd(b, l, e), rnd(e, w)), dict(bias=rnd(e), silu=True, initial_state=rnd(b, w - 1, e)))
    bare = ((rnd(1, 3, 3), rnd(3, 2)), {})
    return [full, bare]


def conv_update_samples(b=3, e=5, w=4):
    return [((rnd(b, e), rnd(b, w - 1, e, grad=False), rnd(e, w)), dict(bias=rnd(e), silu=True)),
            ((rnd(1, 3), rnd(1, 1, 3, grad=False), rnd(3, 2)), {})]


def state_update_samples(b=3, e=6, n=5, g=2):
    full = ((rnd(b, e, n, grad=False), rnd(b, e), rnd(b, e, scale=0.5, shift=-1), -pos(e, n), rnd(b, g, n),
             rnd(b, g, n)), dict(D=rnd(e), z=rnd(b, e), dt_bias=rnd(e, scale=0.1), dt_softplus=True))
    bare = ((rnd(1, 3, 4, grad=False), rnd(1, 3), pos(1, 3, hi=0.3), -pos(3, 4), rnd(1, 4), rnd(1, 4)), {})
    return [full, bare]


def wkv_samples(b=2, l=7, c=5):
    w, u = -torch.exp(rnd(c, scale=0.5, grad=False)), rnd(c, scale=0.5)
    w.requires_grad_(True)
    k, v = rnd(b, l, c, scale=0.5), rnd(b, l, c)
    with torch.no_grad():  # a reachable state: the one after a few steps
        _, state = torch.ops.ssmlab.wkv_ref(w, u, rnd(b, 3, c, grad=False), rnd(b, 3, c, grad=False))
    return [((w, u, k, v), dict(initial_state=state.clone().requires_grad_(True))), ((w, u, k, v), {})]


def ssd_samples(b=2, l=9, h=4, p=3, n=5, g=2):
    full = ((rnd(b, l, h, p), rnd(b, l, h, scale=0.5), -pos(h), rnd(b, l, g, n), rnd(b, l, g, n)),
            dict(D=rnd(h), dt_bias=rnd(h, scale=0.1), dt_softplus=True, dt_min=0.0, dt_max=None,
                 initial_state=rnd(b, h, p, n), chunk_size=4, return_chunk_states=True, dt_mult=pos(h, lo=0.5),
                 decay_mult=pos(h, lo=0.5), b_mult=pos(h, lo=0.5)))
    bare = ((rnd(1, 5, 2, 3), rnd(1, 5, 2, scale=0.5), -pos(2), rnd(1, 5, 1, 4), rnd(1, 5, 1, 4)),
            dict(chunk_size=2))
    return [full, bare]


def ssd_update_samples(b=2, h=4, p=3, n=5, g=2):
    full = ((rnd(b, h, p), rnd(b, h, scale=0.5), -pos(h), rnd(b, g, n), rnd(b, g, n), rnd(b, h, p, n, grad=False)),
            dict(D=rnd(h), dt_bias=rnd(h, scale=0.1), dt_softplus=True, dt_mult=pos(h, lo=0.5),
                 decay_mult=pos(h, lo=0.5), b_mult=pos(h, lo=0.5)))
    bare = ((rnd(1, 2, 3), rnd(1, 2), -pos(2), rnd(1, 1, 4), rnd(1, 1, 4), rnd(1, 2, 3, 4, grad=False)), {})
    return [full, bare]


def _l2(t):
    with torch.no_grad():
        n = t.detach().pow(2).sum(-1, keepdim=True).sqrt()
    return (t.detach() / n).requires_grad_(t.requires_grad)


def delta_samples(b=2, l=7, h=2, hv=4, k=3, v=5):
    # L2-normalised keys (as the mixers give them), beta in (0, 1), log decays <= 0 (per head, then per key).
    full = ((_l2(rnd(b, l, h, k)), _l2(rnd(b, l, h, k)), rnd(b, l, hv, v), pos(b, l, hv)),
            dict(g=-pos(b, l, hv, lo=0.01, hi=0.5), initial_state=rnd(b, hv, k, v, scale=0.5), chunk_size=4))
    kda = ((_l2(rnd(1, 5, 1, k)), _l2(rnd(1, 5, 1, k)), rnd(1, 5, 1, 2), pos(1, 5, 1)),
           dict(g=-pos(1, 5, 1, k, lo=0.01, hi=0.5)))
    bare = ((_l2(rnd(1, 4, 1, 2)), _l2(rnd(1, 4, 1, 2)), rnd(1, 4, 1, 3), pos(1, 4, 1)), {})
    return [full, kda, bare]


def delta_update_samples(b=2, h=2, hv=4, k=3, v=5):
    full = ((_l2(rnd(b, h, k)), _l2(rnd(b, h, k)), rnd(b, hv, v), pos(b, hv), rnd(b, hv, k, v, grad=False)),
            dict(g=-pos(b, hv, lo=0.01, hi=0.5)))
    bare = ((_l2(rnd(1, 1, 2)), _l2(rnd(1, 1, 2)), rnd(1, 1, 3), pos(1, 1), rnd(1, 1, 2, 3, grad=False)), {})
    return [full, bare]


def mamba3_samples(b=2, t=5, r=2, h=2, n=4, p=3, s=2):
    # MIMO (R 2, halves pairing) from a carried state; SISO (adjacent) from zeros. adt < 0, dt > 0, trap a logit.
    full = ((rnd(b, t, r, h, n), rnd(b, t, r, h, n), rnd(b, t, r, h, p), -pos(b, t, h), pos(b, t, h, hi=0.5),
             rnd(b, t, h), rnd(b, t, h, s)),
            dict(D=rnd(h), phase=pos(b, h, s, lo=0.5, hi=5.5), state=rnd(b, h, p, n, scale=0.5),
                 k_prev=rnd(b, r, h, n), x_prev=rnd(b, r, h, p), pairing="halves", chunk_size=4))
    bare = ((rnd(1, 5, 1, 1, 4), rnd(1, 5, 1, 1, 4), rnd(1, 5, 1, 1, 3), -pos(1, 5, 1), pos(1, 5, 1, hi=0.5),
             rnd(1, 5, 1), rnd(1, 5, 1, 1)), {})
    return [full, bare]


def mamba3_step_samples(b=2, r=2, h=2, n=4, p=3, s=2):
    full = ((rnd(b, r, h, n), rnd(b, r, h, n), rnd(b, r, h, p), -pos(b, h), pos(b, h, hi=0.5), rnd(b, h),
             rnd(b, h, s), pos(b, h, s, lo=0.5, hi=5.5), rnd(b, h, p, n), rnd(b, r, h, n), rnd(b, r, h, p)),
            dict(D=rnd(h), pairing="halves"))
    bare = ((rnd(1, 1, 1, 4), rnd(1, 1, 1, 4), rnd(1, 1, 1, 3), -pos(1, 1), pos(1, 1, hi=0.5), rnd(1, 1),
             rnd(1, 1, 1), pos(1, 1, 1), rnd(1, 1, 3, 4), rnd(1, 1, 1, 4), rnd(1, 1, 1, 3)), {})
    return [full, bare]


def ce_samples(m=7, v=5):
    # Some rows ignored (-100), then every row counted with a vocabulary of 1 (V = 1: loss 0, lse = the logit).
    t = torch.tensor([0, 4, -100, 2, 1, -100, 3], dtype=torch.long, device=DEVICE)
    return [((rnd(m, v, scale=2.0), t), dict(ignore_index=-100)),
            ((rnd(3, 1), torch.zeros(3, dtype=torch.long, device=DEVICE)), {})]


SAMPLES = {
    "selective_scan": scan_samples, "selective_scan_ref": scan_samples,
    "selective_scan_varlen": varlen_samples, "selective_scan_varlen_ref": varlen_samples,
    "causal_conv1d": conv_samples, "causal_conv1d_ref": conv_samples,
    "causal_conv1d_update": conv_update_samples, "causal_conv1d_update_ref": conv_update_samples,
    "selective_state_update": state_update_samples, "selective_state_update_ref": state_update_samples,
    "wkv": wkv_samples, "wkv_ref": wkv_samples,
    "ssd_scan": ssd_samples, "ssd_scan_ref": ssd_samples,
    "ssd_scan_update": ssd_update_samples,
    "delta_rule": delta_samples, "delta_rule_ref": delta_samples,
    "delta_rule_update": delta_update_samples,
    "mamba3_scan": mamba3_samples, "mamba3_scan_ref": mamba3_samples, "mamba3_step": mamba3_step_samples,
    "cross_entropy": ce_samples, "cross_entropy_ref": ce_samples,
}


# Decode steps (a Tensor(a!) state) are not differentiable; every other op is.
DIFFERENTIABLE = {n for n in SAMPLES if not n.endswith("_update") and not n.endswith("_update_ref")}


# Outputs whose gradient is the true Jacobian, where not all are: the fused wkv treats a loss on the final state
# (aa, bb, pp) as a loss on a = aa e^pp and b = bb e^pp (ops/wkv/wkv.h: pp is a gauge), so finite differences of
# the raw state do not match it by design; wkv_ref differentiates the raw state and is checked on both.
GRADCHECK_OUTPUTS = {"wkv": (0,)}


# The <op>_backward schemas are not differentiable (their Autograd kernel refuses a double backward), so
# test_autograd_registration, which needs inputs that require grad, does not apply to them.
BACKWARD_TEST_UTILS = tuple(u for u in TEST_UTILS if u != "test_autograd_registration")


def registered_ops():
    names = [n for n in torch._C._dispatch_get_all_op_names() if n.startswith("ssmlab::")]
    return sorted(n.split("::", 1)[1] for n in names)


def backward_sample(name, args, kwargs):
    """(grads, *args) for ssmlab::<name>_backward: one random output gradient per output of the forward call,
    every tensor detached (the backward is called the way autograd calls it: without a graph)."""
    def plain(v):
        return v.detach().clone() if isinstance(v, torch.Tensor) else v

    args, kwargs = tuple(plain(a) for a in args), {k: plain(v) for k, v in kwargs.items()}
    with torch.no_grad():
        outs = getattr(torch.ops.ssmlab, name)(*args, **kwargs)
    outs = outs if isinstance(outs, (tuple, list)) else (outs,)
    grads = [torch.randn(o.shape, generator=gen, dtype=torch.float64).to(device=DEVICE, dtype=o.dtype) for o in outs]
    return (grads, *args), kwargs


def double_backward_refused(name, args, kwargs):
    """None when a create_graph=True gradient through the op is refused with an error naming <name>_backward,
    else what happened instead (a silent second-order gradient of zero is what this guards against)."""
    outs = getattr(torch.ops.ssmlab, name)(*args, **kwargs)
    outs = outs if isinstance(outs, (tuple, list)) else (outs,)
    loss = sum(o.square().sum() for o in outs if o.requires_grad)
    leaves = [a for a in list(args) + list(kwargs.values()) if isinstance(a, torch.Tensor) and a.requires_grad]
    try:
        torch.autograd.grad(loss, leaves, create_graph=True, allow_unused=True)
    except RuntimeError as e:
        want = f"ssmlab::{name}_backward"
        return None if want in str(e) and "double backward" in str(e) else f"error without {want!r}: {e}"
    return "no error: a create_graph=True gradient was built through a non-differentiable backward"


def record(results, failures, label, util, res):
    """Every failure goes to failures; the table cell keeps the first one."""
    if res == "SUCCESS":
        results.setdefault(util, "SUCCESS")
        return
    failures.append(f"{label} {util}: {type(res).__name__}: {str(res)[:2000]}")
    if results.get(util, "SUCCESS") == "SUCCESS":
        results[util] = res


def run_opchecks():
    failures = []
    ops = registered_ops()
    forward_ops = [n for n in ops if not n.endswith("_backward")]
    backward_ops = [n for n in ops if n.endswith("_backward")]
    missing = [n for n in forward_ops if n not in SAMPLES]
    if missing:
        failures.append(f"no opcheck sample for ssmlab::{', ssmlab::'.join(missing)}: add one to SAMPLES")
    stale = [n for n in SAMPLES if n not in forward_ops]
    if stale:
        failures.append(f"SAMPLES names unregistered ops: {', '.join(stale)}")
    for name in backward_ops:
        if name[: -len("_backward")] not in forward_ops:
            failures.append(f"ssmlab::{name} has no forward op")
    wrong = sorted(set(DIFFERENTIABLE) ^ {n[: -len("_backward")] for n in backward_ops})
    if wrong:
        failures.append(f"differentiable ops here and <op>_backward schemas disagree on: {', '.join(wrong)}")
    print(f"opcheck on {DEVICE}: {len(forward_ops)} ops and {len(backward_ops)} <op>_backward schemas, "
          f"{len(SAMPLES[forward_ops[0]]())} samples each")
    keys = list(TEST_UTILS) + ["gradcheck", "backward op", "2nd order"]
    print(f"{'op':26s}" + "".join(f"{k.removeprefix('test_'):>22s}" for k in keys))
    only = [n for n in os.environ.get("SSMLAB_OPCHECK_ONLY", "").split(",") if n]
    table = {}
    for name in forward_ops:
        if name not in SAMPLES or (only and name not in only):
            continue
        op = getattr(torch.ops.ssmlab, name).default
        results = {}
        t0 = time.time()
        for i, (args, kwargs) in enumerate(SAMPLES[name]()):
            res = torch.library.opcheck(op, args, kwargs, test_utils=TEST_UTILS, raise_exception=False,
                                        atol=1e-7, rtol=1e-7)
            for u in TEST_UTILS:
                record(results, failures, f"ssmlab::{name} sample {i}", u, res.get(u, "not run"))
        if name in DIFFERENTIABLE:
            bop = getattr(torch.ops.ssmlab, name + "_backward").default
            for i, (args, kwargs) in enumerate(SAMPLES[name]()):
                # The gradients themselves, against finite differences (opcheck compares compiled with eager).
                try:
                    outs = GRADCHECK_OUTPUTS.get(name)
                    fn = getattr(torch.ops.ssmlab, name)
                    ok = torch.autograd.gradcheck(
                        lambda *a: fn(*a, **kwargs) if outs is None else tuple(fn(*a, **kwargs)[o] for o in outs),
                        args, eps=1e-6, atol=1e-5, rtol=1e-4)
                except Exception as e:  # noqa: BLE001 - reported as a failure below
                    ok = e
                record(results, failures, f"ssmlab::{name} sample {i}", "gradcheck", "SUCCESS" if ok is True else ok)
                # ssmlab::<name>_backward as an op of its own: schema, fake tensor and aot_dispatch checks.
                bargs, bkwargs = backward_sample(name, args, kwargs)
                res = torch.library.opcheck(bop, bargs, bkwargs, test_utils=BACKWARD_TEST_UTILS,
                                            raise_exception=False, atol=1e-7, rtol=1e-7)
                bad = {u: r for u, r in res.items() if r != "SUCCESS"}
                if len(res) != len(BACKWARD_TEST_UTILS):
                    bad["missing"] = f"opcheck ran {sorted(res)}"
                record(results, failures, f"ssmlab::{name}_backward sample {i}", "backward op",
                       "SUCCESS" if not bad else RuntimeError(f"{bad}"))
                why = double_backward_refused(name, args, kwargs)
                record(results, failures, f"ssmlab::{name} sample {i}", "2nd order",
                       "SUCCESS" if why is None else RuntimeError(why))
        table[name] = results
        cells = "".join(f"{'-' if k not in results else 'ok' if results[k] == 'SUCCESS' else 'FAIL':>22s}"
                        for k in keys)
        print(f"{name:26s}{cells}   ({time.time() - t0:.1f} s)", flush=True)
    n_forward = sum(1 for r in table.values() for u in TEST_UTILS if r.get(u) == "SUCCESS")
    n_back = sum(1 for r in table.values() if r.get("backward op") == "SUCCESS")
    n_grad = sum(1 for r in table.values() if r.get("gradcheck") == "SUCCESS")
    n_diff = sum(1 for n in table if n in DIFFERENTIABLE)
    n_2nd = sum(1 for r in table.values() if r.get("2nd order") == "SUCCESS")
    print(f"opcheck passed: {n_forward}/{len(table) * len(TEST_UTILS)} (op, check) pairs on the ops, "
          f"{n_back * len(BACKWARD_TEST_UTILS)}/{n_diff * len(BACKWARD_TEST_UTILS)} on the <op>_backward schemas; "
          f"gradcheck {n_grad}/{n_diff}; double backward refused {n_2nd}/{n_diff}; decode steps (*_update) are not differentiable ('-')")
    return failures


# ---- torch.compile of a small module --------------------------------------------------------------------------
class TinyMamba(torch.nn.Module):
    """conv -> selective scan -> gated output, then an SSD scan and a WKV mix: the ops chained as a model uses
    them (float64 so that the comparison with eager is tight)."""

    def __init__(self, e=6, n=4, h=2, p=3):
        super().__init__()
        self.h, self.p = h, p
        self.conv_w = torch.nn.Parameter(torch.randn(e, 4, dtype=torch.float64) * 0.3)
        self.conv_b = torch.nn.Parameter(torch.randn(e, dtype=torch.float64) * 0.1)
        self.A_log = torch.nn.Parameter(torch.randn(e, n, dtype=torch.float64) * 0.1)
        self.D = torch.nn.Parameter(torch.ones(e, dtype=torch.float64))
        self.dt_bias = torch.nn.Parameter(torch.randn(e, dtype=torch.float64) * 0.1)
        self.proj = torch.nn.Linear(e, 2 * n + e, dtype=torch.float64)
        self.A_ssd = torch.nn.Parameter(-torch.rand(h, dtype=torch.float64) - 0.5)
        self.time_decay = torch.nn.Parameter(torch.randn(e, dtype=torch.float64) * 0.3)
        self.time_first = torch.nn.Parameter(torch.randn(e, dtype=torch.float64) * 0.3)

    def forward(self, x, z):
        b, l, e = x.shape
        xc, _ = torch.ops.ssmlab.causal_conv1d(x, self.conv_w, self.conv_b, True)
        n = self.A_log.shape[1]
        Bm, Cm, dt = torch.split(self.proj(xc), [n, n, e], dim=-1)
        y, h_last = torch.ops.ssmlab.selective_scan(xc, dt, -torch.exp(self.A_log), Bm.contiguous(),
                                                    Cm.contiguous(), self.D, z, self.dt_bias, True, None)
        xs = y.reshape(b, l, self.h, self.p)
        dts = y[..., : self.h]
        ys, s_last, _ = torch.ops.ssmlab.ssd_scan(xs, dts, self.A_ssd, Bm.unsqueeze(2).contiguous(),
                                                  Cm.unsqueeze(2).contiguous(), chunk_size=4)
        k = ys.reshape(b, l, e)
        yw, _ = torch.ops.ssmlab.wkv(-torch.exp(self.time_decay), self.time_first, k, y, None)
        return yw + y, h_last.sum() + s_last.sum()


def run_compile():
    failures = []
    if DEVICE == "cuda" and importlib.util.find_spec("triton") is None:
        return [f"torch.compile on cuda needs triton (inductor's GPU code generator) in {sys.executable}'s "
                "environment: pip install the triton version torch pins (torch 2.11.0: triton==3.6.0)"]
    torch.manual_seed(1)
    model = TinyMamba().to(DEVICE)
    x = torch.randn(2, 9, 6, **F64)
    z = torch.randn(2, 9, 6, **F64)

    def run(m):
        m.zero_grad()
        out, aux = m(x, z)
        (out.square().mean() + aux).backward()
        return out.detach(), aux.detach(), [p.grad.detach().clone() for p in m.parameters()]

    want = run(model)
    t0 = time.time()
    compiled = torch.compile(model, fullgraph=True)
    got = run(compiled)
    got2 = run(compiled)  # second call: the cached graph
    print(f"torch.compile(fullgraph=True) on {DEVICE}: compiled and ran forward + backward in "
          f"{time.time() - t0:.1f} s")
    for tag, g in (("first call", got), ("second call", got2)):
        pairs = [("out", g[0], want[0]), ("aux", g[1], want[1])]
        pairs += [(f"grad {n}", a, b) for (n, _), a, b in zip(model.named_parameters(), g[2], want[2])]
        for what, a, b in pairs:
            if not torch.allclose(a, b, rtol=1e-9, atol=1e-9):
                failures.append(f"torch.compile {tag}: {what} differs from eager by {(a - b).abs().max().item():.3g}")
    if not failures:
        print("torch.compile: forward and every parameter gradient match eager (rtol = atol = 1e-9, float64)")
    return failures


def main():
    t0 = time.time()
    where = torch.cuda.get_device_name() if DEVICE == "cuda" else f"{os.cpu_count()} CPU cores"
    print(f"torch {torch.__version__}, library {LIB}, device {DEVICE} ({where})")
    failures = run_opchecks() + run_compile()
    print(f"total {time.time() - t0:.0f} s")
    if failures:
        print(f"\n{len(failures)} failure(s):")
        for f in failures:
            print(" -", f)
        return 1
    print("all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
