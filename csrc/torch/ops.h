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

// The latches of one call, marshalled (see latch_of).
struct Latches {
  std::array<axs_latch, AXS_MAX_LATCHES> items{};
  int n = 0;
};

// The fused program, in place.   dirs: (K, d); params: (K, 2, ...). The
// record (p_in, p_out, fired) is about dirs[0]; with rec_offset it is
// written from column *rec_offset on (see axs_record). gate_of[k] names the
// gate of step k among gates (-1: none); with rec_offset the gates are read
// at the same columns (axs_gate). latches run first (axs_latch_apply_).
template <typename Backend>
void apply_gated_impl(const at::Tensor &h, const at::Tensor &dirs, at::IntArrayRef ops,
                      const at::Tensor &params, const c10::optional<at::Tensor> &mask,
                      const c10::optional<at::Tensor> &p_in, const c10::optional<at::Tensor> &p_out,
                      const c10::optional<at::Tensor> &fired,
                      const c10::optional<at::Tensor> &rec_offset, at::TensorList gates,
                      at::IntArrayRef gate_of, const Latches &latches) {
  typename Backend::Guard guard(h);
  TORCH_CHECK_VALUE(!rec_offset.has_value() || p_in.has_value() || p_out.has_value() ||
                        fired.has_value() || !gates.empty() || latches.n > 0,
                    "rec_offset: given without any record output (p_in, p_out or fired) or gate");
  Program pg;
  if (ops.empty() && latches.n > 0) { // latches alone (the direct entry point)
    pg.h = rows_of(h);
    pg.mask = mask_of(h, mask, row_dims(h));
  } else {
    pg = program_of(h, dirs, ops, params, mask, p_in, p_out, fired, rec_offset);
    attach_gates(pg, h, gates, gate_of, rec_offset, "rec_offset");
  }
  raise_status(Backend::latch_apply_(pg, latches), "axis_steer.apply_");
}

template <typename Backend>
void apply_inplace_impl(const at::Tensor &h, const at::Tensor &dirs, at::IntArrayRef ops,
                        const at::Tensor &params, const c10::optional<at::Tensor> &mask,
                        const c10::optional<at::Tensor> &p_in,
                        const c10::optional<at::Tensor> &p_out,
                        const c10::optional<at::Tensor> &fired,
                        const c10::optional<at::Tensor> &rec_offset,
                        const c10::optional<at::TensorList> &gates,
                        at::OptionalIntArrayRef gate_of) {
  apply_gated_impl<Backend>(h, dirs, ops, params, mask, p_in, p_out, fired, rec_offset,
                            gates.value_or(at::TensorList()), gate_of.value_or(at::IntArrayRef()),
                            Latches{});
}

// A drift latch alone: reset, detection projections, scan (axs_latch_apply_
// without steps). h is read only.
template <typename Backend>
void latch_impl(const at::Tensor &h, const at::Tensor &params, const at::Tensor &offset,
                const at::Tensor &state, const at::Tensor &ring, const at::Tensor &gate,
                const c10::optional<at::Tensor> &dir, const c10::optional<at::Tensor> &p,
                const c10::optional<at::Tensor> &mask) {
  typename Backend::Guard guard(h);
  Program pg;
  pg.h = rows_of(h);
  pg.mask = mask_of(h, mask, row_dims(h));
  Latches ls;
  ls.items[0] = latch_of(h, params, offset, state, ring, gate, dir, p);
  ls.n = 1;
  raise_status(Backend::latch_apply_(pg, ls), "axis_steer.latch_");
}

// The fused program on a copy of h; also returns which steps changed which
// rows (K, *h.shape[:-1]), what the backward pass needs. Gates as in apply_,
// read at columns *gate_offset + i when gate_offset is given.
template <typename Backend>
std::tuple<at::Tensor, at::Tensor>
apply_impl(const at::Tensor &h, const at::Tensor &dirs, at::IntArrayRef ops,
           const at::Tensor &params, const c10::optional<at::Tensor> &mask,
           const c10::optional<at::TensorList> &gates, at::OptionalIntArrayRef gate_of,
           const c10::optional<at::Tensor> &gate_offset) {
  typename Backend::Guard guard(h);
  dtype_code(h);
  at::Tensor out = h.clone(at::MemoryFormat::Contiguous);
  at::Tensor changed =
      at::empty(changed_shape(h, static_cast<int64_t>(ops.size())), h.options().dtype(at::kBool));
  Program pg = program_of(out, dirs, ops, params, mask, c10::nullopt, c10::nullopt, c10::nullopt);
  attach_changed(pg, out, changed);
  attach_gates(pg, out, gates.value_or(at::TensorList()), gate_of.value_or(at::IntArrayRef()),
               gate_offset, "gate_offset");
  raise_status(Backend::latch_apply_(pg, Latches{}), "axis_steer.apply");
  return {out, changed};
}

// The CUDA implementation of the direct entry point's call (ops.cpp),
// filled in by ops_cuda.cpp when the extension is built with CUDA.
using DirectApply = void (*)(const at::Tensor &, const at::Tensor &, at::IntArrayRef,
                             const at::Tensor &, const c10::optional<at::Tensor> &,
                             const c10::optional<at::Tensor> &, const c10::optional<at::Tensor> &,
                             const c10::optional<at::Tensor> &, const c10::optional<at::Tensor> &,
                             at::TensorList, at::IntArrayRef, const Latches &);
DirectApply &cuda_direct_apply();

} // namespace axis_steer
