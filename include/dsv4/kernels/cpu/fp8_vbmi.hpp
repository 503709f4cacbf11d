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
// Alignment. Checkpoint tensors start wherever the file puts them (8-byte aligned at best), and a
// 64-byte load that spans two cache lines cost a fifth of the rate from DRAM (one core, FP8 8192×4096,
// Zen 5: 12.0-12.3 GB/s at 16 mod 64 against 14.7-15.2 aligned; this grid at 56 mod 64: 22.5-24.0). So where every row starts at the same
// offset (K a multiple of 64) the chunks are aligned to the weights' addresses, not to column 0:
// a row's first and last chunk are loaded with a byte mask (no split line, nothing read outside
// the row), and the activations are laid out on the same shifted grid, zero where no column is.
//
// Scales. One tile's scale covers bm rows × bn columns, so for the rows of one tile row the
// activations are multiplied by their columns' scales once (E8M0 scales: powers of two, the
// products are the reference's); the inner loop is then a weight load, the decode and the FMAs.
#include <immintrin.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <numeric>
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

// fp8_chunk_column as a table: the per-call permutation of the activations is an indexed copy.
struct Fp8ChunkColumns {
  int32_t at[64];
  constexpr Fp8ChunkColumns() : at{} {
    for (int p = 0; p < 64; ++p) at[p] = fp8_chunk_column(p);
  }
};
inline constexpr Fp8ChunkColumns kFp8ChunkColumns{};

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

// Permuted activations, pre-multiplied by 2^8 · tile scale: scaled [T, kc] for one tile row.
// perm [T, kc] holds x permuted onto the grid (once per call), 0 where a position has no column;
// on the unaligned grid the tail columns past the last whole chunk stay with the caller's x.
struct Fp8Activations {
  std::vector<float> perm, scaled, column_scale, tile_scale;
  // Shifted grid or tiles not whole chunks: each grid position's tile (its tile column), built when
  // the grid changes (a division per position: rebuilt per call it cost over a quarter of a 1 MiB
  // matrix's time in cache); the last tile_scale entry is 0, for positions with no column.
  std::vector<int32_t> tile_of;
  std::array<int64_t, 3> tile_of_grid{-1, -1, -1};  // the {K, lead, bn} tile_of was built for
  int64_t t = 0, kc = 0;  // tokens, grid columns in whole chunks
  int64_t lead = 0;       // grid columns before column 0: the rows' start address mod 64, or 0
  int64_t tile_row = -1;  // the tile row `scaled` holds, -1: none
  bool finite = true;     // every scale of that tile row is finite once multiplied by 2^8

  // Column of grid position v (v - lead, permuted within its chunk), -1 where there is none.
  int64_t column(int64_t v, int64_t k) const {
    const int64_t j = v / 64 * 64 + kFp8ChunkColumns.at[v % 64] - lead;
    return j >= 0 && j < k ? j : -1;
  }
  // Whether each tile's scale covers whole chunks of the grid (filled per tile, no tile_of).
  static bool tiles_fill_chunks(const Fp8BlockMatrix& m, int64_t lead) { return m.bn % 64 == 0 && lead == 0; }
};

#if defined(DSV4_HAVE_VBMI_KERNELS)

