"""The Cython fast path and the general path are one set of rules (hypothesis).

gn.group_norm_forward / gn.group_norm_backward first try `_cpu.forward_fast` /
`_cpu.backward_fast`, which recognize a plainly valid common call without
building a Plan.  `_api.forward_general` / `_api.backward_general` are the
same calls without that fast path.  On random argument combinations, good and
bad (dtypes, memory orders, out=, odd types and huge ints for the options),
the two must raise the same exception with the same message, or return the
same bits and write the same `out`.  Derandomized, as test_property.py.
"""
import os

import numpy as np
import pytest

import gn_native as gn
from gn_native import _api

hypothesis = pytest.importorskip("hypothesis")
st = hypothesis.strategies

SETTINGS = dict(deadline=None, database=None, max_examples=300,
                derandomize=os.environ.get("GN_PROPERTY_RANDOM", "0") != "1",
                suppress_health_check=[hypothesis.HealthCheck.too_slow])

GROUPS = ["g", "g", "g", 0, -1, 2 ** 63, 2 ** 64, 3.0, True, None, "2", "np.int64", "c+1"]
EPS = [1e-5, 1e-5, 0.1, 0.0, -1.0, float("nan"), float("inf"), "1e-5", None, 1,
       np.float32(1e-3), 2 ** 1100]
STATS = ["sample", "sample", "batch", "Sample", None, 0]
AXES = [1, 1, -1, "last", 0, 2, -2, 2 ** 64, -2 ** 63, 1.0, None, np.int64(1), True]
MEMORY = ["contiguous", "contiguous", "strided", "fortran", "list", "swapped", "int32", "1d",
          "empty"]
PARAMS = [None, None, "channel", "group", "short", "float64", "list", "strided"]
OUTS = [None, None, "fresh", "x", "float64", "readonly", "shape", "overlap", "list"]
DTYPES = [np.float32, np.float64, np.float16]
ACTS = [None, None, None, "silu", "gelu", "gelu_tanh", "relu", "none", "SiLU", 1]


@st.composite
def calls(draw):
    return dict(
        g=draw(st.integers(1, 3)), k=draw(st.integers(1, 3)), n=draw(st.integers(1, 2)),
        spatial=tuple(draw(st.lists(st.integers(1, 4), max_size=2))),
        dtype=draw(st.sampled_from(DTYPES)), memory=draw(st.sampled_from(MEMORY)),
        groups=draw(st.sampled_from(GROUPS)), eps=draw(st.sampled_from(EPS)),
        stats=draw(st.sampled_from(STATS)), axis=draw(st.sampled_from(AXES)),
        gamma=draw(st.sampled_from(PARAMS)), beta=draw(st.sampled_from(PARAMS)),
        out=draw(st.sampled_from(OUTS)), activation=draw(st.sampled_from(ACTS)),
        seed=draw(st.integers(0, 2 ** 16)))


def _build(case):
    """Fresh arrays for one call (each path gets its own, since out= writes)."""
    rng = np.random.default_rng(case["seed"])
    g, c = case["g"], case["g"] * case["k"]
    shape = (case["n"], c) + case["spatial"]
    dt = case["dtype"]
    ax = case["axis"]
    if ax == "last":
        ax = len(shape) - 1
        shape = (shape[0],) + shape[2:] + (c,)
    mem = case["memory"]
    x = rng.standard_normal(shape).astype(dt)
    if mem == "strided":
        x = np.repeat(x, 2, axis=0)[::2]
    elif mem == "fortran":
        x = np.asfortranarray(x)
    elif mem == "list":
        x = x.tolist()
    elif mem == "swapped":
        x = x.astype(x.dtype.newbyteorder())
    elif mem == "int32":
        x = (x * 10).astype(np.int32)
    elif mem == "1d":
        x = x.reshape(-1)
    elif mem == "empty":
        x = x[:0]

    def param(kind):
        if kind is None:
            return None
        n = {"group": g, "short": c + 1}.get(kind, c)
        p = rng.standard_normal(2 * n).astype(dt)
        if kind == "strided":
            return p[::2]
        p = p[:n]
        if kind == "float64":
            return p.astype(np.float64 if dt != np.float64 else np.float32)
        return p.tolist() if kind == "list" else p

    groups = {"g": g, "np.int64": np.int64(g), "c+1": c + 1}.get(case["groups"], case["groups"])
    o = case["out"]
    arr = np.asarray(x)
    out = {None: None, "x": x,
           "fresh": np.full(arr.shape, 7, arr.dtype),
           "float64": np.full(arr.shape, 7, np.float64 if arr.dtype != np.float64 else np.float32),
           "shape": np.full(arr.shape + (1,), 7, arr.dtype),
           "list": np.full(arr.shape, 7, arr.dtype).tolist()}.get(o)
    if o == "readonly":
        out = np.full(arr.shape, 7, arr.dtype)
        out.flags.writeable = False
    elif o == "overlap" and isinstance(x, np.ndarray) and x.size > 1:
        out = x.reshape(-1)[1:].copy()   # x moved by one element, sharing memory with it
        big = np.concatenate([x.reshape(-1), x.reshape(-1)[:1]])
        x = big[:-1].reshape(arr.shape)
        out = big[1:].reshape(arr.shape)
    return dict(x=x, n_groups=groups, gamma=param(case["gamma"]), beta=param(case["beta"]),
                eps=case["eps"], stats=case["stats"], channel_axis=ax, out=out,
                activation=case["activation"], rng=rng)


