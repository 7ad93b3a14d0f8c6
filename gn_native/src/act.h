/* Activations fused after GroupNorm's affine step (issue 13): the scalar
 * reference, per value, with their derivatives.
 *
 *   silu(z)      = z * sigmoid(z)                      silu'      = s (1 + z (1 - s))
 *   gelu(z)      = z * Phi(z), Phi the normal CDF      gelu'      = Phi(z) + z phi(z)
 *   gelu_tanh(z) = z * sigmoid(w), w = 2 sqrt(2/pi) (z + 0.044715 z^3)
 *                 (= 0.5 z (1 + tanh(w / 2)), torch's approximate='tanh')
 *                                                       gelu_tanh' = s (1 + z (1 - s) w'(z))
 *   relu(z)      = z < 0 ? 0 : z                       relu'      = z <= 0 ? 0 : 1
 *
 * Two families:
 *   - float (`_f`): for float32, float16 and bfloat16 data, computed from a
 *     float z.  act_avx2.h has the same functions on 8 lanes and gives the
 *     same bits for every input: both use only +, -, *, /, fmaf/fma (written
 *     out; the core is built with -ffp-contract=off), compares and selects,
 *     and integer bit operations for the 2^k of exp -- never libm's expf,
 *     erff or tanhf, which differ between machines and have no SIMD twin.
 *     SiLU (the activation whose speed matters, issue 13 item 5) is computed
 *     in float throughout.  GELU, GELU-tanh, erf and tanh are computed in
 *     double from the float input (exact conversion) with our own double exp
 *     and normal-CDF approximations, accurate to ~1e-10, and rounded to float
 *     once: that keeps their long tails (gelu(-10) = -7.6e-23 is a normal
 *     float, and its exp(-z^2/2) magnifies any error in z^2 fifty-fold) within
 *     about half an ulp without double-float tricks, at twice the arithmetic
 *     of a float version.  The double operations are as exactly reproducible
 *     in AVX2 (__m256d) as the float ones.
 *   - double (`_d`): for float64 data.  Scalar only (float64 has no SIMD path
 *     in the core), so these may and do call libm's exp and erfc, with the
 *     arguments' rounding errors carried to first order where a tail would
 *     magnify them (see gn_act_Phi_d and gn_act_gelu_tanh_w).
 *
 * Special values follow torch 2.13 on the CPU (F.silu, F.gelu(approximate=
 * 'none'/'tanh'), F.relu and their autograd gradients):
 *   - a(+inf) = +inf and a(-inf) = NaN for silu, gelu and gelu_tanh (torch
 *     computes -inf * 0); a'(+-inf) = NaN for the three (inf * 0 again);
 *     NaN in gives NaN out.  We keep torch's NaNs on purpose: an inf reaching
 *     the activation is a bug upstream, and matching torch keeps the fused op
 *     a drop-in replacement.
 *   - relu(-0) = -0, relu(NaN) = NaN, relu'(0) = relu'(-0) = 0, relu'(NaN) = 1
 *     (torch's threshold_backward passes the gradient where z <= 0 is false).
 *   - finite inputs get the mathematically right value rounded: for huge |z|,
 *     a'(z) is 1 or (-)0 and a(z) is z or -0, where torch's float32
 *     gelu_tanh' gives NaN for |z| > ~1e13 (its z^3 overflows); we follow
 *     torch's float64 results there.  Tiny z gives a(z) = z/2 rounded, as
 *     torch.  Zeros keep IEEE signs (gelu(-0) = -0, silu(-1e30) = -0, as
 *     torch's scalar and float64 paths; torch's vectorized float32 gelu
 *     returns +0 there).
 *   - torch's float32 kernels flush some tiny but representable results to 0
 *     (silu(-90) = -7.4e-38, gelu(-10) = -7.6e-23); we return them.
 *
 * Constants: the polynomial and rational coefficients below were fitted in
 * float64 with numpy against mpmath references (40 digits): Lawson's
 * iteratively reweighted least squares on 300-400 Chebyshev nodes, which
 * converges to the minimax (equioscillating) fit; the rational one by the
 * linearized (Sanathanan-Koerner) iteration with the same reweighting.  Each
 * fit's max relative error is noted beside it, checked on a dense grid;
 * tests/c/test_act.c measures the functions themselves over all floats.
 * The fit, to reproduce it (python; numpy, mpmath with mp.dps = 40):
 *     def lawson(A, f, w, iters=60):   # min max |w (A c - f)| over the nodes
 *         lw = np.ones(len(f)) / len(f)
 *         for _ in range(iters):
 *             sw = np.sqrt(lw) * w
 *             c = np.linalg.lstsq(A * sw[:, None], f * sw, rcond=None)[0]
 *             e = np.abs((A @ c - f) * w); lw *= e; lw /= lw.sum()
 *         return c
 *   exp:  400 Chebyshev nodes r of [-L, L], L = 1.0005 ln2 / 2; A = [r^j],
 *         j = 0..4 (float; 0..6 double); f = (expm1(r) - r) / r^2,
 *         w = r^2 / e^r (the error of e^r, relative)
 *   Phi:  300 Chebyshev nodes z of [0, 1.5]; A = [z^2j], j = 0..7;
 *         f = (ncdf(z) - 1/2) / z, w = 1 / f
 *   tail: 400 Chebyshev nodes t of [1.5, 16], G = ncdf(-t) exp(t^2 / 2);
 *         N(t) - G (D(t) - 1) = G solved by weighted least squares (N of
 *         degree 4, D of degree 5 with D(0) = 1), weights the Lawson weights
 *         over (D_previous G), 40 rounds, the best kept.
 * Measured max errors (float32 ulps; tests/c/test_act.c, every 101st float32
 * bit pattern): exp 0.98, erf 0.50, tanh 0.50, silu 1.66, gelu 0.51,
 * gelu_tanh 0.50; silu' 4.04, gelu' 0.51, gelu_tanh' 0.50 where |a'| >= 2^-6
 * (below, absolute: 3.7e-9, 4.8e-10, 4.7e-10).  SiLU alone over every 5th
 * float32 with |z| < 120 (4.5e8 values): silu 1.69, silu' 4.04.
 */
