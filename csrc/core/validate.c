/*
 * validate.c - the per-thread error message and the checks every entry
 * point runs before touching data. Shared by the CPU and CUDA halves: the
 * host-side checks (axs_check_call) need no access to the data, the value
 * checks (axs_check_values) read host memory and run for CPU calls only.
 * Every size a caller gives is checked with overflow-checked arithmetic
 * before any pointer is formed from it. Nothing here computes a result.
 */
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "internal.h"

static _Thread_local char axs_error_buf[512];

const char *axs_last_error(void) {
  return axs_error_buf;
}

void axs_clear_error(void) {
  axs_error_buf[0] = '\0';
}

axs_status axs_fail(axs_status status, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(axs_error_buf, sizeof axs_error_buf, fmt, ap);
  va_end(ap);
  return status;
}

size_t axs_dtype_size(axs_dtype dtype) {
  switch (dtype) {
  case AXS_F32:
    return 4;
  case AXS_F16:
  case AXS_BF16:
    return 2;
  }
  return 0;
}

const char *axs_dtype_name(axs_dtype dtype) {
  switch (dtype) {
  case AXS_F32:
    return "float32";
  case AXS_F16:
    return "float16";
  case AXS_BF16:
    return "bfloat16";
  }
  return "unknown";
}

/* ---- names used in messages ---------------------------------------------- */

/* An argument's name as the caller gave it (or the default), with the step
 * it belongs to; turned into text only when a message needs it. */
typedef struct {
  const char *pattern;
  int k;
} axs_argname;

static axs_argname name_of(const char *given, const char *fallback, int k) {
  axs_argname n = {given != NULL ? given : fallback, k};
  return n;
}

#define AXS_NAME(names, field, fallback, k) name_of((names) ? (names)->field : NULL, fallback, k)

typedef struct {
  char text[48];
} axs_label;

/* The text of a name, its first "%d" replaced by the step index:
 * "params[%d, 0]" -> "params[2, 0]". The name is never used as a format. */
static axs_label label_of(axs_argname n) {
  axs_label l;
  const char *at = strstr(n.pattern, "%d");
  if (at == NULL)
    snprintf(l.text, sizeof l.text, "%s", n.pattern);
  else
    snprintf(l.text, sizeof l.text, "%.*s%d%s", (int)(at - n.pattern), n.pattern, n.k, at + 2);
  return l;
}

/* For messages: the text lives until the end of the full expression. */
#define TEXT(n) (label_of(n).text)

#define AXS_TRY(expr)                                                                              \
  do {                                                                                             \
    axs_status axs_try_status_ = (expr);                                                           \
    if (axs_try_status_ != AXS_OK)                                                                 \
      return axs_try_status_;                                                                      \
  } while (0)

/* ---- byte extents: overflow-checked, for the size and overlap checks ------ */

typedef struct {
  const char *lo, *hi; /* [lo, hi); lo == hi when empty */
} axs_extent;

/* The bytes spanned by n_outer x n_inner runs of row_len elements of esize
 * bytes, run (o, i) starting at element o * so + i * si of data. Counts and
 * strides are non-negative (checked before). Fails, naming the argument,
 * when the extent does not fit in PTRDIFF_MAX bytes or would wrap the
 * address space; no arithmetic here can overflow. */
static axs_status extent_of(const void *data, int64_t n_outer, int64_t n_inner, int64_t so,
                            int64_t si, int64_t row_len, size_t esize, axs_argname name,
                            axs_extent *out) {
  out->lo = out->hi = (const char *)data;
  if (data == NULL || n_outer == 0 || n_inner == 0)
    return AXS_OK;
  int64_t outer_span, inner_span, last, bytes;
  int bad = __builtin_mul_overflow(n_outer - 1, so, &outer_span) ||
            __builtin_mul_overflow(n_inner - 1, si, &inner_span) ||
            __builtin_add_overflow(outer_span, inner_span, &last) ||
            __builtin_add_overflow(last, row_len, &last) ||
            __builtin_mul_overflow(last, (int64_t)esize, &bytes) || bytes > PTRDIFF_MAX ||
            (uintptr_t)data > UINTPTR_MAX - (uintptr_t)bytes;
  if (bad)
    return axs_fail(AXS_EINVAL,
                    "%s: %lld x %lld runs of %lld elements at element strides (%lld, %lld) span "
                    "more bytes than an address space holds (expected sizes and strides whose "
                    "byte extent fits in %lld bytes)",
                    TEXT(name), (long long)n_outer, (long long)n_inner, (long long)row_len,
                    (long long)so, (long long)si, (long long)PTRDIFF_MAX);
  out->hi = out->lo + bytes;
  return AXS_OK;
}

