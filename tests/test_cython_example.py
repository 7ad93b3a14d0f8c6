"""examples/cython: a Cython module that cimports gn_native.capi and calls the C core nogil.

Built in a temporary copy with its own setup.py (cythonize, include_dirs =
get_include(), library_dirs = get_lib_dir(), libraries = ['gn_native'], rpath
to get_lib_dir()), then checked against the Python API: the same C function
with the same descriptor, so the same bits, also from several threads.
"""
import importlib.util
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

import gn_native as gn
import reference as ref
from conftest import assert_close, assert_stats_close

pytest.importorskip("Cython")
EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "cython"


@pytest.fixture(scope="module")
def gn_example(tmp_path_factory):
    if shutil.which("cc") is None and shutil.which("gcc") is None:
        pytest.skip("no C compiler")
    d = tmp_path_factory.mktemp("cython_example")
    for f in ("gn_example.pyx", "setup.py"):
        shutil.copy(EXAMPLE / f, d / f)
    env = dict(__import__("os").environ)
    root = str(Path(gn.__file__).resolve().parents[1])
    env["PYTHONPATH"] = root + (":" + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    res = subprocess.run([sys.executable, "setup.py", "-q", "build_ext", "--inplace"], cwd=d,
                         env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         timeout=600)
    assert res.returncode == 0, f"building the Cython example failed:\n{res.stdout[-6000:]}"
    so = sorted(d.glob("gn_example*.so")) + sorted(d.glob("gn_example*.pyd"))
    assert so, f"no extension module built in {d}: {sorted(p.name for p in d.iterdir())}"
    spec = importlib.util.spec_from_file_location("gn_example", so[0])
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("shape,groups,affine", [
    ((2, 6, 5, 7), 3, True),
    ((3, 4, 11), 2, False),
    ((1, 8), 8, True),
    ((2, 12, 64, 65), 4, True),        # large enough for several OpenMP threads
])
def test_matches_python_api_bit_for_bit(gn_example, shape, groups, affine):
    rng = np.random.default_rng(0)
    x = (rng.standard_normal(shape) * 3 + 5).astype(np.float32)
    gamma = rng.uniform(0.5, 1.5, shape[1]).astype(np.float32) if affine else None
    beta = rng.normal(0, 0.5, shape[1]).astype(np.float32) if affine else None
    y, mean, rstd = gn_example.group_norm_f32(x, groups, gamma, beta)
    want = gn.group_norm_forward(x, groups, gamma, beta)
    for name, a, b in zip(("y", "mean", "rstd"), (y, mean, rstd), want):
        assert a.dtype == b.dtype and a.shape == b.shape, name
        assert a.tobytes() == b.tobytes(), f"{name} differs from gn_native.group_norm_forward"
    ry, rm, rr = ref.forward(x, groups, gamma, beta)
    assert_close(y, ry, np.float32)
    assert_stats_close(mean, rstd, rm, rr, np.float32)


@pytest.mark.parametrize("shape,groups,channels_last", [
    ((2, 16, 64), 8, True),            # the shapes that overran a workspace from a prange team
    ((1, 64, 16), 8, True),
    ((8, 16, 64), 8, True),
    ((8, 32, 9, 9), 4, False),
    ((6, 24, 40, 40), 8, True),        # large enough that a plain call would use threads
])
def test_calls_from_a_prange_team(gn_example, shape, groups, channels_last):
    """Each thread of the caller's own OpenMP team (prange, 4 threads) normalizes one
    sample: the same bits as one Python call on the whole batch."""
    rng = np.random.default_rng(2)
    x = (rng.standard_normal(shape) * 2 + 3).astype(np.float32)
    for _ in range(3):
        y, mean, rstd = gn_example.group_norm_each_f32(x, groups, channels_last, 4)
        want = gn.group_norm_forward(x, groups, channel_axis=-1 if channels_last else 1)
        for name, a, b in zip(("y", "mean", "rstd"), (y, mean, rstd), want):
            assert a.tobytes() == b.tobytes(), f"{name} differs from gn_native.group_norm_forward"
    ry, _, _ = ref.forward(x, groups, channel_axis=-1 if channels_last else 1)
    assert_close(y, ry, np.float32)


def test_c_errors_become_value_errors(gn_example):
    x = np.ones((2, 6, 3), np.float32)
    with pytest.raises(ValueError, match="invalid argument"):
        gn_example.group_norm_f32(x, 4)          # 4 does not divide 6: GN_EINVAL from C
    with pytest.raises(ValueError, match="invalid argument"):
        gn_example.group_norm_f32(x, 3, eps=0.0)
    y, mean, _ = gn_example.group_norm_f32(np.zeros((0, 4, 3), np.float32), 2)
    assert y.shape == (0, 4, 3) and mean.shape == (0, 2)


def test_threads_get_identical_results(gn_example):
    """The call releases the GIL: 6 threads at once give the serial bits."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((4, 16, 48, 48)).astype(np.float32)
    want = gn_example.group_norm_f32(x, 4)
    start = threading.Barrier(6)
    results, errors = [], []

    def work():
        try:
            start.wait()
            for _ in range(5):
                results.append(gn_example.group_norm_f32(x, 4))
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert len(results) == 30
    for got in results:
        assert all(a.tobytes() == b.tobytes() for a, b in zip(got, want))
