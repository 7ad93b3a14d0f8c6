"""Benchmark gn_native against the memory floor and PyTorch (and on the GPU, when there is one).

    python bench/run.py                 # every default case; a few minutes on 2 cores
    python bench/run.py --quick         # a reduced set, well under a minute
    python bench/run.py --threads 1,2 --cases sd-unet --dtype float32 --pass forward

Every row is checked once against the float64 reference before it is
timed; a wrong result is reported by name, left untimed, and makes the run
exit with status 1.  Nothing here judges speed: it measures and reports.
"""
import argparse
import os
import sys
import time

import numpy as np

import check
import contenders
import overhead
import reference
import report
import timing
from cases import (ALL_DTYPES, DTYPES, LAYOUTS, PASSES, STATS, channel_axis, dtype_of,
                   in_layout, make_data, select, select_cases)
from contenders import EPS, NotAvailable
from progress import Progress

HERE = os.path.dirname(os.path.abspath(__file__))


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", help="CPU thread counts, e.g. 1,2 (default: 1 and all cores)")
    p.add_argument("--quick", action="store_true",
                   help="cases " + ", ".join(("sd-unet", "b32-14", "tiny")) + ", fewer repeats")
    p.add_argument("--cases", help="comma list of case names (or prefixes), or NxCxHxW/G shapes")
    p.add_argument("--dtype", help=f"comma list of {', '.join(ALL_DTYPES)} "
                                   f"(default {', '.join(DTYPES)})")
    p.add_argument("--layout", help="nchw, nhwc")
    p.add_argument("--stats", help="sample, batch")
    p.add_argument("--pass", dest="passes", help="forward, backward")
    p.add_argument("--json", help="where to save results (default bench/out/bench.json, "
                                  "bench/out/quick.json with --quick; 'none' to skip)")
    p.add_argument("--plot", help="PNG plot (default bench/out/bench.png or quick.png; 'none' to skip)")
    p.add_argument("--budget", type=float, help="seconds of timing per row "
                                                "(default 0.5, 0.08 with --quick)")
    p.add_argument("--gap-ms", type=float,
                   help="pause before each timed call when threads > 1, so the idle threads of "
                        "another OpenMP runtime stop spinning (default: 2 when more than one "
                        "runtime is loaded, else 0)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-torch", action="store_true", help="leave PyTorch out")
    p.add_argument("--no-gpu", action="store_true", help="leave the GPU out")
    p.add_argument("--no-overhead", action="store_true", help="skip the call-overhead lines")
    return p.parse_args(argv)


def import_gn():
    try:
        import gn_native
    except ImportError:
        sys.path.insert(0, os.path.dirname(HERE))  # run from a checkout with an in-place build
        try:
            import gn_native
        except ImportError as e:
            raise SystemExit(f"cannot import gn_native ({e}); build it with "
                             "`python setup.py build_ext --inplace` or pip install it") from None
    return gn_native


def import_torch(args):
    if args.no_torch:
        return None
    try:
        import torch
    except ImportError:
        return None
    return torch


def detect_gpu(args, torch):
    """(gpu or None, header line).  gpu: dict with cupy and whether torch has CUDA."""
    if args.no_gpu:
        return None, "no GPU (--no-gpu)"
    try:
        import cupy
    except ImportError:
        return None, "no GPU (CuPy not installed)"
    try:
        if not cupy.is_available():
            return None, "no GPU (CuPy finds no CUDA device)"
        dev = cupy.cuda.Device()
        name = cupy.cuda.runtime.getDeviceProperties(dev.id)["name"]
        name = name.decode() if isinstance(name, bytes) else name
    except Exception as e:
        return None, f"no GPU ({type(e).__name__}: {e})"
    torch_cuda = bool(torch is not None and torch.cuda.is_available())
    return ({"cupy": cupy, "torch": torch if torch_cuda else None},
            f"{name}, CuPy {cupy.__version__}, torch CUDA {'yes' if torch_cuda else 'no'}")


