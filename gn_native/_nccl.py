"""Group Normalization of a batch split over GPUs: CuPy arrays, statistics through NCCL.

`gn_native.distributed` sends CuPy arrays here (same functions, same
arguments, ``comm=`` a ``cupy.cuda.nccl.NcclCommunicator``).  Each rank holds
a contiguous slice of the batch, on its own GPU: rank 0 the first samples,
then rank 1, and so on, in the communicator's rank order.

stats="batch" runs the stages of gn_native._gpu (the ones a single-GPU
stats="batch" call runs, one after another), with one NCCL allGather in the
middle, on CuPy's current stream:

    forward:  stats_partial (N_rank, G, 5) -> allGather -> (N_total, G, 5)
              -> stats_merge (in global sample order) -> normalize
    backward: backward_reduce (N_rank, C, 2) -> allGather -> (N_total, C, 2)
              -> backward_apply, param_grads

A sample's partial rows and sums depend on its own values only, and the merge
folds them in global sample order, so y, mean, rstd, dx, dgamma and dbeta are
bit-identical to one GPU's ``gn_native.group_norm_forward(..., stats="batch")``
(and backward) on the concatenated batch, whatever the number of ranks.
allGather, not allReduce: a reduction's order (hence its bits) depends on
NCCL's algorithm and the number of ranks.

Nothing here waits for the device: no copy of data-dependent values to the
host, no stream synchronization; the kernels and the collective are queued
on the current stream in order (and the temporaries come from CuPy's pool,
which orders their reuse on that stream).

Requirements NCCL imposes (an allGather sends the same count from every
rank): every rank passes the same local batch size N_rank, and the same C,
spatial shape, G, dtype, layout, stats, eps, activation and kind of
gamma/beta.  They are not checked across ranks (that needs a host round
trip); ranks that disagree make NCCL hang or mix up data.  Use
gn_native.distributed with NumPy arrays and mpi4py for uneven splits.

stats="sample" needs no other rank: the forward and dx never communicate;
dgamma and dbeta of the whole batch (param_grads="global", the default)
gather the sums and rstd of every sample.
"""
import warnings

import numpy as np

from . import _api, _gpu
from . import _gpu_kernels as K
from . import _validate as V

# ncclDataType_t values (nccl.h): used when CuPy's nccl module has no NCCL
# library to take them from (tests with a stand-in communicator).
_NCCL_FLOAT64 = 8


def _float64_code():
    try:
        with warnings.catch_warnings():     # CuPy warns when it finds no NCCL library
            warnings.simplefilter("ignore")
            from cupy.cuda import nccl
        return getattr(nccl, "NCCL_FLOAT64", _NCCL_FLOAT64)
    except Exception:      # no NCCL library: the stand-in communicators of the tests
        return _NCCL_FLOAT64


def _check_comm(comm, x):
    """What can be checked without the other ranks or the device: comm's type and device."""
    if not callable(getattr(comm, "allGather", None)) or not callable(getattr(comm, "size", None)):
        raise TypeError("comm must be a cupy.cuda.nccl.NcclCommunicator (for CuPy arrays), got "
                        f"{type(comm).__name__}")
    dev = getattr(comm, "device_id", None)
    if callable(dev) and x is not None and hasattr(x, "device") and dev() != x.device.id:
        raise ValueError(f"comm is on device {dev()}, x on device {x.device.id}: NCCL needs the "
                         "arrays on the communicator's device")


def gatherer(ex, comm):
    """local (n, ...) float64 -> every rank's, (size * n, ...) in rank order, on the device.

    One allGather on the executor's stream (ex: gn_native._gpu's CuPy
    executor, or the tests' host one), no host synchronization."""
    size, code = int(comm.size()), _float64_code()

    def gather(local):
        recv = ex.empty((size,) + tuple(local.shape), np.float64)
        comm.allGather(ex.ptr(local), ex.ptr(recv), int(local.size), code, ex.stream_ptr())
        return recv.reshape((size * local.shape[0],) + tuple(local.shape[1:]))
    return gather


def forward_stages(ex, comm, plan, y, mean, rstd, x, gamma, beta):
    """The forward of stats="batch" over comm's ranks, on executor ex (kernel layout, preallocated)."""
    _gpu.run_forward_stages(ex, plan, y, mean, rstd, x, gamma, beta, gather=gatherer(ex, comm))


