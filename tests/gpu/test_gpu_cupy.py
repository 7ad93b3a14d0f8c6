"""The GPU backend on CuPy arrays: same API, compared with the CPU path and a float64 reference.

Skipped (with the reason) when CuPy is not installed or sees no CUDA device.
"""
import time

import numpy as np
import pytest

cupy = pytest.importorskip("cupy", reason="CuPy is not installed")
try:
    _HAVE_DEVICE = cupy.is_available()
except Exception:  # pragma: no cover - broken driver
    _HAVE_DEVICE = False
if not _HAVE_DEVICE:
    pytest.skip("CuPy sees no CUDA device", allow_module_level=True)

import gn_native as gn                                              # noqa: E402
from gn_native import _gpu, _gpu_geometry as G, _gpu_kernels as K   # noqa: E402
import reference as R   # noqa: E402  (tests/reference.py: pytest puts tests/ on sys.path)

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


_SPIN = None


def _spin(stream, seconds=0.5):
    """Occupy `stream` for about `seconds` with one busy-waiting thread (the GPU's ns timer)."""
    global _SPIN
    if _SPIN is None:
        _SPIN = cupy.RawKernel(r"""
extern "C" __global__ void gn_test_spin(unsigned long long ns) {
    unsigned long long t0, t;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t0));
    do { asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t)); } while (t - t0 < ns);
}""", "gn_test_spin")
    with stream:
        _SPIN((1,), (1,), (np.uint64(seconds * 1e9),))


@pytest.mark.parametrize("stats", ["sample", "batch"])
def test_work_goes_to_the_current_stream(stats):
    """Forward and backward queue behind what the current stream already holds.

    The current stream is busy for half a second; y and dx, prefilled with NaN,
    must still be NaN a moment later (read from a third stream), and right once
    the stream finishes.  Work sent to the null stream (or any other) would
    have run already."""
    rng = np.random.default_rng(8)
    x = cupy.asarray(rng.standard_normal((4, 32, 16, 16)).astype(np.float32))
    dy = cupy.asarray(rng.standard_normal((4, 32, 16, 16)).astype(np.float32))
    _, mean, rstd = gn.group_norm_forward(x, 8, stats=stats)
    y, dx = cupy.empty_like(x), cupy.empty_like(x)
    gn.group_norm(x, 8, stats=stats, out=y)           # compiled and loaded now, not while the stream waits
    gn.group_norm_backward(dy, x, mean, rstd, 8, stats=stats, out=dx)
    y.fill(np.nan)
    dx.fill(np.nan)
    cupy.cuda.Device().synchronize()
    s = cupy.cuda.Stream(non_blocking=True)
    _spin(s)
    with s:
        gn.group_norm(x, 8, stats=stats, out=y)
        gn.group_norm_backward(dy, x, mean, rstd, 8, stats=stats, out=dx)
    time.sleep(0.1)
    probe = cupy.cuda.Stream(non_blocking=True)
    assert not s.done
    y_early, dx_early = cupy.asnumpy(y, stream=probe), cupy.asnumpy(dx, stream=probe)
    probe.synchronize()
    assert np.isnan(y_early).all() and np.isnan(dx_early).all()
    s.synchronize()
    ref = R.forward(cupy.asnumpy(x), 8, stats=stats)[0]
    assert np.abs(cupy.asnumpy(y) - ref).max() <= 2e-6
    assert np.isfinite(cupy.asnumpy(dx)).all()


