"""Group Normalization as four stages, for batches split over processes.

Every Group Normalization is the same stages (``DESIGN.md``)::

    forward:  stats_partial(x)       -> partials (per sample and group)
              stats_merge(partials)  -> mean, rstd, var   (fixed order)
              normalize(x, mean, rstd)
    backward: backward_reduce(dy, x, mean, rstd) -> sums (per sample and channel)
              backward_apply(dy, x, mean, rstd, sums) -> dx
              param_grads(sums, rstd)              -> dgamma, dbeta

A single call (`gn_native.group_norm_forward`, `gn_native.group_norm_backward`)
gives exactly the bits of its stages run one after the other.  A partial and
a sum depend only on their own sample's values, so a batch split over
processes (each holding a contiguous run of samples) gives the bits of one
call on the whole batch: gather the partials (and the backward sums) in
sample order, never summed by the transport, and merge them in that order.
`gn_native.distributed` does this over MPI, `gn_native.dask` over a Dask graph.

Partials, sums and the statistics the stages exchange are float64: the
merged mean keeps its low part (given to `normalize` in float64), which
float32 statistics would lose at data far from zero.

Layouts (C order, float64):

- a partial: ``(N, G, 5)``, fields `PARTIAL_FIELDS` = count, shift (the
  first value of the sample's group), sum ``sum((x - shift) 2^-e)``, sumsq
  ``sum(((x - shift) 2^-e)^2)`` and the exponent e (0 except for extreme
  magnitudes); data holding inf or NaN give a NaN sumsq;
- backward sums: ``(N, C, 2)``, fields `SUM_FIELDS`: ``sum(g)`` and
  ``sum(g * (x - mean))`` per sample and channel, g = dy times the
  activation's derivative (dy without one), mean rounded to x's compute type.
"""
import numpy as np

from . import _api, _cpu
from . import _validate as V

PARTIAL_FIELDS = ("count", "shift", "sum", "sumsq", "exponent")
SUM_FIELDS = ("sum_g", "sum_g_xc")
assert len(PARTIAL_FIELDS) == _cpu.PARTIAL_LEN and len(SUM_FIELDS) == _cpu.DSUM_LEN

__all__ = ["PARTIAL_FIELDS", "SUM_FIELDS", "stats_partial", "stats_merge", "normalize",
           "backward_reduce", "backward_apply", "param_grads"]


def _kernel_view(kind, p, *arrays):
    """(xp, backend, plan in the kernel's layout, from_k, to_k, the arrays in it)."""
    xp, backend = _api._backend(kind)
    layout, to_k, from_k = _api._layout(xp, arrays[0], p.channel_axis)
    p = V.with_layout(p, layout)
    return xp, backend, p, from_k, to_k, [_api._contig(xp, to_k(a)) for a in arrays]


def _f64(xp, a, *targets):
    """A float64, C-contiguous array holding a's values (a copy when it shares
    memory with one of `targets`, which the kernel writes)."""
    return _api._param(xp, xp.asarray(a, dtype=np.float64), *targets)


def _float_array(kind, a, name, ndim=None, last=None):
    """An array argument of float values (partials, sums): as the call's kind,
    of `ndim` dimensions (at least 2 when None) with a last axis of `last`."""
    V.check_given(a, name)
    if kind == "numpy":
        a = V.as_cpu_array(a, name)
    if (a.ndim != ndim) if ndim else a.ndim < 2:
        raise ValueError(f"{name} must have {ndim or 'at least 2'} dimensions, got shape "
                         f"{tuple(a.shape)}")
    if a.shape[-1] != last:
        raise ValueError(f"{name} must have a last axis of {last}, got shape {tuple(a.shape)}")
    if a.dtype.kind != "f":
        raise TypeError(f"{name} must hold floats (float64), got dtype {a.dtype}")
    return a


