/*
 * cuda.cu - the CUDA kernels behind the six CUDA entry points (axs_apply_cuda_,
 * axs_latch_apply_cuda_ and the single operations, one-step programs from
 * programs.c): the
 * row program of cpu.c (project / clamp / set / steer steps, each seeing the
 * result of the previous one, with the same outputs, skip, NaN and overflow
 * rules, and the record's write offset read on the device) run on device
 * pointers.
 *
 * One group of threads runs the program on one row: a warp for short rows
 * (several rows per block), a whole block otherwise, striding over the rows
 * when there are more rows than blocks launched. The group reads its row
 * once into registers (16-byte loads where the rows and the directions are
 * 16-byte aligned, element loads otherwise), runs every step on the
 * registers, and writes the row back once, only when a step changed it. The
 * per-row parameters of a step are loaded one step ahead, so that their
 * latency hides behind the row load and the previous step's reduction.
 * Rows too long for the registers (more than 4096 16-byte chunks: d above
 * 32768 in 16-bit storage, 16384 in float32) re-read and re-write global
 * memory at each step instead, with the same results.
 *
 * Summation order: thread t of a group of T threads owns the 16-byte chunks
 * t, t + T, t + 2T, ... of the row and accumulates their elements in order
 * into one float32; the partial sums are combined by a butterfly inside each
 * warp, then across the warps of the block. T depends only on d and the
 * dtype, and the element loads follow the order of the vector loads, so a
 * projection depends on neither alignment, nor row count, nor stream; it
 * differs from cpu.c's order. Every operation is an explicit
 * round-to-nearest intrinsic (__fmul_rn, __fadd_rn): no contraction into
 * FMA whatever --fmad says, no fast-math.
 *
 * A call with latches first runs, per latch, the detection projections as a
 * one-step PROJECT program recorded at the latch's columns, then the
 * latch's state machine (latch.h, shared with cpu.c), one thread per
 * sequence going through its tokens in order; then the call's steps. The
 * kernels follow each other on the stream, so each sees what the previous
 * one wrote.
 *
 * Deliberately not here: the checks that read data (unit norms, per-row
 * lo <= hi; the caller's job on device data, see axis_steer.h); any
 * synchronisation, allocation or read of device memory on the host (the
 * calls only enqueue one kernel, so they can be captured in a CUDA graph);
 * any knowledge of the caller's framework.
 */
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <stdint.h>
#include <string.h>

#include "internal.h"
#include "latch.h"

/* Build knob: the most blocks one launch uses; beyond it, blocks stride over
 * the rows. The host emulation of these kernels (csrc/tests/cuda_emulation)
 * sets it small so that small inputs run the grid-stride loops too. */
#ifndef AXS_CUDA_MAX_BLOCKS
#define AXS_CUDA_MAX_BLOCKS 65536
#endif