def test_every_kernel_fits_every_launch():
    """The loaded kernels accept the largest block their geometry gives them (what gpu_check
    verifies from ptxas' report, here from the driver), for every case of this suite."""
    for dt in DTYPES:
        name = _gpu.dtype_name(dt)
        for layout in ("nchw", "nhwc"):
            for act in K.ACTIVATIONS:
                for kind, kname in K.raw_kinds(name, layout, act):
                    fn = _gpu._raw_module(name, layout, act).get_function(kname)
                    assert fn.max_threads_per_block >= G.max_block(kind), (kname, fn.max_threads_per_block)
    for (shape, g) in CASES + [((1, 320, 64, 64), 32)]:
        n, c, sp = shape[0], shape[1], int(np.prod(shape[2:]))
        for stats in ("sample", "batch"):
            for layout in ("nchw", "nhwc"):
                f = G.forward_geometry(n, c, sp, g, stats)
                b = G.backward_geometry(n, c, sp, g, stats, layout)
                for kind, geo in ((("fwd_fused" if f.path == "fused" else "stats_partial"), f),
                                  (("bwd_fused" if b.path == "fused" else "bwd_partial"), b)):
                    fn = _gpu._raw_kernel(kind, "float32", layout, "channel" if kind.endswith("fused") else "none")
                    assert fn.max_threads_per_block >= geo.launch.block, (shape, kind, geo.launch)
                # stats="batch": the stages (issue 14)
                for kind, geo in (("stats_rows", G.stats_rows_geometry(n, c, sp, g)),
                                  ("bwd_reduce", G.bwd_reduce_geometry(n, c, sp, layout))):
                    fn = _gpu._raw_kernel(kind, "float32", layout, "none")
                    assert fn.max_threads_per_block >= geo.launch.block, (shape, kind, geo.launch)
    for kind in G.STAGE_KINDS:
        for sd in ("float32", "float64"):
            fn = _gpu._raw_kernel(kind, sd, "nchw", "none")
            assert fn.max_threads_per_block >= G.STAGE_BLOCK, (kind, sd)


def test_unet_shape_runs():
    """(1, 320, 64, 64), 32 groups: the fused kernels' largest block, forward and backward, every dtype."""
    rng = np.random.default_rng(9)
    for dt in DTYPES:
        x = (rng.standard_normal((1, 320, 64, 64))).astype(dt)
        dy = rng.standard_normal(x.shape).astype(dt)
        gamma = (1 + 0.1 * rng.standard_normal(320)).astype(dt)
        y, m, r = gn.group_norm_forward(cupy.asarray(x), 32, cupy.asarray(gamma))
        dx, dg, db = gn.group_norm_backward(cupy.asarray(dy), cupy.asarray(x), m, r, 32, cupy.asarray(gamma))
        yr = R.forward(x.astype(np.float64), 32, gamma.astype(np.float64))[0]
        _check(cupy.asnumpy(y), yr, np.dtype(dt))
        dxr = R.backward(dy, x, cupy.asnumpy(m), cupy.asnumpy(r), 32, gamma.astype(np.float64))[0]
        tol = {np.dtype(np.float64): 1e-10, np.dtype(np.float32): 1e-4}.get(np.dtype(dt), 2e-2)
        assert np.abs(cupy.asnumpy(dx).astype(np.float64) - dxr).max() <= tol * np.abs(dxr).max()


def test_eval_mode_backward_runs_the_kernels(monkeypatch):
    """A layer's backward after an eval-mode call (frozen running statistics) goes through
    the GPU kernels, and gives dx = dy * gamma * rstd."""
    calls = []
    real = _gpu.run_backward

    def spy(*a, **k):
        calls.append(k.get("frozen", a[10] if len(a) > 10 else False))
        return real(*a, **k)
    monkeypatch.setattr(_gpu, "run_backward", spy)
    rng = np.random.default_rng(10)
    layer = gn.GroupNorm(4, 16, track_running_stats=True, device="gpu")
    x = cupy.asarray(rng.standard_normal((3, 16, 5, 5)).astype(np.float32))
    layer(x)                     # training: running statistics move
    layer.eval()
    y = layer(x)
    dy = cupy.asarray(rng.standard_normal(x.shape).astype(np.float32))
    calls.clear()
    dx = layer.backward(dy)
    assert calls == [True]
    rstd = 1 / np.sqrt(cupy.asnumpy(layer.running_var).astype(np.float64) + layer.eps)
    ref = cupy.asnumpy(dy).astype(np.float64) * np.repeat(rstd, 4)[None, :, None, None]
    assert np.abs(cupy.asnumpy(dx) - ref).max() <= 1e-6 * np.abs(ref).max()
    assert y.shape == x.shape


