/*
 * test_cuda_emulated.cpp - the CUDA kernels (csrc/core/cuda.cu) against the
 * CPU core (csrc/core/cpu.c), on a machine without a GPU: cuda.cu runs on the
 * host emulator of include/cuda_runtime.h (threads as fibers, real barriers
 * and warp shuffles, random scheduling), compiled from the translation unit
 * gen_emulated.py makes, under AddressSanitizer and UBSan.
 *
 * Each case draws a layout (dtype, d, row counts, row strides either way
 * round, padded or packed rows, a base misaligned by one element or not), row
 * contents (normal values, rows holding a NaN, an infinity or only zeros), a
 * program of 1 to 6 steps (project, clamp with scalar, per-row, per-outer or
 * per-inner bounds that may be NaN or infinite, set projection, steering;
 * steps share directions, so the kernels' reuse of a known projection runs
 * too), a mask, a choice of outputs and a record with or without a device
 * write offset (also outside the record). Then:
 *
 *  - the CPU core runs it with every output; the emulated CUDA entry point
 *    runs it twice: at the case's alignment with the drawn outputs, and at the
 *    other alignment (so vector and element loads) with every output;
 *  - the two CUDA runs agree bit for bit (the summation order depends on d
 *    and the dtype only, and asking for outputs changes nothing);
 *  - CUDA and CPU take the same decisions (rows written, clamps fired, flags)
 *    except where a projection lies within rounding of a bound, and their
 *    values agree within the rounding of the two summation orders;
 *  - on each backend, a projection reported by consecutive steps on the same
 *    direction, the record's p_in / p_out and a separate project call on the
 *    input / output agree bit for bit;
 *  - bytes between rows, record columns outside the record and unrequested
 *    outputs are never written, rows not written keep their bits, and (under
 *    AddressSanitizer) the bytes between rows are poisoned, so even a read
 *    of them fails;
 *  - a one-step case run through the single-operation entry point
 *    (axs_clamp_cuda_, ...) gives the bits of axs_apply_cuda_.
 *
 * Then fixed cases at the limits (check_limits): updates whose intermediate
 * overflows float32 although the result fits give the CPU's finite bits;
 * sizes whose byte extent overflows are refused without a launch; record
 * offsets anywhere in int64 write nothing outside the record.
 *
 * A fixed sweep first reaches every launch site of cuda.cu (warp rows, block
 * rows, the global-memory fallback) for every dtype, with vector and element
 * loads, and several blocks striding over the rows (the emulated build caps a
 * grid at AXS_CUDA_MAX_BLOCKS = 3 blocks); the run fails if some site or
 * instantiation was never reached.
 *
 * Usage: test_cuda_emulated [random cases, default 120] [seed]
 * Prints one line per failure (at most 40) and a summary; exits 1 on failure.
 */
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "axis_steer.h"
#include "core/convert.h"
#include "core/latch.h"
#include "cuda_runtime.h" // the emulator's state: coverage, scheduling seed

#ifdef AXS_EMU_ASAN
#include <sanitizer/asan_interface.h>
#define POISON(p, n) ASAN_POISON_MEMORY_REGION(p, n)
#define UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION(p, n)
#else
#define POISON(p, n) ((void)(p), (void)(n))
#define UNPOISON(p, n) ((void)(p), (void)(n))
#endif

// written by gen_emulated.py into the emulated translation unit
extern const char *const axs_emu_launch_sites[];
extern const int axs_emu_n_launch_sites;

namespace {

// ---- harness -------------------------------------------------------------------

long g_checks = 0, g_failures = 0, g_cases = 0;
std::string g_case;

#define CHECK(cond, ...)                                                                           \
  do {                                                                                             \
    g_checks++;                                                                                    \
    if (!(cond)) {                                                                                 \
      if (++g_failures <= 40) {                                                                    \
        std::printf("FAIL [%s] ", g_case.c_str());                                                 \
        std::printf(__VA_ARGS__);                                                                  \
        std::printf("\n");                                                                         \
      }                                                                                            \
    }                                                                                              \
  } while (0)

std::mt19937_64 g_rng;

int R(int n) {
  return (int)(g_rng() % (uint64_t)n);
}
float U(float a, float b) {
  return std::uniform_real_distribution<float>(a, b)(g_rng);
}
float N() {
  return std::normal_distribution<float>(0.0f, 1.0f)(g_rng);
}

bool same_bits(float a, float b) {
  return std::memcmp(&a, &b, sizeof a) == 0;
}

// ---- storage -----------------------------------------------------------------------

size_t esize(axs_dtype dt) {
  return dt == AXS_F32 ? 4 : 2;
}

double unit_roundoff(axs_dtype dt) {
  return dt == AXS_F32 ? 0x1p-24 : dt == AXS_F16 ? 0x1p-11 : 0x1p-8;
}

const char *dt_name(axs_dtype dt) {
  return dt == AXS_F32 ? "f32" : dt == AXS_F16 ? "f16" : "bf16";
}

float load(axs_dtype dt, const unsigned char *base, int64_t k) {
  if (dt == AXS_F32) {
    float f;
    std::memcpy(&f, base + 4 * k, 4);
    return f;
  }
  uint16_t v;
  std::memcpy(&v, base + 2 * k, 2);
  return dt == AXS_F16 ? axs_f16_to_f32(v) : axs_bf16_to_f32(v);
}

void store(axs_dtype dt, unsigned char *base, int64_t k, float f) {
  if (dt == AXS_F32) {
    std::memcpy(base + 4 * k, &f, 4);
    return;
  }
  const uint16_t v = dt == AXS_F16 ? axs_f32_to_f16(f) : axs_f32_to_bf16(f);
  std::memcpy(base + 2 * k, &v, 2);
}

// An exact-size allocation (AddressSanitizer sees any access past its end)
// whose data starts `skew` bytes after a 16-byte boundary.
struct Mem {
  unsigned char *raw = nullptr;
  size_t skew = 0, bytes = 0;
  Mem() = default;
  Mem(size_t bytes_, size_t skew_) : skew(skew_), bytes(bytes_) {
    raw = static_cast<unsigned char *>(::operator new(skew + bytes + 1, std::align_val_t{16}));
  }
  Mem(const Mem &) = delete;
  Mem &operator=(const Mem &) = delete;
  Mem(Mem &&o) noexcept : raw(o.raw), skew(o.skew), bytes(o.bytes) { o.raw = nullptr; }
  ~Mem() {
    if (raw != nullptr) {
      UNPOISON(raw, skew + bytes + 1);
      ::operator delete(raw, std::align_val_t{16});
    }
  }
  unsigned char *data() const { return raw + skew; }
};

template <class T> struct Buffer {
  Mem mem;
  size_t n = 0;
  Buffer() = default;
  explicit Buffer(size_t n_, size_t skew = 0) : mem(n_ * sizeof(T), skew), n(n_) {}
  T *p() const { return reinterpret_cast<T *>(mem.data()); }
  T &operator[](size_t k) const { return p()[k]; }
};

// ---- a case ------------------------------------------------------------------------

constexpr float kSentinelF = -12345.0f; // in float outputs never written
constexpr uint8_t kSentinelB = 0x77;    // in byte outputs never written
constexpr uint8_t kPadByte = 0x5a;      // between rows
constexpr float kLoOverHi = -54321.0f;  // marks a lower bound set to hi + 1 on the device

struct ParamSpec {
  bool given = false;
  int mode = 0;         // 0 scalar, 1 per row, 2 per outer, 3 per inner
  std::vector<float> v; // one per row (no * ni); read through the mode's strides
};

struct StepSpec {
  axs_op op = AXS_PROJECT;
  int dir = 0; // index into Case::dirs; -1 is the steering vector
  ParamSpec a, b;
  bool want_pb = true, want_pa = true, want_ch = true;
};

struct Case {
  axs_dtype dt = AXS_F32;
  int64_t d = 1, no = 1, ni = 1, so = 1, si = 1;
  int skew_el = 0;           // the base is misaligned by this many elements
  std::vector<float> values; // extent elements (rows only meaningful)
  std::vector<char> in_row;  // per element of the extent
  std::vector<int> special;  // per row: 0 normal, 1 NaN, 2 inf, 3 zeros
  std::vector<std::vector<float>> dirs;
  std::vector<int> dir_skew; // misaligns a direction by this many floats
  std::vector<float> w;
  std::vector<StepSpec> steps;
  bool use_mask = false;
  std::vector<uint8_t> mask;
  bool want_pin = true, want_pout = true, want_fired = true;
  bool use_offset = false;
  int64_t offset = 0, capacity = 0;
  // clamp steps whose per-row bounds hold lo > hi on some rows for the CUDA
  // runs (the device takes hi there, as torch.clamp does); the CPU, which
  // rejects lo > hi, runs the equivalent lo == hi
  bool swap = false;

