"""Compile every GPU kernel variant with NVRTC, for every supported architecture, without a GPU.

    python -m gn_native.gpu_check [--arch sm_80 ...] [--jobs N] [--no-cache] [--only TEXT]

Prints one line per kernel and a final count; exits 1 if any compilation
fails, 2 if CuPy/NVRTC is missing or CuPy's private source generation no
longer works (it is pinned in the `gpu-check` extra for that reason).

The RawKernels are compiled as the RawModule the backend builds (same source,
options and name expressions).  The CuPy Elementwise/Reduction kernels are
generated through CuPy's private code generator for the argument kinds the
backend passes (1-D contiguous arrays, `raw` arrays, scalars) in each
indexing regime, then compiled with the options CuPy adds at launch.

Successful compilations are remembered in ~/.cache/gn_native/gpu_check
(keyed by source, options, architecture and NVRTC/CuPy versions);
--no-cache ignores that.
"""
import argparse
import concurrent.futures
import hashlib
import multiprocessing
import os
import sys
import time

from . import _gpu_kernels as K

NDARRAY, INDEXER, SCALAR = 1, 2, 3


class SourceGenerationError(RuntimeError):
    pass


def _cache_dir():
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "gn_native", "gpu_check")


def _import_cupy():
    try:
        import cupy  # noqa: F401
        from cupy.cuda import compiler  # noqa: F401
    except Exception as e:  # ImportError, or a broken CUDA runtime wheel
        raise SystemExit(f"gpu_check: cannot import CuPy and its NVRTC ({type(e).__name__}: {e}); "
                         "install the pinned versions: pip install .[gpu-check]") from None


# ---------------------------------------------------------------------------
# Sources, exactly as the backend would have CuPy generate them.

def _arginfo(kind, dtype, ndim, idx32):
    import numpy as np
    import cupy
    from cupy._core import _kernel, _scalar, _carray
    typ = {NDARRAY: cupy.ndarray, INDEXER: _carray.Indexer, SCALAR: _scalar.CScalar}[kind]
    return _kernel._ArgInfo(kind, typ, None if dtype is None else np.dtype(dtype), ndim, True, idx32)


def _dtype(name):
    import numpy as np
    if name == "bfloat16":
        import ml_dtypes
        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(name)


def _regime_flags(regime):
    """(big arrays 32-bit, indexer 32-bit) for an index regime; raw arrays stay 32-bit."""
    return {"i32": (True, True), "mixed": (False, True), "i64": (False, False)}[regime]


def elementwise_source(v):
    from cupy._core import _kernel
    ek = K.build_cupy_kernel(v.spec)
    big32, ind32 = _regime_flags(v.regime)
    in_types, out_types, type_map = ek._decide_params_type(
        tuple(_dtype(d) for d in v.in_dtypes), tuple(_dtype(d) for d in v.out_dtypes))
    infos = []
    for p, t in zip(ek.params[:-1], list(in_types) + list(out_types)):
        if p.name in v.scalars:
            infos.append(_arginfo(SCALAR, t, 0, True))
        else:
            infos.append(_arginfo(NDARRAY, t, 1, True if p.raw else big32))
    infos.append(_arginfo(INDEXER, None, 1, ind32))
    return _kernel._get_elementwise_kernel_code(tuple(infos), type_map, ek.params, ek.operation,
                                                ek.name, ek.preamble)


def reduction_source(v):
    from cupy._core import _kernel, _reduction
    rk = K.build_cupy_kernel(v.spec)
    big32, ind32 = _regime_flags(v.regime)
    in_types, out_types, type_map = _reduction._decide_params_type(
        rk.in_params, rk.out_params, tuple(_dtype(d) for d in v.in_dtypes),
        tuple(_dtype(d) for d in v.out_dtypes))
    infos = []
    for p, t in zip(rk.in_params, in_types):
        infos.append(_arginfo(SCALAR, t, 0, True) if p.name in v.scalars else _arginfo(NDARRAY, t, 1, big32))
    infos += [_arginfo(NDARRAY, t, 1, True) for t in out_types]
    infos += [_arginfo(INDEXER, None, 1, ind32), _arginfo(INDEXER, None, 1, True),
              _arginfo(SCALAR, "int32", 0, True)]
    # IndexT follows the rows reduced per output (< 2**31 for every reduction here)
    type_map = _kernel._TypeMap(type_map._pairs + (("IndexT", "int32"),))
    return _reduction._ReductionKernel_get_cached_function_code(
        rk.nin, rk.nout, rk._params, tuple(infos), type_map, rk.name, 512, rk.reduce_type,
        rk.identity, rk.map_expr, rk.reduce_expr, rk.post_map_expr, rk.preamble, ())


