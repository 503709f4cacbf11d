#pragma once
// Lightning Indexer scores on the CPU, vectorized over heads:
//   scores[e] = kscale * sum_h g[h] * max(0, q[h, :] . key_e),  e in [0, n).
// The public entry points are in kernels/cpu/indexer_scores.hpp; this header holds the SIMD
// templates that the ISA instances (src/cpu_*.cpp) compile.
//
// Layout. q [nh, ci] is packed once per call, transposed to [ci, heads] in chunks of up to
// kHeadVecs vectors of heads (padded with zero heads, whose relu(0) * g = 0 adds nothing). Keys
// are walked in blocks of kBlock; F32 keys (and BF16 keys on the bf16-dot path) are read where they
// lie, BF16 / FP4 keys are otherwise decoded into a per-thread tile first. The micro-kernel keeps
// kKeys keys x HV head vectors of accumulators: per key dimension it loads HV vectors of q and
// broadcasts one element of each key (AVX-512: 6 x 4 = 24 zmm accumulators, 10 loads per 24 FMA).
// Then relu, times g, a horizontal sum per key. Rows are prefetched a micro-kernel ahead (read in
// place) or a block ahead (decoded). OpenMP threads (above kIndexerParallelMacs) take chunks of
// blocks dynamically; a key's score does not depend on the split, so any thread count gives the
// same bits.
//
// Numerics.
//   fp32 path (all formats without kBf16Dot; F32 keys always): keys decoded exactly to fp32 (BF16
//     and FP4 x power-of-two scale are exact in fp32), fp32 FMA along the head dimension in the
//     reference's order (j = 0..ci-1), heads summed in a different order than the reference.
//   bf16-dot path (kBf16Dot, BF16 and FP4 keys): q rounded to bf16 (nearest even), keys exact in
//     bf16 (FP4 codes times a power-of-two scale have <= 2 significant bits), vdpbf16ps: two
//     exact bf16 products added into an fp32 accumulator per step (round to nearest; bf16
//     subnormal inputs read as zero, i.e. FP4 groups scaled below 2^-126, which hold |x| < 2^-123).
//     Per dot: |error| <= (2^-8 + (ci + 2) * 2^-24) * sum_j |q_hj k_j| (2^-8: bf16's unit roundoff).
#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <new>
#include <xsimd/xsimd.hpp>

#include "dsv4/core/error.hpp"
#include "dsv4/core/parallel.hpp"
#include "dsv4/kernels/cpu/simd_decode.hpp"
#include "dsv4/numeric/row_codec.hpp"

namespace dsv4::cpu {

// scores[e] = kscale * sum_h g[h] * max(0, q[h, :] . key_e); see kernels/cpu/indexer_scores.hpp.
using IndexerFn = void (*)(const float* q, const float* g, int64_t nh, const RowCodec& codec, const uint8_t* keys,
                           int64_t n, float kscale, float* scores);

// Below this many multiply-adds (n * nh * ci) a call runs on one thread: ~1M, where a parallel
// region's start (a few microseconds) stops mattering.
inline constexpr int64_t kIndexerParallelMacs = int64_t(1) << 20;

// Everything per instance lives in this class template, so no helper is shared between
// translation units compiled with different -m flags.
template <class Arch, bool kBf16Dot>
struct IndexerKernel {
  using B = fbatch<Arch>;
  static constexpr int L = int(B::size);
  static constexpr bool kAvx512 = kIsAvx512<Arch>;
  static constexpr bool kAvx2 = kIsAvx2<Arch>;
  static_assert(!kBf16Dot || kAvx512, "the bf16-dot path is AVX-512 (AVX512_BF16) only");
  static constexpr int kKeys = 6;                    // keys per micro-kernel
  static constexpr int kHeadVecs = kAvx512 ? 4 : 2;  // head vectors per micro-kernel (16 ymm: 12 + 2 + 1)
  static constexpr int kBlock = 2 * kKeys;           // keys decoded per block: 12 x ci values
  static constexpr int kChunkBlocks = 8;             // at least this many blocks per unit of work (96 keys)
  static constexpr int kChunksPerThread = 8;         // else ~8 units per thread: long streams, still balanced

