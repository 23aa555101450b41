/*
 * cuda_fp16.h (emulated) - the float16 conversions cuda.cu uses, for the
 * host emulation of the kernels (see cuda_runtime.h). Written independently
 * of csrc/core/convert.h, so that the parity test compares two
 * implementations: the compiler's _Float16 where it has one (IEEE binary16,
 * conversions rounding to nearest even), a bit-level version otherwise.
 */
#ifndef AXS_EMU_CUDA_FP16_H
#define AXS_EMU_CUDA_FP16_H

#include "cuda_runtime.h"

struct __half {
  uint16_t bits;
};

inline __half __ushort_as_half(unsigned short b) {
  return __half{b};
}

inline unsigned short __half_as_ushort(__half h) {
  return h.bits;
}

#if defined(__FLT16_MANT_DIG__) && !defined(AXS_EMU_NO_FLOAT16)

inline float __half2float(__half h) {
  _Float16 x;
  std::memcpy(&x, &h.bits, sizeof x);
  return (float)x;
}

inline __half __float2half_rn(float f) {
  const _Float16 x = (_Float16)f;
  __half h;
  std::memcpy(&h.bits, &x, sizeof h.bits);
  return h;
}

#else

inline float __half2float(__half h) {
  const unsigned exp = (h.bits >> 10) & 0x1fu, mant = h.bits & 0x3ffu;
  float mag;
  if (exp == 0)
    mag = std::ldexp((float)mant, -24);
  else if (exp == 31)
    mag = mant ? NAN : INFINITY;
  else
    mag = std::ldexp((float)(mant | 0x400u), (int)exp - 25);
  return (h.bits & 0x8000u) ? -mag : mag;
}

inline __half __float2half_rn(float f) {
  const unsigned sign = std::signbit(f) ? 0x8000u : 0u;
  if (std::isnan(f))
    return __half{(uint16_t)(sign | 0x7e00u)};
  const double a = std::fabs((double)f);
  if (a >= 65520.0) // at or past the midpoint between 65504 and 2^16
    return __half{(uint16_t)(sign | 0x7c00u)};
  int e;
  std::frexp(a, &e);                                  // a in [2^(e-1), 2^e)
  const int q = e - 11 > -24 ? e - 11 : -24;          // exponent of a float16 ulp at a
  const double r = std::nearbyint(std::ldexp(a, -q)); // to nearest, ties to even
  const double v = std::ldexp(r, q);                  // the rounded value
  if (v < 0x1p-14)
    return __half{(uint16_t)(sign | (unsigned)r)}; // subnormal
  std::frexp(v, &e);
  const unsigned mant = (unsigned)(std::ldexp(v, 11 - e) - 1024.0);
  return __half{(uint16_t)(sign | ((unsigned)(e + 14) << 10) | mant)};
}

#endif

#endif
