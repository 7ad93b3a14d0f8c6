// gn_kernels.cuh -- the RawKernels of the GPU backend (templates).
//
// T is the storage type (gn_half, gn_bfloat, float, double), L the memory
// layout (GN_NCHW: x[n][c][s], GN_NHWC: x[n][s][c]), AFF the affine kind,
// ACT the activation applied after the affine step (gn_act.cuh's ids).
//
// ACT is a template parameter, not a kernel argument: the fused kernels run
// at the register limit their __launch_bounds__ set (up to 128 per thread
// for the 16-bit backward on sm_100/sm_120), and a run-time switch would
// make every instance carry the costliest activation's registers and code in
// its unrolled loops, the plain (ACT = 0) kernel included.  As a template,
// ACT = 0 compiles to the kernel without activation, unchanged, and each
// activation is checked on its own by gn_native.gpu_check.  The backend
// builds one RawModule per (dtype, layout, activation), so a process
// compiles only the activations it uses.
// A = gn_traits<T>::acc is the compute type, S = gn_traits<T>::stat the
// type of mean/rstd.  Launch geometry (grid, block, shared memory, chunks)
// comes from gn_native/_gpu_geometry.py; blockDim.x is a power of two.
//
// Only __syncthreads() and dynamic shared memory are used between threads
// (no warp shuffles, no atomics): reductions run in a fixed order, results
// are the same run after run, and tests/gpu_harness/host_shim.h can run
// these kernels on the CPU with one std::thread per CUDA thread.
#ifndef GN_KERNELS_CUH
#define GN_KERNELS_CUH

#include "gn_math.cuh"

#ifndef GN_HOST_EMULATION
#define GN_DEV __device__ __forceinline__
#define GN_DYN_SMEM(name) extern __shared__ __align__(16) unsigned char name[]
#define GN_SYNC() __syncthreads()
#define GN_TID ((int)threadIdx.x)
#define GN_NT ((int)blockDim.x)
#define GN_BID ((long long)blockIdx.x)
#define GN_NB ((long long)gridDim.x)
#define GN_BOUNDS(threads, blocks) __launch_bounds__(threads, blocks)
#endif

// The largest block each kernel is launched with, and how many such blocks
// an SM should hold at once (which caps registers per thread at
// 65536 / (threads * blocks)).  gn_native._gpu_kernels.raw_options() sets
// them from gn_native/_gpu_geometry.py, so that __launch_bounds__ and the
// launches come from one place; gn_native.gpu_check checks what ptxas made
// of them (registers x largest block <= 65536, no spills).
#if !defined(GN_FUSED_BLOCK_MAX) || !defined(GN_FUSED_MIN_BLOCKS) || !defined(GN_SPLIT_BLOCK) || \
    !defined(GN_SPLIT_MIN_BLOCKS) || !defined(GN_STAGE_BLOCK)
#error "compile with the options of gn_native._gpu_kernels.raw_options() (-DGN_FUSED_BLOCK_MAX=... etc.)"
#endif

// Values each thread loads per loop iteration: 16 bytes in flight per thread
// whatever the dtype (8 halves, 4 floats, 2 doubles).
template <typename T> struct gn_unroll { enum { value = sizeof(T) >= 8 ? 2 : (sizeof(T) >= 4 ? 4 : 8) }; };

// The same for the loops that apply activation ACT: half as many values for
// GELU and GELU-tanh, whose float versions compute in double (gn_act.cuh):
// eight inlined copies of that arithmetic made the 16-bit backward spill on
// sm_100/sm_120 at its 128-register cap, and took long to compile.
template <typename T, int ACT> struct gn_unroll_act {
    enum { value = (ACT == GN_ACT_ID_GELU || ACT == GN_ACT_ID_GELU_TANH) && gn_unroll<T>::value > 1
                       ? gn_unroll<T>::value / 2 : gn_unroll<T>::value };
};


// ---------------------------------------------------------------------------
// Block-level pieces.  Every thread of the block must call them.

// Tree-merge the moments held in (sn, smean, sm2)[0..nt) into slot 0.
GN_DEV void gn_block_merge_moments(double* sn, double* smean, double* sm2, int tid, int nt) {
    for (int s = nt >> 1; s > 0; s >>= 1) {
        if (tid < s) gn_chan_merge<double>(sn[tid], smean[tid], sm2[tid], sn[tid + s], smean[tid + s], sm2[tid + s]);
        GN_SYNC();
    }
}

