"""The GPU kernels' arithmetic, executed on the CPU and compared with a float64 reference.

The RawKernel templates (gn_native/cuda/gn_kernels.cuh) and the math header
they share with the CuPy kernels (gn_math.cuh) are compiled with g++ and run
with one std::thread per CUDA thread (tests/gpu_harness/host_shim.h); the
CuPy Elementwise/Reduction operation strings are compiled verbatim into C++
loops.  gn_native._gpu.run_forward / run_backward then drive them with the
real launch geometry, exactly as on a GPU (tests/gpu_harness/host_exec.py).
No GPU and no CuPy needed; a C++20 compiler is.
"""
import ctypes
import os
import sys

import numpy as np
import pytest

from gn_native import _gpu, _gpu_geometry as G, _validate as V
import reference as R   # tests/reference.py (pytest puts tests/ on sys.path)
from gpu_harness import host_exec as H
from allpairs import pairwise_params

try:
    import ml_dtypes
    BF16 = np.dtype(ml_dtypes.bfloat16)
except ImportError:  # pragma: no cover
    BF16 = None

DTYPES = [np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64)] + ([BF16] if BF16 else [])


@pytest.fixture(scope="module")
def lib(tmp_path_factory):
    if H.compiler() is None:
        pytest.skip("no C++ compiler (g++) to build the GPU host harness")
    lib, _ = H.build(str(tmp_path_factory.mktemp("gpu_harness")))
    return lib


@pytest.fixture
def ex(lib):
    return H.HostExec(lib)


@pytest.fixture(params=["auto", "fused", "split"])
def path(request, monkeypatch):
    """Force a path by moving the geometry's thresholds; "split" also makes chunks small."""
    if request.param == "fused":
        monkeypatch.setattr(G, "FUSED_MIN_GROUPS", 0)
        monkeypatch.setattr(G, "SPLIT_BLOCK", 32)    # stats="batch" is always split
    elif request.param == "split":
        monkeypatch.setattr(G, "FUSED_MIN_GROUPS", 10**12)
        monkeypatch.setattr(G, "FUSED_MAX_SMALL_GROUP", -1)
        monkeypatch.setattr(G, "SPLIT_MIN_CHUNK", 16)
        monkeypatch.setattr(G, "SPLIT_TARGET_ITEMS", 64)
        monkeypatch.setattr(G, "SPLIT_BLOCK", 64)   # "auto" runs the real 256-thread blocks
    return request.param


def _p(a):
    return a.ctypes.data_as(ctypes.c_void_p)


# ---------------------------------------------------------------------------
# Scalar helpers of gn_math.cuh.

def test_half_to_float_all_patterns(lib):
    bits = np.arange(65536, dtype=np.uint16)
    out = np.empty(65536, np.float32)
    lib.h_half_to_float(_p(bits), _p(out), ctypes.c_longlong(bits.size))
    ref = bits.view(np.float16).astype(np.float32)
    nan = np.isnan(ref)
    assert np.array_equal(np.isnan(out), nan)
    assert np.array_equal(out[~nan].view(np.uint32), ref[~nan].view(np.uint32))


def _float_samples():
    rng = np.random.default_rng(1)
    u = rng.integers(0, 2**32, 400000, dtype=np.uint64).astype(np.uint32)
    # values around every half/bfloat16 rounding boundary, subnormals, overflow
    h = np.arange(65536, dtype=np.uint16).view(np.float16).astype(np.float32)
    h = h[np.isfinite(h)]
    mids = []
    for d in (-2, -1, 0, 1, 2):
        mids.append((h.view(np.uint32).astype(np.int64) + (1 << 12) + d).astype(np.uint32))  # half halfway
        mids.append((h.view(np.uint32).astype(np.int64) + d).astype(np.uint32))
    extra = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 65504, 65519.99, 65520, 65536, 1e-8, 2**-25,
                      2**-25 * 1.0000001, 2**-24, 3 * 2**-26, 3.4e38, -3.4e38, 1.17549435e-38, 1e-45],
                     np.float32)
    return np.concatenate([u.view(np.float32), np.concatenate(mids).view(np.float32), extra])


def test_float_to_half_rounds_to_nearest_even(lib):
    f = _float_samples()
    out = np.empty(f.size, np.uint16)
    lib.h_float_to_half(_p(f), _p(out), ctypes.c_longlong(f.size))
    with np.errstate(over="ignore"):
        ref = f.astype(np.float16)
    nan = np.isnan(ref)
    assert np.array_equal(np.isnan(out.view(np.float16)), nan)
    assert np.array_equal(out[~nan], ref[~nan].view(np.uint16))


@pytest.mark.skipif(BF16 is None, reason="ml_dtypes not installed")
def test_float_to_bf16_rounds_to_nearest_even(lib):
    f = _float_samples()
    b = np.arange(65536, dtype=np.uint32) << 16
    f = np.concatenate([f, (b + (1 << 15)).view(np.float32), (b + (1 << 15) - 1).view(np.float32)])
    out = np.empty(f.size, np.uint16)
    lib.h_float_to_bf16(_p(f), _p(out), ctypes.c_longlong(f.size))
    with np.errstate(invalid="ignore", over="ignore"):
        ref = f.astype(BF16)
    nan = np.isnan(ref.astype(np.float32))
    assert np.array_equal(np.isnan(out.view(BF16).astype(np.float32)), nan)
    assert np.array_equal(out[~nan], ref[~nan].view(np.uint16))


