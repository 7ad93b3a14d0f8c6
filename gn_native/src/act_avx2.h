/* AVX2 (+FMA) versions of act.h's float activations, 8 lanes at a time.
 *
 * Include only from a file compiled with -mavx2 -mfma (simd_avx2.c; the
 * flags of _build_config.ISA_FLAGS["avx2"]), after act.h's constants are
 * visible (this header includes act.h).  Every function performs exactly the
 * operations of its scalar twin in act.h, in the same order: a scalar fmaf /
 * fma is _mm256_fmadd_ps / _pd, a scalar `c ? a : b` is a compare and a
 * blend computing both sides, the double-computed functions (gelu, gelu_tanh,
 * erf, tanh) convert each half of the vector to 4 doubles, which is exact,
 * and round back once with _mm256_cvtpd_ps as the scalar (float) cast does.
 * So results are bit-identical to act.h for every input (NaNs: both NaN;
 * the payload can differ, as the compiler may swap the operands of a scalar
 * commutative operation); tests/c/test_act.c checks this over all floats.
 */
#ifndef GN_ACT_AVX2_H
#define GN_ACT_AVX2_H

#include <immintrin.h>
#include "act.h"

/* ---- helpers ---- */
#define GN_V8(c) _mm256_set1_ps(c)
#define GN_V4(c) _mm256_set1_pd(c)
/* c ? a : b, per lane */
static inline __m256 gn_av_sel(__m256 c, __m256 a, __m256 b) { return _mm256_blendv_ps(b, a, c); }
static inline __m256d gn_av_seld(__m256d c, __m256d a, __m256d b) { return _mm256_blendv_pd(b, a, c); }
static inline __m256 gn_av_abs(__m256 x) { return _mm256_andnot_ps(GN_V8(-0.0f), x); }
static inline __m256d gn_av_absd(__m256d x) { return _mm256_andnot_pd(GN_V4(-0.0), x); }

static inline __m256 gn_av_pow2f(__m256i k)
{
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(k, _mm256_set1_epi32(127)), 23));
}

static inline __m256 gn_av_scalef(__m256 v, __m256i k)
{
    __m256i k1 = _mm256_srai_epi32(k, 1), k2 = _mm256_sub_epi32(k, k1);
    return _mm256_mul_ps(_mm256_mul_ps(v, gn_av_pow2f(k1)), gn_av_pow2f(k2));
}

/* float -> two halves of 4 doubles, and back */
static inline __m256d gn_av_lo(__m256 v) { return _mm256_cvtps_pd(_mm256_castps256_ps128(v)); }
static inline __m256d gn_av_hi(__m256 v) { return _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1)); }
static inline __m256 gn_av_join(__m256d lo, __m256d hi)
{
    return _mm256_insertf128_ps(_mm256_castps128_ps256(_mm256_cvtpd_ps(lo)), _mm256_cvtpd_ps(hi), 1);
}

/* ---- float exp ---- */
static inline void gn_av_expf_reduce(__m256 x, __m256 *q, __m256i *k)
{
    __m256 t = _mm256_fmadd_ps(x, GN_V8(GN_LOG2E_F), GN_V8(GN_EXPF_MAGIC));
    __m256 kf = _mm256_sub_ps(t, GN_V8(GN_EXPF_MAGIC));
    __m256 r = _mm256_fmadd_ps(kf, GN_V8(-GN_LN2_HI_F), x);
    r = _mm256_fmadd_ps(kf, GN_V8(-GN_LN2_LO_F), r);
    __m256 p = _mm256_fmadd_ps(GN_V8(GN_EXPF_C6), r, GN_V8(GN_EXPF_C5));
    p = _mm256_fmadd_ps(p, r, GN_V8(GN_EXPF_C4));
    p = _mm256_fmadd_ps(p, r, GN_V8(GN_EXPF_C3));
    p = _mm256_fmadd_ps(p, r, GN_V8(GN_EXPF_C2));
    *q = _mm256_fmadd_ps(_mm256_mul_ps(r, r), p, r);
    *k = _mm256_sub_epi32(_mm256_castps_si256(t), _mm256_set1_epi32((int32_t)gn_act_fbits(GN_EXPF_MAGIC)));
}

