#pragma once
// What a sequence's cache holds, in bytes (fp32 storage): predicted from the config for a given
// length, and measured from a live AttentionState. `dsv4 kv` prints the prediction; a test checks
// that it equals the measurement after real forward passes, so the two cannot drift apart.
#include <algorithm>
#include <cstdint>
#include <variant>

#include "dsv4/attention/attention.hpp"
#include "dsv4/model/config.hpp"

namespace dsv4 {

struct LayerCacheBytes {
  int64_t fixed = 0;    // held whatever the length (ring, compressor windows)
  int64_t entries = 0;  // grows with the length (compressed entries, indexer keys, MLA latents)
  int64_t total() const { return fixed + entries; }
};

// The bytes layer `l` holds after `tokens` positions. Mirrors the init()/append code of the states:
//   ring (W-1)·d; compressor pending a,z: m·w each (w = 2d overlapping, d otherwise), previous
//   window a,z: m·d each (overlapping only); one d-wide entry per complete window of m tokens;
//   CSA's indexer compressor the same with c_I; MLA (c+dr) per position.
inline LayerCacheBytes predict_layer_cache_bytes(const ModelConfig& c, const LayerConfig& l, int64_t tokens) {
  const int64_t d = c.head_dim, ring = std::max<int64_t>(c.sliding_window - 1, 0) * d * 4;
  const int64_t m = std::max<int64_t>(l.compress_ratio, 1), windows = tokens / m;
  auto compressor_fixed = [&](int64_t width, bool overlap) {
    return (2 * m * (overlap ? 2 * width : width) + (overlap ? 2 * m * width : 0)) * 4;
  };
  switch (l.attention) {
    case AttentionKind::Sliding: return {ring, 0};
    case AttentionKind::HCA: return {ring + compressor_fixed(d, false), windows * d * 4};
    case AttentionKind::CSA:
      return {ring + compressor_fixed(d, true) + compressor_fixed(c.index_head_dim, true),
              windows * (d + c.index_head_dim) * 4};
    case AttentionKind::MLA: return {0, tokens * MlaAttention::cache_bytes_per_token(c)};
  }
  return {};
}

// The bytes a live state holds (sizes, not capacities: what the values occupy).
inline int64_t measured_state_bytes(const AttentionState& s) {
  auto v = [](const std::vector<float>& x) { return int64_t(x.size() * sizeof(float)); };
  auto comp = [&](const CompressorState& k) { return v(k.pend_a) + v(k.pend_z) + v(k.prev_a) + v(k.prev_z) + v(k.entries); };
  return std::visit(
      [&](const auto& st) -> int64_t {
        using S = std::decay_t<decltype(st)>;
        if constexpr (std::is_same_v<S, SlidingAttention::State>) return v(st.window.ring);
        else if constexpr (std::is_same_v<S, HcaAttention::State>) return v(st.window.ring) + comp(st.compressor);
        else if constexpr (std::is_same_v<S, CsaAttention::State>)
          return v(st.window.ring) + comp(st.compressor) + comp(st.index_keys);
        else return v(st.latent);
      },
      s);
}

}  // namespace dsv4
