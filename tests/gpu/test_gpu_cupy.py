"""The GPU backend on CuPy arrays: same API, compared with the CPU path and a float64 reference.

Skipped (with the reason) when CuPy is not installed or sees no CUDA device.
"""
import os
import sys

import numpy as np
import pytest

cupy = pytest.importorskip("cupy", reason="CuPy is not installed")
try:
    _HAVE_DEVICE = cupy.is_available()
except Exception:  # pragma: no cover - broken driver
    _HAVE_DEVICE = False
if not _HAVE_DEVICE:
    pytest.skip("CuPy sees no CUDA device", allow_module_level=True)

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import gn_native as gn                                    # noqa: E402
from gn_native import _gpu, _gpu_geometry as G, _gpu_kernels as K   # noqa: E402
import reference as R                                     # noqa: E402  (tests/reference.py)

try:
    import ml_dtypes
    BF16 = np.dtype(ml_dtypes.bfloat16)
except ImportError:  # pragma: no cover
    BF16 = None


def _cupy_supports(dtype):
    try:
        cupy.zeros(2, dtype) + 0
        return True
    except Exception:
        return False


DTYPES = [np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64)]
if BF16 is not None and _cupy_supports(BF16):
    DTYPES.append(BF16)

try:
    from gn_native import _cpu  # noqa: F401
    HAVE_CPU = True
except Exception:
    HAVE_CPU = False

CASES = [((2, 6, 5, 7), 3), ((3, 4, 1, 1), 2), ((2, 5, 9), 1), ((2, 6, 3, 2), 6), ((1, 4, 3, 2, 5), 2),
         ((3, 8), 4), ((4, 64, 32, 32), 32), ((1, 32, 256, 256), 32)]
AFFINES = ["none", "channel", "group"]


@pytest.fixture(params=["auto", "fused", "split"])
def path(request, monkeypatch):
    if request.param == "fused":
        monkeypatch.setattr(G, "FUSED_MIN_GROUPS", 0)
    elif request.param == "split":
        monkeypatch.setattr(G, "FUSED_MIN_GROUPS", 10**12)
        monkeypatch.setattr(G, "FUSED_MAX_SMALL_GROUP", -1)
        monkeypatch.setattr(G, "SPLIT_MIN_CHUNK", 64)
    return request.param


def _params(rng, affine, c, g, dtype):
    if affine == "none":
        return None, None
    n = g if affine == "group" else c
    return ((1 + 0.5 * rng.standard_normal(n)).astype(dtype), rng.standard_normal(n).astype(dtype))


def _dev(a):
    return None if a is None else cupy.asarray(a)


def _check(y, ref, dtype):
    y = np.asarray(y, np.float64)
    if dtype == np.float64:
        np.testing.assert_allclose(y, ref, rtol=1e-12, atol=1e-12)
    elif dtype == np.float32:
        assert np.abs(y - ref).max() <= 2e-6
    else:
        rounded = ref.astype(dtype).astype(np.float64)
        # one ulp at each value (an upper bound: 2**-mantissa_bits of the value, or the subnormal step)
        ulp = np.abs(ref) * 2.0 ** -(7 if dtype == BF16 else 10) + (2.0 ** -24 if dtype == np.float16 else 0)
        assert np.all(np.abs(y - rounded) <= ulp)


def _grid(fn):
    """The dtype x case x layout x stats x affine grid of the forward/backward tests."""
    marks = [pytest.mark.parametrize("dtype", DTYPES, ids=str),
             pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}g{c[1]}"),
             pytest.mark.parametrize("channel_axis", [1, -1]),
             pytest.mark.parametrize("stats", ["sample", "batch"]),
             pytest.mark.parametrize("affine", AFFINES)]
    for m in reversed(marks):
        fn = m(fn)
    return fn


@_grid
def test_forward(path, dtype, case, channel_axis, stats, affine):
    shape, g = case
    rng = np.random.default_rng(0)
    x = (2 + rng.standard_normal(shape)).astype(dtype)
    if channel_axis == -1:
        x = np.ascontiguousarray(np.moveaxis(x, 1, -1))
    c = x.shape[channel_axis]
    gamma, beta = _params(rng, affine, c, g, dtype)
    y, mean, rstd = gn.group_norm_forward(_dev(x), g, _dev(gamma), _dev(beta), stats=stats,
                                          channel_axis=channel_axis)
    assert isinstance(y, cupy.ndarray) and isinstance(mean, cupy.ndarray) and isinstance(rstd, cupy.ndarray)
    assert y.dtype == dtype and y.shape == x.shape
    xf = np.moveaxis(x, -1, 1) if channel_axis == -1 else x
    yr, mr, rr = R.forward(xf.astype(np.float64), g, None if gamma is None else gamma.astype(np.float64),
                           None if beta is None else beta.astype(np.float64), 1e-5, stats)
    yg = cupy.asnumpy(y)
    _check(np.moveaxis(yg, -1, 1) if channel_axis == -1 else yg, yr, dtype)
    tol = 1e-12 if dtype == np.float64 else 1e-6
    np.testing.assert_allclose(cupy.asnumpy(mean), mr, rtol=tol, atol=tol)
    np.testing.assert_allclose(cupy.asnumpy(rstd), rr, rtol=tol)
    if HAVE_CPU:
        yc, mc, rc = gn.group_norm_forward(x, g, gamma, beta, stats=stats, channel_axis=channel_axis)
        assert mc.dtype == mean.dtype and mc.shape == mean.shape
        np.testing.assert_allclose(cupy.asnumpy(y).astype(np.float64), yc.astype(np.float64),
                                   rtol=0, atol=4e-6 if dtype == np.float32 else 1e-2)


