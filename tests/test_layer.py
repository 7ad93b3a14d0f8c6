"""The GroupNorm layer: parameters, running statistics, train/eval, backward, state dicts."""
import io

import numpy as np
import pytest

import gn_native as gn
import reference as ref
from conftest import (LAYOUTS, STATS, assert_bit_identical, assert_close, assert_grads_close,
                      channel_axis, dtype_params, make_data, physical_shape)

G, C = 3, 6
SHAPE = (4, C, 5, 5)


def _layer(**kw):
    return gn.GroupNorm(G, C, **kw)


def _set_params(layer, seed):
    """Give the layer non-trivial gamma/beta (in place, keeping their shape and dtype)."""
    rng = np.random.default_rng(seed)
    layer.gamma[...] = rng.uniform(0.5, 1.5, layer.gamma.shape).astype(layer.gamma.dtype)
    layer.beta[...] = rng.normal(0.0, 0.5, layer.beta.shape).astype(layer.beta.dtype)


def _steps(dtype, n=3):
    """Training batches whose statistics move from step to step."""
    return [make_data(SHAPE, dtype, 100 + i, loc=0.5 * i, scale=1.0 + 0.5 * i) for i in range(n)]


@pytest.mark.parametrize("stats", STATS)
@pytest.mark.parametrize("affine_per,pshape", [("channel", (C,)), ("group", (G,))])
@pytest.mark.parametrize("dtype", dtype_params())
def test_initial_state(dtype, affine_per, pshape, stats):
    layer = _layer(affine_per=affine_per, stats=stats, track_running_stats=True, dtype=dtype)
    assert layer.training
    assert layer.gamma.shape == layer.beta.shape == pshape
    assert layer.gamma.dtype == layer.beta.dtype == dtype
    np.testing.assert_array_equal(layer.gamma.astype(np.float64), 1.0)
    np.testing.assert_array_equal(layer.beta.astype(np.float64), 0.0)
    assert layer.running_mean.shape == layer.running_var.shape == (G,)
    np.testing.assert_array_equal(layer.running_mean, 0.0)
    np.testing.assert_array_equal(layer.running_var, 1.0)


def test_train_eval_flags():
    layer = _layer()
    layer.eval()
    assert not layer.training
    layer.train()
    assert layer.training


@pytest.mark.parametrize("momentum", [0.1, 0.5])
@pytest.mark.parametrize("stats", STATS)
@pytest.mark.parametrize("dtype", [pytest.param(np.float32, id="float32"),
                                   pytest.param(np.float64, id="float64")])
