"""The cases the benchmark runs (shapes, dtypes, layouts, modes) and their input data.

Data is made once per (case, dtype) in logical NCHW order; `in_layout` gives
the array a layout's kernel reads (NHWC: the same values, channels last in
memory, as `channel_axis=-1` takes them), so one reference serves both layouts.
"""
import re
from collections import namedtuple

import numpy as np


class Case(namedtuple("Case", "name n c h w g")):
    def label(self):
        return f"{self.n}x{self.c}x{self.h}x{self.w}/G{self.g}"


CASES = (Case("sd-unet", 1, 320, 64, 64, 32),      # Stable Diffusion UNet block
         Case("sd-vae", 1, 512, 128, 128, 32),     # Stable Diffusion VAE decoder
         Case("resnet-56", 8, 64, 56, 56, 32),     # ResNet stage, batch 8
         Case("b32-14", 32, 256, 14, 14, 32),      # batch 32, small spatial
         Case("big-64mib", 2, 128, 256, 256, 32),  # 64 MiB in float32
         Case("tiny", 4, 32, 8, 8, 8))             # call overhead dominates
TINY = CASES[-1]
QUICK = ("sd-unet", "b32-14", "tiny")
CHOICES = {"dtype": ("float32", "bfloat16", "float16", "float64"), "layout": ("nchw", "nhwc"),
           "stats": ("sample", "batch"), "pass": ("forward", "backward"),
           "activation": ("none", "silu", "gelu", "gelu_tanh", "relu"), "add": ("none", "full", "nc")}
DEFAULTS = {"dtype": ("float32", "bfloat16"), "activation": ("none",),  # others: all values
            "add": ("none",)}


def select_cases(spec, quick):
    """Cases of a comma list of names, name prefixes or NxCxHxW/G shapes (default: all)."""
    if not spec:
        return [c for c in CASES if not quick or c.name in QUICK]
    chosen = []
    for item in filter(None, (s.strip() for s in spec.split(","))):
        m = re.fullmatch(r"(\d+)x(\d+)x(\d+)x(\d+)(?:[/:g]G?(\d+))?", item, re.IGNORECASE)
        if m:
            n, c, h, w = map(int, m.groups()[:4])
            g = int(m.group(5) or min(32, c))
            if c % g:
                raise SystemExit(f"--cases {item}: G={g} does not divide C={c}")
            hits = [Case(item, n, c, h, w, g)]
        else:
            hits = [c for c in CASES if c.name.startswith(item)]  # no name starts another
        if not hits:
            raise SystemExit(f"--cases: unknown case {item!r} (known: "
                             f"{', '.join(c.name for c in CASES)}; or NxCxHxW/G)")
        chosen += [c for c in hits if c not in chosen]
    return chosen


def select(spec, flag):
    """The values of a comma list given to --`flag` (empty: all of them)."""
    items = [s.strip().lower() for s in (spec or "").split(",") if s.strip()]
    bad = [s for s in items if s not in CHOICES[flag]]
    if bad:
        raise SystemExit(f"--{flag}: unknown value(s) {', '.join(bad)} "
                         f"(choose from {', '.join(CHOICES[flag])})")
    return items or list(CHOICES[flag])


def dtype_of(name):
    if name != "bfloat16":
        return np.dtype(name)
    try:  # the package itself needs ml_dtypes only for bfloat16
        import ml_dtypes
    except ImportError:
        raise SystemExit("bfloat16 needs ml_dtypes (pip install ml_dtypes)") from None
    return np.dtype(ml_dtypes.bfloat16)


def make_data(case, dtype, seed):
    """x, dy, gamma, beta in the logical NCHW order, stored in dtype (a name); x has a mean
    offset against its spread, so sloppy one-pass variance would give wrong results.
    add_full (x's shape) and add_nc ((N, C)) are the two adds of --add."""
    rng = np.random.default_rng([seed, case.n, case.c, case.h, case.w, case.g])
    shape = (case.n, case.c, case.h, case.w)
    d = {"x": rng.standard_normal(shape, np.float32) * 2.0 + 3.0,
         "dy": rng.standard_normal(shape, np.float32),
         "gamma": 1.0 + 0.1 * rng.standard_normal(case.c, np.float32),
         "beta": 0.1 * rng.standard_normal(case.c, np.float32),
         "add_full": rng.standard_normal(shape, np.float32),
         "add_nc": rng.standard_normal(shape[:2], np.float32)}
    return {k: v.astype(dtype_of(dtype)) for k, v in d.items()}


def in_layout(data, layout):
    """The arrays of `data` with x, dy and add_full contiguous in `layout`'s memory order."""
    if layout == "nchw":
        return data
    return {k: np.ascontiguousarray(np.moveaxis(v, 1, -1)) if v.ndim == 4 else v
            for k, v in data.items()}
