"""activation= (issue 13): GroupNorm then SiLU/GELU/GELU-tanh/ReLU in one pass, forward
and backward, against the float64 reference (reference.activation) and torch."""
import numpy as np
import pytest

import gn_native as gn
import reference as ref
from allpairs import pairwise_params
from conftest import (AFFINES, DTYPES, LAYOUTS, STATS, assert_bit_identical, assert_close,
                      assert_stats_close, channel_axis, make_affine, make_data, physical_shape)

ACTS = ["silu", "gelu", "gelu_tanh", "relu"]
SHAPES = [
    pytest.param((3, 6, 5, 7), 3, id="odd"),
    pytest.param((2, 8, 4, 4), 1, id="one_group"),
    pytest.param((3, 6, 11), 2, id="1d"),
    pytest.param((5, 12), 4, id="no_spatial"),
    pytest.param((2, 64, 9, 9), 8, id="c64"),
    pytest.param((2, 4, 70, 70), 2, id="chunked"),      # groups longer than one reduction chunk
]


def _case(shape, g, dtype, layout, affine, seed=0):
    # scale 3 and beta ~ N(0, 1): z covers the activations' curved part and both tails
    x = make_data(physical_shape(shape, layout), dtype, seed, loc=1.0, scale=3.0)
    gamma, beta = make_affine(affine, shape[1], g, dtype, seed)
    if beta is not None:
        beta = (beta.astype(np.float64) * 2).astype(dtype)
    return x, gamma, beta


def assert_act_close(y, y_ref, z_ref, act, dtype, name="y"):
    """y = act(z): the GroupNorm error in z carried through |act'(z)|, plus the
    tolerance of a result of y's size (which holds the activation's own rounding,
    within 2 ulp of float32, and the 16-bit dtypes' final rounding)."""
    da = np.abs(ref.activation(z_ref, act)[1])
    tol = da * ref.tolerance(z_ref, dtype) + ref.tolerance(y_ref, dtype)
    err = np.abs(np.asarray(y, np.float64) - y_ref)
    bad = ~(err <= tol)
    assert not bad.any(), (f"{name} ({np.dtype(dtype).name}, {act}): {int(bad.sum())}/{bad.size} "
                           f"values out of tolerance; max error {np.nanmax(err):.3g}")


def assert_act_grads_close(got, dy, x, mean, rstd, g, gamma, beta, stats, ax, act, dtype):
    """(dx, dgamma, dbeta) against reference.backward of dy * act'(z)."""
    gin = ref.act_grad_in(dy, x, mean, rstd, g, gamma, beta, stats, ax, act)
    want = ref.backward(gin, x, mean, rstd, g, gamma, stats, ax)
    mags = ref.backward_magnitudes(gin, x, mean, rstd, g, gamma, stats, ax)
    for name, a, w, m in zip(("dx", "dgamma", "dbeta"), got, want, mags):
        assert_close(a, w, dtype, "backward", name, scale=m)


@pytest.mark.parametrize("shape,g,dtype,layout,stats,affine,act", pairwise_params(
    dict(shape=SHAPES, dtype=DTYPES, layout=LAYOUTS, stats=STATS, affine=AFFINES, act=ACTS),
    full=("dtype", "layout", "stats", "act")))
def test_forward_and_backward_match_reference(shape, g, dtype, layout, stats, affine, act):
    x, gamma, beta = _case(shape, g, dtype, layout, affine)
    ax = channel_axis(layout)
    y, mean, rstd = gn.group_norm_forward(x, g, gamma, beta, stats=stats, channel_axis=ax,
                                          activation=act)
    y_ref, z_ref, m_ref, r_ref = ref.forward_act(x, g, gamma, beta, 1e-5, stats, ax, act)
    assert y.dtype == x.dtype and y.shape == x.shape
    assert_act_close(y, y_ref, z_ref, act, dtype)
    assert_stats_close(mean, rstd, m_ref, r_ref, dtype)     # the statistics are x's
    assert_bit_identical(gn.group_norm(x, g, gamma, beta, stats=stats, channel_axis=ax,
                                       activation=act), y)
    dy = make_data(x.shape, dtype, 7)
    got = gn.group_norm_backward(dy, x, mean, rstd, g, gamma, beta, stats=stats,
                                 channel_axis=ax, activation=act)
    assert all(a.dtype == x.dtype for a in got)
    assert_act_grads_close(got, dy, x, mean, rstd, g, gamma, beta, stats, ax, act, dtype)


