// gn_math.cuh -- the arithmetic of the GPU kernels, shared by the device and the host.
//
// Every formula the CUDA kernels use lives here in small __host__ __device__
// functions: dtype conversions, Welford/Chan moments, the final statistics,
// normalize + affine, the backward coefficients, index walking and fast
// division.  The RawKernels (gn_kernels.cuh) and the CuPy Elementwise /
// Reduction kernels (operation strings in gn_native/_gpu_kernels.py) call
// them; tests/test_gpu_host.py compiles this same file with g++ and checks
// the results against a float64 NumPy reference.
//
// No includes on the device side: NVRTC compiles it without any header.
#ifndef GN_MATH_CUH
#define GN_MATH_CUH

#if defined(__CUDACC__) || defined(__CUDACC_RTC__)
#define GN_HD __host__ __device__ __forceinline__
#else
#define GN_HD inline
#include <cmath>
#include <cstring>
#endif

#define GN_NCHW 0
#define GN_NHWC 1
#define GN_AFFINE_NONE 0
#define GN_AFFINE_CHANNEL 1
#define GN_AFFINE_GROUP 2

// ---------------------------------------------------------------------------
// Storage types.  float16 and bfloat16 travel as their 16-bit patterns.

struct gn_half { unsigned short bits; };
struct gn_bfloat { unsigned short bits; };

// acc: the type values are computed in; stat: the type of mean/rstd arrays.
template <typename T> struct gn_traits { typedef float acc; typedef float stat; };
template <> struct gn_traits<double> { typedef double acc; typedef double stat; };

GN_HD float gn_bits_to_float(unsigned int u) {
#ifdef __CUDA_ARCH__
    return __uint_as_float(u);
#else
    float f;
    std::memcpy(&f, &u, sizeof f);
    return f;
#endif
}

GN_HD unsigned int gn_float_to_bits(float f) {
#ifdef __CUDA_ARCH__
    return __float_as_uint(f);
#else
    unsigned int u;
    std::memcpy(&u, &f, sizeof u);
    return u;
#endif
}

GN_HD float gn_half_to_float(unsigned short h) {
#ifdef __CUDA_ARCH__
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
    return f;
#else
    unsigned int sign = (unsigned int)(h & 0x8000u) << 16;
    unsigned int exp = (h >> 10) & 0x1fu;
    unsigned int man = h & 0x3ffu;
    if (exp == 0x1fu)                      // inf / nan (payload kept, quiet)
        return gn_bits_to_float(sign | 0x7f800000u | (man << 13) | (man ? 0x400000u : 0u));
    if (exp == 0) {
        if (man == 0) return gn_bits_to_float(sign);
        // subnormal half: value = man * 2^-24, exact in float
        float v = (float)man * 5.9604644775390625e-8f;
        return sign ? -v : v;
    }
    return gn_bits_to_float(sign | ((exp + 112u) << 23) | (man << 13));
#endif
}

// Round to nearest even, as cvt.rn.f16.f32.
GN_HD unsigned short gn_float_to_half(float f) {
#ifdef __CUDA_ARCH__
    unsigned short h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f));
    return h;
#else
    unsigned int u = gn_float_to_bits(f);
    unsigned int sign = (u >> 16) & 0x8000u;
    unsigned int a = u & 0x7fffffffu;
    if (a > 0x7f800000u) return (unsigned short)(sign | 0x7e00u | ((a >> 13) & 0x3ffu));  // nan
    if (a >= 0x477ff000u) return (unsigned short)(sign | 0x7c00u);  // rounds to inf (>= 65520)
    if (a < 0x38800000u) {                 // below the smallest normal half: subnormal or 0
        if (a < 0x33000000u) return (unsigned short)sign;          // < 2^-25: rounds to 0
        unsigned int e = a >> 23;          // 102..112
        unsigned int m = (a & 0x7fffffu) | 0x800000u;
        unsigned int shift = 126u - e;     // 14..24: value = m * 2^(e-150), half unit 2^-24
        unsigned int q = m >> shift;
        unsigned int rem = m & ((1u << shift) - 1u);
        unsigned int halfway = 1u << (shift - 1u);
        if (rem > halfway || (rem == halfway && (q & 1u))) ++q;
        return (unsigned short)(sign | q);
    }
    unsigned int r = a + 0xfffu + ((a >> 13) & 1u);   // round the 13 dropped bits to even
    return (unsigned short)(sign | ((r - 0x38000000u) >> 13));
