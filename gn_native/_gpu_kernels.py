"""Every kernel of the GPU backend: sources, CuPy kernel specs, and variants.

Importable without CuPy.  `gn_native._gpu` builds CuPy kernels from the
specs here; `gn_native.gpu_check` compiles every variant listed by
`variants()` with NVRTC; tests/test_gpu_host.py runs the RawKernel templates
and the operation strings on the CPU.  One definition serves all three, so
what is checked is what runs.

The arithmetic itself lives in cuda/gn_math.cuh (inlined into every source
as the preamble); the RawKernel templates in cuda/gn_kernels.cuh.
"""
import os
import re
from dataclasses import dataclass

from . import _dtypes
from . import _gpu_geometry as G

CUDA_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "cuda")

# numpy dtype name -> C++ storage type of the RawKernels
RAW_CTYPE = {d.name: d.gpu_ctype for d in _dtypes.DTYPES}
DTYPES = tuple(d.name for d in _dtypes.DTYPES)
LAYOUTS = {"nchw": 0, "nhwc": 1}
AFFINES = {"none": 0, "channel": 1, "group": 2}
# the activation ids of gn_act.cuh (= gn_native.h's GN_ACT_*, Plan.activation.code)
ACTIVATIONS = {"none": 0, "silu": 1, "gelu": 2, "gelu_tanh": 3, "relu": 4}
ARCHS = ("sm_75", "sm_80", "sm_86", "sm_89", "sm_90", "sm_100", "sm_120")


def stat_dtype(dtype):
    """mean/rstd dtype name for data of dtype name `dtype`; the kernels accumulate in it too."""
    return _dtypes.BY_NAME[dtype].stat


acc_dtype = stat_dtype


def io_dtype(dtype):
    """The dtype an array of `dtype` is passed to the CuPy kernels as: 16-bit ones as their bits (gn_io)."""
    return _dtypes.BY_NAME[dtype].gpu_io


def raw_options():
    """NVRTC options of the RawModule: C++17, and the __launch_bounds__ the geometry launches with."""
    return ("--std=c++17",) + G.raw_defines()


_INCLUDE = re.compile(r'^[ \t]*#[ \t]*include[ \t]+"([^"]+)"[ \t]*$', re.M)


def read_source(name, _seen=None):
    """Text of cuda/<name> with its local #include "..." lines inlined (each file once)."""
    seen = set() if _seen is None else _seen
    if name in seen:
        return ""
    seen.add(name)
    with open(os.path.join(CUDA_DIR, name), encoding="utf-8") as f:
        text = f.read()
    return _INCLUDE.sub(lambda m: read_source(m.group(1), seen), text)


# ---------------------------------------------------------------------------
# RawKernels: one RawModule per (dtype, layout, activation), all passes and
# affine kinds.  The activation is a template parameter (see gn_kernels.cuh);
# the statistics pass does not depend on it and lives in the "none" module
# only (raw_module_act).

RAW_KINDS = G.RAW_KINDS
ACT_KINDS = ("fwd_fused", "bwd_fused", "bwd_partial")    # the kernels that apply the activation


def raw_module_act(kind, act):
    """The activation of the module that holds `kind` for activation `act`."""
    return act if kind in ACT_KINDS else "none"


def raw_name(kind, dtype, layout, affine="none", act="none"):
    """C++ name expression of one RawKernel instantiation."""
    ct, lay, a = RAW_CTYPE[dtype], LAYOUTS[layout], ACTIVATIONS[act]
    if kind in ("fwd_fused", "bwd_fused"):
        return f"gn_{kind}<{ct}, {lay}, {AFFINES[affine]}, {a}>"
    if kind == "bwd_partial":
        return f"gn_{kind}<{ct}, {lay}, {a}>"
    if kind in ("stats_partial", "stats_rows", "bwd_reduce"):
        return f"gn_{kind}<{ct}, {lay}>"
    raise ValueError(f"unknown raw kernel kind {kind!r}")


# The stages' dtype-free kernels: one RawModule, its kernels per statistics
# dtype S (the dtype of the mean/rstd they read or write).
STAGE_CTYPE = {"float32": "float", "float64": "double"}


