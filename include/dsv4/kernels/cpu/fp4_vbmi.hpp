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

// One chunk's products added to acc: packed weights, their lane scales; the activation pointers
// advance to the next chunk.
template <bool kVnni>
struct Fp4VbmiChunk {
  __m512i perm, lut, shift4;
  const int8_t* q;  // per chunk: 128 high-plane bytes, then 128 low-plane ones
  const int32_t* bias;
  const float* xs;
  DSV4_TARGET_VBMI void operator()(__m512i packed, __m512 ws, __m512& acc) {
    const __m512i lo = _mm512_permutexvar_epi8(packed, perm);
    const __m512i hi = _mm512_shuffle_epi8(lut, _mm512_gf2p8affine_epi64_epi8(packed, shift4, 0));
    const __m512i sum = I8Ops<64, kVnni>::dot(_mm512_loadu_si512(bias), lo, hi, q, q + 128);
    acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sum), _mm512_mul_ps(ws, _mm512_loadu_ps(xs)), acc);
    q += 256, bias += 16, xs += 16;
  }
};

// Software prefetch distance: kFp4FewPrefetchBytes (fp4_integer.hpp), 4 KiB (bench_kernels, 2 cores,
// two alternating runs: 4 KiB 13.1-17.6 GB/s, the one-token integer kernel's 1 KiB 9.6-14.8): this
// loop consumes bytes faster and needs more in flight.

// Rows [n0, n1) of m · token 0 of a; y[n - out0]. a.k == m.k, groups of 32 (fp4_integer_applies).
// One row at a time: two rows sharing each activation load read slower (one core, weights in DRAM,
// two alternating runs: 2048×4096 10.5-11.2 against 12.6 GB/s, 4096×2048 11.9-12.4 against 12.5-12.7;
// two cores 18.8-20.0 against 22.6-22.9), unlike FP8, whose decode needs fewer registers.
template <bool kVnni>
DSV4_TARGET_VBMI void fp4_vbmi_gemv_rows(const Fp4GroupMatrix& m, const Q16Activations<64>& a, float* y, int64_t n0,
                                         int64_t n1, int64_t out0) {
  using O = I8Ops<64, kVnni>;
  const int64_t K = m.k, row_bytes = K / 2, scale_cols = m.scale_cols(), full = K / 128;
  Fp4VbmiChunk<kVnni> chunk{_mm512_load_si512(kFp4Perm64.v),
                            _mm512_broadcast_i32x4(_mm_loadu_si128(reinterpret_cast<const __m128i*>(kFp4U8))),
                            _mm512_set1_epi64(0x1020408000000000),  // gf2p8affine matrix: each byte >> 4
                            nullptr, nullptr, nullptr};
  // vpermd indices: chunk u of four takes groups 4u..4u+3, each over four lanes.
  __m512i pick[4];
  for (int u = 0; u < 4; ++u)
    pick[u] = _mm512_set_epi32(4 * u + 3, 4 * u + 3, 4 * u + 3, 4 * u + 3, 4 * u + 2, 4 * u + 2, 4 * u + 2, 4 * u + 2,
                               4 * u + 1, 4 * u + 1, 4 * u + 1, 4 * u + 1, 4 * u, 4 * u, 4 * u, 4 * u);
  for (int64_t n = n0; n < n1; ++n) {
    const uint8_t* w = m.q + n * row_bytes;
    const uint8_t* s = m.scale + n * scale_cols;
    chunk.q = a.high_at(0, 0), chunk.bias = a.bias_at(0, 0), chunk.xs = a.scale_at(0, 0);
    __m512 acc[2] = {_mm512_setzero_ps(), _mm512_setzero_ps()};
    int64_t c = 0;
    for (; c + 4 <= full; c += 4, w += 256, s += 16) {
      for (int u = 0; u < 4; ++u)
        _mm_prefetch(reinterpret_cast<const char*>(w + 64 * u + kFp4FewPrefetchBytes), _MM_HINT_T0);
      const __m512i scales =
          _mm512_slli_epi32(_mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(s))), 23);
      for (int u = 0; u < 4; ++u)
        chunk(_mm512_loadu_si512(w + 64 * u), _mm512_castsi512_ps(_mm512_permutexvar_epi32(pick[u], scales)), acc[u & 1]);
    }
    for (; c < full; ++c, w += 64, s += 4) chunk(_mm512_loadu_si512(w), O::weight_scales(s, 4), acc[0]);
    if (full < a.chunks) {  // the last, partial chunk: K % 128 columns, whole groups
      const int bytes = int((K - full * 128) / 2), groups = int((K - full * 128) / 32);
      chunk(O::load_packed(w, bytes), O::weight_scales(s, groups), acc[0]);
    }
    y[n - out0] = _mm512_reduce_add_ps(_mm512_add_ps(acc[0], acc[1]));
  }
}

#endif

}  // namespace dsv4::cpu
