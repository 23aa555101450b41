/*
 * cpu.c - the CPU kernels: one pass over each row runs a short program of
 * project / clamp / set / steer steps (axs_apply_), and the public
 * single-operation entry points run the one-step programs of programs.c.
 * axs_latch_apply_ runs its latches first: the detection projections as a
 * one-step program, then the state machine of latch.h over each sequence.
 *
 * The row loops are plain C written for the compiler to vectorise: a dot
 * product keeps AXS_LANES independent float32 partial sums combined in one
 * fixed order, so the result does not depend on the vector width the
 * compiler picks or on the thread count. On x86-64 with GCC or clang each
 * row primitive is also compiled for AVX2 and picked at load time
 * (target_clones); the arithmetic, and so every bit of the result, is the
 * same in both versions (no FMA contraction: the build uses
 * -ffp-contract=off). OpenMP splits rows, never a row, and only above
 * AXS_PARALLEL_MIN_ELEMS elements.
 *
 * Deliberately not here: argument checks (validate.c), any allocation, any
 * knowledge of the caller's framework.
 */
#include <float.h>
#include <math.h>
#include <stddef.h>

#include "convert.h"
#include "internal.h"
#include "latch.h"

#ifdef _OPENMP
#include <omp.h>
#endif

#define AXS_LANES 16

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(AXS_NO_CLONES)
#define AXS_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define AXS_CLONES
#endif

int axs_default_threads(void) {
#ifdef _OPENMP
  return omp_get_max_threads();
#else
  return 1;
#endif
}

/* ---- row primitives -------------------------------------------------------
 * dot_*:        returns <row, u>
 * axpy_dot_*:   row <- round(row + c * w); returns <new row, v> when v is not
 *               NULL (0 otherwise), reading the values just stored. ch is
 *               c / 2, computed by the caller where c itself may overflow
 *               (t / 2 - p / 2): an element whose c * w[j] is not finite is
 *               computed as (x + ch w[j]) + ch w[j] (axis_steer.h,
 *               "Overflow"); the others as x + c w[j], bit for bit. Clamp
 *               and set call them on finite rows only; a steered row may
 *               hold a NaN, which stays a NaN. */

/* x + c w, without an intermediate overflow where the result fits. */
static inline float axpy1(float x, float c, float ch, float w) {
  float prod = c * w;
  float split = (x + ch * w) + ch * w;
  return fabsf(prod) <= FLT_MAX ? x + prod : split;
}

static inline float sum_lanes(const float *acc, float tail) {
  float s8[8], s4[4];
  for (int k = 0; k < 8; k++)
    s8[k] = acc[k] + acc[k + 8];
  for (int k = 0; k < 4; k++)
    s4[k] = s8[k] + s8[k + 4];
  return ((s4[0] + s4[2]) + (s4[1] + s4[3])) + tail;
}

AXS_CLONES static float dot_f32(const void *row, const float *u, int64_t d) {
  const float *x = (const float *)row;
  float acc[AXS_LANES] = {0};
  int64_t j = 0;
  for (; j + AXS_LANES <= d; j += AXS_LANES)
    for (int k = 0; k < AXS_LANES; k++)
      acc[k] += x[j + k] * u[j + k];
  float tail = 0.0f;
  for (; j < d; j++)
    tail += x[j] * u[j];
  return sum_lanes(acc, tail);
}

AXS_CLONES static float dot_f16(const void *row, const float *u, int64_t d) {
  const uint16_t *x = (const uint16_t *)row;
  float acc[AXS_LANES] = {0};
  int64_t j = 0;
  for (; j + AXS_LANES <= d; j += AXS_LANES)
    for (int k = 0; k < AXS_LANES; k++)
      acc[k] += axs_f16_to_f32(x[j + k]) * u[j + k];
  float tail = 0.0f;
  for (; j < d; j++)
    tail += axs_f16_to_f32(x[j]) * u[j];
  return sum_lanes(acc, tail);
}

AXS_CLONES static float dot_bf16(const void *row, const float *u, int64_t d) {
  const uint16_t *x = (const uint16_t *)row;
  float acc[AXS_LANES] = {0};
  int64_t j = 0;
  for (; j + AXS_LANES <= d; j += AXS_LANES)
    for (int k = 0; k < AXS_LANES; k++)
      acc[k] += axs_bf16_to_f32(x[j + k]) * u[j + k];
  float tail = 0.0f;
  for (; j < d; j++)
    tail += axs_bf16_to_f32(x[j]) * u[j];
  return sum_lanes(acc, tail);
}

