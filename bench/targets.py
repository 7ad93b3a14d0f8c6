"""A developer's tool: the CPU speed targets, checked against saved runs of bench/run.py.

    python bench/targets.py bench/out/run1.json bench/out/run2.json ...

One run on a shared machine says little, so the runs are pooled (each row's
median over the runs) before the targets are checked.  Each target reports
its worst row, so a "NOT met" names what to look at.  Ratios are the table's:
x floor is our time over the memory floor's, x torch our allocating call
over torch's.
"""
import json
import statistics
import sys

KEY = ("case", "dtype", "layout", "stats", "pass", "threads")
BASE = {"dtype": "float32", "layout": "nchw", "stats": "sample"}


def _worst(items):
    items = [(v, lab) for v, lab in items if v is not None and v == v]
    return max(items) if items else None


def checks(rows):
    """[(target text, limit, worst (value, label) or None)]."""
    rows = [r for r in rows if r.get("status") == "ok"]
    idx = {tuple(r[k] for k in KEY): r for r in rows}
    base = [r for r in rows if all(r[k] == v for k, v in BASE.items())]
    big = [r for r in base if r["bytes"] >= 2 << 20]  # x + y of a case of 1 MiB or more
    tmax = max((r["threads"] for r in rows), default=1)
    lab = lambda r, extra="": f"{r['case']} {r['pass']} t={r['threads']}{extra}"  # noqa: E731

    def ratio_to(r, **other):  # r's time over the same row with `other` changed
        o = idx.get(tuple({**r, **other}[k] for k in KEY))
        return (r["ms"] / o["ms"], lab(r, f" {r['dtype']} {r['layout']} {r['stats']}")) if o else (None, "")

    out = []
    for ps, lim1, limn in (("forward", 1.3, 1.0), ("backward", 1.6, 1.3)):
        for t, lim in ((1, lim1), (tmax, limn)) if tmax > 1 else ((1, lim1),):
            out.append((f"{ps} x floor <= {lim} at {t} thread(s) (f32 NCHW sample, >= 1 MiB)", lim,
                        [(r["x_floor"], lab(r)) for r in big if r["pass"] == ps and r["threads"] == t]))
        out.append((f"{ps} >= 2x faster than torch (x torch <= 0.5), every case and thread count",
                     0.5, [(r.get("x_torch"), lab(r)) for r in base if r["pass"] == ps]))
    out.append(("NHWC time <= 1.2x NCHW time (f32 sample, same case)", 1.2,
                [ratio_to(r, layout="nchw") for r in rows if r["layout"] == "nhwc"
                 and r["dtype"] == "float32" and r["stats"] == "sample"]))
    out.append(("stats='batch' forward x floor <= 1.6 (f32 NCHW, >= 1 MiB)", 1.6,
                [(r["x_floor"], lab(r)) for r in rows if r["stats"] == "batch"
                 and r["pass"] == "forward" and r["dtype"] == "float32"
                 and r["layout"] == "nchw" and r["bytes"] >= 2 << 20]))
    out.append(("16-bit forward time <= float32's (same shape, layout, stats, threads)", 1.0,
                [ratio_to(r, dtype="float32") for r in rows if r["pass"] == "forward"
                 and r["dtype"] in ("bfloat16", "float16")]))
    return [(text, limit, _worst(items)) for text, limit, items in out]


def lines(rows, title="Targets"):
    res = checks(rows)
    width = max(len(t) for t, _, _ in res)
    out = [title]
    for text, limit, worst in res:
        verdict = ("(no rows)" if worst is None else
                   f"worst {worst[0]:5.2f} ({worst[1]}): {'met' if worst[0] <= limit else 'NOT met'}")
        out.append(f"  {text:<{width}}  {verdict}")
    return out


def pooled(docs):
    """The rows of several saved runs, each with the median of its times and ratios."""
    by = {}
    for d in docs:
        for r in d["rows"]:
            if r.get("status") == "ok":
                by.setdefault(tuple(r[k] for k in KEY), []).append(r)
    rows = []
    for rs in by.values():
        r = dict(rs[0], runs=len(rs))
        for k in ("ms", "x_floor", "x_torch"):
            vals = [x[k] for x in rs if x.get(k) is not None]
            r[k] = statistics.median(vals) if vals else None
        rows.append(r)
    return rows


def main(paths):
    if not paths:
        print(__doc__)
        return 2
    docs = []
    for p in paths:
        with open(p) as f:
            docs.append(json.load(f))
    print("\n".join(lines(pooled(docs), f"Targets, medians over {len(docs)} run(s)")))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
