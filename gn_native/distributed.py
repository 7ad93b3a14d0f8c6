"""Group Normalization over MPI ranks (mpi4py): the whole batch's statistics, exactly.

Each rank holds a contiguous slice of the batch, the ranks in rank order
being the batch in order.  With ``stats="batch"`` every result (y, mean,
rstd, dx, dgamma, dbeta) is bit-identical to one single-process call on
the concatenated batch, for any number of ranks and any split, because
only the transport differs from that call (gn_native.stages):

    forward :  stats_partial (local) -> Allgatherv of the float64 partials
               -> stats_merge in global sample order -> normalize (float64 stats)
    backward:  backward_reduce (local) -> Allgatherv of the float64 sums
               -> backward_apply with the whole batch's sums -> param_grads

Never ``Allreduce(MPI.SUM)``: its order of additions, and so its bits, depend
on the number of ranks and on the MPI library's tuning.  ``stats="sample"``
needs nobody else's data: its forward and its dx never communicate.

Before any data moves, the ranks agree in one small ``allgather``: each
sends whether its own checks (and local stage) passed, and the call's
signature (C, spatial shape, G, dtype, layout, stats, affine, activation,
eps).  A rank that refused the call, or a mismatch, makes every rank raise,
so that no rank is left waiting in a collective.

mpi4py is imported at the first call, which without it raises an ImportError
saying ``pip install "gn_native[mpi]"``; neither ``import gn_native`` nor
``import gn_native.distributed`` imports it (nor initializes MPI).
"""
import builtins
import dataclasses

import numpy as np

from . import _api, _interop
from . import _validate as V
from .layer import GroupNorm

MPI = None    # mpi4py.MPI, imported at the first call (importing it initializes MPI)

try:
    from . import stages as _stages
except ImportError:   # pragma: no cover - the stage API lands with issue 14's core part
    _stages = None

__all__ = ["group_norm", "group_norm_forward", "group_norm_backward", "SyncGroupNorm"]

_INSTALL = 'gn_native.distributed needs mpi4py and an MPI library: pip install "gn_native[mpi]"'


def _require_mpi():
    """mpi4py.MPI, imported on first use; without mpi4py, an ImportError saying what
    to install."""
    global MPI
    if MPI is None:
        try:
            from mpi4py import MPI as mpi
        except ImportError as e:
            raise ImportError(f"{_INSTALL} ({e})") from e
        MPI = mpi
    if _stages is None:   # pragma: no cover
        raise ImportError("gn_native.stages is missing from this build of gn_native")
    return MPI


def _check_comm(comm):
    """An mpi4py intracommunicator (its size, its rank); anything else is refused
    before any collective, on the rank that passed it."""
    MPI = _require_mpi()
    if not isinstance(comm, MPI.Comm):
        raise TypeError(f"comm must be an mpi4py communicator (mpi4py.MPI.Comm, such as "
                        f"MPI.COMM_WORLD), got {type(comm).__name__}")
    if comm == MPI.COMM_NULL:
        raise ValueError("comm is MPI.COMM_NULL; pass a communicator of the ranks that "
                         "hold the batch, such as MPI.COMM_WORLD")
    if comm.Is_inter():
        raise ValueError("comm must be an intracommunicator (the ranks holding the batch), "
                         "got an intercommunicator")
    return comm.Get_size(), comm.Get_rank()


def _is_cupy(a):
    return type(a).__module__.startswith("cupy")


def _nccl():
    """gn_native._nccl (the CuPy/NCCL transport), or a clear refusal without it."""
    try:
        from . import _nccl
    except ImportError:
        raise NotImplementedError(
            "gn_native.distributed: CuPy arrays need the NCCL transport (gn_native._nccl), "
            "which this build lacks; pass NumPy arrays (x.get()) to run over MPI") from None
    return _nccl


# ---- agreement ------------------------------------------------------------------

def _signature(p):
    """What every rank of one call must share (all but N)."""
    ax = "first" if p.channel_axis == 1 else "last"
    spatial = tuple(s for i, s in enumerate(p.shape) if i not in (0, p.channel_axis))
    return dict(C=p.c, spatial=spatial, n_groups=p.groups, dtype=str(p.dtype),
                channel_axis=ax, stats=str(p.stats), affine=str(p.affine),
                activation=str(p.activation), eps=p.eps)


def _describe(e):
    return f"{type(e).__name__}: {e}"


