/*
 * axis_steer.h - the framework-free core of axis_steer.
 *
 * Every operation works on a batch of rows h of shape (n_outer, n_inner, d):
 * a hidden-state tensor (batch, seq, d) is (n_outer = batch, n_inner = seq);
 * a plain matrix (n, d) is (1, n). Elements of one row are contiguous; rows
 * sit at any non-negative element strides. Storage is float32, float16 or
 * bfloat16; all arithmetic is float32, and values written back to float16
 * or bfloat16 are rounded to nearest, ties to even. Directions are float32.
 *
 * The core knows nothing of Python, NumPy or torch. It never prints, aborts
 * or exits: every entry point returns an axs_status, and axs_last_error()
 * gives a message for the calling thread explaining the last failure.
 *
 * Operations (p = <h[r], u>, accumulated in float32 in a fixed order):
 *
 *   project          p[r] = <h[r], u>
 *   clamp            h[r] <- h[r] + u * (clamp(p, lo, hi) - p)
 *                    (a floor with hi = +inf - the paper's cap -, a ceiling
 *                    with lo = -inf - the reference code's cap -, or a band)
 *   set projection   h[r] <- h[r] + u * (t - p)      (t = 0: ablation)
 *   steer            h[r] <- h[r] + alpha * w        (w any vector)
 *
 * and axs_apply_, which runs a short program of these steps on each row in
 * one pass, each step seeing the result of the previous one.
 *
 * Rules shared by every operation
 * -------------------------------
 * - clamp(p, lo, hi) is computed as: t = p; if (t < lo) t = lo;
 *   if (t > hi) t = hi. So with lo > hi in a per-row bound the upper bound
 *   wins (as torch.clamp does); scalar and CPU per-row bounds with lo > hi
 *   are rejected (AXS_EINVAL). A NaN bound never fires (the comparison is
 *   false), so it means "no bound on that side"; +-inf likewise.
 * - A row is written only when its value changes: a clamp row already inside
 *   [lo, hi], a set-projection row already at t, a steer row with alpha == 0
 *   are left bit-for-bit unchanged and are not written.
 * - NaN policy: a row whose projection is not finite (the row holds a NaN or
 *   an infinity, or its float32 projection overflows) is never written by
 *   clamp or set projection; its projection outputs carry the non-finite
 *   value and its changed flag is 0. A row is written only toward a finite
 *   target: a non-finite set-projection target, a clamp whose bound is +-inf
 *   on the side that would fire (lo = +inf, hi = -inf), or a non-finite
 *   steering coefficient leave the row unchanged. NaN and Inf in h are
 *   therefore never hidden and never spread.
 * - Overflow: an update h[r] + c * w (c = t - p, or alpha) is computed so
 *   that no intermediate overflows. Where c * w[j] is not finite - t - p
 *   beyond float32 (t = 2e38, p = -2e38), or a large alpha times a large
 *   w[j] - the element is computed as (h[r][j] + c/2 * w[j]) + c/2 * w[j]
 *   with c/2 = t/2 - p/2 (or alpha/2); elsewhere as h[r][j] + c * w[j],
 *   the same bits as without this rule. So a finite row stays finite
 *   whenever the exact result fits the storage; an element whose exact
 *   value lies beyond the storage's range (65504 for float16) becomes +-inf,
 *   as any round-to-nearest store does, and is then reported as written.
 * - Masked rows (mask[r] == 0) are neither read nor written; their projection
 *   outputs are set to NaN and their flags to 0. A mask holds 0 and 1 only
 *   (bool, or uint8 0/1); the CPU entry points reject other values.
 * - Results are bit-identical for any thread count: rows are independent and
 *   each dot product uses one fixed summation order for a given d.
 *
 * Aliasing: h must not overlap a direction, a parameter or an output; the
 * outputs must not overlap each other. Rows of h must not overlap each other
 * (checked: the smaller row stride must be >= d, the larger one must step
 * over the whole extent of the smaller). Parameters may be broadcast (stride
 * 0); outputs may not.
 *
 * Sizes: every array's extent - its counts times its strides, in bytes - must
 * be representable (at most PTRDIFF_MAX bytes, not wrapping the address
 * space). Calls whose extents overflow are rejected (AXS_EINVAL) before any
 * memory is touched; the arithmetic that checks them cannot overflow.
 *
 * Entry points: the CPU and CUDA halves have the same five, with the same
 * arguments and the same contract; the CPU ones end in n_threads, the CUDA
 * ones in a stream and a _cuda infix. The four single operations are
 * one-step programs of apply_, defined once for both halves
 * (csrc/core/programs.c).
 */
