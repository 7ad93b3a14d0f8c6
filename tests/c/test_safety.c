/* The gn_native core under callers that the main tests do not look like,
 * through the public header only:
 *
 *   team     every entry point (forward, forward_var, forward_add,
 *            normalize, backward, backward_ex, backward_frozen), every dtype,
 *            layout, stats mode and affine kind, activations and add shapes
 *            in turn, called from inside the caller's own OpenMP team of 4
 *            (nesting off, then on): the same bits as a single-threaded call;
 *   fork     a child forked after a multithreaded call computes the same
 *            bits (gn_forward_add's: a single-threaded call's) and does not
 *            hang (SIGALRM after 60 s fails it);
 *   fuzz     random descriptors with huge and zero sizes, activations and
 *            add shapes in and out of range: a status, never a crash;
 *            whatever cannot be indexed or allocated is refused;
 *   alias    outputs overlapping gamma/beta/add (handled) or an input
 *            partly, or each other (GN_EINVAL, nothing written);
 *   extreme  magnitudes beyond float's squares (std 2e19, one 3e19 among
 *            zeros, std 1e38) and eps = 1e-80 on a constant group, against
 *            a double reference, forward and backward.
 *
 * Run under ASan/UBSan by tests/test_sanitizers.py and plainly by
 * tests/test_capi.py.  Prints "N checks, 0 failures" and exits 0 on success. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#include "gn_native.h"

static long n_checks, n_failures;

#define CHECK(cond, ...)                                                   \
    do {                                                                   \
        n_checks++;                                                        \
        if (!(cond)) {                                                     \
            n_failures++;                                                  \
            if (n_failures <= 30) {                                        \
                printf("FAIL %s:%d: ", __FILE__, __LINE__);                \
                printf(__VA_ARGS__);                                       \
                printf("\n");                                              \
            }                                                              \
        }                                                                  \
    } while (0)

typedef enum { F32, F64, F16, BF16 } dtype;
static const char *const DT_NAME[] = {"f32", "f64", "f16", "bf16"};
static size_t dt_size(dtype t) { return t == F64 ? 8 : t == F32 ? 4 : 2; }
static size_t stat_size(dtype t) { return t == F64 ? 8 : 4; }

static uint64_t rng = 0x243f6a8885a308d3ull;
static uint64_t next_u64(void)
{
    uint64_t z = (rng += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}
static double uniform(void) { return (double)(next_u64() >> 11) * 0x1p-53; }

/* a random value of dtype t, about N(0, 1)-sized, as its bits */
static void put_random(dtype t, void *p, size_t i)
{
    double v = (uniform() - 0.5) * 4.0 + 0.25;
    switch (t) {
    case F32: ((float *)p)[i] = (float)v; break;
    case F64: ((double *)p)[i] = v; break;
    case F16: {  /* sign, exponent 13..16 (2^-2 .. 2^1), random mantissa */
        uint16_t h = (uint16_t)(((next_u64() & 1) << 15) | ((13 + next_u64() % 4) << 10) |
                                (next_u64() & 0x3ff));
        ((uint16_t *)p)[i] = h;
        break;
    }
    case BF16: {
        uint16_t h = (uint16_t)(((next_u64() & 1) << 15) | ((125 + next_u64() % 4) << 7) |
                                (next_u64() & 0x7f));
        ((uint16_t *)p)[i] = h;
        break;
    }
    }
}

static gn_status call_forward_var(dtype t, void *y, void *m, void *r, void *v, const void *x,
                                  const void *g, const void *b, const gn_desc *d)
{
    switch (t) {
    case F32: return gn_forward_var_f32(y, m, r, v, x, g, b, d);
    case F64: return gn_forward_var_f64(y, m, r, v, x, g, b, d);
    case F16: return gn_forward_var_f16(y, m, r, v, x, g, b, d);
    default: return gn_forward_var_bf16(y, m, r, v, x, g, b, d);
    }
}

static gn_status call_normalize(dtype t, void *y, const void *x, const void *m, const void *r,
                                const void *g, const void *b, const gn_desc *d)
{
    switch (t) {
    case F32: return gn_normalize_f32(y, x, m, r, g, b, d);
    case F64: return gn_normalize_f64(y, x, m, r, g, b, d);
    case F16: return gn_normalize_f16(y, x, m, r, g, b, d);
    default: return gn_normalize_bf16(y, x, m, r, g, b, d);
    }
}

static gn_status call_backward(dtype t, void *dx, void *dg, void *db, const void *dy,
                               const void *x, const void *m, const void *r, const void *g,
                               const gn_desc *d)
{
    switch (t) {
    case F32: return gn_backward_f32(dx, dg, db, dy, x, m, r, g, d);
    case F64: return gn_backward_f64(dx, dg, db, dy, x, m, r, g, d);
    case F16: return gn_backward_f16(dx, dg, db, dy, x, m, r, g, d);
    default: return gn_backward_bf16(dx, dg, db, dy, x, m, r, g, d);
    }
}

