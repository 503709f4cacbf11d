#pragma once
// The attention kinds a layer can hold, chosen once at load from its LayerConfig.
// Adding a kind: one header with the policy, one entry in AttentionVariant and in
// make_attention; the static_assert below trips until both are done.
#include <concepts>
#include <string>
#include <type_traits>
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

// Calls f on each store of a layer's attention state, in a fixed order: the window ring
// (WindowState), the compressor's state, the indexer's compressor (CompressorState); for MLA its
// latent rows (std::vector<float>, [positions, c+dr]). What walks a cache (its byte count, the
// cache file, synthetic contexts) goes through here, so a new store is added in one place.
template <class State, class F>
  requires std::same_as<std::remove_const_t<State>, AttentionState>
void for_each_store(State& state, F&& f) {
  std::visit(
      [&](auto& st) {
        using S = std::remove_cvref_t<decltype(st)>;
        if constexpr (std::is_same_v<S, MlaAttention::State>) {
          f(st.latent);
        } else {
          f(st.window);
          if constexpr (!std::is_same_v<S, SlidingAttention::State>) f(st.compressor);
          if constexpr (std::is_same_v<S, CsaAttention::State>) f(st.index_keys);
        }
      },
      state);
}

}  // namespace dsv4
