"""Inputs of more than 2**31 elements are computed correctly (no 32-bit index wraps).

x is float16 of shape (N, C, S) = (2, 2, 2**29 + 2**16 + 8): 2**31 + 2**18 + 32
elements, 4 GiB; y another 4 GiB (and dx 4 more for the backward test).
With G = 2 groups, each (n, g) group is one plane of S values and the last
one spans flat index 2**31, where a signed 32-bit index turns negative.  The
same memory viewed channels-last as (2, S/8, 16) runs the NHWC kernels.
S leaves partial chunks and row blocks at every group's end.

The data are tiles of random values, arranged differently per plane and per
1 Mi block, so reading the wrong place gives the wrong numbers.  The
reference statistics are float64 sums over the blocks of each plane: a plane
holds each of its 16 tiles 32 times, and part of one at its end, so each
distinct block is summed once and its sums counted as often as it occurs
(_blocks lists exactly the blocks _fill writes; the fixture checks that x
holds them).  y and dx are checked element by element around 2**31, at the
end of the array and at each group's start and end, with float16's
tolerance (conftest.py).

Slow (most of it the first touch of 12 GiB) and big: each test skips, saying
why, when MemAvailable (/proc/meminfo) is below what it needs.
"""
from collections import Counter

import numpy as np
import pytest

import gn_native as gn
from conftest import F16, assert_close, assert_stats_close

pytestmark = pytest.mark.slow

N, C, G = 2, 2, 2                  # K = 1: channel c is group c
S = 2 ** 29 + 2 ** 16 + 8
TOTAL = N * C * S
assert TOTAL > 2 ** 31 and S % 16 == 8
CL = 16                            # channels of the channels-last view (2, S/8, 16)
GiB = 1 << 30
BLOCK = 1 << 20                    # data tiles
EPS = 1e-5


def mem_available():
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def require_memory(nbytes, what):
    avail = mem_available()
    if avail is None:
        pytest.skip(f"{what}: cannot read MemAvailable from /proc/meminfo")
    if avail < nbytes:
        pytest.skip(f"{what} needs {nbytes / GiB:.1f} GiB of free memory, "
                    f"MemAvailable is {avail / GiB:.1f} GiB")


def _tiles(seed, loc, scale):
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal(BLOCK) * scale * (1 + 0.1 * j) + loc).astype(np.float16)
            for j in range(16)]


def _fill(a, tiles_of_plane, step):
    """Plane p of a (N, C, S) gets tiles_of_plane(p)[(b * step + p) % 16] as its b-th block."""
    for p, plane in enumerate(a.reshape(N * C, S)):
        tiles = tiles_of_plane(p)
        for b, start in enumerate(range(0, S, BLOCK)):
            seg = plane[start:start + BLOCK]
            seg[...] = tiles[(b * step + p) % 16][:seg.size]


def _blocks(p, *layers):
    """The distinct blocks _fill writes into plane p, and how often each occurs.

    layers: (tiles, step) of each array filled by _fill(a, lambda p: tiles, step).
    Yields ([the block of each layer, as float64], count).  Blocks start at multiples
    of BLOCK (a multiple of CL), so a block's values lie in the same channels-last
    columns wherever it occurs.
    """
    counts = Counter()
    for b, start in enumerate(range(0, S, BLOCK)):
        counts[tuple((b * step + p) % 16 for _, step in layers), min(BLOCK, S - start)] += 1
    for (which, length), k in sorted(counts.items()):
        yield [tiles[t][:length].astype(np.float64) for (tiles, _), t in zip(layers, which)], k


