"""Refused arguments (type, message, nothing written) and accepted array-likes."""
import re

import numpy as np
import pytest

import gn_native as gn
from conftest import assert_bit_identical, make_affine, make_data

SHAPE, G = (2, 6, 4, 4), 3
SENTINEL = 123.0


def _forward_base():
    x = make_data(SHAPE, np.float32, 0)
    gamma, beta = make_affine("channel", 6, G, np.float32, 0)
    return dict(x=x, n_groups=G, gamma=gamma, beta=beta, eps=1e-5, stats="sample",
                channel_axis=1, out=np.full(SHAPE, SENTINEL, np.float32))


def _readonly(a):
    a.flags.writeable = False
    return a


def _f32(shape):
    return np.full(shape, SENTINEL, np.float32)


def _replace(**kw):
    return lambda b: {**b, **kw}


def _mean_var(mshape, vshape, mdtype=np.float32, vval=1.0):
    return lambda b: {**b, "mean": np.zeros(mshape, mdtype), "var": np.full(vshape, vval, np.float32)}


# (id, change to the valid base call, exception, words of which the message names one)
FORWARD_CASES = [
    ("x_1d", _replace(x=np.zeros(6, np.float32)), ValueError, ["x"]),
    ("x_0d", _replace(x=np.zeros((), np.float32)), ValueError, ["x"]),
    ("groups_not_dividing", _replace(n_groups=4), ValueError, ["n_groups"]),
    ("groups_zero", _replace(n_groups=0), ValueError, ["n_groups"]),
    ("groups_negative", _replace(n_groups=-3), ValueError, ["n_groups"]),
    ("groups_float", _replace(n_groups=3.0), TypeError, ["n_groups"]),
    ("groups_str", _replace(n_groups="3"), TypeError, ["n_groups"]),
    ("groups_none", _replace(n_groups=None), TypeError, ["n_groups"]),
    ("groups_bool", _replace(n_groups=True), TypeError, ["n_groups"]),
    ("eps_str", _replace(eps="1e-5"), TypeError, ["eps"]),
    ("stats_int", _replace(stats=0), TypeError, ["stats"]),
    ("channel_axis_float", _replace(channel_axis=1.0), TypeError, ["channel_axis"]),
    ("gamma_length", _replace(gamma=np.ones(4, np.float32)), ValueError, ["gamma"]),
    ("gamma_2d", _replace(gamma=np.ones((6, 1), np.float32)), ValueError, ["gamma"]),
    ("gamma_0d", _replace(gamma=np.ones((), np.float32)), ValueError, ["gamma"]),
    ("beta_length", _replace(beta=np.zeros(5, np.float32)), ValueError, ["beta"]),
    ("gamma_int", _replace(gamma=np.ones(6, np.int32)), TypeError, ["gamma"]),
    ("beta_int", _replace(beta=np.zeros(6, np.int16)), TypeError, ["beta"]),
    ("eps_zero", _replace(eps=0.0), ValueError, ["eps"]),
    ("eps_negative", _replace(eps=-1e-5), ValueError, ["eps"]),
    ("eps_nan", _replace(eps=float("nan")), ValueError, ["eps"]),
    ("eps_inf", _replace(eps=float("inf")), ValueError, ["eps"]),
    ("eps_2**1100", _replace(eps=2 ** 1100), ValueError, ["eps"]),   # float() overflows
    ("eps_none", _replace(eps=None), TypeError, ["eps"]),
    ("stats_unknown", _replace(stats="group"), ValueError, ["stats"]),
    ("stats_case", _replace(stats="Sample"), ValueError, ["stats"]),
    ("stats_none", _replace(stats=None), TypeError, ["stats"]),
    ("channel_axis_0", _replace(channel_axis=0), ValueError, ["channel_axis"]),
    ("channel_axis_2", _replace(channel_axis=2), ValueError, ["channel_axis"]),
    ("channel_axis_m2", _replace(channel_axis=-2), ValueError, ["channel_axis"]),
    ("channel_axis_4", _replace(channel_axis=4), ValueError, ["channel_axis"]),
    ("channel_axis_str", _replace(channel_axis="1"), TypeError, ["channel_axis"]),
    ("channel_axis_none", _replace(channel_axis=None), TypeError, ["channel_axis"]),
    ("out_shape", _replace(out=_f32((2, 6, 4, 5))), ValueError, ["out"]),
    ("out_nhwc_shape", _replace(out=_f32((2, 4, 4, 6))), ValueError, ["out"]),
    ("out_readonly", _replace(out=_readonly(_f32(SHAPE))), ValueError, ["out"]),
    ("out_float64", _replace(out=np.full(SHAPE, SENTINEL, np.float64)), TypeError, ["out"]),
    ("out_float16", _replace(out=np.full(SHAPE, SENTINEL, np.float16)), TypeError, ["out"]),
    ("out_list", _replace(out=[0.0] * 6), TypeError, ["out"]),
    ("mean_without_var", lambda b: {**b, "mean": np.zeros((2, G), np.float32)}, ValueError,
     ["mean", "var"]),
    ("var_without_mean", lambda b: {**b, "var": np.ones((2, G), np.float32)}, ValueError,
     ["mean", "var"]),
    ("mean_shape", _mean_var((G,), (2, G)), ValueError, ["mean"]),
    ("var_shape", _mean_var((2, G), (2, G + 1)), ValueError, ["var"]),
    ("mean_shape_batch", lambda b: {**_mean_var((2, G), (2, G))(b), "stats": "batch"},
     ValueError, ["mean"]),
    ("mean_int", _mean_var((2, G), (2, G), mdtype=np.int64), TypeError, ["mean"]),
    ("var_negative", _mean_var((2, G), (2, G), vval=-1.0), ValueError, ["var"]),
    # huge ints: a ValueError naming the argument, never an OverflowError
    ("groups_2**63", _replace(n_groups=2 ** 63), ValueError, ["n_groups"]),
    ("groups_2**64", _replace(n_groups=2 ** 64), ValueError, ["n_groups"]),
    ("groups_uint64_max", _replace(n_groups=np.uint64(2 ** 64 - 1)), ValueError, ["n_groups"]),
    ("channel_axis_2**63", _replace(channel_axis=2 ** 63), ValueError, ["channel_axis"]),
    ("channel_axis_2**64", _replace(channel_axis=2 ** 64), ValueError, ["channel_axis"]),
    ("channel_axis_-2**64", _replace(channel_axis=-2 ** 64), ValueError, ["channel_axis"]),
    ("groups_above_c_with_c0", _replace(x=np.zeros((2, 0, 4), np.float32), out=None,
                                        gamma=None, beta=None, n_groups=2 ** 62),
     ValueError, ["n_groups"]),
] + [
    (f"x_{np.dtype(dt).name}", _replace(x=np.ones(SHAPE, dt)), TypeError, ["x"])
    for dt in (np.int32, np.int64, np.uint8, np.bool_, np.complex64, np.complex128, np.longdouble)
] + [
    ("x_object", _replace(x=np.full(SHAPE, 1.0, dtype=object)), TypeError, ["x"]),
    ("x_strings", _replace(x=np.full(SHAPE, "a")), TypeError, ["x"]),
    ("x_list_of_ints", _replace(x=np.ones(SHAPE, np.int64).tolist()), TypeError, ["x"]),
    ("x_list_of_strings", _replace(x=[["a", "b"], ["c", "d"]]), TypeError, ["x"]),
    ("x_ragged_list", _replace(x=[[1.0, 2.0], [3.0]]), (TypeError, ValueError), ["x"]),
    ("x_none", _replace(x=None), TypeError, ["x"]),
]


