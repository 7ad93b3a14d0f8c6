"""A PNG of a run: forward and backward, each as time / memory floor and time / torch
(log scale; left of the line 1.0 ours is faster), one row per configuration, one
marker per thread count, squares for the GPU, a red ring around noisy rows."""
import os

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import LogFormatter  # noqa: E402

from report import noisy  # noqa: E402


def _label(r):
    act = r.get("activation", "none")
    return (f"{r['case']} {r['shape']}  {r['dtype']} {r['layout']} stats={r['stats']}"
            + (f" +{act}" if act != "none" else ""))


def plot(rows, path, title=""):
    rows = [r for r in rows if r["status"] == "ok"]
    passes = [p for p in ("forward", "backward") if any(r["pass"] == p for r in rows)]
    if not passes:
        return
    labels = list(dict.fromkeys(_label(r) for r in rows))[::-1]  # first row at the top
    pos = {lab: i for i, lab in enumerate(labels)}
    threads = sorted({r["threads"] for r in rows})
    fig, axes = plt.subplots(1, 2 * len(passes), sharey=True, squeeze=False, layout="constrained",
                             figsize=(4 * len(passes) + 5, 0.22 * len(labels) + 2.6))
    for ax, (ps, what) in zip(axes[0], [(p, w) for p in passes for w in ("floor", "torch")]):
        rs = [r for r in rows if r["pass"] == ps]
        series = [(f"CPU, {t} thread{'s' * (t > 1)}", "o^vD<>"[k % 6],
                   [(r, r) for r in rs if r["threads"] == t]) for k, t in enumerate(threads)]
        series.append(("GPU", "s", [(r, r["gpu"]) for r in rs
                                    if (r.get("gpu") or {}).get("status") == "ok"]))
        for name, marker, pts in series:
            pts = [(d[f"x_{what}"], pos[_label(r)]) for r, d in pts if d[f"x_{what}"] is not None]
            if pts:
                ax.plot(*zip(*pts), marker, ls="none", label=name, alpha=0.85)
        bad = [(r[f"x_{what}"], pos[_label(r)]) for _, _, pts in series[:-1] for r, _ in pts
               if r[f"x_{what}"] is not None and noisy(r)]
        if bad:
            ax.plot(*zip(*bad), "o", ms=11, mfc="none", mec="red", ls="none",
                    label="noisy (machine busy)")
        ax.axvline(1.0, color="gray", lw=0.8)
        ax.set_xscale("log")
        for axis_set in (ax.xaxis.set_major_formatter, ax.xaxis.set_minor_formatter):
            axis_set(LogFormatter())  # plain numbers: "2", "0.5", not "2x10^0"
        ax.grid(True, which="both", axis="x", alpha=0.3)
        ax.set_title(f"{ps}: time / " + ("memory floor\n(GPU: a device copy)" if what == "floor"
                                         else "torch's"), fontsize=9)
        ax.set_xlabel("time ratio, ours / other (< 1: ours faster)", fontsize=8)
    handles = {lab: h for ax in axes[0] for h, lab in zip(*ax.get_legend_handles_labels())}
    fig.legend(handles.values(), handles.keys(), loc="outside lower center", ncol=len(handles),
               fontsize=8)
    axes[0][0].set_yticks(range(len(labels)), labels, fontsize=7)
    axes[0][0].set_ylim(-0.7, len(labels) - 0.3)
    fig.suptitle(title, fontsize=10)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
