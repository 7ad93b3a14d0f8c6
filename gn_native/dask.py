"""Group Normalization of Dask arrays: a lazy graph of the core's stages.

`group_norm` and `group_norm_forward` here take a ``dask.array.Array`` and
return ``dask.array.Array`` results without computing anything; the graph
runs when the caller computes it, on whatever scheduler the caller uses
(threads, processes, a ``distributed`` cluster).  ``gn_native.group_norm``
and ``gn_native.group_norm_forward`` given a Dask array come here.

The graph is the core's three forward stages (`gn_native.stages`):

1. per block of the statistics pass, ``stats_partial``: the partial
   statistics (count, shift, sums) of each (sample, group) the block covers;
2. ONE merge task, ``stats_merge``, over all the partials in a fixed order
   (below), giving float64 mean and rstd;
3. per block of `x`, ``normalize`` with the float64 mean/rstd of its samples
   and groups and the gamma/beta of its channels.

The statistics pass reads whole samples: when `x` is chunked along its
spatial axes, it is rechunked for that pass to one spatial chunk, cutting N
and the channels (on group boundaries) so that each block stays within
Dask's ``array.chunk-size``, down to one sample's group of values (K *
spatial of them), which is read whole even when it is larger (with a
``dask.array.PerformanceWarning``).  Every partial is then the whole call's,
bit for bit (a partial depends only on its own sample and group), and y,
mean and rstd equal the in-memory call bit for bit, whatever the chunks.
(Partials of spatial sub-blocks, merged, would give statistics off in their
last float32 bits: the core folds its sums in the compute type over its own
runs of values.)

The merge order is fixed (for ``stats="batch"``, each group's samples in
global order; for ``stats="sample"``, each partial alone), never by when the
partials arrive, so the result does not depend on scheduling.

Channel chunks must hold whole groups: a chunking of the channel axis whose
boundaries are not multiples of K = C/G is rechunked to the nearest group
boundaries, with a ``dask.array.PerformanceWarning``.

Every block is needed for the statistics before any block is normalized, so
the normalize pass computes `x`'s blocks again (``recompute=True``, the
default: read twice, held never, which lets an array larger than memory
through) or holds them all between the passes (``recompute=False``).

Only the forward pass: there is no Dask backward (compute the arrays and
call ``gn_native.group_norm_backward``).
"""
import os
import sys
import warnings
from itertools import accumulate

import numpy as np

try:
    import dask
    import dask.array as da
    from dask.array import PerformanceWarning
    from dask.base import tokenize
    from dask.graph_manipulation import bind
    from dask.utils import parse_bytes
except ImportError as e:  # pragma: no cover - the [dask] extra is in [test]
    raise ImportError('gn_native.dask needs Dask: pip install "gn_native[dask]" '
                      '(dask[array] and distributed)') from e

from . import _validate as V
from . import stages

__all__ = ["group_norm", "group_norm_forward"]

_PKG = os.path.dirname(os.path.abspath(__file__)) + os.sep


def _user_stacklevel():
    """stacklevel of the first caller outside gn_native (for warnings.warn in the caller)."""
    f, level = sys._getframe(1), 1
    while f is not None and f.f_code.co_filename.startswith(_PKG):
        f, level = f.f_back, level + 1
    return level


def _offsets(chunks):
    return (0,) + tuple(accumulate(chunks))