/* x < lo ? lo : x, then x > hi ? hi : x (NaN passes) */
static inline __m256 gn_av_clamp(__m256 x, float lo, float hi)
{
    x = gn_av_sel(_mm256_cmp_ps(x, GN_V8(lo), _CMP_LT_OQ), GN_V8(lo), x);
    return gn_av_sel(_mm256_cmp_ps(x, GN_V8(hi), _CMP_GT_OQ), GN_V8(hi), x);
}

static inline void gn_av_expf_parts(__m256 x, __m256 *q, __m256i *k)
{
    gn_av_expf_reduce(gn_av_clamp(x, GN_EXPF_LO, GN_EXPF_HI), q, k);
}

static inline __m256 gn_act_expf_avx2(__m256 x)
{
    __m256 q;
    __m256i k;
    gn_av_expf_parts(x, &q, &k);
    return gn_av_scalef(_mm256_add_ps(GN_V8(1.0f), q), k);
}

/* ---- double exp ---- */
static inline void gn_av_expd_parts(__m256d x, __m256d *q, __m256d *s)
{
    x = gn_av_seld(_mm256_cmp_pd(x, GN_V4(GN_EXPD_LO), _CMP_LT_OQ), GN_V4(GN_EXPD_LO), x);
    x = gn_av_seld(_mm256_cmp_pd(x, GN_V4(GN_EXPD_HI), _CMP_GT_OQ), GN_V4(GN_EXPD_HI), x);
    __m256d t = _mm256_fmadd_pd(x, GN_V4(GN_LOG2E_D), GN_V4(GN_EXPD_MAGIC));
    __m256d kf = _mm256_sub_pd(t, GN_V4(GN_EXPD_MAGIC));
    __m256d r = _mm256_fmadd_pd(kf, GN_V4(-GN_LN2_HI_D), x);
    r = _mm256_fmadd_pd(kf, GN_V4(-GN_LN2_LO_D), r);
    __m256d p = _mm256_fmadd_pd(GN_V4(GN_EXPD_C8), r, GN_V4(GN_EXPD_C7));
    p = _mm256_fmadd_pd(p, r, GN_V4(GN_EXPD_C6));
    p = _mm256_fmadd_pd(p, r, GN_V4(GN_EXPD_C5));
    p = _mm256_fmadd_pd(p, r, GN_V4(GN_EXPD_C4));
    p = _mm256_fmadd_pd(p, r, GN_V4(GN_EXPD_C3));
    p = _mm256_fmadd_pd(p, r, GN_V4(GN_EXPD_C2));
    *q = _mm256_fmadd_pd(_mm256_mul_pd(r, r), p, r);
    __m256i k = _mm256_sub_epi64(_mm256_castpd_si256(t),
                                 _mm256_set1_epi64x((long long)gn_act_dbits(GN_EXPD_MAGIC)));
    *s = _mm256_castsi256_pd(_mm256_slli_epi64(_mm256_add_epi64(k, _mm256_set1_epi64x(1023)), 52));
}

/* ---- normal CDF ---- */
static inline __m256d gn_av_phi_center(__m256d zz)
{
    __m256d p = _mm256_fmadd_pd(GN_V4(GN_PHI_P7), zz, GN_V4(GN_PHI_P6));
    p = _mm256_fmadd_pd(p, zz, GN_V4(GN_PHI_P5));
    p = _mm256_fmadd_pd(p, zz, GN_V4(GN_PHI_P4));
    p = _mm256_fmadd_pd(p, zz, GN_V4(GN_PHI_P3));
    p = _mm256_fmadd_pd(p, zz, GN_V4(GN_PHI_P2));
    p = _mm256_fmadd_pd(p, zz, GN_V4(GN_PHI_P1));
    return _mm256_fmadd_pd(p, zz, GN_V4(GN_PHI_P0));
}

