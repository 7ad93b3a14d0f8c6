// gn_act.cuh -- the activations fused after the affine step (issue 13), per value,
// for the device and the host (tests/gpu_harness compiles it with g++).
//
//   silu(z) = z sigmoid(z)        gelu(z) = z Phi(z)        relu(z) = z < 0 ? 0 : z
//   gelu_tanh(z) = z sigmoid(2 sqrt(2/pi) (z + 0.044715 z^3))  (torch's approximate='tanh')
// and their derivatives.  Ids: 0 none, 1 silu, 2 gelu, 3 gelu_tanh, 4 relu
// (gn_native.h's GN_ACT_*, Plan.activation.code).
//
// A port of the C core's scalar reference, gn_native/src/act.h, which has
// the derivations, the fits' recipes and the measured errors (float32 ulps:
// silu 1.69, gelu 0.51, gelu_tanh 0.50; silu' 4.04, gelu' 0.51, gelu_tanh'
// 0.50 where |a'| >= 2^-6).  The same operations in the same order (every
// multiply-add written out as gn_fma): the float functions use only +, -, *,
// /, fma and bit operations, never CUDA's expf/erff/tanhf (2-4 ulp, and
// different from the host's libm), so the device, the host harness and the
// CPU core give the same bits, except that the device (-ftz=true) and the
// harness flush float subnormals to zero.  SiLU is float throughout; GELU
// and GELU-tanh of float data are computed in double from the float z and
// rounded once (their tails magnify any float error in z^2).  float64 data
// use the `_d` functions, with the platform's double exp and erfc (CUDA's
// on the device, libm's on the host: both within a few double ulps).
// tests/test_gpu_host.py checks the port against act.h bit for bit.
//
// Special values are torch 2.13's: a(+inf) = +inf, a(-inf) = NaN and
// a'(+-inf) = NaN for silu, gelu and gelu_tanh; relu(-0) = -0,
// relu(NaN) = NaN, relu'(0) = 0, relu'(NaN) = 1; NaN in, NaN out.
#ifndef GN_ACT_CUH
#define GN_ACT_CUH

#include "gn_math.cuh"

#define GN_ACT_ID_NONE 0
#define GN_ACT_ID_SILU 1
#define GN_ACT_ID_GELU 2
#define GN_ACT_ID_GELU_TANH 3
#define GN_ACT_ID_RELU 4

#define GN_FLT_MAX 3.40282346638528859812e+38f
#define GN_DBL_MAX 1.79769313486231570815e+308

GN_HD float gn_act_fabs(float v) { return gn_bits_to_float(gn_float_to_bits(v) & 0x7fffffffu); }
GN_HD double gn_act_fabs(double v) { return gn_bits_to_double(gn_double_to_bits(v) & 0x7fffffffffffffffULL); }
GN_HD double gn_act_exp(double v) {
#ifdef __CUDA_ARCH__
    return exp(v);
#else
    return std::exp(v);
#endif
}
GN_HD double gn_act_erfc(double v) {
#ifdef __CUDA_ARCH__
    return erfc(v);
#else
    return std::erfc(v);
#endif
}

// ---------------------------------------------------------------------------
// act.h's functions (gn_act_*_f: float data, gn_act_*_d: float64 data).
GN_HD float gn_act_pow2f(int k) { return gn_bits_to_float((unsigned int)(k + 127) << 23); }

GN_HD float gn_act_scalef(float v, int k)
{
    int k1 = k >> 1, k2 = k - k1;
    return (v * gn_act_pow2f(k1)) * gn_act_pow2f(k2);
}

#define GN_EXPF_LO (-112.0f)
#define GN_EXPF_HI 89.0f
#define GN_EXPF_MAGIC 12582912.0f
#define GN_LOG2E_F 1.44269502162933349609375f
#define GN_LN2_HI_F 0.693145751953125f
#define GN_LN2_LO_F 1.428606765330187045e-06f
#define GN_EXPF_C2 0.4999999403953552f
#define GN_EXPF_C3 0.1666652113199234f
#define GN_EXPF_C4 0.04166838899254799f
#define GN_EXPF_C5 0.00836874544620514f
#define GN_EXPF_C6 0.001381453825160861f