static gn_status call_backward_ex(dtype t, void *dx, void *dg, void *db, const void *dy,
                                  const void *x, const void *m, const void *r, const void *g,
                                  const void *b, const gn_desc *d)
{
    switch (t) {
    case F32: return gn_backward_ex_f32(dx, dg, db, dy, x, m, r, g, b, d);
    case F64: return gn_backward_ex_f64(dx, dg, db, dy, x, m, r, g, b, d);
    case F16: return gn_backward_ex_f16(dx, dg, db, dy, x, m, r, g, b, d);
    default: return gn_backward_ex_bf16(dx, dg, db, dy, x, m, r, g, b, d);
    }
}

static gn_status call_frozen(dtype t, void *dx, void *dg, void *db, const void *dy,
                             const void *x, const void *m, const void *r, const void *g,
                             const void *b, const gn_desc *d)
{
    switch (t) {
    case F32: return gn_backward_frozen_f32(dx, dg, db, dy, x, m, r, g, b, d);
    case F64: return gn_backward_frozen_f64(dx, dg, db, dy, x, m, r, g, b, d);
    case F16: return gn_backward_frozen_f16(dx, dg, db, dy, x, m, r, g, b, d);
    default: return gn_backward_frozen_bf16(dx, dg, db, dy, x, m, r, g, b, d);
    }
}

static gn_status call_forward_add(dtype t, void *y, void *sum, void *m, void *r, void *v,
                                  const void *x, const void *add, gn_add_shape k, const void *g,
                                  const void *b, const gn_desc *d)
{
    switch (t) {
    case F32: return gn_forward_add_f32(y, sum, m, r, v, x, add, k, g, b, d);
    case F64: return gn_forward_add_f64(y, sum, m, r, v, x, add, k, g, b, d);
    case F16: return gn_forward_add_f16(y, sum, m, r, v, x, add, k, g, b, d);
    default: return gn_forward_add_bf16(y, sum, m, r, v, x, add, k, g, b, d);
    }
}

/* the stage entry points (gn_native.h, "The stages") on the fuzz's buffers: partial,
 * normalize_stats, backward reduce, apply (sums of d->n samples) and param grads */
static void call_stages(dtype t, gn_status st[5], double *const *buf, const gn_desc *d)
{
    double *part = buf[6], *md = buf[2], *rd = buf[3], *sums = buf[7];
    void *y = buf[0], *x = buf[1], *dy = buf[11], *dx = buf[8], *gm = buf[4], *bt = buf[5];
    void *dg = buf[9], *db = buf[10];
#define STAGE_CALLS(S)                                                                  \
    do {                                                                                \
        st[0] = gn_stats_partial_##S(part, x, d);                                       \
        st[1] = gn_normalize_stats_##S(y, x, md, rd, gm, bt, d);                        \
        st[2] = gn_backward_reduce_##S(sums, dy, x, md, rd, gm, bt, d);                 \
        st[3] = gn_backward_apply_##S(dx, dy, x, md, rd, sums, d->n, gm, bt, d);        \
        st[4] = gn_param_grads_##S(dg, db, sums, rd, d->n, d);                           \
    } while (0)
    switch (t) {
    case F32: STAGE_CALLS(f32); break;
    case F64: STAGE_CALLS(f64); break;
    case F16: STAGE_CALLS(f16); break;
    default: STAGE_CALLS(bf16); break;
    }
#undef STAGE_CALLS
}

static void *xcalloc(size_t n)
{
    void *p = calloc(n ? n : 1, 1);
    if (!p) {
        printf("out of memory in the test itself\n");
        exit(2);
    }
    return p;
}

/* ---- every entry point from inside the caller's team ---- */

/* the outputs of every entry point: tensors, statistics, per-channel values
 * (E: gn_backward_ex, F: frozen, A: gn_forward_add) */
enum { Y, NY, DX, EDX, FDX, AY, SUM, N_TENSOR,
       MEAN = N_TENSOR, RSTD, VAR, AMEAN, ARSTD, AVAR, N_STAT,
       DG = N_STAT, DB, EDG, EDB, FDG, FDB, N_IO };

struct io {
    void *p[N_IO];
};

static size_t io_bytes(int i, dtype t, size_t total, size_t nstat, size_t np)
{
    return i < N_TENSOR ? total * dt_size(t) : i < N_STAT ? nstat * stat_size(t) : np * dt_size(t);
}

static void io_alloc(struct io *o, dtype t, size_t total, size_t nstat, size_t np)
{
    for (int i = 0; i < N_IO; i++)
        o->p[i] = xcalloc(io_bytes(i, t, total, nstat, np));
}

static void io_free(struct io *o)
{
    for (int i = 0; i < N_IO; i++)
        free(o->p[i]);
}

/* forward (with var), normalize with the forward's statistics, the three
 * backwards from them, and the forward of x + add (add shape k) */
static int io_run(struct io *o, dtype t, const void *x, const void *dy, const void *add,
                  gn_add_shape k, const void *g, const void *b, const gn_desc *d)
{
    void **p = o->p;
    gn_status s1 = call_forward_var(t, p[Y], p[MEAN], p[RSTD], p[VAR], x, g, b, d);
    gn_status s2 = call_normalize(t, p[NY], x, p[MEAN], p[RSTD], g, b, d);
    gn_status s3 = call_backward(t, p[DX], p[DG], p[DB], dy, x, p[MEAN], p[RSTD], g, d);
    gn_status s4 = call_backward_ex(t, p[EDX], p[EDG], p[EDB], dy, x, p[MEAN], p[RSTD], g, b, d);
    gn_status s5 = call_frozen(t, p[FDX], p[FDG], p[FDB], dy, x, p[MEAN], p[RSTD], g, b, d);
    gn_status s6 = call_forward_add(t, p[AY], p[SUM], p[AMEAN], p[ARSTD], p[AVAR], x, add, k, g,
                                    b, d);
    return s1 == GN_OK && s2 == GN_OK && s3 == GN_OK && s4 == GN_OK && s5 == GN_OK &&
           s6 == GN_OK;
}