static inline __m256d gn_av_phi_tail(__m256d t)
{
    t = gn_av_seld(_mm256_cmp_pd(t, GN_V4(GN_PHI_TMAX), _CMP_GT_OQ), GN_V4(GN_PHI_TMAX), t);
    __m256d n = _mm256_fmadd_pd(GN_V4(GN_PHI_N4), t, GN_V4(GN_PHI_N3));
    n = _mm256_fmadd_pd(n, t, GN_V4(GN_PHI_N2));
    n = _mm256_fmadd_pd(n, t, GN_V4(GN_PHI_N1));
    n = _mm256_fmadd_pd(n, t, GN_V4(GN_PHI_N0));
    __m256d d = _mm256_fmadd_pd(GN_V4(GN_PHI_D5), t, GN_V4(GN_PHI_D4));
    d = _mm256_fmadd_pd(d, t, GN_V4(GN_PHI_D3));
    d = _mm256_fmadd_pd(d, t, GN_V4(GN_PHI_D2));
    d = _mm256_fmadd_pd(d, t, GN_V4(GN_PHI_D1));
    d = _mm256_fmadd_pd(d, t, GN_V4(1.0));
    return _mm256_div_pd(n, d);
}

static inline __m256d gn_av_phi(__m256d z, __m256d *E)
{
    __m256d zz = _mm256_mul_pd(z, z), q, s;
    gn_av_expd_parts(_mm256_mul_pd(GN_V4(-0.5), zz), &q, &s);
    *E = _mm256_fmadd_pd(s, q, s);
    __m256d t = gn_av_absd(z);
    __m256d center = _mm256_fmadd_pd(z, gn_av_phi_center(zz), GN_V4(0.5));
    __m256d tail = _mm256_mul_pd(*E, gn_av_phi_tail(t));
    __m256d side = gn_av_seld(_mm256_cmp_pd(z, _mm256_setzero_pd(), _CMP_LT_OQ), tail,
                              _mm256_sub_pd(GN_V4(1.0), tail));
    return gn_av_seld(_mm256_cmp_pd(t, GN_V4(GN_PHI_SPLIT), _CMP_LE_OQ), center, side);
}

/* ---- erf, tanh ---- */
static inline __m256d gn_av_erf4(__m256d x)
{
    __m256d z = _mm256_mul_pd(x, GN_V4(GN_SQRT2_D)), zz = _mm256_mul_pd(z, z), t = gn_av_absd(z);
    __m256d center = _mm256_mul_pd(_mm256_mul_pd(GN_V4(2.0), z), gn_av_phi_center(zz));
    __m256d q, s;
    gn_av_expd_parts(_mm256_mul_pd(GN_V4(-0.5), zz), &q, &s);
    __m256d tail = _mm256_mul_pd(_mm256_fmadd_pd(s, q, s), gn_av_phi_tail(t));
    __m256d r = _mm256_fmadd_pd(GN_V4(-2.0), tail, GN_V4(1.0));
    r = gn_av_seld(_mm256_cmp_pd(z, _mm256_setzero_pd(), _CMP_LT_OQ), _mm256_xor_pd(r, GN_V4(-0.0)), r);
    return gn_av_seld(_mm256_cmp_pd(t, GN_V4(GN_PHI_SPLIT), _CMP_LE_OQ), center, r);
}

static inline __m256 gn_act_erff_avx2(__m256 x)
{
    return gn_av_join(gn_av_erf4(gn_av_lo(x)), gn_av_erf4(gn_av_hi(x)));
}

/* -m / (2 + m), m = expm1(-2 |x|); the sign is put back on the float */
static inline __m256d gn_av_tanh4(__m256d x)
{
    __m256d a = _mm256_mul_pd(GN_V4(-2.0), gn_av_absd(x)), q, s;
    gn_av_expd_parts(a, &q, &s);
    __m256d m = _mm256_fmadd_pd(s, q, _mm256_sub_pd(s, GN_V4(1.0)));
    return _mm256_div_pd(_mm256_xor_pd(m, GN_V4(-0.0)), _mm256_add_pd(GN_V4(2.0), m));
}

static inline __m256 gn_act_tanhf_avx2(__m256 x)
{
    __m256 r = gn_av_join(gn_av_tanh4(gn_av_lo(x)), gn_av_tanh4(gn_av_hi(x)));
    return _mm256_or_ps(gn_av_abs(r), _mm256_and_ps(x, GN_V8(-0.0f)));
}

