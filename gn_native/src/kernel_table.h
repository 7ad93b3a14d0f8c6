/* The core's per-dtype entry points as one table, for a caller that picks
 * the dtype at run time (the Cython wrapper, gn_native/_cpu.pyx): one entry
 * per line of dtypes.h, in its order, with the dtype's C suffix and sizes so
 * that the caller can match entries to its own dtypes and check them.
 * Each entry's functions take void pointers and call the typed ones. */
#ifndef GN_KERNEL_TABLE_H
#define GN_KERNEL_TABLE_H

#include <stdint.h>

#include "gn_native.h"
#include "dtypes.h"

typedef gn_status (*gn_kt_forward)(void *y, void *sum, void *mean, void *rstd, void *var,
                                   const void *x, const void *add, int add_shape,
                                   const void *gamma, const void *beta, const gn_desc *d);
typedef gn_status (*gn_kt_normalize)(void *y, const void *x, const void *mean,
                                     const void *rstd, const void *gamma, const void *beta,
                                     const gn_desc *d);
typedef gn_status (*gn_kt_backward)(void *dx, void *dgamma, void *dbeta, const void *dy,
                                    const void *x, const void *mean, const void *rstd,
                                    const void *gamma, const void *beta, const gn_desc *d);

/* the stages (gn_native.h) */
typedef gn_status (*gn_kt_partial)(double *partial, const void *x, const gn_desc *d);
typedef gn_status (*gn_kt_normalize_stats)(void *y, const void *x, const double *mean,
                                           const double *rstd, const void *gamma,
                                           const void *beta, const gn_desc *d);
typedef gn_status (*gn_kt_reduce)(double *sums, const void *dy, const void *x,
                                  const double *mean, const double *rstd, const void *gamma,
                                  const void *beta, const gn_desc *d);
typedef gn_status (*gn_kt_apply)(void *dx, const void *dy, const void *x, const double *mean,
                                 const double *rstd, const double *sums, int64_t sums_n,
                                 const void *gamma, const void *beta, const gn_desc *d);
typedef gn_status (*gn_kt_param_grads)(void *dgamma, void *dbeta, const double *sums,
                                       const double *rstd, int64_t sums_n, const gn_desc *d);

typedef struct {
    const char *suffix;  /* f32, f64, ...: gn_forward_<suffix> */
    int item_size;       /* bytes of one stored value */
    int stat_size;       /* bytes of one mean/rstd/var value */
    gn_kt_forward forward;  /* gn_forward_add_<suffix> (add, sum, var may be NULL) */
    gn_kt_normalize normalize;
    gn_kt_backward backward;  /* gn_backward_ex_<suffix> */
    gn_kt_backward frozen;    /* gn_backward_frozen_<suffix> */
    gn_kt_partial partial;    /* gn_stats_partial_<suffix> */
    gn_kt_normalize_stats normalize_stats;
    gn_kt_reduce reduce;      /* gn_backward_reduce_<suffix> */
    gn_kt_apply apply;        /* gn_backward_apply_<suffix> */
    gn_kt_param_grads param_grads;
} gn_kernels;

#define GN_KT_WRAP(s, t, f, b, ld, st)                                                      \
    static gn_status gn_kt_forward_##s(void *y, void *sum, void *mean, void *rstd,          \
                                       void *var, const void *x, const void *add,           \
                                       int add_shape, const void *gamma, const void *beta,  \
                                       const gn_desc *d)                                    \
    {                                                                                       \
        return gn_forward_add_##s(y, sum, mean, rstd, var, x, add, (gn_add_shape)add_shape, \
                                  gamma, beta, d);                                          \
    }                                                                                       \
    static gn_status gn_kt_normalize_##s(void *y, const void *x, const void *mean,          \
                                         const void *rstd, const void *gamma,               \
                                         const void *beta, const gn_desc *d)                \
    {                                                                                       \
        return gn_normalize_##s(y, x, mean, rstd, gamma, beta, d);                          \
    }                                                                                       \
    static gn_status gn_kt_backward_##s(void *dx, void *dgamma, void *dbeta, const void *dy, \
                                        const void *x, const void *mean, const void *rstd,  \
                                        const void *gamma, const void *beta,                \
                                        const gn_desc *d)                                   \
    {                                                                                       \
        return gn_backward_ex_##s(dx, dgamma, dbeta, dy, x, mean, rstd, gamma, beta, d);    \
    }                                                                                       \
    static gn_status gn_kt_frozen_##s(void *dx, void *dgamma, void *dbeta, const void *dy,   \
                                      const void *x, const void *mean, const void *rstd,    \
                                      const void *gamma, const void *beta,                  \
                                      const gn_desc *d)                                     \
    {                                                                                       \
        return gn_backward_frozen_##s(dx, dgamma, dbeta, dy, x, mean, rstd, gamma, beta, d); \
    }                                                                                       \
    static gn_status gn_kt_partial_##s(double *partial, const void *x, const gn_desc *d)    \
    {                                                                                       \
        return gn_stats_partial_##s(partial, x, d);                                         \
    }                                                                                       \
    static gn_status gn_kt_normalize_stats_##s(void *y, const void *x, const double *mean,  \
                                               const double *rstd, const void *gamma,       \
                                               const void *beta, const gn_desc *d)          \
    {                                                                                       \
        return gn_normalize_stats_##s(y, x, mean, rstd, gamma, beta, d);                    \
    }                                                                                       \
    static gn_status gn_kt_reduce_##s(double *sums, const void *dy, const void *x,          \
                                      const double *mean, const double *rstd,               \
                                      const void *gamma, const void *beta,                  \
                                      const gn_desc *d)                                     \
    {                                                                                       \
        return gn_backward_reduce_##s(sums, dy, x, mean, rstd, gamma, beta, d);             \
    }                                                                                       \
    static gn_status gn_kt_apply_##s(void *dx, const void *dy, const void *x,               \
                                     const double *mean, const double *rstd,                \
                                     const double *sums, int64_t sums_n, const void *gamma, \
                                     const void *beta, const gn_desc *d)                    \
    {                                                                                       \
        return gn_backward_apply_##s(dx, dy, x, mean, rstd, sums, sums_n, gamma, beta, d);  \
    }                                                                                       \
    static gn_status gn_kt_param_grads_##s(void *dgamma, void *dbeta, const double *sums,   \
                                           const double *rstd, int64_t sums_n,              \
                                           const gn_desc *d)                                \
    {                                                                                       \
        return gn_param_grads_##s(dgamma, dbeta, sums, rstd, sums_n, d);                    \
    }
GN_FOR_EACH_DTYPE(GN_KT_WRAP)
#undef GN_KT_WRAP

#define GN_KT_ENTRY(s, t, f, b, ld, st) \
    {#s, (int)sizeof(t), (int)sizeof(f), gn_kt_forward_##s, gn_kt_normalize_##s,          \
     gn_kt_backward_##s, gn_kt_frozen_##s, gn_kt_partial_##s, gn_kt_normalize_stats_##s,   \
     gn_kt_reduce_##s, gn_kt_apply_##s, gn_kt_param_grads_##s},
static const gn_kernels gn_kernel_table[] = {GN_FOR_EACH_DTYPE(GN_KT_ENTRY)};
#undef GN_KT_ENTRY
enum { GN_KERNEL_COUNT = (int)(sizeof gn_kernel_table / sizeof gn_kernel_table[0]) };

#endif /* GN_KERNEL_TABLE_H */