def _agree(comm, error, sig, n):
    """One allgather of every rank's (error, signature, N): raise the same error on
    every rank when one rank failed or the ranks disagree; else the N of each rank.

    The rank that failed re-raises its own exception; the others raise one of
    its builtin class (RuntimeError for others), naming the rank."""
    rows = comm.allgather((None if error is None else _describe(error),
                           None if error is None else type(error).__name__, sig, n))
    failed = [(r, msg, cls) for r, (msg, cls, _, _) in enumerate(rows) if msg is not None]
    if error is not None:
        raise error
    if failed:
        r, msg, cls = failed[0]
        exc = getattr(builtins, cls, None)
        if not (isinstance(exc, type) and issubclass(exc, Exception)):
            exc = RuntimeError
        more = f" (and {len(failed) - 1} more rank(s))" if len(failed) > 1 else ""
        raise exc(f"gn_native.distributed: rank {r} refused the call{more}: {msg}")
    ref = rows[0][2]
    for r, (_, _, s, _) in enumerate(rows):
        if s != ref:
            diff = ", ".join(f"{k}={s[k]!r} on rank {r} but {ref[k]!r} on rank 0"
                             for k in ref if s[k] != ref[k])
            raise ValueError(f"gn_native.distributed: the ranks' calls disagree: {diff}")
    return [row[3] for row in rows]


def _allgatherv(comm, local, counts):
    """Rows of every rank, in rank order: (sum(counts), *local.shape[1:]) float64."""
    local = np.ascontiguousarray(local, dtype=np.float64)
    row = int(np.prod(local.shape[1:], dtype=np.int64))
    out = np.empty((sum(counts),) + local.shape[1:], np.float64)
    sizes = [c * row for c in counts]
    displs = np.concatenate(([0], np.cumsum(sizes)[:-1])).astype(np.int64).tolist()
    comm.Allgatherv(local, [out, sizes, displs, MPI.DOUBLE])
    return out


# ---- forward --------------------------------------------------------------------

@dataclasses.dataclass
class _Forward:
    x: object             # the input as an array (the layer keeps it)
    y: object
    mean: object          # stat dtype, as group_norm_forward returns it
    rstd: object
    plan: object
    whole: tuple = None   # (mean, var) of the whole batch, stat dtype (running statistics)
    counts: list = None   # N of each rank


def _stats_mode(stats):
    """(stats as a Code, None), or ("batch", the error) for a bad value: a rank that
    got a bad `stats` still joins the agreement of the others (most likely "batch",
    the default), so that every rank raises; a rank given "sample" joins none."""
    try:
        return V.check_stats(stats), None
    except (TypeError, ValueError) as e:
        return V.STATS_CODES["batch"], e


def _forward(comm, x, n_groups, gamma, beta, eps, stats, channel_axis, activation, out,
             check=None, want_var=False):
    """The distributed forward on NumPy arrays; `check` (the layer's own checks) runs
    where a failure is agreed on by every rank."""
    size, _ = _check_comm(comm)
    st, bad = _stats_mode(stats)
    needs_comm = size > 1 and (st == "batch" or want_var)
    error = sig = p = part = None
    try:
        if bad is not None:
            raise bad
        if check is not None:
            x = check(x)
        _, p, x, gamma, beta, *_ = V.forward_call(x, n_groups, gamma, beta, eps, stats,
                                                  channel_axis, out, None, None,
                                                  activation=activation)
        sig = _signature(p)
        if st == "batch" or want_var:
            part = _stages.stats_partial(x, p.groups, eps=p.eps, channel_axis=channel_axis)
    except Exception as e:
        if not needs_comm:
            raise
        error = e
    if st == "sample" and not want_var:
        # each sample's own statistics: the single-process call, here, bit for bit
        y, mean, rstd = _api.group_norm_forward(x, n_groups, gamma, beta, eps, stats="sample",
                                                channel_axis=channel_axis, out=out,
                                                activation=activation)
        return _Forward(x, y, mean, rstd, p)
    counts = [p.n] if not needs_comm else _agree(comm, error, sig, None if p is None else p.n)
    if needs_comm:     # every rank's partials, in global sample order
        part = _allgatherv(comm, part, counts)
    mean64, rstd64, var64 = _stages.stats_merge(part if st == "batch" else part[None], eps=p.eps)
    sd = p.stat_dtype
    # the running statistics' inputs: the whole batch's (for "sample", every sample's)
    whole = (mean64.astype(sd), var64.astype(sd)) if want_var else None
    if st == "sample" and needs_comm:   # this rank's rows of every sample's statistics
        start = sum(counts[:comm.Get_rank()])
        mean64, rstd64 = mean64[start:start + p.n], rstd64[start:start + p.n]
    y = _stages.normalize(x, mean64, rstd64, p.groups, gamma, beta, stats=st,
                          channel_axis=channel_axis, activation=activation, out=out)
    return _Forward(x, y, mean64.astype(sd), rstd64.astype(sd), p, whole, counts)


