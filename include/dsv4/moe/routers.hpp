#pragma once
// Expert routers: each turns the gate's logits into k experts and their weights per token.
// Both DeepSeek-V4 routers score experts with s = sqrt(softplus(gate · x)) and weight the chosen
// ones by s / sum(s) * routed_scaling_factor; they differ in the choice: HashRouter takes
// tid2eid[token] (the first num_hash_layers layers), TopKRouter the top-k of s + bias.
// DeepSeek-V3's sigmoid group-limited router is in group_limited_router.hpp.
#include <algorithm>
#include <cmath>
#include <numeric>
#include <string>
#include <variant>
#include <vector>

#include "dsv4/io/weight_source.hpp"
#include "dsv4/kernels/ops.hpp"
#include "dsv4/moe/group_limited_router.hpp"

namespace dsv4 {

template <class R>
concept Router = requires(const R& r, const ModelConfig& c, const float* l, const int32_t* tok, int64_t t, int64_t* e,
                          float* w) {
  r.route(c, l, tok, t, e, w);  // l: [T, E] gate logits, tok: [T] ids -> e: [T, k] expert ids, w: [T, k] weights
};

// The V4 routers' scoring around their choice: s = sqrt(softplus(l)) [T, E], choose(s, experts),
// then w = s / sum(s) * scaling over the chosen.
template <class Choose>
void sqrt_softplus_route(const ModelConfig& c, const float* logits, int64_t t, int64_t* experts, float* weights,
                         Choose&& choose) {
  const int64_t E = c.n_routed_experts, k = c.n_experts_per_tok;
  const float scaling = float(c.routed_scaling_factor);
  std::vector<float> s(logits, logits + t * E);
  for (auto& v : s) v = std::sqrt(softplus(v));
  choose(s.data(), experts);
  for (int64_t i = 0; i < t; ++i) {
    float sum = 0.f;
    for (int64_t j = 0; j < k; ++j) sum += s[size_t(i * E + experts[i * k + j])];
    for (int64_t j = 0; j < k; ++j) weights[i * k + j] = s[size_t(i * E + experts[i * k + j])] / (sum + 1e-20f) * scaling;
  }
}

struct HashRouter {
  std::vector<int32_t> table;  // [vocab, k]
  int64_t k = 0;

  static HashRouter load(const WeightSource& ws, const std::string& prefix, const ModelConfig& c) {
    const TensorView& t = ws.tensor(prefix + ".tid2eid");
    if (t.dtype != DType::I32 && t.dtype != DType::I64)
      fail(t.file, ": tensor '", t.name, "' has dtype ", dtype_name(t.dtype), ", expected I32 or I64");
    if (t.shape != Shape{c.vocab_size, c.n_experts_per_tok})
      fail(t.file, ": tensor '", t.name, "' has shape ", shape_str(t.shape), ", expected ",
           shape_str({c.vocab_size, c.n_experts_per_tok}));
    HashRouter r;
    r.k = c.n_experts_per_tok;
    r.table.resize(size_t(t.numel()));
    for (int64_t i = 0; i < t.numel(); ++i) {
      int64_t e = t.int_at(i);
      if (e < 0 || e >= c.n_routed_experts)
        fail(t.file, ": tensor '", t.name, "' maps token ", i / r.k, " to expert ", e, ", outside [0, ",
             c.n_routed_experts, ")");
      r.table[size_t(i)] = int32_t(e);
    }
    return r;
  }
  void choose(const float*, const int32_t* tokens, int64_t t, int64_t* experts) const {
    for (int64_t i = 0; i < t; ++i)
      for (int64_t j = 0; j < k; ++j) experts[i * k + j] = table[size_t(tokens[i] * k + j)];
  }
  void route(const ModelConfig& c, const float* logits, const int32_t* tokens, int64_t t, int64_t* experts,
             float* weights) const {
    sqrt_softplus_route(c, logits, t, experts, weights, [&](const float* s, int64_t* e) { choose(s, tokens, t, e); });
  }
};

struct TopKRouter {
  std::vector<float> bias;  // [E] added for the choice only
  int64_t k = 0;

  static TopKRouter load(const WeightSource& ws, const std::string& prefix, const ModelConfig& c) {
    TopKRouter r;
    r.k = c.n_experts_per_tok;
    r.bias = ws.floats(prefix + ".bias", {c.n_routed_experts});  // required: a silent zero would route wrongly
    return r;
  }
  void choose(const float* scores, const int32_t*, int64_t t, int64_t* experts) const {
    const int64_t E = int64_t(bias.size());
    std::vector<int64_t> idx(static_cast<size_t>(E));
    std::vector<float> biased(static_cast<size_t>(E));
    for (int64_t i = 0; i < t; ++i) {
      for (int64_t e = 0; e < E; ++e) biased[size_t(e)] = scores[i * E + e] + bias[size_t(e)];
      std::iota(idx.begin(), idx.end(), 0);
      std::partial_sort(idx.begin(), idx.begin() + k, idx.end(), HigherScore{biased.data()});
      std::copy_n(idx.begin(), k, experts + i * k);
    }
  }
  void route(const ModelConfig& c, const float* logits, const int32_t* tokens, int64_t t, int64_t* experts,
             float* weights) const {
    sqrt_softplus_route(c, logits, t, experts, weights, [&](const float* s, int64_t* e) { choose(s, tokens, t, e); });
  }
};

static_assert(Router<HashRouter> && Router<TopKRouter> && Router<GroupLimitedRouter>);
using RouterVariant = std::variant<HashRouter, TopKRouter, GroupLimitedRouter>;

}  // namespace dsv4
