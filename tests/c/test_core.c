/* C-level tests of the gn_native core, through the public header only.
 *
 * - every dtype (f32, f64, f16, bf16), layout (NCHW, NHWC), statistics mode
 *   (sample, batch) and affine kind (none, channel, group), on odd sizes that
 *   cross the core's chunk boundaries: forward (and gn_forward_var),
 *   normalize and backward against the plain double loops below;
 * - the scalar and AVX2 paths (gn_set_isa) and 1..3 threads give the same
 *   bits; in-place calls (y = x, dx = dy) give the bits of out-of-place ones;
 *   NULL dgamma/dbeta are allowed;
 * - invalid descriptors and NULL pointers give GN_EINVAL and write nothing;
 * - outputs of 16 MiB and more (streaming stores) at every alignment give the
 *   bits of the scalar path;
 * - gn_forward_add (full, (N, C) and (C,) adds): the bits of gn_forward_var
 *   run on x + add as computed here, on every path, in place and with the
 *   add, gamma or beta inside y or sum; its refused calls write nothing;
 * - NaN propagates to its own group only; empty inputs are fine;
 * - several pthreads calling at once (while others flip the ISA and thread
 *   count) get exactly the single-threaded bits.
 *
 * Built by tests/test_capi.py (against libgn_native) and tests/test_sanitizers.py
 * (from the sources, with ASan/UBSan; and under valgrind with --quick, which
 * leaves out the largest shapes).  Prints each failure; exit status 1 if
 * any, 0 otherwise.
 */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gn_native.h"

static long n_checks, n_failures;

#define CHECK(cond, ...)                                                   \
    do {                                                                   \
        n_checks++;                                                        \
        if (!(cond)) {                                                     \
            if (n_failures++ < 50) {                                       \
                fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);       \
                fprintf(stderr, __VA_ARGS__);                              \
                fputc('\n', stderr);                                       \
            }                                                              \
        }                                                                  \
    } while (0)

/* ---- dtypes: storage, exact decoding, rounding encoders ---- */

typedef enum { F32, F64, F16, BF16 } dtype;
static const char *const DT_NAME[] = {"f32", "f64", "f16", "bf16"};
static const char *const LAYOUT_NAME[] = {"nchw", "nhwc"};
static const char *const STATS_NAME[] = {"sample", "batch"};
static const char *const AFFINE_NAME[] = {"none", "channel", "group"};

static size_t dt_size(dtype t) { return t == F64 ? 8 : t == F32 ? 4 : 2; }
static size_t stat_size(dtype t) { return t == F64 ? 8 : 4; }

static double f16_decode(uint16_t h)
{
    int e = (h >> 10) & 0x1f, m = h & 0x3ff;
    double v = e == 0 ? ldexp(m, -24) : e == 31 ? (m ? NAN : INFINITY) : ldexp(1024 + m, e - 25);
    return (h & 0x8000) ? -v : v;
}

/* round to nearest even (rint in the default rounding mode) */
static uint16_t f16_encode(double v)
{
    uint16_t sign = signbit(v) ? 0x8000 : 0;
    double a = fabs(v);
    if (isnan(v))
        return 0x7e00;
    if (a < ldexp(1.0, -14))
        return (uint16_t)(sign | (uint16_t)rint(ldexp(a, 24)));   /* 1024 = smallest normal */
    int e;
    frexp(a, &e);
    e -= 1;                                   /* a in [2^e, 2^(e+1)) */
    double m = rint(ldexp(a, 10 - e));        /* in [1024, 2048] */
    if (m == 2048.0) {
        m = 1024.0;
        e++;
    }
    if (e > 15)
        return (uint16_t)(sign | 0x7c00);
    return (uint16_t)(sign | (uint16_t)((e + 15) << 10) | (uint16_t)(m - 1024.0));
}

static double bf16_decode(uint16_t h)
{
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static uint16_t bf16_encode(double v)
{
    float f = (float)v;
    uint32_t u;
    memcpy(&u, &f, 4);
    if (isnan(f))
        return 0x7fc0;
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

static double get(dtype t, const void *p, size_t i)
{
    switch (t) {
    case F32: return ((const float *)p)[i];
    case F64: return ((const double *)p)[i];
    case F16: return f16_decode(((const uint16_t *)p)[i]);
    default: return bf16_decode(((const uint16_t *)p)[i]);
    }
}

static void put(dtype t, void *p, size_t i, double v)
{
    switch (t) {
    case F32: ((float *)p)[i] = (float)v; break;
    case F64: ((double *)p)[i] = v; break;
    case F16: ((uint16_t *)p)[i] = f16_encode(v); break;
    default: ((uint16_t *)p)[i] = bf16_encode(v); break;
    }
}

static double get_stat(dtype t, const void *p, size_t i)
{
    return t == F64 ? ((const double *)p)[i] : ((const float *)p)[i];
}

static void put_stat(dtype t, void *p, size_t i, double v)
{
    if (t == F64)
        ((double *)p)[i] = v;
    else
        ((float *)p)[i] = (float)v;
}

/* spacing of the dtype's numbers at |v| */
static double ulp(dtype t, double v)
{
    int mant = t == F64 ? 52 : t == F32 ? 23 : t == F16 ? 10 : 7;
    int emin = t == F64 ? -1022 : t == F16 ? -14 : -126;
    int e;
    frexp(fabs(v), &e);
    e -= 1;
    if (v == 0.0 || e < emin)
        e = emin;
    return ldexp(1.0, e - mant);
}

/* ---- typed dispatch to the C API ---- */

static gn_status call_forward(dtype t, void *y, void *mean, void *rstd, const void *x,
                              const void *gamma, const void *beta, const gn_desc *d)
{
    switch (t) {
    case F32: return gn_forward_f32(y, mean, rstd, x, gamma, beta, d);
    case F64: return gn_forward_f64(y, mean, rstd, x, gamma, beta, d);
    case F16: return gn_forward_f16(y, mean, rstd, x, gamma, beta, d);
    default: return gn_forward_bf16(y, mean, rstd, x, gamma, beta, d);
    }
}

static gn_status call_forward_var(dtype t, void *y, void *mean, void *rstd, void *var,
                                  const void *x, const void *gamma, const void *beta,
                                  const gn_desc *d)
{
    switch (t) {
    case F32: return gn_forward_var_f32(y, mean, rstd, var, x, gamma, beta, d);
    case F64: return gn_forward_var_f64(y, mean, rstd, var, x, gamma, beta, d);
    case F16: return gn_forward_var_f16(y, mean, rstd, var, x, gamma, beta, d);
    default: return gn_forward_var_bf16(y, mean, rstd, var, x, gamma, beta, d);
    }
}

static gn_status call_normalize(dtype t, void *y, const void *x, const void *mean,
                                const void *rstd, const void *gamma, const void *beta,
                                const gn_desc *d)
{
    switch (t) {
    case F32: return gn_normalize_f32(y, x, mean, rstd, gamma, beta, d);
    case F64: return gn_normalize_f64(y, x, mean, rstd, gamma, beta, d);
    case F16: return gn_normalize_f16(y, x, mean, rstd, gamma, beta, d);
    default: return gn_normalize_bf16(y, x, mean, rstd, gamma, beta, d);
    }
}

static gn_status call_backward(dtype t, void *dx, void *dgamma, void *dbeta, const void *dy,
                               const void *x, const void *mean, const void *rstd,
                               const void *gamma, const gn_desc *d)
{
    switch (t) {
    case F32: return gn_backward_f32(dx, dgamma, dbeta, dy, x, mean, rstd, gamma, d);
    case F64: return gn_backward_f64(dx, dgamma, dbeta, dy, x, mean, rstd, gamma, d);
    case F16: return gn_backward_f16(dx, dgamma, dbeta, dy, x, mean, rstd, gamma, d);
    default: return gn_backward_bf16(dx, dgamma, dbeta, dy, x, mean, rstd, gamma, d);
    }
}

/* ---- helpers ---- */

static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p) {
        fprintf(stderr, "test_core: out of memory\n");
        exit(2);
    }
    return p;
}

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static double uniform(void)   /* [0, 1), splitmix64 */
{
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    return (double)(z >> 11) * 0x1.0p-53;
}

static double normal(void)
{
    double u = uniform(), v = uniform();
    return sqrt(-2.0 * log(1.0 - u)) * cos(6.283185307179586 * v);
}

/* flat index of (n, c, s) in a layout */
static size_t at(const gn_desc *d, int64_t n, int64_t c, int64_t s)
{
    return d->layout == GN_NCHW ? (size_t)((n * d->c + c) * d->spatial + s)
                                : (size_t)((n * d->spatial + s) * d->c + c);
}

static int64_t nstat_of(const gn_desc *d) { return d->stats == GN_STATS_BATCH ? d->groups : d->n * d->groups; }
static size_t total_of(const gn_desc *d) { return (size_t)(d->n * d->c * d->spatial); }

/* statistics index of (n, g) */
static int64_t sidx(const gn_desc *d, int64_t n, int64_t g)
{
    return d->stats == GN_STATS_BATCH ? g : n * d->groups + g;
}

/* gamma_c / beta_c as double (identity when p is NULL or affine is none) */
static double param(dtype t, const gn_desc *d, const void *p, int64_t c, double dflt)
{
    if (!p || d->affine == GN_AFFINE_NONE)
        return dflt;
    return get(t, p, (size_t)(d->affine == GN_AFFINE_GROUP ? c / (d->c / d->groups) : c));
}

static int64_t nparam(const gn_desc *d) { return d->affine == GN_AFFINE_GROUP ? d->groups : d->c; }

/* ---- reference, in double ---- */

static void ref_stats(double *mean, double *rstd, double *var, dtype t, const void *x,
                      const gn_desc *d)
{
    int64_t K = d->c / d->groups;
    for (int64_t i = 0; i < nstat_of(d); i++) {
        int64_t g = d->stats == GN_STATS_BATCH ? i : i % d->groups;
        int64_t n0 = d->stats == GN_STATS_BATCH ? 0 : i / d->groups;
        int64_t n1 = d->stats == GN_STATS_BATCH ? d->n : n0 + 1;
        double s = 0.0, q = 0.0, m = (double)(n1 - n0) * (double)K * (double)d->spatial;
        for (int64_t n = n0; n < n1; n++)
            for (int64_t c = g * K; c < (g + 1) * K; c++)
                for (int64_t p = 0; p < d->spatial; p++)
                    s += get(t, x, at(d, n, c, p));
        double mu = s / m;
        for (int64_t n = n0; n < n1; n++)
            for (int64_t c = g * K; c < (g + 1) * K; c++)
                for (int64_t p = 0; p < d->spatial; p++) {
                    double v = get(t, x, at(d, n, c, p)) - mu;
                    q += v * v;
                }
        mean[i] = mu;
        var[i] = q / m;
        rstd[i] = 1.0 / sqrt(q / m + d->eps);
    }
}

static void ref_normalize(double *y, dtype t, const void *x, const double *mean,
                          const double *rstd, const void *gamma, const void *beta,
                          const gn_desc *d)
{
    int64_t K = d->c / d->groups;
    for (int64_t n = 0; n < d->n; n++)
        for (int64_t c = 0; c < d->c; c++) {
            int64_t i = sidx(d, n, c / K);
            double ga = param(t, d, gamma, c, 1.0), be = param(t, d, beta, c, 0.0);
            for (int64_t p = 0; p < d->spatial; p++) {
                size_t k = at(d, n, c, p);
                y[k] = (get(t, x, k) - mean[i]) * rstd[i] * ga + be;
            }
        }
}