// Moments (count, mean, M2) of elements [j0, j1) of one group, whose element
// j sits at xg[walk offset of j].  j1 - j0 < 2^30 (the geometry's fused
// groups and split chunks), so the loop counts in 32 bits: fewer registers
// and compares than 64-bit ones; addresses stay 64-bit (gn_walk).  Threads hold Welford/Chan moments in A, of
// values shifted by the range's first element (so that the mean of data far
// from zero stays exact), U values at a time; the block merges them in double.
template <typename T, typename A, int U>
GN_DEV void gn_block_moments_in(const T* xg, long long j0, long long j1, long long len, long long stride,
                                double* smem, double& cnt, double& mean, double& m2) {
    const int tid = GN_TID, nt = GN_NT;
    double* sn = smem;
    double* smean = smem + nt;
    double* sm2 = smem + 2 * nt;
    gn_walk w;
    w.init(j0, 1, len, stride);
    const A shift = (A)gn_to_acc(xg[w.offset()]);
    w.init(j0 + tid, nt, len, stride);
    A n = 0, mu = 0, s2 = 0;
    const int jn = (int)(j1 - j0);
    for (int j = tid; j < jn; j += U * nt) {
        A v[U];
        int u = 0;
#pragma unroll
        for (int q = 0; q < U; ++q) {
            if (j + q * nt < jn) {
                v[q] = (A)gn_to_acc(xg[w.offset()]) - shift;
                w.advance();
                ++u;
            }
        }
        A cm, cm2;
        gn_chunk_moments<A, U>(v, u, cm, cm2);
        gn_chan_merge<A>(n, mu, s2, (A)u, cm, cm2);
    }
    sn[tid] = (double)n;
    smean[tid] = (double)shift + (double)mu;
    sm2[tid] = (double)s2;
    GN_SYNC();
    gn_block_merge_moments(sn, smean, sm2, tid, nt);
    cnt = sn[0]; mean = smean[0]; m2 = sm2[0];
    GN_SYNC();  // slot 0 read by all before the caller reuses shared memory
}

// The same in the compute type, redone in double (one value at a time: a
// rare path, kept light on registers) when the float result overflowed,
// or may have lost squares to underflow while eps is smaller still
// (gn_moments_suspect).  The test is on block-wide values: every thread
// takes the same branch.
template <typename T>
GN_DEV void gn_block_moments(const T* xg, long long j0, long long j1, long long len, long long stride,
                             double eps, double* smem, double& cnt, double& mean, double& m2) {
    typedef typename gn_traits<T>::acc A;
    gn_block_moments_in<T, A, gn_unroll<T>::value>(xg, j0, j1, len, stride, smem, cnt, mean, m2);
    if (sizeof(A) < sizeof(double) && gn_moments_suspect<A>(cnt, mean, m2, eps))
        gn_block_moments_in<T, double, 1>(xg, j0, j1, len, stride, smem, cnt, mean, m2);
}

// Tree-sum two arrays over one dimension of the block, viewed as (rlen) rows
// of stride `rstride`: thread at reduce position rpos adds its partner's.
GN_DEV void gn_block_sum2(double* ra, double* rb, int tid, int rpos, int rlen, int rstride) {
    for (int s = rlen >> 1; s > 0; s >>= 1) {
        if (rpos < s) { ra[tid] += ra[tid + s * rstride]; rb[tid] += rb[tid + s * rstride]; }
        GN_SYNC();
    }
}

// How a block of nt threads covers a tile of channels x spatial positions:
// NCHW rows are channels (contiguous along s): tx runs along s, ty over
// channels.  NHWC rows are positions (contiguous along c): tx runs over
// channels, ty along s.  tx has tx_len (a power of two) values.
struct gn_tile {
    int cpos, clen, rpos, rlen, rstride;
    GN_DEV void init(int layout, int tid, int nt, int tx_len) {
        int tx = tid & (tx_len - 1), ty = tid / tx_len, ty_len = nt / tx_len;
        if (layout == GN_NCHW) { cpos = ty; clen = ty_len; rpos = tx; rlen = tx_len; rstride = 1; }
        else { cpos = tx; clen = tx_len; rpos = ty; rlen = ty_len; rstride = tx_len; }
    }
};

