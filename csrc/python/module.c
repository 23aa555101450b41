/*
 * module.c - axis_steer._C, the CPython + NumPy adapter over the C core
 * (csrc/axis_steer.h).
 *
 * What it does: turns Python arguments into the core's plain pointers and
 * element strides - h as (n_outer, n_inner, d) rows, per-row values
 * broadcast with zero strides, outputs as strided views -, checks every
 * argument while it still holds the GIL, runs the kernel without the GIL,
 * and turns a core status into TypeError / ValueError / AxisSteerError with
 * the core's message (the core is told the Python names of the arguments, so
 * its messages need no rewriting). One helper, run_call(), carries what every
 * function shares: the output checks, the kernel without the GIL, the
 * exception and the release of what the call made.
 *
 * What it deliberately does not do: any arithmetic on h (all of it is in
 * csrc/core), any torch, any copy of h (the in-place ops write into the
 * caller's memory) or of an output. Inputs that are not already float32
 * (per-row values, float64 directions) are read from float32 copies.
 *
 * Overlap rules: the core rejects h overlapping any other argument and
 * outputs overlapping each other; this file adds outputs overlapping an
 * input (a direction, a per-row value, params, the mask), which the core's
 * contract does not cover. Both use byte ranges (like np.may_share_memory):
 * interleaved views of one buffer count as overlapping.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <numpy/arrayobject.h>

#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "axis_steer.h"

/* axis_steer.errors.AxisSteerError, imported at module init. */
static PyObject *axs_error_type = NULL;

/* ---- small text helpers ---------------------------------------------------
 */

/* "(2, 3)", "(5,)" or "()" */
static void shape_text(char *buf, size_t n, int nd, const npy_intp *dims) {
  size_t at = 0;
  buf[0] = '\0';
  at += (size_t)snprintf(buf, n, "(");
  for (int k = 0; k < nd && at < n; k++)
    at += (size_t)snprintf(buf + at, n - at, "%s%lld", k ? ", " : "", (long long)dims[k]);
  if (at < n)
    snprintf(buf + at, n - at, nd == 1 ? ",)" : ")");
}

/* Raises the exception for a failed core call. The core's message already
 * names the arguments as Python calls them (the names passed to it). */
static PyObject *raise_core(axs_status st) {
  const char *m = axs_last_error();
  PyObject *type = st == AXS_EINVAL  ? PyExc_ValueError
                   : st == AXS_ETYPE ? PyExc_TypeError
                                     : axs_error_type;
  if (m == NULL || m[0] == '\0')
    PyErr_Format(type, "the axis_steer core failed with status %d and gave no message", (int)st);
  else
    PyErr_SetString(type, m);
  return NULL;
}

/* ---- what one call holds on to --------------------------------------------
 */

/* Arrays this call created or converted (released at the end of the call),
 * each with the Python name of the argument it came from, so that outputs can
 * be checked against them. */
#define AXS_MAX_KEPT 8

typedef struct {
  PyArrayObject *arr[AXS_MAX_KEPT];
  const char *name[AXS_MAX_KEPT];
  int n;
  float scalar[4]; /* Python-float per-row values, broadcast to every row */
  int n_scalar;
} call_ctx;

static void keep(call_ctx *c, PyArrayObject *a, const char *name) {
  /* callers never keep more than AXS_MAX_KEPT arrays */
  c->arr[c->n] = a;
  c->name[c->n] = name;
  c->n++;
}

static void release(call_ctx *c) {
  for (int k = 0; k < c->n; k++)
    Py_DECREF(c->arr[k]);
  c->n = 0;
}

/* ---- h ----------------------------------------------------------------------
 */

typedef struct {
  PyArrayObject *arr; /* borrowed from the arguments */
  axs_rows rows;
  int nd_rows;           /* h.ndim - 1 */
  npy_intp row_shape[2]; /* h.shape[:-1] */
  char row_text[64];     /* h.shape[:-1] as text, for messages */
} h_arg;

static int is_named_bfloat16(PyArrayObject *a) {
  PyArray_Descr *descr = PyArray_DESCR(a);
  if (descr->type_num < NPY_USERDEF || PyArray_ITEMSIZE(a) != 2)
    return 0;
  PyObject *name = PyObject_GetAttrString((PyObject *)descr, "name");
  if (name == NULL) {
    PyErr_Clear();
    return 0;
  }
  int yes = PyUnicode_Check(name) && PyUnicode_CompareWithASCIIString(name, "bfloat16") == 0;
  Py_DECREF(name);
  return yes;
}

/* dtype=...: None (-1), or "float32" / "float16" / "bfloat16" (a str, a
 * numpy dtype or a scalar type with that name). */
static int requested_dtype(PyObject *obj, int *want) {
  *want = -1;
  if (obj == NULL || obj == Py_None)
    return 0;
  PyObject *name = NULL;
  if (PyUnicode_Check(obj)) {
    name = obj;
    Py_INCREF(name);
  } else {
    PyArray_Descr *descr = NULL;
    if (PyArray_DescrConverter(obj, &descr) && descr != NULL) {
      name = PyObject_GetAttrString((PyObject *)descr, "name");
      Py_DECREF(descr);
    }
    if (name == NULL)
      PyErr_Clear();
  }
  if (name != NULL && PyUnicode_Check(name)) {
    if (PyUnicode_CompareWithASCIIString(name, "float32") == 0)
      *want = AXS_F32;
    else if (PyUnicode_CompareWithASCIIString(name, "float16") == 0)
      *want = AXS_F16;
    else if (PyUnicode_CompareWithASCIIString(name, "bfloat16") == 0)
      *want = AXS_BF16;
  }
  Py_XDECREF(name);
  if (*want >= 0)
    return 0;
  PyErr_Format(PyExc_TypeError,
               "dtype = %R is not supported (expected \"float32\", "
               "\"float16\" or \"bfloat16\", or None to use h.dtype)",
               obj);
  return -1;
}

static const char *dtype_label(int code) {
  return code == AXS_F32 ? "float32" : code == AXS_F16 ? "float16" : "bfloat16";
}

/* h: (d,), (n, d) or (batch, seq, d); last axis contiguous, other strides
 * non-negative multiples of the item size. fname names the op for the
 * read-only message; NULL when h is only read. */