def backward_stages(ex, comm, plan, dx, dgamma, dbeta, dy, x, mean, rstd, gamma, beta,
                    param_grads="global"):
    """The backward over comm's ranks on executor ex: dx, and dgamma/dbeta of the whole batch
    ("global") or of this rank's samples ("local").  mean/rstd in the statistics dtype."""
    gather = gatherer(ex, comm)
    if plan.stats == "batch":
        if param_grads == "global":
            _gpu.run_backward_stages(ex, plan, dx, dgamma, dbeta, dy, x, mean, rstd, gamma, beta=beta,
                                     gather=gather)
            return
        sums = ex.empty((plan.n, plan.c, K.DSUM_LEN), np.float64)
        _gpu.run_backward_reduce(ex, plan, sums, dy, x, mean, rstd, gamma, beta)
        _gpu.run_backward_apply(ex, plan, dx, dy, x, mean, rstd, gather(sums), gamma, beta)
        _gpu.run_param_grads(ex, plan, dgamma, dbeta, sums, rstd)
        return
    # stats="sample": dx (and the local gradients) as one GPU's call, without communication
    _gpu.run_backward(ex, plan, dx, dgamma, dbeta, dy, x, mean, rstd, gamma, beta=beta)
    if param_grads == "global":
        sums = ex.empty((plan.n, plan.c, K.DSUM_LEN), np.float64)
        _gpu.run_backward_reduce(ex, plan, sums, dy, x, mean, rstd, gamma, beta)
        _gpu.run_param_grads(ex, plan, dgamma, dbeta, gather(sums), gather(rstd.astype(np.float64)))


def _kernel_arrays(xp, p, x, out, *more):
    layout, to_k, from_k = _api._layout(xp, x, p.channel_axis)
    p = V.with_layout(p, layout)
    ks = [_api._contig(xp, to_k(a)) for a in (x,) + more]
    return p, to_k, from_k, ks


def _require_cupy(kind, what):
    if kind != "cupy":
        raise TypeError(f"gn_native._nccl takes CuPy arrays, got {what} of kind {kind!r}")


def group_norm_forward(x, n_groups, gamma=None, beta=None, eps=1e-5, *, comm, stats="batch",
                       channel_axis=1, activation=None, out=None):
    """Group-normalize this rank's slice of a batch split over GPUs (CuPy arrays, NCCL).

    Every rank of `comm` makes the call (a collective) with the same local
    batch size and the same C, spatial shape, `n_groups`, dtype,
    `channel_axis`, `stats`, `eps`, `activation` and kind of `gamma`/`beta`
    (not checked across ranks: see the module docstring).  With
    ``stats="batch"`` every result is bit-identical to one GPU's
    ``gn_native.group_norm_forward(..., stats="batch")`` on the concatenated
    batch.

    Parameters
    ----------
    x : cupy.ndarray
        This rank's samples, (N_rank, C, *spatial) (or (N_rank, *spatial, C)
        with ``channel_axis=-1``), on the communicator's device.
    n_groups : int
        Number of groups G; it must divide C.
    gamma, beta : cupy.ndarray, optional
        Scale and shift, None or of shape (C,) or (G,); the same on every rank.
    eps : float, default 1e-5
        Added to the variance; positive and finite.
    comm : cupy.cuda.nccl.NcclCommunicator
        The communicator of the ranks holding the batch; rank order is batch order.
    stats : {"batch", "sample"}, default "batch"
        ``"batch"``: per group over the whole batch (one allGather of float64
        partials, N_total x G x 5 values, on CuPy's current stream).
        ``"sample"``: per sample; never communicates.
    channel_axis : {1, -1}, default 1
        Axis of the channels.
    activation : {None, "silu", "gelu", "gelu_tanh", "relu"}, default None
        Applied after the affine step, in the same pass.
    out : cupy.ndarray, optional
        Array of `x`'s shape and dtype to write y in (it may be `x`).

    Returns
    -------
    y : cupy.ndarray
        This rank's normalized slice.
    mean, rstd : cupy.ndarray
        (G,) for ``stats="batch"`` (the same on every rank), (N_rank, G) for
        ``stats="sample"``; float64 for float64 `x`, float32 otherwise.

    Raises
    ------
    TypeError
        If `x` is not a CuPy array or `comm` has no ``allGather``.
    ValueError
        If an argument has a bad value, or `comm` is on another device than `x`.
    """
    kind, p, x, gamma, beta, _, _, _, _, _, _ = V.forward_call(
        x, n_groups, gamma, beta, eps, stats, channel_axis, out, None, None, activation=activation)
    _require_cupy(kind, "x")
    _check_comm(comm, x)
    if p.stats == "sample":
        return _api.group_norm_forward(x, n_groups, gamma, beta, eps, stats="sample",
                                       channel_axis=channel_axis, activation=activation, out=out)
    xp, _ = _api._backend(kind)
    p, to_k, from_k, (xk,) = _kernel_arrays(xp, p, x, out)
    gamma, beta = V.expand_affine(xp, p, gamma), V.expand_affine(xp, p, beta)
    yk, copy_back = _api._output(xp, out, to_k, xk, (xk,))
    mean = xp.empty(p.stat_shape, p.stat_dtype)
    rstd = xp.empty(p.stat_shape, p.stat_dtype)
    if p.size:
        forward_stages(_gpu._EXEC, comm, p, yk, mean, rstd, xk, _api._param(xp, gamma, yk),
                       _api._param(xp, beta, yk))
    else:       # every rank is empty alike (equal shapes): nothing to gather
        mean[...] = np.nan
        rstd[...] = np.nan
    return _api._result(xp, out, yk, copy_back, from_k), mean, rstd


