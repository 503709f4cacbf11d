#pragma once
// The oracle for the Lightning Indexer's scores of one query against n stored keys:
//   scores[e] = kscale · Σ_h g[h] · max(0, q[h, :] · key_e),  e in [0, n)
// q: [nh, ci] fp32 (ci = codec.width); g: [nh]; keys: n rows of codec.row_bytes() bytes, back to
// back (F32, BF16 or Fp4). Each key is decoded with RowCodec::decode, then summed in fp32 in this
// order (j inner, heads outer). Kernel bundles may bring a faster B::indexer_scores with the same
// contract (kernels/cpu/indexer_scores.hpp).
#include <algorithm>
#include <cstdint>
#include <vector>

#include "dsv4/core/error.hpp"
#include "dsv4/numeric/row_codec.hpp"

namespace dsv4 {

inline void indexer_scores_reference(const float* q /*[nh, ci]*/, const float* g /*[nh]*/, int64_t nh,
                                     const RowCodec& codec, const uint8_t* keys /*[n, row_bytes]*/, int64_t n,
                                     float kscale, float* scores /*[n]*/) {
  if (codec.format == RowFormat::Fp8Rope)
    fail("indexer_scores: keys stored as ", row_format_name(codec.format), " are not supported (f32, bf16, fp4)");
  const int64_t ci = codec.width, rb = codec.row_bytes();
  std::vector<float> k(static_cast<size_t>(std::max<int64_t>(ci, 0)));
  for (int64_t e = 0; e < n; ++e) {
    codec.decode(keys + e * rb, k.data());
    float sc = 0.f;
    for (int64_t h = 0; h < nh; ++h) {
      float dot = 0.f;
      for (int64_t j = 0; j < ci; ++j) dot += q[h * ci + j] * k[size_t(j)];
      sc += g[h] * std::max(dot, 0.f);
    }
    scores[e] = sc * kscale;
  }
}

}  // namespace dsv4
