"""Measuring one row: check our result against the reference, then time the contenders.

`Rows` holds what a run has measured so far (rows, failures, notes) and the
run's timing options; `references` computes the float64 results a
configuration is checked against.
"""
import sys

import numpy as np

import check
import contenders
import reference
import report
import timing
from contenders import EPS, NotAvailable


class Rows:
    """The rows of one run: how each is measured, and what was measured."""

    def __init__(self, args, gn, torch, gpu):
        self.args, self.gn, self.torch, self.gpu = args, gn, torch, gpu
        self.budget = args.budget or (0.08 if args.quick else 0.4)
        self.min_reps = 3 if args.quick else 5
        self.max_reps = 30 if args.quick else 100
        self.rows, self.failures = [], []
        self.na_seen = set()
        self._checked = (None, None)  # (configuration, outputs that passed the reference)
        gap_ms = args.gap_ms
        if gap_ms is None:
            gap_ms = 2.0 if len(report.openmp_runtimes()) > 1 else 0.0
        self.gap_s = gap_ms * 1e-3

    def set_threads(self, n):
        self.gn.set_num_threads(n)
        if self.torch is not None:
            self.torch.set_num_threads(n)

    def _check(self, call_outputs, refs):
        try:
            got = call_outputs()
        except Exception as e:
            return [f"raised {type(e).__name__}: {e}"], None
        return check.compare_all((got[k], refs[k], k) for k in got), got

    def cpu_row(self, row, a, refs, case):
        """Check, then time, one row on the CPU.

        The first thread count of a configuration is checked against the
        reference; later ones are checked bit for bit against it (the SPEC
        wants identical results for any thread count), and against the
        reference only when they differ -- that keeps the float64 compares,
        the slowest part of a run, to one per configuration.
        """
        st, layout, ps, t = row["stats"], row["layout"], row["pass"], row["threads"]
        key = (case.name, row["dtype"], layout, st, ps)
        checked = self._checked[1] if self._checked[0] == key else None
        try:
            call, call_out, outputs = contenders.ours(self.gn, a, case, st, layout, ps)
            if checked is None:
                errors, got = self._check(outputs, refs)
            else:
                got = outputs()
                row["bitwise_same"] = all(check.bitwise_equal(got[k], checked[k]) for k in got)
                errors = [] if row["bitwise_same"] else check.compare_all(
                    (got[k], refs[k], k) for k in got)
        except Exception as e:
            errors = [f"raised {type(e).__name__}: {e}"]
        if errors:
            row.update(status="wrong", errors=errors)
            return row
        if checked is None:
            self._checked = (key, got)
        # "ours" writes into a preallocated output like the floor; "ours_alloc"
        # allocates it, like torch does (compared with torch).
        fns = {"ours": call_out, "ours_alloc": call, "floor": contenders.floor(np, a, ps)}
        row["torch_na"] = "torch not installed" if self.torch is None else None
        if self.torch is not None:
            try:
                fns["torch"] = contenders.torch_group_norm(self.torch, a, case, st, layout, ps)
            except NotAvailable as e:
                row["torch_na"] = str(e)
        samples = timing.interleaved(fns, budget_s=self.budget, min_reps=self.min_reps,
                                     max_reps=self.max_reps,
                                     gap_s=self.gap_s if t > 1 else 0.0)
        med = {k: timing.median(v) for k, v in samples.items()}
        row.update(status="ok", ms=med["ours"] * 1e3, gbps=row["bytes"] / med["ours"] * 1e-9,
                   x_floor=med["ours"] / med["floor"],
                   ms_alloc=med["ours_alloc"] * 1e3,
                   x_torch=med["ours_alloc"] / med["torch"] if "torch" in med else None,
                   timings={k: timing.summary(v) for k, v in samples.items()})
        return row

    def gpu_row(self, row, a, refs, case):
        cupy = self.gpu["cupy"]
        st, layout, ps = row["stats"], row["layout"], row["pass"]
        try:
            d = contenders.to_device(cupy, a)
            call, call_out, outputs = contenders.ours(self.gn, d, case, st, layout, ps,
                                                      to_host=cupy.asnumpy)
            got = outputs()
        except NotAvailable as e:
            return {"na": str(e)}
        except ImportError as e:  # the package was built without its GPU backend
            return {"na": f"gn_native GPU backend: {e}"}
        except Exception as e:
            return {"status": "wrong", "errors": [f"raised {type(e).__name__}: {e}"]}
        errors = check.compare_all((got[k], refs[k], k) for k in got)
        if errors:
            return {"status": "wrong", "errors": errors}
        fns = {"ours": call_out, "ours_alloc": call, "copy": contenders.floor(cupy, d, ps)}
        g = {"status": "ok", "torch_na": None if self.gpu["torch"] else "no torch CUDA"}
        if self.gpu["torch"] is not None:
            try:
                fns["torch"] = contenders.torch_group_norm(self.gpu["torch"], a, case, st,
                                                           layout, ps, device="cuda")
            except NotAvailable as e:
                g["torch_na"] = str(e)
        samples = timing.interleaved(fns, timer=timing.cuda_timer(cupy), budget_s=self.budget,
                                     min_reps=10, max_reps=20 * self.max_reps, warmup=3)
        med = {k: timing.median(v) for k, v in samples.items()}
        g.update(ms=med["ours"] * 1e3, gbps=row["bytes"] / med["ours"] * 1e-9,
                 x_copy=med["ours"] / med["copy"],
                 x_torch=med["ours_alloc"] / med["torch"] if "torch" in med else None,
                 timings={k: timing.summary(v) for k, v in samples.items()})
        return g

    def measure(self, case, dname, layout, st, ps, t, a, refs, gpu_too, bar):
        """One table row: the CPU at `t` threads, and the GPU when gpu_too."""
        self.set_threads(t)
        others = timing.OthersLoad()
        row = {"case": case.name, "shape": case.label(), "dtype": dname, "layout": layout,
               "stats": st, "pass": ps, "threads": t,
               "bytes": (2 if ps == "forward" else 3) * a["x"].nbytes}
        self.cpu_row(row, a, refs, case)
        if row["status"] != "ok":
            self.note_failure(row, "(CPU)", row["errors"], bar)
        self.note(row.get("torch_na"), bar)
        if row.get("bitwise_same") is False:
            self.note("results differ bit-wise between thread counts (the SPEC wants them "
                      "identical); checked against the reference instead", bar)
        if gpu_too:
            g = row["gpu"] = self.gpu_row(row, a, refs, case)
            if g.get("status") == "wrong":
                self.note_failure(row, "(GPU)", g["errors"], bar)
            self.note(g.get("na") or g.get("torch_na"), bar)
        row["others_cores"] = others.cores()
        self.rows.append(row)
        return row

    def note_failure(self, row, where, errors, bar):
        name = (f"{row['case']} {row['shape']} {row['dtype']} {row['layout']} stats={row['stats']} "
                f"{row['pass']} threads={row['threads']} {where}")
        self.failures.append({"case": name, "errors": errors})
        bar.write(f"WRONG RESULT: {name}: " + "; ".join(errors), out=sys.stderr)

    def note(self, reason, bar):
        if reason and reason not in self.na_seen:
            self.na_seen.add(reason)
            bar.write(f"note: {reason}", out=sys.stderr)


def references(data, case, stats, passes):
    """The float64 results each pass is checked against, for both layouts."""
    refs = {}
    gamma, beta = data["gamma"], data["beta"]
    if "forward" in passes:
        y, mean, rstd = reference.forward(data["x"], case.g, gamma, beta, EPS, stats)
        refs["forward"] = {"y": y, "mean": mean, "rstd": rstd}
    if "backward" in passes:
        dx, dgamma, dbeta = reference.backward(data["dy"], data["x"], case.g, gamma, EPS, stats)
        refs["backward"] = {"dx": dx, "dgamma": dgamma, "dbeta": dbeta}
    return refs