#endif
}

GN_HD float gn_bf16_to_float(unsigned short b) { return gn_bits_to_float((unsigned int)b << 16); }

// Round to nearest even; NaN stays NaN (quiet).  Same code on every arch.
GN_HD unsigned short gn_float_to_bf16(float f) {
    unsigned int u = gn_float_to_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (unsigned short)((u >> 16) | 0x40u);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (unsigned short)(u >> 16);
}

GN_HD float gn_to_acc(float v) { return v; }
GN_HD double gn_to_acc(double v) { return v; }
GN_HD float gn_to_acc(gn_half v) { return gn_half_to_float(v.bits); }
GN_HD float gn_to_acc(gn_bfloat v) { return gn_bf16_to_float(v.bits); }

template <typename T> struct gn_store;
template <> struct gn_store<float> { GN_HD static float from(float v) { return v; } };
template <> struct gn_store<double> { GN_HD static double from(double v) { return v; } };
template <> struct gn_store<gn_half> {
    GN_HD static gn_half from(float v) { gn_half h; h.bits = gn_float_to_half(v); return h; }
};
template <> struct gn_store<gn_bfloat> {
    GN_HD static gn_bfloat from(float v) { gn_bfloat h; h.bits = gn_float_to_bf16(v); return h; }
};
template <typename T> GN_HD T gn_from_acc(typename gn_traits<T>::acc v) { return gn_store<T>::from(v); }

// How a dtype D travels through a CuPy Elementwise kernel: float and double
// as themselves, float16 and bfloat16 as their bit patterns (the backend
// passes uint16 views of those arrays), converted by the helpers above.
// CuPy's own float16/bfloat16 classes are never used, so the host harness,
// which compiles these same lines with g++, runs the device's operators.
template <typename D> struct gn_io;
template <> struct gn_io<float> {
    typedef float raw;
    GN_HD static float load(float v) { return v; }
    GN_HD static float store(float v) { return v; }
};
template <> struct gn_io<double> {
    typedef double raw;
    GN_HD static double load(double v) { return v; }
    GN_HD static double store(double v) { return v; }
};
template <> struct gn_io<gn_half> {
    typedef unsigned short raw;
    GN_HD static float load(unsigned short b) { return gn_half_to_float(b); }
    GN_HD static unsigned short store(float v) { return gn_float_to_half(v); }
};
template <> struct gn_io<gn_bfloat> {
    typedef unsigned short raw;
    GN_HD static float load(unsigned short b) { return gn_bf16_to_float(b); }
    GN_HD static unsigned short store(float v) { return gn_float_to_bf16(v); }
};

// Defined for A == B only: an argument of another type (say CuPy's float16
// class, had an array been passed without its uint16 view) does not compile.
template <typename A, typename B> struct gn_same_type;
template <typename A> struct gn_same_type<A, A> { enum { value = 1 }; };

template <typename D, typename R>
GN_HD typename gn_traits<D>::acc gn_ld(const R& v) {
    (void)sizeof(gn_same_type<R, typename gn_io<D>::raw>);
    return gn_io<D>::load(v);
}
template <typename D>
GN_HD typename gn_io<D>::raw gn_st(typename gn_traits<D>::acc v) { return gn_io<D>::store(v); }

GN_HD double gn_sqrt(double v) {
#ifdef __CUDA_ARCH__
    return sqrt(v);
#else
    return std::sqrt(v);
#endif
}

// Explicit fused multiply-adds: the device compiler contracts a * b + c on
// its own, the host compiler (tests/gpu_harness, -ffp-contract=off) does
// not, so every multiply-add of the per-value formulas is written out and
// both run the same roundings.
GN_HD float gn_fma(float a, float b, float c) {
#ifdef __CUDA_ARCH__
    return __fmaf_rn(a, b, c);
#else
    return std::fma(a, b, c);
#endif
}
GN_HD double gn_fma(double a, double b, double c) {
#ifdef __CUDA_ARCH__
    return __fma_rn(a, b, c);
#else
    return std::fma(a, b, c);
#endif
}

