/* demo.c -- gn_native from plain C, without Python.
 *
 * Normalizes a batch of planar float images (N, C, H, W) with gn_forward_f32,
 * back-propagates a gradient with gn_backward_f32, and checks both against
 * the plain loops below; then the same fused with SiLU (d.activation,
 * gn_backward_ex_f32, which takes beta to recompute the activation's input),
 * and with a per-(image, channel) bias added first (gn_forward_add_f32, as
 * ONNX Runtime's SkipGroupNorm, which also returns the sum).  It also shows
 * that a bad descriptor is refused
 * with GN_EINVAL (nothing aborts), and that several threads calling at once
 * get exactly the bits of a single call.
 *
 *     make                 # see the Makefile; or by hand:
 *     cc -std=c11 -O2 demo.c $(python -m gn_native --cflags --libs) -o demo
 *     ./demo               # exit status 0 when every check passes
 */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gn_native.h"

enum { N = 4, C = 6, H = 37, W = 41, G = 3, K = C / G, HW = H * W, TOTAL = N * C * HW };
enum { N_THREADS = 4, REPEATS = 5 };

static int failures;

static void check(int ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "demo: FAILED: %s\n", what);
        failures++;
    }
}

/* ---- plain loops: the obviously correct version, in double ---- */

static void reference_forward(double *y, double *mean, double *rstd, const float *x,
                              const float *gamma, const float *beta, double eps)
{
    const double m = (double)K * HW;
    for (int n = 0; n < N; n++)
        for (int g = 0; g < G; g++) {
            const float *xg = x + ((size_t)n * C + (size_t)g * K) * HW;   /* K planes */
            double s = 0.0, q = 0.0;
            for (int i = 0; i < K * HW; i++)
                s += xg[i];
            double mu = s / m;
            for (int i = 0; i < K * HW; i++)
                q += (xg[i] - mu) * (xg[i] - mu);
            double r = 1.0 / sqrt(q / m + eps);
            mean[n * G + g] = mu;
            rstd[n * G + g] = r;
            for (int k = 0; k < K; k++) {
                int c = g * K + k;
                for (int i = 0; i < HW; i++) {
                    size_t at = ((size_t)n * C + c) * HW + i;
                    y[at] = (x[at] - mu) * r * gamma[c] + beta[c];
                }
            }
        }
}

/* dx = rstd * (g - mean(g) - xhat * mean(g * xhat)), g = dy * gamma, per (n, group) */
static void reference_backward(double *dx, double *dgamma, double *dbeta, const float *dy,
                               const float *x, const float *mean, const float *rstd,
                               const float *gamma)
{
    const double m = (double)K * HW;
    for (int c = 0; c < C; c++)
        dgamma[c] = dbeta[c] = 0.0;
    for (int n = 0; n < N; n++)
        for (int g = 0; g < G; g++) {
            double mu = mean[n * G + g], r = rstd[n * G + g], a = 0.0, b = 0.0;
            for (int c = g * K; c < (g + 1) * K; c++)
                for (int i = 0; i < HW; i++) {
                    size_t at = ((size_t)n * C + c) * HW + i;
                    double xhat = (x[at] - mu) * r;
                    a += (double)dy[at] * gamma[c];
                    b += (double)dy[at] * gamma[c] * xhat;
                    dgamma[c] += (double)dy[at] * xhat;
                    dbeta[c] += dy[at];
                }
            for (int c = g * K; c < (g + 1) * K; c++)
                for (int i = 0; i < HW; i++) {
                    size_t at = ((size_t)n * C + c) * HW + i;
                    double xhat = (x[at] - mu) * r;
                    dx[at] = r * ((double)dy[at] * gamma[c] - a / m - xhat * b / m);
                }
        }
}

static double max_abs_diff(const float *a, const double *b, size_t len)
{
    double worst = 0.0;
    for (size_t i = 0; i < len; i++) {
        double d = fabs((double)a[i] - b[i]);
        if (!(d <= worst))          /* also catches NaN */
            worst = d;
    }
    return worst;
}

static double max_abs(const double *a, size_t len)
{
    double m = 0.0;
    for (size_t i = 0; i < len; i++)
        m = fabs(a[i]) > m ? fabs(a[i]) : m;
    return m;
}

