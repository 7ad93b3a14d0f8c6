#!/usr/bin/env bash
# bench/gpu_smoke.sh -- everything to run on a machine with an NVIDIA GPU, in
# under 10 minutes, ending in one summary:
#
#   1. install: gn_native with the gpu-check, test and bench extras into
#      .venv-gpu-smoke (needs the package index; at most 5 minutes), or, with
#      PYTHON=... naming an interpreter that already has CuPy (and pytest,
#      Cython, setuptools), into that one without touching the network;
#   2. the device: nvidia-smi's line, and gpu_check for this GPU's
#      architecture (registers x largest block, spills, shared memory);
#   3. tests/gpu (CuPy against the float64 reference, the current stream,
#      every kernel's max_threads_per_block, > 2**31 elements, ...);
#   4. the GPU columns of the benchmark (bench/run.py --quick, one CPU
#      thread): GB/s, time over a device copy of the same bytes, and over
#      torch CUDA group_norm where torch has CUDA.
#
#   bash bench/gpu_smoke.sh            # logs and JSON in bench/out/gpu_smoke/
#   OUT=/tmp/smoke PYTHON=python3 bash bench/gpu_smoke.sh
#
# Exit status: 0 when every step passed, 1 otherwise (the summary says which).
set -uo pipefail

cd "$(dirname "$0")/.." || exit 1
ROOT=$(pwd)
OUT=${OUT:-$ROOT/bench/out/gpu_smoke}
mkdir -p "$OUT"
START=$(date +%s)
declare -A STATUS=()

step() {   # step NAME SECONDS COMMAND...: run with a time limit, log to $OUT/NAME.log
    local name=$1 limit=$2
    shift 2
    echo "== $name (limit ${limit}s) =="
    local t0=$SECONDS rc=0
    timeout --kill-after=10 "$limit" "$@" >"$OUT/$name.log" 2>&1 || rc=$?
    tail -n 25 "$OUT/$name.log"
    if [ "$rc" -eq 0 ]; then
        STATUS[$name]="ok ($((SECONDS - t0)) s)"
    elif [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
        STATUS[$name]="TIMED OUT after ${limit} s"
    else
        STATUS[$name]="FAILED (exit $rc, $((SECONDS - t0)) s): see $OUT/$name.log"
    fi
}

# -- 1. install ---------------------------------------------------------------
install() {
    if [ -n "${PYTHON:-}" ] && "$PYTHON" -c "import cupy" 2>/dev/null; then
        # CuPy is there: build gn_native against what the interpreter has (no downloads)
        timeout 300 "$PYTHON" -m pip install -q --no-deps --no-build-isolation --force-reinstall "$ROOT"
    else
        PYTHON=$ROOT/.venv-gpu-smoke/bin/python
        [ -x "$PYTHON" ] || python3 -m venv "$ROOT/.venv-gpu-smoke" || return 1
        timeout 300 "$PYTHON" -m pip install -q "${ROOT}[test,gpu-check,bench]"
    fi
}
echo "== install =="
t0=$SECONDS
if install >"$OUT/install.log" 2>&1; then
    STATUS[install]="ok ($((SECONDS - t0)) s)"
else
    STATUS[install]="FAILED: see $OUT/install.log"
    tail -n 25 "$OUT/install.log"
fi
PYTHON=${PYTHON:-$ROOT/.venv-gpu-smoke/bin/python}
echo "python: $PYTHON"

# -- 2. the device ------------------------------------------------------------
DEVICE=$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null | head -n 1)
DEVICE=${DEVICE:-"nvidia-smi not found"}
ARCH=$("$PYTHON" -c "import cupy; print('sm_' + cupy.cuda.Device().compute_capability)" 2>/dev/null || true)
echo "device: $DEVICE (${ARCH:-no CuPy device})"
if [ -n "$ARCH" ]; then
    # python -I: the checkout's folder stays off sys.path, so the installed package is imported
    step gpu_check 240 "$PYTHON" -I -m gn_native.gpu_check --arch "$ARCH"
else
    STATUS[gpu_check]="skipped: CuPy sees no device"
fi

# -- 3. tests/gpu -------------------------------------------------------------
step tests_gpu 330 "$PYTHON" -I -m pytest -q -ra "$ROOT/tests/gpu"
TESTS_LINE=$(grep -E "^=*[ ]*[0-9]+ [a-z]+.* in [0-9.]+s" "$OUT/tests_gpu.log" | tail -n 1)
if grep -qE "^(SKIPPED|[0-9]+ skipped)" "$OUT/tests_gpu.log" && ! grep -qE "[0-9]+ passed" "$OUT/tests_gpu.log"; then
    STATUS[tests_gpu]="NOTHING RAN (every test skipped): see $OUT/tests_gpu.log"
fi

# -- 4. the benchmark's GPU columns -------------------------------------------
step bench 240 "$PYTHON" "$ROOT/bench/run.py" --quick --threads 1 --no-overhead \
    --json "$OUT/bench.json" --plot none

# -- summary --------------------------------------------------------------------
echo
echo "================ gn_native GPU smoke: summary ================"
echo "device:    $DEVICE ($ARCH)"
echo "elapsed:   $(($(date +%s) - START)) s (limit 600 s)"
for name in install gpu_check tests_gpu bench; do
    printf '%-10s %s\n' "$name:" "${STATUS[$name]:-not run}"
done
echo "tests/gpu: ${TESTS_LINE:-no result line}"
if [ -f "$OUT/bench.json" ]; then
    "$PYTHON" - "$OUT/bench.json" <<'EOF'
import json, statistics, sys
doc = json.load(open(sys.argv[1]))
rows = [r for r in doc.get("rows", []) if isinstance(r.get("gpu"), dict)]
ok = [r for r in rows if r["gpu"].get("status") == "ok"]
wrong = [r for r in rows if r["gpu"].get("status") == "wrong"]
print(f"bench:     {len(ok)} GPU rows timed, {len(wrong)} wrong, {len(rows) - len(ok) - len(wrong)} n/a")
groups = {}
for r in ok:
    groups.setdefault((r["pass"], r["dtype"], r["layout"]), []).append(r["gpu"])
if groups:
    print(f"  {'pass':<8} {'dtype':<9} {'layout':<6} {'GB/s':>7} {'x copy':>7} {'x torch':>8}   (medians over cases, stats)")
for (ps, dt, lay), gs in sorted(groups.items()):
    torch = [g["x_torch"] for g in gs if g.get("x_torch")]
    print(f"  {ps:<8} {dt:<9} {lay:<6} {statistics.median(g['gbps'] for g in gs):>7.0f} "
          f"{statistics.median(g['x_floor'] for g in gs):>7.2f} "
          f"{(f'{statistics.median(torch):.2f}' if torch else 'n/a'):>8}")
for r in wrong[:5]:
    print(f"  WRONG {r.get('case')} {r['dtype']} {r['layout']} {r['stats']} {r['pass']}: {r['gpu'].get('errors')}")
EOF
fi
echo "logs:      $OUT"
for name in install gpu_check tests_gpu bench; do
    case "${STATUS[$name]:-}" in ok*|skipped*) ;; *) exit 1 ;; esac
done
exit 0