static int parse_h(PyObject *obj, PyObject *dtype_obj, const char *fname, h_arg *h) {
  if (!PyArray_Check(obj)) {
    PyErr_Format(PyExc_TypeError,
                 "h: expected a numpy.ndarray of shape (d,), (n, d) or "
                 "(batch, seq, d) (got %s)%s",
                 Py_TYPE(obj)->tp_name,
                 fname != NULL ? "; the in-place ops write into h, so pass "
                                 "the array itself"
                               : "; convert it with np.asarray(h)");
    return -1;
  }
  PyArrayObject *a = (PyArrayObject *)obj;
  h->arr = a;
  int nd = PyArray_NDIM(a);
  const npy_intp *shape = PyArray_DIMS(a);
  const npy_intp *st = PyArray_STRIDES(a);
  if (nd < 1 || nd > 3) {
    char s[96];
    shape_text(s, sizeof s, nd, shape);
    PyErr_Format(PyExc_ValueError,
                 "h: shape %s has %d dimensions (expected (d,), (n, d) or "
                 "(batch, seq, d); reshape to at most three)",
                 s, nd);
    return -1;
  }
  int want;
  if (requested_dtype(dtype_obj, &want) < 0)
    return -1;
  int type_num = PyArray_TYPE(a);
  int got = -1;
  if (type_num == NPY_FLOAT32)
    got = AXS_F32;
  else if (type_num == NPY_FLOAT16)
    got = AXS_F16;
  else if (is_named_bfloat16(a))
    got = AXS_BF16;
  else if (type_num == NPY_UINT16) {
    if (want != AXS_BF16) {
      PyErr_SetString(PyExc_TypeError,
                      "h: dtype uint16 is not a float type. To pass bfloat16 data as its "
                      "raw bits, view it as uint16 and call with dtype=\"bfloat16\" (from "
                      "torch: t.view(torch.int16).numpy().view(np.uint16)); an ml_dtypes "
                      "bfloat16 array is recognised without dtype=");
      return -1;
    }
    got = AXS_BF16;
  }
  if (got < 0) {
    PyErr_Format(PyExc_TypeError,
                 "h: dtype %S is not supported (expected float32, float16 or "
                 "bfloat16; convert with h.astype(np.float32) and copy the "
                 "result back, or pass bfloat16 bits as uint16 with "
                 "dtype=\"bfloat16\")",
                 (PyObject *)PyArray_DESCR(a));
    return -1;
  }
  if (want >= 0 && want != got) {
    PyErr_Format(PyExc_TypeError,
                 "dtype=\"%s\" does not match h, whose dtype is %S (stored as "
                 "%s; leave dtype=None, or pass an array of that dtype)",
                 dtype_label(want), (PyObject *)PyArray_DESCR(a), dtype_label(got));
    return -1;
  }
  if (!PyArray_ISNOTSWAPPED(a)) {
    PyErr_Format(PyExc_TypeError,
                 "h: dtype %S has non-native byte order (expected native; "
                 "use h.astype(h.dtype.newbyteorder(\"=\")))",
                 (PyObject *)PyArray_DESCR(a));
    return -1;
  }
  if (fname != NULL && !PyArray_ISWRITEABLE(a)) {
    PyErr_Format(PyExc_ValueError,
                 "h is read-only (h.flags.writeable is False) but %s writes "
                 "into h in place (expected a writeable array; pass h.copy())",
                 fname);
    return -1;
  }
  npy_intp esz = PyArray_ITEMSIZE(a);
  npy_intp d = shape[nd - 1];
  if (d < 1) {
    PyErr_SetString(PyExc_ValueError, "h: the last axis has length 0 (expected d >= 1)");
    return -1;
  }
  /* an empty h has no rows to lay out (NumPy gives it zero strides) */
  int empty = PyArray_SIZE(a) == 0;
  if (!empty && d > 1 && st[nd - 1] != esz) {
    PyErr_Format(PyExc_ValueError,
                 "h: the last axis has a stride of %zd bytes (expected %zd, "
                 "the item size: the elements of a row must be contiguous); "
                 "pass np.ascontiguousarray(h)%s",
                 (Py_ssize_t)st[nd - 1], (Py_ssize_t)esz,
                 fname != NULL ? " and copy the result back" : "");
    return -1;
  }
  npy_intp es[2] = {0, 0};
  for (int k = 0; k < nd - 1; k++) {
    h->row_shape[k] = shape[k];
    if (empty || shape[k] <= 1)
      continue;
    if (st[k] < 0 || st[k] % esz != 0) {
      PyErr_Format(PyExc_ValueError,
                   "h: axis %d has a stride of %zd bytes (expected a "
                   "non-negative multiple of the item size %zd); pass "
                   "np.ascontiguousarray(h)%s",
                   k, (Py_ssize_t)st[k], (Py_ssize_t)esz,
                   fname != NULL ? " and copy the result back" : "");
      return -1;
    }
    es[k] = st[k] / esz;
  }
  h->nd_rows = nd - 1;
  shape_text(h->row_text, sizeof h->row_text, nd - 1, shape);
  h->rows.data = PyArray_DATA(a);
  h->rows.dtype = (axs_dtype)got;
  h->rows.d = d;
  if (nd == 1) {
    h->rows.n_outer = h->rows.n_inner = 1;
    h->rows.stride_outer = h->rows.stride_inner = 0;
  } else if (nd == 2) {
    h->rows.n_outer = 1;
    h->rows.n_inner = shape[0];
    h->rows.stride_outer = 0;
    h->rows.stride_inner = es[0];
  } else {
    h->rows.n_outer = shape[0];
    h->rows.n_inner = shape[1];
    h->rows.stride_outer = es[0];
    h->rows.stride_inner = es[1];
  }
  if (empty) {
    /* no rows: (2, 0) rows with zero strides fail the core's row-overlap
     * check although there is nothing to overlap; (0, 0) rows say the same
     * and pass it */
    h->rows.n_outer = h->rows.n_inner = 0;
    h->rows.stride_outer = h->rows.stride_inner = 0;
  }
  return 0;
}

/* ---- one call ---------------------------------------------------------------
 * Every function fills a `call` from its arguments (the parse_* helpers,
 * which hold the GIL and raise on a bad argument) and hands it to
 * run_call(). */

/* An output argument, once checked (see parse_out). */
typedef struct {
  void *data;
  int64_t so, si;
  PyArrayObject *arr; /* borrowed */
  const char *name;
} out_arg;

typedef struct call call;

/* Runs the core on a parsed call; no GIL held, no Python objects touched. */
typedef axs_status (*kernel_fn)(const call *c);

struct call {
  call_ctx kept;                 /* arrays made for the call, and scalar values */
  h_arg h;                       /* h, as rows */
  int threads;                   /* OpenMP threads, <= 0 for the default */
  const float *dir;              /* u or w of a single operation */
  axs_fin a, b;                  /* its lo and hi, target or alpha */
  axs_step steps[AXS_MAX_STEPS]; /* apply_'s program, */
  int n_steps;                   /* its length */
  axs_names names;               /* and the Python names of its arguments */
  axs_bin mask;
  out_arg outs[3]; /* the outputs, in the order of the function's arguments */
  int n_outs;
};

/* ---- broadcasting against the rows of h ---------------------------------- */

/* Strides of dims longer than 1 are non-negative multiples of esz. */
static int strides_ok(PyArrayObject *a, npy_intp esz) {
  for (int k = 0; k < PyArray_NDIM(a); k++)
    if (PyArray_DIM(a, k) > 1 && (PyArray_STRIDE(a, k) < 0 || PyArray_STRIDE(a, k) % esz != 0))
      return 0;
  return 1;
}

/* The core's (outer, inner) element strides of an array of shape `shape`
 * (nd dims, byte strides st) broadcast right-aligned against h.shape[:-1]. */
static int broadcast_rows(const h_arg *h, const char *name, int nd, const npy_intp *shape,
                          const npy_intp *st, npy_intp esz, int64_t *so, int64_t *si) {
  npy_intp es[2] = {0, 0};
  int ok = nd <= h->nd_rows;
  for (int k = 0; ok && k < nd; k++) {
    int r = h->nd_rows - nd + k;
    if (shape[k] == h->row_shape[r])
      es[r] = shape[k] > 1 ? st[k] / esz : 0;
    else if (shape[k] == 1)
      es[r] = 0;
    else
      ok = 0;
  }
  if (!ok) {
    char s[96];
    shape_text(s, sizeof s, nd, shape);
    PyErr_Format(PyExc_ValueError,
                 "%s: shape %s does not broadcast to the rows of h, "
                 "h.shape[:-1] = %s (expected a scalar or an array "
                 "broadcastable to it)",
                 name, s, h->row_text);
    return -1;
  }
  if (h->nd_rows == 2) {
    *so = es[0];
    *si = es[1];
  } else if (h->nd_rows == 1) {
    *so = 0;
    *si = es[0];
  } else {
    *so = *si = 0;
  }
  return 0;
}

