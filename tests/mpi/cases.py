"""Run under ``mpiexec -n P``: gn_native.distributed against the single-process call.

Every rank builds the same whole batch from a seed, runs the distributed call
on its own slice, and compares every output bit for bit with its slice of the
single-process call on the whole batch (dgamma, dbeta, mean, rstd and the
running statistics: the whole of them, so they are checked to be the same on
every rank).  Rank 0 prints one line, ``RESULT <json>``: the number of checks
per group and every failure.  tests/test_mpi.py launches this once per P.

    mpiexec -n 3 python tests/mpi/cases.py [--only GROUP ...]
"""
import argparse
import itertools
import json
import os
import sys
import traceback

import numpy as np
from mpi4py import MPI

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import reference  # noqa: E402  (tests/reference.py: the float64 NumPy reference)

import gn_native as gn  # noqa: E402
import gn_native.distributed as gnd  # noqa: E402

try:
    import ml_dtypes
    BF16 = np.dtype(ml_dtypes.bfloat16)
except ImportError:  # pragma: no cover
    BF16 = None

COMM = MPI.COMM_WORLD
P, RANK = COMM.size, COMM.rank
DTYPES = [np.dtype(np.float32), np.dtype(np.float64), np.dtype(np.float16)] + (
    [BF16] if BF16 is not None else [])

checks = {}      # group -> number of comparisons made
failures = []    # "group/case: what"


def split(n, kind):
    """Sample counts of the ranks: 'even' (array_split) or 'uneven' (rank 1 holds none
    when P > 1, the last rank the most)."""
    if kind == "even" or P == 1:
        return [len(a) for a in np.array_split(np.arange(n), P)]
    counts = [1] * P
    counts[1] = 0
    counts[-1] += n - sum(counts)
    assert min(counts) >= 0
    return counts


def mine(a, counts):
    """This rank's slice of a whole-batch array (axis 0)."""
    start = sum(counts[:RANK])
    return a[start:start + counts[RANK]]


def same(group, case, what, got, want):
    """Bit-for-bit: same dtype, shape and bytes."""
    checks[group] = checks.get(group, 0) + 1
    got, want = np.asarray(got), np.asarray(want)
    if got.dtype != want.dtype or got.shape != want.shape:
        failures.append(f"{group}/{case}: {what}: {got.dtype}{got.shape} != "
                        f"{want.dtype}{want.shape} (rank {RANK})")
    elif got.tobytes() != want.tobytes():
        diff = np.abs(got.astype(np.float64) - want.astype(np.float64))
        failures.append(f"{group}/{case}: {what}: bits differ, max |diff| "
                        f"{np.nanmax(diff) if diff.size else 0:.3g} (rank {RANK})")


def data(shape, dtype, seed, loc=0.0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(shape) * 1.5 + loc).astype(dtype)


def physical(shape, layout):
    return shape if layout == "nchw" else (shape[0],) + shape[2:] + (shape[1],)


def affine(kind, c, g, seed):
    if kind == "none":
        return None, None
    m = c if kind == "channel" else g
    rng = np.random.default_rng(seed)
    return ((rng.random(m) + 0.5).astype(np.float32), rng.standard_normal(m).astype(np.float32))


def run_case(group, case, shape, g, dtype, layout, stats, aff, act, counts, seed):
    if os.environ.get("GN_MPI_TRACE"):
        print(RANK, case, counts, file=sys.stderr, flush=True)
    ax = 1 if layout == "nchw" else -1
    x = data(physical(shape, layout), dtype, seed)
    dy = data(x.shape, dtype, seed + 1)
    gamma, beta = affine(aff, shape[1], g, seed + 2)
    if gamma is not None:
        gamma, beta = gamma.astype(dtype), beta.astype(dtype)
    kw = dict(stats=stats, channel_axis=ax, activation=act)
    y0, m0, r0 = gn.group_norm_forward(x, g, gamma, beta, **kw)
    dx0, dg0, db0 = gn.group_norm_backward(dy, x, m0, r0, g, gamma, beta, **kw)
    xs, dys = mine(x, counts), mine(dy, counts)
    y, m, r = gnd.group_norm_forward(xs, g, gamma, beta, comm=COMM, **kw)
    same(group, case, "y", y, mine(y0, counts))
    same(group, case, "mean", m, m0 if stats == "batch" else mine(m0, counts))
    same(group, case, "rstd", r, r0 if stats == "batch" else mine(r0, counts))
    same(group, case, "group_norm", gnd.group_norm(xs, g, gamma, beta, comm=COMM, **kw),
         mine(y0, counts))
    dx, dg, db = gnd.group_norm_backward(dys, xs, m, r, g, gamma, beta, comm=COMM, **kw)
    same(group, case, "dx", dx, mine(dx0, counts))
    same(group, case, "dgamma", dg, dg0)
    same(group, case, "dbeta", db, db0)


