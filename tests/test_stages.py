"""gn_native.stages: the four stages give the single calls' bits, on any split of the batch.

The stages are the specification (DESIGN.md): group_norm_forward and
group_norm_backward are checked here to be exactly stats_partial ->
stats_merge -> normalize and backward_reduce -> backward_apply ->
param_grads, with the batch cut into slices at every point (as MPI ranks
or Dask chunks hold it).  The merge is also checked against a NumPy
transcription of its documented formula, and the float64 statistics
against the float64 reference at data far from zero.
"""
import itertools

import numpy as np
import pytest

import gn_native as gn
from gn_native import stages as S
from conftest import (AFFINES, BF16, DTYPES, F16, F32, F64, assert_close, channel_axis,
                      make_affine, make_data, physical_shape)
import reference as ref

ACTS = [None, "silu", "gelu"]


def _bits(a):
    a = np.ascontiguousarray(a)
    return a.view(f"u{a.dtype.itemsize}").tobytes()


def _case(shape, dtype, layout, affine, seed, loc=0.0):
    x = make_data(physical_shape(shape, layout), dtype, seed, loc=loc, scale=3.0)
    dy = make_data(x.shape, dtype, seed + 1)
    gamma, beta = make_affine(affine, shape[1], 4, dtype, seed)
    return x, dy, gamma, beta


def _splits(n):
    """Every way to cut n samples into 1, 2 and 3 contiguous slices (slices may be empty)."""
    yield [n]
    for a in range(n + 1):
        yield [a, n - a]
    for a, b in itertools.combinations_with_replacement(range(n + 1), 2):
        yield [a, b - a, n - b]


def _slices(x, counts):
    edges = np.cumsum([0] + list(counts))
    return [x[edges[i]:edges[i + 1]] for i in range(len(counts))]


# every dtype x layout x stats x affine x activation, with 4 groups of C = 8
CASES = [pytest.param(dt, lay, st, aff, act, id=f"{dt.name}-{lay}-{st}-{aff}-{act}")
         for dt, lay, st, aff, act in itertools.product(DTYPES, ["nchw", "nhwc"],
                                                        ["batch", "sample"], AFFINES, ACTS)
         if act is None or aff != "none"]


@pytest.mark.parametrize("dtype,layout,stats,affine,act", CASES)
def test_stages_are_the_single_call_on_any_split(dtype, layout, stats, affine, act):
    shape = (5, 8, 6, 7)
    g = 4
    ax = channel_axis(layout)
    x, dy, gamma, beta = _case(shape, dtype, layout, affine, seed=3, loc=100.0)
    kw = dict(stats=stats, channel_axis=ax, activation=act)
    y, mean, rstd = gn.group_norm_forward(x, g, gamma, beta, **kw)
    dx, dgamma, dbeta = gn.group_norm_backward(dy, x, mean, rstd, g, gamma, beta, **kw)

    part = S.stats_partial(x, g, channel_axis=ax)
    assert part.shape == (5, g, 5) and part.dtype == np.float64
    m64, r64, v64 = S.stats_merge(part if stats == "batch" else part[None])
    assert _bits(m64.astype(mean.dtype)) == _bits(mean)
    assert _bits(r64.astype(rstd.dtype)) == _bits(rstd)
    assert _bits(S.normalize(x, m64, r64, g, gamma, beta, **kw)) == _bits(y)

    for counts in _splits(shape[0]):
        xs, dys = _slices(x, counts), _slices(dy, counts)
        parts = [S.stats_partial(a, g, channel_axis=ax) for a in xs]
        assert np.concatenate(parts).tobytes() == part.tobytes(), counts
        ms = [mean] * len(xs) if stats == "batch" else _slices(mean, counts)
        rs = [rstd] * len(xs) if stats == "batch" else _slices(rstd, counts)
        sums = [S.backward_reduce(d_, a, m, r, g, gamma, beta, **kw)
                for d_, a, m, r in zip(dys, xs, ms, rs)]
        whole = np.concatenate(sums)
        dxs = [S.backward_apply(d_, a, m, r, whole if stats == "batch" else s, g, gamma, beta, **kw)
               for d_, a, m, r, s in zip(dys, xs, ms, rs, sums)]
        assert _bits(np.concatenate(dxs)) == _bits(dx), counts
        dg, db = S.param_grads(whole, rstd, g, gamma, beta, stats=stats, dtype=dtype)
        assert _bits(dg) == _bits(dgamma) and _bits(db) == _bits(dbeta), counts
        assert dg.dtype == dgamma.dtype and dg.shape == dgamma.shape