// Products and sums that the device compiler may not fuse into an FMA
// (NVRTC contracts a * b + c by default, the host harness does not): the
// stages' merge and sums are written with them, so that device and harness
// round alike, and alike to the C core's gn_stats_merge.
GN_HD double gn_mul(double a, double b) {
#ifdef __CUDA_ARCH__
    return __dmul_rn(a, b);
#else
    return a * b;
#endif
}
GN_HD double gn_add(double a, double b) {
#ifdef __CUDA_ARCH__
    return __dadd_rn(a, b);
#else
    return a + b;
#endif
}
GN_HD double gn_ldexp(double v, int e) {
#ifdef __CUDA_ARCH__
    return ldexp(v, e);
#else
    return std::ldexp(v, e);
#endif
}

// True for finite v (false for inf and NaN), without <cmath>'s isfinite.
template <typename A> GN_HD bool gn_finite(A v) { return v - v == (A)0; }

GN_HD double gn_bits_to_double(unsigned long long u) {
#ifdef __CUDA_ARCH__
    return __longlong_as_double((long long)u);
#else
    double d;
    std::memcpy(&d, &u, sizeof d);
    return d;
#endif
}

GN_HD unsigned long long gn_double_to_bits(double d) {
#ifdef __CUDA_ARCH__
    return (unsigned long long)__double_as_longlong(d);
#else
    unsigned long long u;
    std::memcpy(&u, &d, sizeof u);
    return u;
#endif
}

// ---------------------------------------------------------------------------
// Magnitudes.  Every finite input whose variance fits in double must
// normalize correctly, but 16- and 32-bit data are computed in float:
// squares of data with a spread of 1e19 overflow it, squares of a spread of
// 1e-19 underflow it (and the device flushes float subnormals to zero:
// CuPy compiles with -ftz=true).  The fast paths stay in float; what they
// cannot hold is detected and redone (moments in double), or scaled by a
// power of two (normalize and dx).

template <typename A> struct gn_lim;
template <> struct gn_lim<float> {
    // rstd in [free_lo, free_hi]: (x - mean) and rstd * (x - mean) fit float as they are
    static constexpr double free_lo = 0x1p-60, free_hi = 0x1p60;
    static constexpr double scale_lo = 0x1p-126, scale_hi = 0x1p60;   // normal floats
    // a variance below tiny_var may have lost squares to underflow
    static constexpr double tiny_var = 0x1p-100;
};
template <> struct gn_lim<double> {
    static constexpr double free_lo = 0x1p-500, free_hi = 0x1p500;
    static constexpr double scale_lo = 0x1p-1022, scale_hi = 0x1p500;
    static constexpr double tiny_var = 0x1p-900;
};

// A variance computed in A that cannot be trusted and matters: non-finite
// (overflow, or NaN/Inf in the data: the redo propagates them), or so small
// that squares may have underflowed while eps is smaller still (otherwise
// var + eps does not see the difference).
template <typename A>
GN_HD bool gn_moments_suspect(double n, double mean, double m2, double eps) {
    if (!gn_finite(mean) || !gn_finite(m2)) return true;
    return m2 < n * gn_lim<A>::tiny_var && eps < gn_lim<A>::tiny_var * 0x1p30;
}

// 2^floor(log2 v) for a normal double v > 0.
GN_HD double gn_pow2_floor(double v) {
    return gn_bits_to_double(gn_double_to_bits(v) & 0x7ff0000000000000ULL);
}

// The power of two s by which the kernels scale x - mean before applying
// t = rstd / s: 1 for ordinary spreads (the formulas reduce to the plain
// ones), about rstd for extreme ones, so that (x - mean) * s and t stay
// within A's normal range.  NaN stays NaN (through t).
template <typename A>
GN_HD double gn_scale(double r) {
    if (r >= gn_lim<A>::free_lo && r <= gn_lim<A>::free_hi) return 1.0;
    double s = gn_pow2_floor(r);
    if (!(s >= gn_lim<A>::scale_lo)) s = gn_lim<A>::scale_lo;   // also for r = 0
    if (s > gn_lim<A>::scale_hi) s = gn_lim<A>::scale_hi;
    return s;
}

