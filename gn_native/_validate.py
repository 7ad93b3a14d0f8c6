"""Every argument rule of gn_native, in one place.

The functions (`gn_native._api`), the layer (`gn_native.layer`) and both
backends take their checks from here; the Cython fast path
(`_cpu.forward_fast`) only recognizes calls that `plan` accepts unchanged
and leaves every other call to it.

The policy is SPEC "Errors" (scikit-learn's rule):

- every bad argument is refused before any work and before anything is
  written (to `out` or to a layer's state), with a message that names the
  argument and what was expected;
- a value of the wrong type is a `TypeError`: a float, str, bool or None
  `n_groups`; a str or None `eps`; a non-str `stats`; a non-int
  `channel_axis`; an unsupported dtype (including the object, string, int or
  bool arrays `np.asarray` makes of bad array-likes); None for an array
  without a default; mixed NumPy/CuPy arrays;
- a value of the right type that is out of range is a `ValueError`: ndim < 2,
  `C % n_groups`, `n_groups <= 0` or huge, gamma/beta of another length, dy
  or out not shaped as x, a read-only out, `eps <= 0` or not finite, an
  unknown `stats` or `channel_axis`;
- never `OverflowError`, `AttributeError` or a crash: Python ints are
  compared as Python ints before anything converts them to C.

A successful check returns a frozen `Plan`: the sizes and options the
kernels need, with layout/stats/affine as `Code`s that compare equal to
their names ("nchw", "batch", ...) and carry the C header's enum value
(`.code`, taken from `gn_native.capi` through `_cpu`).  Nothing in this
module touches array data; it reads shapes, dtypes and flags only, so it
serves NumPy and CuPy arrays alike.
"""
import dataclasses
import functools
import math
import numbers
import operator
import sys

import numpy as np

from . import _cpu, _dtypes, _interop

STATS = ("sample", "batch")


class Code(str):
    """An option's name ("nhwc") carrying its value in the C header (`.code`)."""

    def __new__(cls, name, code):
        self = super().__new__(cls, name)
        self.code = int(code)
        return self

    def __reduce__(self):
        return Code, (str(self), self.code)


LAYOUTS = {c: c for c in (Code("nchw", _cpu.LAYOUT_NCHW), Code("nhwc", _cpu.LAYOUT_NHWC))}
STATS_CODES = {c: c for c in (Code("sample", _cpu.STATS_SAMPLE),
                              Code("batch", _cpu.STATS_BATCH))}
AFFINES = {c: c for c in (Code("none", _cpu.AFFINE_NONE),
                          Code("channel", _cpu.AFFINE_CHANNEL),
                          Code("group", _cpu.AFFINE_GROUP))}
# activation= names (None is "none"), with gn_native.h's gn_activation values
ACTIVATIONS = {c: c for c in (Code(name, v) for name, v in _cpu.ACT_CODES.items())}
# add= shapes: x's ("full"), (N, C) ("nc") or (C,) ("c"), with gn_add_shape's values
ADD_SHAPES = {c: c for c in (Code("full", _cpu.ADD_FULL), Code("nc", _cpu.ADD_NC),
                             Code("c", _cpu.ADD_C))}


@dataclasses.dataclass(frozen=True)
class Plan:
    """What the kernels need to know about one call (all sizes are Python ints)."""

    __slots__ = ("shape", "n", "c", "spatial", "groups", "eps", "stats", "affine", "layout",
                 "channel_axis", "dtype", "stat_dtype", "activation")
    shape: tuple          # logical shape of x, as the user passed it
    n: int
    c: int
    spatial: int
    groups: int
    eps: float
    stats: Code           # "sample" or "batch"
    affine: Code          # "none", "channel" or "group" (from gamma's length)
    layout: Code          # memory layout the kernel runs in: "nchw" or "nhwc"
    channel_axis: int     # normalized: 1 or ndim - 1
    dtype: np.dtype
    stat_dtype: np.dtype
    activation: Code      # "none", "silu", "gelu", "gelu_tanh" or "relu"

    @property
    def k(self):
        return self.c // self.groups

    @property
    def stat_shape(self):
        return (self.groups,) if self.stats == "batch" else (self.n, self.groups)

    @property
    def size(self):
        return self.n * self.c * self.spatial


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


def check_given(a, name):
    """An array argument that has no default: None is a TypeError naming it."""
    if a is None:
        raise TypeError(f"{name} must be an array, got None")


def as_cpu_array(a, name):
    """Turn an array-like (list, NumPy array, DLPack CPU tensor) into an ndarray."""
    if isinstance(a, np.ndarray):
        return a
    check_given(a, name)
    if _interop.framework(a) is not None:    # torch/JAX: their memory, bfloat16 included
        return _interop.to_numpy(a, name)
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


