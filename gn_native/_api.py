"""The functional API: check once, allocate, dispatch to the CPU or GPU backend.

A backend is a module with three functions that take preallocated,
C-contiguous arrays in the kernel's memory layout (outputs first):

    forward(plan, y, mean, rstd, x, gamma, beta)
    normalize(plan, y, x, mean, rstd, gamma, beta)
    backward(plan, dx, dgamma, dbeta, dy, x, mean, rstd, gamma)

`gn_native._cpu` is the CPU one; `gn_native._gpu` (CuPy) the GPU one.
"""
import numpy as np

from . import _cpu, _interop
from . import _validate as V

_gpu_backend = None

# The parameters group_norm and group_norm_forward share, written once and put
# into both docstrings by _shared_doc (numpydoc wants them in each).
_FORWARD_PARAMS = """\
Parameters
----------
x : array_like
    Input of shape (N, C, *spatial) (or (N, *spatial, C) with
    ``channel_axis=-1``); float16, bfloat16, float32 or float64.  A
    CuPy array runs on the GPU.
n_groups : int
    Number of groups G; it must divide the channel count C.  Also
    accepted as ``num_groups=``, torch's name.
gamma, beta : array_like, optional
    Scale and shift, each None or of shape (C,) (per channel, as
    PyTorch) or (G,) (per group); also accepted as ``weight=`` and
    ``bias=``, torch's names.  Any float dtype (float32 weights with
    16-bit data, as in mixed-precision models); they are rounded to
    `x`'s dtype, and outputs take `x`'s dtype.
eps : float, default 1e-5
    Added to the variance; must be positive and finite.
stats : {"sample", "batch"}, default "sample"
    ``"sample"``: mean and biased variance per (sample, group), as
    ``torch.nn.functional.group_norm``.  ``"batch"``: per group, over
    the whole batch as well.
channel_axis : {1, -1}, default 1
    Axis of the channels: 1 for (N, C, *spatial), -1 for
    (N, *spatial, C) (run natively, without a transposing copy).
out : ndarray, optional
    Array of `x`'s shape and dtype to write the result in; it may be
    `x` itself (in place).
mean, var : array_like, optional
    Given together, shaped as the statistics below: used instead of
    the statistics of `x` (`var` is the variance, non-negative).
activation : {None, "silu", "gelu", "gelu_tanh", "relu"}, default None
    Applied to every value after the affine step, in the same pass
    (``torch.nn.functional.silu`` etc. of the GroupNorm output).
input, num_groups, weight, bias
    torch's names for `x`, `n_groups`, `gamma` and `beta`, so that code
    written for ``torch.nn.functional.group_norm`` runs unchanged.
add : array_like, optional
    Added to `x` before everything else, as ONNX Runtime's
    SkipGroupNorm: of `x`'s shape (a residual), (N, C) (a per-sample
    bias such as a time embedding) or (C,), broadcast over space; `x`'s
    dtype.  Each sum is computed in float32 (float64 for float64 data)
    and rounded to `x`'s dtype, as ``x + add`` in NumPy or torch, and
    the call gives the bits of the same call on that sum."""


def _torch_names(x, n_groups, gamma, beta, input, num_groups, weight, bias):
    """torch's names (input, num_groups, weight, bias) for ours."""
    return V.torch_names(("x", "input", x, input), ("n_groups", "num_groups", n_groups, num_groups),
                         ("gamma", "weight", gamma, weight), ("beta", "bias", beta, bias))


def _shared_doc(f):
    """Put the shared parameter sections into f's docstring (at {forward_params})."""
    if f.__doc__:                         # None under python -OO
        text = "\n".join("    " + l if l else l for l in _FORWARD_PARAMS.split("\n"))
        f.__doc__ = f.__doc__.replace("    {forward_params}", text)
    return f


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


def _param(xp, a, *targets):
    """A small input (gamma, beta, mean, rstd) as the kernel reads it: contiguous,
    and copied when it shares memory with one of `targets`, the arrays the kernel
    writes (it reads them while writing, so an overlap would change them under it)."""
    if a is None:
        return None
    a = _contig(xp, a)
    return a.copy() if any(t is not None and xp.may_share_memory(a, t) for t in targets) else a