// sum(g) and sum(g * xhat) over positions s0 + rpos, s0 + rpos + rlen, ...
// < s1 of channel c of one sample (xb, dyb point at the sample), xhat as
// gn_xhat (of order 1 whatever the data's spread), g = dy * a'(z) with
// z = gam * xhat + bet (the channel's gamma and beta; g = dy for ACT = 0).  Chunks of gn_unroll
// values are summed in the compute type, then in double; a chunk whose
// float sums overflowed (dy near float's limit, or NaN/Inf in the data) is
// summed again in double.  s1 - s0 < 2^30: int counters, as in
// gn_block_moments_in.
template <typename T, int ACT>
GN_DEV void gn_chunk_sums_double(const T* dyb, const T* xb, long long cbase, long long cstride, long long s,
                                 long long s1, int rlen, int u, double mu, double r,
                                 const gn_xhat<typename gn_traits<T>::acc>& h, typename gn_traits<T>::acc gam,
                                 typename gn_traits<T>::acc bet, double& sdy, double& sdyx) {
    double da = 0.0, db = 0.0;
    for (int q = 0; q < u; ++q) {
        const long long sq = s + (long long)q * rlen;
        if (sq < s1) {
            const long long off = cbase + sq * cstride;
            double d = (double)gn_to_acc(dyb[off]);
            if (ACT) d *= (double)gn_act<ACT>::grad(gn_fma(gam, h.of(gn_to_acc(xb[off])), bet));
            da += d;
            db = gn_fma(d, ((double)gn_to_acc(xb[off]) - mu) * r, db);
        }
    }
    sdy += da;
    sdyx += db;
}

template <typename T, int L, int ACT>
GN_DEV void gn_channel_sums(const T* dyb, const T* xb, long long c, long long s0, long long s1,
                            long long C, long long Sp, int rpos, int rlen,
                            const gn_xhat<typename gn_traits<T>::acc>& h, double mu, double r,
                            typename gn_traits<T>::acc gam, typename gn_traits<T>::acc bet,
                            double& sdy, double& sdyx) {
    typedef typename gn_traits<T>::acc A;
    const int U = gn_unroll_act<T, ACT>::value;
    sdy = 0.0; sdyx = 0.0;
    const long long cstride = L == GN_NCHW ? 1 : C;    // distance between positions
    const long long cbase = L == GN_NCHW ? c * Sp : c;
    const int sn = (int)(s1 - s0);
    for (int s = rpos; s < sn; s += U * rlen) {
        A a = 0, b = 0;
#pragma unroll
        for (int q = 0; q < U; ++q) {
            const int sq = s + q * rlen;
            if (sq < sn) {
                long long off = cbase + (s0 + sq) * cstride;
                A d = gn_to_acc(dyb[off]);
                const A xh = h.of(gn_to_acc(xb[off]));
                if (ACT) d = d * gn_act<ACT>::grad(gn_fma(gam, xh, bet));
                a += d;
                b = gn_fma(d, xh, b);
            }
        }
        if (sizeof(A) < sizeof(double) && !(gn_finite(a) && gn_finite(b))) {
            gn_chunk_sums_double<T, ACT>(dyb, xb, cbase, cstride, s0 + s, s1, rlen, U, mu, r, h, gam, bet,
                                         sdy, sdyx);
        } else {
            sdy += (double)a;
            sdyx += (double)b;
        }
    }
}

template <int AFF, typename T>
GN_DEV void gn_affine_load(const T* gamma, const T* beta, long long c, long long g,
                           typename gn_traits<T>::acc& gam, typename gn_traits<T>::acc& bet) {
    typedef typename gn_traits<T>::acc A;
    gam = (A)1; bet = (A)0;
    if (AFF == GN_AFFINE_NONE) return;
    long long idx = AFF == GN_AFFINE_CHANNEL ? c : g;
    if (gamma) gam = gn_to_acc(gamma[idx]);
    if (beta) bet = gn_to_acc(beta[idx]);
}

