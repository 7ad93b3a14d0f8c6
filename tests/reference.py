"""Plain float64 NumPy reference for Group Normalization.

Slow and obviously correct on purpose: every fast path (C core, SIMD, GPU) is
tested against these functions, with the tolerance policy at the end of this
file.  Nothing here imports gn_native; bench/measure.py loads this file by
path, so the benchmark checks its rows against the same reference and policy.

Conventions (as in the spec): x is (N, C, *spatial), or (N, *spatial, C) with
channel_axis=-1; G groups of K = C // G channels; gamma/beta are None, (C,)
per channel or (G,) per group.  Everything is computed in float64 whatever the
input dtype, from the input's exact values.
"""
import math

import numpy as np


def _channels_last(x, channel_axis):
    return x.ndim > 2 and channel_axis in (-1, x.ndim - 1)


def to_ncs(x, channel_axis=1):
    """float64 copy of x as (N, C, S): channels at axis 1, spatial flattened."""
    x = np.asarray(x).astype(np.float64)
    if _channels_last(x, channel_axis):
        x = np.moveaxis(x, -1, 1)
    return x.reshape(x.shape[0], x.shape[1], -1)


def from_ncs(a, shape, channel_axis=1):
    """Inverse of to_ncs: (N, C, S) back to `shape` in the caller's layout."""
    if _channels_last(np.empty(shape, dtype=np.uint8), channel_axis):
        n, c = shape[0], shape[-1]
        return np.moveaxis(a.reshape((n, c) + tuple(shape[1:-1])), 1, -1)
    return a.reshape(shape)


