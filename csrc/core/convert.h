/*
 * convert.h - float16 / bfloat16 <-> float32 conversions in plain C, written
 * without branches the compiler cannot turn into selects so that the row
 * loops vectorise. Narrowing conversions round to nearest, ties to even;
 * NaN stays NaN (made quiet), infinities stay infinities, values beyond the
 * largest finite float16 become infinities, float16 subnormals are exact.
 */
#ifndef AXIS_STEER_CONVERT_H
#define AXIS_STEER_CONVERT_H

#include <stdint.h>
#include <string.h>

static inline uint32_t axs_f32_bits(float f) {
  uint32_t u;
  memcpy(&u, &f, sizeof u);
  return u;
}

static inline float axs_bits_f32(uint32_t u) {
  float f;
  memcpy(&f, &u, sizeof f);
  return f;
}

static inline float axs_bf16_to_f32(uint16_t x) {
  return axs_bits_f32((uint32_t)x << 16);
}

static inline uint16_t axs_f32_to_bf16(float f) {
  uint32_t u = axs_f32_bits(f);
  uint32_t rounded = u + 0x7fffu + ((u >> 16) & 1u);
  uint32_t quiet_nan = (u >> 16) | 0x0040u;
  int is_nan = (u & 0x7fffffffu) > 0x7f800000u;
  return (uint16_t)(is_nan ? quiet_nan : (rounded >> 16));
}

/* The same rounding without the NaN select, for the row updates. They store
 * x + c * w with c and w finite and x read from bfloat16; clamp and set only
 * write rows that are finite. A steered row may hold a NaN: then the sum is a
 * NaN whose low 16 bits are zero (x's payload came from bfloat16, or it is
 * the default NaN), so the rounding increment cannot carry into the exponent
 * and the result stays NaN. Infinities round to themselves. */
static inline uint16_t axs_f32_to_bf16_not_nan(float f) {
  uint32_t u = axs_f32_bits(f);
  return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

static inline float axs_f16_to_f32(uint16_t x) {
  uint32_t sign = ((uint32_t)x & 0x8000u) << 16;
  uint32_t exp = ((uint32_t)x >> 10) & 0x1fu;
  uint32_t mant = (uint32_t)x & 0x3ffu;
  /* normal numbers: rebias the exponent */
  uint32_t normal = ((exp + (127 - 15)) << 23) | (mant << 13);
  /* infinities and NaN: all exponent bits set */
  uint32_t special = 0x7f800000u | (mant << 13);
  /* subnormals: mant * 2^-24, exact in float32 */
  float sub = (float)mant * 5.9604644775390625e-08f;
  uint32_t bits = exp == 0x1fu ? special : normal;
  float mag = exp == 0 ? sub : axs_bits_f32(bits);
  return axs_bits_f32(axs_f32_bits(mag) | sign);
}

static inline uint16_t axs_f32_to_f16(float f) {
  uint32_t u = axs_f32_bits(f);
  uint32_t sign = (u >> 16) & 0x8000u;
  uint32_t a = u & 0x7fffffffu;
  /* >= 65536 or not finite: infinity, or a quiet NaN */
  uint32_t big = a > 0x7f800000u ? 0x7e00u : 0x7c00u;
  /* below 2^-14: adding 0.5f aligns the ten mantissa bits at the bottom of
   * the float and rounds them to nearest even in the same addition */
  uint32_t small = axs_f32_bits(axs_bits_f32(a) + 0.5f) - 0x3f000000u;
  /* normal: rebias, then round to nearest even on the 13 dropped bits; a
   * carry out of the mantissa correctly bumps the exponent (to inf if need) */
  uint32_t odd = (a >> 13) & 1u;
  uint32_t normal = (a + 0xc8000fffu + odd) >> 13; /* (15 - 127) << 23 */
  uint32_t mag = a >= 0x47800000u ? big : (a < 0x38800000u ? small : normal);
  return (uint16_t)(sign | (mag & 0xffffu));
}

#endif
