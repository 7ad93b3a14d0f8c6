"""Bit-for-bit determinism: thread counts, SIMD vs scalar path, concurrent Python threads."""
import os
import subprocess
import sys
import textwrap
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import gn_native as gn
from conftest import DTYPES, assert_bit_identical, make_affine, make_data

REPO = os.path.dirname(os.path.dirname(os.path.abspath(gn.__file__)))
TESTS = os.path.dirname(os.path.abspath(__file__))

# Run in a fresh interpreter per configuration: OMP_NUM_THREADS and GN_NATIVE_ISA are
# read when the library loads.  Saves a digest of every output's raw bytes to an .npz:
# the outputs themselves (over a GiB per configuration) took most of this file's time.
WORKER = textwrap.dedent("""
    import contextlib, hashlib, io, sys
    import numpy as np
    import gn_native as gn
    from conftest import DTYPES, make_affine, make_data

    NT_BYTES = 16 << 20   # outputs from this size on take the streaming-store path

    def streamed(dt):
        # just over NT_BYTES of output for this dtype; odd planes, so rows start unaligned
        h, w = {2: (361, 365), 4: (181, 365), 8: (181, 183)}[dt.itemsize]
        assert 64 * h * w * dt.itemsize >= NT_BYTES
        return (1, 64, h, w)

    CASES = [  # (name, logical shape or f(dtype), n_groups, stats modes)
        ("big_group", (1, 4, 300, 256), 1, ("sample", "batch")),  # chunked reductions
        ("many_groups", (8, 64, 16, 16), 32, ("sample", "batch")),
        ("odd", (3, 6, 5, 7), 3, ("sample", "batch")),
        ("wide_k", (2, 96, 33, 17), 4, ("sample", "batch")),
        # the stores, not the statistics, differ here: one stats mode is enough
        ("streamed", streamed, 8, ("sample",)),
    ]
    res = {"threads": np.array(gn.get_num_threads())}
    for name, shape_of, g, modes in CASES:
        # float64 data drawn once per case, in the largest shape the case takes; each
        # dtype's x is a corner of it, rounded to the dtype (drawing is the slow part)
        big = max((shape_of(dt) if callable(shape_of) else shape_of) for dt in DTYPES)
        x64, dy64 = make_data(big, np.float64, 0, loc=3.0), make_data(big, np.float64, 1)
        for dt in DTYPES:
            shape = shape_of(dt) if callable(shape_of) else shape_of
            corner = tuple(slice(0, k) for k in shape)
            gamma, beta = make_affine("channel", shape[1], g, dt, 0)
            for layout in ("nchw", "nhwc"):
                ax = 1 if layout == "nchw" else -1
                if layout == "nchw":
                    x, dy = (a[corner].astype(dt, order="C") for a in (x64, dy64))
                else:
                    x, dy = (np.moveaxis(a[corner], 1, -1).astype(dt, order="C")
                             for a in (x64, dy64))
                for stats in modes:
                    y, m, r = gn.group_norm_forward(x, g, gamma, beta, stats=stats, channel_axis=ax)
                    dx, dg, db = gn.group_norm_backward(dy, x, m, r, g, gamma, stats=stats,
                                                        channel_axis=ax)
                    for k, a in dict(y=y, mean=m, rstd=r, dx=dx, dgamma=dg, dbeta=db).items():
                        key = f"{dt.name}/{name}/{layout}/{stats}/{k}"
                        raw = np.ascontiguousarray(a).reshape(-1).view(np.uint8)
                        h = hashlib.blake2b(raw, digest_size=16)
                        res[key] = np.array(a.dtype.str + str(a.shape) + h.hexdigest())
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        shown = gn.show_config()
    res["config"] = np.array(buf.getvalue() + ("" if shown is None else str(shown)))
    np.savez(sys.argv[1], **res)
""")

CONFIGS = {
    "omp1": {"OMP_NUM_THREADS": "1"},
    "omp2": {"OMP_NUM_THREADS": "2"},
    "omp3": {"OMP_NUM_THREADS": "3"},
    "scalar_omp1": {"OMP_NUM_THREADS": "1", "GN_NATIVE_ISA": "scalar"},
    "scalar_omp2": {"OMP_NUM_THREADS": "2", "GN_NATIVE_ISA": "scalar"},
}


def _env(extra):
    env = {k: v for k, v in os.environ.items() if k not in ("GN_NATIVE_ISA", "OMP_NUM_THREADS")}
    env["PYTHONPATH"] = os.pathsep.join([REPO, TESTS] + env.get("PYTHONPATH", "").split(os.pathsep))
    # five workers share the cores: OpenMP threads spinning after each parallel region
    # would take the CPU from the others; waiting passively changes no result
    env.setdefault("OMP_WAIT_POLICY", "passive")
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """{config: {key: digest of the output's dtype, shape and bytes}} from one subprocess
    per configuration (run in parallel)."""
    d = tmp_path_factory.mktemp("determinism")
    procs = {}
    for name, extra in CONFIGS.items():
        path = str(d / f"{name}.npz")
        procs[name] = (path, subprocess.Popen([sys.executable, "-c", WORKER, path], env=_env(extra),
                                              cwd=REPO, stdout=subprocess.PIPE,
                                              stderr=subprocess.STDOUT))
    out = {}
    for name, (path, p) in procs.items():
        log, _ = p.communicate(timeout=300)
        assert p.returncode == 0, f"worker {name} failed:\n{log.decode(errors='replace')}"
        with np.load(path) as f:
            out[name] = {k: f[k] for k in f.files}
    return out


