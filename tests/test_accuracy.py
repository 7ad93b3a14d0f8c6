"""Accuracy on hard data: large mean against spread, constant input, NaN/Inf isolation."""
import numpy as np
import pytest

import gn_native as gn
import reference as ref
from allpairs import pairwise_params
from conftest import (DTYPES, LAYOUTS, STATS, HALF_DTYPES, assert_close, assert_stats_close,
                      channel_axis, dtype_params, make_affine, make_data, physical_shape)

SHAPE, G = (2, 32, 12, 12), 8


@pytest.mark.parametrize("stats", STATS)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("loc", [1e2, 1e4, -1e4])
def test_float32_large_mean(loc, layout, stats):
    """Spec: float32 data with |mean|/std up to 1e4, max abs error of y <= 1e-5."""
    ax = channel_axis(layout)
    x = make_data(physical_shape(SHAPE, layout), np.float32, 0, loc=loc)
    y, m, r = gn.group_norm_forward(x, G, stats=stats, channel_axis=ax)
    y_ref, m_ref, r_ref = ref.forward(x, G, stats=stats, channel_axis=ax)
    err = np.max(np.abs(y.astype(np.float64) - y_ref))
    assert err <= 1e-5, f"max abs error {err:.3g} > 1e-5"
    assert_stats_close(m, r, m_ref, r_ref, x.dtype)


@pytest.mark.parametrize("affine", ["channel", "group"])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_float32_large_mean_with_affine(layout, affine):
    ax = channel_axis(layout)
    x = make_data(physical_shape(SHAPE, layout), np.float32, 1, loc=1e4)
    gamma, beta = make_affine(affine, SHAPE[1], G, np.float32, 1)
    y = gn.group_norm(x, G, gamma, beta, channel_axis=ax)
    y_ref = ref.forward(x, G, gamma, beta, channel_axis=ax)[0]
    err = np.max(np.abs(y.astype(np.float64) - y_ref))
    assert err <= 1e-5 * np.max(np.abs(gamma)) + 1e-6, f"max abs error {err:.3g}"


@pytest.mark.parametrize("stats", STATS)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_float64_large_mean(layout, stats):
    ax = channel_axis(layout)
    x = make_data(physical_shape(SHAPE, layout), np.float64, 2, loc=1e6)
    y, m, r = gn.group_norm_forward(x, G, stats=stats, channel_axis=ax)
    y_ref, m_ref, r_ref = ref.forward(x, G, stats=stats, channel_axis=ax)
    err = np.max(np.abs(y - y_ref))
    assert err <= 1e-7, f"max abs error {err:.3g}"  # one-pass E[x^2]-E[x]^2 gives ~1e-3
    assert_stats_close(m, r, m_ref, r_ref, x.dtype)


# (loc, scale) of 16-bit data whose mean is large against its spread (bfloat16 keeps 8 bits)
HALF_LARGE_MEAN = {"float16": (100.0, 2.0), "bfloat16": (1000.0, 30.0)}


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", dtype_params(HALF_DTYPES))
def test_half_large_mean(dtype, layout):
    loc, scale = HALF_LARGE_MEAN[dtype.name]
    ax = channel_axis(layout)
    x = make_data(physical_shape(SHAPE, layout), dtype, 3, loc=loc, scale=scale)
    gamma, beta = make_affine("channel", SHAPE[1], G, dtype, 3)
    y = gn.group_norm(x, G, gamma, beta, channel_axis=ax)
    assert_close(y, ref.forward(x, G, gamma, beta, channel_axis=ax)[0], dtype)


# every dtype x layout x stats combination, each value with each of them (pairwise)
@pytest.mark.parametrize("value,dtype,layout,stats", pairwise_params(
    dict(value=[3.0, -1024.0, 0.0], dtype=DTYPES, layout=LAYOUTS, stats=STATS),
    full=("dtype", "layout", "stats")))
