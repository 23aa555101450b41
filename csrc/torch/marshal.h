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

// A device-side column offset: one int64 on h's device; h must have a row
// dimension to offset.
inline const int64_t *offset_of(const at::Tensor &h, const at::Tensor &off, const RowDims &dims,
                                const char *name) {
  check_device(h, off, name);
  TORCH_CHECK_TYPE(off.scalar_type() == at::kLong, name, ": dtype ", off.scalar_type(),
                   " (expected int64)");
  TORCH_CHECK_VALUE(off.numel() == 1, name, ": ", off.numel(), " elements (expected one)");
  TORCH_CHECK_VALUE(dims.nd >= 1, name,
                    ": h has a single row; an offset needs (n, d) or (batch, seq, d)");
  return off.data_ptr<int64_t>();
}

inline const int64_t *offset_of(const at::Tensor &h, const c10::optional<at::Tensor> &off,
                                const RowDims &dims, const char *name) {
  return offset_of(h, *off, dims, name);
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
  n.gate = "the gate of step %d";
  return n; // latches keep the core's names, "latches[0].state", ...
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
  const c10::optional<at::Tensor> *any = p_in.has_value()    ? &p_in
                                         : p_out.has_value() ? &p_out
                                                             : &fired;
  if (rec_offset.has_value() && any->has_value()) {
    const int64_t *off = offset_of(h, rec_offset, dims, "rec_offset");
    TORCH_CHECK_VALUE((*any)->dim() == dims.nd, "rec_offset: record outputs must have shape ",
                      dims.shape(), " with the last dimension the capacity, got ", (*any)->sizes());
    rec_dims.sizes[dims.nd - 1] = (*any)->size(-1);
    pg.rec.offset = off;
    pg.rec.capacity = (*any)->size(-1);
  }
  pg.rec.p_in = fout_of(h, p_in, rec_dims, "p_in");
  pg.rec.p_out = fout_of(h, p_out, rec_dims, "p_out");
  pg.rec.fired = bout_of(h, fired, rec_dims, "fired");
  return pg;
}

// The gates of a program's steps: gate_of[k] is an index into gates, or -1
// for an ungated step (gate_of empty: no gates). A gate is bool, shaped like
// the rows of h, or, with an offset, like a record: the rows of h with its
// own number of columns in place of the last row dimension (axs_gate).
inline void attach_gates(Program &pg, const at::Tensor &h, at::TensorList gates,
                         at::IntArrayRef gate_of, const c10::optional<at::Tensor> &offset,
                         const char *offset_name) {
  if (gate_of.empty()) {
    TORCH_CHECK_VALUE(gates.empty(), "gates: ", gates.size(),
                      " given without gate_of (expected gate_of[k], the gate of step k)");
    return;
  }
  TORCH_CHECK_VALUE(static_cast<int64_t>(gate_of.size()) == pg.n_steps, "gate_of: ", gate_of.size(),
                    " entries for ", pg.n_steps,
                    " steps (expected one per step, -1 for an ungated step)");
  RowDims dims = row_dims(h);
  const int64_t *off = offset.has_value() ? offset_of(h, offset, dims, offset_name) : nullptr;
  for (int k = 0; k < pg.n_steps; k++) {
    const int64_t g = gate_of[k];
    TORCH_CHECK_VALUE(g >= -1 && g < static_cast<int64_t>(gates.size()), "gate_of[", k, "] = ", g,
                      " (expected -1 or an index into the ", gates.size(), " gates)");
    if (g < 0)
      continue;
    const at::Tensor &t = gates[g];
    check_device(h, t, "gates");
    TORCH_CHECK_TYPE(t.scalar_type() == at::kBool, "gates[", g, "]: dtype ", t.scalar_type(),
                     " (expected bool)");
    axs_gate &gt = pg.steps[k].gate;
    gt.data = static_cast<const uint8_t *>(t.data_ptr());
    if (off == nullptr) {
      check_output_shape(t, dims, "gates");
      RowStrides s = broadcast_strides(t, 0, dims, "gates");
      gt.stride_outer = s.outer;
      gt.stride_inner = s.inner;
      continue;
    }
    TORCH_CHECK_VALUE(t.dim() == dims.nd && (dims.nd == 1 || t.size(0) == dims.sizes[0]), "gates[",
                      g, "]: shape ", t.sizes(), " (expected the rows of h, ", dims.shape(),
                      ", with the last dimension the gate's columns)");
    gt.stride_outer = dims.nd == 2 ? t.stride(0) : 0;
    gt.stride_inner = t.size(-1) > 1 ? t.stride(-1) : 0;
    gt.offset = off;
    gt.capacity = t.size(-1);
  }
}

