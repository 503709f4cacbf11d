#pragma once
// y [T, rows] = x [T, K] · W[rows]^T for grouped FP4 weights (E2M1, one E8M0 scale per 32), with
// integer dot products: each packed byte gives two weights, mapped by a 16-entry byte shuffle to
// 2·e2m1 + 12 (unsigned, 0..24, exact); activations are 16-bit integers per group of 32, held as
// two signed byte planes (q16_activations.hpp). Per vector of packed bytes (2·VB weights) that is
// one load, three bit operations and two shuffles, then per token four u8×s8 dot products
// (AVX-512 VNNI vpdpbusd; elsewhere vpmaddubsw + vpmaddwd), one int→float conversion and one FMA
// with the per-lane scale (weight scale × activation step). The only rounding is the
// activations' (at most half a step, max|x|/65278, per element); the integer sums are exact.
// This is the decode kernel: it streams the weights once at memory speed. Many tokens go to the
// float GEMM instead (simd_gemm.hpp), which reuses each decoded weight across tokens.
#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "dsv4/core/parallel.hpp"
#include "dsv4/kernels/cpu/q16_activations.hpp"
#include "dsv4/kernels/cpu/simd_decode.hpp"
#include "dsv4/kernels/cpu/tile_walk.hpp"
#include "dsv4/quant/schemes.hpp"

namespace dsv4::cpu {

// Byte shuffle table: FP4 code -> 2·value + 12 (codes 8..15 are the negatives of 0..7).
inline constexpr int8_t kFp4U8[16] = {12, 13, 14, 15, 16, 18, 20, 24, 12, 11, 10, 9, 8, 6, 4, 0};

// Vector operations of one width. VB = 64: AVX-512 (BW), with VNNI or not; VB = 32: AVX2.
template <int VB, bool kVnni>
struct I8Ops;

#if defined(__AVX512F__) && defined(__AVX512BW__)
template <bool kVnni>
struct I8Ops<64, kVnni> {
  using I = __m512i;
  using F = __m512;
  // The packed bytes of one chunk (`bytes` of them valid; the rest read as code 0).
  static I load_packed(const uint8_t* p, int bytes) {
    if (bytes == 64) return _mm512_loadu_si512(p);
    return _mm512_maskz_loadu_epi8(__mmask64((uint64_t(1) << bytes) - 1), p);
  }
  static void weights(I packed, I& lo, I& hi) {
    const I lut = _mm512_broadcast_i32x4(_mm_loadu_si128(reinterpret_cast<const __m128i*>(kFp4U8)));
    const I m = _mm512_set1_epi8(0x0F);
    lo = _mm512_shuffle_epi8(lut, _mm512_and_si512(packed, m));
    hi = _mm512_shuffle_epi8(lut, _mm512_and_si512(_mm512_srli_epi16(packed, 4), m));
  }
  // bias + per-lane sums of w·(256·h + l) over the chunk: lo/hi are the weights of the even and
  // odd elements; each plane holds 64 bytes of even elements, then 64 of odd ones.
  static I dot(I bias, I lo, I hi, const int8_t* xh, const int8_t* xl) {
    const I he = _mm512_loadu_si512(xh), ho = _mm512_loadu_si512(xh + 64);
    const I le = _mm512_loadu_si512(xl), lodd = _mm512_loadu_si512(xl + 64);
    if constexpr (kVnni) {
#if defined(__AVX512VNNI__)
      const I h = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(_mm512_setzero_si512(), lo, he), hi, ho);
      const I l = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(bias, lo, le), hi, lodd);
      // h · 256 as a byte shuffle (port 5) rather than a shift (port 0, which the four vpdpbusd
      // already fill): |h| <= 8·24·128 < 2^23, so moving each dword's low 3 bytes up one is exact.
      const I up = _mm512_broadcast_i32x4(_mm_setr_epi8(-128, 0, 1, 2, -128, 4, 5, 6, -128, 8, 9, 10, -128, 12, 13, 14));
      return _mm512_add_epi32(_mm512_shuffle_epi8(h, up), l);
#else
      static_assert(!kVnni, "the VNNI instance needs -mavx512vnni");
#endif
    } else {
      // A 16-bit sum of two u8×s8 pairs per plane and half is at most 2·24·128, of both halves
      // 12288: no saturation. vpmaddwd by 256 or 1 then widens and weights the planes.
      const I h = _mm512_add_epi16(_mm512_maddubs_epi16(lo, he), _mm512_maddubs_epi16(hi, ho));
      const I l = _mm512_add_epi16(_mm512_maddubs_epi16(lo, le), _mm512_maddubs_epi16(hi, lodd));
      return _mm512_add_epi32(_mm512_add_epi32(bias, _mm512_madd_epi16(h, _mm512_set1_epi16(256))),
                              _mm512_madd_epi16(l, _mm512_set1_epi16(1)));
    }
  }
  // Lane scales from `groups` E8M0 bytes (4 per chunk; missing ones give 0): the four bytes
  // broadcast (a load), byte k shuffled to the top of the dwords of 128-bit lane k, shifted to the
  // exponent field. Two ALU ops where zero-extending took four, three of them on port 5.
  static F weight_scales(const uint8_t* s, int groups) {
    uint32_t b = 0;
    if (groups == 4) std::memcpy(&b, s, 4);
    else for (int g = 0; g < groups; ++g) b |= uint32_t(s[g]) << (8 * g);
    const I top = _mm512_set_epi32(0x03808080, 0x03808080, 0x03808080, 0x03808080, 0x02808080, 0x02808080, 0x02808080,
                                   0x02808080, 0x01808080, 0x01808080, 0x01808080, 0x01808080, 0x00808080, 0x00808080,
                                   0x00808080, 0x00808080);
    return _mm512_castsi512_ps(_mm512_srli_epi32(_mm512_shuffle_epi8(_mm512_set1_epi32(int(b)), top), 1));
  }
  static I load_bias(const int32_t* b) { return _mm512_loadu_si512(b); }
  static F load_scale(const float* s) { return _mm512_loadu_ps(s); }
  static F zero() { return _mm512_setzero_ps(); }
  static F fma_lanes(I sum, F scale, F acc) { return _mm512_fmadd_ps(_mm512_cvtepi32_ps(sum), scale, acc); }
  static F mul(F a, F b) { return _mm512_mul_ps(a, b); }
  static float reduce(F v) { return _mm512_reduce_add_ps(v); }
};
#endif

