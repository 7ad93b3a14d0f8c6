// raw_harness.cpp -- C entry points (for ctypes) that run the gn_native GPU
// kernels' code on the CPU: the RawKernel templates of gn_kernels.cuh under
// host_shim.h, and the scalar helpers of gn_math.cuh.  Built by
// tests/gpu_harness/host_exec.py with g++ -std=c++20 into a temporary
// directory, with the RawModule's -D options (its __launch_bounds__) and
// the CuPy operation strings (generated elementwise.inc).
#include "host_shim.h"
#include "gn_kernels.cuh"

// dtype codes: 0 float16, 1 bfloat16, 2 float32, 3 float64
#define GN_DISPATCH_T(code, CALL)                               \
    switch (code) {                                              \
        case 0: { typedef gn_half T; CALL; break; }              \
        case 1: { typedef gn_bfloat T; CALL; break; }            \
        case 2: { typedef float T; CALL; break; }                \
        case 3: { typedef double T; CALL; break; }               \
        default: return -1;                                      \
    }

#define GN_DISPATCH_L(layout, CALL)                              \
    if (layout == 0) { const int L = 0; CALL; }                  \
    else { const int L = 1; CALL; }

#define GN_DISPATCH_A(aff, CALL)                                 \
    if (aff == 0) { const int AF = 0; CALL; }                    \
    else if (aff == 1) { const int AF = 1; CALL; }               \
    else { const int AF = 2; CALL; }

// activation ids of gn_act.cuh
#define GN_DISPATCH_ACT(act, CALL)                               \
    switch (act) {                                               \
        case 0: { const int AC = 0; CALL; break; }               \
        case 1: { const int AC = 1; CALL; break; }               \
        case 2: { const int AC = 2; CALL; break; }               \
        case 3: { const int AC = 3; CALL; break; }               \
        case 4: { const int AC = 4; CALL; break; }               \
        default: return -1;                                      \
    }

// The entry points return 0, or -2 for a block larger than the kernel's
// __launch_bounds__ (see gn_host_launch).

// host_exec.py compiles this file three times, with GN_HARNESS_PART = 1, 2
// and 3, in parallel, and links the objects: a single g++ run of every
// kernel instantiation (4 dtypes x 2 layouts x 3 affine kinds x 5
// activations) takes about a minute.
#ifndef GN_HARNESS_PART
#error "compile with -DGN_HARNESS_PART=1, 2 or 3 (see tests/gpu_harness/host_exec.py)"
#endif

#if GN_HARNESS_PART == 1

template <typename T, int L, int AF, int AC>
static int run_fwd_fused(void* y, void* mean, void* rstd, const void* x, const void* gamma, const void* beta,
                         long long N, long long C, long long Sp, long long G, double eps,
                         long long grid, int block, long long smem) {
    typedef typename gn_traits<T>::stat S;
    return gn_host_launch(grid, block, GN_FUSED_BLOCK_MAX, (size_t)smem, [=] {
        gn_fwd_fused<T, L, AF, AC>((T*)y, (S*)mean, (S*)rstd, (const T*)x, (const T*)gamma, (const T*)beta,
                               N, C, Sp, G, eps);
    });
}

template <typename T, int L>
static int run_stats_partial(double* pn, double* pmean, double* pm2, const void* x, long long N, long long C,
                             long long Sp, long long G, long long P, long long chunk, double eps,
                             long long grid, int block, long long smem) {
    return gn_host_launch(grid, block, GN_SPLIT_BLOCK, (size_t)smem, [=] {
        gn_stats_partial<T, L>(pn, pmean, pm2, (const T*)x, N, C, Sp, G, P, chunk, eps);
    });
}

// The stages (issue 14).
template <typename T, int L>
static int run_stats_rows(double* rows, const void* x, long long N, long long C, long long Sp, long long G,
                          long long P, long long chunk, long long grid, int block, long long smem) {
    return gn_host_launch(grid, block, GN_SPLIT_BLOCK, (size_t)smem, [=] {
        gn_stats_rows<T, L>(rows, (const T*)x, N, C, Sp, G, P, chunk);
    });
}

