#pragma once
// Heavily Compressed Attention: the sliding window plus every complete compressed entry
// (non-overlapping windows of m tokens): entry w is visible to position t when w < (t+1)/m.
#include <string>
#include <vector>

#include "dsv4/attention/compressor.hpp"
#include "dsv4/attention/latent.hpp"
#include "dsv4/attention/trace.hpp"

namespace dsv4 {

struct HcaAttention {
  LatentWeights latent;
  CompressorWeights compressor;  // non-overlapping, width d

  struct State {
    WindowState window;
    CompressorState compressor;
  };

  static std::string can_implement(const ModelConfig&, const LayerConfig& l) {
    return l.compress_ratio >= 1 ? "" : "HCA needs a compress ratio >= 1";
  }
  static HcaAttention load(const WeightSource& ws, const std::string& prefix, const ModelConfig& c,
                           const LayerConfig& l, const TensorShard& tp = {}) {
    return {LatentWeights::load(ws, prefix, c, tp),
            CompressorWeights::load(ws, prefix + ".compressor", l.compress_ratio, c.head_dim, false, c.hidden_size)};
  }
  State new_state(const ModelConfig& c, CacheType t) const {
    State s;
    s.window.init(c, cache_codecs(c, t).kv);
    s.compressor.init(compressor, cache_codecs(c, t).kv);
    return s;
  }
  template <class F>
  void for_each_matrix(F&& f) const {
    f("wq_a", latent.wq_a), f("wq_b", latent.wq_b), f("wkv", latent.wkv), f("wo_a", latent.wo_a), f("wo_b", latent.wo_b);
    f("compressor.wkv", compressor.wkv), f("compressor.wgate", compressor.wgate);
  }

  template <KernelBundle B>
  void forward(const ModelConfig& c, const RopeTable& rope, const float* x /*[T, D]*/, int64_t t,
               const std::vector<Segment>& segs, const std::vector<State*>& states, float* out /*[T, D]*/,
               ForwardTrace*, int64_t) const {
    LatentProjections p;
    latent_project<B>(latent, c, rope, x, t, segs, p);
    std::vector<float> a, z;
    compressor_project<B>(compressor, x, t, segs, a, z);
    const int64_t hd = latent.heads * c.head_dim, d = c.head_dim, m = compressor.ratio, pw = compressor.proj_width();
    std::vector<float> o(size_t(t * hd));
    for (size_t si = 0; si < segs.size(); ++si) {
      const Segment& s = segs[si];
      State& st = *states[si];
      compressor_feed(compressor, st.compressor, &a[size_t(s.row0 * pw)], &z[size_t(s.row0 * pw)], s.count, s.pos0,
                      rope, float(c.rms_norm_eps));
      auto extra = [&](int64_t i, std::vector<int64_t>& ids) {
        const int64_t visible = (s.pos0 + i + 1) / m;
        for (int64_t e = 0; e < visible; ++e) ids.push_back(e);
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
