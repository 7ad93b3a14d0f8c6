"""One row: check our result against the float64 reference, then time the contenders.

The reference and the tolerance policy are the test suite's own
(tests/reference.py, loaded by path: tests/ is not a package, and the
benchmark runs from a checkout with only the `bench` extra installed).
"""
import importlib.util
import os

import numpy as np

import contenders
import timing
from contenders import EPS, NotAvailable

_PATH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                     "tests", "reference.py")
_spec = importlib.util.spec_from_file_location("gn_tests_reference", _PATH)
ref = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ref)


def references(data, case, stats, passes):
    """Per pass, {output: (float64 value, tolerance kind, scale)}, in logical NCHW order."""
    x, dy, gamma, beta = data["x"], data["dy"], data["gamma"], data["beta"]
    y, mean, rstd = ref.forward(x, case.g, gamma, beta, EPS, stats)
    out = {"forward": {"y": (y, "forward", None), "mean": (mean, "mean", rstd),
                       "rstd": (rstd, "rstd", mean)}}
    if "backward" in passes:
        want = ref.backward(dy, x, mean, rstd, case.g, gamma, stats)
        mags = ref.backward_magnitudes(dy, x, mean, rstd, case.g, gamma, stats)
        out["backward"] = {k: (w, "backward", m) for k, w, m in zip(("dx", "dgamma", "dbeta"),
                                                                  want, mags)}
    return out


def compare(got, want, x_dtype):
    """A one-line reason per output of `got` outside the tolerance; [] when all pass."""
    stat_dtype = np.float64 if x_dtype == np.float64 else np.float32
    errors = []
    for name, a in got.items():
        w, kind, other = want[name]
        if a.shape != w.shape:
            errors.append(f"{name}: shape {a.shape}, expected {w.shape}")
            continue
        if kind == "mean":
            tol = ref.stats_tolerance(w, other, stat_dtype)[0]
        elif kind == "rstd":
            tol = ref.stats_tolerance(other, w, stat_dtype)[1]
        else:
            tol = ref.tolerance(w, x_dtype, kind, other)
        err = np.abs(a.astype(np.float64) - w)
        bad = ~(err <= tol)  # NaN counts as bad
        if bad.any():
            i = np.unravel_index(np.argmax(np.where(bad, np.nan_to_num(err, nan=np.inf)
                                                    / np.maximum(tol, 1e-300), 0)), bad.shape)
            errors.append(f"{name}: {int(bad.sum())}/{bad.size} values out of tolerance, worst "
                          f"at {tuple(map(int, i))}: got {float(a[i]):.6g}, expected "
                          f"{float(w[i]):.6g}")
    return errors


def _check(outputs, want, x_dtype):
    try:
        got = outputs()
    except Exception as e:
        return [f"raised {type(e).__name__}: {e}"], None
    return compare(got, want, x_dtype), got


