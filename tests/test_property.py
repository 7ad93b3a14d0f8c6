"""Property tests (hypothesis) of the Python API.

- Random valid calls (shapes: 1-3 samples, 1-5 groups of 1-9 channels, 0-3
  spatial dimensions of 1-6; every dtype, both layouts, strides, both
  statistics modes, gamma and beta each absent / per channel / per group,
  eps, data offsets, out=, given mean/var) agree, forward and backward, with
  the float64 reference in tests/reference.py, with the per-dtype tolerances
  of tests/conftest.py.
- Random bad arguments always raise the error SPEC "Errors" names (TypeError
  for a wrong type, ValueError for a wrong value), write nothing to `out`,
  and never crash.

Derandomized (the same examples on every run, so CI is reproducible); set
GN_PROPERTY_RANDOM=1 to explore new examples.  About 10 s in all.
"""
import math
import os

import numpy as np
import pytest

import gn_native as gn
import reference as ref
from conftest import (DTYPES, LAYOUTS, STATS, assert_close, assert_grads_close,
                      assert_stats_close, channel_axis, make_data, physical_shape, stat_dtype)

hypothesis = pytest.importorskip("hypothesis")
st = hypothesis.strategies

SETTINGS = dict(deadline=None, database=None,
                derandomize=os.environ.get("GN_PROPERTY_RANDOM", "0") != "1",
                suppress_health_check=[hypothesis.HealthCheck.too_slow,
                                       hypothesis.HealthCheck.data_too_large])
PARAM_KINDS = [None, "channel", "group"]


@st.composite
def valid_cases(draw):
    g = draw(st.integers(1, 5))
    k = draw(st.integers(1, 9))
    n = draw(st.integers(1, 3))
    spatial = tuple(draw(st.lists(st.integers(1, 6), min_size=0, max_size=3)))
    return dict(
        shape=(n, g * k) + spatial, g=g,
        dtype=draw(st.sampled_from(DTYPES)),
        layout=draw(st.sampled_from(LAYOUTS)),
        stats=draw(st.sampled_from(STATS)),
        gamma=draw(st.sampled_from(PARAM_KINDS)),
        beta=draw(st.sampled_from(PARAM_KINDS)),
        eps=draw(st.sampled_from([1e-5, 1e-3, 0.1, 1.0])),
        loc=draw(st.sampled_from([0.0, 3.0, -40.0])),
        scale=draw(st.sampled_from([1.0, 0.1, 7.0])),
        memory=draw(st.sampled_from(["contiguous", "strided", "fortran"])),
        out=draw(st.booleans()),
        seed=draw(st.integers(0, 2 ** 20)),
    )


def _build(case):
    """(x, gamma, beta, channel_axis) of a case; x possibly non-contiguous."""
    shape = physical_shape(case["shape"], case["layout"])
    dtype, seed = case["dtype"], case["seed"]
    if case["memory"] == "strided":
        wide = shape[:-1] + (2 * shape[-1],)
        x = make_data(wide, dtype, seed, case["loc"], case["scale"])[..., ::2]
    else:
        x = make_data(shape, dtype, seed, case["loc"], case["scale"])
        if case["memory"] == "fortran":
            x = np.asfortranarray(x)
    c, g = case["shape"][1], case["g"]
    rng = np.random.default_rng(seed + 7)
    params = []
    for kind, lo, hi in ((case["gamma"], 0.5, 1.5), (case["beta"], -1.0, 1.0)):
        params.append(None if kind is None else
                      rng.uniform(lo, hi, c if kind == "channel" else g).astype(dtype))
    return x, params[0], params[1], channel_axis(case["layout"])


@hypothesis.settings(max_examples=400, **SETTINGS)
@hypothesis.given(valid_cases())
def test_forward_and_backward_match_reference(case):
    x, gamma, beta, ax = _build(case)
    g, stats, eps, dtype = case["g"], case["stats"], case["eps"], case["dtype"]
    out = np.empty(x.shape, dtype) if case["out"] else None
    y, mean, rstd = gn.group_norm_forward(x, g, gamma, beta, eps, stats=stats, channel_axis=ax,
                                          out=out)
    if out is not None:
        assert y is out
    assert y.shape == x.shape and y.dtype == dtype
    y_ref, m_ref, r_ref = ref.forward(x, g, gamma, beta, eps, stats, ax)
    assert_close(y, y_ref, dtype)
    assert_stats_close(mean, rstd, m_ref, r_ref, dtype)

    dy = make_data(x.shape, dtype, case["seed"] + 1)
    dx, dgamma, dbeta = gn.group_norm_backward(dy, x, mean, rstd, g, gamma, stats=stats,
                                               channel_axis=ax)
    pshape = (case["shape"][1],) if gamma is None else gamma.shape
    assert dx.shape == x.shape and dgamma.shape == pshape and dbeta.shape == pshape
    assert_grads_close((dx, dgamma, dbeta), dy, x, mean, rstd, g, gamma, stats, ax, dtype)


