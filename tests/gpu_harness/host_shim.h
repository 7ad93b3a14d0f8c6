// host_shim.h -- run the gn_native CUDA kernels on the CPU (g++ -std=c++20).
//
// Every CUDA thread of a block is a std::thread; __syncthreads() is a
// std::barrier over the block; dynamic shared memory is one buffer, filled
// with NaN bytes before each block so that a read of a slot nobody wrote
// shows up in the results.  A __syncthreads() that not every thread reaches
// hangs here, as it would (or worse) on the GPU.
//
// What the device does that plain C++ would not:
// - blocks run in a shuffled order (gn_host_block_order), not 0, 1, 2, ...:
//   a kernel that relied on an order between blocks gives wrong results;
// - float arithmetic flushes subnormals to zero, as CuPy's -ftz=true makes
//   the device do (GnHostFtz sets the SSE FTZ and DAZ bits; they also flush
//   double subnormals, which the device keeps: below 2.2e-308, never reached
//   by the tests);
// - __launch_bounds__ (GN_BOUNDS) is only checked: a launch with a larger
//   block than the kernel is compiled for fails (gn_host_launch's max_block).
#ifndef GN_HOST_SHIM_H
#define GN_HOST_SHIM_H

#define GN_HOST_EMULATION 1

#include <xmmintrin.h>

#include <algorithm>
#include <barrier>
#include <cstdint>
#include <cstring>
#include <thread>
#include <vector>

struct gn_host_ctx {
    int tid, nt;
    long long bid, nb;
    unsigned char* smem;
    std::barrier<>* bar;
};
inline thread_local gn_host_ctx gn_ctx;

#define __global__ inline   // header-defined kernels: one definition across the harness's parts
#define GN_DEV inline
#define GN_BOUNDS(threads, blocks)
#define GN_DYN_SMEM(name) unsigned char* name = gn_ctx.smem
#define GN_SYNC() gn_ctx.bar->arrive_and_wait()
#define GN_TID (gn_ctx.tid)
#define GN_NT (gn_ctx.nt)
#define GN_BID (gn_ctx.bid)
#define GN_NB (gn_ctx.nb)

// Flush-to-zero and denormals-are-zero for the scope (restored after, so
// that the Python thread calling the harness keeps its own settings).
struct GnHostFtz {
    unsigned int saved;
    GnHostFtz() : saved(_mm_getcsr()) { _mm_setcsr(saved | 0x8040u); }
    ~GnHostFtz() { _mm_setcsr(saved); }
};

// The order blocks run in: a fixed shuffle (seeded by the grid size, never
// starting with block 0), so that runs are reproducible but blocks do not
// run in index order.
inline std::vector<long long> gn_host_block_order(long long grid) {
    std::vector<long long> order(grid);
    for (long long b = 0; b < grid; ++b) order[b] = b;
    std::uint64_t s = 0x9e3779b97f4a7c15ull ^ (std::uint64_t)grid;
    for (long long b = grid - 1; b > 0; --b) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        std::swap(order[b], order[(long long)((s >> 33) % (std::uint64_t)(b + 1))]);
    }
    if (grid > 1 && order[0] == 0) std::swap(order[0], order[grid - 1]);
    return order;
}

// Launch `body` (a callable running the kernel for the current thread) on
// grid x block threads with smem bytes of dynamic shared memory.  The block's
// threads are created once and run the blocks in turn.  Returns -2 when the
// block is larger than the kernel's __launch_bounds__ (max_block).
template <typename F>
int gn_host_launch(long long grid, int block, int max_block, size_t smem, F body) {
    if (block > max_block) return -2;
    const std::vector<long long> order = gn_host_block_order(grid);
    std::vector<unsigned char> shared(smem + 16);
    std::barrier<> bar(block);
    std::vector<std::thread> threads;
    threads.reserve(block);
    for (int t = 0; t < block; ++t) {
        threads.emplace_back([&, t] {
            GnHostFtz ftz;
            for (long long i = 0; i < grid; ++i) {
                if (t == 0) std::memset(shared.data(), 0xff, shared.size());  // NaN in every slot
                bar.arrive_and_wait();
                gn_ctx = gn_host_ctx{t, block, order[i], grid, shared.data(), &bar};
                body();
                bar.arrive_and_wait();   // the block is done before the next one starts
            }
        });
    }
    for (auto& th : threads) th.join();
    return 0;
}

#endif  // GN_HOST_SHIM_H