def stage_name(kind, sdtype):
    """C++ name expression of a stage kernel (kind in _gpu_geometry.STAGE_KINDS)."""
    if kind == "partial_fold":
        return "gn_partial_fold"
    if kind in ("stats_merge", "pair_sums"):
        return f"gn_{kind}<{STAGE_CTYPE[sdtype]}>"
    raise ValueError(f"unknown stage kernel kind {kind!r}")


def stage_kinds():
    """[(kind, name expression)] of the stages' RawModule."""
    out = [("partial_fold", stage_name("partial_fold", None))]
    for kind in ("stats_merge", "pair_sums"):
        out += [(kind, stage_name(kind, sd)) for sd in STAGE_CTYPE]
    return out


def raw_kinds(dtype, layout, act="none"):
    """[(kind, name expression)] of every RawKernel of one module."""
    out = []
    for kind in RAW_KINDS:
        if raw_module_act(kind, act) != act:
            continue
        if kind.endswith("fused"):
            out += [(kind, raw_name(kind, dtype, layout, a, act)) for a in AFFINES]
        else:
            out.append((kind, raw_name(kind, dtype, layout, act=act)))
    return out


def raw_names(dtype, layout, act="none"):
    return tuple(name for _, name in raw_kinds(dtype, layout, act))


def raw_source():
    return read_source("gn_kernels.cuh")


# ---------------------------------------------------------------------------
# CuPy ElementwiseKernel / ReductionKernel specs.

def preamble():
    return read_source("gn_math.cuh")


@dataclass(frozen=True)
class Elementwise:
    name: str
    in_params: str
    out_params: str
    operation: str


@dataclass(frozen=True)
class Reduction:
    name: str
    in_params: str
    out_params: str
    map_expr: str
    reduce_expr: str
    post_map_expr: str
    identity: str
    reduce_type: str
    scalars: tuple = ()    # in_params passed as scalars


FLAT_PARAMS = ("int64 C, int64 Sp, int64 K, int64 GN, int32 nhwc, int32 small, "
               "uint32 mc, uint32 sc, uint32 ms, uint32 ss, uint32 mk, uint32 sk")
FLAT_LOCATE = """
    const gn_flat f_ = gn_flat_make(C, Sp, K, GN, nhwc, small, mc, sc, ms, ss, mk, sk);
    long long n_, c_, g_, st_;
    f_.locate(i, n_, c_, g_, st_);"""


# The elementwise kernels take the affine kind at run time (aff: 0 none, 1 per
# channel, 2 per group; a uniform branch), so one kernel per dtype serves all.
AFFINE_CODE = {"none": 0, "channel": 1, "group": 2}

# Statistics-group coefficients travel as rows of one (rows, groups) array:
# normalize's 4 (gn_norm_coef), dx's 5 (gn_bwd_coef).
NORM_COEFS = 4
DX_COEFS = 5
# The stages' layouts (gn_native.stages.PARTIAL_FIELDS; [sum g, sum g (x - mean_F)])
PARTIAL_LEN = 5
DSUM_LEN = 2


def _storage(dtype):
    """The first line of a per-dtype operation: D_, the kernels' storage type of the dtype."""
    return f"\n    typedef {RAW_CTYPE[dtype]} D_;"


# The elementwise kernels take the activation at run time too (act: the id of
# gn_act.cuh, a uniform switch): unlike the RawKernels they are far from any
# register limit (about 32 per thread at 128 threads, where 255 are allowed),
# and one kernel per dtype keeps what a process compiles, and gpu_check's
# variants, as they were.

def normalize_spec(dtype):
    """y = act((x - mean) * rstd * gamma + beta) from per-group coefficients (any layout, stats mode, affine)."""
    op = _storage(dtype) + FLAT_LOCATE + """
    typedef typename gn_traits<D_>::acc A_;
    A_ k_[4];
    for (int q_ = 0; q_ < 4; ++q_) k_[q_] = (A_)coef[q_ * ns + st_];
    A_ gam_ = (A_)1, bet_ = (A_)0;
    if (aff) {
        const long long ix_ = aff == 1 ? c_ : g_;
        if (has_gamma) gam_ = gn_ld<D_>(gamma[ix_]);
        if (has_beta) bet_ = gn_ld<D_>(beta[ix_]);
    }
    y = gn_st<D_>(gn_act_value<A_>(act, gn_normalize<A_>(gn_ld<D_>(x), k_, gam_, bet_)));
"""
    return Elementwise(f"gn_normalize_{dtype}",
                       f"T x, raw S coef, int64 ns, raw T gamma, raw T beta, {FLAT_PARAMS}, "
                       "int32 aff, int32 has_gamma, int32 has_beta, int32 act",
                       "T y", op)