/* The update loops keep the same lane structure as the dot products, so the
 * dot of the stored row (when v is given) is the one dot_* would compute. */
AXS_CLONES static float axpy_dot_f32(void *row, const float *w, float c, float ch, const float *v,
                                     int64_t d) {
  float *x = (float *)row;
  if (v == NULL) {
    for (int64_t j = 0; j < d; j++)
      x[j] = axpy1(x[j], c, ch, w[j]);
    return 0.0f;
  }
  float acc[AXS_LANES] = {0};
  int64_t j = 0;
  for (; j + AXS_LANES <= d; j += AXS_LANES)
    for (int k = 0; k < AXS_LANES; k++) {
      float y = axpy1(x[j + k], c, ch, w[j + k]);
      x[j + k] = y;
      acc[k] += y * v[j + k];
    }
  float tail = 0.0f;
  for (; j < d; j++) {
    float y = axpy1(x[j], c, ch, w[j]);
    x[j] = y;
    tail += y * v[j];
  }
  return sum_lanes(acc, tail);
}

AXS_CLONES static float axpy_dot_f16(void *row, const float *w, float c, float ch, const float *v,
                                     int64_t d) {
  uint16_t *x = (uint16_t *)row;
  if (v == NULL) {
    for (int64_t j = 0; j < d; j++)
      x[j] = axs_f32_to_f16(axpy1(axs_f16_to_f32(x[j]), c, ch, w[j]));
    return 0.0f;
  }
  float acc[AXS_LANES] = {0};
  int64_t j = 0;
  for (; j + AXS_LANES <= d; j += AXS_LANES)
    for (int k = 0; k < AXS_LANES; k++) {
      uint16_t y = axs_f32_to_f16(axpy1(axs_f16_to_f32(x[j + k]), c, ch, w[j + k]));
      x[j + k] = y;
      acc[k] += axs_f16_to_f32(y) * v[j + k];
    }
  float tail = 0.0f;
  for (; j < d; j++) {
    uint16_t y = axs_f32_to_f16(axpy1(axs_f16_to_f32(x[j]), c, ch, w[j]));
    x[j] = y;
    tail += axs_f16_to_f32(y) * v[j];
  }
  return sum_lanes(acc, tail);
}

AXS_CLONES static float axpy_dot_bf16(void *row, const float *w, float c, float ch, const float *v,
                                      int64_t d) {
  uint16_t *x = (uint16_t *)row;
  if (v == NULL) {
    for (int64_t j = 0; j < d; j++)
      x[j] = axs_f32_to_bf16_not_nan(axpy1(axs_bf16_to_f32(x[j]), c, ch, w[j]));
    return 0.0f;
  }
  float acc[AXS_LANES] = {0};
  int64_t j = 0;
  for (; j + AXS_LANES <= d; j += AXS_LANES)
    for (int k = 0; k < AXS_LANES; k++) {
      uint16_t y = axs_f32_to_bf16_not_nan(axpy1(axs_bf16_to_f32(x[j + k]), c, ch, w[j + k]));
      x[j + k] = y;
      acc[k] += axs_bf16_to_f32(y) * v[j + k];
    }
  float tail = 0.0f;
  for (; j < d; j++) {
    uint16_t y = axs_f32_to_bf16_not_nan(axpy1(axs_bf16_to_f32(x[j]), c, ch, w[j]));
    x[j] = y;
    tail += axs_bf16_to_f32(y) * v[j];
  }
  return sum_lanes(acc, tail);
}

/* Sum of squares of a float32 vector, in the lane order of dot_f32. */
float axs_sumsq_f32(const float *v, int64_t d) {
  return dot_f32(v, v, d);
}

typedef float (*axs_dot_fn)(const void *, const float *, int64_t);
typedef float (*axs_axpy_dot_fn)(void *, const float *, float, float, const float *, int64_t);

/* ---- the program over one row -------------------------------------------- */

typedef struct {
  axs_rows h;
  const axs_step *steps;
  int n_steps;
  axs_bin mask;
  axs_record rec;
  axs_dot_fn dot;
  axs_axpy_dot_fn axpy_dot;
  size_t esize;
} axs_program;

static inline float fin_at(axs_fin v, int64_t o, int64_t i) {
  return v.data[o * v.stride_outer + i * v.stride_inner];
}