@pytest.mark.parametrize("which", ["gamma", "beta"])
def test_out_overlapping_parameters(which):
    """out= over gamma or beta (issue 10): the result is as without the overlap."""
    rng = np.random.default_rng(11)
    x = cupy.asarray(rng.standard_normal((1, 4, 4)).astype(np.float32))
    params = {"gamma": rng.standard_normal(4).astype(np.float32), "beta": rng.standard_normal(4).astype(np.float32)}
    ref = R.forward(cupy.asnumpy(x), 2, params["gamma"], params["beta"])[0]
    o = cupy.empty((1, 4, 4), np.float32)
    o[0, :, 0] = cupy.asarray(params[which])
    args = {k: (o[0, :, 0] if k == which else cupy.asarray(v)) for k, v in params.items()}
    try:
        gn.group_norm(x, 2, args["gamma"], args["beta"], out=o)
    except ValueError:
        return          # refusing the overlap is allowed (SPEC)
    assert np.abs(cupy.asnumpy(o) - ref).max() <= 2e-6


def test_empty_inputs():
    y, m, r = gn.group_norm_forward(cupy.zeros((0, 4, 3), np.float32), 2)
    assert isinstance(y, cupy.ndarray) and y.shape == (0, 4, 3) and m.shape == (0, 2)


def test_every_raw_kernel_loads_on_this_device():
    for dt in DTYPES:
        for layout in ("nchw", "nhwc"):
            name = _gpu.dtype_name(dt)
            for act in K.ACTIVATIONS:
                for kname in K.raw_names(name, layout, act):
                    assert _gpu._raw_module(name, layout, act).get_function(kname) is not None