def _names_one_of(msg, names):
    """Whether `msg` names one of the arguments `names` as a whole word: "x" must not be
    found inside "max" or "expected", "mean" not inside "meaning"."""
    return any(re.search(rf"(?<![A-Za-z0-9_]){re.escape(n)}(?![A-Za-z0-9_])", msg) for n in names)


def test_names_one_of_needs_the_whole_word():
    assert _names_one_of("x must be a float array", ["x"])
    assert _names_one_of("`x` has 1 dimension", ["x"])
    assert _names_one_of("mean= and var= go together", ["var"])
    assert _names_one_of("n_groups=4 does not divide C=6", ["gamma", "n_groups"])
    assert not _names_one_of("expected an exact maximum", ["x"])
    assert not _names_one_of("shape 2x3", ["x"])
    assert not _names_one_of("the variance", ["var"])
    assert not _names_one_of("bad n_groups", ["groups"])


def _check_refused(fn, kwargs, exc, names):
    out = kwargs.get("out")
    out_before = np.array(out, copy=True) if isinstance(out, np.ndarray) else None
    x = kwargs.get("x")
    x_before = x.copy() if isinstance(x, np.ndarray) else None
    with pytest.raises(exc) as info:
        fn(**kwargs)
    msg = str(info.value)
    assert _names_one_of(msg, names), f"message {msg!r} names none of {names}"
    if out_before is not None:
        assert_bit_identical(out, out_before, "out (must be untouched when refused)")
    if x_before is not None and x_before.dtype != object:
        np.testing.assert_array_equal(x, x_before)


