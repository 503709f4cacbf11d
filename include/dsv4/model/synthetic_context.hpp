#pragma once
// A cache filled as if `tokens` positions had been run, with random values of the right shapes
// and magnitudes (kv vectors, entries and indexer keys ~ N(0, 1) per dimension, as RMS-normed
// vectors are), in the cache's own storage type. For benchmarks only: it lets a decode step at a
// 1M-token context be timed without a prefill of a million tokens. The values mean nothing;
// the work a step does over them (indexer scoring, top-k, attention over entries) is the real one.
#include <cmath>
#include <cstdint>
#include <vector>

#include "dsv4/model/model.hpp"

namespace dsv4 {

namespace synthetic_detail {

// Approximately normal values, fast (sum of four uniforms, scaled to unit variance).
struct FastNormal {
  uint64_t s;
  float next() {
    float acc = 0.f;
    for (int i = 0; i < 4; ++i) {
      s ^= s << 13, s ^= s >> 7, s ^= s << 17;
      acc += float(s >> 40) * (1.0f / float(1 << 24)) - 0.5f;
    }
    return acc * 1.7320508f;  // 4 uniforms on [-1/2, 1/2): variance 1/3
  }
  void fill(std::vector<float>& v) {
    for (auto& x : v) x = next();
  }
};

inline void fill_rows(KvRows& r, int64_t rows, bool ring, FastNormal& g) {
  std::vector<float> x(static_cast<size_t>(r.codec().width));
  for (int64_t i = 0; i < rows; ++i) {
    g.fill(x);
    if (ring) r.set(i, x.data());
    else r.append(x.data());
  }
}

inline void fill_compressor(CompressorState& s, int64_t tokens, int64_t ratio, FastNormal& g) {
  g.fill(s.pend_a), g.fill(s.pend_z), g.fill(s.prev_a), g.fill(s.prev_z);
  fill_rows(s.entries, tokens / ratio, false, g);
}

}  // namespace synthetic_detail

// `cache` must be empty (new_cache) and made by `model`.
inline void fill_synthetic_context(const Model& model, SequenceCache& cache, int64_t tokens, uint64_t seed = 1) {
  if (!cache.made_by(model)) fail("synthetic context: the cache was not made by this model");
  if (cache.position() != 0) fail("synthetic context: the cache must be empty");
  if (tokens < 0) fail("synthetic context: negative length ", tokens);
  const ModelConfig& c = model.config();
  synthetic_detail::FastNormal g{seed * 0x9E3779B97F4A7C15ull | 1};
  auto& states = CacheStateAccess::layers(cache);
  for (size_t l = 0; l < states.size(); ++l) {
    const int64_t m = std::max<int64_t>(c.layers[l].compress_ratio, 1);
    for_each_store(states[l], [&](auto& store) {
      using T = std::decay_t<decltype(store)>;
      if constexpr (std::is_same_v<T, WindowState>) {
        synthetic_detail::fill_rows(store.ring, store.ring.size(), true, g);
      } else if constexpr (std::is_same_v<T, CompressorState>) {
        synthetic_detail::fill_compressor(store, tokens, m, g);
      } else {
        store.resize(size_t(tokens * MlaDims(c).latent()));
        g.fill(store);
      }
    });
  }
  CacheStateAccess::set_position(cache, tokens);
}

}  // namespace dsv4
