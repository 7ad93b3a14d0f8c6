"""Benchmark gn_native against the memory floor and PyTorch (and on the GPU, when there is one).

    python bench/run.py                 # every default case; about 2 minutes on 2 cores
    python bench/run.py --quick         # a reduced set, well under a minute
    python bench/run.py --threads 1,2 --cases sd-unet --dtype float32 --pass forward
    python bench/run.py --activation silu   # fused GN+SiLU, beside GN alone and torch's
    python bench/run.py --add full,nc --activation silu   # SkipGroupNorm: x + add, GN, SiLU

Every row is checked against the test suite's float64 reference, with its
tolerances, before it is timed; a wrong result is reported by name, left
untimed, and makes the run exit with status 1.  Nothing here judges speed
(bench/targets.py checks the speed goals against saved runs).
"""
import argparse
import importlib
import itertools
import json
import os
import sys
import time
import types

import report
from cases import CHOICES, DEFAULTS, QUICK, TINY, in_layout, make_data, select, select_cases
from measure import Rows, references


def thread_counts(spec):
    ts = list(dict.fromkeys(int(s) for s in spec.split(",") if s.strip()))
    if not ts or min(ts) < 1:
        raise ValueError(spec)
    return ts


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=thread_counts,
                   help="CPU thread counts, e.g. 1,2 (default: 1 and all cores)")
    p.add_argument("--quick", action="store_true", help=f"cases {', '.join(QUICK)}, fewer repeats")
    p.add_argument("--cases", help="comma list of case names (or prefixes), or NxCxHxW/G shapes")
    more = {"activation": "; GN then the activation in one call, timed beside GN alone (x plain)"
                          " and against torch's act(group_norm(x))",
            "add": "; forward with add= of x's shape (writing the sum too, sum_out=) or (N, C),"
                   " timed beside GN alone (x plain) and against torch's group_norm(x + add)"}
    for flag, values in CHOICES.items():
        default = DEFAULTS.get(flag, values)
        p.add_argument(f"--{flag}", type=lambda s, f=flag: select(s, f), default=list(default),
                       help=f"comma list of {', '.join(values)} (default {', '.join(default)})"
                       + more.get(flag, ""))
    p.add_argument("--json", help="results (default bench/out/bench.json or quick.json; 'none')")
    p.add_argument("--plot", help="PNG plot (default bench/out/bench.png or quick.png; 'none')")
    p.add_argument("--budget", type=float, help="seconds of timing per row (0.4, --quick 0.08)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random inputs (default 0)")
    p.add_argument("--no-torch", action="store_true", help="leave PyTorch out")
    p.add_argument("--no-gpu", action="store_true", help="leave the GPU out")
    p.add_argument("--no-overhead", action="store_true", help="skip the call-overhead lines")
    return p.parse_args(argv)


def optional(name):
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


def detect_gpu(no_gpu, torch):
    """(gpu or None, header line); gpu holds cupy, and torch when torch has CUDA."""
    cupy = None if no_gpu else optional("cupy")
    if cupy is None:
        return None, "no GPU (--no-gpu)" if no_gpu else "no GPU (CuPy not installed)"
    try:
        if not cupy.is_available():
            return None, "no GPU (CuPy finds no CUDA device)"
        name = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)["name"]
    except Exception as e:
        return None, f"no GPU ({type(e).__name__}: {e})"
    torch_cuda = torch is not None and torch.cuda.is_available()
    return ({"cupy": cupy, "torch": torch if torch_cuda else None},
            f"{name.decode() if isinstance(name, bytes) else name}, CuPy {cupy.__version__}, "
            f"torch CUDA {'yes' if torch_cuda else 'no'}")


def progress(total):
    """A tqdm bar on stderr, on a terminal only; without tqdm the table is the progress."""
    try:
        from tqdm import tqdm
    except ImportError:
        return types.SimpleNamespace(update=lambda: None, close=lambda: None,
                                     set_description_str=lambda s: None,
                                     write=lambda s, file: print(s, file=file, flush=True))
    return tqdm(total=total, file=sys.stderr, leave=False, disable=None, unit="row",
                bar_format="{l_bar}{bar:20}| {n}/{total} [{elapsed}<{remaining}]")


