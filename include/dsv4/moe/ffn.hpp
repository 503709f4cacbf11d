#pragma once
// The feed-forward part of a layer, chosen once at load from its LayerConfig: a mixture of experts
// (with whichever router the layer names) or a dense MLP.
#include <string>
#include <variant>

#include "dsv4/moe/dense_mlp.hpp"
#include "dsv4/moe/moe.hpp"

namespace dsv4 {

using FfnVariant = std::variant<MoeWeights, DenseMlp>;

inline FfnVariant make_ffn(const WeightSource& ws, const std::string& prefix, const ModelConfig& c, int64_t layer,
                           const Distribution& dist = {}) {
  const LayerConfig& l = c.layers[size_t(layer)];
  switch (l.ffn) {
    case FfnKind::Moe: return MoeWeights::load(ws, prefix, c, l, dist);
    case FfnKind::Dense: return DenseMlp::load(ws, prefix, c, dist.tensor_shard());
  }
  fail("layer ", layer, ": unknown feed-forward kind");
}

// Visits every matrix of the feed-forward part: f(name, matrix, routed), routed = true for the
// routed experts' matrices (a token reads k of the E experts).
template <class F>
void for_each_ffn_matrix(const FfnVariant& v, F&& f) {
  if (auto* d = std::get_if<DenseMlp>(&v)) {
    d->for_each_matrix([&](const char* name, const Matrix& m) { f(name, m, false); });
    return;
  }
  const MoeWeights& m = std::get<MoeWeights>(v);
  f("gate", m.gate, false);
  for (auto& e : m.shared) f("shared.w1", e.w1, false), f("shared.w2", e.w2, false), f("shared.w3", e.w3, false);
  for (auto& e : m.experts) f("expert.w1", e.w1, true), f("expert.w2", e.w2, true), f("expert.w3", e.w3, true);
}

// out [T, D] = ffn(x [T, D]); tokens [T] are the input ids (hash routing reads them). comm: the
// ranks a MoE layer's experts (or a split dense MLP's width) are split over (null when one
// process holds them all).
template <KernelBundle B>
void ffn_forward(const FfnVariant& f, const ModelConfig& c, const float* x, const int32_t* tokens, int64_t t,
                 float* out, Communicator* comm = nullptr) {
  if (auto* moe = std::get_if<MoeWeights>(&f)) return moe_forward<B>(*moe, c, x, tokens, t, out, comm);
  const DenseMlp& mlp = std::get<DenseMlp>(f);
  mlp.forward<B>(c, x, tokens, t, out);
  if (mlp.split && comm) allreduce_sum(*comm, out, t * c.hidden_size);
}

}  // namespace dsv4
