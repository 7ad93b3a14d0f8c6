"""A developer's tool: the CPU speed targets, checked against saved runs of bench/run.py.

    python bench/targets.py bench/out/run1.json bench/out/run2.json ...

One run on a shared machine says little, so the runs are pooled (each row's
median over the runs) before the targets are checked.  Each target reports
its worst row, so a "NOT met" names what to look at.  Runs with
`--activation silu` add issue 13's targets for fused GN+SiLU, runs with `--add` its
target for add=.
"""
import json
import pathlib
import statistics
import sys

KEY = ("case", "dtype", "layout", "stats", "activation", "add", "pass", "threads")


def _key(r):
    return tuple(r.get(k, "none") for k in KEY)  # runs saved before --activation/--add: "none"


def pooled(docs):
    """The rows of several saved runs, each with the median of its times and ratios."""
    by = {}
    for r in (r for d in docs for r in d["rows"] if r.get("status") == "ok"):
        by.setdefault(_key(r), []).append(r)
    out = []
    for rs in by.values():
        vals = {k: [r[k] for r in rs if r.get(k) is not None]
                for k in ("ms", "x_floor", "x_torch", "x_plain")}
        out.append(dict(rs[0], runs=len(rs),
                        **{k: statistics.median(v) if v else None for k, v in vals.items()}))
    return out


def checks(rows):
    """[(target, limit, worst (value, row) or None)]; float32 NCHW sample GN alone unless
    it says."""
    rows = [dict(r, activation=r.get("activation", "none"), add=r.get("add", "none"))
            for r in rows if r.get("status") == "ok"]
    idx = {_key(r): r for r in rows}
    tmax = max((r["threads"] for r in rows), default=1)
    lab = lambda r: f"{r['case']} {r['pass']} t={r['threads']}"  # noqa: E731

    def base(r, ps=None, stats="sample", layout="nchw", big=False, act="none", add="none"):
        # layout None: both; big: cases of 1 MiB or more (x; bytes counts x + y or dy + x + dx)
        return ((r["dtype"], r["stats"], r["activation"], r["add"]) == ("float32", stats, act, add)
                and layout in (None, r["layout"]) and ps in (None, r["pass"])
                and (not big or r["x_bytes"] >= 1 << 20))

    def over(r, **other):  # r's time over the time of the same row with `other` changed
        o = idx.get(_key({**r, **other}))
        return o and (r["ms"] / o["ms"], f"{lab(r)} {r['dtype']} {r['layout']} {r['stats']}")

    for r in rows:      # x's bytes, from the bytes a pass moves (x + y, + add + sum, dy + x + dx)
        r["x_bytes"] = r["bytes"] // ((2 + 2 * (r["add"] == "full")) if r["pass"] == "forward" else 3)
    out = []
    for ps, lims in (("forward", (1.3, 1.0)), ("backward", (1.6, 1.3))):
        for t, lim in zip(dict.fromkeys((1, tmax)), lims):
            out.append((f"{ps} x floor <= {lim} at {t} thread(s) (cases of 1 MiB or more)", lim,
                        [(r["x_floor"], lab(r)) for r in rows if base(r, ps, big=True)
                         and r["threads"] == t]))
        out.append((f"{ps} >= 2x faster than torch (x torch <= 0.5), every case and thread count",
                    0.5, [(r["x_torch"], lab(r)) for r in rows if base(r, ps)]))
    out += [("NHWC time <= 1.2x NCHW time (same case)", 1.2,
             [over(r, layout="nchw") for r in rows if base(r, layout="nhwc")]),
            ("stats='batch' forward x floor <= 1.6 (cases of 1 MiB or more)", 1.6,
             [(r["x_floor"], lab(r)) for r in rows if base(r, "forward", "batch", big=True)]),
            ("16-bit forward time <= float32's (same shape, layout, stats, threads)", 1.0,
             [over(r, dtype="float32") for r in rows
              if r["pass"] == "forward" and r["dtype"] in ("bfloat16", "float16")
              and r["activation"] == "none"])]
    if any(r["activation"] == "silu" for r in rows):  # issue 13, item 5
        big = lambda r, ps: base(r, ps, layout=None, big=True, act="silu")  # noqa: E731
        lay = lambda r: f"{lab(r)} {r['layout']}"  # noqa: E731
        for ps, lim in (("forward", 1.15), ("backward", 1.2)):
            out += [(f"GN+SiLU {ps} time <= {lim}x GN alone's (x plain; NCHW and NHWC, cases of "
                     "1 MiB or more)", lim, [(r["x_plain"], lay(r)) for r in rows if big(r, ps)]),
                    (f"GN+SiLU {ps} >= 2.5x faster than torch's silu(group_norm) (x torch <= "
                     "0.4; same cases)", 0.4, [(r["x_torch"], lay(r)) for r in rows if big(r, ps)])]
    adds = [r for r in rows if r["add"] != "none" and r["activation"] in ("none", "silu")]
    if adds:  # issue 13, item 5: x + add, GN (+ SiLU) against GN alone
        out.append(("GN with add= (+ SiLU) forward time <= 1.35x GN alone's (x plain; NCHW and "
                    "NHWC, cases of 1 MiB or more)", 1.35,
                    [(r["x_plain"], f"{lab(r)} {r['layout']} {r['activation']}+{r['add']}")
                     for r in adds if base(r, "forward", layout=None, big=True,
                                           act=r["activation"], add=r["add"])]))
    return [(text, lim, max((v for v in vals if v and v[0] is not None and v[0] == v[0]),
                            default=None)) for text, lim, vals in out]


def lines(rows, title="Targets"):
    res = checks(rows)
    width = max(len(text) for text, _, _ in res)
    return [title] + [f"  {text:<{width}}  " + ("(no rows)" if w is None else
                      f"worst {w[0]:5.2f} ({w[1]}): {'met' if w[0] <= lim else 'NOT met'}")
                      for text, lim, w in res]


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    docs = [json.loads(pathlib.Path(p).read_text()) for p in sys.argv[1:]]
    print("\n".join(lines(pooled(docs), f"Targets, medians over {len(docs)} run(s)")))
