/*
 * validate.c - the per-thread error message and the checks every entry
 * point runs before touching data. Shared by the CPU and CUDA halves: the
 * host-side checks (axs_check_call) need no access to the data, the value
 * checks (axs_check_values) read host memory and run for CPU calls only.
 * Nothing here computes a result.
 */
#include <math.h>
#include <stdarg.h>
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

typedef struct {
  char text[48];
} axs_label;

/* "dirs[2]" for axs_apply_, the caller's own name for single-step calls. */
static axs_label label_of(const char *given, const char *family, int k) {
  axs_label l;
  if (given != NULL)
    snprintf(l.text, sizeof l.text, "%s", given);
  else
    snprintf(l.text, sizeof l.text, "%s[%d]", family, k);
  return l;
}

/* ---- byte extents, for the overlap checks -------------------------------- */

typedef struct {
  const char *lo, *hi; /* [lo, hi); lo == hi when empty */
} axs_extent;

static axs_extent extent_of(const void *data, int64_t n_outer, int64_t n_inner, int64_t so,
                            int64_t si, int64_t row_len, size_t esize) {
  axs_extent e = {(const char *)data, (const char *)data};
  if (data == NULL || n_outer == 0 || n_inner == 0)
    return e;
  int64_t last = (n_outer - 1) * so + (n_inner - 1) * si + row_len;
  e.hi = e.lo + (size_t)last * esize;
  return e;
}

static int extents_overlap(axs_extent x, axs_extent y) {
  return x.lo < x.hi && y.lo < y.hi && x.lo < y.hi && y.lo < x.hi;
}

/* Every output of one call, named, for the pairwise overlap check. */
typedef struct {
  axs_extent extent;
  axs_label name;
} axs_named_extent;

typedef struct {
  axs_named_extent items[3 * AXS_MAX_STEPS + 3];
  int n;
} axs_outputs;

static void add_output(axs_outputs *outs, axs_extent e, axs_label name) {
  if (e.lo == e.hi)
    return;
  outs->items[outs->n].extent = e;
  outs->items[outs->n].name = name;
  outs->n++;
}

/* ---- the host-side checks ------------------------------------------------- */

