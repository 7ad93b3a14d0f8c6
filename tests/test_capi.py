"""The C API: a plain-C header and library, usable without Python.

Compiles, with the flags `python -m gn_native --cflags --libs` prints, the C
example (examples/c) and the C-level tests (tests/c/test_core.c,
tests/c/test_safety.c) against the shipped libgn_native, and runs them:
results against plain loops, scalar vs AVX2 and thread counts bit for bit,
GN_EINVAL for bad descriptors, pthreads; calls from inside the caller's
OpenMP team, a fork after a multithreaded call, huge descriptors, aliasing and
extreme magnitudes.
"""
import re
import shutil
import sys
from pathlib import Path

import pytest

from conftest import load_cbuild

import gn_native


cb = load_cbuild()
CC = cb.compiler()
needs_cc = pytest.mark.skipif(CC is None, reason="no C compiler found (set CC)")
HEADER = Path(gn_native.get_include()) / "gn_native.h"
# OpenMP threads that spin after each parallel region slow these single-core-bound
# programs badly on a 2-core machine; waiting passively changes no result.
RUN_ENV = {"OMP_WAIT_POLICY": "passive"}


def test_header_includes_only_standard_c():
    includes = re.findall(r'^\s*#\s*include\s*[<"]([^>"]+)[>"]', HEADER.read_text(), re.M)
    assert set(includes) <= {"stdint.h", "stddef.h", "stdbool.h"}, includes


@needs_cc
@pytest.mark.parametrize("std", ["c99", "c11"])
def test_header_compiles_as_strict_c(tmp_path, std):
    src = tmp_path / "use.c"
    src.write_text('#include "gn_native.h"\n'
                   "int main(void) { gn_desc d = {.n = 1, .c = 2, .spatial = 3, .groups = 1,"
                   " .eps = 1e-5, .layout = GN_NCHW, .activation = GN_ACT_SILU};"
                   " return (int)d.n - 1; }\n")
    cb.run([*CC.split(), f"-std={std}", "-pedantic", "-Wall", "-Wextra", "-Werror",
            f"-I{gn_native.get_include()}", "-fsyntax-only", str(src)])


@pytest.mark.skipif(shutil.which("c++") is None, reason="no C++ compiler")
def test_header_compiles_as_cpp(tmp_path):
    src = tmp_path / "use.cpp"
    src.write_text('#include "gn_native.h"\nint main() { return gn_version() == nullptr; }\n')
    cb.run(["c++", "-std=c++11", "-Wall", "-Werror", f"-I{gn_native.get_include()}",
            "-fsyntax-only", str(src)])


def test_flags_point_at_header_and_library():
    flags = cb.gn_flags()
    incs = [f[2:] for f in flags if f.startswith("-I")]
    libdirs = [f[2:] for f in flags if f.startswith("-L")]
    assert incs == [gn_native.get_include()]
    assert libdirs == [gn_native.get_lib_dir()]
    assert "-lgn_native" in flags
    assert any(f.startswith("-Wl,-rpath") for f in flags), "no rpath: the program would not run"
    assert (Path(incs[0]) / "gn_native.h").is_file()
    assert (Path(libdirs[0]) / "libgn_native.so").is_file()


def test_capi_pxd_declares_every_header_function():
    declared = set(re.findall(r"GN_API\s+[\w\s\*]*?\b(gn_\w+)\s*\(", HEADER.read_text()))
    pxd = (Path(gn_native.__file__).parent / "capi.pxd").read_text()
    assert declared, "no GN_API function found in the header"
    missing = sorted(f for f in declared if not re.search(rf"\b{f}\s*\(", pxd))
    assert not missing, f"gn_native/capi.pxd lacks {missing}"


@needs_cc
def test_consumer_builds_with_printed_flags(tmp_path):
    """demo.c's recipe: cc -std=c11 -O2 demo.c $(python -m gn_native --cflags --libs) -o demo
    (the printed flags are all it needs; tests/test_readme.py runs the README's own line)."""
    demo = cb.EXAMPLE_C / "demo.c"
    cmd = (f'{CC} -std=c11 -O2 "{demo}" $("{sys.executable}" -m gn_native --cflags --libs) '
           f'-o "{tmp_path / "demo"}"')
    cb.run(cmd, env=cb.python_env())
    res = cb.run([str(tmp_path / "demo")], env=cb.python_env(**RUN_ENV), timeout=120)
    assert "demo: all checks passed" in res.stdout, res.stdout


@needs_cc
@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_example_makefile(tmp_path):
    res = cb.run(["make", "-C", str(cb.EXAMPLE_C), f"PYTHON={sys.executable}",
                  f"BUILD={tmp_path}", f"CC={CC}", "run"], env=cb.python_env(**RUN_ENV),
                 timeout=300)
    assert (tmp_path / "demo").is_file()
    assert "demo: all checks passed" in res.stdout, res.stdout


def _run_checks(exe, *args):
    """Run a tests/c program; it must exit 0 and print "N checks, 0 failures"."""
    res = cb.run([str(exe), *args], env=cb.python_env(**RUN_ENV), timeout=300, check=False)
    print(res.stdout)
    name = Path(exe).name
    assert res.returncode == 0, f"{name} failed:\n{res.stdout[-3000:]}\n{res.stderr[-6000:]}"
    assert re.search(r"\d+ checks, 0 failures", res.stdout), res.stdout


@needs_cc
def test_core_c_level(tmp_path):
    """tests/c/test_core.c against the shipped library (see that file for what it checks)."""
    _run_checks(cb.link(CC, tmp_path / "test_core", [cb.TESTS_C / "test_core.c"],
                        cflags=["-O2", "-Wall", "-Wextra"], libs=cb.gn_flags(), openmp=False))


@needs_cc
def test_stages_c_level(tmp_path):
    """tests/c/test_stages.c against the shipped library: the stages of gn_native.h give the
    single calls' bits, on a batch split at any point (see that file)."""
    _run_checks(cb.link(CC, tmp_path / "test_stages", [cb.TESTS_C / "test_stages.c"],
                        cflags=["-O2", "-Wall", "-Wextra"], libs=cb.gn_flags(), openmp=False))


@needs_cc
def test_safety_c_level(tmp_path):
    """tests/c/test_safety.c against the shipped library, the program itself built with
    OpenMP so that it can call the core from inside its own team."""
    if not cb.has_openmp(CC, tmp_path):
        pytest.skip(f"{CC} has no OpenMP: the caller's team cannot be built")
    _run_checks(cb.link(CC, tmp_path / "test_safety", [cb.TESTS_C / "test_safety.c"],
                        cflags=["-O2", "-Wall", "-Wextra"], libs=cb.gn_flags(), openmp=True))


@pytest.mark.slow   # a second build configuration of the core, as the sanitizer builds
@needs_cc
def test_core_builds_and_passes_without_openmp(tmp_path):
    """A compiler without OpenMP still builds the core, warning-free, single-threaded;
    test_core's checks (bit-identity across thread settings included) and test_safety's
    still pass."""
    flags = ["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter", "-Werror"]
    objs = cb.build_core(CC, tmp_path / "core", flags, openmp=False)
    progs = ("test_core", "test_safety")
    exes = cb.parallel(lambda p: cb.link(CC, tmp_path / p, [cb.TESTS_C / f"{p}.c", *objs],
                                         cflags=["-O2"], openmp=False), progs)
    for prog, exe in zip(progs, exes):
        _run_checks(exe, *(["--quick"] if prog == "test_safety" else []))