@hypothesis.settings(max_examples=150, **SETTINGS)
@hypothesis.given(valid_cases())
def test_given_statistics_match_reference(case):
    """mean= and var= given: normalize with them, no reduction."""
    x, gamma, beta, ax = _build(case)
    g, stats, eps, dtype = case["g"], case["stats"], case["eps"], case["dtype"]
    n = case["shape"][0]
    sshape = (n, g) if stats == "sample" else (g,)
    rng = np.random.default_rng(case["seed"] + 3)
    sd = stat_dtype(dtype)
    mean = (case["loc"] + rng.normal(0, case["scale"], sshape)).astype(sd)
    var = rng.uniform(0.1, 2.0, sshape).astype(sd) * np.asarray(case["scale"] ** 2, sd)
    y = gn.group_norm(x, g, gamma, beta, eps, stats=stats, channel_axis=ax, mean=mean, var=var)
    y_ref = ref.forward(x, g, gamma, beta, eps, stats, ax, mean=mean, var=var)[0]
    assert_close(y, y_ref, dtype)


# ---- bad arguments ----

def _bad_channel_axes(ndim):
    """channel_axis values the spec does not accept for this ndim (1 and -1 are)."""
    cands = [0, 2, -2, 3, -3, 5, -7, "1", 1.5, None, "last"]
    ok = {1, ndim - 1, -1}
    return [a for a in cands if not (isinstance(a, int) and (a in ok or a % ndim in (1, ndim - 1)))]


def _other_len(c, g):
    return [m for m in range(0, c + 3) if m not in (c, g)]


BAD_KINDS = [
    "groups_indivisible", "groups_nonpositive", "groups_type", "eps", "eps_type", "stats",
    "channel_axis", "x_dtype", "x_object", "x_ndim", "gamma_len", "gamma_ndim", "gamma_dtype",
    "beta_len", "out_shape", "out_dtype", "out_type", "mean_alone", "given_mean_shape",
    "bwd_dy_shape", "bwd_dy_dtype", "bwd_mean_shape", "bwd_rstd_shape", "bwd_groups",
    "bwd_stats", "bwd_x_dtype", "bwd_gamma_len"]


