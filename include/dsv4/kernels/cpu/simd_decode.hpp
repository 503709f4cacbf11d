#pragma once
// Decoding stored weights straight into SIMD registers, per scheme and architecture.
// WeightRows<Scheme, Arch> walks a row in scale blocks: block_of(j) is the block holding column j,
// block(n, b) gives the block's column
// range and its scale; load(n, j) gives the raw decoded values of columns [j, j + lanes) (to be
// multiplied by the block scale). Tails shorter than a vector use scalar(n, j).
// AVX2 and AVX-512 use a table permute for FP4 and bit placement for FP8/BF16; other
// architectures decode through a small buffer (correct everywhere, fast where it matters).
#include <immintrin.h>

#include <cstdint>
#include <algorithm>
#include <cstring>
#include <xsimd/xsimd.hpp>

#include "dsv4/quant/schemes.hpp"

namespace dsv4::cpu {

template <class Arch>
using fbatch = xsimd::batch<float, Arch>;

template <class Arch>
inline constexpr bool kIsAvx512 = std::is_base_of_v<xsimd::avx512f, Arch>;
template <class Arch>
inline constexpr bool kIsAvx2 = std::is_base_of_v<xsimd::avx2, Arch> && !kIsAvx512<Arch>;

// E4M3 bits placed in a binary16 read as 2^-8 times the E4M3 value (see WeightRows<Fp8BlockMatrix>).
inline constexpr float kE4m3BitScale = 256.0f;

template <class Scheme, class Arch>
struct WeightRows;

template <class Arch>
struct WeightRows<F32Matrix, Arch> {
  const F32Matrix& m;
  static constexpr bool kScaled = false;
  int64_t block_cols() const { return std::max<int64_t>(m.k, 1); }
  const uint8_t* row_scales(int64_t) const { return nullptr; }
  float scale_at(const uint8_t*, int64_t) const { return 1.0f; }
  fbatch<Arch> load(int64_t n, int64_t j) const {
    return fbatch<Arch>::load_unaligned(reinterpret_cast<const float*>(m.data + (n * m.k + j) * 4));
  }
  float scalar(int64_t n, int64_t j) const {
    float v;
    std::memcpy(&v, m.data + (n * m.k + j) * 4, 4);
    return v;
  }
  const uint8_t* address(int64_t n, int64_t j) const { return m.data + (n * m.k + j) * 4; }
};

template <class Arch>
struct WeightRows<Bf16Matrix, Arch> {
  const Bf16Matrix& m;
  static constexpr bool kScaled = false;
  int64_t block_cols() const { return std::max<int64_t>(m.k, 1); }
  const uint8_t* row_scales(int64_t) const { return nullptr; }
  float scale_at(const uint8_t*, int64_t) const { return 1.0f; }
  fbatch<Arch> load(int64_t n, int64_t j) const {
    const uint8_t* p = m.data + (n * m.k + j) * 2;
    if constexpr (kIsAvx512<Arch>) {
      __m512i v = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
      return _mm512_castsi512_ps(_mm512_slli_epi32(v, 16));
    } else if constexpr (kIsAvx2<Arch>) {
      __m256i v = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
      return _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
    } else {
      alignas(64) float buf[fbatch<Arch>::size];
      for (size_t i = 0; i < fbatch<Arch>::size; ++i) buf[i] = bf16_to_f32(uint16_t(p[2 * i] | (p[2 * i + 1] << 8)));
      return fbatch<Arch>::load_aligned(buf);
    }
  }
  float scalar(int64_t n, int64_t j) const {
    const uint8_t* p = m.data + (n * m.k + j) * 2;
    return bf16_to_f32(uint16_t(p[0] | (p[1] << 8)));
  }
  const uint8_t* address(int64_t n, int64_t j) const { return m.data + (n * m.k + j) * 2; }
};

template <class Arch>
struct WeightRows<Fp8BlockMatrix, Arch> {
  const Fp8BlockMatrix& m;
  const int64_t scale_stride = m.scale_cols() * (m.scale_is_f32 ? 4 : 1);  // bytes per tile row
  static constexpr bool kScaled = true;
  int64_t block_cols() const { return m.bn; }
  const uint8_t* row_scales(int64_t n) const { return m.scale + (n / m.bm) * scale_stride; }
  float scale_at(const uint8_t* s, int64_t b) const {
    if (!m.scale_is_f32) return e8m0_to_f32(s[b]);
    float v;
    std::memcpy(&v, s + 4 * b, 4);
    return v;
  }
  // Raw values are 2^-8 times the E4M3 values: each byte is placed in a binary16 (sign, 0eeee,
  // mmm0000000) and converted by hardware, subnormals included; the 2^8 goes into the block scale.
  // (Placing the bits in a binary32 instead makes float subnormals, which cost a microcode assist
  // per multiply on Intel cores.)
  fbatch<Arch> load(int64_t n, int64_t j) const {
    const uint8_t* p = m.q + n * m.k + j;
    if constexpr (kIsAvx512<Arch>) {
      // Sign-extended byte << 7 puts the sign at bit 15 and a copy at bit 14, which the mask clears.
      __m256i v = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
      return _mm512_cvtph_ps(_mm256_and_si256(_mm256_slli_epi16(v, 7), _mm256_set1_epi16(int16_t(0xBF80))));
    } else if constexpr (kIsAvx2<Arch>) {
      __m128i v = _mm_cvtepi8_epi16(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
      return _mm256_cvtph_ps(_mm_and_si128(_mm_slli_epi16(v, 7), _mm_set1_epi16(int16_t(0xBF80))));
    } else {
      alignas(64) float buf[fbatch<Arch>::size];
      for (size_t i = 0; i < fbatch<Arch>::size; ++i) buf[i] = e4m3_to_f32(p[i]) / kE4m3BitScale;
      return fbatch<Arch>::load_aligned(buf);
    }
  }
  float scalar(int64_t n, int64_t j) const { return e4m3_to_f32(m.q[n * m.k + j]) / kE4m3BitScale; }
  const uint8_t* address(int64_t n, int64_t j) const { return m.q + n * m.k + j; }
};

template <class Arch>
struct WeightRows<Fp4GroupMatrix, Arch> {
  const Fp4GroupMatrix& m;
  const int64_t scale_stride = m.scale_cols();
  static constexpr bool kScaled = true;
  int64_t block_cols() const { return m.group; }
  const uint8_t* row_scales(int64_t n) const { return m.scale + n * scale_stride; }
  float scale_at(const uint8_t* s, int64_t b) const { return e8m0_to_f32(s[b]); }
  fbatch<Arch> load(int64_t n, int64_t j) const {  // j even
    const uint8_t* p = m.q + n * (m.k / 2) + j / 2;
    if constexpr (kIsAvx512<Arch>) {
      __m128i b = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p));  // 16 codes
      __m128i lo = _mm_and_si128(b, _mm_set1_epi8(0x0F));
      __m128i hi = _mm_and_si128(_mm_srli_epi16(b, 4), _mm_set1_epi8(0x0F));
      __m512i idx = _mm512_cvtepu8_epi32(_mm_unpacklo_epi8(lo, hi));  // element order
      const __m512 table = _mm512_loadu_ps(kE2m1Values);
      return _mm512_permutexvar_ps(idx, table);
    } else if constexpr (kIsAvx2<Arch>) {
      uint32_t bytes;
      std::memcpy(&bytes, p, 4);  // 8 codes
      __m128i b = _mm_cvtsi32_si128(int(bytes));
      __m128i lo = _mm_and_si128(b, _mm_set1_epi8(0x0F));
      __m128i hi = _mm_and_si128(_mm_srli_epi16(b, 4), _mm_set1_epi8(0x0F));
      __m256i idx = _mm256_cvtepu8_epi32(_mm_unpacklo_epi8(lo, hi));
      const __m256 magnitudes = _mm256_loadu_ps(kE2m1Values);  // codes 0..7
      __m256 mag = _mm256_permutevar8x32_ps(magnitudes, idx);  // uses the low 3 bits
      __m256i sign = _mm256_slli_epi32(_mm256_and_si256(idx, _mm256_set1_epi32(8)), 28);
      return _mm256_xor_ps(mag, _mm256_castsi256_ps(sign));
    } else {
      alignas(64) float buf[fbatch<Arch>::size];
      for (size_t i = 0; i < fbatch<Arch>::size; i += 2) buf[i] = fp4_packed_low(p[i / 2]), buf[i + 1] = fp4_packed_high(p[i / 2]);
      return fbatch<Arch>::load_aligned(buf);
    }
  }
  float scalar(int64_t n, int64_t j) const {
    const uint8_t b = m.q[n * (m.k / 2) + j / 2];
    return (j & 1) ? fp4_packed_high(b) : fp4_packed_low(b);
  }
  const uint8_t* address(int64_t n, int64_t j) const { return m.q + n * (m.k / 2) + j / 2; }
};

// Software prefetch distance for a single streamed row (decode): the hardware streamer alone
// leaves a core short of outstanding misses. bench_kernels, 2 cores: FP8 GEMV 6.5 -> 8.5-9.6 GB/s
// at 4 KiB ahead (2 KiB: 7.8-8.2); the integer FP4 kernel, which consumes bytes twice as fast per
// instruction, does best at 1 KiB (13 -> 16 GB/s).
inline constexpr int64_t kPrefetchBytes = 4096;
inline constexpr int64_t kFp4PrefetchBytes = 1024;

// Multiplier applied to a block's raw values: the stored scale, times 2^8 for FP8.
template <class Scheme>
inline float raw_scale(float block_scale) {
  if constexpr (std::is_same_v<Scheme, Fp8BlockMatrix>) return block_scale * kE4m3BitScale;
  return block_scale;
}

}  // namespace dsv4::cpu
