// Host emulation of cuda_fp16.h (tests/cuda_emu): __half as IEEE binary16 bits, with
// round-to-nearest-even conversions from float, as the device's __float2half_rn.
#pragma once

#include <cstdint>
#include <cstring>

struct __half {
  std::uint16_t bits;
};

inline float __half2float(__half h) {
  const std::uint32_t sign = (h.bits & 0x8000u) << 16, exp = (h.bits >> 10) & 0x1f, man = h.bits & 0x3ff;
  std::uint32_t out;
  if (exp == 0x1f) {
    out = sign | 0x7f800000u | (man << 13);  // inf / nan
  } else if (exp != 0) {
    out = sign | ((exp + 112) << 23) | (man << 13);
  } else if (man == 0) {
    out = sign;
  } else {  // subnormal: value = man * 2^-24
    int e = -1;
    std::uint32_t m = man;
    do {
      ++e;
      m <<= 1;
    } while ((m & 0x400) == 0);
    out = sign | ((112 - e) << 23) | ((m & 0x3ff) << 13);
  }
  float f;
  std::memcpy(&f, &out, 4);
  return f;
}

inline __half __float2half_rn(float f) {
  std::uint32_t x;
  std::memcpy(&x, &f, 4);
  const std::uint32_t sign = (x >> 16) & 0x8000u;
  const std::uint32_t absx = x & 0x7fffffffu;
  std::uint16_t out;
  if (absx >= 0x7f800000u) {  // inf / nan
    out = static_cast<std::uint16_t>(sign | 0x7c00u | (absx > 0x7f800000u ? 0x200u : 0u));
  } else if (absx >= 0x477ff000u) {  // rounds to >= 65520: overflow to inf
    out = static_cast<std::uint16_t>(sign | 0x7c00u);
  } else if (absx < 0x38800000u) {  // below the smallest normal (2^-14): subnormal or zero
    if (absx < 0x33000000u) {  // below half the smallest subnormal: zero
      out = static_cast<std::uint16_t>(sign);
    } else {
      const int e = static_cast<int>(absx >> 23);
      const std::uint32_t m = (absx & 0x7fffffu) | 0x800000u;
      const int shift = 126 - e;  // value = m * 2^(e-150); subnormal unit 2^-24
      std::uint32_t q = m >> shift;
      const std::uint32_t rem = m & ((1u << shift) - 1), half = 1u << (shift - 1);
      if (rem > half || (rem == half && (q & 1u))) ++q;
      out = static_cast<std::uint16_t>(sign | q);
    }
  } else {
    std::uint32_t v = absx - 0x38000000u;  // rebias the exponent by 112
    const std::uint32_t rem = v & 0x1fffu;
    v >>= 13;
    if (rem > 0x1000u || (rem == 0x1000u && (v & 1u))) ++v;
    out = static_cast<std::uint16_t>(sign | v);
  }
  __half h;
  h.bits = out;
  return h;
}