GN_HD void gn_act_expf_reduce(float x, float *q, int *k)
{
    float t = gn_fma(x, GN_LOG2E_F, GN_EXPF_MAGIC);
    float kf = t - GN_EXPF_MAGIC;
    float r = gn_fma(kf, -GN_LN2_HI_F, x);
    r = gn_fma(kf, -GN_LN2_LO_F, r);
    float p = gn_fma(GN_EXPF_C6, r, GN_EXPF_C5);
    p = gn_fma(p, r, GN_EXPF_C4);
    p = gn_fma(p, r, GN_EXPF_C3);
    p = gn_fma(p, r, GN_EXPF_C2);
    *q = gn_fma(r * r, p, r);
    *k = (int)(gn_float_to_bits(t) - gn_float_to_bits(GN_EXPF_MAGIC));
}

#define GN_EXPD_LO (-708.0)
#define GN_EXPD_HI 708.0
#define GN_EXPD_MAGIC 6755399441055744.0
#define GN_LOG2E_D 0x1.71547652b82fep+0
#define GN_LN2_HI_D 0x1.62e42feep-1
#define GN_LN2_LO_D 0x1.a39ef35793c76p-33
#define GN_EXPD_C2 0x1.000000005e3c1p-1
#define GN_EXPD_C3 0x1.5555557dec1e1p-3
#define GN_EXPD_C4 0x1.5555541d8ecd8p-5
#define GN_EXPD_C5 0x1.1110a23202003p-7
#define GN_EXPD_C6 0x1.6c18d40f22f48p-10
#define GN_EXPD_C7 0x1.a185aa7516128p-13
#define GN_EXPD_C8 0x1.9e88dd5bd7da0p-16

GN_HD void gn_act_expd_parts(double x, double *q, double *s)
{
    x = x < GN_EXPD_LO ? GN_EXPD_LO : x;
    x = x > GN_EXPD_HI ? GN_EXPD_HI : x;
    double t = gn_fma(x, GN_LOG2E_D, GN_EXPD_MAGIC);
    double kf = t - GN_EXPD_MAGIC;
    double r = gn_fma(kf, -GN_LN2_HI_D, x);
    r = gn_fma(kf, -GN_LN2_LO_D, r);
    double p = gn_fma(GN_EXPD_C8, r, GN_EXPD_C7);
    p = gn_fma(p, r, GN_EXPD_C6);
    p = gn_fma(p, r, GN_EXPD_C5);
    p = gn_fma(p, r, GN_EXPD_C4);
    p = gn_fma(p, r, GN_EXPD_C3);
    p = gn_fma(p, r, GN_EXPD_C2);
    *q = gn_fma(r * r, p, r);
    long long k = (long long)(gn_double_to_bits(t) - gn_double_to_bits(GN_EXPD_MAGIC));
    *s = gn_bits_to_double((unsigned long long)(k + 1023) << 52);
}

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
#define GN_INV_SQRT_2PI_D 0x1.9884533d43651p-2

GN_HD double gn_act_phi_center(double zz)
{
    double p = gn_fma(GN_PHI_P7, zz, GN_PHI_P6);
    p = gn_fma(p, zz, GN_PHI_P5);
    p = gn_fma(p, zz, GN_PHI_P4);
    p = gn_fma(p, zz, GN_PHI_P3);
    p = gn_fma(p, zz, GN_PHI_P2);
    p = gn_fma(p, zz, GN_PHI_P1);
    return gn_fma(p, zz, GN_PHI_P0);
}

GN_HD double gn_act_phi_tail(double t)
{
    t = t > GN_PHI_TMAX ? GN_PHI_TMAX : t;
    double n = gn_fma(GN_PHI_N4, t, GN_PHI_N3);
    n = gn_fma(n, t, GN_PHI_N2);
    n = gn_fma(n, t, GN_PHI_N1);
    n = gn_fma(n, t, GN_PHI_N0);
    double d = gn_fma(GN_PHI_D5, t, GN_PHI_D4);
    d = gn_fma(d, t, GN_PHI_D3);
    d = gn_fma(d, t, GN_PHI_D2);
    d = gn_fma(d, t, GN_PHI_D1);
    d = gn_fma(d, t, 1.0);
    return n / d;
}