// ---------------------------------------------------------------------------
// Moments (count, mean, M2) and their Chan merge.  A merge with an empty side
// copies the other exactly, so identities and idle threads change nothing.

template <typename A>
GN_HD void gn_chan_merge(A& n, A& mean, A& m2, A nb, A meanb, A m2b) {
    if (nb == (A)0) return;
    if (n == (A)0) { n = nb; mean = meanb; m2 = m2b; return; }
    A nn = n + nb;
    A wb = nb / nn;
    A delta = meanb - mean;
    mean = gn_fma(delta, wb, mean);
    m2 = gn_fma(delta * delta * n, wb, m2 + m2b);
    n = nn;
}

// Mean and M2 of u (1 <= u <= U) values held in registers: an exact
// two-pass over a handful of numbers.
template <typename A, int U>
GN_HD void gn_chunk_moments(const A* v, int u, A& mean, A& m2) {
    A s = 0;
#pragma unroll
    for (int q = 0; q < U; ++q) if (q < u) s += v[q];
    mean = s / (A)u;
    A t = 0;
#pragma unroll
    for (int q = 0; q < U; ++q) if (q < u) { A d = v[q] - mean; t = gn_fma(d, d, t); }
    m2 = t;
}

// The reduce type of the CuPy ReductionKernel that merges partial moments.
struct gn_welford { double n, mean, m2; };

GN_HD gn_welford gn_welford_make(double n, double mean, double m2) {
    gn_welford w; w.n = n; w.mean = mean; w.m2 = m2; return w;
}
GN_HD gn_welford gn_welford_merge(gn_welford a, const gn_welford& b) {
    gn_chan_merge<double>(a.n, a.mean, a.m2, b.n, b.mean, b.m2);
    return a;
}

// Final statistics from merged moments: biased variance (never negative),
// rstd = 1/sqrt(var + eps) in double.
GN_HD double gn_rstd(double n, double m2, double eps) {
    double var = m2 / n;
    if (var < 0.0) var = 0.0;
    return 1.0 / gn_sqrt(var + eps);
}

// The mean as hi + lo in the compute type: x - hi is exact for data near the
// mean, and lo carries what float cannot hold (data with |mean| >> std).
GN_HD void gn_mean_parts(double mean, float& hi, float& lo) {
    hi = (float)mean;
    lo = (float)(mean - (double)hi);
}
GN_HD void gn_mean_parts(double mean, double& hi, double& lo) { hi = mean; lo = 0.0; }

// Per statistics group, what normalize needs in the compute type A:
//   y = ((x * s - hi * s) * (t * gamma)) + (beta - lo * s * (t * gamma)),
// with s = gn_scale(rstd), t = rstd / s: (x - mean) * rstd * gamma + beta,
// x * s - hi * s exact (s a power of two), for any finite spread.
// c[0] = s, c[1] = -hi * s, c[2] = t, c[3] = lo * s.
template <typename A>
GN_HD void gn_norm_coef(double mean, double r, A* c) {
    A hi, lo;
    gn_mean_parts(mean, hi, lo);
    const double s = gn_scale<A>(r);
    c[0] = (A)s;
    c[1] = (A)(-(double)hi * s);
    c[2] = (A)(r / s);
    c[3] = (A)((double)lo * s);
}

template <typename A>
GN_HD A gn_normalize(A x, const A* c, A gam, A bet) {
    const A sc = c[2] * gam;
    const A sh = gn_fma(-c[3], sc, bet);
    return gn_fma(gn_fma(x, c[0], c[1]), sc, sh);
}

// Post-map of the merge ReductionKernel: mean and rstd (the caller's
// arrays), and normalize's coefficients.
template <typename S>
GN_HD void gn_stats_post(const gn_welford& a, double eps, S& mean, S& rstd,
                         S& c0, S& c1, S& c2, S& c3) {
    const double r = gn_rstd(a.n, a.m2, eps);
    mean = (S)a.mean;
    rstd = (S)r;
    S c[4];
    gn_norm_coef<S>(a.mean, r, c);
    c0 = c[0]; c1 = c[1]; c2 = c[2]; c3 = c[3];
}

