"""The GPU backend (CuPy): forward, normalize and backward on device arrays.

Called by gn_native._api with preallocated C-contiguous CuPy arrays in the
kernel's memory layout, outputs first (see _api's docstring).  Nothing here
validates; nothing synchronizes with the host: every launch goes to CuPy's
current stream, temporaries come from CuPy's memory pool, and all sizes are
known from the plan.

Paths (chosen by gn_native._gpu_geometry from the shape alone):
- stats="batch": the stages (issue 14, gn_native/stages.py's contract),
  one after another: stats_partial -> stats_merge -> normalize forward,
  backward_reduce -> backward_apply -> param_grads backward.  gn_native._nccl
  runs the same functions with an NCCL allGather of the partials (or sums)
  between the first two, so a batch split across GPUs gives the bits of one
  GPU's call on the whole batch;
- stats="sample", fused: one RawKernel block per (n, g) computes the group's
  statistics and normalizes it (forward), or its channel sums and dx
  (backward);
- stats="sample", split (few large groups): a RawKernel writes partial
  moments / channel sums per chunk, a CuPy ReductionKernel merges them in a
  fixed order, and CuPy ElementwiseKernels normalize or compute dx.
normalize() (statistics given) is one ElementwiseKernel.

The stages, on device arrays (the functions below that take preallocated
outputs, as the backend contract does):
- stats_partial: float64 (N, G, 5) {count, shift, sum, sumsq, exponent} per
  (sample, group), shift the group's first value, sums in double; exponent
  is always 0 here, and data holding inf/NaN (or float64 data whose squares
  overflow double, a spread beyond ~1e154) give sumsq NaN, hence NaN
  statistics for that group.  A sample's row depends on its own values only.
- stats_merge: one thread per group folds the partials in index order with
  the C core's gn_stats_merge formula (gn_partials_merge in gn_math.cuh),
  to float64 mean, rstd and var.
- normalize_stats: y from float64 mean/rstd (the low part of the mean kept).
- backward_reduce: float64 (N, C, 2) per (sample, channel), [sum g,
  sum g (x - mean_F)], g = dy * act'(z), mean_F the mean in the compute type.
- backward_apply: dx from the sums of the whole batch (stats="batch": M rows
  in global sample order) or the local ones (stats="sample").
- param_grads: dgamma, dbeta from the same sums.

Activation (plan.activation, issue 13): every kernel that writes y or dx,
or sums for dgamma/dbeta, applies it.  y = act(z), z = gamma * xhat + beta;
the backward recomputes z from x, mean, rstd, gamma and beta and uses
g = dy * act'(z) for dy (the forward stores nothing extra).  RawKernels
take it as a template parameter (one RawModule per activation), the CuPy
Elementwise kernels as an argument; see gn_kernels.cuh and _gpu_kernels.

Aliasing: y may be x, and dx may be dy or x (the same array object, as
_api passes for out=x), and with add= the sum may go over x or a full
addend and y over either; the kernels read each value before writing it, and
the tests run every path that way (tests/test_gpu_host.py).  Any other
overlap between an output and an input (a shifted view, out over gamma,
beta or the statistics) is _api's to copy or refuse.

Magnitudes: 16- and 32-bit data are computed in float; moments that
overflow it (or may have lost squares to underflow while eps is smaller
still) are redone in double, and normalize and dx scale x - mean by a
power of two near rstd when the spread is extreme (gn_math.cuh), so any
finite input whose variance fits in double normalizes correctly.  Limits:
float subnormals count as zero on the device (CuPy compiles with
-ftz=true), and a float32 rstd below 2**-126 (a spread over 8.5e37) is
stored as 0 (y is still right; given statistics that small are not).

The orchestration below is written against a small executor (`_CupyExec`)
so that tests/test_gpu_host.py can run the very same sequence of kernels,
with the same geometry and arguments, on the CPU.
"""
import functools

import numpy as np

