"""The callables one benchmark row times: ours, the memory floor, PyTorch.

Each builder takes the row's arrays (already in the row's memory layout, on
the CPU as NumPy arrays or on the GPU as CuPy arrays) and returns a
zero-argument callable that does one call and nothing else; setup such as a
forward pass before a backward one, or torch's autograd graph, happens here
and is never timed.  A contender that cannot run a row raises NotAvailable
with the reason, which the table shows as "n/a".
"""
import numpy as np

from cases import BFLOAT16, channel_axis, to_nchw

EPS = 1e-5


class NotAvailable(Exception):
    """This contender has nothing to time for this row (the message says why)."""


def ours(gn, a, case, stats, layout, pass_, to_host=np.asarray):
    """(call, call_out, outputs): one call allocating its result, as users usually
    call it; the same call writing into a preallocated output (out=, as the floor
    does); and a function that runs it once and returns its results on the host
    in logical NCHW order, for checking."""
    kw = dict(stats=stats, channel_axis=channel_axis(layout))
    x, gamma, beta = a["x"], a["gamma"], a["beta"]
    if pass_ == "forward":
        names, out = ("y", "mean", "rstd"), x.copy()
        call = lambda **o: gn.group_norm_forward(x, case.g, gamma, beta, EPS, **kw, **o)  # noqa: E731
    else:
        _, mean, rstd = gn.group_norm_forward(x, case.g, gamma, beta, EPS, **kw)
        dy = a["dy"]
        names, out = ("dx", "dgamma", "dbeta"), dy.copy()
        call = lambda **o: gn.group_norm_backward(dy, x, mean, rstd, case.g, gamma, **kw, **o)  # noqa: E731

    def outputs():
        res = [to_host(v) for v in call()]
        res[0] = to_nchw(res[0], layout)
        return dict(zip(names, res))
    return call, lambda: call(out=out), outputs


def _bits(xp, a):
    """The same bytes as an unsigned-int array: the floor moves bytes, and integer
    copy/add run at memory speed for every itemsize (bfloat16 arithmetic in
    NumPy would not)."""
    return a.view({2: xp.uint16, 4: xp.uint32, 8: xp.uint64}[a.dtype.itemsize])


def floor(xp, a, pass_):
    """The memory floor of a pass, on arrays of the same size, preallocated.

    forward reads x and writes y: a copy.  backward reads dy and x and
    writes dx: an add.  `xp` is numpy or cupy.
    """
    x = _bits(xp, a["x"])
    if pass_ == "forward":
        y = xp.empty_like(x)
        return lambda: xp.copyto(y, x)
    dy = _bits(xp, a["dy"])
    dx = xp.empty_like(x)
    return lambda: xp.add(dy, x, out=dx)


def _to_torch(torch, a, layout, device):
    """Torch tensor over NumPy array `a`; NHWC arrays become channels_last NCHW tensors."""
    if BFLOAT16 is not None and a.dtype == BFLOAT16:
        t = torch.from_numpy(a.view(np.int16)).view(torch.bfloat16)
    else:
        t = torch.from_numpy(a)
    if layout == "nhwc" and t.ndim >= 3:
        t = t.movedim(-1, 1)
    return t if device == "cpu" else t.to(device)


def torch_group_norm(torch, a, case, stats, layout, pass_, device="cpu"):
    """torch.nn.functional.group_norm forward, or its autograd backward (dx, dw, db).

    `a` holds host NumPy arrays; they are moved to `device` once, here.
    """
    if stats == "batch":
        raise NotAvailable("torch has no batch-statistics group_norm")
    F = torch.nn.functional
    x = _to_torch(torch, a["x"], layout, device)
    w = _to_torch(torch, a["gamma"], "nchw", device)
    b = _to_torch(torch, a["beta"], "nchw", device)
    try:
        if pass_ == "forward":
            def call():
                return F.group_norm(x, case.g, w, b, EPS)
        else:
            xr, wr, br = (t.detach().requires_grad_(True) for t in (x, w, b))
            y = F.group_norm(xr, case.g, wr, br, EPS)
            dy = _to_torch(torch, a["dy"], layout, device)

            def call():
                return torch.autograd.grad(y, (xr, wr, br), dy, retain_graph=True)
        call()
    except (RuntimeError, TypeError, NotImplementedError) as e:
        raise NotAvailable(f"torch {device}: {str(e).splitlines()[0]}") from None
    return call


def same_bits(a, b):
    """Same shape, dtype and bits (NaNs included) in every element."""
    return a.shape == b.shape and a.dtype == b.dtype and _bits(np, a).tobytes() == _bits(np, b).tobytes()


def to_device(cupy, a):
    """Host arrays of a row on the GPU; NotAvailable when CuPy cannot hold the dtype."""
    try:
        return {k: cupy.asarray(v) for k, v in a.items()}
    except Exception as e:  # CuPy refuses dtypes it does not know (bfloat16 in some versions)
        raise NotAvailable(f"CuPy cannot hold {a['x'].dtype}: {str(e).splitlines()[0]}") from None