def stats_partial(x, n_groups, *, eps=1e-5, channel_axis=1):
    """Return the partial statistics of every (sample, group) of `x`.

    The first stage of the forward pass.  Each partial depends only on its
    own sample's values, so the partials of a slice of the batch are the
    rows of the whole batch's.

    Parameters
    ----------
    x : array_like
        Input of shape (N, C, *spatial) (or (N, *spatial, C) with
        ``channel_axis=-1``); NumPy (CPU) or CuPy (GPU).
    n_groups : int
        Number of groups G; it must divide C.
    eps : float, default 1e-5
        As in the forward call: it decides when extreme data take the
        exact, scaled path.
    channel_axis : {1, -1}, default 1
        Axis of the channels.

    Returns
    -------
    ndarray
        float64, shape (N, G, 5): the fields `PARTIAL_FIELDS`.

    See Also
    --------
    stats_merge : Mean, rstd and var from gathered partials.

    Examples
    --------
    >>> import numpy as np
    >>> from gn_native import stages
    >>> x = np.arange(8, dtype=np.float32).reshape(2, 2, 2)
    >>> p = stages.stats_partial(x, 1)
    >>> p.shape, p[1, 0]
    ((2, 1, 5), array([ 4.,  4.,  6., 14.,  0.]))
    """
    kind, x, _, _, _ = V._arrays(x, None, None, None, (), ())
    p = V.plan(x, n_groups, None, None, eps, "sample", channel_axis)
    xp, backend, p, _, _, (xk,) = _kernel_view(kind, p, x)
    part = xp.empty((p.n, p.groups, _cpu.PARTIAL_LEN), np.float64)
    if part.size:
        backend.stats_partial(p, part, xk)
    return part


def stats_merge(partials, *, eps=1e-5):
    """Merge partials along their first axis, in index order.

    Parameters
    ----------
    partials : array_like
        float64, shape (M, ..., 5): M partials of each group (the trailing
        axes).  Batch statistics: the partials of the whole batch, (N, G, 5),
        in sample order.  Per-sample statistics: ``partials[None]``.
    eps : float, default 1e-5
        Added to the variance.

    Returns
    -------
    mean, rstd, var : ndarray
        float64, of shape ``partials.shape[1:-1]``; var is biased.  M = 0 or
        partials that count no value give NaN.

    Raises
    ------
    ValueError
        For a negative or NaN count, or an exponent that is not a whole
        number in [-4096, 4096] (not a partial of `stats_partial`).

    See Also
    --------
    stats_partial : The partials.
    normalize : y from the merged statistics.

    Notes
    -----
    With c the first partial's shift and E the largest exponent, the fold
    is ``S = s_0, Q = q_0`` (scaled to E), then for i >= 1 with ``d = c_i -
    c``: ``S += s_i + m_i d``, ``Q += q_i + d (2 s_i + m_i d)``; ``mean = c +
    S/M``, ``var = max(Q/M - (S/M)^2, 0)``, ``rstd = 1/sqrt(var + eps)``
    (``gn_stats_merge`` in gn_native.h).

    Examples
    --------
    >>> import numpy as np
    >>> from gn_native import stages
    >>> x = np.arange(8, dtype=np.float32).reshape(2, 2, 2)
    >>> mean, rstd, var = stages.stats_merge(stages.stats_partial(x, 1))
    >>> mean, var
    (array([3.5]), array([5.25]))
    >>> stages.stats_merge(stages.stats_partial(x, 1)[None])[0]    # per sample
    array([[1.5],
           [5.5]])
    """
    kind = V.array_module_name(partials)
    partials = _float_array(kind, partials, "partials", last=_cpu.PARTIAL_LEN)
    e = V.check_eps(eps)
    xp, backend = _api._backend(kind)
    rest = tuple(partials.shape[1:-1])
    k = int(np.prod(rest, dtype=np.int64))
    out = [xp.empty(rest, np.float64) for _ in range(3)]
    backend.stats_merge(*out, _f64(xp, partials), partials.shape[0], k, e)
    return tuple(out)