static int io_same(const struct io *a, const struct io *b, dtype t, size_t total, size_t nstat,
                   size_t np)
{
    for (int i = 0; i < N_IO; i++)
        if (memcmp(a->p[i], b->p[i], io_bytes(i, t, total, nstat, np)))
            return 0;
    return 1;
}

static void test_team(int nested)
{
    /* (n, c, spatial, groups): the small NHWC shapes, odd sizes, and
     * one large enough that a call uses the 2 threads it is given */
    static const int64_t shapes[][4] = {
        {2, 64, 16, 8}, {1, 16, 64, 8}, {3, 12, 7, 3}, {2, 32, 300, 4}, {4, 16, 512, 8}};
#ifdef _OPENMP
    omp_set_max_active_levels(nested ? 2 : 1);
#endif
    for (int t = F32; t <= BF16; t++)
        for (size_t si = 0; si < sizeof shapes / sizeof *shapes; si++)
            for (int layout = GN_NCHW; layout <= GN_NHWC; layout++)
                for (int stats = GN_STATS_SAMPLE; stats <= GN_STATS_BATCH; stats++)
                    for (int affine = GN_AFFINE_NONE; affine <= GN_AFFINE_GROUP; affine++) {
                        gn_desc d = {.n = shapes[si][0], .c = shapes[si][1],
                                     .spatial = shapes[si][2], .groups = shapes[si][3],
                                     .eps = 1e-5, .layout = layout, .stats = stats,
                                     .affine = affine,
                                     .activation = (gn_activation)((t + si + stats + affine) % 5)};
                        gn_add_shape k = (gn_add_shape)((si + layout + affine) % 3);
                        size_t total = (size_t)(d.n * d.c * d.spatial);
                        size_t nstat = (size_t)(stats == GN_STATS_BATCH ? d.groups : d.n * d.groups);
                        size_t np = (size_t)(affine == GN_AFFINE_GROUP ? d.groups : d.c);
                        void *x = xcalloc(total * dt_size(t)), *dy = xcalloc(total * dt_size(t));
                        void *g = xcalloc(np * dt_size(t)), *b = xcalloc(np * dt_size(t));
                        void *add = xcalloc(total * dt_size(t));   /* room for any shape */
                        for (size_t i = 0; i < total; i++) {
                            put_random(t, x, i);
                            put_random(t, dy, i);
                            put_random(t, add, i);
                        }
                        for (size_t i = 0; i < np; i++) {
                            put_random(t, g, i);
                            put_random(t, b, i);
                        }
                        struct io ref;
                        io_alloc(&ref, t, total, nstat, np);
                        gn_set_num_threads(1);
                        CHECK(io_run(&ref, t, x, dy, add, k, g, b, &d), "plain call failed");
                        gn_set_num_threads(2);   /* nesting on, the team's calls start threads */
                        long bad = 0, failed = 0;
#ifdef _OPENMP
#pragma omp parallel num_threads(4) reduction(+ : bad, failed)
#endif
                        {
                            struct io mine;
                            io_alloc(&mine, (dtype)t, total, nstat, np);
                            if (!io_run(&mine, (dtype)t, x, dy, add, k, g, b, &d))
                                failed++;
                            else if (!io_same(&mine, &ref, (dtype)t, total, nstat, np))
                                bad++;
                            io_free(&mine);
                        }
                        CHECK(!failed && !bad,
                              "team of 4 (nesting %s), %s n=%lld c=%lld s=%lld g=%lld %s %s "
                              "affine %d act %d add %d: %ld calls failed, %ld differ from a "
                              "single-threaded call",
                              nested ? "on" : "off", DT_NAME[t], (long long)d.n,
                              (long long)d.c, (long long)d.spatial, (long long)d.groups,
                              layout == GN_NHWC ? "nhwc" : "nchw",
                              stats == GN_STATS_BATCH ? "batch" : "sample", affine,
                              (int)d.activation, (int)k, failed, bad);
                        io_free(&ref);
                        free(x), free(dy), free(g), free(b), free(add);
                    }
#ifdef _OPENMP
    omp_set_max_active_levels(1);
#endif
    gn_set_num_threads(0);
}

/* ---- fork after a multithreaded call ---- */