#ifndef AXIS_STEER_H
#define AXIS_STEER_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define AXS_VERSION_MAJOR 0
#define AXS_VERSION_MINOR 2

/* Most steps one axs_apply_ call runs on each row. */
#define AXS_MAX_STEPS 16

/* Rows below this many elements (n_rows * d) run on one thread: an OpenMP
 * parallel region costs more than the work. */
#define AXS_PARALLEL_MIN_ELEMS 65536

typedef enum {
  AXS_OK = 0,
  AXS_EINVAL = 1, /* a value is out of range or inconsistent (ValueError) */
  AXS_ETYPE = 2,  /* an unsupported dtype or enum value (TypeError) */
  AXS_EDEVICE = 3 /* the device failed to run a kernel (CUDA error) */
} axs_status;

typedef enum { AXS_F32 = 0, AXS_F16 = 1, AXS_BF16 = 2 } axs_dtype;

typedef enum {
  AXS_PROJECT = 0, /* record <h, dir>; h unchanged            */
  AXS_CLAMP = 1,   /* a = lo, b = hi                          */
  AXS_SET = 2,     /* a = target t                            */
  AXS_STEER = 3    /* a = alpha; dir = w is any vector        */
} axs_op;

/* h: (n_outer, n_inner, d); element [o][i][j] is at
 * data + (o * stride_outer + i * stride_inner + j) * element_size. */
typedef struct {
  void *data;
  axs_dtype dtype;
  int64_t n_outer, n_inner, d;
  int64_t stride_outer, stride_inner;
} axs_rows;

/* A float32 value per row: row (o, i) reads data[o * stride_outer + i *
 * stride_inner]. Strides of 0 broadcast (0, 0 is one scalar for all rows).
 * data == NULL means "not given". */
typedef struct {
  const float *data;
  int64_t stride_outer, stride_inner;
} axs_fin;

/* A float32 output per row (same indexing; no zero strides unless the
 * corresponding row count is 1). data == NULL means "not wanted". */
typedef struct {
  float *data;
  int64_t stride_outer, stride_inner;
} axs_fout;

/* A byte flag per row, input (mask: 0 = skip the row) or output (0/1). */
typedef struct {
  const uint8_t *data;
  int64_t stride_outer, stride_inner;
} axs_bin;

typedef struct {
  uint8_t *data;
  int64_t stride_outer, stride_inner;
} axs_bout;

/* One step of a program. dir: (d,) float32, unit norm for PROJECT, CLAMP
 * and SET (checked on the CPU: | ||dir|| - 1 | <= AXS_UNIT_TOL), any finite
 * vector for STEER. Per-step outputs are optional:
 *   p_before  <h, dir> when the step starts
 *   p_after   <h, dir> when it ends (recomputed from the stored row when
 *             the step wrote it, so it includes the storage rounding)
 *   changed   1 where the step wrote the row */
typedef struct {
  axs_op op;
  const float *dir;
  axs_fin a, b;
  axs_fout p_before, p_after;
  axs_bout changed;
} axs_step;

/* What monitoring records, about the direction of step 0:
 *   p_in   <h, dir0> before any step
 *   p_out  <h, dir0> after all steps
 *   fired  1 where any CLAMP step wrote the row
 * Each field optional. When step 0 is a STEER step, dir0 is its w.
 *
 * Without an offset, row (o, i) is recorded at [o][i]. With one (a single
 * int64 in the same memory as h: host for CPU calls, device for CUDA), it is
 * recorded at column [o][*offset + i] of outputs that have `capacity`
 * columns; columns outside [0, capacity) are not written. This lets a caller
 * append the readings of successive forward calls (a prompt, then one token
 * per decode step) to one preallocated buffer whose write position lives in
 * device memory, so that no host value changes between steps (CUDA graphs,
 * compiled code). */
typedef struct {
  axs_fout p_in, p_out;
  axs_bout fired;
  const int64_t *offset;
  int64_t capacity;
} axs_record;

#define AXS_UNIT_TOL 1e-3f

/* What the arguments of a call are called in its error messages, so that a
 * message names what the caller passed ("params[1, 0]", "rec_offset") rather
 * than the core's own names. Every field is optional: NULL keeps the default
 * (shown in brackets for apply_; the single operations use their parameter
 * names, "u", "lo", "target", "out", ...). In a per-step name the first "%d"
 * is replaced by the step index; nothing else in a name is interpreted.
 * Names longer than 47 characters are cut. */