namespace {

constexpr int kWarp = 32;
constexpr int kWarpRowsPerBlock = 4;                // warp mode: one row per warp
constexpr int kWarpMaxChunks = 128;                 // warp mode up to 4 chunks per lane
constexpr int kChunksPerThread = 4;                 // block mode registers per thread
constexpr int kMaxThreads = 1024;                   // block mode, and the global fallback
constexpr int64_t kMaxBlocks = AXS_CUDA_MAX_BLOCKS; // beyond this, blocks stride over rows

/* ---- storage formats --------------------------------------------------------
 * bits: one element as stored; V: elements per 16-byte chunk. */

struct F32 {
  typedef uint32_t bits;
  static constexpr int V = 4;
  static __device__ __forceinline__ float to_float(bits b) { return __uint_as_float(b); }
  static __device__ __forceinline__ bits from_float(float f) { return __float_as_uint(f); }
};

struct F16 {
  typedef uint16_t bits;
  static constexpr int V = 8;
  static __device__ __forceinline__ float to_float(bits b) {
    return __half2float(__ushort_as_half(b));
  }
  static __device__ __forceinline__ bits from_float(float f) {
    return __half_as_ushort(__float2half_rn(f));
  }
};

struct BF16 {
  typedef uint16_t bits;
  static constexpr int V = 8;
  static __device__ __forceinline__ float to_float(bits b) {
    return __uint_as_float((uint32_t)b << 16);
  }
  static __device__ __forceinline__ bits from_float(float f) {
    return __bfloat16_as_ushort(__float2bfloat16_rn(f));
  }
};

/* ---- one 16-byte chunk of a row, held in a uint4 ----------------------------
 * Element e of a chunk sits at byte 16 c + e * sizeof(bits) of the row (c the
 * chunk index); a chunk at the end of the row may hold n < V elements. The
 * element index e is a compile-time constant after unrolling, so the word
 * selects below fold away and the chunk stays in registers. */

__device__ __forceinline__ uint32_t &word(uint4 &q, int k) {
  return k == 0 ? q.x : (k == 1 ? q.y : (k == 2 ? q.z : q.w));
}

__device__ __forceinline__ uint32_t word(const uint4 &q, int k) {
  return k == 0 ? q.x : (k == 1 ? q.y : (k == 2 ? q.z : q.w));
}

template <class S> __device__ __forceinline__ typename S::bits get_bits(const uint4 &q, int e) {
  constexpr int per = 4 / (int)sizeof(typename S::bits);
  constexpr int width = 32 / per;
  return (typename S::bits)(word(q, e / per) >> ((e % per) * width));
}

template <class S> __device__ __forceinline__ void put_bits(uint4 &q, int e, typename S::bits b) {
  constexpr int per = 4 / (int)sizeof(typename S::bits);
  constexpr int width = 32 / per;
  constexpr uint32_t mask = per == 1 ? 0xffffffffu : 0xffffu;
  const int shift = (e % per) * width;
  uint32_t &w = word(q, e / per);
  w = (w & ~(mask << shift)) | ((uint32_t)b << shift);
}

template <class S> __device__ __forceinline__ float get(const uint4 &q, int e) {
  return S::to_float(get_bits<S>(q, e));
}

// p: n <= V elements of h
template <class S, bool VEC>
__device__ __forceinline__ uint4 load_chunk(const typename S::bits *p, int n) {
  if (VEC && n == S::V)
    return *reinterpret_cast<const uint4 *>(p);
  uint4 q = make_uint4(0u, 0u, 0u, 0u);
#pragma unroll
  for (int e = 0; e < S::V; e++)
    if (e < n)
      put_bits<S>(q, e, p[e]);
  return q;
}

// p: n <= V elements of h
template <class S, bool VEC>
__device__ __forceinline__ void store_chunk(typename S::bits *p, const uint4 &q, int n) {
  if (VEC && n == S::V) {
    *reinterpret_cast<uint4 *>(p) = q;
    return;
  }
#pragma unroll
  for (int e = 0; e < S::V; e++)
    if (e < n)
      p[e] = get_bits<S>(q, e);
}

// u: n <= V float32 of a direction -> x[0 .. n), zeros after
template <class S, bool VEC>
__device__ __forceinline__ void load_dir(const float *u, int n, float (&x)[S::V]) {
  if (VEC && n == S::V) {
#pragma unroll
    for (int k = 0; k < S::V / 4; k++) {
      const float4 f = __ldg(reinterpret_cast<const float4 *>(u) + k);
      x[4 * k] = f.x;
      x[4 * k + 1] = f.y;
      x[4 * k + 2] = f.z;
      x[4 * k + 3] = f.w;
    }
    return;
  }
#pragma unroll
  for (int e = 0; e < S::V; e++)
    x[e] = e < n ? __ldg(u + e) : 0.0f;
}

// returns acc + sum over e < n of q[e] u[e], in order of e
template <class S, bool VEC>
__device__ __forceinline__ float dot_chunk(const uint4 &q, const float *u, int n, float acc) {
  float x[S::V];
  load_dir<S, VEC>(u, n, x);
#pragma unroll
  for (int e = 0; e < S::V; e++)
    if (e < n)
      acc = __fadd_rn(acc, __fmul_rn(get<S>(q, e), x[e]));
  return acc;
}

// x + c w without an intermediate overflow where the result fits: where
// c w is not finite, (x + ch w) + ch w with ch = c / 2 computed by the caller
// (axis_steer.h, "Overflow"); elsewhere x + c w, the same bits as cpu.c
__device__ __forceinline__ float axpy1(float x, float c, float ch, float w) {
  const float prod = __fmul_rn(c, w);
  const float half = __fmul_rn(ch, w);
  return isfinite(prod) ? __fadd_rn(x, prod) : __fadd_rn(__fadd_rn(x, half), half);
}

// q[e] <- round(q[e] + c w[e]) for e < n (ch = c / 2, see axpy1); returns
// acc + <new q, w> (in the order of dot_chunk) when want_dot, acc otherwise
template <class S, bool VEC>
__device__ __forceinline__ float axpy_chunk(uint4 &q, const float *w, float c, float ch, int n,
                                            bool want_dot, float acc) {
  float x[S::V];
  load_dir<S, VEC>(w, n, x);
#pragma unroll
  for (int e = 0; e < S::V; e++) {
    if (e < n) {
      const typename S::bits b = S::from_float(axpy1(get<S>(q, e), c, ch, x[e]));
      put_bits<S>(q, e, b);
      if (want_dot)
        acc = __fadd_rn(acc, __fmul_rn(S::to_float(b), x[e]));
    }
  }
  return acc;
}

/* ---- a row as seen by one thread of its group -------------------------------
 * Row<S, NC, VEC> holds the thread's NC chunks (t, t + T, ...) in registers:
 * load() reads them, store() writes them back. Row<S, 0, VEC> keeps nothing
 * and goes to global memory in every call (rows too long for registers).
 * dot() and axpy() return this thread's partial sum; the group adds them;
 * axpy(w, c, c / 2, ...) adds c w (see axpy1). */

template <class S, int NC, bool VEC> struct Row {
  typedef typename S::bits bits;
  bits *p;
  int64_t d;
  int t, T;
  uint4 q[NC];

  __device__ Row(bits *p_, int64_t d_, int t_, int T_) : p(p_), d(d_), t(t_), T(T_) {}

  __device__ __forceinline__ int count(int c) const {
    const int64_t left = d - (int64_t)c * S::V;
    return left < S::V ? (int)left : S::V;
  }

  __device__ __forceinline__ void load() {
#pragma unroll
    for (int s = 0; s < NC; s++) {
      const int c = s * T + t;
      if ((int64_t)c * S::V < d)
        q[s] = load_chunk<S, VEC>(p + (int64_t)c * S::V, count(c));
    }
  }

  __device__ __forceinline__ void store() const {
#pragma unroll
    for (int s = 0; s < NC; s++) {
      const int c = s * T + t;
      if ((int64_t)c * S::V < d)
        store_chunk<S, VEC>(p + (int64_t)c * S::V, q[s], count(c));
    }
  }

  __device__ __forceinline__ float dot(const float *u) const {
    float acc = 0.0f;
#pragma unroll
    for (int s = 0; s < NC; s++) {
      const int c = s * T + t;
      if ((int64_t)c * S::V < d)
        acc = dot_chunk<S, VEC>(q[s], u + (int64_t)c * S::V, count(c), acc);
    }
    return acc;
  }

  __device__ __forceinline__ float axpy(const float *w, float coef, float half, bool want_dot) {
    float acc = 0.0f;
#pragma unroll
    for (int s = 0; s < NC; s++) {
      const int c = s * T + t;
      if ((int64_t)c * S::V < d)
        acc = axpy_chunk<S, VEC>(q[s], w + (int64_t)c * S::V, coef, half, count(c), want_dot, acc);
    }
    return acc;
  }
};

template <class S, bool VEC> struct Row<S, 0, VEC> {
  typedef typename S::bits bits;
  bits *p;
  int64_t d;
  int t, T;

  __device__ Row(bits *p_, int64_t d_, int t_, int T_) : p(p_), d(d_), t(t_), T(T_) {}

  __device__ __forceinline__ int count(int64_t c) const {
    const int64_t left = d - c * S::V;
    return left < S::V ? (int)left : S::V;
  }

  __device__ __forceinline__ void load() {}
  __device__ __forceinline__ void store() const {}

  __device__ float dot(const float *u) const {
    float acc = 0.0f;
    for (int64_t c = t; c * S::V < d; c += T) {
      const int n = count(c);
      const uint4 q = load_chunk<S, VEC>(p + c * S::V, n);
      acc = dot_chunk<S, VEC>(q, u + c * S::V, n, acc);
    }
    return acc;
  }

  __device__ float axpy(const float *w, float coef, float half, bool want_dot) {
    float acc = 0.0f;
    for (int64_t c = t; c * S::V < d; c += T) {
      const int n = count(c);
      uint4 q = load_chunk<S, VEC>(p + c * S::V, n);
      acc = axpy_chunk<S, VEC>(q, w + c * S::V, coef, half, n, want_dot, acc);
      store_chunk<S, VEC>(p + c * S::V, q, n);
    }
    return acc;
  }
};

/* ---- thread groups: a warp or a block ---------------------------------------
 * sum() returns the same bits to every thread of the group: each butterfly
 * level adds the same two values in both partner lanes, and float addition
 * is commutative. Every thread of the group must call it. */

__device__ __forceinline__ float warp_sum(float x) {
#pragma unroll
  for (int m = kWarp / 2; m > 0; m >>= 1)
    x = __fadd_rn(x, __shfl_xor_sync(0xffffffffu, x, m));
  return x;
}

struct WarpGroup {
  __device__ __forceinline__ int rank() const { return threadIdx.x % kWarp; }
  __device__ __forceinline__ int size() const { return kWarp; }
  __device__ __forceinline__ float sum(float x) { return warp_sum(x); }
};

// buf: 2 * kWarp floats of shared memory, used in turn by consecutive sums
// so that one barrier per sum suffices
struct BlockGroup {
  float *buf;
  int flip;

