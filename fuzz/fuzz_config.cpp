// libFuzzer target: dsv4::parse_config on arbitrary text. A dsv4::Error is the expected answer to
// bad input; any other exception, a crash, a sanitizer report, or an accepted config that breaks
// an invariant the forward pass relies on is a finding.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string_view>

#include "dsv4/io/config_json.hpp"
#include "dsv4/kernels/rope.hpp"

namespace {

void require(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "invariant broken: %s\n", what);
    __builtin_trap();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  dsv4::ModelConfig c;
  try {
    c = dsv4::parse_config(std::string_view(reinterpret_cast<const char*>(data), size), "fuzz/config.json");
  } catch (const dsv4::Error&) {
    return 0;
  }
  require(c.num_layers > 0 && int64_t(c.layers.size()) == c.num_layers, "one LayerConfig per layer");
  require(c.vocab_size > 0 && c.hidden_size > 0 && c.num_heads > 0 && c.head_dim > 0, "positive sizes");
  require(c.n_experts_per_tok > 0 && c.n_experts_per_tok <= c.n_routed_experts, "0 < k <= E");
  require(c.rms_norm_eps > 0 && c.hc_eps >= 0, "eps");
  require(c.fp8_block_rows > 0 && c.fp8_block_cols > 0, "fp8 block size");
  bool any_mla = false;
  for (const auto& l : c.layers) any_mla |= l.attention == dsv4::AttentionKind::MLA;
  if (any_mla)
    require(c.kv_lora_rank > 0 && c.v_head_dim > 0 && c.qk_nope_head_dim >= 0 && c.rope_dim > 0 && c.rope_dim % 2 == 0,
            "MLA sizes");
  if (c.arch == dsv4::Architecture::DeepseekV3) {
    require(c.residual == dsv4::ResidualKind::Plain && c.hc_mult == 1, "V3: one plain residual stream");
    require(c.q_lora_rank >= 0 && c.moe_intermediate_size > 0 && c.intermediate_size > 0, "V3 sizes");
    require(c.n_group > 0 && c.n_routed_experts % c.n_group == 0 && c.topk_group > 0 && c.topk_group <= c.n_group,
            "V3 expert groups");
    require(c.n_experts_per_tok <= c.topk_group * (c.n_routed_experts / c.n_group), "V3: k experts in the kept groups");
    for (const auto& l : c.layers)
      require(l.attention == dsv4::AttentionKind::MLA && l.router == dsv4::RouterKind::GroupLimited, "V3 layers");
  } else {
    require(c.q_lora_rank > 0 && c.o_lora_rank > 0 && c.sliding_window > 0 && c.moe_intermediate_size > 0, "positive sizes");
    require(c.o_groups > 0 && (c.num_heads * c.head_dim) % c.o_groups == 0, "o_groups divides H*d");
    require(c.hc_mult > 0 && c.hc_sinkhorn_iters > 0, "hyper-connection sizes");
    require(c.rope_dim >= 0 && c.rope_dim % 2 == 0 && c.rope_dim <= c.head_dim, "rope dims");
    for (const auto& l : c.layers) {
      const bool compressed = l.attention == dsv4::AttentionKind::CSA || l.attention == dsv4::AttentionKind::HCA;
      require(!compressed || l.compress_ratio > 0, "compressed layers have a ratio");
      if (l.attention == dsv4::AttentionKind::CSA)
        require(c.index_n_heads > 0 && c.index_head_dim >= c.rope_dim && c.index_topk > 0, "indexer sizes");
    }
  }
  // The rope tables the model builds from it.
  const dsv4::RopeTable main_table(c.rope_main, c.rope_dim), compress_table(c.rope_compress, c.rope_dim);
  require(int64_t(main_table.inv_freq().size()) * 2 == c.rope_dim, "rope table size");
  require(int64_t(compress_table.inv_freq().size()) * 2 == c.rope_dim, "rope table size");
  return 0;
}
