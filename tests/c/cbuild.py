"""Compile the C core, the C example and tests/c programs for the C-level tests.

Used by tests/test_capi.py (programs linked against the shipped
libgn_native) and tests/test_sanitizers.py (the core rebuilt from its
sources with ASan/UBSan, or with -g for valgrind).  The flags and the source
list are setup.py's, from the installed package's gn_native/_build_config.py;
the caller adds its own optimization, debug or sanitizer flags.
"""
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import gn_native
from gn_native import _build_config as cfg

TESTS_C = Path(__file__).resolve().parent
REPO = TESTS_C.parents[1]
EXAMPLE_C = REPO / "examples" / "c"
SANITIZE = ["-fsanitize=address,undefined", "-fno-sanitize-recover=all",
            "-fno-omit-frame-pointer", "-g", "-O1"]


def compiler():
    """The C compiler: $CC, else cc / gcc / clang on PATH, else None."""
    for cand in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if cand and shutil.which(cand.split()[0]):
            return cand
    return None


def neutral_dir():
    """A folder to run subprocesses in: the one holding the imported gn_native, so that
    `python -m gn_native` there imports that package, never the repository's unbuilt
    source folder (pytest may run from the repository root)."""
    return str(Path(gn_native.__file__).resolve().parents[1])


def run(cmd, *, cwd=None, env=None, timeout=600, check=True):
    """Run a command (list, or str for the shell), by default in neutral_dir(); return the
    CompletedProcess."""
    res = subprocess.run(cmd, cwd=neutral_dir() if cwd is None else cwd, env=env, timeout=timeout, shell=isinstance(cmd, str),
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
    """The C core's sources: the checkout's gn_native/src/ (the wheel does not install
    them; an older install that did is still used first)."""
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
    for f, isa in cfg.core_sources(src):
        extra = []
        if isa is not None:
            if not can_compile(cc, cfg.ISA_FLAGS[isa], outdir):
                continue            # as setup.py: this compiler builds without it
            extra = cfg.ISA_FLAGS[isa]
            defines.append(f"-D{cfg.isa_define(isa)}=1")
        files.append((Path(f), extra))
    omp = cfg.OPENMP_FLAGS if openmp else []

    def compile_one(item):
        f, extra = item
        obj = outdir / (f.stem + ".o")
        run([*cc.split(), *cfg.REQUIRED_CFLAGS, *omp, *flags, *extra, *defines,
             f"-I{include}", f"-I{src}", "-c", str(f), "-o", str(obj)])
        return str(obj)
    # one compiler per file at once, as `make -j`: the templated files take most of the time
    return parallel(compile_one, files)


def parallel(fn, items):
    """[fn(item) for item in items], run on up to os.cpu_count() threads (each fn mostly
    waits for a compiler or a program); the first exception is raised."""
    items = list(items)
    with ThreadPoolExecutor(max(1, min(len(items), os.cpu_count() or 1))) as ex:
        return list(ex.map(fn, items))


def link(cc, out, sources, cflags=(), libs=(), openmp=True):
    """Compile and link C sources (and objects) into the executable `out`."""
    include = gn_native.get_include()
    omp = cfg.OPENMP_FLAGS if openmp else []
    run([*cc.split(), *cfg.REQUIRED_CFLAGS, *cflags, *omp, f"-I{include}",
         *[str(s) for s in sources], "-o", str(out), *libs, *omp, "-pthread", *cfg.LINK_LIBS])
    return out


def has_openmp(cc, workdir):
    return can_compile(cc, cfg.OPENMP_FLAGS, workdir, cfg.OPENMP_PROBE, name="omp_probe")