static int extents_overlap(axs_extent x, axs_extent y) {
  return x.lo < x.hi && y.lo < y.hi && x.lo < y.hi && y.lo < x.hi;
}

/* Every output of one call, named, for the pairwise overlap check. */
typedef struct {
  axs_extent extent;
  axs_argname name;
} axs_named_extent;

typedef struct {
  axs_named_extent items[3 * AXS_MAX_STEPS + 3];
  int n;
} axs_outputs;

static void add_output(axs_outputs *outs, axs_extent e, axs_argname name) {
  if (e.lo == e.hi)
    return;
  outs->items[outs->n].extent = e;
  outs->items[outs->n].name = name;
  outs->n++;
}

/* ---- the host-side checks ------------------------------------------------- */

/* The number of rows of h, n_outer * n_inner; fails when it overflows. */
static axs_status count_rows(axs_rows h, int64_t *n_rows) {
  if (__builtin_mul_overflow(h.n_outer, h.n_inner, n_rows))
    return axs_fail(AXS_EINVAL,
                    "h: row counts (%lld, %lld) give more than %lld rows (expected "
                    "n_outer * n_inner to fit in int64)",
                    (long long)h.n_outer, (long long)h.n_inner, (long long)INT64_MAX);
  return AXS_OK;
}

static axs_status check_rows(axs_rows h, axs_extent *hx) {
  hx->lo = hx->hi = (const char *)h.data;
  if (axs_dtype_size(h.dtype) == 0)
    return axs_fail(AXS_ETYPE,
                    "h: dtype code %d is not supported (expected float32, "
                    "float16 or bfloat16)",
                    (int)h.dtype);
  if (h.n_outer < 0 || h.n_inner < 0)
    return axs_fail(AXS_EINVAL, "h: row counts (%lld, %lld) must not be negative",
                    (long long)h.n_outer, (long long)h.n_inner);
  if (h.d < 1)
    return axs_fail(AXS_EINVAL, "h: row length d = %lld (expected at least 1)", (long long)h.d);
  if (h.stride_outer < 0 || h.stride_inner < 0)
    return axs_fail(AXS_EINVAL,
                    "h: row strides (%lld, %lld) must not be negative (make "
                    "a copy with positive strides)",
                    (long long)h.stride_outer, (long long)h.stride_inner);
  int64_t n_rows;
  AXS_TRY(count_rows(h, &n_rows));
  if (n_rows == 0)
    return AXS_OK; /* no rows: nothing to read, nothing can overlap */
  if (h.data == NULL)
    return axs_fail(AXS_EINVAL, "h: data pointer is NULL");
  AXS_TRY(extent_of(h.data, h.n_outer, h.n_inner, h.stride_outer, h.stride_inner, h.d,
                    axs_dtype_size(h.dtype), name_of("h", NULL, 0), hx));
  /* rows must not overlap: sort the two row dimensions by stride. The
   * extent fits in int64, so these sums of its terms do too. */
  int64_t s1 = h.stride_inner, n1 = h.n_inner;
  int64_t s2 = h.stride_outer, n2 = h.n_outer;
  if (n1 <= 1) {
    s1 = s2;
    n1 = n2;
    n2 = 1;
  } else if (n2 > 1 && s2 < s1) {
    int64_t ts = s1, tn = n1;
    s1 = s2;
    n1 = n2;
    s2 = ts;
    n2 = tn;
  }
  if (n1 > 1 && s1 < h.d)
    return axs_fail(AXS_EINVAL,
                    "h: row stride %lld is smaller than the row length %lld, "
                    "so rows overlap (expected stride >= d)",
                    (long long)s1, (long long)h.d);
  if (n2 > 1 && s2 < (n1 - 1) * s1 + h.d)
    return axs_fail(AXS_EINVAL,
                    "h: strides (%lld, %lld) make rows overlap (expected the "
                    "larger stride to step over the whole inner dimension)",
                    (long long)h.stride_outer, (long long)h.stride_inner);
  return AXS_OK;
}