#ifndef GN_ACT_H
#define GN_ACT_H

#include <float.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

/* The activation ids.  They are meant to move into the public gn_native.h
 * unchanged (an `activation` field of gn_desc); whichever header defines
 * them first sets GN_ACTIVATION_DEFINED so that the other one skips them. */
#ifndef GN_ACTIVATION_DEFINED
#define GN_ACTIVATION_DEFINED
typedef enum gn_activation {
    GN_ACT_NONE = 0,
    GN_ACT_SILU = 1,
    GN_ACT_GELU = 2,        /* erf form */
    GN_ACT_GELU_TANH = 3,   /* torch's approximate='tanh' */
    GN_ACT_RELU = 4
} gn_activation;
#endif
#define GN_ACT_COUNT 5

/* ---- bits ---- */
static inline uint32_t gn_act_fbits(float x) { uint32_t u; memcpy(&u, &x, 4); return u; }
static inline float gn_act_ffrom(uint32_t u) { float x; memcpy(&x, &u, 4); return x; }
static inline uint64_t gn_act_dbits(double x) { uint64_t u; memcpy(&u, &x, 8); return u; }
static inline double gn_act_dfrom(uint64_t u) { double x; memcpy(&x, &u, 8); return x; }

/* 2^k as a float, for k in [-126, 127] */
static inline float gn_act_pow2f(int32_t k) { return gn_act_ffrom((uint32_t)(k + 127) << 23); }

/* v * 2^k for k in [-252, 254], rounded once where v * 2^k1 is normal (so for
 * every caller here: their v are far from FLT_MIN when k is very negative):
 * the first multiply is then exact and only the second rounds, to a
 * subnormal where the result is one.  k >> 1 is an arithmetic shift (GCC,
 * Clang; _mm256_srai_epi32 in AVX2). */
static inline float gn_act_scalef(float v, int32_t k)
{
    int32_t k1 = k >> 1, k2 = k - k1;
    return (v * gn_act_pow2f(k1)) * gn_act_pow2f(k2);
}

/* ---- float exp ----
 * exp(x) = 2^k (1 + q):  k = rint(x / ln 2), r = x - k ln 2 (|r| <= ln2 / 2),
 * q = e^r - 1 = r + r^2 P(r), P of degree 4 (minimax for the relative error
 * of e^r on |r| <= 0.34675: 3.1e-9 = 0.05 ulp in float64 coefficients; the
 * float-rounded ones below, measured by test_act.c, keep it below 0.1 ulp).
 * k: x log2(e) + 1.5 2^23 in one fmaf rounds the exact product to an integer
 * (round-to-nearest-even) held in the low mantissa bits.  ln 2 = LN2_HI +
 * LN2_LO, LN2_HI with 16 significant bits so k LN2_HI and x - k LN2_HI are
 * exact (Cody-Waite).  x is clamped to [-112, 89] first: exp(-104) < 2^-150
 * rounds to 0 and exp(89) > FLT_MAX to inf (SiLU clamps to [-112, 112] and
 * scales itself).  A NaN
 * passes the clamps (the compares are false) and makes q NaN. */
#define GN_EXPF_LO (-112.0f)
#define GN_EXPF_HI 89.0f
#define GN_EXPF_MAGIC 12582912.0f            /* 1.5 * 2^23 */
#define GN_LOG2E_F 1.44269502162933349609375f /* 0x1.715476p+0 */
#define GN_LN2_HI_F 0.693145751953125f       /* 0x1.62e4p-1 */
#define GN_LN2_LO_F 1.428606765330187045e-06f /* 0x1.7f7d1cp-20: ln 2 - LN2_HI */
#define GN_EXPF_C2 0.4999999403953552f       /* 0x1.fffffcp-2 */
#define GN_EXPF_C3 0.1666652113199234f       /* 0x1.555492p-3 */
#define GN_EXPF_C4 0.04166838899254799f      /* 0x1.5558f2p-5 */
#define GN_EXPF_C5 0.00836874544620514f      /* 0x1.123a2p-7 */
#define GN_EXPF_C6 0.001381453825160861f     /* 0x1.6a23ccp-10 */