  __device__ explicit BlockGroup(float *buf_) : buf(buf_), flip(0) {}
  __device__ __forceinline__ int rank() const { return threadIdx.x; }
  __device__ __forceinline__ int size() const { return blockDim.x; }

  __device__ __forceinline__ float sum(float x) {
    const int lane = threadIdx.x % kWarp;
    float *b = buf + flip * kWarp;
    flip ^= 1;
    x = warp_sum(x);
    if (lane == 0)
      b[threadIdx.x / kWarp] = x;
    __syncthreads();
    return warp_sum(lane < (int)(blockDim.x / kWarp) ? b[lane] : 0.0f);
  }
};

/* ---- the program over one row -------------------------------------------- */

struct Program {
  axs_rows h;
  axs_bin mask;
  axs_record rec;
  int64_t n_rows;
  int n_steps;
  axs_step steps[AXS_MAX_STEPS];
};

__device__ __forceinline__ float fin_at(const axs_fin &v, int64_t o, int64_t i) {
  return v.data[o * v.stride_outer + i * v.stride_inner];
}

__device__ __forceinline__ void fout_set(const axs_fout &v, int64_t o, int64_t i, float x) {
  if (v.data != nullptr)
    v.data[o * v.stride_outer + i * v.stride_inner] = x;
}

__device__ __forceinline__ void bout_set(const axs_bout &v, int64_t o, int64_t i, bool x) {
  if (v.data != nullptr)
    v.data[o * v.stride_outer + i * v.stride_inner] = x ? 1 : 0;
}

// the record column of inner row i, or -1 when it falls outside the record
// (only possible with an offset, which lives in device memory)
__device__ __forceinline__ int64_t record_column(const axs_record &rec, int64_t i) {
  if (rec.offset == nullptr)
    return i;
  // col = offset + i in [0, capacity), tested without forming offset + i
  // (any int64 offset is valid; 0 <= i and 0 <= capacity)
  const int64_t off = *rec.offset;
  return (off >= -i && off < rec.capacity - i) ? off + i : -1;
}

__device__ void skip_row(const Program &pg, int64_t o, int64_t i) {
  const float nan = __int_as_float(0x7fc00000);
  for (int k = 0; k < pg.n_steps; k++) {
    fout_set(pg.steps[k].p_before, o, i, nan);
    fout_set(pg.steps[k].p_after, o, i, nan);
    bout_set(pg.steps[k].changed, o, i, false);
  }
  const int64_t col = record_column(pg.rec, i);
  if (col < 0)
    return;
  fout_set(pg.rec.p_in, o, col, nan);
  fout_set(pg.rec.p_out, o, col, nan);
  bout_set(pg.rec.fired, o, col, false);
}

// whether step s runs on row (o, i): no gate, or a nonzero gate byte at the
// row's gate column (axs_gate; the offset lives in device memory)
__device__ __forceinline__ bool gate_open(const axs_gate &g, int64_t o, int64_t i) {
  if (g.data == nullptr)
    return true;
  int64_t c = i;
  if (g.offset != nullptr) {
    const int64_t off = *g.offset;
    if (!(off >= -i && off < g.capacity - i))
      return false;
    c = off + i;
  }
  return g.data[o * g.stride_outer + c * g.stride_inner] != 0;
}

// The per-row values a step reads (lo and hi, target, or alpha), loaded ahead
// of the step so that their latency hides behind the previous work. Only the
// values the op uses are read.
struct Params {
  float a, b;
};

__device__ __forceinline__ Params load_params(const axs_step &s, int64_t o, int64_t i) {
  Params v = {0.0f, 0.0f};
  if (s.op != AXS_PROJECT && s.a.data != nullptr)
    v.a = fin_at(s.a, o, i);
  if (s.op == AXS_CLAMP && s.b.data != nullptr)
    v.b = fin_at(s.b, o, i);
  return v;
}

// where step s moves the projection p, or p itself when it does not
__device__ __forceinline__ float step_target(const axs_step &s, Params v, float p) {
  if (s.op == AXS_CLAMP) {
    float t = p;
    if (s.a.data != nullptr && t < v.a)
      t = v.a;
    if (s.b.data != nullptr && t > v.b)
      t = v.b;
    return t;
  }
  if (s.op == AXS_SET)
    return isfinite(v.a) ? v.a : p;
  return p;
}

// row r = (o, i) of h: (n_outer, n_inner, d). Every branch below depends only
// on values shared by the whole group (parameters and group sums), so the
// group stays converged through every sum.
template <class S, int NC, bool VEC, class Group>
__device__ __forceinline__ void run_row(const Program &pg, Group &g, int64_t r) {
  const int64_t o = r / pg.h.n_inner;
  const int64_t i = r - o * pg.h.n_inner;
  const bool lead = g.rank() == 0;
  if (pg.mask.data != nullptr &&
      pg.mask.data[o * pg.mask.stride_outer + i * pg.mask.stride_inner] == 0) {
    if (lead)
      skip_row(pg, o, i);
    return;
  }
  typename S::bits *p =
      static_cast<typename S::bits *>(pg.h.data) + (o * pg.h.stride_outer + i * pg.h.stride_inner);
  Row<S, NC, VEC> row(p, pg.h.d, g.rank(), g.size());
  row.load();
  Params cur = load_params(pg.steps[0], o, i);
  const int64_t col = record_column(pg.rec, i);

  const float *dir0 = pg.steps[0].dir;
  const bool want_rec = pg.rec.p_in.data != nullptr || pg.rec.p_out.data != nullptr;
  float p0 = 0.0f; // <row, dir0>, valid while p0_ok
  bool p0_ok = false;
  bool fired = false;
  bool dirty = false;
  if (want_rec && pg.steps[0].op == AXS_STEER) {
    p0 = g.sum(row.dot(dir0));
    p0_ok = true;
  }
  float p_in = p0;

  for (int k = 0; k < pg.n_steps; k++) {
    const axs_step &s = pg.steps[k];
    const Params next = k + 1 < pg.n_steps ? load_params(pg.steps[k + 1], o, i) : cur;
    const bool reuse = p0_ok && s.dir == dir0;
    bool wrote = false;
    if (!gate_open(s.gate, o, i)) {
      // skipped: the row's projection at this point, where someone reads it
      const bool first = k == 0 && want_rec && s.op != AXS_STEER;
      if (s.p_before.data != nullptr || s.p_after.data != nullptr || first) {
        const float pk = reuse ? p0 : g.sum(row.dot(s.dir));
        if (first) {
          p_in = pk;
          p0 = pk;
          p0_ok = true;
        }
        if (lead) {
          fout_set(s.p_before, o, i, pk);
          fout_set(s.p_after, o, i, pk);
        }
      }
    } else if (s.op == AXS_STEER) {
      const float alpha = cur.a;
      const bool want_pa = s.p_after.data != nullptr;
      float pb = 0.0f;
      if (s.p_before.data != nullptr) {
        pb = reuse ? p0 : g.sum(row.dot(s.dir));
        if (lead)
          fout_set(s.p_before, o, i, pb);
      }
      if (alpha != 0.0f && isfinite(alpha)) {
        const float part = row.axpy(s.dir, alpha, __fmul_rn(0.5f, alpha), want_pa);
        if (want_pa) {
          const float pa = g.sum(part);
          if (lead)
            fout_set(s.p_after, o, i, pa);
        }
        wrote = true;
        p0_ok = false;
      } else if (want_pa) {
        const float pa = s.p_before.data != nullptr ? pb : reuse ? p0 : g.sum(row.dot(s.dir));
        if (lead)
          fout_set(s.p_after, o, i, pa);
      }
    } else {
      const float pk = reuse ? p0 : g.sum(row.dot(s.dir));
      if (k == 0) {
        p_in = pk;
        p0 = pk;
        p0_ok = true;
      }
      float pa = pk;
      const float t = step_target(s, cur, pk);
      if (s.op != AXS_PROJECT && isfinite(pk) && isfinite(t) && t != pk) {
        // the projection of the stored row, only when someone reads it
        const bool need_pa =
            s.p_after.data != nullptr || (s.dir == dir0 && pg.rec.p_out.data != nullptr);
        const float part = row.axpy(s.dir, __fsub_rn(t, pk),
                                    __fsub_rn(__fmul_rn(0.5f, t), __fmul_rn(0.5f, pk)), need_pa);
        if (need_pa)
          pa = g.sum(part);
        wrote = true;
        if (s.op == AXS_CLAMP)
          fired = true;
        p0 = pa;
        p0_ok = need_pa && s.dir == dir0;
      }
      if (lead) {
        fout_set(s.p_before, o, i, pk);
        fout_set(s.p_after, o, i, pa);
      }
    }
    if (lead)
      bout_set(s.changed, o, i, wrote);
    dirty = dirty || wrote;
    cur = next;
  }

  if (col >= 0 && pg.rec.p_out.data != nullptr) {
    const float p_out = p0_ok ? p0 : g.sum(row.dot(dir0));
    if (lead)
      fout_set(pg.rec.p_out, o, col, p_out);
  }
  if (lead && col >= 0) {
    fout_set(pg.rec.p_in, o, col, p_in);
    bout_set(pg.rec.fired, o, col, fired);
  }
  if (dirty)
    row.store();
}

/* ---- kernels ------------------------------------------------------------- */

// warp mode: block of kWarpRowsPerBlock warps, warp w of block b runs rows
// b * kWarpRowsPerBlock + w, then strides by all warps of the grid
template <class S, int NC, bool VEC>
__global__ void __launch_bounds__(kWarp *kWarpRowsPerBlock)
    apply_warp_rows(const __grid_constant__ Program pg) {
  WarpGroup g;
  const int64_t stride = (int64_t)gridDim.x * kWarpRowsPerBlock;
  for (int64_t r = (int64_t)blockIdx.x * kWarpRowsPerBlock + threadIdx.x / kWarp; r < pg.n_rows;
       r += stride)
    run_row<S, NC, VEC>(pg, g, r);
}

// Blocks of up to 256 threads (d <= 8192 in 16-bit storage) should keep 3
// resident per SM for memory parallelism; larger ones get all the registers
// one block allows (64 per thread at 1024 threads).
constexpr int min_blocks(int max_threads) {
  return max_threads <= 256 ? 3 : 1;
}

// block mode: block b runs rows b, b + gridDim.x, ...; NC = 0 is the global
// memory fallback. MAXT bounds blockDim.x.
template <class S, int NC, bool VEC, int MAXT>
__global__ void __launch_bounds__(MAXT, min_blocks(MAXT))
    apply_block_rows(const __grid_constant__ Program pg) {
  __shared__ float buf[2 * kWarp];
  BlockGroup g(buf);
  for (int64_t r = blockIdx.x; r < pg.n_rows; r += gridDim.x)
    run_row<S, NC, VEC>(pg, g, r);
}

// latch scan: thread t of block b runs sequences b * blockDim.x + t, then
// strides by all threads of the grid; each goes through its tokens in order
struct LatchScan {
  axs_latch latch;
  axs_bin mask;
  int64_t n_outer, n_inner;
};

constexpr int kScanThreads = 32;

__global__ void __launch_bounds__(kScanThreads) latch_scan(const __grid_constant__ LatchScan ls) {
  const int64_t stride = (int64_t)gridDim.x * blockDim.x;
  for (int64_t o = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; o < ls.n_outer; o += stride)
    axs_latch_scan(&ls.latch, ls.mask, ls.n_inner, o);
}

/* ---- host side ----------------------------------------------------------- */

enum Kind { WARP_1, WARP_2, WARP_4, BLOCK_256, BLOCK_512, BLOCK_1024, GLOBAL };

struct Launch {
  Kind kind;
  bool vec;
  unsigned threads, blocks;
};

static bool aligned16(const void *p) {
  return reinterpret_cast<uintptr_t>(p) % 16 == 0;
}

// The configuration for h: (n_outer, n_inner, d), n_rows >= 1. The threads
// per row depend on d and the dtype only (they fix the summation order).
static Launch choose_launch(const axs_rows &h, const axs_step *steps, int n_steps, int64_t n_rows) {
  const int64_t esize = (int64_t)axs_dtype_size(h.dtype);
  const int64_t v = 16 / esize;
  const int64_t chunks = (h.d + v - 1) / v;
  Launch l;
  l.vec = aligned16(h.data) && (h.n_outer <= 1 || (h.stride_outer * esize) % 16 == 0) &&
          (h.n_inner <= 1 || (h.stride_inner * esize) % 16 == 0);
  for (int k = 0; k < n_steps; k++)
    l.vec = l.vec && aligned16(steps[k].dir);
  int64_t groups_per_block = 1;
  if (chunks <= kWarpMaxChunks) {
    l.kind = chunks <= kWarp ? WARP_1 : (chunks <= 2 * kWarp ? WARP_2 : WARP_4);
    l.threads = kWarp * kWarpRowsPerBlock;
    groups_per_block = kWarpRowsPerBlock;
  } else if (chunks <= (int64_t)kChunksPerThread * kMaxThreads) {
    const int64_t need = (chunks + kChunksPerThread - 1) / kChunksPerThread;
    int64_t t = 2 * kWarp;
    while (t < need)
      t *= 2;
    l.kind = t <= 256 ? BLOCK_256 : (t <= 512 ? BLOCK_512 : BLOCK_1024);
    l.threads = (unsigned)t;
  } else {
    l.kind = GLOBAL;
    l.threads = kMaxThreads;
  }
  int64_t blocks = (n_rows + groups_per_block - 1) / groups_per_block;
  l.blocks = (unsigned)(blocks < kMaxBlocks ? blocks : kMaxBlocks);
  return l;
}

template <class S, bool VEC>
static void launch_as(const Program &pg, const Launch &l, cudaStream_t st) {
  switch (l.kind) {
  case WARP_1:
    apply_warp_rows<S, 1, VEC><<<l.blocks, l.threads, 0, st>>>(pg);
    break;
  case WARP_2:
    apply_warp_rows<S, 2, VEC><<<l.blocks, l.threads, 0, st>>>(pg);
    break;
  case WARP_4:
    apply_warp_rows<S, 4, VEC><<<l.blocks, l.threads, 0, st>>>(pg);
    break;
  case BLOCK_256:
    apply_block_rows<S, kChunksPerThread, VEC, 256><<<l.blocks, l.threads, 0, st>>>(pg);
    break;
  case BLOCK_512:
    apply_block_rows<S, kChunksPerThread, VEC, 512><<<l.blocks, l.threads, 0, st>>>(pg);
    break;
  case BLOCK_1024:
    apply_block_rows<S, kChunksPerThread, VEC, 1024><<<l.blocks, l.threads, 0, st>>>(pg);
    break;
  case GLOBAL:
    apply_block_rows<S, 0, VEC, kMaxThreads><<<l.blocks, l.threads, 0, st>>>(pg);
    break;
  }
}

template <class S> static void launch_dtype(const Program &pg, const Launch &l, cudaStream_t st) {
  if (l.vec)
    launch_as<S, true>(pg, l, st);
  else
    launch_as<S, false>(pg, l, st);
}

// Enqueues the program steps[0 .. n_steps) on every row (n_rows >= 1; the
// call is checked).
static void launch_program(axs_rows h, const axs_step *steps, int n_steps, axs_bin mask,
                           axs_record rec, int64_t n_rows, cudaStream_t st) {
  Program pg;
  memset(&pg, 0, sizeof pg);
  pg.h = h;
  pg.mask = mask;
  pg.rec = rec;
  pg.n_rows = n_rows;
  pg.n_steps = n_steps;
  for (int k = 0; k < n_steps; k++)
    pg.steps[k] = steps[k];

  const Launch l = choose_launch(h, steps, n_steps, n_rows);
  switch (h.dtype) {
  case AXS_F32:
    launch_dtype<F32>(pg, l, st);
    break;
  case AXS_F16:
    launch_dtype<F16>(pg, l, st);
    break;
  case AXS_BF16:
    launch_dtype<BF16>(pg, l, st);
    break;
  }
}

// Enqueues a latch on every sequence of h: the detection projections into
// its p (a PROJECT step recorded at the latch's columns), then the scan.
static void launch_latch(axs_rows h, const axs_latch &lt, axs_bin mask, int64_t n_rows,
                         cudaStream_t st) {
  if (lt.dir != nullptr && n_rows > 0) {
    const axs_one_step s = axs_project_program(lt.dir, axs_no_fout);
    axs_record rec = axs_no_record;
    rec.p_in.data = lt.p;
    rec.p_in.stride_outer = lt.p_stride;
    rec.p_in.stride_inner = 1;
    rec.offset = lt.offset;
    rec.capacity = lt.capacity;
    launch_program(h, &s.step, 1, mask, rec, n_rows, st);
  }
  LatchScan ls;
  memset(&ls, 0, sizeof ls);
  ls.latch = lt;
  ls.mask = mask;
  ls.n_outer = h.n_outer;
  ls.n_inner = h.n_inner;
  const int64_t blocks = (h.n_outer + kScanThreads - 1) / kScanThreads;
  const unsigned grid = (unsigned)(blocks < kMaxBlocks ? blocks : kMaxBlocks);
  latch_scan<<<grid, kScanThreads, 0, st>>>(ls);
}

// The CUDA engine behind every entry point; names as in axs_check_call.
static axs_status apply(axs_rows h, const axs_latch *latches, int n_latches, const axs_step *steps,
                        int n_steps, axs_bin mask, axs_record rec, const axs_names *names,
                        void *stream) {
  axs_clear_error();
  axs_status status = axs_check_call(h, latches, n_latches, steps, n_steps, mask, rec, names);
  if (status != AXS_OK)
    return status;
  const int64_t n_rows = h.n_outer * h.n_inner;
  cudaStream_t st = static_cast<cudaStream_t>(stream);
  for (int j = 0; j < n_latches; j++)
    if (h.n_outer > 0)
      launch_latch(h, latches[j], mask, n_rows, st);
  if (n_steps > 0 && n_rows > 0)
    launch_program(h, steps, n_steps, mask, rec, n_rows, st);
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess)
    return axs_fail(AXS_EDEVICE, "the CUDA kernel launch failed: %s", cudaGetErrorString(err));
  return AXS_OK;
}

} // namespace