// ---------------------------------------------------------------------------
// Forward, stats="sample", one block per group (n, g): statistics, then
// normalize + affine re-reading the group (from L2 for groups of moderate
// size).  y may alias x.  Shared memory: 3 * blockDim doubles.
//
// The normalize loop loads U values before it stores any (U loads in
// flight per thread, also when y aliases x), and walks the group twice
// (a copy of the walk for the stores) instead of keeping U offsets and
// channels in registers: two 64-bit values fewer per unrolled value.
template <typename T, int L, int AFF, int ACT>
__global__ void GN_BOUNDS(GN_FUSED_BLOCK_MAX, GN_FUSED_MIN_BLOCKS)
gn_fwd_fused(T* y, typename gn_traits<T>::stat* mean, typename gn_traits<T>::stat* rstd,
             const T* x, const T* gamma, const T* beta,
             long long N, long long C, long long Sp, long long G, double eps) {
    typedef typename gn_traits<T>::acc A;
    typedef typename gn_traits<T>::stat S;
    GN_DYN_SMEM(smem_raw);
    double* smem = (double*)smem_raw;
    const int tid = GN_TID, nt = GN_NT;
    const long long K = C / G, M = K * Sp;
    const long long len = L == GN_NCHW ? Sp : K, stride = L == GN_NCHW ? Sp : C;
    for (long long grp = GN_BID; grp < N * G; grp += GN_NB) {
        const long long n = grp / G, g = grp - n * G;
        const long long base = L == GN_NCHW ? (n * C + g * K) * Sp : n * Sp * C + g * K;
        double cnt, mu, m2;
        gn_block_moments<T>(x + base, 0, M, len, stride, eps, smem, cnt, mu, m2);
        const double r = gn_rstd(cnt, m2, eps);
        if (tid == 0) { mean[grp] = (S)mu; rstd[grp] = (S)r; }
        A coef[4];
        gn_norm_coef<A>(mu, r, coef);
        const int U = gn_unroll_act<T, ACT>::value;
        gn_walk w;
        w.init(tid, nt, len, stride);
        const int Mi = (int)M;
        for (int j = tid; j < Mi; j += U * nt) {
            gn_walk ws = w;
            A v[U];
#pragma unroll
            for (int q = 0; q < U; ++q) {
                if (j + q * nt < Mi) {
                    v[q] = gn_to_acc(x[base + w.offset()]);
                    w.advance();
                }
            }
#pragma unroll
            for (int q = 0; q < U; ++q) {
                if (j + q * nt < Mi) {
                    A gam, bet;
                    gn_affine_load<AFF, T>(gamma, beta, g * K + ws.channel(L), g, gam, bet);
                    y[base + ws.offset()] = gn_from_acc<T>(gn_act<ACT>::value(gn_normalize<A>(v[q], coef, gam, bet)));
                    ws.advance();
                }
            }
        }
    }
}

// Forward, split path, stage 1: moments of chunk p of group (n, g), for
// item = (p * N + n) * G + g, chunk = elements [p*chunk, (p+1)*chunk) of the
// group's linear index.  Merged by the gn_merge_stats ReductionKernel.
template <typename T, int L>
__global__ void GN_BOUNDS(GN_SPLIT_BLOCK, GN_SPLIT_MIN_BLOCKS)
gn_stats_partial(double* pn, double* pmean, double* pm2, const T* x,
                 long long N, long long C, long long Sp, long long G,
                 long long P, long long chunk, double eps) {
    GN_DYN_SMEM(smem_raw);
    double* smem = (double*)smem_raw;
    const long long K = C / G, M = K * Sp;
    const long long len = L == GN_NCHW ? Sp : K, stride = L == GN_NCHW ? Sp : C;
    for (long long item = GN_BID; item < P * N * G; item += GN_NB) {
        const long long p = item / (N * G), ng = item - p * (N * G);
        const long long n = ng / G, g = ng - n * G;
        const long long base = L == GN_NCHW ? (n * C + g * K) * Sp : n * Sp * C + g * K;
        const long long j0 = p * chunk;
        const long long j1 = j0 + chunk < M ? j0 + chunk : M;
        double cnt, mu, m2;
        gn_block_moments<T>(x + base, j0, j1, len, stride, eps, smem, cnt, mu, m2);
        if (GN_TID == 0) { pn[item] = cnt; pmean[item] = mu; pm2[item] = m2; }
    }
}

