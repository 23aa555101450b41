// ops.cpp - the axis_steer torch operators: their schemas (defined once,
// here), the backend-generic implementations, the CPU registration, and the
// device check every call passes before a backend is chosen (BackendSelect).
// The CUDA registration lives in ops_cuda.cpp and reuses ops.h. Fake (meta)
// kernels and autograd are registered in Python (axis_steer/_torch_ops.py).
//
// Schemas
//   project(h, u, mask?)                                  -> p (rows of h)
//   clamp_(h!, u, lo, hi, mask?, p_before!?, p_after!?, changed!?)
//   set_projection_(h!, u, target, mask?, p_before!?)
//   steer_(h!, w, alpha, mask?)
//   apply_(h!, dirs, ops, params, mask?, p_in!?, p_out!?, fired!?, rec_offset?,
//          gates?, gate_of?)
//   apply(h, dirs, ops, params, mask?, gates?, gate_of?, gate_offset?)
//                                                          -> (out, changed)
//   latch_(h, params, offset, state!, ring!, gate!, dir?, p!?, mask?)
// lo, hi, target and alpha are float32 tensors broadcastable to the rows of
// h (0-dim for one value); formulas and the NaN policy are in axis_steer.h.
// gate_of[k] is the index in gates of step k's gate (-1: ungated); a gate is
// bool, read at the record's columns when an offset is given. latch_ runs a
// drift latch (axis_steer.h, "Drift latches"; shapes in marshal.h latch_of).
#include "ops.h"

#include <ATen/Parallel.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/csrc/Exceptions.h>
#include <torch/csrc/autograd/python_variable.h>
#include <torch/csrc/autograd/variable.h>
#include <torch/library.h>

namespace axis_steer {
namespace {

struct CpuBackend {
  struct Guard {
    explicit Guard(const at::Tensor &) {}
  };

  static int threads() { return at::get_num_threads(); }

  static axs_status project(axs_rows h, const float *u, axs_bin mask, axs_fout p) {
    return axs_project(h, u, mask, p, threads());
  }

  static axs_status clamp_(axs_rows h, const float *u, axs_fin lo, axs_fin hi, axs_bin mask,
                           axs_fout pb, axs_fout pa, axs_bout changed) {
    return axs_clamp_(h, u, lo, hi, mask, pb, pa, changed, threads());
  }

  static axs_status set_projection_(axs_rows h, const float *u, axs_fin t, axs_bin mask,
                                    axs_fout pb) {
    return axs_set_projection_(h, u, t, mask, pb, threads());
  }

  static axs_status steer_(axs_rows h, const float *w, axs_fin alpha, axs_bin mask) {
    return axs_steer_(h, w, alpha, mask, threads());
  }

  static axs_status latch_apply_(const Program &pg, const Latches &ls) {
    return axs_latch_apply_(pg.h, ls.items.data(), ls.n, pg.steps.data(), pg.n_steps, pg.mask,
                            pg.rec, &pg.names, threads());
  }
};

// The BackendSelect kernel of every operator: each tensor argument must be on
// h's device. The dispatcher picks a kernel from the devices of all the
// tensors, so without this an argument on another device would choose the
// kernel - a direction on `meta` would run the shape-only fake kernel on a
// CPU h, returning uninitialised memory and writing nothing. Redispatches to
// the backend once the devices agree (all on meta is shape inference and
// stays allowed).
void same_device(const c10::OperatorHandle &op, c10::DispatchKeySet ks, torch::jit::Stack *stack) {
  const auto &schema = op.schema();
  const size_t n = schema.arguments().size();
  auto args = torch::jit::last(*stack, n);
  const at::Tensor &h = args[0].toTensor();
  const auto check = [&](const at::Tensor &t, size_t i) {
    TORCH_CHECK_VALUE(t.device() == h.device(), schema.name(), ": ", schema.arguments()[i].name(),
                      " is on ", t.device(), " but h is on ", h.device(),
                      " (expected every tensor argument on h's device: move it with "
                      ".to(h.device)",
                      t.is_meta() || h.is_meta()
                          ? "; meta tensors only trace shapes, so that needs every argument on meta"
                          : "",
                      ")");
  };
  for (size_t i = 1; i < n; i++) {
    if (args[i].isTensor())
      check(args[i].toTensor(), i);
    else if (args[i].isTensorList())
      for (const at::Tensor &t : args[i].toTensorList())
        check(t, i);
    // ints, and optional tensors not given, have no device
  }
  op.redispatchBoxed(
      ks & c10::DispatchKeySet(c10::DispatchKeySet::FULL_AFTER, c10::DispatchKey::BackendSelect),
      stack);
}

// The Autograd kernel of every in-place operator: refuses a mutated tensor
// that requires grad while grad mode is on (the in-place operators record no
// gradient; the out-of-place `apply` does), then runs the operator below
// autograd and bumps the version counter of what it wrote, so autograd can
// still tell that those tensors changed.
void inplace_autograd(const c10::OperatorHandle &op, c10::DispatchKeySet ks,
                      torch::jit::Stack *stack) {
  const auto &schema = op.schema();
  const size_t n = schema.arguments().size();
  auto args = torch::jit::last(*stack, n);
  std::vector<at::Tensor> written;
  for (size_t i = 0; i < n; i++) {
    const auto *alias = schema.arguments()[i].alias_info();
    if (alias == nullptr || !alias->isWrite() || !args[i].isTensor())
      continue;
    const at::Tensor &t = args[i].toTensor();
    TORCH_CHECK_VALUE(
        !(at::GradMode::is_enabled() && t.requires_grad()), schema.name(), ": ",
        schema.arguments()[i].name(),
        " requires grad, and the in-place operators record no gradient (use the out-of-place "
        "axis_steer.ops.apply / clamp / steer, or run under torch.no_grad())");
    written.push_back(t);
  }
  op.redispatchBoxed(ks & c10::after_ADInplaceOrView_keyset, stack);
  for (const auto &t : written)
    torch::autograd::impl::bump_version(t);
}

} // namespace

DirectApply &cuda_direct_apply() {
  static DirectApply fn = nullptr;
  return fn;
}

} // namespace axis_steer