// S codes (the stage kernels' statistics dtype): 2 float, 3 double
#define GN_DISPATCH_S(code, CALL)                               \
    switch (code) {                                              \
        case 2: { typedef float S; CALL; break; }                \
        case 3: { typedef double S; CALL; break; }               \
        default: return -1;                                      \
    }

extern "C" {

int h_stats_rows(int dtype, int layout, double* rows, const void* x, long long N, long long C, long long Sp,
                 long long G, long long P, long long chunk, long long grid, int block, long long smem) {
    int rc = -1;
    GN_DISPATCH_T(dtype, GN_DISPATCH_L(layout, (rc = run_stats_rows<T, L>(
        rows, x, N, C, Sp, G, P, chunk, grid, block, smem))));
    return rc;
}

int h_partial_fold(int sdtype, double* part, const double* rows, long long NG, long long P,
                   long long grid, int block, long long smem) {
    (void)sdtype;
    return gn_host_launch(grid, block, GN_STAGE_BLOCK, (size_t)smem, [=] { gn_partial_fold(part, rows, NG, P); });
}

int h_stats_merge(int sdtype, double* mean, double* rstd, double* var, void* mean_s, void* rstd_s,
                  const double* part, long long m, long long k, double eps, long long grid, int block,
                  long long smem) {
    int rc = -1;
    GN_DISPATCH_S(sdtype, (rc = gn_host_launch(grid, block, GN_STAGE_BLOCK, (size_t)smem, [=] {
        gn_stats_merge<S>(mean, rstd, var, (S*)mean_s, (S*)rstd_s, part, m, k, eps);
    })));
    return rc;
}

int h_pair_sums(int sdtype, double* o0, double* o1, const double* in, const void* rstd, long long O, long long Q,
                long long C, long long K, long long rs, long long grid, int block, long long smem) {
    int rc = -1;
    GN_DISPATCH_S(sdtype, (rc = gn_host_launch(grid, block, GN_STAGE_BLOCK, (size_t)smem, [=] {
        gn_pair_sums<S>(o0, o1, in, (const S*)rstd, O, Q, C, K, rs);
    })));
    return rc;
}

// gn_partials_merge on m partials of one group (stride 5), on the host.
void h_partials_merge(const double* p, long long m, double eps, double* out) {
    gn_partials_merge(p, m, GN_PARTIAL_LEN, eps, out[0], out[1], out[2]);
}

int h_fwd_fused(int dtype, int layout, int aff, int act, void* y, void* mean, void* rstd, const void* x,
                const void* gamma, const void* beta, long long N, long long C, long long Sp, long long G,
                double eps, long long grid, int block, long long smem) {
    int rc = -1;
    GN_DISPATCH_T(dtype, GN_DISPATCH_L(layout, GN_DISPATCH_A(aff, GN_DISPATCH_ACT(act, (rc = run_fwd_fused<T, L, AF, AC>(
        y, mean, rstd, x, gamma, beta, N, C, Sp, G, eps, grid, block, smem))))));
    return rc;
}

int h_stats_partial(int dtype, int layout, double* pn, double* pmean, double* pm2, const void* x,
                    long long N, long long C, long long Sp, long long G, long long P, long long chunk,
                    double eps, long long grid, int block, long long smem) {
    int rc = -1;
    GN_DISPATCH_T(dtype, GN_DISPATCH_L(layout, (rc = run_stats_partial<T, L>(
        pn, pmean, pm2, x, N, C, Sp, G, P, chunk, eps, grid, block, smem))));
    return rc;
}

}  // extern "C"

#elif GN_HARNESS_PART == 2

template <typename T, int L, int AF, int AC>
static int run_bwd_fused(void* dx, void* pdb, void* pdg, const void* dy, const void* x, const void* mean,
                         const void* rstd, const void* gamma, const void* beta, long long N, long long C, long long Sp,
                         long long G, int tx_len, long long grid, int block, long long smem) {
    typedef typename gn_traits<T>::stat S;
    typedef typename gn_traits<T>::acc A;
    return gn_host_launch(grid, block, GN_FUSED_BLOCK_MAX, (size_t)smem, [=] {
        gn_bwd_fused<T, L, AF, AC>((T*)dx, (A*)pdb, (A*)pdg, (const T*)dy, (const T*)x, (const S*)mean,
                                   (const S*)rstd, (const T*)gamma, (const T*)beta, N, C, Sp, G, tx_len);
    });
}