/* Returns a new reference to `a` or to a C-ordered copy of it when its
 * strides cannot be given to the core. Steals the reference to a. */
static PyArrayObject *with_usable_strides(PyArrayObject *a, npy_intp esz) {
  if (strides_ok(a, esz))
    return a;
  PyArrayObject *copy = (PyArrayObject *)PyArray_NewCopy(a, NPY_CORDER);
  Py_DECREF(a);
  return copy;
}

/* Whether values of this array may be read as float32: integers, floats,
 * and user dtypes (ml_dtypes) that cast safely to float32. */
static int castable_to_f32(PyArrayObject *a) {
  if (PyArray_ISINTEGER(a) || PyArray_ISFLOAT(a))
    return 1;
  if (PyArray_TYPE(a) < NPY_USERDEF)
    return 0;
  PyArray_Descr *f32 = PyArray_DescrFromType(NPY_FLOAT32);
  int ok = PyArray_CanCastTypeTo(PyArray_DESCR(a), f32, NPY_SAFE_CASTING);
  Py_DECREF(f32);
  return ok;
}

/* Values wider than float32 (float64, longdouble) that are finite but become
 * infinite in float32 would silently change meaning (a floor of 1e39 would
 * never fire): -1 with a ValueError naming the first one. a: the source, f:
 * its float32 conversion (same shape). */
static int check_f32_range(PyArrayObject *a, PyArrayObject *f, const char *name) {
  if (PyArray_TYPE(a) != NPY_DOUBLE && PyArray_TYPE(a) != NPY_LONGDOUBLE)
    return 0;
  PyArrayObject *wide = (PyArrayObject *)PyArray_FROM_OTF(
      (PyObject *)a, NPY_DOUBLE, NPY_ARRAY_C_CONTIGUOUS | NPY_ARRAY_ALIGNED | NPY_ARRAY_FORCECAST);
  PyArrayObject *narrow = (PyArrayObject *)PyArray_FROM_OTF(
      (PyObject *)f, NPY_FLOAT32, NPY_ARRAY_C_CONTIGUOUS | NPY_ARRAY_ALIGNED);
  int status = wide != NULL && narrow != NULL ? 0 : -1;
  const npy_intp n = status == 0 ? PyArray_SIZE(narrow) : 0;
  for (npy_intp k = 0; k < n; k++) {
    double v = ((const double *)PyArray_DATA(wide))[k];
    if (isfinite(v) && !isfinite(((const float *)PyArray_DATA(narrow))[k])) {
      npy_intp idx[NPY_MAXDIMS];
      npy_intp rest = k;
      for (int j = PyArray_NDIM(a) - 1; j >= 0; j--) {
        idx[j] = rest % PyArray_DIM(a, j);
        rest /= PyArray_DIM(a, j);
      }
      char where[96];
      shape_text(where, sizeof where, PyArray_NDIM(a), idx);
      char *value = PyOS_double_to_string(v, 'r', 0, 0, NULL); /* as repr() writes it */
      PyErr_Format(PyExc_ValueError,
                   "%s: the value %s at index %s is beyond the float32 range (expected "
                   "|value| <= 3.4e38, or an infinity)",
                   name, value != NULL ? value : "?", where);
      PyMem_Free(value);
      status = -1;
      break;
    }
  }
  Py_XDECREF(wide);
  Py_XDECREF(narrow);
  return status;
}

/* A float32 copy (or the array itself when already float32 and aligned) of
 * a numeric array-like, with strides the core accepts. Refuses bools,
 * complex numbers and anything else that is not a real number, and finite
 * values beyond the float32 range. New reference. */
static PyArrayObject *as_f32(PyObject *obj, const char *name) {
  PyArrayObject *a = (PyArrayObject *)PyArray_FROM_O(obj);
  if (a == NULL)
    return NULL;
  if (!castable_to_f32(a)) {
    PyErr_Format(PyExc_TypeError,
                 "%s: dtype %S cannot be read as float32 values (expected a "
                 "float, or an array of floats or integers)",
                 name, (PyObject *)PyArray_DESCR(a));
    Py_DECREF(a);
    return NULL;
  }
  PyArrayObject *f = (PyArrayObject *)PyArray_FromArray(a, PyArray_DescrFromType(NPY_FLOAT32),
                                                        NPY_ARRAY_ALIGNED | NPY_ARRAY_FORCECAST);
  if (f != NULL && check_f32_range(a, f, name) < 0) {
    Py_DECREF(f);
    f = NULL;
  }
  Py_DECREF(a);
  if (f == NULL)
    return NULL;
  return with_usable_strides(f, sizeof(float));
}

/* ---- the other arguments ----------------------------------------------------
 */

/* What a per-row value is: a required value (target, alpha), or an optional
 * bound on one side (None or absent is no bound). */
typedef enum { FIN_VALUE, FIN_LO, FIN_HI } fin_kind;

/* A number given as one value for every row: a Python int or float, or a
 * NumPy integer or floating scalar. (A 0-d array is an array: its values are
 * per-row values, with the kernels' rules for NaN and infinities.) */
static int is_scalar_number(PyObject *obj) {
  return PyFloat_Check(obj) || PyLong_Check(obj) || PyArray_IsScalar(obj, Integer) ||
         PyArray_IsScalar(obj, Floating);
}

/* A scalar lo or hi must mean a bound: NaN, lo = +inf and hi = -inf would
 * be bounds that never fire, so they are refused (as axis_steer.ops does for
 * every scalar bound). Per-row bounds keep the kernels' rule. */
static int check_scalar_bound(PyObject *obj, const char *name, fin_kind kind, double v) {
  int wrong_side = kind == FIN_LO ? v == INFINITY : v == -INFINITY;
  if (!isnan(v) && !wrong_side)
    return 0;
  PyErr_Format(PyExc_ValueError,
               "%s = %R (expected a finite bound, or %s for no bound on that side; an array "
               "bound may hold NaN for rows without one)",
               name, obj, kind == FIN_LO ? "-inf" : "inf");
  return -1;
}

/* A per-row value (lo, hi, target, alpha): a number, or an array
 * broadcastable to h.shape[:-1]. For bounds, None or absent is "not given"
 * (data NULL); values require one. Bools are refused whatever their type. */
static int parse_fin(PyObject *obj, const char *name, fin_kind kind, call *c, axs_fin *out) {
  out->data = NULL;
  out->stride_outer = out->stride_inner = 0;
  if (obj == NULL || obj == Py_None) {
    if (kind != FIN_VALUE)
      return 0;
    PyErr_Format(PyExc_TypeError,
                 "%s: expected a float or an array broadcastable to "
                 "h.shape[:-1] = %s (got None)",
                 name, c->h.row_text);
    return -1;
  }
  if (PyBool_Check(obj) || PyArray_IsScalar(obj, Bool)) {
    PyErr_Format(PyExc_TypeError, "%s = %R (expected a float, not a bool)", name, obj);
    return -1;
  }
  if (is_scalar_number(obj)) {
    double v = PyFloat_AsDouble(obj);
    if (v == -1.0 && PyErr_Occurred()) {
      if (!PyErr_ExceptionMatches(PyExc_OverflowError))
        return -1;
      PyErr_Clear();
      v = HUGE_VAL; /* an int beyond every float */
    }
    float f = (float)v;
    int finite_in = isfinite(v) || (PyLong_Check(obj) || PyArray_IsScalar(obj, Integer));
    if (finite_in && !isfinite(f)) {
      PyErr_Format(PyExc_ValueError,
                   "%s = %R is beyond the float32 range (expected |%s| <= "
                   "3.4e38, or an infinity)",
                   name, obj, name);
      return -1;
    }
    if (kind != FIN_VALUE && check_scalar_bound(obj, name, kind, v) < 0)
      return -1;
    c->kept.scalar[c->kept.n_scalar] = f;
    out->data = &c->kept.scalar[c->kept.n_scalar++];
    return 0;
  }
  PyArrayObject *a = as_f32(obj, name);
  if (a == NULL)
    return -1;
  if (broadcast_rows(&c->h, name, PyArray_NDIM(a), PyArray_DIMS(a), PyArray_STRIDES(a),
                     sizeof(float), &out->stride_outer, &out->stride_inner) < 0) {
    Py_DECREF(a);
    return -1;
  }
  keep(&c->kept, a, name);
  out->data = (const float *)PyArray_DATA(a);
  return 0;
}