def program_of(v):
    """(label, full source, options, name_expressions, kernel labels) of one variant."""
    if isinstance(v, K.RawVariant):
        return v.label, K.raw_source(), K.RAW_OPTIONS, v.names, v.names
    from cupy._core import core
    try:
        src = elementwise_source(v) if isinstance(v.spec, K.Elementwise) else reduction_source(v)
    except Exception as e:
        raise SourceGenerationError(
            f"CuPy's private source generation failed for {v.label} ({type(e).__name__}: {e}); "
            "gpu_check needs the CuPy version pinned in the gpu-check extra") from e
    if v.spec.name not in src:
        raise SourceGenerationError(f"generated source of {v.label} lacks the kernel name")
    header = "".join(f"#include <{h}>\n" for h in core._cupy_header_list)
    return v.label, header + src, core.assemble_cupy_compiler_options(()), None, (v.label,)


# ---------------------------------------------------------------------------
# Compilation (in worker processes).

def _versions():
    import cupy
    from cupy.cuda import compiler
    return f"cupy {cupy.__version__} nvrtc {compiler._get_nvrtc_version()}"


def compile_program(source, options, arch, name_expressions=None):
    """Compile with NVRTC to a cubin for `arch` (e.g. "sm_90"); returns the lowered names."""
    from cupy.cuda import compiler
    opts = tuple(options) + ("-ftz=true", f"-arch={arch}", "--device-as-default-execution-space")
    prog = compiler._NVRTCProgram(source, "gn_check.cu", name_expressions=list(name_expressions or ()) or None,
                                  method="cubin")
    cubin, mapping = prog.compile(opts)
    if not cubin:
        raise RuntimeError("NVRTC returned an empty cubin")
    for ne in name_expressions or ():
        if not mapping or not mapping.get(ne):
            raise RuntimeError(f"no lowered name for {ne}")
    return mapping


def _job(args):
    label, source, options, names, arch, key, use_cache = args
    marker = os.path.join(_cache_dir(), key)
    if use_cache and os.path.exists(marker):
        return label, arch, True, "cached", 0.0
    t0 = time.perf_counter()
    try:
        compile_program(source, options, arch, names)
    except Exception as e:
        msg = getattr(e, "_msg", None) or str(e)
        return label, arch, False, f"{type(e).__name__}: {msg.strip()[:2000]}", time.perf_counter() - t0
    if use_cache:
        try:
            os.makedirs(os.path.dirname(marker), exist_ok=True)
            with open(marker, "w") as f:
                f.write(label + "\n")
        except OSError:
            pass
    return label, arch, True, "", time.perf_counter() - t0


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m gn_native.gpu_check", description=__doc__.split("\n")[0])
    ap.add_argument("--arch", action="append", help="architecture(s), default: " + " ".join(K.ARCHS))
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--no-cache", action="store_true")
    ap.add_argument("--only", help="check only variants whose label contains this text")
    args = ap.parse_args(argv)
    _import_cupy()
    archs = tuple(args.arch or K.ARCHS)
    t0 = time.perf_counter()
    versions = _versions()
    try:
        import ml_dtypes  # noqa: F401
        dtypes = K.DTYPES
    except ImportError:
        dtypes = tuple(d for d in K.DTYPES if d != "bfloat16")
        print("gpu_check: ml_dtypes missing, bfloat16 variants skipped")
    programs = []
    try:
        for v in K.variants(dtypes):
            if args.only and args.only not in v.label and not any(args.only in n for n in getattr(v, "names", ())):
                continue
            programs.append(program_of(v))
    except SourceGenerationError as e:
        print(f"gpu_check: FAIL {e}", file=sys.stderr)
        return 2
    jobs = []
    for label, src, opts, names, _ in programs:
        for arch in archs:
            key = hashlib.sha256("\0".join([versions, arch, " ".join(opts), " ".join(names or ()), src])
                                 .encode()).hexdigest()
            jobs.append((label, src, opts, names, arch, key, not args.no_cache))
    jobs.sort(key=lambda j: not j[3])   # RawModules (slowest) first
    results = {}
    ctx = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=max(1, args.jobs), mp_context=ctx) as pool:
        for label, arch, ok, msg, dt in pool.map(_job, jobs, chunksize=1):
            results[(label, arch)] = (ok, msg, dt)
    n_kernels = n_fail = n_cached = 0
    for label, _, _, names, kernels in programs:
        per_arch = [results[(label, a)] for a in archs]
        bad = [(a, r[1]) for a, r in zip(archs, per_arch) if not r[0]]
        n_cached += sum(r[1] == "cached" for r in per_arch)
        secs = sum(r[2] for r in per_arch)
        for kname in kernels:
            n_kernels += 1
            status = "FAIL" if bad else "ok  "
            where = " ".join(a for a, _ in bad) if bad else f"{len(archs)} archs"
            print(f"{status} {kname:<60s} {where}" + (f"  ({label}, {secs:.1f}s)" if names else f"  ({secs:.1f}s)"))
        for a, msg in bad:
            n_fail += len(kernels)
            print(f"     {a}: {msg}", file=sys.stderr)
    total = time.perf_counter() - t0
    print(f"gpu_check: {n_kernels} kernels x {len(archs)} archs = {n_kernels * len(archs)} compilations "
          f"({len(jobs)} NVRTC programs, {n_cached} cached), {n_fail} failed, {total:.0f} s [{versions}]")
    return 1 if n_fail else 0


if __name__ == "__main__":
    sys.exit(main())
