"""Shared helpers for the CPU test suite: dtypes, random data, assertions.

The tolerances (the spec's Accuracy section) are reference.tolerance and
reference.stats_tolerance, next to the float64 reference they apply to:
bench/run.py checks its rows with the same two functions.
"""
import numpy as np
import pytest

from reference import stats_tolerance, tolerance

try:
    import ml_dtypes
    BF16 = np.dtype(ml_dtypes.bfloat16)
except ImportError:  # pragma: no cover - ml_dtypes is in the test extra
    BF16 = None

F16, F32, F64 = np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64)
DTYPES = [F16, F32, F64] + ([BF16] if BF16 is not None else [])
HALF_DTYPES = [F16] + ([BF16] if BF16 is not None else [])
LAYOUTS = ["nchw", "nhwc"]
STATS = ["sample", "batch"]
AFFINES = ["none", "channel", "group"]


def dtype_id(dt):
    return np.dtype(dt).name


def dtype_params(dtypes=None):
    return [pytest.param(d, id=dtype_id(d)) for d in (DTYPES if dtypes is None else dtypes)]


def stat_dtype(dt):
    return F64 if np.dtype(dt) == F64 else F32


def channel_axis(layout):
    return 1 if layout == "nchw" else -1


def physical_shape(shape, layout):
    """The array shape for a logical (N, C, *spatial) shape in the given layout."""
    if layout == "nhwc" and len(shape) > 2:
        return (shape[0],) + tuple(shape[2:]) + (shape[1],)
    return tuple(shape)


def make_data(shape, dtype, seed, loc=0.0, scale=1.0):
    """Normal random data rounded to `dtype` (values are then exact in float64)."""
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(shape) * scale + loc).astype(dtype)


def make_affine(kind, c, g, dtype, seed):
    """(gamma, beta) for affine kind 'none' / 'channel' / 'group'."""
    if kind == "none":
        return None, None
    rng = np.random.default_rng(seed + 1000)
    m = c if kind == "channel" else g
    gamma = rng.uniform(0.5, 1.5, m).astype(dtype)
    beta = rng.normal(0.0, 0.5, m).astype(dtype)
    return gamma, beta


def assert_close(actual, ref, dtype=None, kind="forward", name="y", scale=None):
    """actual (any float dtype) against the float64 reference, with the tolerance of `dtype`."""
    actual = np.asarray(actual)
    dtype = actual.dtype if dtype is None else np.dtype(dtype)
    ref = np.asarray(ref, dtype=np.float64)
    assert actual.shape == ref.shape, f"{name}: shape {actual.shape} != reference {ref.shape}"
    a = actual.astype(np.float64)
    err = np.abs(a - ref)
    tol = tolerance(ref, dtype, kind, scale)
    bad = ~(err <= tol)  # NaN counts as bad
    if bad.any():
        ratio = np.where(bad, np.nan_to_num(err, nan=np.inf) / np.maximum(tol, 1e-300), 0)
        i = np.unravel_index(np.argmax(ratio), bad.shape)
        raise AssertionError(
            f"{name} ({dtype.name}, {kind}): {int(bad.sum())}/{bad.size} values out of tolerance; "
            f"worst at {tuple(int(j) for j in i)}: got {a[i]!r}, reference {ref[i]!r}, "
            f"error {err[i]:.3g} > tolerance {tol[i]:.3g}; max error {np.nanmax(err):.3g}")


def assert_stats_close(mean, rstd, ref_mean, ref_rstd, x_dtype):
    """mean/rstd of a call on x_dtype data against the reference (dtype, then values)."""
    sd = stat_dtype(x_dtype)
    assert mean.dtype == sd, f"mean dtype {mean.dtype}, expected {sd}"
    assert rstd.dtype == sd, f"rstd dtype {rstd.dtype}, expected {sd}"
    m_tol, r_tol = stats_tolerance(ref_mean, ref_rstd, sd)
    m_err = np.abs(mean.astype(np.float64) - ref_mean)
    assert np.all(m_err <= m_tol), (
        f"mean: max error {np.max(m_err):.3g} (max tolerance {np.max(m_tol):.3g})")
    r_err = np.abs(rstd.astype(np.float64) - ref_rstd)
    assert np.all(r_err <= r_tol), (
        f"rstd: max relative error {np.max(r_err / np.abs(ref_rstd)):.3g} "
        f"(max tolerance {np.max(r_tol / np.abs(ref_rstd)):.3g})")


def assert_grads_close(got, dy, x, mean, rstd, n_groups, gamma=None, stats="sample",
                       channel_axis=1, dtype=None):
    """(dx, dgamma, dbeta) against reference.backward, scaled by the terms' magnitudes."""
    import reference as ref
    want = ref.backward(dy, x, mean, rstd, n_groups, gamma, stats, channel_axis)
    mags = ref.backward_magnitudes(dy, x, mean, rstd, n_groups, gamma, stats, channel_axis)
    dtype = np.asarray(got[0]).dtype if dtype is None else dtype
    for name, a, w, m in zip(("dx", "dgamma", "dbeta"), got, want, mags):
        if a is not None:
            assert_close(a, w, dtype, "backward", name, scale=m)


def bits(a):
    """Raw bytes of an array's values (in logical C order), for bit-for-bit comparisons."""
    return np.ascontiguousarray(a).tobytes()


def assert_bit_identical(a, b, name="y"):
    assert a.shape == b.shape and a.dtype == b.dtype, (
        f"{name}: {a.shape}/{a.dtype} vs {b.shape}/{b.dtype}")
    if bits(a) != bits(b):
        ua = np.ascontiguousarray(a).view(np.uint8).reshape(-1, a.dtype.itemsize)
        ub = np.ascontiguousarray(b).view(np.uint8).reshape(-1, b.dtype.itemsize)
        diff = np.any(ua != ub, axis=1)
        raise AssertionError(f"{name}: {int(diff.sum())}/{diff.size} values differ in their bits "
                             f"(first at flat index {int(np.argmax(diff))})")


def load_cbuild():
    """tests/c/cbuild.py, the C build helpers (tests/ is not a package), loaded once."""
    import importlib.util
    import sys
    from pathlib import Path
    if "gn_cbuild" not in sys.modules:
        path = Path(__file__).resolve().parent / "c" / "cbuild.py"
        spec = importlib.util.spec_from_file_location("gn_cbuild", path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        sys.modules["gn_cbuild"] = mod
    return sys.modules["gn_cbuild"]