@st.composite
def bad_calls(draw, kind):
    """(call, expected exception types, arrays that must stay unchanged) for a kind of mistake."""
    case = draw(valid_cases())
    x, gamma, beta, ax = _build(case)
    g, stats, dtype = case["g"], case["stats"], case["dtype"]
    c = case["shape"][1]
    n = case["shape"][0]
    out = np.full(x.shape, 7, dtype)
    other = draw(st.sampled_from([d for d in DTYPES if d != dtype]))
    fw = dict(x=x, n_groups=g, gamma=gamma, beta=beta, eps=1e-5, stats=stats, channel_axis=ax,
              out=out)
    V, T = (ValueError,), (TypeError,)
    expect = V
    if kind == "groups_indivisible":
        fw["n_groups"] = draw(st.sampled_from([m for m in range(2, c + 3) if c % m]))
    elif kind == "groups_nonpositive":
        fw["n_groups"] = draw(st.sampled_from([0, -1, -g]))
    elif kind == "groups_type":
        fw["n_groups"], expect = draw(st.sampled_from([float(g), float(g) + 0.5, str(g), None,
                                                       [g], True])), T
    elif kind == "eps":
        fw["eps"] = draw(st.sampled_from([0.0, -1e-5, math.nan, math.inf, -math.inf]))
    elif kind == "eps_type":
        fw["eps"], expect = draw(st.sampled_from(["1e-5", None, [1e-5]])), T
    elif kind == "stats":
        fw["stats"] = draw(st.sampled_from(["Sample", "group", "", None, 0, "batch "]))
        expect = V if isinstance(fw["stats"], str) else T
    elif kind == "channel_axis":
        fw["channel_axis"] = draw(st.sampled_from(_bad_channel_axes(x.ndim)))
        expect = V if isinstance(fw["channel_axis"], int) else T
    elif kind == "x_dtype":
        fw["x"] = x.astype(draw(st.sampled_from([np.int32, np.int64, np.uint8, np.bool_,
                                                  np.complex64]))).copy()
        expect = T
    elif kind == "x_object":
        fw["x"] = draw(st.sampled_from([x.astype(object), x.astype(np.float64).astype(str),
                                        np.array([["a", "b"]])]))
        expect = T
    elif kind == "x_ndim":
        fw["x"] = draw(st.sampled_from([x.reshape(-1), x.reshape(-1)[0]]))
        fw["out"] = None
    elif kind == "gamma_len":
        fw["gamma"] = np.ones(draw(st.sampled_from(_other_len(c, g))), dtype)
    elif kind == "gamma_ndim":
        fw["gamma"] = np.ones((1, c), dtype)
    elif kind == "gamma_dtype":     # another float dtype is rounded to x's (mixed precision)
        fw["gamma"], expect = np.ones(c, draw(st.sampled_from([np.int32, np.bool_]))), T
    elif kind == "beta_len":
        fw["beta"] = np.zeros(draw(st.sampled_from(_other_len(c, g))), dtype)
    elif kind == "out_shape":
        fw["out"] = np.full(x.shape[:-1] + (x.shape[-1] + 1,), 7, dtype)
    elif kind == "out_dtype":
        fw["out"], expect = np.full(x.shape, 7, other), T
    elif kind == "out_type":
        fw["out"], expect = [0.0] * x.size, T
    elif kind == "mean_alone":
        fw["mean"] = np.zeros((n, g) if stats == "sample" else (g,), np.float32)
    elif kind == "given_mean_shape":
        fw["mean"] = np.zeros((n + 1, g + 1), stat_dtype(dtype))
        fw["var"] = np.ones((n + 1, g + 1), stat_dtype(dtype))
    if not kind.startswith("bwd_"):
        keep = [a for a in (fw["out"], x) if isinstance(a, np.ndarray)]
        return (lambda: gn.group_norm_forward(**fw)), expect, keep

    y, mean, rstd = gn.group_norm_forward(x, g, gamma, beta, stats=stats, channel_axis=ax)
    dy = make_data(x.shape, dtype, case["seed"] + 1)
    bw = dict(dy=dy, x=x, mean=mean, rstd=rstd, n_groups=g, gamma=gamma, stats=stats,
              channel_axis=ax)
    if kind == "bwd_dy_shape":
        bw["dy"] = draw(st.sampled_from([dy[:1] if n > 1 else np.concatenate([dy, dy]),
                                         dy.reshape(-1), dy[..., None]]))
    elif kind == "bwd_dy_dtype":
        bw["dy"], expect = dy.astype(other), T
    elif kind == "bwd_mean_shape":
        bw["mean"] = np.concatenate([mean.reshape(-1), mean.reshape(-1)[:1]])
    elif kind == "bwd_rstd_shape":
        bw["rstd"] = rstd[None]
    elif kind == "bwd_groups":
        bw["n_groups"] = draw(st.sampled_from([m for m in range(2, c + 3) if c % m] + [0, -1]))
    elif kind == "bwd_stats":
        bw["stats"] = "instance"
    elif kind == "bwd_x_dtype":
        bw["x"], expect = x.astype(np.int64), T
    elif kind == "bwd_gamma_len":
        bw["gamma"] = np.ones(draw(st.sampled_from(_other_len(c, g))), dtype)
    return (lambda: gn.group_norm_backward(**bw)), expect, [dy, x, mean, rstd]


@pytest.mark.parametrize("kind", BAD_KINDS)
@hypothesis.settings(max_examples=25, **SETTINGS)
@hypothesis.given(data=st.data())
def test_bad_arguments_raise_and_write_nothing(kind, data):
    call, expect, keep = data.draw(bad_calls(kind))
    before = [a.copy() for a in keep]
    with pytest.raises((ValueError, TypeError)) as info:
        call()
    assert isinstance(info.value, expect), (
        f"{kind}: raised {type(info.value).__name__} ({info.value}), expected "
        f"{' or '.join(e.__name__ for e in expect)}")
    assert str(info.value), f"{kind}: empty error message"
    for a, b in zip(keep, before):
        assert a.tobytes() == b.tobytes(), f"{kind}: an array was written by a refused call"
