"""Run the GPU backend's kernels on the CPU, for tests without a GPU.

`build(tmpdir)` compiles raw_harness.cpp with g++ (C++20): the RawKernel
templates of gn_native/cuda/gn_kernels.cuh under host_shim.h (blocks in a
shuffled order, float subnormals flushed as -ftz=true does on the device),
plus every CuPy Elementwise/Reduction spec of gn_native/_gpu_kernels.py
turned into C++ (elementwise.inc, generated here): the operation strings
are compiled verbatim with the same typedefs and preamble as on the device.
The 16-bit dtypes reach them as uint16 bits, converted by gn_math.cuh's own
helpers (gn_io), exactly as on the device: no stand-in for CuPy's float16
or bfloat16 classes is needed, because the kernels never use them.

Elementwise kernels are a loop over the elements (each element is
independent).  Reductions follow the schedule of the kernel CuPy generates
(cupy/_core/_reduction.pyx, _create_reduction_function_code, and
_get_block_specs): blocks of REDUCTION_BLOCK threads each own `block_stride`
consecutive outputs; thread t accumulates, from the identity, the rows
J = t // block_stride, + block_size // block_stride, ... of output
t % block_stride; the shared-memory tree then halves from block_size / 2
down to block_stride (not to 1), and threads t < block_stride post-map.
Blocks run in a shuffled order.  The summation order, hence the bits, is
the device's.

`HostExec(lib)` is a drop-in for gn_native._gpu._CupyExec working on NumPy
arrays, so gn_native._gpu.run_forward/run_backward run the same sequence of
kernels, with the same geometry and arguments, as on a GPU.
"""
import ctypes
import hashlib
import os
import shutil
import subprocess

import numpy as np

from gn_native import _gpu_geometry as G
from gn_native import _gpu_kernels as K

HERE = os.path.dirname(os.path.abspath(__file__))

CTYPE = {"float16": "gn_half", "bfloat16": "gn_bfloat", "float32": "float", "float64": "double",
         "int64": "long long", "int32": "int", "uint32": "unsigned int", "uint16": "unsigned short"}
CT_SCALAR = {"float64": ctypes.c_double, "float32": ctypes.c_float, "int64": ctypes.c_longlong,
             "int32": ctypes.c_int, "uint32": ctypes.c_uint, "uint64": ctypes.c_ulonglong}
DTYPE_CODE = {"float16": 0, "bfloat16": 1, "float32": 2, "float64": 3}
# the kernels that take the activation as an argument (not as a template parameter)
RUNTIME_ACT_KINDS = ("bwd_reduce",)
LAYOUT_CODE = {"nchw": 0, "nhwc": 1}


def _params(spec_params):
    """[(raw, type, name)] of a CuPy param string."""
    out = []
    for p in spec_params.split(","):
        w = p.split()
        out.append((w[0] == "raw", w[-2], w[-1]))
    return out


def _tmap_of(v):
    """Placeholder dtypes of a variant (only those its params use)."""
    used = {t for _, t, _ in _params(v.spec.in_params) + _params(v.spec.out_params)}
    return {k: d for k, d in (kv.split("=") for kv in v.tag.split(",") if kv) if k in used}


def _fn_name(prefix, spec, tmap):
    used = sorted(tmap.items())
    return f"{prefix}_{spec.name}__" + "__".join(f"{k}_{v}" for k, v in used)


def _c_signature(spec, tmap, scalars):
    args = []
    for kind, params in (("in", spec.in_params), ("out", spec.out_params)):
        for raw, typ, name in _params(params):
            ct = CTYPE[tmap.get(typ, typ)]
            if name in scalars:
                args.append(f"{ct} {name}")
            elif raw:
                args.append(f"const {ct}* {name}")
            else:
                args.append(f"{'const ' if kind == 'in' else ''}{ct}* {name}__arr")
    return args


def _ct(typ):
    """C type of a param type: placeholders stay (they are typedefs), dtypes map."""
    return typ if typ in ("T", "S") else CTYPE[typ]


def _typedefs(tmap):
    return "".join(f"    typedef {CTYPE[v]} {k};\n" for k, v in sorted(tmap.items()))