/* q and k with exp(x) = 2^k (1 + q), for x in [-112, 112] (|k| <= 162) */
static inline void gn_act_expf_reduce(float x, float *q, int32_t *k)
{
    float t = fmaf(x, GN_LOG2E_F, GN_EXPF_MAGIC);
    float kf = t - GN_EXPF_MAGIC;
    float r = fmaf(kf, -GN_LN2_HI_F, x);
    r = fmaf(kf, -GN_LN2_LO_F, r);
    float p = fmaf(GN_EXPF_C6, r, GN_EXPF_C5);
    p = fmaf(p, r, GN_EXPF_C4);
    p = fmaf(p, r, GN_EXPF_C3);
    p = fmaf(p, r, GN_EXPF_C2);
    *q = fmaf(r * r, p, r);
    *k = (int32_t)(gn_act_fbits(t) - gn_act_fbits(GN_EXPF_MAGIC));
}

/* the same for any x, clamped to [-112, 89] */
static inline void gn_act_expf_parts(float x, float *q, int32_t *k)
{
    x = x < GN_EXPF_LO ? GN_EXPF_LO : x;
    x = x > GN_EXPF_HI ? GN_EXPF_HI : x;
    gn_act_expf_reduce(x, q, k);
}

static inline float gn_act_expf(float x)
{
    float q;
    int32_t k;
    gn_act_expf_parts(x, &q, &k);
    return gn_act_scalef(1.0f + q, k);
}

/* ---- double exp, the core of the double-computed float functions ----
 * Same scheme in double: k = rint(x / ln 2) through 1.5 2^52, fdlibm's
 * ln 2 split (LN2_HI has 32 significant bits), q = r + r^2 P(r) with P of
 * degree 6 (minimax, relative error of e^r 1.1e-12 on |r| <= 0.34675).  x is
 * clamped to [-708, 708], so 2^k is a normal double (k in [-1022, 1022]); the
 * float results these feed are 0 or inf long before. */
#define GN_EXPD_LO (-708.0)
#define GN_EXPD_HI 708.0
#define GN_EXPD_MAGIC 6755399441055744.0     /* 1.5 * 2^52 */
#define GN_LOG2E_D 0x1.71547652b82fep+0
#define GN_LN2_HI_D 0x1.62e42feep-1           /* 6.93147180369123816490e-01 */
#define GN_LN2_LO_D 0x1.a39ef35793c76p-33     /* 1.90821492927058770002e-10 */
#define GN_EXPD_C2 0x1.000000005e3c1p-1
#define GN_EXPD_C3 0x1.5555557dec1e1p-3
#define GN_EXPD_C4 0x1.5555541d8ecd8p-5
#define GN_EXPD_C5 0x1.1110a23202003p-7
#define GN_EXPD_C6 0x1.6c18d40f22f48p-10
#define GN_EXPD_C7 0x1.a185aa7516128p-13
#define GN_EXPD_C8 0x1.9e88dd5bd7da0p-16

/* q and s = 2^k with exp(x) = s (1 + q) */
static inline void gn_act_expd_parts(double x, double *q, double *s)
{
    x = x < GN_EXPD_LO ? GN_EXPD_LO : x;
    x = x > GN_EXPD_HI ? GN_EXPD_HI : x;
    double t = fma(x, GN_LOG2E_D, GN_EXPD_MAGIC);
    double kf = t - GN_EXPD_MAGIC;
    double r = fma(kf, -GN_LN2_HI_D, x);
    r = fma(kf, -GN_LN2_LO_D, r);
    double p = fma(GN_EXPD_C8, r, GN_EXPD_C7);
    p = fma(p, r, GN_EXPD_C6);
    p = fma(p, r, GN_EXPD_C5);
    p = fma(p, r, GN_EXPD_C4);
    p = fma(p, r, GN_EXPD_C3);
    p = fma(p, r, GN_EXPD_C2);
    *q = fma(r * r, p, r);
    int64_t k = (int64_t)(gn_act_dbits(t) - gn_act_dbits(GN_EXPD_MAGIC));
    *s = gn_act_dfrom((uint64_t)(k + 1023) << 52);
}

/* ---- the normal CDF in double ----
 * |z| <= 1.5:  Phi(z) = 1/2 + z P(z^2), P of degree 7 (minimax for the
 *              relative error of (Phi(z) - 1/2) / z on [0, 1.5]: 8.2e-11).
 * |z| >  1.5:  Phi(-t) = exp(-t^2 / 2) G(t), t = |z|, G(t) = N(t) / D(t) of
 *              degrees 4 / 5 (G is the Mills ratio over sqrt(2 pi), ~ 1 /
 *              (t sqrt(2 pi)); relative error 1.1e-10 on [1.5, 16]; D's
 *              roots all have real parts < -1.5).  t is clamped to 16:
 *              exp(-128) G(16) is already 0 in float.
 *              Phi(z) = z < 0 ? tail : 1 - tail.
 * E = exp(-z^2 / 2) is returned too (for phi(z) = E / sqrt(2 pi)); z^2 is
 * exact enough in double (a float z has 24 bits, z^2 48). */
