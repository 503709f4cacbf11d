#pragma once
// The integer FP4 kernel at one token with fewer instructions per weight byte, for AVX-512 with
// VBMI and GFNI (vbmi.hpp): fp4_integer.hpp's integer products and rounding, summed over two
// accumulators.
//
// Per chunk of 64 packed bytes (128 weights, 4 groups) fp4_integer.hpp's loop spends 16 vector
// ops, 7 of them on port 0 (four vpdpbusd, the nibble shift, the scale shift, the int->float
// conversion) and ~12 scalar ops on addresses: about 10 cycles, which at the VM's ~2.6 GHz is
// ~16 GB/s a core, not enough headroom over a 2-core memory bandwidth of that order. Here:
// - low nibbles: vpermb indexes a 64-entry table with bits 0-5 (the table repeats every 16), so
//   no mask; high nibbles: one gf2p8affineqb shifts each byte right by 4 (ports 0 or 5) for the
//   byte shuffle, instead of a port-0 shift and a mask;
// - weight scales for four chunks at once: 16 E8M0 bytes zero-extended and shifted to exponents
//   once, then one vpermd per chunk replicates each group's scale over its four lanes;
// - pointers advance by constants; two accumulators.
// 13.5 vector ops per chunk, 5.25 of them port-0 only.
#include <immintrin.h>

#include <algorithm>
#include <cstdint>

#include "dsv4/kernels/cpu/fp4_integer.hpp"
#include "dsv4/kernels/cpu/vbmi.hpp"

namespace dsv4::cpu {

#if defined(DSV4_HAVE_VBMI_KERNELS) && defined(__AVX512F__) && defined(__AVX512BW__)

// 64-entry vpermb table: entry i is kFp4U8[i % 16].
struct Fp4PermTable {
  alignas(64) int8_t v[64];
  constexpr Fp4PermTable() : v{} {
    for (int i = 0; i < 64; ++i) v[i] = kFp4U8[i % 16];
  }
};
inline constexpr Fp4PermTable kFp4Perm64{};

// One chunk's products added to acc[r] for R rows sharing the activations: packed weights, their
// lane scales; the activation pointers advance to the next chunk.
template <bool kVnni, int R>
struct Fp4VbmiChunk {
  __m512i perm, lut, shift4;
  const int8_t* q;  // per chunk: 128 high-plane bytes, then 128 low-plane ones
  const int32_t* bias;
  const float* xs;
  DSV4_TARGET_VBMI void operator()(const __m512i (&packed)[R], const __m512 (&ws)[R], __m512 (&acc)[R]) {
    const __m512i b = _mm512_loadu_si512(bias);
    const __m512 x = _mm512_loadu_ps(xs);
    for (int r = 0; r < R; ++r) {
      const __m512i lo = _mm512_permutexvar_epi8(packed[r], perm);
      const __m512i hi = _mm512_shuffle_epi8(lut, _mm512_gf2p8affine_epi64_epi8(packed[r], shift4, 0));
      const __m512i sum = I8Ops<64, kVnni>::dot(b, lo, hi, q, q + 128);  // the plane loads: once for the R rows
      acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sum), _mm512_mul_ps(ws[r], x), acc[r]);
    }
    q += 256, bias += 16, xs += 16;
  }
};

// Software prefetch distance (bench_kernels, 2 cores, two alternating runs: 4 KiB 13.1-17.6 GB/s,
// the integer kernel's 1 KiB 9.6-14.8): this loop consumes bytes faster and needs more in flight.
inline constexpr int64_t kFp4VbmiPrefetchBytes = 4096;

