"""Build gn_native: the C core as libgn_native.so, then the Cython wrapper over it.

The core is a plain shared library inside the package (C users link it;
`python -m gn_native --cflags --libs` prints the flags), and the extension
`gn_native._cpu` links the same library with an $ORIGIN rpath.

Portable by default: no tuning for the build machine.  Files named simd_<isa>.c get that
ISA's flags only for themselves; the core picks the path at run time (cpuid).  The flags
and the source list live in gn_native/_build_config.py, which the C tests use too.
OpenMP is used when the compiler has it; otherwise the build says so and the
core runs single-threaded.
"""
import importlib.util
import os
import re
import sys
import tempfile

import numpy as np
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = os.path.dirname(os.path.abspath(__file__))
PKG = "gn_native"
SRC = os.path.join(PKG, "src")
INCLUDE = os.path.join(PKG, "include")


def _load_build_config():
    # by path: the package itself cannot be imported before it is built
    path = os.path.join(HERE, PKG, "_build_config.py")
    spec = importlib.util.spec_from_file_location("_gn_native_build_config", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


CFG = _load_build_config()
LIBNAME = CFG.LIBNAME


def _version():
    """GN_VERSION_STRING of gn_native.h: the one place the version is written (the core's
    gn_version() returns it, gn_native.__version__ and `python -m gn_native --version`
    read that, and pyproject.toml declares the version dynamic)."""
    with open(os.path.join(HERE, INCLUDE, "gn_native.h"), encoding="utf-8") as f:
        m = re.search(r'^#define GN_VERSION_STRING "([^"]+)"', f.read(), re.M)
    if m is None:
        raise RuntimeError("gn_native.h does not define GN_VERSION_STRING")
    return m.group(1)


def _check_platform():
    """The build makes ELF shared objects with GCC/Clang flags and an $ORIGIN rpath:
    Linux only.  Elsewhere, say so before the compiler fails in a less clear way."""
    if not sys.platform.startswith("linux") and os.environ.get("GN_NATIVE_UNSUPPORTED_PLATFORM") != "1":
        raise RuntimeError(
            f"gn_native builds on Linux only (with GCC or Clang); this platform is {sys.platform!r}. "
            "Set GN_NATIVE_UNSUPPORTED_PLATFORM=1 to try anyway.")


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
        _check_platform()
        # setuptools clears self.inplace while building; remember it for the core library
        self._to_source = bool(self.inplace or getattr(self, "editable_mode", False))
        super().run()

    def build_extensions(self):
        cc = self.compiler
        if "-Wstrict-prototypes" in getattr(cc, "compiler_so", []):
            cc.compiler_so.remove("-Wstrict-prototypes")
        omp = os.environ.get("GN_NATIVE_OPENMP", "1") != "0" and _try_compile(
            cc, CFG.OPENMP_FLAGS, CFG.OPENMP_PROBE, CFG.OPENMP_FLAGS)
        if not omp:
            print("gn_native: the compiler has no OpenMP; building the core single-threaded",
                  file=sys.stderr)
        omp_flags = CFG.OPENMP_FLAGS if omp else []
        libdir = os.path.join(self.build_lib, PKG)
        os.makedirs(libdir, exist_ok=True)
        lib = self._build_core(cc, libdir, omp_flags)
        if getattr(self, "_to_source", False):
            # an in-place or editable build leaves _cpu*.so in the source folder, where
            # its $ORIGIN rpath finds the core only if the library is there as well
            self.copy_file(lib, os.path.join(HERE, PKG, os.path.basename(lib)))
        for ext in self.extensions:
            ext.library_dirs.append(libdir)
            ext.libraries.append(LIBNAME)
            ext.runtime_library_dirs = []
            ext.extra_link_args += ["-Wl,-rpath,$ORIGIN"] + omp_flags
        super().build_extensions()

    def _build_core(self, cc, libdir, omp_flags):
        objects = []
        defines = []
        for path, isa in CFG.core_sources(SRC):
            flags = CFG.RELEASE_CFLAGS + omp_flags
            if isa is not None:
                if not _try_compile(cc, CFG.ISA_FLAGS[isa], "int main(void){return 0;}\n"):
                    print(f"gn_native: compiler lacks {isa} flags; skipping {path}", file=sys.stderr)
                    continue
                flags = flags + CFG.ISA_FLAGS[isa]
                defines.append((CFG.isa_define(isa), "1"))
            objects.append((path, flags))
        built = []
        tmp = os.path.join(self.build_temp, "core")
        for path, flags in objects:
            built += cc.compile([path], output_dir=tmp,
                                include_dirs=[INCLUDE, SRC], macros=defines,
                                extra_postargs=flags)
        target = os.path.join(libdir, "lib" + LIBNAME + ".so")
        soname = "-Wl,-soname,lib" + LIBNAME + ".so"
        cc.link_shared_object(built, target, extra_postargs=omp_flags + CFG.LINK_LIBS + [soname])
        return target


def extensions():
    from Cython.Build import cythonize
    ext = Extension(
        f"{PKG}._cpu", [os.path.join(PKG, "_cpu.pyx")],
        include_dirs=[INCLUDE, SRC, np.get_include()],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        extra_compile_args=["-O2"],
    )
    return cythonize([ext], language_level=3, compiler_directives={
        "boundscheck": False, "wraparound": False, "cdivision": True})


setup(version=_version(), ext_modules=extensions(), cmdclass={"build_ext": BuildExt})