def _framework_in(x, arrays):
    """A torch/JAX x: the call's arrays as NumPy views, and its kind for the results."""
    fw = _interop.framework(x)
    if fw is None:
        return None, arrays
    return fw, _api._numpy_args(arrays)


def group_norm_forward(x, n_groups, gamma=None, beta=None, eps=1e-5, *, comm,
                       stats="batch", channel_axis=1, activation=None, out=None):
    """Group-normalize this rank's slice of a batch split over MPI ranks.

    Each rank of `comm` holds a contiguous slice of the batch (rank 0 the
    first samples, then rank 1, ...; any split, a rank may hold none).  With
    ``stats="batch"`` the statistics are those of the whole batch, and every
    result is bit-identical to ``gn_native.group_norm_forward`` on the
    concatenated batch, whatever the number of ranks and the split.  Every
    rank of `comm` must make the call (a collective), with the same C,
    spatial shape, `n_groups`, dtype, `channel_axis`, `stats`, `eps`,
    `activation` and kind of `gamma`/`beta`; a rank that refuses the call or
    disagrees makes every rank raise, before any data moves.

    Parameters
    ----------
    x : array_like
        This rank's samples: (N_rank, C, *spatial), or (N_rank, *spatial,
        C) with ``channel_axis=-1``; float16, bfloat16, float32 or float64.
    n_groups : int
        Number of groups G; it must divide C.
    gamma, beta : array_like, optional
        Scale and shift, None or of shape (C,) or (G,); the same on every
        rank (as a data-parallel model keeps them).
    eps : float, default 1e-5
        Added to the variance; positive and finite.
    comm : mpi4py.MPI.Comm
        The intracommunicator of the ranks holding the batch (such as
        ``MPI.COMM_WORLD``); ranks in rank order are the batch in order.
    stats : {"batch", "sample"}, default "batch"
        ``"batch"``: per group over the whole batch (one Allgatherv of
        float64 partials, N_total x G x 5 values).  ``"sample"``: per
        sample, as torch; needs no other rank and never communicates.
    channel_axis : {1, -1}, default 1
        Axis of the channels.
    activation : {None, "silu", "gelu", "gelu_tanh", "relu"}, default None
        Applied after the affine step, in the same pass.
    out : ndarray, optional
        Array of `x`'s shape and dtype to write y in (it may be `x`).

    Returns
    -------
    y : ndarray
        This rank's normalized slice, `x`'s shape and dtype.
    mean, rstd : ndarray
        (G,) for ``stats="batch"`` (the same on every rank), (N_rank, G)
        for ``stats="sample"``; float64 for float64 `x`, float32 otherwise
        (the float64 merge rounded), as ``gn_native.group_norm_forward``.

    Raises
    ------
    ImportError
        If mpi4py is not installed (``pip install "gn_native[mpi]"``).
    TypeError
        If `comm` is not an mpi4py communicator (on that rank only: the
        others cannot be told), or an argument has the wrong type (on every
        rank).
    ValueError
        If an argument has a bad value on some rank, or the ranks' calls
        disagree (C, spatial shape, G, dtype, layout, stats, affine,
        activation or eps): on every rank.
    NotImplementedError
        If `x` is a CuPy array and this build has no NCCL transport.

    See Also
    --------
    group_norm_backward : The gradients, over the same ranks.
    gn_native.group_norm_forward : The single-process call.
    SyncGroupNorm : The layer.

    Examples
    --------
    Run under ``mpiexec -n 2 python script.py``; with one process (as
    here) the communicator has one rank:

    >>> import numpy as np
    >>> from mpi4py import MPI
    >>> import gn_native as gn
    >>> import gn_native.distributed as gnd
    >>> comm = MPI.COMM_WORLD
    >>> batch = np.random.default_rng(0).standard_normal((4, 6, 5)).astype(np.float32)
    >>> mine = np.array_split(batch, comm.size)[comm.rank]   # this rank's samples
    >>> y, mean, rstd = gnd.group_norm_forward(mine, 3, comm=comm)
    >>> mean.shape, mean.dtype
    ((3,), dtype('float32'))
    >>> y0, mean0, rstd0 = gn.group_norm_forward(batch, 3, stats="batch")
    >>> bool((mean == mean0).all() and (rstd == rstd0).all())
    True
    """
    if _is_cupy(x):
        return _nccl().group_norm_forward(x, n_groups, gamma, beta, eps, comm=comm, stats=stats,
                                          channel_axis=channel_axis, activation=activation,
                                          out=out)
    fw, a = _framework_in(x, dict(x=x, gamma=gamma, beta=beta, out=out))
    f = _forward(comm, a["x"], n_groups, a["gamma"], a["beta"], eps, stats, channel_axis,
                 activation, a["out"])
    r = (f.y, f.mean, f.rstd)
    return r if fw is None else _api._framework_result(fw, r, {0: out} if out is not None else {})


