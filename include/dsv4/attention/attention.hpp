#pragma once
// The attention kinds a layer can hold, chosen once at load from its LayerConfig.
// Adding a kind: one header with the policy, one entry in AttentionVariant and in
// make_attention; the static_assert below trips until both are done.
#include <concepts>
#include <string>
#include <variant>
#include <vector>

#include "dsv4/attention/csa.hpp"
#include "dsv4/attention/hca.hpp"
#include "dsv4/attention/mla.hpp"
#include "dsv4/attention/sliding.hpp"

namespace dsv4 {

template <class P>
concept AttentionPolicy = requires(const P& p, const ModelConfig& c, const LayerConfig& l, const WeightSource& ws,
                                   const TensorShard& tp) {
  typename P::State;
  { P::can_implement(c, l) } -> std::convertible_to<std::string>;
  { P::load(ws, std::string(), c, l, tp) } -> std::same_as<P>;  // tp: this rank's share of the heads
  { p.new_state(c, CacheType::F32) } -> std::same_as<typename P::State>;
};

using AttentionVariant = std::variant<SlidingAttention, CsaAttention, HcaAttention, MlaAttention>;
using AttentionState =
    std::variant<SlidingAttention::State, CsaAttention::State, HcaAttention::State, MlaAttention::State>;
static_assert(std::variant_size_v<AttentionVariant> == kNumAttentionKinds,
              "a new AttentionKind needs its policy in AttentionVariant and a case in make_attention");
static_assert(AttentionPolicy<SlidingAttention> && AttentionPolicy<CsaAttention> && AttentionPolicy<HcaAttention> &&
              AttentionPolicy<MlaAttention>);

template <AttentionPolicy P>
AttentionVariant load_attention(const WeightSource& ws, const std::string& prefix, const ModelConfig& c,
                                const LayerConfig& l, int64_t layer, const TensorShard& tp) {
  if (std::string why = P::can_implement(c, l); !why.empty()) fail("layer ", layer, ": ", why);
  return P::load(ws, prefix, c, l, tp);
}

// tp: the share of the layer's heads this rank holds (all of them by default).
inline AttentionVariant make_attention(const WeightSource& ws, const std::string& prefix, const ModelConfig& c,
                                       int64_t layer, const TensorShard& tp = {}) {
  const LayerConfig& l = c.layers[size_t(layer)];
  switch (l.attention) {
    case AttentionKind::Sliding: return load_attention<SlidingAttention>(ws, prefix, c, l, layer, tp);
    case AttentionKind::CSA: return load_attention<CsaAttention>(ws, prefix, c, l, layer, tp);
    case AttentionKind::HCA: return load_attention<HcaAttention>(ws, prefix, c, l, layer, tp);
    case AttentionKind::MLA: return load_attention<MlaAttention>(ws, prefix, c, l, layer, tp);
  }
  fail("layer ", layer, ": unknown attention kind");
}

inline AttentionState new_attention_state(const AttentionVariant& a, const ModelConfig& c, CacheType t) {
  return std::visit([&](auto& p) -> AttentionState { return p.new_state(c, t); }, a);
}

}  // namespace dsv4