from . import _gpu_geometry as G
from . import _gpu_kernels as K

try:
    import cupy
except ImportError as _e:   # CuPy is optional
    cupy = None
    _CUPY_IMPORT_ERROR = _e


def require_device():
    """Raise a clear error unless CuPy is installed and sees a CUDA device."""
    if cupy is None:
        raise ImportError("gn_native: the GPU backend needs CuPy, which is not installed "
                          f"({_CUPY_IMPORT_ERROR}); install it, e.g. pip install cupy-cuda13x")
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as e:  # CUDARuntimeError: no driver, or no device
        raise RuntimeError(f"gn_native: CuPy is installed but no CUDA device is usable ({e})") from None
    if count < 1:
        raise RuntimeError("gn_native: CuPy is installed but found no CUDA device")


def dtype_name(dtype):
    return np.dtype(dtype).name   # float16, bfloat16 (ml_dtypes), float32, float64


# ---------------------------------------------------------------------------
# Kernels, built once (CuPy also caches the compiled binaries on disk).

@functools.lru_cache(maxsize=None)
def _raw_module(dtype, layout, act):
    """One module per activation: a process compiles only the activations it uses."""
    return cupy.RawModule(code=K.raw_source(), options=K.raw_options(),
                          name_expressions=K.raw_names(dtype, layout, act))


@functools.lru_cache(maxsize=None)
def _stage_module():
    return cupy.RawModule(code=K.raw_source(), options=K.raw_options(),
                          name_expressions=tuple(n for _, n in K.stage_kinds()))


@functools.lru_cache(maxsize=None)
def _raw_kernel(kind, dtype, layout, affine, act="none"):
    if kind in G.STAGE_KINDS:     # dtype: the statistics dtype S
        return _stage_module().get_function(K.stage_name(kind, dtype))
    return _raw_module(dtype, layout, K.raw_module_act(kind, act)).get_function(
        K.raw_name(kind, dtype, layout, affine, act))


# key -> spec; per-dtype specs take the dtype name (see spec_for)
_SPECS = {
    "normalize": K.normalize_spec, "dx": K.dx_spec, "bwd_coef": K.bwd_coef_spec,
    "param_out": K.param_out_spec, "add": K.add_spec, "norm_coef": K.norm_coef_spec, "sum2": K.sum2_spec,
    "norm_coef64": K.norm_coef64_spec,
    "merge_float32": lambda: K.merge_stats_spec("float32"),
    "merge_float64": lambda: K.merge_stats_spec("float64"),
}
_PER_DTYPE = ("normalize", "dx", "bwd_coef", "param_out", "add")


def spec_for(key, dtype=None):
    """The spec of kernel `key` (for x's dtype name where the kernel is per dtype)."""
    return _SPECS[key](dtype) if key in _PER_DTYPE else _SPECS[key]()


@functools.lru_cache(maxsize=None)
def _cupy_kernel(key, dtype=None):
    return K.build_cupy_kernel(spec_for(key, dtype))


_NULL = np.uint64(0)   # a null device pointer, passed by value


class _CupyExec:
    """Launches on the device, on CuPy's current stream."""

    def empty(self, shape, dtype):
        return cupy.empty(shape, dtype)

    def ptr(self, a):
        """The device address of a (for a communicator)."""
        return a.data.ptr

    def stream_ptr(self):
        """CuPy's current stream (collectives go there, in order with the kernels)."""
        return cupy.cuda.get_current_stream().ptr

    def raw(self, kind, dtype, layout, affine, launch, args, act="none"):
        k = _raw_kernel(kind, dtype, layout, affine, act)
        k((launch.grid,), (launch.block,), tuple(_NULL if a is None else a for a in args),
          shared_mem=launch.smem)

    def elementwise(self, key, dtype, *args):
        _cupy_kernel(key, dtype)(*args, block_size=G.ELEMENTWISE_BLOCK)

    def reduce(self, key, *args):
        """Reduction over axis 0 of the 2-D inputs; outputs are passed in args.

        Our reductions have several inputs and outputs, so CuPy runs its own
        reduction kernel (never the CUB one, which takes one of each): the
        code gn_native.gpu_check compiles, in a fixed order."""
        _cupy_kernel(key)(*args, axis=0)