@pytest.mark.parametrize("d", [1, 2, 3, 7, 49, 640, 4097, 2**31 - 1, 2**31])
def test_device_fastdiv(lib, d):
    rng = np.random.default_rng(d)
    n = np.concatenate([rng.integers(0, 2**31, 100000, dtype=np.int64),
                        [0, 1, d - 1, d, d + 1, 2**31 - 1]]).astype(np.uint32)
    n = n[n < 2**31]
    q = np.empty_like(n)
    magic, shift = G.fastdiv(d)
    lib.h_fastdiv(_p(n), _p(q), ctypes.c_longlong(n.size), ctypes.c_uint(magic), ctypes.c_uint(shift))
    assert np.array_equal(q.astype(np.int64), n.astype(np.int64) // d)


@pytest.mark.parametrize("layout", ["nchw", "nhwc"])
@pytest.mark.parametrize("k,sp,j0,step", [(3, 5, 0, 1), (3, 5, 2, 4), (1, 7, 3, 64), (8, 1, 1, 3),
                                          (5, 3, 4, 100), (16, 49, 7, 256)])
def test_walk_visits_group_in_order(lib, layout, k, sp, j0, step):
    c = 3 * k                                   # the group is one of three
    count = (k * sp - j0 + step - 1) // step
    off = np.empty(count, np.int64)
    ch = np.empty(count, np.int64)
    length, stride = (sp, sp) if layout == "nchw" else (k, c)
    lib.h_walk(ctypes.c_longlong(j0), ctypes.c_longlong(step), ctypes.c_longlong(length),
               ctypes.c_longlong(stride), ctypes.c_int(H.LAYOUT_CODE[layout]), ctypes.c_longlong(count),
               _p(off), _p(ch))
    j = np.arange(j0, k * sp, step)
    if layout == "nchw":
        exp_ch, exp_off = j // sp, j
    else:
        exp_ch, exp_off = j % k, (j // k) * c + j % k
    assert np.array_equal(off, exp_off) and np.array_equal(ch, exp_ch)


@pytest.mark.parametrize("layout", ["nchw", "nhwc"])
@pytest.mark.parametrize("stats", ["sample", "batch"])
@pytest.mark.parametrize("small", [True, False])
def test_flat_locate(lib, layout, stats, small, monkeypatch):
    n, c, sp, g = 3, 12, 35, 4
    if not small:
        monkeypatch.setattr(G, "small_index", lambda size: False)
    params = G.flat_params(n, c, sp, g, stats, layout)
    assert params[5] == int(small)
    idx = np.arange(n * c * sp, dtype=np.int64)
    outs = [np.empty_like(idx) for _ in range(4)]
    ct = [ctypes.c_longlong] * 4 + [ctypes.c_int] * 2 + [ctypes.c_uint] * 6
    lib.h_locate(_p(idx), ctypes.c_longlong(idx.size), *[t(v) for t, v in zip(ct, params)], *map(_p, outs))
    shape = (n, c, sp) if layout == "nchw" else (n, sp, c)
    nn, a1, a2 = np.unravel_index(idx, shape)
    cc = a1 if layout == "nchw" else a2
    gg = cc // (c // g)
    st = nn * g + gg if stats == "sample" else gg
    for got, exp in zip(outs, (nn, cc, gg, st)):
        assert np.array_equal(got, exp)


def test_blocks_run_in_a_shuffled_order(lib):
    """A kernel that relied on block b running after block b - 1 would fail in the harness."""
    for grid in (2, 3, 7, 64, 1000):
        out = np.empty(grid, np.int64)
        lib.h_block_order(ctypes.c_longlong(grid), _p(out))
        assert sorted(out) == list(range(grid))
        assert not np.array_equal(out, np.arange(grid))


def test_float_subnormals_flush_to_zero_as_on_the_device(lib):
    """CuPy compiles with -ftz=true: float results and inputs below 2**-126 count as zero."""
    lib.h_ftz_fma.restype = ctypes.c_float
    lib.h_ftz_fma.argtypes = [ctypes.c_float] * 3
    assert lib.h_ftz_fma(2.0**-70, 2.0**-70, 0.0) == 0.0            # 2**-140: subnormal, flushed
    assert lib.h_ftz_fma(2.0**-60, 2.0**-60, 0.0) == 2.0**-120       # normal: kept
    assert lib.h_ftz_fma(1.0, 1e-40, 0.0) == 0.0                     # subnormal input read as 0
    assert np.float32(1e-40) != 0                                    # ... but not in the Python thread


def test_reduction_schedule_is_cupys():
    """The harness' model of CuPy's reduction blocks (host_exec.cupy_block_specs) is CuPy's own function."""
    if _gpu.cupy is None:
        pytest.skip("CuPy not installed: nothing to compare the model with")
    from cupy._core import _reduction
    for q in (1, 2, 3, 7, 64, 100, 511, 512, 513, 4096, 100000):
        for r in (1, 2, 3, 5, 31, 32, 33, 64, 200, 4096):
            assert H.cupy_block_specs(q * r, r, r) == tuple(_reduction._get_block_specs(q * r, r, r, -1)), (q, r)


def test_reductions_with_several_outputs_per_block(ex, monkeypatch):
    """Many outputs and few rows: CuPy gives each block up to 32 outputs (block_stride), and the
    tree stops at block_stride.  The harness runs that schedule; results still match the reference."""
    monkeypatch.setattr(G, "FUSED_MIN_GROUPS", 10**12)
    monkeypatch.setattr(G, "FUSED_MAX_SMALL_GROUP", -1)
    monkeypatch.setattr(G, "SPLIT_MIN_CHUNK", 2)
    rng = np.random.default_rng(12)
    x = (5 + rng.standard_normal((9, 64, 3))).astype(np.float32)     # 9 * 32 groups, 3 chunks each
    y, mean, rstd, _ = _run_forward(ex, x, 32, None, None, 1e-5, "sample", "nchw")
    (key, q, r, block, stride), = [red for red in ex.reductions if red[0].startswith("merge")]
    assert (q, r, block, stride) == (3, 288, 512, 128)      # three rows per output, 128 outputs a block:
                                                            # two full blocks and one of 32 outputs
    yr, mr, rr = R.forward(x, 32, None, None, 1e-5, "sample")
    _check_y(y, yr, np.float32)
    assert np.allclose(mean, mr, rtol=1e-6, atol=1e-6) and np.allclose(rstd, rr, rtol=1e-6)


def test_cupy_kernels_refuse_cupys_16_bit_classes():
    """The 16-bit CuPy kernels convert bits with gn_math's helpers: given CuPy's own float16 type
    (an array passed without its uint16 view) they do not compile, so nothing runs CuPy's operators."""
    if _gpu.cupy is None:
        pytest.skip("CuPy not installed (pip install .[gpu-check])")
    from gn_native import gpu_check, _gpu_kernels as K
    ok = K._ew(K.normalize_spec("float16"), {"T": "uint16", "S": "float32"})
    gpu_check.compile_program(gpu_check.elementwise_source(ok), (), "sm_80", True)
    bad = K._ew(K.normalize_spec("float16"), {"T": "float16", "S": "float32"})
    with pytest.raises(Exception, match="gn_same_type"):
        gpu_check.compile_program(gpu_check.elementwise_source(bad), (), "sm_80", True)


def test_thread_moments_keep_a_large_mean_exact(lib):
    rng = np.random.default_rng(3)
    x = (1e4 + rng.standard_normal(10007)).astype(np.float32)
    out = np.empty(3, np.float32)
    lib.h_moments_f32(_p(x), ctypes.c_longlong(x.size), ctypes.c_float(x[0]), ctypes.c_int(4), _p(out))
    x64 = x.astype(np.float64)
    assert out[0] == x.size
    assert abs(out[1] - x64.mean()) <= 2e-3           # float32 result: within its rounding at 1e4
    assert abs(out[2] / ((x64 - x64.mean()) ** 2).sum() - 1) < 1e-5


# ---------------------------------------------------------------------------
# forward / normalize / backward through gn_native._gpu's orchestration.

# (shape, groups): odd sizes, 1x1 spatial, one group, one channel per group,
# 3-D spatial, no spatial.
CASES = [
    ((2, 6, 5, 7), 3),
    ((3, 4, 1, 1), 2),
    ((2, 5, 9), 1),
    ((2, 6, 3, 2), 6),
    ((1, 4, 3, 2, 5), 2),
    ((3, 8), 4),
    ((1, 3, 17), 3),
]
AFFINES = ["none", "channel", "group", "gamma_only", "beta_only"]


def _params(rng, affine, c, g, dtype):
    gamma = beta = None
    n = g if affine == "group" else c
    if affine in ("channel", "group", "gamma_only"):
        gamma = (1 + 0.5 * rng.standard_normal(n)).astype(dtype)
    if affine in ("channel", "group", "beta_only"):
        beta = rng.standard_normal(n).astype(dtype)
    return gamma, beta


def _to_kernel(a, layout):
    return np.ascontiguousarray(np.moveaxis(a, 1, -1)) if layout == "nhwc" else a


def _from_kernel(a, layout):
    return np.moveaxis(a, -1, 1) if layout == "nhwc" else a


def _plan(x, g, gamma, beta, eps, stats, layout):
    p = V.plan(x, g, gamma, beta, eps, stats, 1)
    return V.with_layout(p, layout if x.ndim > 2 else "nchw")


def _ulp(a, dtype):
    """One unit in the last place of dtype at each value of a (float64 result)."""
    a = np.abs(np.asarray(a, np.float64)).astype(dtype)
    big = np.nextafter(a, np.array(np.inf, dtype)) if dtype != BF16 else None
    if big is None:   # ml_dtypes: step via the bit pattern
        bits = a.view(np.uint16).astype(np.uint32) + 1
        big = bits.astype(np.uint16).view(BF16)
    return np.abs(big.astype(np.float64) - a.astype(np.float64))


def _check_y(y, ref, dtype, what="y"):
    y64 = y.astype(np.float64)
    if dtype == np.float64:
        assert np.allclose(y64, ref, rtol=1e-12, atol=1e-12), what
    elif dtype == np.float32:
        assert np.abs(y64 - ref).max() <= 2e-6, what
    else:  # rounding the exact result to the dtype, plus one ulp
        rounded = ref.astype(dtype).astype(np.float64)
        assert np.all(np.abs(y64 - rounded) <= _ulp(ref, dtype) * 1.0 + 1e-30), what


def _ref_stats(x, g, eps, stats):
    mean, var = R.moments(x, g, stats)
    return mean, 1.0 / np.sqrt(var + eps)


def _run_forward(ex, x, g, gamma, beta, eps, stats, layout, inplace=False):
    p = _plan(x, g, gamma, beta, eps, stats, layout)
    xk = _to_kernel(x, p.layout).copy()
    y = xk if inplace else ex.empty(xk.shape, xk.dtype)
    mean = ex.empty(p.stat_shape, p.stat_dtype)
    rstd = ex.empty(p.stat_shape, p.stat_dtype)
    _gpu.run_forward(ex, p, y, mean, rstd, xk, gamma, beta)
    return _from_kernel(y, p.layout), mean, rstd, p


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}g{c[1]}")
@pytest.mark.parametrize("layout", ["nchw", "nhwc"])
@pytest.mark.parametrize("stats", ["sample", "batch"])
@pytest.mark.parametrize("affine", AFFINES)
def test_forward_float32(ex, path, case, layout, stats, affine):
    shape, g = case
    rng = np.random.default_rng(abs(hash((shape, layout, stats, affine))) % 2**32)
    x = (3 + 2 * rng.standard_normal(shape)).astype(np.float32)
    gamma, beta = _params(rng, affine, shape[1], g, np.float32)
    y, mean, rstd, p = _run_forward(ex, x, g, gamma, beta, 1e-5, stats, layout)
    yr, mr, rr = R.forward(x, g, gamma, beta, 1e-5, stats)
    _check_y(y, yr, np.float32)
    assert mean.dtype == np.float32 and mean.shape == p.stat_shape
    assert np.allclose(mean, mr, rtol=1e-6, atol=1e-6) and np.allclose(rstd, rr, rtol=1e-6)
    if path != "auto":
        assert ex.launches[0][0] == ("stats_rows" if stats == "batch" else
                                     "fwd_fused" if path == "fused" else "stats_partial")


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", CASES[:5], ids=lambda c: f"{c[0]}g{c[1]}")
@pytest.mark.parametrize("layout", ["nchw", "nhwc"])
@pytest.mark.parametrize("stats", ["sample", "batch"])
def test_forward_dtypes(ex, path, dtype, case, layout, stats):
    shape, g = case
    rng = np.random.default_rng(7)
    x = (1 + 2 * rng.standard_normal(shape)).astype(dtype)
    gamma, beta = _params(rng, "channel", shape[1], g, dtype)
    y, mean, rstd, p = _run_forward(ex, x, g, gamma, beta, 1e-5, stats, layout)
    assert y.dtype == dtype and mean.dtype == V.stat_dtype_for(dtype)
    yr, mr, rr = R.forward(x.astype(np.float64), g, gamma.astype(np.float64), beta.astype(np.float64),
                           1e-5, stats)
    _check_y(y, yr, dtype)
    tol = 1e-12 if dtype == np.float64 else 1e-6
    assert np.allclose(mean, mr, rtol=tol, atol=tol) and np.allclose(rstd, rr, rtol=tol)


@pytest.mark.parametrize("layout", ["nchw", "nhwc"])
@pytest.mark.parametrize("stats", ["sample", "batch"])
@pytest.mark.parametrize("offset", [1e4, -3e4])
def test_forward_large_mean_float32(ex, path, layout, stats, offset):
    """SPEC: float32 data with |mean|/std up to 1e4 -> max abs error of y <= 1e-5."""
    rng = np.random.default_rng(11)
    x = (offset + rng.standard_normal((3, 8, 13, 11))).astype(np.float32)
    x[0, 0, 0, 0] = offset + 9.0            # the first element (the shift) far from the mean
    y, mean, rstd, _ = _run_forward(ex, x, 4, None, None, 1e-5, stats, layout)
    yr, mr, rr = R.forward(x, 4, None, None, 1e-5, stats)
    assert np.abs(y.astype(np.float64) - yr).max() <= 1e-5
    assert np.allclose(rstd, rr, rtol=1e-6)


def test_forward_big_block_and_many_chunks(ex, monkeypatch):
    """The largest fused block (one group of 32768 values) and a split with dozens of chunks."""
    rng = np.random.default_rng(5)
    x = (7 + rng.standard_normal((1, 2, 128, 128))).astype(np.float32)
    y, _, _, _ = _run_forward(ex, x, 1, None, None, 1e-5, "sample", "nchw")
    assert ex.launches[-1][1].block == G.FUSED_BLOCK_MAX
    _check_y(y, R.forward(x, 1, None, None, 1e-5, "sample")[0], np.float32)
    monkeypatch.setattr(G, "SPLIT_MIN_CHUNK", 512)
    y, _, _, _ = _run_forward(ex, x, 2, None, None, 1e-5, "batch", "nhwc")
    assert [k for k, _ in ex.launches[-5:]] == ["stats_rows", "partial_fold", "stats_merge", "norm_coef64",
                                                "normalize"]
    _check_y(y, R.forward(x, 2, None, None, 1e-5, "batch")[0], np.float32)


@pytest.mark.parametrize("layout", ["nchw", "nhwc"])
def test_forward_in_place(ex, path, layout):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 6, 5, 3)).astype(np.float32)
    gamma, beta = _params(rng, "channel", 6, 3, np.float32)
    y, _, _, _ = _run_forward(ex, x, 3, gamma, beta, 1e-5, "sample", layout, inplace=True)
    _check_y(y, R.forward(x, 3, gamma, beta, 1e-5, "sample")[0], np.float32)


def test_nan_and_inf_stay_in_their_group(ex, path):
    x = np.random.default_rng(4).standard_normal((2, 4, 6)).astype(np.float32)
    x[0, 0, 1] = np.nan
    x[1, 3, 2] = np.inf
    y, mean, rstd, _ = _run_forward(ex, x, 2, None, None, 1e-5, "sample", "nchw")
    assert np.isnan(y[0, :2]).all() and np.isnan(y[1, 2:]).all()
    assert np.isfinite(y[0, 2:]).all() and np.isfinite(y[1, :2]).all()
    with np.errstate(invalid="ignore"):
        ref = R.forward(x, 2, None, None, 1e-5, "sample")[0]
    _check_y(y[0, 2:], ref[0, 2:], np.float32)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("layout", ["nchw", "nhwc"])
@pytest.mark.parametrize("stats", ["sample", "batch"])
@pytest.mark.parametrize("affine", ["none", "channel", "group", "beta_only"])
@pytest.mark.parametrize("small", [True, False])
def test_normalize_given_stats(ex, dtype, layout, stats, affine, small, monkeypatch):
    if not small:   # the 64-bit division path taken above 2**31 elements
        monkeypatch.setattr(G, "small_index", lambda size: False)
    shape, g = (2, 6, 5, 3), 3
    rng = np.random.default_rng(9)
    x = (2 + rng.standard_normal(shape)).astype(dtype)
    gamma, beta = _params(rng, affine, 6, g, dtype)
    p = _plan(x, g, gamma, beta, 1e-3, stats, layout)
    mean = rng.standard_normal(p.stat_shape).astype(p.stat_dtype)
    var = rng.uniform(0.5, 2, p.stat_shape).astype(p.stat_dtype)
    rstd = (1 / np.sqrt(var.astype(np.float64) + 1e-3)).astype(p.stat_dtype)
    xk = _to_kernel(x, p.layout)
    y = ex.empty(xk.shape, xk.dtype)
    _gpu.run_normalize(ex, p, y, xk, mean, rstd, gamma, beta)
    ref = R.forward(x.astype(np.float64), g, None if gamma is None else gamma.astype(np.float64),
                    None if beta is None else beta.astype(np.float64), 1e-3, stats,
                    mean=mean, var=var)[0]
    _check_y(_from_kernel(y, p.layout), ref, dtype)


def _run_backward(ex, x, dy, g, gamma, mean, rstd, stats, layout):
    p = _plan(x, g, gamma, None, 1e-5, stats, layout)
    xk, dyk = _to_kernel(x, p.layout), _to_kernel(dy, p.layout)
    dx = ex.empty(xk.shape, xk.dtype)
    pshape = gamma.shape if gamma is not None else (p.c,)
    dgamma = ex.empty(pshape, x.dtype)
    dbeta = ex.empty(pshape, x.dtype)
    _gpu.run_backward(ex, p, dx, dgamma, dbeta, dyk, xk, mean, rstd, gamma)
    return _from_kernel(dx, p.layout), dgamma, dbeta


def _check_backward(ex, dtype, shape, g, layout, stats, affine):
    rng = np.random.default_rng(abs(hash((shape, layout, stats, affine, str(dtype)))) % 2**32)
    x = (3 + 2 * rng.standard_normal(shape)).astype(dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    gamma, _ = _params(rng, affine, shape[1], g, dtype)
    mr, rr = _ref_stats(x.astype(np.float64), g, 1e-5, stats)
    sd = V.stat_dtype_for(dtype)
    mean, rstd = mr.astype(sd), rr.astype(sd)
    dx, dgamma, dbeta = _run_backward(ex, x, dy, g, gamma, mean, rstd, stats, layout)
    g64 = None if gamma is None else gamma.astype(np.float64)
    ref = R.backward(dy, x, mean, rstd, g, g64, stats)
    mag = R.backward_magnitudes(dy, x, mean, rstd, g, g64, stats)
    assert dx.dtype == dtype and dgamma.dtype == dtype and dbeta.shape == dgamma.shape
    assert dgamma.shape == (gamma.shape if gamma is not None else (shape[1],))
    # the spec's backward accuracy, with the conftest's slack for cancellation:
    # relative to the result, plus a fraction of the magnitudes of its terms
    rel, slack = {np.dtype(np.float64): (1e-10, 1e-10), np.dtype(np.float32): (1e-4, 1e-5)}.get(
        np.dtype(dtype), (0.0, 1e-5))
    for got, r, m in zip((dx, dgamma, dbeta), ref, mag):
        err = np.abs(got.astype(np.float64) - r)
        if dtype in (np.float16, BF16):      # the exact result rounded to 16 bits, plus one ulp
            err = err - 1.5 * _ulp(r, dtype)
        assert np.all(err <= rel * np.abs(r) + slack * m), np.max(err - rel * np.abs(r) - slack * m)


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}g{c[1]}")
@pytest.mark.parametrize("layout", ["nchw", "nhwc"])
@pytest.mark.parametrize("stats", ["sample", "batch"])
@pytest.mark.parametrize("affine", ["none", "channel", "group"])
def test_backward_float32(ex, path, case, layout, stats, affine):
    _check_backward(ex, np.dtype(np.float32), case[0], case[1], layout, stats, affine)
    if path != "auto":
        assert ex.launches[0][0] == ("bwd_reduce" if stats == "batch" else
                                     "bwd_fused" if path == "fused" else "bwd_partial")