// Backward, stats="sample", one block per group (n, g).  Pass 1: per channel
// sum(g) and sum(g * xhat), g = dy * a'(z) (dy for ACT = 0), written to
// pdb/pdg[n * C + c] (pdg: the sample's share of dgamma).  Pass 2: dx.
// beta is read only with an activation (z needs it).  dx may alias dy
// or x.  Shared memory: 2 * (blockDim + K) doubles.  tx_len: see gn_tile.
template <typename T, int L, int AFF, int ACT>
__global__ void GN_BOUNDS(GN_FUSED_BLOCK_MAX, GN_FUSED_MIN_BLOCKS)
gn_bwd_fused(T* dx, typename gn_traits<T>::acc* pdb, typename gn_traits<T>::acc* pdg,
             const T* dy, const T* x, const typename gn_traits<T>::stat* mean,
             const typename gn_traits<T>::stat* rstd, const T* gamma, const T* beta,
             long long N, long long C, long long Sp, long long G, int tx_len) {
    typedef typename gn_traits<T>::acc A;
    GN_DYN_SMEM(smem_raw);
    const int tid = GN_TID, nt = GN_NT;
    double* ra = (double*)smem_raw;
    double* rb = ra + nt;
    const long long K = C / G, M = K * Sp;
    double* cdy = rb + nt;
    double* cdyx = cdy + K;
    const long long len = L == GN_NCHW ? Sp : K, stride = L == GN_NCHW ? Sp : C;
    gn_tile t;
    t.init(L, tid, nt, tx_len);
    for (long long grp = GN_BID; grp < N * G; grp += GN_NB) {
        const long long n = grp / G, g = grp - n * G;
        const long long nbase = n * C * Sp;
        const A mu = (A)mean[grp];
        const double r = (double)rstd[grp];
        const gn_xhat<A> h = gn_xhat_make<A>((double)mu, r);
        for (long long k0 = 0; k0 < K; k0 += t.clen) {
            const long long k = k0 + t.cpos;
            double sdy = 0.0, sdyx = 0.0;
            if (k < K) {
                A gam = (A)1, bet = (A)0;
                if (ACT) gn_affine_load<AFF, T>(gamma, beta, g * K + k, g, gam, bet);
                gn_channel_sums<T, L, ACT>(dy + nbase, x + nbase, g * K + k, 0, Sp, C, Sp, t.rpos, t.rlen, h,
                                           (double)mu, r, gam, bet, sdy, sdyx);
            }
            ra[tid] = sdy; rb[tid] = sdyx;
            GN_SYNC();
            gn_block_sum2(ra, rb, tid, t.rpos, t.rlen, t.rstride);
            if (t.rpos == 0 && k < K) { cdy[k] = ra[tid]; cdyx[k] = rb[tid]; }
            GN_SYNC();
        }
        double a = 0.0, b = 0.0;
        for (long long k = tid; k < K; k += nt) {
            const long long c = g * K + k;
            pdb[n * C + c] = (A)cdy[k];
            pdg[n * C + c] = (A)cdyx[k];
            A gam, bet;
            gn_affine_load<AFF, T>(gamma, (const T*)0, c, g, gam, bet);
            a += (double)gam * cdy[k];
            b += (double)gam * cdyx[k];
        }
        ra[tid] = a; rb[tid] = b;
        GN_SYNC();
        gn_block_sum2(ra, rb, tid, tid, nt, 1);
        A coef[5];
        gn_bwd_coef<A>(ra[0], rb[0], (double)mu, r, (double)M, coef);
        GN_SYNC();
        const int U = gn_unroll_act<T, ACT>::value;
        gn_walk w;
        w.init(tid, nt, len, stride);
        const long long gbase = L == GN_NCHW ? (n * C + g * K) * Sp : n * Sp * C + g * K;
        const int Mi = (int)M;
        for (int j = tid; j < Mi; j += U * nt) {
            gn_walk ws = w;      // see gn_fwd_fused
            A dv[U], xv[U];
#pragma unroll
            for (int q = 0; q < U; ++q) {
                if (j + q * nt < Mi) {
                    const long long off = gbase + w.offset();
                    dv[q] = gn_to_acc(dy[off]);
                    xv[q] = gn_to_acc(x[off]);
                    w.advance();
                }
            }
#pragma unroll
            for (int q = 0; q < U; ++q) {
                if (j + q * nt < Mi) {
                    A gam, bet;
                    gn_affine_load<AFF, T>(gamma, ACT ? beta : (const T*)0, g * K + ws.channel(L), g, gam, bet);
                    dx[gbase + ws.offset()] = gn_from_acc<T>(gn_dx_act<ACT, A>(dv[q], xv[q], coef, gam, bet));
                    ws.advance();
                }
            }
        }
    }
}

