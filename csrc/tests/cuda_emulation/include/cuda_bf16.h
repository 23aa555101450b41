/*
 * cuda_bf16.h (emulated) - the bfloat16 conversions cuda.cu uses, for the
 * host emulation of the kernels (see cuda_runtime.h): round to nearest, ties
 * to even, NaN to the canonical quiet NaN as the device does. Written
 * independently of csrc/core/convert.h.
 */
#ifndef AXS_EMU_CUDA_BF16_H
#define AXS_EMU_CUDA_BF16_H

#include "cuda_runtime.h"

struct __nv_bfloat16 {
  uint16_t bits;
};

inline unsigned short __bfloat16_as_ushort(__nv_bfloat16 h) {
  return h.bits;
}

inline __nv_bfloat16 __float2bfloat16_rn(float f) {
  if (std::isnan(f))
    return __nv_bfloat16{0x7fffu};
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  const uint32_t lsb = (u >> 16) & 1u;
  return __nv_bfloat16{(uint16_t)((u + 0x7fffu + lsb) >> 16)};
}

inline float __bfloat162float(__nv_bfloat16 h) {
  const uint32_t u = (uint32_t)h.bits << 16;
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

#endif
