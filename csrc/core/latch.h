/*
 * latch.h - the drift latch's state machine (axis_steer.h, "Drift latches"),
 * written once in the subset of C that C11, C++ and CUDA share, and compiled
 * by both halves of the core: cpu.c runs axs_latch_scan for each sequence on
 * the host, cuda.cu runs it in a kernel, one thread per sequence. So the two
 * halves cannot take different decisions from the same projections.
 *
 * Deliberately not here: the detection projections (the row program of the
 * calling half writes them into the latch's p first), any check (validate.c),
 * any parallelism (the caller's loop over sequences).
 */
#ifndef AXIS_STEER_LATCH_H
#define AXIS_STEER_LATCH_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#include "../axis_steer.h"

#if defined(__CUDACC__)
#define AXS_LATCH_FN static __host__ __device__ inline
#else
#define AXS_LATCH_FN static inline
#endif

/* k or release_k as the scan uses it: a whole number >= 1 (below 1 or NaN
 * is 1, a fraction is rounded down, and the count saturates long before
 * int64 would overflow). */
AXS_LATCH_FN int64_t axs_latch_count(float v) {
  if (!(v >= 1.0f))
    return 1;
  if (v >= 4.0e18f)
    return (int64_t)4000000000000000000LL;
  return (int64_t)v;
}

AXS_LATCH_FN double axs_latch_sum_of(int64_t bits) {
  double x;
  memcpy(&x, &bits, sizeof x);
  return x;
}

AXS_LATCH_FN int64_t axs_latch_bits_of(double x) {
  int64_t bits;
  memcpy(&bits, &x, sizeof bits);
  return bits;
}

/* st: one sequence's AXS_LATCH_NSTATE slots <- their reset values. */
AXS_LATCH_FN void axs_latch_reset(int64_t *st, const float *params) {
  st[AXS_LATCH_S_RUN] = 0;
  st[AXS_LATCH_S_UP] = 0;
  st[AXS_LATCH_S_LATCHED] = params[AXS_LATCH_START] != 0.0f;
  st[AXS_LATCH_S_SEEN] = 0;
  st[AXS_LATCH_S_POS] = 0;
  st[AXS_LATCH_S_LATCHED_AT] = -1;
  st[AXS_LATCH_S_SUM] = axs_latch_bits_of(0.0);
  st[AXS_LATCH_S_COUNT] = 0;
}

/* Sequence o of a call of n_inner tokens: resets its state when the call
 * starts new sequences, writes the gate of each real token in the latch's
 * columns and advances the state over the token's signal. The detection
 * projections are already in lt->p; mask as in the call (NULL: all real). */
AXS_LATCH_FN void axs_latch_scan(const axs_latch *lt, axs_bin mask, int64_t n_inner, int64_t o) {
  int64_t *st = lt->state + o * lt->state_stride;
  const float *pr = lt->params;
  const int64_t off = *lt->offset;
  if (off == 0)
    axs_latch_reset(st, pr);
  const int decode = n_inner == 1 && off > 0;
  const int open = (decode ? pr[AXS_LATCH_GENERATED] : pr[AXS_LATCH_PROMPT]) != 0.0f;
  const double threshold = pr[AXS_LATCH_THRESHOLD], release = pr[AXS_LATCH_RELEASE];
  const int64_t k = axs_latch_count(pr[AXS_LATCH_K]);
  const int64_t release_k = axs_latch_count(pr[AXS_LATCH_RELEASE_K]);
  const int64_t w = lt->window;
  int64_t run = st[AXS_LATCH_S_RUN], up = st[AXS_LATCH_S_UP];
  int64_t latched = st[AXS_LATCH_S_LATCHED] != 0, seen = st[AXS_LATCH_S_SEEN];
  int64_t pos = st[AXS_LATCH_S_POS], latched_at = st[AXS_LATCH_S_LATCHED_AT];
  int64_t count = st[AXS_LATCH_S_COUNT];
  double sum = axs_latch_sum_of(st[AXS_LATCH_S_SUM]);
  uint8_t *gate = lt->gate + o * lt->gate_stride;
  const float *p = lt->p != NULL ? lt->p + o * lt->p_stride : NULL;
  float *ring = w > 1 ? lt->ring + o * lt->ring_stride : NULL;

  for (int64_t i = 0; i < n_inner; i++) {
    /* column c = off + i in [0, capacity), tested without forming off + i */
    if (!(off >= -i && off < lt->capacity - i))
      continue;
    const int64_t c = off + i;
    if (mask.data != NULL && !mask.data[o * mask.stride_outer + i * mask.stride_inner]) {
      gate[c] = 0;
      continue;
    }
    gate[c] = (uint8_t)(latched && open);
    int has = 0; /* a signal s this token (NaN compares false anyway) */
    double s = 0.0;
    if (lt->dir != NULL) {
      const float x = p[c];
      if (w == 1) {
        s = x;
        has = 1;
      } else if (isfinite(x)) {
        if (seen == w)
          sum = (sum + (double)x) - (double)ring[pos];
        else {
          sum = sum + (double)x;
          seen++;
        }
        ring[pos] = x;
        pos = pos + 1 == w ? 0 : pos + 1;
        has = seen == w;
        s = sum / (double)w;
      }
    }
    if (!latched) {
      run = has && s < threshold ? run + 1 : 0;
      if (run >= k) {
        latched = 1;
        run = up = 0;
        count++;
        if (latched_at < 0)
          latched_at = c;
      }
    } else {
      up = has && s > release ? up + 1 : 0;
      if (up >= release_k) {
        latched = 0;
        run = up = 0;
      }
    }
  }
  st[AXS_LATCH_S_RUN] = run;
  st[AXS_LATCH_S_UP] = up;
  st[AXS_LATCH_S_LATCHED] = latched;
  st[AXS_LATCH_S_SEEN] = seen;
  st[AXS_LATCH_S_POS] = pos;
  st[AXS_LATCH_S_LATCHED_AT] = latched_at;
  st[AXS_LATCH_S_SUM] = axs_latch_bits_of(sum);
  st[AXS_LATCH_S_COUNT] = count;
}

#endif