@pytest.fixture(scope="module")
def big():
    """x (N, C, S) float16, a y buffer of the same shape, and the tiles of x's planes."""
    require_memory(2 * TOTAL * 2 + GiB, "the >2**31-element test (x and y, float16)")
    x = np.empty((N, C, S), np.float16)
    planes = [_tiles(10 + p, loc=0.5 * p - 1.0, scale=1.0 + 0.5 * p) for p in range(N * C)]
    _fill(x, lambda p: planes[p], 7)
    # the reference sums are taken over _blocks: x holds them where _fill put them
    for p, plane in enumerate(x.reshape(N * C, S)):
        for b in (0, 1, 255, 510, 511, S // BLOCK):
            seg = plane[b * BLOCK:(b + 1) * BLOCK]
            assert np.array_equal(seg, planes[p][(b * 7 + p) % 16][:seg.size]), (p, b)
    y = np.empty_like(x)
    yield x, y, planes
    del x, y


@pytest.fixture(scope="module")
def plane_sums(big):
    """Shifted float64 sums of each plane: shift[c] = x[0, c, 0], s/q[n, c] = sum of d, d*d."""
    x, _, planes = big
    shift = x[0, :, 0].astype(np.float64)
    s, q = np.zeros((N, C)), np.zeros((N, C))
    for n in range(N):
        for c in range(C):
            for (v,), k in _blocks(n * C + c, (planes[n * C + c], 7)):
                d = v - shift[c]
                s[n, c] += k * d.sum()
                q[n, c] += k * (d * d).sum()
    return shift, s, q


def _finish(shift, s, q, count):
    m = s / count
    return shift + m, 1.0 / np.sqrt(q / count - m * m + EPS)


def _spans():
    """Flat index ranges to check: around 2**31, the end, each plane's start and end."""
    w = 4096
    spans = [(2 ** 31 - w, 2 ** 31 + w), (TOTAL - w, TOTAL)]
    for p in range(N * C):
        spans += [(p * S, p * S + w // 2), ((p + 1) * S - w // 2, (p + 1) * S)]
    return np.concatenate([np.arange(a, b, dtype=np.int64) for a, b in spans])


def _check_y(x, y, mean, rstd, group_of, what):
    """y at the checked positions against (x - mean) * rstd, mean/rstd indexed by group_of."""
    idx = _spans()
    at = group_of(idx)
    want = (x.reshape(-1)[idx].astype(np.float64) - mean[at]) * rstd[at]
    assert_close(y.reshape(-1)[idx], want, F16, name=f"y ({what}) near 2**31 and the ends")


def test_forward_nchw_sample(big, plane_sums):
    x, y, _ = big
    got, mean, rstd = gn.group_norm_forward(x, G, eps=EPS, out=y)
    assert got is y
    shift, s, q = plane_sums
    ref_mean, ref_rstd = _finish(shift, s, q, S)
    assert_stats_close(mean, rstd, ref_mean, ref_rstd, F16)
    _check_y(x, y, ref_mean, ref_rstd, lambda i: (i // (C * S), (i // S) % C), "nchw, sample")


def test_forward_nchw_batch(big, plane_sums):
    x, y, _ = big
    _, mean, rstd = gn.group_norm_forward(x, G, eps=EPS, stats="batch", out=y)
    shift, s, q = plane_sums
    ref_mean, ref_rstd = _finish(shift, s.sum(axis=0), q.sum(axis=0), N * S)
    assert_stats_close(mean, rstd, ref_mean, ref_rstd, F16)
    _check_y(x, y, ref_mean, ref_rstd, lambda i: (i // S) % C, "nchw, batch")


def test_forward_nhwc_sample(big):
    x, y, planes = big
    rows = C * S // CL
    xl, yl = x.reshape(N, rows, CL), y.reshape(N, rows, CL)     # the same memory
    got, mean, rstd = gn.group_norm_forward(xl, G, eps=EPS, channel_axis=-1, out=yl)
    assert got is yl
    kl = CL // G
    shift = xl[:, 0, ::kl].astype(np.float64)                  # (N, G): first value of each group
    s, q = np.zeros((N, G)), np.zeros((N, G))
    for n in range(N):
        for c in range(C):
            # plane (n, c) starts c * S values into sample n's rows of CL channels
            for (v,), k in _blocks(n * C + c, (planes[n * C + c], 7)):
                group = (c * S + np.arange(v.size)) % CL // kl
                for g in range(G):
                    d = v[group == g] - shift[n, g]
                    s[n, g] += k * d.sum()
                    q[n, g] += k * (d * d).sum()
    ref_mean, ref_rstd = _finish(shift, s, q, kl * rows)
    assert_stats_close(mean, rstd, ref_mean, ref_rstd, F16)
    _check_y(x, y, ref_mean, ref_rstd,
             lambda i: (i // (rows * CL), (i % CL) // kl), "nhwc, sample")


def test_backward_nchw_sample(big):
    x, y, planes = big
    require_memory(TOTAL * 2 + GiB, "the >2**31-element backward test (dx, float16)")
    _, mean, rstd = gn.group_norm_forward(x, G, eps=EPS, out=y)
    dy = y                                                     # reuse the buffer for dy
    dtiles = _tiles(99, loc=0.0, scale=2.0 ** -6)
    _fill(dy, lambda p: dtiles, 5)
    dx, dgamma, dbeta = gn.group_norm_backward(dy, x, mean, rstd, G)

    # per (n, g): A = sum dy, B = sum dy * xhat, and the sums of their absolute values
    m64, r64 = mean.astype(np.float64), rstd.astype(np.float64)
    A, B, Aabs, Babs = (np.zeros((N, G)) for _ in range(4))
    for n in range(N):
        for g in range(G):                                     # K = 1: plane (n, g)
            p = n * C + g
            for (d, xv), k in _blocks(p, (dtiles, 5), (planes[p], 7)):
                dxh = d * ((xv - m64[n, g]) * r64[n, g])       # dy * xhat
                A[n, g] += k * d.sum()
                B[n, g] += k * dxh.sum()
                Aabs[n, g] += k * np.abs(d).sum()
                Babs[n, g] += k * np.abs(dxh).sum()
    idx = _spans()
    n, g = idx // (C * S), (idx // S) % C
    d = dy.reshape(-1)[idx].astype(np.float64)
    xh = (x.reshape(-1)[idx].astype(np.float64) - m64[n, g]) * r64[n, g]
    want = r64[n, g] * (d - A[n, g] / S - xh * B[n, g] / S)
    mag = r64[n, g] * (np.abs(d) + Aabs[n, g] / S + np.abs(xh) * Babs[n, g] / S)
    assert_close(dx.reshape(-1)[idx], want, F16, "backward", "dx near 2**31 and the ends", mag)
    assert_close(dgamma, B.sum(axis=0), F16, "backward", "dgamma", Babs.sum(axis=0))
    assert_close(dbeta, A.sum(axis=0), F16, "backward", "dbeta", Aabs.sum(axis=0))
