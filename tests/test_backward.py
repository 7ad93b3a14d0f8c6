"""Backward pass (group_norm_backward): reference and central finite differences."""
import numpy as np
import pytest

import gn_native as gn
import reference as ref
from allpairs import pairwise_params
from conftest import (AFFINES, DTYPES, LAYOUTS, STATS, assert_grads_close, channel_axis,
                      dtype_params, make_affine, make_data, physical_shape, stat_dtype)

SHAPES = [
    pytest.param((3, 6, 5, 7), 3, id="odd"),
    pytest.param((2, 4, 1, 1), 2, id="1x1"),
    pytest.param((2, 8, 4, 4), 1, id="one_group"),
    pytest.param((2, 6, 3, 5), 6, id="k1"),
    pytest.param((3, 6, 11), 2, id="1d"),
    pytest.param((2, 4, 3, 2, 5), 2, id="3d"),
    pytest.param((5, 12), 4, id="no_spatial"),
    pytest.param((1, 15, 4, 3), 5, id="n1_c15"),
    pytest.param((2, 64, 9, 9), 8, id="c64"),
]


def _case(shape, g, dtype, layout, affine, seed=0):
    pshape = physical_shape(shape, layout)
    x = make_data(pshape, dtype, seed)
    dy = make_data(pshape, dtype, seed + 1)
    gamma, _ = make_affine(affine, shape[1], g, dtype, seed)
    return x, dy, gamma


# Every dtype x layout x stats x affine combination (the branches of each dtype's kernel), and
# every shape with every value of each of those (pairwise; see allpairs.py); the other
# combinations are drawn by test_property.py.
@pytest.mark.parametrize("shape,g,dtype,layout,stats,affine", pairwise_params(
    dict(shape=SHAPES, dtype=DTYPES, layout=LAYOUTS, stats=STATS, affine=AFFINES),
    full=("dtype", "layout", "stats", "affine")))
def test_backward_matches_reference(shape, g, dtype, layout, stats, affine):
    x, dy, gamma = _case(shape, g, dtype, layout, affine)
    ax = channel_axis(layout)
    _, mean, rstd = gn.group_norm_forward(x, g, gamma, stats=stats, channel_axis=ax)
    dx, dgamma, dbeta = gn.group_norm_backward(dy, x, mean, rstd, g, gamma, stats=stats,
                                               channel_axis=ax)
    pshape = (shape[1],) if gamma is None else gamma.shape
    assert dx.shape == x.shape and dx.dtype == x.dtype
    assert dgamma.shape == dbeta.shape == pshape
    assert dgamma.dtype == dbeta.dtype == x.dtype
    assert_grads_close((dx, dgamma, dbeta), dy, x, mean, rstd, g, gamma, stats, ax)


@pytest.mark.parametrize("stats", STATS)
def test_backward_uses_given_statistics(stats):
    """mean/rstd are taken as given (as torch does), not recomputed from x."""
    x, dy, gamma = _case((2, 6, 4, 5), 3, np.float64, "nchw", "channel", seed=3)
    _, mean, rstd = gn.group_norm_forward(x, 3, gamma, stats=stats)
    mean2, rstd2 = mean + 0.25, rstd * 1.5
    got = gn.group_norm_backward(dy, x, mean2, rstd2, 3, gamma, stats=stats)
    assert_grads_close(got, dy, x, mean2, rstd2, 3, gamma, stats)


@pytest.mark.parametrize("dtype", dtype_params())
def test_backward_noncontiguous_and_channels_last(dtype):
    base_x = make_data((3, 6, 8, 10), dtype, 4)
    base_dy = make_data((3, 6, 8, 10), dtype, 5)
    gamma, _ = make_affine("channel", 6, 3, dtype, 4)
    cases = [
        (base_x[:, :, ::2, 1::3], base_dy[:, :, 1::2, 1::3]),           # strided views
        (np.moveaxis(np.ascontiguousarray(np.moveaxis(base_x, 1, -1)), -1, 1),
         np.moveaxis(np.ascontiguousarray(np.moveaxis(base_dy, 1, -1)), -1, 1)),  # channels_last memory
        (base_x, np.asfortranarray(base_dy)),                           # dy in another order than x
    ]
    for x, dy in cases:
        _, mean, rstd = gn.group_norm_forward(x, 3, gamma)
        got = gn.group_norm_backward(dy, x, mean, rstd, 3, gamma)
        assert_grads_close(got, dy, x, mean, rstd, 3, gamma)


@pytest.mark.parametrize("shape,dtype,layout,stats", pairwise_params(
    dict(shape=[(0, 6, 4, 4), (2, 6, 0, 3), (0, 6)], dtype=DTYPES, layout=LAYOUTS,
         stats=STATS), full=("dtype", "layout", "stats")))
def test_backward_empty(shape, dtype, layout, stats):
    ax = channel_axis(layout)
    x = np.zeros(physical_shape(shape, layout), dtype)
    _, mean, rstd = gn.group_norm_forward(x, 3, stats=stats, channel_axis=ax)
    for gamma in (None, np.ones(3, dtype)):
        dx, dg, db = gn.group_norm_backward(x, x, mean, rstd, 3, gamma, stats=stats,
                                            channel_axis=ax)
        assert dx.shape == x.shape and dx.dtype == x.dtype
        pshape = (6,) if gamma is None else (3,)
        assert dg.shape == db.shape == pshape
        np.testing.assert_array_equal(dg.astype(np.float64), 0.0)
        np.testing.assert_array_equal(db.astype(np.float64), 0.0)