/* An output of one element per row of `rows` (h's rows, or the record's
 * columns); its extent goes to the overlap checks. */
static axs_status check_out(axs_rows rows, void *data, int64_t so, int64_t si, size_t esize,
                            axs_argname name, axs_outputs *outs) {
  if (data == NULL || rows.n_outer == 0 || rows.n_inner == 0)
    return AXS_OK;
  if (so < 0 || si < 0 || (rows.n_outer > 1 && so == 0) || (rows.n_inner > 1 && si == 0))
    return axs_fail(AXS_EINVAL,
                    "%s: output strides (%lld, %lld) would write one element "
                    "for several rows (expected one element per row)",
                    TEXT(name), (long long)so, (long long)si);
  axs_extent e;
  AXS_TRY(extent_of(data, rows.n_outer, rows.n_inner, so, si, 1, esize, name, &e));
  add_output(outs, e, name);
  return AXS_OK;
}

/* An input of one element per row of h (broadcast with zero strides). */
static axs_status check_in(axs_rows h, axs_extent hx, const void *data, int64_t so, int64_t si,
                           size_t esize, axs_argname name) {
  if (data == NULL)
    return AXS_OK;
  if (so < 0 || si < 0)
    return axs_fail(AXS_EINVAL, "%s: strides (%lld, %lld) must not be negative", TEXT(name),
                    (long long)so, (long long)si);
  axs_extent e;
  AXS_TRY(extent_of(data, h.n_outer, h.n_inner, so, si, 1, esize, name, &e));
  if (extents_overlap(hx, e))
    return axs_fail(AXS_EINVAL, "%s overlaps the memory of h (expected separate buffers)",
                    TEXT(name));
  return AXS_OK;
}

static axs_status check_step(axs_rows h, axs_extent hx, const axs_step *s, int k,
                             const axs_names *names, axs_outputs *outs) {
  axs_argname dir = AXS_NAME(names, dir, "dirs[%d]", k);
  axs_argname a = AXS_NAME(names, a, "a[%d]", k);
  axs_argname b = AXS_NAME(names, b, "b[%d]", k);
  if ((int)s->op < AXS_PROJECT || (int)s->op > AXS_STEER)
    return axs_fail(AXS_ETYPE,
                    "steps[%d].op = %d is not an operation (expected 0 "
                    "project, 1 clamp, 2 set, 3 steer)",
                    k, (int)s->op);
  if (s->dir == NULL)
    return axs_fail(AXS_EINVAL, "%s: direction pointer is NULL", TEXT(dir));
  if ((s->op == AXS_SET || s->op == AXS_STEER) && s->a.data == NULL)
    return axs_fail(AXS_EINVAL, "%s: %s needs a value (got none)", TEXT(a),
                    s->op == AXS_SET ? "set projection" : "steer");
  axs_extent de;
  AXS_TRY(extent_of(s->dir, 1, 1, 0, 0, h.d, sizeof(float), dir, &de));
  if (extents_overlap(hx, de))
    return axs_fail(AXS_EINVAL, "%s overlaps the memory of h (expected separate buffers)",
                    TEXT(dir));
  AXS_TRY(check_in(h, hx, s->a.data, s->a.stride_outer, s->a.stride_inner, sizeof(float), a));
  AXS_TRY(check_in(h, hx, s->b.data, s->b.stride_outer, s->b.stride_inner, sizeof(float), b));
  AXS_TRY(check_out(h, s->p_before.data, s->p_before.stride_outer, s->p_before.stride_inner,
                    sizeof(float), AXS_NAME(names, p_before, "p_before[%d]", k), outs));
  AXS_TRY(check_out(h, s->p_after.data, s->p_after.stride_outer, s->p_after.stride_inner,
                    sizeof(float), AXS_NAME(names, p_after, "p_after[%d]", k), outs));
  AXS_TRY(check_out(h, s->changed.data, s->changed.stride_outer, s->changed.stride_inner, 1,
                    AXS_NAME(names, changed, "changed[%d]", k), outs));
  return AXS_OK;
}