def per_channel(p, c, g):
    """A per-channel (C,) float64 vector from gamma/beta of shape (C,) or (G,)."""
    p = np.asarray(p).astype(np.float64)
    if p.shape[0] == c:
        return p
    return np.repeat(p, c // g)


def _grouped(x3, g):
    """(N, C, S) -> (N, G, K*S)."""
    n, c, s = x3.shape
    return x3.reshape(n, g, (c // g) * s)


def _reduce_axes(stats):
    # in the (N, G, K*S) view: per (n, g) for "sample", per g for "batch"
    return (2,) if stats == "sample" else (0, 2)


def _bcast(stat, stats):
    """A statistic of shape (N, G) or (G,) broadcast against (N, G, K*S)."""
    stat = np.asarray(stat, dtype=np.float64)
    return stat[:, :, None] if stats == "sample" else stat[None, :, None]


def moments(x, n_groups, stats="sample", channel_axis=1, ddof=0):
    """(mean, var) per (n, g) for "sample" or per g for "batch"."""
    xg = _grouped(to_ncs(x, channel_axis), n_groups)
    ax = _reduce_axes(stats)
    mean = xg.mean(axis=ax)
    count = np.prod([xg.shape[a] for a in ax])
    var = ((xg - _bcast(mean, stats)) ** 2).sum(axis=ax) / (count - ddof)
    return mean, var


def forward(x, n_groups, gamma=None, beta=None, eps=1e-5, stats="sample", channel_axis=1,
            mean=None, var=None):
    """(y, mean, rstd) in float64; y in x's layout.

    With mean= and var= given, they replace the input's statistics.
    """
    x3 = to_ncs(x, channel_axis)
    n, c, s = x3.shape
    if mean is None:
        mean, var = moments(x, n_groups, stats, channel_axis)
    mean = np.asarray(mean, dtype=np.float64)
    rstd = 1.0 / np.sqrt(np.asarray(var, dtype=np.float64) + eps)
    xg = _grouped(x3, n_groups)
    xhat = ((xg - _bcast(mean, stats)) * _bcast(rstd, stats)).reshape(n, c, s)
    y = xhat
    if gamma is not None:
        y = y * per_channel(gamma, c, n_groups)[None, :, None]
    if beta is not None:
        y = y + per_channel(beta, c, n_groups)[None, :, None]
    return from_ncs(y, np.shape(x), channel_axis), mean, rstd


def backward(dy, x, mean, rstd, n_groups, gamma=None, stats="sample", channel_axis=1):
    """(dx, dgamma, dbeta) in float64, from the given mean and rstd.

    mean and rstd are taken as the values of the statistics at x (as torch's
    backward does); the gradient still accounts for their dependence on x:
        xhat = (x - mean) * rstd,   g = dy * gamma
        dx   = rstd * (g - avg(g) - xhat * avg(g * xhat))
    with avg over the group's values (per (n, g), or per g over the batch).
    dgamma/dbeta have gamma's shape, or (C,) when gamma is None.
    """
    x3 = to_ncs(x, channel_axis)
    dy3 = to_ncs(dy, channel_axis)
    n, c, s = x3.shape
    mean_b, rstd_b = _bcast(mean, stats), _bcast(rstd, stats)
    xhat = ((_grouped(x3, n_groups) - mean_b) * rstd_b).reshape(n, c, s)
    gam = np.ones(c) if gamma is None else per_channel(gamma, c, n_groups)
    g = _grouped(dy3 * gam[None, :, None], n_groups)
    gx = g * _grouped(xhat, n_groups)
    ax = _reduce_axes(stats)
    avg_g = g.mean(axis=ax, keepdims=True)
    avg_gx = gx.mean(axis=ax, keepdims=True)
    dx = (rstd_b * (g - avg_g - _grouped(xhat, n_groups) * avg_gx)).reshape(n, c, s)
    dgamma = (dy3 * xhat).sum(axis=(0, 2))
    dbeta = dy3.sum(axis=(0, 2))
    if gamma is not None and np.shape(gamma)[0] != c:  # per group: sum the group's channels
        dgamma = dgamma.reshape(n_groups, -1).sum(axis=1)
        dbeta = dbeta.reshape(n_groups, -1).sum(axis=1)
    return from_ncs(dx, np.shape(x), channel_axis), dgamma, dbeta


def backward_magnitudes(dy, x, mean, rstd, n_groups, gamma=None, stats="sample", channel_axis=1):
    """Sums of the absolute values of the terms that make dx, dgamma and dbeta.

    Rounding errors of any finite-precision backward scale with these, not
    with the (possibly cancelled) results; tolerances use them as the scale.
    """
    x3, dy3 = to_ncs(x, channel_axis), to_ncs(dy, channel_axis)
    n, c, s = x3.shape
    mean_b, rstd_b = _bcast(mean, stats), _bcast(rstd, stats)
    xhat = np.abs(((_grouped(x3, n_groups) - mean_b) * rstd_b).reshape(n, c, s))
    gam = np.ones(c) if gamma is None else per_channel(gamma, c, n_groups)
    g = _grouped(np.abs(dy3 * gam[None, :, None]), n_groups)
    ax = _reduce_axes(stats)
    xg = _grouped(xhat, n_groups)
    dx = (np.abs(rstd_b) * (g + g.mean(axis=ax, keepdims=True)
                            + xg * (g * xg).mean(axis=ax, keepdims=True))).reshape(n, c, s)
    dgamma = np.abs(dy3 * xhat).sum(axis=(0, 2))
    dbeta = np.abs(dy3).sum(axis=(0, 2))
    if gamma is not None and np.shape(gamma)[0] != c:
        dgamma = dgamma.reshape(n_groups, -1).sum(axis=1)
        dbeta = dbeta.reshape(n_groups, -1).sum(axis=1)
    return from_ncs(dx, np.shape(x), channel_axis), dgamma, dbeta


def batch_running_values(x, n_groups, stats="sample", channel_axis=1):
    """(mean, unbiased var) of shape (G,) that one training step feeds the running stats.

    "batch": the group's mean and unbiased variance over its N*K*S values.
    "sample": the batch average of each sample's group mean and unbiased variance.
    """
    mean, var = moments(x, n_groups, stats, channel_axis, ddof=1)
    if stats == "sample":
        mean, var = mean.mean(axis=0), var.mean(axis=0)
    return mean, var


def update_running(running_mean, running_var, x, n_groups, momentum=0.1, stats="sample",
                   channel_axis=1):
    """New (running_mean, running_var) after one training step on x."""
    bm, bv = batch_running_values(x, n_groups, stats, channel_axis)
    rm = (1.0 - momentum) * np.asarray(running_mean, np.float64) + momentum * bm
    rv = (1.0 - momentum) * np.asarray(running_var, np.float64) + momentum * bv
    return rm, rv


def eval_with_running(x, n_groups, running_mean, running_var, gamma=None, beta=None, eps=1e-5,
                      channel_axis=1):
    """y of an eval-mode layer with tracked statistics: every sample uses the running ones."""
    n = np.shape(x)[0]
    mean = np.broadcast_to(np.asarray(running_mean, np.float64), (n, n_groups))
    var = np.broadcast_to(np.asarray(running_var, np.float64), (n, n_groups))
    return forward(x, n_groups, gamma, beta, eps, "sample", channel_axis, mean=mean, var=var)[0]


# ---- the tolerance policy --------------------------------------------------
# One policy for the tests (conftest.assert_close & co.) and the benchmark
# (bench/measure.py loads this file by path), against the float64 results above
# computed from the same input values (the spec's Accuracy section):
#
# - forward y, float64: 1e-12 absolute + 1e-12 relative; float32: 1e-5 + 1e-5.
# - backward (dx, dgamma, dbeta): 1e-4 relative (float32) / 1e-10 (float64),
#   plus 1e-5 / 1e-10 of the summed magnitudes of the terms that make each
#   result (backward_magnitudes): gradients cancel heavily, so rounding
#   errors scale with the terms, not with the result.
# - float16, bfloat16: the exact result rounded to the dtype, plus one ulp of
#   the dtype.  A float32 computation cannot resolve anything smaller than
#   float32 rounding of the terms it adds, so where a result is tiny against
#   its terms (cancellation) a slack of a few float32 ulps of the terms is
#   allowed on top (2**-21 of max|y| forward, 1e-5 of the term magnitudes
#   backward); it only matters for results well below the dtype's ulp at 1.
# - mean/rstd: 1e-6 relative (float32 statistics) / 1e-12 (float64), the
#   mean's error measured against |mean| + std.

_F32, _F64 = np.dtype(np.float32), np.dtype(np.float64)
# (rtol, atol as a fraction of the terms' scale) for float32 and float64
_TOLS = {
    "forward": {_F64: (1e-12, 1e-12), _F32: (1e-5, 1e-5)},
    "backward": {_F64: (1e-10, 1e-10), _F32: (1e-4, 1e-5)},
}
# slack (fraction of the terms' scale) on top of "rounding + 1 ulp" for 16-bit dtypes
_HALF_SLACK = {"forward": 2.0 ** -21, "backward": 1e-5}


def _half_ulp_tolerance(ref, dtype):
    """|round(ref) - ref| + ulp(round(ref)) for a 16-bit float dtype."""
    r = ref.astype(dtype)
    mag = np.abs(r)
    nxt = (mag.view(np.uint16) + np.uint16(1)).view(dtype)
    ulp = nxt.astype(np.float64) - mag.astype(np.float64)
    return np.abs(r.astype(np.float64) - ref) + ulp


def tolerance(ref, dtype, kind="forward", scale=None):
    """Elementwise allowed |actual - ref| for a result of `dtype` ("forward" or "backward").

    `scale` is the size of the terms that make the result (elementwise or
    scalar; backward_magnitudes for gradients).  By default it is 1 for
    float32/float64 forward results (absolute atol) and max|ref| otherwise.
    """
    ref = np.asarray(ref, dtype=np.float64)
    dtype = np.dtype(dtype)
    max_ref = float(np.max(np.abs(ref), initial=0.0)) if ref.size else 0.0
    if dtype in (_F32, _F64):
        rtol, atol = _TOLS[kind][dtype]
        # forward outputs are O(1) by construction: absolute atol unless told otherwise
        s = (1.0 if kind == "forward" else max_ref) if scale is None else scale
        return rtol * np.abs(ref) + atol * np.asarray(s)
    s = max_ref if scale is None else scale
    return _half_ulp_tolerance(ref, dtype) + _HALF_SLACK[kind] * np.asarray(s)


def stats_tolerance(ref_mean, ref_rstd, stat_dtype):
    """(mean tolerance, rstd tolerance), elementwise, for statistics stored in `stat_dtype`.

    The mean's error is judged against the group's spread as well as its size.
    """
    rtol = 1e-12 if np.dtype(stat_dtype) == _F64 else 1e-6
    ref_mean = np.asarray(ref_mean, np.float64)
    ref_rstd = np.asarray(ref_rstd, np.float64)
    return rtol * (np.abs(ref_mean) + 1.0 / ref_rstd), rtol * np.abs(ref_rstd)


# ---- activations after the affine step (issue 13), float64 ----

_SQRT1_2 = 0.7071067811865476
_SQRT_2_PI = 0.7978845608028654     # sqrt(2 / pi)
_ERF = np.frompyfunc(math.erf, 1, 1)


def _erf(z):
    return _ERF(np.asarray(z, np.float64)).astype(np.float64)


def activation(z, act):
    """(act(z), act'(z)) in float64, elementwise; act None/"none" is the identity."""
    z = np.asarray(z, np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        if act in (None, "none"):
            return z, np.ones_like(z)
        if act == "relu":
            return np.where(z < 0, 0.0, z), np.where(z > 0, 1.0, 0.0)
        if act == "silu":
            s = 1.0 / (1.0 + np.exp(-z))
            return z * s, s * (1.0 + z * (1.0 - s))
        if act == "gelu":
            cdf = 0.5 * (1.0 + _erf(z * _SQRT1_2))
            pdf = np.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)
            return z * cdf, cdf + z * pdf
        if act == "gelu_tanh":
            u = _SQRT_2_PI * (z + 0.044715 * z ** 3)
            t = np.tanh(u)
            du = _SQRT_2_PI * (1.0 + 3 * 0.044715 * z * z)
            return 0.5 * z * (1.0 + t), 0.5 * (1.0 + t) + 0.5 * z * (1.0 - t * t) * du
    raise ValueError(f"unknown activation {act!r}")


def forward_act(x, n_groups, gamma=None, beta=None, eps=1e-5, stats="sample", channel_axis=1,
                act=None, mean=None, var=None):
    """(y, z, mean, rstd): y = act(z), z the GroupNorm output (forward's y)."""
    z, mean, rstd = forward(x, n_groups, gamma, beta, eps, stats, channel_axis, mean, var)
    return activation(z, act)[0], z, mean, rstd


def act_grad_in(dy, x, mean, rstd, n_groups, gamma=None, beta=None, stats="sample",
                channel_axis=1, act=None):
    """dy * act'(z) with z recomputed from x and the given statistics: the gradient
    that reaches the GroupNorm output, for backward() and backward_magnitudes()."""
    x3 = to_ncs(x, channel_axis)
    n, c, s = x3.shape
    xhat = ((_grouped(x3, n_groups) - _bcast(mean, stats)) * _bcast(rstd, stats)).reshape(n, c, s)
    z = xhat
    if gamma is not None:
        z = z * per_channel(gamma, c, n_groups)[None, :, None]
    if beta is not None:
        z = z + per_channel(beta, c, n_groups)[None, :, None]
    z = from_ncs(z, np.shape(x), channel_axis)
    return np.asarray(dy, np.float64) * activation(z, act)[1]
