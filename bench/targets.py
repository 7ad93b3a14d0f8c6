"""The CPU speed targets, checked against measured rows.

Printed at the end of a run; also a script that pools saved runs (the median
of each row over the runs), since one run on a noisy machine says little:

    python bench/targets.py bench/out/run1.json bench/out/run2.json ...

Each target reports its worst row, so a "NOT met" names what to look at.
Ratios follow the table: x floor is our time over the memory floor's (same
run, same arrays), x torch is our allocating call over torch's.
"""
import json
import statistics
import sys

MIB = 1 << 20
KEY = ("case", "dtype", "layout", "stats", "pass", "threads")


def _ok(rows):
    return [r for r in rows if r.get("status") == "ok"]


def _index(rows):
    return {tuple(r[k] for k in KEY): r for r in rows}


def _worst(items):
    """(value, label) with the largest value, or None."""
    items = [(v, lab) for v, lab in items if v is not None and v == v]
    return max(items) if items else None


def _big(r):
    return r["bytes"] >= 2 * MIB  # forward moves x + y: "a case of 1 MiB or more" of input


def _label(r, extra=""):
    return f"{r['case']} {r['pass']} t={r['threads']}{extra}"


def checks(rows, overhead=()):
    """[(target text, limit, worst (value, label) or None)] for the rows given."""
    rows = _ok(rows)
    idx = _index(rows)
    base = dict(dtype="float32", layout="nchw", stats="sample")
    threads = sorted({r["threads"] for r in rows})
    tmax = threads[-1] if threads else None
    out = []

    def add(text, limit, items):
        out.append((text, limit, _worst(items)))

    for ps, lim1, limn in (("forward", 1.3, 1.0), ("backward", 1.6, 1.3)):
        rs = [r for r in rows if r["pass"] == ps and _big(r) and r.get("x_floor") is not None
              and all(r[k] == v for k, v in base.items())]
        add(f"{ps} x floor <= {lim1} at 1 thread (f32 NCHW sample, >= 1 MiB)", lim1,
            [(r["x_floor"], _label(r)) for r in rs if r["threads"] == 1])
        if tmax and tmax > 1:
            add(f"{ps} x floor <= {limn} at {tmax} threads", limn,
                [(r["x_floor"], _label(r)) for r in rs if r["threads"] == tmax])
        rt = [r for r in rows if r["pass"] == ps and r.get("x_torch") is not None
              and all(r[k] == v for k, v in base.items())]
        add(f"{ps} >= 2x faster than torch (x torch <= 0.5), every case and thread count", 0.5,
            [(r["x_torch"], _label(r)) for r in rt])
    nh = []
    for r in rows:
        if r["layout"] != "nhwc" or r["dtype"] != "float32" or r["stats"] != "sample":
            continue
        c = idx.get((r["case"], r["dtype"], "nchw", r["stats"], r["pass"], r["threads"]))
        if c:
            nh.append((r["ms"] / c["ms"], _label(r)))
    add("NHWC time <= 1.2x NCHW time (f32 sample, same case)", 1.2, nh)
    add("stats='batch' forward x floor <= 1.6 (f32 NCHW, >= 1 MiB)", 1.6,
        [(r["x_floor"], _label(r)) for r in rows
         if r["stats"] == "batch" and r["pass"] == "forward" and r["dtype"] == "float32"
         and r["layout"] == "nchw" and _big(r) and r.get("x_floor") is not None])
    half = []
    for r in rows:
        if r["pass"] != "forward" or r["dtype"] not in ("bfloat16", "float16"):
            continue
        c = idx.get((r["case"], "float32", r["layout"], r["stats"], "forward", r["threads"]))
        if c:
            half.append((r["ms"] / c["ms"], _label(r, f" {r['dtype']} {r['layout']} {r['stats']}")))
    add("16-bit forward time <= float32's (same shape, layout, stats, threads)", 1.0, half)
    add("Python overhead of a tiny call <= 3 us over its C work", 3.0,
        [(o["python_s"] * 1e6, f"t={o['threads']}") for o in overhead
         if o.get("python_s") is not None])
    return out


def lines(rows, overhead=(), title="Targets (issue: CPU speed)"):
    res = checks(rows, overhead)
    if not res:
        return []
    width = max(len(t) for t, _, _ in res)
    out = ["", title]
    for text, limit, worst in res:
        if worst is None:
            out.append(f"  {text:<{width}}  (no rows)")
            continue
        v, lab = worst
        verdict = "met" if v <= limit else "NOT met"
        out.append(f"  {text:<{width}}  worst {v:5.2f} ({lab}): {verdict}")
    return out


def pooled(docs):
    """Rows and overhead of several saved runs: the median of each row's ratios and times."""
    by = {}
    for d in docs:
        for r in _ok(d["rows"]):
            by.setdefault(tuple(r[k] for k in KEY), []).append(r)
    rows = []
    for rs in by.values():
        r = dict(rs[0])
        for k in ("ms", "x_floor", "x_torch", "bytes"):
            vals = [x[k] for x in rs if x.get(k) is not None]
            r[k] = statistics.median(vals) if vals else None
        r["runs"] = len(rs)
        rows.append(r)
    over = {}
    for d in docs:
        for o in d.get("overhead") or ():
            if o.get("python_s") is not None:
                over.setdefault(o["threads"], []).append(o["python_s"])
    overhead = [{"threads": t, "python_s": statistics.median(vs)} for t, vs in sorted(over.items())]
    return rows, overhead


def main(argv):
    if not argv:
        print(__doc__)
        return 2
    docs = []
    for p in argv:
        with open(p) as f:
            docs.append(json.load(f))
    rows, overhead = pooled(docs)
    for line in lines(rows, overhead, f"Targets, medians over {len(docs)} run(s)"):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