@pytest.mark.parametrize("dtype", [d for d in DTYPES if d != np.float32], ids=str)
@pytest.mark.parametrize("case", CASES[:5], ids=lambda c: f"{c[0]}g{c[1]}")
@pytest.mark.parametrize("layout", ["nchw", "nhwc"])
@pytest.mark.parametrize("stats", ["sample", "batch"])
def test_backward_dtypes(ex, path, dtype, case, layout, stats):
    _check_backward(ex, dtype, case[0], case[1], layout, stats, "channel")


@pytest.mark.parametrize("stats", ["sample", "batch"])
@pytest.mark.parametrize("layout", ["nchw", "nhwc"])
def test_backward_matches_finite_differences(ex, path, stats, layout):
    """float64 gradients of L = sum(w * group_norm(x)) against central differences."""
    rng = np.random.default_rng(21)
    shape, g = (2, 4, 3, 2), 2
    x = rng.standard_normal(shape)
    w = rng.standard_normal(shape)
    gamma, beta = _params(rng, "channel", 4, g, np.float64)

    def loss(xv, gv, bv):
        return float((w * R.forward(xv, g, gv, bv, 1e-5, stats)[0]).sum())

    mean, rstd = _ref_stats(x, g, 1e-5, stats)
    dx, dgamma, dbeta = _run_backward(ex, x, w, g, gamma, mean, rstd, stats, layout)
    h = 1e-6
    num = np.zeros_like(x)
    for i in np.ndindex(shape):
        e = np.zeros_like(x)
        e[i] = h
        num[i] = (loss(x + e, gamma, beta) - loss(x - e, gamma, beta)) / (2 * h)
    assert np.allclose(dx, num, rtol=1e-5, atol=1e-7)
    ng = np.array([(loss(x, gamma + h * np.eye(4)[c], beta) - loss(x, gamma - h * np.eye(4)[c], beta)) / (2 * h)
                   for c in range(4)])
    nb = np.array([(loss(x, gamma, beta + h * np.eye(4)[c]) - loss(x, gamma, beta - h * np.eye(4)[c])) / (2 * h)
                   for c in range(4)])
    assert np.allclose(dgamma, ng, rtol=1e-5, atol=1e-7) and np.allclose(dbeta, nb, rtol=1e-5, atol=1e-7)


def test_every_launch_uses_the_geometry_limits(ex, path):
    """The harness asserts power-of-two blocks within each kernel's max_block on every raw launch."""
    rng = np.random.default_rng(8)
    x = rng.standard_normal((2, 6, 5, 7)).astype(np.float32)
    for stats in ("sample", "batch"):
        _run_forward(ex, x, 3, None, None, 1e-5, stats, "nhwc")
        m, r = _ref_stats(x, 3, 1e-5, stats)
        _run_backward(ex, x, x, 3, None, m.astype(np.float32), r.astype(np.float32), stats, "nchw")
    kinds = {k for k, _ in ex.launches}
    assert {"normalize", "stats_rows", "stats_merge", "bwd_reduce", "pair_sums", "param_out"} <= kinds
    assert {"merge_float32", "sum2"} <= kinds or path != "split"
    for k, launch in ex.launches:
        if launch is not None:
            assert launch.smem <= G.SMEM_LIMIT and launch.grid <= G.GRID_X_MAX


# ---------------------------------------------------------------------------
# The module around the kernels.

def test_kernels_are_named_and_memoized():
    from gn_native import _gpu_kernels as K
    for v in K.variants():
        names = v.names if isinstance(v, K.RawVariant) else (v.spec.name,)
        assert all(n.startswith("gn_") for n in names)
    if _gpu.cupy is None:
        pytest.skip("CuPy not installed: kernel objects cannot be built")
    for key in _gpu._SPECS:            # building the CuPy objects needs no device
        dt = "float16" if key in _gpu._PER_DTYPE else None
        assert _gpu._cupy_kernel(key, dt) is _gpu._cupy_kernel(key, dt)
        assert _gpu._cupy_kernel(key, dt).name.startswith("gn_")


def test_import_without_cupy_and_clear_errors():
    """gn_native imports without CuPy; asking for the GPU says what is missing."""
    import subprocess
    code = ("import sys; sys.modules['cupy'] = None\n"
            "import gn_native, gn_native._gpu as g\n"
            "assert g.cupy is None\n"
            "try:\n    g.require_device()\nexcept ImportError as e:\n    print('ERR', e)\n")
    import gn_native
    here = os.path.dirname(os.path.dirname(os.path.abspath(gn_native.__file__)))   # the gn_native we test
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=here)
    assert r.returncode == 0, r.stderr
    assert "ERR" in r.stdout and "CuPy" in r.stdout and "not installed" in r.stdout


def test_no_device_error_names_the_device():
    if _gpu.cupy is None:
        pytest.skip("CuPy not installed")
    try:
        available = _gpu.cupy.is_available()
    except Exception:
        available = False
    if available:
        pytest.skip("a CUDA device is present")
    with pytest.raises(RuntimeError, match="no CUDA device"):
        _gpu.require_device()
    assert "no usable CUDA device" in _gpu.describe()


# ---------------------------------------------------------------------------
# Magnitudes: every finite input whose variance fits in double normalizes
# correctly (SPEC), although 16- and 32-bit data are computed in float.

# spreads per dtype: float32 and bfloat16 over float's range, float16 over
# its own, float64 far past float's
SCALES = {
    "float32": [1e-30, 1e-19, 1e-10, 1.0, 1e10, 2e19, 1e30, 1e37, 1e38],
    "bfloat16": [1e-30, 1e-19, 1.0, 2e19, 1e30, 1e38],
    "float16": [1e-4, 1e-2, 1.0, 1e2, 1e4],
    "float64": [1e-150, 1e-60, 1e-19, 1.0, 2e19, 1e60, 1e150],
}
MAG_CASES = [(dt, s) for dt in SCALES for s in SCALES[dt] if dt != "bfloat16" or BF16 is not None]


def _dt(name):
    return BF16 if name == "bfloat16" else np.dtype(name)


def _spread(rng, shape, scale, dtype):
    """Data of standard deviation ~scale, never beyond the dtype's range (uniform on +-1.7 scale)."""
    return (scale * rng.uniform(-1.7, 1.7, shape)).astype(dtype)


@pytest.mark.parametrize("dtype,scale", MAG_CASES, ids=lambda v: str(v))
@pytest.mark.parametrize("layout", ["nchw", "nhwc"])
@pytest.mark.parametrize("stats", ["sample", "batch"])
def test_forward_magnitudes(ex, path, dtype, scale, layout, stats):
    """y ~ N(0, 1)-sized whatever the data's spread; eps scaled with the variance so that it matters
    as little as in ordinary data (1e-6 of the variance), as a tiny eps would with tiny data."""
    dtype = _dt(dtype)
    rng = np.random.default_rng(int(np.log10(scale) + 400))
    x = _spread(rng, (2, 6, 5, 7), scale, dtype)
    x[0, 0, 0, 0] = x[0, 0, 0, 0] * 0.25 + np.asarray(0.5 * scale).astype(dtype)   # the shift, off the mean
    eps = 1e-6 * scale * scale
    gamma, beta = _params(rng, "channel", 6, 3, np.float32)
    gamma, beta = gamma.astype(dtype), beta.astype(dtype)
    y, mean, rstd, _ = _run_forward(ex, x, 3, gamma, beta, eps, stats, layout)
    x64 = x.astype(np.float64)
    yr, mr, rr = R.forward(x64, 3, gamma.astype(np.float64), beta.astype(np.float64), eps, stats)
    assert np.isfinite(y.astype(np.float64)).all()
    _check_y(y, yr, dtype)
    sd = V.stat_dtype_for(dtype)
    tol = 1e-12 if sd == np.float64 else 1e-6
    assert np.allclose(mean.astype(np.float64), mr, rtol=tol, atol=tol * scale)
    if sd == np.float64 or rr.min() >= np.finfo(np.float32).tiny:
        # a float32 rstd below 2**-126 (spread over 8.5e37) is flushed where the device stores it
        assert np.allclose(rstd.astype(np.float64), rr, rtol=tol)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_one_huge_value_among_zeros(ex, path, dtype):
    """Issue 10: one 3e19 among zeros gave y = 0 instead of ~64 (squares summed in float)."""
    if dtype == "bfloat16" and BF16 is None:
        pytest.skip("ml_dtypes not installed")
    x = np.zeros((1, 4, 32, 32), _dt(dtype))
    x[0, 1, 3, 4] = 3e19
    y, _, _, _ = _run_forward(ex, x, 1, None, None, 1e-5, "sample", "nchw")
    yr = R.forward(x.astype(np.float64), 1)[0]
    assert abs(float(y[0, 1, 3, 4]) - 64.0) < 0.1
    if dtype == "float32":     # y of 64 is known to its float ulp (7.6e-6), not to 2e-6
        assert np.all(np.abs(y.astype(np.float64) - yr) <= 2e-6 + 2.0**-23 * np.abs(yr))
    else:
        _check_y(y, yr, _dt(dtype))


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16"])
def test_constant_groups_with_tiny_eps(ex, path, dtype):
    """var = 0 and eps = 1e-80: y = beta, not NaN (x - mean is exactly 0)."""
    if dtype == "bfloat16" and BF16 is None:
        pytest.skip("ml_dtypes not installed")
    x = np.full((2, 4, 9), 3.0, _dt(dtype))
    beta = np.arange(4, dtype=np.float32).astype(_dt(dtype))
    y, mean, rstd, _ = _run_forward(ex, x, 2, None, beta, 1e-80, "sample", "nchw")
    assert np.array_equal(y.astype(np.float64), np.broadcast_to(beta.astype(np.float64)[None, :, None], x.shape))


BWD_SCALES = {
    "float32": [1e-30, 1e-19, 1.0, 2e19, 1e30],
    "bfloat16": [1e-30, 1.0, 2e19, 1e30],
    "float16": [1e-3, 1.0, 1e3],
    "float64": [1e-150, 1.0, 1e150],
}


@pytest.mark.parametrize("dtype,scale", [(d, s) for d in BWD_SCALES for s in BWD_SCALES[d]
                                         if d != "bfloat16" or BF16 is not None], ids=str)
@pytest.mark.parametrize("layout", ["nchw", "nhwc"])
@pytest.mark.parametrize("stats", ["sample", "batch"])
def test_backward_magnitudes(ex, path, dtype, scale, layout, stats):
    """dx ~ dy / spread; the terms' products dy * (x - mean) overflow float at 2e19 with dy ~ 1e19."""
    dtype = _dt(dtype)
    rng = np.random.default_rng(int(np.log10(scale) + 500))
    shape, g = (2, 6, 5, 7), 3
    x = _spread(rng, shape, scale, dtype)
    dyscale = min(scale, 1e19) if dtype != np.float16 else 1.0
    dy = (dyscale * rng.standard_normal(shape)).astype(dtype)
    gamma, _ = _params(rng, "channel", 6, g, np.float32)
    gamma = gamma.astype(dtype)
    eps = 1e-6 * scale * scale
    mr, rr = _ref_stats(x.astype(np.float64), g, eps, stats)
    sd = V.stat_dtype_for(dtype)
    mean, rstd = mr.astype(sd), rr.astype(sd)
    dx, dgamma, dbeta = _run_backward(ex, x, dy, g, gamma, mean, rstd, stats, layout)
    g64 = gamma.astype(np.float64)
    ref = R.backward(dy, x, mean, rstd, g, g64, stats)
    mag = R.backward_magnitudes(dy, x, mean, rstd, g, g64, stats)
    rel, slack = {np.dtype(np.float64): (1e-10, 1e-10), np.dtype(np.float32): (1e-4, 1e-5)}.get(
        np.dtype(dtype), (0.0, 1e-5))
    for got, r, m in zip((dx, dgamma, dbeta), ref, mag):
        got = got.astype(np.float64)
        assert np.isfinite(got).all()
        err = np.abs(got - r)
        if dtype in (np.float16, BF16):
            err = err - 1.5 * _ulp(r, dtype)
        assert np.all(err <= rel * np.abs(r) + slack * m), np.max(err - rel * np.abs(r) - slack * m)


