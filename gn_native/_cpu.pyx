# cython: language_level=3
"""CPU backend: converts arrays to pointers and calls the C core without the GIL.

Arguments were checked by gn_native._validate; arrays arrive C-contiguous,
in the kernel's layout and of the right dtypes (see gn_native._api).
"""
cimport numpy as cnp
from libc.stdint cimport int64_t, uint16_t

import numpy as np

from gn_native import _dtypes

from gn_native.capi cimport *

cnp.import_array()

cdef extern from "gn_native.h":
    int GN_MAX_THREADS

MAX_THREADS = GN_MAX_THREADS   # the most threads set_num_threads takes (the C core's cap)

# The C header's enum values (gn_native.h, through capi.pxd), for
# gn_native._validate: a Plan's layout, stats and affine carry them as `.code`
LAYOUT_NCHW = <int>GN_NCHW
LAYOUT_NHWC = <int>GN_NHWC
STATS_SAMPLE = <int>GN_STATS_SAMPLE
STATS_BATCH = <int>GN_STATS_BATCH
AFFINE_NONE = <int>GN_AFFINE_NONE
AFFINE_CHANNEL = <int>GN_AFFINE_CHANNEL
AFFINE_GROUP = <int>GN_AFFINE_GROUP
ADD_FULL = <int>GN_ADD_FULL
ADD_NC = <int>GN_ADD_NC
ADD_C = <int>GN_ADD_C


# ---- the dtype dispatch: one table -------------------------------------------
# src/kernel_table.h builds gn_kernel_table from the C core's dtype list
# (src/dtypes.h); each entry is matched here to its line of
# gn_native._dtypes by the C suffix.  A dtype's code is its index in the
# table; every call goes through _KT[code].

cdef extern from "kernel_table.h" nogil:
    ctypedef gn_status (*gn_kt_forward)(void *, void *, void *, void *, void *, const void *,
                                        const void *, int, const void *, const void *,
                                        const gn_desc *)
    ctypedef gn_status (*gn_kt_normalize)(void *, const void *, const void *, const void *,
                                          const void *, const void *, const gn_desc *)
    ctypedef gn_status (*gn_kt_backward)(void *, void *, void *, const void *, const void *,
                                         const void *, const void *, const void *,
                                         const void *, const gn_desc *)
    ctypedef gn_status (*gn_kt_partial)(double *, const void *, const gn_desc *)
    ctypedef gn_status (*gn_kt_normalize_stats)(void *, const void *, const double *,
                                                const double *, const void *, const void *,
                                                const gn_desc *)
    ctypedef gn_status (*gn_kt_reduce)(double *, const void *, const void *, const double *,
                                       const double *, const void *, const void *,
                                       const gn_desc *)
    ctypedef gn_status (*gn_kt_apply)(void *, const void *, const void *, const double *,
                                      const double *, const double *, int64_t, const void *,
                                      const void *, const gn_desc *)
    ctypedef gn_status (*gn_kt_param_grads)(void *, void *, const double *, const double *,
                                            int64_t, const gn_desc *)
    ctypedef struct gn_kernels:
        const char *suffix
        int item_size
        int stat_size
        gn_kt_forward forward
        gn_kt_normalize normalize
        gn_kt_backward backward
        gn_kt_backward frozen
        gn_kt_partial partial
        gn_kt_normalize_stats normalize_stats
        gn_kt_reduce reduce
        gn_kt_apply apply
        gn_kt_param_grads param_grads
    const gn_kernels gn_kernel_table[]
    int GN_KERNEL_COUNT

cdef const gn_kernels *_KT = gn_kernel_table
# NumPy dtype -> code, and NumPy type numbers by code (-1: not available here)
_CODES = {}
cdef int _type_num[16]
cdef int _stat_num[16]


def _build_dispatch():
    if GN_KERNEL_COUNT > 16:
        raise ImportError("gn_native: _cpu's dispatch holds 16 dtypes; raise its size")
    for i in range(GN_KERNEL_COUNT):
        _type_num[i] = -1
        d = _dtypes.BY_SUFFIX.get(_KT[i].suffix.decode())
        if d is None:
            continue    # tests/test_dtypes.py reports a C dtype that Python lacks
        for dt, line in _dtypes.AVAILABLE.items():
            if line is d:
                _CODES[dt] = i
                _type_num[i] = dt.num
                _stat_num[i] = np.dtype(d.stat).num


