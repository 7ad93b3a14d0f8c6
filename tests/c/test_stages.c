/* The stages of gn_native.h against the single calls, from C alone.
 *
 * For every dtype, layout, statistics mode, affine kind and an activation:
 *  - gn_stats_partial of x equals the partials of its slices, concatenated
 *    (a batch split over processes at any point gives the same rows);
 *  - gn_stats_merge then gn_normalize_stats give gn_forward_var's y bit for
 *    bit, and its mean/rstd/var once rounded to the statistics type;
 *  - gn_backward_reduce on each slice, the sums concatenated, then
 *    gn_backward_apply on each slice and gn_param_grads give gn_backward_ex's
 *    dx, dgamma and dbeta bit for bit (the same at 1 and 2 threads);
 *  - bad arguments return GN_EINVAL and write nothing.
 * Prints "N checks, M failures"; exits non-zero on a failure. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gn_native.h"

static long n_checks, n_failures;

#define CHECK(cond, ...)                                                   \
    do {                                                                   \
        n_checks++;                                                        \
        if (!(cond)) {                                                     \
            n_failures++;                                                  \
            if (n_failures <= 20) {                                        \
                printf("FAIL %s:%d: ", __FILE__, __LINE__);                \
                printf(__VA_ARGS__);                                       \
                printf("\n");                                              \
            }                                                              \
        }                                                                  \
    } while (0)

typedef enum { F32, F64, F16 } dtype;
static const char *const DT_NAME[] = {"f32", "f64", "f16"};
static size_t dt_size(dtype t) { return t == F64 ? 8 : t == F32 ? 4 : 2; }
static size_t st_size(dtype t) { return t == F64 ? 8 : 4; }

static uint64_t rng = 0x2545f4914f6cdd1dull;
static double uniform(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (double)(rng >> 11) * 0x1p-53;
}

/* fill n values of dtype t with offset + spread * (uniform - 0.5) */
static void fill(dtype t, void *p, size_t n, double offset, double spread)
{
    for (size_t i = 0; i < n; i++) {
        double v = offset + spread * (uniform() - 0.5);
        if (t == F64)
            ((double *)p)[i] = v;
        else if (t == F32)
            ((float *)p)[i] = (float)v;
        else   /* a float16 near 1: sign 0, exponent 15, random mantissa */
            ((uint16_t *)p)[i] = (uint16_t)(0x3c00u | (uint16_t)(uniform() * 1023.0));
    }
}

/* ---- typed calls by dtype ---- */
#define DISPATCH(t, call32, call64, call16) \
    ((t) == F32 ? (call32) : (t) == F64 ? (call64) : (call16))

static gn_status partial(dtype t, double *p, const void *x, const gn_desc *d)
{
    return DISPATCH(t, gn_stats_partial_f32(p, x, d), gn_stats_partial_f64(p, x, d),
                    gn_stats_partial_f16(p, x, d));
}
static gn_status norm_stats(dtype t, void *y, const void *x, const double *m, const double *r,
                            const void *g, const void *b, const gn_desc *d)
{
    return DISPATCH(t, gn_normalize_stats_f32(y, x, m, r, g, b, d),
                    gn_normalize_stats_f64(y, x, m, r, g, b, d),
                    gn_normalize_stats_f16(y, x, m, r, g, b, d));
}
static gn_status fwd(dtype t, void *y, void *m, void *r, void *v, const void *x, const void *g,
                     const void *b, const gn_desc *d)
{
    return DISPATCH(t, gn_forward_var_f32(y, m, r, v, x, g, b, d),
                    gn_forward_var_f64(y, m, r, v, x, g, b, d),
                    gn_forward_var_f16(y, m, r, v, x, g, b, d));
}
static gn_status bwd(dtype t, void *dx, void *dg, void *db, const void *dy, const void *x,
                     const void *m, const void *r, const void *g, const void *b, const gn_desc *d)
{
    return DISPATCH(t, gn_backward_ex_f32(dx, dg, db, dy, x, m, r, g, b, d),
                    gn_backward_ex_f64(dx, dg, db, dy, x, m, r, g, b, d),
                    gn_backward_ex_f16(dx, dg, db, dy, x, m, r, g, b, d));
}
static gn_status reduce(dtype t, double *s, const void *dy, const void *x, const double *m,
                        const double *r, const void *g, const void *b, const gn_desc *d)
{
    return DISPATCH(t, gn_backward_reduce_f32(s, dy, x, m, r, g, b, d),
                    gn_backward_reduce_f64(s, dy, x, m, r, g, b, d),
                    gn_backward_reduce_f16(s, dy, x, m, r, g, b, d));
}
static gn_status apply(dtype t, void *dx, const void *dy, const void *x, const double *m,
                       const double *r, const double *s, int64_t sn, const void *g,
                       const void *b, const gn_desc *d)
{
    return DISPATCH(t, gn_backward_apply_f32(dx, dy, x, m, r, s, sn, g, b, d),
                    gn_backward_apply_f64(dx, dy, x, m, r, s, sn, g, b, d),
                    gn_backward_apply_f16(dx, dy, x, m, r, s, sn, g, b, d));
}
static gn_status pgrads(dtype t, void *dg, void *db, const double *s, const double *r,
                        int64_t sn, const gn_desc *d)
{
    return DISPATCH(t, gn_param_grads_f32(dg, db, s, r, sn, d),
                    gn_param_grads_f64(dg, db, s, r, sn, d),
                    gn_param_grads_f16(dg, db, s, r, sn, d));
}

