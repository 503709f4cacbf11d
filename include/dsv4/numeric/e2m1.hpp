#pragma once
// FP4 E2M1 codes: 0..7 -> 0, 0.5, 1, 1.5, 2, 3, 4, 6; 8..15 are the negatives.
// Packed two per byte: element 2j in the low nibble, 2j+1 in the high nibble.
#include <cstdint>

namespace dsv4 {

inline constexpr float kE2m1Values[16] = {0.0f,  0.5f,  1.0f,  1.5f,  2.0f,  3.0f,  4.0f,  6.0f,
                                          -0.0f, -0.5f, -1.0f, -1.5f, -2.0f, -3.0f, -4.0f, -6.0f};

inline float e2m1_to_f32(uint8_t code) { return kE2m1Values[code & 0xF]; }
inline float fp4_packed_low(uint8_t byte) { return kE2m1Values[byte & 0xF]; }
inline float fp4_packed_high(uint8_t byte) { return kE2m1Values[byte >> 4]; }

}  // namespace dsv4