GN_HD double gn_act_phi(double z, double *E)
{
    double zz = z * z, q, s;
    gn_act_expd_parts(-0.5 * zz, &q, &s);
    *E = gn_fma(s, q, s);
    double t = gn_act_fabs(z);
    if (t <= GN_PHI_SPLIT)
        return gn_fma(z, gn_act_phi_center(zz), 0.5);
    double tail = *E * gn_act_phi_tail(t);
    return z < 0 ? tail : 1.0 - tail;
}

#define GN_INV_SQRT2_D 0x1.6a09e667f3bcdp-1
GN_HD float gn_act_nonfinite_f(float z) { return z > 0 ? z : z - z; }

#define GN_SILU_XMAX 112.0f
#define GN_SILU_KMIN (-126)

GN_HD float gn_act_silu_den(float z, float *q, int *j, float *s, float *c)
{
    float x = -z;
    x = x < -GN_SILU_XMAX ? -GN_SILU_XMAX : x;
    x = x > GN_SILU_XMAX ? GN_SILU_XMAX : x;
    int k;
    gn_act_expf_reduce(x, q, &k);
    *j = k > 0 ? k : 0;
    int a = k - *j, b = -*j;
    a = a < GN_SILU_KMIN ? GN_SILU_KMIN : a;
    b = b < GN_SILU_KMIN ? GN_SILU_KMIN : b;
    *s = gn_act_pow2f(a);
    *c = gn_act_pow2f(b);
    float sc = *s + *c;
    float hi = *s > *c ? *s : *c, lo = *s < *c ? *s : *c;
    float err = (hi - sc) + lo;
    float qe = *j > 0 ? gn_fma(err, gn_act_pow2f(-a), *q) : *q;
    return gn_fma(*s, qe, sc);
}
GN_HD float gn_act_silu_wide_f(float z)
{
    float q, s, c;
    int j;
    float D = gn_act_silu_den(z, &q, &j, &s, &c);
    float zc = z < -GN_SILU_XMAX ? z * 0.0f - GN_SILU_XMAX : z;
    return gn_act_scalef(zc / D, -j);
}

#define GN_SILU_ZMAX 88.0f
GN_HD float gn_act_silu_grad_wide_f(float z)
{
    float q, s, c;
    int j;
    float D = gn_act_silu_den(z, &q, &j, &s, &c);
    float zc = z < -GN_SILU_XMAX ? z * 0.0f - GN_SILU_XMAX : z;
    zc = zc > GN_SILU_ZMAX ? zc * 0.0f + GN_SILU_ZMAX : zc;
    float t = s * (1.0f + zc);
    float Nt = gn_fma(t, q, t + c);
    float Nd = gn_fma(zc, gn_fma(s, q, s), D);
    float N = j > 0 ? Nt : Nd;
    return gn_act_scalef(N / (D * D), -j);
}

#define GN_SILU_FAST_LO (-16.0f)
#define GN_SILU_FAST_HI 80.0f
GN_HD int gn_act_silu_in_fast_range(float z)
{
    return !(z < GN_SILU_FAST_LO) && !(z > GN_SILU_FAST_HI);
}

GN_HD float gn_act_silu_fast_f(float z)
{
    float q;
    int k;
    gn_act_expf_reduce(-z, &q, &k);
    float s = gn_act_pow2f(k);
    return z / gn_fma(s, q, s + 1.0f);
}

GN_HD float gn_act_silu_grad_fast_f(float z)
{
    float q;
    int k;
    gn_act_expf_reduce(-z, &q, &k);
    float s = gn_act_pow2f(k);
    float D = gn_fma(s, q, s + 1.0f);
    float t = s * (1.0f + z);
    float Nt = gn_fma(t, q, t + 1.0f);
    float Nd = gn_fma(z, gn_fma(s, q, s), D);
    float N = k > 0 ? Nt : Nd;
    return N / (D * D);
}

GN_HD float gn_act_silu_f(float z)
{
    return gn_act_silu_in_fast_range(z) ? gn_act_silu_fast_f(z) : gn_act_silu_wide_f(z);
}

