#pragma once
// Activations quantized to 16-bit integers, split into two int8 planes, for the integer FP4
// kernel (kernels/cpu/fp4_integer.hpp).
//
// Why 16 bits: the products with FP4 weights are exact in integers, so the activations' rounding
// is the kernel's only error. int8 (a step of max|x|/127 per group of 32) moves the tiny golden
// model's logits by up to 1.8 — indexer and router choices flip — while 16 bits (a step of
// max|x|/32639) keep it within 1e-4 of the fp32 reference. Each value v = 256·h + l with h, l
// signed bytes, so the u8×s8 byte dot products (vpdpbusd, vpmaddubsw) still apply, twice.
//
// Layout. Each group of 32 elements gets the step d = max|x| / 32639. The row is cut into
// chunks of C = 2·VB elements (VB = bytes per vector: 64 for AVX-512, 32 for AVX2). A chunk of a
// plane is VB bytes of its even elements, then VB bytes of its odd ones: the order of the low and
// high nibbles of the VB packed FP4 bytes that cover the chunk, so the weights are never
// shuffled. In a vector dot product, int32 lane l adds chunk elements 8l..8l+7 (four even, four
// odd), all in group l/4, and carries
//   scale[l] = half the step of group l/4,
//   bias[l]  = -12 · (sum of the lane's eight 16-bit values),
// because the weights enter the product as the unsigned bytes 2·e2m1 + 12 (0..24): starting the
// lane's sum at bias[l] removes the +12 exactly, and the half undoes the 2.
#if defined(__AVX512F__)
#include <immintrin.h>
#endif

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

namespace dsv4::cpu {

template <int VB>
struct Q16Activations {
  static constexpr int kChunk = 2 * VB;  // elements per chunk
  static constexpr int kLanes = VB / 4;  // int32 lanes per vector
  static constexpr int kGroup = 32;
  static constexpr int kMax = 127 * 256 + 127;  // the largest v whose split has h <= 127

  int64_t t = 0, k = 0, chunks = 0;
  std::vector<int8_t> q;      // [t, chunks, 2 planes (h, l), kChunk]: each plane even elements, then odd
  std::vector<float> scale;   // [t, chunks, kLanes]
  std::vector<int32_t> bias;  // [t, chunks, kLanes]

  const int8_t* high_at(int64_t token, int64_t chunk) const { return q.data() + ((token * chunks + chunk) * 2) * kChunk; }
  const int8_t* low_at(int64_t token, int64_t chunk) const { return high_at(token, chunk) + kChunk; }
  const float* scale_at(int64_t token, int64_t chunk) const { return scale.data() + (token * chunks + chunk) * kLanes; }
  const int32_t* bias_at(int64_t token, int64_t chunk) const { return bias.data() + (token * chunks + chunk) * kLanes; }

  // x: [rows, cols] with row stride ldx; cols a multiple of 32. Buffers grow but never shrink, so
  // a reused object allocates nothing once it has seen the largest shape.
  void quantize(const float* x, int64_t ldx, int64_t rows, int64_t cols) {
    t = rows, k = cols, chunks = (cols + kChunk - 1) / kChunk;
    q.resize(size_t(t * chunks * 2 * kChunk));
    scale.resize(size_t(t * chunks * kLanes));
    bias.resize(size_t(t * chunks * kLanes));
    for (int64_t i = 0; i < t; ++i) quantize_row(x + i * ldx, i);
  }

 private:
  // The group's 32 values as integers in [-kMax, kMax] (vg), their step returned: max|x| / kMax,
  // NaN (and zeros) for a group with an Inf or NaN.
  static float quantize_group(const float* xg, int32_t* vg) {
#if defined(__AVX512F__)
    // The scalar loop below, vectorized (a serial step before every FP4 GEMV: 3 us at K = 4096,
    // 1.5 % of the call): the same max, the same products and round-to-nearest-even.
    const __m512i mag = _mm512_set1_epi32(0x7FFFFFFF);
    const __m512 x0 = _mm512_loadu_ps(xg), x1 = _mm512_loadu_ps(xg + 16);
    const uint32_t abits = _mm512_reduce_max_epu32(_mm512_max_epu32(_mm512_and_si512(_mm512_castps_si512(x0), mag),
                                                                    _mm512_and_si512(_mm512_castps_si512(x1), mag)));
#else
    uint32_t abits = 0;
    for (int j = 0; j < kGroup; ++j) abits = std::max(abits, std::bit_cast<uint32_t>(xg[j]) & 0x7FFFFFFFu);
#endif
    // max |x| on the bit patterns: ordered like the magnitudes, NaN above Inf.
    const float amax = std::bit_cast<float>(abits);
    if (!std::isfinite(amax)) {  // an Inf or NaN input: the group's products become NaN
      std::fill(vg, vg + kGroup, 0);
      return std::numeric_limits<float>::quiet_NaN();
    }
    const float inv = amax > 0.f ? float(kMax) / amax : 0.f;
#if defined(__AVX512F__)
    const __m512 vinv = _mm512_set1_ps(inv);
    const __m512i lo = _mm512_set1_epi32(-kMax), hi = _mm512_set1_epi32(kMax);
    auto q = [&](__m512 xv) {  // cvtps2dq rounds to nearest even, as nearbyint in the default mode
      return _mm512_min_epi32(_mm512_max_epi32(_mm512_cvtps_epi32(_mm512_mul_ps(xv, vinv)), lo), hi);
    };
    _mm512_storeu_si512(vg, q(x0));
    _mm512_storeu_si512(vg + 16, q(x1));
#else
    for (int j = 0; j < kGroup; ++j) vg[j] = std::clamp(int32_t(std::nearbyint(xg[j] * inv)), -kMax, kMax);
#endif
    return amax / float(kMax);
  }

  void quantize_row(const float* x, int64_t token) {
    int32_t v[kChunk];
    for (int64_t c = 0; c < chunks; ++c) {
      const int64_t c0 = c * kChunk, n = std::min<int64_t>(kChunk, k - c0);  // n: a multiple of 32
      float step[kChunk / kGroup] = {};
      for (int64_t g = 0; g < kChunk / kGroup; ++g) {
        int32_t* vg = v + g * kGroup;
        if (g * kGroup >= n) {  // past the end of the row: zeros that add nothing
          std::fill(vg, vg + kGroup, 0);
          continue;
        }
        const float* xg = x + c0 + g * kGroup;
        step[g] = quantize_group(xg, vg);
      }
      int8_t* high = q.data() + ((token * chunks + c) * 2) * kChunk;
      int8_t* low = high + kChunk;
      for (int e = 0; e < 2; ++e)  // even elements first, then odd (two strided loops vectorize)
        for (int i = 0; i < VB; ++i) {
          const int32_t vj = v[2 * i + e];
          const int32_t h = (vj + 128) >> 8;  // v = 256·h + l, l in [-128, 127]
          high[e * VB + i] = int8_t(h);
          low[e * VB + i] = int8_t(vj - 256 * h);
        }
      float* s = scale.data() + (token * chunks + c) * kLanes;
      int32_t* b = bias.data() + (token * chunks + c) * kLanes;
      for (int l = 0; l < kLanes; ++l) {
        int32_t sum = 0;
        for (int j = 0; j < 8; ++j) sum += v[8 * l + j];
        s[l] = 0.5f * step[l / 4];
        b[l] = -12 * sum;
      }
    }
  }
};

}  // namespace dsv4::cpu
