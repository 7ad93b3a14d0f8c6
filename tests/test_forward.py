"""Forward pass (group_norm, group_norm_forward) against the float64 reference."""
import numpy as np
import pytest

import gn_native as gn
import reference as ref
from allpairs import pairwise_params
from conftest import (AFFINES, DTYPES, LAYOUTS, STATS, assert_bit_identical, assert_close,
                      assert_stats_close, channel_axis, dtype_params, make_affine, make_data,
                      physical_shape, stat_dtype)

# (logical shape (N, C, *spatial), n_groups)
SHAPES = [
    pytest.param((3, 6, 5, 7), 3, id="odd"),
    pytest.param((2, 4, 1, 1), 2, id="1x1"),
    pytest.param((2, 8, 4, 4), 1, id="one_group"),
    pytest.param((2, 6, 3, 5), 6, id="k1"),
    pytest.param((3, 6, 11), 2, id="1d"),
    pytest.param((2, 4, 3, 4, 5), 2, id="3d"),
    pytest.param((5, 12), 4, id="no_spatial"),
    pytest.param((1, 6, 4, 3), 3, id="n1"),
    pytest.param((2, 15, 3, 3), 5, id="c15_k3"),
    pytest.param((2, 64, 9, 9), 8, id="c64"),
]


def _case(shape, g, dtype, layout, affine, seed=0):
    x = make_data(physical_shape(shape, layout), dtype, seed)
    gamma, beta = make_affine(affine, shape[1], g, dtype, seed)
    return x, gamma, beta


def _stat_shape(n, g, stats):
    return (n, g) if stats == "sample" else (g,)


# Every dtype x layout x stats x affine combination (the branches of each dtype's kernel), and
# every shape with every value of each of those (pairwise; see allpairs.py); the other
# combinations are drawn by test_property.py.
@pytest.mark.parametrize("shape,g,dtype,layout,stats,affine", pairwise_params(
    dict(shape=SHAPES, dtype=DTYPES, layout=LAYOUTS, stats=STATS, affine=AFFINES),
    full=("dtype", "layout", "stats", "affine")))
def test_forward_matches_reference(shape, g, dtype, layout, stats, affine):
    x, gamma, beta = _case(shape, g, dtype, layout, affine)
    ax = channel_axis(layout)
    y, mean, rstd = gn.group_norm_forward(x, g, gamma, beta, 1e-5, stats=stats, channel_axis=ax)
    y_ref, m_ref, r_ref = ref.forward(x, g, gamma, beta, 1e-5, stats, ax)
    assert y.shape == x.shape and y.dtype == x.dtype
    assert mean.shape == rstd.shape == _stat_shape(shape[0], g, stats)
    assert_close(y, y_ref, dtype)
    assert_stats_close(mean, rstd, m_ref, r_ref, dtype)


@pytest.mark.parametrize("stats", STATS)
@pytest.mark.parametrize("dtype", dtype_params())
def test_group_norm_is_first_output_of_forward(dtype, stats):
    x, gamma, beta = _case((2, 6, 5, 3), 3, dtype, "nchw", "channel")
    y = gn.group_norm(x, 3, gamma, beta, stats=stats)
    y2 = gn.group_norm_forward(x, 3, gamma, beta, stats=stats)[0]
    assert_bit_identical(y, y2)


@pytest.mark.parametrize("eps", [1e-5, 1e-2, 3.0])
def test_eps_is_used(eps):
    x = make_data((2, 4, 3, 3), np.float64, 1, scale=0.1)
    y, m, r = gn.group_norm_forward(x, 2, eps=eps)
    y_ref, m_ref, r_ref = ref.forward(x, 2, eps=eps)
    assert_close(y, y_ref)
    assert_stats_close(m, r, m_ref, r_ref, x.dtype)


def test_per_group_affine_equals_repeated_per_channel():
    x = make_data((2, 6, 4, 4), np.float64, 2)
    gamma, beta = make_affine("group", 6, 3, np.float64, 2)
    y_g = gn.group_norm(x, 3, gamma, beta)
    y_c = gn.group_norm(x, 3, np.repeat(gamma, 2), np.repeat(beta, 2))
    np.testing.assert_allclose(y_g, y_c, rtol=1e-14, atol=1e-14)