#if defined(__AVX2__) && defined(__FMA__)
template <>
struct I8Ops<32, false> {
  using I = __m256i;
  using F = __m256;
  static I load_packed(const uint8_t* p, int bytes) {
    if (bytes == 32) return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
    return _mm256_zextsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));  // bytes == 16
  }
  static void weights(I packed, I& lo, I& hi) {
    const I lut = _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(kFp4U8)));
    const I m = _mm256_set1_epi8(0x0F);
    lo = _mm256_shuffle_epi8(lut, _mm256_and_si256(packed, m));
    hi = _mm256_shuffle_epi8(lut, _mm256_and_si256(_mm256_srli_epi16(packed, 4), m));
  }
  static I dot(I bias, I lo, I hi, const int8_t* xh, const int8_t* xl) {
    auto load = [](const int8_t* p) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)); };
    const I h = _mm256_add_epi16(_mm256_maddubs_epi16(lo, load(xh)), _mm256_maddubs_epi16(hi, load(xh + 32)));
    const I l = _mm256_add_epi16(_mm256_maddubs_epi16(lo, load(xl)), _mm256_maddubs_epi16(hi, load(xl + 32)));
    return _mm256_add_epi32(_mm256_add_epi32(bias, _mm256_madd_epi16(h, _mm256_set1_epi16(256))),
                            _mm256_madd_epi16(l, _mm256_set1_epi16(1)));
  }
  static F weight_scales(const uint8_t* s, int groups) {  // 2 per chunk; as the AVX-512 one
    uint16_t b = 0;
    if (groups == 2) std::memcpy(&b, s, 2);
    else b = s[0];
    const I top = _mm256_set_epi32(0x01808080, 0x01808080, 0x01808080, 0x01808080, 0x00808080, 0x00808080, 0x00808080,
                                   0x00808080);
    return _mm256_castsi256_ps(_mm256_srli_epi32(_mm256_shuffle_epi8(_mm256_set1_epi32(int(b)), top), 1));
  }
  static I load_bias(const int32_t* b) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b)); }
  static F load_scale(const float* s) { return _mm256_loadu_ps(s); }
  static F zero() { return _mm256_setzero_ps(); }
  static F fma_lanes(I sum, F scale, F acc) { return _mm256_fmadd_ps(_mm256_cvtepi32_ps(sum), scale, acc); }
  static F mul(F a, F b) { return _mm256_mul_ps(a, b); }
  static float reduce(F v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)));
  }
};
#endif