def check_dtype(dtype, name):
    """The NumPy dtype of a data array (one of gn_native._dtypes.AVAILABLE)."""
    if dtype in _dtypes.STAT:
        return dtype
    try:
        dt = np.dtype(dtype)
    except TypeError:
        if str(dtype) == "bfloat16":
            raise TypeError(f'{name}: bfloat16 needs ml_dtypes: pip install "gn_native[bf16]"'
                            ) from None
        raise TypeError(f"{name}: {dtype!r} is not a dtype; gn_native supports "
                        f"{_dtypes.supported_names()}") from None
    if dt in _dtypes.STAT:
        return dt
    why = ""
    if dt.kind in "iub":     # as torch, which refuses integer input to group_norm too
        why = " (integer and bool data are refused, as torch refuses them: convert first, " \
              "e.g. x.astype(np.float32))"
    raise TypeError(f"{name} has dtype {dt}; gn_native supports {_dtypes.supported_names()}"
                    + why)


def stat_dtype_for(dtype):
    """The dtype of mean, rstd and var for data of `dtype` (SPEC: float64 for
    float64 data, float32 otherwise)."""
    return _dtypes.STAT[dtype]


def check_groups(n_groups, name="n_groups"):
    """A positive int (any integer type but bool); a float is a TypeError."""
    if type(n_groups) is int and n_groups > 0:
        return n_groups
    if isinstance(n_groups, (bool, np.bool_)):
        raise TypeError(f"{name} must be a positive int, got {n_groups!r}")
    try:
        g = operator.index(n_groups)
    except TypeError:
        raise TypeError(f"{name} must be a positive int, got {type(n_groups).__name__} "
                        f"{n_groups!r}") from None
    if g <= 0:
        raise ValueError(f"{name} must be a positive int, got {g}")
    return g


def check_eps(eps):
    """A positive finite real number; a str or None is a TypeError."""
    if type(eps) is float and 0.0 < eps < math.inf:
        return eps
    if isinstance(eps, (str, bytes)) or eps is None:
        raise TypeError(f"eps must be a positive finite number, got {eps!r}")
    try:
        e = float(eps)
    except (TypeError, ValueError):
        raise TypeError(f"eps must be a positive finite number, got {type(eps).__name__} "
                        f"{eps!r}") from None
    except OverflowError:   # an int too large for a float
        raise ValueError(f"eps must be a positive finite number, got {eps!r}") from None
    if not (e > 0.0 and math.isfinite(e)):
        raise ValueError(f"eps must be a positive finite number, got {eps!r}")
    return e


def check_stats(stats):
    """'sample' or 'batch' (as a Code); a non-str is a TypeError."""
    if not isinstance(stats, str):
        raise TypeError(f"stats must be 'sample' or 'batch', got {type(stats).__name__} {stats!r}")
    try:
        return STATS_CODES[stats]
    except KeyError:
        raise ValueError(f"stats must be 'sample' or 'batch', got {stats!r}") from None


def check_channel_axis_type(channel_axis):
    """An int (any integer type but bool), before the number of dimensions is known."""
    if type(channel_axis) is int:
        return channel_axis
    if isinstance(channel_axis, (bool, np.bool_)) or not isinstance(channel_axis,
                                                                    (int, np.integer)):
        raise TypeError(f"channel_axis must be an int (1 or -1), got "
                        f"{type(channel_axis).__name__} {channel_axis!r}")
    return int(channel_axis)


def check_channel_axis(channel_axis, ndim):
    """1 or ndim - 1 (channels first or last; -1 counts as ndim - 1)."""
    if channel_axis == 1 and type(channel_axis) is int:
        return 1
    ax = check_channel_axis_type(channel_axis)
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
    if p.dtype != dtype:     # any float dtype: rounded to x's (see expand_affine)
        check_dtype(p.dtype, name)
    return "channel" if p.shape[0] == c else "group"





def check_activation(activation):
    """None or one of the activation names, as its Code."""
    if activation is None:
        return ACTIVATIONS["none"]
    valid = "None, " + ", ".join(repr(str(a)) for a in ACTIVATIONS if a != "none")
    if not isinstance(activation, str):
        raise TypeError(f"activation must be {valid}; got {activation!r}")
    try:
        return ACTIVATIONS[activation]
    except KeyError:
        raise ValueError(f"activation must be {valid}; got {activation!r}") from None


