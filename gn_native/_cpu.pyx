# cython: language_level=3
"""CPU backend: converts arrays to pointers and calls the C core without the GIL.

Arguments were checked by gn_native._validate; arrays arrive C-contiguous,
in the kernel's layout and of the right dtypes (see gn_native._api).
"""
cimport numpy as cnp
from libc.stdint cimport uint16_t

from gn_native.capi cimport *

cnp.import_array()

# dtype codes: float32, float64, float16, bfloat16
DEF F32 = 0
DEF F64 = 1
DEF F16 = 2
DEF BF16 = 3

_STATS = {"sample": GN_STATS_SAMPLE, "batch": GN_STATS_BATCH}
_AFFINE = {"none": GN_AFFINE_NONE, "channel": GN_AFFINE_CHANNEL, "group": GN_AFFINE_GROUP}
_LAYOUT = {"nchw": GN_NCHW, "nhwc": GN_NHWC}


cdef int _code(dtype) except -1:
    c = dtype.char
    if c == "f":
        return F32
    if c == "d":
        return F64
    if c == "e":
        return F16
    if dtype.name == "bfloat16":
        return BF16
    raise TypeError(f"unsupported dtype {dtype}")


cdef gn_desc _desc(p):
    cdef gn_desc d
    d.n = p.n
    d.c = p.c
    d.spatial = p.spatial
    d.groups = p.groups
    d.eps = p.eps
    d.layout = _LAYOUT[p.layout]
    d.stats = _STATS[p.stats]
    d.affine = _AFFINE[p.affine]
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


def forward(p, y, mean, rstd, x, gamma, beta, var=None):
    """Statistics and y; `var` (optional, shaped like mean) gets the biased variance."""
    cdef gn_desc d = _desc(p)
    cdef int code = _code(p.dtype)
    cdef void *py = _ptr(y)
    cdef void *pm = _ptr(mean)
    cdef void *pr = _ptr(rstd)
    cdef void *pv = _ptr(var)
    cdef void *px = _ptr(x)
    cdef void *pg = _ptr(gamma)
    cdef void *pb = _ptr(beta)
    cdef gn_status st
    with nogil:
        if code == F32:
            st = gn_forward_var_f32(<float *>py, <float *>pm, <float *>pr, <float *>pv,
                                    <float *>px, <float *>pg, <float *>pb, &d)
        elif code == F64:
            st = gn_forward_var_f64(<double *>py, <double *>pm, <double *>pr, <double *>pv,
                                    <double *>px, <double *>pg, <double *>pb, &d)
        elif code == F16:
            st = gn_forward_var_f16(<uint16_t *>py, <float *>pm, <float *>pr, <float *>pv,
                                    <uint16_t *>px, <uint16_t *>pg, <uint16_t *>pb, &d)
        else:
            st = gn_forward_var_bf16(<uint16_t *>py, <float *>pm, <float *>pr, <float *>pv,
                                     <uint16_t *>px, <uint16_t *>pg, <uint16_t *>pb, &d)
    _check(st)


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
        if code == F32:
            st = gn_normalize_f32(<float *>py, <float *>px, <float *>pm, <float *>pr,
                                  <float *>pg, <float *>pb, &d)
        elif code == F64:
            st = gn_normalize_f64(<double *>py, <double *>px, <double *>pm, <double *>pr,
                                  <double *>pg, <double *>pb, &d)
        elif code == F16:
            st = gn_normalize_f16(<uint16_t *>py, <uint16_t *>px, <float *>pm, <float *>pr,
                                  <uint16_t *>pg, <uint16_t *>pb, &d)
        else:
            st = gn_normalize_bf16(<uint16_t *>py, <uint16_t *>px, <float *>pm, <float *>pr,
                                   <uint16_t *>pg, <uint16_t *>pb, &d)
    _check(st)


def backward(p, dx, dgamma, dbeta, dy, x, mean, rstd, gamma):
    cdef gn_desc d = _desc(p)
    cdef int code = _code(p.dtype)
    cdef void *pdx = _ptr(dx)
    cdef void *pdg = _ptr(dgamma)
    cdef void *pdb = _ptr(dbeta)
    cdef void *pdy = _ptr(dy)
    cdef void *px = _ptr(x)
    cdef void *pm = _ptr(mean)
    cdef void *pr = _ptr(rstd)
    cdef void *pg = _ptr(gamma)
    cdef gn_status st
    with nogil:
        if code == F32:
            st = gn_backward_f32(<float *>pdx, <float *>pdg, <float *>pdb, <float *>pdy,
                                 <float *>px, <float *>pm, <float *>pr, <float *>pg, &d)
        elif code == F64:
            st = gn_backward_f64(<double *>pdx, <double *>pdg, <double *>pdb, <double *>pdy,
                                 <double *>px, <double *>pm, <double *>pr, <double *>pg, &d)
        elif code == F16:
            st = gn_backward_f16(<uint16_t *>pdx, <uint16_t *>pdg, <uint16_t *>pdb,
                                 <uint16_t *>pdy, <uint16_t *>px, <float *>pm, <float *>pr,
                                 <uint16_t *>pg, &d)
        else:
            st = gn_backward_bf16(<uint16_t *>pdx, <uint16_t *>pdg, <uint16_t *>pdb,
                                  <uint16_t *>pdy, <uint16_t *>px, <float *>pm, <float *>pr,
                                  <uint16_t *>pg, &d)
    _check(st)


def get_num_threads():
    return gn_get_num_threads()


def set_num_threads(int n):
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
