"""The functional API: check once, allocate, dispatch to the CPU or GPU backend.

A backend is a module with three functions that take preallocated,
C-contiguous arrays in the kernel's memory layout (outputs first):

    forward(plan, y, mean, rstd, x, gamma, beta)
    normalize(plan, y, x, mean, rstd, gamma, beta)
    backward(plan, dx, dgamma, dbeta, dy, x, mean, rstd, gamma)

`gn_native._cpu` is the CPU one; `gn_native._gpu` (CuPy) the GPU one.
"""
import numpy as np

from . import _cpu
from . import _validate as V

_gpu_backend = None


def _backend(kind):
    if kind == "numpy":
        return np, _cpu
    global _gpu_backend
    if _gpu_backend is None:
        from . import _gpu  # raises a clear error without CuPy or a device
        _gpu.require_device()
        _gpu_backend = _gpu
    return _gpu_backend.cupy, _gpu_backend


def array_module(device):
    """numpy for device "cpu"; cupy for "gpu", once CuPy and a device are checked."""
    return _backend("numpy" if device == "cpu" else "cupy")[0]


def _identity(a):
    return a


def _layout(xp, x, ax):
    """Memory layout the kernel runs in, and a function mapping user arrays to it.

    Channels-last data (channel_axis=-1, or channel_axis=1 on an array whose
    memory is channels-last, as torch's channels_last format) runs in the
    NHWC kernel without a transposing copy.
    """
    nd = x.ndim
    if nd <= 2:
        return "nchw", _identity, _identity
    if ax == nd - 1:
        return "nhwc", _identity, _identity
    if not x.flags.c_contiguous and xp.moveaxis(x, 1, -1).flags.c_contiguous:
        return "nhwc", lambda a: xp.moveaxis(a, 1, -1), lambda a: xp.moveaxis(a, -1, 1)
    return "nchw", _identity, _identity


def _data_ptr(a):
    if isinstance(a, np.ndarray):
        return a.ctypes.data     # a.data (a memoryview) refuses bfloat16
    return a.data.ptr


def _overlaps_partially(xp, a, b):
    """True when a and b share memory without being the same view (in place is fine)."""
    if not xp.may_share_memory(a, b):
        return False
    same = _data_ptr(a) == _data_ptr(b) and a.shape == b.shape and a.strides == b.strides
    return not same


def _contig(xp, a):
    return a if a.flags.c_contiguous else xp.ascontiguousarray(a)


def _param(xp, a, target):
    """A small input (gamma, beta, mean, rstd) as the kernel reads it: contiguous,
    and copied when it shares memory with `target`, the array the kernel writes
    (it reads them while writing, so an overlap would change them under it)."""
    if a is None:
        return None
    a = _contig(xp, a)
    return a.copy() if xp.may_share_memory(a, target) else a


def _output(xp, out, to_k, like_k, sources):
    """Kernel-layout array to write the result in; the caller's `out` when usable.

    Returns (target, copy_back): when `out` cannot be written directly (wrong
    memory order, or overlapping an input without being it), the result goes
    to a temporary first and copy_back is True.
    """
    if out is None:
        return xp.empty(like_k.shape, like_k.dtype), False
    if out is like_k:
        return out, False
    ok = to_k(out)
    if ok.flags.c_contiguous:
        clash = any(s is not None and _overlaps_partially(xp, ok, s) for s in sources)
        if not clash:
            return ok, False
    return xp.empty(like_k.shape, like_k.dtype), True


def _stat_in(xp, a, p, target):
    return _param(xp, a.astype(p.stat_dtype, copy=False), target)


def group_norm_forward(x, n_groups, gamma=None, beta=None, eps=1e-5, *, stats="sample",
                       channel_axis=1, out=None, mean=None, var=None):
    """Group-normalize `x`; return (y, mean, rstd).

    mean and rstd have shape (N, G) for stats="sample" and (G,) for
    stats="batch"; float64 for float64 x, float32 otherwise.  When both
    `mean` and `var` are given (shaped like those statistics) they are used
    instead of the input's own statistics.
    """
    if mean is None and var is None:
        r = _cpu.forward_fast(x, n_groups, gamma, beta, eps, stats, channel_axis, out)
        if r is not None:
            return r
    return forward_with_var(x, n_groups, gamma, beta, eps, stats=stats, channel_axis=channel_axis,
                            out=out, mean=mean, var=var)[:3]