_build_dispatch()


def kernel_dtypes():
    """[(C suffix, bytes per value, bytes per statistic)] of the kernel table, in order."""
    return [(_KT[i].suffix.decode(), _KT[i].item_size, _KT[i].stat_size)
            for i in range(GN_KERNEL_COUNT)]


cdef int _code(dtype) except -1:
    try:
        return _CODES[dtype]
    except KeyError:
        raise TypeError(f"unsupported dtype {dtype}") from None


cdef gn_desc _desc(p):
    cdef gn_desc d
    d.n = p.n
    d.c = p.c
    d.spatial = p.spatial
    d.groups = p.groups
    d.eps = p.eps
    d.layout = <gn_layout><int>p.layout.code
    d.stats = <gn_stats><int>p.stats.code
    d.affine = <gn_affine><int>p.affine.code
    d.activation = <gn_activation><int>p.activation.code
    return d


cdef inline void *_ptr(a):
    if a is None:
        return NULL
    return cnp.PyArray_DATA(<cnp.ndarray>a)


cdef _check(gn_status st):
    if st == GN_ENOMEM:
        raise MemoryError("gn_native: out of memory in the C core")
    if st != GN_OK:
        raise RuntimeError(f"gn_native C core: {gn_strerror(st).decode()}")


cdef _run_forward(int code, gn_desc *d, y, mean, rstd, var, x, gamma, beta,
                  Py_ssize_t reps=1, add=None, int add_shape=0, sum_out=None):
    """Pointers of the arrays (None -> NULL), the C call (`reps` times) without
    the GIL, status check."""
    cdef void *py = _ptr(y)
    cdef void *ps = _ptr(sum_out)
    cdef void *pa = _ptr(add)
    cdef void *pm = _ptr(mean)
    cdef void *pr = _ptr(rstd)
    cdef void *pv = _ptr(var)
    cdef void *px = _ptr(x)
    cdef void *pg = _ptr(gamma)
    cdef void *pb = _ptr(beta)
    cdef gn_status st = GN_OK
    cdef Py_ssize_t i
    with nogil:
        for i in range(reps):
            st = _KT[code].forward(py, ps, pm, pr, pv, px, pa, add_shape, pg, pb, d)
            if st != GN_OK:
                break
    _check(st)


cdef _run_backward(int code, gn_desc *d, dx, dgamma, dbeta, dy, x, mean, rstd, gamma,
                   beta=None, bint frozen=False):
    """The table's backward (or frozen backward) on the arrays' pointers, without the GIL."""
    cdef gn_kt_backward fn = _KT[code].frozen if frozen else _KT[code].backward
    cdef void *pdx = _ptr(dx)
    cdef void *pdg = _ptr(dgamma)
    cdef void *pdb = _ptr(dbeta)
    cdef void *pdy = _ptr(dy)
    cdef void *px = _ptr(x)
    cdef void *pm = _ptr(mean)
    cdef void *pr = _ptr(rstd)
    cdef void *pg = _ptr(gamma)
    cdef void *pb = _ptr(beta)
    cdef gn_status st
    with nogil:
        st = fn(pdx, pdg, pdb, pdy, px, pm, pr, pg, pb, d)
    _check(st)


def forward(p, y, mean, rstd, x, gamma, beta, var=None, add=None, add_shape=None, sum_out=None):
    """Statistics and y; `var` (optional, shaped like mean) gets the biased variance.
    add (x's kernel shape, (N, C) or (C,), as add_shape's .code says): the
    forward of x + add, whose sum goes to sum_out when given (gn_forward_add)."""
    cdef gn_desc d = _desc(p)
    _run_forward(_code(p.dtype), &d, y, mean, rstd, var, x, gamma, beta, 1, add,
                 0 if add_shape is None else add_shape.code, sum_out)


def forward_repeat(p, y, mean, rstd, x, gamma, beta, Py_ssize_t reps):
    """The C forward call `reps` times in a row, without the GIL and without
    Python in between: what the C side of one call costs (bench/overhead.py
    subtracts it from a whole Python call)."""
    cdef gn_desc d = _desc(p)
    _run_forward(_code(p.dtype), &d, y, mean, rstd, None, x, gamma, beta, reps)