GN_HD float gn_act_silu_grad_f(float z)
{
    return gn_act_silu_in_fast_range(z) ? gn_act_silu_grad_fast_f(z) : gn_act_silu_grad_wide_f(z);
}

GN_HD float gn_act_gelu_f(float z)
{
    double zd = z, E;
    double y = zd * gn_act_phi(zd, &E);
    return gn_act_fabs(z) <= GN_FLT_MAX ? (float)y : gn_act_nonfinite_f(z);
}

GN_HD float gn_act_gelu_grad_f(float z)
{
    double zd = z, E;
    double P = gn_act_phi(zd, &E);
    double y = gn_fma(zd * E, GN_INV_SQRT_2PI_D, P);
    return gn_act_fabs(z) <= GN_FLT_MAX ? (float)y : z - z;
}

#define GN_GELU_TANH_C1 0x1.9884533d43651p+0
#define GN_GELU_TANH_C3 0x1.2444f2a4d8b4bp-4
#define GN_GELU_TANH_C3x3 0x1.b6676bf7450f0p-3

GN_HD double gn_act_sigmoid_d2(double w, double *one_minus)
{
    double q, s;
    gn_act_expd_parts(-gn_act_fabs(w), &q, &s);
    double e = gn_fma(s, q, s);
    double den = 1.0 + e;
    double a = 1.0 / den, b = e / den;
    *one_minus = w < 0 ? a : b;
    return w < 0 ? b : a;
}

GN_HD float gn_act_gelu_tanh_f(float z)
{
    double zd = z, c;
    double w = zd * gn_fma(GN_GELU_TANH_C3, zd * zd, GN_GELU_TANH_C1);
    double y = zd * gn_act_sigmoid_d2(w, &c);
    return gn_act_fabs(z) <= GN_FLT_MAX ? (float)y : gn_act_nonfinite_f(z);
}

GN_HD float gn_act_gelu_tanh_grad_f(float z)
{
    double zd = z, c, zz = zd * zd;
    double w = zd * gn_fma(GN_GELU_TANH_C3, zz, GN_GELU_TANH_C1);
    double sg = gn_act_sigmoid_d2(w, &c);
    double wp = gn_fma(GN_GELU_TANH_C3x3, zz, GN_GELU_TANH_C1);
    double y = sg * gn_fma(zd * c, wp, 1.0);
    return gn_act_fabs(z) <= GN_FLT_MAX ? (float)y : z - z;
}

GN_HD float gn_act_relu_f(float z) { return z < 0 ? 0.0f : z; }
GN_HD float gn_act_relu_grad_f(float z) { return z <= 0 ? 0.0f : 1.0f; }

GN_HD double gn_act_silu_d(double z)
{
    if (z < -600.0) {
        double h = gn_act_exp(0.5 * z);
        return (z * h) * h;
    }
    double e = gn_act_exp(-gn_act_fabs(z));
    return z < 0 ? z * e / (1.0 + e) : z / (1.0 + e);
}

GN_HD double gn_act_silu_grad_d(double z)
{
    if (z < -600.0) {
        double h = gn_act_exp(0.5 * z);
        return ((1.0 + z) * h) * h;
    }
    double e = gn_act_exp(-gn_act_fabs(z)), den = 1.0 + e;
    double s = z < 0 ? e / den : 1.0 / den, c = z < 0 ? 1.0 / den : e / den;
    return s * gn_fma(z, c, 1.0);
}

#define GN_INV_SQRT2_LO_D -0x1.bdd3413b26456p-55
#define GN_2_SQRTPI_D 0x1.20dd750429b6dp+0
GN_HD double gn_act_Phi_d(double z)
{
    double mz = -z, xh = mz * GN_INV_SQRT2_D;
    double xl = gn_fma(mz, GN_INV_SQRT2_D, -xh) + mz * GN_INV_SQRT2_LO_D;
    return 0.5 * (gn_act_erfc(xh) - xl * GN_2_SQRTPI_D * gn_act_exp(-xh * xh));
}

GN_HD double gn_act_gelu_d(double z)
{
    if (!(gn_act_fabs(z) <= GN_DBL_MAX))
        return z > 0 ? z : z - z;
    return z * gn_act_Phi_d(z);
}

