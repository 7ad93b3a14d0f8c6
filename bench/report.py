"""What a run prints and saves: the header, the table, the summary, the noise warning, the JSON."""
import contextlib
import datetime
import io
import json
import os
import platform
import statistics
import sys
import textwrap

import numpy as np

import timing

NOISY_CORES = 0.25  # other processes' CPU use above which a row is marked noisy (~)
LEGEND = """\
ms: median of interleaved repeats of our call writing into a preallocated output (out=).
GB/s: bytes a pass must move (forward x+y, backward dy+x+dx) / ms.
x floor: that time / the memory floor's (np.copyto y<-x forward, np.add dy+x->dx backward,
  single-threaded NumPy, preallocated, same run); 1.00 = as fast as a copy.
x torch: our call allocating its outputs / torch.nn.functional.group_norm's (autograd
  backward), same threads, same run; < 1 = faster than torch.  GPU x copy: against a device
  copy/add.  ~: other processes were busy while the row ran (noisy)."""


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            return next(ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def available_cores():
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def environment(gn, torch, gpu_line, threads, args):
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        gn.show_config()
    return {"date": datetime.datetime.now().isoformat(timespec="seconds"),
            "gn_native": gn.__version__, "gn_native_path": os.path.dirname(gn.__file__),
            "show_config": buf.getvalue().rstrip(), "python": platform.python_version(),
            "numpy": np.__version__, "torch": getattr(torch, "__version__", None),
            "cpu": cpu_model(), "cores": available_cores(), "threads": threads,
            "openmp_runtimes": timing.openmp_runtimes(), "gpu": gpu_line,
            "argv": sys.argv[1:], "quick": args.quick}


def header_lines(env):
    lines = [f"gn_native benchmark  {env['date']}",
             f"gn_native {env['gn_native']} from {env['gn_native_path']}"]
    lines += ["  " + ln for ln in env["show_config"].splitlines()]
    lines += [f"python {env['python']}, numpy {env['numpy']}, torch "
              f"{env['torch'] or 'not installed (x torch: n/a)'}",
              f"CPU: {env['cpu']}, {env['cores']} cores available; "
              f"threads timed: {', '.join(map(str, env['threads']))}",
              f"OpenMP runtimes loaded: {', '.join(env['openmp_runtimes']) or 'none found'}",
              f"GPU: {env['gpu']}"]
    others = env.get("others_cores_at_start")
    if others is not None and others > NOISY_CORES:
        lines.append(f"warning: other processes keep {others:.2f} cores busy: timings, "
                     "multi-threaded ones most, will be noisy")
    tm = env["timing"]
    lines.append(f"timing: ~{tm['budget_s_per_row']:g} s per row, {tm['reps'][0]}-"
                 f"{tm['reps'][1]} interleaved rounds after warm-up"
                 + (f", {tm['gap_ms']:g} ms pause before multi-threaded calls"
                    if tm["gap_ms"] else ""))
    return lines + [LEGEND]


_CPU_COLS = (("case", 13, "<"), ("dtype", 8, "<"), ("layout", 6, "<"), ("stats", 6, "<"),
             ("pass", 8, "<"), ("thr", 3, ">"), ("ms", 9, ">"), ("GB/s", 7, ">"),
             ("x floor", 7, ">"), ("x torch", 7, ">"))
_GPU_COLS = (("GPU ms", 8, ">"), ("GB/s", 7, ">"), ("x copy", 6, ">"), ("x torch", 7, ">"))


def _num(v, fmt):
    return "n/a" if v is None or v != v else format(v, fmt)


def _ms(v):
    return _num(v, ".1f" if v >= 100 else ".3f" if v >= 1 else ".4f")


def _line(cells, cols):
    return "  ".join(f"{c:{al}{w}}" for c, (_, w, al) in zip(cells, cols))


def table_header(with_gpu):
    cols = _CPU_COLS + (_GPU_COLS if with_gpu else ())
    head = _line([c[0] for c in cols], cols)
    return [head, "-" * len(head)]


def noisy(r):
    return (r.get("others_cores") or 0.0) > NOISY_CORES


def format_row(r, with_gpu):
    cells = [r["case"], r["dtype"], r["layout"], r["stats"], r["pass"], str(r["threads"])]
    cells += (["WRONG", "", "", ""] if r["status"] != "ok" else
              [_ms(r["ms"]), _num(r["gbps"], ".1f"), _num(r["x_floor"], ".2f"),
               _num(r["x_torch"], ".2f")])
    if with_gpu:
        g = r.get("gpu") or {}
        cells += (["WRONG" if g.get("status") == "wrong" else "n/a" if g.get("na") else "",
                   "", "", ""] if g.get("status") != "ok" else
                  [_ms(g["ms"]), _num(g["gbps"], ".0f"), _num(g["x_copy"], ".2f"),
                   _num(g["x_torch"], ".2f")])
    return _line(cells, _CPU_COLS + (_GPU_COLS if with_gpu else ())) + ("  ~" if noisy(r) else "")


def noise_lines(rows):
    """A warning when other processes were busy enough to make the timings noisy."""
    loads = [r["others_cores"] for r in rows if r.get("others_cores") is not None]
    n = sum(noisy(r) for r in rows)
    if not n:
        return []
    return ["", textwrap.fill(
        f"warning: this machine was busy: other processes kept {statistics.mean(loads):.2f} "
        f"cores busy on average, and {n} of {len(rows)} rows (marked ~) ran while they used "
        f"more than {NOISY_CORES} cores.  Those timings, multi-threaded ones most, are noisy: "
        "rerun on an idle machine, or pool several saved runs with bench/targets.py.", 92)]


def _med(vals):
    vals = [v for v in vals if v is not None and v == v]
    return statistics.median(vals) if vals else None


def summary_lines(rows, with_gpu):
    """Median ratios over cases and stats modes, per pass, dtype, layout and thread count."""
    groups = {}
    for r in rows:
        if r["status"] == "ok":
            groups.setdefault((r["pass"], r["dtype"], r["layout"], r["threads"]), []).append(r)
    cols = (("pass", 8, "<"), ("dtype", 8, "<"), ("layout", 6, "<"), ("thr", 3, ">"),
            ("rows", 4, ">"), ("GB/s", 7, ">"), ("x floor", 7, ">"), ("x torch", 7, ">"))
    if with_gpu:
        cols += (("GPU GB/s", 8, ">"), ("x copy", 6, ">"), ("GPU x torch", 11, ">"))
    head = _line([c[0] for c in cols], cols)
    out = ["", "Summary: medians over cases and stats modes (x torch: stats='sample' only; "
               "torch has no batch mode)", head, "-" * len(head)]
    for key in sorted(groups, key=lambda k: (k[0] != "forward",) + k[1:]):
        rs = groups[key]
        cells = [*key[:3], str(key[3]), str(len(rs))]
        cells += [_num(_med(r[k] for r in rs), f) for k, f in
                  (("gbps", ".1f"), ("x_floor", ".2f"), ("x_torch", ".2f"))]
        gs = [r["gpu"] for r in rs if (r.get("gpu") or {}).get("status") == "ok"]
        if with_gpu:
            cells += [_num(_med(g[k] for g in gs), f) for k, f in
                      (("gbps", ".0f"), ("x_copy", ".2f"), ("x_torch", ".2f"))]
        out.append(_line(cells, cols))
    return out if groups else []


def write_json(path, doc):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(doc, f, indent=1, default=str)
        f.write("\n")