#define GN_PHI_SPLIT 1.5
#define GN_PHI_TMAX 16.0
#define GN_PHI_P0 0x1.9884533cb400cp-2
#define GN_PHI_P1 -0x1.10583701b1904p-4
#define GN_PHI_P2 0x1.46d01ed6fb224p-7
#define GN_PHI_P3 -0x1.373c4d71bbaa8p-10
#define GN_PHI_P4 0x1.e3bc957a04ec0p-14
#define GN_PHI_P5 -0x1.3996d4e82e800p-17
#define GN_PHI_P6 0x1.48a0d52718000p-21
#define GN_PHI_P7 -0x1.b17eb13400000p-26
#define GN_PHI_N0 0x1.0009db552b6c2p-1
#define GN_PHI_N1 0x1.f9b2728a2780fp-2
#define GN_PHI_N2 0x1.d756ed8f491fcp-3
#define GN_PHI_N3 0x1.db1b825245868p-5
#define GN_PHI_N4 0x1.e85488e3e8400p-8
#define GN_PHI_D1 0x1.c94b6bb7023e8p+0
#define GN_PHI_D2 0x1.6243bba703599p+0
#define GN_PHI_D3 0x1.30ea1443c0bb9p-1
#define GN_PHI_D4 0x1.29bb4dd557c4cp-3
#define GN_PHI_D5 0x1.3203ec7be5350p-6
#define GN_INV_SQRT_2PI_D 0x1.9884533d43651p-2 /* 1 / sqrt(2 pi) */

/* (Phi(z) - 1/2) / z for |z| <= 1.5, from zz = z^2 */
static inline double gn_act_phi_center(double zz)
{
    double p = fma(GN_PHI_P7, zz, GN_PHI_P6);
    p = fma(p, zz, GN_PHI_P5);
    p = fma(p, zz, GN_PHI_P4);
    p = fma(p, zz, GN_PHI_P3);
    p = fma(p, zz, GN_PHI_P2);
    p = fma(p, zz, GN_PHI_P1);
    return fma(p, zz, GN_PHI_P0);
}

/* Phi(-t) / exp(-t^2 / 2) for t >= 1.5 (clamped to 16 here) */
static inline double gn_act_phi_tail(double t)
{
    t = t > GN_PHI_TMAX ? GN_PHI_TMAX : t;
    double n = fma(GN_PHI_N4, t, GN_PHI_N3);
    n = fma(n, t, GN_PHI_N2);
    n = fma(n, t, GN_PHI_N1);
    n = fma(n, t, GN_PHI_N0);
    double d = fma(GN_PHI_D5, t, GN_PHI_D4);
    d = fma(d, t, GN_PHI_D3);
    d = fma(d, t, GN_PHI_D2);
    d = fma(d, t, GN_PHI_D1);
    d = fma(d, t, 1.0);
    return n / d;
}

/* Phi(z), and E = exp(-z^2 / 2) */
static inline double gn_act_phi(double z, double *E)
{
    double zz = z * z, q, s;
    gn_act_expd_parts(-0.5 * zz, &q, &s);
    *E = fma(s, q, s);
    double t = fabs(z);
    if (t <= GN_PHI_SPLIT)
        return fma(z, gn_act_phi_center(zz), 0.5);
    double tail = *E * gn_act_phi_tail(t);
    return z < 0 ? tail : 1.0 - tail;
}

/* ---- float erf and tanh (double inside) ---- */

/* erf(x) = 2 Phi(x sqrt 2) - 1; near 0 as 2 z P(z^2) (relative accuracy for
 * tiny x), in the tails as +-(1 - 2 tail) */
#define GN_SQRT2_D 0x1.6a09e667f3bcdp+0
#define GN_INV_SQRT2_D 0x1.6a09e667f3bcdp-1
static inline float gn_act_erff(float x)
{
    double z = (double)x * GN_SQRT2_D, zz = z * z, t = fabs(z);
    if (t <= GN_PHI_SPLIT)
        return (float)(2.0 * z * gn_act_phi_center(zz));
    double q, s;
    gn_act_expd_parts(-0.5 * zz, &q, &s);
    double tail = fma(s, q, s) * gn_act_phi_tail(t);
    double r = fma(-2.0, tail, 1.0);
    return (float)(z < 0 ? -r : r);
}

/* tanh(x) = -m / (2 + m) with m = expm1(-2 |x|) = s (1 + q) - 1, computed as
 * fma(s, q, s - 1) (s = 2^k; s - 1 is exact for k >= -53, and -1 beyond
 * where it no longer matters), then x's sign.  For |x| < ln2 / 4, k = 0 and
 * m = q keeps its relative accuracy down to the subnormals. */
static inline float gn_act_tanhf(float x)
{
    double a = -2.0 * fabs((double)x), q, s;
    gn_act_expd_parts(a, &q, &s);
    double m = fma(s, q, s - 1.0);
    float r = (float)(-m / (2.0 + m));
    return gn_act_ffrom((gn_act_fbits(r) & 0x7fffffffu) | (gn_act_fbits(x) & 0x80000000u));
}

