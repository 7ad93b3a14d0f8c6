"""Inputs of more than 2**31 elements are computed correctly (no 32-bit index wraps).

x is float16 of shape (N, C, S) = (2, 2, 2**29 + 2**16 + 8): 2**31 + 2**18 + 32
elements, 4 GiB; y another 4 GiB (and dx 4 more for the backward test).
With G = 2 groups, each (n, g) group is one plane of S values and the last
one spans flat index 2**31, where a signed 32-bit index turns negative.  The
same memory viewed channels-last as (2, S/8, 16) runs the NHWC kernels.
S leaves partial chunks and row blocks at every group's end.

The data are tiles of random values, arranged differently per plane and per
1 Mi block, so reading the wrong place gives the wrong numbers.  The
reference statistics are float64 sums streamed over the data in slices (plain
NumPy: a multi-threaded BLAS fights the core's threads on 2 cores); y and
dx are checked element by element around 2**31, at the end of the array and
at each group's start and end, with float16's tolerance (conftest.py).

Slow (about 1.5 min on 2 idle cores, most of it the first touch of 12 GiB)
and big: each test skips, saying why, when MemAvailable (/proc/meminfo) is
below what it needs.
"""
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
SLICE = 1 << 18                    # reference slices (float64 buffers, reused, cache-sized)
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


def _slices(v, buf):
    """float64 copies of consecutive slices of the 1-D array v, in the reused buffer."""
    for i in range(0, v.size, buf.size):
        b = buf[:min(buf.size, v.size - i)]
        np.copyto(b, v[i:i + b.size])
        yield i, b


@pytest.fixture(scope="module")
def big():
    """x (N, C, S) float16 and a y buffer of the same shape."""
    require_memory(2 * TOTAL * 2 + GiB, "the >2**31-element test (x and y, float16)")
    x = np.empty((N, C, S), np.float16)
    planes = [_tiles(10 + p, loc=0.5 * p - 1.0, scale=1.0 + 0.5 * p) for p in range(N * C)]
    _fill(x, lambda p: planes[p], 7)
    y = np.empty_like(x)
    yield x, y
    del x, y


@pytest.fixture(scope="module")
def plane_sums(big):
    """Shifted float64 sums of each plane: shift[c] = x[0, c, 0], s/q[n, c] = sum of d, d*d."""
    x, _ = big
    shift = x[0, :, 0].astype(np.float64)
    s, q = np.zeros((N, C)), np.zeros((N, C))
    buf, sq = np.empty(SLICE), np.empty(SLICE)
    for n in range(N):
        for c in range(C):
            for _, b in _slices(x[n, c], buf):
                b -= shift[c]
                s[n, c] += b.sum()
                q[n, c] += np.multiply(b, b, out=sq[:b.size]).sum()
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
    x, y = big
    got, mean, rstd = gn.group_norm_forward(x, G, eps=EPS, out=y)
    assert got is y
    shift, s, q = plane_sums
    ref_mean, ref_rstd = _finish(shift, s, q, S)
    assert_stats_close(mean, rstd, ref_mean, ref_rstd, F16)
    _check_y(x, y, ref_mean, ref_rstd, lambda i: (i // (C * S), (i // S) % C), "nchw, sample")


def test_forward_nchw_batch(big, plane_sums):
    x, y = big
    _, mean, rstd = gn.group_norm_forward(x, G, eps=EPS, stats="batch", out=y)
    shift, s, q = plane_sums
    ref_mean, ref_rstd = _finish(shift, s.sum(axis=0), q.sum(axis=0), N * S)
    assert_stats_close(mean, rstd, ref_mean, ref_rstd, F16)
    _check_y(x, y, ref_mean, ref_rstd, lambda i: (i // S) % C, "nchw, batch")


def test_forward_nhwc_sample(big):
    x, y = big
    rows = C * S // CL
    xl, yl = x.reshape(N, rows, CL), y.reshape(N, rows, CL)     # the same memory
    got, mean, rstd = gn.group_norm_forward(xl, G, eps=EPS, channel_axis=-1, out=yl)
    assert got is yl
    kl = CL // G
    shift = xl[:, 0, ::kl].astype(np.float64)                  # (N, G): first value of each group
    s, q = np.zeros((N, G)), np.zeros((N, G))
    buf, sq = np.empty(SLICE), np.empty(SLICE)
    for n in range(N):
        cols_shift = np.repeat(shift[n], kl)
        for _, b in _slices(xl[n].reshape(-1), buf):
            b2 = b.reshape(-1, CL)
            b2 -= cols_shift
            s[n] += b2.sum(axis=0).reshape(G, kl).sum(axis=1)
            sq2 = np.multiply(b, b, out=sq[:b.size]).reshape(-1, CL)
            q[n] += sq2.sum(axis=0).reshape(G, kl).sum(axis=1)
    ref_mean, ref_rstd = _finish(shift, s, q, kl * rows)
    assert_stats_close(mean, rstd, ref_mean, ref_rstd, F16)
    _check_y(x, y, ref_mean, ref_rstd,
             lambda i: (i // (rows * CL), (i % CL) // kl), "nhwc, sample")


def test_backward_nchw_sample(big):
    x, y = big
    require_memory(TOTAL * 2 + GiB, "the >2**31-element backward test (dx, float16)")
    _, mean, rstd = gn.group_norm_forward(x, G, eps=EPS, out=y)
    dy = y                                                     # reuse the buffer for dy
    dtiles = _tiles(99, loc=0.0, scale=2.0 ** -6)
    _fill(dy, lambda p: dtiles, 5)
    dx, dgamma, dbeta = gn.group_norm_backward(dy, x, mean, rstd, G)

    # per (n, g): A = sum dy, B = sum dy * xhat, and the sums of their absolute values
    m64, r64 = mean.astype(np.float64), rstd.astype(np.float64)
    A, B, Aabs, Babs = (np.zeros((N, G)) for _ in range(4))
    bx, bd, tmp = np.empty(SLICE), np.empty(SLICE), np.empty(SLICE)
    for n in range(N):
        for g in range(G):
            for (_, d), (_, xh) in zip(_slices(dy[n, g], bd), _slices(x[n, g], bx)):
                xh -= m64[n, g]
                xh *= r64[n, g]
                xh *= d                                        # now dy * xhat
                A[n, g] += d.sum()
                B[n, g] += xh.sum()
                Aabs[n, g] += np.abs(d, out=tmp[:d.size]).sum()
                Babs[n, g] += np.abs(xh, out=xh).sum()
    idx = _spans()
    n, g = idx // (C * S), (idx // S) % C
    d = dy.reshape(-1)[idx].astype(np.float64)
    xh = (x.reshape(-1)[idx].astype(np.float64) - m64[n, g]) * r64[n, g]
    want = r64[n, g] * (d - A[n, g] / S - xh * B[n, g] / S)
    mag = r64[n, g] * (np.abs(d) + Aabs[n, g] / S + np.abs(xh) * Babs[n, g] / S)
    assert_close(dx.reshape(-1)[idx], want, F16, "backward", "dx near 2**31 and the ends", mag)
    assert_close(dgamma, B.sum(axis=0), F16, "backward", "dgamma", Babs.sum(axis=0))
    assert_close(dbeta, A.sum(axis=0), F16, "backward", "dbeta", Aabs.sum(axis=0))
