"""Plain float64 NumPy Group Normalization: the truth every timed result is checked against.

Independent of gn_native on purpose: two-pass statistics in float64, the
textbook backward formula, no layout tricks.  Inputs are in the logical
(N, C, *spatial) order, of any float dtype; gamma/beta are per channel.
"""
import numpy as np


def _grouped(a, g):
    """(N, G, K*S) float64 view of an (N, C, *spatial) array."""
    n, c = a.shape[:2]
    return np.asarray(a, dtype=np.float64).reshape(n, g, -1)


def _axes(stats):
    # sample: one (mean, var) per (n, g); batch: one per g, over the batch too
    return (0, 2) if stats == "batch" else (2,)


def _per_channel(p, shape, g):
    """Per-channel vector broadcast against a (N, G, K*S) array."""
    n, c = shape[:2]
    k = c // g
    s = int(np.prod(shape[2:], dtype=np.int64))
    p = np.asarray(p, dtype=np.float64).reshape(1, g, k, 1)
    return np.broadcast_to(p, (1, g, k, s)).reshape(1, g, k * s)


def forward(x, g, gamma, beta, eps, stats):
    """(y, mean, rstd) in float64; mean/rstd shaped (N, G) or (G,) like the package's."""
    xg = _grouped(x, g)
    ax = _axes(stats)
    mean = xg.mean(axis=ax, keepdims=True)
    var = np.square(xg - mean).mean(axis=ax, keepdims=True)
    rstd = 1.0 / np.sqrt(var + eps)
    y = (xg - mean) * rstd
    if gamma is not None:
        y *= _per_channel(gamma, x.shape, g)
    if beta is not None:
        y += _per_channel(beta, x.shape, g)
    stat_shape = (g,) if stats == "batch" else (x.shape[0], g)
    return y.reshape(x.shape), mean.reshape(stat_shape), rstd.reshape(stat_shape)


def backward(dy, x, g, gamma, eps, stats):
    """(dx, dgamma, dbeta) in float64, from the input's own exact statistics.

    With xhat = (x - mean) * rstd and gd = dy * gamma, over each statistics set:
    dx = rstd * (gd - mean(gd) - xhat * mean(gd * xhat)).
    """
    shape = x.shape
    n, c = shape[:2]
    xg = _grouped(x, g)
    dyg = _grouped(dy, g)
    ax = _axes(stats)
    mean = xg.mean(axis=ax, keepdims=True)
    rstd = 1.0 / np.sqrt(np.square(xg - mean).mean(axis=ax, keepdims=True) + eps)
    xhat = (xg - mean) * rstd
    gd = dyg * _per_channel(gamma, shape, g) if gamma is not None else dyg
    dx = rstd * (gd - gd.mean(axis=ax, keepdims=True)
                 - xhat * (gd * xhat).mean(axis=ax, keepdims=True))
    per_c = (n, c, -1)
    dgamma = (dyg * xhat).reshape(per_c).sum(axis=(0, 2))
    dbeta = dyg.reshape(per_c).sum(axis=(0, 2))
    return dx.reshape(shape), dgamma, dbeta