def group_norm(x, n_groups, gamma=None, beta=None, eps=1e-5, *, comm, stats="batch",
               channel_axis=1, activation=None, out=None):
    """Group-normalize this rank's slice of a batch split over MPI ranks; y only.

    As `group_norm_forward`, without the statistics: bit-identical to
    ``gn_native.group_norm`` on the concatenated batch.

    Parameters
    ----------
    x : array_like
        This rank's samples: (N_rank, C, *spatial), or channels last.
    n_groups : int
        Number of groups G; it must divide C.
    gamma, beta : array_like, optional
        Scale and shift, None or of shape (C,) or (G,).
    eps : float, default 1e-5
        Added to the variance.
    comm : mpi4py.MPI.Comm
        The ranks holding the batch, in batch order.
    stats : {"batch", "sample"}, default "batch"
        Statistics over the whole batch, or per sample (no communication).
    channel_axis : {1, -1}, default 1
        Axis of the channels.
    activation : {None, "silu", "gelu", "gelu_tanh", "relu"}, default None
        Applied after the affine step.
    out : ndarray, optional
        Array to write y in.

    Returns
    -------
    ndarray
        This rank's normalized slice, `x`'s shape and dtype.

    Raises
    ------
    ImportError
        If mpi4py is not installed.
    TypeError
        If `comm` is not an mpi4py communicator, or an argument has the
        wrong type.
    ValueError
        If an argument has a bad value, or the ranks' calls disagree.

    See Also
    --------
    group_norm_forward : Also returns mean and rstd.

    Examples
    --------
    >>> import numpy as np
    >>> from mpi4py import MPI
    >>> import gn_native as gn
    >>> import gn_native.distributed as gnd
    >>> comm = MPI.COMM_WORLD
    >>> batch = np.arange(48, dtype=np.float64).reshape(4, 6, 2)
    >>> mine = np.array_split(batch, comm.size)[comm.rank]
    >>> y = gnd.group_norm(mine, 3, comm=comm)
    >>> whole = gn.group_norm(batch, 3, stats="batch")
    >>> bool((y == np.array_split(whole, comm.size)[comm.rank]).all())
    True
    """
    return group_norm_forward(x, n_groups, gamma, beta, eps, comm=comm, stats=stats,
                              channel_axis=channel_axis, activation=activation, out=out)[0]


# ---- backward -------------------------------------------------------------------

