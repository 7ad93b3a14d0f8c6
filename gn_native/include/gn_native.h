/*
 * gn_native.h -- Group Normalization in plain C (no Python, no NumPy).
 *
 * Link against libgn_native (see `python -m gn_native --cflags --libs`).
 * Every function validates its descriptor and pointers and returns a status
 * code; nothing here aborts, prints or exits.
 *
 * Layouts (all arrays dense, C order):
 *   GN_NCHW : x[n][c][s]   (s = flattened spatial index, `spatial` values)
 *   GN_NHWC : x[n][s][c]
 * Statistics: mean/rstd hold n*groups values (GN_STATS_SAMPLE, index n*G+g)
 * or groups values (GN_STATS_BATCH).  rstd = 1/sqrt(var + eps), var biased.
 * Affine: gamma/beta/dgamma/dbeta hold c values (GN_AFFINE_CHANNEL), groups
 * values (GN_AFFINE_GROUP), or are ignored (GN_AFFINE_NONE, NULL allowed).
 * With an affine kind, a NULL gamma means ones and a NULL beta zeros.
 * dgamma/dbeta may be NULL when not wanted; when affine is GN_AFFINE_NONE
 * they receive the per-channel gradient an affine layer would get.
 *
 * Activation (d->activation): applied to every value after the affine
 * step, y = act(gamma * (x - mean) * rstd + beta); GN_ACT_NONE (0) gives
 * plain GroupNorm.  Computed in float for f32, f16 and bf16 data, in double
 * for f64.  The backward recomputes the pre-activation value from x, mean,
 * rstd, gamma and beta (gn_backward_ex takes beta; gn_backward is
 * gn_backward_ex with beta NULL, i.e. zeros).
 *
 * f16 and bf16 data are passed as uint16_t bit patterns; their statistics
 * are float.  Results are bit-identical for any thread count.
 *
 * Initialize a gn_desc with an initializer (gn_desc d = {...}, designated or
 * not): members it leaves out, such as activation, are then zero.
 */
#ifndef GN_NATIVE_H
#define GN_NATIVE_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32) && defined(GN_BUILDING_DLL)
#define GN_API __declspec(dllexport)
#elif defined(__GNUC__)
#define GN_API __attribute__((visibility("default")))
#else
#define GN_API
#endif

/* The package version, written only here: setup.py reads it for the Python package
 * metadata, and gn_native.__version__ and `python -m gn_native --version` are
 * gn_version(), which returns it. */
#define GN_VERSION_STRING "0.1.0"

typedef enum { GN_OK = 0, GN_EINVAL, GN_ENOMEM, GN_EUNSUPPORTED } gn_status;
typedef enum { GN_NCHW = 0, GN_NHWC = 1 } gn_layout;
typedef enum { GN_STATS_SAMPLE = 0, GN_STATS_BATCH = 1 } gn_stats;
typedef enum { GN_AFFINE_NONE = 0, GN_AFFINE_CHANNEL, GN_AFFINE_GROUP } gn_affine;
#ifndef GN_ACTIVATION_DEFINED
#define GN_ACTIVATION_DEFINED
typedef enum gn_activation {
    GN_ACT_NONE = 0,
    GN_ACT_SILU = 1,       /* z * sigmoid(z) */
    GN_ACT_GELU = 2,       /* z * Phi(z), the erf form */
    GN_ACT_GELU_TANH = 3,  /* torch's gelu(approximate="tanh") */
    GN_ACT_RELU = 4
} gn_activation;
#endif

typedef struct {
    int64_t n, c, spatial, groups;   /* spatial = product of spatial dims */
    double eps;
    gn_layout layout;
    gn_stats stats;
    gn_affine affine;
    gn_activation activation;        /* after the affine step; 0: none */
} gn_desc;

/* Forward: y may alias x (in place).  mean/rstd are written (the statistics
 * of x; the activation does not change them); y = act(z), z = gamma (x -
 * mean) rstd + beta. */
GN_API gn_status gn_forward_f32(float *y, float *mean, float *rstd, const float *x,
                                const float *gamma, const float *beta, const gn_desc *d);
GN_API gn_status gn_forward_f64(double *y, double *mean, double *rstd, const double *x,
                                const double *gamma, const double *beta, const gn_desc *d);
