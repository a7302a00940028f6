// Host emulation of cuda_bf16.h (tests/cuda_emu): __nv_bfloat16 as the top 16 bits
// of a float, with round-to-nearest-even conversion as __float2bfloat16_rn.
#pragma once

#include <cstdint>
#include <cstring>

struct __nv_bfloat16 {
  std::uint16_t bits;
};

inline float __bfloat162float(__nv_bfloat16 h) {
  const std::uint32_t x = static_cast<std::uint32_t>(h.bits) << 16;
  float f;
  std::memcpy(&f, &x, 4);
  return f;
}

inline __nv_bfloat16 __float2bfloat16_rn(float f) {
  std::uint32_t x;
  std::memcpy(&x, &f, 4);
  __nv_bfloat16 h;
  if ((x & 0x7fffffffu) > 0x7f800000u) {
    h.bits = static_cast<std::uint16_t>((x >> 16) | 0x40u);  // quiet nan
  } else {
    x += 0x7fffu + ((x >> 16) & 1u);
    h.bits = static_cast<std::uint16_t>(x >> 16);
  }
  return h;
}
