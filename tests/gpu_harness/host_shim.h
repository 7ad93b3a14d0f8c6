// host_shim.h -- run the gn_native CUDA kernels on the CPU (g++ -std=c++20).
//
// Every CUDA thread of a block is a std::thread; __syncthreads() is a
// std::barrier over the block; dynamic shared memory is one buffer, filled
// with NaN bytes before each block so that a read of a slot nobody wrote
// shows up in the results.  Blocks run one after another, which is one of
// the schedules a GPU may choose (kernels must not rely on any order between
// blocks).  A __syncthreads() that not every thread reaches hangs here, as it
// would (or worse) on the GPU.
#ifndef GN_HOST_SHIM_H
#define GN_HOST_SHIM_H

#define GN_HOST_EMULATION 1

#include <barrier>
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

#define __global__
#define GN_DEV inline
#define GN_DYN_SMEM(name) unsigned char* name = gn_ctx.smem
#define GN_SYNC() gn_ctx.bar->arrive_and_wait()
#define GN_TID (gn_ctx.tid)
#define GN_NT (gn_ctx.nt)
#define GN_BID (gn_ctx.bid)
#define GN_NB (gn_ctx.nb)

// Launch `body` (a callable running the kernel for the current thread) on
// grid x block threads with smem bytes of dynamic shared memory.  The block's
// threads are created once and run the blocks in turn.
template <typename F>
void gn_host_launch(long long grid, int block, size_t smem, F body) {
    std::vector<unsigned char> shared(smem + 16);
    std::barrier<> bar(block);
    std::vector<std::thread> threads;
    threads.reserve(block);
    for (int t = 0; t < block; ++t) {
        threads.emplace_back([&, t] {
            for (long long b = 0; b < grid; ++b) {
                if (t == 0) std::memset(shared.data(), 0xff, shared.size());  // NaN in every slot
                bar.arrive_and_wait();
                gn_ctx = gn_host_ctx{t, block, b, grid, shared.data(), &bar};
                body();
                bar.arrive_and_wait();   // the block is done before the next one starts
            }
        });
    }
    for (auto& th : threads) th.join();
}

#endif  // GN_HOST_SHIM_H