_EXEC = _CupyExec()


# ---------------------------------------------------------------------------
# The backend contract.

def forward(plan, y, mean, rstd, x, gamma, beta, add=None, add_shape=None, sum_out=None):
    """Statistics of x into mean/rstd (plan.stat_shape), y = act(normalized x) (plan.activation).

    add (issue 13): an addend of x's dtype, add_shape "full" (x's kernel
    shape), "nc" ((N, C): a time embedding, broadcast over space) or "c"
    ((C,)).  One elementwise kernel first writes s = x + add (NumPy's sum in
    x's dtype) into sum_out, or into y when sum_out is None; forward then
    runs on s as if s were x (y is normalized in place in the second case).
    sum_out may be x or a full add, and y may be x or a full add."""
    run_forward(_EXEC, plan, y, mean, rstd, x, gamma, beta, add, add_shape, sum_out)


def normalize(plan, y, x, mean, rstd, gamma, beta):
    """y = act(normalized x) with the given mean/rstd (plan.stat_shape, plan.stat_dtype)."""
    run_normalize(_EXEC, plan, y, x, mean, rstd, gamma, beta)


def backward(plan, dx, dgamma, dbeta, dy, x, mean, rstd, gamma, beta=None, frozen=False):
    """dx, and dgamma/dbeta (shape (C,) or gamma's) in x's dtype.

    With an activation (plan.activation), dy is the gradient of act(z),
    z = gamma * xhat + beta recomputed from x, mean, rstd, gamma and beta:
    every kernel below uses g = dy * act'(z) in place of dy.

    frozen=True: mean and rstd are constants, not x's statistics (a layer's
    running statistics in eval mode): dx = g * gamma * rstd.  The plan then
    has stats="batch", mean and rstd shape (G,)."""
    run_backward(_EXEC, plan, dx, dgamma, dbeta, dy, x, mean, rstd, gamma, frozen, beta)


def describe(plan=None):
    """Without a plan: one line on CuPy and the device (gn_native.show_config).
    With one: the paths and geometry forward/backward use (benchmarks, profiles); "stages"
    with the geometry of gn_stats_rows and gn_bwd_reduce for stats="batch"."""
    if plan is None:
        if cupy is None:
            return "CuPy not installed"
        try:
            dev = cupy.cuda.Device()
            props = cupy.cuda.runtime.getDeviceProperties(dev.id)
        except Exception as e:
            return f"CuPy {cupy.__version__}, no usable CUDA device ({e})"
        name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
        return (f"CuPy {cupy.__version__}, {name} (sm_{props['major']}{props['minor']}, "
                f"{props['multiProcessorCount']} SMs)")
    if plan.stats == "batch":
        f = G.stats_rows_geometry(plan.n, plan.c, plan.spatial, plan.groups)
        b = G.bwd_reduce_geometry(plan.n, plan.c, plan.spatial, plan.layout)
        return {"forward": "stages", "backward": "stages", "forward_geometry": f, "backward_geometry": b}
    f = G.forward_geometry(plan.n, plan.c, plan.spatial, plan.groups, plan.stats)
    b = G.backward_geometry(plan.n, plan.c, plan.spatial, plan.groups, plan.stats, plan.layout)
    return {"forward": f.path, "backward": b.path, "forward_geometry": f, "backward_geometry": b}


# ---------------------------------------------------------------------------
# The stages on device arrays (see the module docstring; gn_native._nccl and
# stats="batch" run them).  Inputs in the kernel layout, C-contiguous; outputs
# preallocated.

