"""What a run prints and saves: the header, the table, the summary, the JSON."""
import contextlib
import datetime
import io
import json
import os
import platform
import statistics
import sys

import numpy as np

LEGEND = ("ms: median of interleaved repeats of our call writing into a preallocated output "
          "(out=).  GB/s: bytes a pass must move (forward x+y, backward dy+x+dx) / ms.\n"
          "x floor: that time / the memory floor's time on same-sized arrays "
          "(np.copyto y<-x forward, np.add dy+x->dx backward; single-threaded NumPy, "
          "preallocated), 1.00 = as fast as the copy.\n"
          "x torch: our call allocating its outputs (as torch does) / "
          "torch.nn.functional.group_norm's (autograd backward), same threads; "
          "< 1 = faster than torch.  GPU x copy: against a device copy/add.")


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def available_cores():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def openmp_runtimes():
    """Files of the OpenMP runtimes loaded in this process (Linux; [] elsewhere).

    Two of them (say the system libgomp for us and a bundled one for torch)
    each keep idle threads spinning after a parallel region, on the same cores.
    """
    names = ("libgomp", "libiomp", "libomp")
    try:
        with open("/proc/self/maps") as f:
            paths = {ln.split()[-1] for ln in f if any(n in ln for n in names)}
    except OSError:
        return []
    return sorted(p for p in paths if os.path.basename(p).startswith(names))


def load_average():
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def show_config(gn):
    """(text, value): gn.show_config()'s report as printed, and what it returned."""
    fn = getattr(gn, "show_config", None)
    if fn is None:
        return "(gn_native has no show_config)", None
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        ret = fn()
    text = buf.getvalue().rstrip()
    if ret is not None and not text:
        text = (json.dumps(ret, indent=1, default=str) if isinstance(ret, dict) else str(ret))
    return text or "(show_config printed nothing)", ret


def environment(gn, torch, gpu_line, threads, args):
    config_text, config = show_config(gn)
    return {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "gn_native": getattr(gn, "__version__", "?"),
        "gn_native_path": os.path.dirname(getattr(gn, "__file__", "") or ""),
        "show_config": config_text,
        "config": config,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "torch": getattr(torch, "__version__", None),
        "cpu": cpu_model(),
        "cores": available_cores(),
        "threads": threads,
        "openmp_runtimes": openmp_runtimes(),
        "load_average_1min": load_average(),
        "gpu": gpu_line,
        "argv": sys.argv[1:],
        "quick": args.quick,
    }


def header_lines(env):
    lines = [f"gn_native benchmark  {env['date']}",
             f"gn_native {env['gn_native']} from {env['gn_native_path']}"]
    lines += ["  " + ln for ln in env["show_config"].splitlines()]
    lines.append(f"python {env['python']}, numpy {env['numpy']}, torch "
                 f"{env['torch'] or 'not installed (x torch: n/a)'}")
    lines.append(f"CPU: {env['cpu']}, {env['cores']} cores available; "
                 f"threads timed: {', '.join(map(str, env['threads']))}")
    rts = env["openmp_runtimes"]
    lines.append(f"OpenMP runtimes loaded: {', '.join(rts) if rts else 'none found'}")
    others = env.get("others_cores_at_start")
    if others is not None:
        lines.append(f"other processes at start: {others:.2f} cores busy"
                     + (f" -- the machine is busy: timings, multi-threaded ones most, will be "
                        f"noisy" if others > NOISY_CORES else "")
                     + (f" (load average {env['load_average_1min']:.2f})"
                        if env.get("load_average_1min") is not None else ""))
    lines.append(f"GPU: {env['gpu']}")
    tm = env.get("timing")
    if tm:
        lines.append(f"timing: ~{tm['budget_s_per_row']:g} s per row, {tm['min_reps']}-"
                     f"{tm['max_reps']} interleaved rounds after warm-up"
                     + (f", {tm['gap_ms']:g} ms pause before multi-threaded calls"
                        if tm["gap_ms"] else ""))
    lines.append(LEGEND)
    return lines


# ---- the table -------------------------------------------------------------

NOISY_CORES = 0.25  # other processes' use above which a row is marked noisy

_CPU_COLS = (("case", 13, "<"), ("dtype", 8, "<"), ("layout", 6, "<"), ("stats", 6, "<"),
             ("pass", 8, "<"), ("thr", 3, ">"), ("ms", 9, ">"), ("GB/s", 7, ">"),
             ("x floor", 7, ">"), ("x torch", 7, ">"))