def normalize(x, mean, rstd, n_groups, gamma=None, beta=None, *, stats="batch",
              channel_axis=1, activation=None, out=None):
    """Normalize `x` with given statistics, kept in float64.

    ``y = act(gamma * (x - mean) * rstd + beta)``, the last stage of the
    forward pass: with the statistics of `stats_merge` it gives the bits of
    `gn_native.group_norm_forward`.

    Parameters
    ----------
    x : array_like
        Input, as in `gn_native.group_norm`.
    mean, rstd : array_like
        Shape (G,) for ``stats="batch"``, (N, G) for ``stats="sample"``;
        used in float64.
    n_groups : int
        Number of groups G.
    gamma, beta : array_like, optional
        Shape (C,) or (G,), as in `gn_native.group_norm`.
    stats : {"batch", "sample"}, default "batch"
        The shape of `mean` and `rstd`.
    channel_axis : {1, -1}, default 1
        Axis of the channels.
    activation : {None, "silu", "gelu", "gelu_tanh", "relu"}, default None
        Applied after the affine step.
    out : ndarray, optional
        Array of `x`'s shape and dtype for the result (it may be `x`).

    Returns
    -------
    ndarray
        y, `x`'s shape and dtype (`out` when given).

    See Also
    --------
    stats_merge : The statistics.

    Examples
    --------
    >>> import numpy as np
    >>> import gn_native as gn
    >>> from gn_native import stages
    >>> x = np.arange(8, dtype=np.float32).reshape(2, 2, 2) + 1e4
    >>> mean, rstd, _ = stages.stats_merge(stages.stats_partial(x, 1))
    >>> y = stages.normalize(x, mean, rstd, 1)
    >>> np.array_equal(y, gn.group_norm(x, 1, stats="batch"))
    True
    """
    for a, name in ((mean, "mean"), (rstd, "rstd")):
        V.check_given(a, name)
    kind, x, gamma, beta, (mean, rstd) = V._arrays(x, gamma, beta, out, (mean, rstd),
                                                   ("mean", "rstd"))
    p = V.plan(x, n_groups, gamma, beta, 1e-5, stats, channel_axis, activation=activation)
    if out is not None:
        V.check_out(out, p)
    V.check_stat(mean, "mean", p)
    V.check_stat(rstd, "rstd", p)
    xp, backend, p, from_k, to_k, (xk,) = _kernel_view(kind, p, x)
    gamma, beta = V.expand_affine(xp, p, gamma), V.expand_affine(xp, p, beta)
    yk, copy_back = _api._output(xp, out, to_k, xk, (xk,))
    if p.size:
        backend.normalize_stats(p, yk, xk, _f64(xp, mean, yk), _f64(xp, rstd, yk),
                                _api._param(xp, gamma, yk), _api._param(xp, beta, yk))
    return _api._result(xp, out, yk, copy_back, from_k)


def _backward_view(dy, x, mean, rstd, n_groups, gamma, beta, stats, channel_axis, out,
                   activation):
    """A backward stage's checks and arrays in the kernel's layout: (xp, backend,
    plan, from_k, to_k, dyk, xk, mean, rstd (float64), gamma, beta)."""
    kind, p, dy, x, mean, rstd, gamma, beta = V.backward_call(
        dy, x, mean, rstd, n_groups, gamma, stats, channel_axis, out, False, beta, activation)
    xp, backend, p, from_k, to_k, (xk, dyk) = _kernel_view(kind, p, x, dy)
    gamma, beta = V.expand_affine(xp, p, gamma), V.expand_affine(xp, p, beta)
    return xp, backend, p, from_k, to_k, dyk, xk, mean, rstd, gamma, beta


