/*
 * test_core.c - the C core's own test program: every entry point of
 * csrc/axis_steer.h checked against double-precision references computed
 * here, in float32, float16 and bfloat16 storage, over several row layouts
 * (contiguous, padded rows, outer/inner strides either way round, one row,
 * no rows), with broadcast and per-row parameters, masks and strided
 * outputs. Also: the NaN / infinity policy, bit-exactness of rows that must
 * not be written (and of the bytes between rows), invalid calls and their
 * statuses and messages, identical bytes for 1, 2 and 4 threads, axs_apply_
 * against the same steps run one call at a time, updates whose intermediate
 * overflows float32 although the result fits, sizes and strides whose byte
 * extent overflows and record offsets anywhere in int64 (these run under
 * UBSan in `make test-core-asan`), the caller's argument names in messages,
 * and the float16 / bfloat16 conversions of convert.h (exhaustively where
 * that is cheap).
 *
 * Not here: Python, torch, CUDA. Build and run with `make test-core` or
 * `make test-core-asan` from the repository root. Prints one line per
 * failure (at most 3 per case, 200 in all) and a one-line summary; exits 1 on
 * any failure.
 */
#include <float.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../axis_steer.h"
#include "../core/convert.h"

/* ---- harness
 * ----------------------------------------------------------------- */

static long g_checks = 0, g_failures = 0;
static long g_case_failures = 0, g_printed = 0;
static char g_case[256] = ""; /* what the current checks are about */

#define CHECK(cond, ...)                                                                           \
  do {                                                                                             \
    g_checks++;                                                                                    \
    if (!(cond)) {                                                                                 \
      g_failures++;                                                                                \
      if (++g_case_failures <= 3 && ++g_printed <= 200) {                                          \
        fprintf(stderr, "FAIL %s:%d [%s] ", __FILE__, __LINE__, g_case);                           \
        fprintf(stderr, __VA_ARGS__);                                                              \
        fputc('\n', stderr);                                                                       \
      }                                                                                            \
    }                                                                                              \
  } while (0)

#if defined(__GNUC__)
__attribute__((format(printf, 1, 2)))
#endif
static void set_case(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(g_case, sizeof g_case, fmt, ap);
  va_end(ap);
  g_case_failures = 0;
}

static void *xcalloc(size_t n, size_t size) {
  void *p = calloc(n ? n : 1, size ? size : 1);
  if (p == NULL) {
    fprintf(stderr, "test_core: out of memory\n");
    exit(2);
  }
  return p;
}

static int same_bits_f(float a, float b) {
  return memcmp(&a, &b, sizeof a) == 0;
}

static axs_record no_record(void) {
  axs_record r;
  memset(&r, 0, sizeof r);
  return r;
}

/* A record of the given outputs, without an offset. */
static axs_record record_of(axs_fout p_in, axs_fout p_out, axs_bout fired) {
  axs_record r;
  memset(&r, 0, sizeof r);
  r.p_in = p_in;
  r.p_out = p_out;
  r.fired = fired;
  return r;
}

/* ---- random numbers (splitmix64; the sequence is the same on every run) ----
 */

static uint64_t g_rng = 0x9e3779b97f4a7c15ull;

