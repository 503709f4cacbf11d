#pragma once
// The weight bytes one decoded token reads: the roofline's numerator (dsv4 bench, CPU and CUDA).
#include <cstdint>

#include "dsv4/model/model.hpp"

namespace dsv4 {

// Every dense matrix, k routed experts per MoE layer (split over ranks: this rank's expected share
// of them), the head (or this rank's block) and one embedding row, in stored bytes.
inline int64_t active_bytes_per_token(const Model& m) {
  const ModelConfig& c = m.config();
  int64_t bytes = 0;
  auto add = [&](const char*, const Matrix& w) { bytes += storage_bytes(w); };
  for (const DecoderLayer& l : m.layers()) {
    std::visit([&](auto& at) { at.for_each_matrix(add); }, l.attn);
    for (auto* r : {&l.attn_residual, &l.ffn_residual})
      if (auto* hc = std::get_if<HyperConnection>(r)) add("", hc->fn);
    int64_t routed = 0, experts = 0;
    for_each_ffn_matrix(l.ffn, [&](const char*, const Matrix& w, bool is_routed) {
      if (is_routed) routed += storage_bytes(w), ++experts;
      else add("", w);
    });
    // k of the E experts (3 matrices each); this rank holds experts/3 of them.
    if (experts) bytes += routed / (experts / 3) * c.n_experts_per_tok * (experts / 3) / c.n_routed_experts;
  }
  add("", m.head());
  bytes += storage_bytes(m.embedding()) / c.vocab_size;
  return bytes;
}

}  // namespace dsv4
