"""One row: check our result against the suite's float64 reference, then time it
against the memory floor and PyTorch in the same rounds; setup is never timed.

tests/reference.py is loaded by path: tests/ is not a package, and the
benchmark runs from a checkout with only the `bench` extra installed.
This file imports nothing else of bench/.
"""
import importlib.util
import os
import statistics
import time

import numpy as np

EPS = 1e-5
_spec = importlib.util.spec_from_file_location("gn_tests_reference", os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests", "reference.py"))
ref = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ref)


def summed(data, add):
    """x + add in x's dtype (NCHW order): what a call with add= normalizes."""
    a = data["add_full"] if add == "full" else data["add_nc"][:, :, None, None]
    return data["x"] + a


def references(data, g, stats, passes, acts=("none",), adds=("none",)):
    """Per (activation, add) ("none" too: the plain call beside a fused one) and pass,
    {output: (float64 value, the suite's tolerance for data's dtype)}, in logical NCHW
    order.  With an activation, tests/test_activation.py's policy: y = act(z) may be off
    by z's tolerance carried through |act'(z)| plus the tolerance of a result of y's size.
    With an add (forward only): the reference on x + add, and the sum itself, exactly."""
    out = {}
    for add in dict.fromkeys(("none", *adds)):
        x = data["x"] if add == "none" else summed(data, add)
        for act, r in _references(x, data, g, stats, passes if add == "none" else ("forward",),
                                  acts).items():
            if add == "full":
                r["forward"]["sum"] = (x.astype(np.float64), np.zeros(x.shape))
            out[act, add] = r
    return out


def _references(x, data, g, stats, passes, acts):
    dy, gamma, beta = data["dy"], data["gamma"], data["beta"]
    z, mean, rstd = ref.forward(x, g, gamma, beta, EPS, stats)  # forward_act's z, shared
    tol_z = ref.tolerance(z, x.dtype)
    stat_tols = ref.stats_tolerance(mean, rstd, np.float64 if x.dtype == np.float64
                                    else np.float32)
    out = {}
    for act in dict.fromkeys(("none", *acts)):
        if act == "none":
            y, tol, gin = z, tol_z, dy
        else:
            y, slope = ref.activation(z, act)
            tol = np.abs(slope) * tol_z + ref.tolerance(y, x.dtype)
            gin = ref.act_grad_in(dy, x, mean, rstd, g, gamma, beta, stats, 1, act)
        out[act] = {"forward": {"y": (y, tol), "mean": (mean, stat_tols[0]),
                                "rstd": (rstd, stat_tols[1])}}
        if "backward" in passes:  # the gradient reaching GroupNorm's output is dy * act'(z)
            want = ref.backward(gin, x, mean, rstd, g, gamma, stats)
            mags = ref.backward_magnitudes(gin, x, mean, rstd, g, gamma, stats)
            out[act]["backward"] = {k: (w, ref.tolerance(w, x.dtype, "backward", m))
                                    for k, w, m in zip(("dx", "dgamma", "dbeta"), want, mags)}
    return out


def compare(got, want):
    """A one-line reason per output of `got` outside the tolerance; [] when all pass."""
    errors = []
    for name, a in got.items():
        w, tol = want[name]
        if a.shape != w.shape:
            errors.append(f"{name}: shape {a.shape}, expected {w.shape}")
            continue
        err = np.abs(a.astype(np.float64) - w)
        bad = ~(err <= tol)  # NaN counts as bad
        if bad.any():
            i = np.unravel_index(np.argmax(np.where(bad, err, -1.0)), bad.shape)  # NaN or largest
            errors.append(f"{name}: {int(bad.sum())}/{bad.size} values out of tolerance, worst "
                          f"at {tuple(map(int, i))}: got {float(a[i]):.6g}, expected "
                          f"{float(w[i]):.6g}")
    return errors