class Rows:
    """The rows of one run, its timing options, and the outputs last checked."""

    def __init__(self, args, gn, torch, gpu):
        self.gn, self.torch, self.gpu = gn, torch, gpu
        self.budget = args.budget or (0.08 if args.quick else 0.4)
        self.reps = (3, 30) if args.quick else (5, 100)
        self.gap_s = (args.gap_ms if args.gap_ms is not None else
                      2.0 if len(timing.openmp_runtimes()) > 1 else 0.0) * 1e-3
        self.rows, self.failures, self.notes = [], [], []
        self._checked = (None, None)  # (configuration, outputs that passed)

    def set_threads(self, n):
        self.gn.set_num_threads(n)
        if self.torch is not None:
            self.torch.set_num_threads(n)

    def _time(self, row, fns, a, case, torch, device, **kw):
        """Medians of ours (out=), ours allocating (compared with torch, which allocates
        too), the floor and torch, timed in the same rounds."""
        if torch is None:
            self.note(f"no torch{' CUDA' if device == 'cuda' else ''}: x torch is n/a")
        else:
            try:
                fns["torch"] = contenders.torch_group_norm(torch, a, case, row["stats"],
                                                           row["layout"], row["pass"], device)
            except NotAvailable as e:
                self.note(str(e))
        samples = timing.interleaved(fns, budget_s=self.budget, **kw)
        med = {k: timing.median(v) for k, v in samples.items()}
        return med, {"ms": med["ours"] * 1e3, "gbps": row["bytes"] / med["ours"] * 1e-9,
                     "x_torch": med["ours_alloc"] / med["torch"] if "torch" in med else None,
                     "timings": {k: timing.summary(v) for k, v in samples.items()}}

    def cpu_row(self, row, a, want, case):
        """The first thread count of a configuration is checked against the reference;
        later ones must match it bit for bit (the SPEC wants that), else they are
        checked again -- one float64 compare per configuration, the slow part."""
        key = tuple(row[k] for k in ("case", "dtype", "layout", "stats", "pass"))
        checked = self._checked[1] if self._checked[0] == key else None
        try:
            call, call_out, outputs = contenders.ours(self.gn, a, case, row["stats"],
                                                      row["layout"], row["pass"])
            errors, got = _check(outputs, want, a["x"].dtype) if checked is None else ([], outputs())
            if checked is not None and not all(contenders.same_bits(got[k], checked[k]) for k in got):
                self.note("results differ bit-wise between thread counts (the SPEC wants them "
                          "identical)")
                errors = compare(got, want, a["x"].dtype)
        except Exception as e:
            errors = [f"raised {type(e).__name__}: {e}"]
        if errors:
            return row.update(status="wrong", errors=errors)
        self._checked = (key, got)
        fns = {"ours": call_out, "ours_alloc": call, "floor": contenders.floor(np, a, row["pass"])}
        med, res = self._time(row, fns, a, case, self.torch, "cpu", reps=self.reps,
                              gap_s=self.gap_s if row["threads"] > 1 else 0.0)
        row.update(status="ok", x_floor=med["ours"] / med["floor"],
                   ms_alloc=med["ours_alloc"] * 1e3, **res)

    def gpu_row(self, row, a, want, case):
        cupy = self.gpu["cupy"]
        try:
            d = contenders.to_device(cupy, a)
            call, call_out, outputs = contenders.ours(self.gn, d, case, row["stats"],
                                                      row["layout"], row["pass"],
                                                      to_host=cupy.asnumpy)
        except NotAvailable as e:
            return {"na": str(e)}
        except ImportError as e:  # built without the GPU backend
            return {"na": f"gn_native GPU backend: {e}"}
        errors, _ = _check(outputs, want, a["x"].dtype)
        if errors:
            return {"status": "wrong", "errors": errors}
        fns = {"ours": call_out, "ours_alloc": call, "copy": contenders.floor(cupy, d, row["pass"])}
        med, res = self._time(row, fns, a, case, self.gpu["torch"], "cuda",
                              timer=timing.cuda_timer(cupy), reps=(10, 20 * self.reps[1]),
                              warmup=3)
        return {"status": "ok", "x_copy": med["ours"] / med["copy"], **res}

    def measure(self, case, dname, layout, st, ps, t, a, want, gpu_too):
        """One table row: the CPU at `t` threads, and the GPU when gpu_too."""
        self.set_threads(t)
        others = timing.OthersLoad()
        row = {"case": case.name, "shape": case.label(), "dtype": dname, "layout": layout,
               "stats": st, "pass": ps, "threads": t,
               "bytes": (2 if ps == "forward" else 3) * a["x"].nbytes}
        self.cpu_row(row, a, want, case)
        if row["status"] != "ok":
            self.failure(row, "CPU", row["errors"])
        if gpu_too:
            g = row["gpu"] = self.gpu_row(row, a, want, case)
            if g.get("status") == "wrong":
                self.failure(row, "GPU", g["errors"])
            self.note(g.get("na"))
        row["others_cores"] = others.cores()
        self.rows.append(row)
        return row

    def failure(self, row, where, errors):
        name = " ".join(str(row[k]) for k in ("case", "shape", "dtype", "layout", "stats",
                                              "pass")) + f" threads={row['threads']} ({where})"
        self.failures.append({"case": name, "errors": errors})
        self.notes.append(f"WRONG RESULT: {name}: " + "; ".join(errors))

    def note(self, reason):
        if reason and f"note: {reason}" not in self.notes:
            self.notes.append(f"note: {reason}")
