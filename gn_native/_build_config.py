"""How the C core is compiled: its flags and its sources, written once.

setup.py loads this file by path (the package is not built yet); the C
tests, sanitizer and valgrind builds (tests/c/cbuild.py) import it from the
installed package, whose src/ they compile.  Standard library only.
"""
import os
import platform

LIBNAME = "gn_native"

# Every build of the core needs these: the SIMD and scalar paths give the
# same bits only if the compiler contracts no a * b + c into an FMA.
REQUIRED_CFLAGS = ["-std=c11", "-ffp-contract=off"]
# The shipped library adds these (debug and sanitizer builds bring their own
# optimization level).
RELEASE_CFLAGS = REQUIRED_CFLAGS + [
    "-O3", "-fPIC", "-fno-math-errno", "-fvisibility=hidden",
    "-Wall", "-Wextra", "-Wno-unused-parameter"]
OPENMP_FLAGS = ["-fopenmp"]
LINK_LIBS = ["-lm"]

# simd_<isa>.c is compiled with its ISA's flags (that file alone); every file
# then gets -DGN_HAVE_<ISA>=1 and the core picks the path at run time (cpuid).
ISA_FLAGS = {
    "avx2": ["-mavx2", "-mfma", "-mf16c"],
    "avx512": ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mfma", "-mf16c"],
}
OPENMP_PROBE = "#include <omp.h>\nint main(void) { return omp_get_max_threads() < 0; }\n"


def is_x86(machine=None):
    """Whether `machine` (default: this one) runs the ISAs of ISA_FLAGS."""
    m = (machine or platform.machine()).lower()
    return m in ("x86_64", "amd64", "i686", "x86")


def core_sources(src):
    """[(path, isa)] for the core's C files in the folder `src`, in build order.

    isa is None for portable files, else the key of ISA_FLAGS that a
    simd_<isa>.c file needs; those files are left out where the machine
    is not x86, or their ISA is unknown.  The caller also drops them when
    its compiler refuses ISA_FLAGS[isa].
    """
    out = []
    for f in sorted(os.listdir(src)):
        if not f.endswith(".c"):
            continue
        isa = f[len("simd_"):-len(".c")] if f.startswith("simd_") else None
        if isa is not None and (isa not in ISA_FLAGS or not is_x86()):
            continue
        out.append((os.path.join(src, f), isa))
    return out


def isa_define(isa):
    """The macro that tells every file of the core that `isa`'s path is built."""
    return "GN_HAVE_" + isa.upper()