def stats_partial(plan, partial, x):
    """partial: float64 (plan.n, plan.groups, 5), the partials of x's (sample, group)s."""
    run_stats_partial(_EXEC, plan, partial, x)


def stats_merge(mean, rstd, var, partial, m, k, eps):
    """float64 mean, rstd, var (k values each) from the m x k partials (m, k, 5), merged
    along the first axis in index order (the C core's gn_stats_merge formula)."""
    run_stats_merge(_EXEC, mean, rstd, var, partial.reshape(m, k, K.PARTIAL_LEN), eps)


def normalize_stats(plan, y, x, mean, rstd, gamma, beta):
    """y = act(normalized x) with float64 mean/rstd (plan.stat_shape)."""
    run_normalize_stats(_EXEC, plan, y, x, mean, rstd, gamma, beta)


def _stat(plan, a):
    """float64 statistics as the kernels read them: in the statistics dtype (exact for the
    values a forward call returns)."""
    return a.astype(plan.stat_dtype, copy=False)


def backward_reduce(plan, sums, dy, x, mean, rstd, gamma, beta):
    """sums: float64 (plan.n, plan.c, 2), [sum g, sum g (x - mean_F)] per (sample, channel).

    mean, rstd: float64, plan.stat_shape."""
    run_backward_reduce(_EXEC, plan, sums, dy, x, _stat(plan, mean), _stat(plan, rstd), gamma, beta)


def backward_apply(plan, dx, dy, x, mean, rstd, sums, gamma, beta):
    """dx from float64 sums (M, C, 2): the whole batch's in global sample order
    (stats="batch", any M >= 1), the local ones (stats="sample", M = plan.n)."""
    run_backward_apply(_EXEC, plan, dx, dy, x, _stat(plan, mean), _stat(plan, rstd), sums, gamma, beta)


def param_grads(plan, dgamma, dbeta, sums, rstd):
    """dgamma, dbeta (x's dtype; (C,), or (G,) for per-group weights) from float64 sums (M, C, 2)
    and rstd ((G,), or (M, G) for stats="sample")."""
    run_param_grads(_EXEC, plan, dgamma, dbeta, sums, rstd)


# ---------------------------------------------------------------------------
# Orchestration (device-agnostic: `ex` is _CupyExec or the tests' CPU one).

def _i64(v):
    return np.int64(v)


def _io(a):
    """An array as the CuPy kernels take it: 16-bit floats as their bits (uint16), see gn_io in gn_math.cuh."""
    if a is None or a.dtype.itemsize != 2:
        return a
    return a.view(np.uint16)


def _flat_args(plan):
    c, sp, k, gn, nhwc, small, mc, sc, ms, ss, mk, sk = G.flat_params(
        plan.n, plan.c, plan.spatial, plan.groups, plan.stats, plan.layout)
    return (np.int64(c), np.int64(sp), np.int64(k), np.int64(gn), np.int32(nhwc), np.int32(small),
            np.uint32(mc), np.uint32(sc), np.uint32(ms), np.uint32(ss), np.uint32(mk), np.uint32(sk))


def _affine_of(gamma, beta, c):
    p = gamma if gamma is not None else beta
    if p is None:
        return "none"
    return "channel" if p.shape[0] == c else "group"


def _sizes(plan):
    return _i64(plan.n), _i64(plan.c), _i64(plan.spatial), _i64(plan.groups)


def _act(plan):
    """The plan's activation name ("none", "silu", ...) and id (gn_act.cuh, = plan.activation.code)."""
    name = str(plan.activation)
    code = K.ACTIVATIONS[name]
    assert code == plan.activation.code, (name, plan.activation.code)
    return name, code