def _merge_formula(p):
    """The merge documented in gn_native.h / stats_merge's Notes, in NumPy float64 scalars."""
    out = []
    for j in range(p.shape[1]):
        q = p[:, j]
        big = int(q[:, 4].max())
        c = q[0, 1]
        tot = s_ = q_ = 0.0
        for i in range(q.shape[0]):
            r = int(q[i, 4]) - big
            s, sq = np.ldexp(q[i, 2], r), np.ldexp(q[i, 3], 2 * r)
            tot += q[i, 0]
            if i == 0:
                s_, q_ = s, sq
                continue
            d = np.ldexp(q[i, 1] - c, -big)
            s_ += s + q[i, 0] * d
            q_ += sq + d * (2.0 * s + q[i, 0] * d)
        dm = s_ / tot
        v = max(q_ / tot - dm * dm, 0.0)
        var = np.ldexp(v, 2 * big)
        out.append((c + np.ldexp(dm, big), 1.0 / np.sqrt(var + 1e-5), var))
    return [np.array(a) for a in zip(*out)]


def test_merge_is_its_documented_formula():
    rng = np.random.default_rng(5)
    m, k = 7, 6
    p = np.empty((m, k, 5))
    p[..., 0] = rng.integers(1, 50, (m, k))
    p[..., 1] = rng.normal(1e3, 10, (m, k))
    p[..., 2] = rng.normal(0, 5, (m, k))
    p[..., 3] = rng.uniform(10, 100, (m, k))
    p[..., 4] = rng.integers(-3, 4, (m, k))
    got = S.stats_merge(p)
    for a, b in zip(got, _merge_formula(p)):
        assert a.tobytes() == b.tobytes()


def test_merge_of_sub_blocks_is_close_to_the_whole():
    """Partials of any subsets of a group's values (Dask's spatial chunks) merge to its
    statistics within rounding; the exact bits need the core's own units."""
    x = make_data((3, 8, 40), F32, 9, loc=1e4, scale=2.0)
    whole = S.stats_merge(S.stats_partial(x, 2))
    blocks = np.concatenate([S.stats_partial(x[..., a:b], 2) for a, b in ((0, 13), (13, 40))])
    part = S.stats_merge(blocks)
    m_ref, v_ref = ref.moments(x, 2, stats="batch")
    for got in (whole, part):      # float32 data: sums in float32 within blocks of 128 values
        assert np.allclose(got[0], m_ref, rtol=0, atol=1e-6)
        assert np.allclose(got[2], v_ref, rtol=1e-6)


@pytest.mark.parametrize("dtype", [F32, F16] + ([BF16] if BF16 is not None else []),
                         ids=lambda d: d.name)
@pytest.mark.parametrize("stats", ["batch", "sample"])
def test_float64_statistics_keep_the_accuracy_far_from_zero(dtype, stats):
    """normalize with the merged float64 statistics: y within 1e-5 (float32) of the float64
    reference at data offset 1e4 (SPEC's accuracy), where float32 statistics given to
    group_norm(mean=, var=) lose the low part of the mean."""
    x = make_data((6, 8, 64), dtype, 11, loc=1e4 if dtype == F32 else 0.0, scale=1.0)
    p = S.stats_partial(x, 4)
    mean, rstd, var = S.stats_merge(p if stats == "batch" else p[None])
    y = S.normalize(x, mean, rstd, 4, stats=stats)
    want = ref.forward(x, 4, stats=stats)[0]
    assert_close(y, want, dtype)
    if dtype == F32:
        err = np.abs(y.astype(np.float64) - want).max()
        assert err <= 1e-5, err
        rounded = gn.group_norm(x, 4, stats=stats, mean=mean.astype(np.float32),
                                var=var.astype(np.float32))
        assert np.abs(rounded.astype(np.float64) - want).max() > 10 * err