/* ---- non-finite z: a = z > 0 ? z : z - z, a' = z - z; y elsewhere ---- */
static inline __m256 gn_av_finite_or(__m256 z, __m256 y, __m256 other)
{
    return gn_av_sel(_mm256_cmp_ps(gn_av_abs(z), GN_V8(FLT_MAX), _CMP_LE_OQ), y, other);
}

static inline __m256 gn_av_nonfinite(__m256 z)
{
    return gn_av_sel(_mm256_cmp_ps(z, _mm256_setzero_ps(), _CMP_GT_OQ), z, _mm256_sub_ps(z, z));
}

/* ---- SiLU ---- */
static inline __m256 gn_av_silu_den(__m256 z, __m256 *q, __m256i *j, __m256 *s, __m256 *c)
{
    __m256 x = gn_av_clamp(_mm256_xor_ps(z, GN_V8(-0.0f)), -GN_SILU_XMAX, GN_SILU_XMAX);
    __m256i k, kmin = _mm256_set1_epi32(GN_SILU_KMIN);
    gn_av_expf_reduce(x, q, &k);
    *j = _mm256_max_epi32(k, _mm256_setzero_si256());
    __m256i a = _mm256_max_epi32(_mm256_sub_epi32(k, *j), kmin);
    __m256i b = _mm256_max_epi32(_mm256_sub_epi32(_mm256_setzero_si256(), *j), kmin);
    *s = gn_av_pow2f(a);
    *c = gn_av_pow2f(b);
    __m256 sc = _mm256_add_ps(*s, *c);
    /* max_ps(a, b) = a > b ? a : b and min_ps(a, b) = a < b ? a : b, as act.h */
    __m256 hi = _mm256_max_ps(*s, *c), lo = _mm256_min_ps(*s, *c);
    __m256 err = _mm256_add_ps(_mm256_sub_ps(hi, sc), lo);
    __m256 inv = gn_av_pow2f(_mm256_sub_epi32(_mm256_setzero_si256(), a));
    __m256 jpos = _mm256_castsi256_ps(_mm256_cmpgt_epi32(*j, _mm256_setzero_si256()));
    __m256 qe = gn_av_sel(jpos, _mm256_fmadd_ps(err, inv, *q), *q);
    return _mm256_fmadd_ps(*s, qe, sc);
}

/* z < -112 ? z * 0 - 112 : z  (-inf: NaN) */
static inline __m256 gn_av_clamp_nan_lo(__m256 z)
{
    return gn_av_sel(_mm256_cmp_ps(z, GN_V8(-GN_SILU_XMAX), _CMP_LT_OQ),
                     _mm256_sub_ps(_mm256_mul_ps(z, _mm256_setzero_ps()), GN_V8(GN_SILU_XMAX)), z);
}

static inline __m256 gn_av_silu_wide(__m256 z)
{
    __m256 q, s, c;
    __m256i j;
    __m256 D = gn_av_silu_den(z, &q, &j, &s, &c);
    __m256 zc = gn_av_clamp_nan_lo(z);
    return gn_av_scalef(_mm256_div_ps(zc, D), _mm256_sub_epi32(_mm256_setzero_si256(), j));
}

static inline __m256 gn_av_silu_grad_wide(__m256 z)
{
    __m256 q, s, c;
    __m256i j;
    __m256 D = gn_av_silu_den(z, &q, &j, &s, &c);
    __m256 zc = gn_av_clamp_nan_lo(z);
    zc = gn_av_sel(_mm256_cmp_ps(zc, GN_V8(GN_SILU_ZMAX), _CMP_GT_OQ),
                   _mm256_add_ps(_mm256_mul_ps(zc, _mm256_setzero_ps()), GN_V8(GN_SILU_ZMAX)), zc);
    __m256i mj = _mm256_sub_epi32(_mm256_setzero_si256(), j);
    __m256 t = _mm256_mul_ps(s, _mm256_add_ps(GN_V8(1.0f), zc));
    __m256 Nt = _mm256_fmadd_ps(t, q, _mm256_add_ps(t, c));
    __m256 Nd = _mm256_fmadd_ps(zc, _mm256_fmadd_ps(s, q, s), D);
    __m256 jpos = _mm256_castsi256_ps(_mm256_cmpgt_epi32(j, _mm256_setzero_si256()));
    __m256 N = gn_av_sel(jpos, Nt, Nd);
    return gn_av_scalef(_mm256_div_ps(N, _mm256_mul_ps(D, D)), mj);
}

