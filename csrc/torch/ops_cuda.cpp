// ops_cuda.cpp - registers the CUDA kernels of the core (csrc/core/cuda.cu)
// as the CUDA implementations of the axis_steer operators. Compiled only in
// CUDA builds (AXS_WITH_CUDA). Work is enqueued on the current torch stream
// of h's device; nothing here synchronises, allocates per data or reads
// device memory, so the operators can be captured in CUDA graphs.
//
// CudaBackend mirrors ops.cpp's CpuBackend entry point for entry point: the
// core has the same five on both halves. The CUDA entry points cannot check
// what lives in device memory (unit norm of directions, per-row lo <= hi,
// mask values 0 / 1); axis_steer's Python layer checks those when values are
// set (see axis_steer/ops.py and hooks).
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "ops.h"

namespace axis_steer {
namespace {

// h's device, once h is known to be a CUDA tensor (the CUDA kernels also
// run when h is on the CPU but another argument is on a GPU).
c10::Device cuda_device_of(const at::Tensor &h) {
  TORCH_CHECK_VALUE(h.is_cuda(), "h: on ", h.device(),
                    " but other arguments are on a CUDA device (expected every tensor on h's "
                    "device: move them with .to(h.device), or h to theirs)");
  return h.device();
}

struct CudaBackend {
  struct Guard {
    explicit Guard(const at::Tensor &h) : device(cuda_device_of(h)) {}
    c10::cuda::CUDAGuard device;
  };

  static void *stream() { return static_cast<void *>(c10::cuda::getCurrentCUDAStream().stream()); }

  static axs_status project(axs_rows h, const float *u, axs_bin mask, axs_fout p) {
    return axs_project_cuda(h, u, mask, p, stream());
  }

  static axs_status clamp_(axs_rows h, const float *u, axs_fin lo, axs_fin hi, axs_bin mask,
                           axs_fout pb, axs_fout pa, axs_bout changed) {
    return axs_clamp_cuda_(h, u, lo, hi, mask, pb, pa, changed, stream());
  }

  static axs_status set_projection_(axs_rows h, const float *u, axs_fin t, axs_bin mask,
                                    axs_fout pb) {
    return axs_set_projection_cuda_(h, u, t, mask, pb, stream());
  }

  static axs_status steer_(axs_rows h, const float *w, axs_fin alpha, axs_bin mask) {
    return axs_steer_cuda_(h, w, alpha, mask, stream());
  }

  static axs_status latch_apply_(const Program &pg, const Latches &ls) {
    return axs_latch_apply_cuda_(pg.h, ls.items.data(), ls.n, pg.steps.data(), pg.n_steps, pg.mask,
                                 pg.rec, &pg.names, stream());
  }
};

} // namespace
} // namespace axis_steer

TORCH_LIBRARY_IMPL(axis_steer, CUDA, m) {
  using B = axis_steer::CudaBackend;
  m.impl("project", &axis_steer::project_impl<B>);
  m.impl("clamp_", &axis_steer::clamp_impl<B>);
  m.impl("set_projection_", &axis_steer::set_projection_impl<B>);
  m.impl("steer_", &axis_steer::steer_impl<B>);
  m.impl("apply_", &axis_steer::apply_inplace_impl<B>);
  m.impl("apply", &axis_steer::apply_impl<B>);
  m.impl("latch_", &axis_steer::latch_impl<B>);
}

namespace {
// Fills in the CUDA slot of the direct entry point (ops.cpp) at load time.
const bool direct_registered = [] {
  axis_steer::cuda_direct_apply() = &axis_steer::apply_gated_impl<axis_steer::CudaBackend>;
  return true;
}();
} // namespace
