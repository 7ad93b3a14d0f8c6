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

CUDA_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "cuda")

# numpy dtype name -> C++ storage type of the RawKernels
RAW_CTYPE = {"float16": "gn_half", "bfloat16": "gn_bfloat", "float32": "float", "float64": "double"}
DTYPES = ("float16", "bfloat16", "float32", "float64")
LAYOUTS = {"nchw": 0, "nhwc": 1}
AFFINES = {"none": 0, "channel": 1, "group": 2}
RAW_OPTIONS = ("--std=c++17",)
ARCHS = ("sm_75", "sm_80", "sm_86", "sm_89", "sm_90", "sm_100", "sm_120")


def stat_dtype(dtype):
    return "float64" if dtype == "float64" else "float32"


def acc_dtype(dtype):
    return "float64" if dtype == "float64" else "float32"


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
# RawKernels: one RawModule per (dtype, layout), all passes and affine kinds.

RAW_KINDS = ("fwd_fused", "stats_partial", "bwd_fused", "bwd_partial")


def raw_name(kind, dtype, layout, affine="none"):
    """C++ name expression of one RawKernel instantiation."""
    ct, lay = RAW_CTYPE[dtype], LAYOUTS[layout]
    if kind in ("fwd_fused", "bwd_fused"):
        return f"gn_{kind}<{ct}, {lay}, {AFFINES[affine]}>"
    if kind in ("stats_partial", "bwd_partial"):
        return f"gn_{kind}<{ct}, {lay}>"
    raise ValueError(f"unknown raw kernel kind {kind!r}")


def raw_names(dtype, layout):
    names = []
    for kind in RAW_KINDS:
        if kind.endswith("fused"):
            names += [raw_name(kind, dtype, layout, a) for a in AFFINES]
        else:
            names.append(raw_name(kind, dtype, layout))
    return tuple(names)


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


def normalize_spec():
    """y = (x - mean) * rstd * gamma + beta with given statistics (any layout, stats mode, affine)."""
    op = FLAT_LOCATE + """
    typedef typename gn_traits<T>::acc A_;
    const A_ mhi_ = (A_)mean[st_];
    const A_ mlo_ = has_lo ? (A_)mlo[st_] : (A_)0;
    const A_ r_ = (A_)rstd[st_];
    A_ gam_ = (A_)1, bet_ = (A_)0;
    if (aff) {
        const long long ix_ = aff == 1 ? c_ : g_;
        if (has_gamma) gam_ = gn_to_acc(gamma[ix_]);
        if (has_beta) bet_ = gn_to_acc(beta[ix_]);
    }
    y = gn_from_acc<T>(gn_normalize<A_>(gn_to_acc(x), mhi_, mlo_, r_, gam_, bet_));
"""
    return Elementwise("gn_normalize",
                       f"T x, raw S mean, raw S rstd, raw S mlo, raw T gamma, raw T beta, {FLAT_PARAMS}, "
                       "int32 has_lo, int32 aff, int32 has_gamma, int32 has_beta",
                       "T y", op)


def dx_spec():
    """dx = rstd * gamma_c * dy + c2 * (x - mean) + c3, per statistics group."""
    op = FLAT_LOCATE + """
    typedef typename gn_traits<T>::acc A_;
    A_ gam_ = (A_)1;
    if (aff) gam_ = gn_to_acc(gamma[aff == 1 ? c_ : g_]);
    dx = gn_from_acc<T>(gn_dx<A_>(gn_to_acc(dy), gn_to_acc(x), (A_)mean[st_], (A_)rstd[st_], gam_,
                                  (A_)c2[st_], (A_)c3[st_]));
"""
    return Elementwise("gn_dx",
                       f"T dy, T x, raw S mean, raw S rstd, raw S c2, raw S c3, raw T gamma, {FLAT_PARAMS}, "
                       "int32 aff",
                       "T dx", op)


