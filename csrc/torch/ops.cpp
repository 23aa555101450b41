// ops.cpp - the axis_steer torch operators: their schemas (defined once,
// here), the backend-generic implementations, and the CPU registration. The
// CUDA registration lives in ops_cuda.cpp and reuses ops.h. Fake (meta)
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
    return axs_apply_(pg.h, pg.steps.data(), pg.n_steps, pg.mask, pg.rec, threads());
  }
};

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
} // namespace axis_steer

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
                                            nullptr,
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
