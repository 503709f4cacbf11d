#pragma once
// Runtime model description: everything config.json says. Nothing here changes an inner loop,
// so none of it is a template parameter (see DESIGN.md, "the one boundary that matters").
#include <cstdint>
#include <string>
#include <vector>

namespace dsv4 {

enum class AttentionKind : uint8_t { Sliding, CSA, HCA };
inline constexpr int kNumAttentionKinds = 3;
inline const char* attention_kind_name(AttentionKind k) {
  switch (k) {
    case AttentionKind::Sliding: return "sliding";
    case AttentionKind::CSA: return "csa";
    case AttentionKind::HCA: return "hca";
  }
  return "?";
}

enum class RouterKind : uint8_t { Hash, TopK };
inline const char* router_kind_name(RouterKind k) { return k == RouterKind::Hash ? "hash" : "topk"; }

struct YarnConfig {
  bool enabled = false;
  double factor = 1.0;
  double original_max_position_embeddings = 0;
  double beta_fast = 32.0;
  double beta_slow = 1.0;
};

struct RopeConfig {
  double theta = 10000.0;
  YarnConfig yarn;
};

struct LayerConfig {
  AttentionKind attention = AttentionKind::Sliding;
  int64_t compress_ratio = 0;  // m: 0 for sliding layers
  RouterKind router = RouterKind::TopK;
};

struct ModelConfig {
  std::string model_type;
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;          // D
  int64_t num_layers = 0;
  int64_t num_heads = 0;            // H
  int64_t head_dim = 0;             // d
  int64_t rope_dim = 0;             // r
  int64_t q_lora_rank = 0;
  int64_t o_groups = 0;
  int64_t o_lora_rank = 0;
  int64_t sliding_window = 0;
  int64_t index_n_heads = 0;
  int64_t index_head_dim = 0;
  int64_t index_topk = 0;
  int64_t n_routed_experts = 0;     // E
  int64_t n_experts_per_tok = 0;    // k
  int64_t moe_intermediate_size = 0;  // I
  int64_t n_shared_experts = 1;
  double routed_scaling_factor = 1.0;
  double swiglu_limit = 0.0;        // <= 0: no clamp
  int64_t hc_mult = 1;              // n
  int64_t hc_sinkhorn_iters = 1;
  double hc_eps = 1e-6;
  double rms_norm_eps = 1e-6;
  RopeConfig rope_main;             // sliding-only layers
  RopeConfig rope_compress;         // CSA/HCA layers, compressors, indexer
  int64_t fp8_block_rows = 128;     // quantization_config.weight_block_size
  int64_t fp8_block_cols = 128;
  int64_t bos_token_id = -1;
  int64_t eos_token_id = -1;
  std::vector<LayerConfig> layers;

  const RopeConfig& rope_for(AttentionKind k) const {
    return k == AttentionKind::Sliding ? rope_main : rope_compress;
  }
};

}  // namespace dsv4