/* ---- non-finite inputs of silu, gelu, gelu_tanh (float and double) ----
 * a(+inf) = +inf, a(-inf) = NaN, a(NaN) = NaN; a'(non-finite) = NaN.
 * z - z is NaN for all three. */
static inline float gn_act_nonfinite_f(float z) { return z > 0 ? z : z - z; }

/* ---- SiLU, float ----
 * silu(z) = z / (1 + E), E = exp(-z) = 2^k (1 + q), -z clamped to [-112, 112].
 * Dividing by 1 + E loses nothing to cancellation and z enters exactly; to
 * keep 1 + E finite for z < -88, numerator and denominator are scaled by
 * 2^-j, j = max(k, 0):
 *   D = 2^-j (1 + E) = fmaf(2^(k-j), q, 2^(k-j) + 2^-j)
 *     k <= 0 (z >= -0.35):  fmaf(2^k, q, 2^k + 1)
 *     k >  0:               fmaf(1, q, 1 + 2^-k)
 *   (one rounding given q: the inner sum is exact for |k| <= 23, and beyond,
 *   its rounding error is moved into q, see gn_act_silu_den; the powers are
 *   floored at 2^-126, where they no longer count)
 *   silu = 2^-j (zc / D), zc = max(z, -112): silu(-112) = -2.5e-47 is -0
 *   already, and a larger |z| would overflow the 2^-j scaling's range.  zc is
 *   z * 0 - 112 there, which is -112, or NaN for z = -inf (torch's
 *   silu(-inf) = -inf * 0); +inf and NaN need nothing: inf / 1, NaN.
 * Error: D's rounding, q's error weighted by E / (1 + E), the division:
 * 1.69 ulp at most in test_act.c's sweeps. */
#define GN_SILU_XMAX 112.0f
#define GN_SILU_KMIN (-126)

/* k (clamped -z), q, j = max(k, 0), D, and s = 2^(k-j), c = 2^-j.
 * s + c is exact for |k| <= 23.  For k > 23 (z < -16.6), its rounding error
 * (Fast2Sum: both are powers of two) would cost up to 0.7 ulp of D, so it is
 * moved into q (exactly scaled by 1/s), where it is 2^-k relative: D =
 * fmaf(s, q + err / s, s + c) stays one rounding of 2^-j (1 + E) given q.  For
 * k < -23 (z > 16.6) the 2^k that s + 1 drops is below 2^-24 of D = 1 + 2^k,
 * and D's error stays within one ulp, so the plain form is kept (and equals
 * the fast path's below). */
static inline float gn_act_silu_den(float z, float *q, int32_t *j, float *s, float *c)
{
    float x = -z;
    x = x < -GN_SILU_XMAX ? -GN_SILU_XMAX : x;
    x = x > GN_SILU_XMAX ? GN_SILU_XMAX : x;
    int32_t k;
    gn_act_expf_reduce(x, q, &k);
    *j = k > 0 ? k : 0;
    int32_t a = k - *j, b = -*j;
    a = a < GN_SILU_KMIN ? GN_SILU_KMIN : a;
    b = b < GN_SILU_KMIN ? GN_SILU_KMIN : b;
    *s = gn_act_pow2f(a);
    *c = gn_act_pow2f(b);
    float sc = *s + *c;
    float hi = *s > *c ? *s : *c, lo = *s < *c ? *s : *c;
    float err = (hi - sc) + lo;
    float qe = *j > 0 ? fmaf(err, gn_act_pow2f(-a), *q) : *q;
    return fmaf(*s, qe, sc);
}
static inline float gn_act_silu_wide_f(float z)
{
    float q, s, c;
    int32_t j;
    float D = gn_act_silu_den(z, &q, &j, &s, &c);
    float zc = z < -GN_SILU_XMAX ? z * 0.0f - GN_SILU_XMAX : z;   /* -inf: NaN */
    return gn_act_scalef(zc / D, -j);
}

/* silu'(z) = s (1 + z (1 - s)) with s = 1 / (1 + E), 1 - s = E / (1 + E):
 *   silu' = (1 + E (1 + z)) / (1 + E)^2 = 2^-j N / D^2,
 *   N = 2^-j (1 + E (1 + z))
 *     k > 0:  fmaf(t, q, t + 2^-j),  t = 2^(k-j) (1 + z).  N cancels at silu's
 *             minimum, z = -1.2785, where silu' = 0: there 1 + z is exact and
 *             t + 2^-j too (Sterbenz), so N is rounded once and only q's error
 *             is left, about 2^-30 absolute (test_act.c).
 *     k <= 0 (z >= -0.35, no cancellation): D + z E = fmaf(z, fmaf(s, q, s), D),
 *             which keeps z's bits where 1 + z would round them off.
 * with z clamped to [-112, 88] (beyond 88, E (1 + z) < 2^-120 is nothing
 * beside 1), by z * 0 +- bound, so that +-inf give NaN (torch's inf * 0). */
