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
 * one pass, each step seeing the result of the previous one. A step may be
 * gated: on a row whose gate byte is 0 it is skipped (axs_gate).
 *
 * Drift latches (axs_latch_apply_) keep a small state per sequence (per
 * outer index o) across calls and decide, token by token, whether gated
 * steps run: a latch watches the projection of each real token on a
 * detection direction and opens its gate once the sequence has drifted
 * below a threshold (see "Drift latches" below).
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
 * Entry points: the CPU and CUDA halves have the same six, with the same
 * arguments and the same contract; the CPU ones end in n_threads, the CUDA
 * ones in a stream and a _cuda infix. The four single operations are
 * one-step programs of apply_, defined once for both halves
 * (csrc/core/programs.c); apply_ is latch_apply_ without latches, and the
 * latches' state machine is one piece of code both halves compile
 * (csrc/core/latch.h).
 *
 * Drift latches
 * -------------
 * A latch (axs_latch) belongs to a call of axs_latch_apply_ and runs before
 * its steps. Its columns: token (o, i) of the call is column c = *offset + i
 * of the latch's history arrays p and gate ((n_outer, capacity) each);
 * *offset is the number of tokens the sequences held before this call (the
 * cache's past length), so successive calls - a prompt, then one token per
 * decode step - append to the same arrays. Tokens whose column falls outside
 * [0, capacity) are neither recorded nor scanned, and their gate reads 0.
 *
 * 1. Reset: a call with *offset == 0 starts new sequences, and every
 *    sequence's state is reset first (the reset values are listed with the
 *    state slots below).
 * 2. Detection: each real token's projection on the latch's unit direction,
 *    x = <h[o][i], dir> (float32, the projection steps compute), is stored at
 *    p[o][c]; padding stores NaN. h is read before any step of the call.
 * 3. Scan: each sequence then goes through its real tokens of the call in
 *    order (padding is skipped: it never advances the state and its gate is
 *    0). For a real token at column c:
 *      gate[o][c] = latched && phase_open        (the state BEFORE token c)
 *    and then the state advances with the token's signal s:
 *      window W == 1: s = x;
 *      W > 1: s = the mean of the last W finite x of the sequence, once W
 *             have been seen since the reset (NaN before); a non-finite x
 *             leaves the window as it is and gives s = NaN. The mean is a
 *             running float64 sum, sum = (sum + x) - x_oldest (sum + x
 *             while filling), divided by W;
 *      no direction (dir == NULL): s = NaN (the state never changes).
 *    if not latched:  run = s < threshold ? run + 1 : 0;
 *                     if run >= k: latched = 1, run = up = 0, count += 1,
 *                     and latched_at = c if it was -1;
 *    if latched:      up = s > release ? up + 1 : 0;
 *                     if up >= release_k: latched = 0, run = up = 0.
 *    Comparisons are in float64 with the float32 parameters; NaN compares
 *    false, so a NaN signal resets the counter it meets, a NaN threshold
 *    never latches and a NaN release never releases. So a step gated by the
 *    latch runs on a token only once the latch fired on an EARLIER token:
 *    from the next token on.
 * 4. Phase: a call is a decode step when it holds one token per sequence
 *    (n_inner == 1) and continues sequences (*offset > 0); any other call is
 *    a prompt. phase_open is params[AXS_LATCH_GENERATED] on decode steps and
 *    params[AXS_LATCH_PROMPT] on prompts (nonzero = open).
 *
 * Consequently a step at the same call reading the latch's gate (axs_gate
 * with the latch's gate array, offset and capacity) sees, for every token,
 * whether the sequence had latched before it, whatever the number of tokens
 * per call: a prompt processed in one call or token by token gives the same
 * gates (when the two phases are open alike). State, parameters and histories are caller-owned
 * memory (device memory for CUDA calls), so they survive from call to call and nothing changes on
 * the host between decode steps.
 */
#ifndef AXIS_STEER_H
#define AXIS_STEER_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define AXS_VERSION_MAJOR 0
#define AXS_VERSION_MINOR 3