@pytest.mark.parametrize("which", ["gamma", "beta"])
def test_only_one_affine_parameter(which):
    x = make_data((2, 6, 4, 4), np.float32, 3)
    gamma, beta = make_affine("channel", 6, 3, np.float32, 3)
    kw = {"gamma": gamma} if which == "gamma" else {"beta": beta}
    y = gn.group_norm(x, 3, **kw)
    assert_close(y, ref.forward(x, 3, **kw)[0], x.dtype)


# --- statistics given explicitly -----------------------------------------------------------

@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("stats", STATS)
@pytest.mark.parametrize("dtype", dtype_params())
def test_given_mean_and_var(dtype, stats, layout):
    shape, g = (3, 6, 5, 4), 3
    x, gamma, beta = _case(shape, g, dtype, layout, "channel", seed=4)
    ax = channel_axis(layout)
    rng = np.random.default_rng(5)
    sshape = _stat_shape(shape[0], g, stats)
    sd = stat_dtype(dtype)
    mean = rng.normal(0.0, 0.3, sshape).astype(sd)
    var = rng.uniform(0.5, 2.0, sshape).astype(sd)
    y, m, r = gn.group_norm_forward(x, g, gamma, beta, 1e-5, stats=stats, channel_axis=ax,
                                    mean=mean, var=var)
    y_ref, _, r_ref = ref.forward(x, g, gamma, beta, 1e-5, stats, ax, mean=mean, var=var)
    assert m.shape == r.shape == sshape
    assert_stats_close(m, r, mean.astype(np.float64), r_ref, dtype)
    assert_close(y, y_ref, dtype)
    y1 = gn.group_norm(x, g, gamma, beta, 1e-5, stats=stats, channel_axis=ax, mean=mean, var=var)
    assert_bit_identical(y1, y)


def test_given_own_statistics_reproduce_forward():
    x = make_data((2, 6, 5, 5), np.float64, 6)
    y, m, r = gn.group_norm_forward(x, 3)
    var = 1.0 / r ** 2 - 1e-5
    y2 = gn.group_norm(x, 3, mean=m, var=var)
    np.testing.assert_allclose(y2, y, rtol=1e-10, atol=1e-10)


# --- out= -----------------------------------------------------------------------------------

@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", dtype_params())
def test_out_is_written_and_returned(dtype, layout):
    x, gamma, beta = _case((2, 6, 5, 3), 3, dtype, layout, "channel", seed=7)
    ax = channel_axis(layout)
    expected = gn.group_norm(x, 3, gamma, beta, channel_axis=ax)
    out = np.full_like(x, 7)
    res = gn.group_norm(x, 3, gamma, beta, channel_axis=ax, out=out)
    assert res is out
    assert_bit_identical(out, expected)
    out2 = np.full_like(x, 7)
    y, m, r = gn.group_norm_forward(x, 3, gamma, beta, channel_axis=ax, out=out2)
    assert y is out2
    assert_bit_identical(out2, expected)


@pytest.mark.parametrize("stats", STATS)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", dtype_params())
def test_in_place(dtype, layout, stats):
    x, gamma, beta = _case((3, 8, 6, 5), 4, dtype, layout, "group", seed=8)
    ax = channel_axis(layout)
    expected = gn.group_norm(x, 4, gamma, beta, stats=stats, channel_axis=ax)
    res = gn.group_norm(x, 4, gamma, beta, stats=stats, channel_axis=ax, out=x)
    assert res is x
    assert_bit_identical(x, expected)


@pytest.mark.parametrize("dtype", dtype_params())
def test_in_place_channels_last_memory(dtype):
    """out=x where x is a channels_last (NHWC-memory) array seen as NCHW."""
    x = np.moveaxis(make_data((2, 5, 4, 6), dtype, 19), -1, 1)
    expected = gn.group_norm(x.copy(order="K"), 3)  # same (NHWC) kernel
    res = gn.group_norm(x, 3, out=x)
    assert res is x
    np.testing.assert_array_equal(x.astype(np.float64), expected.astype(np.float64))


