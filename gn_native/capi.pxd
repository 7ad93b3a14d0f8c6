# Cython declarations of the C API in include/gn_native.h.
#
#     from gn_native.capi cimport gn_desc, gn_forward_f32, GN_OK, GN_NCHW
#
# Build with include_dirs=[gn_native.get_include()], library_dirs=[gn_native.get_lib_dir()],
# libraries=["gn_native"] (and an rpath to get_lib_dir()).  Every function can be
# called without the GIL.
from libc.stdint cimport int64_t, uint16_t

cdef extern from "gn_native.h" nogil:
    ctypedef enum gn_status:
        GN_OK
        GN_EINVAL
        GN_ENOMEM
        GN_EUNSUPPORTED
    ctypedef enum gn_layout:
        GN_NCHW
        GN_NHWC
    ctypedef enum gn_stats:
        GN_STATS_SAMPLE
        GN_STATS_BATCH
    ctypedef enum gn_affine:
        GN_AFFINE_NONE
        GN_AFFINE_CHANNEL
        GN_AFFINE_GROUP
    ctypedef enum gn_activation:
        GN_ACT_NONE
        GN_ACT_SILU
        GN_ACT_GELU
        GN_ACT_GELU_TANH
        GN_ACT_RELU
    ctypedef enum gn_add_shape:
        GN_ADD_FULL
        GN_ADD_NC
        GN_ADD_C
    ctypedef struct gn_desc:
        int64_t n, c, spatial, groups
        double eps
        gn_layout layout
        gn_stats stats
        gn_affine affine
        gn_activation activation

    gn_status gn_forward_f32(float *y, float *mean, float *rstd, const float *x,
                             const float *gamma, const float *beta, const gn_desc *d)
    gn_status gn_forward_f64(double *y, double *mean, double *rstd, const double *x,
                             const double *gamma, const double *beta, const gn_desc *d)
    gn_status gn_forward_f16(uint16_t *y, float *mean, float *rstd, const uint16_t *x,
                             const uint16_t *gamma, const uint16_t *beta, const gn_desc *d)
    gn_status gn_forward_bf16(uint16_t *y, float *mean, float *rstd, const uint16_t *x,
                              const uint16_t *gamma, const uint16_t *beta, const gn_desc *d)
    gn_status gn_forward_var_f32(float *y, float *mean, float *rstd, float *var, const float *x,
                                 const float *gamma, const float *beta, const gn_desc *d)
    gn_status gn_forward_var_f64(double *y, double *mean, double *rstd, double *var,
                                 const double *x, const double *gamma, const double *beta,
                                 const gn_desc *d)
    gn_status gn_forward_var_f16(uint16_t *y, float *mean, float *rstd, float *var,
                                 const uint16_t *x, const uint16_t *gamma, const uint16_t *beta,
                                 const gn_desc *d)
    gn_status gn_forward_var_bf16(uint16_t *y, float *mean, float *rstd, float *var,
                                  const uint16_t *x, const uint16_t *gamma, const uint16_t *beta,
                                  const gn_desc *d)
    gn_status gn_forward_add_f32(float *y, float *sum, float *mean, float *rstd, float *var,
                                 const float *x, const float *add, gn_add_shape add_shape,
                                 const float *gamma, const float *beta, const gn_desc *d)
    gn_status gn_forward_add_f64(double *y, double *sum, double *mean, double *rstd, double *var,
                                 const double *x, const double *add, gn_add_shape add_shape,
                                 const double *gamma, const double *beta, const gn_desc *d)
    gn_status gn_forward_add_f16(uint16_t *y, uint16_t *sum, float *mean, float *rstd,
                                 float *var, const uint16_t *x, const uint16_t *add,
                                 gn_add_shape add_shape, const uint16_t *gamma,
                                 const uint16_t *beta, const gn_desc *d)
    gn_status gn_forward_add_bf16(uint16_t *y, uint16_t *sum, float *mean, float *rstd,
                                  float *var, const uint16_t *x, const uint16_t *add,
                                  gn_add_shape add_shape, const uint16_t *gamma,
                                  const uint16_t *beta, const gn_desc *d)
    gn_status gn_normalize_f32(float *y, const float *x, const float *mean, const float *rstd,
                               const float *gamma, const float *beta, const gn_desc *d)
    gn_status gn_normalize_f64(double *y, const double *x, const double *mean, const double *rstd,
                               const double *gamma, const double *beta, const gn_desc *d)
    gn_status gn_normalize_f16(uint16_t *y, const uint16_t *x, const float *mean, const float *rstd,
                               const uint16_t *gamma, const uint16_t *beta, const gn_desc *d)
    gn_status gn_normalize_bf16(uint16_t *y, const uint16_t *x, const float *mean, const float *rstd,
                                const uint16_t *gamma, const uint16_t *beta, const gn_desc *d)
    gn_status gn_backward_f32(float *dx, float *dgamma, float *dbeta, const float *dy,
                              const float *x, const float *mean, const float *rstd,
                              const float *gamma, const gn_desc *d)
    gn_status gn_backward_f64(double *dx, double *dgamma, double *dbeta, const double *dy,
                              const double *x, const double *mean, const double *rstd,
                              const double *gamma, const gn_desc *d)
    gn_status gn_backward_f16(uint16_t *dx, uint16_t *dgamma, uint16_t *dbeta, const uint16_t *dy,
                              const uint16_t *x, const float *mean, const float *rstd,
                              const uint16_t *gamma, const gn_desc *d)
    gn_status gn_backward_bf16(uint16_t *dx, uint16_t *dgamma, uint16_t *dbeta, const uint16_t *dy,
                               const uint16_t *x, const float *mean, const float *rstd,
                               const uint16_t *gamma, const gn_desc *d)
    gn_status gn_backward_ex_f32(float *dx, float *dgamma, float *dbeta, const float *dy,
                                 const float *x, const float *mean, const float *rstd,
                                 const float *gamma, const float *beta, const gn_desc *d)
    gn_status gn_backward_ex_f64(double *dx, double *dgamma, double *dbeta, const double *dy,
                                 const double *x, const double *mean, const double *rstd,
                                 const double *gamma, const double *beta, const gn_desc *d)
    gn_status gn_backward_ex_f16(uint16_t *dx, uint16_t *dgamma, uint16_t *dbeta,
                                 const uint16_t *dy, const uint16_t *x, const float *mean,
                                 const float *rstd, const uint16_t *gamma, const uint16_t *beta,
                                 const gn_desc *d)
    gn_status gn_backward_ex_bf16(uint16_t *dx, uint16_t *dgamma, uint16_t *dbeta,
                                  const uint16_t *dy, const uint16_t *x, const float *mean,
                                  const float *rstd, const uint16_t *gamma, const uint16_t *beta,
                                  const gn_desc *d)
    gn_status gn_backward_frozen_f32(float *dx, float *dgamma, float *dbeta, const float *dy,
                                     const float *x, const float *mean, const float *rstd,
                                     const float *gamma, const float *beta, const gn_desc *d)
    gn_status gn_backward_frozen_f64(double *dx, double *dgamma, double *dbeta,
                                     const double *dy, const double *x, const double *mean,
                                     const double *rstd, const double *gamma,
                                     const double *beta, const gn_desc *d)
    gn_status gn_backward_frozen_f16(uint16_t *dx, uint16_t *dgamma, uint16_t *dbeta,
                                     const uint16_t *dy, const uint16_t *x, const float *mean,
                                     const float *rstd, const uint16_t *gamma,
                                     const uint16_t *beta, const gn_desc *d)
    gn_status gn_backward_frozen_bf16(uint16_t *dx, uint16_t *dgamma, uint16_t *dbeta,
                                      const uint16_t *dy, const uint16_t *x, const float *mean,
                                      const float *rstd, const uint16_t *gamma,
                                      const uint16_t *beta, const gn_desc *d)
    # the stages (gn_native.h: "The stages")
    int GN_PARTIAL_LEN
    int GN_DSUM_LEN
    gn_status gn_stats_merge(double *mean, double *rstd, double *var, const double *partial,
                             int64_t m, int64_t k, double eps)
    gn_status gn_stats_partial_f32(double *partial, const float *x, const gn_desc *d)
    gn_status gn_normalize_stats_f32(float *y, const float *x, const double *mean,
                                     const double *rstd, const float *gamma, const float *beta,
                                     const gn_desc *d)
    gn_status gn_backward_reduce_f32(double *sums, const float *dy, const float *x,
                                     const double *mean, const double *rstd, const float *gamma,
                                     const float *beta, const gn_desc *d)
    gn_status gn_backward_apply_f32(float *dx, const float *dy, const float *x, const double *mean,
                                    const double *rstd, const double *sums, int64_t sums_n,
                                    const float *gamma, const float *beta, const gn_desc *d)
    gn_status gn_param_grads_f32(float *dgamma, float *dbeta, const double *sums,
                                 const double *rstd, int64_t sums_n, const gn_desc *d)
    gn_status gn_stats_partial_f64(double *partial, const double *x, const gn_desc *d)
    gn_status gn_normalize_stats_f64(double *y, const double *x, const double *mean,
                                     const double *rstd, const double *gamma, const double *beta,
                                     const gn_desc *d)
    gn_status gn_backward_reduce_f64(double *sums, const double *dy, const double *x,
                                     const double *mean, const double *rstd, const double *gamma,
                                     const double *beta, const gn_desc *d)
    gn_status gn_backward_apply_f64(double *dx, const double *dy, const double *x, const double *mean,
                                    const double *rstd, const double *sums, int64_t sums_n,
                                    const double *gamma, const double *beta, const gn_desc *d)
    gn_status gn_param_grads_f64(double *dgamma, double *dbeta, const double *sums,
                                 const double *rstd, int64_t sums_n, const gn_desc *d)
    gn_status gn_stats_partial_f16(double *partial, const uint16_t *x, const gn_desc *d)
    gn_status gn_normalize_stats_f16(uint16_t *y, const uint16_t *x, const double *mean,
                                     const double *rstd, const uint16_t *gamma, const uint16_t *beta,
                                     const gn_desc *d)
    gn_status gn_backward_reduce_f16(double *sums, const uint16_t *dy, const uint16_t *x,
                                     const double *mean, const double *rstd, const uint16_t *gamma,
                                     const uint16_t *beta, const gn_desc *d)
    gn_status gn_backward_apply_f16(uint16_t *dx, const uint16_t *dy, const uint16_t *x, const double *mean,
                                    const double *rstd, const double *sums, int64_t sums_n,
                                    const uint16_t *gamma, const uint16_t *beta, const gn_desc *d)
    gn_status gn_param_grads_f16(uint16_t *dgamma, uint16_t *dbeta, const double *sums,
                                 const double *rstd, int64_t sums_n, const gn_desc *d)
    gn_status gn_stats_partial_bf16(double *partial, const uint16_t *x, const gn_desc *d)
    gn_status gn_normalize_stats_bf16(uint16_t *y, const uint16_t *x, const double *mean,
                                     const double *rstd, const uint16_t *gamma, const uint16_t *beta,
                                     const gn_desc *d)
    gn_status gn_backward_reduce_bf16(double *sums, const uint16_t *dy, const uint16_t *x,
                                     const double *mean, const double *rstd, const uint16_t *gamma,
                                     const uint16_t *beta, const gn_desc *d)
    gn_status gn_backward_apply_bf16(uint16_t *dx, const uint16_t *dy, const uint16_t *x, const double *mean,
                                    const double *rstd, const double *sums, int64_t sums_n,
                                    const uint16_t *gamma, const uint16_t *beta, const gn_desc *d)
    gn_status gn_param_grads_bf16(uint16_t *dgamma, uint16_t *dbeta, const double *sums,
                                 const double *rstd, int64_t sums_n, const gn_desc *d)
    const char *gn_strerror(gn_status s)
    const char *gn_version()
    void gn_set_num_threads(int n)
    int gn_get_num_threads()
    const char *gn_isa()
    int gn_set_isa(const char *name)
    int gn_openmp_enabled()