static void test_fork(void)
{
    gn_desc d = {.n = 4, .c = 64, .spatial = 64 * 64, .groups = 32, .eps = 1e-5,
                 .layout = GN_NCHW, .stats = GN_STATS_SAMPLE, .affine = GN_AFFINE_NONE};
    size_t total = (size_t)(d.n * d.c * d.spatial), nstat = (size_t)(d.n * d.groups);
    float *x = xcalloc(total * 4), *y = xcalloc(total * 4), *y2 = xcalloc(total * 4);
    float *m = xcalloc(nstat * 4), *r = xcalloc(nstat * 4);
    for (size_t i = 0; i < total; i++)
        put_random(F32, x, i);
    /* gn_forward_add, NCHW sample statistics (the sum made per group) and NHWC
     * batch ones (the whole sum first), with an activation: its bits on one
     * thread, then run on two before the fork */
    gn_desc da[2] = {d, d};
    da[0].activation = GN_ACT_SILU;
    da[1].layout = GN_NHWC;
    da[1].stats = GN_STATS_BATCH;
    da[1].activation = GN_ACT_GELU;
    const gn_add_shape ak[2] = {GN_ADD_FULL, GN_ADD_NC};
    float *add = xcalloc(total * 4), *ay[2], *as[2], *am = xcalloc(nstat * 4),
          *ar = xcalloc(nstat * 4);
    for (size_t i = 0; i < total; i++)
        put_random(F32, add, i);
    gn_set_num_threads(1);
    for (int i = 0; i < 2; i++) {
        ay[i] = xcalloc(total * 4);
        as[i] = xcalloc(total * 4);
        CHECK(gn_forward_add_f32(ay[i], as[i], am, ar, NULL, x, add, ak[i], NULL, NULL, &da[i]) ==
                  GN_OK, "parent's single-threaded gn_forward_add failed");
    }
    gn_set_num_threads(2);
    for (int i = 0; i < 2; i++)
        CHECK(gn_forward_add_f32(y, y2, am, ar, NULL, x, add, ak[i], NULL, NULL, &da[i]) ==
                      GN_OK && !memcmp(y, ay[i], total * 4) && !memcmp(y2, as[i], total * 4),
              "parent's gn_forward_add on two threads differs from one thread (case %d)", i);
    CHECK(gn_forward_f32(y, m, r, x, NULL, NULL, &d) == GN_OK, "parent's call failed");
    /* NHWC too: both layouts' parallel regions have run before the fork */
    d.layout = GN_NHWC;
    CHECK(gn_forward_f32(y2, m, r, x, NULL, NULL, &d) == GN_OK, "parent's NHWC call failed");
    d.layout = GN_NCHW;
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        alarm(60);                      /* a hang fails instead of blocking the suite */
        int ok = gn_forward_f32(y2, m, r, x, NULL, NULL, &d) == GN_OK &&
                 !memcmp(y, y2, total * 4);
        float *dx = malloc(total * 4);  /* backward too, in both layouts */
        for (int layout = GN_NCHW; ok && dx && layout <= GN_NHWC; layout++) {
            d.layout = layout;
            ok = gn_backward_f32(dx, NULL, NULL, x, x, m, r, NULL, &d) == GN_OK;
        }
        for (int i = 0; ok && dx && i < 2; i++)   /* the add: the single-threaded bits */
            ok = gn_forward_add_f32(y2, dx, am, ar, NULL, x, add, ak[i], NULL, NULL, &da[i]) ==
                     GN_OK && !memcmp(y2, ay[i], total * 4) && !memcmp(dx, as[i], total * 4);
#ifdef _OPENMP
        ok = ok && gn_get_num_threads() == 1;
#endif
        free(dx);
        _exit(ok ? 0 : 3);
    }
    CHECK(pid > 0, "fork failed");
    if (pid > 0) {
        int status = 0;
        waitpid(pid, &status, 0);
        CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0,
              "forked child: %s %d (SIGALRM = %d: it hung)",
              WIFEXITED(status) ? "exit status" : "killed by signal",
              WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status), SIGALRM);
    }
    /* the parent keeps its threads */
    CHECK(gn_get_num_threads() == 2 || !gn_openmp_enabled(), "parent lost its thread setting");
    gn_set_num_threads(0);
    free(x), free(y), free(y2), free(m), free(r);
    free(add), free(am), free(ar);
    for (int i = 0; i < 2; i++)
        free(ay[i]), free(as[i]);
}

/* ---- descriptors with huge and zero sizes ---- */

#define BUF 4096

static int fits64(__int128 v) { return v >= 0 && v <= INT64_MAX; }