/* u / w: (d,) float32 (float64 is converted). */
static int parse_dir(PyObject *obj, const char *name, call *c) {
  PyArrayObject *a = (PyArrayObject *)PyArray_FROM_O(obj);
  if (a == NULL)
    return -1;
  char s[96];
  shape_text(s, sizeof s, PyArray_NDIM(a), PyArray_DIMS(a));
  if (PyArray_TYPE(a) != NPY_FLOAT32 && PyArray_TYPE(a) != NPY_FLOAT64) {
    PyErr_Format(PyExc_TypeError,
                 "%s: dtype %S is not supported for a direction (expected "
                 "float32, or float64 which is converted; a float16 or "
                 "bfloat16 direction loses precision, so convert it with "
                 ".astype(np.float32) deliberately)",
                 name, (PyObject *)PyArray_DESCR(a));
    Py_DECREF(a);
    return -1;
  }
  if (PyArray_NDIM(a) != 1 || PyArray_DIM(a, 0) != c->h.rows.d) {
    PyErr_Format(PyExc_ValueError,
                 "%s: shape %s (expected (%lld,): a vector as long as the "
                 "last axis of h)",
                 name, s, (long long)c->h.rows.d);
    Py_DECREF(a);
    return -1;
  }
  PyArrayObject *f = (PyArrayObject *)PyArray_FromArray(a, PyArray_DescrFromType(NPY_FLOAT32),
                                                        NPY_ARRAY_IN_ARRAY | NPY_ARRAY_FORCECAST);
  Py_DECREF(a);
  if (f == NULL)
    return -1;
  keep(&c->kept, f, name);
  c->dir = (const float *)PyArray_DATA(f);
  return 0;
}

/* mask: bool or uint8 (0 = skip the row), broadcastable to h.shape[:-1]. */
static int parse_mask(PyObject *obj, call *c) {
  axs_bin *out = &c->mask;
  out->data = NULL;
  out->stride_outer = out->stride_inner = 0;
  if (obj == NULL || obj == Py_None)
    return 0;
  PyArrayObject *a = (PyArrayObject *)PyArray_FROM_O(obj);
  if (a == NULL)
    return -1;
  if (PyArray_TYPE(a) != NPY_BOOL && PyArray_TYPE(a) != NPY_UINT8) {
    PyErr_Format(PyExc_TypeError,
                 "mask: dtype %S is not supported (expected bool, or uint8 holding 0 = leave "
                 "the row alone and 1 = run it; convert an integer 0 / 1 mask with "
                 "mask.astype(bool))",
                 (PyObject *)PyArray_DESCR(a));
    Py_DECREF(a);
    return -1;
  }
  a = with_usable_strides(a, 1);
  if (a == NULL)
    return -1;
  if (broadcast_rows(&c->h, "mask", PyArray_NDIM(a), PyArray_DIMS(a), PyArray_STRIDES(a), 1,
                     &out->stride_outer, &out->stride_inner) < 0) {
    Py_DECREF(a);
    return -1;
  }
  keep(&c->kept, a, "mask");
  out->data = (const uint8_t *)PyArray_DATA(a); /* its values (0 / 1) are checked by the core */
  return 0;
}

/* An output: float32 (flag = 0) or bool / uint8 (flag = 1) of shape exactly
 * h.shape[:-1], writeable, aligned, non-negative strides, one element per
 * row. Never copied: the caller reads it after the call. */

static int parse_out(PyObject *obj, const char *name, int flag, call *c) {
  const h_arg *h = &c->h;
  out_arg *out = &c->outs[c->n_outs++]; /* at most 3 per function */
  out->data = NULL;
  out->so = out->si = 0;
  out->arr = NULL;
  out->name = name;
  if (obj == NULL || obj == Py_None)
    return 0;
  const char *want = flag ? "bool" : "float32";
  if (!PyArray_Check(obj)) {
    PyErr_Format(PyExc_TypeError,
                 "%s: expected a numpy.ndarray of %s with shape h.shape[:-1] "
                 "= %s (got %s); allocate one with np.empty(h.shape[:-1], "
                 "np.%s)",
                 name, want, h->row_text, Py_TYPE(obj)->tp_name, want);
    return -1;
  }
  PyArrayObject *a = (PyArrayObject *)obj;
  int tn = PyArray_TYPE(a);
  int type_ok =
      flag ? (tn == NPY_BOOL || tn == NPY_UINT8) : (tn == NPY_FLOAT32 && PyArray_ISNOTSWAPPED(a));
  if (!type_ok) {
    PyErr_Format(PyExc_TypeError, "%s: dtype %S (expected %s%s)", name,
                 (PyObject *)PyArray_DESCR(a), want, flag ? " or uint8" : " in native byte order");
    return -1;
  }
  int nd = PyArray_NDIM(a);
  const npy_intp *shape = PyArray_DIMS(a);
  int same = nd == h->nd_rows;
  for (int k = 0; same && k < nd; k++)
    same = shape[k] == h->row_shape[k];
  if (!same) {
    char s[96];
    shape_text(s, sizeof s, nd, shape);
    PyErr_Format(PyExc_ValueError, "%s: shape %s (expected exactly h.shape[:-1] = %s)", name, s,
                 h->row_text);
    return -1;
  }
  if (!PyArray_ISWRITEABLE(a)) {
    PyErr_Format(PyExc_ValueError, "%s is read-only (expected a writeable array)", name);
    return -1;
  }
  npy_intp esz = PyArray_ITEMSIZE(a);
  if (!PyArray_ISALIGNED(a) || !strides_ok(a, esz)) {
    char s[96];
    shape_text(s, sizeof s, nd, PyArray_STRIDES(a));
    PyErr_Format(PyExc_ValueError,
                 "%s: an unaligned array or strides %s bytes (expected an "
                 "aligned array with non-negative strides that are multiples "
                 "of %zd; pass np.empty(h.shape[:-1], np.%s))",
                 name, s, (Py_ssize_t)esz, want);
    return -1;
  }
  if (broadcast_rows(h, name, nd, shape, PyArray_STRIDES(a), esz, &out->so, &out->si) < 0)
    return -1;
  /* one element per row: the smaller stride of a dim longer than 1 must be
   * >= 1, the larger one must step over the whole smaller dim */
  int64_t n1 = h->rows.n_inner, s1 = out->si;
  int64_t n2 = h->rows.n_outer, s2 = out->so;
  if (n1 <= 1) {
    n1 = n2;
    s1 = s2;
    n2 = 1;
  } else if (n2 > 1 && s2 < s1) {
    int64_t t = s1;
    s1 = s2;
    s2 = t;
    t = n1;
    n1 = n2;
    n2 = t;
  }
  if ((n1 > 1 && s1 < 1) || (n2 > 1 && s2 < n1 * s1)) {
    char s[96];
    shape_text(s, sizeof s, nd, PyArray_STRIDES(a));
    PyErr_Format(PyExc_ValueError,
                 "%s: strides %s bytes make several rows share one element "
                 "(expected one element per row, e.g. np.empty(h.shape[:-1], "
                 "np.%s))",
                 name, s, want);
    return -1;
  }
  out->data = PyArray_DATA(a);
  out->arr = a;
  return 0;
}