def _add_view(addk, add_shape, p):
    """add= in the kernel layout, broadcastable against x there."""
    if add_shape == "full":
        return addk
    ones = (1,) * (len(p.shape) - 2)
    n = (p.n,) if add_shape == "nc" else ((1,) if p.layout == "nhwc" else ())
    return addk.reshape(n + ones + (p.c,) if p.layout == "nhwc" else n + (p.c,) + ones)


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


def _result(xp, out, yk, copy_back, from_k):
    """The user's result from the kernel-layout array `yk` (see _output)."""
    if out is None:
        return from_k(yk)
    if copy_back:
        xp.copyto(out, from_k(yk))
    return out


def _stat_in(xp, a, p, target):
    return _param(xp, a.astype(p.stat_dtype, copy=False), target)


@_shared_doc
def group_norm_forward(x=None, n_groups=None, gamma=None, beta=None, eps=1e-5, *,
                       stats="sample", channel_axis=1, out=None, mean=None, var=None,
                       running_mean=None, running_var=None, momentum=0.1, activation=None,
                       add=None, sum_out=None, input=None, num_groups=None, weight=None,
                       bias=None):
    """Group-normalize `x` and return the statistics used.

    Computes ``y = (x - mean) / sqrt(var + eps) * gamma + beta`` as
    `group_norm`, and also returns `mean` and ``rstd = 1 / sqrt(var +
    eps)``, which `group_norm_backward` needs.

    {forward_params}
    running_mean, running_var : ndarray, optional
        Given together, arrays of shape (G,) and a float dtype, updated in
        place as ``running = (1 - momentum) * running + momentum * batch``
        (as ``torch.nn.functional.batch_norm`` in training), where batch
        is each group's mean and unbiased variance (for ``stats="sample"``,
        their average over the samples).  Not with `mean`/`var`.
    momentum : float, default 0.1
        In [0, 1]; used with `running_mean` and `running_var`.
    sum_out : ndarray, optional
        With `add`: array of `x`'s shape and dtype that receives ``x +
        add`` (the residual stream, and the `x` that
        `group_norm_backward` takes), written in the same pass.  It may
        be `x` or `add` itself, not `out`.

    Returns
    -------
    y : ndarray
        Normalized array, `x`'s shape and dtype (`out` when given).
    mean, rstd : ndarray
        Shape (N, G) for ``stats="sample"``, (G,) for ``stats="batch"``;
        float64 for float64 `x`, float32 otherwise.
    sum_out : ndarray
        Only when `sum_out` is given: that array, holding ``x + add``.

    Raises
    ------
    TypeError
        If an argument has the wrong type: a non-integer `n_groups`, a
        non-number `eps`, or an array of an unsupported dtype (integer,
        bool, complex, string, object).
    ValueError
        If an argument has the right type but a bad value: ``x.ndim < 2``,
        C not divisible by `n_groups`, ``n_groups <= 0``, `gamma` or `beta`
        of another length, `eps` not positive and finite, an unknown
        `stats` or `channel_axis`, `out` of the wrong shape or dtype, a
        negative `var`, `running_mean`/`running_var` not of shape (G,),
        read-only or sharing memory with another argument, or `momentum`
        outside [0, 1].

    See Also
    --------
    group_norm : The same, returning only `y`.
    group_norm_backward : Gradients, from `mean` and `rstd`.

    Examples
    --------
    >>> import numpy as np
    >>> import gn_native as gn
    >>> x = np.arange(8, dtype=np.float32).reshape(1, 4, 2)
    >>> y, mean, rstd = gn.group_norm_forward(x, 2)
    >>> mean
    array([[1.5, 5.5]], dtype=float32)
    >>> rstd.shape, rstd.dtype
    ((1, 2), dtype('float32'))
    >>> gn.group_norm_forward(x, 2, stats="batch")[1]
    array([1.5, 5.5], dtype=float32)
    >>> rm, rv = np.zeros(2, np.float32), np.ones(2, np.float32)
    >>> _ = gn.group_norm_forward(x, 2, running_mean=rm, running_var=rv, momentum=0.5)
    >>> rm, rv
    (array([0.75, 2.75], dtype=float32), array([1.3333334, 1.3333334], dtype=float32))
    >>> temb = np.array([[0, 0, 1, 1]], np.float32)     # (N, C): per sample and channel
    >>> y, mean, rstd, h = gn.group_norm_forward(x, 2, add=temb, sum_out=np.empty_like(x))
    >>> h[0, :, 0], mean
    (array([0., 2., 5., 7.], dtype=float32), array([[1.5, 6.5]], dtype=float32))
    """
    if (input is not None or num_groups is not None or weight is not None
            or bias is not None):
        x, n_groups, gamma, beta = _torch_names(x, n_groups, gamma, beta, input, num_groups,
                                                weight, bias)
    if (mean is None and var is None and running_mean is None and running_var is None
            and add is None and sum_out is None):
        r = _cpu.forward_fast(x, n_groups, gamma, beta, eps, stats, channel_axis, out, activation)
        if r is not None:
            return r
    return forward_general(x, n_groups, gamma, beta, eps, stats=stats, channel_axis=channel_axis,
                           out=out, mean=mean, var=var, running_mean=running_mean,
                           running_var=running_var, momentum=momentum, activation=activation,
                           add=add, sum_out=sum_out)


