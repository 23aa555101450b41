/*
 * cuda_runtime.h (emulated) - the small part of the CUDA runtime and device
 * language that csrc/core/cuda.cu uses, implemented on the host so that the
 * kernels' logic runs, under AddressSanitizer and UBSan, on a machine with no
 * GPU. Included instead of the toolkit's header when the emulated translation
 * unit (made by gen_emulated.py) is compiled with -Icsrc/tests/cuda_emulation/include.
 *
 * How a launch runs: the blocks of the grid run one after another; the
 * threads of a block run as cooperative fibers (ucontext), each on its own
 * stack, switched only at the synchronisation points: __syncthreads() and
 * the warp shuffles. Which thread runs next follows one of two policies,
 * drawn for each block (seeded: axs_emu::seed()): any thread that can run,
 * at random; or strict priorities, a random order of the warps (and of the
 * lanes within each), so that one warp runs as far ahead of the others as
 * the barriers let it. A kernel that relies on an ordering the hardware does
 * not promise - reading shared memory another warp may not have written yet,
 * overwriting a value another warp still has to read - then gives results
 * that differ from run to run and from the CPU core.
 * A barrier that not every thread of the block (or warp) reaches is reported
 * as a deadlock, and a shuffle whose lanes disagree on the partner as a
 * divergence; both abort with a message.
 *
 * What is checked besides: launch configurations (as real launches fail:
 * block size 1..1024, grid size >= 1; also whole warps, which the kernels
 * assume), 16-byte vector accesses on 16-byte aligned addresses (uint4 and
 * float4 are alignas(16), so UBSan's alignment check catches a misaligned
 * dereference; __ldg of a float4 checks it explicitly), and every memory
 * access (AddressSanitizer, as device memory is host memory here).
 *
 * Not emulated: concurrency within a warp between synchronisation points
 * (threads are serialised there), memory-model subtleties, performance, and
 * the exact NaN payloads of the hardware conversions. Streams are ignored
 * (launches run to completion when made).
 */
#ifndef AXS_EMU_CUDA_RUNTIME_H
#define AXS_EMU_CUDA_RUNTIME_H

#include <ucontext.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <random>
#include <string>
#include <vector>

#include <sys/mman.h>

#if defined(__SANITIZE_ADDRESS__)
#define AXS_EMU_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define AXS_EMU_ASAN 1
#endif
#endif
#ifdef AXS_EMU_ASAN
#include <sanitizer/common_interface_defs.h>
#endif

// ---- language keywords -------------------------------------------------------

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __grid_constant__
// one instance per kernel instantiation, shared by the threads of the block
// running it (blocks run one after another)
#define __shared__ static

using std::isfinite;