/* Most steps one axs_apply_ call runs on each row. */
#define AXS_MAX_STEPS 16

/* Most latches one axs_latch_apply_ call runs. */
#define AXS_MAX_LATCHES 4

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

/* A byte per row that switches a step on (nonzero) or off (0) there. Row
 * (o, i) reads data[o * stride_outer + c * stride_inner] with c = i, or,
 * with an offset (a single int64 in the same memory as h), c = *offset + i
 * in a gate of `capacity` columns; a column outside [0, capacity) reads 0.
 * A latch's gate is read with the latch's offset and capacity. data == NULL
 * means "no gate": the step runs on every row. */
typedef struct {
  const uint8_t *data;
  int64_t stride_outer, stride_inner;
  const int64_t *offset;
  int64_t capacity;
} axs_gate;

/* One step of a program. dir: (d,) float32, unit norm for PROJECT, CLAMP
 * and SET (checked on the CPU: | ||dir|| - 1 | <= AXS_UNIT_TOL), any finite
 * vector for STEER. Per-step outputs are optional:
 *   p_before  <h, dir> when the step starts
 *   p_after   <h, dir> when it ends (recomputed from the stored row when
 *             the step wrote it, so it includes the storage rounding)
 *   changed   1 where the step wrote the row
 * gate: optional. On a row whose gate reads 0 the step is skipped: it does
 * not write the row or fire, its changed flag is 0, and its p_before and
 * p_after both report the row's projection on dir at that point (computed
 * only when one of them, or the record's p_in for step 0, is wanted). */