// Backward, split path, stage 1: per channel sums over positions
// [p*chunk, (p+1)*chunk) of sample n, for a tile of channels; written to
// pdb/pdg[(p * N + n) * C + c] (sum(g), sum(g * xhat), g = dy * a'(z)).
// gn is G for stats="sample" (statistics index n*G + g), 0 for "batch"
// (index g).  gamma, beta (null when absent) and aff (GN_AFFINE_*) are
// read only with an activation, once per work item.
// Shared memory: 2 * blockDim doubles.
template <typename T, int L, int ACT>
__global__ void GN_BOUNDS(GN_SPLIT_BLOCK, GN_SPLIT_MIN_BLOCKS)
gn_bwd_partial(typename gn_traits<T>::acc* pdb, typename gn_traits<T>::acc* pdg,
               const T* dy, const T* x, const typename gn_traits<T>::stat* mean,
               const typename gn_traits<T>::stat* rstd, const T* gamma, const T* beta, int aff,
               long long N, long long C, long long Sp, long long G, long long gn,
               long long P, long long chunk, int tx_len) {
    typedef typename gn_traits<T>::acc A;
    GN_DYN_SMEM(smem_raw);
    const int tid = GN_TID, nt = GN_NT;
    double* ra = (double*)smem_raw;
    double* rb = ra + nt;
    const long long K = C / G;
    gn_tile t;
    t.init(L, tid, nt, tx_len);
    const long long ntiles = (C + t.clen - 1) / t.clen;
    for (long long item = GN_BID; item < P * N * ntiles; item += GN_NB) {
        const long long p = item / (N * ntiles), rem = item - p * (N * ntiles);
        const long long n = rem / ntiles, tile = rem - n * ntiles;
        const long long c = tile * t.clen + t.cpos;
        const long long s0 = p * chunk;
        const long long s1 = s0 + chunk < Sp ? s0 + chunk : Sp;
        const long long nbase = n * C * Sp;
        double sdy = 0.0, sdyx = 0.0, r = 0.0;
        if (c < C) {
            const long long st = n * gn + c / K;
            r = (double)rstd[st];
            const double mu = (double)(A)mean[st];
            A gam = (A)1, bet = (A)0;
            if (ACT && aff != GN_AFFINE_NONE) {
                const long long ix = aff == GN_AFFINE_CHANNEL ? c : c / K;
                if (gamma) gam = gn_to_acc(gamma[ix]);
                if (beta) bet = gn_to_acc(beta[ix]);
            }
            gn_channel_sums<T, L, ACT>(dy + nbase, x + nbase, c, s0, s1, C, Sp, t.rpos, t.rlen,
                                       gn_xhat_make<A>(mu, r), mu, r, gam, bet, sdy, sdyx);
        }
        ra[tid] = sdy; rb[tid] = sdyx;
        GN_SYNC();
        gn_block_sum2(ra, rb, tid, t.rpos, t.rlen, t.rstride);
        if (t.rpos == 0 && c < C) {
            pdb[(p * N + n) * C + c] = (A)ra[tid];
            pdg[(p * N + n) * C + c] = (A)rb[tid];
        }
        GN_SYNC();
    }
}

// ---------------------------------------------------------------------------
// The stages (issue 14): what a stats="batch" call runs, one kernel per stage,
// so that ranks that each hold a slice of the batch (gn_native._nccl) and one
// GPU holding all of it compute the same bits.  Every row a kernel writes
// depends only on one sample's values (the chunking comes from C, the spatial
// size and G, never from N), and every fold runs in index order.
//
//   stats_rows + partial_fold   x -> partials (N, G, 5)
//   stats_merge                 partials (M, G, 5), M samples -> mean, rstd, var (double)
//   bwd_reduce + pair_sums      dy, x -> sums (N, C, 2) = [sum g, sum g (x - mean_F)]
//   pair_sums                   sums (M, C, 2) -> per-channel totals
// (normalize, dx and dgamma/dbeta are the CuPy kernels of gn_native._gpu_kernels.)

