"""Dask against in-memory gn_native on one array larger than 1 GiB.

    python bench/scaleout_dask.py            # float32 (20, 256, 256, 256): 1.25 GiB, ~1 min
    python bench/scaleout_dask.py --quick    # 16 MiB, a smoke test of a few seconds
    python bench/scaleout_dask.py --stats sample --chunk-n 2 --json out.json

The same float32 array (in memory, so that both sides read the same bytes at
the same speed) is normalized three ways, interleaved, median of the repeats
after a warm-up:

- in memory: ``gn_native.group_norm(x, G, stats=...)`` writing into a
  preallocated array (``out=``), with all cores (OpenMP);
- Dask, ``y.persist()``: the lazy graph of ``gn_native.dask`` over
  ``dask.array.from_array(x, chunks=...)`` run, its blocks kept as they come
  (the graph's own cost: partials, the merge, normalize);
- Dask, ``y.store(out)``: the same, each block's result copied into a
  preallocated array, as a real pipeline writes its blocks to zarr (threaded
  scheduler only: a cluster's workers cannot write into this process's array);
- Dask, ``y.compute()``: the same graph, blocks concatenated into a new array
  (the extra copy Dask makes to hand back one NumPy array).

Dask runs on its default scheduler, the local threaded one, with one thread per
core and gn_native's own threads set to 1 inside each block (the parallelism is
Dask's, over blocks; ``--gn-threads`` changes it).  ``--scheduler distributed``
runs on a ``distributed.LocalCluster`` of in-process workers instead (worker
processes would copy every block between processes), with x's blocks persisted
on the workers first.  Chunks split only N, so
the Dask result must equal the in-memory one bit for bit: it is checked, and
the run fails (exit 1) otherwise.

bench/scaleout.py imports `measure` to report Dask beside MPI in one run.
"""
import argparse
import json
import os
import statistics
import time
import warnings

import numpy as np

GIB = 2 ** 30


