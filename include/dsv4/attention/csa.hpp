#pragma once
// Compressed Sparse Attention: the sliding window plus the compressed entries (overlapping
// windows of m tokens) that the Lightning Indexer picks for each query among the visible ones.
#include <string>
#include <vector>

#include "dsv4/attention/compressor.hpp"
#include "dsv4/attention/indexer.hpp"
#include "dsv4/attention/latent.hpp"
#include "dsv4/attention/trace.hpp"

namespace dsv4 {

struct CsaAttention {
  LatentWeights latent;
  CompressorWeights compressor;  // overlapping, width d
  IndexerWeights indexer;

  struct State {
    WindowState window;
    CompressorState compressor;
    CompressorState index_keys;  // the indexer's own compressor: keys [num_entries, c_I]
  };

  static std::string can_implement(const ModelConfig& c, const LayerConfig& l) {
    if (l.compress_ratio < 1) return "CSA needs a compress ratio >= 1";
    if (c.index_topk < 1 || c.index_n_heads < 1 || c.index_head_dim < c.rope_dim)
      return "CSA needs index_topk, index_n_heads >= 1 and index_head_dim >= qk_rope_head_dim";
    return "";
  }
  static CsaAttention load(const WeightSource& ws, const std::string& prefix, const ModelConfig& c,
                           const LayerConfig& l, const TensorShard& tp = {}) {
    return {LatentWeights::load(ws, prefix, c, tp),
            CompressorWeights::load(ws, prefix + ".compressor", l.compress_ratio, c.head_dim, true, c.hidden_size),
            IndexerWeights::load(ws, prefix + ".indexer", c, l.compress_ratio)};
  }
  State new_state(const ModelConfig& c, CacheType t) const {
    const CacheCodecs k = cache_codecs(c, t);
    State s;
    s.window.init(c, k.kv);
    s.compressor.init(compressor, k.kv);
    s.index_keys.init(indexer.compressor, k.index_key);
    return s;
  }
  template <class F>
  void for_each_matrix(F&& f) const {
    f("wq_a", latent.wq_a), f("wq_b", latent.wq_b), f("wkv", latent.wkv), f("wo_a", latent.wo_a), f("wo_b", latent.wo_b);
    f("compressor.wkv", compressor.wkv), f("compressor.wgate", compressor.wgate);
    f("indexer.wq_b", indexer.wq_b), f("indexer.weights_proj", indexer.weights_proj);
    f("indexer.compressor.wkv", indexer.compressor.wkv), f("indexer.compressor.wgate", indexer.compressor.wgate);
  }

  template <KernelBundle B>
  void forward(const ModelConfig& c, const RopeTable& rope, const float* x /*[T, D]*/, int64_t t,
               const std::vector<Segment>& segs, const std::vector<State*>& states, float* out /*[T, D]*/,
               ForwardTrace* trace, int64_t layer) const {
    LatentProjections p;
    latent_project<B>(latent, c, rope, x, t, segs, p);
    std::vector<float> a, z;
    compressor_project<B>(compressor, x, t, segs, a, z);
    IndexerProjections ip;
    indexer_project<B>(indexer, c, rope, x, p.qr.data(), t, segs, ip);

    const int64_t hd = latent.heads * c.head_dim, d = c.head_dim, m = compressor.ratio;
    const int64_t pw = compressor.proj_width(), ipw = indexer.compressor.proj_width();
    const int64_t nh = c.index_n_heads, ci = c.index_head_dim;
    const float eps = float(c.rms_norm_eps);
    std::vector<float> o(size_t(t * hd));
    std::vector<std::vector<int64_t>>* record = nullptr;
    if (trace) (record = &trace->indexer_topk[layer])->assign(size_t(t), {});
    std::vector<float> scores;
    std::vector<int64_t> chosen;
    for (size_t si = 0; si < segs.size(); ++si) {
      const Segment& s = segs[si];
      State& st = *states[si];
      compressor_feed(compressor, st.compressor, &a[size_t(s.row0 * pw)], &z[size_t(s.row0 * pw)], s.count, s.pos0,
                      rope, eps);
      compressor_feed(indexer.compressor, st.index_keys, &ip.a[size_t(s.row0 * ipw)], &ip.z[size_t(s.row0 * ipw)],
                      s.count, s.pos0, rope, eps);
      auto extra = [&](int64_t i, std::vector<int64_t>& ids) {
        const int64_t row = s.row0 + i, visible = (s.pos0 + i + 1) / m;
        indexer_select<B>(c, &ip.q[size_t(row * nh * ci)], &ip.g[size_t(row * nh)], st.index_keys.entries, visible,
                          scores, chosen);
        ids.insert(ids.end(), chosen.begin(), chosen.end());
        if (record) (*record)[size_t(row)] = chosen;
      };
      float* kv = &p.kv[size_t(s.row0 * d)];
      latent_attend_with<B>(latent, c, rope, st.window, s, &p.q[size_t(s.row0 * hd)], kv, &st.compressor.entries, extra,
                            &o[size_t(s.row0 * hd)]);
      window_store(st.window, c, s, kv);
    }
    latent_output<B>(latent, c, o.data(), t, out);
  }
};

}  // namespace dsv4