/* dx, dgamma, dbeta (per channel, or per group when affine is group) and the
 * sizes of the terms that make each value, which scale the rounding error */
static void ref_backward(double *dx, double *dxmag, double *dg, double *dgmag, double *db,
                         double *dbmag, dtype t, const void *dy, const void *x,
                         const double *mean, const double *rstd, const void *gamma,
                         const gn_desc *d)
{
    int64_t K = d->c / d->groups;
    for (int64_t c = 0; c < d->c; c++)
        dg[c] = dgmag[c] = db[c] = dbmag[c] = 0.0;
    for (int64_t i = 0; i < nstat_of(d); i++) {
        int64_t g = d->stats == GN_STATS_BATCH ? i : i % d->groups;
        int64_t n0 = d->stats == GN_STATS_BATCH ? 0 : i / d->groups;
        int64_t n1 = d->stats == GN_STATS_BATCH ? d->n : n0 + 1;
        double m = (double)(n1 - n0) * (double)K * (double)d->spatial;
        double a = 0.0, b = 0.0, am = 0.0, bm = 0.0, r = rstd[i];
        for (int64_t n = n0; n < n1; n++)
            for (int64_t c = g * K; c < (g + 1) * K; c++)
                for (int64_t p = 0; p < d->spatial; p++) {
                    size_t k = at(d, n, c, p);
                    double gy = get(t, dy, k) * param(t, d, gamma, c, 1.0);
                    double xh = (get(t, x, k) - mean[i]) * r;
                    a += gy;
                    b += gy * xh;
                    am += fabs(gy);
                    bm += fabs(gy * xh);
                }
        for (int64_t n = n0; n < n1; n++)
            for (int64_t c = g * K; c < (g + 1) * K; c++)
                for (int64_t p = 0; p < d->spatial; p++) {
                    size_t k = at(d, n, c, p);
                    double gy = get(t, dy, k) * param(t, d, gamma, c, 1.0);
                    double xh = (get(t, x, k) - mean[i]) * r;
                    dx[k] = r * (gy - a / m - xh * b / m);
                    dxmag[k] = fabs(r) * (fabs(gy) + am / m + fabs(xh) * bm / m);
                    double dyk = get(t, dy, k);
                    dg[c] += dyk * xh;
                    dgmag[c] += fabs(dyk * xh);
                    db[c] += dyk;
                    dbmag[c] += fabs(dyk);
                }
    }
    if (d->affine == GN_AFFINE_GROUP) {   /* per group: sum the group's channels */
        for (int64_t g = 0; g < d->groups; g++) {
            double s[4] = {0, 0, 0, 0};
            for (int64_t c = g * K; c < (g + 1) * K; c++) {
                s[0] += dg[c];
                s[1] += dgmag[c];
                s[2] += db[c];
                s[3] += dbmag[c];
            }
            dg[g] = s[0];
            dgmag[g] = s[1];
            db[g] = s[2];
            dbmag[g] = s[3];
        }
    }
}

/* |got - want| <= tolerance of the dtype; scale: size of the terms that make `want` */
static int close_enough(dtype t, double got, double want, double scale, int backward)
{
    double err = fabs(got - want), tol;
    switch (t) {
    case F64: tol = backward ? 1e-10 * (fabs(want) + scale) : 1e-12 * (fabs(want) + fmax(scale, 1.0)); break;
    case F32: tol = backward ? 1e-4 * fabs(want) + 1e-5 * scale : 1e-5 * (fabs(want) + fmax(scale, 1.0)); break;
    default:  /* rounding to the dtype, one more ulp, and float32 slack */
        tol = 2.5 * ulp(t, want) + (backward ? 1e-5 : 0x1.0p-21) * scale;
    }
    return err <= tol || (isnan(got) && isnan(want));
}

/* how many values of `got` (a normalized output) are off the reference computed
 * into ry from x and the given statistics; the scale is the largest |y| */
static int normalized_off(dtype t, const void *got, double *ry, const void *x, const double *mean,
                          const double *rstd, const void *gamma, const void *beta,
                          const gn_desc *d)
{
    size_t total = total_of(d);
    ref_normalize(ry, t, x, mean, rstd, gamma, beta, d);
    double scale = 0.0;
    for (size_t i = 0; i < total; i++)
        scale = fmax(scale, fabs(ry[i]));
    int bad = 0;
    for (size_t i = 0; i < total; i++)
        bad += !close_enough(t, get(t, got, i), ry[i], scale, 0);
    return bad;
}

/* ---- one case: forward, normalize and backward under every configuration ---- */

struct outputs {
    void *y, *mean, *rstd, *ny, *dx, *dg, *db;
};

static void alloc_outputs(struct outputs *o, dtype t, const gn_desc *d)
{
    size_t total = total_of(d), ns = (size_t)nstat_of(d);
    o->y = xmalloc(total * dt_size(t));
    o->ny = xmalloc(total * dt_size(t));
    o->dx = xmalloc(total * dt_size(t));
    o->mean = xmalloc(ns * stat_size(t));
    o->rstd = xmalloc(ns * stat_size(t));
    o->dg = xmalloc((size_t)d->c * dt_size(t));   /* c >= groups */
    o->db = xmalloc((size_t)d->c * dt_size(t));
}

static void free_outputs(struct outputs *o)
{
    free(o->y);
    free(o->ny);
    free(o->dx);
    free(o->mean);
    free(o->rstd);
    free(o->dg);
    free(o->db);
}

struct inputs {
    void *x, *dy, *gamma, *beta, *nmean, *nrstd;   /* nmean/nrstd: given statistics */
};

static int run_all(struct outputs *o, dtype t, const struct inputs *in, const gn_desc *d)
{
    gn_status s1 = call_forward(t, o->y, o->mean, o->rstd, in->x, in->gamma, in->beta, d);
    gn_status s2 = call_normalize(t, o->ny, in->x, in->nmean, in->nrstd, in->gamma, in->beta, d);
    gn_status s3 = call_backward(t, o->dx, o->dg, o->db, in->dy, in->x, o->mean, o->rstd,
                                 in->gamma, d);
    CHECK(s1 == GN_OK && s2 == GN_OK && s3 == GN_OK, "status %d %d %d", s1, s2, s3);
    return s1 == GN_OK && s2 == GN_OK && s3 == GN_OK;
}

static int same_bits(const struct outputs *a, const struct outputs *b, dtype t, const gn_desc *d)
{
    size_t total = total_of(d) * dt_size(t), ns = (size_t)nstat_of(d) * stat_size(t);
    size_t np = (size_t)nparam(d) * dt_size(t);
    return !memcmp(a->y, b->y, total) && !memcmp(a->ny, b->ny, total) &&
           !memcmp(a->dx, b->dx, total) && !memcmp(a->mean, b->mean, ns) &&
           !memcmp(a->rstd, b->rstd, ns) && !memcmp(a->dg, b->dg, np) &&
           !memcmp(a->db, b->db, np);
}

static int have_avx2;

