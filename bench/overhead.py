"""The fixed cost of one call, measured on the tiny case (forward, float32).

Our call as users make it, the same call with out= (no allocation of y), and
a (1, G, 1, 1) call where there is no work left: its time is the cost of
the checks, the dispatch and one parallel region.  PyTorch's call is timed
in its own rounds: interleaving microsecond calls of two OpenMP runtimes
would measure their spinning threads rather than either library.
"""
import numpy as np

import timing
from cases import TINY, make_data
from contenders import EPS


def measure(gn, torch, budget_s):
    """Median seconds per call of each variant."""
    d = make_data(TINY, np.float32, 0)
    x, gamma, beta, g = d["x"], d["gamma"], d["beta"], TINY.g
    y = np.empty_like(x)
    x1 = np.linspace(-1.0, 1.0, g, dtype=np.float32).reshape(1, g, 1, 1)
    kw = dict(budget_s=budget_s, reps=(50, 5000), warmup=20)
    fns = {"call": lambda: gn.group_norm_forward(x, g, gamma, beta, EPS),
           "out": lambda: gn.group_norm_forward(x, g, gamma, beta, EPS, out=y),
           "empty": lambda: gn.group_norm_forward(x1, g)}
    med = {k: timing.median(v) for k, v in timing.interleaved(fns, **kw).items()}
    if torch is not None:
        xt, wt, bt = (torch.from_numpy(a) for a in (x, gamma, beta))
        tfn = {"torch": lambda: torch.nn.functional.group_norm(xt, g, wt, bt, EPS)}
        med["torch"] = timing.median(timing.interleaved(tfn, **kw)["torch"])
    return med


def line(threads, med):
    us = {k: v * 1e6 for k, v in med.items()}
    return (f"tiny {TINY.label()} threads={threads}: call {us['call']:.1f} us, with out= "
            f"{us['out']:.1f} us, a (1, {TINY.g}, 1, 1) call with no work {us['empty']:.1f} us"
            + (f"; torch {us['torch']:.1f} us" if "torch" in us else ""))