def group_norm(x, n_groups, gamma=None, beta=None, eps=1e-5, *, comm, stats="batch",
               channel_axis=1, activation=None, out=None):
    """`group_norm_forward`'s y alone."""
    return group_norm_forward(x, n_groups, gamma, beta, eps, comm=comm, stats=stats,
                              channel_axis=channel_axis, activation=activation, out=out)[0]


def group_norm_backward(dy, x, mean, rstd, n_groups, gamma=None, beta=None, *, comm,
                        stats="batch", channel_axis=1, activation=None, out=None,
                        param_grads="global"):
    """Gradients of `group_norm_forward` over GPUs, given this rank's dL/dy (CuPy, NCCL).

    dx is this rank's slice of the whole batch's dx; with the default
    ``param_grads="global"``, dgamma and dbeta are those of the whole batch,
    the same on every rank.  With ``stats="batch"`` each is bit-identical to
    one GPU's ``gn_native.group_norm_backward(..., stats="batch")`` on the
    concatenated batch.  The same requirements as `group_norm_forward`.

    Parameters
    ----------
    dy : cupy.ndarray
        Gradient of the loss with respect to this rank's y, shaped as `x`.
    x : cupy.ndarray
        This rank's input given to `group_norm_forward`.
    mean, rstd : cupy.ndarray
        What `group_norm_forward` returned on this rank.
    n_groups : int
        Number of groups G.
    gamma, beta : cupy.ndarray, optional
        As in the forward call (`beta` is read only with an `activation`).
    comm : cupy.cuda.nccl.NcclCommunicator
        The same communicator as the forward call.
    stats : {"batch", "sample"}, default "batch"
        As in the forward call.  ``"batch"``: one allGather of the float64
        sums (N_total x C x 2).  ``"sample"``: dx needs no other rank;
        global dgamma/dbeta gather the sums and rstd of every sample.
    channel_axis : {1, -1}, default 1
        As in the forward call.
    activation : {None, "silu", "gelu", "gelu_tanh", "relu"}, default None
        As in the forward call.
    out : cupy.ndarray, optional
        Array of `x`'s shape and dtype to receive dx.
    param_grads : {"global", "local"}, default "global"
        ``"global"``: dgamma and dbeta of the whole batch.  ``"local"``: of
        this rank's samples only (``stats="sample"`` then never communicates).

    Returns
    -------
    dx : cupy.ndarray
        This rank's slice of the gradient with respect to x.
    dgamma, dbeta : cupy.ndarray
        `gamma`'s shape, or (C,) without `gamma`.

    Raises
    ------
    TypeError
        If the arrays are not CuPy arrays or `comm` has no ``allGather``.
    ValueError
        If an argument has a bad value, or `comm` is on another device than `x`.
    """
    if param_grads not in ("global", "local"):
        raise ValueError(f"param_grads must be 'global' or 'local', got {param_grads!r}")
    kind, p, dy, x, mean, rstd, gamma, beta = V.backward_call(
        dy, x, mean, rstd, n_groups, gamma, stats, channel_axis, out, False, beta, activation)
    _require_cupy(kind, "x")
    _check_comm(comm, x)
    if p.stats == "sample" and param_grads == "local":
        return _api.group_norm_backward(dy, x, mean, rstd, n_groups, gamma, beta, stats="sample",
                                        channel_axis=channel_axis, activation=activation, out=out)
    xp, _ = _api._backend(kind)
    p, to_k, from_k, (xk, dyk) = _kernel_arrays(xp, p, x, out, dy)
    dxk, copy_back = _api._output(xp, out, to_k, xk, (xk, dyk))
    dgamma, dbeta, finish = _api.param_grad_arrays(xp, p, gamma, beta)
    if p.size:
        gamma, beta = V.expand_affine(xp, p, gamma), V.expand_affine(xp, p, beta)
        backward_stages(_gpu._EXEC, comm, p, dxk, dgamma, dbeta, dyk, xk,
                        _api._stat_in(xp, mean, p, dxk), _api._stat_in(xp, rstd, p, dxk),
                        _api._param(xp, gamma, dxk), _api._param(xp, beta, dxk), param_grads)
    dgamma, dbeta = finish(dgamma, dbeta)
    return _api._result(xp, out, dxk, copy_back, from_k), dgamma, dbeta