static axs_status check_rows(axs_rows h) {
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
  if (h.n_outer * h.n_inner == 0)
    return AXS_OK; /* no rows: nothing to read, nothing can overlap */
  if (h.data == NULL)
    return axs_fail(AXS_EINVAL, "h: data pointer is NULL");
  /* rows must not overlap: sort the two row dimensions by stride */
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

static axs_status check_fout(axs_rows h, axs_fout o, axs_label name) {
  if (o.data == NULL || h.n_outer * h.n_inner == 0)
    return AXS_OK;
  if (o.stride_outer < 0 || o.stride_inner < 0 || (h.n_outer > 1 && o.stride_outer == 0) ||
      (h.n_inner > 1 && o.stride_inner == 0))
    return axs_fail(AXS_EINVAL,
                    "%s: output strides (%lld, %lld) would write one element "
                    "for several rows (expected one element per row)",
                    name.text, (long long)o.stride_outer, (long long)o.stride_inner);
  return AXS_OK;
}

static axs_status check_bout(axs_rows h, axs_bout o, axs_label name) {
  axs_fout as_f = {(float *)(void *)o.data, o.stride_outer, o.stride_inner};
  return check_fout(h, as_f, name);
}

static axs_status check_fin(axs_fin v, axs_label name) {
  if (v.data != NULL && (v.stride_outer < 0 || v.stride_inner < 0))
    return axs_fail(AXS_EINVAL, "%s: strides (%lld, %lld) must not be negative", name.text,
                    (long long)v.stride_outer, (long long)v.stride_inner);
  return AXS_OK;
}

static axs_status check_disjoint_from_h(axs_extent hx, axs_extent e, axs_label name) {
  if (extents_overlap(hx, e))
    return axs_fail(AXS_EINVAL, "%s overlaps the memory of h (expected separate buffers)",
                    name.text);
  return AXS_OK;
}

#define AXS_TRY(expr)                                                                              \
  do {                                                                                             \
    axs_status axs_try_status_ = (expr);                                                           \
    if (axs_try_status_ != AXS_OK)                                                                 \
      return axs_try_status_;                                                                      \
  } while (0)

static axs_status check_step(axs_rows h, axs_extent hx, const axs_step *s, int k,
                             const axs_names *names, axs_outputs *outs) {
  axs_label dir = label_of(names ? names->dir : NULL, "dirs", k);
  axs_label a = label_of(names ? names->a : NULL, "a", k);
  axs_label b = label_of(names ? names->b : NULL, "b", k);
  axs_label pb = label_of(names ? names->p_before : NULL, "p_before", k);
  axs_label pa = label_of(names ? names->p_after : NULL, "p_after", k);
  axs_label ch = label_of(names ? names->changed : NULL, "changed", k);
  if ((int)s->op < AXS_PROJECT || (int)s->op > AXS_STEER)
    return axs_fail(AXS_ETYPE,
                    "steps[%d].op = %d is not an operation (expected 0 "
                    "project, 1 clamp, 2 set, 3 steer)",
                    k, (int)s->op);
  if (s->dir == NULL)
    return axs_fail(AXS_EINVAL, "%s: direction pointer is NULL", dir.text);
  if ((s->op == AXS_SET || s->op == AXS_STEER) && s->a.data == NULL)
    return axs_fail(AXS_EINVAL, "%s: %s needs a value (got none)", a.text,
                    s->op == AXS_SET ? "set projection" : "steer");
  AXS_TRY(check_fin(s->a, a));
  AXS_TRY(check_fin(s->b, b));
  AXS_TRY(check_fout(h, s->p_before, pb));
  AXS_TRY(check_fout(h, s->p_after, pa));
  AXS_TRY(check_bout(h, s->changed, ch));
  AXS_TRY(check_disjoint_from_h(hx, extent_of(s->dir, 1, 1, 0, 0, h.d, sizeof(float)), dir));
  AXS_TRY(check_disjoint_from_h(hx,
                                extent_of(s->a.data, h.n_outer, h.n_inner, s->a.stride_outer,
                                          s->a.stride_inner, 1, sizeof(float)),
                                a));
  AXS_TRY(check_disjoint_from_h(hx,
                                extent_of(s->b.data, h.n_outer, h.n_inner, s->b.stride_outer,
                                          s->b.stride_inner, 1, sizeof(float)),
                                b));
  add_output(outs,
             extent_of(s->p_before.data, h.n_outer, h.n_inner, s->p_before.stride_outer,
                       s->p_before.stride_inner, 1, sizeof(float)),
             pb);
  add_output(outs,
             extent_of(s->p_after.data, h.n_outer, h.n_inner, s->p_after.stride_outer,
                       s->p_after.stride_inner, 1, sizeof(float)),
             pa);
  add_output(outs,
             extent_of(s->changed.data, h.n_outer, h.n_inner, s->changed.stride_outer,
                       s->changed.stride_inner, 1, 1),
             ch);
  return AXS_OK;
}

axs_status axs_check_call(axs_rows h, const axs_step *steps, int n_steps, axs_bin mask,
                          axs_record rec, const axs_names *names) {
  AXS_TRY(check_rows(h));
  if (steps == NULL || n_steps < 1 || n_steps > AXS_MAX_STEPS)
    return axs_fail(AXS_EINVAL,
                    "steps: %d steps given (expected 1 to %d, and a non-NULL "
                    "array)",
                    n_steps, AXS_MAX_STEPS);
  axs_extent hx = extent_of(h.data, h.n_outer, h.n_inner, h.stride_outer, h.stride_inner, h.d,
                            axs_dtype_size(h.dtype));
  axs_outputs outs;
  outs.n = 0;
  for (int k = 0; k < n_steps; k++)
    AXS_TRY(check_step(h, hx, &steps[k], k, names, &outs));
  axs_label mask_name = label_of("mask", NULL, 0);
  if (mask.data != NULL && (mask.stride_outer < 0 || mask.stride_inner < 0))
    return axs_fail(AXS_EINVAL, "mask: strides (%lld, %lld) must not be negative",
                    (long long)mask.stride_outer, (long long)mask.stride_inner);
  AXS_TRY(check_disjoint_from_h(
      hx, extent_of(mask.data, h.n_outer, h.n_inner, mask.stride_outer, mask.stride_inner, 1, 1),
      mask_name));
  axs_label rin = label_of("p_in", NULL, 0);
  axs_label rout = label_of("p_out", NULL, 0);
  axs_label rfired = label_of("fired", NULL, 0);
  /* with an offset the record outputs have `capacity` columns */
  axs_rows rec_rows = h;
  if (rec.offset != NULL) {
    if (rec.capacity < 0)
      return axs_fail(AXS_EINVAL, "record capacity = %lld (expected >= 0 columns)",
                      (long long)rec.capacity);
    rec_rows.n_inner = rec.capacity;
  }
  AXS_TRY(check_fout(rec_rows, rec.p_in, rin));
  AXS_TRY(check_fout(rec_rows, rec.p_out, rout));
  AXS_TRY(check_bout(rec_rows, rec.fired, rfired));
  add_output(&outs,
             extent_of(rec.p_in.data, h.n_outer, rec_rows.n_inner, rec.p_in.stride_outer,
                       rec.p_in.stride_inner, 1, sizeof(float)),
             rin);
  add_output(&outs,
             extent_of(rec.p_out.data, h.n_outer, rec_rows.n_inner, rec.p_out.stride_outer,
                       rec.p_out.stride_inner, 1, sizeof(float)),
             rout);
  add_output(&outs,
             extent_of(rec.fired.data, h.n_outer, rec_rows.n_inner, rec.fired.stride_outer,
                       rec.fired.stride_inner, 1, 1),
             rfired);
  if (rec.offset != NULL)
    AXS_TRY(check_disjoint_from_h(hx, extent_of(rec.offset, 1, 1, 0, 0, 1, sizeof(int64_t)),
                                  label_of("record offset", NULL, 0)));
  for (int i = 0; i < outs.n; i++) {
    AXS_TRY(check_disjoint_from_h(hx, outs.items[i].extent, outs.items[i].name));
    for (int j = i + 1; j < outs.n; j++)
      if (extents_overlap(outs.items[i].extent, outs.items[j].extent))
        return axs_fail(AXS_EINVAL, "outputs %s and %s overlap (expected separate buffers)",
                        outs.items[i].name.text, outs.items[j].name.text);
  }
  return AXS_OK;
}

/* ---- the value checks (host memory) -------------------------------------- */

static axs_status check_direction(const float *dir, int64_t d, int unit, axs_label name) {
  float ss = axs_sumsq_f32(dir, d);
  if (!isfinite(ss)) {
    for (int64_t j = 0; j < d; j++)
      if (!isfinite(dir[j]))
        return axs_fail(AXS_EINVAL, "%s[%lld] = %g (expected finite values in a direction)",
                        name.text, (long long)j, (double)dir[j]);
    if (unit)
      return axs_fail(AXS_EINVAL,
                      "%s: the squared norm overflows float32 (expected a "
                      "unit vector)",
                      name.text);
    return AXS_OK; /* a large but finite steering vector */
  }
  double norm = sqrt((double)ss);
  if (unit && fabs(norm - 1.0) > (double)AXS_UNIT_TOL)
    return axs_fail(AXS_EINVAL,
                    "%s has norm %.6g (expected a unit vector: divide it by "
                    "its norm%s)",
                    name.text, norm, norm == 0.0 ? "; a zero vector has no direction" : "");
  return AXS_OK;
}

static axs_status check_bounds(axs_rows h, const axs_step *s, axs_bin mask, axs_label a,
                               axs_label b) {
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
                        a.text, (double)lo, b.text, (double)hi);
      if (lo > hi)
        return axs_fail(AXS_EINVAL,
                        "%s = %g > %s = %g at row (%lld, %lld) (expected "
                        "lo <= hi; use -inf or +inf for an open side)",
                        a.text, (double)lo, b.text, (double)hi, (long long)o, (long long)i);
    }
  return AXS_OK;
}

axs_status axs_check_values(axs_rows h, const axs_step *steps, int n_steps, axs_bin mask,
                            const axs_names *names) {
  for (int k = 0; k < n_steps; k++) {
    const axs_step *s = &steps[k];
    axs_label dir = label_of(names ? names->dir : NULL, "dirs", k);
    AXS_TRY(check_direction(s->dir, h.d, s->op != AXS_STEER, dir));
    if (s->op == AXS_CLAMP)
      AXS_TRY(check_bounds(h, s, mask, label_of(names ? names->a : NULL, "a", k),
                           label_of(names ? names->b : NULL, "b", k)));
  }
  return AXS_OK;
}
