#pragma once
// Sliding-window attention: each query sees the kv of its last sliding_window positions.
#include <string>
#include <vector>

#include "dsv4/attention/latent.hpp"
#include "dsv4/attention/trace.hpp"

namespace dsv4 {

struct SlidingAttention {
  LatentWeights latent;

  struct State {
    WindowState window;
  };

  static std::string can_implement(const ModelConfig&, const LayerConfig& l) {
    return l.compress_ratio == 0 ? "" : "sliding attention takes no compress ratio";
  }
  static SlidingAttention load(const WeightSource& ws, const std::string& prefix, const ModelConfig& c,
                               const LayerConfig&, const TensorShard& tp = {}) {
    return {LatentWeights::load(ws, prefix, c, tp)};
  }
  State new_state(const ModelConfig& c, CacheType t) const {
    State s;
    s.window.init(c, cache_codecs(c, t).kv);
    return s;
  }
  template <class F>
  void for_each_matrix(F&& f) const {
    f("wq_a", latent.wq_a), f("wq_b", latent.wq_b), f("wkv", latent.wkv), f("wo_a", latent.wo_a), f("wo_b", latent.wo_b);
  }

  template <KernelBundle B>
  void forward(const ModelConfig& c, const RopeTable& rope, const float* x /*[T, D]*/, int64_t t,
               const std::vector<Segment>& segs, const std::vector<State*>& states, float* out /*[T, D]*/,
               ForwardTrace*, int64_t) const {
    LatentProjections p;
    latent_project<B>(latent, c, rope, x, t, segs, p);
    const int64_t hd = latent.heads * c.head_dim;
    std::vector<float> o(size_t(t * hd));
    for (size_t si = 0; si < segs.size(); ++si) {
      const Segment& s = segs[si];
      State& st = *states[si];
      float* kv = &p.kv[size_t(s.row0 * c.head_dim)];
      latent_attend_with<B>(latent, c, rope, st.window, s, &p.q[size_t(s.row0 * hd)], kv, nullptr,
                            [](int64_t, auto&) {}, &o[size_t(s.row0 * hd)]);
      window_store(st.window, c, s, kv);
    }
    latent_output<B>(latent, c, o.data(), t, out);
  }
};

}  // namespace dsv4