@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_matches_torch(act, dtype, layout):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    fn = {"silu": F.silu, "gelu": F.gelu, "relu": F.relu,
          "gelu_tanh": lambda t: F.gelu(t, approximate="tanh")}[act]
    x, gamma, beta = _case((4, 32, 9, 7), 8, dtype, "nchw", "channel", seed=3)
    dy = make_data(x.shape, dtype, 4)
    xt = torch.tensor(x, requires_grad=True)
    gt, bt = torch.tensor(gamma, requires_grad=True), torch.tensor(beta, requires_grad=True)
    yt = fn(F.group_norm(xt, 8, gt, bt, 1e-5))
    yt.backward(torch.tensor(dy))
    ax = channel_axis(layout)
    if layout == "nhwc":
        x, dy = (np.ascontiguousarray(np.moveaxis(a, 1, -1)) for a in (x, dy))
    y, mean, rstd = gn.group_norm_forward(x, 8, gamma, beta, channel_axis=ax, activation=act)
    dx, dgamma, dbeta = gn.group_norm_backward(dy, x, mean, rstd, 8, gamma, beta,
                                               channel_axis=ax, activation=act)
    if layout == "nhwc":
        y, dx = np.moveaxis(y, -1, 1), np.moveaxis(dx, -1, 1)
    tol = dict(rtol=1e-5, atol=2e-5) if dtype == np.float32 else dict(rtol=1e-11, atol=1e-11)
    np.testing.assert_allclose(y, yt.detach().numpy(), **tol, err_msg="y")
    gtol = dict(rtol=1e-4, atol=1e-4) if dtype == np.float32 else dict(rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(dx, xt.grad.numpy(), **gtol, err_msg="dx")
    np.testing.assert_allclose(dgamma, gt.grad.numpy(), **gtol, err_msg="dgamma")
    np.testing.assert_allclose(dbeta, bt.grad.numpy(), **gtol, err_msg="dbeta")


@pytest.mark.parametrize("act", ACTS)
def test_huge_and_nonfinite_pre_activations_as_torch(act):
    """z far in the tails (gamma 1e30) and inf/NaN data: the values torch gives."""
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    fn = {"silu": F.silu, "gelu": F.gelu, "relu": F.relu,
          "gelu_tanh": lambda t: F.gelu(t, approximate="tanh")}[act]
    x = np.array([[[-3.0, -1.0, 0.0, 1.0, 3.0, 2.0]], [[1.0, np.inf, 0.0, 2.0, np.nan, 1.0]]],
                 np.float64).reshape(2, 2, 3)
    gamma = np.array([1e30, -1e30])
    y = gn.group_norm(x, 1, gamma, np.zeros(2), activation=act)
    want = fn(F.group_norm(torch.tensor(x), 1, torch.tensor(gamma),
                            torch.zeros(2, dtype=torch.float64))).numpy()
    np.testing.assert_array_equal(np.isnan(y), np.isnan(want))
    np.testing.assert_allclose(y[~np.isnan(y)], want[~np.isnan(want)], rtol=1e-12)


@pytest.mark.parametrize("act", ACTS)
def test_in_place_and_threads_give_the_same_bits(act):
    x, gamma, beta = _case((4, 32, 33, 17), 8, np.float32, "nchw", "channel", seed=5)
    y = gn.group_norm(x, 8, gamma, beta, activation=act)
    xc = x.copy()
    gn.group_norm(xc, 8, gamma, beta, activation=act, out=xc)
    assert_bit_identical(xc, y, "in place")
    before = gn.get_num_threads()
    try:
        for n in (1, 2):
            gn.set_num_threads(n)
            assert_bit_identical(gn.group_norm(x, 8, gamma, beta, activation=act), y, f"{n} threads")
    finally:
        gn.set_num_threads(before)


def test_activation_none_is_plain_group_norm():
    x, gamma, beta = _case((2, 8, 5, 5), 4, np.float32, "nchw", "channel")
    y0, m0, r0 = gn.group_norm_forward(x, 4, gamma, beta)
    y1, m1, r1 = gn.group_norm_forward(x, 4, gamma, beta, activation=None)
    for a, b in ((y0, y1), (m0, m1), (r0, r1)):
        assert_bit_identical(a, b)
    dy = make_data(x.shape, np.float32, 2)
    g0 = gn.group_norm_backward(dy, x, m0, r0, 4, gamma)
    g1 = gn.group_norm_backward(dy, x, m0, r0, 4, gamma, beta, activation="none")
    for a, b in zip(g0, g1):
        assert_bit_identical(a, b)


@pytest.mark.parametrize("bad,exc", [("swish", ValueError), ("SiLU", ValueError), ("", ValueError),
                                     (1, TypeError), (True, TypeError), (gn, TypeError)])
def test_unknown_activation_is_refused_with_the_valid_names(bad, exc):
    x = np.ones((2, 4, 3), np.float32)
    for call in (lambda: gn.group_norm(x, 2, activation=bad),
                 lambda: gn.group_norm_backward(x, x, np.ones((2, 2), np.float32),
                                                np.ones((2, 2), np.float32), 2, activation=bad),
                 lambda: gn.GroupNorm(2, 4, activation=bad)):
        with pytest.raises(exc, match="activation must be None, 'silu', 'gelu', 'gelu_tanh', 'relu'"):
            call()


@pytest.mark.parametrize("stats", STATS)
@pytest.mark.parametrize("act", ACTS)
def test_layer_with_activation_trains_and_evaluates(act, stats):
    g, c, shape = 4, 16, (3, 16, 6, 5)
    layer = gn.GroupNorm(g, c, stats=stats, track_running_stats=True, activation=act)
    rng = np.random.default_rng(1)
    layer.gamma[...] = rng.uniform(0.5, 1.5, c)
    layer.beta[...] = rng.normal(0, 1, c)
    x = make_data(shape, np.float32, 9, loc=0.5, scale=2.0)
    dy = make_data(shape, np.float32, 10)
    y = layer(x)
    y_ref, z_ref, m, r = ref.forward_act(x, g, layer.gamma, layer.beta, 1e-5, stats, 1, act)
    assert_act_close(y, y_ref, z_ref, act, np.float32)
    dx = layer.backward(dy)
    assert_act_grads_close((dx, layer.dgamma, layer.dbeta), dy, x, m, r, g, layer.gamma,
                           layer.beta, stats, 1, act, np.float32)
    # eval: the running statistics, constants for backward (dx = act'(z) dy gamma rstd)
    layer.eval()
    ye = layer(x)
    rm, rv = layer.running_mean.astype(np.float64), layer.running_var.astype(np.float64)
    ye_ref, ze_ref, _, _ = ref.forward_act(x, g, layer.gamma, layer.beta, 1e-5, "batch", 1, act,
                                           mean=rm, var=rv)
    assert_act_close(ye, ye_ref, ze_ref, act, np.float32, "eval y")
    dxe = layer.backward(dy)
    rstd = 1.0 / np.sqrt(rv + 1e-5)
    gam = np.repeat(rstd, c // g) * layer.gamma.astype(np.float64)
    dxe_ref = dy * ref.activation(ze_ref, act)[1] * gam[None, :, None, None]
    assert_close(dxe, dxe_ref, np.float32, "backward", "eval dx", scale=np.abs(dxe_ref) + 1e-3)
    assert "activation" not in layer.state_dict()
    assert f"activation={act!r}" in repr(layer)