def test_constant_input(value, dtype, layout, stats):
    """Zero variance: y is exactly beta (xhat = 0), finite; mean is the value, rstd 1/sqrt(eps)."""
    ax = channel_axis(layout)
    x = np.full(physical_shape((2, 8, 5, 3), layout), value, dtype)
    gamma, beta = make_affine("channel", 8, 4, dtype, 4)
    y, m, r = gn.group_norm_forward(x, 4, gamma, beta, 1e-5, stats=stats, channel_axis=ax)
    beta_b = np.broadcast_to(beta if ax == -1 else beta[:, None, None], y.shape).astype(np.float64)
    assert np.all(np.isfinite(y.astype(np.float64)))
    np.testing.assert_array_equal(y.astype(np.float64), beta_b)
    np.testing.assert_array_equal(m.astype(np.float64), value)
    np.testing.assert_allclose(r.astype(np.float64), 1.0 / np.sqrt(1e-5), rtol=1e-6)
    y0 = gn.group_norm(x, 4, stats=stats, channel_axis=ax)
    np.testing.assert_array_equal(y0.astype(np.float64), 0.0)


def _poison_group(shape, layout, bad, n=0, g=1, k=2):
    """Data of `shape` (logical NCHW) with `bad` at one element of (sample n, group g)."""
    x = make_data(physical_shape(shape, layout), np.float64, 5)
    c = g * k + 1  # second channel of group g
    if layout == "nchw":
        x[n, c, 1, 2] = bad
    else:
        x[n, 1, 2, c] = bad
    return x


# every dtype x layout x stats combination, each bad value with each of them (pairwise)
@pytest.mark.parametrize("dtype,layout,stats,bad", pairwise_params(
    dict(dtype=DTYPES, layout=LAYOUTS, stats=STATS,
         bad=[pytest.param(np.nan, id="nan"), pytest.param(np.inf, id="inf"),
              pytest.param(-np.inf, id="-inf")]),
    full=("dtype", "layout", "stats")))
def test_nonfinite_stays_in_its_group(dtype, layout, stats, bad):
    """NaN/Inf spoil their own (n, g) group (every n of group g for "batch"), nothing else."""
    shape, g, k = (3, 16, 4, 5), 8, 2
    ax = channel_axis(layout)
    x = _poison_group(shape, layout, bad).astype(dtype)
    gamma, beta = make_affine("channel", shape[1], g, dtype, 5)
    y, m, r = gn.group_norm_forward(x, g, gamma, beta, stats=stats, channel_axis=ax)
    y_ref, m_ref, r_ref = ref.forward(x, g, gamma, beta, stats=stats, channel_axis=ax)

    yc = np.moveaxis(y, -1, 1) if ax == -1 else y
    yc = yc.astype(np.float64).reshape(shape[0], g, -1)
    spoiled = np.zeros((shape[0], g), bool)
    if stats == "sample":
        spoiled[0, 1] = True
    else:
        spoiled[:, 1] = True
    assert np.all(np.isnan(yc[spoiled])), "the poisoned group should be NaN, as in torch"
    assert np.all(np.isfinite(yc[~spoiled])), "NaN/Inf leaked into other groups"
    clean = ~spoiled
    y_refc = (np.moveaxis(y_ref, -1, 1) if ax == -1 else y_ref).reshape(shape[0], g, -1)
    assert_close(yc[clean], y_refc[clean], dtype)
    m_ok = clean if stats == "sample" else clean[0]
    assert np.all(np.isfinite(m[m_ok])) and np.all(np.isfinite(r[m_ok]))
    assert_stats_close(m[m_ok], r[m_ok], m_ref[m_ok], r_ref[m_ok], dtype)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", dtype_params())
def test_nan_in_backward_stays_in_its_group(dtype, layout):
    shape, g = (3, 16, 4, 5), 8
    ax = channel_axis(layout)
    x = _poison_group(shape, layout, np.nan).astype(dtype)
    dy = make_data(x.shape, dtype, 6)
    _, m, r = gn.group_norm_forward(x, g, channel_axis=ax)
    dx = gn.group_norm_backward(dy, x, m, r, g, channel_axis=ax)[0]
    dxc = (np.moveaxis(dx, -1, 1) if ax == -1 else dx).astype(np.float64).reshape(shape[0], g, -1)
    spoiled = np.zeros((shape[0], g), bool)
    spoiled[0, 1] = True
    assert np.all(np.isfinite(dxc[~spoiled])), "NaN leaked into other groups' dx"
    def grouped(a):
        return (np.moveaxis(a, -1, 1) if ax == -1 else a).reshape(shape[0], g, -1)

    dx_ref = grouped(ref.backward(dy, x, m, r, g, channel_axis=ax)[0])
    mag = grouped(ref.backward_magnitudes(dy, x, m, r, g, channel_axis=ax)[0])
    assert_close(dxc[~spoiled], dx_ref[~spoiled], dtype, "backward", "dx", scale=mag[~spoiled])