def _numpy_args(arrays):
    """Framework arrays among `arrays` (a dict) as ndarrays sharing their memory."""
    return {k: a if a is None or _interop.framework(a) is None else _interop.to_numpy(a, k)
            for k, a in arrays.items()}


def _framework_result(fw, r, outs):
    """r with the caller's own out arrays (outs: {index in r: array}) in place of
    their NumPy views, and every other array as framework fw's."""
    r = tuple(outs.get(i, a) for i, a in enumerate(r))
    return _interop.like(fw, r, keep=tuple(outs.values()))


def _is_dask(a):
    """A dask.array.Array, told without importing Dask (as _interop tells torch/JAX)."""
    return type(a).__module__.startswith("dask.array")


def _dask_forward(x, n_groups, gamma, beta, eps, stats, channel_axis, activation, **others):
    """The lazy result of gn_native.dask for a Dask array x; the arguments that write
    into arrays or take given statistics have no Dask form and are refused."""
    given = [k for k, v in others.items() if v is not None]
    if given:
        raise TypeError(f"{given[0]}= is not supported with a Dask array x: gn_native.dask "
                        "computes its statistics lazily and writes no array in place")
    from . import dask as gn_dask
    return gn_dask.group_norm_forward(x, n_groups, gamma, beta, eps, stats=stats,
                                      channel_axis=channel_axis, activation=activation)