@pytest.mark.parametrize("dtype", dtype_params())
def test_out_partially_overlapping_input(dtype):
    buf = make_data((4, 6, 5, 5), dtype, 9)
    x = buf[:3]
    expected = gn.group_norm(x.copy(), 3)
    out = buf[1:]
    gn.group_norm(x, 3, out=out)
    np.testing.assert_array_equal(buf[1:].astype(np.float64), expected.astype(np.float64))


def test_out_with_other_memory_order():
    x = make_data((2, 6, 4, 5), np.float32, 10)
    expected = gn.group_norm(x, 3)
    out = np.moveaxis(np.zeros((2, 4, 5, 6), np.float32), -1, 1)  # channels-last memory
    res = gn.group_norm(x, 3, out=out)
    assert res is out
    np.testing.assert_array_equal(out, expected)
    out_f = np.zeros(x.shape, np.float32, order="F")
    gn.group_norm(x, 3, out=out_f)
    np.testing.assert_array_equal(out_f, expected)


# --- strides and memory layouts -------------------------------------------------------------

# views of a (4, 6, 10, 9) array; (view, channel_axis)
NONCONTIGUOUS = [
    pytest.param(lambda b: b[:, :, ::2, :], 1, id="step_h"),
    pytest.param(lambda b: b[::2], 1, id="step_n"),
    pytest.param(lambda b: b[::-1, :, ::-1], 1, id="reversed"),
    pytest.param(lambda b: b.swapaxes(2, 3), 1, id="swap_hw"),
    pytest.param(lambda b: b[:, :, 1:7, 2:5], 1, id="window"),
    pytest.param(lambda b: np.moveaxis(b, 1, -1)[:, ::3], -1, id="nhwc_step"),
    pytest.param(lambda b: np.asfortranarray(b), 1, id="fortran"),
]


@pytest.mark.parametrize("dtype", dtype_params())
@pytest.mark.parametrize("view,ax", NONCONTIGUOUS)
def test_noncontiguous_input(view, ax, dtype):
    x = view(make_data((4, 6, 10, 9), dtype, 11))
    assert not x.flags.c_contiguous
    gamma, beta = make_affine("channel", 6, 3, dtype, 12)
    gs = np.zeros(12, dtype)
    gs[::2] = gamma  # a non-contiguous gamma as well
    y, m, r = gn.group_norm_forward(x, 3, gs[::2], beta, channel_axis=ax)
    y_ref, m_ref, r_ref = ref.forward(x, 3, gamma, beta, channel_axis=ax)
    assert_close(y, y_ref, dtype)
    assert_stats_close(m, r, m_ref, r_ref, dtype)
    assert y.flags.c_contiguous or np.moveaxis(y, 1, -1).flags.c_contiguous


@pytest.mark.parametrize("dtype", dtype_params())
def test_strided_view_input(dtype):
    """A genuinely strided view (not a copy) of a larger array."""
    base = make_data((3, 6, 8, 10), dtype, 13)
    x = base[:, :, 1::2, ::3]
    assert not x.flags.c_contiguous
    y, m, r = gn.group_norm_forward(x, 2)
    y_ref, m_ref, r_ref = ref.forward(x, 2)
    assert_close(y, y_ref, dtype)
    assert_stats_close(m, r, m_ref, r_ref, dtype)
    assert_bit_identical(y, gn.group_norm(np.ascontiguousarray(x), 2))


@pytest.mark.parametrize("shape,dtype,stats", pairwise_params(
    dict(shape=[(2, 6, 5, 4), (2, 6, 3, 2, 2), (3, 8, 7)], dtype=DTYPES, stats=STATS),
    full=("dtype", "stats")))
