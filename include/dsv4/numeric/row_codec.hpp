#pragma once
// How a cache stores one vector ("row") of floats. The cache types (model/cache_type.hpp) pick a
// format per kind of row; every format has a fixed byte size per row, so a cache's memory is
// rows × row_bytes exactly.
//
//   F32      width × 4 bytes, the values as they are (the reference).
//   BF16     width × 2 bytes, round to nearest even.
//   Fp8Rope  kv vectors whose trailing `rope` dims carry RoPE: those in BF16 first (rope × 2 bytes),
//            then the leading width − rope dims in FP8 E4M3 (one byte each), then one E8M0 scale
//            per 64 of them (the last group may be partial). DeepSeek's layout for its own cache.
//   Fp4      E2M1 codes packed two per byte (element 2j in the low nibble), ceil(width / 2) bytes,
//            then one E8M0 scale per 32 values (the checkpoint's FP4 expert format, MXFP4).
// A group's scale is the smallest power of two s with max|x| / s <= the format's largest value
// (448 for E4M3, 6 for E2M1); an all-zero group gets 2^-127.
#include <algorithm>
#include <array>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>

#include "dsv4/core/error.hpp"
#include "dsv4/numeric/bf16.hpp"
#include "dsv4/numeric/e2m1.hpp"
#include "dsv4/numeric/e4m3.hpp"
#include "dsv4/numeric/e8m0.hpp"

namespace dsv4 {

enum class RowFormat : uint8_t { F32 = 0, BF16 = 1, Fp8Rope = 2, Fp4 = 3 };

inline const char* row_format_name(RowFormat f) {
  switch (f) {
    case RowFormat::F32: return "f32";
    case RowFormat::BF16: return "bf16";
    case RowFormat::Fp8Rope: return "fp8+bf16 rope";
    case RowFormat::Fp4: return "fp4";
  }
  return "?";
}

inline constexpr int64_t kFp8Group = 64;  // values per E8M0 scale in Fp8Rope
inline constexpr int64_t kFp4Group = 32;  // values per E8M0 scale in Fp4

// The E8M0 code of the smallest power of two s with amax / s <= maxv.
inline uint8_t e8m0_scale_for(float amax, float maxv) {
  if (!(amax > 0.f)) return 0;  // zero (or NaN) group: any scale decodes to zero
  int k = 0;
  const float f = std::frexp(amax / maxv, &k);  // amax / maxv = f · 2^k, f in [0.5, 1)
  int e = f == 0.5f ? k - 1 : k;
  e = std::clamp(e, -127, 127);
  return uint8_t(e + 127);
}

// Round to nearest even, saturating at ±448 (NaN stays NaN). Bit arithmetic, no search.
inline uint8_t f32_to_e4m3_fast(float x) {
  if (std::isnan(x)) return 0x7F;
  const uint8_t sign = std::signbit(x) ? 0x80 : 0;
  const float a = std::fabs(x);
  if (a >= 448.0f) return sign | 0x7E;
  if (a < 0.015625f) {  // below 2^-6: subnormal steps of 2^-9 (a code of 8 is the first normal)
    return sign | uint8_t(std::nearbyint(a * 512.0f));
  }
  int k = 0;
  const float f = std::frexp(a, &k);  // a = f · 2^k, f in [0.5, 1): exponent E = k - 1
  int e = k - 1;
  int q = int(std::nearbyint((f * 2.0f - 1.0f) * 8.0f));  // mantissa steps of 1/8, ties to even
  if (q == 8) q = 0, ++e;
  const int code = ((e + 7) << 3) | q;
  return sign | uint8_t(std::min(code, 0x7E));
}

// Round to nearest, ties to the even code, saturating at ±6.
inline uint8_t f32_to_e2m1(float x) {
  const uint8_t sign = std::signbit(x) ? 8 : 0;
  const float a = std::fabs(x);
  uint8_t best = 0;
  float best_err = a;
  for (uint8_t c = 1; c < 8; ++c) {
    const float err = std::fabs(kE2m1Values[c] - a);
    if (err < best_err || (err == best_err && (c & 1) == 0)) best = c, best_err = err;
  }
  return best == 0 ? 0 : uint8_t(sign | best);  // -0 is stored as 0
}

// Every E4M3 code decoded once (decoding a cache row is a table lookup per value).
inline const float* e4m3_table() {
  static const auto t = [] {
    std::array<float, 256> v{};
    for (int c = 0; c < 256; ++c) v[size_t(c)] = e4m3_to_f32(uint8_t(c));
    return v;
  }();
  return t.data();
}

struct RowCodec {
  RowFormat format = RowFormat::F32;
  int64_t width = 0;  // values per row
  int64_t rope = 0;   // Fp8Rope: trailing dims kept in BF16

