// Shapes other than the golden cases: synthetic release-layout checkpoints with odd head counts,
// n != 4 streams, other compress ratios, partial FP8 tiles, tiny windows, and DeepSeek-V3 ones. The one-pass logits must
// equal any chunking, batched rows must equal single rows, and fast mode must match reference.
#include <catch2/catch.hpp>
#include <filesystem>
#include <random>

#include "golden.hpp"

using namespace dsv4;
using dsv4::testing::max_abs_diff;
using dsv4::testing::run_in_chunks;

namespace {

struct Case {
  const char* name;
  const char* json;
};

// Configs (V4 release style, V3); the synth writer derives every tensor from them.
const Case kShapes[] = {
    {"odd heads, 3 streams, HCA ratio 8, partial FP8 tiles",
     R"({"vocab_size": 300, "hidden_size": 72, "num_hidden_layers": 4, "num_attention_heads": 3, "head_dim": 40,
         "qk_rope_head_dim": 10, "q_lora_rank": 36, "o_groups": 3, "o_lora_rank": 20, "sliding_window": 7,
         "index_n_heads": 5, "index_head_dim": 24, "index_topk": 3, "n_routed_experts": 5, "num_experts_per_tok": 3,
         "moe_intermediate_size": 48, "n_shared_experts": 1, "routed_scaling_factor": 2.0, "swiglu_limit": 0.8,
         "hc_mult": 3, "hc_sinkhorn_iters": 7, "hc_eps": 1e-6, "rms_norm_eps": 1e-6, "rope_theta": 10000.0,
         "compress_rope_theta": 50000.0, "rope_scaling": {"type": "yarn", "factor": 8, "original_max_position_embeddings": 32,
         "beta_fast": 32, "beta_slow": 1}, "compress_ratios": [8, 4, 0, 4, 128], "num_hash_layers": 1,
         "quantization_config": {"weight_block_size": [32, 32]}})"},
    {"one stream, window 1, no shared expert, no clamp, HCA ratio 3",
     R"({"vocab_size": 200, "hidden_size": 64, "num_hidden_layers": 3, "num_attention_heads": 2, "head_dim": 32,
         "qk_rope_head_dim": 8, "q_lora_rank": 32, "o_groups": 1, "o_lora_rank": 16, "sliding_window": 1,
         "index_n_heads": 2, "index_head_dim": 16, "index_topk": 2, "n_routed_experts": 4, "num_experts_per_tok": 1,
         "moe_intermediate_size": 32, "n_shared_experts": 0, "routed_scaling_factor": 1.0, "swiglu_limit": 0,
         "hc_mult": 1, "hc_sinkhorn_iters": 1, "hc_eps": 1e-6, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
         "compress_ratios": [4, 3, 0], "num_hash_layers": 0,
         "quantization_config": {"weight_block_size": [16, 48]}})"},
    // DeepSeek-V3 assemblies (MLA, group-limited routing, dense layers, plain residual): the
    // one-pass reference expands keys and values, the chunked and one-token runs absorb them.
    {"V3: odd heads, plain q_proj, split-half rope, mscale amplitude, 2 shared experts, partial FP8 tiles",
     R"({"model_type": "deepseek_v3", "vocab_size": 300, "hidden_size": 72, "intermediate_size": 100,
         "moe_intermediate_size": 40, "num_hidden_layers": 3, "first_k_dense_replace": 1, "num_attention_heads": 3,
         "q_lora_rank": null, "kv_lora_rank": 40, "qk_nope_head_dim": 12, "qk_rope_head_dim": 6, "v_head_dim": 20,
         "n_routed_experts": 6, "num_experts_per_tok": 2, "n_group": 3, "topk_group": 2, "n_shared_experts": 2,
         "routed_scaling_factor": 1.5, "norm_topk_prob": false, "rms_norm_eps": 1e-6, "rope_theta": 10000,
         "rope_interleave": false, "rope_scaling": {"type": "yarn", "factor": 8, "original_max_position_embeddings": 16,
         "beta_fast": 32, "beta_slow": 1, "mscale": 0.7, "mscale_all_dim": 1.0},
         "quantization_config": {"weight_block_size": [32, 32]}})"},
    {"V3: q_lora, MoE every other layer, one expert group, no shared expert, 16x48 tiles",
     R"({"model_type": "deepseek_v3", "vocab_size": 200, "hidden_size": 64, "intermediate_size": 80,
         "moe_intermediate_size": 24, "num_hidden_layers": 4, "first_k_dense_replace": 0, "moe_layer_freq": 2,
         "num_attention_heads": 5, "q_lora_rank": 36, "kv_lora_rank": 24, "qk_nope_head_dim": 8,
         "qk_rope_head_dim": 4, "v_head_dim": 8, "n_routed_experts": 4, "num_experts_per_tok": 3, "n_group": 1,
         "topk_group": 1, "n_shared_experts": 0, "routed_scaling_factor": 2.5, "rms_norm_eps": 1e-5,
         "rope_theta": 50000, "quantization_config": {"weight_block_size": [16, 48]}})"},
};

}  // namespace

TEST_CASE("other shapes: chunking, batching and fast mode agree with one reference pass", "[shapes]") {
  for (const Case& shape : kShapes) {
    INFO(shape.name);
    const auto dir = std::filesystem::temp_directory_path() / ("dsv4_shapes_" + std::to_string(::getpid()));
    std::filesystem::remove_all(dir);
    SynthOptions opt;
    opt.seed = 3;
    write_synthetic_checkpoint(dir, shape.json, opt);
    const Model m = Model::load(dir);
    std::mt19937 rng(5);
    std::vector<int32_t> ids(70);
    for (auto& t : ids) t = int32_t(rng() % uint32_t(m.config().vocab_size));
    const auto one = run_in_chunks(m, ids, {});
    for (float v : one) REQUIRE(std::isfinite(v));
    CHECK(max_abs_diff(run_in_chunks(m, ids, {5, 9, 2}), one) < 1e-3);
    CHECK(max_abs_diff(run_in_chunks(m, ids, {1, 17, 33}), one) < 1e-3);
    CHECK(max_abs_diff(run_in_chunks<FastCpu>(m, ids, {}), one) < 5e-2);
    CHECK(max_abs_diff(run_in_chunks<FastCpu>(m, ids, {6, 11}), one) < 5e-2);
    // Two rows of different lengths in one call equal each row alone.
    const int64_t V = m.config().vocab_size;
    SequenceCache a = m.new_cache(), b = m.new_cache();
    std::span<const int32_t> all(ids);
    std::vector<SequenceInput> batch{{&a, all.first(40)}, {&b, all.subspan(40)}};
    std::vector<float> logits;
    m.forward<Fp32Reference>(batch, logits, LogitRows::All);
    std::vector<float> first(logits.begin(), logits.begin() + 40 * V);
    CHECK(max_abs_diff(first, std::vector<float>(one.begin(), one.begin() + 40 * V)) < 1e-3);
    std::vector<float> second(logits.begin() + 40 * V, logits.end());
    CHECK(max_abs_diff(second, run_in_chunks(m, all.subspan(40), {})) < 1e-3);
    std::filesystem::remove_all(dir);
  }
}