def _backward(comm, dy, x, mean, rstd, n_groups, gamma, beta, stats, channel_axis, activation,
              out, param_grads="global", check=None):
    size, _ = _check_comm(comm)
    st, bad = _stats_mode(stats)
    if param_grads not in ("global", "local") and bad is None:
        bad = ValueError(f"param_grads must be 'global' or 'local', got {param_grads!r}")
    gather_grads = size > 1 and param_grads != "local"
    needs_comm = size > 1 and (st == "batch" or gather_grads)
    error = sig = p = sums = payload = None
    try:
        if bad is not None:
            raise bad
        if check is not None:
            check()
        _, p, dy, x, mean, rstd, gamma, beta = V.backward_call(
            dy, x, mean, rstd, n_groups, gamma, stats, channel_axis, out, False, beta,
            activation)
        sig = _signature(p)
        sums = _stages.backward_reduce(dy, x, mean, rstd, p.groups, gamma, beta, stats=st,
                                       channel_axis=channel_axis, activation=activation)
        if st == "sample" and gather_grads:
            # dx is local; dgamma/dbeta want every sample's sums and rstd: one row each
            payload = np.concatenate([sums.reshape(p.n, p.c * 2),
                                      rstd.astype(np.float64).reshape(p.n, p.groups)], axis=1)
        else:
            payload = sums
    except Exception as e:
        if not needs_comm:
            raise
        error = e
    # past the agreement, nothing may fail on one rank only: the payload is ready
    g_sums, g_rstd = sums, rstd     # this rank's own (param_grads="local", or one rank)
    if needs_comm:
        counts = _agree(comm, error, sig, None if p is None else p.n)
        gathered = _allgatherv(comm, payload, counts)
    if st == "batch" and size > 1:
        sums = gathered
        if gather_grads:
            g_sums = sums
    elif gather_grads:
        g_sums = gathered[:, :p.c * 2].reshape(-1, p.c, 2)
        g_rstd = gathered[:, p.c * 2:].astype(rstd.dtype)
    dx = _stages.backward_apply(dy, x, mean, rstd, sums, p.groups, gamma, beta, stats=st,
                                channel_axis=channel_axis, activation=activation, out=out)
    dgamma, dbeta = _stages.param_grads(g_sums, g_rstd, p.groups, gamma, beta, stats=st,
                                        dtype=p.dtype)
    return dx, dgamma, dbeta


def group_norm_backward(dy, x, mean, rstd, n_groups, gamma=None, beta=None, *, comm,
                        stats="batch", channel_axis=1, activation=None, out=None,
                        param_grads="global"):
    """Gradients of `group_norm_forward` over MPI ranks, given this rank's dL/dy.

    dx is this rank's slice of the whole batch's dx; dgamma and dbeta are
    the gradients over the WHOLE batch (every rank's samples), the same
    bits on every rank: each is bit-identical to
    ``gn_native.group_norm_backward`` on the concatenated batch.  So they
    need no further reduction: in a data-parallel loop that averages
    gradients over ranks (DDP, Horovod), leave gamma and beta out of that
    average, or ask for ``param_grads="local"`` (this rank's share) and
    sum those over the ranks yourself.  `dy` must be the gradient of one
    loss over the whole batch (with a mean over the batch, divide by the
    total N, not by N_rank).

    Parameters
    ----------
    dy : array_like
        Gradient of the loss with respect to this rank's y, shaped as `x`.
    x : array_like
        This rank's input given to `group_norm_forward`.
    mean, rstd : array_like
        What `group_norm_forward` returned on this rank.
    n_groups : int
        Number of groups G.
    gamma, beta : array_like, optional
        As in the forward call (`beta` is read only with an `activation`).
    comm : mpi4py.MPI.Comm
        The same communicator as the forward call.
    stats : {"batch", "sample"}, default "batch"
        As in the forward call.  ``"batch"``: one Allgatherv of the
        float64 sums (N_total x C x 2).  ``"sample"``: dx needs no other
        rank; dgamma and dbeta gather the sums and rstd of every sample
        (none with ``param_grads="local"``).
    channel_axis : {1, -1}, default 1
        As in the forward call.
    activation : {None, "silu", "gelu", "gelu_tanh", "relu"}, default None
        As in the forward call.
    out : ndarray, optional
        Array of `x`'s shape and dtype to receive dx.
    param_grads : {"global", "local"}, default "global"
        ``"global"``: dgamma and dbeta of the whole batch, on every rank.
        ``"local"``: of this rank's samples only (their sum over the ranks
        is the whole batch's, up to rounding); with ``stats="sample"`` the
        call then never communicates.

    Returns
    -------
    dx : ndarray
        This rank's slice of the gradient with respect to x.
    dgamma, dbeta : ndarray
        `gamma`'s shape, or (C,) without `gamma`.

    Raises
    ------
    ImportError
        If mpi4py is not installed.
    TypeError
        If `comm` is not an mpi4py communicator, or an argument has the
        wrong type.
    ValueError
        If an argument has a bad value, or the ranks' calls disagree.

    See Also
    --------
    group_norm_forward : Gives `mean` and `rstd`.
    gn_native.group_norm_backward : The single-process call.

    Examples
    --------
    >>> import numpy as np
    >>> from mpi4py import MPI
    >>> import gn_native as gn
    >>> import gn_native.distributed as gnd
    >>> comm = MPI.COMM_WORLD
    >>> rng = np.random.default_rng(0)
    >>> x = rng.standard_normal((4, 6, 5)).astype(np.float32)
    >>> dy = rng.standard_normal(x.shape).astype(np.float32)
    >>> gamma = np.linspace(0.5, 1.5, 6).astype(np.float32)
    >>> mine = lambda a: np.array_split(a, comm.size)[comm.rank]
    >>> y, mean, rstd = gnd.group_norm_forward(mine(x), 3, gamma, comm=comm)
    >>> dx, dgamma, dbeta = gnd.group_norm_backward(mine(dy), mine(x), mean, rstd, 3, gamma,
    ...                                             comm=comm)
    >>> _, m0, r0 = gn.group_norm_forward(x, 3, gamma, stats="batch")
    >>> dx0, dg0, db0 = gn.group_norm_backward(dy, x, m0, r0, 3, gamma, stats="batch")
    >>> bool((dgamma == dg0).all() and (dx == mine(dx0)).all())
    True
    """
    if _is_cupy(x):
        return _nccl().group_norm_backward(dy, x, mean, rstd, n_groups, gamma, beta, comm=comm,
                                           stats=stats, channel_axis=channel_axis,
                                           activation=activation, out=out,
                                           param_grads=param_grads)
    fw = _interop.framework(x) or _interop.framework(dy)
    a = dict(dy=dy, x=x, mean=mean, rstd=rstd, gamma=gamma, beta=beta, out=out)
    if fw is not None:
        a = _api._numpy_args(a)
    r = _backward(comm, a["dy"], a["x"], a["mean"], a["rstd"], n_groups, a["gamma"], a["beta"],
                  stats, channel_axis, activation, a["out"], param_grads)
    return r if fw is None else _api._framework_result(fw, r, {0: out} if out is not None else {})