@pytest.mark.slow
@pytest.mark.parametrize("stats", ["sample", "batch"])
def test_more_than_2_31_elements(stats):
    """float16, 2**31 + 2**20 elements: 64-bit indexing in every kernel (about 4 GiB per array).

    Values of the last group are compared with a float64 reference computed on
    the device from the same inputs (CuPy array code, not our kernels)."""
    free, _ = cupy.cuda.runtime.memGetInfo()
    n_el = 2**31 + 2**20
    if free < 8 * 2 * n_el:
        pytest.skip("not enough device memory")
    shape = (2, 8, n_el // 16)
    x = cupy.random.standard_normal(shape, dtype=cupy.float32).astype(cupy.float16)
    dy = cupy.random.standard_normal(shape, dtype=cupy.float32).astype(cupy.float16)
    y, m, r = gn.group_norm_forward(x, 4, stats=stats)
    # the last group: channels 6, 7 of the last sample ("sample"), of every sample ("batch")
    rows = slice(1, 2) if stats == "sample" else slice(0, 2)
    xg = x[rows, 6:].astype(cupy.float64)
    mean = float(xg.mean())
    rstd = 1 / np.sqrt(float(((xg - mean) ** 2).mean()) + 1e-5)
    mi = (-1, -1) if stats == "sample" else (-1,)
    assert abs(float(m[mi]) - mean) < 1e-5 and abs(float(r[mi]) / rstd - 1) < 1e-5
    tail = slice(-4096, None)
    y_ref = (xg[-1, :, tail] - mean) * rstd
    assert bool((cupy.abs(y[-1, 6:, tail].astype(cupy.float64) - y_ref) <= 2.0**-10 * cupy.abs(y_ref) + 1e-4).all())
    del y
    dx, dg, db = gn.group_norm_backward(dy, x, m, r, 4, stats=stats)
    mf, rf = float(m[mi]), float(r[mi])
    dyg = dy[rows, 6:].astype(cupy.float64)
    xhat = (xg - mf) * rf
    a, b = float(dyg.mean()), float((dyg * xhat).mean())
    dx_ref = rf * (dyg[-1, :, tail] - a - xhat[-1, :, tail] * b)
    assert float(cupy.abs(dx[-1, 6:, tail].astype(cupy.float64) - dx_ref).max()) <= 2e-3 * float(cupy.abs(dx_ref).max()) + 1e-3
    dg_ref = (dy[:, 7].astype(cupy.float64) * (x[:, 7].astype(cupy.float64) - (m[:, -1, None] if stats == "sample" else mf))
              * (r[:, -1, None] if stats == "sample" else rf)).sum()
    assert abs(float(dg[7]) - float(dg_ref)) <= 1e-2 * abs(float(dg_ref)) + 1.0
    assert abs(float(db[7]) - float(dy[:, 7].astype(cupy.float64).sum())) <= 1e-2 * float(cupy.abs(dy[:, 7]).astype(cupy.float64).sum()) ** 0.5 + 1.0


# ---------------------------------------------------------------------------
# Activations (issue 13): the same comparisons as tests/test_gpu_host.py runs
# on the CPU harness, here on the device through the public API.

import test_gpu_host as HOST   # noqa: E402  (its float64 activation references: act_ref, act_grad_ref)

ACTS = ["silu", "gelu", "gelu_tanh", "relu"]


def _cpu_or_none(fn, *a, **k):
    """The CPU result, or None where the CPU path does not take the call (yet)."""
    if not HAVE_CPU:
        return None
    try:
        return fn(*a, **k)
    except (NotImplementedError, ValueError, RuntimeError):
        return None


@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", CASES[:2] + CASES[6:7], ids=lambda c: f"{c[0]}g{c[1]}")
@pytest.mark.parametrize("channel_axis", [1, -1])
@pytest.mark.parametrize("stats", ["sample", "batch"])
def test_forward_activation(path, act, dtype, case, channel_axis, stats):
    shape, g = case
    rng = np.random.default_rng(20)
    x = (0.5 + 1.5 * rng.standard_normal(shape)).astype(dtype)
    gamma, beta = _params(rng, "channel", shape[1], g, dtype)
    xd = np.ascontiguousarray(np.moveaxis(x, 1, -1)) if channel_axis == -1 else x
    y, mean, rstd = gn.group_norm_forward(_dev(xd), g, _dev(gamma), _dev(beta), stats=stats,
                                          channel_axis=channel_axis, activation=act)
    yg = cupy.asnumpy(y)
    yg = np.moveaxis(yg, -1, 1) if channel_axis == -1 else yg
    zr = R.forward(x.astype(np.float64), g, gamma.astype(np.float64), beta.astype(np.float64), 1e-5, stats)[0]
    HOST._check_act_y(yg, HOST.act_ref(act, zr), np.dtype(dtype))
    yc = _cpu_or_none(gn.group_norm_forward, xd, g, gamma, beta, stats=stats, channel_axis=channel_axis,
                      activation=act)
    if yc is not None:
        atol = {np.dtype(np.float32): 5e-6, np.dtype(np.float64): 1e-12}.get(np.dtype(dtype), 1e-2)
        np.testing.assert_allclose(cupy.asnumpy(y).astype(np.float64), yc[0].astype(np.float64), rtol=0, atol=atol)
    y2 = gn.group_norm(_dev(xd), g, _dev(gamma), _dev(beta), stats=stats, channel_axis=channel_axis,
                       mean=mean, var=(1 / rstd.astype(cupy.float64) ** 2 - 1e-5).astype(mean.dtype), activation=act)
    assert np.abs(cupy.asnumpy(y2).astype(np.float64) - cupy.asnumpy(y).astype(np.float64)).max() <= (
        1e-5 if dtype in (np.float32, np.float64) else 2e-2)


@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", CASES[:2] + CASES[6:7], ids=lambda c: f"{c[0]}g{c[1]}")
@pytest.mark.parametrize("channel_axis", [1, -1])
@pytest.mark.parametrize("stats", ["sample", "batch"])
def test_backward_activation(path, act, dtype, case, channel_axis, stats):
    shape, g = case
    rng = np.random.default_rng(21)
    x = (0.5 + 1.5 * rng.standard_normal(shape)).astype(dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    gamma, beta = _params(rng, "channel", shape[1], g, dtype)
    to_d = (lambda a: np.ascontiguousarray(np.moveaxis(a, 1, -1))) if channel_axis == -1 else (lambda a: a)
    _, mean, rstd = gn.group_norm_forward(_dev(to_d(x)), g, _dev(gamma), _dev(beta), stats=stats,
                                          channel_axis=channel_axis, activation=act)
    dx, dgamma, dbeta = gn.group_norm_backward(_dev(to_d(dy)), _dev(to_d(x)), mean, rstd, g, _dev(gamma),
                                               _dev(beta), stats=stats, channel_axis=channel_axis,
                                               activation=act)
    dxg = cupy.asnumpy(dx)
    dxg = np.moveaxis(dxg, -1, 1) if channel_axis == -1 else dxg
    m, r = cupy.asnumpy(mean), cupy.asnumpy(rstd)
    ref, mag = HOST._act_backward_ref(act, dy, x, m, r, g, gamma, beta, stats)
    HOST._check_act_backward((dxg, cupy.asnumpy(dgamma), cupy.asnumpy(dbeta)), ref, mag, np.dtype(dtype))


@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_backward_activation_frozen(act, dtype):
    """Eval mode (frozen running statistics): dx = act'(z) dy gamma rstd."""
    rng = np.random.default_rng(22)
    shape, g = (3, 6, 5, 4), 3
    x = (0.5 + 1.5 * rng.standard_normal(shape)).astype(dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    gamma, beta = _params(rng, "channel", 6, g, dtype)
    sd = np.float64 if dtype == np.float64 else np.float32
    mean = (0.3 * rng.standard_normal(g)).astype(sd)
    rstd = rng.uniform(0.5, 1.5, g).astype(sd)
    dx, dgamma, dbeta = gn.group_norm_backward(_dev(dy), _dev(x), _dev(mean), _dev(rstd), g, _dev(gamma),
                                               _dev(beta), stats="batch", frozen=True, activation=act)
    ref, mag = HOST._act_backward_ref(act, dy, x, mean, rstd, g, gamma, beta, "batch", frozen=True)
    HOST._check_act_backward((cupy.asnumpy(dx), cupy.asnumpy(dgamma), cupy.asnumpy(dbeta)), ref, mag,
                             np.dtype(dtype))


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=str)
@pytest.mark.parametrize("act", ACTS)
def test_activation_special_values_on_the_device(act, dtype):
    """torch's values at +-inf, NaN and signed zeros, through the kernels (gamma = 1, beta = the value,
    so z is exactly the special value wherever x equals its group's mean)."""
    z = HOST.SPECIAL.astype(dtype)
    x = np.zeros((1, z.size, 4), dtype)
    y = cupy.asnumpy(gn.group_norm(cupy.asarray(x), z.size, None, cupy.asarray(z), activation=act))
    want = HOST.act_ref(act, z.astype(np.float64))
    np.testing.assert_allclose(y[:, :, 0].reshape(-1).astype(np.float64)[:5], want[:5], rtol=0, atol=0)


# ---------------------------------------------------------------------------
# add= (issue 13): s = x + add (NumPy's sum in x's dtype), then GroupNorm of s.

def _addend_bcast(a, x, kind, channel_axis):
    """An addend as NumPy broadcasts it over x: x's shape, (N, C) or (C,)."""
    if kind == "full":
        return a
    shape = [1] * x.ndim
    shape[channel_axis] = x.shape[channel_axis]
    if kind == "nc":
        shape[0] = x.shape[0]
    return a.reshape(shape)


def _same_bits(a, b):
    return a.dtype == b.dtype and a.shape == b.shape and np.array_equal(
        np.ascontiguousarray(a).view(np.uint8), np.ascontiguousarray(b).view(np.uint8))


@pytest.mark.parametrize("with_sum", [True, False])
@pytest.mark.parametrize("kind", ["full", "nc", "c"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", CASES[:1] + CASES[5:7], ids=lambda c: f"{c[0]}g{c[1]}")
@pytest.mark.parametrize("channel_axis", [1, -1])
@pytest.mark.parametrize("stats", ["sample", "batch"])
def test_forward_add(path, dtype, case, channel_axis, stats, kind, with_sum):
    shape, g = case
    rng = np.random.default_rng(23)
    x = (0.5 + rng.standard_normal(shape)).astype(dtype)
    if channel_axis == -1:
        x = np.ascontiguousarray(np.moveaxis(x, 1, -1))
    n, c = x.shape[0], x.shape[channel_axis]
    a = (0.75 * rng.standard_normal({"full": x.shape, "nc": (n, c), "c": (c,)}[kind]) - 0.5).astype(dtype)
    gamma, beta = _params(rng, "channel", c, g, dtype)
    want = x + _addend_bcast(a, x, kind, channel_axis)
    sd = cupy.empty(x.shape, dtype) if with_sum else None
    got = gn.group_norm_forward(_dev(x), g, _dev(gamma), _dev(beta), stats=stats, channel_axis=channel_axis,
                                add=_dev(a), sum_out=sd)
    assert len(got) == (4 if with_sum else 3)
    y, mean, rstd = got[:3]
    if with_sum:
        assert _same_bits(cupy.asnumpy(sd), want) and _same_bits(cupy.asnumpy(got[3]), want)
    wf = np.moveaxis(want, -1, 1) if channel_axis == -1 else want
    yr, mr, rr = R.forward(wf.astype(np.float64), g, gamma.astype(np.float64), beta.astype(np.float64), 1e-5,
                           stats)
    yg = cupy.asnumpy(y)
    yl = (np.moveaxis(yg, -1, 1) if channel_axis == -1 else yg).astype(np.float64)
    # the spec's tolerance: _check's estimate of one ulp is too tight for a few 16-bit values here
    assert np.all(np.abs(yl - yr) <= R.tolerance(yr, dtype))
    tol = 1e-12 if dtype == np.float64 else 1e-6
    np.testing.assert_allclose(cupy.asnumpy(mean), mr, rtol=tol, atol=tol)
    np.testing.assert_allclose(cupy.asnumpy(rstd), rr, rtol=tol)
    sc = np.empty_like(x) if with_sum else None
    cpu = _cpu_or_none(gn.group_norm_forward, x, g, gamma, beta, stats=stats, channel_axis=channel_axis,
                       add=a, sum_out=sc)
    if cpu is not None:
        atol = {np.dtype(np.float32): 4e-6, np.dtype(np.float64): 1e-12}.get(np.dtype(dtype), 1e-2)
        np.testing.assert_allclose(yg.astype(np.float64), cpu[0].astype(np.float64), rtol=0, atol=atol)
        np.testing.assert_allclose(cupy.asnumpy(mean), cpu[1], rtol=tol, atol=tol)
        np.testing.assert_allclose(cupy.asnumpy(rstd), cpu[2], rtol=tol)
        if with_sum:
            assert _same_bits(sc, want) and _same_bits(cpu[3], want)


# (y, sum_out, add_shape): y and the sum over the backend's inputs (as tests/test_gpu_host.py)
@pytest.mark.parametrize("alias", HOST._ADD_ALIASES, ids=lambda al: f"y={al[0]},sum={al[1]},{al[2]}")
@pytest.mark.parametrize("dtype", [np.float16, np.float32], ids=str)
def test_forward_add_in_place(path, alias, dtype):
    """The backend with the sum over x or a full addend and y over either: the bits of separate
    arrays (CuPy sees each in-place output as its input's own array object)."""
    y_is, sum_is, kind = alias
    rng = np.random.default_rng(24)
    shape, g = (2, 8, 6, 5), 4
    x = (0.5 + rng.standard_normal(shape)).astype(dtype)
    a = HOST._addend(rng, x, kind)
    gamma, beta = _params(rng, "group", 8, g, dtype)
    got = []
    for y_i, s_i in ((None, None if sum_is is None else "new"), (None if y_is == "new" else y_is, sum_is)):
        p = HOST._plan(x, g, gamma, beta, 1e-5, "sample", "nhwc")
        xk = cupy.asarray(HOST._to_kernel(x, p.layout))
        ak = cupy.asarray(HOST._to_kernel(a, p.layout) if kind == "full" else a)
        given = {"x": xk, "add": ak}
        y = given[y_i] if y_i else cupy.empty_like(xk)
        s = given.get(s_i, cupy.empty_like(xk) if s_i == "new" else None)
        mean, rstd = cupy.empty(p.stat_shape, p.stat_dtype), cupy.empty(p.stat_shape, p.stat_dtype)
        _gpu.forward(p, y, mean, rstd, xk, _dev(gamma), _dev(beta), add=ak, add_shape=kind, sum_out=s)
        got.append([cupy.asnumpy(v) for v in (y, mean, rstd) + (() if s is None else (s,))])
    for u, v in zip(*got):
        assert _same_bits(u, v)