static void test_fuzz(int rounds)
{
    static const int64_t sizes[] = {0, 1, 2, 3, 7, 8, 64, 1 << 20, (int64_t)1 << 31,
                                    (int64_t)1 << 40, (int64_t)1 << 47, (int64_t)1 << 60,
                                    (int64_t)1 << 62, INT64_MAX, -1};
    const int ns = (int)(sizeof sizes / sizeof *sizes);
    /* activations and add shapes: the last 3 and 2 out of range */
    static const int acts[] = {0, 1, 2, 3, 4, 0, 4, 5, -1, 1 << 30};
    static const int kinds[] = {0, 1, 2, 0, 1, 2, 3, -1};
    enum { NBUF = 14 };
    double *buf[NBUF];
    for (int i = 0; i < NBUF; i++)
        buf[i] = xcalloc(BUF * sizeof(double));
    long tried = 0, refused_ok = 0, stages_tried = 0;
    for (int it = 0; it < rounds; it++) {
        gn_desc d = {.n = sizes[next_u64() % ns], .c = sizes[next_u64() % ns],
                     .spatial = sizes[next_u64() % ns], .groups = sizes[next_u64() % ns],
                     .eps = 1e-5, .layout = (gn_layout)(next_u64() % 2),
                     .stats = (gn_stats)(next_u64() % 2), .affine = (gn_affine)(next_u64() % 3)};
        if (next_u64() % 4 == 0 && d.groups > 0 && d.groups < ((int64_t)1 << 40))
            d.c = d.groups * (int64_t)(next_u64() % 5);  /* some valid calls too */
        if (d.c > 0 && d.groups > 0 && d.groups <= d.c && next_u64() % 2)
            d.c -= d.c % d.groups;
        dtype t = (dtype)(next_u64() % 4);
        int ai = (int)(next_u64() % 10), ki = (int)(next_u64() % 8);
        int act_ok = ai < 7, kind_ok = ki < 6;
        d.activation = (gn_activation)acts[ai];
        gn_add_shape k = (gn_add_shape)kinds[ki];
        __int128 n = d.n, c = d.c, s = d.spatial, g = d.groups;
        int indexable = d.n >= 0 && d.c >= 0 && d.spatial >= 0 && d.groups > 0 &&
                        fits64(n * c) && fits64(n * c * s) && fits64(c * s) && fits64(n * g);
        __int128 total = n * c * s, nstat = d.stats == GN_STATS_BATCH ? g : n * g;
        __int128 np = d.affine == GN_AFFINE_GROUP ? g : c;
        int valid = indexable && d.c % d.groups == 0;
        int small = indexable && total <= BUF && nstat <= BUF && np <= BUF && n * c <= BUF;
        /* no data, but statistics or per-channel work beyond any address space */
        int huge_ws = indexable && total == 0 && (nstat >= ((__int128)1 << 45) ||
                                                   n * c >= ((__int128)1 << 45));
        if (!small && indexable && !huge_ws)
            continue;                      /* valid and needing more memory than we have */
        tried++;
        void *y = buf[0], *x = buf[1], *m = buf[2], *r = buf[3], *gm = buf[4], *bt = buf[5];
        void *sum = next_u64() % 2 ? buf[12] : NULL;
        /* forward_var, normalize, backward, backward_ex, frozen, forward_add */
        gn_status st[6];
        st[0] = call_forward_var(t, y, m, r, buf[6], x, gm, bt, &d);
        st[1] = call_normalize(t, buf[7], x, m, r, gm, bt, &d);
        st[2] = call_backward(t, buf[8], buf[9], buf[10], x, buf[11], m, r, gm, &d);
        st[3] = call_backward_ex(t, buf[8], buf[9], buf[10], x, buf[11], m, r, gm, bt, &d);
        st[4] = call_frozen(t, buf[8], buf[9], buf[10], x, buf[11], m, r, gm, bt, &d);
        st[5] = call_forward_add(t, y, sum, m, r, buf[6], x, buf[13], k, gm, bt, &d);
        int known = 1, refused = 0;
        for (int i = 0; i < 6; i++) {
            known &= st[i] <= GN_EUNSUPPORTED;
            refused += st[i] == GN_EINVAL;
        }
        char what[200];
        snprintf(what, sizeof what,
                 "n=%lld c=%lld s=%lld g=%lld act %d add %d: got %d %d %d %d %d %d",
                 (long long)d.n, (long long)d.c, (long long)d.spatial, (long long)d.groups,
                 acts[ai], kinds[ki], st[0], st[1], st[2], st[3], st[4], st[5]);
        CHECK(known, "unknown status, %s", what);
        /* the stages: refused as the calls above, or run when their partials and sums
         * fit the buffers (a valid call with more is the caller's memory to give) */
        if (!indexable || !valid || !act_ok ||
            (small && n * g * GN_PARTIAL_LEN <= BUF && n * c * GN_DSUM_LEN <= BUF)) {
            gn_status ss[5];
            call_stages(t, ss, buf, &d);
            gn_status want = !indexable || !valid || !act_ok ? GN_EINVAL : GN_OK;
            int same = 0;
            for (int i = 0; i < 5; i++)
                same += ss[i] == want;
            CHECK(same == 5, "stages: %d of 5 not %d, %s", 5 - same, want, what);
            stages_tried++;
        }
        if (!indexable || !valid || !act_ok) {
            CHECK(refused == 6, "%s, %s", !act_ok ? "activation out of range" : !indexable ?
                                            "cannot be indexed" : "c %% groups != 0", what);
            refused_ok += !indexable || !act_ok;
        } else if (huge_ws) {
            /* forward writes nstat statistics, backward per-channel sums: beyond any
             * address space they are refused; normalize has nothing to do */
            __int128 lim = (__int128)1 << 45;
            int fwd_ok = nstat < lim || (st[0] != GN_OK && st[5] != GN_OK);
            int bwd_ok = (nstat < lim && n * c < lim) ||
                         (st[2] != GN_OK && st[3] != GN_OK && st[4] != GN_OK);
            CHECK(fwd_ok && bwd_ok && st[1] == GN_OK && (kind_ok || st[5] == GN_EINVAL),
                  "no data, huge statistics: %s", what);
            refused_ok++;
        } else {
            /* small and valid: the add's status is forward_var's, unless its shape is out
             * of range */
            CHECK(kind_ok ? st[5] == st[0] : st[5] == GN_EINVAL, "add: %s", what);
        }
    }
    CHECK(tried > rounds / 10, "fuzz tried only %ld descriptors", tried);
    CHECK(refused_ok > 0, "fuzz never met an unindexable or huge descriptor");
    CHECK(stages_tried > rounds / 20, "fuzz ran the stages only %ld times", stages_tried);
    for (int i = 0; i < NBUF; i++)
        free(buf[i]);
}

