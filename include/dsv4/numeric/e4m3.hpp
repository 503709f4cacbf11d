#pragma once
// FP8 E4M3 ("fn" variant of OCP FP8): bias 7, no infinities, S.1111.111 is NaN, max 448.
#include <cmath>
#include <cstdint>
#include <limits>

namespace dsv4 {

inline float e4m3_to_f32(uint8_t b) {
  const int sign = b >> 7, exp = (b >> 3) & 0xF, man = b & 0x7;
  float v;
  if (exp == 0xF && man == 0x7) return std::numeric_limits<float>::quiet_NaN();
  if (exp == 0)
    v = std::ldexp(float(man), -9);  // subnormal: man/8 * 2^-6
  else
    v = std::ldexp(float(8 + man), exp - 10);  // (1 + man/8) * 2^(exp-7)
  return sign ? -v : v;
}

// Round to nearest even with saturation to +-448 (used by tests and the synthetic writer).
inline uint8_t f32_to_e4m3(float f) {
  if (std::isnan(f)) return 0x7F;
  const uint8_t sign = std::signbit(f) ? 0x80 : 0;
  float a = std::fabs(f);
  if (a >= 448.0f) return sign | 0x7E;
  // Brute force over the 127 non-negative finite codes keeps this obviously correct.
  uint8_t best = 0;
  float best_err = a;
  for (uint8_t c = 1; c < 0x7F; ++c) {
    float err = std::fabs(e4m3_to_f32(c) - a);
    if (err < best_err || (err == best_err && (c & 1) == 0)) best = c, best_err = err;
  }
  return sign | best;
}

}  // namespace dsv4