def test_extreme_float64_data_take_the_scaled_partial():
    """Spreads beyond float64's squares: the partial carries an exponent, and the stages and
    the single call still agree bit for bit on every split."""
    x = make_data((4, 4, 30), F64, 13)
    x[1] *= 1e200
    x[2, 0, 3] = 1e250
    part = S.stats_partial(x, 2)
    assert np.any(part[..., 4] != 0)
    y, mean, rstd = gn.group_norm_forward(x, 2, stats="batch")
    m, r, _ = S.stats_merge(part)
    assert m.tobytes() == mean.tobytes() and r.tobytes() == rstd.tobytes()
    assert _bits(S.normalize(x, m, r, 2)) == _bits(y)
    assert np.concatenate([S.stats_partial(x[:3], 2), S.stats_partial(x[3:], 2)]).tobytes() \
        == part.tobytes()
    assert np.isfinite(m).all()


def test_nonfinite_and_empty_data():
    x = make_data((2, 4, 5), F32, 17)
    x[1, 0, 2] = np.inf
    part = S.stats_partial(x, 2)
    assert np.isnan(part[1, 0, 3]) and not np.isnan(part[0, 0, 3])
    mean, rstd, _ = S.stats_merge(part)
    assert np.isnan(rstd[0]) and np.isfinite(rstd[1])
    empty = S.stats_partial(np.zeros((3, 4, 0), F32), 2)
    assert empty.shape == (3, 2, 5) and not empty.any()
    assert np.isnan(S.stats_merge(empty)[0]).all()
    assert np.isnan(S.stats_merge(np.zeros((0, 2, 5)))[1]).all()


def test_bad_arguments_name_themselves():
    x = make_data((2, 4, 5), F32, 1)
    p = S.stats_partial(x, 2)
    with pytest.raises(ValueError, match="partials"):
        S.stats_merge(p[..., :4])
    with pytest.raises(TypeError, match="partials"):
        S.stats_merge(p.astype(np.int64))
    bad = p.copy()
    bad[0, 0, 4] = 0.5
    with pytest.raises(ValueError, match="exponent"):
        S.stats_merge(bad)
    with pytest.raises(ValueError, match="eps"):
        S.stats_merge(p, eps=0.0)
    y, mean, rstd = gn.group_norm_forward(x, 2, stats="batch")
    with pytest.raises(ValueError, match="mean"):
        S.normalize(x, mean[:1], rstd, 2)
    with pytest.raises(ValueError, match="n_groups"):
        S.stats_partial(x, 3)
    sums = S.backward_reduce(x, x, mean, rstd, 2)
    out = np.full_like(x, 7.0)
    with pytest.raises(ValueError, match="sums"):
        S.backward_apply(x, x, mean, rstd, sums[:1], 2, out=out)
    with pytest.raises(ValueError, match="sums"):
        S.backward_apply(x, x, mean, rstd, sums[:, :2], 2, out=out)
    ys, ms, rs = gn.group_norm_forward(x, 2)
    with pytest.raises(ValueError, match="sums"):
        S.backward_apply(x, x, ms, rs, np.concatenate([sums, sums]), 2, stats="sample", out=out)
    assert (out == 7.0).all()
    with pytest.raises(TypeError, match="dtype"):
        S.param_grads(sums, rstd, 2, dtype=np.int32)


def test_outputs_in_place_and_channels_last_memory():
    x = make_data((3, 8, 4, 5), F32, 21)
    xl = np.ascontiguousarray(np.moveaxis(x, 1, -1))
    nhwc = np.moveaxis(xl, -1, 1)           # (N, C, H, W) view of channels-last memory
    a = S.stats_partial(nhwc, 4)
    assert a.tobytes() == S.stats_partial(xl, 4, channel_axis=-1).tobytes()
    m, r, _ = S.stats_merge(a)
    want = S.normalize(x, m, r, 4)
    z = x.copy()
    assert S.normalize(z, m, r, 4, out=z) is z
    assert _bits(z) == _bits(want)