static void test_case(dtype t, gn_layout layout, gn_stats stats, gn_affine affine, int64_t N,
                      int64_t C, int64_t S, int64_t G, double loc)
{
    gn_desc d = {N, C, S, G, 1e-5, layout, stats, affine};
    char name[160];
    snprintf(name, sizeof name, "%s %s %s affine=%s N=%lld C=%lld S=%lld G=%lld", DT_NAME[t],
             LAYOUT_NAME[layout], STATS_NAME[stats], AFFINE_NAME[affine], (long long)N,
             (long long)C, (long long)S, (long long)G);
    size_t total = total_of(&d), ns = (size_t)nstat_of(&d), np = (size_t)nparam(&d);
    size_t es = dt_size(t);
    struct inputs in = {xmalloc(total * es), xmalloc(total * es), NULL, NULL,
                        xmalloc(ns * stat_size(t)), xmalloc(ns * stat_size(t))};
    for (size_t i = 0; i < total; i++) {
        put(t, in.x, i, loc + 2.0 * normal());
        put(t, in.dy, i, normal());
    }
    if (affine != GN_AFFINE_NONE) {
        in.gamma = xmalloc(np * es);
        in.beta = xmalloc(np * es);
        for (size_t i = 0; i < np; i++) {
            put(t, in.gamma, i, 0.5 + uniform());
            put(t, in.beta, i, 0.5 * normal());
        }
    }
    for (size_t i = 0; i < ns; i++) {   /* statistics for normalize, e.g. running ones */
        put_stat(t, in.nmean, i, loc + 0.5 * normal());
        put_stat(t, in.nrstd, i, 0.25 + uniform());
    }

    /* baseline: scalar path, one thread */
    struct outputs base;
    alloc_outputs(&base, t, &d);
    gn_set_isa("scalar");
    gn_set_num_threads(1);
    if (!run_all(&base, t, &in, &d)) {
        fprintf(stderr, "  in %s\n", name);
        goto done;
    }

    /* forward against the reference */
    double *rm = xmalloc(ns * sizeof(double)), *rr = xmalloc(ns * sizeof(double));
    double *rv = xmalloc(ns * sizeof(double));
    double *ry = xmalloc(total * sizeof(double)), *mag = xmalloc(total * sizeof(double));
    double *rg = xmalloc(C * sizeof(double) * 6), *rgm = rg + C, *rb = rg + 2 * C, *rbm = rg + 3 * C;
    ref_stats(rm, rr, rv, t, in.x, &d);
    int bad = 0;
    for (size_t i = 0; i < ns; i++) {
        double m = get_stat(t, base.mean, i), r = get_stat(t, base.rstd, i);
        double rtol = t == F64 ? 1e-12 : 1e-6;
        bad += !(fabs(m - rm[i]) <= rtol * (fabs(rm[i]) + 1.0 / rr[i]));
        bad += !(fabs(r - rr[i]) <= rtol * rr[i]);
    }
    CHECK(!bad, "%s: %d mean/rstd values off", name, bad);

    /* gn_forward_var: the same bits, and the biased variance */
    {
        struct outputs v;
        alloc_outputs(&v, t, &d);
        void *var = xmalloc(ns * stat_size(t));
        CHECK(call_forward_var(t, v.y, v.mean, v.rstd, var, in.x, in.gamma, in.beta, &d) == GN_OK &&
                  !memcmp(v.y, base.y, total * es) &&
                  !memcmp(v.mean, base.mean, ns * stat_size(t)) &&
                  !memcmp(v.rstd, base.rstd, ns * stat_size(t)),
              "%s: gn_forward_var differs from gn_forward", name);
        bad = 0;
        for (size_t i = 0; i < ns; i++)
            bad += !(fabs(get_stat(t, var, i) - rv[i]) <= (t == F64 ? 1e-12 : 1e-6) * rv[i]);
        CHECK(!bad, "%s: %d variances off", name, bad);
        CHECK(call_forward_var(t, v.y, v.mean, v.rstd, NULL, in.x, in.gamma, in.beta, &d) == GN_OK &&
                  !memcmp(v.y, base.y, total * es),
              "%s: gn_forward_var with var = NULL differs", name);
        free(var);
        free_outputs(&v);
    }
    bad = normalized_off(t, base.y, ry, in.x, rm, rr, in.gamma, in.beta, &d);
    CHECK(!bad, "%s: forward, %d/%zu values off", name, bad, total);

    /* normalize with the given statistics */
    for (size_t i = 0; i < ns; i++) {
        rm[i] = get_stat(t, in.nmean, i);
        rr[i] = get_stat(t, in.nrstd, i);
    }
    bad = normalized_off(t, base.ny, ry, in.x, rm, rr, in.gamma, in.beta, &d);
    CHECK(!bad, "%s: normalize, %d/%zu values off", name, bad, total);

    /* backward, from the mean/rstd forward returned */
    for (size_t i = 0; i < ns; i++) {
        rm[i] = get_stat(t, base.mean, i);
        rr[i] = get_stat(t, base.rstd, i);
    }
    ref_backward(ry, mag, rg, rgm, rb, rbm, t, in.dy, in.x, rm, rr, in.gamma, &d);
    bad = 0;
    for (size_t i = 0; i < total; i++)
        bad += !close_enough(t, get(t, base.dx, i), ry[i], mag[i], 1);
    CHECK(!bad, "%s: dx, %d/%zu values off", name, bad, total);
    bad = 0;
    for (size_t i = 0; i < np; i++) {
        bad += !close_enough(t, get(t, base.dg, i), rg[i], rgm[i], 1);
        bad += !close_enough(t, get(t, base.db, i), rb[i], rbm[i], 1);
    }
    CHECK(!bad, "%s: dgamma/dbeta, %d values off", name, bad);
    free(rm);
    free(rr);
    free(rv);
    free(ry);
    free(mag);
    free(rg);

    /* every ISA and thread count gives the baseline's bits */
    struct outputs o;
    alloc_outputs(&o, t, &d);
    static const char *const isas[] = {"scalar", "avx2"};
    for (int k = 0; k < 2; k++) {
        if (k == 1 && !have_avx2)
            continue;
        for (int nt = 1; nt <= 3; nt++) {
            if (k == 0 && nt == 1)
                continue;
            gn_set_isa(isas[k]);
            gn_set_num_threads(nt);
            if (run_all(&o, t, &in, &d))
                CHECK(same_bits(&o, &base, t, &d), "%s: %s with %d threads differs from scalar",
                      name, isas[k], nt);
        }
    }

    /* in place: y = x, dx = dy (the default ISA, two threads) */
    gn_set_isa("auto");
    gn_set_num_threads(2);
    memcpy(o.y, in.x, total * es);
    CHECK(call_forward(t, o.y, o.mean, o.rstd, o.y, in.gamma, in.beta, &d) == GN_OK &&
              !memcmp(o.y, base.y, total * es),
          "%s: forward in place differs", name);
    memcpy(o.ny, in.x, total * es);
    CHECK(call_normalize(t, o.ny, o.ny, in.nmean, in.nrstd, in.gamma, in.beta, &d) == GN_OK &&
              !memcmp(o.ny, base.ny, total * es),
          "%s: normalize in place differs", name);
    memcpy(o.dx, in.dy, total * es);
    CHECK(call_backward(t, o.dx, NULL, NULL, o.dx, in.x, base.mean, base.rstd, in.gamma, &d) ==
                  GN_OK && !memcmp(o.dx, base.dx, total * es),
          "%s: backward in place (dgamma = dbeta = NULL) differs", name);
    /* only one of dgamma/dbeta wanted */
    memset(o.db, 0x5a, (size_t)C * es);
    CHECK(call_backward(t, o.dx, o.dg, NULL, in.dy, in.x, base.mean, base.rstd, in.gamma, &d) ==
                  GN_OK && !memcmp(o.dg, base.dg, np * es),
          "%s: backward with dbeta = NULL differs", name);
    CHECK(call_backward(t, o.dx, NULL, o.db, in.dy, in.x, base.mean, base.rstd, in.gamma, &d) ==
                  GN_OK && !memcmp(o.db, base.db, np * es),
          "%s: backward with dgamma = NULL differs", name);
    free_outputs(&o);

done:
    free_outputs(&base);
    free(in.x);
    free(in.dy);
    free(in.gamma);
    free(in.beta);
    free(in.nmean);
    free(in.nrstd);
    gn_set_isa("auto");
    gn_set_num_threads(0);
}

/* ---- invalid arguments ---- */

static void test_invalid(void)
{
    /* buffers big enough for any dtype, so a wrongly accepted call cannot overflow them */
    enum { TOT = 2 * 4 * 3 };
    float *x = xmalloc(8 * TOT), *y = xmalloc(8 * TOT), *dy = xmalloc(8 * TOT),
          *dx = xmalloc(8 * TOT), *m = xmalloc(8 * 8), *r = xmalloc(8 * 8), *ga = xmalloc(8 * 4),
          *be = xmalloc(8 * 4), *dg = xmalloc(8 * 4), *db = xmalloc(8 * 4);
    for (int i = 0; i < 2 * TOT; i++) {
        x[i] = (float)i;
        dy[i] = 1.0f;
    }
    for (int i = 0; i < 8; i++)
        ga[i] = be[i] = 1.0f;
    for (int i = 0; i < 16; i++)
        m[i] = r[i] = 1.0f;
    const gn_desc ok = {2, 4, 3, 2, 1e-5, GN_NCHW, GN_STATS_SAMPLE, GN_AFFINE_CHANNEL};
    CHECK(gn_forward_f32(y, m, r, x, ga, be, &ok) == GN_OK, "valid descriptor refused");

    gn_desc bad[32];
    const char *why[32];
    int nb = 0;
#define BAD(field, value)                        \
    do {                                         \
        bad[nb] = ok;                            \
        bad[nb].field = value;                   \
        why[nb++] = #field " = " #value;         \
    } while (0)
    BAD(n, -1);
    BAD(c, -4);
    BAD(spatial, -3);
    BAD(groups, 0);
    BAD(groups, -2);
    BAD(groups, 3);                      /* does not divide c = 4 */
    BAD(groups, 8);                      /* more groups than channels */
    BAD(eps, 0.0);
    BAD(eps, -1e-5);
    BAD(eps, NAN);
    BAD(eps, INFINITY);
    BAD(layout, (gn_layout)2);
    BAD(layout, (gn_layout)-1);
    BAD(stats, (gn_stats)2);
    BAD(affine, (gn_affine)3);
    BAD(n, INT64_MAX / 2);               /* n * c * spatial overflows int64 */
    BAD(spatial, INT64_MAX / 4);
    BAD(n, INT64_MIN);
#undef BAD
    for (int i = 0; i < nb; i++) {
        memset(y, 0x7f, 8 * TOT);
        memset(m, 0x7f, 8 * 8);
        memset(dx, 0x7f, 8 * TOT);
        memset(dg, 0x7f, 8 * 4);
        float y0 = y[0], m0 = m[0], dx0 = dx[0], dg0 = dg[0];
        gn_status s1 = gn_forward_f32(y, m, r, x, ga, be, &bad[i]);
        gn_status s2 = gn_normalize_f32(y, x, m, r, ga, be, &bad[i]);
        gn_status s3 = gn_backward_f32(dx, dg, db, dy, x, m, r, ga, &bad[i]);
        gn_status s4 = gn_forward_f64((double *)y, (double *)m, (double *)r, (const double *)x,
                                      NULL, NULL, &bad[i]);
        gn_status s5 = gn_forward_f16((uint16_t *)y, m, r, (const uint16_t *)x, NULL, NULL, &bad[i]);
        gn_status s6 = gn_backward_bf16((uint16_t *)dx, NULL, NULL, (const uint16_t *)dy,
                                        (const uint16_t *)x, m, r, NULL, &bad[i]);
        gn_status s7 = gn_forward_var_f32(y, m, r, dg, x, ga, be, &bad[i]);
        CHECK(s1 == GN_EINVAL && s2 == GN_EINVAL && s3 == GN_EINVAL && s4 == GN_EINVAL &&
                  s5 == GN_EINVAL && s6 == GN_EINVAL && s7 == GN_EINVAL,
              "%s: statuses %d %d %d %d %d %d %d, want GN_EINVAL", why[i], s1, s2, s3, s4, s5,
              s6, s7);
        CHECK(y[0] == y0 && m[0] == m0 && dx[0] == dx0 && dg[0] == dg0,
              "%s: an output was written by a refused call", why[i]);
    }

    /* sizes whose partial products overflow even when the total is 0 */
    gn_desc huge = ok;
    huge.n = (int64_t)1 << 40;
    huge.c = (int64_t)1 << 40;
    huge.groups = 1;
    huge.spatial = 0;
    CHECK(gn_forward_f32(y, m, r, x, NULL, NULL, &huge) == GN_EINVAL,
          "n * c overflowing int64 (spatial = 0) is not GN_EINVAL");
    CHECK(gn_backward_f32(dx, dg, db, dy, x, m, r, NULL, &huge) == GN_EINVAL,
          "n * c overflowing int64 (spatial = 0) is not GN_EINVAL in backward");

    /* NULL descriptor, NULL required pointers */
    CHECK(gn_forward_f32(y, m, r, x, ga, be, NULL) == GN_EINVAL, "NULL descriptor (forward)");
    CHECK(gn_normalize_f32(y, x, m, r, ga, be, NULL) == GN_EINVAL, "NULL descriptor (normalize)");
    CHECK(gn_backward_f32(dx, dg, db, dy, x, m, r, ga, NULL) == GN_EINVAL,
          "NULL descriptor (backward)");
    CHECK(gn_forward_f32(NULL, m, r, x, ga, be, &ok) == GN_EINVAL, "forward y = NULL");
    CHECK(gn_forward_f32(y, NULL, r, x, ga, be, &ok) == GN_EINVAL, "forward mean = NULL");
    CHECK(gn_forward_f32(y, m, NULL, x, ga, be, &ok) == GN_EINVAL, "forward rstd = NULL");
    CHECK(gn_forward_f32(y, m, r, NULL, ga, be, &ok) == GN_EINVAL, "forward x = NULL");
    CHECK(gn_forward_var_f32(y, m, NULL, dg, x, ga, be, &ok) == GN_EINVAL,
          "forward_var rstd = NULL");
    CHECK(gn_normalize_f32(NULL, x, m, r, ga, be, &ok) == GN_EINVAL, "normalize y = NULL");
    CHECK(gn_normalize_f32(y, NULL, m, r, ga, be, &ok) == GN_EINVAL, "normalize x = NULL");
    CHECK(gn_normalize_f32(y, x, NULL, r, ga, be, &ok) == GN_EINVAL, "normalize mean = NULL");
    CHECK(gn_normalize_f32(y, x, m, NULL, ga, be, &ok) == GN_EINVAL, "normalize rstd = NULL");
    CHECK(gn_backward_f32(NULL, dg, db, dy, x, m, r, ga, &ok) == GN_EINVAL, "backward dx = NULL");
    CHECK(gn_backward_f32(dx, dg, db, NULL, x, m, r, ga, &ok) == GN_EINVAL, "backward dy = NULL");
    CHECK(gn_backward_f32(dx, dg, db, dy, NULL, m, r, ga, &ok) == GN_EINVAL, "backward x = NULL");
    CHECK(gn_backward_f32(dx, dg, db, dy, x, NULL, r, ga, &ok) == GN_EINVAL,
          "backward mean = NULL");
    CHECK(gn_backward_f32(dx, dg, db, dy, x, m, NULL, ga, &ok) == GN_EINVAL,
          "backward rstd = NULL");
    /* backward with an empty input still reads the statistics for dgamma: NULL ones are refused */
    gn_desc empty = ok;
    empty.spatial = 0;
    CHECK(gn_backward_f32(NULL, dg, db, NULL, NULL, NULL, NULL, NULL, &empty) == GN_EINVAL,
          "backward of an empty input with mean = rstd = NULL is not GN_EINVAL");

    /* the rest of the API never fails hard */
    CHECK(gn_set_isa("no-such-isa") == -1, "unknown ISA accepted");
    CHECK(gn_set_isa(NULL) == -1, "NULL ISA accepted");
    CHECK(gn_set_isa("scalar") == 0 && !strcmp(gn_isa(), "scalar"), "scalar ISA refused");
    CHECK(gn_set_isa("auto") == 0, "auto ISA refused");
    CHECK(gn_strerror(GN_OK) && gn_strerror(GN_EINVAL) && gn_strerror(GN_ENOMEM) &&
              gn_strerror(GN_EUNSUPPORTED) && gn_strerror((gn_status)1234),
          "gn_strerror returned NULL");
    CHECK(!strcmp(gn_version(), GN_VERSION_STRING), "gn_version %s != header %s", gn_version(),
          GN_VERSION_STRING);
    gn_set_num_threads(3);
    CHECK(gn_get_num_threads() == 3, "set_num_threads(3) not honoured");
    gn_set_num_threads(-5);
    CHECK(gn_get_num_threads() >= 1, "bad thread count after set_num_threads(-5)");
    gn_set_num_threads(0);
    free(x);
    free(y);
    free(dy);
    free(dx);
    free(m);
    free(r);
    free(ga);
    free(be);
    free(dg);
    free(db);
}