GN_HD double gn_act_gelu_grad_d(double z)
{
    if (!(gn_act_fabs(z) <= GN_DBL_MAX))
        return z - z;
    if (gn_act_fabs(z) > 1e10)
        return z > 0 ? 1.0 : -0.0;
    double zz = z * z, zzl = gn_fma(z, z, -zz);
    double phi = gn_act_exp(-0.5 * zz) * gn_fma(-0.5, zzl, 1.0) * GN_INV_SQRT_2PI_D;
    return gn_fma(z, phi, gn_act_Phi_d(z));
}

#define GN_GELU_TANH_C1_LO -0x1.cbc0d30ebfd15p-54
#define GN_GELU_TANH_C3_LO -0x1.6c843a29d1c70p-61
GN_HD double gn_act_gelu_tanh_w(double z, double *wl)
{
    double zz = z * z, zzl = gn_fma(z, z, -zz);
    double ph = GN_GELU_TANH_C3 * zz;
    double pl = gn_fma(GN_GELU_TANH_C3, zz, -ph) + (GN_GELU_TANH_C3 * zzl + GN_GELU_TANH_C3_LO * zz);
    double mh = GN_GELU_TANH_C1 + ph, bb = mh - GN_GELU_TANH_C1;
    double ml = (GN_GELU_TANH_C1 - (mh - bb)) + (ph - bb) + (pl + GN_GELU_TANH_C1_LO);
    double w = z * mh;
    *wl = gn_fma(z, mh, -w) + z * ml;
    return w;
}

GN_HD double gn_act_gelu_tanh_e(double w, double wl, int *half)
{
    *half = w < -600.0;
    double e = gn_act_exp(*half ? 0.5 * w : -gn_act_fabs(w));
    return gn_fma(e, *half ? 0.5 * wl : w < 0 ? wl : -wl, e);
}

GN_HD double gn_act_gelu_tanh_d(double z)
{
    if (!(gn_act_fabs(z) <= GN_DBL_MAX))
        return z > 0 ? z : z - z;
    if (gn_act_fabs(z) > 1e10)
        return z > 0 ? z : -0.0;
    double wl, w = gn_act_gelu_tanh_w(z, &wl);
    int half;
    double e = gn_act_gelu_tanh_e(w, wl, &half);
    if (half)
        return (z * e) * e;
    return w < 0 ? z * e / (1.0 + e) : z / (1.0 + e);
}

GN_HD double gn_act_gelu_tanh_grad_d(double z)
{
    if (!(gn_act_fabs(z) <= GN_DBL_MAX))
        return z - z;
    if (gn_act_fabs(z) > 1e10)
        return z > 0 ? 1.0 : -0.0;
    double wl, w = gn_act_gelu_tanh_w(z, &wl);
    double wp = gn_fma(GN_GELU_TANH_C3x3, z * z, GN_GELU_TANH_C1);
    int half;
    double e = gn_act_gelu_tanh_e(w, wl, &half);
    if (half)
        return (gn_fma(z, wp, 1.0) * e) * e;
    double den = 1.0 + e;
    double sg = w < 0 ? e / den : 1.0 / den, c = w < 0 ? 1.0 / den : e / den;
    return sg * gn_fma(z * c, wp, 1.0);
}

GN_HD double gn_act_relu_d(double z) { return z < 0 ? 0.0 : z; }
GN_HD double gn_act_relu_grad_d(double z) { return z <= 0 ? 0.0 : 1.0; }

// ---------------------------------------------------------------------------
// By id.  gn_act<ACT> for the RawKernels (a template parameter: "none" is
// the plain kernel, unchanged); gn_act_value/gn_act_grad with the id at run
// time for the CuPy Elementwise kernels (a uniform branch).