def main(argv=None):
    args = parse_args(argv)
    t_start = time.perf_counter()
    sys.stdout.reconfigure(line_buffering=True)  # rows show up as they come, piped too
    try:
        import gn_native as gn
    except ImportError as e:
        raise SystemExit(f"cannot import gn_native ({e}); install it: pip install '.[bench]'")
    torch = None if args.no_torch else optional("torch")
    gpu, gpu_line = detect_gpu(args.no_gpu, torch)
    threads = args.threads or sorted({1, report.available_cores()})
    cases, passes = select_cases(args.cases, args.quick), vars(args)["pass"]
    acts, adds = args.activation, args.add
    with_act = acts != ["none"] or adds != ["none"]  # the fused and x plain columns
    configs = [c for c in itertools.product(args.layout, acts, adds, passes, threads)
               if c[2] == "none" or c[3] == "forward"]   # add= is a forward option
    timing = {"budget_s": args.budget or (0.08 if args.quick else 0.4),
              "reps": (3, 30) if args.quick else (5, 100)}
    run = Rows(gn, torch, gpu, timing["budget_s"], timing["reps"],
               say=lambda s: bar.write(s, file=sys.stderr))  # bar: made below, after the header
    env = report.environment(gn, torch, gpu_line, quick=args.quick, threads=threads, timing=timing,
                             activation=acts, add=adds)
    print("\n".join(report.header_lines(env, gpu is not None, with_act)))
    bar = progress(len(cases) * len(args.dtype) * len(args.stats) * len(configs))
    for case, dname in itertools.product(cases, args.dtype):
        data = make_data(case, dname, args.seed)
        arrays = {lay: in_layout(data, lay) for lay in args.layout}
        for st in args.stats:
            bar.set_description_str(f"{case.name} {dname} {st}: reference")
            refs = references(data, case.g, st, passes, acts, adds)
            for layout, act, add, ps, t in configs:
                bar.set_description_str(f"{case.name} {dname} {layout} {st} {act} {add} {ps} "
                                        f"t={t}")
                row = run.measure(case, dname, layout, st, act, add, ps, t, arrays[layout], refs,
                                  gpu is not None and t == threads[0])
                bar.write(report.format_row(row, gpu is not None, with_act), file=sys.stdout)
                bar.update()
    bar.close()
    over = []
    if not args.no_overhead:
        print(f"\nCall overhead (forward, float32, tiny {TINY.label()}; medians): call = a plain "
              f"call, out = with out=,\n  empty = a (1, {TINY.g}, 1, 1) call with no work (the "
              "fixed cost), torch = torch's group_norm")
        for t in threads:
            run.set_threads(t)
            med = run.overhead(make_data(TINY, "float32", 0), TINY.g)
            over.append({"threads": t, **{k + "_s": v for k, v in med.items()}})
            print(f"threads={t}: " + ", ".join(f"{k} {v * 1e6:.1f} us" for k, v in med.items()))

    elapsed = time.perf_counter() - t_start
    failures = report.failures(run.rows)
    print("\n".join(report.summary_lines(run.rows, gpu is not None, with_act)
                    + ["", f"{len(run.rows)} rows in {elapsed:.1f} s"]
                    + report.noise_lines(run.rows)))
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "out",
                       "quick" if args.quick else "bench")
    json_path = None if args.json == "none" else args.json or out + ".json"
    plot_path = None if args.plot == "none" else args.plot or out + ".png"
    if json_path:
        os.makedirs(os.path.dirname(os.path.abspath(json_path)), exist_ok=True)
        with open(json_path, "w") as f:
            json.dump({"environment": env, "rows": run.rows, "overhead": over,
                       "failures": failures, "elapsed_s": elapsed}, f, indent=1, default=str)
        print(f"results: {json_path}")
    if plot_path and optional("matplotlib") is None:
        print("plot skipped: matplotlib is not installed", file=sys.stderr)
    elif plot_path:
        import plot
        plot.plot(run.rows, plot_path, f"gn_native on {env['cpu']}; GPU: {gpu_line}")
        print(f"plot: {plot_path}")
    for f in failures:
        print(f"WRONG RESULT: {f}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