/* a statistic of dtype t's statistics type as double */
static double stat_at(dtype t, const void *p, int64_t i)
{
    return t == F64 ? ((const double *)p)[i] : (double)((const float *)p)[i];
}

/* the double statistic rounded to the statistics type equals the stored one, bit for bit */
static int same_stat(dtype t, const void *p, int64_t i, double v)
{
    if (t == F64)
        return memcmp((const double *)p + i, &v, 8) == 0;
    float f = (float)v;
    return memcmp((const float *)p + i, &f, 4) == 0;
}

static void *xcalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p) {
        printf("out of memory\n");
        exit(2);
    }
    return p;
}

static void test_case(dtype t, gn_layout layout, gn_stats stats, gn_affine affine,
                      gn_activation act, int64_t N, int64_t C, int64_t S, int64_t G,
                      double offset)
{
    gn_desc d = {N, C, S, G, 1e-5, layout, stats, affine, act};
    char name[160];
    snprintf(name, sizeof name, "%s %s %s affine=%d act=%d N=%lld C=%lld S=%lld G=%lld",
             DT_NAME[t], layout == GN_NHWC ? "nhwc" : "nchw",
             stats == GN_STATS_BATCH ? "batch" : "sample", (int)affine, (int)act, (long long)N,
             (long long)C, (long long)S, (long long)G);
    size_t es = dt_size(t), total = (size_t)(N * C * S), sample = (size_t)(C * S);
    int64_t nstat = stats == GN_STATS_BATCH ? G : N * G, np = affine == GN_AFFINE_GROUP ? G : C;
    char *x = xcalloc(total, es), *dy = xcalloc(total, es), *y1 = xcalloc(total, es);
    char *y2 = xcalloc(total, es), *dx1 = xcalloc(total, es), *dx2 = xcalloc(total, es);
    char *gam = xcalloc((size_t)np, es), *bet = xcalloc((size_t)np, es);
    char *dg1 = xcalloc((size_t)np, es), *db1 = xcalloc((size_t)np, es);
    char *dg2 = xcalloc((size_t)np, es), *db2 = xcalloc((size_t)np, es);
    char *m1 = xcalloc((size_t)nstat, st_size(t)), *r1 = xcalloc((size_t)nstat, st_size(t));
    char *v1 = xcalloc((size_t)nstat, st_size(t));
    double *part = xcalloc((size_t)(N * G * GN_PARTIAL_LEN), 8);
    double *part2 = xcalloc((size_t)(N * G * GN_PARTIAL_LEN), 8);
    double *md = xcalloc((size_t)nstat, 8), *rd = xcalloc((size_t)nstat, 8);
    double *vd = xcalloc((size_t)nstat, 8), *sums = xcalloc((size_t)(N * C * GN_DSUM_LEN), 8);
    fill(t, x, total, offset, 4.0);
    fill(t, dy, total, 0.0, 2.0);
    fill(t, gam, (size_t)np, 1.0, 1.0);
    fill(t, bet, (size_t)np, 0.0, 1.0);

    /* forward: the single call, then the stages */
    CHECK(fwd(t, y1, m1, r1, v1, x, gam, bet, &d) == GN_OK, "%s: forward", name);
    CHECK(partial(t, part, x, &d) == GN_OK, "%s: partial", name);
    int64_t cut = N / 3 + (N > 1);          /* a split of the batch: [0, cut) and [cut, N) */
    gn_desc a = d, b = d;
    a.n = cut;
    b.n = N - cut;
    CHECK(partial(t, part2, x, &a) == GN_OK &&
              partial(t, part2 + cut * G * GN_PARTIAL_LEN, x + (size_t)cut * sample * es, &b) ==
                  GN_OK,
          "%s: partial of slices", name);
    CHECK(!memcmp(part, part2, (size_t)(N * G * GN_PARTIAL_LEN) * 8),
          "%s: the slices' partials differ from the batch's", name);
    gn_status st = stats == GN_STATS_BATCH ? gn_stats_merge(md, rd, vd, part, N, G, d.eps)
                                           : gn_stats_merge(md, rd, vd, part, 1, N * G, d.eps);
    CHECK(st == GN_OK, "%s: merge", name);
    int bad = 0;
    for (int64_t i = 0; i < nstat; i++)
        bad += !same_stat(t, m1, i, md[i]) || !same_stat(t, r1, i, rd[i]) ||
               !same_stat(t, v1, i, vd[i]);
    CHECK(!bad, "%s: %d merged statistics differ from the forward's", name, bad);
    CHECK(norm_stats(t, y2, x, md, rd, gam, bet, &d) == GN_OK, "%s: normalize_stats", name);
    CHECK(!memcmp(y1, y2, total * es), "%s: y of the stages differs", name);

    /* backward: the single call, then reduce per slice, apply per slice, param grads */
    for (int nt = 1; nt <= 2; nt++) {
        gn_set_num_threads(nt);
        for (int64_t i = 0; i < nstat; i++) {     /* the forward's statistics, as double */
            md[i] = stat_at(t, m1, i);
            rd[i] = stat_at(t, r1, i);
        }
        CHECK(bwd(t, dx1, dg1, db1, dy, x, m1, r1, gam, bet, &d) == GN_OK, "%s: backward", name);
        const double *ma = md, *ra = rd, *mb = md, *rb = rd;
        if (stats == GN_STATS_SAMPLE) {           /* each slice's own statistics */
            mb = md + cut * G;
            rb = rd + cut * G;
        }
        size_t off = (size_t)cut * sample * es;
        double *sb = sums + cut * C * GN_DSUM_LEN;
        CHECK(reduce(t, sums, dy, x, ma, ra, gam, bet, &a) == GN_OK &&
                  reduce(t, sb, dy + off, x + off, mb, rb, gam, bet, &b) == GN_OK,
              "%s: reduce", name);
        if (stats == GN_STATS_BATCH) {    /* every slice applies with the whole batch's sums */
            st = apply(t, dx2, dy, x, md, rd, sums, N, gam, bet, &a);
            st = st ? st : apply(t, dx2 + off, dy + off, x + off, md, rd, sums, N, gam, bet, &b);
        } else {
            st = apply(t, dx2, dy, x, ma, ra, sums, a.n, gam, bet, &a);
            st = st ? st : apply(t, dx2 + off, dy + off, x + off, mb, rb, sb, b.n, gam, bet, &b);
        }
        CHECK(st == GN_OK, "%s: apply", name);
        CHECK(!memcmp(dx1, dx2, total * es), "%s, %d threads: dx of the stages differs", name, nt);
        CHECK(pgrads(t, dg2, db2, sums, rd, N, &d) == GN_OK, "%s: param grads", name);
        CHECK(affine == GN_AFFINE_NONE || (!memcmp(dg1, dg2, (size_t)np * es) &&
                                           !memcmp(db1, db2, (size_t)np * es)),
              "%s: dgamma/dbeta of the stages differ", name);
    }
    gn_set_num_threads(0);
    free(x), free(dy), free(y1), free(y2), free(dx1), free(dx2), free(gam), free(bet);
    free(dg1), free(db1), free(dg2), free(db2), free(m1), free(r1), free(v1);
    free(part), free(part2), free(md), free(rd), free(vd), free(sums);
}

