"""gn_native._nccl and the GPU stages on a real device, with a 1-rank NCCL communicator.

Skipped (with the reason) without CuPy, a CUDA device or the NCCL library.
Several ranks are checked on the CPU (tests/test_gpu_host.py, a stand-in
communicator over the host harness); here: the real allGather, on CuPy's
current stream, and the stages' bits against one GPU's single call.
"""
import numpy as np
import pytest

cupy = pytest.importorskip("cupy", reason="CuPy is not installed")
try:
    _HAVE_DEVICE = cupy.is_available()
except Exception:  # pragma: no cover - broken driver
    _HAVE_DEVICE = False
if not _HAVE_DEVICE:
    pytest.skip("CuPy sees no CUDA device", allow_module_level=True)
try:
    from cupy.cuda import nccl
    nccl.get_unique_id()
except Exception as e:  # pragma: no cover - no libnccl
    pytest.skip(f"NCCL is not usable ({e}); pip install nvidia-nccl-cu13", allow_module_level=True)

import gn_native as gn                      # noqa: E402
from gn_native import _gpu, _nccl           # noqa: E402
from gn_native import _gpu_geometry as G    # noqa: E402
import reference as R   # noqa: E402  (tests/reference.py)

DTYPES = [np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64)]


@pytest.fixture(scope="module")
def comm():
    return nccl.NcclCommunicator(1, nccl.get_unique_id(), 0)


def _same(a, b):
    a, b = cupy.asnumpy(a), cupy.asnumpy(b)
    return a.dtype == b.dtype and a.shape == b.shape and np.array_equal(
        np.ascontiguousarray(a).view(np.uint8), np.ascontiguousarray(b).view(np.uint8))


