"""Python overhead of one call, measured on the tiny case.

Three variants of our forward call run in interleaved rounds: as users call
it, with out= preallocated (no allocation of y), and on a (1, G, 1, 1)
input, where the work is nil and what remains is the fixed cost of a call
(argument checks, allocation, dispatch, the C call, one parallel region).
The C side of the tiny call is timed on its own (the C call repeated
without Python in between); the call's time minus that is the Python
overhead, which the targets bound.
PyTorch's call on the tiny input is timed afterwards, in its own rounds:
interleaving microsecond calls of two OpenMP runtimes would measure their
spinning threads rather than either library.
"""
import numpy as np

import timing
from cases import TINY, make_data
from contenders import EPS


def measure(gn, torch, budget_s):
    d = make_data(TINY, np.float32, 0)
    x, gamma, beta = d["x"], d["gamma"], d["beta"]
    y = np.empty_like(x)
    g = TINY.g
    x1 = np.linspace(-1.0, 1.0, g, dtype=np.float32).reshape(1, g, 1, 1)
    fns = {
        "call": lambda: gn.group_norm_forward(x, g, gamma, beta, EPS),
        "out": lambda: gn.group_norm_forward(x, g, gamma, beta, EPS, out=y),
        "minimal": lambda: gn.group_norm_forward(x1, g),
    }
    kw = dict(budget_s=budget_s, min_reps=50, max_reps=5000, warmup=20)
    med = {k: timing.median(v) for k, v in timing.interleaved(fns, **kw).items()}
    c = c_seconds(gn, x, y, gamma, beta, g, budget_s)
    if c is not None:
        med["c"] = c
        med["python"] = med["call"] - c
    if torch is not None:
        xt, wt, bt = (torch.from_numpy(a) for a in (x, gamma, beta))
        tfn = {"torch": lambda: torch.nn.functional.group_norm(xt, g, wt, bt, EPS)}
        med["torch"] = timing.median(timing.interleaved(tfn, **kw)["torch"])
    return med


def c_seconds(gn, x, y, gamma, beta, g, budget_s):
    """Seconds of one tiny forward call in C alone (median of batches of repeats)."""
    try:
        from gn_native import _cpu, _validate
    except ImportError:
        return None
    plan = _validate.plan(x, g, gamma, beta, EPS)
    mean = np.empty(plan.stat_shape, plan.stat_dtype)
    rstd = np.empty_like(mean)
    reps = 200
    fn = lambda: _cpu.forward_repeat(plan, y, mean, rstd, x, gamma, beta, reps)
    samples = timing.interleaved({"c": fn}, budget_s=budget_s, min_reps=10, max_reps=200,
                                 warmup=3)["c"]
    return timing.median(samples) / reps


def lines(threads, med):
    us = {k: v * 1e6 for k, v in med.items()}
    saved = us["call"] - us["out"]
    s = (f"tiny {TINY.label()} float32 NCHW, threads={threads}: call {us['call']:.1f} us, "
         f"with out= {us['out']:.1f} us (out= " +
         (f"saves {saved:.1f} us)" if saved >= 0 else f"costs {-saved:.1f} us more)"))
    if "torch" in us:
        s += f"; torch {us['torch']:.1f} us"
    out = [s]
    if "c" in us:
        out.append(f"  of which C {us['c']:.1f} us: Python overhead {us['python']:.1f} us")
    out.append(f"  call overhead ~ {us['minimal']:.1f} us "
               f"(a (1, {TINY.g}, 1, 1) call, where there is no work)")
    return out