GN_API gn_status gn_forward_f16(uint16_t *y, float *mean, float *rstd, const uint16_t *x,
                                const uint16_t *gamma, const uint16_t *beta, const gn_desc *d);
GN_API gn_status gn_forward_bf16(uint16_t *y, float *mean, float *rstd, const uint16_t *x,
                                 const uint16_t *gamma, const uint16_t *beta, const gn_desc *d);

/* Forward that also returns the biased variance (n*G or G values; var may
 * be NULL), e.g. for running statistics: var computed from rstd loses
 * precision when it is small against eps. */
GN_API gn_status gn_forward_var_f32(float *y, float *mean, float *rstd, float *var, const float *x,
                                    const float *gamma, const float *beta, const gn_desc *d);
GN_API gn_status gn_forward_var_f64(double *y, double *mean, double *rstd, double *var,
                                    const double *x, const double *gamma, const double *beta,
                                    const gn_desc *d);
GN_API gn_status gn_forward_var_f16(uint16_t *y, float *mean, float *rstd, float *var,
                                    const uint16_t *x, const uint16_t *gamma,
                                    const uint16_t *beta, const gn_desc *d);
GN_API gn_status gn_forward_var_bf16(uint16_t *y, float *mean, float *rstd, float *var,
                                     const uint16_t *x, const uint16_t *gamma,
                                     const uint16_t *beta, const gn_desc *d);

/* Shape of gn_forward_add's `add`. */
typedef enum {
    GN_ADD_FULL = 0,  /* x's shape and layout: one value per element */
    GN_ADD_NC = 1,    /* n*c values, [n][c]: per (sample, channel), broadcast over space */
    GN_ADD_C = 2      /* c values: per channel, broadcast over samples and space */
} gn_add_shape;

/* Forward of s = x + add, as ONNX Runtime's SkipGroupNorm: each sum is
 * computed in the compute type (float for f32, f16 and bf16, double for
 * f64) and rounded to the storage type, as `x + add` in NumPy or torch; the
 * statistics are s's and y = act(GroupNorm(s)), the bits of gn_forward_var
 * run on s.  sum (NULL: not wanted) receives s, which the backward takes as
 * its x.  add NULL: gn_forward_var (sum must then be NULL).  y and sum may
 * each be x, or a GN_ADD_FULL add, exactly (in place); y and sum must be
 * different arrays.  var may be NULL. */
GN_API gn_status gn_forward_add_f32(float *y, float *sum, float *mean, float *rstd, float *var,
                                    const float *x, const float *add, gn_add_shape add_shape,
                                    const float *gamma, const float *beta, const gn_desc *d);
GN_API gn_status gn_forward_add_f64(double *y, double *sum, double *mean, double *rstd,
                                    double *var, const double *x, const double *add,
                                    gn_add_shape add_shape, const double *gamma,
                                    const double *beta, const gn_desc *d);
GN_API gn_status gn_forward_add_f16(uint16_t *y, uint16_t *sum, float *mean, float *rstd,
                                    float *var, const uint16_t *x, const uint16_t *add,
                                    gn_add_shape add_shape, const uint16_t *gamma,
                                    const uint16_t *beta, const gn_desc *d);
GN_API gn_status gn_forward_add_bf16(uint16_t *y, uint16_t *sum, float *mean, float *rstd,
                                     float *var, const uint16_t *x, const uint16_t *add,
                                     gn_add_shape add_shape, const uint16_t *gamma,
                                     const uint16_t *beta, const gn_desc *d);

/* Normalize with given statistics (laid out as d->stats says); no reduction.
 * y = act(z) as in the forward. */
GN_API gn_status gn_normalize_f32(float *y, const float *x, const float *mean, const float *rstd,
                                  const float *gamma, const float *beta, const gn_desc *d);
GN_API gn_status gn_normalize_f64(double *y, const double *x, const double *mean, const double *rstd,
                                  const double *gamma, const double *beta, const gn_desc *d);
GN_API gn_status gn_normalize_f16(uint16_t *y, const uint16_t *x, const float *mean, const float *rstd,
                                  const uint16_t *gamma, const uint16_t *beta, const gn_desc *d);
GN_API gn_status gn_normalize_bf16(uint16_t *y, const uint16_t *x, const float *mean, const float *rstd,
                                   const uint16_t *gamma, const uint16_t *beta, const gn_desc *d);

