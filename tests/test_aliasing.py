"""Outputs that overlap inputs: every (input, output) pair of every public function.

The spec: "An output that overlaps any input is either handled (a temporary)
or refused."  Each case lays `out` and one input in one byte buffer, from the
same memory (in place) through partial overlaps to the input lying inside
`out`, fills the input with its values, and compares the call's results with
the float64 reference computed from those values.  A refused call must be a
ValueError naming `out` that leaves the buffer as it was.
"""
import numpy as np
import pytest

import gn_native as gn
import reference as ref
from allpairs import pairwise_params
from conftest import (DTYPES, LAYOUTS, STATS, assert_close, assert_grads_close,
                      assert_stats_close, bits, channel_axis, make_affine, make_data,
                      physical_shape, stat_dtype)

SHAPE, G, EPS = (2, 8, 3, 5), 4, 1e-5
SENTINEL = 0x5A   # byte that fills the buffer around the arrays

# input name -> kind of gamma/beta of the call (per-group ones are passed as they are)
FORWARD_INPUTS = {"x": "channel", "gamma": "channel", "beta": "channel",
                  "gamma_per_group": "group", "beta_per_group": "group"}
GIVEN_STATS_INPUTS = {**FORWARD_INPUTS, "mean": "channel", "var": "channel"}
BACKWARD_INPUTS = {"dy": "channel", "x": "channel", "mean": "channel", "rstd": "channel",
                   "gamma": "channel", "gamma_per_group": "group"}


