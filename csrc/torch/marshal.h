// marshal.h - turns torch tensors into the core's plain structs (axs_rows,
// axs_fin, axs_fout, ...) and checks everything the core cannot see: tensor
// dtypes, devices, shapes and broadcasting. Shared by the CPU registration
// (ops.cpp) and the CUDA one (ops_cuda.cpp). No arithmetic happens here.
//
// Row layout: h is (d,), (n, d) or (batch, seq, d); its leading dimensions
// are the row dimensions, mapped to the core's (n_outer, n_inner) as
// (1, 1), (1, n) and (batch, seq). Per-row values broadcast against the row
// dimensions with the usual right-aligned rules.
#pragma once

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <array>
#include <string>
#include <vector>

#include "../axis_steer.h"

namespace axis_steer {

// The row dimensions of h, h.shape[:-1] (no heap allocation: this runs on
// every call).
struct RowDims {
  int64_t n_outer = 1, n_inner = 1;
  int64_t sizes[2] = {0, 0};
  int64_t nd = 0;
  at::IntArrayRef shape() const { return at::IntArrayRef(sizes, static_cast<size_t>(nd)); }
};

inline RowDims row_dims(const at::Tensor &h) {
  TORCH_CHECK_VALUE(h.dim() >= 1 && h.dim() <= 3,
                    "h: expected shape (d,), (n, d) or (batch, seq, d), got ", h.sizes(),
                    " (reshape to at most three dimensions)");
  RowDims r;
  r.nd = h.dim() - 1;
  for (int64_t i = 0; i < r.nd; i++)
    r.sizes[i] = h.size(i);
  if (h.dim() == 2)
    r.n_inner = h.size(0);
  if (h.dim() == 3) {
    r.n_outer = h.size(0);
    r.n_inner = h.size(1);
  }
  return r;
}

inline axs_dtype dtype_code(const at::Tensor &h) {
  switch (h.scalar_type()) {
  case at::kFloat:
    return AXS_F32;
  case at::kHalf:
    return AXS_F16;
  case at::kBFloat16:
    return AXS_BF16;
  default:
    TORCH_CHECK_TYPE(
        false, "h: dtype ", h.scalar_type(),
        " is not supported (expected float32, float16 or bfloat16; cast with .float())");
  }
  return AXS_F32;
}

inline axs_rows rows_of(const at::Tensor &h) {
  TORCH_CHECK_VALUE(h.dim() >= 1 && h.dim() <= 3,
                    "h: expected shape (d,), (n, d) or (batch, seq, d), got ", h.sizes());
  axs_rows r{};
  r.data = h.data_ptr();
  r.dtype = dtype_code(h);
  r.d = h.size(-1);
  TORCH_CHECK_VALUE(r.d >= 1, "h: the last dimension is empty (expected d >= 1)");
  TORCH_CHECK_VALUE(h.stride(-1) == 1 || h.size(-1) == 1 || h.numel() == 0,
                    "h: the last dimension has stride ", h.stride(-1),
                    " (expected 1: call .contiguous() first)");
  RowDims dims = row_dims(h);
  r.n_outer = dims.n_outer;
  r.n_inner = dims.n_inner;
  r.stride_outer = h.dim() == 3 ? h.stride(0) : 0;
  r.stride_inner = h.dim() >= 2 ? h.stride(h.dim() - 2) : 0;
  return r;
}

inline void check_device(const at::Tensor &h, const at::Tensor &t, const char *name) {
  TORCH_CHECK_VALUE(t.device() == h.device(), name, ": on ", t.device(), " but h is on ",
                    h.device(), " (move it with .to(h.device))");
}

// Strides of a tensor whose trailing `ndim` dims broadcast against the row
// dims (given as (n_outer, n_inner)); size-1 dims broadcast with stride 0.
struct RowStrides {
  int64_t outer = 0, inner = 0;
};

inline RowStrides broadcast_strides(const at::Tensor &t, int64_t first_dim, const RowDims &dims,
                                    const std::string &name) {
  int64_t nd = t.dim() - first_dim;
  int64_t row_nd = dims.nd;
  TORCH_CHECK_VALUE(nd <= row_nd, name, ": shape ", t.sizes(),
                    " does not broadcast against the rows of h ", dims.shape(),
                    " (expected a scalar or a tensor broadcastable to ", dims.shape(), ")");
  RowStrides s;
  // the last row dim is "inner" for 2- and 3-dim h; the first of two is "outer"
  for (int64_t k = 0; k < nd; k++) {
    int64_t tdim = t.dim() - 1 - k; // from the right
    int64_t rdim = row_nd - 1 - k;
    int64_t size = t.size(tdim);
    int64_t want = dims.sizes[rdim];
    TORCH_CHECK_VALUE(size == want || size == 1, name, ": shape ", t.sizes(),
                      " does not broadcast against the rows of h ", dims.shape());
    int64_t stride = size == 1 ? 0 : t.stride(tdim);
    bool is_inner = rdim == row_nd - 1;
    if (is_inner)
      s.inner = stride;
    else
      s.outer = stride;
  }
  return s;
}

inline axs_fin fin_of(const at::Tensor &h, const at::Tensor &t, const RowDims &dims,
                      const char *name) {
  check_device(h, t, name);
  TORCH_CHECK_TYPE(t.scalar_type() == at::kFloat, name, ": dtype ", t.scalar_type(),
                   " (expected float32: pass torch.tensor(x, dtype=torch.float32))");
  RowStrides s = broadcast_strides(t, 0, dims, name);
  return axs_fin{t.data_ptr<float>(), s.outer, s.inner};
}

inline axs_bin mask_of(const at::Tensor &h, const c10::optional<at::Tensor> &m,
                       const RowDims &dims) {
  if (!m.has_value())
    return axs_bin{nullptr, 0, 0};
  const at::Tensor &t = *m;
  check_device(h, t, "mask");
  TORCH_CHECK_TYPE(t.scalar_type() == at::kBool || t.scalar_type() == at::kByte, "mask: dtype ",
                   t.scalar_type(), " (expected bool: pass attention_mask.bool())");
  RowStrides s = broadcast_strides(t, 0, dims, "mask");
  return axs_bin{static_cast<const uint8_t *>(t.data_ptr()), s.outer, s.inner};
}

inline void check_output_shape(const at::Tensor &t, const RowDims &dims, const char *name) {
  TORCH_CHECK_VALUE(t.sizes().equals(dims.shape()), name, ": shape ", t.sizes(),
                    " (expected exactly the rows of h, ", dims.shape(), ")");
}

inline axs_fout fout_of(const at::Tensor &h, const c10::optional<at::Tensor> &o,
                        const RowDims &dims, const char *name) {
  if (!o.has_value())
    return axs_fout{nullptr, 0, 0};
  const at::Tensor &t = *o;
  check_device(h, t, name);
  TORCH_CHECK_TYPE(t.scalar_type() == at::kFloat, name, ": dtype ", t.scalar_type(),
                   " (expected float32)");
  check_output_shape(t, dims, name);
  RowStrides s = broadcast_strides(t, 0, dims, name);
  return axs_fout{t.data_ptr<float>(), s.outer, s.inner};
}

inline axs_bout bout_of(const at::Tensor &h, const c10::optional<at::Tensor> &o,
                        const RowDims &dims, const char *name) {
  if (!o.has_value())
    return axs_bout{nullptr, 0, 0};
  const at::Tensor &t = *o;
  check_device(h, t, name);
  TORCH_CHECK_TYPE(t.scalar_type() == at::kBool, name, ": dtype ", t.scalar_type(),
                   " (expected bool)");
  check_output_shape(t, dims, name);
  RowStrides s = broadcast_strides(t, 0, dims, name);
  return axs_bout{static_cast<uint8_t *>(t.data_ptr()), s.outer, s.inner};
}

// A direction: float32, contiguous, (d,) — or row k of a (K, d) tensor.
inline const float *dir_of(const at::Tensor &h, const at::Tensor &u, const char *name) {
  check_device(h, u, name);
  TORCH_CHECK_TYPE(u.scalar_type() == at::kFloat, name, ": dtype ", u.scalar_type(),
                   " (expected float32: directions are kept in float32, pass u.float())");
  TORCH_CHECK_VALUE(u.dim() == 1 && u.size(0) == h.size(-1), name, ": shape ", u.sizes(),
                    " (expected (", h.size(-1), ",), the hidden size of h)");
  TORCH_CHECK_VALUE(u.stride(0) == 1 || u.size(0) <= 1, name,
                    ": not contiguous (call .contiguous())");
  return u.data_ptr<float>();
}

// The core's status, turned into the matching Python exception.
inline void raise_status(axs_status st, const char *what) {
  if (st == AXS_OK)
    return;
  std::string msg = axs_last_error();
  TORCH_CHECK_TYPE(st != AXS_ETYPE, what, ": ", msg);
  TORCH_CHECK_VALUE(st != AXS_EINVAL, what, ": ", msg);
  TORCH_CHECK(false, what, ": ", msg);
}

// What the arguments of apply_ / apply are called in the core's messages:
// the schema's names (params[k, 0] is a step's lo, target or alpha).
inline axs_names program_names() {
  axs_names n{};
  n.dir = "dirs[%d]";
  n.a = "params[%d, 0]";
  n.b = "params[%d, 1]";
  n.changed = "changed[%d]";
  n.offset = "rec_offset";
  return n;
}

// Everything an apply_ call needs, marshalled once; steps point into the
// tensors given, which must outlive the call.
struct Program {
  axs_rows h{};
  std::array<axs_step, AXS_MAX_STEPS> steps{};
  int n_steps = 0;
  axs_bin mask{};
  axs_record rec{};
  axs_names names = program_names();
};

inline Program program_of(const at::Tensor &h, const at::Tensor &dirs, at::IntArrayRef ops,
                          const at::Tensor &params, const c10::optional<at::Tensor> &mask,
                          const c10::optional<at::Tensor> &p_in,
                          const c10::optional<at::Tensor> &p_out,
                          const c10::optional<at::Tensor> &fired,
                          const c10::optional<at::Tensor> &rec_offset = c10::nullopt) {
  Program pg;
  pg.h = rows_of(h);
  RowDims dims = row_dims(h);
  int64_t k_steps = static_cast<int64_t>(ops.size());
  TORCH_CHECK_VALUE(k_steps >= 1 && k_steps <= AXS_MAX_STEPS, "ops: ", k_steps,
                    " steps (expected 1 to ", AXS_MAX_STEPS, ")");
  check_device(h, dirs, "dirs");
  TORCH_CHECK_TYPE(dirs.scalar_type() == at::kFloat, "dirs: dtype ", dirs.scalar_type(),
                   " (expected float32)");
  TORCH_CHECK_VALUE(dirs.dim() == 2 && dirs.size(0) == k_steps && dirs.size(1) == h.size(-1),
                    "dirs: shape ", dirs.sizes(), " (expected (", k_steps, ", ", h.size(-1),
                    "): one direction per step)");
  TORCH_CHECK_VALUE(dirs.stride(1) == 1, "dirs: rows not contiguous (call .contiguous())");
  check_device(h, params, "params");
  TORCH_CHECK_TYPE(params.scalar_type() == at::kFloat, "params: dtype ", params.scalar_type(),
                   " (expected float32)");
  TORCH_CHECK_VALUE(params.dim() >= 2 && params.size(0) == k_steps && params.size(1) == 2,
                    "params: shape ", params.sizes(), " (expected (", k_steps,
                    ", 2, ...) with the trailing dims broadcastable to ", dims.shape(), ")");
  RowStrides ps = broadcast_strides(params, 2, dims, "params");
  const float *pdata = params.data_ptr<float>();
  const float *ddata = dirs.data_ptr<float>();
  pg.n_steps = static_cast<int>(k_steps);
  for (int64_t k = 0; k < k_steps; k++) {
    TORCH_CHECK_VALUE(ops[k] >= AXS_PROJECT && ops[k] <= AXS_STEER, "ops[", k, "] = ", ops[k],
                      " (expected 0 project, 1 clamp, 2 set, 3 steer)");
    axs_step &s = pg.steps[k];
    s = axs_step{};
    s.op = static_cast<axs_op>(ops[k]);
    s.dir = ddata + k * dirs.stride(0);
    s.a = axs_fin{pdata + k * params.stride(0), ps.outer, ps.inner};
    s.b = axs_fin{pdata + k * params.stride(0) + params.stride(1), ps.outer, ps.inner};
  }
  pg.mask = mask_of(h, mask, dims);
  // With an offset, the record outputs are the rows of h with `capacity`
  // columns in place of the last row dimension, written from *offset on.
  RowDims rec_dims = dims;
  if (rec_offset.has_value()) {
    const at::Tensor &off = *rec_offset;
    check_device(h, off, "rec_offset");
    TORCH_CHECK_TYPE(off.scalar_type() == at::kLong, "rec_offset: dtype ", off.scalar_type(),
                     " (expected int64)");
    TORCH_CHECK_VALUE(off.numel() == 1, "rec_offset: ", off.numel(), " elements (expected one)");
    TORCH_CHECK_VALUE(dims.nd >= 1,
                      "rec_offset: h has a single row; an offset needs (n, d) or (batch, seq, d)");
    const c10::optional<at::Tensor> *any = p_in.has_value()    ? &p_in
                                           : p_out.has_value() ? &p_out
                                                               : &fired;
    TORCH_CHECK_VALUE(any->has_value(),
                      "rec_offset: given without any record output (p_in, p_out or fired)");
    TORCH_CHECK_VALUE((*any)->dim() == dims.nd, "rec_offset: record outputs must have shape ",
                      dims.shape(), " with the last dimension the capacity, got ", (*any)->sizes());
    rec_dims.sizes[dims.nd - 1] = (*any)->size(-1);
    pg.rec.offset = off.data_ptr<int64_t>();
    pg.rec.capacity = (*any)->size(-1);
  }
  pg.rec.p_in = fout_of(h, p_in, rec_dims, "p_in");
  pg.rec.p_out = fout_of(h, p_out, rec_dims, "p_out");
  pg.rec.fired = bout_of(h, fired, rec_dims, "fired");
  return pg;
}

// Outputs of the out-of-place apply: one changed flag per step and row.
inline void attach_changed(Program &pg, const at::Tensor &h, const at::Tensor &changed) {
  RowDims dims = row_dims(h);
  for (int k = 0; k < pg.n_steps; k++) {
    at::Tensor row = changed.select(0, k);
    RowStrides s = broadcast_strides(row, 0, dims, "changed");
    pg.steps[k].changed = axs_bout{static_cast<uint8_t *>(row.data_ptr()), s.outer, s.inner};
  }
}

inline std::vector<int64_t> changed_shape(const at::Tensor &h, int64_t k_steps) {
  std::vector<int64_t> shape{k_steps};
  for (int64_t i = 0; i + 1 < h.dim(); i++)
    shape.push_back(h.size(i));
  return shape;
}

} // namespace axis_steer