static inline void fout_set(axs_fout v, int64_t o, int64_t i, float x) {
  if (v.data != NULL)
    v.data[o * v.stride_outer + i * v.stride_inner] = x;
}

static inline void bout_set(axs_bout v, int64_t o, int64_t i, uint8_t x) {
  if (v.data != NULL)
    v.data[o * v.stride_outer + i * v.stride_inner] = x;
}

/* The record column of inner row i, or -1 when it falls outside the record
 * (only possible with an offset). */
static inline int64_t record_column(const axs_record *rec, int64_t i) {
  if (rec->offset == NULL)
    return i;
  /* col = offset + i in [0, capacity), tested without forming offset + i
   * (any int64 offset is valid; 0 <= i and 0 <= capacity) */
  int64_t off = *rec->offset;
  return (off >= -i && off < rec->capacity - i) ? off + i : -1;
}

static void skip_row(const axs_program *pg, int64_t o, int64_t i) {
  for (int k = 0; k < pg->n_steps; k++) {
    fout_set(pg->steps[k].p_before, o, i, NAN);
    fout_set(pg->steps[k].p_after, o, i, NAN);
    bout_set(pg->steps[k].changed, o, i, 0);
  }
  int64_t col = record_column(&pg->rec, i);
  if (col < 0)
    return;
  fout_set(pg->rec.p_in, o, col, NAN);
  fout_set(pg->rec.p_out, o, col, NAN);
  bout_set(pg->rec.fired, o, col, 0);
}

/* Whether step s runs on row (o, i): no gate, or a nonzero gate byte at the
 * row's gate column (axs_gate). */
static inline int gate_open(const axs_gate *g, int64_t o, int64_t i) {
  if (g->data == NULL)
    return 1;
  int64_t c = i;
  if (g->offset != NULL) {
    int64_t off = *g->offset;
    if (!(off >= -i && off < g->capacity - i))
      return 0;
    c = off + i;
  }
  return g->data[o * g->stride_outer + c * g->stride_inner] != 0;
}

/* Where step s moves the projection p, or p itself when it does not. */
static inline float step_target(const axs_step *s, float p, int64_t o, int64_t i) {
  if (s->op == AXS_CLAMP) {
    float t = p;
    if (s->a.data != NULL && t < fin_at(s->a, o, i))
      t = fin_at(s->a, o, i);
    if (s->b.data != NULL && t > fin_at(s->b, o, i))
      t = fin_at(s->b, o, i);
    return t;
  }
  if (s->op == AXS_SET) {
    float t = fin_at(s->a, o, i);
    return isfinite(t) ? t : p;
  }
  return p;
}

