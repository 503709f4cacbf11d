#pragma once
// y [T, rows] = x [T, K] · W^T for block FP8 (E4M3 + per-tile scale) at few tokens, on AVX-512
// with VBMI (Ice Lake and later), where the decode — not memory — bounded the GEMV.
//
// Decode. Every E4M3 value, subnormals included, is exactly a bf16. Two 128-entry byte tables
// (vpermt2b, indexed by the code's low 7 bits) give the high and low byte of the bf16 of
// 2^-8 · |value| (the 2^-8 of simd_decode.hpp's convention); one ternary-logic op copies the sign
// bit; byte unpacks pair low and high bytes into bf16 words and a shift / a mask puts each word
// in the top half of an fp32 lane. Per 64 weights: 9 vector uops, 13 with the FMAs at one token,
// against 24 for the binary16 route (vpmovsxbw, shift, mask and a 2-uop vcvtph2ps per 16).
// NaN codes decode to NaN, as in the reference.
//
// Order. The unpacks work within 128-bit lanes, so a chunk of 64 columns comes out permuted
// (fp8_chunk_column); the activations are permuted the same way once per call instead.
//
// Scales. One tile's scale covers bm rows × bn columns, so for the rows of one tile row the
// activations are multiplied by their columns' scales once (E8M0 scales: powers of two, the
// products are the reference's); the inner loop is then a weight load, the decode and the FMAs.
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "dsv4/core/parallel.hpp"
#include "dsv4/kernels/cpu/vbmi.hpp"
#include "dsv4/numeric/e4m3.hpp"
#include "dsv4/quant/schemes.hpp"

