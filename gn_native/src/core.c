/* Descriptor checks, status strings, threads and run-time ISA choice. */
#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#include <pthread.h>
#endif
#include "internal.h"

/* Below this many elements a call runs on one thread: starting a team costs
 * more than it saves. */
#define GN_MIN_ELEMS_PER_THREAD 16384

gn_status gn_check_desc(const gn_desc *d)
{
    if (!d)
        return GN_EINVAL;
    if (d->n < 0 || d->c < 0 || d->spatial < 0 || d->groups <= 0 || d->c % d->groups)
        return GN_EINVAL;
    if (!(d->eps > 0.0) || !isfinite(d->eps))
        return GN_EINVAL;
    if ((unsigned)d->layout > GN_NHWC || (unsigned)d->stats > GN_STATS_BATCH ||
        (unsigned)d->affine > GN_AFFINE_GROUP || (unsigned)d->activation > GN_ACT_RELU)
        return GN_EINVAL;
    /* every count the core indexes with must fit in int64_t: n*c*spatial
     * values, c*spatial per sample, n*groups statistics (c may be 0) */
    if (gn_mul(gn_mul(d->n, d->c), d->spatial) < 0 || gn_mul(d->c, d->spatial) < 0 ||
        gn_mul(d->n, d->groups) < 0)
        return GN_EINVAL;
    return GN_OK;
}

const char *gn_strerror(gn_status s)
{
    switch (s) {
    case GN_OK: return "success";
    case GN_EINVAL: return "invalid argument (descriptor, sizes or NULL pointer)";
    case GN_ENOMEM: return "out of memory";
    case GN_EUNSUPPORTED: return "unsupported operation";
    }
    return "unknown status";
}

const char *gn_version(void) { return GN_VERSION_STRING; }

/* ---- threads ---- */

static atomic_int threads_override;

/* Fork.  libgomp's thread pool does not survive fork(): a child of a process
 * whose thread started a team waits forever on the pool's dead threads at
 * its first parallel region (the DataLoader-worker pattern).  The core
 * records that it started a team, and a pthread_atfork handler (installed
 * then) marks the child, which from then on runs every call on its own
 * thread: the same bits (results never depend on the thread count), no hang. */
static atomic_int forked_child;

#ifdef _OPENMP
static atomic_int started_team;
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

static void on_fork_child(void)
{
    if (atomic_load(&started_team))
        atomic_store(&forked_child, 1);
}

static void install_atfork(void) { pthread_atfork(NULL, NULL, on_fork_child); }
#endif

void gn_set_num_threads(int n)
{
    atomic_store(&threads_override, n <= 0 ? 0 : n > GN_MAX_THREADS ? GN_MAX_THREADS : n);
}

int gn_get_num_threads(void)
{
    if (atomic_load(&forked_child))
        return 1;
    int n = atomic_load(&threads_override);
    if (n > 0)
        return n;
#ifdef _OPENMP
    n = omp_get_max_threads();
    return n > GN_MAX_THREADS ? GN_MAX_THREADS : n < 1 ? 1 : n;
#else
    return 1;
#endif
}

int gn_openmp_enabled(void)
{
#ifdef _OPENMP
    return 1;
#else
    return 0;
#endif
}

int gn_threads_for(int64_t work_elems, int64_t units)
{
    int64_t nt = gn_get_num_threads();
    int64_t by_work = work_elems / GN_MIN_ELEMS_PER_THREAD;
    if (nt > by_work)
        nt = by_work;
    if (nt > units)
        nt = units;
    if (nt <= 1)
        return 1;
#ifdef _OPENMP
    /* inside the caller's active team, with no nesting allowed, a region
     * would get one thread anyway: run inline and skip its cost */
    if (omp_get_active_level() >= omp_get_max_active_levels())
        return 1;
    pthread_once(&atfork_once, install_atfork);
    atomic_store(&started_team, 1);
#endif
    return (int)nt;
}

/* ---- ISA ---- */

static _Atomic(const gn_kernels *) active;

static const gn_kernels *isa_by_name(const char *name)
{
    if (!strcmp(name, "scalar"))
        return &gn_kernels_scalar;
#ifdef GN_HAVE_AVX2
    if (!strcmp(name, "avx2")) {
        __builtin_cpu_init();
        if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
            __builtin_cpu_supports("f16c"))
            return &gn_kernels_avx2;
    }
#endif
    return NULL;
}

static const gn_kernels *best_isa(void)
{
    static const char *order[] = {"avx2", "scalar"};
    const char *env = getenv("GN_NATIVE_ISA");
    if (env && *env && strcmp(env, "auto")) {
        const gn_kernels *k = isa_by_name(env);
        if (k)
            return k;
    }
    for (size_t i = 0; i < sizeof order / sizeof *order; i++) {
        const gn_kernels *k = isa_by_name(order[i]);
        if (k)
            return k;
    }
    return &gn_kernels_scalar;
}

const gn_kernels *gn_active_kernels(void)
{
    const gn_kernels *k = atomic_load(&active);
    if (!k) {
        k = best_isa();
        atomic_store(&active, k);
    }
    return k;
}

const char *gn_isa(void) { return gn_active_kernels()->name; }

int gn_set_isa(const char *name)
{
    const gn_kernels *k = name ? (strcmp(name, "auto") ? isa_by_name(name) : best_isa()) : NULL;
    if (!k)
        return -1;
    atomic_store(&active, k);
    return 0;
}

/* ---- the merge stage ---- */

gn_status gn_stats_merge(double *mean, double *rstd, double *var, const double *partial,
                         int64_t m, int64_t k, double eps)
{
    int64_t n = gn_mul(m, k), len = gn_mul(n, GN_PARTIAL_LEN);
    if (len < 0 || !(eps > 0.0) || !isfinite(eps) || (k && (!mean || !rstd)) ||
        (n && !partial))
        return GN_EINVAL;
    int64_t pb = gn_mul(len, sizeof(double)), ob = gn_mul(k, sizeof(double));
    if (gn_overlap(mean, ob, partial, pb) || gn_overlap(rstd, ob, partial, pb) ||
        gn_overlap(var, ob, partial, pb) || gn_overlap(mean, ob, rstd, ob) ||
        gn_overlap(mean, ob, var, ob) || gn_overlap(rstd, ob, var, ob))
        return GN_EINVAL;
    /* counts non-negative, exponents whole numbers within reach of ldexp */
    for (int64_t i = 0; i < n; i++) {
        double c = partial[i * GN_PARTIAL_LEN], e = partial[i * GN_PARTIAL_LEN + 4];
        if (!(c >= 0.0) || !(fabs(e) <= 4096.0) || e != floor(e))
            return GN_EINVAL;
    }
    for (int64_t j = 0; j < k; j++) {
        double mj, rj, vj;
        gn_merge_group(partial + j * GN_PARTIAL_LEN, k * GN_PARTIAL_LEN, m, eps, &mj, &rj, &vj);
        mean[j] = mj;
        rstd[j] = rj;
        if (var)
            var[j] = vj;
    }
    return GN_OK;
}
