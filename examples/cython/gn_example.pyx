# cython: language_level=3
"""gn_native's C API from Cython: group-normalize a float32 batch without the GIL.

The declarations come from gn_native itself (gn_native/capi.pxd), so this
module needs gn_native's header and library at build time, not its Python
code: see setup.py beside this file.  Arguments are checked only as far as
building the call needs; the C core validates the descriptor and answers
GN_EINVAL, turned into ValueError here.
"""
import numpy as np

from cython.parallel cimport prange
from libc.string cimport memset

from gn_native.capi cimport (GN_AFFINE_CHANNEL, GN_AFFINE_NONE, GN_EINVAL, GN_ENOMEM, GN_NCHW,
                             GN_NHWC, GN_OK, GN_STATS_SAMPLE, gn_desc, gn_forward_f32,
                             gn_status, gn_strerror)


cdef float *_data(float[::1] a) noexcept:
    return &a[0] if a.shape[0] else NULL


def group_norm_f32(x, int groups, gamma=None, beta=None, double eps=1e-5):
    """(y, mean, rstd) of float32 x shaped (N, C, *spatial), per (sample, group).

    gamma and beta are None or per channel, shape (C,).  mean and rstd have
    shape (N, groups).
    """
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim < 2:
        raise ValueError(f"x must be (N, C, *spatial), got shape {x.shape}")
    n, c = x.shape[0], x.shape[1]
    y = np.empty_like(x)
    mean = np.empty((n, max(groups, 0)), np.float32)
    rstd = np.empty_like(mean)
    cdef float[::1] xv = x.reshape(-1), yv = y.reshape(-1)
    cdef float[::1] mv = mean.reshape(-1), rv = rstd.reshape(-1)
    cdef float[::1] gv = None, bv = None
    if gamma is not None:
        gv = np.ascontiguousarray(gamma, dtype=np.float32).reshape(-1)
    if beta is not None:
        bv = np.ascontiguousarray(beta, dtype=np.float32).reshape(-1)
    for name, p in (("gamma", gv), ("beta", bv)):
        if p is not None and p.shape[0] != c:
            raise ValueError(f"{name} must have shape ({c},)")

    cdef gn_desc d
    memset(&d, 0, sizeof(d))   # every member zero: those set below, and any a newer header adds
    d.n = n
    d.c = c
    d.spatial = int(np.prod(x.shape[2:], dtype=np.int64))
    d.groups = groups
    d.eps = eps
    d.layout = GN_NCHW
    d.stats = GN_STATS_SAMPLE
    d.affine = GN_AFFINE_NONE if gv is None and bv is None else GN_AFFINE_CHANNEL
    cdef float *pg = _data(gv) if gv is not None else NULL
    cdef float *pb = _data(bv) if bv is not None else NULL
    cdef float *py = _data(yv)
    cdef float *pm = _data(mv)
    cdef float *pr = _data(rv)
    cdef const float *px = _data(xv)
    cdef gn_status st
    with nogil:
        st = gn_forward_f32(py, pm, pr, px, pg, pb, &d)
    _raise_for(st)
    return y, mean, rstd


cdef _raise_for(gn_status st):
    if st == GN_EINVAL:
        raise ValueError(f"gn_forward_f32: {gn_strerror(st).decode()}")
    if st == GN_ENOMEM:
        raise MemoryError("gn_forward_f32: out of memory")
    if st != GN_OK:
        raise RuntimeError(f"gn_forward_f32: {gn_strerror(st).decode()}")


def group_norm_each_f32(x, int groups, bint channels_last=False, int nthreads=4):
    """(y, mean, rstd) of float32 x, one C call per sample from a prange team.

    The pattern of a pipeline that already parallelizes over its own items:
    each thread of the caller's OpenMP team normalizes one sample (N = 1),
    inside the team; the core then runs each call on its calling thread.
    x is (N, C, *spatial), or (N, *spatial, C) with channels_last.
    """
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim < 2:
        raise ValueError(f"x must have a batch and a channel axis, got shape {x.shape}")
    if groups <= 0:
        raise ValueError(f"groups must be positive, got {groups}")
    cdef Py_ssize_t n = x.shape[0], i
    y = np.empty_like(x)
    mean = np.empty((n, max(groups, 0)), np.float32)
    rstd = np.empty_like(mean)
    cdef gn_desc d
    memset(&d, 0, sizeof(d))   # every member zero: those set below, and any a newer header adds
    d.n = 1
    d.c = x.shape[x.ndim - 1] if channels_last else x.shape[1]
    d.spatial = (x.size // n // d.c) if n and d.c else 0
    d.groups = groups
    d.eps = 1e-5
    d.layout = GN_NHWC if channels_last else GN_NCHW
    d.stats = GN_STATS_SAMPLE
    d.affine = GN_AFFINE_NONE
    cdef Py_ssize_t per = d.c * d.spatial
    cdef float[::1] xv = x.reshape(-1), yv = y.reshape(-1)
    cdef float[::1] mv = mean.reshape(-1), rv = rstd.reshape(-1)
    cdef int err = 0      # the statuses OR-ed (a prange reduction)
    for i in prange(n, nogil=True, num_threads=nthreads, schedule="static", chunksize=1):
        err |= <int>gn_forward_f32(&yv[i * per] if per else NULL, &mv[i * groups],
                                   &rv[i * groups], &xv[i * per] if per else NULL, NULL, NULL,
                                   &d)
    _raise_for(GN_EINVAL if err & GN_EINVAL else <gn_status>err)
    return y, mean, rstd