  // Aligned scratch that only grows (no allocation per call once grown, none per key block).
  struct Scratch {
    void* p = nullptr;
    size_t bytes = 0;
    Scratch() = default;
    Scratch(const Scratch&) = delete;
    Scratch& operator=(const Scratch&) = delete;
    ~Scratch() { ::operator delete(p, std::align_val_t(64)); }
    template <class T>
    T* get(size_t count) {
      const size_t want = (count * sizeof(T) + 63) / 64 * 64;
      if (want > bytes) {
        ::operator delete(p, std::align_val_t(64));
        p = ::operator new(want, std::align_val_t(64));
        bytes = want;
      }
      return static_cast<T*>(p);
    }
  };

  // ---- q packing --------------------------------------------------------------------------
  // Chunk c covers head vectors [c * kHeadVecs, c * kHeadVecs + wc); element (j, vector v, lane l)
  // of the chunk is at chunk_offset + (j * wc + v) * L + l. fp32: q values; bf16: dword (bf16 of
  // q[h, 2p], bf16 of q[h, 2p + 1] << 16) for pair p, with j = p.
  static int64_t head_vecs(int64_t nh) { return (nh + L - 1) / L; }
  static int64_t steps(int64_t ci) { return kBf16Dot ? (ci + 1) / 2 : ci; }

  static uint16_t to_bf16(float f) {  // round to nearest even (q is finite; NaN stays NaN)
    uint32_t u;
    std::memcpy(&u, &f, 4);
    if ((u & 0x7FFFFFFFu) > 0x7F800000u) return uint16_t((u >> 16) | 0x40);
    u += 0x7FFFu + ((u >> 16) & 1u);
    return uint16_t(u >> 16);
  }