def normalize(p, y, x, mean, rstd, gamma, beta):
    cdef gn_desc d = _desc(p)
    cdef int code = _code(p.dtype)
    cdef void *py = _ptr(y)
    cdef void *px = _ptr(x)
    cdef void *pm = _ptr(mean)
    cdef void *pr = _ptr(rstd)
    cdef void *pg = _ptr(gamma)
    cdef void *pb = _ptr(beta)
    cdef gn_status st
    with nogil:
        st = _KT[code].normalize(py, px, pm, pr, pg, pb, &d)
    _check(st)


def backward(p, dx, dgamma, dbeta, dy, x, mean, rstd, gamma, beta=None, frozen=False):
    """dx, dgamma, dbeta.  frozen: mean and rstd are constants (stats="batch",
    a layer's running statistics in eval mode), so dx = act'(z) * dy * gamma *
    rstd (gn_backward_frozen); dgamma and dbeta are the same sums as without
    frozen."""
    cdef gn_desc d = _desc(p)
    _run_backward(_code(p.dtype), &d, dx, dgamma, dbeta, dy, x, mean, rstd, gamma, beta, frozen)


# ---- the stages (gn_native.stages) ------------------------------------------
# Arrays as for forward/backward; partials, sums and the statistics they
# take are float64, C-contiguous.

PARTIAL_LEN = GN_PARTIAL_LEN
DSUM_LEN = GN_DSUM_LEN


def stats_partial(p, partial, x):
    """partial (N, G, PARTIAL_LEN) float64 of x (gn_stats_partial)."""
    cdef gn_desc d = _desc(p)
    cdef int code = _code(p.dtype)
    cdef double *pp = <double *>_ptr(partial)
    cdef void *px = _ptr(x)
    cdef gn_status st
    with nogil:
        st = _KT[code].partial(pp, px, &d)
    _check(st)


def stats_merge(mean, rstd, var, partial, int64_t m, int64_t k, double eps):
    """float64 mean, rstd, var (k values each) from m x k partials (gn_stats_merge)."""
    cdef double *pm = <double *>_ptr(mean)
    cdef double *pr = <double *>_ptr(rstd)
    cdef double *pv = <double *>_ptr(var)
    cdef const double *pp = <const double *>_ptr(partial)
    cdef gn_status st
    with nogil:
        st = gn_stats_merge(pm, pr, pv, pp, m, k, eps)
    if st == GN_EINVAL:
        raise ValueError("partials: a count is negative or NaN, or an exponent is not a whole "
                         "number in [-4096, 4096]")
    _check(st)


def normalize_stats(p, y, x, mean, rstd, gamma, beta):
    """y from x and float64 mean/rstd (gn_normalize_stats)."""
    cdef gn_desc d = _desc(p)
    cdef int code = _code(p.dtype)
    cdef void *py = _ptr(y)
    cdef void *px = _ptr(x)
    cdef const double *pm = <const double *>_ptr(mean)
    cdef const double *pr = <const double *>_ptr(rstd)
    cdef void *pg = _ptr(gamma)
    cdef void *pb = _ptr(beta)
    cdef gn_status st
    with nogil:
        st = _KT[code].normalize_stats(py, px, pm, pr, pg, pb, &d)
    _check(st)


def backward_reduce(p, sums, dy, x, mean, rstd, gamma, beta):
    """sums (N, C, DSUM_LEN) float64 (gn_backward_reduce); mean/rstd float64."""
    cdef gn_desc d = _desc(p)
    cdef int code = _code(p.dtype)
    cdef double *ps = <double *>_ptr(sums)
    cdef void *pdy = _ptr(dy)
    cdef void *px = _ptr(x)
    cdef const double *pm = <const double *>_ptr(mean)
    cdef const double *pr = <const double *>_ptr(rstd)
    cdef void *pg = _ptr(gamma)
    cdef void *pb = _ptr(beta)
    cdef gn_status st
    with nogil:
        st = _KT[code].reduce(ps, pdy, px, pm, pr, pg, pb, &d)
    _check(st)


