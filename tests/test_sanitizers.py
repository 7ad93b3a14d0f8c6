"""The C core under AddressSanitizer + UndefinedBehaviorSanitizer, and valgrind.

The core's sources (gn_native/src/*.c, with the AVX2 file and OpenMP, as
setup.py builds them) are compiled with -fsanitize=address,undefined
-fno-sanitize-recover=all and linked with the C example,
tests/c/test_core.c and tests/c/test_safety.c (calls from inside an OpenMP
team, fork, a descriptor fuzz, aliasing, extreme magnitudes); all must run
without a report, leaks included.  The C example and test_core (quick sizes)
also run under valgrind memcheck, built without sanitizers and linked against
the shipped libgn_native: no errors, no definite or indirect leaks.  libgomp
keeps its thread pool until exit, which memcheck calls "possibly lost" or
"still reachable", kinds not counted as errors, so no suppression file is
needed and OpenMP runs with 2 threads.  Slow (about a minute, mostly
compiling; the core's files compile in parallel): marked `slow`.
"""
import shutil

import pytest

from conftest import load_cbuild

pytestmark = pytest.mark.slow


cb = load_cbuild()
CC = cb.compiler()
SAN_ENV = {
    "ASAN_OPTIONS": "detect_leaks=1:halt_on_error=1:abort_on_error=0:allocator_may_return_null=1",
    "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1",
    "LSAN_OPTIONS": "",
    "OMP_NUM_THREADS": "2",        # threads are exercised even on a 1-core machine
    "OMP_WAIT_POLICY": "passive",  # no spinning threads competing on 2 cores
    "GN_NATIVE_ISA": "",           # the run-time default; test_core switches ISAs itself
}
REPORT_MARKERS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:",
                  "SUMMARY: UndefinedBehaviorSanitizer", "WARNING: AddressSanitizer")


@pytest.fixture(scope="module")
def cc():
    if CC is None:
        pytest.skip("no C compiler found (set CC)")
    if cb.core_sources() is None:
        pytest.skip("the C core's sources (gn_native/src/*.c) are not available")
    return CC


@pytest.fixture(scope="module")
def sanitized(cc, tmp_path_factory):
    """test_core, test_safety and the C example, linked with the core built under
    ASan + UBSan."""
    d = tmp_path_factory.mktemp("asan")
    if not cb.can_compile(cc, cb.SANITIZE, d, name="san_probe"):
        pytest.skip(f"{cc} cannot build with {' '.join(cb.SANITIZE)}")
    omp = cb.has_openmp(cc, d)
    objs = cb.build_core(cc, d / "core", cb.SANITIZE, openmp=omp)
    sources = {"test_core": cb.TESTS_C / "test_core.c", "demo": cb.EXAMPLE_C / "demo.c",
               "test_safety": cb.TESTS_C / "test_safety.c"}
    exes = cb.parallel(lambda name: cb.link(cc, d / name, [sources[name], *objs],
                                            cflags=cb.SANITIZE, openmp=omp), sources)
    return dict(zip(sources, exes))


@pytest.fixture(scope="module")
def plain(cc, tmp_path_factory):
    """The same programs, -O2 -g and no sanitizer, linked against the shipped libgn_native
    (the library users run; no second build of the core), for valgrind."""
    d = tmp_path_factory.mktemp("plain")
    omp = cb.has_openmp(cc, d)
    sources = {"test_core": cb.TESTS_C / "test_core.c", "demo": cb.EXAMPLE_C / "demo.c"}
    exes = cb.parallel(lambda name: cb.link(cc, d / name, [sources[name]], cflags=["-O2", "-g"],
                                            libs=cb.gn_flags(), openmp=omp), sources)
    return dict(zip(sources, exes))


# test_safety's descriptor fuzz asks for allocations beyond any address space on
# purpose; with allocator_may_return_null ASan returns NULL (the core answers
# GN_ENOMEM) and says so in this line, which is not a report
EXPECTED = "WARNING: AddressSanitizer failed to allocate"


def _check_clean(res, what):
    out = "\n".join(l for l in (res.stdout + res.stderr).splitlines() if EXPECTED not in l)
    found = [m for m in REPORT_MARKERS if m in out]
    assert res.returncode == 0 and not found, (
        f"{what}: exit status {res.returncode}, sanitizer reports {found}\n"
        f"--- stdout ---\n{res.stdout[-3000:]}\n--- stderr ---\n{res.stderr[-8000:]}")


@pytest.mark.parametrize("program", ["test_core", "demo", "test_safety"])
def test_asan_ubsan_clean(sanitized, program):
    res = cb.run([str(sanitized[program])], env=cb.python_env(**SAN_ENV), timeout=600,
                 check=False)
    print(res.stdout)
    _check_clean(res, f"{program} under ASan+UBSan")


@pytest.mark.skipif(shutil.which("valgrind") is None, reason="valgrind is not installed")
@pytest.mark.parametrize("program,args", [("demo", []), ("test_core", ["--quick"])])
def test_valgrind_memcheck_clean(plain, program, args):
    cmd = ["valgrind", "--error-exitcode=99", "--leak-check=full",
           "--errors-for-leak-kinds=definite,indirect", "--show-leak-kinds=definite,indirect",
           str(plain[program]), *args]
    env = cb.python_env(OMP_NUM_THREADS="2", OMP_WAIT_POLICY="passive")
    res = cb.run(cmd, env=env, timeout=600, check=False)
    print(res.stdout)
    tail = res.stderr[-8000:]
    assert res.returncode == 0, f"{program} under valgrind: exit status {res.returncode}\n{tail}"
    assert "ERROR SUMMARY: 0 errors" in res.stderr, tail
    no_leak = ("definitely lost: 0 bytes" in res.stderr
               or "All heap blocks were freed" in res.stderr)
    assert no_leak, tail
