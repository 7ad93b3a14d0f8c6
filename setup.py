"""Build gn_native: the C core as libgn_native.so, then the Cython wrapper over it.

The core is a plain shared library inside the package (C users link it;
`python -m gn_native --cflags --libs` prints the flags), and the extension
`gn_native._cpu` links the same library with an $ORIGIN rpath.

Portable by default: no tuning for the build machine.  Files named simd_<isa>.c get that
ISA's flags only for themselves; the core picks the path at run time (cpuid).
OpenMP is used when the compiler has it; otherwise the build says so and the
core runs single-threaded.
"""
import os
import platform
import sys
import tempfile

import numpy as np
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = os.path.dirname(os.path.abspath(__file__))
PKG = "gn_native"
SRC = os.path.join(PKG, "src")
INCLUDE = os.path.join(PKG, "include")
LIBNAME = "gn_native"

BASE_CFLAGS = ["-std=c11", "-O3", "-fPIC", "-ffp-contract=off", "-fno-math-errno",
               "-fvisibility=hidden", "-Wall", "-Wextra", "-Wno-unused-parameter"]
X86 = platform.machine().lower() in ("x86_64", "amd64", "i686", "x86")
ISA_FLAGS = {
    "avx2": ["-mavx2", "-mfma", "-mf16c"],
    "avx512": ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mfma", "-mf16c"],
}


def _try_compile(compiler, flags, code, link_flags=()):
    with tempfile.TemporaryDirectory() as d:
        src = os.path.join(d, "t.c")
        with open(src, "w") as f:
            f.write(code)
        try:
            objs = compiler.compile([src], output_dir=d, extra_postargs=list(flags))
            compiler.link_executable(objs, os.path.join(d, "t"), extra_postargs=list(link_flags))
            return True
        except Exception:
            return False


class BuildExt(build_ext):
    def run(self):
        # setuptools clears self.inplace while building; remember it for the core library
        self._to_source = bool(self.inplace or getattr(self, "editable_mode", False))
        super().run()

    def build_extensions(self):
        cc = self.compiler
        if "-Wstrict-prototypes" in getattr(cc, "compiler_so", []):
            cc.compiler_so.remove("-Wstrict-prototypes")
        omp = os.environ.get("GN_NATIVE_OPENMP", "1") != "0" and _try_compile(
            cc, ["-fopenmp"], "#include <omp.h>\nint main(void){return omp_get_max_threads()<0;}\n",
            ["-fopenmp"])
        if not omp:
            print("gn_native: the compiler has no OpenMP; building the core single-threaded",
                  file=sys.stderr)
        omp_flags = ["-fopenmp"] if omp else []
        libdir = os.path.join(self.build_lib, PKG)
        os.makedirs(libdir, exist_ok=True)
        lib = self._build_core(cc, libdir, omp_flags)
        if getattr(self, "_to_source", False):
            self.copy_file(lib, os.path.join(HERE, PKG, os.path.basename(lib)))
        for ext in self.extensions:
            ext.library_dirs.append(libdir)
            ext.libraries.append(LIBNAME)
            ext.runtime_library_dirs = []
            ext.extra_link_args += ["-Wl,-rpath,$ORIGIN"] + omp_flags
        super().build_extensions()

    def _build_core(self, cc, libdir, omp_flags):
        sources = sorted(f for f in os.listdir(SRC) if f.endswith(".c"))
        objects = []
        defines = []
        for f in sources:
            flags = BASE_CFLAGS + omp_flags
            if f.startswith("simd_"):
                isa = f[len("simd_"):-2]
                if isa in ISA_FLAGS:
                    if not X86:
                        continue
                    if not _try_compile(cc, ISA_FLAGS[isa], "int main(void){return 0;}\n"):
                        print(f"gn_native: compiler lacks {isa} flags; skipping {f}", file=sys.stderr)
                        continue
                    flags = flags + ISA_FLAGS[isa]
                    defines.append(("GN_HAVE_" + isa.upper(), "1"))
            objects.append((f, flags))
        built = []
        tmp = os.path.join(self.build_temp, "core")
        for f, flags in objects:
            built += cc.compile([os.path.join(SRC, f)], output_dir=tmp,
                                include_dirs=[INCLUDE, SRC], macros=defines,
                                extra_postargs=flags)
        target = os.path.join(libdir, "lib" + LIBNAME + ".so")
        cc.link_shared_object(built, target,
                              extra_postargs=omp_flags + ["-lm", "-Wl,-soname,lib" + LIBNAME + ".so"])
        return target


def extensions():
    from Cython.Build import cythonize
    ext = Extension(
        f"{PKG}._cpu", [os.path.join(PKG, "_cpu.pyx")],
        include_dirs=[INCLUDE, np.get_include()],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        extra_compile_args=["-O2"],
    )
    return cythonize([ext], language_level=3, compiler_directives={
        "boundscheck": False, "wraparound": False, "cdivision": True})


setup(ext_modules=extensions(), cmdclass={"build_ext": BuildExt})