def backward_apply(p, dx, dy, x, mean, rstd, sums, gamma, beta):
    """dx from the sums of sums.shape[0] samples (gn_backward_apply)."""
    cdef gn_desc d = _desc(p)
    cdef int code = _code(p.dtype)
    cdef int64_t na = sums.shape[0]
    cdef void *pdx = _ptr(dx)
    cdef void *pdy = _ptr(dy)
    cdef void *px = _ptr(x)
    cdef const double *pm = <const double *>_ptr(mean)
    cdef const double *pr = <const double *>_ptr(rstd)
    cdef const double *ps = <const double *>_ptr(sums)
    cdef void *pg = _ptr(gamma)
    cdef void *pb = _ptr(beta)
    cdef gn_status st
    with nogil:
        st = _KT[code].apply(pdx, pdy, px, pm, pr, ps, na, pg, pb, &d)
    _check(st)


def param_grads(p, dgamma, dbeta, sums, rstd):
    """dgamma/dbeta from the sums of sums.shape[0] samples (gn_param_grads)."""
    cdef gn_desc d = _desc(p)
    cdef int code = _code(p.dtype)
    cdef int64_t na = sums.shape[0]
    cdef void *pdg = _ptr(dgamma)
    cdef void *pdb = _ptr(dbeta)
    cdef const double *ps = <const double *>_ptr(sums)
    cdef const double *pr = <const double *>_ptr(rstd)
    cdef gn_status st
    with nogil:
        st = _KT[code].param_grads(pdg, pdb, ps, pr, na, &d)
    _check(st)


def get_num_threads():
    return gn_get_num_threads()


def set_num_threads(int n):
    """n in 1..MAX_THREADS, or 0 for the default (gn_native.set_num_threads checks it)."""
    gn_set_num_threads(n)


def isa():
    return gn_isa().decode()


def set_isa(name):
    if gn_set_isa(name.encode()) != 0:
        raise ValueError(f"ISA {name!r} is unknown or not supported by this CPU")


def openmp_enabled():
    return bool(gn_openmp_enabled())


def version():
    return gn_version().decode()


# ---- fast paths -------------------------------------------------------------
# The common call (contiguous, aligned NumPy arrays of a supported dtype,
# plain int/float/str options) is recognized here without building a Plan,
# to keep the Python cost of a small call to a few microseconds.  These
# functions never raise for bad input: anything they do not recognize as
# valid returns None and the caller takes the general path, where
# gn_native._validate checks it and gives the error.

cdef extern from "numpy/arrayobject.h":
    object PyArray_NewLikeArray(cnp.ndarray prototype, cnp.NPY_ORDER order, void *descr,
                                int subok)
    enum: NPY_USERDEF   # the first type number of user-defined dtypes

cdef int _fast_code(cnp.ndarray a):
    """dtype code of a well-behaved array, or -1."""
    if not (cnp.PyArray_IS_C_CONTIGUOUS(a) and cnp.PyArray_ISALIGNED(a)
            and cnp.PyArray_ISNOTSWAPPED(a)):
        return -1
    cdef int t = cnp.PyArray_TYPE(a)
    cdef int i
    for i in range(GN_KERNEL_COUNT):
        if _type_num[i] == t:
            return i
    return -1


cdef bint _fast_param(p, int code, Py_ssize_t c, Py_ssize_t g, int *kind):
    """None, or a well-behaved 1-D array of length c (kind 1) or g (kind 2)."""
    if p is None:
        kind[0] = 0
        return True
    if not cnp.PyArray_CheckExact(p):
        return False
    cdef cnp.ndarray a = <cnp.ndarray>p
    if cnp.PyArray_NDIM(a) != 1 or _fast_code(a) != code:
        return False
    cdef Py_ssize_t n = cnp.PyArray_DIM(a, 0)
    if n == c:
        kind[0] = 1
    elif n == g:
        kind[0] = 2
    else:
        return False
    return True