/* ---- outputs against inputs ---------------------------------------------- */

/* [lo, hi) bytes of an array with non-negative strides. */
static void byte_range(PyArrayObject *a, const char **lo, const char **hi) {
  *lo = *hi = (const char *)PyArray_DATA(a);
  if (PyArray_SIZE(a) == 0)
    return;
  npy_intp last = PyArray_ITEMSIZE(a);
  for (int k = 0; k < PyArray_NDIM(a); k++)
    if (PyArray_DIM(a, k) > 1)
      last += (PyArray_DIM(a, k) - 1) * PyArray_STRIDE(a, k);
  *hi = *lo + last;
}

/* Outputs must not overlap an input: the kernel reads inputs row by row
 * while it writes outputs, so a shared byte would change later rows. */
static int check_outputs_vs_inputs(const call_ctx *c, const out_arg *outs, int n_outs) {
  for (int i = 0; i < n_outs; i++) {
    if (outs[i].arr == NULL)
      continue;
    const char *olo, *ohi;
    byte_range(outs[i].arr, &olo, &ohi);
    for (int k = 0; k < c->n; k++) {
      const char *ilo, *ihi;
      byte_range(c->arr[k], &ilo, &ihi);
      if (olo < ohi && ilo < ihi && olo < ihi && ilo < ohi) {
        PyErr_Format(PyExc_ValueError,
                     "%s overlaps the memory of %s (expected separate "
                     "buffers)",
                     outs[i].name, c->name[k]);
        return -1;
      }
    }
  }
  return 0;
}

static axs_fout fout_of(const out_arg *o) {
  axs_fout f = {(float *)o->data, o->so, o->si};
  return f;
}

static axs_bout bout_of(const out_arg *o) {
  axs_bout b = {(uint8_t *)o->data, o->so, o->si};
  return b;
}

/* ---- the skeleton every function shares ------------------------------------ */

#define AXS_MAX_ARGS 10

/* threads=: an int (not a bool); <= 0 uses default_threads(). */
static int parse_threads(PyObject *obj, int *out) {
  *out = 0;
  if (obj == NULL)
    return 0;
  if (PyBool_Check(obj) || !PyIndex_Check(obj)) {
    PyErr_Format(PyExc_TypeError,
                 "threads = %R (expected an int: the number of OpenMP threads, or 0 for "
                 "default_threads())",
                 obj);
    return -1;
  }
  int overflow = 0;
  PyObject *index = PyNumber_Index(obj);
  long v = index != NULL ? PyLong_AsLongAndOverflow(index, &overflow) : -1;
  Py_XDECREF(index);
  if (v == -1 && PyErr_Occurred())
    return -1;
  if (overflow != 0 || v > INT_MAX || v < INT_MIN) {
    PyErr_Format(PyExc_ValueError,
                 "threads = %R is out of range (expected an int from %d to %d; 0 for "
                 "default_threads())",
                 obj, INT_MIN, INT_MAX);
    return -1;
  }
  *out = (int)v;
  return 0;
}

/* The part of a call every function shares: its arguments parsed by name
 * into o[] (NULL where not given; kwlist names them, "h" first, with
 * "dtype" and "threads" among them), h (written in place unless writes is
 * NULL: the name of the function, for the read-only message) and threads.
 * 0 with a Python exception set on failure. */
static int begin_call(call *c, PyObject *args, PyObject *kw, const char *format, char **kwlist,
                      const char *writes, PyObject *o[AXS_MAX_ARGS]) {
  memset(c, 0, sizeof *c);
  for (int k = 0; k < AXS_MAX_ARGS; k++)
    o[k] = NULL;
  /* one pointer per argument; the format names at most AXS_MAX_ARGS */
  if (!PyArg_ParseTupleAndKeywords(args, kw, format, kwlist, &o[0], &o[1], &o[2], &o[3], &o[4],
                                   &o[5], &o[6], &o[7], &o[8], &o[9]))
    return 0;
  PyObject *dtype = NULL, *threads = NULL;
  for (int k = 0; kwlist[k] != NULL; k++) {
    if (strcmp(kwlist[k], "dtype") == 0)
      dtype = o[k];
    if (strcmp(kwlist[k], "threads") == 0)
      threads = o[k];
  }
  return parse_h(o[0], dtype, writes, &c->h) == 0 && parse_threads(threads, &c->threads) == 0;
}

/* The rest of every call: the outputs checked against the inputs, the kernel
 * run without the GIL, a failed status raised, and what the call made
 * released. parsed: whether parsing succeeded (else an exception is set).
 * result: a new reference returned on success (released on failure; NULL
 * when making it failed). */
static PyObject *run_call(call *c, int parsed, kernel_fn kernel, PyObject *result) {
  int ok = parsed && result != NULL && check_outputs_vs_inputs(&c->kept, c->outs, c->n_outs) == 0;
  if (ok) {
    axs_status st;
    Py_BEGIN_ALLOW_THREADS;
    st = kernel(c);
    Py_END_ALLOW_THREADS;
    if (st != AXS_OK) {
      raise_core(st);
      ok = 0;
    }
  }
  release(&c->kept);
  if (!ok) {
    Py_XDECREF(result);
    return NULL;
  }
  return result;
}

static PyObject *new_none(void) {
  Py_INCREF(Py_None);
  return Py_None;
}

/* ---- the kernels (called without the GIL) ------------------------------------ */

static axs_status run_project(const call *c) {
  return axs_project(c->h.rows, c->dir, c->mask, fout_of(&c->outs[0]), c->threads);
}

static axs_status run_clamp(const call *c) {
  return axs_clamp_(c->h.rows, c->dir, c->a, c->b, c->mask, fout_of(&c->outs[0]),
                    fout_of(&c->outs[1]), bout_of(&c->outs[2]), c->threads);
}

static axs_status run_set_projection(const call *c) {
  return axs_set_projection_(c->h.rows, c->dir, c->a, c->mask, fout_of(&c->outs[0]), c->threads);
}

static axs_status run_steer(const call *c) {
  return axs_steer_(c->h.rows, c->dir, c->a, c->mask, c->threads);
}

static axs_status run_apply(const call *c) {
  axs_record rec;
  memset(&rec, 0, sizeof rec); /* no record offset: row (o, i) at [o][i] */
  rec.p_in = fout_of(&c->outs[0]);
  rec.p_out = fout_of(&c->outs[1]);
  rec.fired = bout_of(&c->outs[2]);
  return axs_apply_(c->h.rows, c->steps, c->n_steps, c->mask, rec, &c->names, c->threads);
}

/* ---- the functions ------------------------------------------------------------ */