static uint64_t rng_u64(void) {
  uint64_t z = (g_rng += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

static double rng_unit(void) {
  return (double)(rng_u64() >> 11) * 0x1p-53;
}

static double rng_normal(void) {
  double u1 = rng_unit(), u2 = rng_unit();
  if (u1 < 1e-300)
    u1 = 1e-300;
  return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

/* ---- storage
 * -------------------------------------------------------------------- */

static const axs_dtype k_dtypes[3] = {AXS_F32, AXS_F16, AXS_BF16};

static const char *dt_name(axs_dtype dt) {
  return dt == AXS_F32 ? "float32" : dt == AXS_F16 ? "float16" : "bfloat16";
}

static size_t dt_size(axs_dtype dt) {
  return dt == AXS_F32 ? 4 : 2;
}

/* relative and absolute error of one store to the dtype */
static double store_rel(axs_dtype dt) {
  return dt == AXS_F32 ? 0x1p-24 : dt == AXS_F16 ? 0x1p-11 : 0x1p-8;
}

static double store_abs(axs_dtype dt) {
  return dt == AXS_F32 ? 0x1p-149 : dt == AXS_F16 ? 0x1p-25 : 0x1p-134;
}

static float ld(axs_dtype dt, const void *base, int64_t idx) {
  const char *p = (const char *)base + (size_t)idx * dt_size(dt);
  if (dt == AXS_F32) {
    float f;
    memcpy(&f, p, 4);
    return f;
  }
  uint16_t v;
  memcpy(&v, p, 2);
  return dt == AXS_F16 ? axs_f16_to_f32(v) : axs_bf16_to_f32(v);
}

static void st(axs_dtype dt, void *base, int64_t idx, float f) {
  char *p = (char *)base + (size_t)idx * dt_size(dt);
  if (dt == AXS_F32) {
    memcpy(p, &f, 4);
    return;
  }
  uint16_t v = dt == AXS_F16 ? axs_f32_to_f16(f) : axs_f32_to_bf16(f);
  memcpy(p, &v, 2);
}

/* ---- layouts
 * -------------------------------------------------------------------- */

typedef struct {
  const char *name;
  int64_t no, ni, d, so, si;
} layout_t;

static int64_t layout_elems(const layout_t *L) {
  if (L->no == 0 || L->ni == 0)
    return L->d;
  return (L->no - 1) * L->so + (L->ni - 1) * L->si + L->d;
}

static int64_t row_at(const layout_t *L, int64_t o, int64_t i) {
  return o * L->so + i * L->si;
}

static axs_rows rows_of(const layout_t *L, axs_dtype dt, void *data) {
  axs_rows r;
  r.data = data;
  r.dtype = dt;
  r.n_outer = L->no;
  r.n_inner = L->ni;
  r.d = L->d;
  r.stride_outer = L->so;
  r.stride_inner = L->si;
  return r;
}

/* h with every byte outside the rows set to a pattern, rows ~ N(0, scale^2);
 * a few rows get a -0.0 and (float16) a subnormal, which any write would
 * show. Returns the buffer; *n_bytes is its size. */
static void *make_h(const layout_t *L, axs_dtype dt, double scale, size_t *n_bytes) {
  size_t n = (size_t)layout_elems(L) * dt_size(dt) + 64;
  unsigned char *buf = (unsigned char *)xcalloc(n, 1);
  for (size_t k = 0; k < n; k++)
    buf[k] = (unsigned char)(0xA5 ^ (k * 7));
  for (int64_t o = 0; o < L->no; o++)
    for (int64_t i = 0; i < L->ni; i++) {
      int64_t r = row_at(L, o, i);
      for (int64_t j = 0; j < L->d; j++)
        st(dt, buf, r + j, (float)(scale * rng_normal()));
      if ((o + i) % 3 == 0)
        st(dt, buf, r, -0.0f);
      if (dt == AXS_F16 && L->d > 2 && (o + i) % 3 == 1)
        st(dt, buf, r + 1, 0x1p-20f);
    }
  *n_bytes = n;
  return buf;
}

/* 1 where a byte belongs to a row of h */
static unsigned char *row_bytes(const layout_t *L, axs_dtype dt, size_t n) {
  unsigned char *in = (unsigned char *)xcalloc(n, 1);
  for (int64_t o = 0; o < L->no; o++)
    for (int64_t i = 0; i < L->ni; i++)
      memset(in + (size_t)row_at(L, o, i) * dt_size(dt), 1, (size_t)L->d * dt_size(dt));
  return in;
}

static int row_same(const layout_t *L, axs_dtype dt, const void *a, const void *b, int64_t o,
                    int64_t i) {
  size_t off = (size_t)row_at(L, o, i) * dt_size(dt);
  return memcmp((const char *)a + off, (const char *)b + off, (size_t)L->d * dt_size(dt)) == 0;
}

/* a float32 unit vector (normalised in double) */
static float *make_unit(int64_t d) {
  float *u = (float *)xcalloc((size_t)d, sizeof(float));
  double ss = 0, *v = (double *)xcalloc((size_t)d, sizeof(double));
  for (int64_t j = 0; j < d; j++) {
    v[j] = rng_normal();
    ss += v[j] * v[j];
  }
  for (int64_t j = 0; j < d; j++)
    u[j] = (float)(v[j] / sqrt(ss));
  free(v);
  return u;
}

static float *make_vec(int64_t d, double scale) {
  float *w = (float *)xcalloc((size_t)d, sizeof(float));
  for (int64_t j = 0; j < d; j++)
    w[j] = (float)(scale * rng_normal());
  return w;
}

/* ---- per-row values, broadcast in four ways
 * ------------------------------------ */

enum { BC_SCALAR, BC_OUTER, BC_INNER, BC_FULL, BC_COUNT };
static const char *const k_bc_names[BC_COUNT] = {"scalar", "per-outer", "per-inner", "per-row"};

typedef struct {
  float *phys;  /* what the core reads */
  float *value; /* the value of each row, [o * ni + i] */
  size_t n_phys;
  axs_fin fin;
} rowvals;

/* values mean + sd * N(0, 1), one per distinct index of the mode */
static rowvals make_vals(const layout_t *L, int mode, double mean, double sd) {
  rowvals v;
  int64_t no = L->no, ni = L->ni;
  v.n_phys = (size_t)(no * (2 * ni + 1) + 4);
  v.phys = (float *)xcalloc(v.n_phys, sizeof(float));
  v.value = (float *)xcalloc((size_t)(no * ni + 1), sizeof(float));
  for (size_t k = 0; k < v.n_phys; k++)
    v.phys[k] = (float)(mean + sd * rng_normal());
  switch (mode) {
  case BC_SCALAR:
    v.fin.stride_outer = v.fin.stride_inner = 0;
    break;
  case BC_OUTER:
    v.fin.stride_outer = 2;
    v.fin.stride_inner = 0;
    break;
  case BC_INNER:
    v.fin.stride_outer = 0;
    v.fin.stride_inner = 1;
    break;
  default:
    v.fin.stride_outer = 2 * ni + 1;
    v.fin.stride_inner = 2;
    break;
  }
  v.fin.data = v.phys;
  for (int64_t o = 0; o < no; o++)
    for (int64_t i = 0; i < ni; i++)
      v.value[o * ni + i] = v.phys[o * v.fin.stride_outer + i * v.fin.stride_inner];
  return v;
}

/* hi = lo + |hi| (same mode), so that lo <= hi on every row */
static void add_abs_of(rowvals *hi, const rowvals *lo, const layout_t *L) {
  for (size_t k = 0; k < hi->n_phys; k++)
    hi->phys[k] = lo->phys[k] + fabsf(hi->phys[k]) + 0.05f;
  for (int64_t o = 0; o < L->no; o++)
    for (int64_t i = 0; i < L->ni; i++)
      hi->value[o * L->ni + i] = hi->phys[o * hi->fin.stride_outer + i * hi->fin.stride_inner];
}

static void free_vals(rowvals *v) {
  free(v->phys);
  free(v->value);
}

/* ---- strided outputs with sentinels between their elements
 * -------------------- */

static const float k_fsentinel = -12345.5f;
static const uint8_t k_bsentinel = 0xAB;

typedef struct {
  float *buf;
  size_t n;
  axs_fout f;
} fouts;

typedef struct {
  uint8_t *buf;
  size_t n;
  axs_bout b;
} bouts;

static fouts make_fout(const layout_t *L) {
  fouts o;
  o.n = (size_t)(L->no * (L->ni * 2 + 3) + 3);
  o.buf = (float *)xcalloc(o.n, sizeof(float));
  for (size_t k = 0; k < o.n; k++)
    o.buf[k] = k_fsentinel;
  o.f.data = o.buf + 1;
  o.f.stride_outer = L->ni * 2 + 3;
  o.f.stride_inner = 2;
  return o;
}

static bouts make_bout(const layout_t *L) {
  bouts o;
  o.n = (size_t)(L->no * (L->ni * 3 + 1) + 3);
  o.buf = (uint8_t *)xcalloc(o.n, 1);
  memset(o.buf, k_bsentinel, o.n);
  o.b.data = o.buf + 1;
  o.b.stride_outer = L->ni * 3 + 1;
  o.b.stride_inner = 3;
  return o;
}

static float fget(const fouts *o, int64_t oi, int64_t ii) {
  return o->f.data[oi * o->f.stride_outer + ii * o->f.stride_inner];
}

static uint8_t bget(const bouts *o, int64_t oi, int64_t ii) {
  return o->b.data[oi * o->b.stride_outer + ii * o->b.stride_inner];
}

/* every element that is not one of the outputs still holds the sentinel */
static int fout_gaps_ok(const fouts *o, const layout_t *L) {
  unsigned char *used = (unsigned char *)xcalloc(o->n, 1);
  for (int64_t a = 0; a < L->no; a++)
    for (int64_t b = 0; b < L->ni; b++)
      used[(o->f.data - o->buf) + a * o->f.stride_outer + b * o->f.stride_inner] = 1;
  int ok = 1;
  for (size_t k = 0; k < o->n; k++)
    if (!used[k] && !same_bits_f(o->buf[k], k_fsentinel))
      ok = 0;
  free(used);
  return ok;
}

static int bout_gaps_ok(const bouts *o, const layout_t *L) {
  unsigned char *used = (unsigned char *)xcalloc(o->n, 1);
  for (int64_t a = 0; a < L->no; a++)
    for (int64_t b = 0; b < L->ni; b++)
      used[(o->b.data - o->buf) + a * o->b.stride_outer + b * o->b.stride_inner] = 1;
  int ok = 1;
  for (size_t k = 0; k < o->n; k++)
    if (!used[k] && o->buf[k] != k_bsentinel)
      ok = 0;
  free(used);
  return ok;
}

/* ---- the double-precision reference
 * --------------------------------------------- */

typedef struct {
  double p;    /* <x, u> in double, x as stored */
  double sabs; /* sum |x_j u_j| */
  int finite;  /* every x_j finite */
} proj_ref;

static proj_ref ref_project(axs_dtype dt, const void *h, int64_t row, const float *u, int64_t d) {
  proj_ref r = {0.0, 0.0, 1};
  for (int64_t j = 0; j < d; j++) {
    double x = ld(dt, h, row + j);
    if (!isfinite(x))
      r.finite = 0;
    r.p += x * (double)u[j];
    r.sabs += fabs(x * (double)u[j]);
  }
  return r;
}

/* bound on |float32 kernel dot - exact dot| */
static double dot_tol(int64_t d, double sabs) {
  return ((double)(d / 16) + 24.0) * FLT_EPSILON * sabs + 1e-37;
}

/* Checks that row (o, i) of h holds x + c * w for the x of h0 (c computed
 * in double by the caller, with cerr a bound on the kernel's error in c). */
static int row_matches(axs_dtype dt, const layout_t *L, const void *h, const void *h0, int64_t o,
                       int64_t i, const float *w, double c, double cerr, double *worst) {
  int64_t r = row_at(L, o, i);
  int ok = 1;
  for (int64_t j = 0; j < L->d; j++) {
    double x = ld(dt, h0, r + j), z = ld(dt, h, r + j);
    double cw = c * (double)w[j];
    double y = x + cw;
    double tol = fabs((double)w[j]) * cerr + 2.0 * FLT_EPSILON * (fabs(x) + fabs(cw)) +
                 store_rel(dt) * fabs(y) + store_abs(dt);
    double err = fabs(z - y);
    if (!(err <= tol))
      ok = 0;
    if (worst != NULL && tol > 0 && err / tol > *worst)
      *worst = err / tol;
  }
  return ok;
}

/* ---- one op on one layout
 * ------------------------------------------------------- */

typedef struct {
  axs_op op;
  axs_dtype dt;
  const layout_t *L;
  int mode;     /* BC_* for the per-row values */
  int use_mask; /* 0 none, 1 per row, 2 per outer (broadcast) */
  int outputs;  /* ask for the optional outputs */
  int lo_only;  /* clamp: hi not given */
  int hi_only;  /* clamp: lo not given */
  int threads;
} op_case;

static const char *const k_op_names[4] = {"project", "clamp", "set", "steer"};

static void run_op_case(const op_case *c) {
  const layout_t *L = c->L;
  axs_dtype dt = c->dt;
  char what[200];
  snprintf(what, sizeof what, "%s %s %s, %s values, mask %d, outputs %d%s%s", k_op_names[c->op],
           dt_name(dt), L->name, k_bc_names[c->mode], c->use_mask, c->outputs,
           c->lo_only ? ", lo only" : "", c->hi_only ? ", hi only" : "");
  set_case("%s", what);

  size_t nb;
  void *h = make_h(L, dt, 1.0, &nb);
  void *h0 = xcalloc(nb, 1);
  memcpy(h0, h, nb);
  unsigned char *in_rows = row_bytes(L, dt, nb);
  float *u = c->op == AXS_STEER ? make_vec(L->d, 0.7) : make_unit(L->d);

  rowvals a =
      make_vals(L, c->mode, c->op == AXS_CLAMP ? -0.2 : 0.0, c->op == AXS_STEER ? 1.5 : 0.8);
  rowvals b = make_vals(L, c->mode, 0.0, 0.6);
  add_abs_of(&b, &a, L);
  if (c->op == AXS_STEER || c->op == AXS_SET) {
    /* a few special values: alpha 0, non-finite alpha / target */
    if (c->mode == BC_FULL && L->no * L->ni >= 4) {
      int64_t i0 = 0, o0 = 0;
      a.phys[o0 * a.fin.stride_outer + i0 * a.fin.stride_inner] = c->op == AXS_STEER ? 0.0f : NAN;
      a.value[0] = a.phys[0];
      int64_t ni = L->ni, last = L->no * ni - 1;
      int64_t ol = last / ni, il = last % ni;
      float v = c->op == AXS_STEER ? NAN : INFINITY;
      a.phys[ol * a.fin.stride_outer + il * a.fin.stride_inner] = v;
      a.value[last] = v;
    }
  }

  /* mask: 1 keep, 0 skip */
  uint8_t *mask_phys = NULL;
  uint8_t *mask_value = (uint8_t *)xcalloc((size_t)(L->no * L->ni + 1), 1);
  axs_bin mask = {NULL, 0, 0};
  for (int64_t k = 0; k < L->no * L->ni; k++)
    mask_value[k] = 1;
  if (c->use_mask == 1) {
    mask_phys = (uint8_t *)xcalloc((size_t)(L->no * (L->ni * 2 + 1) + 1), 1);
    mask.data = mask_phys;
    mask.stride_outer = L->ni * 2 + 1;
    mask.stride_inner = 2;
    for (int64_t o = 0; o < L->no; o++)
      for (int64_t i = 0; i < L->ni; i++) {
        uint8_t m = (uint8_t)((rng_u64() % 4) != 0);
        mask_phys[o * mask.stride_outer + i * mask.stride_inner] = m;
        mask_value[o * L->ni + i] = m != 0;
      }
  } else if (c->use_mask == 2) {
    mask_phys = (uint8_t *)xcalloc((size_t)(L->no + 1), 1);
    mask.data = mask_phys;
    mask.stride_outer = 1;
    mask.stride_inner = 0;
    for (int64_t o = 0; o < L->no; o++) {
      mask_phys[o] = (uint8_t)(o % 2 == 0);
      for (int64_t i = 0; i < L->ni; i++)
        mask_value[o * L->ni + i] = mask_phys[o];
    }
  }

  fouts pb = make_fout(L), pa = make_fout(L);
  bouts ch = make_bout(L);
  axs_fout no_f = {NULL, 0, 0};
  axs_bout no_b = {NULL, 0, 0};
  axs_fin no_fin = {NULL, 0, 0};
  axs_rows rows = rows_of(L, dt, h);
  axs_status s = AXS_OK;
  switch (c->op) {
  case AXS_PROJECT:
    s = axs_project(rows, u, mask, pb.f, c->threads);
    break;
  case AXS_CLAMP:
    s = axs_clamp_(rows, u, c->hi_only ? no_fin : a.fin, c->lo_only ? no_fin : b.fin, mask,
                   c->outputs ? pb.f : no_f, c->outputs ? pa.f : no_f, c->outputs ? ch.b : no_b,
                   c->threads);
    break;
  case AXS_SET:
    s = axs_set_projection_(rows, u, a.fin, mask, c->outputs ? pb.f : no_f, c->threads);
    break;
  case AXS_STEER:
    s = axs_steer_(rows, u, a.fin, mask, c->threads);
    break;
  }
  CHECK(s == AXS_OK, "status %d: %s", (int)s, axs_last_error());
  CHECK(axs_last_error()[0] == '\0', "message after success: %s", axs_last_error());

  /* the projection of the result, for p_after and the final position */
  fouts pr = make_fout(L);
  if (c->op != AXS_STEER && c->op != AXS_PROJECT)
    CHECK(axs_project(rows, u, mask, pr.f, 1) == AXS_OK, "re-project: %s", axs_last_error());

  /* bytes outside the rows are never touched */
  int gaps_ok = 1;
  for (size_t k = 0; k < nb; k++)
    if (!in_rows[k] && ((unsigned char *)h)[k] != ((unsigned char *)h0)[k])
      gaps_ok = 0;
  CHECK(gaps_ok, "bytes between rows were written");
  int want_pb = c->op == AXS_PROJECT || c->outputs;
  if (want_pb && c->op != AXS_STEER)
    CHECK(fout_gaps_ok(&pb, L), "p_before: elements between outputs written");
  if (c->op == AXS_CLAMP && c->outputs) {
    CHECK(fout_gaps_ok(&pa, L), "p_after: elements between outputs written");
    CHECK(bout_gaps_ok(&ch, L), "changed: elements between outputs written");
  }

  double worst = 0.0;
  long n_written = 0, n_kept = 0;
  for (int64_t o = 0; o < L->no; o++)
    for (int64_t i = 0; i < L->ni; i++) {
      int64_t k = o * L->ni + i;
      int64_t r = row_at(L, o, i);
      int same = row_same(L, dt, h, h0, o, i);
      if (!mask_value[k]) {
        CHECK(same, "masked row (%lld, %lld) was written", (long long)o, (long long)i);
        if (want_pb && c->op != AXS_STEER)
          CHECK(isnan(fget(&pb, o, i)), "masked row (%lld, %lld): p = %g", (long long)o,
                (long long)i, (double)fget(&pb, o, i));
        if (c->op == AXS_CLAMP && c->outputs) {
          CHECK(isnan(fget(&pa, o, i)), "masked row: p_after not NaN");
          CHECK(bget(&ch, o, i) == 0, "masked row: changed = %d", bget(&ch, o, i));
        }
        continue;
      }
      proj_ref pr0 = ref_project(dt, h0, r, u, L->d);
      double tol = dot_tol(L->d, pr0.sabs);
      if (c->op != AXS_STEER && want_pb) {
        float p = fget(&pb, o, i);
        CHECK(fabs((double)p - pr0.p) <= tol,
              "row (%lld, %lld): p = %.9g, reference %.9g (tol %.3g)", (long long)o, (long long)i,
              (double)p, pr0.p, tol);
      }
      if (c->op == AXS_PROJECT) {
        CHECK(same, "project wrote row (%lld, %lld)", (long long)o, (long long)i);
        continue;
      }
      if (c->op == AXS_STEER) {
        double alpha = a.value[k];
        if (alpha == 0.0 || !isfinite(alpha)) {
          CHECK(same, "steer with alpha = %g wrote row (%lld, %lld)", alpha, (long long)o,
                (long long)i);
          n_kept++;
        } else {
          CHECK(row_matches(dt, L, h, h0, o, i, u, alpha, 0.0, &worst),
                "steer row (%lld, %lld) off the reference", (long long)o, (long long)i);
          n_written++;
        }
        continue;
      }
      /* clamp and set: where the projection should go */
      double t = pr0.p;
      int near = 0, finite_t = 1;
      if (c->op == AXS_CLAMP) {
        double lo = c->hi_only ? -INFINITY : a.value[k];
        double hi = c->lo_only ? INFINITY : b.value[k];
        if (t < lo)
          t = lo;
        if (t > hi)
          t = hi;
        near = fabs(pr0.p - lo) <= 2 * tol || fabs(pr0.p - hi) <= 2 * tol;
      } else {
        double target = a.value[k];
        finite_t = isfinite(target);
        if (finite_t) {
          t = target;
          near = fabs(pr0.p - t) <= 2 * tol;
        }
      }
      int expect_write = finite_t && t != pr0.p;
      double cerr = tol + 2 * FLT_EPSILON * fabs(t - pr0.p);
      if (near) {
        /* either outcome is right; it must be one of them */
        CHECK(same || row_matches(dt, L, h, h0, o, i, u, t - pr0.p, cerr, NULL),
              "row (%lld, %lld) near a bound: neither kept nor moved", (long long)o, (long long)i);
      } else if (expect_write) {
        CHECK(!same || L->d == 0, "row (%lld, %lld) should move to %g", (long long)o, (long long)i,
              t);
        CHECK(row_matches(dt, L, h, h0, o, i, u, t - pr0.p, cerr, &worst),
              "row (%lld, %lld): moved row off the reference", (long long)o, (long long)i);
        n_written++;
      } else {
        CHECK(same, "row (%lld, %lld) inside the bounds was written", (long long)o, (long long)i);
        n_kept++;
      }
      /* where the row ended up */
      proj_ref pr1 = ref_project(dt, h, r, u, L->d);
      double end_tol = dot_tol(L->d, pr1.sabs);
      if (!near && expect_write) {
        double moved = 0.0;
        for (int64_t j = 0; j < L->d; j++)
          moved +=
              fabs((double)u[j]) *
              (fabs((double)u[j]) * cerr + store_rel(dt) * fabs(ld(dt, h, r + j)) + store_abs(dt) +
               2 * FLT_EPSILON * (fabs(ld(dt, h0, r + j)) + fabs((t - pr0.p) * u[j])));
        CHECK(fabs(pr1.p - t) <= end_tol + moved + 1e-6 * fabs(t),
              "row (%lld, %lld): projection after = %.9g, wanted %.9g", (long long)o, (long long)i,
              pr1.p, t);
      }
      if (c->op == AXS_CLAMP && c->outputs) {
        uint8_t changed = bget(&ch, o, i);
        CHECK(changed == 0 ? same : changed == 1,
              "row (%lld, %lld): changed = %d but row same = %d", (long long)o, (long long)i,
              changed, same);
        if (!near)
          CHECK(changed == expect_write, "row (%lld, %lld): changed = %d", (long long)o,
                (long long)i, changed);
        /* p_after is the projection of the stored row, the very bits
         * axs_project gives */
        CHECK(same_bits_f(fget(&pa, o, i), fget(&pr, o, i)),
              "row (%lld, %lld): p_after %.9g != project(result) %.9g", (long long)o, (long long)i,
              (double)fget(&pa, o, i), (double)fget(&pr, o, i));
        if (!changed)
          CHECK(same_bits_f(fget(&pa, o, i), fget(&pb, o, i)),
                "unchanged row: p_after != p_before");
      }
    }
  (void)n_written;
  (void)n_kept;
  free(h);
  free(h0);
  free(in_rows);
  free(u);
  free_vals(&a);
  free_vals(&b);
  free(mask_phys);
  free(mask_value);
  free(pb.buf);
  free(pa.buf);
  free(ch.buf);
  free(pr.buf);
}

static void test_ops(void) {
  static layout_t layouts[] = {
      {"contiguous (1, 7, 37)", 1, 7, 37, 0, 37},
      {"padded rows (1, 6, 64), stride 69", 1, 6, 64, 0, 69},
      {"batch-major (3, 4, 40)", 3, 4, 40, 4 * 43 + 11, 43},
      {"seq-major (3, 4, 33)", 3, 4, 33, 34, 3 * 34 + 2},
      {"one row (1, 1, 200)", 1, 1, 200, 0, 0},
      {"d = 1 (2, 5, 1)", 2, 5, 1, 5, 1},
      {"d = 16 (2, 3, 16)", 2, 3, 16, 50, 16},
      {"large (1, 40, 300)", 1, 40, 300, 0, 300},
  };
  int n_layouts = (int)(sizeof layouts / sizeof layouts[0]);
  for (int t = 0; t < 3; t++)
    for (int li = 0; li < n_layouts; li++)
      for (int op = 0; op < 4; op++)
        for (int mode = 0; mode < BC_COUNT; mode++)
          for (int mk = 0; mk < 3; mk++) {
            op_case c;
            memset(&c, 0, sizeof c);
            c.op = (axs_op)op;
            c.dt = k_dtypes[t];
            c.L = &layouts[li];
            c.mode = op == AXS_PROJECT ? BC_SCALAR : mode;
            if (op == AXS_PROJECT && mode > 0)
              continue;
            c.use_mask = mk;
            c.outputs = (mode + mk) % 2 == 0 || op == AXS_PROJECT;
            c.threads = 1;
            run_op_case(&c);
            if (op == AXS_CLAMP) {
              c.lo_only = 1;
              run_op_case(&c);
              c.lo_only = 0;
              c.hi_only = 1;
              c.outputs = 1;
              run_op_case(&c);
            }
          }
}

/* h with no rows, with strides as an adapter may compute them for an empty
 * array (NumPy 2 gives np.empty((2, 0, 8)) the strides (0, 0, 0); C-order
 * arithmetic gives (0, 32, 4) bytes): the outer stride is 0. There is nothing
 * to overlap, so every call succeeds and touches nothing. */
static void test_no_rows(void) {
  static const layout_t layouts[] = {
      {"(2, 0, 8), numpy strides (0, 8)", 2, 0, 8, 0, 8},
      {"(0, 3, 8), numpy strides (24, 8)", 0, 3, 8, 24, 8},
      {"(1, 0, 8) as an (n, d) matrix", 1, 0, 8, 0, 8},
  };
  float u[8], p[4] = {7, 7, 7, 7}, one = 1.0f;
  for (int j = 0; j < 8; j++)
    u[j] = j == 0 ? 1.0f : 0.0f;
  float h[16] = {0};
  axs_bin nm = {NULL, 0, 0};
  axs_fin onef = {&one, 0, 0}, no_fin = {NULL, 0, 0};
  axs_fout pf = {p, 0, 1}, no_f = {NULL, 0, 0};
  axs_bout no_b = {NULL, 0, 0};
  axs_step st1;
  memset(&st1, 0, sizeof st1);
  st1.op = AXS_CLAMP;
  st1.dir = u;
  st1.a = onef;
  axs_record no_rec =
      record_of((axs_fout){NULL, 0, 0}, (axs_fout){NULL, 0, 0}, (axs_bout){NULL, 0, 0});
  for (int k = 0; k < 3; k++) {
    const layout_t *L = &layouts[k];
    set_case("no rows: %s", L->name);
    for (int t = 0; t < 3; t++) {
      axs_rows r = rows_of(L, k_dtypes[t], h);
      pf.stride_outer = L->ni;
      CHECK(axs_project(r, u, nm, pf, 1) == AXS_OK, "project %s: %s", dt_name(k_dtypes[t]),
            axs_last_error());
      CHECK(axs_clamp_(r, u, onef, no_fin, nm, no_f, no_f, no_b, 1) == AXS_OK, "clamp %s: %s",
            dt_name(k_dtypes[t]), axs_last_error());
      CHECK(axs_set_projection_(r, u, onef, nm, no_f, 1) == AXS_OK, "set %s: %s",
            dt_name(k_dtypes[t]), axs_last_error());
      CHECK(axs_steer_(r, u, onef, nm, 1) == AXS_OK, "steer %s: %s", dt_name(k_dtypes[t]),
            axs_last_error());
      CHECK(axs_apply_(r, &st1, 1, nm, no_rec, NULL, 1) == AXS_OK, "apply %s: %s",
            dt_name(k_dtypes[t]), axs_last_error());
    }
    int untouched = p[0] == 7 && p[1] == 7 && p[2] == 7 && p[3] == 7;
    for (int j = 0; j < 16; j++)
      untouched &= h[j] == 0.0f;
    CHECK(untouched, "an empty call wrote memory");
  }
}

/* ---- NaN and infinity policy
 * ---------------------------------------------------- */

/* rows: 0 NaN, 1 +inf, 2 -inf, 3..5 finite (row 3 holds a -0.0) */
static void *nan_rows(axs_dtype dt, int64_t d, size_t *nb) {
  layout_t L = {"nan rows", 1, 6, d, 0, d};
  void *h = make_h(&L, dt, 1.0, nb);
  st(dt, h, 0 * d + 3, NAN);
  st(dt, h, 1 * d + 5, INFINITY);
  st(dt, h, 2 * d + 1, -INFINITY);
  st(dt, h, 3 * d + 2, -0.0f);
  return h;
}

static int row_has_nan(axs_dtype dt, const void *h, int64_t row, int64_t d) {
  for (int64_t j = 0; j < d; j++)
    if (isnan(ld(dt, h, row + j)))
      return 1;
  return 0;
}

static int row_all_finite(axs_dtype dt, const void *h, int64_t row, int64_t d) {
  for (int64_t j = 0; j < d; j++)
    if (!isfinite(ld(dt, h, row + j)))
      return 0;
  return 1;
}

static void test_nan_policy(void) {
  const int64_t d = 40, n = 6;
  layout_t L = {"nan rows", 1, n, d, 0, d};
  axs_bin no_mask = {NULL, 0, 0};
  axs_fout no_f = {NULL, 0, 0};
  axs_fin no_fin = {NULL, 0, 0};
  for (int t = 0; t < 3; t++) {
    axs_dtype dt = k_dtypes[t];
    float *u = make_unit(d);
    float *w = make_vec(d, 1.0);
    size_t nb;
    void *h = nan_rows(dt, d, &nb);
    void *h0 = xcalloc(nb, 1);
    memcpy(h0, h, nb);
    axs_rows rows = rows_of(&L, dt, h);
    float p[6], pb[6], pa[6];
    uint8_t ch[6];
    axs_fout pf = {p, 0, 1}, pbf = {pb, 0, 1}, paf = {pa, 0, 1};
    axs_bout chb = {ch, 0, 1};

    set_case("NaN policy, %s", dt_name(dt));
    CHECK(axs_project(rows, u, no_mask, pf, 1) == AXS_OK, "project: %s", axs_last_error());
    CHECK(isnan(p[0]), "NaN row: p = %g", (double)p[0]);
    CHECK(!isfinite(p[1]) && !isfinite(p[2]), "inf rows: p = %g, %g", (double)p[1], (double)p[2]);
    CHECK(isfinite(p[3]) && isfinite(p[4]) && isfinite(p[5]), "finite rows: non-finite p");

    /* a floor above every finite row: finite rows move, the others do not */
    float lo = 50.0f;
    axs_fin lof = {&lo, 0, 0};
    CHECK(axs_clamp_(rows, u, lof, no_fin, no_mask, pbf, paf, chb, 1) == AXS_OK, "clamp: %s",
          axs_last_error());
    for (int64_t r = 0; r < 3; r++) {
      CHECK(row_same(&L, dt, h, h0, 0, r), "non-finite row %lld written", (long long)r);
      CHECK(ch[r] == 0, "non-finite row %lld: changed = 1", (long long)r);
      CHECK(!isfinite(pb[r]) && !isfinite(pa[r]), "non-finite row %lld: p_before %g, p_after %g",
            (long long)r, (double)pb[r], (double)pa[r]);
      CHECK(same_bits_f(pb[r], p[r]), "non-finite row %lld: p_before != p", (long long)r);
    }
    for (int64_t r = 3; r < n; r++) {
      CHECK(ch[r] == 1 && row_all_finite(dt, h, r * d, d), "finite row %lld: changed %d, finite %d",
            (long long)r, ch[r], row_all_finite(dt, h, r * d, d));
      CHECK(fabsf(pa[r] - lo) < (dt == AXS_F32 ? 1e-4f : 1.0f),
            "finite row %lld: p_after = %g (floor %g)", (long long)r, (double)pa[r], (double)lo);
    }

    /* NaN bounds never fire: a NaN floor and a NaN ceiling change nothing */
    memcpy(h, h0, nb);
    float nanv = NAN;
    axs_fin nanf = {&nanv, 0, 0};
    CHECK(axs_clamp_(rows, u, nanf, nanf, no_mask, no_f, no_f, chb, 1) == AXS_OK,
          "clamp NaN bounds: %s", axs_last_error());
    CHECK(memcmp(h, h0, nb) == 0, "NaN bounds wrote h");
    for (int64_t r = 0; r < n; r++)
      CHECK(ch[r] == 0, "NaN bounds: changed[%lld] = 1", (long long)r);
    /* a NaN floor with a real ceiling: only the ceiling acts */
    float hi = -50.0f;
    axs_fin hif = {&hi, 0, 0};
    CHECK(axs_clamp_(rows, u, nanf, hif, no_mask, no_f, paf, chb, 1) == AXS_OK,
          "clamp NaN lo, hi = -50: %s", axs_last_error());
    for (int64_t r = 3; r < n; r++)
      CHECK(ch[r] == 1 && fabsf(pa[r] - hi) < (dt == AXS_F32 ? 1e-4f : 1.0f),
            "NaN lo, hi -50: row %lld changed %d p_after %g", (long long)r, ch[r], (double)pa[r]);
    /* infinite open sides are no bounds */
    memcpy(h, h0, nb);
    float minf = -INFINITY, pinf = INFINITY;
    axs_fin minff = {&minf, 0, 0}, pinff = {&pinf, 0, 0};
    CHECK(axs_clamp_(rows, u, minff, pinff, no_mask, no_f, no_f, chb, 1) == AXS_OK,
          "clamp (-inf, inf): %s", axs_last_error());
    CHECK(memcmp(h, h0, nb) == 0, "clamp (-inf, inf) wrote h");
    /* A bound of +inf as floor (or -inf as ceiling): the header says +-inf,
     * like NaN, is "no bound". The rows must stay finite: an infinite bound
     * must not turn a finite row into infinities or NaN. */
    set_case("NaN policy, %s: lo = +inf", dt_name(dt));
    CHECK(axs_clamp_(rows, u, pinff, pinff, no_mask, no_f, no_f, chb, 1) == AXS_OK,
          "clamp (+inf, +inf): %s", axs_last_error());
    for (int64_t r = 3; r < n; r++)
      CHECK(row_all_finite(dt, h, r * d, d),
            "finite row %lld became non-finite under lo = hi = +inf "
            "(changed = %d)",
            (long long)r, ch[r]);
    memcpy(h, h0, nb);
    CHECK(axs_clamp_(rows, u, minff, minff, no_mask, no_f, no_f, chb, 1) == AXS_OK,
          "clamp (-inf, -inf): %s", axs_last_error());
    for (int64_t r = 3; r < n; r++)
      CHECK(row_all_finite(dt, h, r * d, d),
            "finite row %lld became non-finite under lo = hi = -inf "
            "(changed = %d)",
            (long long)r, ch[r]);

    /* set projection: non-finite rows stay; non-finite targets do nothing */
    set_case("NaN policy, %s: set", dt_name(dt));
    memcpy(h, h0, nb);
    float zero = 0.0f;
    axs_fin zf = {&zero, 0, 0};
    CHECK(axs_set_projection_(rows, u, zf, no_mask, pbf, 1) == AXS_OK, "set 0: %s",
          axs_last_error());
    for (int64_t r = 0; r < 3; r++)
      CHECK(row_same(&L, dt, h, h0, 0, r), "set: non-finite row %lld written", (long long)r);
    for (int64_t r = 3; r < n; r++)
      CHECK(!row_same(&L, dt, h, h0, 0, r) && row_all_finite(dt, h, r * d, d),
            "set: finite row %lld not ablated", (long long)r);
    const float bad_targets[3] = {NAN, INFINITY, -INFINITY};
    for (int k = 0; k < 3; k++) {
      memcpy(h, h0, nb);
      axs_fin tf = {&bad_targets[k], 0, 0};
      CHECK(axs_set_projection_(rows, u, tf, no_mask, no_f, 1) == AXS_OK, "set %g: %s",
            (double)bad_targets[k], axs_last_error());
      CHECK(memcmp(h, h0, nb) == 0, "set target %g wrote h", (double)bad_targets[k]);
    }

    /* steer: alpha 0 or non-finite changes nothing (a -0.0 survives) */
    set_case("NaN policy, %s: steer", dt_name(dt));
    const float still[4] = {0.0f, -0.0f, NAN, INFINITY};
    for (int k = 0; k < 4; k++) {
      memcpy(h, h0, nb);
      axs_fin af = {&still[k], 0, 0};
      CHECK(axs_steer_(rows, w, af, no_mask, 1) == AXS_OK, "steer %g: %s", (double)still[k],
            axs_last_error());
      CHECK(memcmp(h, h0, nb) == 0, "steer alpha = %g wrote h", (double)still[k]);
    }
    /* steering a NaN row keeps the NaN where it was and spreads nothing */
    memcpy(h, h0, nb);
    float one = 1.0f;
    axs_fin onef = {&one, 0, 0};
    CHECK(axs_steer_(rows, w, onef, no_mask, 1) == AXS_OK, "steer 1: %s", axs_last_error());
    for (int64_t j = 0; j < d; j++) {
      float x = ld(dt, h, j);
      CHECK(j == 3 ? isnan(x) : isfinite(x), "steered NaN row: x[%lld] = %g", (long long)j,
            (double)x);
    }
    CHECK(ld(dt, h, 1 * d + 5) == INFINITY && ld(dt, h, 2 * d + 1) == -INFINITY,
          "steered inf rows lost their infinities");
    CHECK(!row_has_nan(dt, h, 1 * d, d) || w[5] == 0.0f, "steered +inf row grew a NaN");
    free(u);
    free(w);
    free(h);
    free(h0);
  }

  /* float16 storage overflows to infinity, as documented */
  set_case("float16 overflow on store");
  {
    uint16_t x[4];
    for (int j = 0; j < 4; j++)
      x[j] = axs_f32_to_f16(60000.0f);
    float w[4] = {1.0f, 1.0f, -1.0f, 0.0f};
    float alpha = 10000.0f;
    axs_rows r1 = {x, AXS_F16, 1, 1, 4, 0, 0};
    axs_fin af = {&alpha, 0, 0};
    CHECK(axs_steer_(r1, w, af, no_mask, 1) == AXS_OK, "steer: %s", axs_last_error());
    CHECK(x[0] == 0x7c00 && x[1] == 0x7c00, "60000 + 10000 in float16 = %#x", x[0]);
    /* 50000 is a tie between 49984 and 50016: to even */
    CHECK(axs_f16_to_f32(x[2]) == 49984.0f, "60000 - 10000 = %g", (double)axs_f16_to_f32(x[2]));
    CHECK(x[3] == axs_f32_to_f16(60000.0f), "w = 0 element changed");
  }
}

/* ---- invalid calls
 * ----------------------------------------------------------- */

static int msg_has(const char *needle) {
  return strstr(axs_last_error(), needle) != NULL;
}

static void test_invalid(void) {
  const int64_t d = 24, n = 5;
  float *hbuf = (float *)xcalloc((size_t)(n * d + 64), sizeof(float));
  for (int64_t k = 0; k < n * d; k++)
    hbuf[k] = (float)rng_normal();
  float *h0 = (float *)xcalloc((size_t)(n * d + 64), sizeof(float));
  memcpy(h0, hbuf, (size_t)(n * d + 64) * sizeof(float));
  float *u = make_unit(d);
  axs_rows rows = {hbuf, AXS_F32, 1, n, d, 0, d};
  axs_bin no_mask = {NULL, 0, 0};
  axs_fout no_f = {NULL, 0, 0};
  axs_bout no_b = {NULL, 0, 0};
  axs_fin no_fin = {NULL, 0, 0};
  axs_record no_rec =
      record_of((axs_fout){NULL, 0, 0}, (axs_fout){NULL, 0, 0}, (axs_bout){NULL, 0, 0});
  float two = 2.0f, one = 1.0f;
  axs_fin twof = {&two, 0, 0}, onef = {&one, 0, 0};
  float out[64], out2[64];
  axs_fout outf = {out, 0, 1};
  axs_status s;

/* EXPECT: the status, a message exactly when it failed, the message naming
 * `needle`, and h untouched. EXPECT_W: the same for a call that may write h
 * (h is restored after it). */
#define EXPECT_(call, status, needle, h_kept)                                                      \
  do {                                                                                             \
    s = (call);                                                                                    \
    CHECK(s == (status), "%s: status %d, expected %d (%s)", #call, (int)s, (int)(status),          \
          axs_last_error());                                                                       \
    CHECK((status) == AXS_OK ? axs_last_error()[0] == '\0' : axs_last_error()[0] != '\0',          \
          "%s: message \"%s\"", #call, axs_last_error());                                          \
    CHECK((needle) == NULL || msg_has(needle), "%s: message \"%s\" does not name \"%s\"", #call,   \
          axs_last_error(), (const char *)(needle));                                               \
    if (h_kept)                                                                                    \
      CHECK(memcmp(hbuf, h0, (size_t)(n * d + 64) * sizeof(float)) == 0, "%s changed h", #call);   \
    memcpy(hbuf, h0, (size_t)(n * d + 64) * sizeof(float));                                        \
  } while (0)
#define EXPECT(call, status, needle) EXPECT_(call, status, needle, 1)
#define EXPECT_W(call, status, needle) EXPECT_(call, status, needle, 0)

  set_case("invalid calls");
  /* bounds */
  EXPECT(axs_clamp_(rows, u, twof, onef, no_mask, no_f, no_f, no_b, 1), AXS_EINVAL, "lo");
  {
    float lo[5] = {0, 0, 0, 3, 0}, hi[5] = {1, 1, 1, 1, 1};
    axs_fin lof = {lo, 0, 1}, hif = {hi, 0, 1};
    EXPECT(axs_clamp_(rows, u, lof, hif, no_mask, no_f, no_f, no_b, 1), AXS_EINVAL, "row");
    /* the same bound on a masked row is not read */
    uint8_t m[5] = {1, 1, 1, 0, 1};
    axs_bin mk = {m, 0, 1};
    EXPECT_W(axs_clamp_(rows, u, lof, hif, mk, no_f, no_f, no_b, 1), AXS_OK, NULL);
  }
  /* directions */
  {
    float *v = (float *)xcalloc((size_t)d, sizeof(float));
    EXPECT(axs_project(rows, v, no_mask, outf, 1), AXS_EINVAL, "u");
    EXPECT(axs_project(rows, v, no_mask, outf, 1), AXS_EINVAL, "zero");
    for (int64_t j = 0; j < d; j++)
      v[j] = 2.0f * u[j];
    EXPECT(axs_clamp_(rows, v, onef, no_fin, no_mask, no_f, no_f, no_b, 1), AXS_EINVAL, "norm");
    for (int64_t j = 0; j < d; j++)
      v[j] = u[j] * (1.0f + 0.0009f);
    EXPECT(axs_project(rows, v, no_mask, outf, 1), AXS_OK, NULL);
    for (int64_t j = 0; j < d; j++)
      v[j] = u[j] * (1.0f + 0.0012f);
    EXPECT(axs_project(rows, v, no_mask, outf, 1), AXS_EINVAL, "u");
    memcpy(v, u, (size_t)d * sizeof(float));
    v[7] = NAN;
    EXPECT(axs_set_projection_(rows, v, onef, no_mask, no_f, 1), AXS_EINVAL, "u[7]");
    v[7] = INFINITY;
    EXPECT(axs_steer_(rows, v, onef, no_mask, 1), AXS_EINVAL, "w[7]");
    memset(v, 0, (size_t)d * sizeof(float));
    EXPECT_W(axs_steer_(rows, v, onef, no_mask, 1), AXS_OK, NULL); /* w = 0 */
    EXPECT(axs_project(rows, NULL, no_mask, outf, 1), AXS_EINVAL, "u");
    free(v);
  }
  /* h itself */
  {
    axs_rows r = rows;
    r.d = 0;
    EXPECT(axs_project(r, u, no_mask, outf, 1), AXS_EINVAL, "h");
    r = rows;
    r.n_inner = -1;
    EXPECT(axs_project(r, u, no_mask, outf, 1), AXS_EINVAL, "h");
    r = rows;
    r.stride_inner = -d;
    EXPECT(axs_project(r, u, no_mask, outf, 1), AXS_EINVAL, "h");
    r = rows;
    r.stride_inner = d - 1; /* rows overlap */
    EXPECT(axs_steer_(r, u, onef, no_mask, 1), AXS_EINVAL, "overlap");
    r = rows;
    r.n_outer = 2;
    r.n_inner = 2;
    r.stride_outer = d;
    r.stride_inner = d; /* (0, 1) and (1, 0) are the same row */
    EXPECT(axs_steer_(r, u, onef, no_mask, 1), AXS_EINVAL, "overlap");
    r.stride_outer = d;
    r.stride_inner = 2 * d; /* interleaved, no overlap: fine */
    EXPECT(axs_project(r, u, no_mask, (axs_fout){out, 2, 1}, 1), AXS_OK, NULL);
    r = rows;
    r.data = NULL;
    EXPECT(axs_project(r, u, no_mask, outf, 1), AXS_EINVAL, "NULL");
    r.n_inner = 0; /* no rows: nothing to read */
    EXPECT(axs_project(r, u, no_mask, outf, 1), AXS_OK, NULL);
    r = rows;
    r.dtype = (axs_dtype)7;
    EXPECT(axs_project(r, u, no_mask, outf, 1), AXS_ETYPE, "dtype");
  }
  /* values and outputs */
  EXPECT(axs_set_projection_(rows, u, no_fin, no_mask, no_f, 1), AXS_EINVAL, "target");
  EXPECT(axs_steer_(rows, u, no_fin, no_mask, 1), AXS_EINVAL, "alpha");
  EXPECT(axs_project(rows, u, no_mask, (axs_fout){out, 0, 0}, 1), AXS_EINVAL, "out");
  EXPECT(axs_project(rows, u, no_mask, (axs_fout){out, 0, -1}, 1), AXS_EINVAL, "out");
  EXPECT(axs_clamp_(rows, u, (axs_fin){&one, 0, -1}, no_fin, no_mask, no_f, no_f, no_b, 1),
         AXS_EINVAL, "lo");
  EXPECT(axs_clamp_(rows, u, onef, no_fin, (axs_bin){(uint8_t *)out, 0, -1}, no_f, no_f, no_b, 1),
         AXS_EINVAL, "mask");
  EXPECT(axs_clamp_(rows, u, onef, no_fin, no_mask, outf, outf, no_b, 1), AXS_EINVAL, "overlap");
  EXPECT(axs_clamp_(rows, u, onef, no_fin, no_mask, outf, (axs_fout){out + 4, 0, 1}, no_b, 1),
         AXS_EINVAL, "overlap");
  EXPECT_W(axs_clamp_(rows, u, onef, no_fin, no_mask, outf, (axs_fout){out + 5, 0, 1}, no_b, 1),
           AXS_OK, NULL);
  EXPECT(axs_clamp_(rows, u, onef, no_fin, no_mask, outf, no_f,
                    (axs_bout){(uint8_t *)(void *)(out + 2), 0, 1}, 1),
         AXS_EINVAL, "overlap");
  /* anything overlapping h */
  EXPECT(axs_project(rows, u, no_mask, (axs_fout){hbuf + 3, 0, 1}, 1), AXS_EINVAL, "h");
  EXPECT(axs_project(rows, hbuf + d, no_mask, outf, 1), AXS_EINVAL, "h");
  EXPECT(axs_clamp_(rows, u, (axs_fin){hbuf, 0, 1}, no_fin, no_mask, no_f, no_f, no_b, 1),
         AXS_EINVAL, "lo");
  EXPECT(axs_clamp_(rows, u, onef, no_fin, (axs_bin){(const uint8_t *)(hbuf + 2), 0, 1}, no_f, no_f,
                    no_b, 1),
         AXS_EINVAL, "mask");
  /* axs_apply_ */
  {
    float *u2 = make_unit(d);
    axs_step steps[AXS_MAX_STEPS + 1];
    memset(steps, 0, sizeof steps);
    for (int k = 0; k <= AXS_MAX_STEPS; k++) {
      steps[k].op = AXS_PROJECT;
      steps[k].dir = u;
    }
    EXPECT(axs_apply_(rows, steps, 0, no_mask, no_rec, NULL, 1), AXS_EINVAL, "steps");
    EXPECT(axs_apply_(rows, steps, AXS_MAX_STEPS + 1, no_mask, no_rec, NULL, 1), AXS_EINVAL,
           "steps");
    EXPECT(axs_apply_(rows, steps, AXS_MAX_STEPS, no_mask, no_rec, NULL, 1), AXS_OK, NULL);
    EXPECT(axs_apply_(rows, NULL, 1, no_mask, no_rec, NULL, 1), AXS_EINVAL, "steps");
    steps[1].op = (axs_op)9;
    EXPECT(axs_apply_(rows, steps, 2, no_mask, no_rec, NULL, 1), AXS_ETYPE, "steps[1]");
    steps[1].op = AXS_CLAMP;
    steps[1].dir = u2;
    steps[1].a = twof;
    steps[1].b = onef;
    EXPECT(axs_apply_(rows, steps, 2, no_mask, no_rec, NULL, 1), AXS_EINVAL, "a[1]");
    steps[1].b = no_fin;
    for (int64_t j = 0; j < d; j++)
      u2[j] *= 3.0f;
    EXPECT(axs_apply_(rows, steps, 2, no_mask, no_rec, NULL, 1), AXS_EINVAL, "dirs[1]");
    steps[1].op = AXS_STEER; /* any finite vector may steer */
    EXPECT_W(axs_apply_(rows, steps, 2, no_mask, no_rec, NULL, 1), AXS_OK, NULL);
    steps[1].op = AXS_SET;
    steps[1].dir = u;
    steps[1].a = no_fin;
    EXPECT(axs_apply_(rows, steps, 2, no_mask, no_rec, NULL, 1), AXS_EINVAL, "a[1]");
    steps[1].op = AXS_PROJECT;
    steps[1].p_before = outf;
    axs_record rec =
        record_of((axs_fout){out + 3, 0, 1}, (axs_fout){NULL, 0, 0}, (axs_bout){NULL, 0, 0});
    EXPECT(axs_apply_(rows, steps, 2, no_mask, rec, NULL, 1), AXS_EINVAL, "overlap");
    rec.p_in.data = out2;
    rec.p_out.data = out2;
    rec.p_out.stride_inner = 1;
    EXPECT(axs_apply_(rows, steps, 2, no_mask, rec, NULL, 1), AXS_EINVAL, "overlap");
    free(u2);
  }
  /* a failure's message is cleared by the next success */
  EXPECT(axs_clamp_(rows, u, twof, onef, no_mask, no_f, no_f, no_b, 1), AXS_EINVAL, NULL);
  EXPECT(axs_project(rows, u, no_mask, outf, 1), AXS_OK, NULL);
#undef EXPECT
#undef EXPECT_W
#undef EXPECT_
  free(hbuf);
  free(h0);
  free(u);
}

/* ---- threads, and axs_apply_ against one call per step
 * ------------------------ */

typedef struct {
  float p_before[4][1000], p_after[4][1000], p_in[1000], p_out[1000];
  uint8_t changed[4][1000], fired[1000];
} prog_out;

/* [clamp u1 band, set u2, steer w, clamp u1 floor] with recording */
static axs_status run_program(axs_rows rows, const float *u1, const float *u2, const float *w,
                              axs_fin lo, axs_fin hi, axs_fin target, axs_fin alpha, axs_fin floor_,
                              axs_bin mask, prog_out *po, int threads) {
  axs_step s[4];
  memset(s, 0, sizeof s);
  s[0].op = AXS_CLAMP;
  s[0].dir = u1;
  s[0].a = lo;
  s[0].b = hi;
  s[1].op = AXS_SET;
  s[1].dir = u2;
  s[1].a = target;
  s[2].op = AXS_STEER;
  s[2].dir = w;
  s[2].a = alpha;
  s[3].op = AXS_CLAMP;
  s[3].dir = u1;
  s[3].a = floor_;
  int64_t si = 1, so = rows.n_inner;
  for (int k = 0; k < 4; k++) {
    s[k].p_before = (axs_fout){po->p_before[k], so, si};
    s[k].p_after = (axs_fout){po->p_after[k], so, si};
    s[k].changed = (axs_bout){po->changed[k], so, si};
  }
  axs_record rec = record_of((axs_fout){po->p_in, so, si}, (axs_fout){po->p_out, so, si},
                             (axs_bout){po->fired, so, si});
  return axs_apply_(rows, s, 4, mask, rec, NULL, threads);
}

static void test_threads_and_apply(void) {
  /* 2 x 300 rows of 256 = 153600 elements, above AXS_PARALLEL_MIN_ELEMS */
  layout_t L = {"(2, 300, 256) padded", 2, 300, 256, 300 * 260 + 5, 260};
  const int64_t d = L.d, n = L.no * L.ni;
  CHECK(n * d >= AXS_PARALLEL_MIN_ELEMS, "test size below the threshold");
  CHECK(axs_default_threads() >= 1, "axs_default_threads() = %d", axs_default_threads());
  for (int t = 0; t < 3; t++) {
    axs_dtype dt = k_dtypes[t];
    set_case("threads and apply, %s", dt_name(dt));
    size_t nb;
    void *h0 = make_h(&L, dt, 1.0, &nb);
    float *u1 = make_unit(d), *u2 = make_unit(d), *w = make_vec(d, 0.05);
    rowvals lo = make_vals(&L, BC_FULL, -0.3, 0.5);
    rowvals hi = make_vals(&L, BC_FULL, 0.0, 0.5);
    add_abs_of(&hi, &lo, &L);
    rowvals target = make_vals(&L, BC_OUTER, 0.0, 1.0);
    rowvals alpha = make_vals(&L, BC_INNER, 0.0, 2.0);
    float fl = -0.2f;
    axs_fin floor_ = {&fl, 0, 0};
    uint8_t *m = (uint8_t *)xcalloc((size_t)n, 1);
    for (int64_t k = 0; k < n; k++)
      m[k] = (uint8_t)(k % 7 != 3);
    axs_bin mask = {m, L.ni, 1};

    /* identical bytes for 1, 2 and 4 threads */
    void *hs[3];
    prog_out *pos[3];
    const int nth[3] = {1, 2, 4};
    for (int q = 0; q < 3; q++) {
      hs[q] = xcalloc(nb, 1);
      memcpy(hs[q], h0, nb);
      pos[q] = (prog_out *)xcalloc(1, sizeof(prog_out));
      axs_status s = run_program(rows_of(&L, dt, hs[q]), u1, u2, w, lo.fin, hi.fin, target.fin,
                                 alpha.fin, floor_, mask, pos[q], nth[q]);
      CHECK(s == AXS_OK, "program, %d threads: %s", nth[q], axs_last_error());
    }
    for (int q = 1; q < 3; q++) {
      CHECK(memcmp(hs[0], hs[q], nb) == 0, "h differs: 1 vs %d threads", nth[q]);
      CHECK(memcmp(pos[0], pos[q], sizeof(prog_out)) == 0, "outputs differ: 1 vs %d threads",
            nth[q]);
    }
    /* each single-op entry point too */
    for (int op = 0; op < 4; op++) {
      void *hh[3];
      float *pp[3];
      for (int q = 0; q < 3; q++) {
        hh[q] = xcalloc(nb, 1);
        memcpy(hh[q], h0, nb);
        pp[q] = (float *)xcalloc((size_t)n, sizeof(float));
        axs_rows r = rows_of(&L, dt, hh[q]);
        axs_fout pf = {pp[q], L.ni, 1};
        axs_fout no_f = {NULL, 0, 0};
        axs_bout no_b = {NULL, 0, 0};
        axs_status s = op == 0   ? axs_project(r, u1, mask, pf, nth[q])
                       : op == 1 ? axs_clamp_(r, u1, lo.fin, hi.fin, mask, pf, no_f, no_b, nth[q])
                       : op == 2 ? axs_set_projection_(r, u2, target.fin, mask, pf, nth[q])
                                 : axs_steer_(r, w, alpha.fin, mask, nth[q]);
        CHECK(s == AXS_OK, "%s with %d threads: %s", k_op_names[op], nth[q], axs_last_error());
      }
      for (int q = 1; q < 3; q++) {
        CHECK(memcmp(hh[0], hh[q], nb) == 0, "%s: h differs, 1 vs %d threads", k_op_names[op],
              nth[q]);
        if (op != 3)
          CHECK(memcmp(pp[0], pp[q], (size_t)n * sizeof(float)) == 0,
                "%s: p differs, 1 vs %d threads", k_op_names[op], nth[q]);
      }
      for (int q = 0; q < 3; q++) {
        free(hh[q]);
        free(pp[q]);
      }
    }

    /* the same steps, one call each, give the same bytes */
    void *hq = xcalloc(nb, 1);
    memcpy(hq, h0, nb);
    axs_rows r = rows_of(&L, dt, hq);
    static float pin[1000], pb0[1000], pa0[1000], pb1[1000], pb3[1000], pa3[1000], pout[1000];
    static uint8_t ch0[1000], ch3[1000];
    axs_fout no_f = {NULL, 0, 0};
    CHECK(axs_project(r, u1, mask, (axs_fout){pin, L.ni, 1}, 1) == AXS_OK, "project: %s",
          axs_last_error());
    CHECK(axs_clamp_(r, u1, lo.fin, hi.fin, mask, (axs_fout){pb0, L.ni, 1},
                     (axs_fout){pa0, L.ni, 1}, (axs_bout){ch0, L.ni, 1}, 1) == AXS_OK,
          "clamp: %s", axs_last_error());
    CHECK(axs_set_projection_(r, u2, target.fin, mask, (axs_fout){pb1, L.ni, 1}, 1) == AXS_OK,
          "set: %s", axs_last_error());
    CHECK(axs_steer_(r, w, alpha.fin, mask, 1) == AXS_OK, "steer: %s", axs_last_error());
    CHECK(axs_clamp_(r, u1, floor_, (axs_fin){NULL, 0, 0}, mask, (axs_fout){pb3, L.ni, 1},
                     (axs_fout){pa3, L.ni, 1}, (axs_bout){ch3, L.ni, 1}, 1) == AXS_OK,
          "floor: %s", axs_last_error());
    CHECK(axs_project(r, u1, mask, (axs_fout){pout, L.ni, 1}, 1) == AXS_OK, "project after: %s",
          axs_last_error());
    (void)no_f;
    CHECK(memcmp(hq, hs[0], nb) == 0, "apply_ and single calls differ in h");
    const prog_out *po = pos[0];
    int same_in = 1, same_out = 1, same_steps = 1, fired_ok = 1;
    long n_fired = 0;
    for (int64_t k = 0; k < n; k++) {
      same_in &= same_bits_f(po->p_in[k], pin[k]);
      same_out &= same_bits_f(po->p_out[k], pout[k]);
      same_steps &= same_bits_f(po->p_before[0][k], pb0[k]) &&
                    same_bits_f(po->p_after[0][k], pa0[k]) && po->changed[0][k] == ch0[k] &&
                    same_bits_f(po->p_before[1][k], pb1[k]) &&
                    same_bits_f(po->p_before[3][k], pb3[k]) &&
                    same_bits_f(po->p_after[3][k], pa3[k]) && po->changed[3][k] == ch3[k];
      fired_ok &= po->fired[k] == (ch0[k] | ch3[k]);
      n_fired += po->fired[k];
    }
    CHECK(same_in, "p_in != project before");
    CHECK(same_out, "p_out != project after");
    CHECK(same_steps, "per-step outputs != single-call outputs");
    CHECK(fired_ok, "fired != any clamp changed");
    CHECK(n_fired > 0 && n_fired < n, "fired on %ld of %lld rows", n_fired, (long long)n);

    /* step 0 a steer: p_in and p_out are projections on its raw w */
    {
      layout_t S = {"small", 1, 3, 20, 0, 20};
      size_t nbs;
      void *hsm = make_h(&S, dt, 1.0, &nbs);
      void *hsm0 = xcalloc(nbs, 1);
      memcpy(hsm0, hsm, nbs);
      float *ws = make_vec(20, 2.0);
      float al = 0.5f, q_in[3], q_out[3];
      uint8_t fi[3];
      axs_step s1;
      memset(&s1, 0, sizeof s1);
      s1.op = AXS_STEER;
      s1.dir = ws;
      s1.a = (axs_fin){&al, 0, 0};
      axs_record rec =
          record_of((axs_fout){q_in, 0, 1}, (axs_fout){q_out, 0, 1}, (axs_bout){fi, 0, 1});
      axs_bin nm = {NULL, 0, 0};
      CHECK(axs_apply_(rows_of(&S, dt, hsm), &s1, 1, nm, rec, NULL, 1) == AXS_OK,
            "steer program: %s", axs_last_error());
      for (int64_t i = 0; i < 3; i++) {
        proj_ref a0 = ref_project(dt, hsm0, i * 20, ws, 20);
        proj_ref a1 = ref_project(dt, hsm, i * 20, ws, 20);
        CHECK(fabs(q_in[i] - a0.p) <= dot_tol(20, a0.sabs), "steer p_in[%lld] = %g, reference %g",
              (long long)i, (double)q_in[i], a0.p);
        CHECK(fabs(q_out[i] - a1.p) <= dot_tol(20, a1.sabs), "steer p_out[%lld] = %g, reference %g",
              (long long)i, (double)q_out[i], a1.p);
        CHECK(fi[i] == 0, "steer fired");
      }
      free(hsm);
      free(hsm0);
      free(ws);
    }

    for (int q = 0; q < 3; q++) {
      free(hs[q]);
      free(pos[q]);
    }
    free(hq);
    free(h0);
    free(u1);
    free(u2);
    free(w);
    free(m);
    free_vals(&lo);
    free_vals(&hi);
    free_vals(&target);
    free_vals(&alpha);
  }
}

/* A record with an offset: row (o, i) lands in column *offset + i of outputs
 * with `capacity` columns; columns outside [0, capacity) are not written. */
static void test_record_offset(void) {
  set_case("record offset");
  const int64_t no = 2, ni = 4, d = 24, cap = 8;
  layout_t L = {"(2, 4, 24)", no, ni, d, ni * d, d};
  size_t nb;
  float *h = (float *)make_h(&L, AXS_F32, 1.0, &nb);
  float *u = make_unit(d);
  float p_ref[8], lo = 0.3f;
  axs_bin nm = {NULL, 0, 0};
  CHECK(axs_project(rows_of(&L, AXS_F32, h), u, nm, (axs_fout){p_ref, ni, 1}, 1) == AXS_OK,
        "project: %s", axs_last_error());
  const int64_t offsets[4] = {0, 5, -2, 9};
  for (int k = 0; k < 4; k++) {
    float *hc = (float *)xcalloc(nb, 1);
    memcpy(hc, h, nb);
    float p_in[2 * 8];
    uint8_t fired[2 * 8];
    for (int j = 0; j < 16; j++) {
      p_in[j] = k_fsentinel;
      fired[j] = k_bsentinel;
    }
    axs_step s;
    memset(&s, 0, sizeof s);
    s.op = AXS_CLAMP;
    s.dir = u;
    s.a = (axs_fin){&lo, 0, 0};
    axs_record rec =
        record_of((axs_fout){p_in, cap, 1}, (axs_fout){NULL, 0, 0}, (axs_bout){fired, cap, 1});
    rec.offset = &offsets[k];
    rec.capacity = cap;
    CHECK(axs_apply_(rows_of(&L, AXS_F32, hc), &s, 1, nm, rec, NULL, 1) == AXS_OK,
          "offset %lld: %s", (long long)offsets[k], axs_last_error());
    for (int64_t o = 0; o < no; o++)
      for (int64_t c = 0; c < cap; c++) {
        int64_t i = c - offsets[k];
        float got = p_in[o * cap + c];
        if (i >= 0 && i < ni) {
          CHECK(same_bits_f(got, p_ref[o * ni + i]),
                "offset %lld: p_in[%lld][%lld] = %g, expected %g", (long long)offsets[k],
                (long long)o, (long long)c, (double)got, (double)p_ref[o * ni + i]);
          CHECK(fired[o * cap + c] == (p_ref[o * ni + i] < lo),
                "offset %lld: fired[%lld][%lld] = %d", (long long)offsets[k], (long long)o,
                (long long)c, fired[o * cap + c]);
        } else {
          CHECK(same_bits_f(got, k_fsentinel) && fired[o * cap + c] == k_bsentinel,
                "offset %lld: column %lld written", (long long)offsets[k], (long long)c);
        }
      }
    free(hc);
  }
  /* a negative capacity is refused */
  float p_in[16];
  axs_step s;
  memset(&s, 0, sizeof s);
  s.op = AXS_PROJECT;
  s.dir = u;
  axs_record rec =
      record_of((axs_fout){p_in, cap, 1}, (axs_fout){NULL, 0, 0}, (axs_bout){NULL, 0, 0});
  rec.offset = &offsets[0];
  rec.capacity = -1;
  CHECK(axs_apply_(rows_of(&L, AXS_F32, h), &s, 1, nm, rec, NULL, 1) == AXS_EINVAL &&
            axs_last_error()[0] != '\0',
        "capacity -1 accepted");
  free(h);
  free(u);
}

/* The dot product has one summation order: the same row at any address, and
 * any thread count, gives the same bits. */
static void test_fixed_order(void) {
  set_case("fixed summation order");
  const int64_t d = 203;
  float *u = make_unit(d);
  float *buf = (float *)xcalloc((size_t)(d + 16), sizeof(float));
  float *row = make_vec(d, 3.0);
  float ref = 0.0f;
  for (int off = 0; off < 9; off++) {
    memset(buf, 0, (size_t)(d + 16) * sizeof(float));
    memcpy(buf + off, row, (size_t)d * sizeof(float));
    axs_rows r = {buf + off, AXS_F32, 1, 1, d, 0, 0};
    float p;
    axs_bin nm = {NULL, 0, 0};
    CHECK(axs_project(r, u, nm, (axs_fout){&p, 0, 0}, 1) == AXS_OK, "project: %s",
          axs_last_error());
    if (off == 0)
      ref = p;
    CHECK(same_bits_f(p, ref), "offset %d: p = %.9g, at offset 0 %.9g", off, (double)p,
          (double)ref);
  }
  free(u);
  free(buf);
  free(row);
}

/* ---- conversions
 * -------------------------------------------------------------- */

/* float16 bits -> value, from the definition */
static double ref_f16_value(uint16_t x) {
  int sign = x >> 15, e = (x >> 10) & 31, m = x & 1023;
  double v;
  if (e == 0)
    v = ldexp((double)m, -24);
  else if (e == 31)
    v = m ? NAN : INFINITY;
  else
    v = ldexp(1.0 + m / 1024.0, e - 15);
  return sign ? -v : v;
}

/* round to nearest even at quantum q (a power of two) */
static double rne(double a, double q) {
  return nearbyint(a / q) * q;
}

static double ref_f16_round(float f) {
  if (isnan(f))
    return NAN;
  double a = fabs((double)f);
  double q = a < 0x1p-14 ? 0x1p-24 : ldexp(1.0, ilogb(a) - 10);
  double r = a >= 65520.0 ? INFINITY : rne(a, q);
  return signbit(f) ? -r : r;
}

static double ref_bf16_round(float f) {
  if (isnan(f))
    return NAN;
  double a = fabs((double)f);
  if (isinf(a))
    return f;
  double q = a < 0x1p-126 ? 0x1p-133 : ldexp(1.0, ilogb(a) - 7);
  double r = a == 0 ? 0 : rne(a, q);
  if (r >= 0x1p128)
    r = INFINITY;
  return signbit(f) ? -r : r;
}

static int same_value(double got, double want) {
  if (isnan(want))
    return isnan(got);
  return got == want && signbit(got) == signbit(want);
}

static void check_f16(float f) {
  uint16_t h = axs_f32_to_f16(f);
  double got = (double)axs_f16_to_f32(h), want = ref_f16_round(f);
  CHECK(same_value(got, want), "f32 %a (%#x) -> f16 %#x = %a, expected %a", (double)f,
        axs_f32_bits(f), h, got, want);
  if (isnan(f))
    CHECK((h & 0x7e00) == 0x7e00 && (h >> 15) == (axs_f32_bits(f) >> 31),
          "NaN %#x -> f16 %#x (expected a quiet NaN with the sign)", axs_f32_bits(f), h);
}

static void check_bf16(float f) {
  uint16_t h = axs_f32_to_bf16(f);
  double got = (double)axs_bf16_to_f32(h), want = ref_bf16_round(f);
  CHECK(same_value(got, want), "f32 %a (%#x) -> bf16 %#x = %a, expected %a", (double)f,
        axs_f32_bits(f), h, got, want);
  if (isnan(f))
    CHECK((h & 0x7fc0) == 0x7fc0 && (h >> 15) == (axs_f32_bits(f) >> 31),
          "NaN %#x -> bf16 %#x (expected a quiet NaN with the sign)", axs_f32_bits(f), h);
}

static void test_conversions(void) {
  set_case("float16 <-> float32");
  long bad = g_failures;
  for (uint32_t x = 0; x < 65536; x++) {
    uint16_t h = (uint16_t)x;
    float f = axs_f16_to_f32(h);
    CHECK(same_value((double)f, ref_f16_value(h)), "f16 %#x -> %a, expected %a", h, (double)f,
          ref_f16_value(h));
    if (!isnan(f))
      CHECK(axs_f32_to_f16(f) == h, "f16 %#x does not round-trip (%#x)", h, axs_f32_to_f16(f));
    else
      CHECK((axs_f32_to_f16(f) & 0x7e00) == 0x7e00, "f16 NaN %#x came back as %#x", h,
            axs_f32_to_f16(f));
    /* ties between neighbours go to even; just off a tie goes to the near
     * side (covers subnormals and the step to infinity) */
    int e = (h >> 10) & 31;
    if (e < 31 && (h & 0x7fff) != 0x7bff) {
      double lo = ref_f16_value(h), hi = ref_f16_value((uint16_t)(h + 1));
      float mid = (float)((lo + hi) / 2); /* exact in float32 */
      check_f16(mid);
      check_f16(nextafterf(mid, 0.0f));
      check_f16(nextafterf(mid, (float)(lo + hi)));
    }
    if (g_failures - bad > 20)
      break;
  }
  check_f16(65504.0f);
  check_f16(65519.996f);
  check_f16(65520.0f);
  check_f16(65536.0f);
  check_f16(1e10f);
  check_f16(FLT_MAX);
  check_f16(-FLT_MAX);
  check_f16(INFINITY);
  check_f16(-INFINITY);
  check_f16(0x1p-25f); /* tie between 0 and the smallest subnormal: 0 */
  check_f16(0x1.8p-25f);
  check_f16(0x1p-26f);
  check_f16(FLT_MIN);
  check_f16(0x1p-149f);
  check_f16(-0.0f);
  check_f16(axs_bits_f32(0x7f800001u)); /* signalling NaN */
  check_f16(axs_bits_f32(0xffc00000u));
  CHECK(axs_f32_to_f16(65520.0f) == 0x7c00, "65520 -> %#x", axs_f32_to_f16(65520.0f));
  CHECK(axs_f32_to_f16(0x1p-24f) == 0x0001, "2^-24 -> %#x", axs_f32_to_f16(0x1p-24f));
  CHECK(axs_f32_to_f16(-0.0f) == 0x8000, "-0 -> %#x", axs_f32_to_f16(-0.0f));

  set_case("bfloat16 <-> float32");
  bad = g_failures;
  for (uint32_t x = 0; x < 65536; x++) {
    uint16_t h = (uint16_t)x;
    float f = axs_bf16_to_f32(h);
    CHECK(axs_f32_bits(f) == x << 16, "bf16 %#x -> %#x", h, axs_f32_bits(f));
    if (!isnan(f))
      CHECK(axs_f32_to_bf16(f) == h, "bf16 %#x does not round-trip (%#x)", h, axs_f32_to_bf16(f));
    else
      CHECK(isnan(axs_bf16_to_f32(axs_f32_to_bf16(f))), "bf16 NaN %#x came back as %#x", h,
            axs_f32_to_bf16(f));
    if ((h & 0x7f80) != 0x7f80 && (h & 0x7fff) != 0x7f7f) {
      double lo = (double)f, hi = (double)axs_bf16_to_f32((uint16_t)(h + 1));
      float mid = (float)((lo + hi) / 2);
      check_bf16(mid);
      check_bf16(nextafterf(mid, 0.0f));
      check_bf16(nextafterf(mid, (float)(lo + hi)));
    }
    if (g_failures - bad > 20)
      break;
  }
  check_bf16(FLT_MAX); /* rounds up to infinity */
  check_bf16(axs_bits_f32(0x7f7f7fffu));
  check_bf16(axs_bits_f32(0x7f7f8000u)); /* tie at the top: to infinity */
  check_bf16(axs_bits_f32(0x7f800001u)); /* signalling NaN, payload low */
  check_bf16(axs_bits_f32(0xff800001u));
  check_bf16(0x1p-149f);
  check_bf16(0x1p-133f);
  check_bf16(0x1.8p-133f);

  /* a sweep over float32 bit patterns */
  set_case("float32 sweep");
  bad = g_failures;
  for (uint64_t x = 0; x < 0x100000000ull; x += 1531) {
    float f = axs_bits_f32((uint32_t)x);
    check_f16(f);
    check_bf16(f);
    if (g_failures - bad > 20)
      break;
  }
}

/* ---- overflow: updates whose exact result fits stay finite
 * ------------------------------------------- */

/* h[r] + c w where c = t - p (or alpha times w[j]) overflows float32 although
 * the result fits: the row gets the result, not inf or NaN (axis_steer.h,
 * "Overflow"). A result beyond the range is +-inf, never NaN. */
static int near_rel(float got, float want) {
  return isfinite(got) && fabs((double)got - (double)want) <= fabs((double)want) * 0x1p-7;
}

static void test_update_overflow(void) {
  const int64_t d = 4;
  axs_bin nm = {NULL, 0, 0};
  axs_fout no_f = {NULL, 0, 0};
  axs_fin no_fin = {NULL, 0, 0};
  float e0[4] = {1.0f, 0.0f, 0.0f, 0.0f};
  float u68[4] = {0.6f, 0.8f, 0.0f, 0.0f};
  float big = 2e38f, nbig = -2e38f;
  axs_fin bigf = {&big, 0, 0}, nbigf = {&nbig, 0, 0};
  float pb[2], pa[2];
  uint8_t ch[2];
  axs_fout pbf = {pb, 0, 1}, paf = {pa, 0, 1};
  axs_bout chb = {ch, 0, 1};
  for (int t = 0; t < 3; t++) {
    axs_dtype dt = k_dtypes[t];
    if (dt == AXS_F16)
      continue; /* float16 cannot hold 2e38 */
    set_case("update overflow, %s", dt_name(dt));
    unsigned char buf[2 * 4 * 4];
    axs_rows rows = {buf, dt, 1, 2, d, 0, d};
    /* floor 2e38 on a row at -2e38: t - p = 4e38 */
    for (int64_t j = 0; j < 2 * d; j++)
      st(dt, buf, j, 0.0f);
    st(dt, buf, 0, -2e38f);
    st(dt, buf, d, 1.0f);
    CHECK(axs_clamp_(rows, e0, bigf, no_fin, nm, pbf, paf, chb, 1) == AXS_OK, "clamp: %s",
          axs_last_error());
    CHECK(near_rel(ld(dt, buf, 0), 2e38f), "floor 2e38 on -2e38: h[0] = %g",
          (double)ld(dt, buf, 0));
    for (int64_t j = 1; j < 2 * d; j++)
      CHECK(isfinite(ld(dt, buf, j)), "floor 2e38: h[%lld] = %g", (long long)j,
            (double)ld(dt, buf, j));
    CHECK(ch[0] == 1 && near_rel(pb[0], -2e38f) && near_rel(pa[0], 2e38f),
          "floor: changed %d p_before %g p_after %g", ch[0], (double)pb[0], (double)pa[0]);
    CHECK(ch[1] == 1 && near_rel(ld(dt, buf, d), 2e38f), "row 1 under the floor 2e38: %g",
          (double)ld(dt, buf, d));
    /* a ceiling -2e38 on a row at 2e38, along a direction with no zero
     * components on the row: t - p = -4e38 */
    for (int64_t j = 0; j < 2 * d; j++)
      st(dt, buf, j, 0.0f);
    st(dt, buf, 0, 1.2e38f);
    st(dt, buf, 1, 1.6e38f);
    CHECK(axs_clamp_(rows, u68, no_fin, nbigf, nm, no_f, paf, chb, 1) == AXS_OK, "ceiling: %s",
          axs_last_error());
    CHECK(near_rel(ld(dt, buf, 0), -1.2e38f) && near_rel(ld(dt, buf, 1), -1.6e38f),
          "ceiling -2e38 on 2e38: h[0:2] = %g, %g", (double)ld(dt, buf, 0), (double)ld(dt, buf, 1));
    CHECK(ch[0] == 1 && near_rel(pa[0], -2e38f), "ceiling: changed %d p_after %g", ch[0],
          (double)pa[0]);
    /* set projection from -2e38 to 2e38 */
    for (int64_t j = 0; j < 2 * d; j++)
      st(dt, buf, j, 0.0f);
    st(dt, buf, 0, -2e38f);
    CHECK(axs_set_projection_(rows, e0, bigf, nm, no_f, 1) == AXS_OK, "set: %s", axs_last_error());
    CHECK(near_rel(ld(dt, buf, 0), 2e38f), "set 2e38 on -2e38: h[0] = %g", (double)ld(dt, buf, 0));
    for (int64_t j = 1; j < 2 * d; j++)
      CHECK(isfinite(ld(dt, buf, j)), "set 2e38: h[%lld] = %g", (long long)j,
            (double)ld(dt, buf, j));
    /* steering: alpha * w[j] = 6e38 overflows, x + alpha w[j] = 3e38 fits */
    for (int64_t j = 0; j < 2 * d; j++)
      st(dt, buf, j, 0.0f);
    st(dt, buf, 0, -3e38f);
    float w[4] = {2e38f, 0.0f, 1.0f, 0.0f}, three = 3.0f;
    axs_fin threef = {&three, 0, 0};
    CHECK(axs_steer_(rows, w, threef, nm, 1) == AXS_OK, "steer: %s", axs_last_error());
    CHECK(near_rel(ld(dt, buf, 0), 3e38f) && ld(dt, buf, 2) == 3.0f && ld(dt, buf, 1) == 0.0f,
          "steer 3 * 2e38 on -3e38: h[0:3] = %g, %g, %g", (double)ld(dt, buf, 0),
          (double)ld(dt, buf, 1), (double)ld(dt, buf, 2));
    /* the exact result beyond the range: +inf in that element, nothing NaN */
    for (int64_t j = 0; j < 2 * d; j++)
      st(dt, buf, j, 0.0f);
    st(dt, buf, 0, 3e38f); /* p = 1.8e38, floor 3e38 moves h[0] to 3.72e38 */
    float three38 = 3e38f;
    axs_fin t38 = {&three38, 0, 0};
    CHECK(axs_clamp_(rows, u68, t38, no_fin, nm, no_f, paf, chb, 1) == AXS_OK, "clamp: %s",
          axs_last_error());
    CHECK(ld(dt, buf, 0) == INFINITY && isfinite(ld(dt, buf, 1)) && ch[0] == 1,
          "beyond the range: h[0:2] = %g, %g, changed %d", (double)ld(dt, buf, 0),
          (double)ld(dt, buf, 1), ch[0]);
    /* a row whose float32 projection overflows is not finite: never written */
    for (int64_t j = 0; j < 2 * d; j++)
      st(dt, buf, j, 0.0f);
    st(dt, buf, 0, 3e38f);
    st(dt, buf, 1, 3e38f); /* p = 4.2e38 */
    unsigned char before[sizeof buf];
    memcpy(before, buf, sizeof buf);
    float zero = 0.0f;
    axs_fin zf = {&zero, 0, 0};
    CHECK(axs_clamp_(rows, u68, no_fin, zf, nm, pbf, no_f, chb, 1) == AXS_OK, "clamp: %s",
          axs_last_error());
    CHECK(memcmp(buf, before, 2 * (size_t)d * dt_size(dt)) == 0 && ch[0] == 0 && pb[0] == INFINITY,
          "overflowing projection: changed %d, p_before %g", ch[0], (double)pb[0]);
  }
  /* the same program through axs_apply_ gives the same bits as the single
   * calls (one code path) */
  set_case("update overflow, apply_");
  {
    float a[8] = {-2e38f, 0, 0, 0, 0.5f, 0, 0, 0}, b[8];
    memcpy(b, a, sizeof a);
    axs_rows ra = {a, AXS_F32, 1, 2, d, 0, d}, rb = {b, AXS_F32, 1, 2, d, 0, d};
    axs_step s[2];
    memset(s, 0, sizeof s);
    s[0].op = AXS_CLAMP;
    s[0].dir = e0;
    s[0].a = bigf;
    s[1].op = AXS_SET;
    s[1].dir = e0;
    s[1].a = nbigf;
    CHECK(axs_apply_(ra, s, 2, nm, record_of(no_f, no_f, (axs_bout){NULL, 0, 0}), NULL, 1) ==
              AXS_OK,
          "apply: %s", axs_last_error());
    CHECK(axs_clamp_(rb, e0, bigf, no_fin, nm, no_f, no_f, (axs_bout){NULL, 0, 0}, 1) == AXS_OK &&
              axs_set_projection_(rb, e0, nbigf, nm, no_f, 1) == AXS_OK,
          "single calls: %s", axs_last_error());
    CHECK(memcmp(a, b, sizeof a) == 0 && a[0] == -2e38f && a[4] == -2e38f,
          "apply vs single calls: %g %g / %g %g", (double)a[0], (double)a[4], (double)b[0],
          (double)b[4]);
  }
}

/* ---- sizes whose byte extent overflows
 * ------------------------------------------------------- */

/* Rejected before any memory is touched, with arithmetic that cannot
 * overflow itself (this runs under UBSan with -fno-sanitize-recover). */
static void test_size_overflow(void) {
  set_case("size overflow");
  const int64_t d = 24;
  float *h = (float *)xcalloc((size_t)(4 * d), sizeof(float));
  float *u = make_unit(d);
  float out[8] = {0}, one = 1.0f;
  uint8_t m[8] = {1, 1, 1, 1, 1, 1, 1, 1};
  axs_bin nm = {NULL, 0, 0};
  axs_fout no_f = {NULL, 0, 0};
  axs_bout no_b = {NULL, 0, 0};
  axs_fin no_fin = {NULL, 0, 0}, onef = {&one, 0, 0};
  axs_fout outf = {out, 0, 1};
  const int64_t big = INT64_MAX;
  struct {
    const char *what;
    axs_rows rows;
    const char *needle;
  } bad_rows[] = {
      {"n_outer = n_inner = INT64_MAX", {h, AXS_F32, big, big, 1, 0, 0}, "rows"},
      {"n_outer * n_inner > INT64_MAX",
       {h, AXS_F32, 1LL << 32, 1LL << 32, 1, 1LL << 32, 1},
       "rows"},
      {"stride_outer = INT64_MAX / 2", {h, AXS_F32, 3, 1, d, big / 2, d}, "byte extent"},
      {"stride_inner = INT64_MAX", {h, AXS_F32, 1, 2, d, 0, big}, "byte extent"},
      {"bytes > PTRDIFF_MAX", {h, AXS_F32, 2, 1, d, big / 4 + 1, d}, "byte extent"},
      {"d = INT64_MAX", {h, AXS_F32, 1, 1, big, 0, 0}, "byte extent"},
      {"rows of INT64_MAX", {h, AXS_F32, 1, big, 1, 0, 1}, "byte extent"},
      {"extent wraps the address space",
       {(void *)(uintptr_t)(UINTPTR_MAX - 15), AXS_F32, 1, 1, d, 0, 0},
       "byte extent"},
  };
  for (size_t k = 0; k < sizeof bad_rows / sizeof bad_rows[0]; k++) {
    axs_status s = axs_project(bad_rows[k].rows, u, nm, outf, 1);
    CHECK(s == AXS_EINVAL && strstr(axs_last_error(), bad_rows[k].needle) != NULL &&
              strncmp(axs_last_error(), "h: ", 3) == 0,
          "%s: status %d, message \"%s\"", bad_rows[k].what, (int)s, axs_last_error());
  }
  /* per-row values, outputs, mask and record: strides that overflow */
  axs_rows rows = {h, AXS_F32, 1, 4, d, 0, d};
  struct {
    const char *what;
    axs_status st;
    const char *needle;
  } r[8];
  int n = 0;
  r[n].what = "lo stride INT64_MAX";
  r[n].st = axs_clamp_(rows, u, (axs_fin){&one, 0, big}, no_fin, nm, no_f, no_f, no_b, 1);
  r[n++].needle = "lo: ";
  r[n].what = "target stride INT64_MAX / 3";
  r[n].st = axs_set_projection_(rows, u, (axs_fin){&one, 0, big / 3}, nm, no_f, 1);
  r[n++].needle = "target: ";
  r[n].what = "p_before stride INT64_MAX / 4";
  r[n].st = axs_clamp_(rows, u, onef, no_fin, nm, (axs_fout){out, 0, big / 4}, no_f, no_b, 1);
  r[n++].needle = "p_before: ";
  r[n].what = "changed stride INT64_MAX / 2";
  r[n].st = axs_clamp_(rows, u, onef, no_fin, nm, no_f, no_f, (axs_bout){m, 0, big / 2}, 1);
  r[n++].needle = "changed: ";
  r[n].what = "mask stride INT64_MAX / 2";
  r[n].st = axs_steer_(rows, u, onef, (axs_bin){m, 0, big / 2}, 1);
  r[n++].needle = "mask: ";
  {
    axs_step s;
    memset(&s, 0, sizeof s);
    s.op = AXS_PROJECT;
    s.dir = u;
    int64_t off = 0;
    axs_record rec = record_of((axs_fout){out, 0, 1}, no_f, no_b);
    rec.offset = &off;
    rec.capacity = big; /* capacity columns of 4 bytes */
    r[n].what = "record capacity INT64_MAX";
    r[n].st = axs_apply_(rows, &s, 1, nm, rec, NULL, 1);
    r[n++].needle = "p_in: ";
  }
  for (int k = 0; k < n; k++)
    CHECK(r[k].st == AXS_EINVAL && strstr(axs_last_error(), "byte extent") != NULL, "%s: status %d",
          r[k].what, (int)r[k].st);
  /* (the messages, checked one by one, each name their argument) */
  CHECK(axs_clamp_(rows, u, (axs_fin){&one, 0, big}, no_fin, nm, no_f, no_f, no_b, 1) ==
                AXS_EINVAL &&
            strncmp(axs_last_error(), "lo: ", 4) == 0,
        "lo: message \"%s\"", axs_last_error());
  CHECK(axs_steer_(rows, u, onef, (axs_bin){m, 0, big / 2}, 1) == AXS_EINVAL &&
            strncmp(axs_last_error(), "mask: ", 6) == 0,
        "mask: message \"%s\"", axs_last_error());
  (void)r[0].needle;
  /* a record offset anywhere in int64 is valid; columns outside the record
   * are not written (and offset + i is never formed) */
  const int64_t offsets[4] = {INT64_MAX - 1, INT64_MAX, INT64_MIN, INT64_MIN + 1};
  for (int k = 0; k < 4; k++) {
    float p_in[8];
    uint8_t fired[8];
    for (int j = 0; j < 8; j++) {
      p_in[j] = k_fsentinel;
      fired[j] = k_bsentinel;
    }
    axs_step s;
    memset(&s, 0, sizeof s);
    s.op = AXS_CLAMP;
    s.dir = u;
    s.a = onef;
    axs_record rec = record_of((axs_fout){p_in, 0, 1}, no_f, (axs_bout){fired, 0, 1});
    rec.offset = &offsets[k];
    rec.capacity = 8;
    CHECK(axs_apply_(rows, &s, 1, nm, rec, NULL, 1) == AXS_OK, "offset %lld: %s",
          (long long)offsets[k], axs_last_error());
    for (int j = 0; j < 8; j++)
      CHECK(same_bits_f(p_in[j], k_fsentinel) && fired[j] == k_bsentinel,
            "offset %lld: column %d written", (long long)offsets[k], j);
  }
  free(h);
  free(u);
}

/* ---- the names in messages
 * ------------------------------------------------------------------- */

static void test_names(void) {
  set_case("names in messages");
  const int64_t d = 8;
  float h[3 * 8];
  for (int j = 0; j < 3 * 8; j++)
    h[j] = (float)(j % 5) - 2.0f;
  float *u = make_unit(d);
  float *v = make_vec(d, 3.0);
  float two = 2.0f, one = 1.0f, out[3];
  axs_rows rows = {h, AXS_F32, 1, 3, d, 0, d};
  axs_bin nm = {NULL, 0, 0};
  axs_fout no_f = {NULL, 0, 0};
  axs_record no_rec = record_of(no_f, no_f, (axs_bout){NULL, 0, 0});
  axs_step s[2];
  memset(s, 0, sizeof s);
  s[0].op = AXS_PROJECT;
  s[0].dir = u;
  s[1].op = AXS_CLAMP;
  s[1].dir = u;
  s[1].a = (axs_fin){&two, 0, 0};
  s[1].b = (axs_fin){&one, 0, 0};
  /* the defaults */
  CHECK(axs_apply_(rows, s, 2, nm, no_rec, NULL, 1) == AXS_EINVAL &&
            strstr(axs_last_error(), "a[1] = 2 > b[1] = 1") != NULL,
        "default names: \"%s\"", axs_last_error());
  /* the caller's, with the step index put in */
  axs_names names;
  memset(&names, 0, sizeof names);
  names.a = "params[%d, 0]";
  names.b = "params[%d, 1]";
  names.dir = "dirs[%d]";
  CHECK(axs_apply_(rows, s, 2, nm, no_rec, &names, 1) == AXS_EINVAL &&
            strstr(axs_last_error(), "params[1, 0] = 2 > params[1, 1] = 1") != NULL,
        "caller's names: \"%s\"", axs_last_error());
  s[1].b.data = NULL;
  s[1].dir = v;
  CHECK(axs_apply_(rows, s, 2, nm, no_rec, &names, 1) == AXS_EINVAL &&
            strncmp(axs_last_error(), "dirs[1] has norm", 16) == 0,
        "caller's dir name: \"%s\"", axs_last_error());
  /* a name is never a format: only the first %d is replaced */
  names.dir = "%s%n%d%x%%%d";
  CHECK(axs_apply_(rows, s, 2, nm, no_rec, &names, 1) == AXS_EINVAL &&
            strncmp(axs_last_error(), "%s%n1%x%%%d has norm", 20) == 0,
        "format characters in a name: \"%s\"", axs_last_error());
  /* a name without %d is used as is; long names are cut, not overrun */
  names.dir = "a direction whose name is far longer than forty-seven characters";
  CHECK(axs_apply_(rows, s, 2, nm, no_rec, &names, 1) == AXS_EINVAL &&
            strncmp(axs_last_error(), "a direction whose name is far longer than forty has norm",
                    56) == 0,
        "long name: \"%s\"", axs_last_error());
  names.dir = NULL;
  names.mask = "attention_mask";
  uint8_t m[3] = {1, 2, 0};
  CHECK(axs_apply_(rows, s, 1, (axs_bin){m, 0, 1}, no_rec, &names, 1) == AXS_EINVAL &&
            strncmp(axs_last_error(), "attention_mask = 2 at row (0, 1)", 32) == 0,
        "mask name: \"%s\"", axs_last_error());
  names.offset = "rec_offset";
  {
    int64_t off = 0;
    axs_record rec = record_of((axs_fout){out, 0, 1}, no_f, (axs_bout){NULL, 0, 0});
    rec.offset = &off;
    rec.capacity = -3;
    CHECK(axs_apply_(rows, s, 1, nm, rec, &names, 1) == AXS_EINVAL &&
              strncmp(axs_last_error(), "rec_offset: record capacity = -3", 32) == 0,
          "offset name: \"%s\"", axs_last_error());
  }
  /* the single operations use their parameter names */
  CHECK(axs_project(rows, u, nm, (axs_fout){out, 0, 0}, 1) == AXS_EINVAL &&
            strncmp(axs_last_error(), "out: ", 5) == 0,
        "project output: \"%s\"", axs_last_error());
  CHECK(axs_steer_(rows, u, (axs_fin){&one, 0, 0}, (axs_bin){m, 0, 1}, 1) == AXS_EINVAL &&
            strncmp(axs_last_error(), "mask = 2", 8) == 0,
        "mask value: \"%s\"", axs_last_error());
  m[1] = 1;
  CHECK(axs_steer_(rows, u, (axs_fin){&one, 0, 0}, (axs_bin){m, 0, 1}, 1) == AXS_OK,
        "mask 0 / 1: %s", axs_last_error());
  free(u);
  free(v);
}

/* ---- drift latches ----------------------------------------------------------
 * The state machine written again as plainly as possible (a list of the
 * sequence's finite values, the window's mean summed afresh), run over whole
 * sequences, against axs_latch_apply_ run on the same tokens split into calls
 * at random (a prompt, then chunks or single tokens, as generate makes them).
 * Detection projections are exact: the direction is a basis vector e_j and
 * the values are multiples of 1/4, so every sum in either version is exact
 * and the two must agree bit for bit. */

typedef struct {
  int64_t run, up, latched, latched_at, count, n_vals;
  double vals[64]; /* the finite values since the reset */
} ref_latch_t;

static void ref_latch_reset(ref_latch_t *r, int start) {
  memset(r, 0, sizeof *r);
  r->latched = start;
  r->latched_at = -1;
}

/* The gate of a real token at column c, then the state advanced with x. */
static int ref_latch_token(ref_latch_t *r, const float *pr, int64_t w, int has_dir, float x,
                           int open, int64_t c) {
  int gate = r->latched && open;
  int has = 0;
  double sig = 0.0;
  if (has_dir && w == 1) {
    sig = x;
    has = 1;
  } else if (has_dir && isfinite(x)) {
    r->vals[r->n_vals++] = x;
    if (r->n_vals >= w) {
      double sum = 0.0;
      for (int64_t q = r->n_vals - w; q < r->n_vals; q++)
        sum += r->vals[q];
      sig = sum / (double)w;
      has = 1;
    }
  }
  int64_t k = (int64_t)pr[AXS_LATCH_K], release_k = (int64_t)pr[AXS_LATCH_RELEASE_K];
  if (!r->latched) {
    r->run = (has && sig < (double)pr[AXS_LATCH_THRESHOLD]) ? r->run + 1 : 0;
    if (r->run >= k) {
      r->latched = 1;
      r->run = r->up = 0;
      r->count++;
      if (r->latched_at < 0)
        r->latched_at = c;
    }
  } else {
    r->up = (has && sig > (double)pr[AXS_LATCH_RELEASE]) ? r->up + 1 : 0;
    if (r->up >= release_k) {
      r->latched = 0;
      r->run = r->up = 0;
    }
  }
  return gate;
}

static int64_t rng_int(int64_t lo, int64_t hi) { /* [lo, hi] */
  return lo + (int64_t)(rng_u64() % (uint64_t)(hi - lo + 1));
}

static void test_latch_case(int case_no) {
  const axs_dtype dt = k_dtypes[rng_int(0, 2)];
  const int64_t no = rng_int(1, 3), total = rng_int(1, 24),
                d = (int64_t[]){1, 7, 16, 33}[rng_int(0, 3)];
  const int64_t w = rng_int(1, 4), jdir = rng_int(0, d - 1);
  const int64_t cap = rng_int(0, 5) == 0 ? (total > 2 ? total - 2 : total) : total + rng_int(0, 3);
  const int has_dir = rng_int(0, 9) != 0;
  float pr[AXS_LATCH_NPARAMS] = {0};
  pr[AXS_LATCH_THRESHOLD] = 0.125f + 0.25f * (float)rng_int(-4, 3);
  pr[AXS_LATCH_K] = (float)rng_int(1, 3);
  pr[AXS_LATCH_RELEASE] =
      rng_int(0, 2) == 0 ? NAN : pr[AXS_LATCH_THRESHOLD] + 0.25f * (float)rng_int(0, 4);
  pr[AXS_LATCH_RELEASE_K] = (float)rng_int(1, 3);
  pr[AXS_LATCH_PROMPT] = (float)rng_int(0, 1);
  pr[AXS_LATCH_GENERATED] = rng_int(0, 3) != 0;
  pr[AXS_LATCH_START] = rng_int(0, 5) == 0;
  set_case("latch case %d: %s (%lld, %lld, %lld), window %lld, k %g, release %g x %g, capacity "
           "%lld%s",
           case_no, dt_name(dt), (long long)no, (long long)total, (long long)d, (long long)w,
           (double)pr[AXS_LATCH_K], (double)pr[AXS_LATCH_RELEASE], (double)pr[AXS_LATCH_RELEASE_K],
           (long long)cap, has_dir ? "" : ", no direction");

  /* tokens: x at element jdir, nonzero values elsewhere (0 * them is +0) */
  const size_t es = dt_size(dt);
  unsigned char *h = (unsigned char *)xcalloc((size_t)(no * total * d), es);
  float *x = (float *)xcalloc((size_t)(no * total), sizeof(float));
  uint8_t *mask = (uint8_t *)xcalloc((size_t)(no * total), 1);
  for (int64_t o = 0; o < no; o++) {
    int64_t pad = rng_int(0, total / 2);
    for (int64_t t = 0; t < total; t++) {
      int64_t r = o * total + t;
      x[r] = rng_int(0, 15) == 0 ? NAN : 0.25f * (float)rng_int(-12, 12);
      mask[r] = t >= pad && rng_int(0, 9) != 0;
      for (int64_t j = 0; j < d; j++)
        st(dt, h, r * d + j,
           j == jdir ? x[r] : 0.5f * (float)rng_int(1, 4) * (rng_int(0, 1) ? 1 : -1));
    }
  }
  float *u = (float *)xcalloc((size_t)d, sizeof(float));
  u[jdir] = 1.0f;
  const float lo = 0.25f * (float)rng_int(-2, 2);

  int64_t *state = (int64_t *)xcalloc((size_t)(no * AXS_LATCH_NSTATE), sizeof(int64_t));
  float *ring = (float *)xcalloc((size_t)(no * w), sizeof(float));
  float *ph = (float *)xcalloc((size_t)(no * cap + 1), sizeof(float));
  uint8_t *gate = (uint8_t *)xcalloc((size_t)(no * cap + 1), 1);
  for (int64_t q = 0; q < no * cap; q++) {
    ph[q] = k_fsentinel;
    gate[q] = k_bsentinel;
  }
  float *pb = (float *)xcalloc((size_t)(no * total), sizeof(float));
  float *pa = (float *)xcalloc((size_t)(no * total), sizeof(float));
  uint8_t *changed = (uint8_t *)xcalloc((size_t)(no * total), 1);
  int64_t offset = 0;
  axs_latch lt = {has_dir ? u : NULL,
                  pr,
                  state,
                  AXS_LATCH_NSTATE,
                  w > 1 ? ring : NULL,
                  w,
                  w,
                  has_dir ? ph : NULL,
                  cap,
                  gate,
                  cap,
                  &offset,
                  cap};
  axs_step cl;
  memset(&cl, 0, sizeof cl);
  cl.op = AXS_CLAMP;
  cl.dir = u;
  cl.a = (axs_fin){&lo, 0, 0};
  cl.gate = (axs_gate){gate, cap, 1, &offset, cap};

  /* the calls: a prompt, then single tokens or chunks */
  int64_t phase_of[64]; /* per token: 1 if its call is a decode step */
  for (int64_t start = 0, len; start < total; start += len) {
    len = start == 0 ? rng_int(1, total) : (rng_int(0, 2) ? 1 : rng_int(1, total - start));
    if (len > total - start)
      len = total - start;
    offset = start;
    for (int64_t t = start; t < start + len; t++)
      phase_of[t] = len == 1 && start > 0;
    axs_rows rows = {h + (size_t)(start * d) * es, dt, no, len, d, total * d, d};
    axs_bin m = {mask + start, total, 1};
    cl.p_before = (axs_fout){pb + start, total, 1};
    cl.p_after = (axs_fout){pa + start, total, 1};
    cl.changed = (axs_bout){changed + start, total, 1};
    int use_steps = rng_int(0, 3) != 0;
    axs_status stt =
        axs_latch_apply_(rows, &lt, 1, &cl, use_steps, m, no_record(), NULL, (int)rng_int(1, 4));
    CHECK(stt == AXS_OK, "call at %lld: %s", (long long)start, axs_last_error());
    if (!use_steps) { /* the step alone, in a second call, sees the same gate */
      stt = axs_latch_apply_(rows, NULL, 0, &cl, 1, m, no_record(), NULL, 1);
      CHECK(stt == AXS_OK, "steps at %lld: %s", (long long)start, axs_last_error());
    }
  }

  for (int64_t o = 0; o < no; o++) {
    ref_latch_t ref;
    ref_latch_reset(&ref, pr[AXS_LATCH_START] != 0.0f);
    for (int64_t t = 0; t < total; t++) {
      const int64_t r = o * total + t;
      if (t >= cap)
        continue;
      if (!mask[r]) {
        CHECK(gate[o * cap + t] == 0, "gate[%lld][%lld] = %d on padding", (long long)o,
              (long long)t, gate[o * cap + t]);
        if (has_dir)
          CHECK(isnan(ph[o * cap + t]), "p[%lld][%lld] = %g on padding", (long long)o, (long long)t,
                (double)ph[o * cap + t]);
        CHECK(changed[r] == 0, "padding changed");
        continue;
      }
      int open = phase_of[t] ? pr[AXS_LATCH_GENERATED] != 0.0f : pr[AXS_LATCH_PROMPT] != 0.0f;
      int g = ref_latch_token(&ref, pr, w, has_dir, x[r], open, t);
      CHECK(gate[o * cap + t] == g, "gate[%lld][%lld] = %d, expected %d", (long long)o,
            (long long)t, gate[o * cap + t], g);
      if (has_dir)
        CHECK(same_bits_f(ph[o * cap + t], x[r]) || (isnan(x[r]) && isnan(ph[o * cap + t])),
              "p[%lld][%lld] = %g, expected %g", (long long)o, (long long)t,
              (double)ph[o * cap + t], (double)x[r]);
      /* the gated clamp: runs where the gate is open, reports p either way */
      int fires = g && isfinite(x[r]) && x[r] < lo;
      float now = ld(dt, h, r * d + jdir);
      CHECK(changed[r] == fires, "changed[%lld][%lld] = %d, expected %d", (long long)o,
            (long long)t, changed[r], fires);
      CHECK(fires ? now == lo : (same_bits_f(now, x[r]) || (isnan(now) && isnan(x[r]))),
            "h[%lld][%lld] = %g (x %g, gate %d, lo %g)", (long long)o, (long long)t, (double)now,
            (double)x[r], g, (double)lo);
      CHECK(same_bits_f(pb[r], x[r]) || (isnan(pb[r]) && isnan(x[r])),
            "p_before[%lld][%lld] = %g, expected %g", (long long)o, (long long)t, (double)pb[r],
            (double)x[r]);
      CHECK(fires ? pa[r] == lo : (same_bits_f(pa[r], pb[r]) || (isnan(pa[r]) && isnan(pb[r]))),
            "p_after[%lld][%lld] = %g", (long long)o, (long long)t, (double)pa[r]);
    }
    for (int64_t c = total; c < cap; c++)
      CHECK(gate[o * cap + c] == k_bsentinel, "gate column %lld written", (long long)c);
    const int64_t *sv = state + o * AXS_LATCH_NSTATE;
    CHECK(sv[AXS_LATCH_S_LATCHED] == ref.latched && sv[AXS_LATCH_S_RUN] == ref.run &&
              sv[AXS_LATCH_S_UP] == ref.up && sv[AXS_LATCH_S_LATCHED_AT] == ref.latched_at &&
              sv[AXS_LATCH_S_COUNT] == ref.count,
          "state of %lld: latched %lld run %lld up %lld at %lld count %lld, expected %lld %lld "
          "%lld %lld %lld",
          (long long)o, (long long)sv[AXS_LATCH_S_LATCHED], (long long)sv[AXS_LATCH_S_RUN],
          (long long)sv[AXS_LATCH_S_UP], (long long)sv[AXS_LATCH_S_LATCHED_AT],
          (long long)sv[AXS_LATCH_S_COUNT], (long long)ref.latched, (long long)ref.run,
          (long long)ref.up, (long long)ref.latched_at, (long long)ref.count);
    if (has_dir && w > 1) {
      int64_t seen = ref.n_vals < w ? ref.n_vals : w;
      double sum = 0.0;
      for (int64_t q = ref.n_vals - seen; q < ref.n_vals; q++)
        sum += ref.vals[q];
      double got;
      memcpy(&got, &sv[AXS_LATCH_S_SUM], sizeof got);
      CHECK(sv[AXS_LATCH_S_SEEN] == seen && sv[AXS_LATCH_S_POS] == ref.n_vals % w && got == sum,
            "window of %lld: seen %lld pos %lld sum %g, expected %lld %lld %g", (long long)o,
            (long long)sv[AXS_LATCH_S_SEEN], (long long)sv[AXS_LATCH_S_POS], got, (long long)seen,
            (long long)(ref.n_vals % w), sum);
    }
  }
  free(h);
  free(x);
  free(mask);
  free(u);
  free(state);
  free(ring);
  free(ph);
  free(gate);
  free(pb);
  free(pa);
  free(changed);
}

/* Calls a latch refuses, each naming what is wrong. */
static void test_latch_invalid(void) {
  set_case("latch: invalid calls");
  const int64_t no = 2, ni = 3, d = 8, cap = 4;
  float h[2 * 3 * 8] = {0}, u[8] = {1.0f};
  float half[8] = {0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f}; /* norm sqrt(2) */
  float pr[AXS_LATCH_NPARAMS] = {0.0f, 2.0f, NAN, 1.0f, 1.0f, 1.0f, 0.0f, 0.0f};
  int64_t state[2 * AXS_LATCH_NSTATE], offset = 0;
  float ring[2 * 3], ph[2 * 4];
  uint8_t gate[2 * 4];
  axs_rows rows = {h, AXS_F32, no, ni, d, ni * d, d};
  axs_bin nm = {NULL, 0, 0};
  const axs_latch good = {u,   pr,   state, AXS_LATCH_NSTATE, ring, 3, 3, ph,
                          cap, gate, cap,   &offset,          cap};
  axs_latch lt = good;
  CHECK(axs_latch_apply_(rows, &lt, 1, NULL, 0, nm, no_record(), NULL, 1) == AXS_OK,
        "a latch alone: %s", axs_last_error());
  struct {
    const char *what, *needle;
    axs_latch lt;
    int n_latches, n_steps;
  } bad[16];
  int nb = 0;
#define BAD(what_, needle_, field_, value_)                                                        \
  do {                                                                                             \
    bad[nb].what = what_;                                                                          \
    bad[nb].needle = needle_;                                                                      \
    bad[nb].lt = good;                                                                             \
    bad[nb].lt.field_ = value_;                                                                    \
    bad[nb].n_latches = 1;                                                                         \
    bad[nb].n_steps = 0;                                                                           \
    nb++;                                                                                          \
  } while (0)
  BAD("no state", "latches[0].state", state, NULL);
  BAD("window 0", "window", window, 0);
  BAD("no ring", "latches[0].ring", ring, NULL);
  BAD("ring stride", "latches[0].ring", ring_stride, 2);
  BAD("no p with a direction", "latches[0].p", p, NULL);
  BAD("no gate", "latches[0].gate", gate, NULL);
  BAD("no offset", "offset", offset, NULL);
  BAD("negative capacity", "capacity", capacity, -1);
  BAD("state overlaps h", "latches[0].state", state, (int64_t *)h);
  BAD("gate overlaps p", "latches[0]", gate, (uint8_t *)ph);
  BAD("direction not unit", "latches[0].dir", dir, half);
  for (int q = 0; q < nb; q++) {
    axs_status stt = axs_latch_apply_(rows, &bad[q].lt, bad[q].n_latches, NULL, bad[q].n_steps, nm,
                                      no_record(), NULL, 1);
    CHECK(stt == AXS_EINVAL && strstr(axs_last_error(), bad[q].needle) != NULL,
          "%s: status %d, message \"%s\" (expected one naming %s)", bad[q].what, (int)stt,
          axs_last_error(), bad[q].needle);
  }
#undef BAD
  const float bad_params[4][2] = {{AXS_LATCH_K, 0.0f},
                                  {AXS_LATCH_K, 1.5f},
                                  {AXS_LATCH_RELEASE_K, NAN},
                                  {AXS_LATCH_START, 2.0f}};
  for (int q = 0; q < 4; q++) {
    float prb[AXS_LATCH_NPARAMS];
    memcpy(prb, pr, sizeof prb);
    prb[(int)bad_params[q][0]] = bad_params[q][1];
    lt = good;
    lt.params = prb;
    axs_status stt = axs_latch_apply_(rows, &lt, 1, NULL, 0, nm, no_record(), NULL, 1);
    CHECK(stt == AXS_EINVAL && strstr(axs_last_error(), "latches[0].params") != NULL,
          "params[%d] = %g: status %d, \"%s\"", (int)bad_params[q][0], (double)bad_params[q][1],
          (int)stt, axs_last_error());
  }
  lt = good;
  CHECK(axs_latch_apply_(rows, &lt, 0, NULL, 0, nm, no_record(), NULL, 1) == AXS_EINVAL &&
            strstr(axs_last_error(), "steps") != NULL,
        "no latch and no step accepted");
  CHECK(axs_latch_apply_(rows, &lt, AXS_MAX_LATCHES + 1, NULL, 0, nm, no_record(), NULL, 1) ==
            AXS_EINVAL,
        "too many latches accepted");
  axs_names names;
  memset(&names, 0, sizeof names);
  names.latch = "policy[%d]";
  lt.state = NULL;
  CHECK(axs_latch_apply_(rows, &lt, 1, NULL, 0, nm, no_record(), &names, 1) == AXS_EINVAL &&
            strstr(axs_last_error(), "policy[0].state") != NULL,
        "the caller's name: \"%s\"", axs_last_error());
  /* a gate read without an offset: one byte per row of h */
  uint8_t rows_gate[2 * 3] = {1, 0, 1, 0, 1, 0};
  float lo = 1.0f;
  axs_step cl;
  memset(&cl, 0, sizeof cl);
  cl.op = AXS_CLAMP;
  cl.dir = u;
  cl.a = (axs_fin){&lo, 0, 0};
  cl.gate = (axs_gate){rows_gate, ni, 1, NULL, 0};
  CHECK(axs_apply_(rows, &cl, 1, nm, no_record(), NULL, 1) == AXS_OK, "row gate: %s",
        axs_last_error());
  for (int64_t r = 0; r < no * ni; r++)
    CHECK(h[r * d] == (rows_gate[r] ? 1.0f : 0.0f), "row gate: h[%lld][0] = %g", (long long)r,
          (double)h[r * d]);
  cl.gate.data = (const uint8_t *)h;
  CHECK(axs_apply_(rows, &cl, 1, nm, no_record(), NULL, 1) == AXS_EINVAL &&
            strstr(axs_last_error(), "gate[0]") != NULL,
        "a gate overlapping h: \"%s\"", axs_last_error());
}

static void test_latch(void) {
  for (int c = 0; c < 400; c++)
    test_latch_case(c);
  test_latch_invalid();
}

int main(void) {
  test_conversions();
  test_fixed_order();
  test_ops();
  test_no_rows();
  test_nan_policy();
  test_invalid();
  test_threads_and_apply();
  test_record_offset();
  test_update_overflow();
  test_size_overflow();
  test_names();
  test_latch();
  printf("test_core: %ld checks, %ld failed\n", g_checks, g_failures);
  if (g_failures > 0)
    printf("%ld passed, %ld failed\n", g_checks - g_failures, g_failures);
  return g_failures == 0 ? 0 : 1;
}