/* ---- The stages (Group Normalization as four steps; DESIGN.md) ----
 * A single call is these stages run one after the other, for the same bits:
 * gn_forward_var with batch statistics gives y, mean, rstd and var of
 * gn_stats_partial, then gn_stats_merge(m = n), then gn_normalize_stats with
 * the merged double statistics (its mean/rstd/var are those rounded to the
 * statistics type); gn_backward_ex gives the dx of gn_backward_reduce and
 * gn_backward_apply, and the dgamma/dbeta of gn_param_grads.  With the batch
 * split over processes (each a contiguous run of samples), gathering the
 * partials and the backward sums in sample order and running the merge and
 * the apply on the gathered arrays gives the bits of one call on the whole
 * batch, whatever the split.
 *
 * Partial: GN_PARTIAL_LEN doubles per (sample, group), [n][g][5]:
 *   {count m, shift c, sum s, sumsq q, exponent e}
 * c is the first value of the (sample, group) (NCHW x[n][g*K][0], NHWC
 * x[n][0][g*K]); s = sum((x - c) 2^-e), q = sum(((x - c) 2^-e)^2); e is 0
 * except for extreme magnitudes (an exact, scaled fallback); data holding
 * inf/NaN give q = NaN.  Each partial depends only on its sample's values. */
#define GN_PARTIAL_LEN 5
/* partial: d->n * d->groups partials (d->stats is not read) */
GN_API gn_status gn_stats_partial_f32(double *partial, const float *x, const gn_desc *d);
GN_API gn_status gn_stats_partial_f64(double *partial, const double *x, const gn_desc *d);
GN_API gn_status gn_stats_partial_f16(double *partial, const uint16_t *x, const gn_desc *d);
GN_API gn_status gn_stats_partial_bf16(double *partial, const uint16_t *x, const gn_desc *d);

/* Merge: for each of k groups j, its m partials partial[(i * k + j) * 5]
 * (i = 0..m-1) folded in order i into mean[j], rstd[j] and var[j] (biased;
 * var may be NULL).  Batch statistics of n samples: m = n, k = groups;
 * sample statistics: m = 1, k = n * groups.  Fold (c = c_0, E = max e_i):
 * S = s_0 2^(e_0 - E), Q = q_0 2^(2(e_0 - E)); for i >= 1, with d = (c_i - c)
 * 2^-E, s = s_i 2^(e_i - E), q = q_i 2^(2(e_i - E)): S += s + m_i d,
 * Q += q + d (2 s + m_i d); M = sum m_i, dm = S / M, v = max(Q / M - dm^2, 0),
 * mean = c + dm 2^E, var = v 2^(2E), rstd = 1 / sqrt(var + eps).  m = 0 or
 * M = 0 gives NaN.  GN_EINVAL for a negative count, an exponent that is not
 * a whole number in [-4096, 4096], or outputs overlapping the partials. */
GN_API gn_status gn_stats_merge(double *mean, double *rstd, double *var, const double *partial,
                                int64_t m, int64_t k, double eps);

/* Normalize with given double statistics (as gn_normalize, whose float
 * statistics lose the low part of a large mean). */
GN_API gn_status gn_normalize_stats_f32(float *y, const float *x, const double *mean,
                                        const double *rstd, const float *gamma,
                                        const float *beta, const gn_desc *d);
GN_API gn_status gn_normalize_stats_f64(double *y, const double *x, const double *mean,
                                        const double *rstd, const double *gamma,
                                        const double *beta, const gn_desc *d);
GN_API gn_status gn_normalize_stats_f16(uint16_t *y, const uint16_t *x, const double *mean,
                                        const double *rstd, const uint16_t *gamma,
                                        const uint16_t *beta, const gn_desc *d);
GN_API gn_status gn_normalize_stats_bf16(uint16_t *y, const uint16_t *x, const double *mean,
                                         const double *rstd, const uint16_t *gamma,
                                         const uint16_t *beta, const gn_desc *d);

/* Backward reduce: GN_DSUM_LEN doubles per (sample, channel), [n][c][2]:
 *   {sum g, sum g (x - mean_F)}
 * g = dy act'(z) (dy without an activation), mean_F the mean rounded to the
 * compute type; mean/rstd are the forward's (as double).  Per sample: a
 * sample's sums depend only on its own dy and x (and the statistics). */