PyDoc_STRVAR(project_doc,
             "project(h, u, *, mask=None, out=None, dtype=None, threads=0) -> ndarray\n"
             "\n"
             "Projection of each row of h on the unit direction u: p[r] = <h[r], u>,\n"
             "accumulated in float32 in a fixed order (the same bits for any thread\n"
             "count).\n"
             "\n"
             "h:       (d,), (n, d) or (batch, seq, d); float32, float16, or bfloat16\n"
             "         (an ml_dtypes bfloat16 array, or its bits as uint16 with\n"
             "         dtype=\"bfloat16\"). The last axis must be contiguous.\n"
             "u:       (d,) float32 (float64 is converted), unit norm within UNIT_TOL.\n"
             "mask:    bool, or uint8 holding 0 and 1, broadcastable to h.shape[:-1];\n"
             "         rows where it is 0 are not read and get NaN.\n"
             "out:     float32 array of shape h.shape[:-1] to write into (any\n"
             "         non-negative strides); a new one when None.\n"
             "dtype:   \"float32\", \"float16\" or \"bfloat16\": asserts h's dtype\n"
             "         (required to read uint16 as bfloat16).\n"
             "threads: int, OpenMP threads; <= 0 uses default_threads(). Inputs under\n"
             "         PARALLEL_MIN_ELEMS elements run on the calling thread.\n"
             "\n"
             "Returns out: float32 of shape h.shape[:-1], in the units of h. A row\n"
             "holding NaN or inf gives a non-finite projection.\n"
             "Raises TypeError (dtype), ValueError (shape, stride, norm, overlap).\n"
             "The GIL is released while the kernel runs.");

static PyObject *py_project(PyObject *self, PyObject *args, PyObject *kw) {
  (void)self;
  static char *kwlist[] = {"h", "u", "mask", "out", "dtype", "threads", NULL};
  enum { H, U, MASK, OUT };
  call c;
  PyObject *o[AXS_MAX_ARGS];
  if (!begin_call(&c, args, kw, "OO|$OOOO:project", kwlist, NULL, o) ||
      parse_dir(o[U], "u", &c) < 0 || parse_mask(o[MASK], &c) < 0)
    return run_call(&c, 0, run_project, NULL);
  PyObject *out = o[OUT];
  if (out == NULL || out == Py_None)
    out = PyArray_SimpleNew(c.h.nd_rows, c.h.row_shape, NPY_FLOAT32);
  else
    Py_INCREF(out);
  int parsed = out != NULL && parse_out(out, "out", 0, &c) == 0;
  return run_call(&c, parsed, run_project, out);
}

PyDoc_STRVAR(clamp_doc, "clamp_(h, u, lo=-inf, hi=inf, *, mask=None, p_before=None, p_after=None,\n"
                        "       changed=None, dtype=None, threads=0) -> None\n"
                        "\n"
                        "Clamps the projection of each row of h on the unit direction u into\n"
                        "[lo, hi], in place: h[r] <- h[r] + u (clamp(p, lo, hi) - p) with\n"
                        "p = <h[r], u>. A floor (the paper's cap) is hi=inf, a ceiling (the\n"
                        "reference code's cap) is lo=-inf. Rows already inside [lo, hi] are not\n"
                        "written (bit-for-bit unchanged); rows holding NaN or inf are never\n"
                        "written; an array bound holding NaN means no bound for that row.\n"
                        "\n"
                        "h:        (d,), (n, d) or (batch, seq, d); float32, float16 or bfloat16\n"
                        "          (see project); writeable; last axis contiguous.\n"
                        "u:        (d,) float32 (float64 is converted), unit norm.\n"
                        "lo, hi:   numbers or float32-convertible arrays broadcastable to\n"
                        "          h.shape[:-1], in the units of h; lo > hi is a ValueError, and\n"
                        "          so is a number that is no bound (NaN, lo=inf, hi=-inf: use\n"
                        "          lo=-inf or hi=inf for an open side) or beyond float32.\n"
                        "mask:     bool or uint8 0 / 1, broadcastable to h.shape[:-1]; 0 = leave\n"
                        "          the row alone (its outputs get NaN / False).\n"
                        "p_before: float32 (h.shape[:-1]) written with <h[r], u> before.\n"
                        "p_after:  float32 (h.shape[:-1]) written with <h[r], u> after, from the\n"
                        "          stored row (so including float16/bfloat16 rounding).\n"
                        "changed:  bool (h.shape[:-1]) written with True where the row changed.\n"
                        "dtype, threads: as in project.\n"
                        "\n"
                        "Raises TypeError (dtype), ValueError (shape, stride, norm, lo > hi,\n"
                        "read-only h, overlapping buffers). The GIL is released while the kernel\n"
                        "runs.");

static PyObject *py_clamp(PyObject *self, PyObject *args, PyObject *kw) {
  (void)self;
  static char *kwlist[] = {"h",       "u",       "lo",    "hi",      "mask", "p_before",
                           "p_after", "changed", "dtype", "threads", NULL};
  enum { H, U, LO, HI, MASK, P_BEFORE, P_AFTER, CHANGED };
  call c;
  PyObject *o[AXS_MAX_ARGS];
  int parsed = begin_call(&c, args, kw, "OO|OO$OOOOOO:clamp_", kwlist, "clamp_", o) &&
               parse_dir(o[U], "u", &c) == 0 && parse_fin(o[LO], "lo", FIN_LO, &c, &c.a) == 0 &&
               parse_fin(o[HI], "hi", FIN_HI, &c, &c.b) == 0 && parse_mask(o[MASK], &c) == 0 &&
               parse_out(o[P_BEFORE], "p_before", 0, &c) == 0 &&
               parse_out(o[P_AFTER], "p_after", 0, &c) == 0 &&
               parse_out(o[CHANGED], "changed", 1, &c) == 0;
  return run_call(&c, parsed, run_clamp, new_none());
}

PyDoc_STRVAR(set_projection_doc,
             "set_projection_(h, u, target, *, mask=None, p_before=None, dtype=None,\n"
             "                threads=0) -> None\n"
             "\n"
             "Sets the projection of each row of h on the unit direction u to target,\n"
             "in place: h[r] <- h[r] + u (target - <h[r], u>). target = 0 ablates the\n"
             "direction. A non-finite target, or a row holding NaN or inf, leaves the\n"
             "row unchanged.\n"
             "\n"
             "h:        (d,), (n, d) or (batch, seq, d), writeable (see project).\n"
             "u:        (d,) float32 (float64 is converted), unit norm.\n"
             "target:   float or float32-convertible array broadcastable to\n"
             "          h.shape[:-1], in the units of h.\n"
             "mask:     bool or uint8 0 / 1, broadcastable to h.shape[:-1].\n"
             "p_before: float32 (h.shape[:-1]) written with <h[r], u> before.\n"
             "dtype, threads: as in project.\n"
             "\n"
             "Raises TypeError / ValueError as clamp_. Releases the GIL while the\n"
             "kernel runs.");

static PyObject *py_set_projection(PyObject *self, PyObject *args, PyObject *kw) {
  (void)self;
  static char *kwlist[] = {"h", "u", "target", "mask", "p_before", "dtype", "threads", NULL};
  enum { H, U, TARGET, MASK, P_BEFORE };
  call c;
  PyObject *o[AXS_MAX_ARGS];
  int parsed =
      begin_call(&c, args, kw, "OOO|$OOOO:set_projection_", kwlist, "set_projection_", o) &&
      parse_dir(o[U], "u", &c) == 0 && parse_fin(o[TARGET], "target", FIN_VALUE, &c, &c.a) == 0 &&
      parse_mask(o[MASK], &c) == 0 && parse_out(o[P_BEFORE], "p_before", 0, &c) == 0;
  return run_call(&c, parsed, run_set_projection, new_none());
}