/* the fast path (act.h): all 8 lanes in [-16, 80] or NaN; else the lanes
 * outside take the wide path, per lane, as the scalar does */
static inline __m256 gn_av_silu_outside(__m256 z)
{
    return _mm256_or_ps(_mm256_cmp_ps(z, GN_V8(GN_SILU_FAST_LO), _CMP_LT_OQ),
                        _mm256_cmp_ps(z, GN_V8(GN_SILU_FAST_HI), _CMP_GT_OQ));
}

static inline __m256 gn_av_silu_fast(__m256 z)
{
    __m256 q;
    __m256i k;
    gn_av_expf_reduce(_mm256_xor_ps(z, GN_V8(-0.0f)), &q, &k);
    __m256 s = gn_av_pow2f(k);
    return _mm256_div_ps(z, _mm256_fmadd_ps(s, q, _mm256_add_ps(s, GN_V8(1.0f))));
}

static inline __m256 gn_av_silu_grad_fast(__m256 z)
{
    __m256 q;
    __m256i k;
    gn_av_expf_reduce(_mm256_xor_ps(z, GN_V8(-0.0f)), &q, &k);
    __m256 s = gn_av_pow2f(k);
    __m256 D = _mm256_fmadd_ps(s, q, _mm256_add_ps(s, GN_V8(1.0f)));
    __m256 t = _mm256_mul_ps(s, _mm256_add_ps(GN_V8(1.0f), z));
    __m256 Nt = _mm256_fmadd_ps(t, q, _mm256_add_ps(t, GN_V8(1.0f)));
    __m256 Nd = _mm256_fmadd_ps(z, _mm256_fmadd_ps(s, q, s), D);
    __m256 kpos = _mm256_castsi256_ps(_mm256_cmpgt_epi32(k, _mm256_setzero_si256()));
    return _mm256_div_ps(gn_av_sel(kpos, Nt, Nd), _mm256_mul_ps(D, D));
}

static inline __m256 gn_act_silu_avx2(__m256 z)
{
    __m256 out = gn_av_silu_outside(z), y = gn_av_silu_fast(z);
    if (_mm256_movemask_ps(out))
        y = gn_av_sel(out, gn_av_silu_wide(z), y);
    return y;
}

static inline __m256 gn_act_silu_grad_avx2(__m256 z)
{
    __m256 out = gn_av_silu_outside(z), y = gn_av_silu_grad_fast(z);
    if (_mm256_movemask_ps(out))
        y = gn_av_sel(out, gn_av_silu_grad_wide(z), y);
    return y;
}

/* ---- GELU (erf) ---- */
static inline __m256d gn_av_gelu4(__m256d z)
{
    __m256d E;
    return _mm256_mul_pd(z, gn_av_phi(z, &E));
}

static inline __m256d gn_av_gelu_grad4(__m256d z)
{
    __m256d E;
    __m256d P = gn_av_phi(z, &E);
    return _mm256_fmadd_pd(_mm256_mul_pd(z, E), GN_V4(GN_INV_SQRT_2PI_D), P);
}

static inline __m256 gn_act_gelu_avx2(__m256 z)
{
    __m256 y = gn_av_join(gn_av_gelu4(gn_av_lo(z)), gn_av_gelu4(gn_av_hi(z)));
    return gn_av_finite_or(z, y, gn_av_nonfinite(z));
}

static inline __m256 gn_act_gelu_grad_avx2(__m256 z)
{
    __m256 y = gn_av_join(gn_av_gelu_grad4(gn_av_lo(z)), gn_av_gelu_grad4(gn_av_hi(z)));
    return gn_av_finite_or(z, y, _mm256_sub_ps(z, z));
}