/* refused arguments: GN_EINVAL, and nothing written */
static void test_errors(void)
{
    gn_desc d = {2, 4, 3, 2, 1e-5, GN_NCHW, GN_STATS_BATCH, GN_AFFINE_CHANNEL, GN_ACT_NONE};
    float x[24], dy[24], dx[24];
    double part[4 * GN_PARTIAL_LEN], m[2] = {0, 0}, r[2] = {1, 1}, sums[8 * GN_DSUM_LEN];
    for (int i = 0; i < 24; i++)
        x[i] = dy[i] = (float)i;
    CHECK(gn_stats_partial_f32(part, x, &d) == GN_OK, "partial");
    CHECK(gn_stats_partial_f32(NULL, x, &d) == GN_EINVAL, "NULL partial");
    CHECK(gn_stats_partial_f32((double *)(void *)x, x, &d) == GN_EINVAL, "partial over x");
    double keep[4 * GN_PARTIAL_LEN];
    memcpy(keep, part, sizeof part);
    double mo[2] = {7, 7}, ro[2] = {7, 7};
    part[4] = 0.5;                                  /* an exponent that is not whole */
    CHECK(gn_stats_merge(mo, ro, NULL, part, 2, 2, 1e-5) == GN_EINVAL && mo[0] == 7 &&
              ro[1] == 7, "merge: fractional exponent");
    part[4] = 0;
    part[GN_PARTIAL_LEN] = -1;                      /* a negative count */
    CHECK(gn_stats_merge(mo, ro, NULL, part, 2, 2, 1e-5) == GN_EINVAL && mo[0] == 7,
          "merge: negative count");
    memcpy(part, keep, sizeof part);
    CHECK(gn_stats_merge(mo, ro, NULL, part, 2, 2, 0.0) == GN_EINVAL, "merge: eps 0");
    CHECK(gn_stats_merge(part, ro, NULL, part, 2, 2, 1e-5) == GN_EINVAL, "merge: mean over partial");
    CHECK(gn_stats_merge(mo, ro, NULL, part, -1, 2, 1e-5) == GN_EINVAL, "merge: m < 0");
    CHECK(gn_stats_merge(mo, ro, NULL, part, 0, 2, 1e-5) == GN_OK && isnan(mo[0]) && isnan(ro[1]),
          "merge of nothing: NaN");
    CHECK(gn_backward_reduce_f32(sums, dy, x, m, r, NULL, NULL, &d) == GN_OK, "reduce");
    for (int i = 0; i < 24; i++)
        dx[i] = -1.0f;
    CHECK(gn_backward_apply_f32(dx, dy, x, m, r, sums, 1, NULL, NULL, &d) == GN_EINVAL &&
              dx[0] == -1.0f, "apply: batch sums of fewer samples than the slice");
    gn_desc ds = d;
    ds.stats = GN_STATS_SAMPLE;
    double ms[4] = {0, 0, 0, 0}, rs[4] = {1, 1, 1, 1};
    CHECK(gn_backward_apply_f32(dx, dy, x, ms, rs, sums, 3, NULL, NULL, &ds) == GN_EINVAL &&
              dx[5] == -1.0f, "apply: sample sums of another count");
    CHECK(gn_backward_apply_f32(dx, dy, x, m, r, NULL, 2, NULL, NULL, &d) == GN_EINVAL,
          "apply: NULL sums");
    CHECK(gn_backward_apply_f32(x + 1, dy, x, m, r, sums, 2, NULL, NULL, &d) == GN_EINVAL &&
              x[1] == 1.0f, "apply: dx overlapping x partly");
    double mb[2] = {0, 0}, rb[2] = {1, 1};
    CHECK(gn_normalize_stats_f32(x + 1, x, mb, rb, NULL, NULL, &d) == GN_EINVAL && x[1] == 1.0f,
          "normalize_stats: y overlapping x partly");
    float dg[4] = {9, 9, 9, 9};
    CHECK(gn_param_grads_f32(dg, dg + 1, sums, r, 2, &d) == GN_EINVAL && dg[0] == 9,
          "param grads: dgamma overlapping dbeta");
    CHECK(gn_param_grads_f32(dg, NULL, sums, r, -1, &d) == GN_EINVAL, "param grads: n < 0");
    gn_desc bad = d;
    bad.groups = 3;
    CHECK(gn_stats_partial_f32(part, x, &bad) == GN_EINVAL, "partial: groups not dividing c");
}

int main(void)
{
    static const dtype types[] = {F32, F64, F16};
    static const int64_t shapes[][4] = {{1, 4, 5, 2}, {3, 6, 7, 3}, {5, 8, 300, 4},
                                        {4, 32, 1100, 8}, {2, 6, 0, 3}};
    for (size_t ti = 0; ti < 3; ti++)
        for (int layout = 0; layout < 2; layout++)
            for (int stats = 0; stats < 2; stats++)
                for (size_t si = 0; si < sizeof shapes / sizeof *shapes; si++) {
                    const int64_t *s = shapes[si];
                    gn_affine aff = (gn_affine)((si + (size_t)stats) % 3);
                    gn_activation act = si % 2 ? GN_ACT_SILU : GN_ACT_NONE;
                    test_case(types[ti], (gn_layout)layout, (gn_stats)stats, aff, act, s[0],
                              s[1], s[2], s[3], types[ti] == F16 ? 0.0 : 1e4);
                }
    test_errors();
    printf("%ld checks, %ld failures\n", n_checks, n_failures);
    return n_failures != 0;
}
