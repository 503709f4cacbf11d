#pragma once
// Runtime model description: everything config.json says. Nothing here changes an inner loop,
// so none of it is a template parameter (see DESIGN.md, "the one boundary that matters").
// DeepSeek-V4 and DeepSeek-V3 are two assemblies of the same parts: each layer names its
// attention kind, router and feed-forward kind; the model names its residual wiring.
#include <cstdint>
#include <string>
#include <vector>

namespace dsv4 {

enum class Architecture : uint8_t { DeepseekV4, DeepseekV3 };

enum class AttentionKind : uint8_t { Sliding, CSA, HCA, MLA };
inline constexpr int kNumAttentionKinds = 4;
inline const char* attention_kind_name(AttentionKind k) {
  switch (k) {
    case AttentionKind::Sliding: return "sliding";
    case AttentionKind::CSA: return "csa";
    case AttentionKind::HCA: return "hca";
    case AttentionKind::MLA: return "mla";
  }
  return "?";
}

// Hash and TopK: DeepSeek-V4 (sqrt-softplus scores); GroupLimited: DeepSeek-V3 (sigmoid scores,
// group-limited top-k).
enum class RouterKind : uint8_t { Hash, TopK, GroupLimited };
inline const char* router_kind_name(RouterKind k) {
  switch (k) {
    case RouterKind::Hash: return "hash";
    case RouterKind::TopK: return "topk";
    case RouterKind::GroupLimited: return "group";
  }
  return "?";
}

// Moe: routed experts + shared expert; Dense: one SwiGLU MLP of width intermediate_size
// (DeepSeek-V3's first_k_dense_replace layers).
enum class FfnKind : uint8_t { Moe, Dense };
inline const char* ffn_kind_name(FfnKind k) { return k == FfnKind::Moe ? "moe" : "dense"; }

// HyperConnections: V4's n mHC streams; Plain: V3's single pre-norm residual h += f(rms(h)).
enum class ResidualKind : uint8_t { HyperConnections, Plain };

struct YarnConfig {
  bool enabled = false;
  double factor = 1.0;
  double original_max_position_embeddings = 0;
  double beta_fast = 32.0;
  double beta_slow = 1.0;
  // DeepSeek-V3 only: the rotation amplitude ms(factor, mscale) / ms(factor, mscale_all_dim) and
  // the score factor ms(factor, mscale_all_dim)^2 (0 = not given). V4's tables ignore them.
  double mscale = 0.0;
  double mscale_all_dim = 0.0;
  double attention_factor = 0.0;  // transformers' explicit amplitude, when given (MLA only)
  bool truncate = true;           // round the correction range outward (transformers' "truncate")
};

struct RopeConfig {
  double theta = 10000.0;
  YarnConfig yarn;
};

struct LayerConfig {
  AttentionKind attention = AttentionKind::Sliding;
  int64_t compress_ratio = 0;  // m: 0 for sliding layers
  RouterKind router = RouterKind::TopK;
  FfnKind ffn = FfnKind::Moe;
};

struct ModelConfig {
  std::string model_type;
  Architecture arch = Architecture::DeepseekV4;
  ResidualKind residual = ResidualKind::HyperConnections;
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;          // D
  int64_t num_layers = 0;
  int64_t num_heads = 0;            // H
  int64_t head_dim = 0;             // d (MLA: dn + dr, the query/key width)
  int64_t rope_dim = 0;             // r (MLA: dr)
  int64_t q_lora_rank = 0;          // MLA: 0 = a plain q_proj
  int64_t o_groups = 0;
  int64_t o_lora_rank = 0;
  int64_t sliding_window = 0;
  int64_t index_n_heads = 0;
  int64_t index_head_dim = 0;
  int64_t index_topk = 0;
  int64_t n_routed_experts = 0;     // E
  int64_t n_experts_per_tok = 0;    // k
  int64_t moe_intermediate_size = 0;  // I
  int64_t n_shared_experts = 1;     // the shared expert is n_shared_experts × I wide
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
  // MLA (DeepSeek-V3 layers, or MLA layers of a hybrid).
  int64_t kv_lora_rank = 0;         // c: latent width cached per token (plus dr rope values)
  int64_t qk_nope_head_dim = 0;     // dn
  int64_t v_head_dim = 0;           // dv
  bool rope_interleave = true;      // rope pairs (2i, 2i+1); false: (i, i + r/2)
  // DeepSeek-V3 routing and dense layers.
  int64_t intermediate_size = 0;    // dense MLP width
  int64_t n_group = 1;              // G expert groups
  int64_t topk_group = 1;           // TG groups kept
  bool norm_topk_prob = true;
  int64_t bos_token_id = -1;
  int64_t eos_token_id = -1;
  int64_t max_position_embeddings = 0;  // the context the model is made for (0: config.json does not say)
  std::vector<LayerConfig> layers;

  // MLA layers use the main table (V3's only one, with its YaRN).
  const RopeConfig& rope_for(AttentionKind k) const {
    return k == AttentionKind::Sliding || k == AttentionKind::MLA ? rope_main : rope_compress;
  }
};

}  // namespace dsv4