def parse_threads(spec, cores):
    if not spec:
        return sorted({1, cores})
    try:
        ts = [int(s) for s in spec.split(",") if s.strip()]
    except ValueError:
        raise SystemExit(f"--threads: expected a comma list of integers, got {spec!r}") from None
    if not ts or min(ts) < 1:
        raise SystemExit(f"--threads: thread counts must be >= 1, got {spec!r}")
    return list(dict.fromkeys(ts))


def out_path(value, quick, ext):
    if value and value.lower() == "none":
        return None
    return value or os.path.join(HERE, "out", ("quick" if quick else "bench") + ext)


class Run:
    """One benchmark run: its options, its contenders, and the rows it has measured."""

    def __init__(self, args, gn, torch, gpu):
        self.args, self.gn, self.torch, self.gpu = args, gn, torch, gpu
        self.budget = args.budget or (0.08 if args.quick else 0.5)
        self.min_reps = 3 if args.quick else 5
        self.max_reps = 30 if args.quick else 100
        self.rows, self.failures = [], []
        self.na_seen = set()
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
            return [f"raised {type(e).__name__}: {e}"]
        return check.compare_all((got[k], refs[k], k) for k in got)

    def cpu_row(self, row, a, refs, case):
        st, layout, ps, t = row["stats"], row["layout"], row["pass"], row["threads"]
        try:
            call, outputs = contenders.ours(self.gn, a, case, st, layout, ps)
            errors = self._check(outputs, refs)
        except Exception as e:
            errors = [f"raised {type(e).__name__}: {e}"]
        if errors:
            row.update(status="wrong", errors=errors)
            return row
        fns = {"ours": call, "floor": contenders.floor(np, a, ps)}
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
                   x_torch=med["ours"] / med["torch"] if "torch" in med else None,
                   timings={k: timing.summary(v) for k, v in samples.items()})
        return row

    def gpu_row(self, row, a, refs, case):
        cupy = self.gpu["cupy"]
        st, layout, ps = row["stats"], row["layout"], row["pass"]
        try:
            d = contenders.to_device(cupy, a)
            call, outputs = contenders.ours(self.gn, d, case, st, layout, ps,
                                            to_host=cupy.asnumpy)
        except NotAvailable as e:
            return {"na": str(e)}
        except ImportError as e:  # the package was built without its GPU backend
            return {"na": f"gn_native GPU backend: {e}"}
        except Exception as e:
            return {"status": "wrong", "errors": [f"raised {type(e).__name__}: {e}"]}
        errors = self._check(outputs, refs)
        if errors:
            return {"status": "wrong", "errors": errors}
        fns = {"ours": call, "copy": contenders.floor(cupy, d, ps)}
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
                 x_torch=med["ours"] / med["torch"] if "torch" in med else None,
                 timings={k: timing.summary(v) for k, v in samples.items()})
        return g

    def note_failure(self, row, where, errors, bar):
        name = (f"{row['case']} {row['shape']} {row['dtype']} {row['layout']} stats={row['stats']} "
                f"{row['pass']} threads={row['threads']} {where}")
        self.failures.append({"case": name, "errors": errors})
        bar.write(f"WRONG RESULT: {name}: " + "; ".join(errors), out=sys.stderr)

    def note_na(self, reason, bar):
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


