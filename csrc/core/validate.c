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
  axs_named_extent items[3 * AXS_MAX_STEPS + 3 + 4 * AXS_MAX_LATCHES];
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

/* A step's gate: one byte per row of h, or per record-like column with an
 * offset. It is read only; it may be a latch's gate (written before the
 * steps run), but not h. */
static axs_status check_gate(axs_rows h, axs_extent hx, axs_gate g, axs_argname name) {
  if (g.data == NULL)
    return AXS_OK;
  if (g.stride_outer < 0 || g.stride_inner < 0)
    return axs_fail(AXS_EINVAL, "%s: strides (%lld, %lld) must not be negative", TEXT(name),
                    (long long)g.stride_outer, (long long)g.stride_inner);
  int64_t cols = h.n_inner;
  if (g.offset != NULL) {
    if (g.capacity < 0)
      return axs_fail(AXS_EINVAL, "%s: capacity = %lld (expected >= 0 columns)", TEXT(name),
                      (long long)g.capacity);
    axs_extent oe;
    AXS_TRY(extent_of(g.offset, 1, 1, 0, 0, 1, sizeof(int64_t), name, &oe));
    if (extents_overlap(hx, oe))
      return axs_fail(AXS_EINVAL, "%s: its offset overlaps the memory of h", TEXT(name));
    cols = g.capacity;
  }
  axs_extent e;
  AXS_TRY(extent_of(g.data, h.n_outer, cols, g.stride_outer, g.stride_inner, 1, 1, name, &e));
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
  return check_gate(h, hx, s->gate, AXS_NAME(names, gate, "gate[%d]", k));
}

/* ---- latches ------------------------------------------------------------- */

/* "latches[j].field" (or the caller's name for latches, with the field). */
typedef struct {
  char text[48];
} axs_field_name;

/* field is at most 6 characters ("params"); the name is cut to 40 */
static axs_field_name field_name(const axs_names *names, int j, const char *field) {
  axs_field_name f;
  snprintf(f.text, sizeof f.text, "%.40s.%.6s", TEXT(AXS_NAME(names, latch, "latches[%d]", j)),
           field);
  return f;
}

/* The name of a latch's field, pattern "latches[%d].field", for messages
 * formed only on failure: the pattern itself when the caller named no
 * latches (no formatting on the way of a valid call), else the caller's
 * name with the field, formatted into buf. */
static axs_argname field_arg(const axs_names *names, int j, const char *pattern,
                             axs_field_name *buf) {
  if (names == NULL || names->latch == NULL)
    return name_of(pattern, NULL, j);
  *buf = field_name(names, j, strchr(pattern, '.') + 1);
  return name_of(buf->text, NULL, 0);
}

/* One per-sequence array of latch j (its field `pattern`): n_outer rows of
 * `len` elements at row stride `stride`, not overlapping h; it goes to the
 * overlap checks of the outputs. */
static axs_status check_latch_array(axs_rows h, axs_extent hx, const void *data, int64_t stride,
                                    int64_t len, size_t esize, const axs_names *names, int j,
                                    const char *pattern, axs_outputs *outs) {
  axs_field_name buf;
  const axs_argname n = field_arg(names, j, pattern, &buf);
  if (data == NULL)
    return axs_fail(AXS_EINVAL, "%s: pointer is NULL (expected an array)", TEXT(n));
  if (stride < 0 || (h.n_outer > 1 && stride < len))
    return axs_fail(AXS_EINVAL,
                    "%s: row stride %lld for rows of %lld elements (expected a stride >= the row "
                    "length, so that sequences do not share elements)",
                    TEXT(n), (long long)stride, (long long)len);
  axs_extent e;
  AXS_TRY(extent_of(data, h.n_outer, 1, stride, 0, len, esize, n, &e));
  if (extents_overlap(hx, e))
    return axs_fail(AXS_EINVAL, "%s overlaps the memory of h (expected separate buffers)", TEXT(n));
  /* the overlap message is formed later: a name that outlives this call */
  add_output(
      outs, e,
      name_of(names != NULL && names->latch != NULL ? "an array of a latch" : pattern, NULL, j));
  return AXS_OK;
}

/* A latch's direction, parameters or offset: `len` elements, not in h. */
static axs_status check_latch_input(axs_extent hx, const void *data, int64_t len, size_t esize,
                                    const axs_names *names, int j, const char *pattern) {
  axs_field_name buf;
  const axs_argname n = field_arg(names, j, pattern, &buf);
  if (data == NULL)
    return axs_fail(AXS_EINVAL, "%s: pointer is NULL", TEXT(n));
  axs_extent e;
  AXS_TRY(extent_of(data, 1, 1, 0, 0, len, esize, n, &e));
  if (extents_overlap(hx, e))
    return axs_fail(AXS_EINVAL, "%s overlaps the memory of h (expected separate buffers)", TEXT(n));
  return AXS_OK;
}