@pytest.mark.parametrize("dtype", dtype_params())
def test_statistics_of_any_float_dtype_accepted(dtype):
    """mean/rstd from elsewhere (e.g. float64 for float32 data) are accepted."""
    x, dy, gamma = _case((2, 4, 3, 3), 2, dtype, "nchw", "channel", seed=6)
    _, mean, rstd = gn.group_norm_forward(x, 2, gamma)
    other = np.float64 if stat_dtype(dtype) == np.float32 else np.float32
    mean, rstd = mean.astype(other), rstd.astype(other)
    got = gn.group_norm_backward(dy, x, mean, rstd, 2, gamma)
    # float64 data computes with the statistics' float32 values, float32 data rounds them back
    assert_grads_close(got, dy, x, mean, rstd, 2, gamma)


# --- central finite differences in float64 ---------------------------------------------------

def _numeric_grad(f, a, h=1e-6):
    """Central differences of the scalar f() with respect to every entry of a (in place)."""
    grad = np.zeros(a.shape)
    flat, gflat = a.reshape(-1), grad.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + h
        fp = f()
        flat[i] = old - h
        fm = f()
        flat[i] = old
        gflat[i] = (fp - fm) / (2 * h)
    return grad


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("affine", AFFINES)
@pytest.mark.parametrize("stats", STATS)
def test_backward_matches_finite_differences(stats, affine, layout):
    shape, g = (2, 4, 3, 2), 2
    ax = channel_axis(layout)
    x = make_data(physical_shape(shape, layout), np.float64, 7)
    w = make_data(x.shape, np.float64, 8)
    gamma, beta = make_affine(affine, shape[1], g, np.float64, 7)

    def loss():
        return float(np.sum(gn.group_norm(x, g, gamma, beta, 1e-3, stats=stats,
                                          channel_axis=ax) * w))

    _, mean, rstd = gn.group_norm_forward(x, g, gamma, beta, 1e-3, stats=stats, channel_axis=ax)
    dx, dgamma, dbeta = gn.group_norm_backward(w, x, mean, rstd, g, gamma, stats=stats,
                                               channel_axis=ax)
    np.testing.assert_allclose(dx, _numeric_grad(loss, x), rtol=1e-6, atol=1e-7, err_msg="dx")
    if affine != "none":
        np.testing.assert_allclose(dgamma, _numeric_grad(loss, gamma), rtol=1e-6, atol=1e-7,
                                   err_msg="dgamma")
        np.testing.assert_allclose(dbeta, _numeric_grad(loss, beta), rtol=1e-6, atol=1e-7,
                                   err_msg="dbeta")
    else:
        # the gradient a per-channel affine layer (gamma=1, beta=0) would get
        ones, zeros = np.ones(shape[1]), np.zeros(shape[1])

        def loss_affine():
            return float(np.sum(gn.group_norm(x, g, ones, zeros, 1e-3, stats=stats,
                                              channel_axis=ax) * w))

        np.testing.assert_allclose(dgamma, _numeric_grad(loss_affine, ones), rtol=1e-6,
                                   atol=1e-7, err_msg="dgamma (no affine)")
        np.testing.assert_allclose(dbeta, _numeric_grad(loss_affine, zeros), rtol=1e-6,
                                   atol=1e-7, err_msg="dbeta (no affine)")


def test_reference_backward_matches_finite_differences():
    """The reference itself, so a wrong reference cannot hide a wrong library."""
    shape, g = (2, 6, 3), 3
    for stats in STATS:
        x = make_data(shape, np.float64, 9)
        w = make_data(shape, np.float64, 10)
        gamma, beta = make_affine("group", 6, g, np.float64, 9)

        def loss():
            return float(np.sum(ref.forward(x, g, gamma, beta, 1e-3, stats)[0] * w))

        _, mean, rstd = ref.forward(x, g, gamma, beta, 1e-3, stats)
        dx, dg, db = ref.backward(w, x, mean, rstd, g, gamma, stats)
        np.testing.assert_allclose(dx, _numeric_grad(loss, x), rtol=1e-6, atol=1e-8)
        np.testing.assert_allclose(dg, _numeric_grad(loss, gamma), rtol=1e-6, atol=1e-8)
        np.testing.assert_allclose(db, _numeric_grad(loss, beta), rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("target", ["new", "dy", "x", "strided"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_out_receives_dx(dtype, target):
    """out= gets dx (fresh, aliasing dy or x, or a strided view) and equals the allocating call."""
    rng = np.random.default_rng(11)
    x = rng.standard_normal((2, 6, 5, 4)).astype(dtype)
    dy = rng.standard_normal(x.shape).astype(dtype)
    gamma = rng.standard_normal(6).astype(dtype)
    _, mean, rstd = gn.group_norm_forward(x, 3, gamma)
    want = gn.group_norm_backward(dy, x, mean, rstd, 3, gamma)
    x2, dy2 = x.copy(), dy.copy()
    out = {"new": np.empty_like(x), "dy": dy2, "x": x2,
           "strided": np.empty(x.shape[:-1] + (8,), dtype)[..., ::2]}[target]
    got = gn.group_norm_backward(dy2, x2, mean, rstd, 3, gamma, out=out)
    assert got[0] is out
    np.testing.assert_array_equal(out, want[0])
    np.testing.assert_array_equal(got[1], want[1])
    np.testing.assert_array_equal(got[2], want[2])


def test_out_refused_untouched():
    x = np.ones((2, 4, 3), np.float32)
    _, mean, rstd = gn.group_norm_forward(x, 2)
    bad = np.full((2, 4, 3), 7.0, np.float64)
    with pytest.raises(TypeError, match="out"):
        gn.group_norm_backward(x, x, mean, rstd, 2, out=bad)
    assert (bad == 7.0).all()