# add= (issue 13): how the addend is laid out, the add kernel's `kind`
ADD_KIND = {"full": 0, "nc": 1, "c": 2}


def add_spec(dtype):
    """s = x + a in the compute type, rounded to x's dtype: NumPy's x + a, bit for bit.

    A full addend (x's shape and layout) is `a`; an (N, C) or (C,) one is the
    raw `ab`, indexed by the n and c of element i (gn_flat).  Each kernel
    reads only its own: the other is a stand-in (x, or one element), so that
    only x-sized arrays are indexed per element and the raw one stays small
    (32-bit indexing in every regime, as gpu_check compiles it)."""
    op = _storage(dtype) + """
    typedef typename gn_traits<D_>::acc A_;
    A_ a_;
    if (kind == 0) {
        a_ = gn_ld<D_>(a);
    } else {""" + FLAT_LOCATE + """
        a_ = gn_ld<D_>(ab[kind == 1 ? n_ * C + c_ : c_]);
    }
    s = gn_st<D_>(gn_ld<D_>(x) + a_);
"""
    return Elementwise(f"gn_add_{dtype}", f"T x, T a, raw T ab, {FLAT_PARAMS}, int32 kind", "T s", op)


def norm_coef_spec():
    """normalize's coefficients (rows of coef) from given mean and rstd."""
    op = """
    S k_[4];
    gn_norm_coef<S>((double)mean, (double)rstd, k_);
    c0 = k_[0]; c1 = k_[1]; c2 = k_[2]; c3 = k_[3];
"""
    return Elementwise("gn_norm_coef", "S mean, S rstd", "S c0, S c1, S c2, S c3", op)


def norm_coef64_spec():
    """normalize's coefficients (rows of coef, the statistics dtype S) from float64 mean and rstd:
    the stages' normalize, which keeps the low part of the mean (gn_norm_coef)."""
    op = """
    S k_[4];
    gn_norm_coef<S>(mean[i], rstd[i], k_);
    c0 = k_[0]; c1 = k_[1]; c2 = k_[2]; c3 = k_[3];
"""
    return Elementwise("gn_norm_coef64", "raw float64 mean, raw float64 rstd", "S c0, S c1, S c2, S c3", op)


def dx_spec(dtype):
    """dx = rstd * gamma_c * g + c2 * (x - mean) + c3, per statistics group (gn_dx), g = dy * act'(z)
    (gn_dx_act_rt; beta is read only with an activation)."""
    op = _storage(dtype) + FLAT_LOCATE + """
    typedef typename gn_traits<D_>::acc A_;
    A_ k_[5];
    for (int q_ = 0; q_ < 5; ++q_) k_[q_] = (A_)coef[q_ * ns + st_];
    A_ gam_ = (A_)1, bet_ = (A_)0;
    if (aff) {
        const long long ix_ = aff == 1 ? c_ : g_;
        if (has_gamma) gam_ = gn_ld<D_>(gamma[ix_]);
        if (act && has_beta) bet_ = gn_ld<D_>(beta[ix_]);
    }
    dx = gn_st<D_>(gn_dx_act_rt<A_>(act, gn_ld<D_>(dy), gn_ld<D_>(x), k_, gam_, bet_));
"""
    return Elementwise(f"gn_dx_{dtype}",
                       f"T dy, T x, raw S coef, int64 ns, raw T gamma, raw T beta, {FLAT_PARAMS}, int32 aff, "
                       "int32 has_gamma, int32 has_beta, int32 act",
                       "T dx", op)