// Forward stage 1: the partial of chunk p of group (n, g), item = (n * G + g) * P + p,
// over elements [p * chunk, (p + 1) * chunk) of the group's linear index, with
// the group's first value as shift: rows[item * 5 ..] = {count, shift, sum,
// sumsq, 0}.  Values are summed in double (x - shift is exact in double for
// 16- and 32-bit data), U of them in flight per thread; the block tree-sums.
// Shared memory: 2 * blockDim doubles.
template <typename T, int L>
__global__ void GN_BOUNDS(GN_SPLIT_BLOCK, GN_SPLIT_MIN_BLOCKS)
gn_stats_rows(double* rows, const T* x, long long N, long long C, long long Sp, long long G,
              long long P, long long chunk) {
    GN_DYN_SMEM(smem_raw);
    const int tid = GN_TID, nt = GN_NT;
    double* ra = (double*)smem_raw;
    double* rb = ra + nt;
    const long long K = C / G, M = K * Sp;
    const long long len = L == GN_NCHW ? Sp : K, stride = L == GN_NCHW ? Sp : C;
    const int U = gn_unroll<T>::value;
    for (long long item = GN_BID; item < N * G * P; item += GN_NB) {
        const long long ng = item / P, p = item - ng * P;
        const long long n = ng / G, g = ng - n * G;
        const T* xg = x + (L == GN_NCHW ? (n * C + g * K) * Sp : n * Sp * C + g * K);
        const long long j0 = p * chunk;
        const long long j1 = j0 + chunk < M ? j0 + chunk : M;
        const double c = (double)gn_to_acc(xg[0]);
        gn_walk w;
        w.init(j0 + tid, nt, len, stride);
        double s = 0.0, q = 0.0;
        const int jn = (int)(j1 - j0);
        for (int j = tid; j < jn; j += U * nt) {
            double v[U];
#pragma unroll
            for (int u = 0; u < U; ++u) {
                v[u] = 0.0;
                if (j + u * nt < jn) {
                    v[u] = (double)gn_to_acc(xg[w.offset()]) - c;
                    w.advance();
                }
            }
#pragma unroll
            for (int u = 0; u < U; ++u) {
                s += v[u];
                q = gn_fma(v[u], v[u], q);
            }
        }
        ra[tid] = s; rb[tid] = q;
        GN_SYNC();
        gn_block_sum2(ra, rb, tid, tid, nt, 1);
        if (tid == 0) {
            double* r = rows + item * GN_PARTIAL_LEN;
            const bool ok = gn_finite(ra[0]) && gn_finite(rb[0]);
            r[0] = (double)(j1 - j0); r[1] = c; r[2] = ra[0]; r[3] = ok ? rb[0] : gn_nan(); r[4] = 0.0;
        }
        GN_SYNC();
    }
}

// One thread per output, a grid-stride loop (the stages' folds and merge).
#define GN_EACH_OUTPUT(i, count) \
    for (long long i = GN_BID * GN_NT + GN_TID; i < (count); i += GN_NB * GN_NT)

// Forward stage 1, second half (when a group has P > 1 chunks): the partial
// of (n, g) from its P chunk rows, summed in chunk order (the chunks share
// the shift, so sums add).  Non-finite sums give sumsq NaN.
__global__ void GN_BOUNDS(GN_STAGE_BLOCK, 1)
gn_partial_fold(double* part, const double* rows, long long NG, long long P) {
    GN_EACH_OUTPUT(i, NG) {
        const double* r = rows + i * P * GN_PARTIAL_LEN;
        double m = 0.0, s = 0.0, q = 0.0;
        for (long long p = 0; p < P; ++p) {
            m += r[p * GN_PARTIAL_LEN];
            s += r[p * GN_PARTIAL_LEN + 2];
            q += r[p * GN_PARTIAL_LEN + 3];
        }
        double* o = part + i * GN_PARTIAL_LEN;
        o[0] = m; o[1] = r[1]; o[2] = s; o[3] = gn_finite(s) && gn_finite(q) ? q : gn_nan(); o[4] = 0.0;
    }
}

// Merge: for each of the k statistics groups, its m partials
// part[(j * k + i) * 5 ..], j = 0..m-1, in that order (gn_partials_merge), to
// mean[i], rstd[i], var[i] in double, and to mean_s[i], rstd_s[i] rounded to S
// when those are not null (the statistics a forward call returns).
template <typename S>
__global__ void GN_BOUNDS(GN_STAGE_BLOCK, 1)
gn_stats_merge(double* mean, double* rstd, double* var, S* mean_s, S* rstd_s, const double* part,
               long long m, long long k, double eps) {
    GN_EACH_OUTPUT(i, k) {
        double mu, r, v;
        gn_partials_merge(part + i * GN_PARTIAL_LEN, m, k * GN_PARTIAL_LEN, eps, mu, r, v);
        mean[i] = mu; rstd[i] = r; var[i] = v;
        if (mean_s) mean_s[i] = (S)mu;
        if (rstd_s) rstd_s[i] = (S)r;
    }
}

