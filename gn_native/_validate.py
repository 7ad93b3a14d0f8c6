"""Argument checks shared by every entry point and both backends.

Everything a call can get wrong is refused here, before any work and before
anything is written, with the argument named in the message.  The result of
a successful check is a `Plan`: the sizes and options the kernels need.
Nothing in this module touches array data; it only reads shapes, dtypes and
flags, so it serves NumPy and CuPy arrays alike.
"""
import math
import operator

import numpy as np

try:  # bfloat16 is optional
    import ml_dtypes as _ml_dtypes
    BFLOAT16 = np.dtype(_ml_dtypes.bfloat16)
except ImportError:  # pragma: no cover - depends on the environment
    BFLOAT16 = None

STATS = ("sample", "batch")
FLOAT_DTYPES = tuple(np.dtype(t) for t in (np.float16, np.float32, np.float64))


class Plan:
    """What the kernels need to know about one call (all sizes are ints)."""

    __slots__ = ("shape", "n", "c", "spatial", "groups", "eps", "stats", "affine", "layout",
                 "channel_axis", "dtype", "stat_dtype")

    def __init__(self, shape, n, c, spatial, groups, eps, stats, affine, layout,
                 channel_axis, dtype, stat_dtype):
        self.shape = shape              # logical shape of x, as the user passed it
        self.n, self.c, self.spatial, self.groups = n, c, spatial, groups
        self.eps = eps
        self.stats = stats              # "sample" or "batch"
        self.affine = affine            # "none", "channel" or "group" (from gamma's length)
        self.layout = layout            # memory layout the kernel runs in: "nchw" or "nhwc"
        self.channel_axis = channel_axis  # normalized: 1 or ndim - 1
        self.dtype = dtype
        self.stat_dtype = stat_dtype

    @property
    def k(self):
        return self.c // self.groups

    @property
    def stat_shape(self):
        return (self.groups,) if self.stats == "batch" else (self.n, self.groups)

    @property
    def size(self):
        return self.n * self.c * self.spatial

    def __repr__(self):
        return "Plan(" + ", ".join(f"{k}={getattr(self, k)!r}" for k in self.__slots__) + ")"


def array_module_name(*arrays):
    """'cupy' if the array arguments are CuPy arrays, else 'numpy'.

    Mixing the two is a TypeError: we never move data between devices
    behind the caller's back.
    """
    kinds = set()
    for a in arrays:
        if a is None:
            continue
        kinds.add("cupy" if type(a).__module__.startswith("cupy") else "numpy")
    if len(kinds) > 1:
        raise TypeError("gn_native: arguments mix CuPy (GPU) and NumPy/CPU arrays; "
                        "put them all on one device")
    return kinds.pop() if kinds else "numpy"


def as_cpu_array(a, name):
    """Turn an array-like (list, NumPy array, DLPack CPU tensor) into an ndarray."""
    if isinstance(a, np.ndarray):
        return a
    check_given(a, name)
    if hasattr(a, "__dlpack__") and not hasattr(a, "__array__"):
        try:
            return np.from_dlpack(a)
        except Exception as e:  # a GPU tensor, or an unsupported dtype
            raise TypeError(f"{name}: cannot read {type(a).__name__} through DLPack "
                            f"on the CPU ({e})") from None
    try:
        arr = np.asarray(a)
    except Exception as e:
        raise TypeError(f"{name} must be array-like, got {type(a).__name__} ({e})") from None
    return arr


_STAT_DTYPE = {dt: np.dtype(np.float64 if dt == np.float64 else np.float32)
               for dt in FLOAT_DTYPES + ((BFLOAT16,) if BFLOAT16 is not None else ())}


def check_dtype(dtype, name):
    if dtype in _STAT_DTYPE:
        return dtype
    dt = np.dtype(dtype)
    if dt in _STAT_DTYPE:
        return dt
    raise TypeError(f"{name} has dtype {dt}; gn_native supports float16, bfloat16 "
                    "(ml_dtypes), float32 and float64")


def stat_dtype_for(dtype):
    return _STAT_DTYPE[dtype]


def check_groups(n_groups, name="n_groups"):
    if type(n_groups) is int and n_groups > 0:
        return n_groups
    if isinstance(n_groups, (bool, np.bool_)):
        raise ValueError(f"{name} must be a positive int, got {n_groups!r}")
    try:
        g = operator.index(n_groups)
    except TypeError:
        raise ValueError(f"{name} must be a positive int, got {n_groups!r}") from None
    if g <= 0:
        raise ValueError(f"{name} must be a positive int, got {g}")
    return g


def check_eps(eps):
    if type(eps) is float and 0.0 < eps < math.inf:
        return eps
    if isinstance(eps, (str, bytes)):
        raise TypeError(f"eps must be a positive finite number, got {eps!r}")
    try:
        e = float(eps)
    except (TypeError, ValueError):
        raise ValueError(f"eps must be a positive finite number, got {eps!r}") from None
    if not (e > 0.0 and math.isfinite(e)):
        raise ValueError(f"eps must be a positive finite number, got {eps!r}")
    return e