  int64_t nope() const { return width - rope; }
  int64_t row_bytes() const {
    switch (format) {
      case RowFormat::F32: return width * 4;
      case RowFormat::BF16: return width * 2;
      case RowFormat::Fp8Rope: return rope * 2 + nope() + (nope() + kFp8Group - 1) / kFp8Group;
      case RowFormat::Fp4: return (width + 1) / 2 + (width + kFp4Group - 1) / kFp4Group;
    }
    return 0;
  }
  bool lossless() const { return format == RowFormat::F32; }

  void encode(const float* x /*[width]*/, uint8_t* out /*[row_bytes]*/) const {
    switch (format) {
      case RowFormat::F32: std::memcpy(out, x, size_t(width) * 4); return;
      case RowFormat::BF16:
        for (int64_t j = 0; j < width; ++j) store_u16(out + 2 * j, f32_to_bf16(x[j]));
        return;
      case RowFormat::Fp8Rope: {
        const int64_t n = nope();
        for (int64_t j = 0; j < rope; ++j) store_u16(out + 2 * j, f32_to_bf16(x[n + j]));
        uint8_t* q = out + 2 * rope;
        uint8_t* scales = q + n;
        for (int64_t g0 = 0; g0 < n; g0 += kFp8Group) {
          const int64_t g1 = std::min(n, g0 + kFp8Group);
          const uint8_t s = e8m0_scale_for(amax(x + g0, g1 - g0), 448.0f);
          const float inv = 1.0f / e8m0_to_f32(s);  // a power of two: exact
          for (int64_t j = g0; j < g1; ++j) q[j] = f32_to_e4m3_fast(x[j] * inv);
          scales[g0 / kFp8Group] = s;
        }
        return;
      }
      case RowFormat::Fp4: {
        const int64_t packed = (width + 1) / 2;
        std::memset(out, 0, size_t(packed));
        uint8_t* scales = out + packed;
        for (int64_t g0 = 0; g0 < width; g0 += kFp4Group) {
          const int64_t g1 = std::min(width, g0 + kFp4Group);
          const uint8_t s = e8m0_scale_for(amax(x + g0, g1 - g0), 6.0f);
          const float inv = 1.0f / e8m0_to_f32(s);
          for (int64_t j = g0; j < g1; ++j) out[j / 2] |= uint8_t(f32_to_e2m1(x[j] * inv) << ((j & 1) * 4));
          scales[g0 / kFp4Group] = s;
        }
        return;
      }
    }
  }

  void decode(const uint8_t* in /*[row_bytes]*/, float* out /*[width]*/) const {
    switch (format) {
      case RowFormat::F32: std::memcpy(out, in, size_t(width) * 4); return;
      case RowFormat::BF16:
        for (int64_t j = 0; j < width; ++j) out[j] = bf16_to_f32(load_u16(in + 2 * j));
        return;
      case RowFormat::Fp8Rope: {
        const int64_t n = nope();
        for (int64_t j = 0; j < rope; ++j) out[n + j] = bf16_to_f32(load_u16(in + 2 * j));
        const uint8_t* q = in + 2 * rope;
        const uint8_t* scales = q + n;
        const float* lut = e4m3_table();
        for (int64_t g0 = 0; g0 < n; g0 += kFp8Group) {
          const float s = e8m0_to_f32(scales[g0 / kFp8Group]);
          const int64_t g1 = std::min(n, g0 + kFp8Group);
          for (int64_t j = g0; j < g1; ++j) out[j] = lut[q[j]] * s;
        }
        return;
      }
      case RowFormat::Fp4: {
        const uint8_t* scales = in + (width + 1) / 2;
        for (int64_t g0 = 0; g0 < width; g0 += kFp4Group) {
          const float s = e8m0_to_f32(scales[g0 / kFp4Group]);
          const int64_t g1 = std::min(width, g0 + kFp4Group);
          for (int64_t j = g0; j < g1; ++j) out[j] = kE2m1Values[(in[j / 2] >> ((j & 1) * 4)) & 0xF] * s;
        }
        return;
      }
    }
  }

  // x <- decode(encode(x)): what a value reads back as once stored.
  void round_trip(float* x /*[width]*/, uint8_t* scratch /*[row_bytes]*/) const {
    if (lossless()) return;
    encode(x, scratch);
    decode(scratch, x);
  }

 private:
  static float amax(const float* x, int64_t n) {
    float m = 0.f;
    for (int64_t j = 0; j < n; ++j) m = std::max(m, std::fabs(x[j]));
    return m;
  }
  static void store_u16(uint8_t* p, uint16_t v) { std::memcpy(p, &v, 2); }
  static uint16_t load_u16(const uint8_t* p) {
    uint16_t v;
    std::memcpy(&v, p, 2);
    return v;
  }
};

}  // namespace dsv4