/* ---- edge cases ---- */

static void test_edges(void)
{
    /* empty inputs: N = 0, spatial = 0 */
    float m[4], r[4], dg[4], db[4], x[1] = {0}, y[1];
    gn_desc d = {0, 4, 5, 2, 1e-5, GN_NCHW, GN_STATS_SAMPLE, GN_AFFINE_CHANNEL};
    CHECK(gn_forward_f32(y, m, r, x, NULL, NULL, &d) == GN_OK, "N = 0 forward");
    CHECK(gn_forward_f32(NULL, NULL, NULL, NULL, NULL, NULL, &d) == GN_OK,
          "N = 0 forward with NULL pointers (nothing to read or write)");
    CHECK(gn_backward_f32(y, dg, db, x, x, m, r, NULL, &d) == GN_OK, "N = 0 backward");
    CHECK(dg[0] == 0.0f && db[3] == 0.0f, "N = 0: dgamma/dbeta not zero");
    d.n = 2;
    d.spatial = 0;
    d.layout = GN_NHWC;
    CHECK(gn_forward_f32(y, m, r, x, NULL, NULL, &d) == GN_OK, "spatial = 0 forward");
    CHECK(gn_normalize_f32(y, x, m, r, NULL, NULL, &d) == GN_OK, "spatial = 0 normalize");
    for (int i = 0; i < 4; i++)
        m[i] = r[i] = 1.0f;
    CHECK(gn_backward_f32(y, dg, db, x, x, m, r, NULL, &d) == GN_OK, "spatial = 0 backward");
    CHECK(dg[0] == 0.0f && db[3] == 0.0f, "spatial = 0: dgamma/dbeta not zero");

    /* a constant group: variance 0, rstd = 1/sqrt(eps), y = beta */
    float xc[8] = {3, 3, 3, 3, 1, 2, 3, 4}, yc[8], mc[2], rc[2], gam[4] = {2, 2, 2, 2},
          bet[4] = {0.5f, 0.5f, 0.5f, 0.5f};
    gn_desc dc = {1, 4, 2, 2, 1e-5, GN_NCHW, GN_STATS_SAMPLE, GN_AFFINE_CHANNEL};
    CHECK(gn_forward_f32(yc, mc, rc, xc, gam, bet, &dc) == GN_OK && yc[0] == 0.5f &&
              yc[3] == 0.5f && mc[0] == 3.0f && fabsf(rc[0] - 316.22775f) < 1e-3f,
          "constant group: y %g mean %g rstd %g", yc[0], mc[0], rc[0]);

    /* affine none: gamma/beta are unused (the header's contract), even if not NULL */
    float yn[8], yg[8];
    dc.affine = GN_AFFINE_NONE;
    gn_forward_f32(yn, mc, rc, xc, NULL, NULL, &dc);
    gn_forward_f32(yg, mc, rc, xc, gam, bet, &dc);
    CHECK(!memcmp(yn, yg, sizeof yn), "affine none: forward used the gamma/beta it was given");
    float dyc[8] = {1, -1, 2, 0.5f, 1, 2, 3, -4}, dxn[8], dxg[8];
    gn_backward_f32(dxn, NULL, NULL, dyc, xc, mc, rc, NULL, &dc);
    gn_backward_f32(dxg, NULL, NULL, dyc, xc, mc, rc, gam, &dc);
    CHECK(!memcmp(dxn, dxg, sizeof dxn), "affine none: backward used the gamma it was given");

    /* NaN / Inf stay in their group; nothing hangs */
    enum { S = 300 };
    static float xs[2 * 4 * S], ys[2 * 4 * S], dys[2 * 4 * S], dxs[2 * 4 * S];
    for (int i = 0; i < 2 * 4 * S; i++) {
        xs[i] = (float)(i % 7);
        dys[i] = 1.0f;
    }
    gn_desc dn = {2, 4, S, 2, 1e-5, GN_NCHW, GN_STATS_SAMPLE, GN_AFFINE_NONE};
    for (int layout = 0; layout < 2; layout++) {
        dn.layout = (gn_layout)layout;
        xs[at(&dn, 0, 1, 5)] = NAN;           /* group (0, 0) */
        xs[at(&dn, 1, 2, 7)] = INFINITY;      /* group (1, 1) */
        float ms[4], rs[4];
        CHECK(gn_forward_f32(ys, ms, rs, xs, NULL, NULL, &dn) == GN_OK, "NaN forward status");
        CHECK(gn_backward_f32(dxs, NULL, NULL, dys, xs, ms, rs, NULL, &dn) == GN_OK,
              "NaN backward status");
        int nan_in = 0, fin_out = 1;
        for (int c = 0; c < 4; c++)
            for (int s = 0; s < S; s++) {
                size_t k0 = at(&dn, 0, c, s), k1 = at(&dn, 1, c, s);
                if (c < 2)
                    nan_in += isnan(ys[k0]) && isnan(dxs[k0]);
                else
                    fin_out &= isfinite(ys[k0]) && isfinite(dxs[k0]);
                if (c < 2)
                    fin_out &= isfinite(ys[k1]) && isfinite(dxs[k1]);
            }
        CHECK(nan_in == 2 * S && fin_out,
              "%s: NaN must fill its own group only (%d NaN, other groups finite: %d)",
              LAYOUT_NAME[layout], nan_in, fin_out);
        CHECK(isnan(ms[0]) && !isnan(ms[1]) && !isnan(ms[2]) && !isnan(rs[2]),
              "%s: NaN statistics in the wrong group", LAYOUT_NAME[layout]);
        for (int i = 0; i < 2 * 4 * S; i++)
            xs[i] = (float)(i % 7);
    }
}

/* ---- outputs of 16 MiB and more: streaming stores, any alignment ---- */

/* Forward and backward (NCHW, where the core streams its stores) with y and dx at
 * every misalignment: the same bits as the scalar path writing aligned outputs. */
static void test_streaming_alignment(dtype t, gn_stats stats, int64_t S)
{
    gn_desc d = {2, 4, S, 2, 1e-5, GN_NCHW, stats, GN_AFFINE_CHANNEL};
    size_t total = total_of(&d), es = dt_size(t), ns = (size_t)nstat_of(&d);
    char *x = xmalloc(total * es), *dy = xmalloc(total * es);
    char *base_y = xmalloc(total * es), *base_dx = xmalloc(total * es);
    char *ybuf = xmalloc((total + 64) * es), *dxbuf = xmalloc((total + 64) * es);
    void *m = xmalloc(ns * 8), *r = xmalloc(ns * 8), *m2 = xmalloc(ns * 8), *r2 = xmalloc(ns * 8);
    double gamma[4], beta[4], dg[4], db[4], dg2[4], db2[4];   /* room for 4 of any dtype */
    for (size_t i = 0; i < total; i++) {
        put(t, x, i, 4.0 * uniform() - 1.0);
        put(t, dy, i, uniform() - 0.5);
    }
    for (int c = 0; c < 4; c++) {
        put(t, gamma, (size_t)c, 0.5 + 0.25 * c);
        put(t, beta, (size_t)c, 0.1 * c);
    }
    gn_set_isa("scalar");
    gn_set_num_threads(1);
    gn_status s1 = call_forward(t, base_y, m, r, x, gamma, beta, &d);
    gn_status s2 = call_backward(t, base_dx, dg, db, dy, x, m, r, gamma, &d);
    CHECK(s1 == GN_OK && s2 == GN_OK, "streaming %s: status %d %d", DT_NAME[t], s1, s2);
    /* aligned to 64 bytes, then shifted by `off` elements */
    uintptr_t ya = ((uintptr_t)ybuf + 63) & ~(uintptr_t)63, dxa = ((uintptr_t)dxbuf + 63) & ~(uintptr_t)63;
    static const int offs[] = {0, 1, 3, 7};
    gn_set_isa(have_avx2 ? "avx2" : "scalar");
    gn_set_num_threads(2);
    for (size_t o = 0; o < sizeof offs / sizeof *offs; o++) {
        char *y = (char *)ya + (size_t)offs[o] * es, *dx = (char *)dxa + (size_t)offs[o] * es;
        gn_status a = call_forward(t, y, m2, r2, x, gamma, beta, &d);
        gn_status b = call_backward(t, dx, dg2, db2, dy, x, m2, r2, gamma, &d);
        CHECK(a == GN_OK && b == GN_OK && !memcmp(y, base_y, total * es) &&
                  !memcmp(dx, base_dx, total * es) && !memcmp(m2, m, ns * stat_size(t)) &&
                  !memcmp(dg2, dg, 4 * es) && !memcmp(db2, db, 4 * es),
              "streaming %s %s, outputs %d elements off alignment, %s: not the scalar bits",
              DT_NAME[t], STATS_NAME[stats], offs[o], gn_isa());
    }
    gn_set_isa("auto");
    gn_set_num_threads(0);
    free(x);
    free(dy);
    free(base_y);
    free(base_dx);
    free(ybuf);
    free(dxbuf);
    free(m);
    free(r);
    free(m2);
    free(r2);
}

/* ---- threads: concurrent callers get the serial bits ---- */

enum { TN = 2, TC = 8, TS = 2500, TG = 4, TTOT = TN * TC * TS, T_WORKERS = 4, T_REPEATS = 6 };

