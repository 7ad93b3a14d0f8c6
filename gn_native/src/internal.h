/* Internal declarations of the gn_native core: dtype conversions, the
 * per-ISA primitive tables, thread helpers.  Not installed. */
#ifndef GN_INTERNAL_H
#define GN_INTERNAL_H

#include <float.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include "gn_native.h"
#include "dtypes.h"
#include "act.h"
#ifdef _OPENMP
#include <omp.h>
#endif

/* ---- overflow-checked sizes ----
 * Every allocation size and loop bound derived from a descriptor goes
 * through these: a product or sum that does not fit gives -1, which
 * gn_alloc refuses, so a huge descriptor becomes GN_ENOMEM instead of a
 * wrapped size (gn_check_desc has already refused what cannot be indexed). */
static inline int64_t gn_mul(int64_t a, int64_t b)
{
    int64_t r;
    return (a < 0 || b < 0 || __builtin_mul_overflow(a, b, &r)) ? -1 : r;
}

static inline int64_t gn_add(int64_t a, int64_t b)
{
    int64_t r;
    return (a < 0 || b < 0 || __builtin_add_overflow(a, b, &r)) ? -1 : r;
}

/* count values of `size` bytes, or NULL when the byte count overflows */
static inline void *gn_alloc(int64_t count, size_t size)
{
    size_t bytes;
    if (count < 0 || __builtin_mul_overflow((size_t)count, size, &bytes) ||
        bytes > (size_t)PTRDIFF_MAX)
        return NULL;
    return malloc(bytes ? bytes : 1);
}

/* whether the byte ranges [a, a + na) and [b, b + nb) share a byte */
static inline int gn_overlap(const void *a, int64_t na, const void *b, int64_t nb)
{
    uintptr_t pa = (uintptr_t)a, pb = (uintptr_t)b;
    if (!a || !b || na <= 0 || nb <= 0)
        return 0;
    return pa < pb + (uintptr_t)nb && pb < pa + (uintptr_t)na;
}

/* Reductions are cut into chunks of fixed size (never by thread count) and
 * the chunk partials are folded in index order, so results do not depend on
 * how many threads ran.  Inside a chunk, contiguous reductions use 32
 * interleaved lanes in the compute type (element i goes to lane i % 32) over
 * blocks of GN_BLOCK elements (4 values per lane); at the end of a block,
 * lane j + 16 is added to lane j and the 16 sums are added to 16 double lanes,
 * which the fixed tree in gn_lanes_fold combines.  Squares and products are
 * accumulated with a fused multiply-add (C's fma), and the normalize step is
 * one subtraction and one fused multiply-add per value.  The SIMD paths do
 * exactly the same operations, so they are bit-identical to the scalar
 * reference. */
#define GN_CHUNK 4096          /* elements, a multiple of GN_BLOCK */
#define GN_BLOCK 128
#define GN_NT_BYTES (16 << 20) /* outputs from this size on use streaming stores */
#define GN_RBLOCK 16           /* NHWC rows summed in the compute type per column */
#define GN_ROWS 256            /* rows (spatial positions) per NHWC chunk */
#define GN_LANES 16            /* double lanes */
#define GN_FLANES 32           /* compute-type lanes within a block */
#define GN_PF_BYTES (1 << 20)  /* NCHW groups up to this size prefetch their successor */
#define GN_FUSE_NHWC_BYTES (256 << 10) /* NHWC samples up to this size: stats + normalize fused */

/* Ask for `bytes` bytes from p to be brought into the cache (a hint: it
 * changes no result).  For a pass that reads from a scratch buffer while
 * the next unit's input is to come from memory. */
static inline void gn_prefetch_range(const void *p, int64_t bytes)
{
#if defined(__GNUC__)
    for (int64_t i = 0; i < bytes; i += 64)
        __builtin_prefetch((const char *)p + i, 0, 3);
#else
    (void)p;
    (void)bytes;
#endif
}

/* a * b + c rounded once, in the compute type of a */
#define GN_FMA(a, b, c) _Generic((a), float: fmaf, default: fma)((a), (b), (c))

/* ---- the epilogue of one value ----
 * z = fma(x - mh, sc, sh) in the compute type F, then the activation
 * (act.h: computed from the float z for F = float, in double for F = double;
 * GN_ACT_NONE: z itself).  Backward: g = dy act'(z), rounded once in F (dy
 * itself for GN_ACT_NONE), replaces dy.  The scalar prims, the drivers'
 * per-value fallbacks and (as their twins) the AVX2 prims compute exactly
 * these, so every path gives the same bits. */