// Pairs summed over rows, in row order: for output (o, c), o < O, c < C,
//   a = sum_i in[((o Q + i) C + c) * 2],  b = sum_i in[.. + 1] * w_i,
// i = 0..Q-1, w_i = rstd[(o Q + i) * rs + c / K] (1 when rstd is null).
// Written as pairs o0[(o C + c) * 2 ..] when o1 is null, else a to o0[o C + c]
// and b to o1[o C + c].  Folds backward chunks (Q = P per sample), and turns
// sums into what dx's coefficients and dgamma/dbeta take (b * rstd = sum g xhat).
template <typename S>
__global__ void GN_BOUNDS(GN_STAGE_BLOCK, 1)
gn_pair_sums(double* o0, double* o1, const double* in, const S* rstd, long long O, long long Q, long long C,
             long long K, long long rs) {
    GN_EACH_OUTPUT(t, O * C) {
        const long long o = t / C, c = t - o * C;
        double a = 0.0, b = 0.0;
        for (long long i = 0; i < Q; ++i) {
            const long long row = o * Q + i;
            const double* v = in + (row * C + c) * GN_DSUM_LEN;
            a = gn_add(a, v[0]);
            b = gn_add(b, rstd ? gn_mul(v[1], (double)rstd[row * rs + c / K]) : v[1]);
        }
        if (o1) { o0[t] = a; o1[t] = b; }
        else { o0[t * GN_DSUM_LEN] = a; o0[t * GN_DSUM_LEN + 1] = b; }
    }
}

// Backward stage 1: per channel [sum g, sum g (x - mean_F)] over positions
// [p * chunk, (p + 1) * chunk) of sample n, for a tile of channels (gn_tile),
// into rows[((n * P + p) * C + c) * 2 ..]; g = dy * act'(z), z = gamma * xhat
// + beta (act: gn_act.cuh's id, at run time: this kernel accumulates in
// double, one value at a time, far from its register cap); mean_F the mean
// rounded to the compute type.  gn is G for stats="sample", 0 for "batch".
// Shared memory: 2 * blockDim doubles.
template <typename T, int L>
__global__ void GN_BOUNDS(GN_SPLIT_BLOCK, GN_SPLIT_MIN_BLOCKS)
gn_bwd_reduce(double* rows, const T* dy, const T* x, const typename gn_traits<T>::stat* mean,
              const typename gn_traits<T>::stat* rstd, const T* gamma, const T* beta, int aff, int act,
              long long N, long long C, long long Sp, long long G, long long gn,
              long long P, long long chunk, int tx_len) {
    typedef typename gn_traits<T>::acc A;
    GN_DYN_SMEM(smem_raw);
    const int tid = GN_TID, nt = GN_NT;
    double* ra = (double*)smem_raw;
    double* rb = ra + nt;
    const long long K = C / G;
    gn_tile t;
    t.init(L, tid, nt, tx_len);
    const long long ntiles = (C + t.clen - 1) / t.clen;
    const long long cstride = L == GN_NCHW ? 1 : C;
    for (long long item = GN_BID; item < N * ntiles * P; item += GN_NB) {
        const long long nt_ = item / P, p = item - nt_ * P;
        const long long n = nt_ / ntiles, tile = nt_ - n * ntiles;
        const long long c = tile * t.clen + t.cpos;
        const long long s0 = p * chunk;
        const long long s1 = s0 + chunk < Sp ? s0 + chunk : Sp;
        double sdy = 0.0, sdyx = 0.0;
        if (c < C) {
            const long long st = n * gn + c / K;
            const double r = (double)rstd[st];
            const double mu = (double)(A)mean[st];
            const gn_xhat<A> h = gn_xhat_make<A>(mu, r);
            A gam = (A)1, bet = (A)0;
            if (act && aff != GN_AFFINE_NONE) {
                const long long ix = aff == GN_AFFINE_CHANNEL ? c : c / K;
                if (gamma) gam = gn_to_acc(gamma[ix]);
                if (beta) bet = gn_to_acc(beta[ix]);
            }
            const T* dyb = dy + n * C * Sp;
            const T* xb = x + n * C * Sp;
            const long long cbase = L == GN_NCHW ? c * Sp : c;
            const int sn = (int)(s1 - s0);
            for (int s = t.rpos; s < sn; s += t.rlen) {
                const long long off = cbase + (s0 + s) * cstride;
                const A xv = gn_to_acc(xb[off]);
                double d = (double)gn_to_acc(dyb[off]);
                if (act) d = gn_mul(d, (double)gn_act_grad<A>(act, gn_fma(gam, h.of(xv), bet)));
                sdy = gn_add(sdy, d);
                sdyx = gn_fma(d, (double)xv - mu, sdyx);
            }
        }
        ra[tid] = sdy; rb[tid] = sdyx;
        GN_SYNC();
        gn_block_sum2(ra, rb, tid, t.rpos, t.rlen, t.rstride);
        if (t.rpos == 0 && c < C) {
            double* o = rows + ((n * P + p) * C + c) * GN_DSUM_LEN;
            o[0] = ra[tid]; o[1] = rb[tid];
        }
        GN_SYNC();
    }
}

#endif  // GN_KERNELS_CUH
