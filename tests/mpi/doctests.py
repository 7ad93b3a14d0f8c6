"""Run the Examples of gn_native.distributed (doctest); under mpiexec or alone.

The examples are written for any number of ranks (each rank takes its slice
of the batch), so tests/test_mpi.py runs them with one process and under
``mpiexec -n 2``.  Rank 0 prints ``RESULT <json>``: examples attempted and
failed per object.
"""
import doctest
import inspect
import json
import sys

import numpy as np
from mpi4py import MPI

import gn_native as gn
import gn_native.distributed as gnd


def objects():
    out = [(n, getattr(gnd, n)) for n in gnd.__all__]
    out += [(f"SyncGroupNorm.{n}", f) for n, f in vars(gnd.SyncGroupNorm).items()
            if n in ("__call__", "backward") and inspect.isfunction(f)]
    return out


def main():
    finder = doctest.DocTestFinder(recurse=False)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    rows = {}
    for name, obj in objects():
        tries, failures = runner.tries, runner.failures
        for t in finder.find(obj, name, globs={"np": np, "gn": gn}):
            runner.run(t, out=sys.stderr.write)
        rows[name] = (runner.tries - tries, runner.failures - failures)
    every = MPI.COMM_WORLD.gather(rows, root=0)
    if MPI.COMM_WORLD.rank == 0:
        print("RESULT " + json.dumps(every), flush=True)


if __name__ == "__main__":
    main()