@_grid
def test_backward(path, dtype, case, channel_axis, stats, affine):
    shape, g = case
    rng = np.random.default_rng(1)
    x = (2 + rng.standard_normal(shape)).astype(dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    if channel_axis == -1:
        x, dy = (np.ascontiguousarray(np.moveaxis(a, 1, -1)) for a in (x, dy))
    c = x.shape[channel_axis]
    gamma, _ = _params(rng, affine, c, g, dtype)
    _, mean, rstd = gn.group_norm_forward(_dev(x), g, _dev(gamma), stats=stats, channel_axis=channel_axis)
    dx, dgamma, dbeta = gn.group_norm_backward(_dev(dy), _dev(x), mean, rstd, g, _dev(gamma), stats=stats,
                                               channel_axis=channel_axis)
    assert all(isinstance(a, cupy.ndarray) for a in (dx, dgamma, dbeta))
    assert dx.dtype == dtype and dgamma.dtype == dtype
    assert dgamma.shape == (gamma.shape if gamma is not None else (c,))
    to_f = (lambda a: np.moveaxis(a, -1, 1)) if channel_axis == -1 else (lambda a: a)
    g64 = None if gamma is None else gamma.astype(np.float64)
    dxr, dgr, dbr = R.backward(to_f(dy), to_f(x), cupy.asnumpy(mean), cupy.asnumpy(rstd), g, g64, stats)
    scale = max(np.abs(dxr).max(), np.abs(dy.astype(np.float64)).max() * float(cupy.asnumpy(rstd).max())
                * (1 if g64 is None else np.abs(g64).max()))
    tol = {np.dtype(np.float64): 1e-12, np.dtype(np.float32): 1e-5}.get(np.dtype(dtype), 1e-2)
    assert np.abs(to_f(cupy.asnumpy(dx)).astype(np.float64) - dxr).max() <= tol * scale
    for got, ref in ((dgamma, dgr), (dbeta, dbr)):
        assert np.abs(cupy.asnumpy(got).astype(np.float64) - ref).max() <= tol * (np.abs(ref).max() + 1e-30)
    if HAVE_CPU:
        dxc, dgc, dbc = gn.group_norm_backward(dy, x, cupy.asnumpy(mean), cupy.asnumpy(rstd), g, gamma,
                                               stats=stats, channel_axis=channel_axis)
        assert np.abs(cupy.asnumpy(dx).astype(np.float64) - dxc.astype(np.float64)).max() <= 2 * tol * scale


@pytest.mark.parametrize("stats", ["sample", "batch"])
@pytest.mark.parametrize("channel_axis", [1, -1])
def test_large_mean_float32(path, stats, channel_axis):
    rng = np.random.default_rng(3)
    x = (1e4 + rng.standard_normal((4, 32, 24, 24))).astype(np.float32)
    if channel_axis == -1:
        x = np.ascontiguousarray(np.moveaxis(x, 1, -1))
    y = cupy.asnumpy(gn.group_norm(cupy.asarray(x), 8, stats=stats, channel_axis=channel_axis))
    xf = np.moveaxis(x, -1, 1) if channel_axis == -1 else x
    yr = R.forward(xf, 8, None, None, 1e-5, stats)[0]
    assert np.abs((np.moveaxis(y, -1, 1) if channel_axis == -1 else y) - yr).max() <= 1e-5


def test_channels_last_memory_runs_without_copy():
    x = cupy.asarray(np.random.default_rng(4).standard_normal((2, 7, 7, 16)).astype(np.float32))
    xcl = x.transpose(0, 3, 1, 2)           # NCHW view of NHWC memory, as torch's channels_last
    y = gn.group_norm(xcl, 4)
    ref = R.forward(cupy.asnumpy(xcl), 4)[0]
    assert np.abs(cupy.asnumpy(y) - ref).max() <= 2e-6


def test_in_place_and_out():
    x = cupy.asarray(np.random.default_rng(5).standard_normal((2, 8, 5, 5)).astype(np.float32))
    ref = R.forward(cupy.asnumpy(x), 4)[0]
    out = cupy.empty_like(x)
    assert gn.group_norm(x, 4, out=out) is out
    assert np.abs(cupy.asnumpy(out) - ref).max() <= 2e-6
    assert gn.group_norm(x, 4, out=x) is x
    assert np.abs(cupy.asnumpy(x) - ref).max() <= 2e-6


def test_given_statistics():
    rng = np.random.default_rng(6)
    x = rng.standard_normal((2, 6, 4, 4)).astype(np.float32)
    mean = rng.standard_normal((2, 3)).astype(np.float32)
    var = rng.uniform(0.5, 2, (2, 3)).astype(np.float32)
    y = gn.group_norm(cupy.asarray(x), 3, mean=cupy.asarray(mean), var=cupy.asarray(var))
    ref = R.forward(x, 3, mean=mean, var=var)[0]
    assert np.abs(cupy.asnumpy(y) - ref).max() <= 2e-6


def test_mixing_devices_is_a_type_error():
    x = cupy.zeros((2, 4, 3), np.float32)
    with pytest.raises(TypeError, match="CuPy"):
        gn.group_norm(x, 2, gamma=np.ones(4, np.float32))
    with pytest.raises(TypeError, match="CuPy"):
        gn.group_norm(np.zeros((2, 4, 3), np.float32), 2, gamma=cupy.ones(4, np.float32))


def test_results_are_deterministic(path):
    rng = np.random.default_rng(7)
    x = cupy.asarray(rng.standard_normal((2, 64, 96, 96)).astype(np.float32))
    dy = cupy.asarray(rng.standard_normal((2, 64, 96, 96)).astype(np.float32))
    gamma = cupy.asarray(rng.standard_normal(64).astype(np.float32))
    for stats in ("sample", "batch"):
        runs = []
        for _ in range(3):
            y, m, r = gn.group_norm_forward(x, 8, gamma, stats=stats)
            dx, dg, db = gn.group_norm_backward(dy, x, m, r, 8, gamma, stats=stats)
            runs.append([cupy.asnumpy(a) for a in (y, m, r, dx, dg, db)])
        for other in runs[1:]:
            for a, b in zip(runs[0], other):
                assert np.array_equal(a.view(np.uint8), b.view(np.uint8))


def test_runs_on_the_current_stream():
    x = cupy.asarray(np.random.default_rng(8).standard_normal((4, 32, 16, 16)).astype(np.float32))
    ref = R.forward(cupy.asnumpy(x), 8)[0]
    s = cupy.cuda.Stream(non_blocking=True)
    with s:
        y = gn.group_norm(x, 8, stats="batch")
        y2 = gn.group_norm(x, 8)
    s.synchronize()
    assert np.abs(cupy.asnumpy(y2) - ref).max() <= 2e-6
    assert y.shape == x.shape


def test_empty_inputs():
    y, m, r = gn.group_norm_forward(cupy.zeros((0, 4, 3), np.float32), 2)
    assert isinstance(y, cupy.ndarray) and y.shape == (0, 4, 3) and m.shape == (0, 2)


def test_every_raw_kernel_loads_on_this_device():
    for dt in DTYPES:
        for layout in ("nchw", "nhwc"):
            name = _gpu.dtype_name(dt)
            for kname in K.raw_names(name, layout):
                assert _gpu._raw_module(name, layout).get_function(kname) is not None


@pytest.mark.slow
def test_more_than_2_31_elements():
    """float16, 2**31 + 2**20 elements: 64-bit indexing in every kernel (about 4 GiB per array)."""
    free, _ = cupy.cuda.runtime.memGetInfo()
    n_el = 2**31 + 2**20
    if free < 5 * 2 * n_el:
        pytest.skip("not enough device memory")
    shape = (2, 8, n_el // 16)
    x = cupy.random.standard_normal(shape, dtype=cupy.float32).astype(cupy.float16)
    for stats in ("sample", "batch"):
        y, m, r = gn.group_norm_forward(x, 4, stats=stats)
        # spot-check the last group against the reference on its slice
        xs = cupy.asnumpy(x[-1, 6:]).astype(np.float64)
        if stats == "sample":
            assert abs(float(m[-1, -1]) - xs.mean()) < 1e-3
            ys = cupy.asnumpy(y[-1, 6:, -4096:]).astype(np.float64)
            ref = (xs[:, -4096:] - xs.mean()) / np.sqrt(xs.var() + 1e-5)
            assert np.abs(ys - ref).max() <= 1e-2
        del y
        dx, dg, db = gn.group_norm_backward(x, x, m, r, 4, stats=stats)
        assert bool(cupy.isfinite(dg).all())
        del dx