def plan(x, n_groups, gamma=None, beta=None, eps=1e-5, stats="sample", channel_axis=1,
         layout="nchw", xname="x", activation=None):
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
    act = check_activation(activation)
    return _plan(tuple(x.shape), n, c, spatial, g, e, st, affine, layout, ax, dtype, act)


@functools.lru_cache(maxsize=256)
def _plan(shape, n, c, spatial, g, eps, stats, affine, layout, ax, dtype, activation):
    """Plans are immutable: a training loop's repeated calls share one (and skip
    the frozen dataclass's slower construction)."""
    return Plan(shape, n, c, spatial, g, eps, stats, AFFINES[affine], LAYOUTS[layout], ax,
                dtype, stat_dtype_for(dtype), activation)


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


def torch_names(*pairs, required=None):
    """Arguments given by our name or by torch's: (ours, theirs, value, torch's value)
    pairs, each given once, as a list of values.  required: the call's name, when
    every argument must be given."""
    out = []
    for ours, theirs, a, b in pairs:
        if a is not None and b is not None:
            raise TypeError(f"got both {ours} and {theirs} (torch's name for it); give one")
        if required and a is None and b is None:
            raise TypeError(f"{required} missing {ours} (or {theirs})")
        out.append(a if b is None else b)
    return out


def check_add(add, p):
    """add= of a forward call: x's shape, (N, C) or (C,), and x's dtype; its shape's Code."""
    shapes = {(p.c,): "c", (p.n, p.c): "nc", tuple(p.shape): "full"}
    kind = shapes.get(tuple(add.shape))
    if kind is None:
        raise ValueError(f"add must have x's shape {tuple(p.shape)}, (N, C) = {(p.n, p.c)} "
                         f"or (C,) = ({p.c},), got {tuple(add.shape)}")
    check_dtype(add.dtype, "add")
    if add.dtype != p.dtype:
        raise TypeError(f"add has dtype {add.dtype}, expected {p.dtype} (the dtype of x)")
    return ADD_SHAPES[kind]


def check_sum_out(sum_out, out, add, p):
    """sum_out= (x + add written there): x's shape and dtype, writable, not `out`."""
    if add is None:
        raise ValueError("sum_out is written only with add= (it receives x + add)")
    check_like(sum_out, "sum_out", p)
    flags = getattr(sum_out, "flags", None)
    if flags is not None and not flags.writeable:
        raise ValueError("sum_out must be writable (got a read-only array)")
    if out is not None and _may_share(sum_out, out):
        raise ValueError("sum_out and out must be different arrays that do not overlap")


def _may_share(a, b):
    """May a and b share memory (NumPy or CuPy arrays)?"""
    if isinstance(a, np.ndarray) and isinstance(b, np.ndarray):
        return np.may_share_memory(a, b)
    import cupy
    return cupy.may_share_memory(a, b)


def _arrays(x, gamma, beta, out, extra, names):
    """The call's array kind ('numpy' or 'cupy') and its arrays as that kind's
    arrays (lists and DLPack CPU tensors become ndarrays); None stays None.
    `extra` is a tuple of further array arguments, `names` their names."""
    if type(x) is np.ndarray:
        for a in (gamma, beta, out) + extra:
            if a is not None and type(a) is not np.ndarray:
                break
        else:
            return "numpy", x, gamma, beta, extra   # the common case, as is
    check_given(x, "x")
    kind = array_module_name(x, gamma, beta, out, *extra)
    if kind == "numpy":
        x = as_cpu_array(x, "x")
        gamma = None if gamma is None else as_cpu_array(gamma, "gamma")
        beta = None if beta is None else as_cpu_array(beta, "beta")
        extra = tuple(None if a is None else as_cpu_array(a, n) for a, n in zip(extra, names))
        if out is not None and not isinstance(out, np.ndarray):
            raise TypeError(f"out must be a numpy.ndarray, got {type(out).__name__}")
    return kind, x, gamma, beta, extra