  template <class T>
  static void pack_q(const float* q, int64_t nh, int64_t ci, T* out) {
    const int64_t nv = head_vecs(nh), st = steps(ci);
    if (nh % L != 0) std::fill(out, out + nv * L * st, T(0));  // padded heads
    for (int64_t c0 = 0; c0 < nv; c0 += kHeadVecs) {
      const int64_t wc = std::min<int64_t>(kHeadVecs, nv - c0);
      T* chunk = out + c0 * L * st;
      const int64_t h1 = std::min(nh, (c0 + wc) * L);
      int64_t hs = c0 * L;  // heads from here on are packed one by one
      if constexpr (kAvx512 || kAvx2) {
        // Whole vectors of real heads: one gather (stride ci) per vector and step.
        const int64_t full = std::min<int64_t>(wc, (nh - c0 * L) / L);
        for (int64_t v = 0; v < full; ++v) {
          const float* qv = q + (c0 + v) * L * ci;
          T* dst = chunk + v * L;
          if constexpr (kAvx512) {
            const __m512i idx = _mm512_mullo_epi32(
                _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15), _mm512_set1_epi32(int(ci)));
            if constexpr (kBf16Dot) {
              int64_t j = 0;
              for (; 2 * j + 1 < ci; ++j) {
                const __m512i lo =
                    _mm512_cvtepu16_epi32((__m256i)_mm512_cvtneps_pbh(_mm512_i32gather_ps(idx, qv + 2 * j, 4)));
                const __m512i hi =
                    _mm512_cvtepu16_epi32((__m256i)_mm512_cvtneps_pbh(_mm512_i32gather_ps(idx, qv + 2 * j + 1, 4)));
                _mm512_store_si512(dst + j * wc * L, _mm512_or_si512(lo, _mm512_slli_epi32(hi, 16)));
              }
              if (j < st)
                _mm512_store_si512(
                    dst + j * wc * L,
                    _mm512_cvtepu16_epi32((__m256i)_mm512_cvtneps_pbh(_mm512_i32gather_ps(idx, qv + 2 * j, 4))));
            } else {
              for (int64_t j = 0; j < ci; ++j) _mm512_store_ps(dst + j * wc * L, _mm512_i32gather_ps(idx, qv + j, 4));
            }
          } else {
            const __m256i idx =
                _mm256_mullo_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), _mm256_set1_epi32(int(ci)));
            for (int64_t j = 0; j < ci; ++j) _mm256_store_ps(dst + j * wc * L, _mm256_i32gather_ps(qv + j, idx, 4));
          }
        }
        hs = (c0 + full) * L;
      }
      // The rest head by head: contiguous reads, stores strided by the chunk's row (wc * L values).
      for (int64_t h = hs; h < h1; ++h) {
        const float* qh = q + h * ci;
        T* dst = chunk + (h - c0 * L);
        const int64_t stride = wc * L;
        if constexpr (kBf16Dot) {
          int64_t j = 0;
          for (; 2 * j + 1 < ci; ++j)
            dst[j * stride] = T(uint32_t(to_bf16(qh[2 * j])) | (uint32_t(to_bf16(qh[2 * j + 1])) << 16));
          if (j < st) dst[j * stride] = T(to_bf16(qh[2 * j]));  // odd ci: the missing element is zero
        } else {
          for (int64_t j = 0; j < ci; ++j) dst[j * stride] = qh[j];
        }
      }
    }
  }

  // ---- key decoding -----------------------------------------------------------------------
  static float fp4_scalar(const uint8_t* row, int64_t j, float scale) {
    const uint8_t b = row[j / 2];
    return kE2m1Values[(j & 1) ? (b >> 4) : (b & 0xF)] * scale;
  }
  static float e8m0(uint8_t s) {
    if (s == 255) return __builtin_nanf("");
    const uint32_t bits = s == 0 ? 0x00400000u : uint32_t(s) << 23;
    float f;
    std::memcpy(&f, &bits, 4);
    return f;
  }
  static uint32_t f32_bits(float f) {
    uint32_t u;
    std::memcpy(&u, &f, 4);
    return u;
  }

  // One row into fp32 [ci].
  static void decode_f32(const RowCodec& codec, const uint8_t* row, float* out) {
    const int64_t ci = codec.width;
    int64_t j = 0;
    if (codec.format == RowFormat::BF16) {
      if constexpr (kAvx512) {
        for (; j + 16 <= ci; j += 16) {
          const __m512i v = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(row + 2 * j)));
          _mm512_storeu_ps(out + j, _mm512_castsi512_ps(_mm512_slli_epi32(v, 16)));
        }
      } else if constexpr (kAvx2) {
        for (; j + 8 <= ci; j += 8) {
          const __m256i v = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(row + 2 * j)));
          _mm256_storeu_ps(out + j, _mm256_castsi256_ps(_mm256_slli_epi32(v, 16)));
        }
      }
      for (; j < ci; ++j) {
        uint16_t h;
        std::memcpy(&h, row + 2 * j, 2);
        const uint32_t bits = uint32_t(h) << 16;
        std::memcpy(out + j, &bits, 4);
      }
      return;
    }
    // Fp4: codes, then one E8M0 scale per 32.
    const uint8_t* scales = row + (ci + 1) / 2;
    if constexpr (kAvx512) {
      const __m512 table = _mm512_loadu_ps(kE2m1Values);
      for (; j + 32 <= ci; j += 32) {  // one whole group: 16 bytes
        const __m512 s = _mm512_set1_ps(e8m0(scales[j / 32]));
        const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(row + j / 2));
        const __m128i lo = _mm_and_si128(b, _mm_set1_epi8(0x0F));
        const __m128i hi = _mm_and_si128(_mm_srli_epi16(b, 4), _mm_set1_epi8(0x0F));
        const __m512i i0 = _mm512_cvtepu8_epi32(_mm_unpacklo_epi8(lo, hi));  // elements j..j+15
        const __m512i i1 = _mm512_cvtepu8_epi32(_mm_unpackhi_epi8(lo, hi));  // j+16..j+31
        _mm512_storeu_ps(out + j, _mm512_mul_ps(_mm512_permutexvar_ps(i0, table), s));
        _mm512_storeu_ps(out + j + 16, _mm512_mul_ps(_mm512_permutexvar_ps(i1, table), s));
      }
    } else if constexpr (kAvx2) {
      const __m256 magnitudes = _mm256_loadu_ps(kE2m1Values);
      for (; j + 32 <= ci; j += 32) {
        const __m256 s = _mm256_set1_ps(e8m0(scales[j / 32]));
        const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(row + j / 2));
        const __m128i lo = _mm_and_si128(b, _mm_set1_epi8(0x0F));
        const __m128i hi = _mm_and_si128(_mm_srli_epi16(b, 4), _mm_set1_epi8(0x0F));
        const __m128i c[2] = {_mm_unpacklo_epi8(lo, hi), _mm_unpackhi_epi8(lo, hi)};
        for (int part = 0; part < 4; ++part) {
          const __m128i src = c[part / 2];
          const __m256i idx = _mm256_cvtepu8_epi32(part % 2 ? _mm_srli_si128(src, 8) : src);
          const __m256 mag = _mm256_permutevar8x32_ps(magnitudes, idx);  // low 3 bits
          const __m256i sign = _mm256_slli_epi32(_mm256_and_si256(idx, _mm256_set1_epi32(8)), 28);
          _mm256_storeu_ps(out + j + 8 * part, _mm256_mul_ps(_mm256_xor_ps(mag, _mm256_castsi256_ps(sign)), s));
        }
      }
    }
    for (; j < ci; ++j) out[j] = fp4_scalar(row, j, e8m0(scales[j / 32]));
  }

  // One row into bf16 pairs [ceil(ci / 2)] (bf16-dot path; BF16 rows of odd width and FP4 rows).
  static void decode_pairs(const RowCodec& codec, const uint8_t* row, uint32_t* out) {
    const int64_t ci = codec.width, pairs = (ci + 1) / 2;
    if (codec.format == RowFormat::BF16) {
      std::memcpy(out, row, size_t(ci) * 2);
      if (ci & 1) out[pairs - 1] &= 0xFFFFu;  // the missing element is zero
      return;
    }
    const uint8_t* scales = row + (ci + 1) / 2;
    int64_t p = 0;
    if constexpr (kBf16Dot) {
      // Exact: an FP4 value times a power of two has at most 2 significant bits, so its bf16 is
      // the upper half of its fp32 bits.
      const __m512 table = _mm512_loadu_ps(kE2m1Values);
      for (; 2 * p + 32 <= ci; p += 16) {  // one group: 16 bytes -> 16 pairs
        const __m512 s = _mm512_set1_ps(e8m0(scales[p / 16]));
        const __m512i b = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(row + p)));
        const __m512i lo = _mm512_castps_si512(
            _mm512_mul_ps(_mm512_permutexvar_ps(_mm512_and_si512(b, _mm512_set1_epi32(0xF)), table), s));
        const __m512i hi = _mm512_castps_si512(_mm512_mul_ps(_mm512_permutexvar_ps(_mm512_srli_epi32(b, 4), table), s));
        // (hi & 0xFFFF0000) | (lo >> 16)
        _mm512_storeu_si512(out + p, _mm512_ternarylogic_epi32(hi, _mm512_srli_epi32(lo, 16),
                                                               _mm512_set1_epi32(int(0xFFFF0000u)), 0xE4));
      }
    }
    for (; p < pairs; ++p) {
      const float s = e8m0(scales[(2 * p) / 32]);
      const uint32_t lo = f32_bits(fp4_scalar(row, 2 * p, s)) >> 16;
      const uint32_t hi = 2 * p + 1 < ci ? f32_bits(fp4_scalar(row, 2 * p + 1, s)) >> 16 : 0u;
      out[p] = lo | (hi << 16);
    }
  }

  // ---- micro-kernels ----------------------------------------------------------------------
  // acc[e][v] = sum_j k_e[j] * qc[j, v]; then part[e] += sum over lanes of relu(acc) * g.
  // k[e]: fp32 key rows (or bf16 pair rows as uint32); qc: the packed chunk of HV head vectors.
  // pf, pf_lines: cache lines to prefetch meanwhile (the next keys when they are read in place), one
  // per step.
  template <int HV>
  static void micro(const void* const* k, const void* qc, const float* gc, int64_t st, float* part, const uint8_t* pf,
                    int64_t pf_lines) {
    if constexpr (kBf16Dot) {
      __m512 acc[kKeys][HV];
#pragma GCC unroll 8
      for (int e = 0; e < kKeys; ++e)
#pragma GCC unroll 4
        for (int v = 0; v < HV; ++v) acc[e][v] = _mm512_setzero_ps();
      const uint8_t* kp[kKeys];
      for (int e = 0; e < kKeys; ++e) kp[e] = static_cast<const uint8_t*>(k[e]);
      const __m512i* qp = static_cast<const __m512i*>(qc);
      for (int64_t j = 0; j < st; ++j) {
        if (j < pf_lines) _mm_prefetch(reinterpret_cast<const char*>(pf + 64 * j), _MM_HINT_T0);
        __m512bh qv[HV];
#pragma GCC unroll 4
        for (int v = 0; v < HV; ++v) qv[v] = (__m512bh)_mm512_load_si512(qp + j * HV + v);
#pragma GCC unroll 8
        for (int e = 0; e < kKeys; ++e) {
          uint32_t w;
          std::memcpy(&w, kp[e] + 4 * j, 4);
          const __m512bh kb = (__m512bh)_mm512_set1_epi32(int(w));
#pragma GCC unroll 4
          for (int v = 0; v < HV; ++v) acc[e][v] = _mm512_dpbf16_ps(acc[e][v], qv[v], kb);
        }
      }
      for (int e = 0; e < kKeys; ++e) {
        __m512 s = _mm512_setzero_ps();
        for (int v = 0; v < HV; ++v)
          s = _mm512_fmadd_ps(_mm512_max_ps(acc[e][v], _mm512_setzero_ps()), _mm512_load_ps(gc + v * L), s);
        part[e] += xsimd::hadd(B(s));
      }
    } else {
      B acc[kKeys][HV];
#pragma GCC unroll 8
      for (int e = 0; e < kKeys; ++e)
#pragma GCC unroll 4
        for (int v = 0; v < HV; ++v) acc[e][v] = B(0.f);
      const uint8_t* kp[kKeys];
      for (int e = 0; e < kKeys; ++e) kp[e] = static_cast<const uint8_t*>(k[e]);
      const float* qp = static_cast<const float*>(qc);
      for (int64_t j = 0; j < st; ++j) {
        if (j < pf_lines) _mm_prefetch(reinterpret_cast<const char*>(pf + 64 * j), _MM_HINT_T0);
        B qv[HV];
#pragma GCC unroll 4
        for (int v = 0; v < HV; ++v) qv[v] = B::load_aligned(qp + (j * HV + v) * L);
#pragma GCC unroll 8
        for (int e = 0; e < kKeys; ++e) {
          float x;
          std::memcpy(&x, kp[e] + 4 * j, 4);
          const B kb(x);
#pragma GCC unroll 4
          for (int v = 0; v < HV; ++v) acc[e][v] = xsimd::fma(kb, qv[v], acc[e][v]);
        }
      }
      for (int e = 0; e < kKeys; ++e) {
        B s(0.f);
        for (int v = 0; v < HV; ++v) s = xsimd::fma(xsimd::max(acc[e][v], B(0.f)), B::load_aligned(gc + v * L), s);
        part[e] += xsimd::hadd(s);
      }
    }
  }

  static void micro_any(int hv, const void* const* k, const void* qc, const float* gc, int64_t st, float* part,
                        const uint8_t* pf, int64_t pf_lines) {
    if constexpr (kHeadVecs == 4) {
      switch (hv) {
        case 4: return micro<4>(k, qc, gc, st, part, pf, pf_lines);
        case 3: return micro<3>(k, qc, gc, st, part, pf, pf_lines);
        case 2: return micro<2>(k, qc, gc, st, part, pf, pf_lines);
        default: return micro<1>(k, qc, gc, st, part, pf, pf_lines);
      }
    } else {
      if (hv == 2) return micro<2>(k, qc, gc, st, part, pf, pf_lines);
      return micro<1>(k, qc, gc, st, part, pf, pf_lines);
    }
  }

  // ---- driver -----------------------------------------------------------------------------
  static void run(const float* q, const float* g, int64_t nh, const RowCodec& codec, const uint8_t* keys, int64_t n,
                  float kscale, float* scores) {
    if (codec.format == RowFormat::Fp8Rope)
      fail("indexer_scores: keys stored as ", row_format_name(codec.format), " are not supported (f32, bf16, fp4)");
    if constexpr (kBf16Dot) {  // F32 keys keep fp32 numerics
      if (codec.format == RowFormat::F32)
        return IndexerKernel<Arch, false>::run(q, g, nh, codec, keys, n, kscale, scores);
    }
    if (n <= 0) return;
    const int64_t ci = codec.width, rb = codec.row_bytes();
    if (nh <= 0 || ci <= 0) {
      std::fill(scores, scores + n, 0.f);
      return;
    }
    const int64_t nv = head_vecs(nh), st = steps(ci);
    using QT = std::conditional_t<kBf16Dot, uint32_t, float>;
    using KT = QT;  // fp32 tile rows, or bf16 pair rows
    thread_local Scratch qbuf;
    QT* qp = qbuf.template get<QT>(size_t(nv * L * st + nv * L));
    float* gp = reinterpret_cast<float*>(qp + nv * L * st);
    pack_q(q, nh, ci, qp);
    for (int64_t h = 0; h < nv * L; ++h) gp[h] = h < nh ? g[h] : 0.f;
    // Keys read in place: F32 on the fp32 path, BF16 of even width on the bf16 path.
    const bool direct = kBf16Dot ? codec.format == RowFormat::BF16 && ci % 2 == 0 : codec.format == RowFormat::F32;
    const int threads = n * nh * ci >= kIndexerParallelMacs && n > kBlock * kChunkBlocks ? num_threads() : 1;
    // Chunks of blocks handed out dynamically: a thread that the OS (or a busy machine) holds back
    // does not hold the others up for a static share; ~8 per thread keep F32 rows streaming.
    const int64_t blocks = (n + kBlock - 1) / kBlock;
    const int64_t chunk_keys = kBlock * std::max<int64_t>(kChunkBlocks, blocks / (int64_t(threads) * kChunksPerThread));
    const int64_t chunks = (n + chunk_keys - 1) / chunk_keys;
#pragma omp parallel num_threads(threads) if (threads > 1)
    {
      thread_local Scratch tbuf;
      KT* tile = direct ? nullptr : tbuf.template get<KT>(size_t(kBlock * st));
#pragma omp for schedule(dynamic, 1)
      for (int64_t c = 0; c < chunks; ++c) {
        const int64_t e_begin = c * chunk_keys, e_end = std::min(n, e_begin + chunk_keys);
        for (int64_t b0 = e_begin; b0 < e_end; b0 += kBlock) {
          const int64_t b1 = std::min(e_end, b0 + kBlock), bn = b1 - b0;
          if (!direct)
            for (int64_t e = 0; e < bn; ++e) {
              if constexpr (kBf16Dot)
                decode_pairs(codec, keys + (b0 + e) * rb, tile + e * st);
              else
                decode_f32(codec, keys + (b0 + e) * rb, reinterpret_cast<float*>(tile) + e * st);
            }
          float part[kBlock] = {};
          for (int64_t c0 = 0; c0 < nv; c0 += kHeadVecs) {
            const int hv = int(std::min<int64_t>(kHeadVecs, nv - c0));
            const QT* qc = qp + c0 * L * st;
            for (int64_t t0 = 0; t0 < bn; t0 += kKeys) {
              const void* k[kKeys];
              for (int e = 0; e < kKeys; ++e) {
                const int64_t ee = std::min<int64_t>(t0 + e, bn - 1);  // past the end: repeat the last key
                k[e] =
                    direct ? static_cast<const void*>(keys + (b0 + ee) * rb) : static_cast<const void*>(tile + ee * st);
              }
              // Meanwhile fetch the rows used next (within this chunk): read in place, those of the
              // next micro-kernel; decoded, this micro-kernel's share of the next block.
              const int64_t next = b0 + t0 + (direct ? kKeys : kBlock), ahead = std::min<int64_t>(e_end - next, kKeys);
              const int64_t pf_lines = c0 == 0 && ahead > 0 ? (ahead * rb + 63) / 64 : 0;
              const uint8_t* pf = pf_lines > 0 ? keys + next * rb : keys;
              micro_any(hv, k, qc, gp + c0 * L, st, part + t0, pf, pf_lines);
            }
          }
          for (int64_t e = 0; e < bn; ++e) scores[b0 + e] = part[e] * kscale;
        }
      }
    }
  }
};

// The SIMD instance for an xsimd architecture; kBf16Dot: vdpbf16ps for BF16 / FP4 keys
// (AVX512_BF16; F32 keys still take fp32 FMA).
template <class Arch, bool kBf16Dot = false>
void simd_indexer_scores(const float* q, const float* g, int64_t nh, const RowCodec& codec, const uint8_t* keys,
                         int64_t n, float kscale, float* scores) {
  IndexerKernel<Arch, kBf16Dot>::run(q, g, nh, codec, keys, n, kscale, scores);
}

}  // namespace dsv4::cpu