// Whether the integer kernel takes this matrix: groups of 32 and whole groups per row.
inline bool fp4_integer_applies(const Fp4GroupMatrix& m) { return m.group == 32 && m.k % 32 == 0; }

// acc[r][t] += chunk c of rows r (packed weights wrow[r], scales srow[r]; `bytes` and `groups`
// valid, fewer only in a last, partial chunk) · tokens t0..t0+nt-1 of a (nt <= TT); prefetches
// ahead[r] as it goes.
template <int VB, bool kVnni, int R, int TT>
inline void fp4_integer_chunk(const uint8_t* const (&wrow)[R], const uint8_t* const (&srow)[R],
                              const uint8_t* const (&ahead)[R], const Q16Activations<VB>& a, int64_t t0, int nt,
                              int64_t c, int bytes, int groups, typename I8Ops<VB, kVnni>::F (&acc)[R][TT]) {
  using O = I8Ops<VB, kVnni>;
  constexpr int kGroupsPerChunk = 2 * VB / 32;
  typename O::I lo[R], hi[R];
  typename O::F ws[R];
  for (int r = 0; r < R; ++r) {
    _mm_prefetch(reinterpret_cast<const char*>(ahead[r]), _MM_HINT_T0);
    O::weights(O::load_packed(wrow[r] + c * VB, bytes), lo[r], hi[r]);
    ws[r] = O::weight_scales(srow[r] + c * kGroupsPerChunk, groups);
  }
  for (int t = 0; t < TT; ++t) {
    if (t >= nt) break;
    const typename O::I bias = O::load_bias(a.bias_at(t0 + t, c));
    const typename O::F xs = O::load_scale(a.scale_at(t0 + t, c));
    const int8_t *xh = a.high_at(t0 + t, c), *xl = a.low_at(t0 + t, c);
    for (int r = 0; r < R; ++r) acc[r][t] = O::fma_lanes(O::dot(bias, lo[r], hi[r], xh, xl), O::mul(ws[r], xs), acc[r][t]);
  }
}

// R rows × up to TT tokens (nt real) over the whole of K. y[t * ldy + r] = dot(row n + r, token t).
template <int VB, bool kVnni, int R, int TT>
inline void fp4_integer_microkernel(const Fp4GroupMatrix& m, int64_t n, int n_valid, const Q16Activations<VB>& a,
                                 int64_t t0, int nt, float* y, int64_t ldy) {
  using O = I8Ops<VB, kVnni>;
  constexpr int kGroupsPerChunk = 2 * VB / 32;
  const int64_t K = m.k, row_bytes = K / 2, scale_cols = m.scale_cols();
  typename O::F acc[R][TT];
  for (int r = 0; r < R; ++r)
    for (int t = 0; t < TT; ++t) acc[r][t] = O::zero();
  const uint8_t* wrow[R];
  const uint8_t* srow[R];
  for (int r = 0; r < R; ++r) {
    const int64_t row = n + std::min(r, n_valid - 1);  // missing rows repeat the last (not stored)
    wrow[r] = m.q + row * row_bytes;
    srow[r] = m.scale + row * scale_cols;
  }
  // Adds chunk c's products; bytes < VB (groups < per chunk) only in the last, partial chunk.
  auto chunk = [&](int64_t c, int bytes, int groups) {
    const uint8_t* ahead[R];
    for (int r = 0; r < R; ++r) ahead[r] = wrow[r] + c * VB + kFp4PrefetchBytes;
    fp4_integer_chunk<VB, kVnni, R, TT>(wrow, srow, ahead, a, t0, nt, c, bytes, groups, acc);
  };
  const int64_t full = K / (2 * VB);
  for (int64_t c = 0; c < full; ++c) chunk(c, VB, kGroupsPerChunk);
  if (full < a.chunks) chunk(full, int((K - full * 2 * VB) / 2), int((K - full * 2 * VB) / 32));
  for (int r = 0; r < n_valid; ++r)
    for (int t = 0; t < nt; ++t) y[t * ldy + r] = O::reduce(acc[r][t]);
}