def ours(gn, a, g, row, act="none", add="none"):
    """(call, out, names): our call for the row, as users make it (out=out writes into
    a preallocated result, as the floor does), and the names of its results.  With an
    activation, the fused call (backward takes beta then); with an add (forward), the
    call with add=, which also writes the sum (sum_out=) for a full add, as
    SkipGroupNorm; act = add = "none" is GN alone."""
    kw = dict(stats=row["stats"], channel_axis=-1 if row["layout"] == "nhwc" else 1)
    fused = {} if act == "none" else dict(activation=act)
    x, gamma, beta = a["x"], a["gamma"], a["beta"]
    if row["pass"] == "forward":
        names = ("y", "mean", "rstd")
        if add != "none":
            fused["add"] = a["add_" + add]
        if add == "full":
            fused["sum_out"], names = x.copy(), names + ("sum",)
        return ((lambda **o: gn.group_norm_forward(x, g, gamma, beta, EPS, **kw, **fused, **o)),
                x.copy(), names)
    _, mean, rstd = gn.group_norm_forward(x, g, gamma, beta, EPS, **kw)
    if fused:
        fused["beta"] = beta
    return ((lambda **o: gn.group_norm_backward(a["dy"], x, mean, rstd, g, gamma, **kw, **fused,
                                                **o)), x.copy(), ("dx", "dgamma", "dbeta"))


def floor(xp, a, pass_):
    """The memory floor of a pass on arrays of the same size, preallocated: forward
    reads x and writes y (a copy), backward reads dy and x and writes dx (an add).
    On unsigned-int views of the bytes: integer copy/add run at memory speed for
    every itemsize (bfloat16 arithmetic in NumPy would not)."""
    x, dy = (a[k].view({2: xp.uint16, 4: xp.uint32, 8: xp.uint64}[a[k].dtype.itemsize])
             for k in ("x", "dy"))
    out = xp.empty_like(x)
    return (lambda: xp.copyto(out, x)) if pass_ == "forward" else lambda: xp.add(dy, x, out=out)


def torch_group_norm(torch, a, g, row, device="cpu"):
    """torch.nn.functional.group_norm forward, or its autograd backward (dx, dw, db), on
    host arrays `a` moved to `device` once, here (NHWC: channels_last tensors); or the
    reason there is nothing to time.  With an activation: F.<act>(F.group_norm(x)),
    the backward through both."""
    if row["stats"] == "batch":
        return "torch has no batch-statistics group_norm"

    def tensor(v):
        t = (torch.from_numpy(v.view(np.int16)).view(torch.bfloat16)
             if v.dtype.name == "bfloat16" else torch.from_numpy(v))
        return (t.movedim(-1, 1) if row["layout"] == "nhwc" and t.ndim == 4 else t).to(device)
    F, x, w, b = torch.nn.functional, tensor(a["x"]), tensor(a["gamma"]), tensor(a["beta"])
    act = {"none": lambda t: t, "silu": F.silu, "gelu": F.gelu, "relu": F.relu,
           "gelu_tanh": lambda t: F.gelu(t, approximate="tanh")}[row["activation"]]
    add = row.get("add", "none")
    try:
        if row["pass"] == "forward" and add != "none":     # torch adds, then normalizes
            ad = tensor(a["add_full"]) if add == "full" else tensor(a["add_nc"])[:, :, None, None]
            call = lambda: act(F.group_norm(x + ad, g, w, b, EPS))  # noqa: E731
        elif row["pass"] == "forward":
            call = lambda: act(F.group_norm(x, g, w, b, EPS))  # noqa: E731
        else:
            xr, wr, br = (t.detach().requires_grad_(True) for t in (x, w, b))
            y, dy = act(F.group_norm(xr, g, wr, br, EPS)), tensor(a["dy"])
            call = lambda: torch.autograd.grad(y, (xr, wr, br), dy, retain_graph=True)  # noqa: E731
        call()
    except (RuntimeError, TypeError, NotImplementedError) as e:
        return f"torch {device}: {str(e).splitlines()[0]}"
    return call