def check_stats(stats):
    if stats not in STATS:
        raise ValueError(f"stats must be 'sample' or 'batch', got {stats!r}")
    return stats


def check_channel_axis(channel_axis, ndim):
    if channel_axis == 1 and type(channel_axis) is int:
        return 1
    if isinstance(channel_axis, (bool, np.bool_)) or not isinstance(channel_axis, (int, np.integer)):
        raise ValueError(f"channel_axis must be 1 or -1, got {channel_axis!r}")
    ax = int(channel_axis)
    if ax == 1:
        return 1
    if ax == -1 or ax == ndim - 1:
        return ndim - 1
    raise ValueError(f"channel_axis must be 1 or -1 (channels first or last), got {channel_axis!r}")


def split_shape(shape, channel_axis):
    """(N, C, spatial) of a shape whose channels sit at `channel_axis`."""
    n, c = shape[0], shape[channel_axis]
    spatial = 1
    for i, s in enumerate(shape[1:], start=1):
        if i != channel_axis:
            spatial *= s
    return n, c, spatial


def check_affine_param(p, name, c, g, dtype):
    """Kind of affine parameter ('channel'/'group') given its shape; None stays None."""
    if p is None:
        return None
    if p.ndim != 1 or p.shape[0] not in (c, g):
        raise ValueError(f"{name} must have shape ({c},) (per channel) or ({g},) (per group), "
                         f"got {tuple(p.shape)}")
    if p.dtype != dtype:
        raise TypeError(f"{name} has dtype {p.dtype}, expected {dtype} (the dtype of x)")
    return "channel" if p.shape[0] == c else "group"


def plan(x, n_groups, gamma=None, beta=None, eps=1e-5, stats="sample", channel_axis=1,
         layout="nchw", xname="x"):
    """Check x and the options of a call; `x` is already an array (NumPy or CuPy)."""
    dtype = check_dtype(x.dtype, xname)
    if x.ndim < 2:
        raise ValueError(f"{xname} must have at least 2 dimensions (N, C, ...), got shape {tuple(x.shape)}")
    g = check_groups(n_groups)
    e = check_eps(eps)
    st = check_stats(stats)
    ax = check_channel_axis(channel_axis, x.ndim)
    n, c, spatial = split_shape(tuple(x.shape), ax)
    if c % g != 0 or g > max(c, 1):   # (every g divides C = 0: only 1 is meaningful)
        raise ValueError(f"n_groups={g} must divide the number of channels C={c}"
                         + (" (with C = 0, n_groups must be 1)" if c == 0 else ""))
    kg = check_affine_param(gamma, "gamma", c, g, dtype)
    kb = check_affine_param(beta, "beta", c, g, dtype)
    # one per channel and the other per group: the kernel runs per channel and
    # the caller expands the per-group one (see expand_affine)
    affine = "channel" if "channel" in (kg, kb) else (kg or kb or "none")
    if c == g and affine == "group":
        affine = "channel"
    return Plan(tuple(x.shape), n, c, spatial, g, e, st, affine, layout, ax, dtype,
                stat_dtype_for(dtype))


def check_given(a, name):
    """An array argument that has no default: None is a TypeError naming it."""
    if a is None:
        raise TypeError(f"{name} must be an array, got None")


def check_like(a, name, p, shape=None):
    """`a` must be an array of plan's dtype and the given shape (x's by default)."""
    shape = p.shape if shape is None else shape
    if tuple(a.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {tuple(a.shape)}")
    check_dtype(a.dtype, name)
    if a.dtype != p.dtype:
        raise TypeError(f"{name} has dtype {a.dtype}, expected {p.dtype} (the dtype of x)")


def check_stat(a, name, p):
    """mean / rstd / var given to a call: shape of the plan's statistics, float dtype."""
    if tuple(a.shape) != p.stat_shape:
        raise ValueError(f"{name} must have shape {p.stat_shape} for stats={p.stats!r}, "
                         f"got {tuple(a.shape)}")
    check_dtype(a.dtype, name)


def check_out(out, p):
    """out= must be a writable array of x's shape and dtype."""
    check_like(out, "out", p)
    flags = getattr(out, "flags", None)
    if flags is not None and not flags.writeable:
        raise ValueError("out must be writable (got a read-only array)")


def with_layout(p, layout):
    if p.layout == layout:
        return p
    return Plan(p.shape, p.n, p.c, p.spatial, p.groups, p.eps, p.stats, p.affine, layout,
                p.channel_axis, p.dtype, p.stat_dtype)


def expand_affine(xp, p, a):
    """A per-group gamma/beta repeated per channel when the plan runs per channel."""
    if a is not None and p.affine == "channel" and a.shape[0] != p.c:
        return xp.repeat(a, p.k)
    return a
