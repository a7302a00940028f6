// Host emulation of the CUDA C++ kernel language that csrc/ uses (tests/cuda_emu).
//
// A launch `kernel<<<grid, block, smem, stream>>>(args)` (rewritten by build.py into
// `::emu::Launch(grid, block, smem, stream)(kernel, args)`) runs the grid's blocks one
// after another. A block's threads are fibers (ucontext) on the calling thread, run
// in turn: each runs until its next __syncthreads() or its end, and none passes a
// barrier before every live thread of the block has reached it. A thread thus
// finishes a phase before the next one starts it (ascending ids in even blocks,
// descending in odd ones), so a read that lacks its barrier sees stale data here too. The block's __shared__ arrays are function statics (one block
// runs at a time). Launch configurations the device rejects set
// cudaErrorInvalidConfiguration, as cudaGetLastError reports on a GPU.
#pragma once

#include <ucontext.h>

#include <cmath>
#include <cstddef>
#include <memory>
#include <tuple>
#include <vector>

#include "cuda_runtime_api.h"

struct uint3 {
  unsigned int x, y, z;
};

struct dim3 {
  unsigned int x, y, z;
  constexpr dim3(unsigned int x_ = 1, unsigned int y_ = 1, unsigned int z_ = 1) : x(x_), y(y_), z(z_) {}
};

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))
// One block runs at a time, so a function-static array is the block's shared memory.
#define __shared__ static

namespace emu {

struct ThreadState {
  uint3 thread_idx{0, 0, 0}, block_idx{0, 0, 0};
  dim3 block_dim, grid_dim;
  unsigned int linear = 0;
  bool done = false;
  ucontext_t context;
  std::unique_ptr<char[]> stack;
};

constexpr std::size_t kStackBytes = 128 * 1024;

struct Scheduler {
  ucontext_t main;
  std::vector<ThreadState> threads;
  ThreadState* current = nullptr;
  void (*body)(void*) = nullptr;
  void* body_arg = nullptr;
};

inline Scheduler& scheduler() {
  static thread_local Scheduler s;
  return s;
}

inline ThreadState& state() { return *scheduler().current; }

// Lane of the calling thread in its warp (warps are 32 consecutive linear ids).
inline int lane() { return static_cast<int>(state().linear % 32u); }

inline void fiber_entry() {
  Scheduler& s = scheduler();
  s.body(s.body_arg);
  s.current->done = true;  // uc_link returns to the scheduler
}

inline void yield_to_scheduler() {
  Scheduler& s = scheduler();
  swapcontext(&s.current->context, &s.main);
}

class Launch {
 public:
  Launch(dim3 grid, dim3 block, std::size_t smem = 0, cudaStream_t stream = nullptr)
      : grid_(grid), block_(block), smem_(smem) {
    (void)stream;
  }

  template <typename... Params, typename... Args>
  void operator()(void (*kernel)(Params...), Args&&... args) const {
    const unsigned long long threads = 1ull * block_.x * block_.y * block_.z;
    if (threads == 0 || threads > 1024 || block_.z > 64 || grid_.x == 0 || grid_.y == 0 || grid_.z == 0 ||
        grid_.y > 65535 || grid_.z > 65535 || smem_ > 48 * 1024) {
      last_error() = cudaErrorInvalidConfiguration;
      return;
    }
    struct Call {
      void (*kernel)(Params...);
      std::tuple<Params...> params;
      static void run(void* self) {
        Call* c = static_cast<Call*>(self);
        std::apply(c->kernel, c->params);
      }
    } call{kernel, std::tuple<Params...>(static_cast<Params>(args)...)};
    for (unsigned int bz = 0; bz < grid_.z; ++bz)
      for (unsigned int by = 0; by < grid_.y; ++by)
        for (unsigned int bx = 0; bx < grid_.x; ++bx) run_block({bx, by, bz}, &Call::run, &call);
  }

 private:
  void run_block(uint3 block_idx, void (*body)(void*), void* arg) const {
    Scheduler& s = scheduler();
    const unsigned int n = block_.x * block_.y * block_.z;
    if (s.threads.size() < n) s.threads.resize(n);
    s.body = body;
    s.body_arg = arg;
    for (unsigned int t = 0; t < n; ++t) {
      ThreadState& th = s.threads[t];
      th.thread_idx = {t % block_.x, (t / block_.x) % block_.y, t / (block_.x * block_.y)};
      th.block_idx = block_idx;
      th.block_dim = block_;
      th.grid_dim = grid_;
      th.linear = t;
      th.done = false;
      if (!th.stack) th.stack.reset(new char[kStackBytes]);
      getcontext(&th.context);
      th.context.uc_stack.ss_sp = th.stack.get();
      th.context.uc_stack.ss_size = kStackBytes;
      th.context.uc_link = &s.main;
      makecontext(&th.context, fiber_entry, 0);
    }
    // Each pass runs every live thread up to its next barrier (or its end), in
    // ascending order in even blocks and descending in odd ones, so that a missing
    // barrier meets a reader that runs before its writer one way or the other.
    const bool descending = (block_idx.x + block_idx.y + block_idx.z) % 2 == 1;
    for (unsigned int live = n; live > 0;) {
      live = 0;
      for (unsigned int i = 0; i < n; ++i) {
        ThreadState& th = s.threads[descending ? n - 1 - i : i];
        if (th.done) continue;
        s.current = &th;
        swapcontext(&s.main, &th.context);
        live += !th.done;
      }
    }
    s.current = nullptr;
  }

  dim3 grid_, block_;
  std::size_t smem_;
};

}  // namespace emu

#define threadIdx (::emu::state().thread_idx)
#define blockIdx (::emu::state().block_idx)
#define blockDim (::emu::state().block_dim)
#define gridDim (::emu::state().grid_dim)

inline void __syncthreads() { ::emu::yield_to_scheduler(); }

inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
// The GPU's fast power: ex2.approx(e * lg2.approx(b)), here with the exact functions.
inline float __powf(float b, float e) { return std::exp2(e * std::log2(b)); }
inline unsigned int __umulhi(unsigned int a, unsigned int b) {
  return static_cast<unsigned int>((static_cast<unsigned long long>(a) * b) >> 32);
}