  int64_t rows() const { return no * ni; }
  int64_t extent() const { return (no - 1) * so + (ni - 1) * si + d; }
  int64_t row_start(int64_t r) const { return (r / ni) * so + (r % ni) * si; }
  int64_t rec_cols() const { return use_offset ? capacity : ni; }
};

struct Outputs {
  std::vector<unsigned char> h; // the extent's bytes after the call
  std::vector<std::vector<float>> pb, pa;
  std::vector<std::vector<uint8_t>> ch;
  std::vector<float> pin, pout;
  std::vector<uint8_t> fired;
  axs_status status = AXS_OK;
  std::string error;
};

enum Backend { CPU, CUDA };

axs_fin fin_of(const ParamSpec &ps, const Buffer<float> &buf, const Case &c) {
  axs_fin f{nullptr, 0, 0};
  if (!ps.given)
    return f;
  f.data = buf.p();
  switch (ps.mode) {
  case 0:
    break;
  case 1:
    f.stride_outer = c.ni;
    f.stride_inner = 1;
    break;
  case 2:
    f.stride_outer = c.ni; // value of row (o, 0)
    break;
  default:
    f.stride_inner = 1; // value of row (0, i)
    break;
  }
  return f;
}

// Runs the case on one backend. all_outputs: every optional output (else the
// drawn ones). other_alignment: the base skew toggled between 0 and 1 element.
// single: a one-step case through the backend's single-operation entry point
// (axs_clamp_cuda_, ...) instead of apply_, without a record.
Outputs run(const Case &c, Backend be, bool all_outputs, bool other_alignment,
            bool single = false) {
  const axs_dtype dt = c.dt;
  const size_t es = esize(dt);
  const int64_t ext = c.extent(), rows = c.rows();
  const int skew_el = other_alignment ? (c.skew_el ? 0 : 1) : c.skew_el;
  Mem hmem((size_t)ext * es, (size_t)skew_el * es);
  unsigned char *h = hmem.data();
  for (int64_t k = 0; k < ext; k++) {
    if (c.in_row[k])
      store(dt, h, k, c.values[k]);
    else
      std::memset(h + k * es, kPadByte, es);
  }
  // poison what lies between rows (and the skew before the first one)
  POISON(hmem.raw, hmem.skew);
  for (int64_t k = 0; k < ext;) {
    int64_t e = k;
    while (e < ext && !c.in_row[e])
      e++;
    if (e > k)
      POISON(h + k * es, (size_t)(e - k) * es);
    k = e + 1;
  }

  std::vector<Buffer<float>> dirs;
  for (size_t j = 0; j < c.dirs.size(); j++) {
    dirs.emplace_back((size_t)c.d, (size_t)c.dir_skew[j] * sizeof(float));
    std::copy(c.dirs[j].begin(), c.dirs[j].end(), dirs.back().p());
  }
  Buffer<float> w((size_t)c.d);
  std::copy(c.w.begin(), c.w.end(), w.p());

  const int K = (int)c.steps.size();
  std::vector<Buffer<float>> pa_buf, pb_buf, params;
  std::vector<Buffer<uint8_t>> ch_buf;
  std::vector<axs_step> steps(K);
  for (int k = 0; k < K; k++) {
    const StepSpec &sp = c.steps[k];
    axs_step &s = steps[k];
    std::memset(&s, 0, sizeof s);
    s.op = sp.op;
    s.dir = sp.dir < 0 ? w.p() : dirs[sp.dir].p();
    for (const ParamSpec *ps : {&sp.a, &sp.b}) {
      params.emplace_back(std::max<size_t>(1, (size_t)rows));
      for (int64_t r = 0; r < rows; r++)
        params.back()[r] = ps->v.empty() ? 0.0f : ps->v[r];
    }
    Buffer<float> &pa = params[params.size() - 2], &pbv = params[params.size() - 1];
    if (c.swap && sp.op == AXS_CLAMP && sp.a.given && sp.b.given) {
      // rows marked with gpu_lo_over: lo = hi + 1 for CUDA, lo = hi for the CPU
      for (int64_t r = 0; r < rows; r++)
        if (sp.a.v[r] == kLoOverHi)
          pa[r] = be == CUDA ? pbv[r] + 1.0f : pbv[r];
    }
    s.a = fin_of(sp.a, pa, c);
    s.b = fin_of(sp.b, pbv, c);
  }
  Outputs out;
  out.pb.assign(K, std::vector<float>(rows, kSentinelF));
  out.pa.assign(K, std::vector<float>(rows, kSentinelF));
  out.ch.assign(K, std::vector<uint8_t>(rows, kSentinelB));
  for (int k = 0; k < K; k++) {
    const StepSpec &sp = c.steps[k];
    pb_buf.emplace_back(std::max<int64_t>(rows, 1));
    pa_buf.emplace_back(std::max<int64_t>(rows, 1));
    ch_buf.emplace_back(std::max<int64_t>(rows, 1));
    std::fill(pb_buf[k].p(), pb_buf[k].p() + rows, kSentinelF);
    std::fill(pa_buf[k].p(), pa_buf[k].p() + rows, kSentinelF);
    std::fill(ch_buf[k].p(), ch_buf[k].p() + rows, kSentinelB);
    if (all_outputs || sp.want_pb)
      steps[k].p_before = axs_fout{pb_buf[k].p(), c.ni, 1};
    if (all_outputs || sp.want_pa)
      steps[k].p_after = axs_fout{pa_buf[k].p(), c.ni, 1};
    if (all_outputs || sp.want_ch)
      steps[k].changed = axs_bout{ch_buf[k].p(), c.ni, 1};
  }
  const int64_t cols = c.rec_cols(), rec_n = std::max<int64_t>(1, c.no * cols);
  Buffer<float> pin((size_t)rec_n), pout((size_t)rec_n);
  Buffer<uint8_t> fired((size_t)rec_n);
  std::fill(pin.p(), pin.p() + rec_n, kSentinelF);
  std::fill(pout.p(), pout.p() + rec_n, kSentinelF);
  std::fill(fired.p(), fired.p() + rec_n, kSentinelB);
  Buffer<int64_t> offset(1);
  offset[0] = c.offset;
  axs_record rec;
  std::memset(&rec, 0, sizeof rec);
  if (all_outputs || c.want_pin)
    rec.p_in = axs_fout{pin.p(), cols, 1};
  if (all_outputs || c.want_pout)
    rec.p_out = axs_fout{pout.p(), cols, 1};
  if (all_outputs || c.want_fired)
    rec.fired = axs_bout{fired.p(), cols, 1};
  if (c.use_offset) {
    rec.offset = offset.p();
    rec.capacity = c.capacity;
  }
  Buffer<uint8_t> mask(std::max<size_t>(1, c.mask.size()));
  std::copy(c.mask.begin(), c.mask.end(), mask.p());
  const axs_bin mb{c.use_mask ? mask.p() : nullptr, c.ni, 1};
  const axs_rows hr{h, dt, c.no, c.ni, c.d, c.so, c.si};
  if (single) {
    const axs_step &s = steps[0];
    const bool dev = be == CUDA;
    switch (s.op) {
    case AXS_PROJECT:
      out.status = dev ? axs_project_cuda(hr, s.dir, mb, s.p_before, nullptr)
                       : axs_project(hr, s.dir, mb, s.p_before, 1);
      break;
    case AXS_CLAMP:
      out.status =
          dev ? axs_clamp_cuda_(hr, s.dir, s.a, s.b, mb, s.p_before, s.p_after, s.changed, nullptr)
              : axs_clamp_(hr, s.dir, s.a, s.b, mb, s.p_before, s.p_after, s.changed, 1);
      break;
    case AXS_SET:
      out.status = dev ? axs_set_projection_cuda_(hr, s.dir, s.a, mb, s.p_before, nullptr)
                       : axs_set_projection_(hr, s.dir, s.a, mb, s.p_before, 1);
      break;
    case AXS_STEER:
      out.status =
          dev ? axs_steer_cuda_(hr, s.dir, s.a, mb, nullptr) : axs_steer_(hr, s.dir, s.a, mb, 1);
      break;
    }
  } else {
    out.status = be == CUDA ? axs_apply_cuda_(hr, steps.data(), K, mb, rec, nullptr, nullptr)
                            : axs_apply_(hr, steps.data(), K, mb, rec, nullptr, 1);
  }
  out.error = axs_last_error();

  UNPOISON(hmem.raw, hmem.skew + hmem.bytes);
  out.h.assign(h, h + ext * es);
  for (int k = 0; k < K; k++) {
    std::copy(pb_buf[k].p(), pb_buf[k].p() + rows, out.pb[k].begin());
    std::copy(pa_buf[k].p(), pa_buf[k].p() + rows, out.pa[k].begin());
    std::copy(ch_buf[k].p(), ch_buf[k].p() + rows, out.ch[k].begin());
  }
  out.pin.assign(pin.p(), pin.p() + c.no * cols);
  out.pout.assign(pout.p(), pout.p() + c.no * cols);
  out.fired.assign(fired.p(), fired.p() + c.no * cols);
  return out;
}

// <row, dir> of every row of the given bytes, by the backend's own project.
std::vector<float> project(const Case &c, Backend be, const std::vector<unsigned char> &bytes,
                           const float *dir_values) {
  const size_t es = esize(c.dt);
  Mem hmem(bytes.size(), 0);
  std::memcpy(hmem.data(), bytes.data(), bytes.size());
  Buffer<float> u((size_t)c.d);
  std::copy(dir_values, dir_values + c.d, u.p());
  Buffer<float> p((size_t)std::max<int64_t>(1, c.rows()));
  Buffer<uint8_t> mask(std::max<size_t>(1, c.mask.size()));
  std::copy(c.mask.begin(), c.mask.end(), mask.p());
  const axs_bin mb{c.use_mask ? mask.p() : nullptr, c.ni, 1};
  const axs_rows hr{hmem.data(), c.dt, c.no, c.ni, c.d, c.so, c.si};
  const axs_fout po{p.p(), c.ni, 1};
  const axs_status st =
      be == CUDA ? axs_project_cuda(hr, u.p(), mb, po, nullptr) : axs_project(hr, u.p(), mb, po, 1);
  CHECK(st == AXS_OK, "%s project failed: %s", be == CUDA ? "CUDA" : "CPU", axs_last_error());
  (void)es;
  return std::vector<float>(p.p(), p.p() + c.rows());
}

// ---- drawing cases ------------------------------------------------------------------

ParamSpec draw_param(const Case &c, float lo, float hi, bool specials, int mode = -1) {
  ParamSpec ps;
  ps.given = true;
  ps.mode = mode < 0 ? R(4) : mode;
  std::vector<float> base((size_t)c.rows());
  for (float &x : base) {
    x = U(lo, hi);
    if (specials && R(10) == 0) {
      const int k = R(3);
      x = k == 0 ? NAN : (k == 1 ? INFINITY : -INFINITY);
    }
  }
  // the values every row reads, given the mode
  ps.v.resize(c.rows());
  for (int64_t r = 0; r < c.rows(); r++) {
    const int64_t o = r / c.ni, i = r % c.ni;
    const int64_t src = ps.mode == 0 ? 0 : ps.mode == 1 ? r : ps.mode == 2 ? o * c.ni : i;
    ps.v[r] = base[src];
  }
  return ps;
}

void draw_program(Case &c, int n_steps) {
  const float ps = 2.0f; // typical |projection|: rows are ~N(0, s^2) with s <= 3
  const int n_dirs = (int)c.dirs.size();
  c.steps.assign(n_steps, StepSpec());
  for (StepSpec &s : c.steps) {
    s.op = (axs_op)R(4);
    s.dir = R(n_dirs);
    s.want_pb = R(4) != 0;
    s.want_pa = R(4) != 0;
    s.want_ch = R(4) != 0;
    if (s.op == AXS_STEER) {
      if (R(2))
        s.dir = -1;
      s.a = draw_param(c, -2.0f, 2.0f, true);
      if (R(4) == 0)
        for (float &x : s.a.v)
          if (R(3) == 0)
            x = 0.0f;
    } else if (s.op == AXS_SET) {
      s.a = draw_param(c, -ps, ps, true);
    } else if (s.op == AXS_CLAMP) {
      // floor, ceiling or band (lo == hi one time in five), lo and hi read
      // with the same strides
      const int sides = R(3), mode = R(4);
      const float mid = U(-ps, ps) * 0.7f, half = R(5) == 0 ? 0.0f : U(0.0f, ps);
      if (sides != 1)
        s.a = draw_param(c, mid - half, mid - half, false, mode);
      if (sides != 0)
        s.b = draw_param(c, mid + half, mid + half, false, mode);
      if (mode == 1) {
        if (s.a.given) // per-row spread, keeping lo <= hi
          for (float &x : s.a.v)
            x -= R(3) == 0 ? U(0.0f, ps * 0.5f) : 0.0f;
        if (R(3) == 0) // NaN bounds (never fire), infinite ones (open, or never reached)
          for (ParamSpec *p : {&s.a, &s.b})
            if (p->given)
              for (float &x : p->v)
                if (R(6) == 0) {
                  const bool low = p == &s.a, other = low ? s.b.given : s.a.given;
                  const int k = R(3);
                  x = k == 0              ? NAN
                      : (k == 1 || other) ? (low ? -INFINITY : INFINITY)
                                          : (low ? INFINITY : -INFINITY);
                }
      }
      if (c.swap && s.a.given && s.b.given && s.a.mode == 1 && s.b.mode == 1)
        for (int64_t r = 0; r < c.rows(); r++)
          if (R(3) == 0 && std::isfinite(s.b.v[r]))
            s.a.v[r] = kLoOverHi; // lo > hi on the device, see Case::swap
    }
  }
}

// Fills the rows, directions and the rest of a case whose layout is set.
void draw_contents(Case &c, int n_steps) {
  const int64_t ext = c.extent();
  c.values.assign(ext, 0.0f);
  c.in_row.assign(ext, 0);
  c.special.assign(c.rows(), 0);
  const float scale = U(0.3f, 3.0f);
  for (int64_t r = 0; r < c.rows(); r++) {
    const int64_t s0 = c.row_start(r);
    const int kind = R(14);
    c.special[r] = kind == 0 ? 1 : kind == 1 ? 2 : kind == 2 ? 3 : 0;
    for (int64_t j = 0; j < c.d; j++) {
      c.in_row[s0 + j] = 1;
      c.values[s0 + j] = c.special[r] == 3 ? 0.0f : N() * scale / std::sqrt((float)c.d) * 4.0f;
    }
    if (c.special[r] == 1)
      c.values[s0 + R((int)c.d)] = NAN;
    if (c.special[r] == 2)
      c.values[s0 + R((int)c.d)] = R(2) ? INFINITY : -INFINITY;
  }
  const int n_dirs = 1 + R(3);
  c.dirs.assign(n_dirs, std::vector<float>(c.d));
  c.dir_skew.assign(n_dirs, 0);
  for (int j = 0; j < n_dirs; j++) {
    double ss = 0.0;
    for (float &x : c.dirs[j]) {
      x = N();
      ss += (double)x * x;
    }
    for (float &x : c.dirs[j])
      x = (float)(x / std::sqrt(ss));
    if (R(4) == 0)
      c.dir_skew[j] = 1 + R(3);
  }
  c.w.assign(c.d, 0.0f);
  for (float &x : c.w)
    x = N() * 0.5f / std::sqrt((float)c.d);
  c.use_mask = R(3) == 0;
  c.mask.assign(c.rows(), 1);
  for (uint8_t &m : c.mask)
    m = R(5) != 0;
  c.want_pin = R(3) != 0;
  c.want_pout = R(3) != 0;
  c.want_fired = R(3) != 0;
  c.use_offset = R(2) == 0;
  c.offset = (int64_t)R((int)c.ni + 6) - 3;
  c.capacity = 1 + R((int)c.ni + 4);
  c.swap = R(4) == 0;
  draw_program(c, n_steps);
}

void set_layout(Case &c, axs_dtype dt, int64_t d, int64_t no, int64_t ni, bool outer_major,
                int64_t pad_inner, int64_t gap_outer, int skew_el) {
  c.dt = dt;
  c.d = d;
  c.no = no;
  c.ni = ni;
  if (outer_major) {
    c.si = d + pad_inner;
    c.so = ni * c.si + gap_outer;
  } else {
    c.so = d + pad_inner;
    c.si = no * c.so + gap_outer;
  }
  c.skew_el = skew_el;
}

Case random_case() {
  static const int64_t ds[] = {1,     2,     3,     4,     7,     8,     9,    31,   32,   33,
                               64,    100,   127,   255,   256,   257,   500,  512,  513,  1000,
                               1024,  1025,  1031,  2048,  3000,  4095,  4096, 4100, 8192, 8200,
                               12288, 16384, 16385, 20000, 32768, 32776, 40000};
  Case c;
  const axs_dtype dt = (axs_dtype)R(3);
  const int64_t d = ds[R((int)(sizeof ds / sizeof ds[0]))];
  const int64_t v = 16 / (int64_t)esize(dt);
  const int64_t max_rows = d > 8192 ? 4 : (d > 1024 ? 8 : 30);
  const int64_t no = 1 + R(3);
  const int64_t ni = 1 + R((int)std::max<int64_t>(1, max_rows / no));
  // padding that keeps rows 16-byte aligned half of the time
  const int64_t pad = R(3) == 0 ? 0 : (R(2) ? (v - d % v) % v : R(5));
  set_layout(c, dt, d, no, ni, R(4) != 0, pad, R(2) ? 0 : v * R(3), R(3) == 0 ? 1 : 0);
  draw_contents(c, 1 + R(R(5) == 0 ? 6 : 3));
  return c;
}

// ---- checking one case ----------------------------------------------------------------

bool both_nan_or_equal(float a, float b) {
  return (std::isnan(a) && std::isnan(b)) || same_bits(a, b);
}

bool close(float a, float b, double tol) {
  if (std::isnan(a) || std::isnan(b))
    return std::isnan(a) && std::isnan(b);
  if (std::isinf(a) || std::isinf(b))
    return a == b;
  return std::fabs((double)a - (double)b) <= tol;
}

double norm_of_row(const Case &c, const std::vector<unsigned char> &bytes, int64_t r) {
  double ss = 0.0;
  const int64_t s0 = c.row_start(r);
  for (int64_t j = 0; j < c.d; j++) {
    const double x = load(c.dt, bytes.data(), s0 + j);
    if (std::isfinite(x))
      ss += x * x;
  }
  return std::sqrt(ss);
}

long g_ambiguous = 0, g_rows = 0, g_written = 0, g_fired = 0, g_masked = 0, g_nonfinite = 0;
long g_offset_cols = 0, g_swapped = 0, g_single = 0;
double g_worst_proj = 0.0, g_worst_elem = 0.0; // largest error / tolerance seen

void check_case(const Case &c) {
  const int K = (int)c.steps.size();
  const int64_t rows = c.rows(), cols = c.rec_cols();
  const size_t es = esize(c.dt);
  Outputs cpu = run(c, CPU, true, false);
  Outputs dev = run(c, CUDA, false, false);
  Outputs dev2 = run(c, CUDA, true, true);
  CHECK(cpu.status == dev.status && dev.status == dev2.status,
        "status: CPU %d (%s), CUDA %d (%s), CUDA other alignment %d", cpu.status, cpu.error.c_str(),
        dev.status, dev.error.c_str(), dev2.status);
  if (cpu.status != AXS_OK || dev.status != AXS_OK)
    return;

  // -- the two CUDA runs: same bits wherever the first one wrote
  CHECK(dev.h == dev2.h, "CUDA h differs between base alignments (vector vs element loads)");
  for (int k = 0; k < K; k++) {
    const StepSpec &s = c.steps[k];
    for (int64_t r = 0; r < rows; r++) {
      if (s.want_pb)
        CHECK(both_nan_or_equal(dev.pb[k][r], dev2.pb[k][r]),
              "step %d row %lld: p_before %.9g vs %.9g", k, (long long)r, dev.pb[k][r],
              dev2.pb[k][r]);
      else
        CHECK(same_bits(dev.pb[k][r], kSentinelF), "step %d row %lld: p_before written unasked", k,
              (long long)r);
      if (s.want_pa)
        CHECK(both_nan_or_equal(dev.pa[k][r], dev2.pa[k][r]),
              "step %d row %lld: p_after %.9g vs %.9g", k, (long long)r, dev.pa[k][r],
              dev2.pa[k][r]);
      else
        CHECK(same_bits(dev.pa[k][r], kSentinelF), "step %d row %lld: p_after written unasked", k,
              (long long)r);
      CHECK(s.want_ch ? dev.ch[k][r] == dev2.ch[k][r] : dev.ch[k][r] == kSentinelB,
            "step %d row %lld: changed %d vs %d", k, (long long)r, dev.ch[k][r], dev2.ch[k][r]);
    }
  }
  for (int64_t x = 0; x < c.no * cols; x++) {
    CHECK(c.want_pin ? both_nan_or_equal(dev.pin[x], dev2.pin[x])
                     : same_bits(dev.pin[x], kSentinelF),
          "record %lld: p_in %.9g vs %.9g", (long long)x, dev.pin[x], dev2.pin[x]);
    CHECK(c.want_pout ? both_nan_or_equal(dev.pout[x], dev2.pout[x])
                      : same_bits(dev.pout[x], kSentinelF),
          "record %lld: p_out %.9g vs %.9g", (long long)x, dev.pout[x], dev2.pout[x]);
    CHECK(c.want_fired ? dev.fired[x] == dev2.fired[x] : dev.fired[x] == kSentinelB,
          "record %lld: fired %d vs %d", (long long)x, dev.fired[x], dev2.fired[x]);
  }

  // -- a one-step case: the single-operation entry point is that program
  if (K == 1) {
    g_single++;
    const Outputs one = run(c, CUDA, false, false, true);
    const axs_op op = c.steps[0].op;
    CHECK(one.status == AXS_OK, "single-operation entry (op %d): %s", op, one.error.c_str());
    CHECK(one.h == dev.h, "single-operation entry (op %d): h differs from apply_", op);
    for (int64_t r = 0; r < rows; r++) {
      if (op != AXS_STEER)
        CHECK(same_bits(one.pb[0][r], dev.pb[0][r]), "single op %d row %lld: p_before %.9g vs %.9g",
              op, (long long)r, one.pb[0][r], dev.pb[0][r]);
      if (op == AXS_CLAMP)
        CHECK(same_bits(one.pa[0][r], dev.pa[0][r]) && one.ch[0][r] == dev.ch[0][r],
              "single op %d row %lld: p_after / changed differ from apply_", op, (long long)r);
    }
  }

  // -- each backend is consistent with its own project (bit for bit)
  const bool steer_first = c.steps[0].op == AXS_STEER;
  const std::vector<float> &dir0 = c.steps[0].dir < 0 ? c.w : c.dirs[c.steps[0].dir];
  std::vector<unsigned char> h_in(c.extent() * es);
  for (int64_t k = 0; k < c.extent(); k++) {
    if (c.in_row[k])
      store(c.dt, h_in.data(), k, c.values[k]);
    else
      std::memset(h_in.data() + k * es, kPadByte, es);
  }
  for (Backend be : {CPU, CUDA}) {
    if (be == CPU && steer_first)
      continue; // the CPU project checks for a unit direction
    const Outputs &o = be == CPU ? cpu : dev2;
    const char *name = be == CPU ? "CPU" : "CUDA";
    const std::vector<float> p_in = project(c, be, h_in, dir0.data());
    const std::vector<float> p_out = project(c, be, o.h, dir0.data());
    for (int64_t r = 0; r < rows; r++) {
      const int64_t i = r % c.ni, col = c.use_offset ? c.offset + i : i;
      const bool in_rec = col >= 0 && col < cols;
      const int64_t x = (r / c.ni) * cols + col;
      if (!steer_first)
        CHECK(same_bits(o.pb[0][r], p_in[r]), "%s row %lld: p_before[0] %.9g != project(h in) %.9g",
              name, (long long)r, o.pb[0][r], p_in[r]);
      if (in_rec) {
        CHECK(same_bits(o.pin[x], p_in[r]), "%s row %lld: p_in %.9g != project(h in) %.9g", name,
              (long long)r, o.pin[x], p_in[r]);
        CHECK(same_bits(o.pout[x], p_out[r]), "%s row %lld: p_out %.9g != project(h out) %.9g",
              name, (long long)r, o.pout[x], p_out[r]);
      }
      for (int k = 0; k + 1 < K; k++)
        if (c.steps[k].dir == c.steps[k + 1].dir)
          CHECK(same_bits(o.pa[k][r], o.pb[k + 1][r]),
                "%s row %lld: p_after[%d] %.9g != p_before[%d] %.9g on the same direction", name,
                (long long)r, k, o.pa[k][r], k + 1, o.pb[k + 1][r]);
    }
  }

  // -- CUDA against the CPU
  double wnorm = 0.0;
  for (float x : c.w)
    wnorm += (double)x * x;
  const double wscale = std::max(1.0, std::sqrt(wnorm));
  const double u_st = unit_roundoff(c.dt);
  std::vector<char> diverged(rows, 0);
  for (int64_t r = 0; r < rows; r++) {
    g_rows++;
    const bool masked = c.use_mask && !c.mask[r];
    g_masked += masked;
    g_nonfinite += !masked && (c.special[r] == 1 || c.special[r] == 2);
    const double m = std::max(norm_of_row(c, h_in, r), norm_of_row(c, cpu.h, r)) * wscale + 1e-30;
    // rounding of the two summation orders, and of storing rows that were
    // written from slightly different projections
    const double tol = (K + 1) * ((double)c.d / 8.0 + 64.0) * 0x1p-24 * m +
                       (K + 1) * 4.0 * u_st * m / std::sqrt((double)c.d);
    bool any_write = false;
    for (int k = 0; k < K && !diverged[r]; k++) {
      const StepSpec &s = c.steps[k];
      const float pb = cpu.pb[k][r];
      if (cpu.ch[k][r] != dev2.ch[k][r]) {
        bool near = false;
        if (s.op == AXS_CLAMP)
          for (const ParamSpec *p : {&s.a, &s.b})
            if (p->given) {
              // a row with lo > hi on the device is pinned to hi
              const float bound = p->v[r] == kLoOverHi ? s.b.v[r] : p->v[r];
              near = near || std::fabs((double)pb - (double)bound) <= tol;
            }
        CHECK(near, "row %lld step %d (op %d): changed CPU %d, CUDA %d (p %.9g)", (long long)r, k,
              s.op, cpu.ch[k][r], dev2.ch[k][r], pb);
        diverged[r] = 1;
        g_ambiguous++;
        break;
      }
      any_write = any_write || cpu.ch[k][r];
      for (const auto &pair :
           {std::make_pair(pb, dev2.pb[k][r]), std::make_pair(cpu.pa[k][r], dev2.pa[k][r])}) {
        CHECK(close(pair.first, pair.second, tol),
              "row %lld step %d (op %d): projection CPU %.9g, CUDA %.9g (tol %.3g)", (long long)r,
              k, s.op, pair.first, pair.second, tol);
        if (std::isfinite(pair.first) && std::isfinite(pair.second))
          g_worst_proj = std::max(g_worst_proj, std::fabs((double)pair.first - pair.second) / tol);
      }
    }
    if (diverged[r])
      continue;
    g_written += any_write;
    const int64_t s0 = c.row_start(r);
    const bool cpu_same = std::memcmp(cpu.h.data() + s0 * es, h_in.data() + s0 * es, c.d * es) == 0;
    const bool dev_same =
        std::memcmp(dev2.h.data() + s0 * es, h_in.data() + s0 * es, c.d * es) == 0;
    // a row no step wrote keeps its bits; a written one may too (a change
    // below the storage's rounding), so its values are compared instead
    if (!any_write) {
      CHECK(cpu_same, "row %lld: the CPU changed a row no step reports writing", (long long)r);
      CHECK(dev_same, "row %lld: CUDA changed a row no step reports writing", (long long)r);
    } else {
      for (int64_t j = 0; j < c.d; j++) {
        const float a = load(c.dt, cpu.h.data(), s0 + j), b = load(c.dt, dev2.h.data(), s0 + j);
        double coef = 0.0;
        for (const auto &u : c.dirs)
          coef = std::max(coef, (double)std::fabs(u[j]));
        const double etol =
            (K + 1) * (4.0 * u_st * std::fabs((double)a) + 2.0 * tol * coef) + 1e-30;
        if (std::isfinite(a) && std::isfinite(b))
          g_worst_elem = std::max(g_worst_elem, std::fabs((double)a - b) / etol);
        if (!close(a, b, etol)) {
          CHECK(false, "row %lld h[%lld]: CPU %.9g, CUDA %.9g (tol %.3g)", (long long)r,
                (long long)j, a, b, etol);
          break;
        }
      }
    }
    const int64_t i = r % c.ni, col = c.use_offset ? c.offset + i : i;
    if (col >= 0 && col < cols) {
      const int64_t x = (r / c.ni) * cols + col;
      g_offset_cols += c.use_offset;
      g_fired += cpu.fired[x] == 1;
      CHECK(close(cpu.pin[x], dev2.pin[x], tol) && close(cpu.pout[x], dev2.pout[x], tol),
            "row %lld: record p_in CPU %.9g CUDA %.9g, p_out CPU %.9g CUDA %.9g", (long long)r,
            cpu.pin[x], dev2.pin[x], cpu.pout[x], dev2.pout[x]);
      CHECK(cpu.fired[x] == dev2.fired[x], "row %lld: fired CPU %d, CUDA %d", (long long)r,
            cpu.fired[x], dev2.fired[x]);
    }
  }
  // record columns no row maps to keep their sentinel on both backends
  std::vector<char> mapped(c.no * cols, 0);
  for (int64_t r = 0; r < rows; r++) {
    const int64_t i = r % c.ni, col = c.use_offset ? c.offset + i : i;
    if (col >= 0 && col < cols)
      mapped[(r / c.ni) * cols + col] = 1;
  }
  for (int64_t x = 0; x < c.no * cols; x++)
    if (!mapped[x])
      for (const Outputs *o : {&cpu, &dev2})
        CHECK(same_bits(o->pin[x], kSentinelF) && same_bits(o->pout[x], kSentinelF) &&
                  o->fired[x] == kSentinelB,
              "record column %lld written though no row maps to it", (long long)x);
  // bytes between rows: never written
  for (int64_t k = 0; k < c.extent(); k++)
    if (!c.in_row[k])
      for (const Outputs *o : {&cpu, &dev, &dev2})
        for (size_t b = 0; b < es; b++)
          CHECK(o->h[k * es + b] == kPadByte, "byte %lld between rows was written",
                (long long)(k * es + b));
  g_swapped += c.swap;
}

std::string describe(const Case &c, const char *kind, int index) {
  char buf[256];
  std::snprintf(buf, sizeof buf,
                "%s %d: %s d=%lld rows=(%lld,%lld) strides=(%lld,%lld) skew=%d steps=%zu%s%s%s",
                kind, index, dt_name(c.dt), (long long)c.d, (long long)c.no, (long long)c.ni,
                (long long)c.so, (long long)c.si, c.skew_el, c.steps.size(),
                c.use_mask ? " mask" : "", c.use_offset ? " offset" : "", c.swap ? " lo>hi" : "");
  return buf;
}

// Layouts that reach every launch configuration: for each dtype, rows of
// 21 .. 4201 16-byte chunks (warp rows with 1, 2 and 4 chunks per lane; block
// rows of up to 256, 512 and 1024 threads; the global-memory fallback), rows
// 16-byte aligned, more rows than the 3 blocks' groups, so that the groups
// stride over the rows. Run at both base alignments, so with vector and with
// element loads.
std::vector<Case> sweep() {
  std::vector<Case> out;
  static const int64_t chunks[] = {21, 50, 99, 600, 1501, 3000, 4201};
  for (axs_dtype dt : {AXS_F32, AXS_F16, AXS_BF16}) {
    const int64_t v = 16 / (int64_t)esize(dt);
    for (int64_t n : chunks) {
      Case c;
      const int64_t d = n * v - (n % 2); // odd chunk counts end in a partial chunk
      const int64_t rows = n <= 128 ? 14 : 5;
      const int64_t pad = (v - d % v) % v;
      set_layout(c, dt, d, 1, rows, true, pad, 0, 0);
      draw_contents(c, 2 + R(3));
      for (int &s : c.dir_skew)
        s = 0;
      out.push_back(std::move(c));
    }
  }
  // the most steps a program holds
  Case c;
  set_layout(c, AXS_BF16, 4096, 2, 3, true, 0, 0, 0);
  draw_contents(c, AXS_MAX_STEPS);
  out.push_back(std::move(c));
  return out;
}

// Values at the edge of float32: updates whose intermediate overflows
// although the result fits (axis_steer.h, "Overflow") give the CPU's bits on
// the device; sizes whose byte extent overflows are refused before a launch;
// a record offset anywhere in int64 writes nothing outside the record.
void check_limits() {
  g_case = "limits: overflowing updates";
  const float e0[4] = {1.0f, 0.0f, 0.0f, 0.0f};
  const float u68[4] = {0.6f, 0.8f, 0.0f, 0.0f};
  const float w[4] = {2e38f, 0.0f, 1.0f, 0.0f};
  struct Edge {
    const char *what;
    axs_op op;
    const float *dir;
    float a, b;
    float row0[4];
    float want0; // h[0] after the step, within 2^-7
  };
  const Edge edges[] = {
      {"floor 2e38 on -2e38", AXS_CLAMP, e0, 2e38f, INFINITY, {-2e38f, 0, 0, 0}, 2e38f},
      {"ceiling -2e38 on 2e38",
       AXS_CLAMP,
       u68,
       -INFINITY,
       -2e38f,
       {1.2e38f, 1.6e38f, 0, 0},
       -1.2e38f},
      {"set 2e38 on -2e38", AXS_SET, e0, 2e38f, 0.0f, {-2e38f, 0, 0, 0}, 2e38f},
      {"steer 3 * 2e38 on -3e38", AXS_STEER, w, 3.0f, 0.0f, {-3e38f, 0, 0, 0}, 3e38f},
      {"floor 3e38 beyond the range", AXS_CLAMP, u68, 3e38f, INFINITY, {3e38f, 0, 0, 0}, INFINITY},
  };
  for (axs_dtype dt : {AXS_F32, AXS_BF16}) {
    for (const Edge &e : edges) {
      g_case = std::string("limits: ") + e.what + " " + dt_name(dt);
      std::vector<unsigned char> bytes[2];
      float p_after[2][2];
      for (Backend be : {CPU, CUDA}) {
        Buffer<unsigned char> h(8 * esize(dt));
        for (int j = 0; j < 8; j++)
          store(dt, h.p(), j, j < 4 ? e.row0[j] : (j == 4 ? 1.0f : 0.0f));
        Buffer<float> dir(4), a(1), b(1), pa(2);
        std::copy(e.dir, e.dir + 4, dir.p());
        a[0] = e.a;
        b[0] = e.b;
        axs_step s;
        std::memset(&s, 0, sizeof s);
        s.op = e.op;
        s.dir = dir.p();
        s.a = axs_fin{a.p(), 0, 0};
        if (e.op == AXS_CLAMP)
          s.b = axs_fin{b.p(), 0, 0};
        if (e.op != AXS_STEER)
          s.p_after = axs_fout{pa.p(), 0, 1};
        axs_record rec;
        std::memset(&rec, 0, sizeof rec);
        const axs_rows hr{h.p(), dt, 1, 2, 4, 0, 4};
        const axs_bin nm{nullptr, 0, 0};
        const axs_status st = be == CUDA ? axs_apply_cuda_(hr, &s, 1, nm, rec, nullptr, nullptr)
                                         : axs_apply_(hr, &s, 1, nm, rec, nullptr, 1);
        CHECK(st == AXS_OK, "%s: %s", be == CUDA ? "CUDA" : "CPU", axs_last_error());
        bytes[be].assign(h.p(), h.p() + 8 * esize(dt));
        p_after[be][0] = pa[0];
        p_after[be][1] = pa[1];
      }
      CHECK(bytes[CPU] == bytes[CUDA], "CPU and CUDA rows differ");
      const float got = load(dt, bytes[CUDA].data(), 0);
      CHECK(std::isinf(e.want0) ? got == e.want0
                                : std::fabs((double)got - e.want0) <= std::fabs(e.want0) * 0x1p-7,
            "h[0] = %.9g, expected %.9g", got, e.want0);
      for (int j = 1; j < 8; j++)
        CHECK(!std::isnan(load(dt, bytes[CUDA].data(), j)), "h[%d] is NaN", j);
      if (e.op != AXS_STEER)
        CHECK(both_nan_or_equal(p_after[CPU][0], p_after[CUDA][0]), "p_after CPU %.9g, CUDA %.9g",
              p_after[CPU][0], p_after[CUDA][0]);
    }
  }

  g_case = "limits: sizes";
  Buffer<float> h(96), u(24), out(8);
  for (int j = 0; j < 24; j++)
    u[j] = j == 0 ? 1.0f : 0.0f;
  const int64_t big = INT64_MAX;
  const axs_rows bad[] = {
      {h.p(), AXS_F32, big, big, 1, 0, 0},
      {h.p(), AXS_F32, 3, 1, 24, big / 2, 24},
      {h.p(), AXS_F32, 1, 2, 24, 0, big},
      {h.p(), AXS_F32, 1, 1, big, 0, 0},
  };
  axs_step s;
  std::memset(&s, 0, sizeof s);
  s.op = AXS_PROJECT;
  s.dir = u.p();
  s.p_before = axs_fout{out.p(), 0, 1};
  axs_record no_rec;
  std::memset(&no_rec, 0, sizeof no_rec);
  const axs_bin nm{nullptr, 0, 0};
  const long launches = axs_emu::state().launches;
  for (const axs_rows &r : bad) {
    const axs_status st = axs_apply_cuda_(r, &s, 1, nm, no_rec, nullptr, nullptr);
    CHECK(st == AXS_EINVAL && std::strncmp(axs_last_error(), "h: ", 3) == 0,
          "rows (%lld, %lld) strides (%lld, %lld) d %lld: status %d, \"%s\"", (long long)r.n_outer,
          (long long)r.n_inner, (long long)r.stride_outer, (long long)r.stride_inner,
          (long long)r.d, st, axs_last_error());
  }
  const axs_rows rows{h.p(), AXS_F32, 1, 4, 24, 0, 24};
  axs_step bad_p = s;
  bad_p.p_before = axs_fout{out.p(), 0, big / 4};
  CHECK(axs_apply_cuda_(rows, &bad_p, 1, nm, no_rec, nullptr, nullptr) == AXS_EINVAL &&
            std::strstr(axs_last_error(), "byte extent") != nullptr,
        "p_before stride INT64_MAX / 4: \"%s\"", axs_last_error());
  CHECK(axs_emu::state().launches == launches, "a refused call launched a kernel");

  g_case = "limits: record offsets";
  for (int64_t off : {INT64_MAX - 1, INT64_MAX, INT64_MIN, INT64_MIN + 1}) {
    Buffer<float> p_in(8);
    Buffer<int64_t> offset(1);
    offset[0] = off;
    std::fill(p_in.p(), p_in.p() + 8, kSentinelF);
    axs_record rec;
    std::memset(&rec, 0, sizeof rec);
    rec.p_in = axs_fout{p_in.p(), 0, 1};
    rec.offset = offset.p();
    rec.capacity = 8;
    CHECK(axs_apply_cuda_(rows, &s, 1, nm, rec, nullptr, nullptr) == AXS_OK, "offset %lld: %s",
          (long long)off, axs_last_error());
    for (int j = 0; j < 8; j++)
      CHECK(same_bits(p_in[j], kSentinelF), "offset %lld: column %d written", (long long)off, j);
  }
}

// Drift latches (axs_latch_apply_cuda_): the same tokens, split into the
// same calls (a prompt, then chunks or single tokens), on the CPU and on the
// emulated device. With a basis direction and values that are multiples of
// 1/4 the detection projections are exact in any summation order, so the two
// backends must agree bit for bit on everything: projections, gates, state
// and the rows a gated clamp wrote. With a random direction the projections
// differ in rounding, and the device's state and gates must then be what the
// state machine (latch.h, run here on the host) makes of the device's own
// projections. Sequence counts above the emulated grid (3 blocks of 32
// threads) run the scan's grid-stride loop.
struct LatchRun {
  std::vector<unsigned char> h;
  std::vector<float> p;
  std::vector<uint8_t> gate;
  std::vector<int64_t> state;
};

LatchRun run_latch(Backend be, axs_dtype dt, int64_t no, int64_t total, int64_t d,
                   const std::vector<float> &values, const std::vector<uint8_t> &mask,
                   const std::vector<float> &dir, const float *params, int64_t window, int64_t cap,
                   const std::vector<int64_t> &starts, float lo) {
  Buffer<unsigned char> h(values.size() * esize(dt));
  for (size_t k = 0; k < values.size(); k++)
    store(dt, h.p(), (int64_t)k, values[k]);
  Buffer<uint8_t> m(mask.size());
  std::copy(mask.begin(), mask.end(), m.p());
  Buffer<float> u(d), pr(AXS_LATCH_NPARAMS), ring(no * window), p(no * cap + 1), lob(1);
  std::copy(dir.begin(), dir.end(), u.p());
  std::copy(params, params + AXS_LATCH_NPARAMS, pr.p());
  lob[0] = lo;
  Buffer<int64_t> state(no * AXS_LATCH_NSTATE), offset(1);
  Buffer<uint8_t> gate(no * cap + 1);
  std::fill(p.p(), p.p() + no * cap + 1, kSentinelF);
  std::fill(gate.p(), gate.p() + no * cap + 1, kSentinelB);
  const axs_latch lt{u.p(), pr.p(),   state.p(), AXS_LATCH_NSTATE, ring.p(), window, window, p.p(),
                     cap,   gate.p(), cap,       offset.p(),       cap};
  axs_step cl;
  std::memset(&cl, 0, sizeof cl);
  cl.op = AXS_CLAMP;
  cl.dir = u.p();
  cl.a = axs_fin{lob.p(), 0, 0};
  cl.gate = axs_gate{gate.p(), cap, 1, offset.p(), cap};
  axs_record rec;
  std::memset(&rec, 0, sizeof rec);
  for (size_t q = 0; q < starts.size(); q++) {
    const int64_t start = starts[q], len = (q + 1 < starts.size() ? starts[q + 1] : total) - start;
    offset[0] = start;
    const axs_rows rows{h.p() + start * d * esize(dt), dt, no, len, d, total * d, d};
    const axs_bin mb{m.p() + start, total, 1};
    const axs_status st =
        be == CUDA ? axs_latch_apply_cuda_(rows, &lt, 1, &cl, 1, mb, rec, nullptr, nullptr)
                   : axs_latch_apply_(rows, &lt, 1, &cl, 1, mb, rec, nullptr, 1);
    CHECK(st == AXS_OK, "%s call at %lld: %s", be == CUDA ? "CUDA" : "CPU", (long long)start,
          axs_last_error());
  }
  LatchRun r;
  r.h.assign(h.p(), h.p() + values.size() * esize(dt));
  r.p.assign(p.p(), p.p() + no * cap + 1);
  r.gate.assign(gate.p(), gate.p() + no * cap + 1);
  r.state.assign(state.p(), state.p() + no * AXS_LATCH_NSTATE);
  return r;
}

void check_latches(int n_cases) {
  for (int c = 0; c < n_cases; c++) {
    const axs_dtype dt = c % 3 == 0 ? AXS_F32 : c % 3 == 1 ? AXS_F16 : AXS_BF16;
    const bool exact = c % 4 != 3;
    const int64_t no = c % 5 == 0 ? 100 + R(40) : 1 + R(4), total = 1 + R(20);
    const int64_t d = exact ? 1 + R(40) : 32 + R(300), window = 1 + R(4);
    const int64_t cap = R(6) == 0 && total > 2 ? total - 2 : total + R(3);
    float params[AXS_LATCH_NPARAMS] = {0};
    params[AXS_LATCH_THRESHOLD] = 0.125f + 0.25f * (float)(R(8) - 4);
    params[AXS_LATCH_K] = (float)(1 + R(3));
    params[AXS_LATCH_RELEASE] = R(3) == 0 ? NAN : params[AXS_LATCH_THRESHOLD] + 0.25f * (float)R(5);
    params[AXS_LATCH_RELEASE_K] = (float)(1 + R(3));
    params[AXS_LATCH_PROMPT] = (float)R(2);
    params[AXS_LATCH_GENERATED] = R(4) != 0 ? 1.0f : 0.0f;
    params[AXS_LATCH_START] = R(6) == 0 ? 1.0f : 0.0f;
    g_case = "latch " + std::to_string(c) + ": " + dt_name(dt) + " (" + std::to_string(no) + ", " +
             std::to_string(total) + ", " + std::to_string(d) + "), window " +
             std::to_string(window) + (exact ? ", exact" : ", random direction");
    const int64_t jdir = R((int)d);
    std::vector<float> dir(d, 0.0f);
    if (exact)
      dir[jdir] = 1.0f;
    else {
      double ss = 0;
      for (auto &v : dir) {
        v = N();
        ss += (double)v * v;
      }
      for (auto &v : dir)
        v = (float)(v / std::sqrt(ss));
    }
    std::vector<float> values(no * total * d);
    std::vector<uint8_t> mask(no * total);
    for (int64_t o = 0; o < no; o++) {
      const int64_t pad = R((int)(total / 2 + 1));
      for (int64_t t = 0; t < total; t++) {
        const int64_t r = o * total + t;
        mask[r] = t >= pad && R(10) != 0;
        for (int64_t j = 0; j < d; j++) {
          float v;
          if (exact)
            v = j == jdir ? (R(16) == 0 ? NAN : 0.25f * (float)(R(25) - 12))
                          : 0.5f * (float)(1 + R(4)) * (R(2) ? 1.0f : -1.0f);
          else
            v = 0.1f * N() + (float)(t % 5) * 0.05f;
          values[r * d + j] = v;
        }
      }
    }
    std::vector<int64_t> starts{0};
    for (int64_t at = 1 + R((int)total); at < total; at += R(3) ? 1 : 1 + R((int)(total - at)))
      starts.push_back(at);
    const float lo = 0.25f * (float)(R(5) - 2);
    const LatchRun gpu =
        run_latch(CUDA, dt, no, total, d, values, mask, dir, params, window, cap, starts, lo);
    if (exact) {
      const LatchRun cpu =
          run_latch(CPU, dt, no, total, d, values, mask, dir, params, window, cap, starts, lo);
      CHECK(cpu.h == gpu.h, "rows after the gated clamp differ");
      CHECK(cpu.gate == gpu.gate, "gates differ");
      CHECK(cpu.state == gpu.state, "states differ");
      bool same_p = true;
      for (size_t k = 0; k < cpu.p.size(); k++)
        same_p = same_p &&
                 (same_bits(cpu.p[k], gpu.p[k]) || (std::isnan(cpu.p[k]) && std::isnan(gpu.p[k])));
      CHECK(same_p, "detection projections differ");
    } else {
      // the state machine on the device's own projections
      std::vector<int64_t> state(no * AXS_LATCH_NSTATE);
      std::vector<float> ring(no * window);
      std::vector<uint8_t> gate(no * cap + 1, kSentinelB);
      std::vector<float> p = gpu.p;
      int64_t offset = 0;
      const axs_latch lt{dir.data(), params,   state.data(), AXS_LATCH_NSTATE, ring.data(), window,
                         window,     p.data(), cap,          gate.data(),      cap,         &offset,
                         cap};
      for (size_t q = 0; q < starts.size(); q++) {
        offset = starts[q];
        const int64_t len = (q + 1 < starts.size() ? starts[q + 1] : total) - starts[q];
        for (int64_t o = 0; o < no; o++)
          axs_latch_scan(&lt, axs_bin{mask.data() + starts[q], total, 1}, len, o);
      }
      CHECK(gate == gpu.gate, "device gates differ from the state machine on its projections");
      CHECK(state == gpu.state, "device state differs from the state machine on its projections");
    }
    g_cases++;
  }
}

} // namespace