def backward_reduce(dy, x, mean, rstd, n_groups, gamma=None, beta=None, *, stats="batch",
                    channel_axis=1, activation=None):
    """Return the backward sums of every (sample, channel).

    The first stage of the backward pass.  A sample's sums depend only on
    its own `dy` and `x` (and the statistics).

    Parameters
    ----------
    dy, x : array_like
        Gradient of the output and the forward's input, same shape.
    mean, rstd : array_like
        The forward's statistics (as `gn_native.group_norm_forward` returned
        them, or float64 from `stats_merge`); used in float64.
    n_groups : int
        Number of groups G.
    gamma, beta : array_like, optional
        The forward's parameters (`beta` is read only with an activation).
    stats : {"batch", "sample"}, default "batch"
        The shape of `mean` and `rstd`.
    channel_axis : {1, -1}, default 1
        Axis of the channels.
    activation : {None, "silu", "gelu", "gelu_tanh", "relu"}, default None
        The forward's activation.

    Returns
    -------
    ndarray
        float64, shape (N, C, 2): the fields `SUM_FIELDS`.

    See Also
    --------
    backward_apply : dx from the sums of the whole batch.
    param_grads : dgamma and dbeta from them.

    Examples
    --------
    >>> import numpy as np
    >>> import gn_native as gn
    >>> from gn_native import stages
    >>> x = np.arange(8, dtype=np.float32).reshape(2, 2, 2)
    >>> y, mean, rstd = gn.group_norm_forward(x, 1, stats="batch")
    >>> stages.backward_reduce(np.ones_like(x), x, mean, rstd, 1).shape
    (2, 2, 2)
    """
    xp, backend, p, _, _, dyk, xk, mean, rstd, gamma, beta = _backward_view(
        dy, x, mean, rstd, n_groups, gamma, beta, stats, channel_axis, None, activation)
    sums = xp.empty((p.n, p.c, _cpu.DSUM_LEN), np.float64)
    if sums.size:
        backend.backward_reduce(p, sums, dyk, xk, _f64(xp, mean), _f64(xp, rstd),
                                _api._param(xp, gamma), _api._param(xp, beta))
    return sums


def _check_sums(kind, sums, p, whole):
    """Backward sums (M, C, 2): of the whole batch (M >= N) or these samples' (M = N)."""
    sums = _float_array(kind, sums, "sums", ndim=3, last=_cpu.DSUM_LEN)
    m = sums.shape[0]
    if sums.shape[1] != p.c or (m < p.n if whole else m != p.n):
        want = f"(M, {p.c}, 2) with M >= {p.n}" if whole else f"({p.n}, {p.c}, 2)"
        raise ValueError(f"sums must have shape {want} for stats={p.stats!r}, got "
                         f"{tuple(sums.shape)}")
    return sums


def backward_apply(dy, x, mean, rstd, sums, n_groups, gamma=None, beta=None, *, stats="batch",
                   channel_axis=1, activation=None, out=None):
    """Return dx from the backward sums.

    Parameters
    ----------
    dy, x : array_like
        Gradient of the output and the forward's input, same shape.
    mean, rstd : array_like
        The forward's statistics, as for `backward_reduce`.
    sums : array_like
        float64, (M, C, 2).  ``stats="batch"``: the sums of the whole batch
        in sample order (these samples among them), as gathered from every
        process.  ``stats="sample"``: these samples' own (M = N).
    n_groups : int
        Number of groups G.
    gamma, beta : array_like, optional
        The forward's parameters.
    stats : {"batch", "sample"}, default "batch"
        As in the forward.
    channel_axis : {1, -1}, default 1
        Axis of the channels.
    activation : {None, "silu", "gelu", "gelu_tanh", "relu"}, default None
        The forward's activation.
    out : ndarray, optional
        Array of `x`'s shape and dtype for dx (it may be `dy` or `x`).

    Returns
    -------
    ndarray
        dx, `x`'s shape and dtype (`out` when given).

    See Also
    --------
    backward_reduce : The sums.

    Examples
    --------
    >>> import numpy as np
    >>> import gn_native as gn
    >>> from gn_native import stages
    >>> rng = np.random.default_rng(0)
    >>> x = rng.standard_normal((4, 6, 5)).astype(np.float32)
    >>> dy = rng.standard_normal(x.shape).astype(np.float32)
    >>> y, mean, rstd = gn.group_norm_forward(x, 3, stats="batch")
    >>> sums = stages.backward_reduce(dy, x, mean, rstd, 3)
    >>> dx = stages.backward_apply(dy[2:], x[2:], mean, rstd, sums, 3)  # samples 2 and 3
    >>> np.array_equal(dx, gn.group_norm_backward(dy, x, mean, rstd, 3, stats="batch")[0][2:])
    True
    """
    xp, backend, p, from_k, to_k, dyk, xk, mean, rstd, gamma, beta = _backward_view(
        dy, x, mean, rstd, n_groups, gamma, beta, stats, channel_axis, out, activation)
    sums = _check_sums("numpy" if xp is np else "cupy", sums, p, p.stats == "batch")
    dxk, copy_back = _api._output(xp, out, to_k, xk, (xk, dyk))
    if p.size:
        backend.backward_apply(p, dxk, dyk, xk, _f64(xp, mean, dxk), _f64(xp, rstd, dxk),
                               _f64(xp, sums, dxk), _api._param(xp, gamma, dxk),
                               _api._param(xp, beta, dxk))
    return _api._result(xp, out, dxk, copy_back, from_k)


