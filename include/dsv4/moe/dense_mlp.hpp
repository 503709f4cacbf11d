#pragma once
// A dense SwiGLU MLP (DeepSeek-V3's first first_k_dense_replace layers): the expert function with
// width intermediate_size and no clamp, applied to every token.
#include <string>

#include "dsv4/moe/moe.hpp"

namespace dsv4 {

struct DenseMlp {
  ExpertWeights w;  // w1, w3: [intermediate_size, D]; w2: [D, intermediate_size] (split: a block of it)
  bool split = false;  // holds a block of the width: forward's out is a share, summed over the ranks

  static DenseMlp load(const WeightSource& ws, const std::string& p, const ModelConfig& c, const TensorShard& tp = {}) {
    if (c.intermediate_size < 1) fail("a dense MLP layer needs intermediate_size >= 1");
    return {ExpertWeights::load(ws, p, c.hidden_size, c.intermediate_size, tp), tp.split()};
  }
  template <class F>
  void for_each_matrix(F&& f) const {
    f("w1", w.w1), f("w2", w.w2), f("w3", w.w3);
  }
  // out [T, D] = mlp(x [T, D]).
  template <KernelBundle B>
  void forward(const ModelConfig&, const float* x, const int32_t*, int64_t t, float* out) const {
    swiglu_expert<B>(w, 0.0f, x, t, out);
  }
};

}  // namespace dsv4