def forward_general(x, n_groups, gamma=None, beta=None, eps=1e-5, *, stats="sample",
                    channel_axis=1, out=None, mean=None, var=None, running_mean=None,
                    running_var=None, momentum=0.1, activation=None, add=None, sum_out=None):
    """group_norm_forward without its fast path."""
    if _is_dask(x):
        return _dask_forward(x, n_groups, gamma, beta, eps, stats, channel_axis, activation,
                             out=out, mean=mean, var=var, running_mean=running_mean,
                             running_var=running_var, add=add, sum_out=sum_out)
    fw = _interop.framework(x)
    if fw is not None:       # a torch/JAX array: the call on NumPy views, results back as fw's
        a = _numpy_args(dict(x=x, gamma=gamma, beta=beta, out=out, mean=mean, var=var,
                             running_mean=running_mean, running_var=running_var, add=add,
                             sum_out=sum_out))
        r = forward_general(a.pop("x"), n_groups, eps=eps, stats=stats,
                            channel_axis=channel_axis, momentum=momentum,
                            activation=activation, **a)
        outs = {i: o for i, o in ((0, out), (3, sum_out)) if o is not None}
        return _framework_result(fw, r, outs)
    kind, p, x, gamma, beta, mean, var, momentum, add, add_shape, sum_out = V.forward_call(
        x, n_groups, gamma, beta, eps, stats, channel_axis, out, mean, var,
        running_mean, running_var, momentum, activation, add, sum_out)
    want_var = running_mean is not None
    xp, backend = _backend(kind)
    layout, to_k, from_k = _layout(xp, x, p.channel_axis)
    p = V.with_layout(p, layout)
    gamma, beta = V.expand_affine(xp, p, gamma), V.expand_affine(xp, p, beta)
    xk = _contig(xp, to_k(x))
    addk = full = sk = None
    if add is not None:
        addk = _contig(xp, to_k(add) if add_shape == "full" else add)
        full = addk if add_shape == "full" else None
    if sum_out is not None:
        sk, sum_back = _output(xp, sum_out, to_k, xk, (xk, full))
    yk, copy_back = _output(xp, out, to_k, xk, (xk, full, sk))
    v = None
    if mean is None:
        m = xp.empty(p.stat_shape, p.stat_dtype)
        r = xp.empty(p.stat_shape, p.stat_dtype)
        kw = {}
        if want_var and backend is _cpu:
            v = kw["var"] = xp.empty(p.stat_shape, p.stat_dtype)
        if add is not None:
            kw.update(add=addk, add_shape=add_shape, sum_out=sk)
        if p.size:
            backend.forward(p, yk, m, r, xk, _param(xp, gamma, yk, sk), _param(xp, beta, yk, sk),
                            **kw)
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
            if add is not None:      # the sum in x's dtype (each in float32 or float64, rounded)
                xk = xp.add(xk, _add_view(addk, add_shape, p), out=yk if sk is None else sk)
            backend.normalize(p, yk, xk, m, r, _param(xp, gamma, yk), _param(xp, beta, yk))
    if want_var and p.size:
        _update_running(xp, p, m, r, v, running_mean, running_var, momentum)
    y = _result(xp, out, yk, copy_back, from_k)
    if sum_out is None:
        return y, m, r
    if sum_back:
        xp.copyto(sum_out, from_k(sk))
    return y, m, r, sum_out


def _update_running(xp, p, mean, rstd, var, running_mean, running_var, momentum):
    """running = (1 - momentum) * running + momentum * batch value (SPEC), in float64.

    The batch value is the group's mean and unbiased variance; for
    stats="sample", their average over the samples.  `var` is the biased
    variance from the core, or None (the GPU backend), then derived from rstd.
    """
    count = p.k * p.spatial * (p.n if p.stats == "batch" else 1)
    m = mean.astype(np.float64)
    if var is None:
        var = xp.maximum(1.0 / (rstd.astype(np.float64) ** 2) - p.eps, 0.0)
    else:
        var = var.astype(np.float64)
    if count > 1:
        var = var * (count / (count - 1))
    if p.stats == "sample":
        m, var = m.mean(axis=0), var.mean(axis=0)
    running_mean[...] = (1.0 - momentum) * running_mean.astype(np.float64) + momentum * m
    running_var[...] = (1.0 - momentum) * running_var.astype(np.float64) + momentum * var