def _shape(size_bytes, c=256, hw=256, itemsize=4):
    """(N, C, H, W) with C = H = W = 256 (a mid-UNet activation) and the smallest N
    giving at least size_bytes (N = 16 is exactly 1 GiB)."""
    per = c * hw * hw * itemsize
    return (max(1, -(-int(size_bytes) // per)), c, hw, hw)


def _median_ms(fns, repeats):
    """{name: median ms} of interleaved calls of each fn, after one warm-up round."""
    times = {k: [] for k in fns}
    for r in range(repeats + 1):
        for k, f in fns.items():
            t = time.perf_counter()
            f()
            if r:
                times[k].append((time.perf_counter() - t) * 1e3)
    return {k: statistics.median(v) for k, v in times.items()}


def measure(size_bytes=1.25 * GIB, *, shape=None, n_groups=32, stats="batch", chunk_n=1,
            repeats=3, scheduler="threads", gn_threads=1, seed=0, verbose=False):
    """Time Dask against the in-memory call; a dict of the figures.

    Parameters
    ----------
    size_bytes : float
        Size of the float32 input; the shape is (N, 256, 256, 256) with the
        smallest N reaching it, unless `shape` is given.
    shape : tuple of int, optional
        (N, C, *spatial) instead.
    n_groups : int
        G.
    stats : {"batch", "sample"}
        Statistics mode of both calls.
    chunk_n : int
        Samples per Dask chunk (channels and space unsplit).
    repeats : int
        Timed rounds (after one warm-up round).
    scheduler : {"threads", "distributed"}
        Dask's threaded scheduler, or a 2-worker in-process LocalCluster.
    gn_threads : int
        gn_native's threads inside each Dask block (the in-memory call uses all).
    """
    import dask
    import dask.array as da
    if scheduler == "distributed":
        import distributed

    import gn_native as gn
    from gn_native import dask as gnd

    shape = tuple(shape) if shape is not None else _shape(size_bytes)
    cores = os.cpu_count() or 1
    all_threads = gn.get_num_threads()
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape, dtype=np.float32)
    x += np.float32(3.0)
    y_mem = np.empty_like(x)
    y_dask = np.empty_like(x)
    if verbose:
        print(f"  data {x.nbytes / GIB:.2f} GiB made in {time.perf_counter() - t0:.1f} s",
              flush=True)
    chunks = (chunk_n,) + shape[1:]
    xd = da.from_array(x, chunks=chunks)
    cluster = client = None
    if scheduler == "distributed":
        cluster = distributed.LocalCluster(n_workers=min(cores, 2), threads_per_worker=1,
                                           processes=False, dashboard_address=None)
        client = distributed.Client(cluster, set_as_default=False)
        get = client.get
        with warnings.catch_warnings():      # x goes into the graph once, on purpose
            warnings.simplefilter("ignore", UserWarning)
            xd = client.persist(xd)          # the blocks live on the workers
            with client.as_current():
                distributed.wait(xd)
    else:
        get = "threads"

    def in_memory():
        gn.group_norm(x, n_groups, stats=stats, out=y_mem)

    def dask_run(how):
        gn.set_num_threads(gn_threads)
        try:
            y = gnd.group_norm(xd, n_groups, stats=stats)
            with dask.config.set(scheduler=get):
                if how == "persist":
                    if client is not None:
                        y = client.persist(y)
                        with client.as_current():
                            distributed.wait(y)
                        return y
                    return y.persist()
                if how == "store":
                    da.store(y, y_dask, lock=False)
                    return y_dask
                return y.compute()
        finally:
            gn.set_num_threads(all_threads)

    hows = ("persist", "compute") + (("store",) if client is None else ())
    try:
        ms = _median_ms({"in_memory": in_memory,
                         **{"dask_" + h: (lambda h=h: dask_run(h)) for h in hows}}, repeats)
        in_memory()
        same = all(np.array_equal(np.asarray(dask_run(how)).view(np.uint32),
                                  y_mem.view(np.uint32)) for how in hows if how != "persist")
    finally:
        if client is not None:
            client.close()
            cluster.close()
    moved = 2 * x.nbytes          # read x, write y
    nblocks = int(np.prod(xd.numblocks))
    return {
        "engine": "dask", "dask_version": dask.__version__,
        "scheduler": ("threaded (dask default), %d threads" % cores if scheduler == "threads"
                      else "distributed.LocalCluster, 2 in-process workers x 1 thread"),
        "gn_threads_in_blocks": gn_threads, "gn_threads_in_memory": all_threads,
        "shape": list(shape), "dtype": "float32", "nbytes": int(x.nbytes),
        "gib": x.nbytes / GIB, "n_groups": n_groups, "stats": stats,
        "chunks": list(chunks), "blocks": nblocks, "repeats": repeats,
        "in_memory_ms": ms["in_memory"], "in_memory_gbps": moved / ms["in_memory"] / 1e6,
        **{k: v for h in hows for k, v in (
            (f"dask_{h}_ms", ms["dask_" + h]),
            (f"{h}_vs_in_memory", ms["dask_" + h] / ms["in_memory"]),
            (f"dask_{h}_gbps", moved / ms["dask_" + h] / 1e6))},
        "bit_identical": same,
    }


def report(r):
    """Lines for a terminal."""
    return "\n".join([
        f"Dask vs in memory: float32 {tuple(r['shape'])} ({r['gib']:.2f} GiB), G={r['n_groups']}, "
        f"stats={r['stats']}, chunks {tuple(r['chunks'])} ({r['blocks']} blocks)",
        f"  Dask scheduler: {r['scheduler']}; gn_native threads per block "
        f"{r['gn_threads_in_blocks']}, in memory {r['gn_threads_in_memory']}; "
        f"median of {r['repeats']}",
        f"  in memory (out=)      {r['in_memory_ms']:9.1f} ms  {r['in_memory_gbps']:6.2f} GB/s",
        *(f"  Dask y.{h + ('(out)' if h == 'store' else '()'):14s}{r[f'dask_{h}_ms']:9.1f} ms"
          f"  {r[f'dask_{h}_gbps']:6.2f} GB/s  x{r[f'{h}_vs_in_memory']:.2f} in-memory time"
          for h in ("persist", "store", "compute") if f"dask_{h}_ms" in r),
        f"  y bit-identical to the in-memory call: {'yes' if r['bit_identical'] else 'NO'}",
    ])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="16 MiB, 2 repeats: a smoke test")
    ap.add_argument("--gib", type=float, default=1.25, help="input size (default 1.25 GiB)")
    ap.add_argument("--stats", choices=("batch", "sample"), default="batch")
    ap.add_argument("--chunk-n", type=int, default=1, help="samples per chunk (default 1)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--scheduler", choices=("threads", "distributed"), default="threads")
    ap.add_argument("--gn-threads", type=int, default=1)
    ap.add_argument("--json", default=None, help="write the figures here")
    a = ap.parse_args(argv)
    if a.quick:
        kw = dict(shape=(8, 64, 32, 256), repeats=2)
    else:
        kw = dict(size_bytes=a.gib * GIB, repeats=a.repeats)
    t = time.perf_counter()
    r = measure(stats=a.stats, chunk_n=a.chunk_n, scheduler=a.scheduler,
                gn_threads=a.gn_threads, verbose=True, **kw)
    print(report(r))
    print(f"  ({time.perf_counter() - t:.0f} s in all)")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(r, f, indent=1)
    return 0 if r["bit_identical"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
