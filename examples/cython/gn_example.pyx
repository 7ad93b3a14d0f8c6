# cython: language_level=3
"""gn_native's C API from Cython: group-normalize a float32 batch without the GIL.

The declarations come from gn_native itself (gn_native/capi.pxd), so this
module needs gn_native's header and library at build time, not its Python
code: see setup.py beside this file.  Arguments are checked only as far as
building the call needs; the C core validates the descriptor and answers
GN_EINVAL, turned into ValueError here.
"""
import numpy as np

from gn_native.capi cimport (GN_AFFINE_CHANNEL, GN_AFFINE_NONE, GN_EINVAL, GN_ENOMEM, GN_NCHW,
                             GN_OK, GN_STATS_SAMPLE, gn_desc, gn_forward_f32, gn_status,
                             gn_strerror)


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
    if st == GN_EINVAL:
        raise ValueError(f"gn_forward_f32: {gn_strerror(st).decode()}")
    if st == GN_ENOMEM:
        raise MemoryError("gn_forward_f32: out of memory")
    if st != GN_OK:
        raise RuntimeError(f"gn_forward_f32: {gn_strerror(st).decode()}")
    return y, mean, rstd
