"""What a run prints and saves: the header, the table, the summary, the noise warning, the JSON."""
import contextlib
import datetime
import io
import os
import platform
import statistics
import sys
import textwrap

import numpy as np

NOISY_CORES = 0.25  # other processes' CPU use above which a row is marked noisy (~)
LEGEND = """\
ms: median time of our call writing into a preallocated output (out=).
GB/s: bytes a pass must move (forward x+y, backward dy+x+dx) / ms.
x floor: that time / the memory floor's (np.copyto y<-x, np.add dy+x->dx: single-threaded
  NumPy, preallocated, same rounds); 1.00 = as fast as a copy.  GPU x copy: a device copy/add.
x torch: our call allocating its outputs / torch group_norm's (autograd backward), same
  threads, same rounds; < 1: ours is faster.  ~: other processes were busy (noisy timings)."""
LEGEND_ACT = """\
fused: the activation fused after GN (y = act(gamma * xhat + beta)); x torch is then against
  torch's F.<act>(F.group_norm(x)) (autograd backward through both).  +full / +nc: add= of
  x's shape (the sum written too, sum_out=) or (N, C), against torch's group_norm(x + add).
x plain: our fused call's time / our plain call's (GN alone, out=), same rounds."""
CPU_COLS = (("case", 13), ("dtype", 8), ("layout", 6), ("stats", 6), ("pass", 8), ("thr", 3),
            ("ms", 9), ("GB/s", 7), ("x floor", 7), ("x torch", 7))
GPU_COLS = (("GPU ms", 8), ("GB/s", 7), ("x copy", 6), ("x torch", 7))


def available_cores():
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def environment(gn, torch, gpu_line, **more):
    """What the JSON keeps of the machine, the libraries and the run."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
    with contextlib.redirect_stdout(io.StringIO()) as buf:
        gn.show_config()
    return {"date": datetime.datetime.now().isoformat(timespec="seconds"),
            "gn_native": gn.__version__, "gn_native_path": os.path.dirname(gn.__file__),
            "show_config": buf.getvalue().rstrip(), "python": platform.python_version(),
            "numpy": np.__version__, "torch": getattr(torch, "__version__", None), "cpu": cpu,
            "cores": available_cores(), "gpu": gpu_line, "argv": sys.argv[1:], **more}


def fused(r):
    """The row's fused extras: its activation, and +full / +nc for an add."""
    act, add = r.get("activation", "none"), r.get("add", "none")
    return act if add == "none" else f"{act}+{add}".removeprefix("none")


FUSED_COL = (("fused", 14),)


def columns(with_gpu, with_act):
    """(the table's columns, how many of them are names): a fused column and x plain
    (CPU, and GPU) when the run has an activation or an add."""
    act, plain = (FUSED_COL, (("x plain", 7),)) if with_act else ((), ())
    return (CPU_COLS[:5] + act + CPU_COLS[5:] + plain
            + (GPU_COLS + plain if with_gpu else ()), 5 + len(act))


def header_lines(env, with_gpu, with_act=False):
    return [f"gn_native benchmark  {env['date']}",
            f"gn_native {env['gn_native']} from {env['gn_native_path']}",
            *("  " + ln for ln in env["show_config"].splitlines()),
            f"python {env['python']}, numpy {env['numpy']}, torch "
            f"{env['torch'] or 'not installed (x torch: n/a)'}",
            f"CPU: {env['cpu']}, {env['cores']} cores available; threads timed: "
            f"{', '.join(map(str, env['threads']))}", f"GPU: {env['gpu']}",
            f"timing: ~{env['timing']['budget_s']:g} s per row, {env['timing']['reps'][0]}-"
            f"{env['timing']['reps'][1]} interleaved rounds after warm-up", LEGEND,
            *([LEGEND_ACT] if with_act else []), "", *_table_head(*columns(with_gpu, with_act))]


def _line(cells, cols, left):
    """The first `left` cells (names) left-aligned, the others (numbers) right-aligned."""
    return "  ".join(f"{c:{'<' if i < left else '>'}{w}}"
                     for i, (c, (_, w)) in enumerate(zip(cells, cols)))


def _table_head(cols, left):
    head = _line([c[0] for c in cols], cols, left)
    return [head, "-" * len(head)]