# ---------------------------------------------------------------------------
# Aliasing: what the backend takes in place (gn_native._gpu's docstring).
# Other overlaps (out over gamma, beta or a shifted view of x) are for
# gn_native._api to copy or refuse before the backend runs.

@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("layout", ["nchw", "nhwc"])
@pytest.mark.parametrize("stats", ["sample", "batch"])
def test_forward_in_place_every_dtype(ex, path, dtype, layout, stats):
    rng = np.random.default_rng(14)
    x = (2 + rng.standard_normal((2, 6, 5, 3))).astype(dtype)
    gamma, beta = _params(rng, "channel", 6, 3, np.float32)
    gamma, beta = gamma.astype(dtype), beta.astype(dtype)
    y, _, _, _ = _run_forward(ex, x, 3, gamma, beta, 1e-5, stats, layout, inplace=True)
    ref = R.forward(x.astype(np.float64), 3, gamma.astype(np.float64), beta.astype(np.float64), 1e-5, stats)[0]
    _check_y(y, ref, dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("layout", ["nchw", "nhwc"])
@pytest.mark.parametrize("stats", ["sample", "batch"])
@pytest.mark.parametrize("over", ["dy", "x"])
def test_backward_in_place(ex, path, dtype, layout, stats, over):
    """dx written over dy or over x (the same array object) gives the out-of-place numbers."""
    rng = np.random.default_rng(15)
    shape, g = (2, 6, 5, 3), 3
    x = (2 + rng.standard_normal(shape)).astype(dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    gamma, _ = _params(rng, "channel", 6, g, np.float32)
    gamma = gamma.astype(dtype)
    mr, rr = _ref_stats(x.astype(np.float64), g, 1e-5, stats)
    sd = V.stat_dtype_for(dtype)
    mean, rstd = mr.astype(sd), rr.astype(sd)
    want = _run_backward(ex, x, dy, g, gamma, mean, rstd, stats, layout)
    p = _plan(x, g, gamma, None, 1e-5, stats, layout)
    xk, dyk = _to_kernel(x, p.layout).copy(), _to_kernel(dy, p.layout).copy()
    dx = dyk if over == "dy" else xk
    dgamma, dbeta = ex.empty(gamma.shape, dtype), ex.empty(gamma.shape, dtype)
    _gpu.run_backward(ex, p, dx, dgamma, dbeta, dyk, xk, mean, rstd, gamma)
    for got, exp in zip((_from_kernel(dx, p.layout), dgamma, dbeta), want):
        assert np.array_equal(np.ascontiguousarray(got).view(np.uint8), np.ascontiguousarray(exp).view(np.uint8))


# ---------------------------------------------------------------------------
# Backward with frozen statistics (a layer's running ones in eval mode).

@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("layout", ["nchw", "nhwc"])
@pytest.mark.parametrize("affine", ["none", "channel", "group"])
def test_backward_with_frozen_statistics(ex, path, dtype, layout, affine):
    """dx = dy * gamma * rstd, dgamma = sum(dy * xhat), dbeta = sum(dy) with constant mean/rstd of shape (G,)."""
    rng = np.random.default_rng(16)
    shape, g = (3, 6, 5, 4), 3
    x = (2 + rng.standard_normal(shape)).astype(dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    gamma, _ = _params(rng, affine, 6, g, np.float32)
    gamma = None if gamma is None else gamma.astype(dtype)
    sd = V.stat_dtype_for(dtype)
    mean = rng.standard_normal(g).astype(sd)
    rstd = rng.uniform(0.5, 2.0, g).astype(sd)
    p = _plan(x, g, gamma, None, 1e-5, "batch", layout)
    xk, dyk = _to_kernel(x, p.layout), _to_kernel(dy, p.layout)
    dx = ex.empty(xk.shape, xk.dtype)
    pshape = gamma.shape if gamma is not None else (6,)
    dgamma, dbeta = ex.empty(pshape, dtype), ex.empty(pshape, dtype)
    _gpu.run_backward(ex, p, dx, dgamma, dbeta, dyk, xk, mean, rstd, gamma, frozen=True)
    x64, dy64 = x.astype(np.float64), dy.astype(np.float64)
    gam = np.ones(6) if gamma is None else R.per_channel(gamma.astype(np.float64), 6, g)
    r_c = np.repeat(rstd.astype(np.float64), 2)[None, :, None, None]
    m_c = np.repeat(mean.astype(np.float64), 2)[None, :, None, None]
    dx_ref = dy64 * gam[None, :, None, None] * r_c
    dg_ref = (dy64 * (x64 - m_c) * r_c).sum(axis=(0, 2, 3))
    db_ref = dy64.sum(axis=(0, 2, 3))
    if gamma is not None and gamma.shape[0] == g:
        dg_ref, db_ref = dg_ref.reshape(g, -1).sum(1), db_ref.reshape(g, -1).sum(1)
    _check_y(_from_kernel(dx, p.layout), dx_ref, dtype, "dx")
    for got, ref in ((dgamma, dg_ref), (dbeta, db_ref)):
        tol = 1e-10 if dtype == np.float64 else (1e-5 if dtype == np.float32 else 1e-2)
        assert np.allclose(got.astype(np.float64), ref, rtol=tol, atol=tol * np.abs(ref).max())
    assert "bwd_fused" not in [k for k, _ in ex.launches]


# ---------------------------------------------------------------------------
# Activations (issue 13): y = act(z), z = gamma * xhat + beta; backward with
# g = dy * act'(z), z recomputed from x, mean, rstd, gamma and beta.

ACTS = ["silu", "gelu", "gelu_tanh", "relu"]
ACT_ID = {"none": 0, "silu": 1, "gelu": 2, "gelu_tanh": 3, "relu": 4}
_SQRT_2_PI = np.sqrt(2.0 / np.pi)
_erfc = np.vectorize(__import__("math").erfc, otypes=[np.float64])


def _sigmoid2(w):
    """(sigmoid(w), 1 - sigmoid(w)), each without cancellation."""
    e = np.exp(-np.abs(w))
    a, b = 1 / (1 + e), e / (1 + e)
    return np.where(w >= 0, a, b), np.where(w >= 0, b, a)


def act_ref(name, z):
    """act(z) in float64 (torch's definitions)."""
    z = np.asarray(z, np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        if name == "silu":
            return np.where(z >= 0, z / (1 + np.exp(-np.abs(z))), z * np.exp(-np.abs(z)) / (1 + np.exp(-np.abs(z))))
        if name == "gelu":
            return 0.5 * z * _erfc(-z / np.sqrt(2.0))
        if name == "gelu_tanh":    # 0.5 z (1 + tanh(u)) = z sigmoid(2u): no cancellation for z < 0
            return z * _sigmoid2(2 * _SQRT_2_PI * (z + 0.044715 * z ** 3))[0]
        if name == "relu":
            return np.where(z < 0, 0.0, z)
    return z


def act_grad_ref(name, z):
    """act'(z) in float64."""
    z = np.asarray(z, np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        if name == "silu":
            s = np.where(z >= 0, 1 / (1 + np.exp(-np.abs(z))), np.exp(-np.abs(z)) / (1 + np.exp(-np.abs(z))))
            return s * (1 + z * (1 - s))
        if name == "gelu":
            return 0.5 * _erfc(-z / np.sqrt(2.0)) + z * np.exp(-0.5 * z * z) / np.sqrt(2 * np.pi)
        if name == "gelu_tanh":    # s + z s (1 - s) 2u'
            sg, one_minus = _sigmoid2(2 * _SQRT_2_PI * (z + 0.044715 * z ** 3))
            return sg + z * sg * one_minus * 2 * _SQRT_2_PI * (1 + 3 * 0.044715 * z * z)
        if name == "relu":
            return (z > 0).astype(np.float64)
    return np.ones_like(z)


def _act_plan(x, g, gamma, beta, eps, stats, layout, act):
    p = V.plan(x, g, gamma, beta, eps, stats, 1, activation=act)
    return V.with_layout(p, layout if x.ndim > 2 else "nchw")


def _h_act(lib, name, z, grad=False):
    """gn_act.cuh's act (or act') of z, float32 or float64, as the kernels compute it."""
    z = np.ascontiguousarray(z)
    out = np.empty_like(z)
    fn = lib.h_act_f32 if z.dtype == np.float32 else lib.h_act_f64
    fn(ctypes.c_int(ACT_ID[name]), ctypes.c_int(int(grad)), _p(z), _p(out), ctypes.c_longlong(z.size))
    return out


def _ulp32(a):
    a = np.abs(np.asarray(a, np.float64)).astype(np.float32)
    return (np.nextafter(a, np.float32(np.inf)) - a).astype(np.float64)


@pytest.mark.parametrize("name", ACTS)
def test_activation_values_within_2_ulp_of_float32(lib, name):
    """SiLU, GELU, GELU-tanh in float within ~2 ulp of the float64 value (derivatives: within
    4.1 ulp where |a'| >= 2**-6, absolute 4e-9 below), over the range GroupNorm outputs reach."""
    rng = np.random.default_rng(31)
    z = np.concatenate([rng.uniform(-12, 12, 200000), rng.standard_normal(100000),
                        np.linspace(-30, 30, 20001)]).astype(np.float32)
    y = _h_act(lib, name, z).astype(np.float64)
    ref = act_ref(name, z.astype(np.float64))
    normal = np.abs(ref) >= np.finfo(np.float32).tiny
    err = np.abs(y - ref)[normal] / _ulp32(ref[normal])
    assert err.max() <= (2.0 if name != "relu" else 0.0), err.max()
    d = _h_act(lib, name, z, grad=True).astype(np.float64)
    dref = act_grad_ref(name, z.astype(np.float64))
    big = np.abs(dref) >= 2.0**-6
    assert (np.abs(d - dref)[big] / _ulp32(dref[big])).max() <= 4.1     # act.h: silu' 4.04 at most
    assert np.abs(d - dref)[~big].max(initial=0) <= 4e-9


@pytest.mark.parametrize("name", ACTS)
def test_activation_values_float64(lib, name):
    """(Within [-10, 10]: beyond, the plain float64 formulas of the reference lose more than the
    kernels' (act.h's) compensated ones, hundreds of ulps in GELU's tail.)"""
    rng = np.random.default_rng(32)
    z = np.concatenate([rng.uniform(-10, 10, 50000), rng.standard_normal(50000)])
    y, d = _h_act(lib, name, z), _h_act(lib, name, z, grad=True)
    ref, dref = act_ref(name, z), act_grad_ref(name, z)
    assert np.allclose(y, ref, rtol=1e-12, atol=1e-300)
    assert np.allclose(d, dref, rtol=1e-12, atol=1e-15)


SPECIAL = np.array([np.inf, -np.inf, np.nan, 0.0, -0.0, 1e-30, -1e-30, 1e30, -1e30, 100.0, -100.0, 3.0, -3.0])


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=str)
@pytest.mark.parametrize("name", ACTS)
def test_activation_special_values_as_torch(lib, name, dtype):
    """torch 2.13's values for +-inf, NaN, signed zeros and huge arguments (gn_act.cuh's header)."""
    z = SPECIAL.astype(dtype)
    y, d = _h_act(lib, name, z), _h_act(lib, name, z, grad=True)
    inf, nan = np.inf, np.nan
    want_y = {"relu": [inf, 0.0, nan, 0.0, -0.0], "other": [inf, nan, nan, 0.0, -0.0]}
    want_d = {"relu": [1.0, 0.0, 1.0, 0.0, 0.0], "other": [nan, nan, nan]}
    wy = want_y["relu" if name == "relu" else "other"]
    wd = want_d["relu" if name == "relu" else "other"]
    np.testing.assert_array_equal(y[:len(wy)], np.array(wy, dtype))
    assert np.array_equal(np.signbit(y[3:5]), [False, True])
    np.testing.assert_array_equal(d[:len(wd)], np.array(wd, dtype))
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    fn = {"silu": F.silu, "gelu": F.gelu, "relu": F.relu,
          "gelu_tanh": lambda t: F.gelu(t, approximate="tanh")}[name]
    t = torch.tensor(z.astype(np.float64), requires_grad=True)     # float64: torch's exact limits
    ty = fn(t)
    ty.backward(torch.ones_like(ty))
    ty, td = ty.detach().numpy(), t.grad.numpy()
    tiny = 1e-37 if dtype == np.float32 else 1e-300      # float32: the device flushes subnormals
    np.testing.assert_allclose(y.astype(np.float64), ty, rtol=3e-7, atol=tiny)
    np.testing.assert_allclose(d.astype(np.float64), td, rtol=2e-6, atol=tiny)


def test_activation_port_matches_the_cpu_core_bit_for_bit(lib, tmp_path):
    """gn_act.cuh is a port of the C core's gn_native/src/act.h: the same bits for every float
    (the device's flush-to-zero aside) and every double (the same libm on the host)."""
    # the C core's sources are not installed (the wheel holds what runs): the checkout's
    act_h = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                         "gn_native", "src", "act.h")
    if not os.path.exists(act_h) or H.compiler() is None:
        pytest.skip("act.h or g++ not available")
    src = tmp_path / "ref.cpp"
    src.write_text('#include "act.h"\nextern "C" {\n'
                   "void r_f32(int a, int g, const float* z, float* o, long long n) {\n"
                   "  for (long long i = 0; i < n; ++i)\n"
                   "    o[i] = g ? gn_act_grad_f(a, z[i]) : gn_act_apply_f(a, z[i]); }\n"
                   "void r_f64(int a, int g, const double* z, double* o, long long n) {\n"
                   "  for (long long i = 0; i < n; ++i)\n"
                   "    o[i] = g ? gn_act_grad_d(a, z[i]) : gn_act_apply_d(a, z[i]); }\n"
                   "}\n")
    so = tmp_path / "ref.so"
    import subprocess
    r = subprocess.run([H.compiler(), "-O1", "-shared", "-fPIC", "-ffp-contract=off", "-I", os.path.dirname(act_h),
                        str(src), "-o", str(so)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    ref = ctypes.CDLL(str(so))
    rng = np.random.default_rng(33)
    bits = rng.integers(0, 2**32, 300000, dtype=np.uint64).astype(np.uint32)
    z32 = np.concatenate([bits.view(np.float32), np.linspace(-120, 120, 100001, dtype=np.float32),
                          SPECIAL.astype(np.float32)])
    z32 = z32[~(np.abs(z32) < np.finfo(np.float32).tiny) | (z32 == 0)]      # subnormal inputs read as 0 on the device
    z64 = np.concatenate([rng.uniform(-800, 800, 100000), rng.standard_normal(100000), SPECIAL])
    for name in ACTS:
        for grad in (0, 1):
            for z, fn in ((z32, ref.r_f32), (z64, ref.r_f64)):
                want = np.empty_like(z)
                fn(ctypes.c_int(ACT_ID[name]), ctypes.c_int(grad), _p(z), _p(want), ctypes.c_longlong(z.size))
                got = _h_act(lib, name, z, bool(grad))
                if z.dtype == np.float32:   # flush act.h's subnormal results, as the device does
                    sub = (np.abs(want) < np.finfo(np.float32).tiny) & (want != 0)
                    want[sub] = np.copysign(np.float32(0), want[sub])
                same = (got.view(np.uint8).reshape(z.size, -1) == want.view(np.uint8).reshape(z.size, -1)).all(1)
                same |= np.isnan(got) & np.isnan(want)
                assert same.all(), (name, grad, z.dtype, z[~same][:5], got[~same][:5], want[~same][:5])


ACT_CASES = [((2, 6, 5, 7), 3), ((2, 6, 3, 2), 6), ((3, 8), 4)]


def _act_data(rng, shape, dtype):
    return (0.5 + 1.5 * rng.standard_normal(shape)).astype(dtype)


def _check_act_y(y, ref, dtype):
    y64 = y.astype(np.float64)
    if dtype == np.float64:
        assert np.allclose(y64, ref, rtol=1e-12, atol=1e-12)
    elif dtype == np.float32:   # GN's 2e-6 through act' (<= 1.13), plus the activation's 2 ulp
        assert np.all(np.abs(y64 - ref) <= 2.3e-6 + 2 * _ulp32(ref)), np.abs(y64 - ref).max()
    else:
        _check_y(y, ref, dtype)


# every activation x dtype x layout x stats; shapes and forced paths pairwise with them
_ACT_GRID = dict(path=["auto", "fused", "split"], act=ACTS, dtype=DTYPES,
                 case=[pytest.param(c, id=f"{c[0]}g{c[1]}") for c in ACT_CASES],
                 layout=["nchw", "nhwc"], stats=["sample", "batch"])


@pytest.mark.parametrize("path,act,dtype,case,layout,stats", pairwise_params(
    _ACT_GRID, full=("act", "dtype", "layout", "stats")), indirect=["path"])
def test_forward_activation(ex, path, act, dtype, case, layout, stats):
    shape, g = case
    rng = np.random.default_rng(40)
    x = _act_data(rng, shape, dtype)
    affine = ["channel", "group", "beta_only"][ACTS.index(act) % 3]
    gamma, beta = _params(rng, affine, shape[1], g, dtype)
    p = _act_plan(x, g, gamma, beta, 1e-5, stats, layout, act)
    xk = _to_kernel(x, p.layout).copy()
    y = ex.empty(xk.shape, xk.dtype)
    mean, rstd = ex.empty(p.stat_shape, p.stat_dtype), ex.empty(p.stat_shape, p.stat_dtype)
    _gpu.run_forward(ex, p, y, mean, rstd, xk, gamma, beta)
    f64 = (lambda a: None if a is None else a.astype(np.float64))
    zr, mr, rr = R.forward(x.astype(np.float64), g, f64(gamma), f64(beta), 1e-5, stats)
    _check_act_y(_from_kernel(y, p.layout), act_ref(act, zr), dtype)
    tol = 1e-12 if dtype == np.float64 else 1e-6
    assert np.allclose(mean, mr, rtol=tol, atol=tol) and np.allclose(rstd, rr, rtol=tol)
    assert {a for k, a in ex.acts if k == "fwd_fused"} <= {act}
    if path == "fused" and stats == "sample":
        assert ex.launches[0][0] == "fwd_fused"


@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("layout", ["nchw", "nhwc"])
@pytest.mark.parametrize("stats", ["sample", "batch"])
@pytest.mark.parametrize("inplace", [False, True])
def test_normalize_activation(ex, act, dtype, layout, stats, inplace):
    shape, g = (2, 6, 5, 3), 3
    rng = np.random.default_rng(41)
    x = _act_data(rng, shape, dtype)
    gamma, beta = _params(rng, "channel", 6, g, dtype)
    p = _act_plan(x, g, gamma, beta, 1e-3, stats, layout, act)
    mean = rng.standard_normal(p.stat_shape).astype(p.stat_dtype)
    var = rng.uniform(0.5, 2, p.stat_shape).astype(p.stat_dtype)
    rstd = (1 / np.sqrt(var.astype(np.float64) + 1e-3)).astype(p.stat_dtype)
    xk = _to_kernel(x, p.layout).copy()
    y = xk if inplace else ex.empty(xk.shape, xk.dtype)
    _gpu.run_normalize(ex, p, y, xk, mean, rstd, gamma, beta)
    zr = R.forward(x.astype(np.float64), g, gamma.astype(np.float64), beta.astype(np.float64), 1e-3, stats,
                   mean=mean, var=var)[0]
    _check_act_y(_from_kernel(y, p.layout), act_ref(act, zr), dtype)


def _act_backward_ref(act, dy, x, mean, rstd, g, gamma, beta, stats, frozen=False):
    """(dx, dgamma, dbeta) and their magnitudes in float64: the GN backward of g = dy * act'(z)."""
    c = x.shape[1]
    f64 = (lambda a: None if a is None else a.astype(np.float64))
    z = R.forward(x.astype(np.float64), g, f64(gamma), f64(beta), 0.0, stats,
                  mean=mean, var=1.0 / np.asarray(rstd, np.float64) ** 2)[0]
    gg = dy.astype(np.float64) * act_grad_ref(act, z)
    if not frozen:
        return (R.backward(gg, x, mean, rstd, g, f64(gamma), stats),
                R.backward_magnitudes(gg, x, mean, rstd, g, f64(gamma), stats))
    gam = np.ones(c) if gamma is None else R.per_channel(gamma.astype(np.float64), c, g)
    bshape = (1, c) + (1,) * (x.ndim - 2)
    r_c = np.repeat(np.asarray(rstd, np.float64), c // g).reshape(bshape)
    m_c = np.repeat(np.asarray(mean, np.float64), c // g).reshape(bshape)
    axes = (0,) + tuple(range(2, x.ndim))
    xh = (x.astype(np.float64) - m_c) * r_c
    dx = gg * gam.reshape(bshape) * r_c
    dgam, dbet = (gg * xh).sum(axis=axes), gg.sum(axis=axes)
    mdx = np.abs(dx)
    mg, mb = np.abs(gg * xh).sum(axis=axes), np.abs(gg).sum(axis=axes)
    if gamma is not None and gamma.shape[0] == g:
        dgam, dbet = dgam.reshape(g, -1).sum(1), dbet.reshape(g, -1).sum(1)
        mg, mb = mg.reshape(g, -1).sum(1), mb.reshape(g, -1).sum(1)
    return (dx, dgam, dbet), (mdx, mg, mb)


def _check_act_backward(got, ref, mag, dtype):
    rel, slack = {np.dtype(np.float64): (1e-10, 1e-10), np.dtype(np.float32): (1e-4, 1e-5)}.get(
        np.dtype(dtype), (0.0, 1e-5))
    for what, gv, r, m in zip(("dx", "dgamma", "dbeta"), got, ref, mag):
        gv = np.asarray(gv).astype(np.float64)
        err = np.abs(gv - r)
        if dtype in (np.float16, BF16):
            err = err - 1.5 * _ulp(r, dtype)
        assert np.all(err <= rel * np.abs(r) + slack * m), (what, np.max(err - rel * np.abs(r) - slack * m))


def _run_act_backward(ex, act, x, dy, g, gamma, beta, mean, rstd, stats, layout, frozen=False, over=None):
    p = _act_plan(x, g, gamma, beta, 1e-5, stats, layout, act)
    xk, dyk = _to_kernel(x, p.layout).copy(), _to_kernel(dy, p.layout).copy()
    dx = {None: None, "dy": dyk, "x": xk}[over]
    dx = ex.empty(xk.shape, xk.dtype) if dx is None else dx
    pshape = gamma.shape if gamma is not None else (beta.shape if beta is not None else (p.c,))
    dgamma, dbeta = ex.empty(pshape, x.dtype), ex.empty(pshape, x.dtype)
    _gpu.run_backward(ex, p, dx, dgamma, dbeta, dyk, xk, mean, rstd, gamma, frozen=frozen, beta=beta)
    return _from_kernel(dx, p.layout), dgamma, dbeta


@pytest.mark.parametrize("path,act,dtype,case,layout,stats", pairwise_params(
    _ACT_GRID, full=("act", "dtype", "layout", "stats")), indirect=["path"])
def test_backward_activation(ex, path, act, dtype, case, layout, stats):
    shape, g = case
    rng = np.random.default_rng(42)
    x = _act_data(rng, shape, dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    affine = ["channel", "group", "beta_only", "gamma_only"][ACTS.index(act)]
    gamma, beta = _params(rng, affine, shape[1], g, dtype)
    mr, rr = _ref_stats(x.astype(np.float64), g, 1e-5, stats)
    sd = V.stat_dtype_for(dtype)
    mean, rstd = mr.astype(sd), rr.astype(sd)
    got = _run_act_backward(ex, act, x, dy, g, gamma, beta, mean, rstd, stats, layout)
    ref, mag = _act_backward_ref(act, dy, x, mean, rstd, g, gamma, beta, stats)
    _check_act_backward(got, ref, mag, dtype)
    kinds = {k for k, _ in ex.acts}
    assert kinds and {a for _, a in ex.acts} == {act}
    if path == "fused" and stats == "sample":
        assert kinds == {"bwd_fused"}
    elif stats == "batch":
        assert kinds == {"bwd_reduce"}
    elif path == "split":
        assert kinds == {"bwd_partial"}


@pytest.mark.parametrize("path,act,dtype,layout,affine", pairwise_params(
    dict(path=["auto", "fused", "split"], act=ACTS, dtype=DTYPES, layout=["nchw", "nhwc"],
         affine=["channel", "group", "beta_only"]), full=("act", "dtype")), indirect=["path"])
def test_backward_activation_frozen(ex, path, act, dtype, layout, affine):
    """Eval mode: dx = act'(z) dy gamma rstd with constant per-group statistics."""
    rng = np.random.default_rng(43)
    shape, g = (3, 6, 5, 4), 3
    x = _act_data(rng, shape, dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    gamma, beta = _params(rng, affine, 6, g, dtype)
    sd = V.stat_dtype_for(dtype)
    mean = (0.3 * rng.standard_normal(g)).astype(sd)
    rstd = rng.uniform(0.5, 1.5, g).astype(sd)
    got = _run_act_backward(ex, act, x, dy, g, gamma, beta, mean, rstd, "batch", layout, frozen=True)
    ref, mag = _act_backward_ref(act, dy, x, mean, rstd, g, gamma, beta, "batch", frozen=True)
    _check_act_backward(got, ref, mag, dtype)
    assert "bwd_fused" not in [k for k, _ in ex.launches]


@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("stats", ["sample", "batch"])
@pytest.mark.parametrize("over", ["dy", "x"])
def test_backward_activation_in_place(ex, path, act, stats, over):
    """dx over dy or x: the same bits as out of place (z is recomputed from x before dx is written)."""
    rng = np.random.default_rng(44)
    shape, g = (2, 6, 5, 3), 3
    x = _act_data(rng, shape, np.float32)
    dy = rng.standard_normal(shape).astype(np.float32)
    gamma, beta = _params(rng, "channel", 6, g, np.float32)
    mr, rr = _ref_stats(x.astype(np.float64), g, 1e-5, stats)
    mean, rstd = mr.astype(np.float32), rr.astype(np.float32)
    want = _run_act_backward(ex, act, x, dy, g, gamma, beta, mean, rstd, stats, "nhwc")
    got = _run_act_backward(ex, act, x, dy, g, gamma, beta, mean, rstd, stats, "nhwc", over=over)
    for a, b in zip(got, want):
        assert np.array_equal(np.ascontiguousarray(a).view(np.uint8), np.ascontiguousarray(b).view(np.uint8))


@pytest.mark.parametrize("path,act,stats,layout", pairwise_params(
    dict(path=["auto", "fused", "split"], act=ACTS, stats=["sample", "batch"],
         layout=["nchw", "nhwc"]), full=("act", "stats")), indirect=["path"])
def test_backward_activation_matches_finite_differences(ex, path, act, stats, layout):
    """float64 gradients of L = sum(w * act(group_norm(x))) against central differences."""
    rng = np.random.default_rng(45)
    shape, g = (2, 4, 3, 2), 2
    x = rng.standard_normal(shape)
    w = rng.standard_normal(shape)
    gamma, beta = _params(rng, "channel", 4, g, np.float64)

    def loss(xv, gv, bv):
        return float((w * act_ref(act, R.forward(xv, g, gv, bv, 1e-5, stats)[0])).sum())

    mean, rstd = _ref_stats(x, g, 1e-5, stats)
    dx, dgamma, dbeta = _run_act_backward(ex, act, x, w, g, gamma, beta, mean, rstd, stats, layout)
    h = 1e-6
    num = np.zeros_like(x)
    for i in np.ndindex(shape):
        e = np.zeros_like(x)
        e[i] = h
        num[i] = (loss(x + e, gamma, beta) - loss(x - e, gamma, beta)) / (2 * h)
    assert np.allclose(dx, num, rtol=1e-5, atol=1e-7)
    eye = np.eye(4)
    ng = np.array([(loss(x, gamma + h * eye[c], beta) - loss(x, gamma - h * eye[c], beta)) / (2 * h) for c in range(4)])
    nb = np.array([(loss(x, gamma, beta + h * eye[c]) - loss(x, gamma, beta - h * eye[c])) / (2 * h) for c in range(4)])
    assert np.allclose(dgamma, ng, rtol=1e-5, atol=1e-7) and np.allclose(dbeta, nb, rtol=1e-5, atol=1e-7)


def test_activation_none_runs_the_plain_kernels(ex):
    """activation=None: the ACT = 0 instances (the kernels as they were), beta unread by backward."""
    from gn_native import _gpu_kernels as K
    assert K.raw_name("fwd_fused", "float32", "nchw", "channel") == "gn_fwd_fused<float, 0, 1, 0>"
    assert K.raw_name("bwd_partial", "float16", "nhwc", act="silu") == "gn_bwd_partial<gn_half, 1, 1>"
    assert all(k in ("stats_partial", "stats_rows", "bwd_reduce") or k in K.ACT_KINDS for k in K.RAW_KINDS)
    assert [k for k, _ in K.raw_kinds("float32", "nchw", "gelu")].count("stats_partial") == 0
    rng = np.random.default_rng(46)
    x = rng.standard_normal((2, 6, 5, 3)).astype(np.float32)
    _run_forward(ex, x, 3, None, None, 1e-5, "sample", "nchw")
    assert {a for _, a in ex.acts} == {"none"}


# ---------------------------------------------------------------------------
# add= (issue 13): one kernel writes s = x + add (NumPy's sum in x's dtype),
# then forward runs on s: the same kernels, launches and bits as a plain
# forward of that sum.

ADD_KINDS = ["full", "nc", "c"]


class _Shape(str):
    """add_shape arrives as a str subclass (gn_native._validate.Code)."""


def _addend(rng, x, kind):
    """An addend of x's dtype in its logical shape: x's, (N, C) or (C,)."""
    shape = {"full": x.shape, "nc": x.shape[:2], "c": x.shape[1:2]}[kind]
    return (0.75 * rng.standard_normal(shape) - 0.5).astype(x.dtype)


def _numpy_sum(x, a, kind):
    """x + a broadcast over space (and n for "c"), in x's dtype as NumPy computes it."""
    tail = (1,) * (x.ndim - 2)
    b = {"full": a, "nc": a.reshape(a.shape + tail), "c": a.reshape((1,) + a.shape + tail)}[kind]
    s = x + b
    assert s.dtype == x.dtype
    return s


def _run_add(ex, x, a, kind, g, gamma, beta, stats, layout, y_is=None, sum_is=None):
    """run_forward with add=a.  y_is: None (a new array), "x" or "add" (that input's own array);
    sum_is: None (no sum_out), "new", "x" or "add".  Returns (sum_out or None, y, mean, rstd, plan),
    the arrays in the logical layout."""
    p = _plan(x, g, gamma, beta, 1e-5, stats, layout)
    xk = _to_kernel(x, p.layout).copy()
    ak = _to_kernel(a, p.layout).copy() if kind == "full" else a.copy()
    given = {"x": xk, "add": ak}
    y = given[y_is] if y_is else ex.empty(xk.shape, xk.dtype)
    s = given.get(sum_is, ex.empty(xk.shape, xk.dtype) if sum_is == "new" else None)
    mean, rstd = ex.empty(p.stat_shape, p.stat_dtype), ex.empty(p.stat_shape, p.stat_dtype)
    _gpu.run_forward(ex, p, y, mean, rstd, xk, gamma, beta, add=ak, add_shape=_Shape(kind), sum_out=s)
    return None if s is None else _from_kernel(s, p.layout), _from_kernel(y, p.layout), mean, rstd, p


def _same_bits(a, b):
    a, b = np.ascontiguousarray(a), np.ascontiguousarray(b)
    return a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a.view(np.uint8), b.view(np.uint8))


def _check_add_run(lib, got, x, a, kind, g, gamma, beta, stats, layout, launches):
    """got (from _run_add): the sum is NumPy's bit for bit, and y, mean, rstd and the launches
    after the add kernel are those of a plain forward of that sum."""
    s, y, mean, rstd, _ = got
    want_s = _numpy_sum(x, a, kind)
    if s is not None:
        assert _same_bits(s, want_s), "sum"
    plain = H.HostExec(lib)
    yp, mp, rp, _ = _run_forward(plain, want_s, g, gamma, beta, 1e-5, stats, layout)
    assert _same_bits(y, yp) and _same_bits(mean, mp) and _same_bits(rstd, rp)
    assert launches[0] == ("add", None) and launches[1:] == plain.launches


_ADD_GRID = dict(path=["auto", "fused", "split"], dtype=DTYPES, layout=["nchw", "nhwc"], kind=ADD_KINDS,
                 sum_out=[True, False], stats=["sample", "batch"],
                 case=[pytest.param(c, id=f"{c[0]}g{c[1]}") for c in CASES[:1] + CASES[3:]])


@pytest.mark.parametrize("path,dtype,layout,kind,sum_out,stats,case", pairwise_params(
    _ADD_GRID, full=("dtype", "kind")), indirect=["path"])
def test_forward_add(lib, ex, path, dtype, layout, kind, sum_out, stats, case):
    shape, g = case
    rng = np.random.default_rng(50)
    x = (0.5 + rng.standard_normal(shape)).astype(dtype)
    a = _addend(rng, x, kind)
    gamma, beta = _params(rng, "channel", shape[1], g, dtype)
    got = _run_add(ex, x, a, kind, g, gamma, beta, stats, layout, sum_is="new" if sum_out else None)
    _check_add_run(lib, got, x, a, kind, g, gamma, beta, stats, layout, ex.launches)
    if path == "fused" and stats == "sample":
        assert ex.launches[1][0] == "fwd_fused"
    elif stats == "batch":
        assert ex.launches[1][0] == "stats_rows"
    elif path == "split":
        assert ex.launches[1][0] == "stats_partial"


# (y, sum_out, add_shape): y and the sum over the inputs ("add" only for a full addend)
_ADD_ALIASES = [(y, sm, k) for y, sm in (("new", "x"), ("x", None), ("x", "new")) for k in ADD_KINDS] + [
    (y, sm, "full") for y, sm in (("new", "add"), ("add", None), ("x", "add"), ("add", "x"))]


@pytest.mark.parametrize("path,dtype,layout,alias", pairwise_params(
    dict(path=["fused", "split"], dtype=[np.dtype(np.float16), np.dtype(np.float32)], layout=["nchw", "nhwc"],
         alias=[pytest.param(al, id=f"y={al[0]},sum={al[1]},{al[2]}") for al in _ADD_ALIASES])),
    indirect=["path"])
def test_forward_add_in_place(lib, ex, path, dtype, layout, alias):
    """The sum over x or a full addend, y over x or a full addend: the bits of separate arrays."""
    y_is, sum_is, kind = alias
    rng = np.random.default_rng(51)
    shape, g = (2, 6, 5, 3), 3
    x = (0.5 + rng.standard_normal(shape)).astype(dtype)
    a = _addend(rng, x, kind)
    gamma, beta = _params(rng, "group", 6, g, dtype)
    got = _run_add(ex, x, a, kind, g, gamma, beta, "sample", layout,
                   y_is=None if y_is == "new" else y_is, sum_is=sum_is)
    _check_add_run(lib, got, x, a, kind, g, gamma, beta, "sample", layout, ex.launches)


def test_forward_add_is_one_kernel_before_the_plain_sequence(ex):
    """add=None runs the plain sequence; with add the add kernel comes first, nothing else changes."""
    rng = np.random.default_rng(52)
    x = rng.standard_normal((2, 6, 5, 3)).astype(np.float32)
    _run_forward(ex, x, 3, None, None, 1e-5, "batch", "nhwc")
    plain = list(ex.launches)
    assert "add" not in [k for k, _ in plain]
    ex.launches.clear()
    _run_add(ex, x, _addend(rng, x, "nc"), "nc", 3, None, None, "batch", "nhwc")
    assert ex.launches == [("add", None)] + plain


# ---------------------------------------------------------------------------
# The stages (issue 14): stats="batch" IS stats_partial -> stats_merge ->
# normalize and backward_reduce -> backward_apply -> param_grads; a sample's
# partial rows and sums depend on its own values only; a batch split over
# ranks (gn_native._nccl, here with a stand-in communicator whose allGather
# copies the ranks' host "device" buffers in rank order) gives the single
# call's bits.

import threading   # noqa: E402

from gn_native import _nccl, _gpu_kernels as GK   # noqa: E402

STAGE_CASES = [((4, 6, 5, 7), 3), ((4, 4, 1, 1), 2), ((4, 8), 4), ((4, 4, 3, 2, 5), 2), ((4, 12, 9, 11), 4)]


def _stage_data(rng, shape, dtype, offset=3.0):
    return (offset + 2 * rng.standard_normal(shape)).astype(dtype)


def _k(a, p):
    return _to_kernel(a, p.layout).copy()


def _partials(ex, x, g, layout):
    p = _plan(x, g, None, None, 1e-5, "batch", layout)
    part = ex.empty((p.n, p.groups, 5), np.float64)
    _gpu.run_stats_partial(ex, p, part, _k(x, p))
    return part


def _merge_py(rows, eps):
    """The spec's merge formula in Python floats (IEEE double, no FMA), rows (m, 5) in order."""
    import math
    E = max(r[4] for r in rows)
    c = rows[0][1]
    M, S, Q = rows[0][0], math.ldexp(rows[0][2], int(rows[0][4] - E)), math.ldexp(rows[0][3], int(2 * (rows[0][4] - E)))
    for m_i, c_i, s_i, q_i, e_i in rows[1:]:
        d = math.ldexp(c_i - c, int(-E))
        s = math.ldexp(s_i, int(e_i - E))
        q = math.ldexp(q_i, int(2 * (e_i - E)))
        S += s + m_i * d
        Q += q + d * (2 * s + m_i * d)
        M += m_i
    dm = S / M
    v = Q / M - dm * dm
    v = 0.0 if v < 0 else v
    var = math.ldexp(v, int(2 * E))
    return c + math.ldexp(dm, int(E)), 1.0 / math.sqrt(var + eps), var


@pytest.mark.parametrize("exps", [False, True])
def test_partials_merge_is_the_spec_formula(lib, exps):
    """gn_partials_merge (the merge kernel's arithmetic) gives the formula's bits, exponents
    included (partials from the CPU's exact scaled path carry e != 0)."""
    rng = np.random.default_rng(60)
    fn = lib.h_partials_merge
    for m in (1, 2, 3, 7, 40):
        rows = np.empty((m, 5))
        rows[:, 0] = rng.integers(1, 500, m)
        rows[:, 1] = 1e4 + rng.standard_normal(m)
        rows[:, 2] = rng.standard_normal(m) * rows[:, 0]
        rows[:, 3] = rng.uniform(0.5, 2, m) * rows[:, 0] + rows[:, 2] ** 2 / rows[:, 0]
        rows[:, 4] = rng.integers(-3, 4, m) if exps else 0
        out = np.empty(3)
        fn(_p(rows), ctypes.c_longlong(m), ctypes.c_double(1e-5), _p(out))
        want = _merge_py([tuple(r) for r in rows], 1e-5)
        assert out.tolist() == list(want), (m, out, want)


def test_partials_merge_matches_the_cpu_core(lib):
    """The same formula as the C core's gn_stats_merge: the same bits (when the core has stages)."""
    stages = pytest.importorskip("gn_native.stages")
    rng = np.random.default_rng(61)
    x = (5e3 + 3 * rng.standard_normal((5, 6, 7, 3))).astype(np.float32)
    part = stages.stats_partial(x, 3)
    mean, rstd, var = stages.stats_merge(part)
    for g in range(3):
        out = np.empty(3)
        rows = np.ascontiguousarray(part[:, g])
        lib.h_partials_merge(_p(rows), ctypes.c_longlong(5), ctypes.c_double(1e-5), _p(out))
        assert out.tolist() == [mean[g], rstd[g], var[g]]


@pytest.mark.parametrize("path,dtype,layout,case", pairwise_params(
    dict(path=["auto", "fused", "split"], dtype=DTYPES, layout=["nchw", "nhwc"],
         case=[pytest.param(c, id=f"{c[0]}g{c[1]}") for c in STAGE_CASES]), full=("dtype", "layout")),
    indirect=["path"])
def test_partial_rows_depend_only_on_their_sample(ex, path, dtype, layout, case):
    """Every slice of the batch gives exactly its rows of the whole batch's partials; the
    fields are {count, shift (the group's first value), sum, sumsq, 0} of x - shift."""
    shape, g = case
    rng = np.random.default_rng(62)
    x = _stage_data(rng, shape, dtype)
    whole = _partials(ex, x, g, layout)
    for a, b in ((0, 1), (1, 3), (3, 4), (0, 4)):
        assert _same_bits(_partials(ex, x[a:b], g, layout), whole[a:b])
    n, c = shape[:2]
    xg = x.astype(np.float64).reshape(n, g, -1)      # the same values in either layout; first: x[n, g*K, 0]
    first = xg[:, :, 0]
    assert np.array_equal(whole[:, :, 0], np.full((n, g), xg.shape[2]))
    assert np.array_equal(whole[:, :, 1], first) and not whole[:, :, 4].any()
    d = xg - first[:, :, None]
    assert np.allclose(whole[:, :, 2], d.sum(2), rtol=1e-12, atol=1e-9 * np.abs(d).sum(2).max())
    assert np.allclose(whole[:, :, 3], (d * d).sum(2), rtol=1e-12)


def test_partial_of_inf_or_nan_has_nan_sumsq(ex):
    x = np.random.default_rng(63).standard_normal((3, 4, 6)).astype(np.float32)
    x[0, 0, 2] = np.inf
    x[1, 3, 0] = np.nan        # the shift of (1, group 1)
    part = _partials(ex, x, 2, "nchw")
    assert np.isnan(part[0, 0, 3]) and np.isnan(part[1, 1, 3])
    assert np.isfinite(np.delete(part.reshape(-1, 5), [0, 3], axis=0)).all()


def _forward_stages_by_hand(ex, x, g, gamma, beta, layout, act=None):
    """The forward stages one call at a time (as gn_native.stages runs them): y, mean64, rstd64."""
    p = _act_plan(x, g, gamma, beta, 1e-5, "batch", layout, act)
    xk = _k(x, p)
    part = ex.empty((p.n, g, 5), np.float64)
    _gpu.run_stats_partial(ex, p, part, xk)
    m64, r64, v64 = (ex.empty((g,), np.float64) for _ in range(3))
    _gpu.run_stats_merge(ex, m64, r64, v64, part, 1e-5)
    y = ex.empty(xk.shape, xk.dtype)
    _gpu.run_normalize_stats(ex, p, y, xk, m64, r64, gamma, beta)
    return _from_kernel(y, p.layout), m64, r64, v64


def _single_forward(ex, x, g, gamma, beta, layout, act=None):
    p = _act_plan(x, g, gamma, beta, 1e-5, "batch", layout, act)
    xk = _k(x, p)
    y = ex.empty(xk.shape, xk.dtype)
    mean, rstd = ex.empty(p.stat_shape, p.stat_dtype), ex.empty(p.stat_shape, p.stat_dtype)
    _gpu.run_forward(ex, p, y, mean, rstd, xk, gamma, beta)
    return _from_kernel(y, p.layout), mean, rstd


_STAGE_GRID = dict(path=["auto", "fused", "split"], dtype=DTYPES, layout=["nchw", "nhwc"],
                   act=[None] + ACTS, case=[pytest.param(c, id=f"{c[0]}g{c[1]}") for c in STAGE_CASES],
                   affine=["channel", "group", "none"])


@pytest.mark.parametrize("path,dtype,layout,act,case,affine", pairwise_params(
    _STAGE_GRID, full=("dtype", "layout")), indirect=["path"])
def test_forward_batch_is_its_stages(ex, path, dtype, layout, act, case, affine):
    shape, g = case
    rng = np.random.default_rng(64)
    x = _stage_data(rng, shape, dtype)
    gamma, beta = _params(rng, affine, shape[1], g, dtype)
    y, mean, rstd = _single_forward(ex, x, g, gamma, beta, layout, act)
    ys, m64, r64, v64 = _forward_stages_by_hand(H.HostExec(ex.lib), x, g, gamma, beta, layout, act)
    assert _same_bits(y, ys)
    sd = V.stat_dtype_for(dtype)
    assert _same_bits(mean, m64.astype(sd)) and _same_bits(rstd, r64.astype(sd))
    mr, vr = R.moments(x.astype(np.float64), g, "batch")
    assert np.allclose(m64, mr, rtol=1e-12, atol=1e-12) and np.allclose(v64, vr, rtol=1e-10)
    assert [k for k, _ in ex.launches if k in ("stats_rows", "partial_fold", "stats_merge")][-1] == "stats_merge"


def _backward_stages_by_hand(ex, x, dy, g, gamma, beta, mean, rstd, layout, act=None):
    """backward_reduce -> backward_apply -> param_grads, each on its own (param_grads recomputes
    its totals): dx, dgamma, dbeta, sums."""
    p = _act_plan(x, g, gamma, beta, 1e-5, "batch", layout, act)
    xk, dyk = _k(x, p), _k(dy, p)
    sums = ex.empty((p.n, p.c, 2), np.float64)
    _gpu.run_backward_reduce(ex, p, sums, dyk, xk, mean, rstd, gamma, beta)
    dx = ex.empty(xk.shape, xk.dtype)
    _gpu.run_backward_apply(ex, p, dx, dyk, xk, mean, rstd, sums, gamma, beta)
    pshape = gamma.shape if gamma is not None else (p.c,)
    dgamma, dbeta = ex.empty(pshape, x.dtype), ex.empty(pshape, x.dtype)
    _gpu.run_param_grads(ex, p, dgamma, dbeta, sums, rstd)
    return _from_kernel(dx, p.layout), dgamma, dbeta, sums


@pytest.mark.parametrize("path,dtype,layout,act,case,affine", pairwise_params(
    _STAGE_GRID, full=("dtype", "layout")), indirect=["path"])
def test_backward_batch_is_its_stages(ex, path, dtype, layout, act, case, affine):
    shape, g = case
    rng = np.random.default_rng(65)
    x = _stage_data(rng, shape, dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    gamma, beta = _params(rng, affine, shape[1], g, dtype)
    _, mean, rstd = _single_forward(ex, x, g, gamma, beta, layout, act)
    single = _run_act_backward(ex, act, x, dy, g, gamma, beta, mean, rstd, "batch", layout)
    *staged, sums = _backward_stages_by_hand(H.HostExec(ex.lib), x, dy, g, gamma, beta, mean, rstd, layout, act)
    for a, b in zip(single, staged):
        assert _same_bits(a, b)
    # the sums: [sum g, sum g (x - mean_F)] per (sample, channel), mean_F the mean in the compute type
    f64 = (lambda a: None if a is None else a.astype(np.float64))
    z = R.forward(x.astype(np.float64), g, f64(gamma), f64(beta), 0.0, "batch", mean=mean,
                  var=1.0 / rstd.astype(np.float64) ** 2)[0]
    gg = dy.astype(np.float64) * act_grad_ref(act or "none", z)
    mean_f = np.repeat(mean.astype(np.float64), shape[1] // g).reshape((1, -1) + (1,) * (x.ndim - 2))
    axes = tuple(range(2, x.ndim))
    want0, want1 = gg.sum(axes), (gg * (x.astype(np.float64) - mean_f)).sum(axes)
    # act'(z) from z in float: off by act'' * (float rounding of z) where act' itself may be ~0
    scale = np.abs(dy.astype(np.float64)).sum(axes) * (1 + np.abs(x.astype(np.float64) - mean_f).max())
    tol = 1e-12 if act is None or dtype == np.float64 else 1e-5     # act'(z): z in float
    assert np.all(np.abs(sums[..., 0] - want0) <= tol * scale) and np.all(np.abs(sums[..., 1] - want1) <= tol * scale)


@pytest.mark.parametrize("dtype", [np.dtype(np.float32), np.dtype(np.float64)], ids=str)
@pytest.mark.parametrize("layout", ["nchw", "nhwc"])
def test_backward_sums_depend_only_on_their_sample(ex, path, dtype, layout):
    rng = np.random.default_rng(66)
    shape, g = (4, 12, 9, 11), 4
    x, dy = _stage_data(rng, shape, dtype), rng.standard_normal(shape).astype(dtype)
    gamma, beta = _params(rng, "channel", 12, g, dtype)
    _, mean, rstd = _single_forward(ex, x, g, gamma, beta, layout, "silu")

    def sums(a, b):
        p = _act_plan(x[a:b], g, gamma, beta, 1e-5, "batch", layout, "silu")
        out = ex.empty((b - a, 12, 2), np.float64)
        _gpu.run_backward_reduce(ex, p, out, _k(dy[a:b], p), _k(x[a:b], p), mean, rstd, gamma, beta)
        return out
    whole = sums(0, 4)
    for a, b in ((0, 1), (1, 3), (3, 4)):
        assert _same_bits(sums(a, b), whole[a:b])


class FakeNcclWorld:
    """P ranks as threads of this process; each rank's communicator is FakeNccl(world, rank)."""

    def __init__(self, size):
        self.size = size
        self.barrier = threading.Barrier(size, timeout=120)
        self.send = [None] * size
        self.calls = []
        self.lock = threading.Lock()


class FakeNccl:
    """A stand-in for cupy.cuda.nccl.NcclCommunicator: allGather copies every rank's send
    buffer (a host array's address here) into each rank's receive buffer, in rank order."""

    def __init__(self, world, rank):
        self.world, self.rank = world, rank

    def size(self):
        return self.world.size

    def rank_id(self):
        return self.rank

    def allGather(self, sendbuf, recvbuf, count, datatype, stream):
        w = self.world
        with w.lock:
            w.calls.append((self.rank, count, datatype, stream))
        w.send[self.rank] = (sendbuf, count)
        w.barrier.wait()
        for r in range(w.size):
            ptr, cnt = w.send[r]
            assert cnt == count, "NCCL's allGather needs the same count on every rank"
            ctypes.memmove(recvbuf + r * count * 8, ptr, count * 8)
        w.barrier.wait()       # no rank reuses its send buffer before every rank has copied it


def _run_ranks(size, fn):
    """fn(rank, comm) on `size` threads; returns their results in rank order (re-raising errors)."""
    world = FakeNcclWorld(size)
    out, errors = [None] * size, []

    def body(r):
        try:
            out[r] = fn(r, FakeNccl(world, r))
        except BaseException as e:   # noqa: BLE001 - re-raised below
            errors.append(e)
            world.barrier.abort()
    threads = [threading.Thread(target=body, args=(r,)) for r in range(size)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not any(t.is_alive() for t in threads), "a rank hangs"
    if errors:
        raise errors[0]
    return out, world


_NCCL_GRID = dict(ranks=[1, 2, 3, 4], dtype=DTYPES, layout=["nchw", "nhwc"], act=[None, "silu", "gelu"],
                  case=[pytest.param(c, id=f"{c[0]}g{c[1]}") for c in [((2, 6, 5, 7), 3), ((1, 8), 4),
                                                                       ((2, 12, 9, 11), 4)]],
                  affine=["channel", "group", "none"])


@pytest.mark.parametrize("ranks,dtype,layout,act,case,affine", pairwise_params(
    _NCCL_GRID, full=("ranks", "dtype")))
def test_nccl_batch_split_over_ranks_gives_the_single_call(lib, monkeypatch, ranks, dtype, layout, act, case,
                                                           affine):
    """P = 1..4 ranks of n samples each (NCCL's allGather: equal counts) through gn_native._nccl's
    orchestration: y, mean, rstd, dx, dgamma and dbeta are the single call's bits on the whole batch."""
    monkeypatch.setattr(G, "SPLIT_MIN_CHUNK", 16)       # several chunks per group / channel: folds run
    monkeypatch.setattr(G, "SPLIT_TARGET_ITEMS", 64)
    monkeypatch.setattr(G, "SPLIT_BLOCK", 32)           # small blocks: quick in the host harness
    (n, *rest), g = case
    rng = np.random.default_rng(67)
    shape = (ranks * n, *rest)
    x = _stage_data(rng, shape, dtype, offset=-40.0)
    dy = rng.standard_normal(shape).astype(dtype)
    gamma, beta = _params(rng, affine, shape[1], g, dtype)
    ex = H.HostExec(lib)
    y, mean, rstd = _single_forward(ex, x, g, gamma, beta, layout, act)
    dx, dgamma, dbeta = _run_act_backward(ex, act, x, dy, g, gamma, beta, mean, rstd, "batch", layout)

    def rank(r, comm):
        e = H.HostExec(lib)
        xs, dys = x[r * n:(r + 1) * n], dy[r * n:(r + 1) * n]
        p = _act_plan(xs, g, gamma, beta, 1e-5, "batch", layout, act)
        xk, dyk = _k(xs, p), _k(dys, p)
        yk = e.empty(xk.shape, xk.dtype)
        m, rs = e.empty(p.stat_shape, p.stat_dtype), e.empty(p.stat_shape, p.stat_dtype)
        _nccl.forward_stages(e, comm, p, yk, m, rs, xk, gamma, beta)
        dxk = e.empty(xk.shape, xk.dtype)
        pshape = gamma.shape if gamma is not None else (p.c,)
        dg, db = e.empty(pshape, dtype), e.empty(pshape, dtype)
        _nccl.backward_stages(e, comm, p, dxk, dg, db, dyk, xk, m, rs, gamma, beta)
        return _from_kernel(yk, p.layout), m, rs, _from_kernel(dxk, p.layout), dg, db

    got, world = _run_ranks(ranks, rank)
    for r, (yr, mr, rr, dxr, dgr, dbr) in enumerate(got):
        sl = slice(r * n, (r + 1) * n)
        assert _same_bits(yr, y[sl]) and _same_bits(mr, mean) and _same_bits(rr, rstd)
        assert _same_bits(dxr, dx[sl]) and _same_bits(dgr, dgamma) and _same_bits(dbr, dbeta)
    # one allGather of the partials and one of the sums per rank, float64, on the executor's stream
    counts = sorted({c for _, c, _, _ in world.calls})
    assert len(world.calls) == 2 * ranks and counts == sorted({n * g * 5, n * shape[1] * 2})
    assert {(d, s) for _, _, d, s in world.calls} == {(8, 0)}


@pytest.mark.parametrize("ranks", [2, 3])
@pytest.mark.parametrize("param_grads", ["global", "local"])
def test_nccl_sample_stats(lib, ranks, param_grads):
    """stats="sample": dx is the single call's without communication; global dgamma/dbeta gather
    the sums and rstd of every sample (the same bits on every rank, the stages' on the whole batch)."""
    rng = np.random.default_rng(68)
    n, g, shape = 2, 3, (2 * ranks, 6, 5, 4)
    x, dy = _stage_data(rng, shape, np.float32), rng.standard_normal(shape).astype(np.float32)
    gamma, beta = _params(rng, "channel", 6, g, np.float32)
    ex = H.HostExec(lib)
    p_all = _act_plan(x, g, gamma, beta, 1e-5, "sample", "nchw", "silu")
    _, mean, rstd, _ = _run_forward(ex, x, g, gamma, beta, 1e-5, "sample", "nchw")
    dx = _run_act_backward(ex, "silu", x, dy, g, gamma, beta, mean, rstd, "sample", "nchw")[0]
    sums = ex.empty((2 * ranks, 6, 2), np.float64)
    _gpu.run_backward_reduce(ex, p_all, sums, dy, x, mean, rstd, gamma, beta)
    want = ex.empty((6,), np.float32), ex.empty((6,), np.float32)
    _gpu.run_param_grads(ex, p_all, *want, sums, rstd.astype(np.float64))

    def rank(r, comm):
        e = H.HostExec(lib)
        sl = slice(r * n, (r + 1) * n)
        p = _act_plan(x[sl], g, gamma, beta, 1e-5, "sample", "nchw", "silu")
        dxk = e.empty(x[sl].shape, np.float32)
        dg, db = e.empty((6,), np.float32), e.empty((6,), np.float32)
        _nccl.backward_stages(e, comm, p, dxk, dg, db, dy[sl].copy(), x[sl].copy(), mean[sl].copy(),
                              rstd[sl].copy(), gamma, beta, param_grads)
        return dxk, dg, db

    got, world = _run_ranks(ranks, rank)
    for r, (dxr, dgr, dbr) in enumerate(got):
        assert _same_bits(dxr, dx[r * n:(r + 1) * n])
        if param_grads == "global":
            assert _same_bits(dgr, want[0]) and _same_bits(dbr, want[1])
    assert len(world.calls) == (2 * ranks if param_grads == "global" else 0)


@pytest.mark.parametrize("layout", ["nchw", "nhwc"])
def test_uneven_splits_through_the_stages(ex, layout):
    """Any split (as MPI's Allgatherv allows; NCCL's allGather needs equal ones): the partials and
    sums of the slices, concatenated in order, give the single call's bits."""
    rng = np.random.default_rng(69)
    shape, g = (7, 12, 9, 11), 4
    x, dy = _stage_data(rng, shape, np.float32), rng.standard_normal(shape).astype(np.float32)
    gamma, beta = _params(rng, "group", 12, g, np.float32)
    y, mean, rstd = _single_forward(ex, x, g, gamma, beta, layout)
    dx, dgamma, dbeta = _run_act_backward(ex, None, x, dy, g, gamma, beta, mean, rstd, "batch", layout)
    for cuts in ((0, 7), (0, 1, 7), (0, 3, 4, 7), (0, 2, 3, 5, 7)):
        parts = [_partials(ex, x[a:b], g, layout) for a, b in zip(cuts, cuts[1:])]
        whole = np.concatenate(parts)
        m64, r64, v64 = (ex.empty((g,), np.float64) for _ in range(3))
        _gpu.run_stats_merge(ex, m64, r64, v64, whole, 1e-5)
        assert _same_bits(m64.astype(np.float32), mean) and _same_bits(r64.astype(np.float32), rstd)
        for a, b in zip(cuts, cuts[1:]):
            p = _plan(x[a:b], g, gamma, beta, 1e-5, "batch", layout)
            yk = ex.empty(_k(x[a:b], p).shape, np.float32)
            _gpu.run_normalize_stats(ex, p, yk, _k(x[a:b], p), m64, r64, gamma, beta)
            assert _same_bits(_from_kernel(yk, p.layout), y[a:b])
        sums = []
        for a, b in zip(cuts, cuts[1:]):
            p = _plan(x[a:b], g, gamma, beta, 1e-5, "batch", layout)
            s = ex.empty((b - a, 12, 2), np.float64)
            _gpu.run_backward_reduce(ex, p, s, _k(dy[a:b], p), _k(x[a:b], p), mean, rstd, gamma, None)
            sums.append(s)
        allsums = np.concatenate(sums)
        for a, b in zip(cuts, cuts[1:]):
            p = _plan(x[a:b], g, gamma, beta, 1e-5, "batch", layout)
            xk = _k(x[a:b], p)
            dxk = ex.empty(xk.shape, np.float32)
            _gpu.run_backward_apply(ex, p, dxk, _k(dy[a:b], p), xk, mean, rstd, allsums, gamma)
            assert _same_bits(_from_kernel(dxk, p.layout), dx[a:b])
        dg, db = ex.empty((g,), np.float32), ex.empty((g,), np.float32)
        _gpu.run_param_grads(ex, _plan(x, g, gamma, beta, 1e-5, "batch", layout), dg, db, allsums, rstd)
        assert _same_bits(dg, dgamma) and _same_bits(db, dbeta)


def test_nccl_module_never_synchronizes_with_the_host():
    """No .get(), no stream or device synchronization, no host copies in the NCCL path."""
    import inspect
    src = inspect.getsource(_nccl) + inspect.getsource(_gpu.run_forward_stages) + inspect.getsource(
        _gpu.run_backward_stages)
    for bad in (".get(", "synchronize", "asnumpy", ".item(", "tolist", "allReduce("):
        assert bad not in src.replace("NOT allReduce", ""), bad


def test_nccl_refuses_what_it_can_check_locally():
    class NoGather:
        def size(self):
            return 1
    with pytest.raises(TypeError, match="NcclCommunicator"):
        _nccl._check_comm(NoGather(), None)
    with pytest.raises(TypeError, match="CuPy"):
        _nccl.group_norm_forward(np.ones((2, 4, 3), np.float32), 2, comm=FakeNccl(FakeNcclWorld(1), 0))
    assert GK.PARTIAL_LEN == 5 and GK.DSUM_LEN == 2


@pytest.mark.parametrize("channel_axis", [1, -1])
@pytest.mark.parametrize("out", [False, True])
def test_nccl_public_functions_on_the_harness(lib, monkeypatch, channel_axis, out):
    """gn_native._nccl.group_norm_forward/backward end to end (checks, layout, out=, per-group
    weights' gradients) with the harness standing in for the device: 2 ranks give the single call's bits."""
    from gn_native import _api
    ex = H.HostExec(lib)
    monkeypatch.setattr(_nccl, "_require_cupy", lambda kind, what: None)
    monkeypatch.setattr(_api, "_backend", lambda kind: (np, _gpu))
    monkeypatch.setattr(_gpu, "_EXEC", ex)
    rng = np.random.default_rng(70)
    shape, g, n = (4, 6, 5, 3), 3, 2
    x, dy = _stage_data(rng, shape, np.float32), rng.standard_normal(shape).astype(np.float32)
    gamma, beta = _params(rng, "group", 6, g, np.float32)
    layout = "nchw" if channel_axis == 1 else "nhwc"
    y, mean, rstd = _single_forward(H.HostExec(lib), x, g, gamma, beta, layout, "silu")
    dx, dgamma, dbeta = _run_act_backward(H.HostExec(lib), "silu", x, dy, g, gamma, beta, mean, rstd, "batch",
                                          layout)
    user = (lambda a: a) if channel_axis == 1 else (lambda a: np.ascontiguousarray(np.moveaxis(a, 1, -1)))

    def rank(r, comm):
        xs, dys = user(x[r * n:(r + 1) * n]), user(dy[r * n:(r + 1) * n])
        kw = dict(comm=comm, channel_axis=channel_axis, activation="silu")
        yo = np.empty_like(xs) if out else None
        ys, ms, rs = _nccl.group_norm_forward(xs, g, gamma, beta, out=yo, **kw)
        assert yo is None or ys is yo
        dxs, dgs, dbs = _nccl.group_norm_backward(dys, xs, ms, rs, g, gamma, beta, **kw)
        return ys, ms, rs, dxs, dgs, dbs

    got, world = _run_ranks(2, rank)
    for r, (ys, ms, rs, dxs, dgs, dbs) in enumerate(got):
        sl = slice(r * n, (r + 1) * n)
        assert _same_bits(ys, user(y[sl])) and _same_bits(ms, mean) and _same_bits(rs, rstd)
        assert _same_bits(dxs, user(dx[sl])) and _same_bits(dgs, dgamma) and _same_bits(dbs, dbeta)
        assert dgs.shape == (g,)
    assert len(world.calls) == 4
