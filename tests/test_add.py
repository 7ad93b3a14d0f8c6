"""add= and sum_out= (issue 13): x + add normalized in the same pass, as ONNX Runtime's
SkipGroupNorm, for the three add shapes (x's, (N, C), (C,)).

The contract is exact: the call with add= gives the bits of the same call on NumPy's
x + add (computed in x's dtype), and sum_out receives those bits.  On top of that the
results are checked against the float64 reference on the sum, and against torch's
F.silu(F.group_norm(x + add)) and its autograd gradients, add's included (the README's
recipe: dx of the backward on the sum, summed over the broadcast axes)."""
import numpy as np
import pytest

import gn_native as gn
import reference as ref
from allpairs import pairwise_params
from conftest import (AFFINES, DTYPES, LAYOUTS, STATS, assert_bit_identical, assert_close,
                      assert_stats_close, channel_axis, make_affine, make_data, physical_shape)

ADDS = ["full", "nc", "c"]
SHAPES = [
    pytest.param((3, 6, 5, 7), 3, id="odd"),
    pytest.param((2, 8, 4, 4), 1, id="one_group"),
    pytest.param((3, 6, 11), 2, id="1d"),
    pytest.param((5, 12), 4, id="no_spatial"),
    pytest.param((2, 4, 70, 70), 2, id="chunked"),      # groups longer than one reduction chunk
    pytest.param((1, 4, 33, 9), 1, id="one_stat_group"),  # fewer groups than threads
]


def _add(kind, shape, layout, dtype, seed):
    """add of the given kind for data of logical shape `shape`, and its view broadcast
    against x in x's layout (for NumPy's x + add)."""
    n, c, nsp = shape[0], shape[1], len(shape) - 2
    if kind == "full":
        a = make_data(physical_shape(shape, layout), dtype, seed, scale=2.0)
        return a, a
    a = make_data((n, c) if kind == "nc" else (c,), dtype, seed, scale=2.0)
    lead = (n,) if kind == "nc" else (1,)
    b = a.reshape(lead + (1,) * nsp + (c,) if layout == "nhwc" else lead + (c,) + (1,) * nsp)
    return a, b


def _sum(x, ab):
    s = x + ab
    assert s.dtype == x.dtype
    return s


def _grad_add(dx, kind, layout, a):
    """The README's recipe: the gradient of add from the backward's dx on the sum."""
    if kind == "full":
        return dx
    ax = -1 if layout == "nhwc" else 1
    d = np.moveaxis(dx.astype(np.float64), ax, 1)
    d = d.reshape(d.shape[0], d.shape[1], -1).sum(axis=2)
    return (d if kind == "nc" else d.sum(axis=0)).astype(a.dtype)


@pytest.mark.parametrize("shape,g,dtype,layout,stats,affine,kind,act,with_sum", pairwise_params(
    dict(shape=SHAPES, dtype=DTYPES, layout=LAYOUTS, stats=STATS, affine=AFFINES, kind=ADDS,
         act=[None, "silu"], with_sum=[False, True]),
    full=("dtype", "layout", "kind")))
def test_add_gives_the_bits_of_the_call_on_the_sum(shape, g, dtype, layout, stats, affine, kind,
                                                   act, with_sum):
    ax = channel_axis(layout)
    x = make_data(physical_shape(shape, layout), dtype, 0, loc=1.0, scale=3.0)
    a, ab = _add(kind, shape, layout, dtype, 1)
    gamma, beta = make_affine(affine, shape[1], g, dtype, 2)
    s = _sum(x, ab)
    kw = dict(stats=stats, channel_axis=ax, activation=act)
    want = gn.group_norm_forward(s, g, gamma, beta, **kw)
    if with_sum:
        so = np.full_like(x, np.nan)
        got = gn.group_norm_forward(x, g, gamma, beta, add=a, sum_out=so, **kw)
        assert len(got) == 4 and got[3] is so
        assert_bit_identical(so, s, "sum_out")
    else:
        got = gn.group_norm_forward(x, g, gamma, beta, add=a, **kw)
        assert len(got) == 3
    for name, u, v in zip(("y", "mean", "rstd"), got, want):
        assert_bit_identical(u, v, name)
    assert_bit_identical(gn.group_norm(x, g, gamma, beta, add=a, **kw), want[0], "group_norm")
    if act is None:    # and the float64 reference on the sum (the activation's: test_activation)
        y_ref, m_ref, r_ref = ref.forward(s, g, gamma, beta, 1e-5, stats, ax)
        assert_close(got[0], y_ref, dtype)
        assert_stats_close(got[1], got[2], m_ref, r_ref, dtype)