def bwd_coef_spec():
    """c2, c3 of each statistics group i from per-channel sums (rows of C; row i // G)."""
    op = """
    const long long n_ = i / G, g_ = i - n_ * G;
    double a_ = 0.0, b_ = 0.0;
    for (long long k_ = 0; k_ < K; ++k_) {
        const long long ch_ = g_ * K + k_;
        const double gam_ = aff ? (double)gn_to_acc(gamma[aff == 1 ? ch_ : g_]) : 1.0;
        a_ += gam_ * sdb[n_ * C + ch_];
        b_ += gam_ * sdg[n_ * C + ch_];
    }
    double c2_, c3_;
    gn_bwd_coef(a_, b_, (double)rstd[i], M, c2_, c3_);
    c2 = (S)c2_;
    c3 = (S)c3_;
"""
    return Elementwise("gn_bwd_coef",
                       "raw float64 sdb, raw float64 sdg, raw S rstd, raw T gamma, int64 C, int64 K, int64 G, "
                       "float64 M, int32 aff",
                       "S c2, S c3", op)


def param_out_spec():
    """dgamma, dbeta in x's dtype: sums of kk consecutive per-channel values (kk = K per group, 1 per channel)."""
    op = """
    double a_ = 0.0, b_ = 0.0;
    for (long long k_ = 0; k_ < kk; ++k_) { a_ += sdg[i * kk + k_]; b_ += sdb[i * kk + k_]; }
    typedef typename gn_traits<T>::acc A_;
    dgamma = gn_from_acc<T>((A_)a_);
    dbeta = gn_from_acc<T>((A_)b_);
"""
    return Elementwise("gn_param_out", "raw float64 sdb, raw float64 sdg, int64 kk", "T dgamma, T dbeta", op)


def merge_stats_spec(sdtype):
    """Chan-merge partial moments over axis 0 into mean, rstd and the mean's low part."""
    ct = {"float32": "float", "float64": "double"}[sdtype]
    return Reduction(f"gn_merge_stats_{sdtype}", "float64 pn, float64 pmean, float64 pm2, float64 eps",
                     f"{sdtype} mean, {sdtype} rstd, {sdtype} mlo",
                     "gn_welford_make(pn, pmean, pm2)", "gn_welford_merge(a, b)",
                     f"gn_stats_post<{ct}>(a, eps, mean, rstd, mlo)", "gn_welford_make(0.0, 0.0, 0.0)",
                     "gn_welford", ("eps",))


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

@dataclass(frozen=True)
class RawVariant:
    dtype: str
    layout: str
    names: tuple

    @property
    def label(self):
        return f"RawModule[{self.dtype},{self.layout}]"


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

    normalize and dx run over x itself, and sum2 over per-(n, c) partials,
    so they come in the three index regimes; the other CuPy kernels touch
    arrays of O(N*G) or O(C) values (or O(N*C) on paths that need N*G < 128),
    which stay far below 2 GiB.  Reductions run over fewer than 2**31 rows.
    """
    out = []
    for dt in dtypes:
        for lay in LAYOUTS:
            out.append(RawVariant(dt, lay, raw_names(dt, lay)))
    for dt in dtypes:
        tmap = {"T": dt, "S": stat_dtype(dt)}
        for spec in (normalize_spec(), dx_spec()):
            for regime in ("i32", "mixed", "i64"):
                out.append(_ew(spec, tmap, regime))
        out.append(_ew(bwd_coef_spec(), tmap))
        out.append(_ew(param_out_spec(), tmap))
    for sd in sorted({stat_dtype(d) for d in dtypes}):
        spec = merge_stats_spec(sd)
        out.append(CupyVariant(spec, ("float64",) * 4, (sd,) * 3, scalar_names(spec), "i32", f"S={sd}"))
    for ad in sorted({acc_dtype(d) for d in dtypes}):
        for regime in ("i32", "mixed", "i64"):     # per-(n, c) partials of a huge tensor exceed 2 GiB
            out.append(CupyVariant(sum2_spec(), (ad, ad), ("float64", "float64"), (), regime, f"T={ad}"))
    return out