#define GN_ACT(act, z) _Generic((z), float: gn_act_apply_f, default: gn_act_apply_d)((act), (z))
#define GN_DACT(act, z) _Generic((z), float: gn_act_grad_f, default: gn_act_grad_d)((act), (z))
/* y of x */
#define GN_Y1(act, x, mh, sc, sh) GN_ACT((act), GN_FMA((x) - (mh), (sc), (sh)))
/* g of dy at x - mh = dev */
#define GN_G1(act, dy, dev, sc, sh) \
    ((act) == GN_ACT_NONE ? (dy) : (dy) * GN_DACT((act), GN_FMA((dev), (sc), (sh))))
/* dx of dy and x: fma(g, k1, fma(x - mh, c2, c3)) */
#define GN_DX1(act, dy, x, k1, mh, c2, c3, sc, sh)                                    \
    _Generic((dy), float: gn_dx1_f, default: gn_dx1_d)((act), (dy), (x), (k1), (mh),   \
                                                        (c2), (c3), (sc), (sh))
static inline float gn_dx1_f(int act, float dy, float x, float k1, float mh, float c2, float c3,
                             float sc, float sh)
{
    float dev = x - mh;
    return fmaf(GN_G1(act, dy, dev, sc, sh), k1, fmaf(dev, c2, c3));
}
static inline double gn_dx1_d(int act, double dy, double x, double k1, double mh, double c2,
                              double c3, double sc, double sh)
{
    double dev = x - mh;
    return fma(GN_G1(act, dy, dev, sc, sh), k1, fma(dev, c2, c3));
}

/* Call f(args..., act) with act a constant for each activation: f is an
 * always-inline body, so the compiler emits one loop per activation, and the
 * GN_ACT_NONE loop is the plain one. */
#define GN_INLINE static inline __attribute__((always_inline))
#define GN_BY_ACT(act, f, ...)                                                        \
    do {                                                                              \
        switch (act) {                                                                \
        case GN_ACT_SILU: f(__VA_ARGS__, GN_ACT_SILU); break;                         \
        case GN_ACT_GELU: f(__VA_ARGS__, GN_ACT_GELU); break;                         \
        case GN_ACT_GELU_TANH: f(__VA_ARGS__, GN_ACT_GELU_TANH); break;               \
        case GN_ACT_RELU: f(__VA_ARGS__, GN_ACT_RELU); break;                         \
        default: f(__VA_ARGS__, GN_ACT_NONE); break;                                  \
        }                                                                             \
    } while (0)

/* ---- extreme magnitudes ----
 * The fast paths sum squares in the compute type F and normalize with F
 * coefficients.  Where that cannot hold the answer (squares beyond F's range,
 * a scale that F rounds to infinity or to a subnormal, x - mean beyond F's
 * range) the drivers switch that group or channel to a double path.  The
 * decision depends only on the statistics, never on the ISA or the thread
 * count, so results stay bit-identical; typical data never take it. */
#define GN_F_MAX(F) _Generic((F)0, float: (double)FLT_MAX, default: DBL_MAX)
#define GN_F_MIN(F) _Generic((F)0, float: (double)FLT_MIN, default: DBL_MIN)

/* v is finite but F would round it to infinity or to a subnormal */
static inline int gn_out_of_range(double v, double fmin, double fmax)
{
    double a = fabs(v);   /* in range, the common case, costs two comparisons */
    return (a > fmax || a < fmin) && a != 0.0 && a != INFINITY && a == a;
}

/* a group's F sums cannot be trusted: a square overflowed F (the sum of
 * squares q is +inf; a NaN q means the data hold NaN or inf, whose results
 * are NaN either way), or eps is so small that squares flushed to zero in F
 * would change var + eps (below 2^-100 it takes |x - mean| under ~1e-15) */
static inline int gn_sums_unsafe(double q, double m, double eps, int f_is_double)
{
    return q == INFINITY || (!f_is_double && eps < 0x1p-100 && q < m * 0x1p-60);
}

static inline double gn_lanes_fold(const double *l)
{
    double t[4];
    for (int j = 0; j < 4; j++)
        t[j] = (l[j] + l[8 + j]) + (l[4 + j] + l[12 + j]);
    return (t[0] + t[2]) + (t[1] + t[3]);
}

/* ---- partials and their merge (the first two stages, gn_native.h) ----
 * A partial is GN_PARTIAL_LEN doubles {count m, shift c, sum s, sumsq q,
 * exponent e} of one (sample, group): s = sum((x - c) 2^-e), q = sum(((x - c)
 * 2^-e)^2), c its first value.  gn_merge_group folds m partials `stride`
 * doubles apart in index order, to the reference shift c0 of the first and
 * the largest exponent E; with one partial it is the plain finish
 * (mean = c + s/m, var = q/m - (s/m)^2).  Scaling by powers of two is exact,
 * so E changes no bits except near the ends of double's range. */