@pytest.mark.parametrize("dtype", [d.name for d in DTYPES])
@pytest.mark.parametrize("config,baseline", [
    ("omp2", "omp1"), ("omp3", "omp1"), ("scalar_omp1", "omp1"), ("scalar_omp2", "omp1"),
])
def test_bit_identical_across_configs(runs, config, baseline, dtype):
    a, b = runs[config], runs[baseline]
    keys = sorted(k for k in b if k.startswith(dtype + "/"))
    assert keys
    differ = [k for k in keys if k not in a or str(a[k]) != str(b[k])]
    assert not differ, f"{config} vs {baseline}: {len(differ)}/{len(keys)} outputs differ: {differ[:12]}"


@pytest.mark.parametrize("config,n", [("omp1", 1), ("omp2", 2), ("omp3", 3)])
def test_omp_num_threads_is_honoured(runs, config, n):
    assert int(runs[config]["threads"]) == n


def _cpu_has_avx2():
    try:
        with open("/proc/cpuinfo") as f:
            return " avx2" in f.read()
    except OSError:
        return False


def test_isa_environment_variable_selects_the_path(runs):
    """show_config() reports the SIMD path, so the scalar/SIMD comparison is not vacuous."""
    scalar = str(runs["scalar_omp1"]["config"]).lower()
    default = str(runs["omp1"]["config"]).lower()
    assert "scalar" in scalar, f"show_config under GN_NATIVE_ISA=scalar:\n{scalar}"
    if _cpu_has_avx2():
        assert "avx2" in default or "avx512" in default, f"show_config by default:\n{default}"


# --- in-process ---------------------------------------------------------------------------

@pytest.fixture
def restore_threads():
    old = gn.get_num_threads()
    yield
    gn.set_num_threads(old)


def test_set_num_threads_round_trip(restore_threads):
    old = gn.get_num_threads()
    assert isinstance(old, int) and old >= 1
    for n in (1, 2, 3, old):
        gn.set_num_threads(n)
        assert gn.get_num_threads() == n


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_set_num_threads_does_not_change_results(restore_threads, dtype):
    x = make_data((1, 4, 300, 256), dtype, 2, loc=5.0)
    dy = make_data(x.shape, dtype, 3)
    results = []
    for n in (1, 2, 4):
        gn.set_num_threads(n)
        y, m, r = gn.group_norm_forward(x, 1)
        dx, dg, db = gn.group_norm_backward(dy, x, m, r, 1)
        results.append((y, m, r, dx, dg, db))
    for other in results[1:]:
        for name, a, b in zip(("y", "mean", "rstd", "dx", "dgamma", "dbeta"), results[0], other):
            assert_bit_identical(a, b, name)


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize("channel_axis", [1, -1])
def test_fused_and_phased_paths_agree(restore_threads, dtype, channel_axis):
    """One sample (N = 1) small enough to stay in cache: one thread computes its
    statistics and normalizes it in one task (the fused path), two threads
    split it into phases; the bits must not differ."""
    shape = (1, 32, 40, 41) if channel_axis == 1 else (1, 40, 41, 32)
    x = make_data(shape, dtype, 4, loc=-2.0)
    gamma, beta = make_affine("channel", 32, 8, dtype, 1)
    results = []
    for n in (1, 2):
        gn.set_num_threads(n)
        results.append(gn.group_norm_forward(x, 8, gamma, beta, channel_axis=channel_axis))
    for name, a, b in zip(("y", "mean", "rstd"), *results):
        assert_bit_identical(a, b, name)


def test_threadpoolctl_limit_applies():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    code = textwrap.dedent("""
        import gn_native as gn
        from threadpoolctl import threadpool_limits
        with threadpool_limits(limits=1, user_api="openmp"):
            inside = gn.get_num_threads()
        print(inside, gn.get_num_threads())
    """)
    r = subprocess.run([sys.executable, "-c", code], env=_env({"OMP_NUM_THREADS": "2"}),
                       cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    inside, after = map(int, r.stdout.split())
    assert inside == 1, "threadpool_limits(1) should limit gn_native's threads"
    assert after == 2


def test_concurrent_python_threads_match_serial():
    """8 Python threads (the GIL is released in the core) give the serial results exactly."""
    jobs = []
    for i in range(8):
        dt = DTYPES[i % len(DTYPES)]
        shape = [(4, 32, 32, 32), (2, 64, 20, 30), (3, 12, 7, 9), (1, 8, 128, 96)][i % 4]
        ax = 1 if i % 2 == 0 else -1
        pshape = shape if ax == 1 else (shape[0],) + shape[2:] + (shape[1],)
        x = make_data(pshape, dt, 10 + i, loc=2.0)
        dy = make_data(pshape, dt, 20 + i)
        gamma, beta = make_affine("channel", shape[1], 4, dt, i)
        jobs.append((x, dy, gamma, beta, ax, "sample" if i % 3 else "batch"))

    def run(job):
        x, dy, gamma, beta, ax, stats = job
        y, m, r = gn.group_norm_forward(x, 4, gamma, beta, stats=stats, channel_axis=ax)
        return (y, m, r) + gn.group_norm_backward(dy, x, m, r, 4, gamma, stats=stats,
                                                   channel_axis=ax)

    serial = [run(j) for j in jobs]
    start = threading.Barrier(8)

    def concurrent(job):
        start.wait()
        return [run(job) for _ in range(3)]

    with ThreadPoolExecutor(8) as ex:
        results = list(ex.map(concurrent, jobs))
    for i, (expected, repeats) in enumerate(zip(serial, results)):
        for got in repeats:
            for name, a, b in zip(("y", "mean", "rstd", "dx", "dgamma", "dbeta"), got, expected):
                assert_bit_identical(a, b, f"job {i} {name}")