def param_grads(sums, rstd, n_groups, gamma=None, beta=None, *, stats="batch", dtype):
    """Return dgamma and dbeta from the backward sums.

    ``dgamma_c = sum_n rstd * sums[n, c, 1]``, ``dbeta_c = sum_n sums[n, c,
    0]``, in sample order, rounded to `dtype`: with the sums of the whole
    batch, the gradients of `gn_native.group_norm_backward` on it, bit for
    bit.

    Parameters
    ----------
    sums : array_like
        float64, (M, C, 2), from `backward_reduce` (gathered in sample
        order for a split batch).
    rstd : array_like
        The forward's rstd: (G,) for ``stats="batch"``, (M, G) for
        ``stats="sample"``.
    n_groups : int
        Number of groups G.
    gamma, beta : array_like, optional
        The forward's parameters: they give the gradients' shapes and
        dtypes, as in `gn_native.group_norm_backward`.
    stats : {"batch", "sample"}, default "batch"
        As in the forward.
    dtype : dtype
        The data's dtype, in which the core computes the gradients.

    Returns
    -------
    dgamma, dbeta : ndarray
        `gamma`'s shape and dtype, or (C,) in `dtype` without `gamma`.

    See Also
    --------
    backward_reduce : The sums.

    Examples
    --------
    >>> import numpy as np
    >>> import gn_native as gn
    >>> from gn_native import stages
    >>> x = np.arange(8, dtype=np.float32).reshape(2, 2, 2)
    >>> y, mean, rstd = gn.group_norm_forward(x, 1, stats="batch")
    >>> sums = stages.backward_reduce(np.ones_like(x), x, mean, rstd, 1)
    >>> stages.param_grads(sums, rstd, 1, dtype=np.float32)[1]
    array([4., 4.], dtype=float32)
    """
    V.check_given(rstd, "rstd")
    kind = V.array_module_name(sums, rstd, gamma, beta)
    sums = _float_array(kind, sums, "sums", ndim=3, last=_cpu.DSUM_LEN)
    xp, backend = _api._backend(kind)
    dt = V.check_dtype(V._dtypes.NUMPY.get(str(dtype), dtype), "dtype")
    # the rules of a backward call on (M, C, 0) data, whose sums these are
    stand_in = xp.empty(sums.shape[:2] + (0,), dt)
    _, p, _, _, _, rstd, gamma, beta = V.backward_call(
        stand_in, stand_in, rstd, rstd, n_groups, gamma, stats, 1, None, False, beta)
    dgamma, dbeta, finish = _api.param_grad_arrays(xp, p, gamma, beta)
    backend.param_grads(p, dgamma, dbeta, _f64(xp, sums), _f64(xp, rstd))
    return finish(dgamma, dbeta)