// A 2-D per-sequence tensor of a latch: (n_outer, cols) of `type`, rows
// contiguous; returns its row stride.
inline int64_t latch_rows_of(const at::Tensor &h, const at::Tensor &t, at::ScalarType type,
                             int64_t n_outer, int64_t cols, const char *name) {
  check_device(h, t, name);
  TORCH_CHECK_TYPE(t.scalar_type() == type, name, ": dtype ", t.scalar_type(), " (expected ", type,
                   ")");
  TORCH_CHECK_VALUE(t.dim() == 2 && t.size(0) == n_outer && (cols < 0 || t.size(1) == cols), name,
                    ": shape ", t.sizes(), " (expected (", n_outer, ", ",
                    cols < 0 ? std::string("columns") : std::to_string(cols),
                    "): one row per sequence of h)");
  TORCH_CHECK_VALUE(t.stride(1) == 1 || t.size(1) <= 1, name,
                    ": rows not contiguous (call .contiguous())");
  return t.size(0) > 1 ? t.stride(0) : t.size(1);
}

// A drift latch (axs_latch) from its tensors: params (AXS_LATCH_NPARAMS,)
// float32, offset one int64, state (n_outer, AXS_LATCH_NSTATE) int64, ring
// (n_outer, window) float32, gate (n_outer, capacity) bool, dir (d,) float32
// or none, p (n_outer, capacity) float32 (with a direction). n_outer is h's
// batch (1 for (n, d)).
inline axs_latch latch_of(const at::Tensor &h, const at::Tensor &params, const at::Tensor &offset,
                          const at::Tensor &state, const at::Tensor &ring, const at::Tensor &gate,
                          const c10::optional<at::Tensor> &dir,
                          const c10::optional<at::Tensor> &p) {
  RowDims dims = row_dims(h);
  axs_latch lt{};
  check_device(h, params, "latch params");
  TORCH_CHECK_TYPE(params.scalar_type() == at::kFloat, "latch params: dtype ", params.scalar_type(),
                   " (expected float32)");
  TORCH_CHECK_VALUE(
      params.dim() == 1 && params.size(0) == AXS_LATCH_NPARAMS && params.stride(0) == 1,
      "latch params: shape ", params.sizes(), " (expected contiguous (", AXS_LATCH_NPARAMS, ",))");
  lt.params = params.data_ptr<float>();
  lt.offset = offset_of(h, offset, dims, "latch offset");
  const int64_t n_outer = dims.n_outer;
  lt.state_stride = latch_rows_of(h, state, at::kLong, n_outer, AXS_LATCH_NSTATE, "latch state");
  lt.state = state.data_ptr<int64_t>();
  lt.ring_stride = latch_rows_of(h, ring, at::kFloat, n_outer, -1, "latch ring");
  lt.window = ring.size(1);
  lt.ring = ring.data_ptr<float>();
  lt.gate_stride = latch_rows_of(h, gate, at::kBool, n_outer, -1, "latch gate");
  lt.capacity = gate.size(1);
  lt.gate = static_cast<uint8_t *>(gate.data_ptr());
  if (dir.has_value()) {
    lt.dir = dir_of(h, *dir, "latch dir");
    TORCH_CHECK_VALUE(p.has_value(), "latch p: required with a detection direction");
    lt.p_stride = latch_rows_of(h, *p, at::kFloat, n_outer, lt.capacity, "latch p");
    lt.p = p->data_ptr<float>();
  }
  return lt;
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