struct shared {
    const float *x, *dy, *gamma, *beta;
    const float *y, *dx, *dg;               /* serial results */
    const uint16_t *hx, *hy;                /* bf16 input and its serial output */
    gn_layout layout;
};

struct worker_arg {
    const struct shared *sh;
    int id, errors;
};

static void *worker(void *p)
{
    struct worker_arg *w = p;
    const struct shared *sh = w->sh;
    gn_desc d = {TN, TC, TS, TG, 1e-5, sh->layout, GN_STATS_SAMPLE, GN_AFFINE_CHANNEL};
    gn_desc db = d;
    db.stats = GN_STATS_BATCH;
    float *y = xmalloc(sizeof(float) * TTOT), *dx = xmalloc(sizeof(float) * TTOT);
    uint16_t *hy = xmalloc(sizeof(uint16_t) * TTOT);
    float m[TN * TG], r[TN * TG], dg[TC], dbeta[TC];
    for (int k = 0; k < T_REPEATS; k++) {
        if (w->id == 0)                     /* one caller keeps changing the settings */
            gn_set_isa(k % 2 ? "scalar" : "auto");
        if (w->id == 1)
            gn_set_num_threads(1 + k % 3);
        if (gn_forward_f32(y, m, r, sh->x, sh->gamma, sh->beta, &d) != GN_OK ||
            gn_backward_f32(dx, dg, dbeta, sh->dy, sh->x, m, r, sh->gamma, &d) != GN_OK ||
            gn_forward_bf16(hy, m, r, sh->hx, NULL, NULL, &db) != GN_OK) {
            w->errors++;
            continue;
        }
        w->errors += memcmp(y, sh->y, sizeof(float) * TTOT) != 0;
        w->errors += memcmp(dx, sh->dx, sizeof(float) * TTOT) != 0;
        w->errors += memcmp(dg, sh->dg, sizeof dg) != 0;
        w->errors += memcmp(hy, sh->hy, sizeof(uint16_t) * TTOT) != 0;
    }
    free(y);
    free(dx);
    free(hy);
    return NULL;
}

static void test_threads(void)
{
    float *x = xmalloc(sizeof(float) * TTOT), *dy = xmalloc(sizeof(float) * TTOT);
    float *y = xmalloc(sizeof(float) * TTOT), *dx = xmalloc(sizeof(float) * TTOT);
    uint16_t *hx = xmalloc(sizeof(uint16_t) * TTOT), *hy = xmalloc(sizeof(uint16_t) * TTOT);
    float gamma[TC], beta[TC], m[TN * TG], r[TN * TG], dg[TC], dbeta[TC];
    for (int i = 0; i < TTOT; i++) {
        x[i] = (float)(5.0 + normal());
        dy[i] = (float)normal();
        hx[i] = bf16_encode(x[i]);
    }
    for (int c = 0; c < TC; c++) {
        gamma[c] = (float)(0.5 + uniform());
        beta[c] = (float)normal();
    }
    for (int layout = 0; layout < 2; layout++) {
        gn_desc d = {TN, TC, TS, TG, 1e-5, (gn_layout)layout, GN_STATS_SAMPLE, GN_AFFINE_CHANNEL};
        gn_desc db = d;
        db.stats = GN_STATS_BATCH;
        gn_set_isa("scalar");
        gn_set_num_threads(1);
        gn_forward_f32(y, m, r, x, gamma, beta, &d);
        gn_backward_f32(dx, dg, dbeta, dy, x, m, r, gamma, &d);
        gn_forward_bf16(hy, m, r, hx, NULL, NULL, &db);
        gn_set_isa("auto");
        gn_set_num_threads(0);
        struct shared sh = {x, dy, gamma, beta, y, dx, dg, hx, hy, (gn_layout)layout};
        pthread_t tid[T_WORKERS];
        struct worker_arg args[T_WORKERS];
        int started = 0;
        for (int t = 0; t < T_WORKERS; t++) {
            args[t] = (struct worker_arg){&sh, t, 0};
            if (pthread_create(&tid[t], NULL, worker, &args[t]) != 0)
                break;
            started++;
        }
        int errors = 0;
        for (int t = 0; t < started; t++) {
            pthread_join(tid[t], NULL);
            errors += args[t].errors;
        }
        CHECK(started == T_WORKERS, "only %d threads started", started);
        CHECK(errors == 0, "%s: %d concurrent calls differ from the serial result",
              LAYOUT_NAME[layout], errors);
    }
    gn_set_isa("auto");
    gn_set_num_threads(0);
    free(x);
    free(dy);
    free(y);
    free(dx);
    free(hx);
    free(hy);
}

/* ---- activations: forward, normalize, backward and frozen backward ---- */

static const char *const ACT_NAME[] = {"none", "silu", "gelu", "gelu_tanh", "relu"};

static gn_status call_backward_ex(dtype t, void *dx, void *dgamma, void *dbeta, const void *dy,
                                  const void *x, const void *mean, const void *rstd,
                                  const void *gamma, const void *beta, const gn_desc *d)
{
    switch (t) {
    case F32: return gn_backward_ex_f32(dx, dgamma, dbeta, dy, x, mean, rstd, gamma, beta, d);
    case F64: return gn_backward_ex_f64(dx, dgamma, dbeta, dy, x, mean, rstd, gamma, beta, d);
    case F16: return gn_backward_ex_f16(dx, dgamma, dbeta, dy, x, mean, rstd, gamma, beta, d);
    default: return gn_backward_ex_bf16(dx, dgamma, dbeta, dy, x, mean, rstd, gamma, beta, d);
    }
}

static gn_status call_frozen(dtype t, void *dx, void *dgamma, void *dbeta, const void *dy,
                             const void *x, const void *mean, const void *rstd,
                             const void *gamma, const void *beta, const gn_desc *d)
{
    switch (t) {
    case F32: return gn_backward_frozen_f32(dx, dgamma, dbeta, dy, x, mean, rstd, gamma, beta, d);
    case F64: return gn_backward_frozen_f64(dx, dgamma, dbeta, dy, x, mean, rstd, gamma, beta, d);
    case F16: return gn_backward_frozen_f16(dx, dgamma, dbeta, dy, x, mean, rstd, gamma, beta, d);
    default: return gn_backward_frozen_bf16(dx, dgamma, dbeta, dy, x, mean, rstd, gamma, beta, d);
    }
}

/* the activation and its derivative, in long double from the definitions */
static long double ref_act(int act, long double z, int grad)
{
    const long double k = 0.797884560802865355879892119868763737L;   /* sqrt(2 / pi) */
    switch (act) {
    case GN_ACT_SILU: {
        long double s = 1.0L / (1.0L + expl(-z));
        return grad ? s * (1.0L + z * (1.0L - s)) : z * s;
    }
    case GN_ACT_GELU: {
        long double P = 0.5L * erfcl(-z * 0.707106781186547524400844362104849039L);
        return grad ? P + z * expl(-0.5L * z * z) * 0.398942280401432677939946059934381868L
                    : z * P;
    }
    case GN_ACT_GELU_TANH: {
        long double th = tanhl(k * (z + 0.044715L * z * z * z));
        return grad ? 0.5L * (1.0L + th) +
                          0.5L * z * (1.0L - th * th) * k * (1.0L + 3.0L * 0.044715L * z * z)
                    : 0.5L * z * (1.0L + th);
    }
    case GN_ACT_RELU: return grad ? (z > 0 ? 1.0L : 0.0L) : (z < 0 ? 0.0L : z);
    default: return grad ? 1.0L : z;
    }
}

/* statistics in long double, from values scaled by a power of two (exact),
 * so that no square leaves the range (valgrind computes long double in
 * double) */
static void ref_stats_ld(double *mean, double *rstd, dtype t, const void *x, const gn_desc *d)
{
    int64_t K = d->c / d->groups;
    for (int64_t i = 0; i < nstat_of(d); i++) {
        int64_t g = d->stats == GN_STATS_BATCH ? i : i % d->groups;
        int64_t n0 = d->stats == GN_STATS_BATCH ? 0 : i / d->groups;
        int64_t n1 = d->stats == GN_STATS_BATCH ? d->n : n0 + 1;
        long double s = 0, q = 0, m = (long double)(n1 - n0) * K * d->spatial, amax = 0;
        for (int pass = 0; pass < 3; pass++) {
            int e;
            frexp((double)amax, &e);
            for (int64_t n = n0; n < n1; n++)
                for (int64_t c = g * K; c < (g + 1) * K; c++)
                    for (int64_t p = 0; p < d->spatial; p++) {
                        long double v = ldexpl(get(t, x, at(d, n, c, p)), -e);
                        if (pass == 0)
                            amax = fmaxl(amax, fabsl(v));
                        else if (pass == 1)
                            s += v;
                        else
                            q += (v - s / m) * (v - s / m);
                    }
            if (pass == 2) {
                mean[i] = (double)ldexpl(s / m, e);
                rstd[i] = (double)(1.0L / sqrtl(ldexpl(q / m, 2 * e) + d->eps));
            }
        }
    }
}

/* y = act(z) from the given statistics; the largest |z| into *zmax */
static void ref_act_forward(double *y, double *zmax, dtype t, const void *x, const double *mean,
                            const double *rstd, const void *gamma, const void *beta,
                            const gn_desc *d)
{
    int64_t K = d->c / d->groups;
    *zmax = 0.0;
    for (int64_t n = 0; n < d->n; n++)
        for (int64_t c = 0; c < d->c; c++) {
            int64_t i = sidx(d, n, c / K);
            long double ga = param(t, d, gamma, c, 1.0), be = param(t, d, beta, c, 0.0);
            for (int64_t p = 0; p < d->spatial; p++) {
                size_t k = at(d, n, c, p);
                long double z = ((long double)get(t, x, k) - mean[i]) * rstd[i] * ga + be;
                *zmax = fmax(*zmax, fabs((double)z));
                y[k] = (double)ref_act(d->activation, z, 0);
            }
        }
}

/* The chain rule: g = dy act'(z), then GroupNorm's backward with g for dy
 * (frozen: mean and rstd constants, dx = r gamma g); dx, dgamma, dbeta and
 * the sizes of their terms, as ref_backward. */
