"""A PNG of a run: time and ratios per row, CPU (each thread count) vs torch vs GPU.

Two panels per pass, one above the other.  Upper: median time (log scale)
of ours, of torch and of the GPU.  Lower: ours / memory floor and ours /
torch, with the line 1.0 drawn (below it torch is slower; the floor is
rarely beaten).
"""
import os

_SHORT = {"float32": "f32", "bfloat16": "bf16", "float16": "f16", "float64": "f64"}


def _label(r):
    return f"{r['case']} {_SHORT.get(r['dtype'], r['dtype'])} {r['layout']} {r['stats'][:4]}"


def plot(rows, path, title=""):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import ticker

    rows = [r for r in rows if r["status"] == "ok"]
    passes = [p for p in ("forward", "backward") if any(r["pass"] == p for r in rows)]
    if not passes:
        return
    threads = sorted({r["threads"] for r in rows})
    n_max = max(len({_label(r) for r in rows if r["pass"] == p}) for p in passes)
    fig, axes = plt.subplots(2 * len(passes), 1, squeeze=False, layout="constrained",
                             figsize=(max(8.0, 0.26 * n_max + 3), 5.4 * len(passes)),
                             height_ratios=[1.0, 1.35] * len(passes))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for col, ps in enumerate(passes):
        labels = list(dict.fromkeys(_label(r) for r in rows if r["pass"] == ps))
        pos = {lab: i for i, lab in enumerate(labels)}
        t_ax, r_ax = axes[2 * col][0], axes[2 * col + 1][0]
        for k, t in enumerate(threads):
            rs = [r for r in rows if r["pass"] == ps and r["threads"] == t]
            xs = [pos[_label(r)] for r in rs]
            c = colors[k % len(colors)]
            t_ax.plot(xs, [r["ms"] for r in rs], "o", color=c, label=f"ours, {t} thr")
            tr = [(x, r["timings"]["torch"]["median_s"] * 1e3) for x, r in zip(xs, rs)
                  if "torch" in r.get("timings", {})]
            if tr:
                t_ax.plot(*zip(*tr), "x", color=c, label=f"torch, {t} thr")
            r_ax.plot(xs, [r["x_floor"] for r in rs], "o", color=c, label=f"x floor, {t} thr")
            xt = [(x, r["x_torch"]) for x, r in zip(xs, rs) if r.get("x_torch")]
            if xt:
                r_ax.plot(*zip(*xt), "x", color=c, label=f"x torch, {t} thr")
        gs = [(pos[_label(r)], r["gpu"]) for r in rows if r["pass"] == ps
              and r.get("gpu", {}).get("status") == "ok"]
        if gs:
            c = colors[len(threads) % len(colors)]
            t_ax.plot([x for x, _ in gs], [g["ms"] for _, g in gs], "s", color=c, label="ours, GPU")
            gt = [(x, g["timings"]["torch"]["median_s"] * 1e3) for x, g in gs
                  if "torch" in g["timings"]]
            if gt:
                t_ax.plot(*zip(*gt), "+", color=c, label="torch, GPU")
            r_ax.plot([x for x, _ in gs], [g["x_copy"] for _, g in gs], "s", color=c,
                      label="GPU x copy")
        t_ax.set_yscale("log")
        t_ax.set_ylabel("median ms (log)")
        t_ax.set_title(ps)
        t_ax.set_xticks(range(len(labels)))
        t_ax.set_xticklabels([])
        r_ax.axhline(1.0, color="gray", lw=0.8)
        r_ax.set_yscale("log")
        r_ax.yaxis.set_major_locator(ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
        r_ax.yaxis.set_major_formatter(ticker.FormatStrFormatter("%g"))
        r_ax.yaxis.set_minor_formatter(ticker.NullFormatter())
        r_ax.set_ylabel("time ratio: ours / other")
        r_ax.set_xticks(range(len(labels)))
        r_ax.set_xticklabels(labels, rotation=90, fontsize=7)
        for ax in (t_ax, r_ax):
            ax.grid(True, which="both", axis="y", alpha=0.3)
            ax.legend(fontsize=7, ncol=2)
    if title:
        fig.suptitle(title, fontsize=10)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
