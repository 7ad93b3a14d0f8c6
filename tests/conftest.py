"""Shared helpers for the CPU test suite: dtypes, random data, per-dtype tolerances.

Tolerances (the spec's Accuracy section, against the float64 reference of
tests/reference.py computed from the same input values):

- forward y, float64: 1e-12 absolute + 1e-12 relative; float32: 1e-5 + 1e-5.
- backward (dx, dgamma, dbeta): 1e-4 relative (float32) / 1e-10 (float64),
  plus 1e-5 / 1e-10 of the summed magnitudes of the terms that make each
  result (reference.backward_magnitudes): gradients cancel heavily, so
  rounding errors scale with the terms, not with the result.
- float16, bfloat16: the exact result rounded to the dtype, plus one ulp of
  the dtype.  A float32 computation cannot resolve anything smaller than
  float32 rounding of the terms it adds, so where a result is tiny against
  its terms (cancellation) a slack of a few float32 ulps of the terms is
  allowed on top (2**-21 of max|y| forward, 1e-5 of the term magnitudes
  backward); it only matters for results well below the dtype's ulp at 1.
- mean/rstd: 1e-6 relative (float32 statistics) / 1e-12 (float64), the
  mean's error measured against |mean| + std.
"""
import numpy as np
import pytest

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


def _half_ulp_tolerance(ref, dtype):
    """|round(ref) - ref| + ulp(round(ref)) for a 16-bit float dtype."""
    r = ref.astype(dtype)
    mag = np.abs(r)
    nxt = (mag.view(np.uint16) + np.uint16(1)).view(dtype)
    ulp = nxt.astype(np.float64) - mag.astype(np.float64)
    return np.abs(r.astype(np.float64) - ref) + ulp


# (rtol, atol as a fraction of the terms' scale) for float32 and float64; see module doc.
_TOLS = {
    "forward": {F64: (1e-12, 1e-12), F32: (1e-5, 1e-5)},
    "backward": {F64: (1e-10, 1e-10), F32: (1e-4, 1e-5)},
}
# slack (fraction of the terms' scale) on top of "rounding + 1 ulp" for 16-bit dtypes
_HALF_SLACK = {"forward": 2.0 ** -21, "backward": 1e-5}


def tolerance(ref, dtype, kind="forward", scale=None):
    """Elementwise allowed |actual - ref| for a result of `dtype`.

    `scale` is the size of the terms that make the result (elementwise or
    scalar; reference.backward_magnitudes for gradients).  By default it is
    1 for float32/float64 forward results (absolute atol) and max|ref| otherwise.
    """
    ref = np.asarray(ref, dtype=np.float64)
    dtype = np.dtype(dtype)
    max_ref = float(np.max(np.abs(ref), initial=0.0)) if ref.size else 0.0
    if dtype in (F32, F64):
        rtol, atol = _TOLS[kind][dtype]
        # forward outputs are O(1) by construction: absolute atol unless told otherwise
        s = (1.0 if kind == "forward" else max_ref) if scale is None else scale
        return rtol * np.abs(ref) + atol * np.asarray(s)
    s = max_ref if scale is None else scale
    return _half_ulp_tolerance(ref, dtype) + _HALF_SLACK[kind] * np.asarray(s)


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
    rtol = 1e-12 if sd == F64 else 1e-6
    # the mean's error is judged against the group's spread as well as its size
    std = 1.0 / np.asarray(ref_rstd, np.float64)
    m_tol = rtol * (np.abs(ref_mean) + std)
    m_err = np.abs(mean.astype(np.float64) - ref_mean)
    assert np.all(m_err <= m_tol), (
        f"mean: max error {np.max(m_err):.3g} (max tolerance {np.max(m_tol):.3g})")
    r_err = np.abs(rstd.astype(np.float64) - ref_rstd)
    assert np.all(r_err <= rtol * np.abs(ref_rstd)), (
        f"rstd: max relative error {np.max(r_err / np.abs(ref_rstd)):.3g} > {rtol}")


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