axs_status axs_check_call(axs_rows h, const axs_step *steps, int n_steps, axs_bin mask,
                          axs_record rec, const axs_names *names) {
  axs_extent hx;
  AXS_TRY(check_rows(h, &hx));
  if (steps == NULL || n_steps < 1 || n_steps > AXS_MAX_STEPS)
    return axs_fail(AXS_EINVAL,
                    "steps: %d steps given (expected 1 to %d, and a non-NULL "
                    "array)",
                    n_steps, AXS_MAX_STEPS);
  axs_outputs outs;
  outs.n = 0;
  for (int k = 0; k < n_steps; k++)
    AXS_TRY(check_step(h, hx, &steps[k], k, names, &outs));
  AXS_TRY(check_in(h, hx, mask.data, mask.stride_outer, mask.stride_inner, 1,
                   AXS_NAME(names, mask, "mask", 0)));
  /* with an offset the record outputs have `capacity` columns */
  axs_rows rec_rows = h;
  if (rec.offset != NULL) {
    axs_argname off = AXS_NAME(names, offset, "record offset", 0);
    if (rec.capacity < 0)
      return axs_fail(AXS_EINVAL, "%s: record capacity = %lld (expected >= 0 columns)", TEXT(off),
                      (long long)rec.capacity);
    rec_rows.n_inner = rec.capacity;
    axs_extent oe;
    AXS_TRY(extent_of(rec.offset, 1, 1, 0, 0, 1, sizeof(int64_t), off, &oe));
    if (extents_overlap(hx, oe))
      return axs_fail(AXS_EINVAL, "%s overlaps the memory of h (expected separate buffers)",
                      TEXT(off));
  }
  if (h.n_outer * h.n_inner > 0) { /* no rows: no record is written */
    AXS_TRY(check_out(rec_rows, rec.p_in.data, rec.p_in.stride_outer, rec.p_in.stride_inner,
                      sizeof(float), AXS_NAME(names, p_in, "p_in", 0), &outs));
    AXS_TRY(check_out(rec_rows, rec.p_out.data, rec.p_out.stride_outer, rec.p_out.stride_inner,
                      sizeof(float), AXS_NAME(names, p_out, "p_out", 0), &outs));
    AXS_TRY(check_out(rec_rows, rec.fired.data, rec.fired.stride_outer, rec.fired.stride_inner, 1,
                      AXS_NAME(names, fired, "fired", 0), &outs));
  }
  for (int i = 0; i < outs.n; i++) {
    if (extents_overlap(hx, outs.items[i].extent))
      return axs_fail(AXS_EINVAL, "%s overlaps the memory of h (expected separate buffers)",
                      TEXT(outs.items[i].name));
    for (int j = i + 1; j < outs.n; j++)
      if (extents_overlap(outs.items[i].extent, outs.items[j].extent))
        return axs_fail(AXS_EINVAL, "outputs %s and %s overlap (expected separate buffers)",
                        TEXT(outs.items[i].name), TEXT(outs.items[j].name));
  }
  return AXS_OK;
}

/* ---- the value checks (host memory) -------------------------------------- */