static void run_row(const axs_program *pg, int64_t o, int64_t i) {
  if (pg->mask.data != NULL &&
      !pg->mask.data[o * pg->mask.stride_outer + i * pg->mask.stride_inner]) {
    skip_row(pg, o, i);
    return;
  }
  char *row =
      (char *)pg->h.data + (size_t)(o * pg->h.stride_outer + i * pg->h.stride_inner) * pg->esize;
  const int64_t d = pg->h.d;
  const float *dir0 = pg->steps[0].dir;
  int want_rec = pg->rec.p_in.data != NULL || pg->rec.p_out.data != NULL;
  float p0 = 0.0f; /* <row, dir0>, valid while p0_ok */
  int p0_ok = 0;
  int fired = 0;
  if (want_rec && pg->steps[0].op == AXS_STEER) {
    p0 = pg->dot(row, dir0, d);
    p0_ok = 1;
  }
  float p_in = p0;

  for (int k = 0; k < pg->n_steps; k++) {
    const axs_step *s = &pg->steps[k];
    uint8_t wrote = 0;
    if (!gate_open(&s->gate, o, i)) {
      /* skipped: the row's projection at this point, where someone reads it */
      int first = k == 0 && want_rec && s->op != AXS_STEER;
      if (s->p_before.data != NULL || s->p_after.data != NULL || first) {
        float p = (p0_ok && s->dir == dir0) ? p0 : pg->dot(row, s->dir, d);
        if (first) {
          p_in = p;
          p0 = p;
          p0_ok = 1;
        }
        fout_set(s->p_before, o, i, p);
        fout_set(s->p_after, o, i, p);
      }
    } else if (s->op == AXS_STEER) {
      float alpha = fin_at(s->a, o, i);
      /* projections on w are computed only when asked for: monitoring
       * records dir0 instead */
      if (s->p_before.data != NULL)
        fout_set(s->p_before, o, i, pg->dot(row, s->dir, d));
      if (alpha != 0.0f && isfinite(alpha)) {
        pg->axpy_dot(row, s->dir, alpha, 0.5f * alpha, NULL, d);
        wrote = 1;
        p0_ok = 0;
      }
      if (s->p_after.data != NULL)
        fout_set(s->p_after, o, i, pg->dot(row, s->dir, d));
    } else {
      float p = (p0_ok && s->dir == dir0) ? p0 : pg->dot(row, s->dir, d);
      if (k == 0) {
        p_in = p;
        p0 = p;
        p0_ok = 1;
      }
      float pa = p;
      float t = step_target(s, p, o, i);
      if (s->op != AXS_PROJECT && isfinite(p) && isfinite(t) && t != p) {
        /* the projection of the stored row is computed in the same pass, and
         * only when someone reads it */
        int need_pa = s->p_after.data != NULL || (s->dir == dir0 && pg->rec.p_out.data != NULL);
        pa = pg->axpy_dot(row, s->dir, t - p, 0.5f * t - 0.5f * p, need_pa ? s->dir : NULL, d);
        wrote = 1;
        if (s->op == AXS_CLAMP)
          fired = 1;
        p0 = pa;
        p0_ok = need_pa && s->dir == dir0;
      }
      fout_set(s->p_before, o, i, p);
      fout_set(s->p_after, o, i, pa);
    }
    bout_set(s->changed, o, i, wrote);
  }
  int64_t col = record_column(&pg->rec, i);
  if (col < 0)
    return;
  if (pg->rec.p_in.data != NULL)
    fout_set(pg->rec.p_in, o, col, p_in);
  if (pg->rec.p_out.data != NULL)
    fout_set(pg->rec.p_out, o, col, p0_ok ? p0 : pg->dot(row, dir0, d));
  bout_set(pg->rec.fired, o, col, (uint8_t)fired);
}

/* Runs steps[0 .. n_steps) on every row; the call is checked. */
static void run_rows(axs_rows h, const axs_step *steps, int n_steps, axs_bin mask, axs_record rec,
                     int n_threads) {
  axs_program pg;
  pg.h = h;
  pg.steps = steps;
  pg.n_steps = n_steps;
  pg.mask = mask;
  pg.rec = rec;
  pg.esize = axs_dtype_size(h.dtype);
  switch (h.dtype) {
  case AXS_F32:
    pg.dot = dot_f32;
    pg.axpy_dot = axpy_dot_f32;
    break;
  case AXS_F16:
    pg.dot = dot_f16;
    pg.axpy_dot = axpy_dot_f16;
    break;
  default:
    pg.dot = dot_bf16;
    pg.axpy_dot = axpy_dot_bf16;
    break;
  }
  const int64_t n_rows = h.n_outer * h.n_inner;
  int parallel =
      n_threads > 1 && n_rows > 1 && (double)n_rows * (double)h.d >= AXS_PARALLEL_MIN_ELEMS;
  if (!parallel) {
    for (int64_t o = 0; o < h.n_outer; o++)
      for (int64_t i = 0; i < h.n_inner; i++)
        run_row(&pg, o, i);
    return;
  }
#ifdef _OPENMP
#pragma omp parallel for schedule(static) num_threads(n_threads)
#endif
  for (int64_t r = 0; r < n_rows; r++)
    run_row(&pg, r / h.n_inner, r % h.n_inner);
}

/* The detection projection of row r of h into the latch's p (NaN on
 * padding); columns outside the latch's are left alone. */
static inline void latch_project_row(axs_rows h, const axs_latch *lt, axs_bin mask, axs_dot_fn dot,
                                     int64_t r) {
  const int64_t off = *lt->offset, o = r / h.n_inner, i = r % h.n_inner;
  if (!(off >= -i && off < lt->capacity - i))
    return;
  float *out = &lt->p[o * lt->p_stride + off + i];
  if (mask.data != NULL && !mask.data[o * mask.stride_outer + i * mask.stride_inner]) {
    *out = NAN;
    return;
  }
  const size_t at = (size_t)(o * h.stride_outer + i * h.stride_inner) * axs_dtype_size(h.dtype);
  *out = dot((const char *)h.data + at, lt->dir, h.d);
}

/* The detection projections of a latch, p[o][*offset + i] = <h[o][i], dir>
 * (what a PROJECT step recorded at the latch's columns gives, without
 * building one). */