cdef bint _fast_desc(cnp.ndarray x, n_groups, eps, stats, channel_axis, gn_desc *d):
    """Fill d from x and the options when all are plainly valid."""
    cdef int nd = cnp.PyArray_NDIM(x)
    if nd < 2 or type(n_groups) is not int or type(eps) is not float:
        return False
    # Python ints are compared before any conversion to C, so that a huge one
    # is passed on to the general path (a ValueError there), never an OverflowError
    if type(channel_axis) is not int or not -nd <= channel_axis < nd:
        return False
    cdef int ax = channel_axis
    cdef double e = eps
    if not (e > 0.0 and e < float("inf")) or n_groups <= 0:
        return False
    if ax == -1 or ax == nd - 1:
        ax = nd - 1
    elif ax != 1:
        return False
    if stats == "sample":
        d.stats = GN_STATS_SAMPLE
    elif stats == "batch":
        d.stats = GN_STATS_BATCH
    else:
        return False
    cdef int64_t spatial = 1
    cdef int i
    for i in range(2, nd) if ax == 1 else range(1, nd - 1):
        spatial *= cnp.PyArray_DIM(x, i)
    d.n = cnp.PyArray_DIM(x, 0)
    d.c = cnp.PyArray_DIM(x, ax)
    if n_groups > d.c:
        return False
    d.spatial = spatial
    d.groups = n_groups
    d.eps = e
    d.layout = GN_NHWC if (ax == nd - 1 and nd > 2) else GN_NCHW
    d.activation = GN_ACT_NONE    # calls with an activation take the general path
    if d.c % d.groups or d.n * d.c * d.spatial == 0:
        return False
    return True


cdef object _stat_array(gn_desc *d, int code):
    cdef cnp.npy_intp dims[2]
    cdef int typ = _stat_num[code]
    if d.stats == GN_STATS_BATCH:
        dims[0] = d.groups
        return cnp.PyArray_EMPTY(1, dims, typ, 0)
    dims[0] = d.n
    dims[1] = d.groups
    return cnp.PyArray_EMPTY(2, dims, typ, 0)


cdef object _empty_like_1d(cnp.npy_intp n, cnp.ndarray like):
    """A new 1-D array of n values of like's dtype (NumPy's own dtypes by type
    number; a user-defined one, bfloat16, through its descriptor)."""
    cdef int t = cnp.PyArray_TYPE(like)
    if t < NPY_USERDEF:
        return cnp.PyArray_EMPTY(1, &n, t, 0)
    return np.empty(n, like.dtype)


cdef bint _disjoint(cnp.ndarray a, cnp.ndarray b):
    cdef char *pa = <char *>cnp.PyArray_DATA(a)
    cdef char *pb = <char *>cnp.PyArray_DATA(b)
    return pa + cnp.PyArray_NBYTES(a) <= pb or pb + cnp.PyArray_NBYTES(b) <= pa


cdef object _fast_output(out, cnp.ndarray xa, int code, object other, tuple params):
    """The array a fast call writes: a new one like x when out is None; `out`
    itself when it is a plain writable array of x's shape and dtype that is x
    (or `other`) or overlaps neither, and overlaps none of the (contiguous or
    None) `params`; else None (the general path copies what overlaps)."""
    if out is None:
        return PyArray_NewLikeArray(xa, cnp.NPY_CORDER, NULL, 0)
    if not cnp.PyArray_CheckExact(out):
        return None
    cdef cnp.ndarray o = <cnp.ndarray>out
    if (_fast_code(o) != code or not cnp.PyArray_ISWRITEABLE(o)
            or not cnp.PyArray_SAMESHAPE(o, xa)):
        return None
    for src in (xa, other):
        if src is not None and o is not src and not _disjoint(o, <cnp.ndarray>src):
            return None
    for src in params:
        if src is not None and not _disjoint(o, <cnp.ndarray>src):
            return None
    return o


# activation= names and gn_native.h's values: the one list (_validate builds its Codes from it)
ACT_CODES = {"none": <int>GN_ACT_NONE, "silu": <int>GN_ACT_SILU, "gelu": <int>GN_ACT_GELU,
             "gelu_tanh": <int>GN_ACT_GELU_TANH, "relu": <int>GN_ACT_RELU}


cdef bint _fast_act(activation, gn_desc *d):
    """None or an activation's exact name (a str, not a subclass) into d."""
    if activation is None:
        d.activation = GN_ACT_NONE
        return True
    if type(activation) is not str:
        return False
    code = ACT_CODES.get(activation)
    if code is None:
        return False
    d.activation = <gn_activation><int>code
    return True