def _group_chunks(chunks, k, c):
    """Channel chunks with every boundary moved to the nearest multiple of k."""
    bounds = sorted({min(c, (b + k // 2) // k * k) for b in _offsets(chunks)} | {0, c})
    return tuple(b - a for a, b in zip(bounds, bounds[1:])) or (c,)


def _as_param(a, name):
    """gamma/beta: None, a Dask array (kept lazy) or an ndarray."""
    if a is None or isinstance(a, da.Array):
        return a
    return V.as_cpu_array(a, name)


# ---- the three kinds of task ------------------------------------------------------

def _partial_block(xb, k, eps, ca):
    """Partials of one block, shaped as x's block with each spatial axis of length 1,
    the channel axis of length G_block, and the 5 fields last."""
    gb = xb.shape[ca] // k
    shape = [1] * xb.ndim + [5]
    shape[0], shape[ca] = xb.shape[0], gb
    if xb.size == 0:           # no values: a zero count (the merge leaves such blocks out)
        return np.zeros(shape)
    return stages.stats_partial(xb, gb, eps=eps, channel_axis=ca).reshape(shape)


def _merge_task(p, stats, ca, eps):
    """The one merge: all partials (concatenated in block order) -> [mean, rstd], float64.

    p: (N, G, 1, ..., 1, 5) with the channel axis where x has it (the statistics
    pass holds each sample's spatial values in one block).
    """
    p = np.moveaxis(p, ca, 1) if ca != 1 else p
    p = np.ascontiguousarray(p.reshape(p.shape[0], p.shape[1], 5))   # (N, G, 5)
    mean, rstd, _ = stages.stats_merge(p if stats == "batch" else p[None], eps=eps)
    return np.stack([mean, rstd])


def _param_slice(a, c, k, c0, c1):
    """The part of gamma/beta (per channel or per group) for channels [c0, c1)."""
    if a is None:
        return None
    return a[c0:c1] if a.shape[0] == c else a[c0 // k:c1 // k]


def _normalize_block(xb, s, gamma, beta, *, k, c, stats, ca, activation, n_offsets,
                     c_offsets, block_id=None):
    """y of one block, from the merged float64 statistics s ([mean, rstd])."""
    if xb.size == 0:
        return np.empty(xb.shape, xb.dtype)
    i, j = block_id[0], block_id[ca]
    n0, n1, c0, c1 = n_offsets[i], n_offsets[i + 1], c_offsets[j], c_offsets[j + 1]
    g0, g1 = c0 // k, c1 // k
    if stats == "sample":
        mean, rstd = s[0, n0:n1, g0:g1], s[1, n0:n1, g0:g1]
    else:
        mean, rstd = s[0, g0:g1], s[1, g0:g1]
    return stages.normalize(xb, np.ascontiguousarray(mean), np.ascontiguousarray(rstd), g1 - g0,
                            _param_slice(gamma, c, k, c0, c1), _param_slice(beta, c, k, c0, c1),
                            stats=stats, channel_axis=ca, activation=activation)


# ---- the graph ----------------------------------------------------------------------

def _stats_blocks(x, ca, k, spatial_axes):
    """x as the statistics pass reads it: the spatial axes in one chunk (each block's
    partials are then the whole call's, bit for bit); the channel and N chunks are
    cut (on group boundaries) to keep each block within Dask's array.chunk-size, down
    to one sample's group of values (K * spatial of them), read whole even beyond it."""
    if all(x.numblocks[a] == 1 for a in spatial_axes):
        return x
    budget = parse_bytes(dask.config.get("array.chunk-size"))
    per_channel = x.dtype.itemsize * int(np.prod([x.shape[a] for a in spatial_axes]))
    if k * per_channel > budget:
        warnings.warn(f"one sample's group of values ({k * per_channel} bytes) is larger "
                      f"than array.chunk-size ({budget} bytes): the statistics pass reads "
                      "each group in one block of that size, which keeps the in-memory "
                      "call's bits", PerformanceWarning, stacklevel=_user_stacklevel())
    groups = max(1, budget // (k * per_channel))            # groups per block, at most
    cmax = max(x.chunks[ca])
    cchunks = x.chunks[ca] if cmax <= groups * k else tuple(
        piece for c in x.chunks[ca] for piece in _split(c, groups * k))
    n = max(1, budget // (max(cchunks) * per_channel))       # samples per block, at most
    nchunks = tuple(piece for b in x.chunks[0] for piece in _split(b, n))
    return x.rechunk({0: nchunks, ca: cchunks, **{a: -1 for a in spatial_axes}})


def _split(total, most):
    """total as pieces of `most` (the last one shorter)."""
    return (most,) * (total // most) + ((total % most,) if total % most else ()) or (0,)


def _lazy(a):
    """A small Dask array (gamma, beta) as one Delayed value that every block task reads."""
    if not isinstance(a, da.Array):
        return a
    return a.rechunk(-1).to_delayed(optimize_graph=False).ravel()[0]


def _forward(x, n_groups, gamma, beta, eps, stats, channel_axis, activation, recompute):
    if type(recompute) is not bool:
        raise TypeError(f"recompute must be True or False, got {recompute!r}")
    if not isinstance(x, da.Array):
        x = da.asarray(x)
    if any(np.isnan(s) for s in x.shape):
        raise ValueError("x has unknown chunk sizes (shape %s); call x.compute_chunk_sizes() "
                         "first" % (x.shape,))
    gamma, beta = _as_param(gamma, "gamma"), _as_param(beta, "beta")
    p = V.plan(x, n_groups, gamma, beta, eps, stats, channel_axis, activation=activation)
    ca, k, g = p.channel_axis, p.c // p.groups, p.groups
    act = None if p.activation == "none" else str(p.activation)
    stat_shape = (p.n, g) if p.stats == "sample" else (g,)
    if x.size == 0:            # as the in-memory call: an empty y, NaN statistics
        nan = da.full(stat_shape, np.nan, dtype=p.stat_dtype)
        return x.copy(), nan, nan.copy()

    if any(c % k for c in x.chunks[ca]):
        new = _group_chunks(x.chunks[ca], k, p.c)
        warnings.warn(f"the channel chunks {x.chunks[ca]} of x do not hold whole groups "
                      f"(C/G = {k} channels each); rechunked to {new}. Chunk the channel "
                      f"axis in multiples of {k} to avoid this.", PerformanceWarning,
                      stacklevel=_user_stacklevel())
        x = x.rechunk({ca: new})

    nd = x.ndim
    spatial_axes = [a for a in range(1, nd) if a != ca]
    xs = _stats_blocks(x, ca, k, spatial_axes)
    tok = tokenize(x, xs.chunks, g, p.eps, str(p.stats), ca, act, gamma, beta, bool(recompute))

    # 1. per block: partials, (n_b, [g_b at ca], 1, ..., 1, 5), of whole groups of samples
    # (the bits of one call)
    pchunks = [xs.chunks[0]] + [None] * (nd - 1) + [(5,)]
    pchunks[ca] = tuple(c // k for c in xs.chunks[ca])
    for a in spatial_axes:
        pchunks[a] = (1,) * xs.numblocks[a]
    partials = xs.map_blocks(_partial_block, k, p.eps, ca, chunks=tuple(pchunks),
                             new_axis=[nd], dtype=np.float64, meta=np.empty((0,) * (nd + 1)),
                             name="gn_native-partial-" + tok)

    # 2. one task: every block's partials, concatenated in block order, merged
    letters = "abcdefghijklmnopqrstuvwxyz"
    out_ind = letters[:1 + len(stat_shape)]
    in_ind = letters[len(out_ind):len(out_ind) + nd + 1]
    merged = da.blockwise(_merge_task, out_ind, partials, in_ind, concatenate=True,
                          new_axes=dict(zip(out_ind, (2,) + stat_shape)), dtype=np.float64,
                          meta=np.empty((0,) * len(out_ind)), name="gn_native-merge-" + tok,
                          stats=str(p.stats), ca=ca, eps=p.eps)

    # 3. per block: normalize with the merged statistics of its samples and groups; on a
    # copy of x's graph that runs after the merge (bind): the blocks are made again and
    # freed at once, where the same keys would hold all of x in memory until the merge
    s = merged.to_delayed(optimize_graph=False).ravel()[0]
    xn = bind(x, merged) if recompute else x
    y = xn.map_blocks(_normalize_block, s, _lazy(gamma), _lazy(beta), k=k, c=p.c,
                     stats=str(p.stats), ca=ca, activation=act,
                     n_offsets=_offsets(x.chunks[0]), c_offsets=_offsets(x.chunks[ca]),
                     dtype=x.dtype, meta=np.empty((0,) * nd, x.dtype),
                     name="gn_native-normalize-" + tok)
    return y, merged[0].astype(p.stat_dtype), merged[1].astype(p.stat_dtype)


def group_norm_forward(x, n_groups, gamma=None, beta=None, eps=1e-5, *, stats="sample",
                       channel_axis=1, activation=None, recompute=True):
    """Group-normalize a Dask array lazily; also return the statistics, lazily.

    The same numbers as ``gn_native.group_norm_forward`` on the computed
    array, bit for bit, for any chunks along N and the spatial axes (and
    channel chunks on group boundaries): the statistics pass reads whole
    samples, within Dask's ``array.chunk-size`` (one sample's group of
    values at least; see the module's notes).  Nothing runs until the
    results are computed.

    Parameters
    ----------
    x : dask.array.Array
        Input of shape (N, C, *spatial) (or (N, *spatial, C) with
        ``channel_axis=-1``); float16, bfloat16, float32 or float64.
        Chunks are free along N and the spatial axes (y keeps them);
        channel chunks should hold whole groups (multiples of C/G
        channels), else they are rechunked with a
        ``dask.array.PerformanceWarning``.  Anything else is turned into
        one with ``dask.array.asarray``.
    n_groups : int
        Number of groups G; it must divide C.
    gamma, beta : array_like or dask.array.Array, optional
        Scale and shift, each None or of shape (C,) (per channel) or (G,)
        (per group); any float dtype, rounded to `x`'s.
    eps : float, default 1e-5
        Added to the variance; positive and finite.
    stats : {"sample", "batch"}, default "sample"
        ``"sample"``: statistics per (sample, group), as
        ``torch.nn.functional.group_norm``; ``"batch"``: per group over
        the whole batch (every chunk of N).
    channel_axis : {1, -1}, default 1
        Axis of the channels.
    activation : {None, "silu", "gelu", "gelu_tanh", "relu"}, default None
        Applied after the affine step, in the same pass.
    recompute : bool, default True
        The statistics need every block before any block is normalized.
        True: the normalize pass computes `x`'s blocks again (reads them
        again from zarr, say) after the statistics, so that each block is
        freed once its partials are taken and an `x` larger than memory
        goes through.  False: the blocks are computed once and all held in
        memory between the two passes; use it when `x` fits in memory and
        is costly to compute (or `persist` `x` first).

    Returns
    -------
    y : dask.array.Array
        `x`'s shape, dtype and chunks (channel chunks as rechunked).
    mean, rstd : dask.array.Array
        Shape (N, G) for ``stats="sample"``, (G,) for ``stats="batch"``,
        one chunk; float64 for float64 `x`, float32 otherwise.

    Raises
    ------
    TypeError, ValueError
        As ``gn_native.group_norm_forward``, when the call is built (before
        anything runs); ValueError also for unknown chunk sizes.

    See Also
    --------
    group_norm : The same, returning only `y`.
    gn_native.group_norm_forward : The in-memory call.

    Examples
    --------
    >>> import numpy as np
    >>> import dask.array as da
    >>> from gn_native import dask as gnd
    >>> x = da.from_array(np.arange(16, dtype=np.float32).reshape(2, 4, 2), chunks=(1, 4, 2))
    >>> y, mean, rstd = gnd.group_norm_forward(x, 2, stats="batch")
    >>> y                                   # lazy: nothing has run yet
    dask.array<gn_native-normalize..., shape=(2, 4, 2), dtype=float32, chunksize=(1, 4, 2), ...>
    >>> mean.compute()
    array([5.5, 9.5], dtype=float32)
    """
    return _forward(x, n_groups, gamma, beta, eps, stats, channel_axis, activation, recompute)


def group_norm(x, n_groups, gamma=None, beta=None, eps=1e-5, *, stats="sample", channel_axis=1,
               activation=None, recompute=True):
    """Group-normalize a Dask array lazily.

    ``group_norm_forward(...)[0]``: see there for the scheme and guarantees.

    Parameters
    ----------
    x : dask.array.Array
        Input of shape (N, C, *spatial) (or (N, *spatial, C) with
        ``channel_axis=-1``); channel chunks should hold whole groups.
    n_groups : int
        Number of groups G; it must divide C.
    gamma, beta : array_like or dask.array.Array, optional
        Scale and shift, (C,) or (G,).
    eps : float, default 1e-5
        Added to the variance.
    stats : {"sample", "batch"}, default "sample"
        Statistics per (sample, group) or per group over the batch.
    channel_axis : {1, -1}, default 1
        Axis of the channels.
    activation : {None, "silu", "gelu", "gelu_tanh", "relu"}, default None
        Applied after the affine step.
    recompute : bool, default True
        Compute `x`'s blocks again for the normalize pass, rather than
        holding all of them in memory (see `group_norm_forward`).

    Returns
    -------
    dask.array.Array
        The normalized array, lazy.

    See Also
    --------
    group_norm_forward : Also returns mean and rstd.

    Examples
    --------
    >>> import numpy as np
    >>> import dask.array as da
    >>> import gn_native as gn
    >>> from gn_native import dask as gnd
    >>> a = np.random.default_rng(0).standard_normal((8, 6, 5, 5)).astype(np.float32)
    >>> x = da.from_array(a, chunks=(2, 6, 5, 5))       # four blocks along N
    >>> y = gnd.group_norm(x, 3, stats="batch")
    >>> bool((y.compute() == gn.group_norm(a, 3, stats="batch")).all())
    True
    >>> type(gn.group_norm(x, 3))          # gn_native.group_norm takes Dask arrays too
    <class 'dask.array.core.Array'>
    """
    return _forward(x, n_groups, gamma, beta, eps, stats, channel_axis, activation,
                    recompute)[0]