// Rows n..n+R-1 of m · token 0 of a; y[n - out0].. a.k == m.k, groups of 32 (fp4_integer_applies).
template <bool kVnni, int R>
DSV4_TARGET_VBMI void fp4_vbmi_gemv_block(const Fp4GroupMatrix& m, const Q16Activations<64>& a, float* y, int64_t n,
                                          int64_t out0) {
  using O = I8Ops<64, kVnni>;
  const int64_t K = m.k, row_bytes = K / 2, scale_cols = m.scale_cols(), full = K / 128;
  Fp4VbmiChunk<kVnni, R> chunk{_mm512_load_si512(kFp4Perm64.v),
                               _mm512_broadcast_i32x4(_mm_loadu_si128(reinterpret_cast<const __m128i*>(kFp4U8))),
                               _mm512_set1_epi64(0x1020408000000000),  // gf2p8affine matrix: each byte >> 4
                               a.high_at(0, 0), a.bias_at(0, 0), a.scale_at(0, 0)};
  // vpermd indices: chunk u of four takes groups 4u..4u+3, each over four lanes.
  __m512i pick[4];
  for (int u = 0; u < 4; ++u)
    pick[u] = _mm512_set_epi32(4 * u + 3, 4 * u + 3, 4 * u + 3, 4 * u + 3, 4 * u + 2, 4 * u + 2, 4 * u + 2, 4 * u + 2,
                               4 * u + 1, 4 * u + 1, 4 * u + 1, 4 * u + 1, 4 * u, 4 * u, 4 * u, 4 * u);
  const uint8_t* w[R];
  const uint8_t* s[R];
  for (int r = 0; r < R; ++r) w[r] = m.q + (n + r) * row_bytes, s[r] = m.scale + (n + r) * scale_cols;
  __m512 acc[2][R];
  for (int i = 0; i < 2; ++i)
    for (int r = 0; r < R; ++r) acc[i][r] = _mm512_setzero_ps();
  __m512i packed[R];
  __m512 ws[R];
  int64_t c = 0;
  for (; c + 4 <= full; c += 4) {
    __m512i scales[R];
    for (int r = 0; r < R; ++r) {
      for (int u = 0; u < 4; ++u)
        _mm_prefetch(reinterpret_cast<const char*>(w[r] + 64 * u + kFp4VbmiPrefetchBytes), _MM_HINT_T0);
      scales[r] = _mm512_slli_epi32(_mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(s[r]))), 23);
    }
    for (int u = 0; u < 4; ++u) {
      for (int r = 0; r < R; ++r) {
        packed[r] = _mm512_loadu_si512(w[r] + 64 * u);
        ws[r] = _mm512_castsi512_ps(_mm512_permutexvar_epi32(pick[u], scales[r]));
      }
      chunk(packed, ws, acc[u & 1]);
    }
    for (int r = 0; r < R; ++r) w[r] += 256, s[r] += 16;
  }
  for (; c < full; ++c) {
    for (int r = 0; r < R; ++r) packed[r] = _mm512_loadu_si512(w[r]), ws[r] = O::weight_scales(s[r], 4), w[r] += 64, s[r] += 4;
    chunk(packed, ws, acc[0]);
  }
  if (full < a.chunks) {  // the last, partial chunk: K % 128 columns, whole groups
    const int bytes = int((K - full * 128) / 2), groups = int((K - full * 128) / 32);
    for (int r = 0; r < R; ++r) packed[r] = O::load_packed(w[r], bytes), ws[r] = O::weight_scales(s[r], groups);
    chunk(packed, ws, acc[0]);
  }
  for (int r = 0; r < R; ++r) y[n + r - out0] = _mm512_reduce_add_ps(_mm512_add_ps(acc[0][r], acc[1][r]));
}

// Rows [n0, n1) of m · token 0 of a; y[n - out0]. Two rows at a time share every activation load
// (six loads per 64 weight bytes for one row).
template <bool kVnni>
DSV4_TARGET_VBMI void fp4_vbmi_gemv_rows(const Fp4GroupMatrix& m, const Q16Activations<64>& a, float* y, int64_t n0,
                                         int64_t n1, int64_t out0) {
  int64_t n = n0;
  for (; n + 2 <= n1; n += 2) fp4_vbmi_gemv_block<kVnni, 2>(m, a, y, n, out0);
  if (n < n1) fp4_vbmi_gemv_block<kVnni, 1>(m, a, y, n, out0);
}

#endif

}  // namespace dsv4::cpu