#define GN_SILU_ZMAX 88.0f
static inline float gn_act_silu_grad_wide_f(float z)
{
    float q, s, c;
    int32_t j;
    float D = gn_act_silu_den(z, &q, &j, &s, &c);
    float zc = z < -GN_SILU_XMAX ? z * 0.0f - GN_SILU_XMAX : z;   /* +-inf: NaN */
    zc = zc > GN_SILU_ZMAX ? zc * 0.0f + GN_SILU_ZMAX : zc;
    float t = s * (1.0f + zc);
    float Nt = fmaf(t, q, t + c);
    float Nd = fmaf(zc, fmaf(s, q, s), D);
    float N = j > 0 ? Nt : Nd;
    return gn_act_scalef(N / (D * D), -j);
}

/* The fast path, for z in [-16, 80] (and NaN), where no clamp, scaling or
 * rounding fix-up is needed: the same formulas unscaled (j = 0),
 *   D = fmaf(2^k, q, 2^k + 1),  silu = z / D,
 *   N = k > 0 ? fmaf(t, q, t + 1), t = 2^k (1 + z) : fmaf(z, fmaf(2^k, q, 2^k), D),
 *   silu' = N / D^2.
 * Here 2^k + 1 and t + 1 are scaled by 2^k from the wide path's sums and every
 * value stays normal, so the results are the wide path's bits exactly (the
 * scaling by a power of two commutes with rounding): the wide path remains
 * the definition, this one its shortcut, about half the operations; the AVX2
 * version takes it for a vector whose 8 lanes are all in range. */
#define GN_SILU_FAST_LO (-16.0f)
#define GN_SILU_FAST_HI 80.0f
static inline int gn_act_silu_in_fast_range(float z)
{
    return !(z < GN_SILU_FAST_LO) && !(z > GN_SILU_FAST_HI);
}

static inline float gn_act_silu_fast_f(float z)
{
    float q;
    int32_t k;
    gn_act_expf_reduce(-z, &q, &k);
    float s = gn_act_pow2f(k);
    return z / fmaf(s, q, s + 1.0f);
}

static inline float gn_act_silu_grad_fast_f(float z)
{
    float q;
    int32_t k;
    gn_act_expf_reduce(-z, &q, &k);
    float s = gn_act_pow2f(k);
    float D = fmaf(s, q, s + 1.0f);
    float t = s * (1.0f + z);
    float Nt = fmaf(t, q, t + 1.0f);
    float Nd = fmaf(z, fmaf(s, q, s), D);
    float N = k > 0 ? Nt : Nd;
    return N / (D * D);
}

static inline float gn_act_silu_f(float z)
{
    return gn_act_silu_in_fast_range(z) ? gn_act_silu_fast_f(z) : gn_act_silu_wide_f(z);
}

static inline float gn_act_silu_grad_f(float z)
{
    return gn_act_silu_in_fast_range(z) ? gn_act_silu_grad_fast_f(z) : gn_act_silu_grad_wide_f(z);
}

/* ---- GELU (erf form), float input, double inside ----
 * gelu = z Phi(z);  gelu' = Phi(z) + z phi(z) = Phi(z) + z E / sqrt(2 pi).
 * In the left tail both are E (z G(t)) and E (G(t) - t / sqrt(2 pi)): no
 * float cancellation, and double's is harmless (gelu' has its zero at
 * z = -0.7518, inside the central piece). */
static inline float gn_act_gelu_f(float z)
{
    double zd = z, E;
    double y = zd * gn_act_phi(zd, &E);
    return fabsf(z) <= FLT_MAX ? (float)y : gn_act_nonfinite_f(z);
}

static inline float gn_act_gelu_grad_f(float z)
{
    double zd = z, E;
    double P = gn_act_phi(zd, &E);
    double y = fma(zd * E, GN_INV_SQRT_2PI_D, P);
    return fabsf(z) <= FLT_MAX ? (float)y : z - z;
}

/* ---- GELU, tanh form, float input, double inside ----
 * 0.5 z (1 + tanh(u)) = z sigmoid(2u): the sigmoid form has no cancellation
 * for z < 0.  w = 2u = z (C1 + C3 z^2), C1 = 2 sqrt(2/pi), C3 = 0.044715 C1,
 * in double (relative error ~1e-16, so the tail exp(w) keeps its accuracy).
 * sigmoid as in SiLU: e = exp(-|w|) = s (1 + q), den = 1 + e,
 *   w >= 0: sg = 1 / den, 1 - sg = e / den;   w < 0: sg = e / den, 1 - sg = 1 / den.
 * gelu_tanh' = sg (1 + z (1 - sg) w'),  w' = C1 + 3 C3 z^2.
 * For huge |z|, w reaches 1e115 (finite in double); exp is clamped at -708,
 * so sg (or 1 - sg) is ~1e-308, small enough that z (1 - sg) w' stays far
 * below 1: the results are 1 and -0, torch's float64 values. */
#define GN_GELU_TANH_C1 0x1.9884533d43651p+0   /* 2 sqrt(2 / pi) = 1.5957691216057308 */
#define GN_GELU_TANH_C3 0x1.2444f2a4d8b4bp-4   /* 0.044715 * 2 sqrt(2 / pi) = 0.07135481627260025 */
#define GN_GELU_TANH_C3x3 0x1.b6676bf7450f0p-3  /* 3 C3 */