@_shared_doc
def group_norm(x=None, n_groups=None, gamma=None, beta=None, eps=1e-5, *, stats="sample",
               channel_axis=1, out=None, mean=None, var=None, activation=None, add=None,
               input=None, num_groups=None, weight=None, bias=None):
    """Group-normalize `x`.

    Computes ``y = (x - mean) / sqrt(var + eps) * gamma + beta`` with the
    mean and biased variance of each group of channels.  The defaults give
    the numbers of ``torch.nn.functional.group_norm``.  Accumulation is at
    least float32; float16 and bfloat16 inputs are computed in float32 and
    stored in their own dtype.

    {forward_params}
        Statistics shape: (N, G) for ``stats="sample"``, (G,) for
        ``stats="batch"``.

    Returns
    -------
    ndarray
        Normalized array of `x`'s shape and dtype (`out` when given).

    Raises
    ------
    TypeError
        If an argument has the wrong type: a non-integer `n_groups`, a
        non-number `eps`, or an array of an unsupported dtype (integer,
        bool, complex, string, object).
    ValueError
        If an argument has the right type but a bad value: ``x.ndim < 2``,
        C not divisible by `n_groups`, ``n_groups <= 0``, `gamma` or `beta`
        of another length, `eps` not positive and finite, an unknown
        `stats` or `channel_axis`, `out` of the wrong shape or dtype, or a
        negative `var`.

    See Also
    --------
    group_norm_forward : The same, also returning mean and rstd.
    GroupNorm : The layer, with parameters and running statistics.

    Examples
    --------
    >>> import numpy as np
    >>> import gn_native as gn
    >>> x = np.arange(8, dtype=np.float32).reshape(1, 4, 2)
    >>> y = gn.group_norm(x, 2)
    >>> y.round(3)
    array([[[-1.342, -0.447],
            [ 0.447,  1.342],
            [-1.342, -0.447],
            [ 0.447,  1.342]]], dtype=float32)
    >>> gn.group_norm(x, 3)
    Traceback (most recent call last):
    ...
    ValueError: ...
    """
    if (input is not None or num_groups is not None or weight is not None
            or bias is not None):
        x, n_groups, gamma, beta = _torch_names(x, n_groups, gamma, beta, input, num_groups,
                                                weight, bias)
    if mean is None and var is None and add is None:
        r = _cpu.forward_fast(x, n_groups, gamma, beta, eps, stats, channel_axis, out, activation)
        if r is not None:
            return r[0]
    return forward_general(x, n_groups, gamma, beta, eps, stats=stats, channel_axis=channel_axis,
                           out=out, mean=mean, var=var, activation=activation, add=add)[0]


def group_norm_backward(dy, x, mean, rstd, n_groups, gamma=None, beta=None, *, stats="sample",
                        channel_axis=1, out=None, frozen=False, activation=None):
    """Return the gradients of `group_norm` at `x`, given dL/dy.

    Back-propagates through the normalization and the affine step, using the
    statistics the forward call saved rather than recomputing them.  The
    arrays may be on the CPU (NumPy) or the GPU (CuPy), as in the forward
    call.

    Parameters
    ----------
    dy : array_like
        Gradient of the loss with respect to the output, shaped as `x`.
    x : array_like
        The input given to `group_norm_forward` (with `add`: the sum, its
        `sum_out`).
    mean, rstd : array_like
        What `group_norm_forward` returned for `x` with the same `n_groups`,
        `stats` and `channel_axis`.
    n_groups : int
        Number of groups G; it must divide the channel count C.
    gamma : array_like, optional
        The scale used in the forward call: None, shape (C,) or (G,).
    beta : array_like, optional
        The shift used in the forward call; read only with an
        `activation`, whose input ``gamma * xhat + beta`` is recomputed.
    stats : {"sample", "batch"}, default "sample"
        As in the forward call.
    channel_axis : {1, -1}, default 1
        As in the forward call.
    out : ndarray, optional
        Array of `x`'s shape and dtype to receive `dx`; it may be `dy` or
        `x` itself.
    frozen : bool, default False
        With ``stats="batch"``: `mean` and `rstd` are constants, not
        statistics of `x` (a layer's running statistics in eval mode), so
        ``dx = dy * gamma * rstd``.
    activation : {None, "silu", "gelu", "gelu_tanh", "relu"}, default None
        As in the forward call: `dy` is then the gradient of the
        activation's output, and ``dy * act'(z)`` is back-propagated.

    Returns
    -------
    dx : ndarray
        Gradient with respect to `x`, `x`'s shape and dtype (`out` when
        given).
    dgamma, dbeta : ndarray
        Gradients with respect to `gamma` and `beta`, `gamma`'s shape, or
        (C,) when `gamma` is None (the gradient an affine layer would get).

    Raises
    ------
    TypeError
        If an argument has the wrong type (a non-integer `n_groups`, an
        unsupported dtype).
    ValueError
        If an argument has a bad value: `dy` not shaped as `x`, `mean` or
        `rstd` of the wrong shape, C not divisible by `n_groups`, `gamma`
        of another length, an unknown `stats` or `channel_axis`, or `out`
        of the wrong shape or dtype.

    See Also
    --------
    group_norm_forward : Gives `mean` and `rstd`.

    Examples
    --------
    >>> import numpy as np
    >>> import gn_native as gn
    >>> x = np.arange(8, dtype=np.float32).reshape(1, 4, 2)
    >>> y, mean, rstd = gn.group_norm_forward(x, 2)
    >>> dx, dgamma, dbeta = gn.group_norm_backward(np.ones_like(x), x, mean, rstd, 2)
    >>> float(abs(dx).max()) < 1e-5  # a constant dy has no gradient through GN
    True
    >>> dbeta
    array([2., 2., 2., 2.], dtype=float32)
    """
    if frozen is False:
        r = _cpu.backward_fast(dy, x, mean, rstd, n_groups, gamma, stats, channel_axis, out,
                               beta, activation)
        if r is not None:
            return r
    return backward_general(dy, x, mean, rstd, n_groups, gamma, beta, stats=stats,
                            channel_axis=channel_axis, out=out, frozen=frozen,
                            activation=activation)