PyDoc_STRVAR(steer_doc, "steer_(h, w, alpha, *, mask=None, dtype=None, threads=0) -> None\n"
                        "\n"
                        "Adds alpha * w to each row of h, in place: h[r] <- h[r] + alpha[r] w.\n"
                        "w is used as given (not normalised), so alpha is in units of ||w||.\n"
                        "Rows with alpha == 0 or a non-finite alpha are left unchanged.\n"
                        "\n"
                        "h:      (d,), (n, d) or (batch, seq, d), writeable (see project).\n"
                        "w:      (d,) float32 (float64 is converted), any finite vector.\n"
                        "alpha:  float or float32-convertible array broadcastable to\n"
                        "        h.shape[:-1].\n"
                        "mask:   bool or uint8 0 / 1, broadcastable to h.shape[:-1].\n"
                        "dtype, threads: as in project.\n"
                        "\n"
                        "Raises TypeError / ValueError as clamp_. Releases the GIL while the\n"
                        "kernel runs.");

static PyObject *py_steer(PyObject *self, PyObject *args, PyObject *kw) {
  (void)self;
  static char *kwlist[] = {"h", "w", "alpha", "mask", "dtype", "threads", NULL};
  enum { H, W, ALPHA, MASK };
  call c;
  PyObject *o[AXS_MAX_ARGS];
  int parsed = begin_call(&c, args, kw, "OOO|$OOO:steer_", kwlist, "steer_", o) &&
               parse_dir(o[W], "w", &c) == 0 &&
               parse_fin(o[ALPHA], "alpha", FIN_VALUE, &c, &c.a) == 0 &&
               parse_mask(o[MASK], &c) == 0;
  return run_call(&c, parsed, run_steer, new_none());
}

/* ops: a sequence of K op codes (0..3) or names. */
static int parse_ops(PyObject *obj, axs_op *ops, int *n_ops) {
  static const char *const names[] = {"project", "clamp", "set", "steer"};
  if (PyUnicode_Check(obj) || PyBytes_Check(obj)) {
    PyErr_Format(PyExc_TypeError,
                 "ops = %R: expected a sequence of op names or codes (for a "
                 "single op write [%R])",
                 obj, obj);
    return -1;
  }
  PyObject *seq =
      PySequence_Fast(obj, "ops: expected a sequence of op names (\"project\", \"clamp\", "
                           "\"set\", \"steer\") or codes (0..3)");
  if (seq == NULL)
    return -1;
  Py_ssize_t k_ops = PySequence_Fast_GET_SIZE(seq);
  if (k_ops < 1 || k_ops > AXS_MAX_STEPS) {
    PyErr_Format(PyExc_ValueError, "ops: %zd ops given (expected 1 to MAX_STEPS = %d)", k_ops,
                 AXS_MAX_STEPS);
    Py_DECREF(seq);
    return -1;
  }
  for (Py_ssize_t k = 0; k < k_ops; k++) {
    PyObject *item = PySequence_Fast_GET_ITEM(seq, k);
    long code = -1;
    if (PyUnicode_Check(item)) {
      for (int j = 0; j < 4; j++)
        if (PyUnicode_CompareWithASCIIString(item, names[j]) == 0)
          code = j;
    } else if (PyIndex_Check(item) && !PyBool_Check(item)) {
      Py_ssize_t v = PyNumber_AsSsize_t(item, NULL);
      if (v == -1 && PyErr_Occurred()) {
        Py_DECREF(seq);
        return -1;
      }
      code = v >= 0 && v <= 3 ? (long)v : -1;
    } else {
      PyErr_Format(PyExc_TypeError, "ops[%zd] = %R: expected an op name or code (got %s)", k, item,
                   Py_TYPE(item)->tp_name);
      Py_DECREF(seq);
      return -1;
    }
    if (code < 0) {
      PyErr_Format(PyExc_ValueError,
                   "ops[%zd] = %R is not an op (expected \"project\", "
                   "\"clamp\", \"set\" or \"steer\", or 0, 1, 2, 3)",
                   k, item);
      Py_DECREF(seq);
      return -1;
    }
    ops[k] = (axs_op)code;
  }
  Py_DECREF(seq);
  *n_ops = (int)k_ops;
  return 0;
}

/* dirs (K, d) and params (K, 2, *B) into the steps of c, with the names the
 * core's messages use for them. */
static int parse_program(PyObject *dirs_obj, PyObject *ops_obj, PyObject *params_obj, call *c) {
  axs_op ops[AXS_MAX_STEPS];
  int k_ops = 0;
  if (parse_ops(ops_obj, ops, &k_ops) < 0)
    return -1;
  /* dirs: (K, d) */
  PyArrayObject *dirs_raw = (PyArrayObject *)PyArray_FROM_O(dirs_obj);
  if (dirs_raw == NULL)
    return -1;
  if (PyArray_TYPE(dirs_raw) != NPY_FLOAT32 && PyArray_TYPE(dirs_raw) != NPY_FLOAT64) {
    PyErr_Format(PyExc_TypeError,
                 "dirs: dtype %S is not supported (expected float32, or "
                 "float64 which is converted)",
                 (PyObject *)PyArray_DESCR(dirs_raw));
    Py_DECREF(dirs_raw);
    return -1;
  }
  if (PyArray_NDIM(dirs_raw) != 2 || PyArray_DIM(dirs_raw, 0) != k_ops ||
      PyArray_DIM(dirs_raw, 1) != c->h.rows.d) {
    char s[96];
    shape_text(s, sizeof s, PyArray_NDIM(dirs_raw), PyArray_DIMS(dirs_raw));
    PyErr_Format(PyExc_ValueError,
                 "dirs: shape %s (expected (K, d) = (%d, %lld): one "
                 "direction per op, as long as the last axis of h)",
                 s, k_ops, (long long)c->h.rows.d);
    Py_DECREF(dirs_raw);
    return -1;
  }
  PyArrayObject *dirs = (PyArrayObject *)PyArray_FromArray(
      dirs_raw, PyArray_DescrFromType(NPY_FLOAT32), NPY_ARRAY_IN_ARRAY | NPY_ARRAY_FORCECAST);
  Py_DECREF(dirs_raw);
  if (dirs == NULL)
    return -1;
  keep(&c->kept, dirs, "dirs");

  /* params: (K, 2, *B) */
  PyArrayObject *params = as_f32(params_obj, "params");
  if (params == NULL)
    return -1;
  keep(&c->kept, params, "params");
  int nd = PyArray_NDIM(params);
  const npy_intp *shape = PyArray_DIMS(params);
  if (nd < 2 || shape[0] != k_ops || shape[1] != 2) {
    char s[96];
    shape_text(s, sizeof s, nd, shape);
    PyErr_Format(PyExc_ValueError,
                 "params: shape %s (expected (K, 2, *B) with K = %d ops "
                 "and B broadcastable to h.shape[:-1] = %s; params[k, 0] "
                 "is lo, target or alpha, params[k, 1] is hi)",
                 s, k_ops, c->h.row_text);
    return -1;
  }
  int64_t pso = 0, psi = 0;
  if (broadcast_rows(&c->h, "params[k, i]", nd - 2, shape + 2, PyArray_STRIDES(params) + 2,
                     sizeof(float), &pso, &psi) < 0)
    return -1;
  const char *pbase = (const char *)PyArray_DATA(params);
  npy_intp pst0 = PyArray_STRIDE(params, 0), pst1 = PyArray_STRIDE(params, 1);
  for (int k = 0; k < k_ops; k++) {
    axs_step *s = &c->steps[k];
    memset(s, 0, sizeof *s);
    s->op = ops[k];
    s->dir = (const float *)PyArray_DATA(dirs) + (int64_t)k * c->h.rows.d;
    axs_fin a = {(const float *)(const void *)(pbase + k * pst0), pso, psi};
    axs_fin b = {(const float *)(const void *)(pbase + k * pst0 + pst1), pso, psi};
    if (ops[k] != AXS_PROJECT)
      s->a = a;
    if (ops[k] == AXS_CLAMP)
      s->b = b;
  }
  c->n_steps = k_ops;
  c->names.dir = "dirs[%d]";
  c->names.a = "params[%d, 0]";
  c->names.b = "params[%d, 1]";
  return 0;
}

