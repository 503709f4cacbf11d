#pragma once
// What a sequence's cache allocates, in bytes: predicted from the config for a given length and
// cache type, and measured from a live AttentionState. Both follow the allocation code itself
// (KvRows::allocated_bytes, the compressor's init), so `dsv4 kv` prints what the runtime will
// allocate, and a test checks the prediction against live caches after real forward passes.
#include <algorithm>
#include <cstdint>
#include <variant>

#include "dsv4/attention/attention.hpp"
#include "dsv4/model/cache_type.hpp"
#include "dsv4/model/config.hpp"

namespace dsv4 {

struct LayerCacheBytes {
  int64_t fixed = 0;    // held whatever the length (ring, compressor windows)
  int64_t entries = 0;  // grows with the length (compressed entries, indexer keys, MLA latents)
  int64_t total() const { return fixed + entries; }
};

// The bytes layer `l` holds after `tokens` positions, stored as `type` says:
//   ring: W-1 kv rows; compressor pending a,z: m·w fp32 each (w = 2c overlapping, c otherwise),
//   previous window a,z: m·c fp32 each (overlapping only); one entry row per complete window of
//   m tokens, in pages (KvRows); CSA's indexer compressor the same with c_I; MLA (c+dr) fp32 per position.
inline LayerCacheBytes predict_layer_cache_bytes(const ModelConfig& c, const LayerConfig& l, int64_t tokens,
                                                 CacheType type = CacheType::F32) {
  if (l.attention == AttentionKind::MLA) return {0, tokens * MlaAttention::cache_bytes_per_token(c)};
  const CacheCodecs k = cache_codecs(c, type);
  const int64_t ring = std::max<int64_t>(c.sliding_window - 1, 0) * k.kv.row_bytes();
  const int64_t m = std::max<int64_t>(l.compress_ratio, 1), windows = tokens / m;
  auto compressor_fixed = [&](int64_t width, bool overlap) {
    return (2 * m * (overlap ? 2 * width : width) + (overlap ? 2 * m * width : 0)) * 4;
  };
  switch (l.attention) {
    case AttentionKind::Sliding: return {ring, 0};
    case AttentionKind::HCA:
      return {ring + compressor_fixed(c.head_dim, false), KvRows::allocated_bytes(k.kv, windows)};
    case AttentionKind::CSA:
      return {ring + compressor_fixed(c.head_dim, true) + compressor_fixed(c.index_head_dim, true),
              KvRows::allocated_bytes(k.kv, windows) + KvRows::allocated_bytes(k.index_key, windows)};
    case AttentionKind::MLA: break;
  }
  return {};
}

// The bytes a live state has allocated (vectors by size, row stores by their pages).
inline int64_t measured_state_bytes(const AttentionState& s) {
  auto v = [](const std::vector<float>& x) { return int64_t(x.size() * sizeof(float)); };
  auto comp = [&](const CompressorState& k) {
    return v(k.pend_a) + v(k.pend_z) + v(k.prev_a) + v(k.prev_z) + k.entries.allocated();
  };
  int64_t bytes = 0;
  for_each_store(s, [&](const auto& store) {
    using T = std::decay_t<decltype(store)>;
    if constexpr (std::is_same_v<T, WindowState>) bytes += store.ring.allocated();
    else if constexpr (std::is_same_v<T, CompressorState>) bytes += comp(store);
    else bytes += v(store);
  });
  return bytes;
}

}  // namespace dsv4