def param_grad_arrays(xp, p, gamma, beta):
    """Zeroed arrays for the kernel's dgamma/dbeta, and the function that turns
    them into what the user gets: gamma's shape, or (C,) without gamma (a
    per-group gamma beside a per-channel beta runs per channel, and its
    gradients are then summed per group); each in its parameter's dtype
    (float32 weights of 16-bit data)."""
    pshape = (gamma.shape[0],) if gamma is not None else (p.c,)
    kshape = (p.groups,) if p.affine == "group" else (p.c,)
    gdt = p.dtype if gamma is None else gamma.dtype
    bdt = beta.dtype if beta is not None else gdt

    def finish(dgamma, dbeta):
        if kshape != pshape:
            dgamma, dbeta = (a.astype(np.float64).reshape(p.groups, p.k).sum(1).astype(p.dtype)
                             for a in (dgamma, dbeta))
        if gdt != p.dtype or bdt != p.dtype:
            dgamma, dbeta = dgamma.astype(gdt), dbeta.astype(bdt)
        return dgamma, dbeta
    return xp.zeros(kshape, p.dtype), xp.zeros(kshape, p.dtype), finish


def backward_general(dy, x, mean, rstd, n_groups, gamma=None, beta=None, *, stats="sample",
                     channel_axis=1, out=None, frozen=False, activation=None):
    """group_norm_backward without its fast path."""
    if _is_dask(x) or _is_dask(dy):
        raise TypeError("group_norm_backward does not take Dask arrays (gn_native.dask is "
                        "forward only); compute dy and x first")
    fw = _interop.framework(x) or _interop.framework(dy)
    if fw is not None:       # as in forward_general
        a = _numpy_args(dict(dy=dy, x=x, mean=mean, rstd=rstd, gamma=gamma, beta=beta, out=out))
        r = backward_general(a.pop("dy"), a.pop("x"), a.pop("mean"), a.pop("rstd"), n_groups,
                             stats=stats, channel_axis=channel_axis, frozen=frozen,
                             activation=activation, **a)
        return _framework_result(fw, r, {0: out} if out is not None else {})
    kind, p, dy, x, mean, rstd, gamma, beta = V.backward_call(
        dy, x, mean, rstd, n_groups, gamma, stats, channel_axis, out, frozen, beta, activation)
    xp, backend = _backend(kind)
    layout, to_k, from_k = _layout(xp, x, p.channel_axis)
    p = V.with_layout(p, layout)
    xk = _contig(xp, to_k(x))
    dyk = _contig(xp, to_k(dy))
    dxk, copy_back = _output(xp, out, to_k, xk, (xk, dyk))
    dgamma, dbeta, finish = param_grad_arrays(xp, p, gamma, beta)
    if p.size:
        gamma, beta = V.expand_affine(xp, p, gamma), V.expand_affine(xp, p, beta)
        backend.backward(p, dxk, dgamma, dbeta, dyk, xk, _stat_in(xp, mean, p, dxk),
                         _stat_in(xp, rstd, p, dxk), _param(xp, gamma, dxk),
                         beta=_param(xp, beta, dxk), frozen=frozen)
    return (_result(xp, out, dxk, copy_back, from_k),) + finish(dgamma, dbeta)