def group_matrix():
    """Both stats, both layouts, every dtype, three affine kinds, with and without an
    activation; even and uneven splits alternate."""
    shape = (7, 6, 3, 4)
    for i, (stats, layout, dtype, aff, act) in enumerate(itertools.product(
            ("batch", "sample"), ("nchw", "nhwc"), DTYPES, ("none", "channel", "group"),
            (None, "silu"))):
        kind = ("even", "uneven")[i % 2]
        case = f"{stats}-{layout}-{dtype.name}-{aff}-{act}-{kind}"
        run_case("matrix", case, shape, 3, dtype, layout, stats, aff, act,
                 split(shape[0], kind), seed=i)


def group_shapes():
    """Other shapes: no spatial axis, 1-d and 3-d spatial, one group, C == G, a rank
    holding no sample, the other activations, more samples than ranks by far."""
    cases = [((5, 4), 2, None), ((9, 8, 5), 4, "relu"), ((6, 4, 2, 3, 2), 1, "gelu"),
             ((7, 6, 5), 6, "gelu_tanh"), ((33, 12, 7), 3, None)]
    for i, (shape, g, act) in enumerate(cases):
        for kind in ("even", "uneven"):
            for layout in ("nchw", "nhwc"):
                case = f"{shape}-G{g}-{act}-{kind}-{layout}"
                run_case("shapes", case, shape, g, np.dtype(np.float32), layout, "batch",
                         "channel", act, split(shape[0], kind), seed=100 + i)


def group_empty():
    """No value at all: every rank holding no sample, or a zero spatial size; the single
    call's NaN statistics and zero parameter gradients, empty outputs."""
    run_case("empty", "all-empty", (0, 6, 3), 3, np.dtype(np.float32), "nchw", "batch",
             "channel", None, [0] * P, seed=7)
    for stats in ("batch", "sample"):
        for layout in ("nchw", "nhwc"):
            run_case("empty", f"zero-spatial-{stats}-{layout}", (2 * P, 6, 0, 3), 3,
                     np.dtype(np.float32), layout, stats, "channel", None,
                     split(2 * P, "uneven"), seed=8)


def group_accuracy():
    """The distributed batch statistics against the float64 NumPy reference, at data
    offset 1e4: max |y error| <= 1e-5 relative to the data's spread (SPEC's target)."""
    shape, g = (8, 6, 16, 16), 3
    for layout in ("nchw", "nhwc"):
        ax = 1 if layout == "nchw" else -1
        x = data(physical(shape, layout), np.float32, 11, loc=1e4)
        counts = split(shape[0], "uneven")
        y, m, r = gnd.group_norm_forward(mine(x, counts), g, comm=COMM, channel_axis=ax)
        y_ref, m_ref, r_ref = reference.forward(x, g, stats="batch", channel_axis=ax)
        err = float(np.abs(y.astype(np.float64) - mine(y_ref, counts)).max()) if y.size else 0.0
        checks["accuracy"] = checks.get("accuracy", 0) + 1
        if not err <= 1e-5:
            failures.append(f"accuracy/{layout}: max |y - ref| = {err:.3g} > 1e-5 (rank {RANK})")


class Counting(MPI.Intracomm):
    """COMM_WORLD, counting its collective calls (any method named as one)."""

    calls = 0

    def _count(name):
        def method(self, *args, **kwargs):
            type(self).calls += 1
            return getattr(MPI.Intracomm, name)(self, *args, **kwargs)
        return method

    for _name in ("allgather", "Allgather", "Allgatherv", "allreduce", "Allreduce", "bcast",
                  "Bcast", "gather", "Gather", "Gatherv", "scatter", "alltoall", "Barrier",
                  "barrier", "reduce", "Reduce", "Iallgather", "Iallgatherv", "send", "recv",
                  "Send", "Recv", "sendrecv"):
        locals()[_name] = _count(_name)
    del _name, _count