static axs_status check_latch(axs_rows h, axs_extent hx, const axs_latch *lt, int j,
                              const axs_names *names, axs_outputs *outs) {
  AXS_TRY(check_latch_input(hx, lt->params, AXS_LATCH_NPARAMS, sizeof(float), names, j,
                            "latches[%d].params"));
  AXS_TRY(check_latch_input(hx, lt->offset, 1, sizeof(int64_t), names, j, "latches[%d].offset"));
  if (lt->capacity < 0 || lt->window < 1) {
    axs_field_name buf;
    const axs_argname n = field_arg(names, j, "latches[%d].window", &buf);
    return axs_fail(AXS_EINVAL,
                    "%s, capacity = %lld, %lld (expected a window of at least 1 token and "
                    ">= 0 columns)",
                    TEXT(n), (long long)lt->window, (long long)lt->capacity);
  }
  AXS_TRY(check_latch_array(h, hx, lt->state, lt->state_stride, AXS_LATCH_NSTATE, sizeof(int64_t),
                            names, j, "latches[%d].state", outs));
  if (lt->window > 1)
    AXS_TRY(check_latch_array(h, hx, lt->ring, lt->ring_stride, lt->window, sizeof(float), names, j,
                              "latches[%d].ring", outs));
  AXS_TRY(check_latch_array(h, hx, lt->gate, lt->gate_stride, lt->capacity, 1, names, j,
                            "latches[%d].gate", outs));
  if (lt->dir != NULL) {
    AXS_TRY(check_latch_input(hx, lt->dir, h.d, sizeof(float), names, j, "latches[%d].dir"));
    AXS_TRY(check_latch_array(h, hx, lt->p, lt->p_stride, lt->capacity, sizeof(float), names, j,
                              "latches[%d].p", outs));
  }
  return AXS_OK;
}

axs_status axs_check_call(axs_rows h, const axs_latch *latches, int n_latches,
                          const axs_step *steps, int n_steps, axs_bin mask, axs_record rec,
                          const axs_names *names) {
  axs_extent hx;
  AXS_TRY(check_rows(h, &hx));
  if (n_latches < 0 || n_latches > AXS_MAX_LATCHES || (n_latches > 0 && latches == NULL))
    return axs_fail(AXS_EINVAL,
                    "latches: %d latches given (expected 0 to %d, and a non-NULL array "
                    "when there are some)",
                    n_latches, AXS_MAX_LATCHES);
  int min_steps = n_latches > 0 ? 0 : 1;
  if ((n_steps > 0 && steps == NULL) || n_steps < min_steps || n_steps > AXS_MAX_STEPS)
    return axs_fail(AXS_EINVAL,
                    "steps: %d steps given (expected %d to %d, and a non-NULL "
                    "array)",
                    n_steps, min_steps, AXS_MAX_STEPS);
  axs_outputs outs;
  outs.n = 0;
  for (int j = 0; j < n_latches; j++)
    AXS_TRY(check_latch(h, hx, &latches[j], j, names, &outs));
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

/* A latch's parameters: whole counts >= 1, flags 0 / 1; the thresholds may
 * be anything (NaN: never). */
static axs_status check_latch_params(const axs_latch *lt, int j, const axs_names *names) {
  static const int counts[2] = {AXS_LATCH_K, AXS_LATCH_RELEASE_K};
  static const int flags[3] = {AXS_LATCH_PROMPT, AXS_LATCH_GENERATED, AXS_LATCH_START};
  for (int q = 0; q < 2; q++) {
    float v = lt->params[counts[q]];
    if (!(v >= 1.0f && v <= 4.0e18f) || v != floorf(v))
      return axs_fail(AXS_EINVAL, "%s[%d] = %g (expected a whole number of tokens >= 1)",
                      field_name(names, j, "params").text, counts[q], (double)v);
  }
  for (int q = 0; q < 3; q++) {
    float v = lt->params[flags[q]];
    if (v != 0.0f && v != 1.0f)
      return axs_fail(AXS_EINVAL, "%s[%d] = %g (expected a flag, 0 or 1)",
                      field_name(names, j, "params").text, flags[q], (double)v);
  }
  return AXS_OK;
}

axs_status axs_check_values(axs_rows h, const axs_latch *latches, int n_latches,
                            const axs_step *steps, int n_steps, axs_bin mask,
                            const axs_names *names) {
  if (h.n_outer * h.n_inner > 0)
    AXS_TRY(check_mask(h, mask, AXS_NAME(names, mask, "mask", 0)));
  for (int j = 0; j < n_latches; j++) {
    const axs_latch *lt = &latches[j];
    axs_field_name buf;
    int checked = 0; /* the same direction as a (unit) step's: checked there */
    for (int k = 0; k < n_steps && !checked; k++)
      checked = steps[k].dir == lt->dir && steps[k].op != AXS_STEER;
    if (lt->dir != NULL && !checked)
      AXS_TRY(check_direction(lt->dir, h.d, 1, field_arg(names, j, "latches[%d].dir", &buf)));
    AXS_TRY(check_latch_params(lt, j, names));
  }
  for (int k = 0; k < n_steps; k++) {
    const axs_step *s = &steps[k];
    AXS_TRY(check_direction(s->dir, h.d, s->op != AXS_STEER, AXS_NAME(names, dir, "dirs[%d]", k)));
    if (s->op == AXS_CLAMP)
      AXS_TRY(
          check_bounds(h, s, mask, AXS_NAME(names, a, "a[%d]", k), AXS_NAME(names, b, "b[%d]", k)));
  }
  return AXS_OK;
}