static void ref_act_backward(double *dx, double *dxmag, double *dg, double *dgmag, double *db,
                             double *dbmag, dtype t, const void *dy, const void *x,
                             const double *mean, const double *rstd, const void *gamma,
                             const void *beta, const gn_desc *d, int frozen)
{
    int64_t K = d->c / d->groups;
    for (int64_t c = 0; c < d->c; c++)
        dg[c] = dgmag[c] = db[c] = dbmag[c] = 0.0;
    for (int64_t i = 0; i < nstat_of(d); i++) {
        int64_t g = d->stats == GN_STATS_BATCH ? i : i % d->groups;
        int64_t n0 = d->stats == GN_STATS_BATCH ? 0 : i / d->groups;
        int64_t n1 = d->stats == GN_STATS_BATCH ? d->n : n0 + 1;
        long double m = (long double)(n1 - n0) * K * d->spatial, r = rstd[i];
        long double a = 0, b = 0, am = 0, bm = 0;
        for (int pass = 0; pass < 2; pass++)
            for (int64_t n = n0; n < n1; n++)
                for (int64_t c = g * K; c < (g + 1) * K; c++) {
                    long double ga = param(t, d, gamma, c, 1.0), be = param(t, d, beta, c, 0.0);
                    for (int64_t p = 0; p < d->spatial; p++) {
                        size_t k = at(d, n, c, p);
                        long double xh = ((long double)get(t, x, k) - mean[i]) * r;
                        long double dyk = get(t, dy, k);
                        long double gr = dyk * ref_act(d->activation, xh * ga + be, 1);
                        /* the sizes: of dy's terms (act' <= 1.13, and near its zeros
                         * the error of z counts, not act' itself) */
                        long double gy = gr * ga, gm = fabsl(dyk * ga);
                        if (pass == 0) {
                            a += gy;
                            b += gy * xh;
                            am += gm;
                            bm += gm * fabsl(xh);
                            continue;
                        }
                        if (frozen) {
                            dx[k] = (double)(r * gy);
                            dxmag[k] = (double)fabsl(r * gm);
                        } else {
                            dx[k] = (double)(r * (gy - a / m - xh * b / m));
                            dxmag[k] = (double)(fabsl(r) * (gm + am / m + fabsl(xh) * bm / m));
                        }
                        dg[c] += (double)(gr * xh);
                        dgmag[c] += (double)fabsl(dyk * xh);
                        db[c] += (double)gr;
                        dbmag[c] += (double)fabsl(dyk);
                    }
                }
    }
    if (d->affine == GN_AFFINE_GROUP)
        for (int64_t g = 0; g < d->groups; g++) {
            double s[4] = {0, 0, 0, 0};
            for (int64_t c = g * K; c < (g + 1) * K; c++) {
                s[0] += dg[c];
                s[1] += dgmag[c];
                s[2] += db[c];
                s[3] += dbmag[c];
            }
            dg[g] = s[0];
            dgmag[g] = s[1];
            db[g] = s[2];
            dbmag[g] = s[3];
        }
}

/* the outputs of one configuration: forward (y, mean, rstd), normalize with
 * given statistics (ny), backward_ex from the forward's statistics (dx, dg,
 * db) and the frozen backward from the given ones (fdx, fdg, fdb) */
struct act_outputs {
    struct outputs o;
    void *fdx, *fdg, *fdb;
};

static int act_run(struct act_outputs *r, dtype t, const struct inputs *in, const gn_desc *d)
{
    struct outputs *o = &r->o;
    gn_status s[4] = {
        call_forward(t, o->y, o->mean, o->rstd, in->x, in->gamma, in->beta, d),
        call_normalize(t, o->ny, in->x, in->nmean, in->nrstd, in->gamma, in->beta, d),
        call_backward_ex(t, o->dx, o->dg, o->db, in->dy, in->x, o->mean, o->rstd, in->gamma,
                         in->beta, d),
        call_frozen(t, r->fdx, r->fdg, r->fdb, in->dy, in->x, in->nmean, in->nrstd, in->gamma,
                    in->beta, d)};
    int ok = s[0] == GN_OK && s[1] == GN_OK && s[2] == GN_OK && s[3] == GN_OK;
    CHECK(ok, "status %d %d %d %d", s[0], s[1], s[2], s[3]);
    return ok;
}

static int act_same_bits(const struct act_outputs *a, const struct act_outputs *b, dtype t,
                         const gn_desc *d)
{
    size_t total = total_of(d) * dt_size(t), np = (size_t)nparam(d) * dt_size(t);
    return same_bits(&a->o, &b->o, t, d) && !memcmp(a->fdx, b->fdx, total) &&
           !memcmp(a->fdg, b->fdg, np) && !memcmp(a->fdb, b->fdb, np);
}

static void act_alloc(struct act_outputs *r, dtype t, const gn_desc *d)
{
    alloc_outputs(&r->o, t, d);
    r->fdx = xmalloc(total_of(d) * dt_size(t));
    r->fdg = xmalloc((size_t)d->c * dt_size(t));
    r->fdb = xmalloc((size_t)d->c * dt_size(t));
}

static void act_free(struct act_outputs *r)
{
    free_outputs(&r->o);
    free(r->fdx);
    free(r->fdg);
    free(r->fdb);
}

/* how many of n values are off their reference */
static int act_off(dtype t, const void *got, const double *want, const double *mag, size_t n,
                   double scale, int backward)
{
    int bad = 0;
    for (size_t i = 0; i < n; i++) {
        double v = get(t, got, i);
        /* an absolute floor: results that are subnormal in the dtype */
        bad += !close_enough(t, v, want[i], mag ? mag[i] : scale, backward) &&
               !(fabs(v - want[i]) <= 2.0 * ulp(t, 0.0));
    }
    return bad;
}

/* One case with an activation: the scalar path on one thread against the
 * long double reference, and every ISA with 1 and 2 threads against its
 * bits.  x = loc + spread * normal; the given statistics of normalize and
 * the frozen backward are near x's. */
static void test_act_case(dtype t, gn_layout layout, gn_stats stats, gn_affine affine,
                          gn_activation act, int64_t N, int64_t C, int64_t S, int64_t G,
                          double loc, double spread)
{
    gn_desc d = {N, C, S, G, 1e-5, layout, stats, affine, act};
    char name[200];
    snprintf(name, sizeof name, "act=%s %s %s %s affine=%s N=%lld C=%lld S=%lld G=%lld x~%g",
             ACT_NAME[act], DT_NAME[t], LAYOUT_NAME[layout], STATS_NAME[stats],
             AFFINE_NAME[affine], (long long)N, (long long)C, (long long)S, (long long)G, spread);
    size_t total = total_of(&d), ns = (size_t)nstat_of(&d), np = (size_t)nparam(&d);
    size_t es = dt_size(t);
    struct inputs in = {xmalloc(total * es), xmalloc(total * es), NULL, NULL,
                        xmalloc(ns * stat_size(t)), xmalloc(ns * stat_size(t))};
    for (size_t i = 0; i < total; i++) {
        put(t, in.x, i, loc + spread * normal());
        put(t, in.dy, i, normal());
    }
    if (affine != GN_AFFINE_NONE) {
        in.gamma = xmalloc(np * es);
        in.beta = xmalloc(np * es);
        for (size_t i = 0; i < np; i++) {
            put(t, in.gamma, i, (i % 3 ? 0.5 : -0.5) - uniform());
            put(t, in.beta, i, 0.5 * normal());
        }
    }
    for (size_t i = 0; i < ns; i++) {
        put_stat(t, in.nmean, i, loc + 0.3 * spread * normal());
        put_stat(t, in.nrstd, i, (0.5 + uniform()) / spread);
    }
    struct act_outputs base, o;
    act_alloc(&base, t, &d);
    act_alloc(&o, t, &d);
    double *rm = xmalloc(ns * sizeof(double)), *rr = xmalloc(ns * sizeof(double));
    double *ry = xmalloc(total * sizeof(double)), *mag = xmalloc(total * sizeof(double));
    double *rg = xmalloc((size_t)C * sizeof(double) * 4), *rgm = rg + C, *rb = rg + 2 * C,
           *rbm = rg + 3 * C;
    gn_set_isa("scalar");
    gn_set_num_threads(1);
    if (!act_run(&base, t, &in, &d)) {
        fprintf(stderr, "  in %s\n", name);
        goto done;
    }

    /* forward: the statistics, and y against act(z) of the reference z */
    double zmax;
    int bad = 0;
    ref_stats_ld(rm, rr, t, in.x, &d);
    for (size_t i = 0; i < ns; i++) {
        double m = get_stat(t, base.o.mean, i), r = get_stat(t, base.o.rstd, i);
        double rtol = t == F64 ? 1e-12 : 1e-6;
        bad += !(fabs(m - rm[i]) <= rtol * (fabs(rm[i]) + 1.0 / rr[i]));
        bad += !(fabs(r - rr[i]) <= rtol * rr[i]);
    }
    CHECK(!bad, "%s: %d mean/rstd values off", name, bad);
    ref_act_forward(ry, &zmax, t, in.x, rm, rr, in.gamma, in.beta, &d);
    bad = act_off(t, base.o.y, ry, NULL, total, zmax, 0);
    CHECK(!bad, "%s: forward, %d/%zu values off", name, bad, total);

    /* normalize with the given statistics */
    for (size_t i = 0; i < ns; i++) {
        rm[i] = get_stat(t, in.nmean, i);
        rr[i] = get_stat(t, in.nrstd, i);
    }
    ref_act_forward(ry, &zmax, t, in.x, rm, rr, in.gamma, in.beta, &d);
    bad = act_off(t, base.o.ny, ry, NULL, total, zmax, 0);
    CHECK(!bad, "%s: normalize, %d/%zu values off", name, bad, total);

    /* frozen backward, from the given statistics */
    ref_act_backward(ry, mag, rg, rgm, rb, rbm, t, in.dy, in.x, rm, rr, in.gamma, in.beta, &d, 1);
    bad = act_off(t, base.fdx, ry, mag, total, 0, 1);
    CHECK(!bad, "%s: frozen dx, %d/%zu values off", name, bad, total);
    bad = act_off(t, base.fdg, rg, rgm, np, 0, 1) + act_off(t, base.fdb, rb, rbm, np, 0, 1);
    CHECK(!bad, "%s: frozen dgamma/dbeta, %d values off", name, bad);
    if (act == GN_ACT_NONE) {   /* the normalize stage on dy with a zero mean, bit for bit */
        void *zero = calloc(ns, stat_size(t));
        CHECK(zero && call_normalize(t, o.o.ny, in.dy, zero, in.nrstd, in.gamma, NULL, &d) ==
                              GN_OK && !memcmp(o.o.ny, base.fdx, total * es),
              "%s: frozen dx differs from normalize(dy, mean 0)", name);
        free(zero);
    }

    /* backward, from the statistics forward returned */
    for (size_t i = 0; i < ns; i++) {
        rm[i] = get_stat(t, base.o.mean, i);
        rr[i] = get_stat(t, base.o.rstd, i);
    }
    ref_act_backward(ry, mag, rg, rgm, rb, rbm, t, in.dy, in.x, rm, rr, in.gamma, in.beta, &d, 0);
    bad = act_off(t, base.o.dx, ry, mag, total, 0, 1);
    CHECK(!bad, "%s: dx, %d/%zu values off", name, bad, total);
    bad = act_off(t, base.o.dg, rg, rgm, np, 0, 1) + act_off(t, base.o.db, rb, rbm, np, 0, 1);
    CHECK(!bad, "%s: dgamma/dbeta, %d values off", name, bad);

    /* every ISA with 1 and 2 threads: the baseline's bits */
    static const char *const isas[] = {"scalar", "avx2"};
    for (int k = 0; k < 2; k++)
        for (int nt = 1; nt <= 2; nt++) {
            if ((k == 1 && !have_avx2) || (k == 0 && nt == 1))
                continue;
            gn_set_isa(isas[k]);
            gn_set_num_threads(nt);
            if (act_run(&o, t, &in, &d))
                CHECK(act_same_bits(&o, &base, t, &d), "%s: %s with %d threads differs", name,
                      isas[k], nt);
        }
    /* in place (dx = dy), and beta = NULL means zeros */
    gn_set_isa("auto");
    gn_set_num_threads(2);
    memcpy(o.fdx, in.dy, total * es);
    CHECK(call_frozen(t, o.fdx, NULL, NULL, o.fdx, in.x, in.nmean, in.nrstd, in.gamma, in.beta,
                      &d) == GN_OK && !memcmp(o.fdx, base.fdx, total * es),
          "%s: frozen in place differs", name);
    if (affine == GN_AFFINE_NONE)
        CHECK(call_backward(t, o.o.dx, o.o.dg, o.o.db, in.dy, in.x, base.o.mean, base.o.rstd,
                            NULL, &d) == GN_OK && !memcmp(o.o.dx, base.o.dx, total * es),
              "%s: gn_backward differs from gn_backward_ex", name);
done:
    act_free(&base);
    act_free(&o);
    free(rm);
    free(rr);
    free(ry);
    free(mag);
    free(rg);
    free(in.x);
    free(in.dy);
    free(in.gamma);
    free(in.beta);
    free(in.nmean);
    free(in.nrstd);
    gn_set_isa("auto");
    gn_set_num_threads(0);
}