def forward_call(x, n_groups, gamma, beta, eps, stats, channel_axis, out, mean, var,
                 running_mean=None, running_var=None, momentum=0.1, activation=None,
                 add=None, sum_out=None):
    """Every check of a forward call, once: (kind, plan, x, gamma, beta, mean, var,
    momentum, add, add_shape, sum_out) with the arrays as the backend's kind
    (add_shape: None without add)."""
    if (mean is None) != (var is None):
        raise ValueError("mean and var must be given together (or neither)")
    running = (running_mean, running_var)
    if any(a is not None for a in running):
        if any(a is None for a in running):
            raise ValueError("running_mean and running_var must be given together (or neither)")
        if mean is not None:
            raise ValueError("running_mean and running_var are updated with the call's own "
                             "statistics; they cannot be combined with mean= and var=")
        momentum = check_momentum(momentum, allow_none=False)
    given_sum_out = sum_out
    kind, x, gamma, beta, (mean, var, _, _, add, sum_out) = _arrays(
        x, gamma, beta, out, (mean, var) + running + (add, sum_out),
        ("mean", "var") + RUNNING + ("add", "sum_out"))
    if kind == "numpy" and sum_out is not None and not isinstance(given_sum_out, np.ndarray):
        raise TypeError(f"sum_out must be a numpy.ndarray, got {type(given_sum_out).__name__}")
    p = plan(x, n_groups, gamma, beta, eps, stats, channel_axis, activation=activation)
    if out is not None:
        check_out(out, p)
    add_shape = None if add is None else check_add(add, p)
    if sum_out is not None:
        check_sum_out(sum_out, out, add, p)
    if mean is not None:
        check_stat(mean, "mean", p)
        check_stat(var, "var", p)
    if running_mean is not None:
        for i, name in enumerate(RUNNING):
            check_running(running[i], name, p, kind, (x, out, gamma, beta, running[1 - i]))
    return kind, p, x, gamma, beta, mean, var, momentum, add, add_shape, sum_out


RUNNING = ("running_mean", "running_var")


def check_momentum(momentum, allow_none=True):
    """A number in [0, 1] (or None, a cumulative average, where allowed), as a float."""
    if momentum is None and allow_none:
        return None
    if not isinstance(momentum, numbers.Real) or isinstance(momentum, (bool, np.bool_)):
        raise TypeError(f"momentum must be a number in [0, 1]{' or None' * allow_none}, "
                        f"got {momentum!r}")
    m = float(momentum)
    if not 0.0 <= m <= 1.0:
        raise ValueError(f"momentum must be in [0, 1]{' or None' * allow_none}, got {momentum!r}")
    return m


def check_running(a, name, p, kind, others):
    """A running statistic that a forward call updates in place: an array of the
    call's kind (not a list: the update would be lost), shape (G,), a supported
    float dtype, writable, sharing memory with none of the call's other arrays."""
    if kind == "numpy" and not isinstance(a, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray (it is updated in place), "
                        f"got {type(a).__name__}")
    if tuple(a.shape) != (p.groups,):
        raise ValueError(f"{name} must have shape ({p.groups},), got {tuple(a.shape)}")
    check_dtype(a.dtype, name)
    if not a.flags.writeable:
        raise ValueError(f"{name} must be writable (got a read-only array)")
    xp = np if kind == "numpy" else sys.modules["cupy"]   # a CuPy call: CuPy is loaded
    for b in others:
        if b is not None and xp.may_share_memory(a, b):
            raise ValueError(f"{name} shares memory with another argument of the call")


def backward_call(dy, x, mean, rstd, n_groups, gamma, stats, channel_axis, out, frozen,
                  beta=None, activation=None):
    """Every check of a backward call, once: (kind, plan, dy, x, mean, rstd, gamma, beta).

    frozen=True (mean and rstd are constants, as a layer's running statistics
    in eval mode) needs stats="batch": one mean/rstd per group.
    """
    for a, name in ((dy, "dy"), (x, "x"), (mean, "mean"), (rstd, "rstd")):
        check_given(a, name)
    if type(frozen) is not bool:
        raise TypeError(f"frozen must be a bool, got {frozen!r}")
    kind, x, gamma, beta, (dy, mean, rstd) = _arrays(x, gamma, beta, out, (dy, mean, rstd),
                                                     ("dy", "mean", "rstd"))
    p = plan(x, n_groups, gamma, beta, 1.0, stats, channel_axis, activation=activation)
    if gamma is None and p.affine == "group":
        # beta alone, per group: the kernel runs per channel, so that dgamma and dbeta
        # come per channel as without beta (the caller expands beta, see expand_affine)
        p = dataclasses.replace(p, affine=AFFINES["channel"])
    if frozen and p.stats != "batch":
        raise ValueError("frozen=True needs stats='batch' (one mean/rstd per group)")
    if out is not None:
        check_out(out, p)
    check_like(dy, "dy", p)
    check_stat(mean, "mean", p)
    check_stat(rstd, "rstd", p)
    return kind, p, dy, x, mean, rstd, gamma, beta


def with_layout(p, layout):
    """The plan run in another memory layout ("nchw" or "nhwc")."""
    if p.layout == layout:
        return p
    return dataclasses.replace(p, layout=LAYOUTS[layout])