/* ---- aliasing ---- */

/* y of float32 NCHW data in double, per sample and group */
static void ref_forward(double *y, const float *x, const float *g, const float *b,
                        const gn_desc *d)
{
    int64_t K = d->c / d->groups, S = d->spatial;
    for (int64_t n = 0; n < d->n; n++)
        for (int64_t gi = 0; gi < d->groups; gi++) {
            const float *p = x + (n * d->c + gi * K) * S;
            double mean = 0.0, var = 0.0, m = (double)(K * S);
            for (int64_t i = 0; i < K * S; i++)
                mean += p[i];
            mean /= m;
            for (int64_t i = 0; i < K * S; i++)
                var += ((double)p[i] - mean) * ((double)p[i] - mean);
            var /= m;
            double rstd = 1.0 / sqrt(var + d->eps);
            for (int64_t k = 0; k < K; k++) {
                int64_t c = gi * K + k;
                for (int64_t i = 0; i < S; i++)
                    y[(n * d->c + c) * S + i] =
                        ((double)p[k * S + i] - mean) * rstd * (g ? g[c] : 1.0) + (b ? b[c] : 0.0);
            }
        }
}

static double max_err(const float *got, const double *want, size_t len)
{
    double e = 0.0;
    for (size_t i = 0; i < len; i++) {
        double v = fabs((double)got[i] - want[i]) / fmax(1.0, fabs(want[i]));
        e = v > e || v != v ? v : e;
    }
    return e;
}

