// ops.h - the operator implementations, written once for any backend. A
// backend is a struct of static functions that run the core on its device
// (CpuBackend in ops.cpp, CudaBackend in ops_cuda.cpp) with a Guard type
// that makes h's device current for the call; everything else -
// argument checks, broadcasting, allocation of results - is the same.
#pragma once

#include "marshal.h"

namespace axis_steer {

// p = <h[r], u> for every row.   h: (..., d); u: (d,) -> p: h.shape[:-1]
template <typename Backend>
at::Tensor project_impl(const at::Tensor &h, const at::Tensor &u,
                        const c10::optional<at::Tensor> &mask) {
  typename Backend::Guard guard(h);
  RowDims dims = row_dims(h);
  axs_rows rows = rows_of(h);
  const float *up = dir_of(h, u, "u");
  at::Tensor p = at::empty(dims.shape(), h.options().dtype(at::kFloat));
  axs_bin m = mask_of(h, mask, dims);
  axs_fout out = fout_of(h, p, dims, "p");
  raise_status(Backend::project(rows, up, m, out), "axis_steer.project");
  return p;
}

// h[r] <- h[r] + u (clamp(p, lo, hi) - p), in place.
template <typename Backend>
void clamp_impl(const at::Tensor &h, const at::Tensor &u, const at::Tensor &lo,
                const at::Tensor &hi, const c10::optional<at::Tensor> &mask,
                const c10::optional<at::Tensor> &p_before, const c10::optional<at::Tensor> &p_after,
                const c10::optional<at::Tensor> &changed) {
  typename Backend::Guard guard(h);
  RowDims dims = row_dims(h);
  axs_rows rows = rows_of(h);
  const float *up = dir_of(h, u, "u");
  axs_fin l = fin_of(h, lo, dims, "lo");
  axs_fin hh = fin_of(h, hi, dims, "hi");
  axs_bin m = mask_of(h, mask, dims);
  axs_fout pb = fout_of(h, p_before, dims, "p_before");
  axs_fout pa = fout_of(h, p_after, dims, "p_after");
  axs_bout ch = bout_of(h, changed, dims, "changed");
  raise_status(Backend::clamp_(rows, up, l, hh, m, pb, pa, ch), "axis_steer.clamp_");
}

// h[r] <- h[r] + u (target - p), in place.
template <typename Backend>
void set_projection_impl(const at::Tensor &h, const at::Tensor &u, const at::Tensor &target,
                         const c10::optional<at::Tensor> &mask,
                         const c10::optional<at::Tensor> &p_before) {
  typename Backend::Guard guard(h);
  RowDims dims = row_dims(h);
  axs_rows rows = rows_of(h);
  const float *up = dir_of(h, u, "u");
  axs_fin t = fin_of(h, target, dims, "target");
  axs_bin m = mask_of(h, mask, dims);
  axs_fout pb = fout_of(h, p_before, dims, "p_before");
  raise_status(Backend::set_projection_(rows, up, t, m, pb), "axis_steer.set_projection_");
}

// h[r] <- h[r] + alpha[r] w, in place.
template <typename Backend>
void steer_impl(const at::Tensor &h, const at::Tensor &w, const at::Tensor &alpha,
                const c10::optional<at::Tensor> &mask) {
  typename Backend::Guard guard(h);
  RowDims dims = row_dims(h);
  axs_rows rows = rows_of(h);
  const float *wp = dir_of(h, w, "w");
  axs_fin a = fin_of(h, alpha, dims, "alpha");
  axs_bin m = mask_of(h, mask, dims);
  raise_status(Backend::steer_(rows, wp, a, m), "axis_steer.steer_");
}

// The fused program, in place.   dirs: (K, d); params: (K, 2, ...). The
// record (p_in, p_out, fired) is about dirs[0]; with rec_offset it is
// written from column *rec_offset on (see axs_record).
template <typename Backend>
void apply_inplace_impl(const at::Tensor &h, const at::Tensor &dirs, at::IntArrayRef ops,
                        const at::Tensor &params, const c10::optional<at::Tensor> &mask,
                        const c10::optional<at::Tensor> &p_in,
                        const c10::optional<at::Tensor> &p_out,
                        const c10::optional<at::Tensor> &fired,
                        const c10::optional<at::Tensor> &rec_offset) {
  typename Backend::Guard guard(h);
  Program pg = program_of(h, dirs, ops, params, mask, p_in, p_out, fired, rec_offset);
  raise_status(Backend::apply_(pg), "axis_steer.apply_");
}

// The fused program on the rows h + r, in place: written rows end as
// r = the new row, h = -0.0 (axis_steer.h, "Split rows").
template <typename Backend>
void apply_split_inplace_impl(const at::Tensor &h, const at::Tensor &r, const at::Tensor &dirs,
                              at::IntArrayRef ops, const at::Tensor &params,
                              const c10::optional<at::Tensor> &index,
                              const c10::optional<at::Tensor> &mask,
                              const c10::optional<at::Tensor> &p_in,
                              const c10::optional<at::Tensor> &p_out,
                              const c10::optional<at::Tensor> &fired,
                              const c10::optional<at::Tensor> &rec_offset) {
  typename Backend::Guard guard(h);
  Program pg =
      split_program_of(h, r, dirs, ops, params, index, mask, p_in, p_out, fired, rec_offset);
  raise_status(Backend::apply_split_(pg), "axis_steer.apply_split_");
}

// The fused program on a copy of h; also returns which steps changed which
// rows (K, *h.shape[:-1]), what the backward pass needs.
template <typename Backend>
std::tuple<at::Tensor, at::Tensor> apply_impl(const at::Tensor &h, const at::Tensor &dirs,
                                              at::IntArrayRef ops, const at::Tensor &params,
                                              const c10::optional<at::Tensor> &mask) {
  typename Backend::Guard guard(h);
  dtype_code(h);
  at::Tensor out = h.clone(at::MemoryFormat::Contiguous);
  at::Tensor changed =
      at::empty(changed_shape(h, static_cast<int64_t>(ops.size())), h.options().dtype(at::kBool));
  Program pg = program_of(out, dirs, ops, params, mask, c10::nullopt, c10::nullopt, c10::nullopt);
  attach_changed(pg, out, changed);
  raise_status(Backend::apply_(pg), "axis_steer.apply");
  return {out, changed};
}

// The CUDA implementation of apply_ for the direct entry point (ops.cpp),
// filled in by ops_cuda.cpp when the extension is built with CUDA.
using DirectApply = void (*)(const at::Tensor &, const at::Tensor &, at::IntArrayRef,
                             const at::Tensor &, const c10::optional<at::Tensor> &,
                             const c10::optional<at::Tensor> &, const c10::optional<at::Tensor> &,
                             const c10::optional<at::Tensor> &, const c10::optional<at::Tensor> &);
DirectApply &cuda_direct_apply();

} // namespace axis_steer