#define GN_DSUM_LEN 2
GN_API gn_status gn_backward_reduce_f32(double *sums, const float *dy, const float *x,
                                        const double *mean, const double *rstd,
                                        const float *gamma, const float *beta, const gn_desc *d);
GN_API gn_status gn_backward_reduce_f64(double *sums, const double *dy, const double *x,
                                        const double *mean, const double *rstd,
                                        const double *gamma, const double *beta,
                                        const gn_desc *d);
GN_API gn_status gn_backward_reduce_f16(double *sums, const uint16_t *dy, const uint16_t *x,
                                        const double *mean, const double *rstd,
                                        const uint16_t *gamma, const uint16_t *beta,
                                        const gn_desc *d);
GN_API gn_status gn_backward_reduce_bf16(double *sums, const uint16_t *dy, const uint16_t *x,
                                         const double *mean, const double *rstd,
                                         const uint16_t *gamma, const uint16_t *beta,
                                         const gn_desc *d);

/* Backward apply: dx of these d->n samples from the sums of sums_n samples:
 * with batch statistics those of the whole batch, in sample order (sums_n >=
 * d->n), with sample statistics these samples' own (sums_n == d->n).  dx may
 * alias dy or x. */
GN_API gn_status gn_backward_apply_f32(float *dx, const float *dy, const float *x,
                                       const double *mean, const double *rstd,
                                       const double *sums, int64_t sums_n, const float *gamma,
                                       const float *beta, const gn_desc *d);
GN_API gn_status gn_backward_apply_f64(double *dx, const double *dy, const double *x,
                                       const double *mean, const double *rstd,
                                       const double *sums, int64_t sums_n, const double *gamma,
                                       const double *beta, const gn_desc *d);
GN_API gn_status gn_backward_apply_f16(uint16_t *dx, const uint16_t *dy, const uint16_t *x,
                                       const double *mean, const double *rstd,
                                       const double *sums, int64_t sums_n,
                                       const uint16_t *gamma, const uint16_t *beta,
                                       const gn_desc *d);
GN_API gn_status gn_backward_apply_bf16(uint16_t *dx, const uint16_t *dy, const uint16_t *x,
                                        const double *mean, const double *rstd,
                                        const double *sums, int64_t sums_n,
                                        const uint16_t *gamma, const uint16_t *beta,
                                        const gn_desc *d);

/* dgamma/dbeta from the sums of sums_n samples (d->n is not read) and rstd
 * (groups values for batch statistics, sums_n * groups for sample ones):
 * dgamma_c = sum_n rstd b_nc, dbeta_c = sum_n a_nc, in sample order; per group
 * (GN_AFFINE_GROUP) the sums over its channels.  Either may be NULL. */
GN_API gn_status gn_param_grads_f32(float *dgamma, float *dbeta, const double *sums,
                                    const double *rstd, int64_t sums_n, const gn_desc *d);
GN_API gn_status gn_param_grads_f64(double *dgamma, double *dbeta, const double *sums,
                                    const double *rstd, int64_t sums_n, const gn_desc *d);
GN_API gn_status gn_param_grads_f16(uint16_t *dgamma, uint16_t *dbeta, const double *sums,
                                    const double *rstd, int64_t sums_n, const gn_desc *d);
GN_API gn_status gn_param_grads_bf16(uint16_t *dgamma, uint16_t *dbeta, const double *sums,
                                     const double *rstd, int64_t sums_n, const gn_desc *d);

/* Backward: dx may alias dy.  dgamma/dbeta may be NULL.  With an activation,
 * beta counts as zeros here: use gn_backward_ex. */
GN_API gn_status gn_backward_f32(float *dx, float *dgamma, float *dbeta,
                                 const float *dy, const float *x, const float *mean,
                                 const float *rstd, const float *gamma, const gn_desc *d);
GN_API gn_status gn_backward_f64(double *dx, double *dgamma, double *dbeta,
                                 const double *dy, const double *x, const double *mean,
                                 const double *rstd, const double *gamma, const gn_desc *d);
GN_API gn_status gn_backward_f16(uint16_t *dx, uint16_t *dgamma, uint16_t *dbeta,
                                 const uint16_t *dy, const uint16_t *x, const float *mean,
                                 const float *rstd, const uint16_t *gamma, const gn_desc *d);
