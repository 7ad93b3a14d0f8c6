"""gn_native.distributed over MPI: bit-identical to the single-process call for P = 1..4.

The cases run under ``mpiexec -n P`` (tests/mpi/cases.py, one launch per P, every
case in it), with the mpiexec that the ``mpich`` wheel puts beside the venv's
python (sys.executable's folder), so that a plain ``pip install ".[test]"``
gives everything.  Every launch has a timeout: a hang (a rank left waiting in a
collective) fails the test instead of CI.  Without mpi4py the whole module is
skipped, with the reason.
"""
import ast
import inspect
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("mpi4py", reason='mpi4py is not installed (pip install "gn_native[mpi]"; '
                                     "the [test] extra has it)")

import gn_native.distributed as gnd  # noqa: E402

HERE = Path(__file__).resolve().parent
CASES = HERE / "mpi" / "cases.py"
DOCTESTS = HERE / "mpi" / "doctests.py"
REPO = HERE.parent
BIN = Path(sys.executable).parent
TIMEOUT = 240    # seconds per launch: far above the normal 5-20 s on 2 shared cores


def _mpiexec():
    exe = BIN / "mpiexec"
    if not exe.exists():
        pytest.fail(f"mpi4py is installed but {exe} is missing: install the MPI library "
                    f"beside it (pip install mpich, in the [mpi] and [test] extras)")
    return str(exe)


def _env():
    env = dict(os.environ)
    # one OpenMP thread per rank: 4 ranks on 2 cores are oversubscribed already, and
    # the results do not depend on the thread count
    env["OMP_NUM_THREADS"] = "1"
    # hydra starts the ranks on this machine with fork, never ssh (also in a container)
    env.setdefault("HYDRA_LAUNCHER", "fork")
    return env


def _run(cmd, timeout, **kw):
    """subprocess.run for mpiexec: on a timeout, SIGTERM to mpiexec's process group (hydra
    then ends its proxies and ranks), SIGKILL 10 s later; the test fails, CI goes on."""
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         start_new_session=True, **kw)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
            try:
                os.killpg(p.pid, sig)
                out, err = p.communicate(timeout=wait)
                break
            except (subprocess.TimeoutExpired, ProcessLookupError):
                continue
        else:
            out = err = ""
        pytest.fail(f"{' '.join(cmd)} hung for {timeout} s (a rank left in a collective?)\n"
                    f"stdout:\n{(out or '')[-3000:]}\nstderr:\n{(err or '')[-3000:]}")
    return subprocess.CompletedProcess(cmd, p.returncode, out, err)


def _launch(script, n, *args, timeout=TIMEOUT):
    """Run `script` on n ranks; its RESULT line as JSON (the test fails on a hang)."""
    cmd = [_mpiexec(), "-n", str(n), sys.executable, str(script), *args]
    r = _run(cmd, timeout, env=_env(), cwd=str(HERE))
    lines = [l for l in r.stdout.splitlines() if l.startswith("RESULT ")]
    assert r.returncode == 0 and lines, (
        f"{' '.join(cmd)} exited with {r.returncode}\nstdout:\n{r.stdout[-4000:]}\n"
        f"stderr:\n{r.stderr[-4000:]}")
    return json.loads(lines[-1][len("RESULT "):])


GROUPS = {"matrix", "shapes", "empty", "accuracy", "no_comm", "layer", "errors"}


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_bit_identical_to_one_process(n):
    """Every output of every case (both stats, both layouts, four dtypes, three affine
    kinds, activations, even and uneven splits with an empty rank, the layer's running
    statistics, the error cases) on n ranks against one process."""
    r = _launch(CASES, n)
    assert r["P"] == n
    assert set(r["checks"]) == GROUPS, f"groups that ran: {sorted(r['checks'])}"
    assert not r["failures"], f"{len(r['failures'])} failures on {n} ranks:\n" + "\n".join(
        r["failures"][:40])


@pytest.mark.parametrize("n", [1, 2])
def test_examples_run_on_any_number_of_ranks(n):
    """The docstrings' examples, under mpiexec -n 1 and -n 2 (each rank takes its slice)."""
    rows = _launch(DOCTESTS, n)
    for rank, per_obj in enumerate(rows):
        for name, (tried, failed) in per_obj.items():
            assert tried > 0, f"{name}: no examples"
            assert failed == 0, f"{name}: {failed} of {tried} examples failed on rank {rank}"