def run_forward(ex, plan, y, mean, rstd, x, gamma, beta, add=None, add_shape=None, sum_out=None):
    """forward()'s sequence of kernels on executor `ex`; with add, the add kernel first and then
    the same sequence reading the sum (see forward)."""
    if add is not None:
        x = _run_add(ex, plan, y if sum_out is None else sum_out, x, add, add_shape)
    if plan.stats == "batch":
        run_forward_stages(ex, plan, y, mean, rstd, x, gamma, beta)
        return
    dt = dtype_name(plan.dtype)
    geo = G.forward_geometry(plan.n, plan.c, plan.spatial, plan.groups, plan.stats)
    affine = _affine_of(gamma, beta, plan.c)
    if geo.path == "fused":
        ex.raw("fwd_fused", dt, plan.layout, affine, geo.launch,
               (y, mean, rstd, x, gamma, beta) + _sizes(plan) + (np.float64(plan.eps),), act=_act(plan)[0])
        return
    q, r = geo.merge_shape
    parts = ex.empty((3, q * r), np.float64)
    ex.raw("stats_partial", dt, plan.layout, "none", geo.launch,
           (parts[0], parts[1], parts[2], x) + _sizes(plan)
           + (_i64(geo.parts), _i64(geo.chunk), np.float64(plan.eps)))
    sd = dtype_name(plan.stat_dtype)
    coef = ex.empty((K.NORM_COEFS, r), plan.stat_dtype)
    ex.reduce("merge_" + sd, parts[0].reshape(q, r), parts[1].reshape(q, r), parts[2].reshape(q, r),
              np.float64(plan.eps), mean.reshape(-1), rstd.reshape(-1), *coef)
    _run_normalize(ex, plan, y, x, coef, gamma, beta)


def run_forward_stages(ex, plan, y, mean, rstd, x, gamma, beta, gather=None):
    """stats="batch" forward as its stages: partial -> [gather] -> merge -> normalize.

    gather (gn_native._nccl): partial (n, G, 5) -> the partials of every rank,
    (M, G, 5) in global sample order, on the device; None: this batch alone."""
    part = ex.empty((plan.n, plan.groups, K.PARTIAL_LEN), np.float64)
    run_stats_partial(ex, plan, part, x)
    whole = part if gather is None else gather(part)
    st = ex.empty((3, plan.groups), np.float64)
    run_stats_merge(ex, st[0], st[1], st[2], whole, plan.eps, mean.reshape(-1), rstd.reshape(-1))
    run_normalize_stats(ex, plan, y, x, st[0], st[1], gamma, beta)


def run_stats_partial(ex, plan, part, x):
    geo = G.stats_rows_geometry(plan.n, plan.c, plan.spatial, plan.groups)
    ng = plan.n * plan.groups
    rows = part if geo.parts == 1 else ex.empty((ng * geo.parts, K.PARTIAL_LEN), np.float64)
    ex.raw("stats_rows", dtype_name(plan.dtype), plan.layout, "none", geo.launch,
           (rows, x) + _sizes(plan) + (_i64(geo.parts), _i64(geo.chunk)))
    if geo.parts > 1:
        ex.raw("partial_fold", "float64", plan.layout, "none", G.stage_launch(ng),
               (part, rows, _i64(ng), _i64(geo.parts)))


def run_stats_merge(ex, mean, rstd, var, part, eps, mean_s=None, rstd_s=None):
    """float64 mean, rstd, var of part (m, ..., 5) merged along axis 0; with mean_s and
    rstd_s (the statistics dtype) also those, rounded."""
    m = part.shape[0]
    k = int(np.prod(part.shape[1:-1], dtype=np.int64))
    sd = "float64" if mean_s is None else dtype_name(mean_s.dtype)
    ex.raw("stats_merge", sd, "nchw", "none", G.stage_launch(k),
           (mean, rstd, var, mean_s, rstd_s, part, _i64(m), _i64(k), np.float64(eps)))


def run_normalize_stats(ex, plan, y, x, mean, rstd, gamma, beta):
    """y from float64 mean/rstd (contiguous, plan.stat_shape's values)."""
    coef = ex.empty((K.NORM_COEFS, mean.size), plan.stat_dtype)
    ex.elementwise("norm_coef64", None, mean.reshape(-1), rstd.reshape(-1), *coef)
    _run_normalize(ex, plan, y, x, coef, gamma, beta)