extern "C" {

int h_bwd_fused(int dtype, int layout, int aff, int act, void* dx, void* pdb, void* pdg, const void* dy,
                const void* x, const void* mean, const void* rstd, const void* gamma, const void* beta, long long N, long long C,
                long long Sp, long long G, int tx_len, long long grid, int block, long long smem) {
    int rc = -1;
    GN_DISPATCH_T(dtype, GN_DISPATCH_L(layout, GN_DISPATCH_A(aff, GN_DISPATCH_ACT(act, (rc = run_bwd_fused<T, L, AF, AC>(
        dx, pdb, pdg, dy, x, mean, rstd, gamma, beta, N, C, Sp, G, tx_len, grid, block, smem))))));
    return rc;
}

}  // extern "C"

#else  // part 3: the split backward, the scalar helpers and the CuPy kernels

template <typename T, int L, int AC>
static int run_bwd_partial(void* pdb, void* pdg, const void* dy, const void* x, const void* mean,
                           const void* rstd, const void* gamma, const void* beta, int aff, long long N, long long C,
                           long long Sp, long long G,
                           long long gn, long long P, long long chunk, int tx_len,
                           long long grid, int block, long long smem) {
    typedef typename gn_traits<T>::stat S;
    typedef typename gn_traits<T>::acc A;
    return gn_host_launch(grid, block, GN_SPLIT_BLOCK, (size_t)smem, [=] {
        gn_bwd_partial<T, L, AC>((A*)pdb, (A*)pdg, (const T*)dy, (const T*)x, (const S*)mean, (const S*)rstd,
                                 (const T*)gamma, (const T*)beta, aff, N, C, Sp, G, gn, P, chunk, tx_len);
    });
}

template <typename T, int L>
static int run_bwd_reduce(double* rows, const void* dy, const void* x, const void* mean, const void* rstd,
                          const void* gamma, const void* beta, int aff, int act, long long N, long long C,
                          long long Sp, long long G, long long gn, long long P, long long chunk, int tx_len,
                          long long grid, int block, long long smem) {
    typedef typename gn_traits<T>::stat S;
    return gn_host_launch(grid, block, GN_SPLIT_BLOCK, (size_t)smem, [=] {
        gn_bwd_reduce<T, L>(rows, (const T*)dy, (const T*)x, (const S*)mean, (const S*)rstd, (const T*)gamma,
                            (const T*)beta, aff, act, N, C, Sp, G, gn, P, chunk, tx_len);
    });
}