/* sigmoid(w) and 1 - sigmoid(w) */
static inline double gn_act_sigmoid_d2(double w, double *one_minus)
{
    double q, s;
    gn_act_expd_parts(-fabs(w), &q, &s);
    double e = fma(s, q, s);
    double den = 1.0 + e;
    double a = 1.0 / den, b = e / den;
    *one_minus = w < 0 ? a : b;
    return w < 0 ? b : a;
}

static inline float gn_act_gelu_tanh_f(float z)
{
    double zd = z, c;
    double w = zd * fma(GN_GELU_TANH_C3, zd * zd, GN_GELU_TANH_C1);
    double y = zd * gn_act_sigmoid_d2(w, &c);
    return fabsf(z) <= FLT_MAX ? (float)y : gn_act_nonfinite_f(z);
}

static inline float gn_act_gelu_tanh_grad_f(float z)
{
    double zd = z, c, zz = zd * zd;
    double w = zd * fma(GN_GELU_TANH_C3, zz, GN_GELU_TANH_C1);
    double sg = gn_act_sigmoid_d2(w, &c);
    double wp = fma(GN_GELU_TANH_C3x3, zz, GN_GELU_TANH_C1);
    double y = sg * fma(zd * c, wp, 1.0);
    return fabsf(z) <= FLT_MAX ? (float)y : z - z;
}

/* ---- ReLU (torch's signs: relu(-0) = -0, relu(NaN) = NaN, relu'(NaN) = 1) ---- */
static inline float gn_act_relu_f(float z) { return z < 0 ? 0.0f : z; }
static inline float gn_act_relu_grad_f(float z) { return z <= 0 ? 0.0f : 1.0f; }

/* ---- dispatch by id (a switch per value: for tests and the scalar
 * reference; the kernels instantiate one loop per activation) ---- */
static inline float gn_act_apply_f(int act, float z)
{
    switch (act) {
    case GN_ACT_SILU: return gn_act_silu_f(z);
    case GN_ACT_GELU: return gn_act_gelu_f(z);
    case GN_ACT_GELU_TANH: return gn_act_gelu_tanh_f(z);
    case GN_ACT_RELU: return gn_act_relu_f(z);
    default: return z;
    }
}

static inline float gn_act_grad_f(int act, float z)
{
    switch (act) {
    case GN_ACT_SILU: return gn_act_silu_grad_f(z);
    case GN_ACT_GELU: return gn_act_gelu_grad_f(z);
    case GN_ACT_GELU_TANH: return gn_act_gelu_tanh_grad_f(z);
    case GN_ACT_RELU: return gn_act_relu_grad_f(z);
    default: return 1.0f;
    }
}

/* ======== double data (float64): libm, scalar only ========
 * Same formulas, with libm's exp and erfc (correctly rounded or nearly in
 * glibc; float64 results need not match any SIMD path).  The sigmoid forms
 * take exp(-|z|) so that nothing overflows on the way to a small result. */

/* Below z = -600, exp(z) nears the subnormals, whose few bits z e^z would
 * carry to a subnormal result: (z exp(z/2)) exp(z/2) keeps them. */
static inline double gn_act_silu_d(double z)
{
    if (z < -600.0) {
        double h = exp(0.5 * z);
        return (z * h) * h;
    }
    double e = exp(-fabs(z));
    return z < 0 ? z * e / (1.0 + e) : z / (1.0 + e);
}

static inline double gn_act_silu_grad_d(double z)
{
    if (z < -600.0) {           /* e (1 + z): den = 1 */
        double h = exp(0.5 * z);
        return ((1.0 + z) * h) * h;
    }
    double e = exp(-fabs(z)), den = 1.0 + e;
    double s = z < 0 ? e / den : 1.0 / den, c = z < 0 ? 1.0 / den : e / den;
    return s * fma(z, c, 1.0);   /* +-inf: inf * 0, NaN as torch */
}

/* Phi(z) = erfc(x) / 2, x = -z / sqrt 2 = xh + xl (xh rounded, xl its error,
 * from fma and 1/sqrt 2 = INV_SQRT2 + INV_SQRT2_LO).  In the left tail
 * erfc's relative sensitivity to x is 2x, so xh alone would cost up to
 * 2 x^2 2^-53 (hundreds of ulps near z = -38); first order in xl:
 * erfc(xh + xl) = erfc(xh) - xl (2 / sqrt pi) exp(-xh^2).  Likewise
 * exp(-z^2 / 2) with z^2 = zz + zzl (fma), as exp(-zz / 2) (1 - zzl / 2). */
#define GN_INV_SQRT2_LO_D -0x1.bdd3413b26456p-55
#define GN_2_SQRTPI_D 0x1.20dd750429b6dp+0
static inline double gn_act_Phi_d(double z)
{
    double mz = -z, xh = mz * GN_INV_SQRT2_D;
    double xl = fma(mz, GN_INV_SQRT2_D, -xh) + mz * GN_INV_SQRT2_LO_D;
    return 0.5 * (erfc(xh) - xl * GN_2_SQRTPI_D * exp(-xh * xh));
}