GN_API gn_status gn_backward_bf16(uint16_t *dx, uint16_t *dgamma, uint16_t *dbeta,
                                  const uint16_t *dy, const uint16_t *x, const float *mean,
                                  const float *rstd, const uint16_t *gamma, const gn_desc *d);

/* Backward with the forward's beta, which an activation needs: z is
 * recomputed from x, mean, rstd, gamma and beta exactly as the forward
 * computed it, g = dy * act'(z) takes dy's place in the GroupNorm backward,
 * and nothing extra is stored.  beta NULL means zeros; without an activation
 * beta is not read.  dx may alias dy. */
GN_API gn_status gn_backward_ex_f32(float *dx, float *dgamma, float *dbeta,
                                    const float *dy, const float *x, const float *mean,
                                    const float *rstd, const float *gamma, const float *beta,
                                    const gn_desc *d);
GN_API gn_status gn_backward_ex_f64(double *dx, double *dgamma, double *dbeta,
                                    const double *dy, const double *x, const double *mean,
                                    const double *rstd, const double *gamma, const double *beta,
                                    const gn_desc *d);
GN_API gn_status gn_backward_ex_f16(uint16_t *dx, uint16_t *dgamma, uint16_t *dbeta,
                                    const uint16_t *dy, const uint16_t *x, const float *mean,
                                    const float *rstd, const uint16_t *gamma,
                                    const uint16_t *beta, const gn_desc *d);
GN_API gn_status gn_backward_ex_bf16(uint16_t *dx, uint16_t *dgamma, uint16_t *dbeta,
                                     const uint16_t *dy, const uint16_t *x, const float *mean,
                                     const float *rstd, const uint16_t *gamma,
                                     const uint16_t *beta, const gn_desc *d);

/* Backward for constant statistics: mean and rstd are not functions of x (a
 * layer's running statistics in eval mode), so dx = act'(z) * dy * gamma *
 * rstd, and dgamma/dbeta are the sums of gn_backward_ex.  Without an
 * activation dx = dy * (gamma * rstd) rounded once (the bits of
 * gn_normalize run on dy with a zero mean and no beta).  With one, an
 * infinite x gives a NaN dx.  dx may alias dy. */
GN_API gn_status gn_backward_frozen_f32(float *dx, float *dgamma, float *dbeta,
                                        const float *dy, const float *x, const float *mean,
                                        const float *rstd, const float *gamma,
                                        const float *beta, const gn_desc *d);
GN_API gn_status gn_backward_frozen_f64(double *dx, double *dgamma, double *dbeta,
                                        const double *dy, const double *x, const double *mean,
                                        const double *rstd, const double *gamma,
                                        const double *beta, const gn_desc *d);
GN_API gn_status gn_backward_frozen_f16(uint16_t *dx, uint16_t *dgamma, uint16_t *dbeta,
                                        const uint16_t *dy, const uint16_t *x,
                                        const float *mean, const float *rstd,
                                        const uint16_t *gamma, const uint16_t *beta,
                                        const gn_desc *d);
GN_API gn_status gn_backward_frozen_bf16(uint16_t *dx, uint16_t *dgamma, uint16_t *dbeta,
                                         const uint16_t *dy, const uint16_t *x,
                                         const float *mean, const float *rstd,
                                         const uint16_t *gamma, const uint16_t *beta,
                                         const gn_desc *d);

GN_API const char *gn_strerror(gn_status s);
GN_API const char *gn_version(void);
/* Threads.  n <= 0: back to the default (OMP_NUM_THREADS / the OpenMP
 * runtime's); n is capped at GN_MAX_THREADS.  Safe under any caller: a call
 * made from inside the caller's own OpenMP team runs on the calling thread;
 * in a process forked after the core ran a multithreaded call, the core runs
 * on one thread (OpenMP's pool does not survive fork) and
 * gn_get_num_threads() says 1.  Results are the same bits either way. */
#define GN_MAX_THREADS 1024
GN_API void gn_set_num_threads(int n);
GN_API int gn_get_num_threads(void);

/* Run-time configuration: SIMD path in use ("avx2", "scalar", ...), OpenMP. */
GN_API const char *gn_isa(void);
GN_API int gn_set_isa(const char *name); /* 0 on success, -1 if unknown/unsupported */
GN_API int gn_openmp_enabled(void);

#ifdef __cplusplus
}
#endif
#endif /* GN_NATIVE_H */