def test_channels_last_memory_with_channel_axis_1(shape, dtype, stats):
    """torch's channels_last format: logical NCHW whose memory is NHWC."""
    g = 2
    x_nhwc = make_data(physical_shape(shape, "nhwc"), dtype, 14)
    x = np.moveaxis(x_nhwc, -1, 1)
    assert x.shape == shape and not x.flags.c_contiguous
    gamma, beta = make_affine("channel", shape[1], g, dtype, 14)
    y, m, r = gn.group_norm_forward(x, g, gamma, beta, stats=stats)
    y_ref, m_ref, r_ref = ref.forward(x, g, gamma, beta, stats=stats)
    assert_close(y, y_ref, dtype)
    assert_stats_close(m, r, m_ref, r_ref, dtype)
    assert np.moveaxis(y, 1, -1).flags.c_contiguous, "output should keep x's channels-last layout"
    y_last = gn.group_norm(x_nhwc, g, gamma, beta, stats=stats, channel_axis=-1)
    assert_bit_identical(np.moveaxis(y, 1, -1), y_last)


@pytest.mark.parametrize("dtype", dtype_params())
def test_contiguous_output_for_contiguous_input(dtype):
    for layout in LAYOUTS:
        x = make_data(physical_shape((2, 4, 3, 3), layout), dtype, 15)
        y = gn.group_norm(x, 2, channel_axis=channel_axis(layout))
        assert y.flags.c_contiguous


def test_channel_axis_equal_to_last_index():
    x = make_data((2, 3, 4, 6), np.float32, 16)
    y = gn.group_norm(x, 3, channel_axis=-1)
    assert_bit_identical(gn.group_norm(x, 3, channel_axis=3), y)


@pytest.mark.parametrize("dtype", dtype_params())
def test_2d_input_channel_axis_last_is_first(dtype):
    x = make_data((4, 6), dtype, 17)
    assert_bit_identical(gn.group_norm(x, 3, channel_axis=-1), gn.group_norm(x, 3))


# --- empty inputs ---------------------------------------------------------------------------

@pytest.mark.parametrize("shape,dtype,layout,stats", pairwise_params(
    dict(shape=[(0, 6, 4, 4), (2, 6, 0, 4), (0, 6), (2, 6, 0)], dtype=DTYPES, layout=LAYOUTS,
         stats=STATS), full=("dtype", "layout", "stats")))
def test_empty_input(shape, dtype, layout, stats):
    x = np.zeros(physical_shape(shape, layout), dtype)
    gamma, beta = make_affine("channel", 6, 3, dtype, 18)
    y, m, r = gn.group_norm_forward(x, 3, gamma, beta, stats=stats, channel_axis=channel_axis(layout))
    assert y.shape == x.shape and y.dtype == x.dtype and y.size == 0
    assert m.shape == r.shape == _stat_shape(shape[0], 3, stats)
    assert m.dtype == r.dtype == stat_dtype(dtype)
    out = np.empty_like(x)
    assert gn.group_norm(x, 3, gamma, beta, stats=stats, channel_axis=channel_axis(layout),
                         out=out) is out



@pytest.mark.parametrize("gamma_per,beta_per", [("channel", "group"), ("group", "channel")])
def test_mixed_affine_kinds(gamma_per, beta_per):
    """gamma per channel with beta per group (or the reverse) matches the reference."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, 6, 5)).astype(np.float32)
    gamma = rng.standard_normal(6 if gamma_per == "channel" else 3).astype(np.float32)
    beta = rng.standard_normal(6 if beta_per == "channel" else 3).astype(np.float32)
    y = gn.group_norm(x, 3, gamma, beta)
    xr = x.astype(np.float64).reshape(2, 3, -1)
    yr = ((xr - xr.mean(2, keepdims=True)) / np.sqrt(xr.var(2, keepdims=True) + 1e-5)).reshape(2, 6, 5)
    g = np.repeat(gamma, 6 // gamma.size).astype(np.float64)
    b = np.repeat(beta, 6 // beta.size).astype(np.float64)
    np.testing.assert_allclose(y, yr * g[None, :, None] + b[None, :, None], rtol=1e-5, atol=1e-5)