int main(int argc, char **argv) {
  const int n_random = argc > 1 ? std::atoi(argv[1]) : 120;
  const uint64_t seed = argc > 2 ? std::strtoull(argv[2], nullptr, 10) : 20250101u;
  g_rng.seed(seed);
  axs_emu::seed(seed ^ 0x9e3779b97f4a7c15ull);
  std::printf("test_cuda_emulated: %d random cases, seed %llu\n", n_random,
              (unsigned long long)seed);

  const std::vector<Case> fixed = sweep();
  for (size_t k = 0; k < fixed.size(); k++) {
    g_case = describe(fixed[k], "sweep", (int)k);
    check_case(fixed[k]);
    g_cases++;
  }
  for (int k = 0; k < n_random; k++) {
    const Case c = random_case();
    g_case = describe(c, "case", k);
    check_case(c);
    g_cases++;
    if (k % 40 == 39) {
      std::printf("  %d random cases, %ld failures so far\n", k + 1, g_failures);
      std::fflush(stdout);
    }
  }

  check_limits();
  check_latches(60);

  // coverage: every launch site; the sites in templates (the row programs),
  // with every instantiation any of them ran
  g_case = "coverage";
  const axs_emu::State &emu = axs_emu::state();
  std::set<std::string> all;
  const auto templated = [](const std::string &where) {
    return where.find("[with") != std::string::npos;
  };
  for (const auto &site : emu.sites)
    for (const auto &inst : site.second.instantiations)
      if (templated(inst.first))
        all.insert(inst.first);
  std::printf("launch sites (%zu instantiations each in templates):\n", all.size());
  for (int k = 0; k < axs_emu_n_launch_sites; k++) {
    const auto it = emu.sites.find(axs_emu_launch_sites[k]);
    const size_t seen = it == emu.sites.end() ? 0 : it->second.instantiations.size();
    const bool in_template = it != emu.sites.end() && !it->second.instantiations.empty() &&
                             templated(it->second.instantiations.begin()->first);
    std::printf("  %-50s %6ld launches, %zu instantiations\n", axs_emu_launch_sites[k],
                it == emu.sites.end() ? 0L : it->second.launches, seen);
    CHECK(seen == (in_template ? all.size() : 1u),
          "launch site %s ran %zu of the %zu instantiations", axs_emu_launch_sites[k], seen,
          in_template ? all.size() : (size_t)1);
  }
  CHECK(emu.vector_loads > 0, "no 16-byte vector load ran");
  std::printf("rows %ld: written %ld, fired %ld, masked %ld, non-finite %ld, near a bound %ld; "
              "offset records %ld; lo>hi cases %ld; one-step cases through the single-operation "
              "entries %ld; vector loads %ld\n",
              g_rows, g_written, g_fired, g_masked, g_nonfinite, g_ambiguous, g_offset_cols,
              g_swapped, g_single, emu.vector_loads);
  std::printf("largest CPU/CUDA difference over its tolerance: projections %.3g, elements %.3g\n",
              g_worst_proj, g_worst_elem);
  std::printf("test_cuda_emulated: %ld cases, %ld checks, %ld failures\n", g_cases, g_checks,
              g_failures);
  return g_failures == 0 ? 0 : 1;
}