// xhat = (x - mean) * rstd in A, as (x * s - mean * s) * t: of order 1 for
// any spread (the backward's sums use it, so dy * xhat cannot overflow or
// underflow where dy * (x - mean) would).
template <typename A> struct gn_xhat {
    A s, nms, t;
    GN_HD A of(A x) const { return gn_fma(x, s, nms) * t; }
};
template <typename A>
GN_HD gn_xhat<A> gn_xhat_make(double mean, double r) {
    gn_xhat<A> h;
    const double s = gn_scale<A>(r);
    h.s = (A)s;
    h.nms = (A)(-(double)(A)mean * s);
    h.t = (A)(r / s);
    return h;
}

// Backward, per statistics group of m values, from
//   a = sum_c gamma_c * sum(dy),  br = sum_c gamma_c * sum(dy * xhat):
//   dx = rstd * gamma_c * dy - rstd^2 * br / m * (x - mean) - rstd * a / m
//      = s * (t * gamma_c * dy + c2 * (x * s - mean * s) + c3)
// with s, t as for normalize, c2 = -t^2 * br / m, c3 = -t * a / m: every
// term stays in A's range whatever the spread.
// c[0] = s, c[1] = -mean * s, c[2] = t, c[3] = c2, c[4] = c3.
template <typename A>
GN_HD void gn_bwd_coef(double a, double br, double mean, double r, double m, A* c) {
    const gn_xhat<A> h = gn_xhat_make<A>(mean, r);
    const double t = r / gn_scale<A>(r);
    c[0] = h.s;
    c[1] = h.nms;
    c[2] = h.t;
    c[3] = (A)(-(t * t) * br / m);
    c[4] = (A)(-t * a / m);
}

template <typename A>
GN_HD A gn_dx(A dy, A x, const A* c, A gam) {
    const A xs = gn_fma(x, c[0], c[1]);
    return c[0] * gn_fma(c[2] * gam, dy, gn_fma(c[3], xs, c[4]));
}

// ---------------------------------------------------------------------------
// The stages (issue 14; gn_native/stages.py, the C core's gn_stats_*).
//
// A partial is 5 doubles {count, shift, sum, sumsq, exponent} for one
// (sample, group), or a part of one: sum = sum(x - shift), sumsq =
// sum((x - shift)^2), shift the group's first value.  The device always
// writes exponent 0 and, for data holding inf/NaN or whose squares overflow
// double (float64 data with a spread beyond ~1e154), sumsq NaN: such a
// group's statistics are NaN.  gn_partials_merge folds m partials with the
// C core's formula; partials of other exponents (from the CPU) merge too.
#define GN_PARTIAL_LEN 5
#define GN_DSUM_LEN 2

GN_HD double gn_nan() { return gn_bits_to_double(0x7ff8000000000000ULL); }

// p[j * pstride] for j = 0..m-1: the partials of one statistics group, in order.
// (E = max e_j; S, Q in units of 2^E; then mean, var, rstd.)
GN_HD void gn_partials_merge(const double* p, long long m, long long pstride, double eps,
                             double& mean, double& rstd, double& var) {
    if (m <= 0) { mean = rstd = var = gn_nan(); return; }
    double E = p[4];
    for (long long j = 1; j < m; ++j) if (p[j * pstride + 4] > E) E = p[j * pstride + 4];
    const int ie = (int)E;
    const double c = p[1];
    const int d0 = (int)p[4] - ie;
    double M = p[0], S = gn_ldexp(p[2], d0), Q = gn_ldexp(p[3], 2 * d0);
    for (long long j = 1; j < m; ++j) {
        const double* q = p + j * pstride;
        const int dj = (int)q[4] - ie;
        const double mi = q[0];
        const double d = gn_ldexp(q[1] - c, -ie);
        const double s = gn_ldexp(q[2], dj);
        const double qq = gn_ldexp(q[3], 2 * dj);
        const double md = gn_mul(mi, d);
        S = gn_add(S, gn_add(s, md));
        Q = gn_add(Q, gn_add(qq, gn_mul(d, gn_add(2.0 * s, md))));
        M = gn_add(M, mi);
    }
    if (!(M > 0.0)) { mean = rstd = var = gn_nan(); return; }     // no values
    const double dm = S / M;
    double v = Q / M - gn_mul(dm, dm);
    if (v < 0.0) v = 0.0;               // NaN stays NaN
    mean = gn_add(c, gn_ldexp(dm, ie));
    var = gn_ldexp(v, 2 * ie);
    rstd = 1.0 / gn_sqrt(gn_add(var, eps));
}