// ---- the direct entry point ---------------------------------------------------
// _ops.apply_direct_(h, dirs, ops, params, mask, p_in, p_out, fired, rec_offset
//                    [, gates, gate_of[, latches]])
// runs apply_ without the dispatcher: no boxing of the arguments, no autograd
// or functionalization layers. It is what the model hooks call in eager mode
// (where host time per call is the cost of capping); traced and compiled code,
// and anything that needs autograd, goes through torch.ops.axis_steer.apply_
// (and latch_). gates is a tuple of tensors, gate_of a tuple of ints (one per
// step), latches a tuple of up to AXS_MAX_LATCHES tuples (params, state, ring,
// gate, dir or None, p or None) whose offset is rec_offset; they run before
// the steps, in one call of the core. ops may be empty when latches are given.
// Plain tensors only (no subclasses); h must not require grad in grad mode.

namespace {

// Releases the GIL for the lifetime of the object (exceptions may pass).
struct NoGil {
  PyThreadState *state;
  NoGil() : state(PyEval_SaveThread()) {}
  ~NoGil() { PyEval_RestoreThread(state); }
};

const at::Tensor &tensor_arg(PyObject *o, const char *name) {
  TORCH_CHECK_TYPE(THPVariable_CheckExact(o), name,
                   ": expected a torch.Tensor (not a subclass), got ", Py_TYPE(o)->tp_name);
  return THPVariable_Unpack(o);
}

c10::optional<at::Tensor> optional_arg(PyObject *o, const char *name) {
  if (o == Py_None)
    return c10::nullopt;
  return tensor_arg(o, name);
}

// Up to `most` ints of a Python sequence into out; returns the count, or -1
// with a Python error set.
Py_ssize_t int_args(PyObject *o, int64_t *out, Py_ssize_t least, Py_ssize_t most,
                    const char *name) {
  PyObject *seq = PySequence_Fast(o, name);
  if (seq == nullptr)
    return -1;
  const Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
  if (n < least || n > most) {
    Py_DECREF(seq);
    PyErr_Format(PyExc_ValueError, "%s: %zd items (expected %zd to %zd)", name, n, least, most);
    return -1;
  }
  for (Py_ssize_t k = 0; k < n; k++)
    out[k] = PyLong_AsLongLong(PySequence_Fast_GET_ITEM(seq, k));
  Py_DECREF(seq);
  return PyErr_Occurred() ? -1 : n;
}

// The tensors of a Python tuple (borrowed into `out`).
bool tensor_args(PyObject *o, std::vector<at::Tensor> &out, size_t most, const char *name) {
  TORCH_CHECK_TYPE(PyTuple_Check(o), name, ": expected a tuple, got ", Py_TYPE(o)->tp_name);
  const Py_ssize_t n = PyTuple_GET_SIZE(o);
  TORCH_CHECK_VALUE(static_cast<size_t>(n) <= most, name, ": ", n, " items (expected at most ",
                    most, ")");
  for (Py_ssize_t k = 0; k < n; k++)
    out.push_back(tensor_arg(PyTuple_GET_ITEM(o, k), name));
  return true;
}

// latches: a tuple of (params, state, ring, gate, dir or None, p or None).
axis_steer::Latches latch_args(const at::Tensor &h, PyObject *o,
                               const c10::optional<at::Tensor> &offset) {
  axis_steer::Latches ls;
  TORCH_CHECK_TYPE(PyTuple_Check(o), "latches: expected a tuple, got ", Py_TYPE(o)->tp_name);
  const Py_ssize_t n = PyTuple_GET_SIZE(o);
  TORCH_CHECK_VALUE(n <= AXS_MAX_LATCHES, "latches: ", n, " (expected at most ", AXS_MAX_LATCHES,
                    ")");
  TORCH_CHECK_VALUE(n == 0 || offset.has_value(), "latches: need rec_offset (their columns)");
  for (Py_ssize_t j = 0; j < n; j++) {
    PyObject *t = PyTuple_GET_ITEM(o, j);
    TORCH_CHECK_TYPE(PyTuple_Check(t) && PyTuple_GET_SIZE(t) == 6, "latches[", j,
                     "]: expected (params, state, ring, gate, dir, p)");
    ls.items[j] = axis_steer::latch_of(h, tensor_arg(PyTuple_GET_ITEM(t, 0), "latch params"),
                                       *offset, tensor_arg(PyTuple_GET_ITEM(t, 1), "latch state"),
                                       tensor_arg(PyTuple_GET_ITEM(t, 2), "latch ring"),
                                       tensor_arg(PyTuple_GET_ITEM(t, 3), "latch gate"),
                                       optional_arg(PyTuple_GET_ITEM(t, 4), "latch dir"),
                                       optional_arg(PyTuple_GET_ITEM(t, 5), "latch p"));
  }
  ls.n = static_cast<int>(n);
  return ls;
}

PyObject *py_apply_direct(PyObject *, PyObject *args) {
  HANDLE_TH_ERRORS
  PyObject *h, *dirs, *ops, *params, *mask, *p_in, *p_out, *fired, *off;
  PyObject *gates = nullptr, *gate_of = nullptr, *latches = nullptr;
  if (!PyArg_UnpackTuple(args, "apply_direct_", 9, 12, &h, &dirs, &ops, &params, &mask, &p_in,
                         &p_out, &fired, &off, &gates, &gate_of, &latches))
    return nullptr;
  const at::Tensor &H = tensor_arg(h, "h");
  TORCH_CHECK_VALUE(!(at::GradMode::is_enabled() && H.requires_grad()),
                    "h requires grad: use torch.ops.axis_steer.apply (out of place) instead");
  const auto R = optional_arg(off, "rec_offset");
  axis_steer::Latches ls;
  if (latches != nullptr)
    ls = latch_args(H, latches, R);
  int64_t codes[AXS_MAX_STEPS], gate_codes[AXS_MAX_STEPS];
  const Py_ssize_t n = int_args(ops, codes, ls.n > 0 ? 0 : 1, AXS_MAX_STEPS, "ops");
  if (n < 0)
    return nullptr;
  Py_ssize_t n_gated = 0;
  std::vector<at::Tensor> G;
  if (gates != nullptr)
    tensor_args(gates, G, AXS_MAX_STEPS, "gates");
  if (gate_of != nullptr &&
      (n_gated = int_args(gate_of, gate_codes, 0, AXS_MAX_STEPS, "gate_of")) < 0)
    return nullptr;
  const at::IntArrayRef op_list(codes, static_cast<size_t>(n));
  const at::IntArrayRef gate_list(gate_codes, static_cast<size_t>(n_gated));
  const at::Tensor none;
  const at::Tensor &D = n > 0 ? tensor_arg(dirs, "dirs") : none;
  const at::Tensor &P = n > 0 ? tensor_arg(params, "params") : none;
  const auto M = optional_arg(mask, "mask");
  const auto I = optional_arg(p_in, "p_in");
  const auto O = optional_arg(p_out, "p_out");
  const auto F = optional_arg(fired, "fired");
  if (H.is_cuda()) {
    const auto fn = axis_steer::cuda_direct_apply();
    TORCH_CHECK(fn != nullptr, "h is on ", H.device(),
                " but axis_steer was built without CUDA kernels (rebuild where nvcc is found)");
    fn(H, D, op_list, P, M, I, O, F, R, G, gate_list, ls);
  } else {
    TORCH_CHECK_VALUE(H.is_cpu(), "h: on ", H.device(), " (expected a CPU or CUDA tensor)");
    if (H.numel() >= AXS_PARALLEL_MIN_ELEMS) {
      NoGil released;
      axis_steer::apply_gated_impl<axis_steer::CpuBackend>(H, D, op_list, P, M, I, O, F, R, G,
                                                           gate_list, ls);
    } else {
      axis_steer::apply_gated_impl<axis_steer::CpuBackend>(H, D, op_list, P, M, I, O, F, R, G,
                                                           gate_list, ls);
    }
  }
  if (!H.is_inference())
    torch::autograd::impl::bump_version(H);
  Py_RETURN_NONE;
  END_HANDLE_TH_ERRORS
}

PyMethodDef axs_ops_methods[] = {
    {"apply_direct_", py_apply_direct, METH_VARARGS,
     "apply_direct_(h, dirs, ops, params, mask, p_in, p_out, fired, rec_offset[, gates, gate_of[, "
     "latches]]) -> None\n"
     "torch.ops.axis_steer.apply_ (after latch_ for each latch) without the dispatcher (eager, "
     "no autograd)."},
    {nullptr, nullptr, 0, nullptr}};

} // namespace