static inline void gn_merge_group(const double *p, int64_t stride, int64_t m, double eps,
                                  double *mean, double *rstd, double *var)
{
    if (m <= 0) {
        *mean = *rstd = *var = NAN;
        return;
    }
    int E = (int)p[4];
    for (int64_t i = 1; i < m; i++)
        if ((int)p[i * stride + 4] > E)
            E = (int)p[i * stride + 4];
    double c = p[1], M = 0.0, S = 0.0, Q = 0.0;
    for (int64_t i = 0; i < m; i++) {
        const double *pi = p + i * stride;
        int r = (int)pi[4] - E;
        double s = ldexp(pi[2], r), q = ldexp(pi[3], 2 * r);
        M += pi[0];
        if (i == 0) {
            S = s;
            Q = q;
            continue;
        }
        double dd = ldexp(pi[1] - c, -E);
        S += s + pi[0] * dd;
        Q += q + dd * (2.0 * s + pi[0] * dd);
    }
    if (!(M > 0.0)) {            /* no values */
        *mean = *rstd = *var = NAN;
        return;
    }
    double dm = S / M, v = Q / M - dm * dm;
    if (v < 0.0)
        v = 0.0;
    *mean = c + ldexp(dm, E);
    *var = ldexp(v, 2 * E);
    *rstd = 1.0 / sqrt(*var + eps);
}

/* the backward sums of n (sample, channel) pairs, [i][2] interleaved (gn_native.h), as
 * two arrays */
static inline void gn_sums_split(double *a, double *b, const double *sums, int64_t n)
{
    for (int64_t i = 0; i < n; i++) {
        a[i] = sums[GN_DSUM_LEN * i];
        b[i] = sums[GN_DSUM_LEN * i + 1];
    }
}

/* for (int64_t i = 0; i < n; i++) BODY, on nt threads when nt > 1, with
 * `tid` the index of the running thread in [0, nt): per-thread workspaces are
 * indexed by it.  tid counts threads of the team this macro starts, never the
 * caller's: a call made from inside the caller's own OpenMP team (C, Cython
 * prange) runs inline with tid 0.  With one thread the loop runs inline,
 * without entering an OpenMP region (which costs about half a microsecond, a
 * tenth of a small call).  The thread count variable must be named nt where
 * this is used (OpenMP's num_threads clause names it). */
#ifdef _OPENMP
#define GN_PARALLEL_FOR_TID(nt, tid, i, n, ...)                                         \
    do {                                                                               \
        if ((nt) > 1) {                                                                \
            _Pragma("omp parallel num_threads(nt)")                                    \
            {                                                                          \
                const int tid = omp_get_thread_num();                                  \
                (void)tid;                                                             \
                _Pragma("omp for schedule(static)")                                    \
                for (int64_t i = 0; i < (n); i++) __VA_ARGS__                          \
            }                                                                          \
        } else {                                                                       \
            const int tid = 0;                                                         \
            (void)tid;                                                                 \
            for (int64_t i = 0; i < (n); i++) __VA_ARGS__                              \
        }                                                                              \
    } while (0)
#else
#define GN_PARALLEL_FOR_TID(nt, tid, i, n, ...)                                         \
    do {                                                                               \
        const int tid = 0;                                                             \
        (void)tid;                                                                     \
        (void)(nt);                                                                    \
        for (int64_t i = 0; i < (n); i++) __VA_ARGS__                                  \
    } while (0)
#endif
#define GN_PARALLEL_FOR(nt, i, n, ...) GN_PARALLEL_FOR_TID(nt, gn_tid_, i, n, __VA_ARGS__)

/* ---- float16 / bfloat16 <-> float, exact and round-to-nearest-even ---- */

static inline float gn_bits_f32(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }
static inline uint32_t gn_f32_bits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }

static inline float gn_bf16_to_f32(uint16_t h) { return gn_bits_f32((uint32_t)h << 16); }

static inline uint16_t gn_f32_to_bf16(float f)
{
    uint32_t u = gn_f32_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u)            /* NaN: keep it quiet */
        return (uint16_t)((u >> 16) | 0x0040u);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

static inline float gn_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu, man = h & 0x3ffu;
    if (exp == 0x1f)                                 /* inf / NaN */
        return gn_bits_f32(sign | 0x7f800000u | (man << 13));
    if (exp == 0) {                                  /* zero / subnormal */
        float v = (float)man * 5.9604644775390625e-8f;   /* 2^-24 */
        return sign ? -v : v;
    }
    return gn_bits_f32(sign | ((exp + 112u) << 23) | (man << 13));
}