@pytest.mark.parametrize("fn", [gn.group_norm, gn.group_norm_forward],
                         ids=["group_norm", "group_norm_forward"])
@pytest.mark.parametrize("case,change,exc,names", FORWARD_CASES,
                         ids=[c[0] for c in FORWARD_CASES])
def test_forward_refuses(fn, case, change, exc, names):
    _check_refused(fn, change(_forward_base()), exc, names)


def test_refused_in_place_call_leaves_x_untouched():
    x = make_data(SHAPE, np.float32, 1)
    before = x.copy()
    with pytest.raises(ValueError):
        gn.group_norm(x, 3, np.ones(4, np.float32), out=x)
    assert_bit_identical(x, before, "x")


def _backward_base():
    x = make_data(SHAPE, np.float32, 2)
    dy = make_data(SHAPE, np.float32, 3)
    gamma, _ = make_affine("channel", 6, G, np.float32, 2)
    _, mean, rstd = gn.group_norm_forward(x, G, gamma)
    return dict(dy=dy, x=x, mean=mean, rstd=rstd, n_groups=G, gamma=gamma, stats="sample",
                channel_axis=1)


BACKWARD_CASES = [
    ("dy_shape", _replace(dy=np.ones((2, 6, 4, 5), np.float32)), ValueError, ["dy"]),
    ("dy_transposed", _replace(dy=np.ones((2, 4, 4, 6), np.float32)), ValueError, ["dy"]),
    ("dy_float64", _replace(dy=np.ones(SHAPE, np.float64)), TypeError, ["dy"]),
    ("dy_int", _replace(dy=np.ones(SHAPE, np.int32)), TypeError, ["dy"]),
    ("x_int", _replace(x=np.ones(SHAPE, np.int32)), TypeError, ["x"]),
    ("x_1d", _replace(x=np.ones(6, np.float32)), ValueError, ["x"]),
    ("mean_shape", _replace(mean=np.zeros((G,), np.float32)), ValueError, ["mean"]),
    ("rstd_shape", _replace(rstd=np.ones((2, G, 1), np.float32)), ValueError, ["rstd"]),
    ("stats_batch_with_sample_shapes", _replace(stats="batch"), ValueError, ["mean", "rstd"]),
    ("mean_int", _replace(mean=np.zeros((2, G), np.int32)), TypeError, ["mean"]),
    ("rstd_complex", _replace(rstd=np.ones((2, G), np.complex64)), TypeError, ["rstd"]),
    ("gamma_length", _replace(gamma=np.ones(4, np.float32)), ValueError, ["gamma"]),
    ("gamma_bool", _replace(gamma=np.ones(6, bool)), TypeError, ["gamma"]),
    ("groups_not_dividing", _replace(n_groups=4), ValueError, ["n_groups"]),
    ("groups_zero", _replace(n_groups=0), ValueError, ["n_groups"]),
    ("stats_unknown", _replace(stats="layer"), ValueError, ["stats"]),
    ("channel_axis_2", _replace(channel_axis=2), ValueError, ["channel_axis"]),
    ("groups_2**63", _replace(n_groups=2 ** 63), ValueError, ["n_groups"]),
    ("channel_axis_2**64", _replace(channel_axis=2 ** 64), ValueError, ["channel_axis"]),
] + [
    # every array argument without a default: None is a TypeError naming it
    (f"{name}_none", _replace(**{name: None}), TypeError, [name])
    for name in ("dy", "x", "mean", "rstd")
]