def main(argv=None):
    args = parse_args(argv)
    t_start = time.perf_counter()
    gn = import_gn()
    torch = import_torch(args)
    gpu, gpu_line = detect_gpu(args, torch)
    cores = report.available_cores()
    threads = parse_threads(args.threads, cores)
    cases = select_cases(args.cases, args.quick)
    dtypes = select(args.dtype, ALL_DTYPES, "--dtype") or list(DTYPES)
    layouts = select(args.layout, LAYOUTS, "--layout") or list(LAYOUTS)
    stats_modes = select(args.stats, STATS, "--stats") or list(STATS)
    passes = select(args.passes, PASSES, "--pass") or list(PASSES)

    run = Run(args, gn, torch, gpu)
    env = report.environment(gn, torch, gpu_line, threads, args)
    env["timing"] = {"budget_s_per_row": run.budget, "min_reps": run.min_reps,
                     "max_reps": run.max_reps, "gap_ms": run.gap_s * 1e3}
    for line in report.header_lines(env):
        print(line)
    print()
    with_gpu = gpu is not None
    for line in report.table_header(with_gpu):
        print(line)
    sys.stdout.flush()

    threads_before = gn.get_num_threads()
    bar = Progress(len(cases) * len(dtypes) * len(layouts) * len(stats_modes) * len(passes)
                   * len(threads))
    try:
        for case in cases:
            for dname in dtypes:
                data = make_data(case, dtype_of(dname), args.seed)
                for st in stats_modes:
                    bar.start(f"{case.name} {dname} {st}: reference")
                    refs = references(data, case, st, passes)
                    for layout in layouts:
                        a = {k: in_layout(v, layout) if k in ("x", "dy") else v
                             for k, v in data.items()}
                        for ps in passes:
                            for i, t in enumerate(threads):
                                bar.start(f"{case.name} {dname} {layout} {st} {ps} t={t}")
                                run.set_threads(t)
                                row = {"case": case.name, "shape": case.label(), "dtype": dname,
                                       "layout": layout, "stats": st, "pass": ps, "threads": t,
                                       "bytes": (2 if ps == "forward" else 3) * a["x"].nbytes}
                                run.cpu_row(row, a, refs[ps], case)
                                if row["status"] != "ok":
                                    run.note_failure(row, "(CPU)", row["errors"], bar)
                                run.note_na(row.get("torch_na"), bar)
                                if gpu is not None and i == 0:
                                    row["gpu"] = run.gpu_row(row, a, refs[ps], case)
                                    if row["gpu"].get("status") == "wrong":
                                        run.note_failure(row, "(GPU)", row["gpu"]["errors"], bar)
                                    run.note_na(row["gpu"].get("na") or row["gpu"].get("torch_na"), bar)
                                run.rows.append(row)
                                bar.step()
                                bar.write(report.format_row(row, with_gpu))
                del data, refs, a
        bar.close()

        over = []
        if not args.no_overhead:
            print("\nPython overhead (forward, float32; median of interleaved calls)")
            for t in threads:
                run.set_threads(t)
                med = overhead.measure(gn, torch, 0.1 if args.quick else 0.4)
                over.append({"threads": t, **{k + "_s": v for k, v in med.items()}})
                for line in overhead.lines(t, med):
                    print(line)
    finally:
        bar.close()
        gn.set_num_threads(threads_before)

    for line in report.summary_lines(run.rows, with_gpu):
        print(line)
    elapsed = time.perf_counter() - t_start
    print(f"\n{len(run.rows)} rows in {elapsed:.1f} s")

    json_path = out_path(args.json, args.quick, ".json")
    if json_path:
        report.write_json(json_path, {"environment": env, "rows": run.rows, "overhead": over,
                                      "failures": run.failures, "elapsed_s": elapsed})
        print(f"results: {json_path}")
    plot_path = out_path(args.plot, args.quick, ".png")
    if plot_path:
        try:
            import plot
            plot.plot(run.rows, plot_path, title=f"gn_native on {env['cpu']}; GPU: {gpu_line}")
            print(f"plot: {plot_path}")
        except ImportError as e:
            print(f"plot skipped: {e}", file=sys.stderr)

    if run.failures:
        print(f"\n{len(run.failures)} WRONG RESULT(S):", file=sys.stderr)
        for f in run.failures:
            print(f"  {f['case']}: " + "; ".join(f["errors"]), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