typedef struct {
  axs_op op;
  const float *dir;
  axs_fin a, b;
  axs_fout p_before, p_after;
  axs_bout changed;
  axs_gate gate;
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

/* A drift latch (see "Drift latches" at the top). All arrays are float32 /
 * int64 / bytes in the memory of h (device memory for CUDA calls); row o of
 * a per-sequence array starts at element o * its stride.
 *   dir       (d,) unit detection direction, or NULL (no detection: the
 *             state keeps its reset values; with params[AXS_LATCH_START] = 1
 *             that gates by phase alone)
 *   params    AXS_LATCH_NPARAMS float32 values, indexed by axs_latch_param
 *   state     (n_outer, AXS_LATCH_NSTATE) int64, read and written
 *   ring      (n_outer, window) float32, the window's values (window > 1
 *             only; may be NULL when window == 1)
 *   p         (n_outer, capacity) float32 detection projections, written
 *             at the call's columns (required with a direction)
 *   gate      (n_outer, capacity) bytes 0 / 1, written at the call's columns
 *   offset    the column of the call's first token (required)
 * The latch's arrays must not overlap h, each other, or any output. */
typedef struct {
  const float *dir;
  const float *params;
  int64_t *state;
  int64_t state_stride;
  float *ring;
  int64_t ring_stride;
  int64_t window;
  float *p;
  int64_t p_stride;
  uint8_t *gate;
  int64_t gate_stride;
  const int64_t *offset;
  int64_t capacity;
} axs_latch;

/* The float32 parameters of a latch, params[AXS_LATCH_...]. k and
 * release_k are whole numbers >= 1 (checked on the CPU; on the device a
 * value below 1 or NaN acts as 1, a fraction is rounded down); the phase
 * and start flags are 0 or 1 (checked on the CPU; nonzero is 1 on the
 * device). */
typedef enum {
  AXS_LATCH_THRESHOLD = 0, /* a token is low when its signal < threshold       */
  AXS_LATCH_K = 1,         /* latch after k consecutive low tokens              */
  AXS_LATCH_RELEASE = 2,   /* a token is high when its signal > release         */
  AXS_LATCH_RELEASE_K = 3, /* release after release_k consecutive high tokens   */
  AXS_LATCH_PROMPT = 4,    /* 1: the gate may open on prompt calls              */
  AXS_LATCH_GENERATED = 5, /* 1: the gate may open on decode steps              */
  AXS_LATCH_START = 6,     /* 1: a sequence starts latched after a reset        */
  AXS_LATCH_NPARAMS = 8    /* (slot 7 is reserved, 0)                           */
} axs_latch_param;

/* The int64 state of one sequence, state[o * state_stride + AXS_LATCH_S_...],
 * with its reset values. */
typedef enum {
  AXS_LATCH_S_RUN = 0,        /* consecutive low tokens while not latched (0)      */
  AXS_LATCH_S_UP = 1,         /* consecutive high tokens while latched (0)          */
  AXS_LATCH_S_LATCHED = 2,    /* 1 while latched (params[AXS_LATCH_START])          */
  AXS_LATCH_S_SEEN = 3,       /* values in the window, at most W (0)                */
  AXS_LATCH_S_POS = 4,        /* the window slot the next value goes to (0)         */
  AXS_LATCH_S_LATCHED_AT = 5, /* column of the token that first latched (-1)        */
  AXS_LATCH_S_SUM = 6,        /* the window's float64 sum, as its bits (bits of 0.0) */
  AXS_LATCH_S_COUNT = 7,      /* times latched since the reset (0)                  */
  AXS_LATCH_NSTATE = 8
} axs_latch_slot;

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
  const char *gate;     /* ["gate[%d]"]     steps[k].gate      */
  const char *latch;    /* ["latches[%d]"]  latches[j] (its fields follow: "latches[0].state") */
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

/* Runs latches[0 .. n_latches) (see "Drift latches": reset, detection,
 * scan) and then steps[0 .. n_steps) on every row as axs_apply_ does; a step
 * whose gate is a latch's gate reads what that latch has just written.
 * 0 <= n_latches <= AXS_MAX_LATCHES, 0 <= n_steps <= AXS_MAX_STEPS, and at
 * least one of the two. mask and rec as in axs_apply_ (the mask also tells
 * the latches which tokens are real). */
axs_status axs_latch_apply_(axs_rows h, const axs_latch *latches, int n_latches,
                            const axs_step *steps, int n_steps, axs_bin mask, axs_record rec,
                            const axs_names *names, int n_threads);

/* ---- CUDA (declared always, defined only in builds with CUDA) ------------
 * The same five contracts on device pointers: h, directions, parameters,
 * masks, outputs and the record offset all live on the current device;
 * stream is a cudaStream_t (NULL for the default stream). The calls only
 * enqueue work: they never synchronise, never allocate, and read no device
 * memory on the host, so they can be captured in a CUDA graph. Consequently
 * the checks that need device data (unit norm of a direction, per-row
 * lo <= hi, mask values 0 / 1, latch parameters) are the caller's job; the
 * kernels apply the rules above to whatever they are given (a per-row
 * lo > hi takes hi, a non-zero mask byte runs the row). AXS_EDEVICE reports
 * a launch failure (its message names the CUDA error). A latch's scan runs
 * one thread per sequence through its tokens in order. */
axs_status axs_project_cuda(axs_rows h, const float *u, axs_bin mask, axs_fout out, void *stream);

axs_status axs_clamp_cuda_(axs_rows h, const float *u, axs_fin lo, axs_fin hi, axs_bin mask,
                           axs_fout p_before, axs_fout p_after, axs_bout changed, void *stream);

axs_status axs_set_projection_cuda_(axs_rows h, const float *u, axs_fin target, axs_bin mask,
                                    axs_fout p_before, void *stream);

axs_status axs_steer_cuda_(axs_rows h, const float *w, axs_fin alpha, axs_bin mask, void *stream);

axs_status axs_apply_cuda_(axs_rows h, const axs_step *steps, int n_steps, axs_bin mask,
                           axs_record rec, const axs_names *names, void *stream);

axs_status axs_latch_apply_cuda_(axs_rows h, const axs_latch *latches, int n_latches,
                                 const axs_step *steps, int n_steps, axs_bin mask, axs_record rec,
                                 const axs_names *names, void *stream);

#ifdef __cplusplus
}
#endif

#endif /* AXIS_STEER_H */