static inline uint16_t gn_f32_to_f16(float f)
{
    uint32_t u = gn_f32_bits(f);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    uint32_t a = u & 0x7fffffffu;
    if (a > 0x7f800000u)                             /* NaN */
        return (uint16_t)(sign | 0x7e00u | ((a >> 13) & 0x3ffu));
    if (a >= 0x477ff000u)                            /* rounds to >= 65520: inf */
        return (uint16_t)(sign | 0x7c00u);
    if (a < 0x38800000u) {                           /* below 2^-14: subnormal */
        /* adding 0.5 (2^-1) aligns the value to the f16 subnormal grid and
         * rounds to nearest even in float arithmetic */
        float v = gn_bits_f32(a) + 0.5f;
        return (uint16_t)(sign | (uint16_t)(gn_f32_bits(v) - 0x3f000000u));
    }
    uint32_t mant_odd = (a >> 13) & 1u;
    a += 0xc8000fffu + mant_odd;                     /* rebias exponent, round */
    return (uint16_t)(sign | (uint16_t)(a >> 13));
}

/* ---- primitive tables: one per (ISA, dtype) ---- */

#define GN_DECLARE_PRIMS(SFX, T, F, ...)                                              \
    typedef struct {                                                                  \
        /* one chunk (len <= GN_CHUNK): sum of d and d*d, d = x - shift */           \
        void (*sums)(const T *x, int64_t len, double shift, double *s, double *q);    \
        /* y = act(fma(x - mh, sc, sh)) over a contiguous run; pfd > 0: also        \
         * prefetch x[i + pfd] (the next group, read while this one is written) */   \
        void (*norm)(T *y, const T *x, int64_t len, F mh, F sc, F sh, int act,        \
                     int64_t pfd);                                                    \
        /* the same with streaming stores, for outputs too big to stay in cache */   \
        void (*norm_nt)(T *y, const T *x, int64_t len, F mh, F sc, F sh, int act,     \
                        int64_t pfd);                                                 \
        /* per column c: s[c] += x - shift[c], q[c] += (x - shift[c])^2; rows in      \
         * blocks of GN_RBLOCK summed in F, then added in double; tmp: 3*c doubles */ \
        void (*colsums)(const T *x, int64_t rows, int64_t c, const double *shift,     \
                        double *s, double *q, double *tmp);                           \
        void (*norm_rows)(T *y, const T *x, int64_t rows, int64_t c, const F *mh,     \
                          const F *sc, const F *sh, int act);                         \
        /* one chunk: a = sum g, b = sum g * (x - mh), g = dy act'(fma(x - mh, sc,    \
         * sh)) (GN_G1; g = dy without an activation); gs: NULL, or where each g     \
         * is stored (for dnorm to read as its dy, without the activation) */        \
        void (*dsums)(const T *dy, const T *x, int64_t len, F mh, F sc, F sh, int act, \
                      double *a, double *b, F *gs);                                   \
        /* dx = fma(g, k1, fma(x - mh, c2, c3)) (GN_DX1); pfd > 0: prefetch dy, x    \
         * [i + pfd] */                                                               \
        void (*dnorm)(T *dx, const T *dy, const T *x, int64_t len, F k1, F mh, F c2,  \
                      F c3, F sc, F sh, int act, int64_t pfd);                        \
        void (*dnorm_nt)(T *dx, const T *dy, const T *x, int64_t len, F k1, F mh,     \
                         F c2, F c3, F sc, F sh, int act, int64_t pfd);               \
        /* per column: dsums over rows; tmp: 2*c values of F */                       \
        void (*dcolsums)(const T *dy, const T *x, int64_t rows, int64_t c,            \
                         const F *mh, const F *sc, const F *sh, int act, double *a,   \
                         double *b, double *tmp);                                     \
        void (*dnorm_rows)(T *dx, const T *dy, const T *x, int64_t rows, int64_t c,   \
                           const F *k1, const F *mh, const F *c2, const F *c3,        \
                           const F *sc, const F *sh, int act);                        \
    } gn_prims_##SFX;

GN_FOR_EACH_DTYPE(GN_DECLARE_PRIMS)

/* an ISA's primitives: one table per dtype, named by its suffix */
#define GN_KERNELS_MEMBER(SFX, ...) gn_prims_##SFX SFX;
typedef struct {
    const char *name;
    GN_FOR_EACH_DTYPE(GN_KERNELS_MEMBER)
} gn_kernels;

/* the initializer of one dtype's table, from the static functions that a
 * prims template (prims_scalar.inc, prims_avx2.inc) defined for it */
#define GN_PRIMS_INIT(S, ...) {sums_##S, norm_##S, norm_nt_##S, colsums_##S, norm_rows_##S, \
                               dsums_##S, dnorm_##S, dnorm_nt_##S, dcolsums_##S, dnorm_rows_##S},

extern const gn_kernels gn_kernels_scalar;
#ifdef GN_HAVE_AVX2
extern const gn_kernels gn_kernels_avx2;
#endif

const gn_kernels *gn_active_kernels(void);
int gn_threads_for(int64_t work_elems, int64_t units);
gn_status gn_check_desc(const gn_desc *d);

#endif /* GN_INTERNAL_H */