static void test_activations(int quick)
{
    /* small (every affine kind), then a size that 2 threads share (fused
     * paths for sample statistics, phased for batch ones), whose NCHW groups
     * cross the 4096-value chunk and NHWC samples the 256-row unit */
    static const int64_t shapes[][4] = {{2, 6, 37, 3}, {2, 8, 2100, 4}};
    int nshapes = quick ? 1 : 2;
    for (int s = 0; s < nshapes; s++)
        for (int act = 0; act < 5; act++)
            for (int t = 0; t < 4; t++)
                for (int layout = 0; layout < 2; layout++)
                    for (int stats = 0; stats < 2; stats++)
                        for (int affine = s ? 1 : 0; affine < (s ? 2 : 3); affine++)
                            test_act_case((dtype)t, (gn_layout)layout, (gn_stats)stats,
                                          (gn_affine)affine, (gn_activation)act, shapes[s][0],
                                          shapes[s][1], shapes[s][2], shapes[s][3],
                                          s % 2 ? 3.0 : -0.5, 2.0);
    /* extreme magnitudes: the double paths (squares beyond float, rstd below
     * the coefficients' rmin) for the dtypes that can hold such data (float64
     * cannot: its var, beyond double's range there, makes rstd 0) */
    for (int act = 0; act < 5; act++)
        for (int layout = 0; layout < 2; layout++)
            for (int stats = 0; stats < 2; stats++) {
                test_act_case(F32, (gn_layout)layout, (gn_stats)stats, GN_AFFINE_CHANNEL,
                              (gn_activation)act, 2, 4, 300, 2, 0.0, 1e37);
                test_act_case(BF16, (gn_layout)layout, (gn_stats)stats, GN_AFFINE_CHANNEL,
                              (gn_activation)act, 2, 4, 300, 2, 0.0, 1e37);
            }
}

/* ---- gn_forward_add: s = x + add, then gn_forward_var on s ---- */

static const char *const ADD_NAME[] = {"full", "nc", "c"};

static gn_status call_forward_add(dtype t, void *y, void *sum, void *mean, void *rstd,
                                  void *var, const void *x, const void *add, gn_add_shape k,
                                  const void *gamma, const void *beta, const gn_desc *d)
{
    switch (t) {
    case F32: return gn_forward_add_f32(y, sum, mean, rstd, var, x, add, k, gamma, beta, d);
    case F64: return gn_forward_add_f64(y, sum, mean, rstd, var, x, add, k, gamma, beta, d);
    case F16: return gn_forward_add_f16(y, sum, mean, rstd, var, x, add, k, gamma, beta, d);
    default: return gn_forward_add_bf16(y, sum, mean, rstd, var, x, add, k, gamma, beta, d);
    }
}

static size_t add_count(const gn_desc *d, gn_add_shape k)
{
    return k == GN_ADD_FULL ? total_of(d) : (size_t)(k == GN_ADD_NC ? d->n * d->c : d->c);
}

/* s = x + add as the header defines it: the sum in the compute type (float;
 * double for f64), rounded once to t by the test's own encoders (two values
 * of t add exactly in double, so the float cast is the one rounding there) */
static void ref_add(void *s, dtype t, const void *x, const void *add, gn_add_shape k,
                    const gn_desc *d)
{
    for (int64_t n = 0; n < d->n; n++)
        for (int64_t c = 0; c < d->c; c++)
            for (int64_t p = 0; p < d->spatial; p++) {
                size_t i = at(d, n, c, p);
                size_t j = k == GN_ADD_FULL ? i
                           : k == GN_ADD_NC ? (size_t)(n * d->c + c)
                                            : (size_t)c;
                double a = get(t, x, i), b = get(t, add, j);
                put(t, s, i, t == F64 ? a + b : (double)((float)a + (float)b));
            }
}

struct add_outputs {
    void *y, *sum, *mean, *rstd, *var;
};

static void add_alloc(struct add_outputs *o, dtype t, const gn_desc *d)
{
    size_t tb = total_of(d) * dt_size(t), sb = (size_t)nstat_of(d) * stat_size(t);
    *o = (struct add_outputs){xmalloc(tb), xmalloc(tb), xmalloc(sb), xmalloc(sb), xmalloc(sb)};
}

static void add_free(struct add_outputs *o)
{
    free(o->y);
    free(o->sum);
    free(o->mean);
    free(o->rstd);
    free(o->var);
}

/* y, mean, rstd, var and (when not NULL) sum hold the reference's bits */
static int add_same(dtype t, const gn_desc *d, const void *y, const void *sum, const void *mean,
                    const void *rstd, const void *var, const struct add_outputs *ref)
{
    size_t tb = total_of(d) * dt_size(t), sb = (size_t)nstat_of(d) * stat_size(t);
    return !memcmp(y, ref->y, tb) && (!sum || !memcmp(sum, ref->sum, tb)) &&
           !memcmp(mean, ref->mean, sb) && !memcmp(rstd, ref->rstd, sb) &&
           (!var || !memcmp(var, ref->var, sb));
}

/* One case: for each add shape, the outputs of gn_forward_add under every
 * ISA and thread count, in place, and with a broadcast add, gamma or beta
 * inside y's or sum's buffer, are the bits of gn_forward_var run on the
 * independently computed sum (itself the sum output's bits). */
static void test_add_case(dtype t, gn_layout layout, gn_stats stats, gn_affine affine,
                          gn_activation act, int64_t N, int64_t C, int64_t S, int64_t G,
                          double loc)
{
    gn_desc d = {N, C, S, G, 1e-5, layout, stats, affine, act};
    char name[200];
    snprintf(name, sizeof name, "add: %s %s %s affine=%s act=%s N=%lld C=%lld S=%lld G=%lld",
             DT_NAME[t], LAYOUT_NAME[layout], STATS_NAME[stats], AFFINE_NAME[affine],
             ACT_NAME[act], (long long)N, (long long)C, (long long)S, (long long)G);
    size_t total = total_of(&d), np = (size_t)nparam(&d), es = dt_size(t), tb = total * es;
    void *x = xmalloc(tb), *add = xmalloc(tb), *s = xmalloc(tb), *gamma = NULL, *beta = NULL;
    void *bx = xmalloc(tb), *ba = xmalloc(tb);   /* copies of x and add, for in place */
    for (size_t i = 0; i < total; i++)
        put(t, x, i, loc + 2.0 * normal());
    if (affine != GN_AFFINE_NONE) {
        gamma = xmalloc(np * es);
        beta = xmalloc(np * es);
        for (size_t i = 0; i < np; i++) {
            put(t, gamma, i, 0.5 + uniform());
            put(t, beta, i, 0.5 * normal());
        }
    }
    struct add_outputs ref, o;
    add_alloc(&ref, t, &d);
    add_alloc(&o, t, &d);

    /* add = sum = NULL: gn_forward_var on x */
    gn_set_isa("scalar");
    gn_set_num_threads(1);
    CHECK(call_forward_var(t, ref.y, ref.mean, ref.rstd, ref.var, x, gamma, beta, &d) == GN_OK &&
              call_forward_add(t, o.y, NULL, o.mean, o.rstd, o.var, x, NULL, GN_ADD_FULL, gamma,
                               beta, &d) == GN_OK &&
              add_same(t, &d, o.y, NULL, o.mean, o.rstd, o.var, &ref),
          "%s: add = sum = NULL differs from gn_forward_var", name);

    for (int ki = 0; ki < 3; ki++) {
        gn_add_shape k = (gn_add_shape)ki;
        size_t na = add_count(&d, k), ab = na * es;
        for (size_t i = 0; i < na; i++)
            put(t, add, i, (i % 5 ? 0.5 : 4.0) * normal());   /* some sums far from x */
        ref_add(s, t, x, add, k, &d);
        gn_set_isa("scalar");
        gn_set_num_threads(1);
        if (call_forward_var(t, ref.y, ref.mean, ref.rstd, ref.var, s, gamma, beta, &d) != GN_OK) {
            CHECK(0, "%s: gn_forward_var on the sum failed", name);
            continue;
        }
        memcpy(ref.sum, s, tb);

        /* one thread: the fused paths, the sum made per group or sample;
         * more threads than units: the whole sum made first */
        static const char *const isas[] = {"scalar", "scalar", "avx2", "avx2"};
        static const int threads[] = {1, 2, 1, 3};
        for (int r = 0; r < 4; r++) {
            if (r >= 2 && !have_avx2)
                continue;
            gn_set_isa(isas[r]);
            gn_set_num_threads(threads[r]);
            memset(o.sum, 0x7f, tb);
            CHECK(call_forward_add(t, o.y, o.sum, o.mean, o.rstd, o.var, x, add, k, gamma, beta,
                                   &d) == GN_OK &&
                      add_same(t, &d, o.y, o.sum, o.mean, o.rstd, o.var, &ref),
                  "%s add=%s, %s with %d threads: not the bits of gn_forward_var on x + add",
                  name, ADD_NAME[k], isas[r], threads[r]);
        }
        gn_set_isa("auto");
        gn_set_num_threads(2);
        CHECK(call_forward_add(t, o.y, NULL, o.mean, o.rstd, NULL, x, add, k, gamma, beta, &d) ==
                      GN_OK && add_same(t, &d, o.y, NULL, o.mean, o.rstd, NULL, &ref),
              "%s add=%s: sum = var = NULL differs", name, ADD_NAME[k]);

        /* in place: y and sum each on x, on a full add, or their own (sum: or NULL) */
        enum { OWN, ON_X, ON_ADD, NONE };
        static const int places[][2] = {{ON_X, OWN},  {ON_X, NONE},    {OWN, ON_X},
                                        {ON_ADD, OWN}, {ON_ADD, NONE}, {OWN, ON_ADD},
                                        {ON_X, ON_ADD}, {ON_ADD, ON_X}};
        static const char *const where[] = {"own", "x", "add", "NULL"};
        for (size_t p = 0; p < sizeof places / sizeof *places; p++) {
            if (k != GN_ADD_FULL && (places[p][0] == ON_ADD || places[p][1] == ON_ADD))
                continue;
            memcpy(bx, x, tb);
            memcpy(ba, add, ab);
            void *out[4] = {NULL, bx, ba, NULL};
            out[OWN] = o.y;
            void *yp = out[places[p][0]];
            out[OWN] = o.sum;
            void *sp = out[places[p][1]];
            CHECK(call_forward_add(t, yp, sp, o.mean, o.rstd, o.var, bx, ba, k, gamma, beta, &d) ==
                          GN_OK && add_same(t, &d, yp, sp, o.mean, o.rstd, o.var, &ref),
                  "%s add=%s: y on %s, sum on %s differs", name, ADD_NAME[k],
                  where[places[p][0]], where[places[p][1]]);
        }

        /* a broadcast add, gamma or beta inside y's or sum's buffer: read as
         * if apart (the core copies them before writing) */
        char *yb = o.y, *sb = o.sum;
        if (k != GN_ADD_FULL) {
            CHECK(call_forward_add(t, yb, sb, o.mean, o.rstd, o.var, x,
                                   memcpy(yb + tb - ab, add, ab), k, gamma, beta, &d) == GN_OK &&
                      add_same(t, &d, yb, sb, o.mean, o.rstd, o.var, &ref),
                  "%s add=%s: the add at the end of y's buffer differs", name, ADD_NAME[k]);
            CHECK(call_forward_add(t, yb, sb, o.mean, o.rstd, o.var, x, memcpy(sb, add, ab), k,
                                   gamma, beta, &d) == GN_OK &&
                      add_same(t, &d, yb, sb, o.mean, o.rstd, o.var, &ref),
                  "%s add=%s: the add at the start of sum's buffer differs", name, ADD_NAME[k]);
        }
        if (affine != GN_AFFINE_NONE) {
            size_t pb = np * es;
            CHECK(call_forward_add(t, yb, sb, o.mean, o.rstd, o.var, x, add, k,
                                   memcpy(yb, gamma, pb), memcpy(sb + tb - pb, beta, pb),
                                   &d) == GN_OK &&
                      add_same(t, &d, yb, sb, o.mean, o.rstd, o.var, &ref),
                  "%s add=%s: gamma in y's buffer, beta in sum's differs", name, ADD_NAME[k]);
            CHECK(call_forward_add(t, yb, sb, o.mean, o.rstd, o.var, x, add, k,
                                   memcpy(sb, gamma, pb), memcpy(yb + tb - pb, beta, pb),
                                   &d) == GN_OK &&
                      add_same(t, &d, yb, sb, o.mean, o.rstd, o.var, &ref),
                  "%s add=%s: gamma in sum's buffer, beta in y's differs", name, ADD_NAME[k]);
        }
    }
    gn_set_isa("auto");
    gn_set_num_threads(0);
    add_free(&ref);
    add_free(&o);
    free(x);
    free(add);
    free(s);
    free(bx);
    free(ba);
    free(gamma);
    free(beta);
}