static axs_status check_direction(const float *dir, int64_t d, int unit, axs_argname name) {
  float ss = axs_sumsq_f32(dir, d);
  if (!isfinite(ss)) {
    for (int64_t j = 0; j < d; j++)
      if (!isfinite(dir[j]))
        return axs_fail(AXS_EINVAL, "%s[%lld] = %g (expected finite values in a direction)",
                        TEXT(name), (long long)j, (double)dir[j]);
    if (unit)
      return axs_fail(AXS_EINVAL,
                      "%s: the squared norm overflows float32 (expected a "
                      "unit vector)",
                      TEXT(name));
    return AXS_OK; /* a large but finite steering vector */
  }
  double norm = sqrt((double)ss);
  if (unit && fabs(norm - 1.0) > (double)AXS_UNIT_TOL)
    return axs_fail(AXS_EINVAL,
                    "%s has norm %.6g (expected a unit vector: divide it by "
                    "its norm%s)",
                    TEXT(name), norm, norm == 0.0 ? "; a zero vector has no direction" : "");
  return AXS_OK;
}

static axs_status check_bounds(axs_rows h, const axs_step *s, axs_bin mask, axs_argname a,
                               axs_argname b) {
  if (s->a.data == NULL || s->b.data == NULL || h.n_outer * h.n_inner == 0)
    return AXS_OK;
  int64_t no = (s->a.stride_outer | s->b.stride_outer) ? h.n_outer : 1;
  int64_t ni = (s->a.stride_inner | s->b.stride_inner) ? h.n_inner : 1;
  for (int64_t o = 0; o < no; o++)
    for (int64_t i = 0; i < ni; i++) {
      if (mask.data != NULL && no == h.n_outer && ni == h.n_inner &&
          !mask.data[o * mask.stride_outer + i * mask.stride_inner])
        continue;
      float lo = s->a.data[o * s->a.stride_outer + i * s->a.stride_inner];
      float hi = s->b.data[o * s->b.stride_outer + i * s->b.stride_inner];
      if (lo > hi && no * ni == 1)
        return axs_fail(AXS_EINVAL,
                        "%s = %g > %s = %g (expected lo <= hi; use -inf or "
                        "+inf for an open side)",
                        TEXT(a), (double)lo, TEXT(b), (double)hi);
      if (lo > hi)
        return axs_fail(AXS_EINVAL,
                        "%s = %g > %s = %g at row (%lld, %lld) (expected "
                        "lo <= hi; use -inf or +inf for an open side)",
                        TEXT(a), (double)lo, TEXT(b), (double)hi, (long long)o, (long long)i);
    }
  return AXS_OK;
}

/* Mask bytes are 0 or 1 (a bool array, or uint8 0/1): any other byte would
 * be a value read as "true" that no caller meant. */
static axs_status check_mask(axs_rows h, axs_bin mask, axs_argname name) {
  if (mask.data == NULL)
    return AXS_OK;
  int64_t no = mask.stride_outer ? h.n_outer : (h.n_outer > 0);
  int64_t ni = mask.stride_inner ? h.n_inner : (h.n_inner > 0);
  for (int64_t o = 0; o < no; o++)
    for (int64_t i = 0; i < ni; i++) {
      uint8_t m = mask.data[o * mask.stride_outer + i * mask.stride_inner];
      if (m > 1)
        return axs_fail(AXS_EINVAL,
                        "%s = %d at row (%lld, %lld) (expected 0 or 1: a bool mask, or uint8 "
                        "holding 0 = skip the row and 1 = run it)",
                        TEXT(name), (int)m, (long long)o, (long long)i);
    }
  return AXS_OK;
}

axs_status axs_check_values(axs_rows h, const axs_step *steps, int n_steps, axs_bin mask,
                            const axs_names *names) {
  if (h.n_outer * h.n_inner > 0)
    AXS_TRY(check_mask(h, mask, AXS_NAME(names, mask, "mask", 0)));
  for (int k = 0; k < n_steps; k++) {
    const axs_step *s = &steps[k];
    AXS_TRY(check_direction(s->dir, h.d, s->op != AXS_STEER, AXS_NAME(names, dir, "dirs[%d]", k)));
    if (s->op == AXS_CLAMP)
      AXS_TRY(
          check_bounds(h, s, mask, AXS_NAME(names, a, "a[%d]", k), AXS_NAME(names, b, "b[%d]", k)));
  }
  return AXS_OK;
}
