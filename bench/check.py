"""How close to the float64 reference a result must be, per dtype.

float32/float64 outputs: the largest error, relative to the array's typical
size (its root mean square, at least 1), within a fixed bound -- on
normalized outputs (rms ~1) that is an absolute bound; on sums such as
dgamma it is a relative one.  float16/bfloat16 outputs: every element within two
units in the last place of the exact value (rounding is half an ulp; the
rest is slack for float32 arithmetic), with the ulp taken no smaller than
that of scale/256 so values that cancel to near zero are not held to a
precision the stored inputs do not have.
"""
import numpy as np

NORMWISE_TOL = {"float32": 1e-4, "float64": 1e-10}
MANTISSA_BITS = {"bfloat16": 7, "float16": 10}
ULPS = 2.0


def _ulp(v, bits):
    _, e = np.frexp(v)
    return np.ldexp(1.0, e - 1 - bits)


def error(got, ref):
    """Worst |got - ref| over max(1, rms(ref)), in float64; inf on NaN/Inf."""
    g = np.asarray(got, dtype=np.float64)
    if not np.all(np.isfinite(g)):
        return float("inf")
    scale = max(1.0, float(np.sqrt(np.mean(np.square(ref)))) if ref.size else 1.0)
    return float(np.max(np.abs(g - ref), initial=0.0)) / scale


def compare(got, ref, what):
    """None when `got` is close enough to the float64 `ref`, else a one-line reason."""
    got = np.asarray(got)
    if got.shape != ref.shape:
        return f"{what}: shape {got.shape}, expected {ref.shape}"
    name = got.dtype.name
    if name in MANTISSA_BITS:
        g = got.astype(np.float64)
        if not np.all(np.isfinite(g)):
            return f"{what}: non-finite values"
        bits = MANTISSA_BITS[name]
        scale = float(np.max(np.abs(ref), initial=0.0))
        floor = scale / 256.0 if scale > 0 else np.finfo(np.float64).tiny
        bound = ULPS * _ulp(np.maximum(np.abs(ref), floor), bits)
        excess = np.abs(g - ref) / bound
        if excess.size and np.max(excess) > 1.0:
            at = np.unravel_index(int(np.argmax(excess)), excess.shape)
            return (f"{what}: {excess[at] * ULPS:.1f} ulp off at {tuple(map(int, at))} "
                    f"(got {float(g[at]):.6g}, expected {float(ref[at]):.6g}; "
                    f"allowed {ULPS:g} ulp)")
        return None
    tol = NORMWISE_TOL.get(name, NORMWISE_TOL["float32"])
    err = error(got, ref)
    if err > tol:
        return f"{what}: error {err:.3g} (over max(1, rms of the reference)), allowed {tol:g}"
    return None


def bitwise_equal(a, b):
    """Same shape and the same bits (NaNs included) in every element."""
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    if a.dtype.itemsize not in (2, 4, 8):
        return bool(np.array_equal(a, b))
    u = {2: np.uint16, 4: np.uint32, 8: np.uint64}[a.dtype.itemsize]
    return bool(np.array_equal(a.view(u), b.view(u)))


def compare_all(pairs):
    """Reasons for every (got, ref, what) that fails; empty when all pass."""
    return [r for r in (compare(g, ref, w) for g, ref, w in pairs) if r]