# ---- the layer ------------------------------------------------------------------

class SyncGroupNorm(GroupNorm):
    """GroupNorm whose statistics span every rank's slice of the batch (MPI).

    As ``torch.nn.SyncBatchNorm`` for BatchNorm: each rank of `comm` calls
    the layer on its own slice of the batch (ranks in rank order = batch
    order), and in training mode the statistics (``stats="batch"``, the
    default here) are those of the whole batch, so y and the gradients are
    bit-identical to a `GroupNorm` called on the concatenated batch.  The
    running statistics are updated with the whole batch's values and stay
    identical on every rank; ``dgamma``/``dbeta`` are the whole batch's
    gradients, identical on every rank (see `group_norm_backward` for
    data-parallel averaging).  Eval mode with running statistics needs no
    communication.  Every call and every `backward` is a collective: all
    ranks of `comm` must make it.

    Parameters
    ----------
    n_groups, n_channels, eps, affine
        As `gn_native.GroupNorm`.
    comm : mpi4py.MPI.Comm, optional
        The ranks holding the batch; None (the default) is
        ``MPI.COMM_WORLD``, as torch's default process group.
    stats : {"batch", "sample"}, default "batch"
        ``"sample"`` normalizes per sample (no communication), and syncs
        only the running statistics and the parameter gradients.
    **kwargs
        Every other option of `gn_native.GroupNorm` (``affine_per``,
        ``track_running_stats``, ``momentum``, ``dtype``,
        ``channel_axis``, ``activation``; the CPU only).

    Attributes
    ----------
    comm : mpi4py.MPI.Comm
        The communicator.
    gamma, beta, dgamma, dbeta, running_mean, running_var
        As `gn_native.GroupNorm`; the gradients and running statistics are
        the whole batch's.

    Examples
    --------
    >>> import numpy as np
    >>> from mpi4py import MPI
    >>> import gn_native.distributed as gnd
    >>> layer = gnd.SyncGroupNorm(2, 4, comm=MPI.COMM_WORLD, track_running_stats=True)
    >>> x = np.arange(16, dtype=np.float32).reshape(2, 4, 2)
    >>> mine = np.array_split(x, MPI.COMM_WORLD.size)[MPI.COMM_WORLD.rank]
    >>> y = layer(mine)
    >>> layer.running_mean      # the whole batch's, on every rank
    array([0.55, 0.95], dtype=float32)
    """

    def __init__(self, n_groups=None, n_channels=None, eps=1e-5, affine=True, *, comm=None,
                 stats="batch", **kwargs):
        MPI = _require_mpi()
        comm = MPI.COMM_WORLD if comm is None else comm
        _check_comm(comm)
        if kwargs.get("device", "cpu") not in ("cpu", None):
            raise ValueError("SyncGroupNorm runs on the CPU (device='cpu')")
        super().__init__(n_groups, n_channels, eps, affine, stats=stats, **kwargs)
        self.comm = comm

    def __call__(self, x=None, add=None, *, input=None):
        """Normalize this rank's slice with the whole batch's statistics.

        Parameters
        ----------
        x : array_like
            This rank's samples, of the layer's dtype and channel count.
        add : None
            Not supported: add to `x` first.
        input : array_like, optional
            torch's name for `x`.

        Returns
        -------
        ndarray
            This rank's normalized slice.

        Examples
        --------
        >>> import numpy as np
        >>> import gn_native.distributed as gnd
        >>> layer = gnd.SyncGroupNorm(2, 4)
        >>> layer(np.zeros((0, 4, 3), np.float32)).shape   # a rank may hold no sample
        (0, 4, 3)
        """
        if input is not None:
            x, = V.torch_names(("x", "input", x, input))
        if add is not None:
            raise ValueError("SyncGroupNorm does not take add=; add it to x first")
        if self.track_running_stats and not self.training:
            return super().__call__(x)      # constants: nothing to share
        fw = _interop.framework(x)
        track = self.training and self.track_running_stats
        check = lambda a: V.check_layer_input(a, self.device, self.dtype, self.n_channels,
                                              self.channel_axis)
        f = _forward(self.comm, x, self.n_groups, self.gamma, self.beta, self.eps, self.stats,
                     self.channel_axis, self.activation, None, check=check, want_var=track)
        if track:
            self._update_running(f)
        self._save(f.x, f.mean, f.rstd, False, None)
        return f.y if fw is None else _interop.like(fw, f.y)

    forward = __call__

    def _update_running(self, f):
        """The single-process layer's update, on the whole batch's statistics."""
        p = f.plan
        total = sum(f.counts)
        if total * p.c * p.spatial == 0:
            return                          # an empty batch updates nothing
        mean, var = f.whole
        whole = dataclasses.replace(p, n=total)
        count = self.num_batches_tracked + 1
        momentum = self.momentum if self.momentum is not None else 1.0 / count
        _api._update_running(np, whole, mean, None, var, self.running_mean, self.running_var,
                             momentum)
        self.num_batches_tracked += 1

    def backward(self, dy):
        """dL/dx of this rank's slice; sets the whole batch's `dgamma`, `dbeta`.

        Parameters
        ----------
        dy : array_like
            Gradient of the loss (one loss over the whole batch) with
            respect to this rank's last output.

        Returns
        -------
        ndarray
            Gradient with respect to this rank's last `x`.

        Examples
        --------
        >>> import numpy as np
        >>> import gn_native.distributed as gnd
        >>> layer = gnd.SyncGroupNorm(2, 4)
        >>> y = layer(np.arange(8, dtype=np.float32).reshape(1, 4, 2))
        >>> dx = layer.backward(np.ones_like(y))
        >>> layer.dbeta.shape
        (4,)
        """
        if self._saved is None:
            raise RuntimeError("backward() needs a forward call first")
        x, mean, rstd, frozen, fingerprint, _ = self._saved
        if frozen:
            return super().backward(dy)     # constants: this rank's own gradients
        fw = _interop.framework(dy)
        if fw is not None:
            dy = _interop.to_numpy(dy, "dy")
        gamma = self.gamma if self.affine else None
        beta = self.beta if self.affine and self.activation else None
        dx, dgamma, dbeta = _backward(self.comm, dy, x, mean, rstd, self.n_groups, gamma, beta,
                                      self.stats, self.channel_axis, self.activation, None,
                                      check=lambda: self._check_unchanged(x, fingerprint))
        if self.affine:
            self.dgamma, self.dbeta = dgamma, dbeta
        self.dadd = None
        return dx if fw is None else _interop.like(fw, dx)

    def __repr__(self):
        return "Sync" + super().__repr__()[:-1] + f", comm=<{type(self.comm).__name__} " \
               f"size {self.comm.Get_size()}>)"
