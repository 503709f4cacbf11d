#pragma once
// Lightning Indexer (CSA layers): scores every visible compressed entry for each query,
// score(t, w) = sum_h g_h * relu(q_h . K[w]) / sqrt(c_I), g = weights_proj x / sqrt(n_I),
// and keeps the index_topk best (all when fewer are visible).
#include <algorithm>
#include <cmath>
#include <numeric>
#include <string>
#include <vector>

#include "dsv4/attention/compressor.hpp"

namespace dsv4 {

struct IndexerWeights {
  Matrix wq_b;          // [n_I*c_I, q_lora_rank]
  Matrix weights_proj;  // [n_I, D]
  CompressorWeights compressor;  // overlapping, width c_I

  static IndexerWeights load(const WeightSource& ws, const std::string& p, const ModelConfig& c, int64_t ratio) {
    IndexerWeights w;
    w.wq_b = ws.matrix(p + ".wq_b", c.index_n_heads * c.index_head_dim, c.q_lora_rank);
    w.weights_proj = ws.matrix(p + ".weights_proj", c.index_n_heads, c.hidden_size);
    w.compressor = CompressorWeights::load(ws, p + ".compressor", ratio, c.index_head_dim, true, c.hidden_size);
    return w;
  }
};

struct IndexerProjections {
  std::vector<float> q;  // [T, n_I, c_I] roped
  std::vector<float> g;  // [T, n_I] head weights, already / sqrt(n_I)
  std::vector<float> a, z;  // compressor projections [T, 2c_I]
};

template <KernelBundle B>
void indexer_project(const IndexerWeights& w, const ModelConfig& c, const RopeTable& rope, const float* x /*[T, D]*/,
                     const float* qr /*[T, q_lora_rank]*/, int64_t t, const std::vector<Segment>& segs,
                     IndexerProjections& p) {
  const int64_t nh = c.index_n_heads, ci = c.index_head_dim;
  p.q.resize(size_t(t * nh * ci));
  p.g.resize(size_t(t * nh));
  linear<B>(w.wq_b, qr, t, p.q.data());
  linear<B>(w.weights_proj, x, t, p.g.data());
  const float gscale = 1.0f / std::sqrt(float(nh));
  for (auto& v : p.g) v *= gscale;
  for (auto& s : segs)
    for (int64_t i = 0; i < s.count; ++i)
      for (int64_t h = 0; h < nh; ++h) rope.apply(&p.q[size_t(((s.row0 + i) * nh + h) * ci)], ci, s.pos0 + i);
  compressor_project<B>(w.compressor, x, t, segs, p.a, p.z);
}

// Top-k entries for one query row: q [n_I, c_I], g [n_I] over keys [num_visible, c_I].
// Returns indices ordered by score (highest first; ties to the lower index).
inline void indexer_select(const ModelConfig& c, const float* q, const float* g, const float* keys,
                           int64_t num_visible, std::vector<float>& scores, std::vector<int64_t>& out) {
  const int64_t nh = c.index_n_heads, ci = c.index_head_dim;
  const float kscale = 1.0f / std::sqrt(float(ci));
  scores.assign(size_t(num_visible), 0.f);
  for (int64_t e = 0; e < num_visible; ++e) {
    const float* k = keys + e * ci;
    float sc = 0.f;
    for (int64_t h = 0; h < nh; ++h) {
      float dot = 0.f;
      for (int64_t j = 0; j < ci; ++j) dot += q[h * ci + j] * k[j];
      sc += g[h] * std::max(dot, 0.f);
    }
    scores[size_t(e)] = sc * kscale;
  }
  out.resize(size_t(num_visible));
  std::iota(out.begin(), out.end(), 0);
  const int64_t keep = std::min(num_visible, c.index_topk);
  std::partial_sort(out.begin(), out.begin() + keep, out.end(), [&](int64_t a, int64_t b) {
    return scores[size_t(a)] > scores[size_t(b)] || (scores[size_t(a)] == scores[size_t(b)] && a < b);
  });
  out.resize(size_t(keep));
}

}  // namespace dsv4