extern "C" {

int h_bwd_reduce(int dtype, int layout, double* rows, const void* dy, const void* x, const void* mean,
                 const void* rstd, const void* gamma, const void* beta, int aff, int act, long long N, long long C,
                 long long Sp, long long G, long long gn, long long P, long long chunk, int tx_len,
                 long long grid, int block, long long smem) {
    int rc = -1;
    GN_DISPATCH_T(dtype, GN_DISPATCH_L(layout, (rc = run_bwd_reduce<T, L>(
        rows, dy, x, mean, rstd, gamma, beta, aff, act, N, C, Sp, G, gn, P, chunk, tx_len, grid, block, smem))));
    return rc;
}

int h_bwd_partial(int dtype, int layout, int act, void* pdb, void* pdg, const void* dy, const void* x,
                  const void* mean, const void* rstd, const void* gamma, const void* beta, int aff, long long N,
                  long long C, long long Sp, long long G,
                  long long gn, long long P, long long chunk, int tx_len,
                  long long grid, int block, long long smem) {
    int rc = -1;
    GN_DISPATCH_T(dtype, GN_DISPATCH_L(layout, GN_DISPATCH_ACT(act, (rc = run_bwd_partial<T, L, AC>(
        pdb, pdg, dy, x, mean, rstd, gamma, beta, aff, N, C, Sp, G, gn, P, chunk, tx_len, grid, block, smem)))));
    return rc;
}

// The activations of gn_act.cuh and their derivatives, value by value, as
// the kernels compute them (float for float data, double for float64), under
// the device's flush-to-zero for float.
void h_act_f32(int act, int grad, const float* z, float* out, long long n) {
    GnHostFtz ftz;
    for (long long i = 0; i < n; ++i) out[i] = grad ? gn_act_grad<float>(act, z[i]) : gn_act_value<float>(act, z[i]);
}
void h_act_f64(int act, int grad, const double* z, double* out, long long n) {
    for (long long i = 0; i < n; ++i) out[i] = grad ? gn_act_grad<double>(act, z[i]) : gn_act_value<double>(act, z[i]);
}

// Conversions, element by element.
void h_half_to_float(const unsigned short* h, float* f, long long n) {
    for (long long i = 0; i < n; ++i) f[i] = gn_half_to_float(h[i]);
}
void h_float_to_half(const float* f, unsigned short* h, long long n) {
    for (long long i = 0; i < n; ++i) h[i] = gn_float_to_half(f[i]);
}
void h_float_to_bf16(const float* f, unsigned short* h, long long n) {
    for (long long i = 0; i < n; ++i) h[i] = gn_float_to_bf16(f[i]);
}

void h_fastdiv(const unsigned int* num, unsigned int* q, long long n, unsigned int magic, unsigned int shift) {
    for (long long i = 0; i < n; ++i) q[i] = gn_fastdiv(num[i], magic, shift);
}

// Offsets and channels a gn_walk visits from j0 in steps of `step`, count times.
void h_walk(long long j0, long long step, long long len, long long stride, int layout, long long count,
            long long* off, long long* ch) {
    gn_walk w;
    w.init(j0, step, len, stride);
    for (long long i = 0; i < count; ++i) { off[i] = w.offset(); ch[i] = w.channel(layout); w.advance(); }
}

// gn_flat::locate for flat indices idx[0..n).
void h_locate(const long long* idx, long long n, long long C, long long Sp, long long K, long long GN, int nhwc,
              int small, unsigned int mc, unsigned int sc, unsigned int ms, unsigned int ss, unsigned int mk,
              unsigned int sk, long long* out_n, long long* out_c, long long* out_g, long long* out_st) {
    const gn_flat f = gn_flat_make(C, Sp, K, GN, nhwc, small, mc, sc, ms, ss, mk, sk);
    for (long long i = 0; i < n; ++i) f.locate(idx[i], out_n[i], out_c[i], out_g[i], out_st[i]);
}

// Welford/Chan over x (float or double values) in chunks of `chunk`, merged
// in the given order; returns (n, mean, m2) -- the float32 path of the kernels.
void h_moments_f32(const float* x, long long n, float shift, int chunk, float* out) {
    float cnt = 0, mean = 0, m2 = 0;
    for (long long i = 0; i < n; i += chunk) {
        float v[8];
        int u = 0;
        for (int q = 0; q < 8 && q < chunk && i + q < n; ++q) { v[q] = x[i + q] - shift; ++u; }
        float cm, cm2;
        gn_chunk_moments<float, 8>(v, u, cm, cm2);
        gn_chan_merge<float>(cnt, mean, m2, (float)u, cm, cm2);
    }
    out[0] = cnt; out[1] = mean + shift; out[2] = m2;
}

}  // extern "C"

#include "elementwise.inc"

extern "C" {

// The order gn_host_launch runs the blocks of a grid in.
void h_block_order(long long grid, long long* out) {
    const std::vector<long long> order = gn_host_block_order(grid);
    for (long long b = 0; b < grid; ++b) out[b] = order[b];
}

// a * b + c in float under the harness' flush-to-zero (as the device's -ftz=true).
// (volatile: the compiler may not move the arithmetic out of the guard's scope)
float h_ftz_fma(float a, float b, float c) {
    volatile float r;
    {
        GnHostFtz ftz;
        volatile float va = a, vb = b, vc = c;
        r = va * vb + vc;
    }
    return r;
}

}  // extern "C"

#endif  // GN_HARNESS_PART