/* ---- entry points ----------------------------------------------------------
 * The same six as the CPU half; the single operations are the one-step
 * programs of programs.c. */

extern "C" axs_status axs_latch_apply_cuda_(axs_rows h, const axs_latch *latches, int n_latches,
                                            const axs_step *steps, int n_steps, axs_bin mask,
                                            axs_record rec, const axs_names *names, void *stream) {
  return apply(h, latches, n_latches, steps, n_steps, mask, rec, names, stream);
}

extern "C" axs_status axs_apply_cuda_(axs_rows h, const axs_step *steps, int n_steps, axs_bin mask,
                                      axs_record rec, const axs_names *names, void *stream) {
  return apply(h, nullptr, 0, steps, n_steps, mask, rec, names, stream);
}

extern "C" axs_status axs_project_cuda(axs_rows h, const float *u, axs_bin mask, axs_fout out,
                                       void *stream) {
  const axs_one_step s = axs_project_program(u, out);
  return apply(h, nullptr, 0, &s.step, 1, mask, axs_no_record, &s.names, stream);
}

extern "C" axs_status axs_clamp_cuda_(axs_rows h, const float *u, axs_fin lo, axs_fin hi,
                                      axs_bin mask, axs_fout p_before, axs_fout p_after,
                                      axs_bout changed, void *stream) {
  const axs_one_step s = axs_clamp_program(u, lo, hi, p_before, p_after, changed);
  return apply(h, nullptr, 0, &s.step, 1, mask, axs_no_record, &s.names, stream);
}

extern "C" axs_status axs_set_projection_cuda_(axs_rows h, const float *u, axs_fin target,
                                               axs_bin mask, axs_fout p_before, void *stream) {
  const axs_one_step s = axs_set_projection_program(u, target, p_before);
  return apply(h, nullptr, 0, &s.step, 1, mask, axs_no_record, &s.names, stream);
}

extern "C" axs_status axs_steer_cuda_(axs_rows h, const float *w, axs_fin alpha, axs_bin mask,
                                      void *stream) {
  const axs_one_step s = axs_steer_program(w, alpha);
  return apply(h, nullptr, 0, &s.step, 1, mask, axs_no_record, &s.names, stream);
}