TORCH_LIBRARY(axis_steer, m) {
  m.def("project(Tensor h, Tensor u, Tensor? mask=None) -> Tensor");
  m.def("clamp_(Tensor(a!) h, Tensor u, Tensor lo, Tensor hi, Tensor? mask=None, Tensor(b!)? "
        "p_before=None, "
        "Tensor(c!)? p_after=None, Tensor(d!)? changed=None) -> ()");
  m.def("set_projection_(Tensor(a!) h, Tensor u, Tensor target, Tensor? mask=None, Tensor(b!)? "
        "p_before=None) -> ()");
  m.def("steer_(Tensor(a!) h, Tensor w, Tensor alpha, Tensor? mask=None) -> ()");
  m.def("apply_(Tensor(a!) h, Tensor dirs, int[] ops, Tensor params, Tensor? mask=None, "
        "Tensor(b!)? p_in=None, "
        "Tensor(c!)? p_out=None, Tensor(d!)? fired=None, Tensor? rec_offset=None, "
        "Tensor[]? gates=None, int[]? gate_of=None) -> ()");
  m.def("apply(Tensor h, Tensor dirs, int[] ops, Tensor params, Tensor? mask=None, "
        "Tensor[]? gates=None, int[]? gate_of=None, Tensor? gate_offset=None) -> (Tensor, Tensor)");
  m.def("latch_(Tensor h, Tensor params, Tensor offset, Tensor(a!) state, Tensor(b!) ring, "
        "Tensor(c!) gate, Tensor? dir=None, Tensor(d!)? p=None, Tensor? mask=None) -> ()");
}