def group_no_comm():
    """stats='sample': the forward and dx make no collective call (a counting
    communicator); param_grads='local' makes none at all; 'batch' makes some."""
    counting = Counting(COMM)
    shape, g = (6, 4, 5), 2
    x, dy = data(shape, np.float32, 21), data(shape, np.float32, 22)
    counts = split(shape[0], "uneven")
    xs, dys = mine(x, counts), mine(dy, counts)
    Counting.calls = 0
    y, m, r = gnd.group_norm_forward(xs, g, comm=counting, stats="sample")
    gnd.group_norm(xs, g, comm=counting, stats="sample")
    dx, dg, db = gnd.group_norm_backward(dys, xs, m, r, g, comm=counting, stats="sample",
                                         param_grads="local")
    checks["no_comm"] = checks.get("no_comm", 0) + 1
    if Counting.calls:
        failures.append(f"no_comm: stats='sample' made {Counting.calls} collective calls")
    y0, m0, r0 = gn.group_norm_forward(x, g, stats="sample")
    dx0, dg0, db0 = gn.group_norm_backward(dy, x, m0, r0, g, stats="sample")
    same("no_comm", "sample-local", "dx", dx, mine(dx0, counts))
    dg_local = gn.group_norm_backward(dys, xs, m, r, g, stats="sample")[1]
    same("no_comm", "sample-local", "dgamma (this rank's)", dg, dg_local)
    # the same calls on a counting communicator with the default param_grads
    dx2, dg2, _ = gnd.group_norm_backward(dys, xs, m, r, g, comm=counting, stats="sample")
    same("no_comm", "sample-global", "dx", dx2, mine(dx0, counts))
    same("no_comm", "sample-global", "dgamma", dg2, dg0)
    Counting.calls = 0
    gnd.group_norm_forward(xs, g, comm=counting, stats="batch")
    checks["no_comm"] += 1
    if P > 1 and not Counting.calls:
        failures.append("no_comm: stats='batch' made no collective call (the counter is blind)")
    # param_grads="local" with batch statistics: this rank's share of dgamma
    _, mb, rb = gnd.group_norm_forward(xs, g, comm=COMM, stats="batch")
    _, dgl, dbl = gnd.group_norm_backward(dys, xs, mb, rb, g, comm=COMM, stats="batch",
                                          param_grads="local")
    _, mw, rw = gn.group_norm_forward(x, g, stats="batch")
    dgw = gn.group_norm_backward(dy, x, mw, rw, g, stats="batch")[1]
    total = COMM.allreduce(dgl.astype(np.float64))
    checks["no_comm"] += 1
    if not np.allclose(total, dgw, rtol=1e-5, atol=1e-5):
        failures.append("no_comm: param_grads='local' does not sum to the batch's dgamma")


def group_layer():
    """SyncGroupNorm on each rank's slice against GroupNorm on the whole batch: three
    training steps (y, dx, dgamma, dbeta, running statistics bit for bit), then eval."""
    for stats, layout, dtype, momentum in (("batch", "nchw", np.float32, 0.1),
                                          ("batch", "nhwc", np.float16, None),
                                          ("sample", "nchw", np.float32, 0.3),
                                          ("batch", "nchw", np.float64, 0.1)):
        case = f"{stats}-{layout}-{np.dtype(dtype).name}-m{momentum}"
        ax = 1 if layout == "nchw" else -1
        kw = dict(stats=stats, track_running_stats=True, momentum=momentum, dtype=dtype,
                  channel_axis=ax, activation="silu")
        sync = gnd.SyncGroupNorm(3, 6, comm=COMM, **kw)
        whole = gn.GroupNorm(3, 6, **kw)
        sync.gamma[:] = whole.gamma[:] = np.linspace(0.5, 2, 6)
        sync.beta[:] = whole.beta[:] = np.linspace(-1, 1, 6)
        for step in range(3):
            shape = (5 + 3 * step, 6, 4, 3)
            counts = split(shape[0], ("even", "uneven")[step % 2])
            x = data(physical(shape, layout), dtype, 40 + step, loc=3.0)
            dy = data(x.shape, dtype, 50 + step)
            same("layer", case, f"y{step}", sync(mine(x, counts)), mine(whole(x), counts))
            same("layer", case, f"dx{step}", sync.backward(mine(dy, counts)),
                 mine(whole.backward(dy), counts))
            same("layer", case, f"dgamma{step}", sync.dgamma, whole.dgamma)
            same("layer", case, f"dbeta{step}", sync.dbeta, whole.dbeta)
            same("layer", case, f"running_mean{step}", sync.running_mean, whole.running_mean)
            same("layer", case, f"running_var{step}", sync.running_var, whole.running_var)
        # every rank holds the same running statistics (all gathered to check it)
        rows = COMM.allgather(sync.running_var.tobytes() + sync.running_mean.tobytes())
        checks["layer"] += 1
        if len(set(rows)) != 1:
            failures.append(f"layer/{case}: running statistics differ between ranks")
        if sync.num_batches_tracked != whole.num_batches_tracked:
            failures.append(f"layer/{case}: num_batches_tracked differs")
        sync.eval(), whole.eval()
        same("layer", case, "eval y", sync(mine(x, counts)), mine(whole(x), counts))