struct dim3 {
  unsigned x = 1, y = 1, z = 1;
  dim3() = default;
  dim3(unsigned x_, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};

struct alignas(16) uint4 {
  unsigned int x, y, z, w;
};

struct alignas(16) float4 {
  float x, y, z, w;
};

inline uint4 make_uint4(unsigned a, unsigned b, unsigned c, unsigned d) {
  return uint4{a, b, c, d};
}

// ---- arithmetic and bit casts --------------------------------------------------
// Explicitly rounded float operations: exactly IEEE single precision on the
// host, as the build uses -ffp-contract=off (no FMA contraction).

inline float __fadd_rn(float a, float b) {
  return a + b;
}
inline float __fsub_rn(float a, float b) {
  return a - b;
}
inline float __fmul_rn(float a, float b) {
  return a * b;
}

inline float __uint_as_float(unsigned u) {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}
inline float __int_as_float(int i) {
  float f;
  std::memcpy(&f, &i, sizeof f);
  return f;
}
inline unsigned __float_as_uint(float f) {
  unsigned u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}

// ---- the emulator ------------------------------------------------------------------

typedef void *cudaStream_t;
typedef int cudaError_t;
#define cudaSuccess 0
#define cudaErrorInvalidConfiguration 9
#define cudaErrorLaunchFailure 719

namespace axs_emu {

constexpr unsigned kWarpSize = 32;
constexpr unsigned kMaxThreads = 1024;
constexpr size_t kStackBytes = 256 * 1024;

struct Barrier {
  unsigned size = 0, arrived = 0;
  std::vector<unsigned> waiters;
};

struct Thread {
  ucontext_t ctx;
  char *stack = nullptr;
  bool done = false;
  const char *waiting_at = nullptr; // "__syncthreads" or "__shfl_xor_sync", when blocked
};

struct WarpShuffle {
  float value[2][kWarpSize];
  int partner_mask[2][kWarpSize];
  unsigned count[kWarpSize];
};

// What a launch site ran, for the tests' coverage report.
struct Site {
  long launches = 0;
  std::map<std::string, long> instantiations;
};

struct State {
  // the block being run
  unsigned n_threads = 0;
  std::vector<Thread> threads;
  std::vector<unsigned> runnable; // a heap on priority when by_priority
  bool by_priority = false;
  std::vector<unsigned> priority; // per thread
  unsigned current = 0;
  Barrier block_barrier;
  std::vector<Barrier> warp_barriers;
  std::vector<WarpShuffle> shuffles;
  const std::function<void()> *body = nullptr;
  ucontext_t main_ctx;
  const void *main_stack_bottom = nullptr;
  size_t main_stack_size = 0;
  bool entering_from_main = false;
  char *stacks = nullptr;
  // the grid
  dim3 grid, block;
  unsigned block_index = 0;
  // the runtime
  cudaError_t last_error = cudaSuccess;
  std::string last_message;
  std::mt19937_64 rng{0x5eed};
  long launches = 0;
  long vector_loads = 0;
  std::map<std::string, Site> sites;
};

inline State &state() {
  static State s;
  return s;
}

inline void seed(uint64_t s) {
  state().rng.seed(s);
}

[[noreturn]] inline void fatal(const char *what) {
  State &s = state();
  std::fprintf(stderr, "cuda emulator: %s (block %u of %u, %u threads)\n", what, s.block_index,
               s.grid.x, s.n_threads);
  for (unsigned t = 0; t < s.n_threads; t++)
    if (!s.threads[t].done && s.threads[t].waiting_at != nullptr)
      std::fprintf(stderr, "  thread %u waits at %s\n", t, s.threads[t].waiting_at);
  std::fflush(stderr);
  std::abort();
}

// ---- fiber switching (annotated for AddressSanitizer) ---------------------------

inline void switch_to(ucontext_t *from, ucontext_t *to, const void *to_bottom, size_t to_size,
                      bool from_finished) {
#ifdef AXS_EMU_ASAN
  void *fake = nullptr;
  __sanitizer_start_switch_fiber(from_finished ? nullptr : &fake, to_bottom, to_size);
  swapcontext(from, to);
  __sanitizer_finish_switch_fiber(fake, nullptr, nullptr);
#else
  (void)to_bottom;
  (void)to_size;
  (void)from_finished;
  swapcontext(from, to);
#endif
}

inline void make_runnable(unsigned t) {
  State &s = state();
  s.runnable.push_back(t);
  if (s.by_priority)
    std::push_heap(s.runnable.begin(), s.runnable.end(),
                   [&s](unsigned a, unsigned b) { return s.priority[a] < s.priority[b]; });
}

inline unsigned take_next() {
  State &s = state();
  if (s.by_priority) {
    std::pop_heap(s.runnable.begin(), s.runnable.end(),
                  [&s](unsigned a, unsigned b) { return s.priority[a] < s.priority[b]; });
  } else {
    const size_t k = s.rng() % s.runnable.size();
    std::swap(s.runnable[k], s.runnable.back());
  }
  const unsigned next = s.runnable.back();
  s.runnable.pop_back();
  return next;
}

// Gives the processor to another thread of the block: a random runnable one,
// or back to the launcher when every thread has finished. Called by the
// current thread after it has marked itself blocked, runnable or done.
inline void schedule() {
  State &s = state();
  const unsigned me = s.current;
  Thread &cur = s.threads[me];
  if (s.runnable.empty()) {
    for (unsigned t = 0; t < s.n_threads; t++)
      if (!s.threads[t].done)
        fatal("deadlock: threads wait at a barrier that the others never reach");
    switch_to(&cur.ctx, &s.main_ctx, s.main_stack_bottom, s.main_stack_size, true);
    fatal("a finished thread was resumed");
  }
  const unsigned next = take_next();
  if (next == me)
    return;
  s.current = next;
  switch_to(&cur.ctx, &s.threads[next].ctx, s.threads[next].stack, kStackBytes, cur.done);
  s.current = me; // resumed
}

inline void arrive(Barrier &b, const char *name) {
  State &s = state();
  const unsigned me = s.current;
  if (++b.arrived == b.size) {
    b.arrived = 0;
    for (unsigned t : b.waiters) {
      s.threads[t].waiting_at = nullptr;
      make_runnable(t);
    }
    b.waiters.clear();
    make_runnable(me); // the policy decides who goes first
  } else {
    b.waiters.push_back(me);
    s.threads[me].waiting_at = name;
  }
  schedule();
}

inline void thread_main() {
  State &s = state();
#ifdef AXS_EMU_ASAN
  const void *from_bottom = nullptr;
  size_t from_size = 0;
  __sanitizer_finish_switch_fiber(nullptr, &from_bottom, &from_size);
  if (s.entering_from_main) {
    s.main_stack_bottom = from_bottom;
    s.main_stack_size = from_size;
  }
#endif
  s.entering_from_main = false;
  (*s.body)();
  s.threads[s.current].done = true;
  schedule();
  fatal("a finished thread was resumed");
}

inline void run_block(unsigned n_threads) {
  State &s = state();
  if (s.stacks == nullptr) {
    void *p = mmap(nullptr, kStackBytes * kMaxThreads, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED)
      fatal("cannot map the thread stacks");
    s.stacks = static_cast<char *>(p);
  }
  s.n_threads = n_threads;
  s.threads.assign(n_threads, Thread());
  s.runnable.clear();
  s.block_barrier = Barrier();
  s.block_barrier.size = n_threads;
  s.warp_barriers.assign(n_threads / kWarpSize, Barrier());
  for (Barrier &b : s.warp_barriers)
    b.size = kWarpSize;
  s.shuffles.assign(n_threads / kWarpSize, WarpShuffle());
  s.by_priority = s.rng() % 2 == 0;
  s.priority.assign(n_threads, 0);
  if (s.by_priority) {
    std::vector<unsigned> warps(n_threads / kWarpSize), lanes(kWarpSize);
    for (unsigned w = 0; w < warps.size(); w++)
      warps[w] = w;
    for (unsigned l = 0; l < kWarpSize; l++)
      lanes[l] = l;
    std::shuffle(warps.begin(), warps.end(), s.rng);
    for (unsigned w = 0; w < warps.size(); w++) {
      std::shuffle(lanes.begin(), lanes.end(), s.rng);
      for (unsigned l = 0; l < kWarpSize; l++)
        s.priority[warps[w] * kWarpSize + l] = w * kWarpSize + lanes[l];
    }
  }
  for (unsigned t = 0; t < n_threads; t++) {
    Thread &th = s.threads[t];
    th.stack = s.stacks + (size_t)t * kStackBytes;
    getcontext(&th.ctx);
    th.ctx.uc_stack.ss_sp = th.stack;
    th.ctx.uc_stack.ss_size = kStackBytes;
    th.ctx.uc_link = nullptr;
    makecontext(&th.ctx, thread_main, 0);
    make_runnable(t);
  }
  const unsigned first = take_next();
  s.current = first;
  s.entering_from_main = true;
  switch_to(&s.main_ctx, &s.threads[first].ctx, s.threads[first].stack, kStackBytes, false);
  for (unsigned t = 0; t < n_threads; t++)
    if (!s.threads[t].done)
      fatal("the block ended with unfinished threads");
}

inline void fail_launch(cudaError_t err, const std::string &why) {
  State &s = state();
  s.last_error = err;
  s.last_message = why;
}

// Runs body on grid x block threads. `where` is the launching function's
// signature (its template arguments are the instantiation), `kernel` the
// launch expression; both only label the coverage report.
inline void launch(const char *where, const char *kernel, dim3 grid, dim3 block, size_t shared,
                   cudaStream_t stream, const std::function<void()> &body) {
  State &s = state();
  (void)stream;
  char why[160];
  if (block.x == 0 || block.x > kMaxThreads || block.y != 1 || block.z != 1) {
    std::snprintf(why, sizeof why, "%s: invalid block size %u x %u x %u", kernel, block.x, block.y,
                  block.z);
    return fail_launch(cudaErrorInvalidConfiguration, why);
  }
  if (grid.x == 0 || grid.x > 0x7fffffffu || grid.y != 1 || grid.z != 1) {
    std::snprintf(why, sizeof why, "%s: invalid grid size %u x %u x %u", kernel, grid.x, grid.y,
                  grid.z);
    return fail_launch(cudaErrorInvalidConfiguration, why);
  }
  if (block.x % kWarpSize != 0) {
    std::snprintf(why, sizeof why, "%s: block of %u threads is not whole warps", kernel, block.x);
    return fail_launch(cudaErrorInvalidConfiguration, why);
  }
  if (shared > 48 * 1024) {
    std::snprintf(why, sizeof why, "%s: %zu bytes of dynamic shared memory", kernel, shared);
    return fail_launch(cudaErrorInvalidConfiguration, why);
  }
  s.launches++;
  Site &site = s.sites[kernel];
  site.launches++;
  std::string inst = where;
  const size_t open = inst.find('[');
  inst = open == std::string::npos ? std::string("") : inst.substr(open);
  site.instantiations[inst]++;
  s.grid = grid;
  s.block = block;
  s.body = &body;
  for (unsigned b = 0; b < grid.x; b++) {
    s.block_index = b;
    run_block(block.x);
  }
  s.body = nullptr;
}

inline dim3 thread_idx() {
  return dim3(state().current);
}

} // namespace axs_emu

#define threadIdx (::axs_emu::thread_idx())
#define blockIdx (::dim3(::axs_emu::state().block_index))
#define blockDim (::axs_emu::state().block)
#define gridDim (::axs_emu::state().grid)

inline cudaError_t cudaGetLastError() {
  axs_emu::State &s = axs_emu::state();
  const cudaError_t e = s.last_error;
  s.last_error = cudaSuccess;
  return e;
}

inline const char *cudaGetErrorString(cudaError_t e) {
  if (e == cudaSuccess)
    return "no error";
  return axs_emu::state().last_message.c_str();
}

// ---- synchronisation and warp shuffles --------------------------------------------

inline void __syncthreads() {
  axs_emu::State &s = axs_emu::state();
  axs_emu::arrive(s.block_barrier, "__syncthreads");
}

// Every lane of the warp must take part (mask 0xffffffff, the only form the
// kernels use); each lane reads the value lane ^ lane_mask contributed.
inline float __shfl_xor_sync(unsigned mask, float v, int lane_mask, int width = 32) {
  axs_emu::State &s = axs_emu::state();
  if (mask != 0xffffffffu || width != 32)
    axs_emu::fatal("__shfl_xor_sync with a partial mask or width is not emulated");
  const unsigned me = s.current;
  const unsigned warp = me / axs_emu::kWarpSize, lane = me % axs_emu::kWarpSize;
  axs_emu::WarpShuffle &sh = s.shuffles[warp];
  // two slots used in turn: a lane cannot start the shuffle after next before
  // every lane has passed this one's barrier, so none is overwritten early
  const unsigned slot = sh.count[lane]++ & 1u;
  sh.value[slot][lane] = v;
  sh.partner_mask[slot][lane] = lane_mask;
  axs_emu::arrive(s.warp_barriers[warp], "__shfl_xor_sync");
  const unsigned partner = lane ^ (unsigned)lane_mask;
  const unsigned mine = sh.count[lane];
  if (partner >= axs_emu::kWarpSize || sh.partner_mask[slot][partner] != lane_mask ||
      (sh.count[partner] != mine && sh.count[partner] != mine + 1))
    axs_emu::fatal("divergent __shfl_xor_sync: lanes disagree on the exchange");
  return sh.value[slot][partner];
}

// ---- read-only loads -----------------------------------------------------------------

inline float __ldg(const float *p) {
  return *p;
}

inline float4 __ldg(const float4 *p) {
  if (reinterpret_cast<uintptr_t>(p) % 16 != 0)
    axs_emu::fatal("misaligned 16-byte load");
  axs_emu::state().vector_loads++;
  return *p;
}

#endif