def _offsets(out_nbytes, in_nbytes, align, full):
    """Byte offsets of the input's start from out's start, all on `align`.

    Full-size inputs (x, dy): the same memory, and shifted either way by a few
    values or by half the array.  Small ones (gamma, beta, statistics):
    straddling out's start, at its start, in its middle, at its end and
    straddling its end.
    """
    def on(b):
        return b // align * align
    if full:
        return [0, 3 * align, -3 * align, on(out_nbytes // 2), -on(out_nbytes // 2)]
    half = max(on(in_nbytes // 2), align)
    return sorted({-half, 0, on(out_nbytes // 2), on(out_nbytes - in_nbytes),
                   on(out_nbytes - half)})


def _layouts(out_shape, out_dtype, value):
    """(buffer, out, input) for every offset: `input` holds `value`, out the sentinel bytes
    where it does not overlap the input."""
    out_dtype, in_dtype = np.dtype(out_dtype), value.dtype
    out_nbytes, in_nbytes = int(np.prod(out_shape)) * out_dtype.itemsize, value.nbytes
    align = max(out_dtype.itemsize, in_dtype.itemsize)
    full = value.shape == tuple(out_shape)
    base = (in_nbytes + 63) // 64 * 64 + 64
    for delta in _offsets(out_nbytes, in_nbytes, align, full):
        buf = np.full(base + out_nbytes + in_nbytes + 128, SENTINEL, np.uint8)
        out = buf[base:base + out_nbytes].view(out_dtype).reshape(out_shape)
        start = base + delta
        inp = buf[start:start + in_nbytes].view(in_dtype).reshape(value.shape)
        inp[...] = value
        yield delta, buf, out, inp


def _run(call, buf, delta, name):
    """The call's result, or None when it refused the overlap (then nothing was written)."""
    before = buf.copy()
    try:
        return call()
    except ValueError as e:
        assert "out" in str(e), f"{name} at offset {delta}: refused without naming out: {e}"
        assert bits(buf) == bits(before), f"{name} at offset {delta}: refused, yet wrote"
        return None


def _forward_inputs(dtype, layout, stats, affine):
    x = make_data(physical_shape(SHAPE, layout), dtype, 0)
    gamma, beta = make_affine(affine, SHAPE[1], G, dtype, 0)
    rng = np.random.default_rng(1)
    sshape = (SHAPE[0], G) if stats == "sample" else (G,)
    sd = stat_dtype(dtype)
    mean = rng.normal(0.0, 0.3, sshape).astype(sd)
    var = rng.uniform(0.5, 2.0, sshape).astype(sd)
    return dict(x=x, gamma=gamma, beta=beta, mean=mean, var=var)


def _forward_cases():
    for fn in ("group_norm", "group_norm_forward"):
        for given in (False, True):
            for name in (GIVEN_STATS_INPUTS if given else FORWARD_INPUTS):
                yield pytest.param(fn, given, name,
                                   id=f"{fn}-{'given_stats' if given else 'own_stats'}-{name}")


# every (function, input) case with every dtype, layout and stats mode, and every
# dtype x layout x stats combination (pairwise, see allpairs.py)
@pytest.mark.parametrize("fn,given,name,dtype,layout,stats", pairwise_params(
    dict(case=list(_forward_cases()), dtype=DTYPES, layout=LAYOUTS, stats=STATS),
    full=("dtype", "layout", "stats")))
def test_forward_output_overlapping_an_input(fn, given, name, dtype, layout, stats):
    ax = channel_axis(layout)
    values = _forward_inputs(dtype, layout, stats, GIVEN_STATS_INPUTS[name])
    if not given:
        values["mean"] = values["var"] = None
    y_ref, m_ref, r_ref = ref.forward(values["x"], G, values["gamma"], values["beta"], EPS, stats,
                                      ax, mean=values["mean"], var=values["var"])
    key = name.replace("_per_group", "")
    for delta, buf, out, inp in _layouts(values["x"].shape, dtype, values[key]):
        args = {**values, key: inp}
        res = _run(lambda: getattr(gn, fn)(args["x"], G, args["gamma"], args["beta"], EPS,
                                           stats=stats, channel_axis=ax, out=out,
                                           mean=args["mean"], var=args["var"]),
                   buf, delta, name)
        if res is None:
            continue
        y = res if fn == "group_norm" else res[0]
        assert y is out, f"{name} at offset {delta}: the result is not out"
        try:
            assert_close(out, y_ref, dtype)
            if fn == "group_norm_forward":
                m, r = res[1], res[2]
                assert not (np.may_share_memory(m, buf) or np.may_share_memory(r, buf))
                assert_stats_close(m, r, m_ref, r_ref, dtype)
        except AssertionError as e:
            raise AssertionError(f"{name} at byte offset {delta} from out: {e}") from None


@pytest.mark.parametrize("name,dtype,layout,stats", pairwise_params(
    dict(name=list(BACKWARD_INPUTS), dtype=DTYPES, layout=LAYOUTS, stats=STATS),
    full=("dtype", "layout", "stats")))
def test_backward_output_overlapping_an_input(name, dtype, layout, stats):
    ax = channel_axis(layout)
    pshape = physical_shape(SHAPE, layout)
    x, dy = make_data(pshape, dtype, 2), make_data(pshape, dtype, 3)
    gamma, _ = make_affine(BACKWARD_INPUTS[name], SHAPE[1], G, dtype, 2)
    _, mean, rstd = gn.group_norm_forward(x, G, gamma, stats=stats, channel_axis=ax)
    values = dict(dy=dy, x=x, mean=mean, rstd=rstd, gamma=gamma)
    key = name.replace("_per_group", "")
    for delta, buf, out, inp in _layouts(pshape, dtype, values[key]):
        a = {**values, key: inp}
        res = _run(lambda: gn.group_norm_backward(a["dy"], a["x"], a["mean"], a["rstd"], G,
                                                  a["gamma"], stats=stats, channel_axis=ax,
                                                  out=out),
                   buf, delta, name)
        if res is None:
            continue
        assert res[0] is out, f"{name} at offset {delta}: dx is not out"
        try:
            assert_grads_close(res, dy, x, mean, rstd, G, gamma, stats, ax, dtype)
        except AssertionError as e:
            raise AssertionError(f"{name} at byte offset {delta} from out: {e}") from None


def test_issue_example_out_overlapping_gamma():
    """o[0] = g; group_norm(x, 4, o[0], None, out=o): gamma is read before it is overwritten."""
    x = make_data((4, 8), np.float32, 4)
    g = make_affine("channel", 8, 4, np.float32, 4)[0]
    want = gn.group_norm(x, 4, g)
    o = np.zeros_like(x)
    o[0] = g
    assert gn.group_norm(x, 4, o[0], None, out=o) is o
    np.testing.assert_array_equal(o, want)


@pytest.mark.parametrize("fn", ["group_norm", "group_norm_forward", "group_norm_backward"])
def test_refused_overlapping_call_writes_nothing(fn):
    """A call refused for another argument writes nothing, whatever its out overlaps."""
    x = make_data(SHAPE, np.float32, 5)
    gamma = make_affine("channel", SHAPE[1], G, np.float32, 5)[0]
    _, mean, rstd = gn.group_norm_forward(x, G, gamma)
    for delta, buf, out, inp in _layouts(SHAPE, np.float32, gamma):
        before = buf.copy()
        with pytest.raises(ValueError, match="eps|n_groups"):
            if fn == "group_norm_backward":
                gn.group_norm_backward(x, x, mean, rstd, 3, inp, out=out)
            else:
                getattr(gn, fn)(x, G, inp, inp, 0.0, out=out)
        assert bits(buf) == bits(before), f"offset {delta}: a refused call wrote"