@pytest.mark.parametrize("case,change,exc,names", BACKWARD_CASES,
                         ids=[c[0] for c in BACKWARD_CASES])
def test_backward_refuses(case, change, exc, names):
    _check_refused(gn.group_norm_backward, change(_backward_base()), exc, names)


# --- the layer --------------------------------------------------------------------------------

LAYER_CASES = [
    ("groups_not_dividing", dict(n_groups=4, n_channels=6), ValueError, ["n_groups", "n_channels"]),
    ("groups_zero", dict(n_groups=0, n_channels=6), ValueError, ["n_groups"]),
    ("channels_zero", dict(n_groups=2, n_channels=0), ValueError, ["n_channels", "n_groups"]),
    ("eps_zero", dict(n_groups=2, n_channels=6, eps=0.0), ValueError, ["eps"]),
    ("stats_unknown", dict(n_groups=2, n_channels=6, stats="x"), ValueError, ["stats"]),
    ("affine_per_unknown", dict(n_groups=2, n_channels=6, affine_per="x"), ValueError,
     ["affine_per"]),
    ("dtype_int", dict(n_groups=2, n_channels=6, dtype=np.int32), TypeError, ["dtype"]),
    ("device_unknown", dict(n_groups=2, n_channels=6, device="tpu"), ValueError, ["device"]),
    ("groups_2**63", dict(n_groups=2 ** 63, n_channels=6), ValueError, ["n_groups"]),
    ("channels_2**63", dict(n_groups=1, n_channels=2 ** 63), ValueError, ["n_channels"]),
    ("channel_axis_2**64", dict(n_groups=2, n_channels=6, channel_axis=2 ** 64), ValueError,
     ["channel_axis"]),
    ("momentum_str", dict(n_groups=2, n_channels=6, momentum="0.1"), TypeError, ["momentum"]),
    ("momentum_large", dict(n_groups=2, n_channels=6, momentum=1.5), ValueError, ["momentum"]),
]


@pytest.mark.parametrize("case,kwargs,exc,names", LAYER_CASES, ids=[c[0] for c in LAYER_CASES])
def test_layer_constructor_refuses(case, kwargs, exc, names):
    with pytest.raises(exc) as info:
        gn.GroupNorm(**kwargs)
    assert _names_one_of(str(info.value), names), str(info.value)


@pytest.mark.parametrize("bad_x", [
    pytest.param(np.ones((2, 4, 3, 3), np.float32), id="channels"),
    pytest.param(np.ones(6, np.float32), id="1d"),
    pytest.param(np.ones((2, 6, 3, 3), np.int32), id="int"),
])
def test_refused_layer_call_leaves_state_unchanged(bad_x):
    layer = gn.GroupNorm(3, 6, stats="sample", track_running_stats=True)
    layer(make_data((2, 6, 3, 3), np.float32, 4))
    before = {k: np.array(v, copy=True) for k, v in layer.state_dict().items()}
    with pytest.raises((ValueError, TypeError)):
        layer(bad_x)
    after = layer.state_dict()
    assert after.keys() == before.keys()
    for k in before:
        np.testing.assert_array_equal(after[k], before[k], err_msg=k)


@pytest.mark.parametrize("track", [False, True], ids=["train", "eval_tracked"])
def test_layer_none_arguments_are_type_errors(track):
    layer = gn.GroupNorm(3, 6, track_running_stats=track)
    with pytest.raises(TypeError, match="x"):
        layer(None)
    if track:
        layer.eval()
    layer(make_data((2, 6, 3, 3), np.float32, 4))
    with pytest.raises(TypeError, match="dy"):
        layer.backward(None)


def test_layer_backward_before_forward_is_refused():
    layer = gn.GroupNorm(3, 6)
    with pytest.raises((RuntimeError, ValueError)):
        layer.backward(np.ones((2, 6, 3, 3), np.float32))


# --- accepted array-likes ---------------------------------------------------------------------

