"""Past one process: MPI communication share per step, and Dask against in memory.

    python bench/scaleout.py             # MPI P = 1, 2, 4 on (8 per rank, 256, 32, 32)
                                         # float32, then Dask on 1.25 GiB; a few minutes
    python bench/scaleout.py --quick     # small sizes, few repeats: a smoke test (~20 s)
    python bench/scaleout.py --ranks 1,2 --per-rank 4 --no-dask --json out.json

MPI part: for each P, ``mpiexec -n P`` (the one beside this python) runs this
file in worker mode.  Each rank holds `--per-rank` samples; a step is one
training step of `gn_native.distributed` with ``stats="batch"``: forward
(``group_norm_forward``) then backward (``group_norm_backward``).  The
communicator is wrapped so that every collective call is timed (the small
agreement ``allgather`` and the ``Allgatherv`` of the float64 partials and
sums).  Reported per P: the median step time over the repeats, the median
time inside the step's collectives and its share of the step.  Time in a
collective includes waiting for the slowest rank to arrive (on an
oversubscribed or busy machine, the ranks taking turns on the cores), so
each repeat also times the same collectives, same payloads, right after a
barrier: "transport alone", the cost of the communication itself, and its
share of the step.
Each rank runs one gn_native thread (``OMP_NUM_THREADS=1``): P ranks use P
cores, as data-parallel training with one rank per core.

Dask part: ``measure`` from bench/scaleout_dask.py (the Dask helper's file):
an array above 1 GiB through ``gn_native.dask`` against the in-memory call.

Results print as a table and go to bench/out/scaleout.json (``--json``).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


# ---- worker: runs under mpiexec ---------------------------------------------------

def _timing_comm(MPI, comm):
    """A communicator whose collective calls add their wall time to `.spent`."""
    class Timed(MPI.Intracomm):
        spent = 0.0
        calls = 0

    def wrap(name):
        base = getattr(MPI.Intracomm, name)

        def method(self, *args, **kwargs):
            t = time.perf_counter()
            try:
                return base(self, *args, **kwargs)
            finally:
                Timed.spent += time.perf_counter() - t
                Timed.calls += 1
        return method

    for name in ("allgather", "Allgather", "Allgatherv", "allreduce", "Allreduce", "bcast",
                 "Bcast", "Barrier", "barrier", "gather", "Gatherv"):
        setattr(Timed, name, wrap(name))
    return Timed(comm)


def worker(per_rank, c, hw, groups, repeats, warmup):
    import numpy as np
    from mpi4py import MPI

    import gn_native.distributed as gnd

    world = MPI.COMM_WORLD
    comm = _timing_comm(MPI, world)
    Timed = type(comm)
    rng = np.random.default_rng(world.rank)
    shape = (per_rank, c, hw, hw)
    x = (rng.standard_normal(shape, dtype=np.float32) + np.float32(3)).astype(np.float32)
    dy = rng.standard_normal(shape, dtype=np.float32)
    gamma = np.ones(c, np.float32)
    beta = np.zeros(c, np.float32)
    y = np.empty_like(x)
    dx = np.empty_like(x)
    # the step's collectives alone, with the ranks lined up by a barrier first: the
    # transport's own cost, without the wait for the slowest rank
    from gn_native import stages
    _, mean, rstd = gnd.group_norm_forward(x, groups, gamma, beta, comm=world)
    part = stages.stats_partial(x, groups)
    sums = stages.backward_reduce(dy, x, mean, rstd, groups, gamma, beta)
    sig = dict(C=c, spatial=(hw, hw), n_groups=groups, dtype="float32")

    def transport():
        if world.size == 1:      # one rank: the calls skip every collective
            return
        for payload in (part, sums):
            counts = gnd._agree(world, None, sig, per_rank)
            gnd._allgatherv(world, payload, counts)

    steps, comms, alone, calls = [], [], [], 0
    for r in range(warmup + repeats):
        world.Barrier()       # every rank starts the step together (not timed)
        Timed.spent, Timed.calls = 0.0, 0
        t = time.perf_counter()
        _, mean, rstd = gnd.group_norm_forward(x, groups, gamma, beta, comm=comm, out=y)
        gnd.group_norm_backward(dy, x, mean, rstd, groups, gamma, beta, comm=comm, out=dx)
        step = time.perf_counter() - t
        world.Barrier()
        t = time.perf_counter()
        transport()
        solo = time.perf_counter() - t
        if r >= warmup:
            steps.append(step)
            comms.append(Timed.spent)
            alone.append(solo)
            calls = Timed.calls
    mine = dict(step_ms=statistics.median(steps) * 1e3, comm_ms=statistics.median(comms) * 1e3,
                share=statistics.median(s_c / s for s_c, s in zip(comms, steps)),
                transport_ms=statistics.median(alone) * 1e3)
    rows = world.gather(mine, root=0)
    if world.rank == 0:
        med = lambda k: statistics.median(r[k] for r in rows)
        out = dict(P=world.size, per_rank=per_rank, shape_per_rank=list(shape), dtype="float32",
                   n_groups=groups, stats="batch", repeats=repeats,
                   collectives_per_step=calls,
                   bytes_gathered_per_step=8 * world.size * per_rank * (groups * 5 + c * 2),
                   step_ms=med("step_ms"), comm_ms=med("comm_ms"), comm_share=med("share"),
                   transport_ms=med("transport_ms"),
                   transport_share=med("transport_ms") / med("step_ms"),
                   comm_share_max_rank=max(r["share"] for r in rows),
                   step_ms_rank0=rows[0]["step_ms"], comm_ms_rank0=rows[0]["comm_ms"])
        print("RESULT " + json.dumps(out), flush=True)


# ---- driver -----------------------------------------------------------------------

def run_mpi(p, a, timeout):
    exe = Path(sys.executable).parent / "mpiexec"
    if not exe.exists():
        raise SystemExit(f"{exe} is missing: pip install \"gn_native[mpi]\" (mpi4py + mpich)")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.setdefault("HYDRA_LAUNCHER", "fork")
    cmd = [str(exe), "-n", str(p), sys.executable, str(Path(__file__).resolve()), "--worker",
           "--per-rank", str(a.per_rank), "--channels", str(a.channels), "--hw", str(a.hw),
           "--groups", str(a.groups), "--repeats", str(a.repeats), "--warmup", str(a.warmup)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    lines = [l for l in r.stdout.splitlines() if l.startswith("RESULT ")]
    if r.returncode or not lines:
        raise SystemExit(f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stdout[-2000:]}\n"
                         f"{r.stderr[-2000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def mpi_table(rows, cores):
    lines = [f"MPI: gn_native.distributed, stats='batch', forward + backward per step "
             f"(float32 {tuple(rows[0]['shape_per_rank'])} per rank, G={rows[0]['n_groups']}, "
             f"1 thread per rank, {cores} cores, median of {rows[0]['repeats']})",
             "    P   step ms   in collectives ms   share (max rank)   transport alone ms"
             "   share   collectives   gathered KiB"]
    for r in rows:
        over = "  oversubscribed" if r["P"] > cores else ""
        lines.append(f"  {r['P']:3d}  {r['step_ms']:8.2f}  {r['comm_ms']:18.3f}  "
                     f"{100 * r['comm_share']:6.1f} % ({100 * r['comm_share_max_rank']:4.1f} %)"
                     f"  {r['transport_ms']:19.3f}  {100 * r['transport_share']:5.1f} %"
                     f"  {r['collectives_per_step']:12d}  "
                     f"{r['bytes_gathered_per_step'] / 1024:12.1f}{over}")
    lines.append("  in collectives: the step's own calls, waiting for the slowest rank included;"
                 " transport alone: the same calls with the ranks lined up by a barrier")
    return "\n".join(lines)


def load_dask():
    """bench/scaleout_dask.py as a module, or None when it is absent."""
    path = HERE / "scaleout_dask.py"
    if not path.exists():
        return None
    sys.path.insert(0, str(HERE))
    import scaleout_dask
    return scaleout_dask


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help="small sizes and few repeats (a smoke test)")
    ap.add_argument("--ranks", default="1,2,4", help="P values (default 1,2,4)")
    ap.add_argument("--per-rank", type=int, default=8, help="samples per rank (default 8)")
    ap.add_argument("--channels", type=int, default=256)
    ap.add_argument("--hw", type=int, default=32, help="H = W (default 32)")
    ap.add_argument("--groups", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--no-dask", action="store_true", help="skip the Dask part")
    ap.add_argument("--dask-gib", type=float, default=1.25, help="Dask input size (GiB)")
    ap.add_argument("--json", default=str(HERE / "out" / "scaleout.json"),
                    help="where to write the figures ('none': nowhere)")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.quick:
        a.per_rank, a.channels, a.hw, a.groups = 2, 32, 8, 8
        a.repeats, a.warmup = 5, 1
    if a.worker:
        worker(a.per_rank, a.channels, a.hw, a.groups, a.repeats, a.warmup)
        return 0
    cores = os.cpu_count() or 1
    t0 = time.perf_counter()
    result = {"cores": cores, "mpi": [], "dask": None}
    print(f"bench/scaleout.py: {cores} cores; mpiexec from {Path(sys.executable).parent}",
          flush=True)
    for p in (int(s) for s in a.ranks.split(",")):
        row = run_mpi(p, a, timeout=120 if a.quick else 900)
        result["mpi"].append(row)
        print(f"  P={p}: step {row['step_ms']:.2f} ms, in collectives {row['comm_ms']:.3f} ms "
              f"({100 * row['comm_share']:.1f} %), transport alone {row['transport_ms']:.3f} ms",
              flush=True)
    print(mpi_table(result["mpi"], cores))
    if not a.no_dask:
        dask_bench = load_dask()
        if dask_bench is None:
            result["dask"] = "bench/scaleout_dask.py is missing"
            print("Dask: bench/scaleout_dask.py is missing (its measure() is the Dask part)")
        else:
            kw = (dict(shape=(8, 64, 32, 256), repeats=2) if a.quick
                  else dict(size_bytes=a.dask_gib * 2 ** 30))
            try:
                r = dask_bench.measure(verbose=True, **kw)
            except ImportError as e:     # dask or distributed not installed
                result["dask"] = f"skipped: {e}"
                print(f'Dask: skipped ({e}; pip install "gn_native[dask]")')
            else:
                result["dask"] = r
                print(dask_bench.report(r) if hasattr(dask_bench, "report") else json.dumps(r))
    print(f"({time.perf_counter() - t0:.0f} s in all)")
    if a.json != "none":
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        with open(a.json, "w") as f:
            json.dump(result, f, indent=1)
        print(f"figures written to {a.json}")
    dask_ok = not isinstance(result["dask"], dict) or result["dask"].get("bit_identical", True)
    return 0 if dask_ok else 1


if __name__ == "__main__":
    sys.exit(main())