def expect_error(case, fn, exc, match):
    """fn() must raise exc with `match` in its message on this rank (every rank calls)."""
    checks["errors"] = checks.get("errors", 0) + 1
    try:
        fn()
    except exc as e:
        if match not in str(e):
            failures.append(f"errors/{case}: {type(e).__name__} {e!r} lacks {match!r} "
                            f"(rank {RANK})")
        return
    except Exception as e:
        failures.append(f"errors/{case}: {type(e).__name__}: {e} (rank {RANK}), "
                        f"expected {exc.__name__}")
        return
    failures.append(f"errors/{case}: no error (rank {RANK}), expected {exc.__name__}")


def group_errors():
    """A rank that refuses the call, or ranks that disagree, make every rank raise
    (never a hang: the harness's timeout catches one); the communicator is usable
    afterwards."""
    x = data((2, 6, 3), np.float32, 60)
    last = P - 1
    if P > 1:   # C differs on the last rank, the dtype on rank 0: every rank must know
        xc = data((2, 8, 3), np.float32, 61) if RANK == last else x
        expect_error("C differs", lambda: gnd.group_norm(xc, 2, comm=COMM), ValueError,
                     "C=8 on rank")
        xd = x.astype(np.float64) if RANK == 0 else x
        expect_error("dtype differs", lambda: gnd.group_norm(xd, 3, comm=COMM), ValueError,
                     "disagree")
    # the last rank passes a bad n_groups: its own ValueError, and the others name it
    g = 4 if RANK == last else 3
    expect_error("bad n_groups on one rank", lambda: gnd.group_norm(x, g, comm=COMM),
                 ValueError, "n_groups" if RANK == last else f"rank {last}")
    # a wrong type on one rank (a float n_groups): TypeError on every rank
    g = 3.0 if RANK == last else 3
    expect_error("float n_groups on one rank", lambda: gnd.group_norm(x, g, comm=COMM),
                 TypeError, "n_groups")
    # an unknown stats on one rank (the others: the default "batch")
    st = "bogus" if RANK == last else "batch"
    expect_error("bad stats on one rank", lambda: gnd.group_norm(x, 3, comm=COMM, stats=st),
                 ValueError, "stats" if RANK == last else f"rank {last}")
    # backward: dy of another shape on one rank
    y, m, r = gnd.group_norm_forward(x, 3, comm=COMM)
    dy = x[:1] if RANK == last else x
    expect_error("backward dy shape on one rank",
                 lambda: gnd.group_norm_backward(dy, x, m, r, 3, comm=COMM), ValueError,
                 "dy" if RANK == last else f"rank {last}")
    # the layer: x of another dtype on one rank
    layer = gnd.SyncGroupNorm(3, 6, comm=COMM)
    xl = x.astype(np.float64) if RANK == last else x
    expect_error("layer dtype on one rank", lambda: layer(xl), TypeError, "dtype")
    # not a communicator (every rank): a TypeError naming comm, no collective
    expect_error("not a comm", lambda: gnd.group_norm(x, 3, comm="world"), TypeError, "comm")
    expect_error("None comm", lambda: gnd.group_norm(x, 3, comm=None), TypeError, "comm")
    expect_error("COMM_NULL", lambda: gnd.group_norm(x, 3, comm=MPI.COMM_NULL), ValueError,
                 "COMM_NULL")
    # the communicator still works: a good call after the errors
    same("errors", "after", "y", gnd.group_norm(x, 3, comm=COMM),
         mine(gn.group_norm(np.concatenate(COMM.allgather(x)), 3, stats="batch"), [2] * P))


GROUPS = {name[6:]: f for name, f in globals().items() if name.startswith("group_")}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", nargs="*", choices=sorted(GROUPS), default=sorted(GROUPS))
    args = ap.parse_args()
    for name in args.only:
        try:
            GROUPS[name]()
        except Exception:
            failures.append(f"{name}: raised on rank {RANK}:\n{traceback.format_exc()}")
            break     # the ranks may be out of step now: stop here
    everything = COMM.gather((checks, failures), root=0)
    if RANK == 0:
        total = {}
        for c, _ in everything:
            for k, v in c.items():
                total[k] = total.get(k, 0) + v
        print("RESULT " + json.dumps(dict(P=P, checks=total,
                                          failures=[f for _, fl in everything for f in fl])),
              flush=True)


if __name__ == "__main__":
    main()
