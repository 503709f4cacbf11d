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
#include "dsv4/core/parallel.hpp"
#include "dsv4/core/score_order.hpp"
#include "dsv4/kernels/indexer_reference.hpp"

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

// A bundle may bring its own scoring kernel (B::indexer_scores, the contract of
// kernels/indexer_reference.hpp); the others use the reference.
template <class B>
concept HasIndexerKernel = requires(const float* f, const RowCodec& rc, const uint8_t* k, float* s, int64_t n) {
  B::indexer_scores(f, f, n, rc, k, n, 1.0f, s);
};

// Top-k entries for one query row: q [n_I, c_I], g [n_I] over the first num_visible keys.
// Returns indices ordered by score (highest first; ties to the lower index).
template <KernelBundle B>
void indexer_select(const ModelConfig& c, const float* q, const float* g, const KvRows& keys, int64_t num_visible,
                    std::vector<float>& scores, std::vector<int64_t>& out) {
  const int64_t nh = c.index_n_heads, pr = keys.page_rows();
  const float kscale = 1.0f / std::sqrt(float(c.index_head_dim));
  scores.resize(size_t(num_visible));
  const int64_t pages = (num_visible + pr - 1) / pr;
  auto score_page = [&](int64_t p) {
    const int64_t n = std::min(pr, num_visible - p * pr);
    if constexpr (HasIndexerKernel<B>)
      B::indexer_scores(q, g, nh, keys.codec(), keys.page(p), n, kscale, &scores[size_t(p * pr)]);
    else
      indexer_scores_reference(q, g, nh, keys.codec(), keys.page(p), n, kscale, &scores[size_t(p * pr)]);
  };
  // Long contexts: the pages over the threads (each score is independent, so the result does not
  // depend on the split); short ones in one call per page, which may thread inside.
  if (pages > 1 && num_visible * nh * c.index_head_dim >= (int64_t(1) << 21) && num_threads() > 1) {
#pragma omp parallel for schedule(dynamic, 1)
    for (int64_t p = 0; p < pages; ++p) score_page(p);
  } else {
    for (int64_t p = 0; p < pages; ++p) score_page(p);
  }
  out.resize(size_t(num_visible));
  std::iota(out.begin(), out.end(), 0);
  const int64_t keep = std::min(num_visible, c.index_topk);
  const HigherScore better{scores.data()};
  // A strict total order: selecting then sorting the kept ones equals a partial sort, in O(n).
  if (keep < num_visible) std::nth_element(out.begin(), out.begin() + keep, out.end(), better);
  std::sort(out.begin(), out.begin() + keep, better);
  out.resize(size_t(keep));
}

}  // namespace dsv4