namespace dsv4::cpu {

// Column (within its chunk of 64) of permuted position p = 16·v + j: vector v of the decode, lane j.
constexpr int fp8_chunk_column(int p) {
  const int v = p / 16, j = p % 16;
  return 16 * (j / 4) + 8 * (v / 2) + 2 * (j % 4) + (v & 1);
}

// Whether this kernel takes the matrix: at least one whole chunk of 64 columns per row.
inline bool fp8_vbmi_applies(const Fp8BlockMatrix& m) { return m.k >= 64; }

// The two byte tables: bf16 bits of 2^-8 · e4m3(code), code in 0..127 (127: NaN).
struct Fp8ByteTables {
  alignas(64) uint8_t hi[128];
  alignas(64) uint8_t lo[128];
  Fp8ByteTables() {
    for (int c = 0; c < 128; ++c) {
      const float f = c == 127 ? std::numeric_limits<float>::quiet_NaN() : e4m3_to_f32(uint8_t(c)) / 256.0f;
      uint32_t b;
      std::memcpy(&b, &f, 4);
      hi[c] = uint8_t(b >> 24), lo[c] = uint8_t(b >> 16);  // exact: the low 16 bits are 0
    }
  }
};
inline const Fp8ByteTables& fp8_byte_tables() {
  static const Fp8ByteTables t;
  return t;
}

// Permuted activations, pre-multiplied by 2^8 · tile scale: xs [T, chunks · 64] for one tile row.
// perm [T, chunks · 64] holds x permuted (once per call); the tail columns past the last whole
// chunk stay with the caller's x.
struct Fp8Activations {
  std::vector<float> perm, scaled, column_scale;
  int64_t t = 0, kc = 0;  // tokens, columns in whole chunks
  int64_t tile_row = -1;  // the tile row `scaled` holds, -1: none
  bool finite = true;     // every scale of that tile row is finite once multiplied by 2^8
};

#if defined(DSV4_HAVE_VBMI_KERNELS)

// Decodes 64 E4M3 bytes at p into four vectors, 2^-8 · value, in fp8_chunk_column order.
struct Fp8Decoder {
  __m512i hi0, hi1, lo0, lo1, sign, top;
  DSV4_TARGET_VBMI explicit Fp8Decoder(const Fp8ByteTables& t)
      : hi0(_mm512_load_si512(t.hi)), hi1(_mm512_load_si512(t.hi + 64)), lo0(_mm512_load_si512(t.lo)),
        lo1(_mm512_load_si512(t.lo + 64)), sign(_mm512_set1_epi8(char(0x80))), top(_mm512_set1_epi32(int(0xFFFF0000))) {}
  DSV4_TARGET_VBMI void operator()(const uint8_t* p, __m512 (&v)[4]) const {
    const __m512i b = _mm512_loadu_si512(p);
    __m512i h = _mm512_permutex2var_epi8(hi0, b, hi1);
    const __m512i l = _mm512_permutex2var_epi8(lo0, b, lo1);
    h = _mm512_ternarylogic_epi32(h, b, sign, 0xD8);  // sign ? b : h, bitwise
    const __m512i w0 = _mm512_unpacklo_epi8(l, h), w1 = _mm512_unpackhi_epi8(l, h);
    v[0] = _mm512_castsi512_ps(_mm512_slli_epi32(w0, 16));
    v[1] = _mm512_castsi512_ps(_mm512_and_si512(w0, top));
    v[2] = _mm512_castsi512_ps(_mm512_slli_epi32(w1, 16));
    v[3] = _mm512_castsi512_ps(_mm512_and_si512(w1, top));
  }
};

// Software prefetch distance of the weight stream (bench_kernels, 2 cores, two alternating runs:
// 4 KiB 15.0-17.7 GB/s, 2 KiB 14.1-17.8; within the VM's noise, 4 KiB as for FP4).
inline constexpr int64_t kFp8VbmiPrefetchBytes = 4096;

// Rows [n0, n1) · x for nt <= TT tokens of a.scaled (tile row of n0..n1-1 already prepared),
// plus the tail columns from x. y[t * ldy + (n - out0)]. R rows per pass share each activation
// load: at 8 tokens one row would need 32 activation loads per 64 weight bytes, as many as the
// load ports take in the 16 cycles of its 32 FMAs.
template <int TT, int R>
DSV4_TARGET_VBMI inline void fp8_vbmi_rows(const Fp8BlockMatrix& m, const Fp8Decoder& dec, const Fp8Activations& a,
                                           int64_t t0, int nt, const float* x, int64_t ldx, int64_t n0, int64_t n1,
                                           float* y, int64_t ldy, int64_t out0) {
  constexpr int kAcc = TT == 1 ? 4 : 1;  // independent chains per row and token
  const int64_t K = m.k, kc = a.kc;
  for (int64_t n = n0; n < n1; n += R) {
    const int nr = int(std::min<int64_t>(R, n1 - n));
    const uint8_t* row[R];
    for (int r = 0; r < R; ++r) row[r] = m.q + (n + std::min(r, nr - 1)) * K;  // missing rows repeat the last
    __m512 acc[R][TT][kAcc];
    for (int r = 0; r < R; ++r)
      for (int t = 0; t < TT; ++t)
        for (int i = 0; i < kAcc; ++i) acc[r][t][i] = _mm512_setzero_ps();
    for (int64_t c = 0; c < kc; c += 64) {
      __m512 v[R][4];
      for (int r = 0; r < R; ++r) {
        _mm_prefetch(reinterpret_cast<const char*>(row[r] + c + kFp8VbmiPrefetchBytes), _MM_HINT_T0);
        dec(row[r] + c, v[r]);
      }
      for (int t = 0; t < TT; ++t) {
        if (t >= nt) break;
        const float* xs = a.scaled.data() + (t0 + t) * kc + c;
        for (int i = 0; i < 4; ++i) {
          const __m512 xv = _mm512_loadu_ps(xs + 16 * i);
          for (int r = 0; r < R; ++r) acc[r][t][i % kAcc] = _mm512_fmadd_ps(v[r][i], xv, acc[r][t][i % kAcc]);
        }
      }
    }
    for (int r = 0; r < nr; ++r)
      for (int t = 0; t < nt; ++t) {
        __m512 s = acc[r][t][0];
        for (int i = 1; i < kAcc; ++i) s = _mm512_add_ps(s, acc[r][t][i]);
        float sum = _mm512_reduce_add_ps(s);
        for (int64_t j = kc; j < K; ++j)  // tail: fewer than 64 columns
          sum += e4m3_to_f32(row[r][j]) * m.block_scale((n + r) / m.bm, j / m.bn) * x[(t0 + t) * ldx + j];
        y[t * ldy + (n + r - out0)] = sum;
      }
  }
}

// a.scaled for tile row tr: a.perm times 2^8 · the scale of each column's tile (any tile width:
// a chunk may span tiles). Once per tile row (bm rows): a few thousand operations against the
// row's hundreds of kilobytes of weights, so no division or scale lookup per column where the
// tiles are whole chunks.
inline void fp8_scale_activations(const Fp8BlockMatrix& m, Fp8Activations& a, int64_t tr) {
  if (a.tile_row == tr) return;
  a.tile_row = tr, a.finite = true;
  a.scaled.resize(size_t(a.t * a.kc));
  a.column_scale.resize(size_t(a.kc));
  float* cs = a.column_scale.data();
  if (m.bn % 64 == 0) {
    for (int64_t b = 0; b * m.bn < a.kc; ++b) {
      const float s = m.block_scale(tr, b) * 256.0f;
      a.finite &= std::isfinite(s);
      std::fill(cs + b * m.bn, cs + std::min(a.kc, (b + 1) * m.bn), s);
    }
  } else {
    for (int64_t c = 0; c < a.kc; c += 64)
      for (int p = 0; p < 64; ++p) {
        const float s = m.block_scale(tr, (c + fp8_chunk_column(p)) / m.bn) * 256.0f;
        a.finite &= std::isfinite(s);
        cs[c + p] = s;
      }
  }
  for (int64_t t = 0; t < a.t; ++t) {
    const float* src = a.perm.data() + t * a.kc;
    float* dst = a.scaled.data() + t * a.kc;
    for (int64_t j = 0; j < a.kc; ++j) dst[j] = src[j] * cs[j];
  }
}

// y[t, n - row0] for rows [row0, row1), t < T tokens (T small: each weight is decoded once per 8
// tokens). `slow_rows(n0, n1)` computes rows whose tile has a scale that overflows once multiplied
// by 2^8 (the caller's exact path).
template <class SlowRows>
void fp8_vbmi_matmul(const Fp8BlockMatrix& m, const float* x, int64_t ldx, int64_t T, float* y, int64_t ldy,
                     int64_t row0, int64_t row1, SlowRows&& slow_rows) {
  constexpr int TT = 8;
  const int64_t K = m.k, kc = K / 64 * 64, rows = row1 - row0;
  const int threads = rows * K * T > (1 << 15) ? num_threads() : 1;
#pragma omp parallel num_threads(threads) if (threads > 1)
  {
    int64_t nthreads = 1, me = 0;
#if defined(_OPENMP)
    nthreads = omp_get_num_threads(), me = omp_get_thread_num();
#endif
    thread_local Fp8Activations a;  // per thread, reused: no allocation per call once grown
    a.t = T, a.kc = kc, a.tile_row = -1;
    a.perm.resize(size_t(T * kc));
    for (int64_t t = 0; t < T; ++t)
      for (int64_t c = 0; c < kc; c += 64)
        for (int p = 0; p < 64; ++p) a.perm[size_t(t * kc + c + p)] = x[t * ldx + c + fp8_chunk_column(p)];
    const Fp8Decoder dec(fp8_byte_tables());
    const int64_t n_begin = row0 + rows * me / nthreads, n_end = row0 + rows * (me + 1) / nthreads;
    for (int64_t n = n_begin; n < n_end;) {
      const int64_t tr = n / m.bm, n1 = std::min(n_end, (tr + 1) * m.bm);
      fp8_scale_activations(m, a, tr);
      if (!a.finite) {
        slow_rows(n, n1);
      } else {
        for (int64_t t0 = 0; t0 < T; t0 += TT) {
          const int nt = int(std::min<int64_t>(TT, T - t0));
          if (nt == 1)
            fp8_vbmi_rows<1, 1>(m, dec, a, t0, 1, x, ldx, n, n1, y + t0 * ldy, ldy, row0);
          else
            fp8_vbmi_rows<TT, 2>(m, dec, a, t0, nt, x, ldx, n, n1, y + t0 * ldy, ldy, row0);
        }
      }
      n = n1;
    }
  }
}

#endif  // DSV4_HAVE_VBMI_KERNELS

}  // namespace dsv4::cpu