template <int ACT> struct gn_act;
template <> struct gn_act<GN_ACT_ID_NONE> {
    template <typename A> GN_HD static A value(A z) { return z; }
    template <typename A> GN_HD static A grad(A) { return (A)1; }
};
template <> struct gn_act<GN_ACT_ID_SILU> {
    GN_HD static float value(float z) { return gn_act_silu_f(z); }
    GN_HD static double value(double z) { return gn_act_silu_d(z); }
    GN_HD static float grad(float z) { return gn_act_silu_grad_f(z); }
    GN_HD static double grad(double z) { return gn_act_silu_grad_d(z); }
};
template <> struct gn_act<GN_ACT_ID_GELU> {
    GN_HD static float value(float z) { return gn_act_gelu_f(z); }
    GN_HD static double value(double z) { return gn_act_gelu_d(z); }
    GN_HD static float grad(float z) { return gn_act_gelu_grad_f(z); }
    GN_HD static double grad(double z) { return gn_act_gelu_grad_d(z); }
};
template <> struct gn_act<GN_ACT_ID_GELU_TANH> {
    GN_HD static float value(float z) { return gn_act_gelu_tanh_f(z); }
    GN_HD static double value(double z) { return gn_act_gelu_tanh_d(z); }
    GN_HD static float grad(float z) { return gn_act_gelu_tanh_grad_f(z); }
    GN_HD static double grad(double z) { return gn_act_gelu_tanh_grad_d(z); }
};
template <> struct gn_act<GN_ACT_ID_RELU> {
    GN_HD static float value(float z) { return gn_act_relu_f(z); }
    GN_HD static double value(double z) { return gn_act_relu_d(z); }
    GN_HD static float grad(float z) { return gn_act_relu_grad_f(z); }
    GN_HD static double grad(double z) { return gn_act_relu_grad_d(z); }
};

template <typename A> GN_HD A gn_act_value(int act, A z) {
    switch (act) {
        case GN_ACT_ID_SILU: return gn_act<GN_ACT_ID_SILU>::value(z);
        case GN_ACT_ID_GELU: return gn_act<GN_ACT_ID_GELU>::value(z);
        case GN_ACT_ID_GELU_TANH: return gn_act<GN_ACT_ID_GELU_TANH>::value(z);
        case GN_ACT_ID_RELU: return gn_act<GN_ACT_ID_RELU>::value(z);
        default: return z;
    }
}
template <typename A> GN_HD A gn_act_grad(int act, A z) {
    switch (act) {
        case GN_ACT_ID_SILU: return gn_act<GN_ACT_ID_SILU>::grad(z);
        case GN_ACT_ID_GELU: return gn_act<GN_ACT_ID_GELU>::grad(z);
        case GN_ACT_ID_GELU_TANH: return gn_act<GN_ACT_ID_GELU_TANH>::grad(z);
        case GN_ACT_ID_RELU: return gn_act<GN_ACT_ID_RELU>::grad(z);
        default: return (A)1;
    }
}

// ---------------------------------------------------------------------------
// Backward through the activation: g = dy * a'(z), z = gamma * xhat + beta
// recomputed from x (nothing is stored by the forward), then the plain
// formula of gn_dx with g for dy.  With the coefficients of gn_bwd_coef,
// xhat = xs * t (xs = x * s - mean * s), so z = (t * gamma) * xs + beta.
// ACT = 0 is gn_dx's arithmetic exactly (g = dy * 1).
template <int ACT, typename A>
GN_HD A gn_dx_act(A dy, A x, const A* c, A gam, A bet) {
    const A xs = gn_fma(x, c[0], c[1]);
    const A sg = c[2] * gam;
    const A g = ACT ? dy * gn_act<ACT>::grad(gn_fma(sg, xs, bet)) : dy;
    return c[0] * gn_fma(sg, g, gn_fma(c[3], xs, c[4]));
}

template <typename A>
GN_HD A gn_dx_act_rt(int act, A dy, A x, const A* c, A gam, A bet) {
    switch (act) {
        case GN_ACT_ID_SILU: return gn_dx_act<GN_ACT_ID_SILU, A>(dy, x, c, gam, bet);
        case GN_ACT_ID_GELU: return gn_dx_act<GN_ACT_ID_GELU, A>(dy, x, c, gam, bet);
        case GN_ACT_ID_GELU_TANH: return gn_dx_act<GN_ACT_ID_GELU_TANH, A>(dy, x, c, gam, bet);
        case GN_ACT_ID_RELU: return gn_dx_act<GN_ACT_ID_RELU, A>(dy, x, c, gam, bet);
        default: return gn_dx<A>(dy, x, c, gam);
    }
}

#endif  // GN_ACT_CUH