typedef struct {
  const char *dir;      /* ["dirs[%d]"]     steps[k].dir       */
  const char *a;        /* ["a[%d]"]        steps[k].a         */
  const char *b;        /* ["b[%d]"]        steps[k].b         */
  const char *p_before; /* ["p_before[%d]"] steps[k].p_before  */
  const char *p_after;  /* ["p_after[%d]"]  steps[k].p_after   */
  const char *changed;  /* ["changed[%d]"]  steps[k].changed   */
  const char *mask;     /* ["mask"]                            */
  const char *p_in;     /* ["p_in"]         rec.p_in           */
  const char *p_out;    /* ["p_out"]        rec.p_out          */
  const char *fired;    /* ["fired"]        rec.fired          */
  const char *offset;   /* ["record offset"] rec.offset        */
} axs_names;

/* The message explaining the last failure on this thread ("" if none). */
const char *axs_last_error(void);

/* The number of threads a call with n_threads <= 0 uses (OpenMP's default,
 * or 1 when built without OpenMP). */
int axs_default_threads(void);

/* ---- CPU ---------------------------------------------------------------
 * n_threads: <= 0 uses axs_default_threads(). Work below
 * AXS_PARALLEL_MIN_ELEMS elements always runs on the calling thread. */

/* out[r] = p = <h[r], u>.   h: (n_outer, n_inner, d) read only; u: (d,) unit;
 * out: (n_outer, n_inner) float32. */
axs_status axs_project(axs_rows h, const float *u, axs_bin mask, axs_fout out, int n_threads);

/* h[r] <- h[r] + u (clamp(p, lo, hi) - p), in place. u: (d,) unit; lo, hi:
 * per-row values (a NULL lo is -inf, a NULL hi is +inf); p_before, p_after,
 * changed: optional (n_outer, n_inner) outputs, as in axs_step. */
axs_status axs_clamp_(axs_rows h, const float *u, axs_fin lo, axs_fin hi, axs_bin mask,
                      axs_fout p_before, axs_fout p_after, axs_bout changed, int n_threads);

/* h[r] <- h[r] + u (target - p), in place; target = 0 ablates the direction.
 * u: (d,) unit; target: per-row values (required). */
axs_status axs_set_projection_(axs_rows h, const float *u, axs_fin target, axs_bin mask,
                               axs_fout p_before, int n_threads);

/* h[r] <- h[r] + alpha[r] w, in place. w: (d,) any finite vector; alpha:
 * per-row values (required). */
axs_status axs_steer_(axs_rows h, const float *w, axs_fin alpha, axs_bin mask, int n_threads);

/* Runs steps[0 .. n_steps) on every row, in order, in one pass over h.
 * 1 <= n_steps <= AXS_MAX_STEPS. names: how the caller calls the arguments
 * (NULL for the defaults). */
axs_status axs_apply_(axs_rows h, const axs_step *steps, int n_steps, axs_bin mask, axs_record rec,
                      const axs_names *names, int n_threads);

/* ---- CUDA (declared always, defined only in builds with CUDA) ------------
 * The same five contracts on device pointers: h, directions, parameters,
 * masks, outputs and the record offset all live on the current device;
 * stream is a cudaStream_t (NULL for the default stream). The calls only
 * enqueue work: they never synchronise, never allocate, and read no device
 * memory on the host, so they can be captured in a CUDA graph. Consequently
 * the checks that need device data (unit norm of a direction, per-row
 * lo <= hi, mask values 0 / 1) are the caller's job; the kernels apply the
 * rules above to whatever they are given (a per-row lo > hi takes hi, a
 * non-zero mask byte runs the row). AXS_EDEVICE reports a launch failure
 * (its message names the CUDA error). */
axs_status axs_project_cuda(axs_rows h, const float *u, axs_bin mask, axs_fout out, void *stream);

axs_status axs_clamp_cuda_(axs_rows h, const float *u, axs_fin lo, axs_fin hi, axs_bin mask,
                           axs_fout p_before, axs_fout p_after, axs_bout changed, void *stream);

axs_status axs_set_projection_cuda_(axs_rows h, const float *u, axs_fin target, axs_bin mask,
                                    axs_fout p_before, void *stream);

axs_status axs_steer_cuda_(axs_rows h, const float *w, axs_fin alpha, axs_bin mask, void *stream);

axs_status axs_apply_cuda_(axs_rows h, const axs_step *steps, int n_steps, axs_bin mask,
                           axs_record rec, const axs_names *names, void *stream);

#ifdef __cplusplus
}
#endif

#endif /* AXIS_STEER_H */
