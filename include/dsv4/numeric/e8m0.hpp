#pragma once
// E8M0 (OCP MX scale): byte b means 2^(b-127); 255 is NaN. Never reinterpret it as a float.
#include <cmath>
#include <cstdint>
#include <limits>

namespace dsv4 {

inline float e8m0_to_f32(uint8_t b) {
  if (b == 255) return std::numeric_limits<float>::quiet_NaN();
  return std::ldexp(1.0f, int(b) - 127);  // b = 0 gives 2^-127, a float subnormal
}

}  // namespace dsv4