static void test_alias(void)
{
    gn_desc d = {.n = 2, .c = 8, .spatial = 5, .groups = 4, .eps = 1e-5, .layout = GN_NCHW,
                 .stats = GN_STATS_SAMPLE, .affine = GN_AFFINE_CHANNEL};
    enum { TOTAL = 80, C = 8, NS = 8 };
    float x[TOTAL], g[C], b[C], m[NS], r[NS];
    double want[TOTAL];
    for (int i = 0; i < TOTAL; i++)
        x[i] = (float)(uniform() * 4.0 - 1.0);
    for (int i = 0; i < C; i++) {
        g[i] = (float)(0.5 + uniform());
        b[i] = (float)(uniform() - 0.5);
    }
    ref_forward(want, x, g, b, &d);
    for (int which = 0; which < 4; which++) {
        /* y's buffer starts with gamma (0), beta (1), both (2: gamma at 0, beta at
         * C), or gamma at its end (3): the core must read the parameters first */
        for (int call = 0; call < 2; call++) {       /* forward, then normalize */
            float y[TOTAL + 2 * C];
            float *gp = g, *bp = b;
            memset(y, 0, sizeof y);
            if (which == 0 || which == 2)
                gp = memcpy(y, g, sizeof g);
            if (which == 1)
                bp = memcpy(y, b, sizeof b);
            if (which == 2)
                bp = memcpy(y + C, b, sizeof b);
            if (which == 3)
                gp = memcpy(y + TOTAL - C, g, sizeof g);
            gn_status st = call ? gn_normalize_f32(y, x, m, r, gp, bp, &d)
                                : gn_forward_f32(y, m, r, x, gp, bp, &d);
            CHECK(st == GN_OK && max_err(y, want, TOTAL) < 1e-5,
                  "%s with y over gamma/beta (case %d): status %d, error %g",
                  call ? "normalize" : "forward", which, st, max_err(y, want, TOTAL));
        }
    }
    /* backward: dx over gamma gives what a separate gamma gives */
    float dy[TOTAL], dx_ref[TOTAL], dx[TOTAL], dg[C], db[C];
    for (int i = 0; i < TOTAL; i++)
        dy[i] = (float)(uniform() - 0.5);
    CHECK(gn_forward_f32(dx, m, r, x, g, b, &d) == GN_OK, "forward failed");
    CHECK(gn_backward_f32(dx_ref, dg, db, dy, x, m, r, g, &d) == GN_OK, "backward failed");
    memcpy(dx, g, sizeof g);
    CHECK(gn_backward_f32(dx, dg, db, dy, x, m, r, dx, &d) == GN_OK &&
              !memcmp(dx, dx_ref, sizeof dx),
          "backward with dx over gamma differs from a separate gamma");
    /* with an activation gn_backward_ex and the frozen backward read beta too:
     * beta (and gamma) over dx give what separate ones give */
    typedef gn_status (*backward_fn)(float *, float *, float *, const float *, const float *,
                                     const float *, const float *, const float *, const float *,
                                     const gn_desc *);
    static const backward_fn bws[2] = {gn_backward_ex_f32, gn_backward_frozen_f32};
    gn_desc da = d;
    da.activation = GN_ACT_SILU;
    for (int f = 0; f < 2; f++) {
        const char *fname = f ? "gn_backward_frozen" : "gn_backward_ex";
        CHECK(bws[f](dx_ref, dg, db, dy, x, m, r, g, b, &da) == GN_OK, "%s failed", fname);
        memcpy(dx, b, sizeof b);
        CHECK(bws[f](dx, dg, db, dy, x, m, r, g, dx, &da) == GN_OK &&
                  !memcmp(dx, dx_ref, sizeof dx),
              "%s with dx over beta differs from a separate beta", fname);
        memcpy(dx, g, sizeof g);
        memcpy(dx + TOTAL - C, b, sizeof b);
        CHECK(bws[f](dx, dg, db, dy, x, m, r, dx, dx + TOTAL - C, &da) == GN_OK &&
                  !memcmp(dx, dx_ref, sizeof dx),
              "%s with dx over gamma and beta differs from separate ones", fname);
    }
    /* gn_forward_add: an (N, C) add inside y, or gamma inside sum, reads as a
     * separate one */
    float add[TOTAL], ya[TOTAL], sa[TOTAL], yb[TOTAL], sb[TOTAL], ma[NS], ra[NS];
    for (int i = 0; i < TOTAL; i++)
        add[i] = (float)(uniform() - 0.5);
    CHECK(gn_forward_add_f32(ya, sa, ma, ra, NULL, x, add, GN_ADD_NC, g, b, &da) == GN_OK,
          "gn_forward_add failed");
    memcpy(yb + TOTAL - 16, add, 16 * sizeof(float));   /* n * c = 16 values */
    CHECK(gn_forward_add_f32(yb, sb, m, r, NULL, x, yb + TOTAL - 16, GN_ADD_NC, g, b, &da) ==
                  GN_OK && !memcmp(yb, ya, sizeof ya) && !memcmp(sb, sa, sizeof sa),
          "gn_forward_add with the (N, C) add inside y differs");
    memcpy(sb + 3, g, sizeof g);
    CHECK(gn_forward_add_f32(yb, sb, m, r, NULL, x, add, GN_ADD_NC, sb + 3, b, &da) == GN_OK &&
              !memcmp(yb, ya, sizeof ya) && !memcmp(sb, sa, sizeof sa),
          "gn_forward_add with gamma inside sum differs");
    /* refused, nothing written: y partly over x, mean over rstd, y over mean, dx
     * partly over dy, dgamma over dbeta, dgamma over dx */
    float big[TOTAL + 8], snap[TOTAL + 8];
    memcpy(big, x, sizeof x);
    memcpy(snap, big, sizeof big);
    float ms[2 * NS];
    CHECK(gn_forward_f32(big + 3, m, r, big, g, b, &d) == GN_EINVAL &&
              !memcmp(big, snap, sizeof big), "y partly over x: not refused, or written");
    CHECK(gn_normalize_f32(big + 3, big, m, r, g, b, &d) == GN_EINVAL &&
              !memcmp(big, snap, sizeof big), "normalize: y partly over x");
    CHECK(gn_forward_f32(dx, ms, ms + 4, x, g, b, &d) == GN_EINVAL, "mean over rstd");
    CHECK(gn_forward_f32(big, big + 8, r, x, g, b, &d) == GN_EINVAL &&
              !memcmp(big, snap, sizeof big), "y over mean: not refused, or written");
    CHECK(gn_backward_f32(big + 1, dg, db, big, x, m, r, g, &d) == GN_EINVAL &&
              !memcmp(big, snap, sizeof big), "dx partly over dy");
    CHECK(gn_backward_f32(dx, dg, dg + 4, dy, x, m, r, g, &d) == GN_EINVAL, "dgamma over dbeta");
    CHECK(gn_backward_f32(big, big + 2, db, dy, x, m, r, g, &d) == GN_EINVAL &&
              !memcmp(big, snap, sizeof big), "dgamma over dx");
    /* gn_forward_add: y partly over a full add, sum partly over x or over y, sum
     * over mean, sum without an add */
    CHECK(gn_forward_add_f32(big + 1, sb, m, r, NULL, x, big, GN_ADD_FULL, g, b, &d) ==
                  GN_EINVAL && !memcmp(big, snap, sizeof big),
          "gn_forward_add: y partly over a full add");
    CHECK(gn_forward_add_f32(yb, big + 2, m, r, NULL, big, add, GN_ADD_C, g, b, &d) ==
                  GN_EINVAL && !memcmp(big, snap, sizeof big),
          "gn_forward_add: sum partly over x");
    CHECK(gn_forward_add_f32(big, big + 5, m, r, NULL, x, add, GN_ADD_FULL, g, b, &d) ==
                  GN_EINVAL && !memcmp(big, snap, sizeof big),
          "gn_forward_add: sum partly over y");
    CHECK(gn_forward_add_f32(yb, big, big + 4, r, NULL, x, add, GN_ADD_FULL, g, b, &d) ==
                  GN_EINVAL && !memcmp(big, snap, sizeof big),
          "gn_forward_add: mean inside sum");
    CHECK(gn_forward_add_f32(yb, big, m, r, NULL, x, NULL, GN_ADD_FULL, g, b, &d) ==
                  GN_EINVAL && !memcmp(big, snap, sizeof big),
          "gn_forward_add: sum without an add");
    /* in place stays allowed */
    memcpy(big, x, sizeof x);
    CHECK(gn_forward_f32(big, m, r, big, g, b, &d) == GN_OK && max_err(big, want, TOTAL) < 1e-5,
          "in place forward");
}

