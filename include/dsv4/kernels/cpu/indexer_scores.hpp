#pragma once
// Lightning Indexer scores for one query against n stored keys (the decode cost of CSA layers at
// long context: up to 262144 compressed keys at a 1M-token context):
//
//   scores[e] = kscale * sum_h g[h] * max(0, q[h, :] . key_e),  e in [0, n)
//
// q: [nh, ci] fp32 with ci = codec.width; g: [nh] (any sign); keys: n rows of codec.row_bytes()
// bytes each, back to back, in codec.format: F32, BF16 or Fp4 (Fp8Rope is refused, dsv4::Error).
//
//   indexer_scores            the dispatched SIMD kernel (kernels/cpu/simd_indexer.hpp): AVX2,
//                             AVX-512, or AVX-512 + AVX512_BF16 where that is faster; OpenMP threads
//                             (omp_get_max_threads) above ~1M multiply-adds.
//   indexer_scores_reference  the oracle: each row decoded with RowCodec::decode, then plain fp32
//                             loops in indexer_select's order (j inner, heads outer), one thread.
//
// Numerics of the SIMD kernel, against the reference (see simd_indexer.hpp for the details):
//   fp32 FMA (F32 keys always; BF16 / FP4 keys unless the bf16-dot instance is chosen): the same
//     products, fused and summed over heads in another order; observed |error| ~1e-7 and bounded
//     by ~(ci + nh) * 2^-24 relative to kscale * sum_h |g_h| sum_j |q_hj k_j|.
//   bf16 dot (vdpbf16ps, BF16 / FP4 keys): q rounded to bf16, so |error| <= (2^-8 + (ci + nh + 2)
//     * 2^-24) * kscale * sum_h |g_h| sum_j |q_hj k_j| (tests/test_indexer_kernel.cpp checks it).
#include <algorithm>
#include <cstdint>
#include <vector>

#include "dsv4/core/error.hpp"
#include "dsv4/kernels/cpu/fast_bundle.hpp"
#include "dsv4/kernels/indexer_reference.hpp"
#include "dsv4/numeric/row_codec.hpp"

namespace dsv4::cpu {

using dsv4::indexer_scores_reference;  // kernels/indexer_reference.hpp

inline void indexer_scores(const float* q, const float* g, int64_t nh, const RowCodec& codec, const uint8_t* keys,
                           int64_t n, float kscale, float* scores) {
  dispatch().indexer(q, g, nh, codec, keys, n, kscale, scores);
}

}  // namespace dsv4::cpu