def cpu_timer(fn):
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def cuda_timer(cupy):
    """CUDA events around the call on the null stream, where CuPy and torch both enqueue."""
    start, end = cupy.cuda.Event(), cupy.cuda.Event()

    def timer(fn):
        start.record()
        fn()
        end.record()
        end.synchronize()
        return cupy.cuda.get_elapsed_time(start, end) * 1e-3
    return timer


def interleaved(fns, timer=cpu_timer, budget_s=0.5, reps=(5, 100), warmup=2):
    """Samples (seconds) of each of `fns` (name -> fn) after warm-up calls, in as many
    rounds as fill `budget_s` within reps = (min, max); the order rotates each round
    (ABC, BCA, CAB, ...) so that frequency changes or a busy neighbour hit all alike."""
    names = list(fns)
    round_s = sum(min(timer(fns[n]) for _ in range(warmup)) for n in names)
    samples = {n: [] for n in names}
    for r in range(int(max(reps[0], min(reps[1], budget_s / max(round_s, 1e-9))))):
        for n in names[r % len(names):] + names[:r % len(names)]:
            samples[n].append(timer(fns[n]))
    return samples


def others_busy():
    """CPU seconds other processes have used (/proc/stat, in 10 ms ticks; None elsewhere)."""
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:8]]
    except (OSError, ValueError):
        return None
    t = os.times()  # user nice system irq softirq, minus our own
    return (v[0] + v[1] + v[2] + v[5] + v[6]) / os.sysconf("SC_CLK_TCK") - t.user - t.system