PyDoc_STRVAR(apply_doc, "apply_(h, dirs, ops, params, *, mask=None, p_in=None, p_out=None,\n"
                        "       fired=None, dtype=None, threads=0) -> None\n"
                        "\n"
                        "Runs a short program of K steps on every row of h, in place and in one\n"
                        "pass; each step sees the result of the previous one. Step k is ops[k]\n"
                        "along dirs[k] with per-row values params[k, 0] and params[k, 1]:\n"
                        "  \"project\" (0): records only (params ignored)\n"
                        "  \"clamp\"   (1): projection clamped into [params[k, 0], params[k, 1]]\n"
                        "  \"set\"     (2): projection set to params[k, 0]\n"
                        "  \"steer\"   (3): h += params[k, 0] * dirs[k] (dirs[k] any finite\n"
                        "                 vector; the other ops need unit rows)\n"
                        "with the rules of clamp_, set_projection_ and steer_.\n"
                        "\n"
                        "h:      (d,), (n, d) or (batch, seq, d), writeable (see project).\n"
                        "dirs:   (K, d) float32 (float64 is converted).\n"
                        "ops:    sequence of K op names or codes, 1 <= K <= MAX_STEPS.\n"
                        "params: (K, 2, *B) float32-convertible, B broadcastable to\n"
                        "        h.shape[:-1]; params[k, 1] is read by clamp steps only.\n"
                        "mask:   bool or uint8 0 / 1, broadcastable to h.shape[:-1].\n"
                        "p_in:   float32 (h.shape[:-1]) written with <h[r], dirs[0]> before.\n"
                        "p_out:  float32 (h.shape[:-1]) written with <h[r], dirs[0]> after.\n"
                        "fired:  bool (h.shape[:-1]) written with True where a clamp step\n"
                        "        changed the row.\n"
                        "dtype, threads: as in project.\n"
                        "\n"
                        "Raises TypeError / ValueError as clamp_ (naming dirs[k], params[k, 0],\n"
                        "params[k, 1]). Releases the GIL while the kernel runs.");

static PyObject *py_apply(PyObject *self, PyObject *args, PyObject *kw) {
  (void)self;
  static char *kwlist[] = {"h",     "dirs",  "ops",   "params",  "mask", "p_in",
                           "p_out", "fired", "dtype", "threads", NULL};
  enum { H, DIRS, OPS, PARAMS, MASK, P_IN, P_OUT, FIRED };
  call c;
  PyObject *o[AXS_MAX_ARGS];
  int parsed = begin_call(&c, args, kw, "OOOO|$OOOOOO:apply_", kwlist, "apply_", o) &&
               parse_program(o[DIRS], o[OPS], o[PARAMS], &c) == 0 && parse_mask(o[MASK], &c) == 0 &&
               parse_out(o[P_IN], "p_in", 0, &c) == 0 && parse_out(o[P_OUT], "p_out", 0, &c) == 0 &&
               parse_out(o[FIRED], "fired", 1, &c) == 0;
  return run_call(&c, parsed, run_apply, new_none());
}

PyDoc_STRVAR(default_threads_doc, "default_threads() -> int\n"
                                  "\n"
                                  "The number of threads a call with threads <= 0 uses (OpenMP's "
                                  "default, or 1 in a build without OpenMP).");

static PyObject *py_default_threads(PyObject *self, PyObject *unused) {
  (void)self;
  (void)unused;
  return PyLong_FromLong(axs_default_threads());
}

static PyMethodDef methods[] = {
    {"project", (PyCFunction)(void (*)(void))py_project, METH_VARARGS | METH_KEYWORDS, project_doc},
    {"clamp_", (PyCFunction)(void (*)(void))py_clamp, METH_VARARGS | METH_KEYWORDS, clamp_doc},
    {"set_projection_", (PyCFunction)(void (*)(void))py_set_projection,
     METH_VARARGS | METH_KEYWORDS, set_projection_doc},
    {"steer_", (PyCFunction)(void (*)(void))py_steer, METH_VARARGS | METH_KEYWORDS, steer_doc},
    {"apply_", (PyCFunction)(void (*)(void))py_apply, METH_VARARGS | METH_KEYWORDS, apply_doc},
    {"default_threads", py_default_threads, METH_NOARGS, default_threads_doc},
    {NULL, NULL, 0, NULL}};

PyDoc_STRVAR(module_doc, "axis_steer._C - NumPy bindings of the axis_steer C core.\n"
                         "\n"
                         "Every function works on rows h of shape (d,), (n, d) or (batch, seq, d)\n"
                         "in float32, float16 or bfloat16 (an ml_dtypes bfloat16 array, or its\n"
                         "bits as a uint16 array with dtype=\"bfloat16\"), with float32\n"
                         "arithmetic and round-to-nearest-even stores. Directions are (d,)\n"
                         "float32; per-row values and masks broadcast to h.shape[:-1]; outputs\n"
                         "have shape h.shape[:-1]. Functions ending in _ modify h in place.\n"
                         "\n"
                         "  project(h, u)                  p = <h, u>\n"
                         "  clamp_(h, u, lo, hi)           projection clamped into [lo, hi]\n"
                         "  set_projection_(h, u, target)  projection set to target\n"
                         "  steer_(h, w, alpha)            h += alpha * w\n"
                         "  apply_(h, dirs, ops, params)   several of these steps in one pass\n"
                         "\n"
                         "Bad arguments raise TypeError or ValueError naming the argument; a\n"
                         "failure inside the core raises axis_steer.errors.AxisSteerError. The\n"
                         "GIL is released while a kernel runs.\n"
                         "\n"
                         "Constants: MAX_STEPS (most steps in apply_), PARALLEL_MIN_ELEMS (inputs\n"
                         "with fewer elements run on one thread), UNIT_TOL (allowed | ||u|| - 1 "
                         "|).");

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "_C", module_doc, -1, methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__C(void) {
  import_array();
  PyObject *errors = PyImport_ImportModule("axis_steer.errors");
  if (errors == NULL)
    return NULL;
  PyObject *cls = PyObject_GetAttrString(errors, "AxisSteerError");
  Py_DECREF(errors);
  if (cls == NULL)
    return NULL;
  PyObject *m = PyModule_Create(&module_def);
  if (m == NULL) {
    Py_DECREF(cls);
    return NULL;
  }
  Py_XDECREF(axs_error_type);
  axs_error_type = cls;
  PyObject *tol = PyFloat_FromDouble((double)AXS_UNIT_TOL);
  if (tol == NULL || PyModule_AddIntConstant(m, "MAX_STEPS", AXS_MAX_STEPS) < 0 ||
      PyModule_AddIntConstant(m, "PARALLEL_MIN_ELEMS", AXS_PARALLEL_MIN_ELEMS) < 0 ||
      PyModule_AddObject(m, "UNIT_TOL", tol) < 0) {
    Py_XDECREF(tol);
    Py_DECREF(m);
    return NULL;
  }
  return m;
}