// Few tokens (2..23). Each pass decodes a weight chunk once and applies it to up to 4 tokens
// (8 in one pass, 1 row: slower, 2.8 against 3.6 GB/s on one core with the weights in L2; the
// four vpdpbusd per token and chunk bound it). K is cut into tiles whose activations
// (TT tokens × 3 bytes per column: two planes, bias and scale) stay in L1, and a group of rows
// passes over one tile after the other with its accumulators parked in memory between tiles: over
// the whole of K, 8 tokens' activations (96 KiB at K = 4096) came from L2 for every row.
inline constexpr int64_t kFp4TileBytes = 16384;
inline constexpr int kFp4GroupRows = 32;
inline constexpr int64_t kFp4FewPrefetchBytes = 4096;  // weights ahead: these and the VBMI kernels

// acc [R][TT] += rows' chunks [c0, c1) · tokens t0..t0+TT-1 of a; pf[r]: the segment a later pass
// reads, prefetched as this one goes.
template <int VB, bool kVnni, int R, int TT>
inline void fp4_integer_pass(const Fp4GroupMatrix& m, const uint8_t* const (&wrow)[R], const uint8_t* const (&srow)[R],
                             const uint8_t* const (&pf)[R], const Q16Activations<VB>& a, int64_t t0, int64_t c0,
                             int64_t c1, typename I8Ops<VB, kVnni>::F* acc, bool first) {
  using O = I8Ops<VB, kVnni>;
  constexpr int kGroupsPerChunk = 2 * VB / 32;
  const int64_t full = m.k / (2 * VB);
  typename O::F s[R][TT];
  for (int r = 0; r < R; ++r)
    for (int t = 0; t < TT; ++t) s[r][t] = first ? O::zero() : acc[r * TT + t];
  for (int64_t c = c0; c < c1; ++c) {
    // Bytes < VB (groups < per chunk) only in the last, partial chunk.
    const int bytes = c < full ? VB : int((m.k - full * 2 * VB) / 2);
    const int groups = c < full ? kGroupsPerChunk : int((m.k - full * 2 * VB) / 32);
    const uint8_t* ahead[R];
    for (int r = 0; r < R; ++r) ahead[r] = pf[r] + (c - c0) * VB;
    fp4_integer_chunk<VB, kVnni, R, TT>(wrow, srow, ahead, a, t0, TT, c, bytes, groups, s);
  }
  for (int r = 0; r < R; ++r)
    for (int t = 0; t < TT; ++t) acc[r * TT + t] = s[r][t];
}

// Rows [n0, n1) · tokens t0..t0+TT-1 of a: y[t * ldy + (n - out0)].
template <int VB, bool kVnni, int TT>
void fp4_integer_few(const Fp4GroupMatrix& m, const Q16Activations<VB>& a, int64_t t0, float* y, int64_t ldy,
                     int64_t n0, int64_t n1, int64_t out0) {
  using O = I8Ops<VB, kVnni>;
  // AVX-512: 2 rows share each activation load (2 × 4 accumulators + 4 weight vectors);
  // AVX2 (16 registers): 1 row.
  constexpr int R = VB == 64 ? 2 : 1;
  const int64_t row_bytes = m.k / 2, scale_cols = m.scale_cols(), chunks = a.chunks;
  const int64_t tile = std::max<int64_t>(1, kFp4TileBytes / (3 * 2 * VB * TT));  // chunks per K tile
  const int64_t seg = std::min(tile, chunks) * VB;  // weight bytes of a row per pass
  const int64_t ahead_rows = R * std::max<int64_t>(1, kFp4FewPrefetchBytes / (R * seg));
  alignas(64) typename O::F buf[kFp4GroupRows + R][TT];
  walk_row_tiles<R>(
      n0, n1, kFp4GroupRows, chunks, tile, ahead_rows,
      [&](int64_t g, int64_t n, int nr, int64_t c0, int64_t c1, int64_t pn, int64_t pc) {
        const uint8_t* wrow[R];
        const uint8_t* srow[R];
        const uint8_t* pf[R];
        for (int r = 0; r < R; ++r) {
          const int64_t row = n + std::min(r, nr - 1);  // missing rows repeat the last (not stored)
          wrow[r] = m.q + row * row_bytes, srow[r] = m.scale + row * scale_cols;
          pf[r] = m.q + (pn + r) * row_bytes + pc * VB;
        }
        fp4_integer_pass<VB, kVnni, R, TT>(m, wrow, srow, pf, a, t0, c0, c1, &buf[n - g][0], c0 == 0);
      },
      [&](int64_t g, int64_t g1) {
        for (int64_t n = g; n < g1; ++n)
          for (int t = 0; t < TT; ++t) y[t * ldy + (n - out0)] = O::reduce(buf[n - g][t]);
      });
}