def _data(shape, dtype, channel_axis, seed=0):
    rng = np.random.default_rng(seed)
    x = (-30 + 2 * rng.standard_normal(shape)).astype(dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    gamma = (1 + 0.5 * rng.standard_normal(shape[1])).astype(dtype)
    beta = rng.standard_normal(shape[1]).astype(dtype)
    if channel_axis == -1:
        x, dy = (np.ascontiguousarray(np.moveaxis(a, 1, -1)) for a in (x, dy))
    return (cupy.asarray(a) for a in (x, dy, gamma, beta))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("channel_axis", [1, -1])
@pytest.mark.parametrize("activation", [None, "silu"])
@pytest.mark.parametrize("shape", [(4, 6, 5, 7), (3, 64, 32, 32), (2, 32, 128, 128)], ids=str)
def test_one_rank_is_the_single_call(comm, dtype, channel_axis, activation, shape):
    x, dy, gamma, beta = _data(shape, dtype, channel_axis)
    kw = dict(channel_axis=channel_axis, activation=activation)
    y, mean, rstd = _nccl.group_norm_forward(x, 2, gamma, beta, comm=comm, **kw)
    y0, m0, r0 = gn.group_norm_forward(x, 2, gamma, beta, stats="batch", **kw)
    assert _same(y, y0) and _same(mean, m0) and _same(rstd, r0)
    dx, dg, db = _nccl.group_norm_backward(dy, x, mean, rstd, 2, gamma, beta, comm=comm, **kw)
    dx0, dg0, db0 = gn.group_norm_backward(dy, x, m0, r0, 2, gamma, beta, stats="batch", **kw)
    assert _same(dx, dx0) and _same(dg, dg0) and _same(db, db0)
    xf = cupy.asnumpy(x).astype(np.float64)
    if channel_axis == -1:
        xf = np.moveaxis(xf, -1, 1)
    mr, vr = R.moments(xf, 2, "batch")
    tol = 1e-12 if dtype == np.float64 else 1e-6
    np.testing.assert_allclose(cupy.asnumpy(mean).astype(np.float64), mr, rtol=tol, atol=tol * 30)


def test_distributed_dispatches_cupy_arrays_here(comm):
    gnd = pytest.importorskip("gn_native.distributed")
    x, dy, gamma, beta = _data((4, 6, 5, 7), np.float32, 1)
    y, mean, rstd = gnd.group_norm_forward(x, 3, gamma, beta, comm=comm)
    y0, m0, r0 = gn.group_norm_forward(x, 3, gamma, beta, stats="batch")
    assert isinstance(y, cupy.ndarray) and _same(y, y0) and _same(mean, m0)


def test_the_collective_runs_on_the_current_stream(comm):
    """On a non-default stream, without synchronizing: the results are right once that stream is done."""
    x, dy, gamma, beta = _data((8, 32, 64, 64), np.float32, 1, seed=3)
    y0, m0, r0 = gn.group_norm_forward(x, 8, gamma, beta, stats="batch")
    s = cupy.cuda.Stream(non_blocking=True)
    with s:
        y, mean, rstd = _nccl.group_norm_forward(x, 8, gamma, beta, comm=comm)
        dx, dg, db = _nccl.group_norm_backward(dy, x, mean, rstd, 8, gamma, beta, comm=comm)
    s.synchronize()
    assert _same(y, y0) and _same(mean, m0) and _same(rstd, r0)


def test_forward_captures_into_a_cuda_graph(comm):
    """A CUDA graph capture fails on any host synchronization or device-to-host copy: the batch
    forward and backward capture whole (after a warm-up that compiles the kernels)."""
    x, dy, gamma, beta = _data((4, 16, 32, 32), np.float32, 1, seed=4)
    y0, m0, r0 = _nccl.group_norm_forward(x, 4, gamma, beta, comm=comm)
    _nccl.group_norm_backward(dy, x, m0, r0, 4, gamma, beta, comm=comm)
    s = cupy.cuda.Stream(non_blocking=True)
    with s:
        s.begin_capture()
        y, mean, rstd = _nccl.group_norm_forward(x, 4, gamma, beta, comm=comm)
        dx, dg, db = _nccl.group_norm_backward(dy, x, mean, rstd, 4, gamma, beta, comm=comm)
        graph = s.end_capture()
        graph.launch()
    s.synchronize()
    assert _same(y, y0) and _same(mean, m0)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("layout", ["nchw", "nhwc"])
def test_stage_functions_are_the_single_call(dtype, layout):
    """gn_native._gpu's stage functions (what gn_native.stages calls for CuPy arrays), one by one,
    give the bits of the stats="batch" call."""
    from gn_native import _validate as V
    channel_axis = 1 if layout == "nchw" else -1
    x, dy, gamma, beta = _data((5, 12, 9, 11), dtype, channel_axis, seed=5)
    y0, m0, r0 = gn.group_norm_forward(x, 4, gamma, beta, stats="batch", channel_axis=channel_axis)
    dx0, dg0, db0 = gn.group_norm_backward(dy, x, m0, r0, 4, gamma, stats="batch", channel_axis=channel_axis)
    p = V.with_layout(V.plan(x, 4, gamma, beta, 1e-5, "batch", channel_axis), layout)
    part = cupy.empty((5, 4, 5), np.float64)
    _gpu.stats_partial(p, part, x)
    mean, rstd, var = (cupy.empty(4, np.float64) for _ in range(3))
    _gpu.stats_merge(mean, rstd, var, part, 5, 4, 1e-5)
    y = cupy.empty_like(x)
    _gpu.normalize_stats(p, y, x, mean, rstd, gamma, beta)
    assert _same(y, y0) and _same(mean.astype(p.stat_dtype), m0) and _same(rstd.astype(p.stat_dtype), r0)
    sums = cupy.empty((5, 12, 2), np.float64)
    _gpu.backward_reduce(p, sums, dy, x, m0.astype(np.float64), r0.astype(np.float64), gamma, None)
    dx = cupy.empty_like(x)
    _gpu.backward_apply(p, dx, dy, x, m0.astype(np.float64), r0.astype(np.float64), sums, gamma, None)
    dg, db = cupy.empty(12, dtype), cupy.empty(12, dtype)
    _gpu.param_grads(p, dg, db, sums, r0.astype(np.float64))
    assert _same(dx, dx0) and _same(dg, dg0) and _same(db, db0)


def test_stages_module_on_cupy_arrays():
    """gn_native.stages (the public stage API) on CuPy arrays: the single call's bits."""
    stages = pytest.importorskip("gn_native.stages")
    x, dy, gamma, beta = _data((6, 8, 7, 5), np.float32, 1, seed=6)
    y0, m0, r0 = gn.group_norm_forward(x, 4, gamma, beta, stats="batch")
    part = stages.stats_partial(x, 4)
    mean, rstd, _ = stages.stats_merge(part)
    y = stages.normalize(x, mean, rstd, 4, gamma, beta)
    assert _same(y, y0)
    assert _same(mean.astype(np.float32), m0) and _same(rstd.astype(np.float32), r0)


def test_geometry_of_the_stages_ignores_n():
    for n in (1, 2, 7, 64):
        assert G.stats_rows_geometry(n, 256, 4096, 32).chunk == G.stats_rows_geometry(1, 256, 4096, 32).chunk
        assert G.bwd_reduce_geometry(n, 256, 4096, "nhwc").chunk == G.bwd_reduce_geometry(1, 256, 4096,
                                                                                           "nhwc").chunk