static void latch_projections(axs_rows h, const axs_latch *lt, axs_bin mask, axs_dot_fn dot,
                              int n_threads) {
  const int64_t n_rows = h.n_outer * h.n_inner;
  if (n_threads <= 1 || n_rows <= 1 || (double)n_rows * (double)h.d < AXS_PARALLEL_MIN_ELEMS) {
    for (int64_t r = 0; r < n_rows; r++)
      latch_project_row(h, lt, mask, dot, r);
    return;
  }
#ifdef _OPENMP
#pragma omp parallel for schedule(static) num_threads(n_threads)
#endif
  for (int64_t r = 0; r < n_rows; r++)
    latch_project_row(h, lt, mask, dot, r);
}

/* A latch on every sequence of h: its detection projections into p, then
 * the scan of latch.h. Sequences are independent; the scan is a few
 * operations per token, so it is split over threads only for many tokens. */
static void run_latch(axs_rows h, const axs_latch *lt, axs_bin mask, int n_threads) {
  if (lt->dir != NULL)
    latch_projections(h, lt, mask,
                      h.dtype == AXS_F32   ? dot_f32
                      : h.dtype == AXS_F16 ? dot_f16
                                           : dot_bf16,
                      n_threads);
  int parallel = n_threads > 1 && h.n_outer > 1 &&
                 (double)h.n_outer * (double)h.n_inner >= AXS_PARALLEL_MIN_ELEMS / 16;
  if (!parallel) {
    for (int64_t o = 0; o < h.n_outer; o++)
      axs_latch_scan(lt, mask, h.n_inner, o);
    return;
  }
#ifdef _OPENMP
#pragma omp parallel for schedule(static) num_threads(n_threads)
#endif
  for (int64_t o = 0; o < h.n_outer; o++)
    axs_latch_scan(lt, mask, h.n_inner, o);
}

/* ---- entry points ---------------------------------------------------------- */

axs_status axs_latch_apply_(axs_rows h, const axs_latch *latches, int n_latches,
                            const axs_step *steps, int n_steps, axs_bin mask, axs_record rec,
                            const axs_names *names, int n_threads) {
  axs_clear_error();
  axs_status st = axs_check_call(h, latches, n_latches, steps, n_steps, mask, rec, names);
  if (st != AXS_OK)
    return st;
  st = axs_check_values(h, latches, n_latches, steps, n_steps, mask, names);
  if (st != AXS_OK)
    return st;
  if (n_threads <= 0)
    n_threads = axs_default_threads();
  for (int j = 0; j < n_latches; j++)
    run_latch(h, &latches[j], mask, n_threads);
  if (n_steps > 0)
    run_rows(h, steps, n_steps, mask, rec, n_threads);
  return AXS_OK;
}

axs_status axs_apply_(axs_rows h, const axs_step *steps, int n_steps, axs_bin mask, axs_record rec,
                      const axs_names *names, int n_threads) {
  return axs_latch_apply_(h, NULL, 0, steps, n_steps, mask, rec, names, n_threads);
}

/* The single operations: the one-step programs of programs.c. */

axs_status axs_project(axs_rows h, const float *u, axs_bin mask, axs_fout out, int n_threads) {
  axs_one_step s = axs_project_program(u, out);
  return axs_apply_(h, &s.step, 1, mask, axs_no_record, &s.names, n_threads);
}

axs_status axs_clamp_(axs_rows h, const float *u, axs_fin lo, axs_fin hi, axs_bin mask,
                      axs_fout p_before, axs_fout p_after, axs_bout changed, int n_threads) {
  axs_one_step s = axs_clamp_program(u, lo, hi, p_before, p_after, changed);
  return axs_apply_(h, &s.step, 1, mask, axs_no_record, &s.names, n_threads);
}

axs_status axs_set_projection_(axs_rows h, const float *u, axs_fin target, axs_bin mask,
                               axs_fout p_before, int n_threads) {
  axs_one_step s = axs_set_projection_program(u, target, p_before);
  return axs_apply_(h, &s.step, 1, mask, axs_no_record, &s.names, n_threads);
}

axs_status axs_steer_(axs_rows h, const float *w, axs_fin alpha, axs_bin mask, int n_threads) {
  axs_one_step s = axs_steer_program(w, alpha);
  return axs_apply_(h, &s.step, 1, mask, axs_no_record, &s.names, n_threads);
}