def test_scaleout_bench_runs(tmp_path):
    """bench/scaleout.py --quick: the MPI share for P = 1 and 2, and the Dask part
    (when dask is installed), in one run."""
    script = REPO / "bench" / "scaleout.py"
    if not script.exists():
        pytest.skip("no checkout beside the tests")
    out = tmp_path / "scaleout.json"
    args = ["--quick", "--ranks", "1,2", "--json", str(out)]
    r = _run([sys.executable, str(script), *args], TIMEOUT, env=_env(), cwd=str(tmp_path))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    res = json.loads(out.read_text())
    assert [row["P"] for row in res["mpi"]] == [1, 2]
    assert res["mpi"][0]["comm_ms"] == 0 and res["mpi"][1]["collectives_per_step"] == 4
    assert 0 < res["mpi"][1]["comm_share"] < 1
    if isinstance(res["dask"], dict):
        assert res["dask"]["bit_identical"]
    assert "comm share" in r.stdout or "share" in r.stdout


# ---- in this process, without initializing MPI here (the suite forks elsewhere) ----

PUBLIC = [(n, getattr(gnd, n)) for n in gnd.__all__] + [
    (f"SyncGroupNorm.{n}", getattr(gnd.SyncGroupNorm, n)) for n in ("__call__", "backward")]


def test_import_does_not_initialize_mpi():
    code = ("import sys, gn_native, gn_native.distributed; "
            "assert 'mpi4py.MPI' not in sys.modules, 'MPI was initialized at import'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120, cwd=str(HERE))


def test_without_mpi4py_the_first_call_says_what_to_install():
    code = (
        "import sys; sys.modules['mpi4py'] = None\n"
        "import numpy as np, gn_native.distributed as gnd\n"
        "try:\n"
        "    gnd.group_norm(np.zeros((2, 4, 3), np.float32), 2, comm=None)\n"
        "except ImportError as e:\n"
        "    print('IMPORTERROR', e)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=120, cwd=str(HERE))
    assert 'IMPORTERROR' in r.stdout and 'pip install "gn_native[mpi]"' in r.stdout, (
        r.stdout + r.stderr)


@pytest.mark.parametrize("name,obj", PUBLIC, ids=[n for n, _ in PUBLIC])
def test_numpydoc_sections(name, obj):
    doc = inspect.getdoc(obj)
    assert doc, f"{name} has no docstring"
    wanted = ["Parameters", "Examples"]
    if not name.startswith("SyncGroupNorm"):
        wanted += ["Returns", "Raises", "See Also"]
    for section in wanted:
        assert f"\n{section}\n" + "-" * len(section) in doc, f"{name}: no {section} section"
    documented = doc.split("\nParameters\n")[1].split("\n\n")[0] if "\nParameters\n" in doc else ""
    for p in set(inspect.signature(obj).parameters) - {"self", "kwargs"}:
        assert p in documented or any(p in line.split(":")[0] for line in doc.splitlines()
                                      if " : " in line), f"{name}: parameter {p} is not documented"


def test_stub_covers_the_module():
    from test_packaging import _check_covers, _defs, _stub
    body = _stub("distributed").body
    defs, names = _defs(body)
    for name in ("group_norm", "group_norm_forward", "group_norm_backward"):
        _check_covers(f"gn_native.distributed.{name}", getattr(gnd, name), defs[name])
    cls = next(n for n in body if isinstance(n, ast.ClassDef) and n.name == "SyncGroupNorm")
    methods, attrs = _defs(cls.body)
    for name, v in vars(gnd.SyncGroupNorm).items():
        if inspect.isfunction(v) and (not name.startswith("_") or name in ("__init__",
                                                                           "__call__")):
            _check_covers(f"SyncGroupNorm.{name}", v, methods[name])
    assert "comm" in attrs


def test_cupy_arrays_go_to_the_nccl_transport(monkeypatch):
    """A CuPy x is handed to gn_native._nccl with every argument (no GPU needed: a
    stand-in module records the call); MPI is not touched."""
    calls = []

    class Stub:
        def __getattr__(self, name):
            return lambda *a, **k: calls.append((name, a, k)) or (None, None, None)

    monkeypatch.setattr(gnd, "_nccl", lambda: Stub())
    x = type("ndarray", (), {"__module__": "cupy._core.core"})()
    comm = object()
    gnd.group_norm_forward(x, 2, comm=comm, stats="sample", channel_axis=-1)
    gnd.group_norm(x, 2, comm=comm)
    gnd.group_norm_backward(x, x, 1, 2, 2, comm=comm, param_grads="local", activation="silu")
    assert [c[0] for c in calls] == ["group_norm_forward", "group_norm_forward",
                                     "group_norm_backward"]
    assert calls[0][2]["stats"] == "sample" and calls[0][2]["channel_axis"] == -1
    assert calls[0][2]["comm"] is comm
    assert calls[2][2]["param_grads"] == "local" and calls[2][2]["activation"] == "silu"