def forward_fast(x, n_groups, gamma, beta, eps, stats, channel_axis, out, activation=None):
    """(y, mean, rstd) for a plainly valid common call, else None."""
    if not cnp.PyArray_CheckExact(x):
        return None
    cdef cnp.ndarray xa = <cnp.ndarray>x
    cdef int code = _fast_code(xa)
    cdef gn_desc d
    cdef int kg, kb
    if code < 0 or not _fast_desc(xa, n_groups, eps, stats, channel_axis, &d):
        return None
    if not (_fast_act(activation, &d) and _fast_param(gamma, code, d.c, d.groups, &kg) and
            _fast_param(beta, code, d.c, d.groups, &kb)):
        return None
    if kg and kb and kg != kb:
        return None
    d.affine = GN_AFFINE_NONE if not (kg or kb) else (
        GN_AFFINE_CHANNEL if (kg or kb) == 1 or d.c == d.groups else GN_AFFINE_GROUP)
    ya_obj = _fast_output(out, xa, code, None, (gamma, beta))
    if ya_obj is None:
        return None
    cdef cnp.ndarray ya = <cnp.ndarray>ya_obj
    mean = _stat_array(&d, code)
    rstd = _stat_array(&d, code)
    _run_forward(code, &d, ya, mean, rstd, None, xa, gamma, beta)
    return ya, mean, rstd


cdef bint _fast_stat(a, gn_desc *d, int code):
    if not cnp.PyArray_CheckExact(a):
        return False
    cdef cnp.ndarray s = <cnp.ndarray>a
    cdef int typ = _stat_num[code]
    if not (cnp.PyArray_IS_C_CONTIGUOUS(s) and cnp.PyArray_ISALIGNED(s)
            and cnp.PyArray_ISNOTSWAPPED(s)) or cnp.PyArray_TYPE(s) != typ:
        return False
    if d.stats == GN_STATS_BATCH:
        return cnp.PyArray_NDIM(s) == 1 and cnp.PyArray_DIM(s, 0) == d.groups
    return (cnp.PyArray_NDIM(s) == 2 and cnp.PyArray_DIM(s, 0) == d.n
            and cnp.PyArray_DIM(s, 1) == d.groups)


def backward_fast(dy, x, mean, rstd, n_groups, gamma, stats, channel_axis, out, beta=None,
                  activation=None):
    """(dx, dgamma, dbeta) for a plainly valid common call, else None.  beta (used with an
    activation) must be None or of gamma's kind, or per channel without gamma."""
    if not (cnp.PyArray_CheckExact(x) and cnp.PyArray_CheckExact(dy)):
        return None
    cdef cnp.ndarray xa = <cnp.ndarray>x
    cdef cnp.ndarray ga = <cnp.ndarray>dy
    cdef int code = _fast_code(xa)
    cdef gn_desc d
    cdef int kg, kb
    if code < 0 or _fast_code(ga) != code or not cnp.PyArray_SAMESHAPE(ga, xa):
        return None
    if not _fast_desc(xa, n_groups, 1.0, stats, channel_axis, &d):
        return None
    if not (_fast_act(activation, &d) and _fast_param(gamma, code, d.c, d.groups, &kg)
            and _fast_param(beta, code, d.c, d.groups, &kb) and _fast_stat(mean, &d, code)
            and _fast_stat(rstd, &d, code)):
        return None
    if kb and kb != (kg or 1) and d.c != d.groups:
        return None
    d.affine = GN_AFFINE_NONE if not (kg or kb) else (
        GN_AFFINE_CHANNEL if (kg or kb) == 1 or d.c == d.groups else GN_AFFINE_GROUP)
    dxa_obj = _fast_output(out, xa, code, ga, (mean, rstd, gamma, beta))
    if dxa_obj is None:
        return None
    cdef cnp.ndarray dxa = <cnp.ndarray>dxa_obj
    cdef cnp.npy_intp plen = d.groups if kg == 2 else d.c
    dgamma = _empty_like_1d(plen, xa)
    dbeta = _empty_like_1d(plen, xa)
    _run_backward(code, &d, dxa, dgamma, dbeta, ga, xa, mean, rstd, gamma, beta)
    return dxa, dgamma, dbeta
