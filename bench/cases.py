"""The shapes, dtypes, layouts and modes the benchmark runs, and their input data.

A case is a logical (N, C, H, W) shape and a group count.  Data is made once
per (case, dtype) in the logical NCHW order; `in_layout` gives the array a
layout's kernel reads (NHWC is the same values, channels last in memory, as
`channel_axis=-1` takes them), and `to_nchw` brings a result back so the
reference can be computed once for both layouts.
"""
import re
from dataclasses import dataclass

import numpy as np

try:
    import ml_dtypes
    BFLOAT16 = np.dtype(ml_dtypes.bfloat16)
except ImportError:  # the package itself needs ml_dtypes only for bfloat16
    BFLOAT16 = None


@dataclass(frozen=True)
class Case:
    name: str
    n: int
    c: int
    h: int
    w: int
    g: int
    note: str = ""

    def label(self):
        return f"{self.n}x{self.c}x{self.h}x{self.w}/G{self.g}"


CASES = (
    Case("sd-unet", 1, 320, 64, 64, 32, "Stable Diffusion UNet block"),
    Case("sd-vae", 1, 512, 128, 128, 32, "Stable Diffusion VAE decoder"),
    Case("resnet-56", 8, 64, 56, 56, 32, "ResNet stage, batch 8"),
    Case("b32-14", 32, 256, 14, 14, 32, "batch 32, small spatial"),
    Case("big-64mib", 2, 128, 256, 256, 32, "64 MiB in float32"),
    Case("tiny", 4, 32, 8, 8, 8, "call overhead dominates"),
)
QUICK_CASES = ("sd-unet", "b32-14", "tiny")
TINY = CASES[-1]

DTYPES = ("float32", "bfloat16")
ALL_DTYPES = ("float32", "bfloat16", "float16", "float64")
LAYOUTS = ("nchw", "nhwc")
STATS = ("sample", "batch")
PASSES = ("forward", "backward")

_CUSTOM = re.compile(r"^(\d+)x(\d+)x(\d+)x(\d+)(?:[/:g]G?(\d+))?$", re.IGNORECASE)


def dtype_of(name):
    if name == "bfloat16":
        if BFLOAT16 is None:
            raise SystemExit("bfloat16 needs ml_dtypes (pip install ml_dtypes)")
        return BFLOAT16
    return np.dtype(name)


def select_cases(spec, quick):
    """Cases named in a comma list (names, name prefixes, or NxCxHxW/G shapes)."""
    if not spec:
        return [c for c in CASES if not quick or c.name in QUICK_CASES]
    chosen = []
    for item in (s.strip() for s in spec.split(",")):
        if not item:
            continue
        m = _CUSTOM.match(item)
        if m:
            n, c, h, w = (int(v) for v in m.groups()[:4])
            g = int(m.group(5) or min(32, c))
            if c % g:
                raise SystemExit(f"--cases {item}: G={g} does not divide C={c}")
            chosen.append(Case(item, n, c, h, w, g, "custom"))
            continue
        hits = [c for c in CASES if c.name == item] or [c for c in CASES if c.name.startswith(item)]
        if not hits:
            names = ", ".join(c.name for c in CASES)
            raise SystemExit(f"--cases: unknown case {item!r} (known: {names}; or NxCxHxW/G)")
        chosen += [c for c in hits if c not in chosen]
    return chosen


def select(spec, allowed, flag):
    """Comma list filter over `allowed`; None or empty keeps the default."""
    if not spec:
        return None
    items = [s.strip().lower() for s in spec.split(",") if s.strip()]
    bad = [s for s in items if s not in allowed]
    if bad:
        raise SystemExit(f"{flag}: unknown value(s) {', '.join(bad)} (choose from {', '.join(allowed)})")
    return items


def make_data(case, dtype, seed):
    """x, dy, gamma, beta in the logical NCHW order, stored in `dtype`.

    x has a mean offset against its spread so that sloppy one-pass variance
    would show up as a wrong result, not just a slow one.
    """
    rng = np.random.default_rng([seed, case.n, case.c, case.h, case.w, case.g])
    shape = (case.n, case.c, case.h, case.w)
    x = rng.standard_normal(shape, np.float32) * 2.0 + 3.0
    dy = rng.standard_normal(shape, np.float32)
    gamma = 1.0 + 0.1 * rng.standard_normal(case.c, np.float32)
    beta = 0.1 * rng.standard_normal(case.c, np.float32)
    return {k: v.astype(dtype) for k, v in
            (("x", x), ("dy", dy), ("gamma", gamma), ("beta", beta))}


def in_layout(a, layout):
    """Contiguous array holding the NCHW-ordered `a` in `layout`'s memory order."""
    if layout == "nhwc":
        return np.ascontiguousarray(np.moveaxis(a, 1, -1))
    return a


def to_nchw(a, layout):
    """View of a result in `layout` back in logical NCHW order."""
    return np.moveaxis(a, -1, 1) if layout == "nhwc" else a


def channel_axis(layout):
    return -1 if layout == "nhwc" else 1