def test_lists_are_accepted():
    x = make_data((2, 6, 3), np.float64, 5)
    gamma, beta = make_affine("channel", 6, 3, np.float64, 5)
    y = gn.group_norm(x.tolist(), 3, gamma.tolist(), beta.tolist())
    assert isinstance(y, np.ndarray) and y.dtype == np.float64
    assert_bit_identical(y, gn.group_norm(x, 3, gamma, beta))
    dx, dg, db = gn.group_norm_backward(x.tolist(), x.tolist(), *gn.group_norm_forward(x, 3)[1:], 3)
    assert dx.dtype == np.float64


def test_numpy_scalar_arguments_are_accepted():
    x = make_data((2, 6, 3, 3), np.float32, 6)
    y = gn.group_norm(x, np.int64(3), eps=np.float32(1e-5), channel_axis=np.int64(1))
    assert_bit_identical(y, gn.group_norm(x, 3))


class _DLPackOnly:
    """A CPU tensor of some other framework: only the DLPack protocol."""

    def __init__(self, a):
        self._a = a

    def __dlpack__(self, **kw):
        return self._a.__dlpack__(**kw)

    def __dlpack_device__(self):
        return self._a.__dlpack_device__()


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_dlpack_only_objects_are_accepted(dtype):
    x = make_data((2, 6, 3, 3), dtype, 7)
    gamma, beta = make_affine("channel", 6, 3, dtype, 7)
    y = gn.group_norm(_DLPackOnly(x), 3, _DLPackOnly(gamma), _DLPackOnly(beta))
    assert_bit_identical(y, gn.group_norm(x, 3, gamma, beta))


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_torch_cpu_tensors_are_accepted(dtype):
    torch = pytest.importorskip("torch")
    x = make_data((2, 6, 3, 3), dtype, 8)
    gamma, beta = make_affine("channel", 6, 3, dtype, 8)
    xt, gt, bt = (torch.from_numpy(a) for a in (x, gamma, beta))
    expected = gn.group_norm(x, 3, gamma, beta)
    y = gn.group_norm(xt, 3, gt, bt)
    assert isinstance(y, torch.Tensor)          # a tensor in, a tensor out (issue 15)
    assert_bit_identical(y.numpy(), expected)
    y, m, r = gn.group_norm_forward(xt, 3, gt, bt)
    dx = gn.group_norm_backward(torch.from_numpy(x), xt, m, r, 3, gt)[0]
    assert isinstance(dx, torch.Tensor)
    # through DLPack explicitly, as a framework without __array__ would be read
    assert_bit_identical(gn.group_norm(_DLPackOnly(xt), 3, _DLPackOnly(gt), _DLPackOnly(bt)),
                         expected)


def test_torch_integer_tensor_is_refused():
    torch = pytest.importorskip("torch")
    with pytest.raises(TypeError, match="x"):
        gn.group_norm(torch.ones((2, 6, 3, 3), dtype=torch.int32), 3)


# --- threads ----------------------------------------------------------------------------------

@pytest.fixture
def restore_threads():
    old = gn.get_num_threads()
    yield
    gn.set_num_threads(old)


@pytest.mark.parametrize("n,exc", [
    pytest.param(1.5, TypeError, id="float"), pytest.param("2", TypeError, id="str"),
    pytest.param(True, TypeError, id="bool"), pytest.param([2], TypeError, id="list"),
    pytest.param(2.0, TypeError, id="float_integral"),
    pytest.param(0, ValueError, id="zero"), pytest.param(-1, ValueError, id="negative"),
    pytest.param(1025, ValueError, id="above_GN_MAX_THREADS"),
    pytest.param(10000, ValueError, id="10000"),
    pytest.param(2 ** 31, ValueError, id="2**31"), pytest.param(2 ** 64, ValueError, id="2**64"),
    pytest.param(np.int64(-5), ValueError, id="np_negative"),
])
def test_set_num_threads_refuses(restore_threads, n, exc):
    before = gn.get_num_threads()
    with pytest.raises(exc) as info:
        gn.set_num_threads(n)
    assert str(info.value).startswith("n "), str(info.value)
    assert gn.get_num_threads() == before


def test_set_num_threads_accepts_numpy_ints_up_to_the_cap(restore_threads):
    gn.set_num_threads(np.int32(2))
    assert gn.get_num_threads() == 2
    gn.set_num_threads(1024)
    assert gn.get_num_threads() == 1024
    gn.set_num_threads(None)   # back to the default
    assert 1 <= gn.get_num_threads() <= 1024