def _pair_sums(ex, o0, o1, sums, rstd, outer, rows, plan, rs):
    """gn_pair_sums: rows of (sample, channel) pairs summed in order (see gn_kernels.cuh)."""
    sd = dtype_name(plan.stat_dtype if rstd is None else rstd.dtype)
    ex.raw("pair_sums", sd, plan.layout, "none", G.stage_launch(outer * plan.c),
           (o0, o1, sums, None if rstd is None else rstd.reshape(-1), _i64(outer), _i64(rows),
            _i64(plan.c), _i64(plan.k), _i64(rs)))


def run_backward_reduce(ex, plan, sums, dy, x, mean, rstd, gamma, beta):
    act, code = _act(plan)
    if not code:
        beta = None          # without an activation nothing reads beta
    geo = G.bwd_reduce_geometry(plan.n, plan.c, plan.spatial, plan.layout)
    rows = sums if geo.parts == 1 else ex.empty((plan.n * geo.parts, plan.c, K.DSUM_LEN), np.float64)
    gn = plan.groups if plan.stats == "sample" else 0
    ex.raw("bwd_reduce", dtype_name(plan.dtype), plan.layout, "none", geo.launch,
           (rows, dy, x, mean.reshape(-1), rstd.reshape(-1), gamma, beta,
            np.int32(K.AFFINE_CODE[_affine_of(gamma, beta, plan.c)]), np.int32(code)) + _sizes(plan)
           + (_i64(gn), _i64(geo.parts), _i64(geo.chunk), np.int32(geo.tx_len)), act=act)
    if geo.parts > 1:
        _pair_sums(ex, sums, None, rows, None, plan.n, geo.parts, plan, 0)


def _totals(ex, plan, sums, rstd, per_sample):
    """(db, dg) float64: sum g and sum g xhat per channel over the rows of sums
    (per_sample: per (sample, channel), for the coefficients of stats="sample")."""
    m = sums.shape[0]
    outer, rows = (m, 1) if per_sample else (1, m)
    tdb = ex.empty((outer * plan.c,), np.float64)
    tdg = ex.empty((outer * plan.c,), np.float64)
    _pair_sums(ex, tdb, tdg, sums, rstd, outer, rows, plan, plan.groups if plan.stats == "sample" else 0)
    return tdb, tdg


def run_backward_apply(ex, plan, dx, dy, x, mean, rstd, sums, gamma, beta=None, frozen=False):
    """dx from sums (M, C, 2), mean/rstd in the statistics dtype; returns the per-channel
    totals it used for stats="batch" (dgamma's and dbeta's too, see run_param_grads)."""
    act, code = _act(plan)
    if not code:
        beta = None
    batch = plan.stats == "batch"
    tdb, tdg = _totals(ex, plan, sums, rstd, per_sample=not batch)
    dt = dtype_name(plan.dtype)
    xf = _io(x.reshape(-1))
    gam = xf[:1] if gamma is None else _io(gamma)      # a small stand-in when there is no gamma
    bet = xf[:1] if beta is None else _io(beta)
    m = plan.k * plan.spatial * (sums.shape[0] if batch else 1)    # values per statistics group
    coef = ex.empty((K.DX_COEFS, mean.size), plan.stat_dtype)
    ex.elementwise("bwd_coef", dt, tdb, tdg, mean.reshape(-1), rstd.reshape(-1), gam,
                   _i64(plan.c), _i64(plan.k), _i64(plan.groups), np.float64(m),
                   np.int32(K.AFFINE_CODE[_affine_of(gamma, None, plan.c)]), np.int32(frozen), *coef)
    dyf = _io(dy.reshape(-1))
    dxf = dyf if dx is dy else (xf if dx is x else _io(dx.reshape(-1)))   # in place, as in _run_normalize
    ex.elementwise("dx", dt, dyf, xf, coef, _i64(coef.shape[1]), gam, bet, *_flat_args(plan),
                   np.int32(K.AFFINE_CODE[_affine_of(gamma, beta, plan.c)]), np.int32(gamma is not None),
                   np.int32(beta is not None), np.int32(code), dxf)
    return (tdb, tdg) if batch else None