def bwd_coef_spec(dtype):
    """dx's coefficients of each statistics group i from per-channel sums (rows of C; row i // G).

    frozen != 0: statistics that are constants (a layer's running ones in eval
    mode), so dx = rstd * gamma * dy: the sums' terms drop out."""
    op = _storage(dtype) + """
    const long long n_ = i / G, g_ = i - n_ * G;
    double a_ = 0.0, b_ = 0.0;
    for (long long k_ = 0; k_ < K; ++k_) {
        const long long ch_ = g_ * K + k_;
        const double gam_ = aff ? (double)gn_ld<D_>(gamma[aff == 1 ? ch_ : g_]) : 1.0;
        a_ += gam_ * sdb[n_ * C + ch_];
        b_ += gam_ * sdg[n_ * C + ch_];
    }
    if (frozen) { a_ = 0.0; b_ = 0.0; }
    S k_[5];
    gn_bwd_coef<S>(a_, b_, (double)mean, (double)rstd, M, k_);
    c0 = k_[0]; c1 = k_[1]; c2 = k_[2]; c3 = k_[3]; c4 = k_[4];
"""
    return Elementwise(f"gn_bwd_coef_{dtype}",
                       "raw float64 sdb, raw float64 sdg, S mean, S rstd, raw T gamma, int64 C, int64 K, "
                       "int64 G, float64 M, int32 aff, int32 frozen",
                       "S c0, S c1, S c2, S c3, S c4", op)


def param_out_spec(dtype):
    """dgamma, dbeta in x's dtype: sums of kk consecutive per-channel values (kk = K per group, 1 per channel)."""
    op = _storage(dtype) + """
    double a_ = 0.0, b_ = 0.0;
    for (long long k_ = 0; k_ < kk; ++k_) { a_ += sdg[i * kk + k_]; b_ += sdb[i * kk + k_]; }
    typedef typename gn_traits<D_>::acc A_;
    dgamma = gn_st<D_>((A_)a_);
    dbeta = gn_st<D_>((A_)b_);
"""
    return Elementwise(f"gn_param_out_{dtype}", "raw float64 sdb, raw float64 sdg, int64 kk",
                       "T dgamma, T dbeta", op)


def merge_stats_spec(sdtype):
    """Chan-merge partial moments over axis 0 into mean, rstd and normalize's coefficients."""
    ct = {"float32": "float", "float64": "double"}[sdtype]
    return Reduction(f"gn_merge_stats_{sdtype}", "float64 pn, float64 pmean, float64 pm2, float64 eps",
                     f"{sdtype} mean, {sdtype} rstd, {sdtype} c0, {sdtype} c1, {sdtype} c2, {sdtype} c3",
                     "gn_welford_make(pn, pmean, pm2)", "gn_welford_merge(a, b)",
                     f"gn_stats_post<{ct}>(a, eps, mean, rstd, c0, c1, c2, c3)",
                     "gn_welford_make(0.0, 0.0, 0.0)", "gn_welford", ("eps",))


def sum2_spec():
    """Two sums over axis 0, in double."""
    return Reduction("gn_sum2", "T u, T v", "float64 su, float64 sv",
                     "gn_d2_make((double)u, (double)v)", "gn_d2_add(a, b)", "su = a.x, sv = a.y",
                     "gn_d2_make(0.0, 0.0)", "gn_d2")


def build_cupy_kernel(spec):
    """The CuPy kernel object of a spec (building it needs CuPy, not a device)."""
    import cupy
    if isinstance(spec, Elementwise):
        return cupy.ElementwiseKernel(spec.in_params, spec.out_params, spec.operation, spec.name,
                                      preamble=preamble())
    return cupy.ReductionKernel(spec.in_params, spec.out_params, spec.map_expr, spec.reduce_expr,
                                spec.post_map_expr, spec.identity, spec.name,
                                reduce_type=spec.reduce_type, preamble=preamble())


# ---------------------------------------------------------------------------
# Variants: every kernel the backend can launch, for gpu_check.

STAGES = "stages"     # the RawVariant.dtype of the stages' module


@dataclass(frozen=True)
class RawVariant:
    dtype: str
    layout: str
    names: tuple
    kinds: tuple = ()        # the geometry's kernel kind of each name (max_block, max_dynamic_smem)
    source: str = ""         # "" : the RawModule's own source (raw_source())
    act: str = "none"        # the module's activation

    @property
    def label(self):
        if self.dtype == STAGES:
            return "RawModule[stages]"
        tail = "" if self.act == "none" else f",{self.act}"
        return f"RawModule[{self.dtype},{self.layout}{tail}]"

    def code(self):
        return self.source or raw_source()