static inline double gn_act_gelu_d(double z)
{
    if (!(fabs(z) <= DBL_MAX))
        return z > 0 ? z : z - z;
    return z * gn_act_Phi_d(z);
}

static inline double gn_act_gelu_grad_d(double z)
{
    if (!(fabs(z) <= DBL_MAX))
        return z - z;
    if (fabs(z) > 1e10)         /* z^2 would overflow: the limits, as torch float64 */
        return z > 0 ? 1.0 : -0.0;
    double zz = z * z, zzl = fma(z, z, -zz);
    double phi = exp(-0.5 * zz) * fma(-0.5, zzl, 1.0) * GN_INV_SQRT_2PI_D;
    return fma(z, phi, gn_act_Phi_d(z));
}

/* w = z (C1 + C3 z^2) as wh + wl: sigmoid(w) in the tail is ~exp(w), whose
 * relative error is w's absolute error, up to 745 2^-53 with w rounded.  The
 * constants' low parts, z^2's (fma) and the sums' (TwoSum) errors are
 * carried; exp(-|w|) is then corrected to first order, e (1 -+ wl). */
#define GN_GELU_TANH_C1_LO -0x1.cbc0d30ebfd15p-54
#define GN_GELU_TANH_C3_LO -0x1.6c843a29d1c70p-61
static inline double gn_act_gelu_tanh_w(double z, double *wl)
{
    double zz = z * z, zzl = fma(z, z, -zz);
    double ph = GN_GELU_TANH_C3 * zz;
    double pl = fma(GN_GELU_TANH_C3, zz, -ph) + (GN_GELU_TANH_C3 * zzl + GN_GELU_TANH_C3_LO * zz);
    double mh = GN_GELU_TANH_C1 + ph, bb = mh - GN_GELU_TANH_C1;
    double ml = (GN_GELU_TANH_C1 - (mh - bb)) + (ph - bb) + (pl + GN_GELU_TANH_C1_LO);
    double w = z * mh;
    *wl = fma(z, mh, -w) + z * ml;
    return w;
}

/* exp(-|w + wl|), or where w < -600 (the tail's subnormals, as in silu)
 * h = exp((w + wl) / 2), to be multiplied in twice */
static inline double gn_act_gelu_tanh_e(double w, double wl, int *half)
{
    *half = w < -600.0;
    double e = exp(*half ? 0.5 * w : -fabs(w));
    return fma(e, *half ? 0.5 * wl : w < 0 ? wl : -wl, e);
}

static inline double gn_act_gelu_tanh_d(double z)
{
    if (!(fabs(z) <= DBL_MAX))
        return z > 0 ? z : z - z;
    if (fabs(z) > 1e10)
        return z > 0 ? z : -0.0;
    double wl, w = gn_act_gelu_tanh_w(z, &wl);
    int half;
    double e = gn_act_gelu_tanh_e(w, wl, &half);
    if (half)
        return (z * e) * e;
    return w < 0 ? z * e / (1.0 + e) : z / (1.0 + e);
}

static inline double gn_act_gelu_tanh_grad_d(double z)
{
    if (!(fabs(z) <= DBL_MAX))
        return z - z;
    if (fabs(z) > 1e10)         /* z^3 would overflow: the limits, as torch float64 */
        return z > 0 ? 1.0 : -0.0;
    double wl, w = gn_act_gelu_tanh_w(z, &wl);
    double wp = fma(GN_GELU_TANH_C3x3, z * z, GN_GELU_TANH_C1);
    int half;
    double e = gn_act_gelu_tanh_e(w, wl, &half);
    if (half)                   /* e (1 + z w'), den = 1 */
        return (fma(z, wp, 1.0) * e) * e;
    double den = 1.0 + e;
    double sg = w < 0 ? e / den : 1.0 / den, c = w < 0 ? 1.0 / den : e / den;
    return sg * fma(z * c, wp, 1.0);
}

static inline double gn_act_relu_d(double z) { return z < 0 ? 0.0 : z; }
static inline double gn_act_relu_grad_d(double z) { return z <= 0 ? 0.0 : 1.0; }

static inline double gn_act_apply_d(int act, double z)
{
    switch (act) {
    case GN_ACT_SILU: return gn_act_silu_d(z);
    case GN_ACT_GELU: return gn_act_gelu_d(z);
    case GN_ACT_GELU_TANH: return gn_act_gelu_tanh_d(z);
    case GN_ACT_RELU: return gn_act_relu_d(z);
    default: return z;
    }
}

static inline double gn_act_grad_d(int act, double z)
{
    switch (act) {
    case GN_ACT_SILU: return gn_act_silu_grad_d(z);
    case GN_ACT_GELU: return gn_act_gelu_grad_d(z);
    case GN_ACT_GELU_TANH: return gn_act_gelu_tanh_grad_d(z);
    case GN_ACT_RELU: return gn_act_relu_grad_d(z);
    default: return 1.0;
    }
}

#endif /* GN_ACT_H */