def expand_affine(xp, p, a):
    """gamma/beta as the kernels take them: in x's dtype (float32 weights with 16-bit
    data are rounded to it: torch's mixed precision), and a per-group one repeated
    per channel when the plan runs per channel."""
    if a is None:
        return a
    if a.dtype != p.dtype:
        a = a.astype(p.dtype)
    if p.affine == "channel" and a.shape[0] != p.c:
        return xp.repeat(a, p.k)
    return a


# ---- the layer's rules (gn_native.GroupNorm) ----------------------------------

AFFINE_PER = ("channel", "group")
DEVICES = ("cpu", "gpu")


def check_layer_config(n_groups, n_channels, eps, affine_per, stats, momentum, dtype, device,
                       channel_axis):
    """GroupNorm's constructor arguments, normalized; refused before the layer exists.

    Whether channel_axis is the first or the last axis depends on the input:
    each call checks it as the functions do (channel_axis=3 on 4-D input).
    """
    g = check_groups(n_groups)
    c = check_groups(n_channels, "n_channels")
    if c % g:
        raise ValueError(f"n_groups={g} must divide n_channels={c}")
    if c > np.iinfo(np.intp).max // 8:   # gamma/beta could not even be addressed
        raise ValueError(f"n_channels={c} is too large")
    if not isinstance(affine_per, str):
        raise TypeError(f"affine_per must be 'channel' or 'group', got {affine_per!r}")
    if affine_per not in AFFINE_PER:
        raise ValueError(f"affine_per must be 'channel' or 'group', got {affine_per!r}")
    momentum = check_momentum(momentum)
    if not isinstance(device, str):
        raise TypeError(f"device must be 'cpu' or 'gpu', got {device!r}")
    if device not in DEVICES:
        raise ValueError(f"device must be 'cpu' or 'gpu', got {device!r}")
    return dict(n_groups=g, n_channels=c, eps=check_eps(eps), affine_per=affine_per,
                stats=check_stats(stats), momentum=momentum, dtype=check_dtype(dtype, "dtype"),
                device=device, channel_axis=check_layer_channel_axis(channel_axis))


MAX_NDIM = 64   # NumPy's limit (NPY_MAXDIMS): no array has its last axis further


def check_layer_channel_axis(channel_axis):
    """An axis that is channels-first or -last for some input: 1, -1, or a last axis."""
    ax = check_channel_axis_type(channel_axis)
    if ax == 1 or ax == -1 or 2 <= ax < MAX_NDIM:
        return ax
    raise ValueError(f"channel_axis must be 1 or -1 (channels first or last), got {channel_axis!r}")


def check_layer_input(x, device, dtype, n_channels, channel_axis):
    """x given to a layer, as an array of the layer's device (lists and DLPack CPU
    tensors become ndarrays): the layer's dtype and number of channels."""
    check_given(x, "x")
    if device == "cpu":
        x = as_cpu_array(x, "x")
    xdt = getattr(x, "dtype", None)
    if xdt is not None and check_dtype(xdt, "x") != dtype:
        raise TypeError(f"x has dtype {xdt}, but the layer's dtype is {dtype}")
    if x.ndim < 2:
        raise ValueError(f"x must have at least 2 dimensions (N, C, ...), got shape "
                         f"{tuple(x.shape)}")
    ax = check_channel_axis(channel_axis, x.ndim)
    if x.shape[ax] != n_channels:
        raise ValueError(f"x has {x.shape[ax]} channels on axis {channel_axis}, "
                         f"the layer expects {n_channels}")
    return x


def check_state_dict(state, expected):
    """A state dict for a layer whose own is `expected`: the same keys, each value
    of the same shape and a numeric dtype; returned converted to the expected dtypes."""
    keys = set(state.keys()) if hasattr(state, "keys") else None
    if keys is None:
        raise TypeError(f"state must be a mapping, got {type(state).__name__}")
    missing, extra = set(expected) - keys, keys - set(expected)
    if missing or extra:
        raise ValueError(f"state_dict keys mismatch: missing {sorted(missing)}, "
                         f"unexpected {sorted(extra)}")
    new = {}
    for k, ref in expected.items():
        a = state[k]
        a = _interop.to_numpy(a, f"state_dict[{k!r}]") if _interop.framework(a) else np.asarray(a)
        if a.shape != ref.shape:
            raise ValueError(f"state_dict[{k!r}] has shape {a.shape}, expected {ref.shape}")
        if a.dtype.kind not in "fiu" and a.dtype not in _dtypes.STAT:
            raise TypeError(f"state_dict[{k!r}] has dtype {a.dtype}, expected {ref.dtype}")
        new[k] = a.astype(ref.dtype)
    return new