@dataclass(frozen=True)
class CupyVariant:
    spec: object           # Elementwise or Reduction
    in_dtypes: tuple       # dtypes of the in_params, scalars included
    out_dtypes: tuple      # dtypes of the out_params
    scalars: tuple         # names of in_params passed as scalars
    regime: str            # index_regime: "i32", "mixed", "i64"
    tag: str = ""          # the placeholders' dtypes, for the label

    @property
    def label(self):
        return f"{self.spec.name}[{self.tag};{self.regime}]"

    @property
    def kind(self):
        return "elementwise" if isinstance(self.spec, Elementwise) else "reduction"


def _param_types(params):
    return [p.split()[-2] for p in params.split(",")]


def elementwise_dtypes(spec, tmap):
    """Concrete dtypes of an Elementwise spec's in/out params given the placeholders' dtypes."""
    def concrete(t):
        return tmap.get(t, t)
    ins = tuple(concrete(t) for t in _param_types(spec.in_params))
    outs = tuple(concrete(t) for t in _param_types(spec.out_params))
    return ins, outs


def scalar_names(spec):
    """In-params passed as scalars: a Reduction lists them; in an Elementwise
    spec they are the params neither `raw` nor typed by a placeholder."""
    if isinstance(spec, Reduction):
        return spec.scalars
    out = []
    for p in spec.in_params.split(","):
        words = p.split()
        if words[0] != "raw" and words[-2] not in ("T", "S"):
            out.append(words[-1])
    return tuple(out)


def _ew(spec, tmap, regime="i32"):
    ins, outs = elementwise_dtypes(spec, tmap)
    used = [p for p in ("T", "S") if p in _param_types(spec.in_params) + _param_types(spec.out_params)]
    tag = ",".join(f"{p}={tmap[p]}" for p in used)
    return CupyVariant(spec, ins, outs, scalar_names(spec), regime, tag)


def variants(dtypes=DTYPES):
    """Every (kernel, dtypes, index regime) the GPU backend launches.

    normalize, dx and add run over x itself, and sum2 over per-(n, c) partials,
    so they come in the three index regimes; the other CuPy kernels touch
    arrays of O(N*G) or O(C) values (or O(N*C) on paths that need N*G < 128),
    which stay far below 2 GiB (add's raw (N, C) addend too, unless x has
    over 2**30 values and a spatial size of 1 or 2: CuPy then compiles a
    64-bit variant not listed here).  Reductions run over fewer than 2**31 rows.
    16-bit arrays reach the CuPy kernels as uint16 (io_dtype).
    """
    out = []
    for act in ACTIVATIONS:
        for dt in dtypes:
            for lay in LAYOUTS:
                kinds = raw_kinds(dt, lay, act)
                out.append(RawVariant(dt, lay, tuple(n for _, n in kinds), tuple(k for k, _ in kinds), act=act))
    kinds = stage_kinds()
    out.append(RawVariant(STAGES, "", tuple(n for _, n in kinds), tuple(k for k, _ in kinds)))
    for dt in dtypes:
        tmap = {"T": io_dtype(dt), "S": stat_dtype(dt)}
        for spec in (normalize_spec(dt), dx_spec(dt), add_spec(dt)):
            for regime in ("i32", "mixed", "i64"):
                out.append(_ew(spec, tmap, regime))
        out.append(_ew(bwd_coef_spec(dt), tmap))
        out.append(_ew(param_out_spec(dt), tmap))
    for sd in sorted({stat_dtype(d) for d in dtypes}):
        out.append(_ew(norm_coef_spec(), {"S": sd}))
        out.append(_ew(norm_coef64_spec(), {"S": sd}))
        spec = merge_stats_spec(sd)
        out.append(CupyVariant(spec, ("float64",) * 4, (sd,) * 6, scalar_names(spec), "i32", f"S={sd}"))
    for ad in sorted({acc_dtype(d) for d in dtypes}):
        for regime in ("i32", "mixed", "i64"):     # per-(n, c) partials of a huge tensor exceed 2 GiB
            out.append(CupyVariant(sum2_spec(), (ad, ad), ("float64", "float64"), (), regime, f"T={ad}"))
    return out