def run_param_grads(ex, plan, dgamma, dbeta, sums, rstd, totals=None):
    """dgamma, dbeta from sums (M, C, 2) (totals: backward_apply's, the same numbers for "batch")."""
    tdb, tdg = totals if totals is not None else _totals(ex, plan, sums, rstd, per_sample=False)
    ex.elementwise("param_out", dtype_name(plan.dtype), tdb, tdg, _i64(plan.c // dgamma.shape[0]),
                   _io(dgamma), _io(dbeta))


def run_backward_stages(ex, plan, dx, dgamma, dbeta, dy, x, mean, rstd, gamma, frozen=False, beta=None,
                        gather=None):
    """stats="batch" backward as its stages: reduce -> [gather] -> apply -> param_grads.

    gather (gn_native._nccl): sums (n, C, 2) -> every rank's, (M, C, 2) in
    global sample order; None: this batch alone."""
    sums = ex.empty((plan.n, plan.c, K.DSUM_LEN), np.float64)
    run_backward_reduce(ex, plan, sums, dy, x, mean, rstd, gamma, beta)
    whole = sums if gather is None else gather(sums)
    totals = run_backward_apply(ex, plan, dx, dy, x, mean, rstd, whole, gamma, beta, frozen)
    run_param_grads(ex, plan, dgamma, dbeta, whole, rstd, totals)


def _run_add(ex, plan, dest, x, add, add_shape):
    """dest = x + add (one kernel); returns dest.  dest may be x or a full add: the output is
    then passed as that input's own array object, as in _run_normalize."""
    kind = K.ADD_KIND[add_shape]
    xf = _io(x.reshape(-1))
    af = xf if add is x else _io(add.reshape(-1))
    if kind == K.ADD_KIND["full"]:
        full, small = af, ex.empty((1,), xf.dtype)     # `ab` unread: one element, overlapping nothing
    else:
        full, small = xf, af                           # `a` unread: x stands in (x-sized, as CuPy needs)
    df = xf if dest is x else (af if dest is add else _io(dest.reshape(-1)))
    ex.elementwise("add", dtype_name(plan.dtype), xf, full, small, *_flat_args(plan), np.int32(kind), df)
    return dest


def run_normalize(ex, plan, y, x, mean, rstd, gamma, beta):
    """y from x and given per-group statistics."""
    coef = ex.empty((K.NORM_COEFS, mean.size), plan.stat_dtype)
    ex.elementwise("norm_coef", None, mean.reshape(-1), rstd.reshape(-1), *coef)
    _run_normalize(ex, plan, y, x, coef, gamma, beta)


def _run_normalize(ex, plan, y, x, coef, gamma, beta):
    affine = _affine_of(gamma, beta, plan.c)
    xf = _io(x.reshape(-1))
    yf = xf if y is x else _io(y.reshape(-1))   # in place: one array object, so CuPy sees no overlap to copy
    dummy = xf[:1]     # stands for a missing gamma/beta: small, so CuPy indexes it in 32 bits
    ex.elementwise("normalize", dtype_name(plan.dtype), xf, coef, _i64(coef.shape[1]),
                   dummy if gamma is None else _io(gamma), dummy if beta is None else _io(beta),
                   *_flat_args(plan), np.int32(K.AFFINE_CODE[affine]),
                   np.int32(gamma is not None), np.int32(beta is not None), np.int32(_act(plan)[1]), yf)


def run_backward(ex, plan, dx, dgamma, dbeta, dy, x, mean, rstd, gamma, frozen=False,
                 beta=None):
    if plan.stats == "batch":
        run_backward_stages(ex, plan, dx, dgamma, dbeta, dy, x, mean, rstd, gamma, frozen, beta)
        return
    dt = dtype_name(plan.dtype)
    acc = plan.stat_dtype   # the sums accumulate in the statistics dtype
    act, act_code = _act(plan)
    if not act_code:
        beta = None          # without an activation nothing reads beta
    affine = _affine_of(gamma, None, plan.c)       # gamma's (dgamma's sums, bwd_coef)
    affine_z = _affine_of(gamma, beta, plan.c)     # z's: gamma's or, without gamma, beta's
    geo = G.backward_geometry(plan.n, plan.c, plan.spatial, plan.groups, plan.stats, plan.layout)
    assert not frozen or (plan.stats == "batch" and geo.path == "split"), "frozen statistics: per group"
    n, c = plan.n, plan.c
    if geo.path == "fused":
        pdb = ex.empty((n, c), acc)
        pdg = ex.empty((n, c), acc)
        ex.raw("bwd_fused", dt, plan.layout, affine_z, geo.launch,
               (dx, pdb, pdg, dy, x, mean, rstd, gamma, beta) + _sizes(plan) + (np.int32(geo.tx_len),),
               act=act)
        rows_db, rows_dg = pdb, pdg
    else:
        q, r = geo.sum_shape
        pdb = ex.empty((q, r), acc)
        pdg = ex.empty((q, r), acc)
        gn = plan.groups if plan.stats == "sample" else 0
        ex.raw("bwd_partial", dt, plan.layout, "none", geo.launch,
               (pdb, pdg, dy, x, mean, rstd, gamma, beta, np.int32(K.AFFINE_CODE[affine_z])) + _sizes(plan)
               + (_i64(gn), _i64(geo.parts), _i64(geo.chunk), np.int32(geo.tx_len)), act=act)
        sdb = ex.empty((r,), np.float64)        # per (n, c) ("sample") or per c ("batch")
        sdg = ex.empty((r,), np.float64)
        ex.reduce("sum2", pdb, pdg, sdb, sdg)
        coef = ex.empty((K.DX_COEFS, mean.size), plan.stat_dtype)
        xf = _io(x.reshape(-1))
        m = plan.k * plan.spatial * (n if plan.stats == "batch" else 1)    # values per statistics group
        gam = xf[:1] if gamma is None else _io(gamma)      # a small stand-in when there is no gamma
        bet = xf[:1] if beta is None else _io(beta)
        ex.elementwise("bwd_coef", dt, sdb, sdg, mean.reshape(-1), rstd.reshape(-1), gam,
                       _i64(c), _i64(plan.k), _i64(plan.groups), np.float64(m),
                       np.int32(K.AFFINE_CODE[affine]), np.int32(frozen), *coef)
        dyf = _io(dy.reshape(-1))
        dxf = dyf if dx is dy else (xf if dx is x else _io(dx.reshape(-1)))   # in place, as in _run_normalize
        ex.elementwise("dx", dt, dyf, xf, coef, _i64(coef.shape[1]), gam, bet, *_flat_args(plan),
                       np.int32(K.AFFINE_CODE[affine_z]), np.int32(gamma is not None),
                       np.int32(beta is not None), np.int32(act_code), dxf)
        rows_db, rows_dg = sdb.reshape(-1, c), sdg.reshape(-1, c)
    if rows_db.shape[0] == 1 and rows_db.dtype == np.float64:
        tdb, tdg = rows_db.reshape(-1), rows_dg.reshape(-1)       # stats="batch": already per channel
    else:
        tdb = ex.empty((c,), np.float64)
        tdg = ex.empty((c,), np.float64)
        ex.reduce("sum2", rows_db, rows_dg, tdb, tdg)
    ex.elementwise("param_out", dt, tdb, tdg, _i64(c // dgamma.shape[0]), _io(dgamma), _io(dbeta))