def elementwise_code(v):
    s, tmap = v.spec, _tmap_of(v)
    args = _c_signature(s, tmap, v.scalars) + ["long long size_"]
    binds = []
    for kind, params in (("in", s.in_params), ("out", s.out_params)):
        for raw, typ, name in _params(params):
            if raw or name in v.scalars:
                continue
            binds.append(f"{'const ' if kind == 'in' else ''}{_ct(typ)} &{name} = {name}__arr[i];")
    return (f'extern "C" int {_fn_name("ew", s, tmap)}({", ".join(args)}) {{\n{_typedefs(tmap)}'
            f"    GnHostFtz ftz_;\n"
            f"    for (ptrdiff_t i = 0; i < size_; ++i) {{\n        {' '.join(binds)}\n"
            f"        {{{s.operation}}}\n    }}\n    return 0;\n}}\n")


def clp2(x):
    """CuPy's internal.clp2: the smallest power of two >= x."""
    return 1 if x <= 1 else 1 << (int(x) - 1).bit_length()


def cupy_block_specs(in_size, out_size, contiguous_size, block_size=G.REDUCTION_BLOCK):
    """(block_size, block_stride, out_block_num) as cupy._core._reduction._get_block_specs.

    tests/test_gpu_host.py checks this against CuPy's own function when CuPy is installed."""
    reduce_block_size = max(1, in_size // out_size)
    contiguous_size = min(contiguous_size, 32)
    block_stride = max(contiguous_size, block_size // reduce_block_size)
    block_stride = clp2(block_stride // 2 + 1)   # the largest power of two <= block_stride
    return block_size, block_stride, (out_size + block_stride - 1) // block_stride


def reduction_code(v):
    """CuPy's reduction kernel (see the module docstring) over a C-contiguous (Q_, R_) view, axis 0."""
    s, tmap = v.spec, _tmap_of(v)
    args = _c_signature(s, tmap, v.scalars) + ["long long Q_", "long long R_", "int block_", "int stride_"]
    loads = []
    for raw, typ, name in _params(s.in_params):
        if name not in v.scalars:
            loads.append(f"const {_ct(typ)} {name} = {name}__arr[j_];")
    outs = [f"{_ct(typ)} &{name} = {name}__arr[i_];" for _, typ, name in _params(s.out_params)]
    return f'''extern "C" int {_fn_name("red", s, tmap)}({", ".join(args)}) {{
{_typedefs(tmap)}    typedef {s.reduce_type} _type_reduce;
#define REDUCE(a, b) ({s.reduce_expr})
#define POST_MAP(a) ({s.post_map_expr})
    GnHostFtz ftz_;
    int log_ = 0;
    while ((1 << log_) < stride_) ++log_;
    const long long nblocks_ = (R_ + stride_ - 1) / stride_, jstride_ = (long long)(block_ >> log_) * R_;
    const std::vector<long long> order_ = gn_host_block_order(nblocks_);
    std::vector<_type_reduce> sdata_(block_, _type_reduce({s.identity}));
    for (long long b_ = 0; b_ < nblocks_; ++b_) {{
        const long long base_ = order_[b_] * stride_;
        for (int t_ = 0; t_ < block_; ++t_) {{
            const long long i_ = base_ + (t_ & (stride_ - 1));
            _type_reduce _s = _type_reduce({s.identity});
            if (i_ < R_) {{     // past the last output the device reduces values it then drops
                for (long long j_ = i_ + (long long)(t_ >> log_) * R_; j_ < Q_ * R_; j_ += jstride_) {{
                    {" ".join(loads)}
                    _type_reduce _a = static_cast<_type_reduce>({s.map_expr});
                    _s = REDUCE(_s, _a);
                }}
            }}
            sdata_[t_] = _s;
        }}
        for (int h_ = block_ / 2; h_ >= stride_; h_ >>= 1)
            for (int t_ = 0; t_ < h_; ++t_) {{
                _type_reduce _a = sdata_[t_], _b = sdata_[t_ + h_];
                sdata_[t_] = REDUCE(_a, _b);
            }}
        for (int t_ = 0; t_ < stride_; ++t_) {{
            const long long i_ = base_ + t_;
            if (i_ < R_) {{
                {" ".join(outs)}
                POST_MAP(sdata_[t_]);
            }}
        }}
    }}
#undef REDUCE
#undef POST_MAP
    return 0;
}}
'''


def cupy_variants():
    """One host function per (spec, placeholder dtypes): the index regime is a device matter."""
    seen, out = set(), []
    for v in K.variants():
        if isinstance(v, K.CupyVariant) and (v.spec.name, v.tag) not in seen:
            seen.add((v.spec.name, v.tag))
            out.append(v)
    return out


def generate_inc():
    parts = ["// generated by tests/gpu_harness/host_exec.py\n#include <cstddef>\n#include <vector>\n"
             '#include "host_shim.h"\n']
    for v in cupy_variants():
        parts.append(elementwise_code(v) if isinstance(v.spec, K.Elementwise) else reduction_code(v))
    return "\n".join(parts)


def compiler():
    return shutil.which(os.environ.get("CXX", "g++")) or shutil.which("g++")


def _build_key(cxx, cmd, inc):
    """A digest of everything the harness library is built from (sources, options, compiler)."""
    h = hashlib.sha256()
    version = subprocess.run([cxx, "--version"], capture_output=True, text=True).stdout
    h.update("\0".join([version, " ".join(cmd[1:]), inc]).encode())
    names = sorted(os.listdir(K.CUDA_DIR))
    for path in [os.path.join(K.CUDA_DIR, n) for n in names] + [os.path.join(HERE, n) for n in
                                                                 ("raw_harness.cpp", "host_shim.h")]:
        with open(path, "rb") as f:
            h.update(path.encode() + b"\0" + f.read())
    return h.hexdigest()


def build(outdir):
    """Compile the harness into outdir; returns (the ctypes library, the compiler's messages).

    The library (minutes of g++: every kernel template for 4 dtypes, 2 layouts,
    3 affine kinds and 5 activations) is kept in $XDG_CACHE_HOME/gn_native/
    gpu_harness, keyed by a digest of its sources, options and compiler, and
    reused while none of them changes (GN_HARNESS_NO_CACHE=1: always build)."""
    cxx = compiler()
    if cxx is None:
        raise RuntimeError("no C++ compiler (g++) found")
    inc = generate_inc()
    with open(os.path.join(outdir, "elementwise.inc"), "w") as f:
        f.write(inc)
    lib = os.path.join(outdir, "gn_gpu_harness.so")
    flags = ["-std=c++20", "-O1", "-g0", "-fPIC", "-pthread", "-ffp-contract=off",
             "-Wall", "-Wextra", "-Wno-unknown-pragmas", "-Wno-unused-parameter", "-Wno-maybe-uninitialized",
             "-Wno-unused-local-typedefs", "-I", K.CUDA_DIR, "-I", HERE, "-I", outdir, *G.raw_defines()]
    src = os.path.join(HERE, "raw_harness.cpp")
    # three parts of raw_harness.cpp, compiled at once (about 20, 23 and 9 s of g++ each), then linked
    compiles = [[cxx, *flags, f"-DGN_HARNESS_PART={k}", "-c", src, "-o", os.path.join(outdir, f"part{k}.o")]
                for k in (1, 2, 3)]
    link = [cxx, "-shared", "-pthread", *(c[-1] for c in compiles), "-o", lib]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    key = _build_key(cxx, [a.replace(outdir, "<out>") for a in flags + link[1:]], inc)
    cached = os.path.join(base, "gn_native", "gpu_harness", key + ".so")
    if os.path.exists(cached) and not os.environ.get("GN_HARNESS_NO_CACHE"):
        shutil.copyfile(cached, lib)
        return ctypes.CDLL(lib), ""
    procs = [(c, subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)) for c in compiles]
    messages = []
    for c, p in procs:
        _, err = p.communicate()
        messages.append(err)
        if p.returncode != 0:
            for _, q in procs:
                q.kill()
            raise RuntimeError("building the GPU host harness failed:\n" + " ".join(c) + "\n" + err[-6000:])
    r = subprocess.run(link, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError("linking the GPU host harness failed:\n" + " ".join(link) + "\n" + r.stderr[-6000:])
    try:
        os.makedirs(os.path.dirname(cached), exist_ok=True)
        tmp = f"{cached}.{os.getpid()}.tmp"
        shutil.copyfile(lib, tmp)
        os.replace(tmp, cached)        # atomic: a concurrent run sees all of it or nothing
    except OSError:
        pass
    return ctypes.CDLL(lib), "".join(messages) + r.stderr


def _ptr(a):
    if a is None:
        return None
    assert isinstance(a, np.ndarray) and a.flags.c_contiguous, "harness arrays must be C-contiguous"
    return ctypes.c_void_p(a.ctypes.data)


def _scalar(v):
    return CT_SCALAR[np.asarray(v).dtype.name](v)


class HostExec:
    """gn_native._gpu's executor interface, on NumPy arrays and the compiled harness."""

    def __init__(self, lib):
        self.lib = lib
        self.launches = []      # (kind or spec key, launch geometry or None), in order
        self.acts = []          # (raw kernel kind, activation) of the kernels that apply one, in order
        self.reductions = []    # (key, Q, R, block_size, block_stride) of each reduction
        self._fns = {}

    def empty(self, shape, dtype):
        a = np.empty(shape, dtype)
        a.view(np.uint8)[...] = 0xFF    # NaN bit patterns: unwritten outputs show up
        return a

    def ptr(self, a):
        """The stand-in for a device address: the NumPy array's (a fake communicator copies through it)."""
        assert isinstance(a, np.ndarray) and a.flags.c_contiguous
        return a.ctypes.data

    def stream_ptr(self):
        return 0

    def raw(self, kind, dtype, layout, affine, launch, args, act="none"):
        assert launch.block & (launch.block - 1) == 0 and launch.block <= G.max_block(kind)
        assert act == "none" or kind in K.ACT_KINDS + RUNTIME_ACT_KINDS, (kind, act)
        self.launches.append((kind, launch))
        if kind in K.ACT_KINDS + RUNTIME_ACT_KINDS or act != "none":
            self.acts.append((kind, act))
        if kind in G.STAGE_KINDS:       # dtype: the statistics dtype
            head = [ctypes.c_int(DTYPE_CODE[dtype])]
        else:
            head = [ctypes.c_int(DTYPE_CODE[dtype]), ctypes.c_int(LAYOUT_CODE[layout])]
        if kind.endswith("fused"):
            head.append(ctypes.c_int(K.AFFINES[affine]))
        if kind in K.ACT_KINDS:
            head.append(ctypes.c_int(K.ACTIVATIONS[act]))
        conv = [_ptr(a) if a is None or isinstance(a, np.ndarray) else _scalar(a) for a in args]
        tail = [ctypes.c_longlong(launch.grid), ctypes.c_int(launch.block), ctypes.c_longlong(launch.smem)]
        rc = getattr(self.lib, "h_" + kind)(*head, *conv, *tail)
        assert rc == 0, f"{kind}: harness returned {rc} (-2: block {launch.block} over its __launch_bounds__)"

    def _call(self, prefix, key, args, dtype=None):
        from gn_native import _gpu
        spec = _gpu.spec_for(key, dtype)
        params = _params(spec.in_params) + _params(spec.out_params)
        assert len(params) == len(args), (key, len(params), len(args))
        tmap = {}
        for (raw, typ, name), a in zip(params, args):
            if typ in ("T", "S"):
                dt = np.asarray(a).dtype.name
                assert tmap.setdefault(typ, dt) == dt, f"{key}: {typ} is both {tmap[typ]} and {dt}"
        fn = getattr(self.lib, _fn_name(prefix, spec, tmap))
        conv = []
        for (raw, typ, name), a in zip(params, args):
            if isinstance(a, np.ndarray):
                want = tmap.get(typ, typ)
                assert a.dtype.name == want, f"{key}: {name} is {a.dtype}, expected {want}"
                conv.append(_ptr(a))
            else:
                want = tmap.get(typ, typ)
                assert np.asarray(a).dtype.name == want, f"{key}: scalar {name} is {np.asarray(a).dtype}"
                conv.append(_scalar(a))
        return spec, params, fn, conv

    def elementwise(self, key, dtype, *args):
        spec, params, fn, conv = self._call("ew", key, args, dtype)
        self.launches.append((key, None))
        sizes = {a.size for (raw, _, _), a in zip(params, args) if isinstance(a, np.ndarray) and not raw}
        assert len(sizes) == 1, f"{key}: non-raw arrays of sizes {sizes}"
        for (raw, _, _), a in zip(params, args):
            if isinstance(a, np.ndarray) and not raw:
                assert a.ndim == 1, f"{key}: the backend passes 1-D arrays"
        assert fn(*conv, ctypes.c_longlong(sizes.pop())) == 0

    def reduce(self, key, *args):
        spec, params, fn, conv = self._call("red", key, args)
        self.launches.append((key, None))
        nin = len(_params(spec.in_params))
        ins = [a for a in args[:nin] if isinstance(a, np.ndarray)]
        q, r = ins[0].shape
        assert all(a.shape == (q, r) for a in ins)
        assert all(a.shape == (r,) for a in args[nin:])
        block, stride, _ = cupy_block_specs(q * r, r, r)    # C-contiguous inputs: r contiguous outputs
        self.reductions.append((key, q, r, block, stride))
        assert fn(*conv, ctypes.c_longlong(q), ctypes.c_longlong(r), ctypes.c_int(block), ctypes.c_int(stride)) == 0
