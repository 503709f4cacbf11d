#pragma once
// E8M0 (OCP MX scale): byte b means 2^(b-127); 255 is NaN. Never reinterpret it as a float.
#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>

namespace dsv4 {

inline float e8m0_to_f32(uint8_t b) {
  if (b == 255) return std::numeric_limits<float>::quiet_NaN();
  // The exponent field of a binary32 is the same biased exponent; b = 0 is 2^-127, a subnormal.
  return std::bit_cast<float>(b == 0 ? uint32_t(0x00400000) : uint32_t(b) << 23);
}

}  // namespace dsv4