// Two sums at once: the reduce type of the partial-sum ReductionKernel.
struct gn_d2 { double x, y; };
GN_HD gn_d2 gn_d2_make(double x, double y) { gn_d2 r; r.x = x; r.y = y; return r; }
GN_HD gn_d2 gn_d2_add(const gn_d2& a, const gn_d2& b) { return gn_d2_make(a.x + b.x, a.y + b.y); }

// ---------------------------------------------------------------------------
// Indexing.

// Walks the elements of one group, in steps of `step` along its linear index
// j, without a division per element.  NCHW: j = k*S + s, offset = j.
// NHWC: j = s*K + k, offset = s*C + k.  (outer, inner) = j / len, j % len.
struct gn_walk {
    long long inner, outer, len, stride, step_in, step_out;
    GN_HD void init(long long j, long long step, long long len_, long long stride_) {
        len = len_; stride = stride_;
        outer = j / len; inner = j - outer * len;
        step_out = step / len; step_in = step - step_out * len;
    }
    GN_HD long long offset() const { return outer * stride + inner; }
    // channel within the group
    GN_HD long long channel(int layout) const { return layout == GN_NCHW ? outer : inner; }
    GN_HD void advance() {
        inner += step_in; outer += step_out;
        if (inner >= len) { inner -= len; ++outer; }
    }
};

// q = n / d for 0 <= n, d < 2^31 with a multiply: (magic, shift) come from
// gn_native._gpu_geometry.fastdiv(d).
GN_HD unsigned int gn_umulhi(unsigned int a, unsigned int b) {
#ifdef __CUDA_ARCH__
    return __umulhi(a, b);
#else
    return (unsigned int)(((unsigned long long)a * b) >> 32);
#endif
}
GN_HD unsigned int gn_fastdiv(unsigned int n, unsigned int magic, unsigned int shift) {
    return (gn_umulhi(n, magic) + n) >> shift;
}

// (sample n, channel c) of flat element i of x in the kernel layout, and the
// index of its statistics (n * gn + g; gn is G for stats="sample", 0 for
// "batch").  small != 0: i < 2^31, use the fast 32-bit division.
struct gn_flat {
    long long c, sp, k, gn;
    int nhwc, small;
    unsigned int mc, sc, ms, ss, mk, sk;
    GN_HD void locate(long long i, long long& n, long long& ch, long long& g, long long& st) const {
        long long q;
        if (small) {
            unsigned int ui = (unsigned int)i, uq;
            if (nhwc) {
                uq = gn_fastdiv(ui, mc, sc);
                ch = (long long)(ui - uq * (unsigned int)c);
                n = (long long)gn_fastdiv(uq, ms, ss);
            } else {
                uq = gn_fastdiv(ui, ms, ss);
                unsigned int un = gn_fastdiv(uq, mc, sc);
                ch = (long long)(uq - un * (unsigned int)c);
                n = (long long)un;
            }
            g = (long long)gn_fastdiv((unsigned int)ch, mk, sk);
        } else {
            if (nhwc) { q = i / c; ch = i - q * c; n = q / sp; }
            else { q = i / sp; n = q / c; ch = q - n * c; }
            g = ch / k;
        }
        st = n * gn + g;
    }
};

GN_HD gn_flat gn_flat_make(long long c, long long sp, long long k, long long gn, int nhwc, int small,
                           unsigned int mc, unsigned int sc, unsigned int ms, unsigned int ss,
                           unsigned int mk, unsigned int sk) {
    gn_flat f;
    f.c = c; f.sp = sp; f.k = k; f.gn = gn; f.nhwc = nhwc; f.small = small;
    f.mc = mc; f.sc = sc; f.ms = ms; f.ss = ss; f.mk = mk; f.sk = sk;
    return f;
}

// The activations (gn_act.cuh needs the helpers above; it includes this file
// itself, so either may be included first).
#include "gn_act.cuh"

#endif  // GN_MATH_CUH