/* SiLU and its derivative: silu(z) = z sigmoid(z), silu' = s (1 + z (1 - s)) */
static double silu(double z) { return z / (1.0 + exp(-z)); }
static double silu_grad(double z)
{
    double s = 1.0 / (1.0 + exp(-z));
    return s * (1.0 + z * (1.0 - s));
}

/* ---- the data: camera-like pixels (offset 0..255) plus noise ---- */

static float noise(unsigned *state)
{
    *state = *state * 1664525u + 1013904223u;           /* LCG: fine for a demo */
    return (float)(*state >> 8) / 16777216.0f - 0.5f;   /* [-0.5, 0.5) */
}

static void fill(float *x, float *dy, float *gamma, float *beta)
{
    unsigned s = 12345u;
    for (int n = 0; n < N; n++)
        for (int c = 0; c < C; c++)
            for (int i = 0; i < HW; i++) {
                size_t at = ((size_t)n * C + c) * HW + i;
                x[at] = 100.0f + 40.0f * c + 30.0f * sinf(0.1f * (float)i) + 8.0f * noise(&s);
                dy[at] = noise(&s);
            }
    for (int c = 0; c < C; c++) {
        gamma[c] = 0.5f + 0.25f * (float)c;
        beta[c] = 0.1f * (float)c - 0.2f;
    }
}

/* ---- several threads at once ---- */

struct job {
    const float *x, *dy, *gamma, *beta;
    const float *want_y, *want_dx, *want_dgamma;  /* results of the single-threaded call */
    int mismatches, errors;
};

static void *worker(void *arg)
{
    struct job *j = arg;
    gn_desc d = {N, C, HW, G, 1e-5, GN_NCHW, GN_STATS_SAMPLE, GN_AFFINE_CHANNEL, GN_ACT_NONE};
    float *y = malloc(sizeof(float) * TOTAL), *dx = malloc(sizeof(float) * TOTAL);
    float mean[N * G], rstd[N * G], dgamma[C], dbeta[C];
    if (!y || !dx) {
        j->errors++;
    } else {
        for (int r = 0; r < REPEATS; r++) {
            if (gn_forward_f32(y, mean, rstd, j->x, j->gamma, j->beta, &d) != GN_OK ||
                gn_backward_f32(dx, dgamma, dbeta, j->dy, j->x, mean, rstd, j->gamma, &d) != GN_OK) {
                j->errors++;
                continue;
            }
            j->mismatches += memcmp(y, j->want_y, sizeof(float) * TOTAL) != 0;
            j->mismatches += memcmp(dx, j->want_dx, sizeof(float) * TOTAL) != 0;
            j->mismatches += memcmp(dgamma, j->want_dgamma, sizeof dgamma) != 0;
        }
    }
    free(y);
    free(dx);
    return NULL;
}