def _outcome(f):
    try:
        return "ok", f()
    except (TypeError, ValueError) as e:
        return type(e), str(e)


def _bits(a):
    return None if a is None else (np.asarray(a).dtype.str, np.asarray(a).shape,
                                   np.ascontiguousarray(a).tobytes())


def _same(fast, general, out_fast, out_general):
    assert fast[0] == general[0], (fast, general)
    if fast[0] != "ok":
        assert fast[1] == general[1]
    else:
        assert [_bits(a) for a in fast[1]] == [_bits(a) for a in general[1]]
    if isinstance(out_fast, np.ndarray):
        assert _bits(out_fast) == _bits(out_general), "out written differently"


@hypothesis.settings(**SETTINGS)
@hypothesis.given(calls())
def test_forward_fast_and_general_paths_agree(case):
    a, b = _build(case), _build(case)
    for d in (a, b):
        d.pop("rng")
    fast = _outcome(lambda: gn.group_norm_forward(**a))
    general = _outcome(lambda: _api.forward_general(**b))
    _same(fast, general, a["out"], b["out"])


@hypothesis.settings(**SETTINGS)
@hypothesis.given(calls(), st.sampled_from(["good", "good", "dy_float64", "dy_list", "dy_shape",
                                            "stat_batch", "stat_f64", "stat_none", "dy_x"]))
def test_backward_fast_and_general_paths_agree(case, extra):
    args = []
    for _ in range(2):
        d = _build(case)
        rng = d.pop("rng")
        x = d["x"]
        arr = np.asarray(x)
        dy = rng.standard_normal(arr.shape).astype(arr.dtype) if arr.dtype.kind == "f" else x
        g = d["n_groups"] if type(d["n_groups"]) is int and 0 < d["n_groups"] < 64 else 1
        stat_shape = (g,) if d["stats"] == "batch" else (arr.shape[0], g)
        sdt = np.float64 if arr.dtype == np.float64 else np.float32
        mean = rng.standard_normal(stat_shape).astype(sdt)
        rstd = (rng.random(stat_shape) + 0.5).astype(sdt)
        if extra == "dy_float64":
            dy = dy.astype(np.float64 if arr.dtype != np.float64 else np.float32)
        elif extra == "dy_list":
            dy = dy.tolist()
        elif extra == "dy_shape":
            dy = dy[..., None]
        elif extra == "dy_x":
            dy = x
        elif extra == "stat_batch":
            mean, rstd = mean.reshape(-1)[:g], rstd.reshape(-1)[:g]
        elif extra == "stat_f64":
            mean = mean.astype(np.float64 if sdt == np.float32 else np.float32)
        elif extra == "stat_none":
            rstd = None
        del d["eps"]    # backward takes beta (for the activation) but no eps
        args.append(dict(dy=dy, mean=mean, rstd=rstd, **d))
    a, b = args
    fast = _outcome(lambda: gn.group_norm_backward(**a))
    general = _outcome(lambda: _api.backward_general(**b))
    _same(fast, general, a["out"], b["out"])