def _num(v, fmt):
    return "n/a" if v is None or v != v else format(v, fmt)


def noisy(r):
    return (r.get("others_cores") or 0.0) > NOISY_CORES


def _cells(d, gbps_fmt, with_act):
    """ms, GB/s, x floor, x torch (and x plain) of one side of a row (CPU or GPU)."""
    if d.get("status") == "ok":
        ms = d["ms"]
        return [_num(ms, ".1f" if ms >= 100 else ".3f" if ms >= 1 else ".4f"),
                _num(d["gbps"], gbps_fmt), _num(d["x_floor"], ".2f"), _num(d["x_torch"], ".2f"),
                *([_num(d.get("x_plain"), ".2f")] if with_act else [])]
    return ["WRONG" if d.get("status") == "wrong" else "n/a" if d.get("na") else ""] + [""] * (
        3 + with_act)


def format_row(r, with_gpu, with_act=False):
    cells = [r["case"], r["dtype"], r["layout"], r["stats"], r["pass"],
             *([fused(r)] if with_act else []), r["threads"],
             *_cells(r, ".1f", with_act),
             *(_cells(r.get("gpu") or {}, ".0f", with_act) if with_gpu else ())]
    return _line(cells, *columns(with_gpu, with_act)) + ("  ~" if noisy(r) else "")


def _medians(sides, gbps_fmt, with_act):
    """Median GB/s, x floor and x torch (and x plain) over the timed sides of some rows."""
    out = []
    for k in ("gbps", "x_floor", "x_torch", "x_plain")[:3 + with_act]:
        fmt = gbps_fmt if k == "gbps" else ".2f"
        vals = [d[k] for d in sides if d.get(k) is not None]
        out.append(_num(statistics.median(vals) if vals else None, fmt))
    return out


def summary_lines(rows, with_gpu, with_act=False):
    """Median ratios over cases and stats modes, per pass, (activation,) dtype, layout and
    thread count."""
    groups = {}
    for r in rows:
        if r["status"] == "ok":
            act = (fused(r),) if with_act else ()
            groups.setdefault((r["pass"] != "forward", r["pass"], *act, r["dtype"], r["layout"],
                               r["threads"]), []).append(r)
    act, plain = (FUSED_COL, (("x plain", 7),)) if with_act else ((), ())
    cols = (("pass", 8), *act, ("dtype", 8), ("layout", 6), ("thr", 3), ("rows", 4),
            ("GB/s", 7), ("x floor", 7), ("x torch", 7), *plain)
    cols += (("GPU GB/s", 8), ("x copy", 6), ("GPU x torch", 11), *plain) if with_gpu else ()
    out = ["", "Summary: medians over cases and stats modes (x torch: stats='sample' only; "
               "torch has no batch mode)", *_table_head(cols, 3 + len(act))]
    for key, rs in sorted(groups.items()):
        cells = [*key[1:], len(rs), *_medians(rs, ".1f", with_act)]
        if with_gpu:
            cells += _medians([r["gpu"] for r in rs if r.get("gpu", {}).get("status") == "ok"],
                              ".0f", with_act)
        out.append(_line(cells, cols, 3 + len(act)))
    return out if groups else []


def noise_lines(rows):
    """A warning when other processes were busy enough to make the timings noisy."""
    n = sum(noisy(r) for r in rows)
    if not n:
        return []
    load = statistics.mean(r["others_cores"] for r in rows if r["others_cores"] is not None)
    return ["", textwrap.fill(
        f"warning: this machine was busy: other processes kept {load:.2f} cores busy on "
        f"average, and {n} of {len(rows)} rows (marked ~) ran while they used more than "
        f"{NOISY_CORES} cores.  Those timings, multi-threaded ones most, are noisy: rerun "
        "when the machine is idle.", 92)]


def failures(rows):
    """A line per wrong result, CPU or GPU, naming the row and why."""
    return [" ".join(str(r[k]) for k in ("case", "shape", "dtype", "layout", "stats", "pass"))
            + ("" if fused(r) == "none" else f" fused={fused(r)}")
            + f" threads={r['threads']} ({side}): " + "; ".join(d["errors"])
            for r in rows for side, d in (("CPU", r), ("GPU", r.get("gpu") or {}))
            if d.get("status") == "wrong"]