int main(void)
{
    float *x = malloc(sizeof(float) * TOTAL), *y = malloc(sizeof(float) * TOTAL);
    float *dy = malloc(sizeof(float) * TOTAL), *dx = malloc(sizeof(float) * TOTAL);
    double *ref = malloc(sizeof(double) * TOTAL);
    float gamma[C], beta[C], dgamma[C], dbeta[C], mean[N * G], rstd[N * G];
    double ref_mean[N * G], ref_rstd[N * G], ref_dgamma[C], ref_dbeta[C];
    if (!x || !y || !dy || !dx || !ref) {
        fprintf(stderr, "demo: out of memory\n");
        return 1;
    }
    fill(x, dy, gamma, beta);
    printf("gn_native %s, SIMD path %s, %d thread(s)\n", gn_version(), gn_isa(),
           gn_get_num_threads());

    /* forward: y = (x - mean) / sqrt(var + eps) * gamma + beta, per (image, group) */
    gn_desc d = {.n = N, .c = C, .spatial = HW, .groups = G, .eps = 1e-5,
                 .layout = GN_NCHW, .stats = GN_STATS_SAMPLE, .affine = GN_AFFINE_CHANNEL};
    gn_status st = gn_forward_f32(y, mean, rstd, x, gamma, beta, &d);
    check(st == GN_OK, "gn_forward_f32 returns GN_OK");
    reference_forward(ref, ref_mean, ref_rstd, x, gamma, beta, d.eps);
    double err_y = max_abs_diff(y, ref, TOTAL);
    printf("forward : max |y - reference| = %.3g\n", err_y);
    check(err_y <= 1e-5 * max_abs(ref, TOTAL), "y matches the plain loop");
    for (int i = 0; i < N * G; i++) {
        check(fabs(mean[i] - ref_mean[i]) <= 1e-6 * fabs(ref_mean[i]), "mean matches");
        check(fabs(rstd[i] - ref_rstd[i]) <= 1e-6 * ref_rstd[i], "rstd matches");
    }

    /* backward, from the mean/rstd the forward pass returned */
    st = gn_backward_f32(dx, dgamma, dbeta, dy, x, mean, rstd, gamma, &d);
    check(st == GN_OK, "gn_backward_f32 returns GN_OK");
    reference_backward(ref, ref_dgamma, ref_dbeta, dy, x, mean, rstd, gamma);
    double err_dx = max_abs_diff(dx, ref, TOTAL);
    double err_dg = max_abs_diff(dgamma, ref_dgamma, C), err_db = max_abs_diff(dbeta, ref_dbeta, C);
    printf("backward: max |dx - reference| = %.3g, dgamma %.3g, dbeta %.3g\n",
           err_dx, err_dg, err_db);
    check(err_dx <= 1e-4 * max_abs(ref, TOTAL), "dx matches the plain loop");
    check(err_dg <= 1e-4 * max_abs(ref_dgamma, C) + 1e-3, "dgamma matches the plain loop");
    check(err_db <= 1e-4 * max_abs(ref_dbeta, C) + 1e-3, "dbeta matches the plain loop");

    /* dgamma/dbeta may be NULL when only dx is wanted: same dx, bit for bit */
    float *dx2 = malloc(sizeof(float) * TOTAL);
    check(dx2 && gn_backward_f32(dx2, NULL, NULL, dy, x, mean, rstd, gamma, &d) == GN_OK &&
              memcmp(dx, dx2, sizeof(float) * TOTAL) == 0,
          "backward without dgamma/dbeta gives the same dx");
    free(dx2);

    /* fused with SiLU: y = silu(gamma * xhat + beta); the backward is the one
     * above with g = dy * silu'(z) for dy (the chain rule), z recomputed from
     * x, mean, rstd, gamma and beta */
    gn_desc ds = d;
    ds.activation = GN_ACT_SILU;
    st = gn_forward_f32(y, mean, rstd, x, gamma, beta, &ds);
    check(st == GN_OK, "gn_forward_f32 with SiLU returns GN_OK");
    reference_forward(ref, ref_mean, ref_rstd, x, gamma, beta, d.eps);   /* z */
    float *g = malloc(sizeof(float) * TOTAL);
    check(g != NULL, "allocation");
    for (size_t i = 0; g && i < TOTAL; i++) {
        g[i] = (float)(dy[i] * silu_grad(ref[i]));
        ref[i] = silu(ref[i]);
    }
    double err_ys = max_abs_diff(y, ref, TOTAL);
    printf("SiLU    : max |y - reference| = %.3g", err_ys);
    check(err_ys <= 1e-5 * max_abs(ref, TOTAL), "y with SiLU matches the plain loop");
    st = gn_backward_ex_f32(dx, dgamma, dbeta, dy, x, mean, rstd, gamma, beta, &ds);
    check(st == GN_OK, "gn_backward_ex_f32 with SiLU returns GN_OK");
    if (g) {
        reference_backward(ref, ref_dgamma, ref_dbeta, g, x, mean, rstd, gamma);
        err_dx = max_abs_diff(dx, ref, TOTAL);
        printf(", max |dx - reference| = %.3g\n", err_dx);
        check(err_dx <= 1e-4 * max_abs(ref, TOTAL), "dx with SiLU matches the chain rule");
        check(max_abs_diff(dgamma, ref_dgamma, C) <= 1e-4 * max_abs(ref_dgamma, C) + 1e-3 &&
                  max_abs_diff(dbeta, ref_dbeta, C) <= 1e-4 * max_abs(ref_dbeta, C) + 1e-3,
              "dgamma/dbeta with SiLU match the chain rule");
    }
    free(g);

    /* SkipGroupNorm: h = x + bias[n][c] (a time embedding), y = silu(GN(h)),
     * in one pass that also writes h; y is exactly the call above on h */
    float bias[N * C];
    for (int i = 0; i < N * C; i++)
        bias[i] = 2.0f * (float)(i % 5) - 3.0f;
    float *h = malloc(sizeof(float) * TOTAL), *h_ref = malloc(sizeof(float) * TOTAL);
    float *y_ref = malloc(sizeof(float) * TOTAL), mean2[N * G], rstd2[N * G];
    check(h && h_ref && y_ref, "allocation");
    if (h && h_ref && y_ref) {
        st = gn_forward_add_f32(y, h, mean, rstd, NULL, x, bias, GN_ADD_NC, gamma, beta, &ds);
        check(st == GN_OK, "gn_forward_add_f32 returns GN_OK");
        for (size_t i = 0; i < TOTAL; i++)
            h_ref[i] = x[i] + bias[i / HW];              /* i / HW = n * C + c */
        check(gn_forward_f32(y_ref, mean2, rstd2, h_ref, gamma, beta, &ds) == GN_OK &&
                  memcmp(h, h_ref, sizeof(float) * TOTAL) == 0 &&
                  memcmp(y, y_ref, sizeof(float) * TOTAL) == 0 &&
                  memcmp(mean, mean2, sizeof mean) == 0,
              "gn_forward_add_f32 gives the sum and the bits of the call on it");
        printf("add     : x + bias[n][c] then GroupNorm + SiLU, the bits of the call on the sum\n");
    }
    free(h);
    free(h_ref);
    free(y_ref);

    /* bad descriptors are refused with GN_EINVAL; nothing is written, nothing aborts */
    gn_desc bad = d;
    bad.groups = 4;                                   /* 4 does not divide C = 6 */
    st = gn_forward_f32(y, mean, rstd, x, gamma, beta, &bad);
    printf("groups=4 with C=6: %s\n", gn_strerror(st));
    check(st == GN_EINVAL, "C % groups != 0 gives GN_EINVAL");
    bad = d;
    bad.eps = 0.0;
    check(gn_forward_f32(y, mean, rstd, x, gamma, beta, &bad) == GN_EINVAL, "eps = 0 gives GN_EINVAL");
    bad = d;
    bad.n = -1;
    check(gn_backward_f32(dx, dgamma, dbeta, dy, x, mean, rstd, gamma, &bad) == GN_EINVAL,
          "n < 0 gives GN_EINVAL");
    check(gn_forward_f32(y, mean, rstd, NULL, gamma, beta, &d) == GN_EINVAL, "x = NULL gives GN_EINVAL");
    check(gn_forward_f32(y, mean, rstd, x, gamma, beta, NULL) == GN_EINVAL,
          "descriptor = NULL gives GN_EINVAL");

    /* several threads at once: each gets exactly the bits of the call above */
    gn_forward_f32(y, mean, rstd, x, gamma, beta, &d);
    gn_backward_f32(dx, dgamma, dbeta, dy, x, mean, rstd, gamma, &d);
    pthread_t tid[N_THREADS];
    struct job jobs[N_THREADS];
    int started = 0;
    for (int t = 0; t < N_THREADS; t++) {
        jobs[t] = (struct job){x, dy, gamma, beta, y, dx, dgamma, 0, 0};
        if (pthread_create(&tid[t], NULL, worker, &jobs[t]) == 0)
            started++;
        else
            break;
    }
    int mismatches = 0, errors = 0;
    for (int t = 0; t < started; t++) {
        pthread_join(tid[t], NULL);
        mismatches += jobs[t].mismatches;
        errors += jobs[t].errors;
    }
    printf("threads : %d threads x %d calls, %d mismatches, %d errors\n", started, REPEATS,
           mismatches, errors);
    check(started == N_THREADS, "threads start");
    check(mismatches == 0 && errors == 0, "concurrent calls give identical results");

    free(x);
    free(y);
    free(dy);
    free(dx);
    free(ref);
    if (failures) {
        fprintf(stderr, "demo: %d check(s) failed\n", failures);
        return 1;
    }
    printf("demo: all checks passed\n");
    return 0;
}