@pytest.mark.parametrize("kind", ADDS)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_matches_torch_with_gradients(kind, layout, dtype):
    """F.silu(F.group_norm(x + add)) and the gradients of x, add, weight and bias."""
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    shape, g = (3, 16, 6, 5), 4
    x = make_data(shape, dtype, 5, loc=2.0, scale=3.0)
    a, ab = _add(kind, shape, "nchw", dtype, 6)
    gamma, beta = make_affine("channel", 16, g, dtype, 7)
    dy = make_data(shape, dtype, 8)
    xt, at = torch.tensor(x, requires_grad=True), torch.tensor(a, requires_grad=True)
    gt, bt = torch.tensor(gamma, requires_grad=True), torch.tensor(beta, requires_grad=True)
    abt = at if kind == "full" else (at[:, :, None, None] if kind == "nc" else at[None, :, None, None])
    yt = F.silu(F.group_norm(xt + abt, g, gt, bt, 1e-5))
    yt.backward(torch.tensor(dy))
    ax = channel_axis(layout)
    if layout == "nhwc":
        x, dy = (np.ascontiguousarray(np.moveaxis(v, 1, -1)) for v in (x, dy))
        if kind == "full":
            a = np.ascontiguousarray(np.moveaxis(a, 1, -1))
    y, mean, rstd, s = gn.group_norm_forward(x, g, gamma, beta, channel_axis=ax, activation="silu",
                                             add=a, sum_out=np.empty_like(x))
    dx, dgamma, dbeta = gn.group_norm_backward(dy, s, mean, rstd, g, gamma, beta, channel_axis=ax,
                                               activation="silu")
    da = _grad_add(dx, kind, layout, a)
    if layout == "nhwc":
        y, dx = np.moveaxis(y, -1, 1), np.moveaxis(dx, -1, 1)
        if kind == "full":
            da = np.moveaxis(da, -1, 1)
    tol = dict(rtol=1e-5, atol=2e-5) if dtype == np.float32 else dict(rtol=1e-11, atol=1e-11)
    np.testing.assert_allclose(y, yt.detach().numpy(), **tol, err_msg="y")
    gtol = dict(rtol=1e-4, atol=1e-4) if dtype == np.float32 else dict(rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(dx, xt.grad.numpy(), **gtol, err_msg="dx")
    np.testing.assert_allclose(da, at.grad.numpy(), **gtol, err_msg="d add")
    np.testing.assert_allclose(dgamma, gt.grad.numpy(), **gtol, err_msg="dgamma")
    np.testing.assert_allclose(dbeta, bt.grad.numpy(), **gtol, err_msg="dbeta")


@pytest.mark.parametrize("kind", ["full", "nc"])
@pytest.mark.parametrize("dtype", [d for d in DTYPES if np.dtype(d).itemsize == 2])
def test_sixteen_bit_sum_is_rounded_once_as_torch(kind, dtype):
    """The sum is rounded to the 16-bit dtype before the statistics, as torch's x + add."""
    torch = pytest.importorskip("torch")
    tdt = torch.float16 if np.dtype(dtype) == np.float16 else torch.bfloat16
    shape = (2, 8, 5, 5)
    x = make_data(shape, np.float32, 9, loc=100.0, scale=3.0)      # sums far from zero round
    a, _ = _add(kind, shape, "nchw", np.float32, 10)
    xt, at = torch.tensor(x).to(tdt), torch.tensor(a).to(tdt)
    st = xt + (at if kind == "full" else at[:, :, None, None])
    s_t = st.float().numpy().astype(dtype)
    so = np.empty(shape, dtype)
    gn.group_norm_forward(x.astype(dtype), 2, add=a.astype(dtype), sum_out=so)
    assert_bit_identical(so, s_t, "sum vs torch")


ALIASES = ["out_x", "out_add", "sum_x", "sum_add", "out_x_sum_add", "out_add_sum_x"]


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("stats", STATS)
@pytest.mark.parametrize("alias", ALIASES)
def test_in_place_outputs(alias, stats, layout):
    """out= and sum_out= may be x or (a full) add itself: the same bits as fresh arrays."""
    shape, g, dtype = (2, 6, 9, 8), 3, np.float32
    ax = channel_axis(layout)
    x0 = make_data(physical_shape(shape, layout), dtype, 11, loc=1.0)
    a0, _ = _add("full", shape, layout, dtype, 12)
    gamma, beta = make_affine("channel", 6, g, dtype, 13)
    kw = dict(stats=stats, channel_axis=ax, activation="gelu")
    y0, m0, r0, s0 = gn.group_norm_forward(x0, g, gamma, beta, add=a0, sum_out=np.empty_like(x0),
                                           **kw)
    x, a = x0.copy(), a0.copy()
    out = {"out_x": x, "out_add": a, "out_x_sum_add": x, "out_add_sum_x": a}.get(alias)
    so = {"sum_x": x, "sum_add": a, "out_x_sum_add": a, "out_add_sum_x": x}.get(alias)
    if so is None:
        so = np.empty_like(x0)
    y, mean, rstd, s = gn.group_norm_forward(x, g, gamma, beta, add=a, out=out, sum_out=so, **kw)
    assert s is so and (out is None or y is out)
    assert_bit_identical(y, y0, "y")
    assert_bit_identical(s, s0, "sum_out")
    assert_bit_identical(mean, m0, "mean")


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("target", ["out", "sum_out"])
def test_outputs_overlapping_the_parameters_and_a_broadcast_add(target, layout):
    """gamma, beta and an (N, C) add that live inside an output are read before it is written."""
    shape, g, dtype = (2, 4, 6, 5), 2, np.float64
    ax = channel_axis(layout)
    x = make_data(physical_shape(shape, layout), dtype, 14, loc=1.0)
    a, _ = _add("nc", shape, layout, dtype, 15)
    gamma, beta = make_affine("channel", 4, g, dtype, 16)
    want = gn.group_norm_forward(x, g, gamma, beta, channel_axis=ax, activation="silu", add=a,
                                 sum_out=np.empty_like(x))
    buf = np.zeros_like(x)
    flat = buf.reshape(-1)
    flat[:4], flat[4:8], flat[8:16] = gamma, beta, a.reshape(-1)
    g_in, b_in, a_in = flat[:4], flat[4:8], flat[8:16].reshape(2, 4)
    kw = {target: buf}
    if target == "out":
        kw["sum_out"] = np.empty_like(x)
    got = gn.group_norm_forward(x, g, g_in, b_in, channel_axis=ax, activation="silu", add=a_in,
                                **kw)
    for name, u, v in zip(("y", "mean", "rstd", "sum_out"), got, want):
        assert_bit_identical(u, v, name)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("shape,g,layout,stats", [
    ((4, 8, 16, 16), 4, "nchw", "sample"),      # fused per group
    ((1, 4, 64, 40), 1, "nchw", "sample"),      # one group: the whole-tensor add first
    ((4, 9, 9, 16), 4, "nhwc", "sample"),       # fused per sample (shapes as stored)
    ((3, 8, 20, 20), 2, "nchw", "batch"),
    ((3, 20, 20, 8), 2, "nhwc", "batch"),
])
def test_thread_counts_give_the_same_bits(shape, g, layout, stats, threads):
    x = make_data(shape, np.float32, 17, loc=5.0)
    a = make_data(shape, np.float32, 18)
    ax = 1 if layout == "nchw" else -1
    s = x + a
    old = gn.get_num_threads()
    try:
        gn.set_num_threads(threads)
        got = gn.group_norm_forward(x, g, stats=stats, channel_axis=ax, add=a,
                                    sum_out=np.empty_like(x))
        want = gn.group_norm_forward(s, g, stats=stats, channel_axis=ax)
    finally:
        gn.set_num_threads(old)
    for name, u, v in zip(("y", "mean", "rstd"), got, want):
        assert_bit_identical(u, v, name)
    assert_bit_identical(got[3], s, "sum_out")


def test_given_statistics_and_running_statistics_use_the_sum():
    x = make_data((3, 8, 7, 7), np.float32, 19, loc=2.0)
    a = make_data((3, 8), np.float32, 20, loc=10.0)
    s = x + a[:, :, None, None]
    mean, var = ref.moments(s, 4)
    y = gn.group_norm(x, 4, mean=mean, var=var, add=a)
    assert_bit_identical(y, gn.group_norm(s, 4, mean=mean, var=var))
    y, _, _, so = gn.group_norm_forward(x, 4, mean=mean, var=var, add=a, sum_out=np.empty_like(x))
    assert_bit_identical(so, s, "sum_out")
    rm, rv = np.zeros(4, np.float32), np.ones(4, np.float32)
    rm2, rv2 = rm.copy(), rv.copy()
    gn.group_norm_forward(x, 4, add=a, running_mean=rm, running_var=rv)
    gn.group_norm_forward(s, 4, running_mean=rm2, running_var=rv2)
    assert_bit_identical(rm, rm2, "running_mean")
    assert_bit_identical(rv, rv2, "running_var")


@pytest.mark.parametrize("shape", [(0, 4, 3), (2, 0, 3), (2, 4, 0)])
def test_empty(shape):
    x = np.ones(shape, np.float32)
    a = np.ones(shape[:2], np.float32)
    y, m, r, s = gn.group_norm_forward(x, 1 if shape[1] == 0 else 2, add=a, sum_out=np.empty_like(x))
    assert y.shape == s.shape == shape


def _bad_calls():
    x = np.ones((2, 4, 3), np.float32)
    ok = np.ones((2, 4), np.float32)
    ro = np.ones_like(x)
    ro.flags.writeable = False
    out = np.zeros_like(x)
    return [
        ("add shape", dict(add=np.ones((4, 2), np.float32)), ValueError, "add must have"),
        ("add 1d", dict(add=np.ones(3, np.float32)), ValueError, "add must have"),
        ("add dtype", dict(add=np.ones((2, 4), np.float64)), TypeError, "add has dtype float64"),
        ("add type", dict(add=np.ones((2, 4), np.int32)), TypeError, "add"),
        ("sum_out alone", dict(sum_out=np.empty_like(x)), ValueError, "sum_out is written only"),
        ("sum_out shape", dict(add=ok, sum_out=np.empty((2, 4), np.float32)), ValueError,
         "sum_out must have shape"),
        ("sum_out dtype", dict(add=ok, sum_out=np.empty(x.shape, np.float64)), TypeError,
         "sum_out has dtype"),
        ("sum_out read-only", dict(add=ok, sum_out=ro), ValueError, "sum_out must be writable"),
        ("sum_out list", dict(add=ok, sum_out=x.tolist()), TypeError, "sum_out must be a numpy"),
        ("sum_out is out", dict(add=ok, sum_out=out, out=out), ValueError,
         "sum_out and out must be different"),
    ], x


@pytest.mark.parametrize("i", range(10))
def test_bad_arguments_are_refused_before_any_work(i):
    cases, x = _bad_calls()
    name, kw, exc, msg = cases[i]
    outs = {k: v for k, v in kw.items() if k in ("out", "sum_out") and isinstance(v, np.ndarray)}
    before = {k: v.copy() for k, v in outs.items()}
    x0 = x.copy()
    with pytest.raises(exc, match=msg):
        gn.group_norm_forward(x, 2, **kw)
    if "sum_out" not in kw:
        with pytest.raises(exc, match=msg):
            gn.group_norm(x, 2, **kw)
    assert_bit_identical(x, x0, "x")
    for k, v in outs.items():
        assert np.array_equal(v, before[k], equal_nan=True), f"{name}: {k} was written"


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("kind", ADDS)
def test_layer_add_matches_torch(kind, layout):
    """GroupNorm(..., activation="silu")(x, add=a): torch's module on x + a, its gradients
    (dx, dgamma, dbeta and the layer's dadd); then in eval mode on running statistics."""
    torch = pytest.importorskip("torch")
    shape, g = (3, 8, 5, 6), 4
    x = make_data(shape, np.float64, 30, loc=1.0, scale=2.0)
    a, _ = _add(kind, shape, "nchw", np.float64, 31)
    dy = make_data(shape, np.float64, 32)
    m = torch.nn.GroupNorm(g, 8, dtype=torch.float64)
    with torch.no_grad():
        m.weight.uniform_(0.5, 1.5, generator=torch.Generator().manual_seed(0))
        m.bias.normal_(0.0, 0.5, generator=torch.Generator().manual_seed(1))
    xt, at = torch.tensor(x, requires_grad=True), torch.tensor(a, requires_grad=True)
    abt = at if kind == "full" else (at[:, :, None, None] if kind == "nc" else at[None, :, None, None])
    yt = torch.nn.functional.silu(m(xt + abt))
    yt.backward(torch.tensor(dy))
    ax = channel_axis(layout)
    layer = gn.GroupNorm(g, 8, dtype=np.float64, activation="silu", channel_axis=ax,
                         track_running_stats=True)
    layer.gamma[...] = m.weight.detach().numpy()
    layer.beta[...] = m.bias.detach().numpy()
    to = (lambda v: np.ascontiguousarray(np.moveaxis(v, 1, -1))) if layout == "nhwc" else (lambda v: v)
    back = (lambda v: np.moveaxis(v, -1, 1)) if layout == "nhwc" else (lambda v: v)
    ak = to(a) if kind == "full" else a
    y = layer(to(x), add=ak)
    dx = layer.backward(to(dy))
    tol = dict(rtol=1e-11, atol=1e-11)
    np.testing.assert_allclose(back(y), yt.detach().numpy(), **tol, err_msg="y")
    np.testing.assert_allclose(back(dx), xt.grad.numpy(), **tol, err_msg="dx")
    np.testing.assert_allclose(back(layer.dadd) if kind == "full" else layer.dadd,
                               at.grad.numpy(), **tol, err_msg="dadd")
    np.testing.assert_allclose(layer.dgamma, m.weight.grad.numpy(), **tol, err_msg="dgamma")
    s = to(x) + (ak if kind == "full" else _add(kind, shape, layout, np.float64, 31)[1])
    rm, rv = np.zeros(g), np.ones(g)
    gn.group_norm_forward(s, g, channel_axis=ax, running_mean=rm, running_var=rv)
    np.testing.assert_array_equal(layer.running_mean, rm)
    layer.eval()
    ye = layer(to(x), add=ak)
    layer.backward(to(dy))
    assert layer.dadd.shape == ak.shape
    assert_bit_identical(ye, layer(s))
    layer(to(x))
    layer.backward(to(dy))
    assert layer.dadd is None