class Rows:
    """The rows of one run."""

    def __init__(self, gn, torch, gpu, budget_s, reps, say=print):
        self.gn, self.torch, self.gpu, self.budget_s, self.reps = gn, torch, gpu, budget_s, reps
        self.say, self.rows, self.notes = say, [], set()

    def set_threads(self, n):
        self.gn.set_num_threads(n)
        if self.torch is not None:
            self.torch.set_num_threads(n)

    def note(self, reason):
        """Says a note, once per run; returns the GPU cell of a row it could not time."""
        if reason not in self.notes:
            self.notes.add(reason)
            self.say(f"note: {reason}")
        return {"na": reason}

    def measure(self, case, dname, layout, stats, act, add, pass_, threads, a, refs, gpu_too):
        """One table row: the CPU at `threads` threads, and the GPU when gpu_too; refs
        from references(), with "none" and (act, add)."""
        self.set_threads(threads)
        t0, busy0 = time.perf_counter(), others_busy()
        moved = (2 if pass_ == "forward" else 3) + (2 if add == "full" else 0)  # + add, sum
        row = {"case": case.name, "shape": case.label(), "dtype": dname, "layout": layout,
               "stats": stats, "activation": act, "add": add, "pass": pass_,
               "threads": threads, "bytes": moved * a["x"].nbytes}
        row.update(self._side(row, a, refs, case.g, np, self.torch, reps=self.reps))
        if gpu_too:
            cupy = self.gpu["cupy"]
            row["gpu"] = self._side(row, a, refs, case.g, cupy, self.gpu["torch"], warmup=3,
                                    timer=cuda_timer(cupy), reps=(10, 20 * self.reps[1]))
        # cores others kept busy meanwhile: an OpenMP barrier waits for a descheduled thread
        busy1 = others_busy()
        row["others_cores"] = (None if None in (busy0, busy1) else
                               max(0.0, busy1 - busy0) / (time.perf_counter() - t0))
        self.rows.append(row)
        return row

    def _side(self, row, a, refs, g, xp, torch, **kw):
        """Check, then time, one side of a row, the CPU (xp NumPy) or the GPU (CuPy):
        ours writing into `out` (against the floor), ours allocating (against torch,
        which allocates too), the floor and torch, in the same rounds; with an
        activation also our plain call (GN alone, out=), checked too."""
        device = "cpu" if xp is np else "cuda"
        try:
            d = {k: xp.asarray(v) for k, v in a.items()}
        except Exception as e:  # CuPy refuses dtypes it does not know (bfloat16 in some versions)
            return self.note(f"CuPy cannot hold {a['x'].dtype}: {str(e).splitlines()[0]}")
        fused, errors, calls = (row["activation"], row["add"]), [], {}
        try:
            for k in dict.fromkeys((fused, ("none", "none"))):
                call, out, names = calls[k] = ours(self.gn, d, g, row, *k)
                got = dict(zip(names, (getattr(xp, "asnumpy", np.asarray)(v) for v in call())))
                if row["layout"] == "nhwc":   # y or dx, and the sum: back to NCHW order
                    got = {n: np.moveaxis(v, -1, 1) if v.ndim == 4 else v for n, v in got.items()}
                errors += [f"{'plain ' * (k != fused)}{e}" for e in
                           compare(got, refs[k][row["pass"]])]
        except ImportError as e:  # built without the GPU backend
            return self.note(f"gn_native GPU backend: {e}")
        except Exception as e:
            errors = [f"raised {type(e).__name__}: {e}"]
        if errors:
            return {"status": "wrong", "errors": errors}
        (call, out, _), (plain, plain_out, _) = calls[fused], calls["none", "none"]
        fns = {"ours": lambda: call(out=out), "ours_alloc": call,
               **({"plain": lambda: plain(out=plain_out)} if fused != ("none", "none") else {}),
               "floor": floor(xp, d, row["pass"]),
               "torch": torch_group_norm(torch, a, g, row, device) if torch else
               f"no torch{' CUDA' if device == 'cuda' else ''}: x torch is n/a"}
        if isinstance(fns["torch"], str):
            self.note(fns.pop("torch"))
        samples = interleaved(fns, budget_s=self.budget_s, **kw)
        med = {k: statistics.median(v) for k, v in samples.items()}
        return {"status": "ok", "ms": med["ours"] * 1e3, "ms_alloc": med["ours_alloc"] * 1e3,
                "gbps": row["bytes"] / med["ours"] * 1e-9, "x_floor": med["ours"] / med["floor"],
                "x_torch": med["ours_alloc"] / med["torch"] if "torch" in med else None,
                "ms_plain": med["plain"] * 1e3 if "plain" in med else None,
                "x_plain": med["ours"] / med["plain"] if "plain" in med else None,
                "reps": len(samples["ours"])}

    def overhead(self, data, g):
        """Median seconds of a plain call, one with out=, and a (1, G, 1, 1) call with no
        work left (the fixed cost); torch's call in its own rounds, so that microsecond
        calls do not time the other library's idle OpenMP threads."""
        gn, x, gamma, beta = self.gn, data["x"], data["gamma"], data["beta"]
        y, x1 = np.empty_like(x), np.linspace(-1.0, 1.0, g, dtype=np.float32).reshape(1, g, 1, 1)
        kw = dict(budget_s=self.budget_s, reps=(50, 5000), warmup=20)
        fns = {"call": lambda: gn.group_norm_forward(x, g, gamma, beta, EPS),
               "out": lambda: gn.group_norm_forward(x, g, gamma, beta, EPS, out=y),
               "empty": lambda: gn.group_norm_forward(x1, g)}
        med = {k: statistics.median(v) for k, v in interleaved(fns, **kw).items()}
        if self.torch is not None:
            xt, wt, bt = (self.torch.from_numpy(v) for v in (x, gamma, beta))
            fn = {"torch": lambda: self.torch.nn.functional.group_norm(xt, g, wt, bt, EPS)}
            med["torch"] = statistics.median(interleaved(fn, **kw)["torch"])
        return med