/* ---- GELU (tanh) ---- */
static inline __m256d gn_av_sigmoid_d2(__m256d w, __m256d *one_minus)
{
    __m256d q, s;
    gn_av_expd_parts(_mm256_xor_pd(gn_av_absd(w), GN_V4(-0.0)), &q, &s);
    __m256d e = _mm256_fmadd_pd(s, q, s);
    __m256d den = _mm256_add_pd(GN_V4(1.0), e);
    __m256d a = _mm256_div_pd(GN_V4(1.0), den), b = _mm256_div_pd(e, den);
    __m256d neg = _mm256_cmp_pd(w, _mm256_setzero_pd(), _CMP_LT_OQ);
    *one_minus = gn_av_seld(neg, a, b);
    return gn_av_seld(neg, b, a);
}

static inline __m256d gn_av_gelu_tanh4(__m256d z)
{
    __m256d c;
    __m256d w = _mm256_mul_pd(z, _mm256_fmadd_pd(GN_V4(GN_GELU_TANH_C3), _mm256_mul_pd(z, z),
                                                 GN_V4(GN_GELU_TANH_C1)));
    return _mm256_mul_pd(z, gn_av_sigmoid_d2(w, &c));
}

static inline __m256d gn_av_gelu_tanh_grad4(__m256d z)
{
    __m256d c, zz = _mm256_mul_pd(z, z);
    __m256d w = _mm256_mul_pd(z, _mm256_fmadd_pd(GN_V4(GN_GELU_TANH_C3), zz, GN_V4(GN_GELU_TANH_C1)));
    __m256d sg = gn_av_sigmoid_d2(w, &c);
    __m256d wp = _mm256_fmadd_pd(GN_V4(GN_GELU_TANH_C3x3), zz, GN_V4(GN_GELU_TANH_C1));
    return _mm256_mul_pd(sg, _mm256_fmadd_pd(_mm256_mul_pd(z, c), wp, GN_V4(1.0)));
}

static inline __m256 gn_act_gelu_tanh_avx2(__m256 z)
{
    __m256 y = gn_av_join(gn_av_gelu_tanh4(gn_av_lo(z)), gn_av_gelu_tanh4(gn_av_hi(z)));
    return gn_av_finite_or(z, y, gn_av_nonfinite(z));
}

static inline __m256 gn_act_gelu_tanh_grad_avx2(__m256 z)
{
    __m256 y = gn_av_join(gn_av_gelu_tanh_grad4(gn_av_lo(z)), gn_av_gelu_tanh_grad4(gn_av_hi(z)));
    return gn_av_finite_or(z, y, _mm256_sub_ps(z, z));
}

/* ---- ReLU ---- */
static inline __m256 gn_act_relu_avx2(__m256 z)
{
    return _mm256_andnot_ps(_mm256_cmp_ps(z, _mm256_setzero_ps(), _CMP_LT_OQ), z);
}

static inline __m256 gn_act_relu_grad_avx2(__m256 z)
{
    return _mm256_andnot_ps(_mm256_cmp_ps(z, _mm256_setzero_ps(), _CMP_LE_OQ), GN_V8(1.0f));
}

/* ---- dispatch by id ---- */
static inline __m256 gn_act_apply_avx2(int act, __m256 z)
{
    switch (act) {
    case GN_ACT_SILU: return gn_act_silu_avx2(z);
    case GN_ACT_GELU: return gn_act_gelu_avx2(z);
    case GN_ACT_GELU_TANH: return gn_act_gelu_tanh_avx2(z);
    case GN_ACT_RELU: return gn_act_relu_avx2(z);
    default: return z;
    }
}

static inline __m256 gn_act_grad_avx2(int act, __m256 z)
{
    switch (act) {
    case GN_ACT_SILU: return gn_act_silu_grad_avx2(z);
    case GN_ACT_GELU: return gn_act_gelu_grad_avx2(z);
    case GN_ACT_GELU_TANH: return gn_act_gelu_tanh_grad_avx2(z);
    case GN_ACT_RELU: return gn_act_relu_grad_avx2(z);
    default: return GN_V8(1.0f);
    }
}

#endif /* GN_ACT_AVX2_H */
