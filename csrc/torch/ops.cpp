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
//   apply_(h!, dirs, ops, params, mask?, p_in!?, p_out!?, fired!?, rec_offset?)
//   apply(h, dirs, ops, params, mask?)              -> (out, changed)
// lo, hi, target and alpha are float32 tensors broadcastable to the rows of
// h (0-dim for one value); formulas and the NaN policy are in axis_steer.h.
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

  static axs_status apply_(const Program &pg) {
    return axs_apply_(pg.h, pg.steps.data(), pg.n_steps, pg.mask, pg.rec, &pg.names, threads());
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
  for (size_t i = 1; i < n; i++) {
    if (!args[i].isTensor())
      continue; // ints, and optional tensors not given
    const at::Tensor &t = args[i].toTensor();
    TORCH_CHECK_VALUE(t.device() == h.device(), schema.name(), ": ", schema.arguments()[i].name(),
                      " is on ", t.device(), " but h is on ", h.device(),
                      " (expected every tensor argument on h's device: move it with "
                      ".to(h.device)",
                      t.is_meta() || h.is_meta()
                          ? "; meta tensors only trace shapes, so that needs every argument on meta"
                          : "",
                      ")");
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
// _ops.apply_direct_(h, dirs, ops, params, mask, p_in, p_out, fired, rec_offset)
// runs apply_ without the dispatcher: no boxing of the arguments, no autograd
// or functionalization layers. It is what the model hooks call in eager mode
// (where host time per call is the cost of capping); traced and compiled code,
// and anything that needs autograd, goes through torch.ops.axis_steer.apply_.
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

PyObject *py_apply_direct(PyObject *, PyObject *args) {
  HANDLE_TH_ERRORS
  PyObject *h, *dirs, *ops, *params, *mask, *p_in, *p_out, *fired, *off;
  if (!PyArg_UnpackTuple(args, "apply_direct_", 9, 9, &h, &dirs, &ops, &params, &mask, &p_in,
                         &p_out, &fired, &off))
    return nullptr;
  const at::Tensor &H = tensor_arg(h, "h");
  TORCH_CHECK_VALUE(!(at::GradMode::is_enabled() && H.requires_grad()),
                    "h requires grad: use torch.ops.axis_steer.apply (out of place) instead");
  int64_t codes[AXS_MAX_STEPS];
  PyObject *seq = PySequence_Fast(ops, "ops: expected a sequence of ints");
  if (seq == nullptr)
    return nullptr;
  const Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
  if (n < 1 || n > AXS_MAX_STEPS) {
    Py_DECREF(seq);
    TORCH_CHECK_VALUE(false, "ops: ", n, " steps (expected 1 to ", AXS_MAX_STEPS, ")");
  }
  for (Py_ssize_t k = 0; k < n; k++)
    codes[k] = PyLong_AsLongLong(PySequence_Fast_GET_ITEM(seq, k));
  Py_DECREF(seq);
  if (PyErr_Occurred())
    return nullptr;
  const at::IntArrayRef op_list(codes, static_cast<size_t>(n));
  const at::Tensor &D = tensor_arg(dirs, "dirs");
  const at::Tensor &P = tensor_arg(params, "params");
  const auto M = optional_arg(mask, "mask");
  const auto I = optional_arg(p_in, "p_in");
  const auto O = optional_arg(p_out, "p_out");
  const auto F = optional_arg(fired, "fired");
  const auto R = optional_arg(off, "rec_offset");
  if (H.is_cuda()) {
    const auto fn = axis_steer::cuda_direct_apply();
    TORCH_CHECK(fn != nullptr, "h is on ", H.device(),
                " but axis_steer was built without CUDA kernels (rebuild where nvcc is found)");
    fn(H, D, op_list, P, M, I, O, F, R);
  } else {
    TORCH_CHECK_VALUE(H.is_cpu(), "h: on ", H.device(), " (expected a CPU or CUDA tensor)");
    if (H.numel() >= AXS_PARALLEL_MIN_ELEMS) {
      NoGil released;
      axis_steer::apply_inplace_impl<axis_steer::CpuBackend>(H, D, op_list, P, M, I, O, F, R);
    } else {
      axis_steer::apply_inplace_impl<axis_steer::CpuBackend>(H, D, op_list, P, M, I, O, F, R);
    }
  }
  if (!H.is_inference())
    torch::autograd::impl::bump_version(H);
  Py_RETURN_NONE;
  END_HANDLE_TH_ERRORS
}

PyMethodDef axs_ops_methods[] = {
    {"apply_direct_", py_apply_direct, METH_VARARGS,
     "apply_direct_(h, dirs, ops, params, mask, p_in, p_out, fired, rec_offset) -> None\n"
     "torch.ops.axis_steer.apply_ without the dispatcher (eager, no autograd)."},
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
        "Tensor(c!)? p_out=None, Tensor(d!)? fired=None, Tensor? rec_offset=None) -> ()");
  m.def("apply(Tensor h, Tensor dirs, int[] ops, Tensor params, Tensor? mask=None) -> (Tensor, "
        "Tensor)");
}

TORCH_LIBRARY_IMPL(axis_steer, CPU, m) {
  using B = axis_steer::CpuBackend;
  m.impl("project", &axis_steer::project_impl<B>);
  m.impl("clamp_", &axis_steer::clamp_impl<B>);
  m.impl("set_projection_", &axis_steer::set_projection_impl<B>);
  m.impl("steer_", &axis_steer::steer_impl<B>);
  m.impl("apply_", &axis_steer::apply_inplace_impl<B>);
  m.impl("apply", &axis_steer::apply_impl<B>);
}

TORCH_LIBRARY_IMPL(axis_steer, BackendSelect, m) {
  for (const char *name : {"project", "clamp_", "set_projection_", "steer_", "apply_", "apply"})
    m.impl(name, torch::CppFunction::makeFromBoxedFunction<&axis_steer::same_device>());
}

TORCH_LIBRARY_IMPL(axis_steer, Autograd, m) {
  for (const char *name : {"clamp_", "set_projection_", "steer_", "apply_"})
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