/* Refused calls of gn_forward_add: GN_EINVAL, and no byte of y, sum, mean,
 * rstd or var written (they live in one arena filled with a sentinel).
 * Also: empty inputs are not refused, and give gn_forward_var's statistics. */
static void test_add_invalid(void)
{
    gn_desc d = {2, 4, 3, 2, 1e-5, GN_NCHW, GN_STATS_SAMPLE, GN_AFFINE_CHANNEL, GN_ACT_SILU};
    enum { TOT = 24, NS = 4 };
    for (int ti = 0; ti < 4; ti++) {
        dtype t = (dtype)ti;
        size_t es = dt_size(t), tb = TOT * es;
        /* arena: y (room for 2 tensors), sum (2 tensors), mean, rstd, var at 64-byte steps */
        size_t oy = 0, os = 2 * tb, om = 4 * tb, orr = om + 64, ov = orr + 64, size = ov + 64;
        unsigned char *arena = xmalloc(size), *snap = xmalloc(size);
        unsigned char *y = arena + oy, *sum = arena + os, *m = arena + om, *r = arena + orr,
                      *v = arena + ov;
        void *x = xmalloc(tb), *add = xmalloc(tb), *ga = xmalloc(4 * es), *be = xmalloc(4 * es);
        for (size_t i = 0; i < TOT; i++) {
            put(t, x, i, normal());
            put(t, add, i, normal());
        }
        for (size_t i = 0; i < 4; i++) {
            put(t, ga, i, 1.0 + uniform());
            put(t, be, i, normal());
        }
        memset(arena, 0x7f, size);
        memcpy(snap, arena, size);
        struct {
            void *y, *sum, *m, *r, *v;
            const void *add;
            gn_add_shape k;
            const char *why;
        } bad[] = {
            {y, sum, m, r, v, NULL, GN_ADD_FULL, "sum without add"},
            {y, sum, m, r, v, add, (gn_add_shape)3, "add_shape 3"},
            {y, sum, m, r, v, add, (gn_add_shape)-1, "add_shape -1"},
            {y, NULL, m, r, v, add, (gn_add_shape)3, "add_shape 3, sum NULL"},
            {y, y, m, r, v, add, GN_ADD_FULL, "sum == y"},
            {y, y, m, r, v, add, GN_ADD_NC, "sum == y (add nc)"},
            {y, y + es, m, r, v, add, GN_ADD_FULL, "sum one element past y"},
            {y, y + tb - es, m, r, v, add, GN_ADD_C, "sum over y's last element"},
            {y, sum, m, r, v, y + es, GN_ADD_FULL, "full add one element past y"},
            {y, sum, m, r, v, sum + es, GN_ADD_FULL, "full add one element past sum"},
            {y + es, sum, m, r, v, y, GN_ADD_FULL, "y one element past a full add"},
            {y, sum, sum + 8, r, v, add, GN_ADD_FULL, "mean inside sum"},
            {y, sum, m, sum, v, add, GN_ADD_NC, "rstd at sum's start"},
            {y, sum, m, r, sum + tb - 8, add, GN_ADD_FULL, "var over sum's end"},
            {y, sum, y + 8, r, v, add, GN_ADD_FULL, "mean inside y"},
        };
        for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
            gn_status st = call_forward_add(t, bad[i].y, bad[i].sum, bad[i].m, bad[i].r, bad[i].v,
                                            x, bad[i].add, bad[i].k, ga, be, &d);
            CHECK(st == GN_EINVAL && !memcmp(arena, snap, size),
                  "add %s: %s: status %d (want GN_EINVAL), outputs %s", DT_NAME[t], bad[i].why,
                  st, memcmp(arena, snap, size) ? "written" : "untouched");
            memcpy(arena, snap, size);
        }
        /* empty: nothing to add, the statistics of an empty group (NaN) */
        gn_desc e = d;
        e.spatial = 0;
        double m2[NS], r2[NS];   /* room for NS statistics of any dtype */
        CHECK(call_forward_add(t, y, sum, m, r, v, x, add, GN_ADD_NC, ga, be, &e) == GN_OK &&
                  call_forward_var(t, y, m2, r2, NULL, x, ga, be, &e) == GN_OK &&
                  !memcmp(m, m2, NS * stat_size(t)) && !memcmp(r, r2, NS * stat_size(t)),
              "add %s, spatial = 0: not gn_forward_var's statistics", DT_NAME[t]);
        free(arena);
        free(snap);
        free(x);
        free(add);
        free(ga);
        free(be);
    }
}

static void test_add(int quick)
{
    /* small (every affine kind and activation); NCHW groups across the
     * 4096-value chunk and NHWC samples across the 256-row unit, shared by 2
     * threads (the fused paths for sample statistics); one sample of one
     * group, which 2 threads share only by chunks (the sum made first) */
    static const int64_t shapes[][4] = {{2, 6, 7, 3}, {2, 4, 4501, 2}, {1, 4, 9000, 1}};
    int nshapes = quick ? 1 : 3;
    for (int s = 0; s < nshapes; s++)
        for (int t = 0; t < 4; t++)
            for (int layout = 0; layout < 2; layout++)
                for (int stats = 0; stats < 2; stats++)
                    for (int affine = s ? 1 : 0; affine < (s ? 2 : 3); affine++)
                        for (int act = 0; act < 5; act++) {
                            /* the large shapes: one activation per case, in turn */
                            if (s && act != (t + 2 * layout + stats + s) % 5)
                                continue;
                            test_add_case((dtype)t, (gn_layout)layout, (gn_stats)stats,
                                          (gn_affine)affine, (gn_activation)act, shapes[s][0],
                                          shapes[s][1], shapes[s][2], shapes[s][3],
                                          s % 2 ? 3.0 : -0.5);
                        }
    test_add_invalid();
}

int main(int argc, char **argv)
{
    int quick = argc > 1 && !strcmp(argv[1], "--quick");   /* smaller sizes only */
    setvbuf(stdout, NULL, _IOLBF, 0);
    have_avx2 = gn_set_isa("avx2") == 0;
    gn_set_isa("auto");
    printf("test_core: gn_native %s, default ISA %s, AVX2 %s, OpenMP %s, %d threads\n",
           gn_version(), gn_isa(), have_avx2 ? "compared with scalar" : "not available (skipped)",
           gn_openmp_enabled() ? "on" : "off", gn_get_num_threads());

    /* N, C, S, G: odd sizes; chunk (4096) and row-block (256) crossings; K = 1; C = G */
    static const int64_t shapes[][4] = {
        {1, 1, 1, 1},     {2, 6, 7, 3},   {3, 4, 1, 4},    {2, 5, 13, 1},  {1, 3, 300, 3},
        {3, 16, 259, 8},  {1, 4, 9000, 1}, {2, 4, 4501, 2},
    };
    int nshapes = (int)(sizeof shapes / sizeof *shapes) - (quick ? 2 : 0);
    for (int s = 0; s < nshapes; s++)
        for (int t = 0; t < 4; t++)
            for (int layout = 0; layout < 2; layout++)
                for (int stats = 0; stats < 2; stats++)
                    for (int affine = 0; affine < 3; affine++)
                        test_case((dtype)t, (gn_layout)layout, (gn_stats)stats,
                                  (gn_affine)affine, shapes[s][0], shapes[s][1], shapes[s][2],
                                  shapes[s][3], s % 2 ? 3.0 : -0.5);
    /* every length of a channel's row around the SIMD widths (16-value steps,
     * 64-value blocks): the vector tails give the scalar bits */
    for (int64_t S = 1; S <= 80; S += S < 36 ? 1 : 5)
        for (int t = 0; t < 4; t++)
            for (int stats = 0; stats < 2; stats++)
                test_case((dtype)t, GN_NCHW, (gn_stats)stats, GN_AFFINE_CHANNEL, 2, 2, S, 1,
                          S % 2 ? 3.0 : -0.5);
    /* a large mean against the spread: the shift must keep float32 accurate */
    for (int layout = 0; layout < 2; layout++)
        test_case(F32, (gn_layout)layout, GN_STATS_SAMPLE, GN_AFFINE_CHANNEL, 2, 4, 1000, 2, 1e4);
    if (!quick)   /* outputs of 16 MiB or more: the core switches to streaming stores */
        for (int t = 0; t < 4; t++)
            for (int stats = 0; stats < 2; stats++)
                if ((dtype)t != F64)   /* float64 never streams */
                    test_streaming_alignment((dtype)t, (gn_stats)stats,
                                             ((int64_t)16 << 20) / (8 * (int64_t)dt_size((dtype)t)) + 3);
    test_activations(quick);
    test_add(quick);
    test_invalid();
    test_edges();
    test_threads();

    printf("test_core: %ld checks, %ld failures\n", n_checks, n_failures);
    return n_failures ? 1 : 0;
}