_GPU_COLS = (("GPU ms", 8, ">"), ("GB/s", 7, ">"), ("x copy", 6, ">"), ("x torch", 7, ">"))


def _ms(s):
    if s is None or s != s:
        return "n/a"
    ms = s * 1e3
    return f"{ms:.1f}" if ms >= 100 else f"{ms:.3f}" if ms >= 1 else f"{ms:.4f}"


def _num(v, fmt):
    return "n/a" if v is None or v != v else format(v, fmt)


def _line(cells, cols):
    return "  ".join(f"{c:{al}{w}}" for c, (_, w, al) in zip(cells, cols))


def table_header(with_gpu):
    cols = _CPU_COLS + (_GPU_COLS if with_gpu else ())
    head = _line([c[0] for c in cols], cols)
    return [head, "-" * len(head)]


def format_row(r, with_gpu):
    cells = [r["case"], r["dtype"], r["layout"], r["stats"], r["pass"], str(r["threads"])]
    if r["status"] != "ok":
        cells += ["WRONG", "", "", ""]
    else:
        cells += [_ms(r["ms"] * 1e-3), _num(r["gbps"], ".1f"),
                  _num(r["x_floor"], ".2f"), _num(r["x_torch"], ".2f")]
    noisy = (r.get("others_cores") or 0.0) > NOISY_CORES
    cols = _CPU_COLS
    if with_gpu:
        cols = _CPU_COLS + _GPU_COLS
        g = r.get("gpu")
        if not g:
            cells += ["", "", "", ""]
        elif g.get("status") == "wrong":
            cells += ["WRONG", "", "", ""]
        elif g.get("na"):
            cells += ["n/a", "", "", ""]
        else:
            cells += [_ms(g["ms"] * 1e-3), _num(g["gbps"], ".0f"),
                      _num(g["x_copy"], ".2f"), _num(g["x_torch"], ".2f")]
    return _line(cells, cols) + ("  ~" if noisy else "")


def noise_lines(rows):
    loads = [r["others_cores"] for r in rows if r.get("others_cores") is not None]
    if not loads:
        return []
    noisy = sum(v > NOISY_CORES for v in loads)
    return [f"other processes kept {statistics.mean(loads):.2f} cores busy on average while rows "
            f"ran; {noisy} row(s) marked ~ ran while they used more than {NOISY_CORES} cores"]


# ---- the summary -----------------------------------------------------------

def _med(vals):
    vals = [v for v in vals if v is not None and v == v]
    return statistics.median(vals) if vals else None


def summary_lines(rows, with_gpu):
    """Median ratios over cases and stats modes, per pass, dtype, layout and thread count."""
    ok = [r for r in rows if r["status"] == "ok"]
    if not ok:
        return []
    groups = {}
    for r in ok:
        groups.setdefault((r["pass"], r["dtype"], r["layout"], r["threads"]), []).append(r)
    cols = (("pass", 8, "<"), ("dtype", 8, "<"), ("layout", 6, "<"), ("thr", 3, ">"),
            ("rows", 4, ">"), ("GB/s", 7, ">"), ("x floor", 7, ">"), ("x torch", 7, ">"))
    if with_gpu:
        cols += (("GPU GB/s", 8, ">"), ("x copy", 6, ">"), ("GPU x torch", 11, ">"))
    head = _line([c[0] for c in cols], cols)
    out = ["", "Summary: medians over cases and stats modes "
               "(x torch over stats='sample' rows only; torch has no batch mode)",
           head, "-" * len(head)]
    for key in sorted(groups, key=lambda k: (k[0] != "forward", k[1], k[2], k[3])):
        rs = groups[key]
        cells = [key[0], key[1], key[2], str(key[3]), str(len(rs)),
                 _num(_med(r["gbps"] for r in rs), ".1f"),
                 _num(_med(r["x_floor"] for r in rs), ".2f"),
                 _num(_med(r["x_torch"] for r in rs), ".2f")]
        if with_gpu:
            gs = [r["gpu"] for r in rs if r.get("gpu") and not r["gpu"].get("na")
                  and r["gpu"].get("status") == "ok"]
            cells += ([_num(_med(g["gbps"] for g in gs), ".0f"),
                       _num(_med(g["x_copy"] for g in gs), ".2f"),
                       _num(_med(g["x_torch"] for g in gs), ".2f")] if gs else ["", "", ""])
        out.append(_line(cells, cols))
    return out


def write_json(path, doc):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(doc, f, indent=1, default=str)
        f.write("\n")