def forward_with_var(x, n_groups, gamma=None, beta=None, eps=1e-5, *, stats="sample",
                     channel_axis=1, out=None, mean=None, var=None, want_var=False):
    """group_norm_forward without its fast path, plus the biased variance of each
    group when `want_var` (None when the backend cannot give it; the layer then
    derives it from rstd)."""
    kind, p, x, gamma, beta, mean, var = V.forward_call(
        x, n_groups, gamma, beta, eps, stats, channel_axis, out, mean, var)
    xp, backend = _backend(kind)
    layout, to_k, from_k = _layout(xp, x, p.channel_axis)
    p = V.with_layout(p, layout)
    gamma, beta = V.expand_affine(xp, p, gamma), V.expand_affine(xp, p, beta)
    xk = _contig(xp, to_k(x))
    yk, copy_back = _output(xp, out, to_k, xk, (xk,))
    v = None
    if mean is None:
        m = xp.empty(p.stat_shape, p.stat_dtype)
        r = xp.empty(p.stat_shape, p.stat_dtype)
        if want_var and backend is _cpu:
            v = xp.empty(p.stat_shape, p.stat_dtype)
        if p.size:
            g, b = _param(xp, gamma, yk), _param(xp, beta, yk)
            if v is None:
                backend.forward(p, yk, m, r, xk, g, b)
            else:
                backend.forward(p, yk, m, r, xk, g, b, var=v)
        else:
            m[...] = np.nan
            r[...] = np.nan
    else:
        # new arrays: the returned statistics are never the caller's own
        m = xp.array(mean, dtype=p.stat_dtype, order="C")
        v = var.astype(np.float64)
        if kind == "numpy" and np.any(v < 0):
            raise ValueError("var must be non-negative")
        r = (1.0 / xp.sqrt(v + p.eps)).astype(p.stat_dtype)
        if p.size:
            backend.normalize(p, yk, xk, m, r, _param(xp, gamma, yk), _param(xp, beta, yk))
    if out is None:
        return from_k(yk), m, r, v
    if copy_back:
        xp.copyto(out, from_k(yk))
    return out, m, r, v


def group_norm(x, n_groups, gamma=None, beta=None, eps=1e-5, *, stats="sample",
               channel_axis=1, out=None, mean=None, var=None):
    """Group-normalize `x` (same numbers as torch.nn.functional.group_norm by default)."""
    if mean is None and var is None:
        r = _cpu.forward_fast(x, n_groups, gamma, beta, eps, stats, channel_axis, out)
        if r is not None:
            return r[0]
    return forward_with_var(x, n_groups, gamma, beta, eps, stats=stats,
                            channel_axis=channel_axis, out=out, mean=mean, var=var)[0]


def group_norm_backward(dy, x, mean, rstd, n_groups, gamma=None, *, stats="sample",
                        channel_axis=1, out=None, frozen=False):
    """Gradients (dx, dgamma, dbeta) of group_norm at `x`, given dL/dy.

    mean and rstd are what group_norm_forward returned for `x`.  dgamma and
    dbeta have gamma's shape, or (C,) when gamma is None.  `out` receives dx
    (it may be dy or x itself).  frozen=True (with stats="batch"): mean and
    rstd are constants, not statistics of `x` (a layer's running statistics in
    eval mode), so dx = dy * gamma * rstd.
    """
    if frozen is False:
        r = _cpu.backward_fast(dy, x, mean, rstd, n_groups, gamma, stats, channel_axis, out)
        if r is not None:
            return r
    return backward_general(dy, x, mean, rstd, n_groups, gamma, stats=stats,
                            channel_axis=channel_axis, out=out, frozen=frozen)


def backward_general(dy, x, mean, rstd, n_groups, gamma=None, *, stats="sample",
                     channel_axis=1, out=None, frozen=False):
    """group_norm_backward without its fast path."""
    kind, p, dy, x, mean, rstd, gamma = V.backward_call(
        dy, x, mean, rstd, n_groups, gamma, stats, channel_axis, out, frozen)
    xp, backend = _backend(kind)
    layout, to_k, from_k = _layout(xp, x, p.channel_axis)
    p = V.with_layout(p, layout)
    xk = _contig(xp, to_k(x))
    dyk = _contig(xp, to_k(dy))
    dxk, copy_back = _output(xp, out, to_k, xk, (xk, dyk))
    pshape = (gamma.shape[0],) if gamma is not None else (p.c,)
    dgamma = xp.zeros(pshape, p.dtype)
    dbeta = xp.zeros(pshape, p.dtype)
    if p.size:
        backend.backward(p, dxk, dgamma, dbeta, dyk, xk, _stat_in(xp, mean, p, dxk),
                         _stat_in(xp, rstd, p, dxk), _param(xp, gamma, dxk), frozen=frozen)
    if out is None:
        return from_k(dxk), dgamma, dbeta
    if copy_back:
        xp.copyto(out, from_k(dxk))
    return out, dgamma, dbeta