TORCH_LIBRARY_IMPL(axis_steer, CPU, m) {
  using B = axis_steer::CpuBackend;
  m.impl("project", &axis_steer::project_impl<B>);
  m.impl("clamp_", &axis_steer::clamp_impl<B>);
  m.impl("set_projection_", &axis_steer::set_projection_impl<B>);
  m.impl("steer_", &axis_steer::steer_impl<B>);
  m.impl("apply_", &axis_steer::apply_inplace_impl<B>);
  m.impl("apply", &axis_steer::apply_impl<B>);
  m.impl("latch_", &axis_steer::latch_impl<B>);
}

TORCH_LIBRARY_IMPL(axis_steer, BackendSelect, m) {
  for (const char *name :
       {"project", "clamp_", "set_projection_", "steer_", "apply_", "apply", "latch_"})
    m.impl(name, torch::CppFunction::makeFromBoxedFunction<&axis_steer::same_device>());
}

TORCH_LIBRARY_IMPL(axis_steer, Autograd, m) {
  for (const char *name : {"clamp_", "set_projection_", "steer_", "apply_", "latch_"})
    m.impl(name, torch::CppFunction::makeFromBoxedFunction<&axis_steer::inplace_autograd>());
}

// Importing the extension from Python (import axis_steer._ops) runs the
// registrations above; this is the module object it needs.
extern "C" {
#include <Python.h>
static struct PyModuleDef axs_ops_module = {PyModuleDef_HEAD_INIT,
                                            "_ops",
                                            "axis_steer's torch operators (torch.ops.axis_steer.*)",
                                            -1,
                                            axs_ops_methods,
                                            nullptr,
                                            nullptr,
                                            nullptr,
                                            nullptr};
PyMODINIT_FUNC PyInit__ops(void) {
  PyObject *mod = PyModule_Create(&axs_ops_module);
  if (mod == nullptr)
    return nullptr;
#ifdef AXS_WITH_CUDA
  if (PyModule_AddIntConstant(mod, "WITH_CUDA", 1) < 0)
    return nullptr;
#else
  if (PyModule_AddIntConstant(mod, "WITH_CUDA", 0) < 0)
    return nullptr;
#endif
  return mod;
}
}
