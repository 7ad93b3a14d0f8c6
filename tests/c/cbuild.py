"""Compile the C core, the C example and tests/c programs for the C-level tests.

Used by tests/test_capi.py (programs linked against the shipped
libgn_native) and tests/test_sanitizers.py (the core rebuilt from its
sources with ASan/UBSan, or with -g for valgrind).  The core's flags mirror
setup.py: -std=c11 -ffp-contract=off -fopenmp, and simd_<isa>.c compiled
with that ISA's flags plus -DGN_HAVE_<ISA>=1 for every file.
"""
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import gn_native

TESTS_C = Path(__file__).resolve().parent
REPO = TESTS_C.parents[1]
EXAMPLE_C = REPO / "examples" / "c"
X86 = platform.machine().lower() in ("x86_64", "amd64", "i686", "x86")
ISA_FLAGS = {
    "avx2": ["-mavx2", "-mfma", "-mf16c"],
    "avx512": ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mfma", "-mf16c"],
}
SANITIZE = ["-fsanitize=address,undefined", "-fno-sanitize-recover=all",
            "-fno-omit-frame-pointer", "-g", "-O1"]


def compiler():
    """The C compiler: $CC, else cc / gcc / clang on PATH, else None."""
    for cand in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if cand and shutil.which(cand.split()[0]):
            return cand
    return None


def run(cmd, *, cwd=None, env=None, timeout=600, check=True):
    """Run a command (list, or str for the shell); return the CompletedProcess."""
    res = subprocess.run(cmd, cwd=cwd, env=env, timeout=timeout, shell=isinstance(cmd, str),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if check and res.returncode != 0:
        raise AssertionError(f"command failed ({res.returncode}): {cmd}\n"
                             f"--- stdout ---\n{res.stdout[-6000:]}\n"
                             f"--- stderr ---\n{res.stderr[-6000:]}")
    return res


def python_env(**extra):
    """Environment in which `python -m gn_native` imports the gn_native under test."""
    env = dict(os.environ)
    root = str(Path(gn_native.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    env.update(extra)
    return env


def gn_flags():
    """`python -m gn_native --cflags --libs`, split into arguments."""
    out = run([sys.executable, "-m", "gn_native", "--cflags", "--libs"], env=python_env())
    return out.stdout.split()


def can_compile(cc, flags, workdir, code="int main(void) { return 0; }\n", name="probe"):
    src = Path(workdir) / f"{name}.c"
    src.write_text(code)
    res = run([*cc.split(), *flags, str(src), "-o", str(Path(workdir) / name)], check=False)
    return res.returncode == 0


def core_sources():
    """The C core's sources: the imported package's src/ (installed as package data)."""
    for d in (Path(gn_native.__file__).resolve().parent / "src", REPO / "gn_native" / "src"):
        if sorted(d.glob("*.c")):
            return d
    return None


def build_core(cc, outdir, flags, openmp=True):
    """Compile gn_native/src/*.c into objects under outdir; return their paths."""
    src = core_sources()
    include = Path(gn_native.get_include())
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    files, defines = [], []
    for f in sorted(src.glob("*.c")):
        extra = []
        if f.stem.startswith("simd_"):
            isa = f.stem[len("simd_"):]
            if not X86 or isa not in ISA_FLAGS or not can_compile(cc, ISA_FLAGS[isa], outdir):
                continue            # as setup.py: this compiler/machine builds without it
            extra = ISA_FLAGS[isa]
            defines.append(f"-DGN_HAVE_{isa.upper()}=1")
        files.append((f, extra))
    objs = []
    for f, extra in files:
        obj = outdir / (f.stem + ".o")
        run([*cc.split(), "-std=c11", "-ffp-contract=off", *(["-fopenmp"] if openmp else []),
             *flags, *extra, *defines, f"-I{include}", f"-I{src}", "-c", str(f), "-o", str(obj)])
        objs.append(str(obj))
    return objs


def link(cc, out, sources, cflags=(), libs=(), openmp=True):
    """Compile and link C sources (and objects) into the executable `out`."""
    include = gn_native.get_include()
    omp = ["-fopenmp"] if openmp else []
    run([*cc.split(), "-std=c11", "-ffp-contract=off", *cflags, *omp, f"-I{include}",
         *[str(s) for s in sources], "-o", str(out), *libs, *omp, "-pthread", "-lm"])
    return out


def has_openmp(cc, workdir):
    return can_compile(cc, ["-fopenmp"], workdir,
                       "#include <omp.h>\nint main(void) { return omp_get_max_threads() < 0; }\n",
                       name="omp_probe")
