"""Digests of gn_native's outputs over the test suite's shapes, to show that a
change keeps every result bit for bit (not a test: a tool for refactors).

    python tests/digests.py save before.json      # with the old build installed
    python tests/digests.py compare before.json   # with the new one; exit 1 on a change

Covers forward and backward (fast and general paths), given mean/var in
place, per-channel, per-group and no affine, both layouts and stats modes,
every dtype, and the layer (training with running statistics, eval, eval
backward), at 1 and 2 threads on every ISA this CPU runs.  The compare lists
the kinds of output that changed.
"""
import collections
import hashlib
import json
import sys

import numpy as np
import ml_dtypes
import gn_native as gn

DT = [np.float16, np.float32, np.float64, ml_dtypes.bfloat16]
SHAPES = [((3, 6, 5, 7), 3), ((2, 4, 1, 1), 2), ((2, 8, 4, 4), 1), ((2, 6, 3, 5), 6),
          ((3, 6, 11), 2), ((2, 4, 3, 4, 5), 2), ((5, 12), 4), ((1, 6, 4, 3), 3),
          ((1, 15, 4, 3), 5), ((2, 32, 8, 8), 8), ((4, 6, 9), 6), ((4, 6, 5, 5), 3),
          ((2, 64, 70, 70), 32), ((1, 16, 300), 1), ((2, 12, 17, 19), 4)]
out = {}


def put(key, *arrays):
    h = hashlib.sha256()
    for a in arrays:
        if a is not None:
            h.update(np.ascontiguousarray(a).view(np.uint8).tobytes())
    out[key] = h.hexdigest()[:16]


def run(tag):
    rng = np.random.default_rng(0)
    for si, (shape, G) in enumerate(SHAPES):
        x0 = rng.standard_normal(shape) * 3 + 1.5
        dy0 = rng.standard_normal(shape)
        C = shape[1]
        g0, b0 = rng.uniform(0.5, 1.5, C), rng.standard_normal(C)
        for dt in DT:
            for layout in ("nchw", "nhwc"):
                if layout == "nhwc" and len(shape) < 3:
                    continue
                x, dy, g, b = (a.astype(dt) for a in (x0, dy0, g0, b0))
                ax = 1
                if layout == "nhwc":
                    x, dy = (np.ascontiguousarray(np.moveaxis(a, 1, -1)) for a in (x, dy))
                    ax = -1
                for stats in ("sample", "batch"):
                    for aff in ("none", "channel", "group"):
                        gg, bb = {"none": (None, None), "channel": (g, b),
                                  "group": (g[:G], b[:G])}[aff]
                        k = f"{tag}_{si}_{np.dtype(dt).name}_{layout}_{stats}_{aff}"
                        y, m, r = gn.group_norm_forward(x, G, gg, bb, 1e-5, stats=stats, channel_axis=ax)
                        dx, dg, db = gn.group_norm_backward(dy, x, m, r, G, gg, stats=stats, channel_axis=ax)
                        put(k + "_fwd", y, m, r)
                        put(k + "_bwd", dx, dg, db)
                        if aff == "group":
                            continue
                        # general path: a strided view
                        xs = np.repeat(x, 2, axis=0)[::2]
                        put(k + "_general", *gn.group_norm_forward(xs, G, gg, bb, stats=stats, channel_axis=ax),
                            *gn.group_norm_backward(dy, xs, m, r, G, gg, stats=stats, channel_axis=ax))
                        # given statistics, in place
                        xc = x.copy()
                        var = (1.0 / np.asarray(r, np.float64) ** 2 - 1e-5).clip(0).astype(m.dtype)
                        gn.group_norm(xc, G, gg, bb, stats=stats, channel_axis=ax, out=xc, mean=m, var=var)
                        put(k + "_given_inplace", xc)
                # the layer: training with running statistics, eval, eval backward
                for stats in ("sample", "batch"):
                    lay = gn.GroupNorm(G, C, stats=stats, track_running_stats=True, dtype=dt,
                                       channel_axis=ax, momentum=0.3)
                    lay.gamma[...] = g
                    lay.beta[...] = b
                    ys = [lay(x), lay(x * np.asarray(2, dt)) if np.dtype(dt).itemsize > 2 else lay(x)]
                    dxs = lay.backward(dy)
                    lay.eval()
                    ye = lay(x)
                    dxe = lay.backward(dy)
                    kl = f"{tag}_{si}_{np.dtype(dt).name}_{layout}_{stats}_layer"
                    put(kl + "_train", *ys, dxs)
                    put(kl + "_running", lay.running_mean, lay.running_var)
                    put(kl + "_eval", ye)
                    put(kl + "_eval_backward", dxe, lay.dgamma, lay.dbeta)


for threads in (1, 2):
    gn.set_num_threads(threads)
    for isa in ("scalar", "avx2"):
        from gn_native import _cpu
        try:
            _cpu.set_isa(isa)
        except ValueError:    # not on this CPU
            continue
        run(f"t{threads}_{isa}")

path = sys.argv[2]
if sys.argv[1] == "save":
    json.dump(out, open(path, "w"), indent=0)
    print("saved", len(out))
else:
    ref = json.load(open(path))
    bad = sorted(k for k in ref if out.get(k) != ref[k])
    extra = sorted(set(out) - set(ref))
    kinds = collections.Counter("_".join(k.split("_")[3:]) for k in bad)
    print("compared", len(ref), "mismatches", len(bad), "extra", len(extra))
    for kind, n in sorted(kinds.items()):
        print(f"  {n:5d}  {kind}")
    sys.exit(1 if bad or extra else 0)