/* ---- extreme magnitudes ---- */

static void test_extreme(void)
{
    enum { S = 64 };
    gn_desc d = {.n = 1, .c = 2, .spatial = S, .groups = 1, .eps = 1e-5, .layout = GN_NCHW,
                 .stats = GN_STATS_SAMPLE, .affine = GN_AFFINE_NONE};
    float x[2 * S], y[2 * S], m[1], r[1], dx[2 * S], dy[2 * S];
    double want[2 * S];
    for (int isa = 0; isa < 2; isa++) {
        if (gn_set_isa(isa ? "auto" : "scalar"))
            continue;
        for (int kind = 0; kind < 4; kind++) {
            for (int i = 0; i < 2 * S; i++) {
                double z = uniform() * 2.0 - 1.0;
                x[i] = kind == 0 ? (float)(z * 3.4e19)             /* std ~2e19 */
                       : kind == 1 ? 0.0f                           /* one 3e19 among zeros */
                       : kind == 2 ? (float)(z * 3.0e38)            /* std ~1.7e38 */
                                   : (float)(1e10 + z * 1e19);      /* shifted */
                dy[i] = (float)(uniform() - 0.5);
            }
            if (kind == 1)
                x[17] = 3e19f;
            for (int layout = GN_NCHW; layout <= GN_NHWC; layout++) {
                d.layout = layout;   /* the same values read as NHWC are another grouping */
                gn_desc dn = d;
                dn.layout = GN_NCHW;
                float xt[2 * S];
                for (int s = 0; s < S; s++)
                    for (int c = 0; c < 2; c++)
                        xt[c * S + s] = layout == GN_NHWC ? x[s * 2 + c] : x[c * S + s];
                ref_forward(want, xt, NULL, NULL, &dn);
                gn_status st = gn_forward_f32(y, m, r, x, NULL, NULL, &d);
                double e = 0.0;
                for (int s = 0; s < S; s++)
                    for (int c = 0; c < 2; c++) {
                        float got = layout == GN_NHWC ? y[s * 2 + c] : y[c * S + s];
                        double v = fabs((double)got - want[c * S + s]);
                        e = v > e || v != v ? v : e;
                    }
                CHECK(st == GN_OK && e < 2e-5, "%s magnitude case %d %s: status %d, max error %g",
                      isa ? "auto" : "scalar", kind, layout ? "nhwc" : "nchw", st, e);
                /* backward: finite, and dx sums to ~0 over the group (its mean
                 * gradient) relative to its size */
                st = gn_backward_f32(dx, NULL, NULL, dy, x, m, r, NULL, &d);
                double sum = 0.0, mag = 0.0;
                int finite = 1;
                for (int i = 0; i < 2 * S; i++) {
                    finite &= isfinite(dx[i]);
                    sum += dx[i];
                    mag += fabs(dx[i]);
                }
                CHECK(st == GN_OK && finite && mag > 0.0 && fabs(sum) <= 1e-4 * mag,
                      "%s backward magnitude case %d %s: status %d, finite %d, sum %g of %g",
                      isa ? "auto" : "scalar", kind, layout ? "nhwc" : "nchw", st, finite, sum,
                      mag);
            }
        }
    }
    gn_set_isa("auto");
    /* eps = 1e-80 on a constant group: y = beta, not NaN */
    d.layout = GN_NCHW;
    d.eps = 1e-80;
    d.affine = GN_AFFINE_CHANNEL;
    float g[2] = {2.0f, -1.0f}, b[2] = {0.5f, 0.25f};
    for (int i = 0; i < 2 * S; i++)
        x[i] = 3.0f;
    gn_status st = gn_forward_f32(y, m, r, x, g, b, &d);
    int ok = st == GN_OK;
    for (int i = 0; i < 2 * S; i++)
        ok &= y[i] == b[i / S];
    CHECK(ok, "constant group with eps=1e-80: status %d, y[0] = %g (want %g)", st, y[0], b[0]);
}

static int wanted(const char *const *only, int n, const char *name)
{
    for (int i = 0; i < n; i++)
        if (!strcmp(only[i], name))
            return 1;
    return 0;
}

/* test_safety [--quick] [team|fork|fuzz|alias|extreme ...]: all parts by default */
int main(int argc, char **argv)
{
    int quick = 0, any = 0;
    const char *only[8] = {0};
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--quick"))
            quick = 1;
        else if (any < 8)
            only[any++] = argv[i];
    }
#define PART(name) (!any || wanted(only, any, name))
    if (PART("team")) {
        test_team(0);
        test_team(1);
    }
    if (PART("fork"))
        test_fork();
    if (PART("fuzz"))
        test_fuzz(quick ? 3000 : 30000);
    if (PART("alias"))
        test_alias();
    if (PART("extreme"))
        test_extreme();
    printf("test_safety: %ld checks, %ld failures\n", n_checks, n_failures);
    return n_failures ? 1 : 0;
}