def test_running_statistics(dtype, stats, momentum):
    layer = _layer(stats=stats, track_running_stats=True, momentum=momentum, dtype=dtype)
    _set_params(layer, 0)
    rm, rv = np.zeros(G), np.ones(G)
    for x in _steps(dtype):
        y = layer(x)
        # training normalizes with the batch's own statistics
        assert_close(y, ref.forward(x, G, layer.gamma, layer.beta, 1e-5, stats)[0], dtype)
        rm, rv = ref.update_running(rm, rv, x, G, momentum, stats)
        np.testing.assert_allclose(layer.running_mean, rm, rtol=1e-5, atol=1e-6, err_msg="running_mean")
        np.testing.assert_allclose(layer.running_var, rv, rtol=1e-5, atol=1e-6, err_msg="running_var")

    layer.eval()
    x = make_data(SHAPE, dtype, 7, loc=2.0, scale=3.0)
    y = layer(x)
    y_ref = ref.eval_with_running(x, G, layer.running_mean, layer.running_var, layer.gamma,
                                  layer.beta, 1e-5)
    assert_close(y, y_ref, dtype)
    # eval neither updates the running statistics nor depends on the batch
    np.testing.assert_allclose(layer.running_mean, rm, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(layer.running_var, rv, rtol=1e-5, atol=1e-6)
    assert_bit_identical(layer(x[1:2]), y[1:2], "y of one sample in eval")


@pytest.mark.parametrize("stats", STATS)
@pytest.mark.parametrize("std", [1e-2, 1e-4])
def test_running_var_accurate_when_variance_below_eps(std, stats):
    """running_var is the batch's unbiased variance to float32 precision, whatever eps is."""
    layer = _layer(stats=stats, track_running_stats=True, momentum=1.0)
    x = make_data(SHAPE, np.float32, 18, loc=1.0, scale=std)
    layer(x)
    rm, rv = ref.update_running(np.zeros(G), np.ones(G), x, G, 1.0, stats)
    np.testing.assert_allclose(layer.running_mean, rm, rtol=1e-6, err_msg="running_mean")
    np.testing.assert_allclose(layer.running_var, rv, rtol=1e-5, err_msg="running_var")


@pytest.mark.parametrize("stats", STATS)
def test_eval_without_tracking_behaves_as_training(stats):
    layer = _layer(stats=stats)
    _set_params(layer, 1)
    x = make_data(SHAPE, np.float32, 8, loc=1.0)
    y_train = layer(x)
    layer.eval()
    y_eval = layer(x)
    assert_bit_identical(y_eval, y_train, "y in eval")
    assert_bit_identical(y_train, gn.group_norm(x, G, layer.gamma, layer.beta, stats=stats))


@pytest.mark.parametrize("track", [False, True], ids=["untracked", "tracked"])
@pytest.mark.parametrize("stats", STATS)
@pytest.mark.parametrize("affine_per", ["channel", "group"])
@pytest.mark.parametrize("dtype", dtype_params())
def test_backward(dtype, affine_per, stats, track):
    layer = _layer(affine_per=affine_per, stats=stats, track_running_stats=track, dtype=dtype)
    _set_params(layer, 2)
    x = make_data(SHAPE, dtype, 9)
    dy = make_data(SHAPE, dtype, 10)
    y = layer(x)
    y_ref, m_ref, r_ref = ref.forward(x, G, layer.gamma, layer.beta, 1e-5, stats)
    assert_close(y, y_ref, dtype)
    dx = layer.backward(dy)
    assert dx.shape == x.shape and dx.dtype == dtype
    assert layer.dgamma.shape == layer.dbeta.shape == layer.gamma.shape
    assert layer.dgamma.dtype == layer.dbeta.dtype == dtype
    assert_grads_close((dx, layer.dgamma, layer.dbeta), dy, x, m_ref, r_ref, G, layer.gamma, stats)


@pytest.mark.parametrize("stats", STATS)
def test_no_affine(stats):
    layer = _layer(affine=False, stats=stats, dtype=np.float64)
    x = make_data(SHAPE, np.float64, 11, loc=-3.0)
    dy = make_data(SHAPE, np.float64, 12)
    y_ref, m_ref, r_ref = ref.forward(x, G, stats=stats)
    assert_close(layer(x), y_ref, np.float64)
    assert_grads_close((layer.backward(dy), None, None), dy, x, m_ref, r_ref, G, None, stats)


def test_backward_uses_the_last_training_call():
    layer = _layer(dtype=np.float64)
    x1, x2 = make_data(SHAPE, np.float64, 13), make_data(SHAPE, np.float64, 14, loc=1.0)
    dy = make_data(SHAPE, np.float64, 15)
    layer(x1)
    layer(x2)
    _, m, r = ref.forward(x2, G)
    assert_grads_close((layer.backward(dy), None, None), dy, x2, m, r, G)


def _add_noise(x):
    x += np.asarray(0.5, x.dtype)


def _assign_rows(x):
    x[1:] = x[:1]


def _reshape_in_place(x):
    x.shape = (x.shape[0], -1)


@pytest.mark.parametrize("change", [_add_noise, _assign_rows, _reshape_in_place],
                         ids=["x += noise", "rows assigned", "shape set"])
@pytest.mark.parametrize("mode", ["train", "eval_tracked"])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", dtype_params())
def test_backward_refuses_x_changed_after_forward(dtype, layout, mode, change):
    """y = layer(x); x += noise; layer.backward(dy) raises, as torch does, instead of
    using the changed x; a new forward call on the changed x is then fine."""
    ax = channel_axis(layout)
    layer = _layer(dtype=dtype, track_running_stats=mode != "train", channel_axis=ax)
    if mode != "train":
        layer.eval()
    x = make_data(physical_shape(SHAPE, layout), dtype, 16)
    dy = make_data(x.shape, dtype, 17)
    layer(x)
    change(x)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        layer.backward(dy)
    if change is not _reshape_in_place:
        layer(x)
        layer.backward(dy)


def test_backward_accepts_unchanged_x_with_nan_and_views():
    """No false alarm: NaN values (compared by their bits), strided and channels-last views."""
    base = make_data((2, 6, 8, 10), np.float32, 18)
    base[0, 0, 0, 0] = np.nan
    dy_base = make_data(base.shape, np.float32, 19)
    for x, dy in [(base, dy_base), (base[:, :, ::2, 1::3], dy_base[:, :, ::2, 1::3]),
                  (np.moveaxis(base, 1, -1), np.moveaxis(dy_base, 1, -1))]:
        layer = _layer(channel_axis=1 if x.shape[1] == 6 else -1)
        layer(x)
        layer.backward(dy)


# --- state dicts --------------------------------------------------------------------------

def _trained(seed=3, **kw):
    layer = _layer(track_running_stats=True, **kw)
    _set_params(layer, seed)
    for x in _steps(np.float32, 2):
        layer(x)
    return layer


def _snapshot(layer):
    return {k: np.array(v, copy=True) for k, v in layer.state_dict().items()}


def _assert_same_state(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert np.asarray(a[k]).shape == np.asarray(b[k]).shape, k
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def _roundtrip_direct(sd):
    return sd


def _roundtrip_savez(sd):
    buf = io.BytesIO()
    np.savez(buf, **sd)
    buf.seek(0)
    with np.load(buf) as f:
        return {k: f[k] for k in f.files}


@pytest.mark.parametrize("roundtrip", [_roundtrip_direct, _roundtrip_savez], ids=["direct", "savez"])
@pytest.mark.parametrize("affine_per", ["channel", "group"])
@pytest.mark.parametrize("stats", STATS)
def test_state_dict_round_trip(stats, affine_per, roundtrip):
    src = _trained(stats=stats, affine_per=affine_per)
    sd = src.state_dict()
    assert all(isinstance(v, np.ndarray) for v in sd.values()), {k: type(v) for k, v in sd.items()}
    dst = _layer(track_running_stats=True, stats=stats, affine_per=affine_per)
    dst.load_state_dict(roundtrip(sd))
    _assert_same_state(_snapshot(dst), _snapshot(src))
    np.testing.assert_array_equal(dst.gamma, src.gamma)
    np.testing.assert_array_equal(dst.running_var, src.running_var)
    src.eval()
    dst.eval()
    x = make_data(SHAPE, np.float32, 16)
    assert_bit_identical(dst(x), src(x), "eval output after load_state_dict")


def test_state_dict_is_a_snapshot():
    layer = _trained()
    sd = layer.state_dict()
    before = _snapshot(layer)
    layer(make_data(SHAPE, np.float32, 17, loc=5.0))  # updates the running statistics
    _assert_same_state(sd, before)


def _bad_shape(v):
    return np.zeros(v.shape[:-1] + (v.shape[-1] + 1,), v.dtype)


def test_refused_load_state_dict_leaves_layer_unchanged():
    layer = _trained()
    before = _snapshot(layer)
    good = _trained(seed=4).state_dict()
    keys = [k for k, v in before.items() if np.ndim(v) >= 1]
    assert keys
    for bad_key in keys:
        # every other entry valid (and different), so a partial load would show
        bad = {k: np.array(v, copy=True) for k, v in good.items()}
        bad[bad_key] = _bad_shape(before[bad_key])
        with pytest.raises(ValueError) as info:
            layer.load_state_dict(bad)
        assert bad_key in str(info.value) or "shape" in str(info.value)
        _assert_same_state(_snapshot(layer), before)


# --- eval-mode backward and channel_axis, through the functional API ----------------------

def _frozen_reference(dy, x, mean, rstd, gamma, g, ax):
    """float64 dx = dy * gamma * rstd, dgamma = sum dy * xhat, dbeta = sum dy (running
    statistics are constants) and the magnitudes of the sums, in x's layout."""
    n, c = x.shape[0], x.shape[ax]
    xv = np.moveaxis(x, ax, 1).reshape(n, g, c // g, -1).astype(np.float64)
    gv = np.moveaxis(dy, ax, 1).reshape(n, g, c // g, -1).astype(np.float64)
    r = rstd.astype(np.float64)[None, :, None, None]
    xhat = (xv - mean.astype(np.float64)[None, :, None, None]) * r
    gam = np.repeat(gamma.astype(np.float64), c // gamma.shape[0])
    dx = np.moveaxis((gv * gam.reshape(1, g, c // g, 1) * r).reshape(
        np.moveaxis(x, ax, 1).shape), 1, ax)
    per = gamma.shape[0]
    def sums(v):
        return v.sum(axis=(0, 3)).reshape(per, -1).sum(1)
    return ((dx, np.abs(dx)), (sums(gv * xhat), sums(np.abs(gv * xhat))),
            (sums(gv), sums(np.abs(gv))))


@pytest.mark.parametrize("affine_per", ["channel", "group"])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", dtype_params())
def test_eval_backward_treats_running_statistics_as_constants(dtype, layout, affine_per):
    ax = channel_axis(layout)
    layer = _layer(dtype=dtype, track_running_stats=True, channel_axis=ax, affine_per=affine_per)
    _set_params(layer, 5)
    for x in _steps(dtype, 2):
        layer(np.ascontiguousarray(np.moveaxis(x, 1, ax)))
    layer.eval()
    x = make_data(physical_shape(SHAPE, layout), dtype, 21)
    dy = make_data(x.shape, dtype, 22)
    layer(x)
    dx = layer.backward(dy)
    want = _frozen_reference(dy, x, layer.running_mean, 1.0 / np.sqrt(
        layer.running_var.astype(np.float64) + layer.eps), layer.gamma, G, ax)
    for name, got, (w, mag) in zip(("dx", "dgamma", "dbeta"), (dx, layer.dgamma, layer.dbeta),
                                   want):
        assert got.dtype == dtype and got.shape == w.shape, name
        assert_close(got, w, dtype, "backward", name, scale=mag)
    # the same path as the functional API's frozen=True
    mean, rstd = layer._saved[1], layer._saved[2]
    r = gn.group_norm_backward(dy, x, mean, rstd, G, layer.gamma, stats="batch",
                               channel_axis=ax, frozen=True)
    for a, b in zip(r, (dx, layer.dgamma, layer.dbeta)):
        assert_bit_identical(a, b, "frozen backward")


def test_frozen_backward_is_checked():
    x = make_data(SHAPE, np.float32, 23)
    mean, rstd = np.zeros(G, np.float32), np.ones(G, np.float32)
    with pytest.raises(ValueError, match="frozen"):
        gn.group_norm_backward(x, x, mean[None].repeat(4, 0), rstd[None].repeat(4, 0), G,
                               frozen=True)
    with pytest.raises(TypeError, match="frozen"):
        gn.group_norm_backward(x, x, mean, rstd, G, stats="batch", frozen=1)


def test_layer_channel_axis_as_the_functions_take_it():
    """channel_axis=3 on 4-D input is channels-last, for the layer as for group_norm."""
    x = make_data((2, 5, 5, C), np.float32, 24)
    y3 = _layer(channel_axis=3)(x)
    assert_bit_identical(y3, _layer(channel_axis=-1)(x), "y with channel_axis=3")
    assert_bit_identical(y3, gn.group_norm(x, G, channel_axis=3), "y with channel_axis=3")
    with pytest.raises(ValueError, match="channel_axis"):
        _layer(channel_axis=3)(make_data((2, C, 5), np.float32, 25))
    with pytest.raises(TypeError, match="channel_axis"):
        _layer(channel_axis=1.0)


# ---- running statistics through the functional API (what the layer calls) ----

@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("stats", STATS)
@pytest.mark.parametrize("rdtype", [np.float32, np.float64])
def test_group_norm_forward_updates_running_statistics(rdtype, stats, layout):
    """group_norm_forward(running_mean=, running_var=) updates them in place as the
    float64 reference says, gives the same y/mean/rstd as a call without them, and
    the layer's update is that call's (same bits)."""
    ax = channel_axis(layout)
    rm, rv = np.zeros(G, rdtype), np.ones(G, rdtype)
    want_m, want_v = np.zeros(G), np.ones(G)
    layer = _layer(stats=stats, track_running_stats=True, momentum=0.3, channel_axis=ax)
    for x in _steps(np.float32):
        x = np.ascontiguousarray(np.moveaxis(x, 1, ax))
        got = gn.group_norm_forward(x, G, stats=stats, channel_axis=ax, running_mean=rm,
                                    running_var=rv, momentum=0.3)
        for a, b, what in zip(got, gn.group_norm_forward(x, G, stats=stats, channel_axis=ax),
                              ("y", "mean", "rstd")):
            assert_bit_identical(a, b, what)
        want_m, want_v = ref.update_running(want_m, want_v, x, G, 0.3, stats, ax)
        assert rm.dtype == rv.dtype == rdtype
        np.testing.assert_allclose(rm, want_m, rtol=1e-5, atol=1e-6, err_msg="running_mean")
        np.testing.assert_allclose(rv, want_v, rtol=1e-5, atol=1e-6, err_msg="running_var")
        layer(x)
    if rdtype == np.float32:
        assert_bit_identical(layer.running_mean, rm, "layer running_mean")
        assert_bit_identical(layer.running_var, rv, "layer running_var")


def test_group_norm_forward_running_statistics_on_empty_input_are_unchanged():
    rm, rv = np.full(G, 0.25, np.float32), np.full(G, 2.0, np.float32)
    gn.group_norm_forward(np.zeros((0, C, 4), np.float32), G, running_mean=rm, running_var=rv)
    assert_bit_identical(rm, np.full(G, 0.25, np.float32), "running_mean")
    assert_bit_identical(rv, np.full(G, 2.0, np.float32), "running_var")


@pytest.mark.parametrize("kw,exc,match", [
    (dict(running_mean="rm"), ValueError, "running_mean and running_var must be given together"),
    (dict(running_var="rv"), ValueError, "running_mean and running_var must be given together"),
    (dict(running_mean="rm", running_var="rv", mean="m", var="v"), ValueError, "cannot be combined"),
    (dict(running_mean=[0.0] * G, running_var="rv"), TypeError, "running_mean must be a numpy"),
    (dict(running_mean="rm", running_var=np.ones(G + 1, np.float32)), ValueError,
     r"running_var must have shape \(3,\)"),
    (dict(running_mean=np.zeros(G, np.int32), running_var="rv"), TypeError, "running_mean has dtype"),
    (dict(running_mean="ro", running_var="rv"), ValueError, "running_mean must be writable"),
    (dict(running_mean="rm", running_var="rm"), ValueError, "running_mean shares memory"),
    (dict(running_mean="x", running_var="rv"), ValueError, "running_mean shares memory"),
    (dict(running_mean="rm", running_var="rv", momentum=1.5), ValueError, r"momentum must be in \[0, 1\]"),
    (dict(running_mean="rm", running_var="rv", momentum=None), TypeError, "momentum must be a number"),
    (dict(running_mean="rm", running_var="rv", momentum="0.1"), TypeError, "momentum must be a number"),
])
def test_group_norm_forward_refuses_bad_running_arguments(kw, exc, match):
    """Refused before any work: out, running_mean and running_var keep their values."""
    x = make_data(SHAPE, np.float32, 3)
    arrays = dict(rm=np.zeros(G, np.float32), rv=np.ones(G, np.float32),
                  m=np.zeros((SHAPE[0], G), np.float32), v=np.ones((SHAPE[0], G), np.float32),
                  ro=np.zeros(G, np.float32), x=x.reshape(-1)[:G])
    arrays["ro"].flags.writeable = False
    kw = {k: arrays.get(v, v) if isinstance(v, str) and k != "momentum" else v
          for k, v in kw.items()}
    before = {k: a.copy() for k, a in arrays.items()}
    out = np.full_like(x, 7.0)
    with pytest.raises(exc, match=match):
        gn.group_norm_forward(x, G, out=out, **kw)
    assert (out == 7.0).all()
    for k, a in arrays.items():
        assert_bit_identical(a, before[k], k)


@pytest.mark.parametrize("stats", STATS)
def test_running_update_derives_the_variance_from_rstd_without_a_variance_output(stats):
    """The GPU backend returns no variance; the update then takes it from rstd
    (1/rstd^2 - eps), which agrees with the reference to float32 precision."""
    from gn_native import _api, _validate
    x = make_data(SHAPE, np.float32, 5, loc=1.0, scale=2.0)
    y, mean, rstd = gn.group_norm_forward(x, G, stats=stats)
    p = _validate.plan(x, G, stats=stats)
    rm, rv = np.zeros(G, np.float32), np.ones(G, np.float32)
    _api._update_running(np, p, mean, rstd, None, rm, rv, 0.25)
    want_m, want_v = ref.update_running(np.zeros(G), np.ones(G), x, G, 0.25, stats)
    np.testing.assert_allclose(rm, want_m, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(rv, want_v, rtol=1e-5, atol=1e-6)