// Tokens t0.. (at most 4) of rows [n0, n1), the token count made a compile-time constant.
template <int VB, bool kVnni>
void fp4_integer_few_tokens(const Fp4GroupMatrix& m, const Q16Activations<VB>& a, int64_t t0, int nt, float* y,
                            int64_t ldy, int64_t n0, int64_t n1, int64_t out0) {
  switch (nt) {
    case 1: return fp4_integer_few<VB, kVnni, 1>(m, a, t0, y, ldy, n0, n1, out0);
    case 2: return fp4_integer_few<VB, kVnni, 2>(m, a, t0, y, ldy, n0, n1, out0);
    case 3: return fp4_integer_few<VB, kVnni, 3>(m, a, t0, y, ldy, n0, n1, out0);
    default: return fp4_integer_few<VB, kVnni, 4>(m, a, t0, y, ldy, n0, n1, out0);
  }
}

// y[t, n - row0] for rows n in [row0, row1); `a` holds x quantized (a.t tokens, a.k == m.k).
template <int VB, bool kVnni>
void fp4_integer_matmul(const Fp4GroupMatrix& m, const Q16Activations<VB>& a, float* y, int64_t ldy, int64_t row0,
                     int64_t row1) {
  // Decode streams 4 rows at a time; prefill reuses each decoded weight vector for 4 tokens
  // (AVX-512: 2 rows × 4 tokens of accumulators + 4 weight vectors fit the 32 registers).
  constexpr int kDecodeRows = 1, kRows = VB == 64 ? 2 : 1, kTokens = 4;
  constexpr int64_t kTokensPerTile = 32;  // a tile's activations (~8 KiB per token at K = 4096) stay in L2
  const int64_t rows = row1 - row0, T = a.t;
  const int64_t work = rows * m.k * std::max<int64_t>(T, 1);
  const int threads = work > (1 << 15) ? num_threads() : 1;
  if (T >= 2 && T < 24) {  // few tokens: up to 4 per pass, K tiled
    constexpr int64_t kPass = 4;
    parallel_row_pieces(row0, row1, 32, threads, [&](int64_t n0, int64_t n1) {
      for (int64_t t0 = 0; t0 < T; t0 += kPass)
        fp4_integer_few_tokens<VB, kVnni>(m, a, t0, int(std::min<int64_t>(kPass, T - t0)), y + t0 * ldy, ldy, n0, n1,
                                          row0);
    });
    return;
  }
  const bool decode = T < 2;
  const int64_t R = decode ? kDecodeRows : kRows;
  const int64_t row_blocks = (rows + R - 1) / R;
  parallel_block_shares(row_blocks, threads, [&](int64_t rb0, int64_t rb1) {
    for (int64_t t0 = 0; t0 < T; t0 += kTokensPerTile) {
      const int64_t t1 = std::min(T, t0 + kTokensPerTile);
      for (int64_t rb = rb0; rb < rb1; ++rb) {
        const int64_t n = row0 + rb * R;
        const int n_valid = int(std::min<int64_t>(R, row1 - n));
        float* yb = y + (n - row0);
        if (decode) {
          fp4_integer_microkernel<VB, kVnni, kDecodeRows, 1>(m, n, n_valid, a, t0, 1, yb + t0 * ldy, ldy);
          continue;
        }
        for (int64_t ts = t0; ts < t1; ts += kTokens)
          fp4_integer_microkernel<VB, kVnni, kRows, kTokens>(m, n, n_valid, a, ts, int(std::min<int64_t>(kTokens, t1 - ts)),
                                                          yb + ts * ldy, ldy);
      }
    }
  });
}

}  // namespace dsv4::cpu