// Decodes 64 E4M3 bytes at p into four vectors, 2^-8 · value, in fp8_chunk_column order.
struct Fp8Decoder {
  __m512i hi0, hi1, lo0, lo1, sign, top;
  DSV4_TARGET_VBMI explicit Fp8Decoder(const Fp8ByteTables& t)
      : hi0(_mm512_load_si512(t.hi)), hi1(_mm512_load_si512(t.hi + 64)), lo0(_mm512_load_si512(t.lo)),
        lo1(_mm512_load_si512(t.lo + 64)), sign(_mm512_set1_epi8(char(0x80))), top(_mm512_set1_epi32(int(0xFFFF0000))) {}
  // Bytes outside `valid` read as 0 (+0.0) and are not touched in memory.
  DSV4_TARGET_VBMI void operator()(const uint8_t* p, __mmask64 valid, __m512 (&v)[4]) const {
    const __m512i b = _mm512_maskz_loadu_epi8(valid, p);
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

// K tiles. At T tokens a row's pass reads T · 64 floats of activations per 64 weight bytes, so
// they must come from L1: over the whole of K (8192 columns × 8 tokens = 256 KiB) they came from
// L2, which at 8 tokens bounded the kernel at a quarter of its FMA rate (bench_kernels, 4-5 GB/s).
// So K is cut into tiles of kFp8TileBytes of activations; a group of kFp8GroupRows rows passes
// over one tile after the other, its accumulators parked in memory (a store and a load per
// accumulator per tile) between tiles.
inline constexpr int64_t kFp8TileBytes = 16384;
inline constexpr int kFp8GroupRows = 32;

// The tile width in grid columns for kc of them (4 bytes of activations a column and token). One
// token: rows streamed start to end up to 1.5 tiles of kFp8TileBytes, longer rows in equal tiles of
// at most one (4096 columns), so the activations stay in L1 beside the weight stream.
// bench_kernels, one thread, AMD EPYC Zen 5 VM (48 KiB L1), 4096x8192: 12.0 GB/s streamed whole
// against 24.0 in two tiles in one sitting (alternating twice; L1 presumably shared with a busy
// sibling thread), 27.7 against 25.0 in a later one; two threads 35.5 / 36.5 either way.
template <int TT>
constexpr int64_t fp8_tile_cols(int64_t kc) {
  if (TT == 1) {
    constexpr int64_t most = kFp8TileBytes / 4;
    if (2 * kc <= 3 * most) return kc;
    const int64_t tiles = (kc + most - 1) / most;
    return (kc / 64 + tiles - 1) / tiles * 64;
  }
  return std::max<int64_t>(64, kFp8TileBytes / (4 * TT) / 64 * 64);
}

// Shape of one pass: R rows share each activation load; kAcc independent FMA chains per row and
// token so that R · TT · kAcc >= 4 chains of two FMAs per chunk cover the FMA latency. Two rows
// also at one token (one row, four chains: 12.4-12.8 against 13.8 GB/s on one core at 8192×4096,
// 11.3-11.9 against 13.1-13.2 at 4096×8192, 12.2-12.9 against 12.0-12.1 at 32768×1024).
template <int TT>
struct Fp8PassShape {
  static constexpr int R = 2;
  static constexpr int kAcc = TT <= 2 ? 2 : 1;
};

// acc [R][TT][kAcc] += rows' grid columns [c0, c1) (whole chunks) · TT tokens of xs [TT, ldxs];
// row[r]: the row's grid column 0; head / tail: the bytes of the first / last chunk (grid column
// ldxs - 64) that belong to the row. pf[r]: the segment the pass after the next one reads,
// prefetched as this one goes.
template <int TT, int R, int kAcc>
DSV4_TARGET_VBMI inline void fp8_vbmi_pass(const uint8_t* const (&row)[R], const uint8_t* const (&pf)[R],
                                           const Fp8Decoder& dec, const float* xs, int64_t ldxs, int64_t c0,
                                           int64_t c1, __mmask64 head, __mmask64 tail, __m512* acc, bool first) {
  __m512 a[R][TT][kAcc];
  for (int r = 0; r < R; ++r)
    for (int t = 0; t < TT; ++t)
      for (int i = 0; i < kAcc; ++i)
        a[r][t][i] = first ? _mm512_setzero_ps() : _mm512_load_ps(acc + (r * TT + t) * kAcc + i);
  for (int64_t c = c0; c < c1; c += 64) {
    const __mmask64 valid = (c == 0 ? head : ~__mmask64(0)) & (c + 64 == ldxs ? tail : ~__mmask64(0));
    __m512 v[R][4];
    for (int r = 0; r < R; ++r) {
      _mm_prefetch(reinterpret_cast<const char*>(pf[r] + (c - c0)), _MM_HINT_T0);
      dec(row[r] + c, valid, v[r]);
    }
    for (int t = 0; t < TT; ++t)
      for (int i = 0; i < 4; ++i) {
        const __m512 xv = _mm512_loadu_ps(xs + t * ldxs + c + 16 * i);
        for (int r = 0; r < R; ++r) a[r][t][i % kAcc] = _mm512_fmadd_ps(v[r][i], xv, a[r][t][i % kAcc]);
      }
  }
  for (int r = 0; r < R; ++r)
    for (int t = 0; t < TT; ++t)
      for (int i = 0; i < kAcc; ++i) _mm512_store_ps(reinterpret_cast<float*>(acc + (r * TT + t) * kAcc + i), a[r][t][i]);
}

// Rows [n0, n1) (one tile row, prepared in a.scaled) · TT tokens t0.. of a.scaled, plus the tail
// columns from x: y[t * ldy + (n - out0)].
template <int TT>
DSV4_TARGET_VBMI inline void fp8_vbmi_rows(const Fp8BlockMatrix& m, const Fp8Decoder& dec, const Fp8Activations& a,
                                           int64_t t0, const float* x, int64_t ldx, int64_t n0, int64_t n1, float* y,
                                           int64_t ldy, int64_t out0) {
  using P = Fp8PassShape<TT>;
  constexpr int R = P::R, kAcc = P::kAcc;
  const int64_t K = m.k, kc = a.kc, lead = a.lead, tile = fp8_tile_cols<TT>(a.kc);
  // Bytes of a row in its last chunk, 1..64 (on the unaligned grid the last chunk is whole).
  const int64_t last = lead > 0 ? K + lead - (kc - 64) : 64;
  const __mmask64 head = ~__mmask64(0) << lead, tail = last == 64 ? ~__mmask64(0) : (__mmask64(1) << last) - 1;
  // Grid column 0 of row n, lead bytes before the row (never read: those bytes are masked).
  const auto grid_row = [&](int64_t n) {
    return reinterpret_cast<const uint8_t*>(reinterpret_cast<uintptr_t>(m.q + n * K) - uintptr_t(lead));
  };
  // Prefetch the passes kFp8VbmiPrefetchBytes of weights ahead (at least the next one).
  const int64_t ahead_rows = R * std::max<int64_t>(1, kFp8VbmiPrefetchBytes / (R * std::min(tile, kc)));
  const float* xs = a.scaled.data() + t0 * kc;
  alignas(64) __m512 buf[kFp8GroupRows + R][TT][kAcc];  // a group's accumulators between tiles
  for (int64_t g = n0; g < n1; g += kFp8GroupRows) {
    const int64_t g1 = std::min(n1, g + kFp8GroupRows);
    for (int64_t k0 = 0; k0 < kc; k0 += tile) {
      const int64_t k1 = std::min(kc, k0 + tile);
      for (int64_t n = g; n < g1; n += R) {
        const int nr = int(std::min<int64_t>(R, g1 - n));
        // The segment read ahead_rows later: further rows of this tile, else the next tile's
        // (or the next group's) first rows.
        const int64_t ahead = n + ahead_rows;
        const int64_t pn = ahead < g1 ? ahead : k1 < kc ? g + (ahead - g1) : ahead;
        const int64_t pc = ahead < g1 ? k0 : k1 < kc ? k1 : 0;
        const uint8_t* row[R];
        const uint8_t* pf[R];
        for (int r = 0; r < R; ++r) {
          row[r] = grid_row(n + std::min(r, nr - 1));  // missing rows repeat the last
          pf[r] = grid_row(pn + r) + pc;              // a prefetch past the matrix does not fault
        }
        fp8_vbmi_pass<TT, R, kAcc>(row, pf, dec, xs, kc, k0, k1, head, tail, &buf[n - g][0][0], k0 == 0);
      }
    }
    for (int64_t n = g; n < g1; ++n)
      for (int t = 0; t < TT; ++t) {
        __m512 s = buf[n - g][t][0];
        for (int i = 1; i < kAcc; ++i) s = _mm512_add_ps(s, buf[n - g][t][i]);
        float sum = _mm512_reduce_add_ps(s);
        const uint8_t* row = m.q + n * K;
        for (int64_t j = kc - lead; j < K; ++j)  // unaligned grid (lead 0): the last K % 64 columns
          sum += e4m3_to_f32(row[j]) * m.block_scale(n / m.bm, j / m.bn) * x[(t0 + t) * ldx + j];
        y[t * ldy + (n - out0)] = sum;
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
  if (Fp8Activations::tiles_fill_chunks(m, a.lead)) {
    for (int64_t b = 0; b * m.bn < a.kc; ++b) {
      const float s = m.block_scale(tr, b) * 256.0f;
      a.finite &= std::isfinite(s);
      std::fill(cs + b * m.bn, cs + std::min(a.kc, (b + 1) * m.bn), s);
    }
  } else {  // a scale per tile, then one lookup per position (a scale per position cost as much as the weights)
    const int64_t tiles = (m.k + m.bn - 1) / m.bn;
    a.tile_scale.resize(size_t(tiles + 1));
    for (int64_t b = 0; b < tiles; ++b) {
      a.tile_scale[size_t(b)] = m.block_scale(tr, b) * 256.0f;
      a.finite &= std::isfinite(a.tile_scale[size_t(b)]);
    }
    a.tile_scale[size_t(tiles)] = 0.0f;
    const float* ts = a.tile_scale.data();
    const int32_t* of = a.tile_of.data();
    for (int64_t v = 0; v < a.kc; ++v) cs[v] = ts[of[v]];
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
  const int64_t K = m.k, rows = row1 - row0;
  // The grid (see Alignment): aligned to the rows' addresses where they share one offset.
  const int64_t lead = K % 64 == 0 ? int64_t(reinterpret_cast<uintptr_t>(m.q) % 64) : 0;
  const int64_t kc = lead > 0 ? (K + lead + 63) / 64 * 64 : K / 64 * 64;
  const int threads = rows * K * T > (1 << 15) ? num_threads() : 1;
  // Rows are handed out in pieces as threads become free (a static half each left one thread
  // idle whenever the other was slowed, which on a shared VM is often). A piece stays within one
  // tile row, about 8 pieces per thread (whole tile rows where there are enough, else gcd(bm, 64)
  // rows): larger pieces would leave less to balance, smaller ones start more streams cold.
  const int64_t tile_rows = (rows + m.bm - 1) / m.bm;
  const int64_t piece = tile_rows >= 8 * threads ? m.bm * (tile_rows / (8 * threads)) : std::gcd<int64_t>(m.bm, 64);
  const int64_t first = row0 / piece, pieces = (row1 - 1) / piece - first + 1;
#pragma omp parallel num_threads(threads) if (threads > 1)
  {
    thread_local Fp8Activations a;  // per thread, reused: no allocation per call once grown
    a.t = T, a.kc = kc, a.lead = lead, a.tile_row = -1;
    a.perm.resize(size_t(T * kc));
    for (int64_t t = 0; t < T; ++t)
      for (int64_t v = 0; v < kc; ++v) {
        const int64_t j = a.column(v, K);
        a.perm[size_t(t * kc + v)] = j >= 0 ? x[t * ldx + j] : 0.0f;
      }
    const std::array<int64_t, 3> grid{K, lead, m.bn};
    if (!Fp8Activations::tiles_fill_chunks(m, lead) && a.tile_of_grid != grid) {
      a.tile_of_grid = grid;
      const int64_t none = (K + m.bn - 1) / m.bn;  // the zero entry of tile_scale
      a.tile_of.resize(size_t(kc));
      for (int64_t v = 0; v < kc; ++v) {
        const int64_t j = a.column(v, K);
        a.tile_of[size_t(v)] = int32_t(j >= 0 ? j / m.bn : none);
      }
    }
    const Fp8Decoder dec(fp8_byte_tables());
#pragma omp for schedule(dynamic, 1)
    for (int64_t u = first; u < first + pieces; ++u) {
      const int64_t n = std::max(row0, u * piece), n1 = std::min(row1, (u + 1) * piece);
      fp8_scale_activations(m, a, n / m.bm);
      if (!a.finite) {
        slow_rows(n, n1);
        continue;
      }
      for (int64_t t0 = 0; t0 < T; t0 += TT) {
        float* yt = y + t0 * ldy;
        switch (int(std::min<int64_t>(TT, T - t0))) {  // tokens as a compile-time count
          case 1: fp8_vbmi_rows<1>(m, dec, a, t0, x, ldx, n, n1, yt, ldy, row0); break;
          case 2: fp8_vbmi_rows<2>(m, dec, a, t0, x, ldx, n, n1, yt, ldy, row0); break;
          case 3: fp8_vbmi_rows<3>(m, dec, a, t0, x, ldx, n, n1, yt, ldy, row0); break;
          case 4: fp8_vbmi_rows<4>(m, dec, a, t0, x, ldx, n, n1, yt, ldy, row0); break;
          case 5: fp8_vbmi_rows<5>(m, dec, a, t0, x, ldx, n, n1, yt, ldy, row0); break;
          case 6: fp8_vbmi_rows<6>(m, dec, a, t0, x, ldx, n, n1, yt, ldy, row0); break;
          case 7: fp8_vbmi_rows<7>(m, dec, a, t0, x, ldx, n, n1, yt, ldy, row0); break;
          default: fp8_vbmi_rows<8>(m, dec, a, t0, x, ldx, n, n1, yt, ldy, row0); break;
        }
      }
    }
  }
}

#endif  // DSV4_HAVE_VBMI_KERNELS

}  // namespace dsv4::cpu
