#pragma once
// Synthetic checkpoints: the release layout (FP8 dense, FP4 or FP8 experts, BF16 and F32 where
// DeepSeek ships them) with random weights of realistic magnitude (each matrix ~ N(0, 1/K)), so
// speed can be measured at full size without the real weights, and so tests can build models of
// any shape. Tensors are streamed to disk shard by shard; memory use stays small. A DeepSeek-V3
// config gets V3's release layout: transformers names, FP8 with F32 weight_scale_inv tiles.
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "dsv4/io/config_json.hpp"
#include "dsv4/numeric/bf16.hpp"
#include "dsv4/numeric/e4m3.hpp"

namespace dsv4 {

// DeepSeek-V3's published config.json (671B), `layers` deep (< 0: all 61).
inline std::string preset_v3_config(int64_t layers) {
  const int64_t L = layers < 0 ? 61 : layers;
  if (L < 1 || L > 61) fail("synth: --layers must be in [1, 61] for v3");
  nlohmann::ordered_json c = {
      {"architectures", {"DeepseekV3ForCausalLM"}}, {"model_type", "deepseek_v3"}, {"vocab_size", 129280},
      {"hidden_size", 7168}, {"intermediate_size", 18432}, {"moe_intermediate_size", 2048},
      {"num_hidden_layers", L}, {"first_k_dense_replace", std::min<int64_t>(3, L)}, {"moe_layer_freq", 1},
      {"num_attention_heads", 128}, {"num_key_value_heads", 128}, {"q_lora_rank", 1536}, {"kv_lora_rank", 512},
      {"qk_nope_head_dim", 128}, {"qk_rope_head_dim", 64}, {"v_head_dim", 128}, {"n_routed_experts", 256},
      {"num_experts_per_tok", 8}, {"n_group", 8}, {"topk_group", 4}, {"n_shared_experts", 1},
      {"routed_scaling_factor", 2.5}, {"norm_topk_prob", true}, {"scoring_func", "sigmoid"},
      {"topk_method", "noaux_tc"}, {"hidden_act", "silu"}, {"rms_norm_eps", 1e-6}, {"rope_theta", 10000},
      {"rope_scaling", {{"type", "yarn"}, {"factor", 40}, {"original_max_position_embeddings", 4096},
                        {"beta_fast", 32}, {"beta_slow", 1}, {"mscale", 1.0}, {"mscale_all_dim", 1.0}}},
      {"max_position_embeddings", 163840}, {"bos_token_id", 0}, {"eos_token_id", 1},
      {"tie_word_embeddings", false},
      {"quantization_config", {{"quant_method", "fp8"}, {"fmt", "e4m3"}, {"activation_scheme", "dynamic"},
                               {"weight_block_size", {128, 128}}}}};
  return c.dump(2);
}

// config.json text (release style) of the published shapes. `layers` < 0 keeps the full depth.
inline std::string preset_config(const std::string& preset, int64_t layers) {
  if (preset == "v3") return preset_v3_config(layers);
  nlohmann::ordered_json c;
  int64_t full = 0;
  if (preset == "v4-flash") {
    full = 43;
    c = {{"hidden_size", 4096}, {"num_attention_heads", 64}, {"q_lora_rank", 1024}, {"o_groups", 8},
         {"n_routed_experts", 256}, {"moe_intermediate_size", 2048}, {"index_topk", 512}};
  } else if (preset == "v4-pro") {
    full = 61;
    c = {{"hidden_size", 7168}, {"num_attention_heads", 128}, {"q_lora_rank", 1536}, {"o_groups", 16},
         {"n_routed_experts", 384}, {"moe_intermediate_size", 3072}, {"index_topk", 1024}};
  } else {
    fail("synth: unknown preset '", preset, "' (v4-flash, v4-pro or v3)");
  }
  const int64_t L = layers < 0 ? full : layers;
  if (L < 1 || L > full) fail("synth: --layers must be in [1, ", full, "] for ", preset);
  std::vector<int64_t> ratios;
  for (int64_t i = 0; i < L; ++i) ratios.push_back(i < 2 ? 0 : (i % 2 == 0 ? 4 : 128));
  c["architectures"] = {"DeepseekV4ForCausalLM"};
  c["model_type"] = "deepseek_v4";
  c["vocab_size"] = 129280;
  c["num_hidden_layers"] = L;
  c["head_dim"] = 512;
  c["qk_rope_head_dim"] = 64;
  c["o_lora_rank"] = 1024;
  c["num_experts_per_tok"] = 6;
  c["n_shared_experts"] = 1;
  c["scoring_func"] = "sqrtsoftplus";
  c["routed_scaling_factor"] = 1.5;
  c["swiglu_limit"] = 10.0;
  c["num_hash_layers"] = std::min<int64_t>(3, L);
  c["sliding_window"] = 128;
  c["compress_ratios"] = ratios;
  c["index_n_heads"] = 64;
  c["index_head_dim"] = 128;
  c["hc_mult"] = 4;
  c["hc_sinkhorn_iters"] = 20;
  c["hc_eps"] = 1e-6;
  c["rms_norm_eps"] = 1e-6;
  c["rope_theta"] = 10000.0;
  c["compress_rope_theta"] = 160000.0;
  c["rope_scaling"] = {{"type", "yarn"}, {"factor", 16}, {"original_max_position_embeddings", 65536},
                       {"beta_fast", 32}, {"beta_slow", 1}};
  c["max_position_embeddings"] = 1048576;
  c["bos_token_id"] = 0;
  c["eos_token_id"] = 1;
  c["expert_dtype"] = "fp4";
  c["quantization_config"] = {{"quant_method", "fp8"}, {"fmt", "e4m3"}, {"scale_fmt", "ue8m0"},
                              {"weight_block_size", {128, 128}}, {"activation_scheme", "dynamic"}};
  return c.dump(2);
}

namespace synth_detail {

enum class Fill { Fp8, Fp8Scale, Fp8ScaleF32, Fp4, Fp4Scale, Bf16Normal, Bf16One, F32Normal, F32Small, Tid2eid };

struct Spec {
  std::string name;
  DType dtype;
  Shape shape;
  Fill fill;
  int64_t fan_in = 1;  // K of the logical matrix, for the scale
};

// Fast random bytes: codes drawn once from the target distribution, then picked at random.
struct Tables {
  std::vector<uint8_t> fp8, fp4;
  std::vector<float> normal;  // N(0, 1)
  explicit Tables(std::mt19937_64& rng) {
    std::normal_distribution<float> nd(0.f, 1.f);
    normal.resize(4096);
    for (auto& v : normal) v = nd(rng);
    fp8.resize(4096);
    for (auto& b : fp8) b = f32_to_e4m3(nd(rng) * 64.f);  // ~N(0, 64) in E4M3
    auto fp4_code = [&](float v) {
      static constexpr float mags[8] = {0, 0.5f, 1, 1.5f, 2, 3, 4, 6};
      int best = 0;
      for (int i = 1; i < 8; ++i)
        if (std::fabs(std::fabs(v) - mags[i]) < std::fabs(std::fabs(v) - mags[best])) best = i;
      return uint8_t(best | (v < 0 ? 8 : 0));
    };
    fp4.resize(4096);
    for (auto& b : fp4) b = uint8_t(fp4_code(nd(rng) * 2.f) | (fp4_code(nd(rng) * 2.f) << 4));  // ~N(0, 2)
  }
};

inline uint8_t e8m0_for(double scale) { return uint8_t(std::clamp(127.0 + std::round(std::log2(scale)), 0.0, 254.0)); }

}  // namespace synth_detail

struct SynthOptions {
  uint64_t seed = 0;
  bool fp8_experts = false;  // expert_dtype fp8 instead of fp4
};

// Writes config.json (the given text), one shard for embedding/head/hyper head and one per layer,
// and model.safetensors.index.json.
inline void write_synthetic_checkpoint(const std::filesystem::path& dir, const std::string& config_text,
                                       const SynthOptions& opt = {}) {
  using namespace synth_detail;
  const ModelConfig c = parse_config(config_text, "synth config");
  std::filesystem::create_directories(dir);
  {
    std::ofstream f(dir / "config.json");
    f << config_text;
    if (!f) fail((dir / "config.json").string(), ": write failed");
  }
  const int64_t bm = c.fp8_block_rows, bn = c.fp8_block_cols, D = c.hidden_size;
  const bool v3 = c.arch == Architecture::DeepseekV3;
  std::vector<std::vector<Spec>> shards(1);
  auto add = [&](Spec s) {
    if (v3) s.name = v3_transformers_name(s.name);  // V3 ships transformers names
    shards.back().push_back(std::move(s));
  };
  auto fp8 = [&](const std::string& p, int64_t n, int64_t k) {
    add({p + ".weight", DType::F8_E4M3, {n, k}, Fill::Fp8, k});
    const Shape tiles{(n + bm - 1) / bm, (k + bn - 1) / bn};
    if (v3) add({p + ".scale", DType::F32, tiles, Fill::Fp8ScaleF32, k});
    else add({p + ".scale", DType::F8_E8M0, tiles, Fill::Fp8Scale, k});
  };
  auto fp4 = [&](const std::string& p, int64_t n, int64_t k) {
    add({p + ".weight", DType::I8, {n, k / 2}, Fill::Fp4, k});
    add({p + ".scale", DType::F8_E8M0, {n, (k + 31) / 32}, Fill::Fp4Scale, k});
  };
  auto bf16 = [&](const std::string& name, Shape s, bool ones = false) {
    int64_t k = s.size() > 1 ? s[1] : 1;
    add({name, DType::BF16, std::move(s), ones ? Fill::Bf16One : Fill::Bf16Normal, k});
  };
  auto f32 = [&](const std::string& name, Shape s, Fill f = Fill::F32Small) {
    int64_t k = s.size() > 1 ? s[1] : 1;
    add({name, DType::F32, std::move(s), f, k});
  };
  bf16("embed.weight", {c.vocab_size, D});
  bf16("head.weight", {c.vocab_size, D});
  bf16("norm.weight", {D}, true);
  const int64_t n = c.hc_mult, mix = (2 + n) * n;
  const bool mhc = c.residual == ResidualKind::HyperConnections;
  if (mhc) {
    f32("hc_head_fn", {n, n * D}, Fill::F32Normal);
    f32("hc_head_base", {n});
    f32("hc_head_scale", {1});
  }
  for (int64_t l = 0; l < c.num_layers; ++l) {
    shards.emplace_back();
    const std::string p = "layers." + std::to_string(l);
    const LayerConfig& lc = c.layers[size_t(l)];
    for (const char* hc : {"hc_attn", "hc_ffn"}) {
      if (!mhc) break;
      f32(p + "." + hc + "_fn", {mix, n * D}, Fill::F32Normal);
      f32(p + "." + hc + "_base", {mix});
      f32(p + "." + hc + "_scale", {3});
    }
    bf16(p + ".attn_norm.weight", {D}, true);
    bf16(p + ".ffn_norm.weight", {D}, true);
    const std::string a = p + ".attn";
    if (lc.attention == AttentionKind::MLA) {
      const int64_t H = c.num_heads, dq = c.qk_nope_head_dim + c.rope_dim;
      if (c.q_lora_rank > 0) {
        fp8(a + ".wq_a", c.q_lora_rank, D);
        bf16(a + ".q_norm.weight", {c.q_lora_rank}, true);
        fp8(a + ".wq_b", H * dq, c.q_lora_rank);
      } else {
        fp8(a + ".wq", H * dq, D);
      }
      fp8(a + ".wkv_a", c.kv_lora_rank + c.rope_dim, D);
      bf16(a + ".kv_norm.weight", {c.kv_lora_rank}, true);
      fp8(a + ".wkv_b", H * (c.qk_nope_head_dim + c.v_head_dim), c.kv_lora_rank);
      fp8(a + ".wo", D, H * c.v_head_dim);
    } else {
      const int64_t hd = c.num_heads * c.head_dim;
      fp8(a + ".wq_a", c.q_lora_rank, D);
      bf16(a + ".q_norm.weight", {c.q_lora_rank}, true);
      fp8(a + ".wq_b", hd, c.q_lora_rank);
      fp8(a + ".wkv", c.head_dim, D);
      bf16(a + ".kv_norm.weight", {c.head_dim}, true);
      fp8(a + ".wo_a", c.o_groups * c.o_lora_rank, hd / c.o_groups);
      fp8(a + ".wo_b", D, c.o_groups * c.o_lora_rank);
      f32(a + ".attn_sink", {c.num_heads});
    }
    auto compressor = [&](const std::string& cp, int64_t width, bool overlap) {
      const int64_t w = overlap ? 2 * width : width;
      bf16(cp + ".wkv.weight", {w, D});
      bf16(cp + ".wgate.weight", {w, D});
      f32(cp + ".ape", {lc.compress_ratio, w});
      bf16(cp + ".norm.weight", {width}, true);
    };
    if (lc.attention == AttentionKind::CSA || lc.attention == AttentionKind::HCA)
      compressor(a + ".compressor", c.head_dim, lc.attention == AttentionKind::CSA);
    if (lc.attention == AttentionKind::CSA) {
      fp8(a + ".indexer.wq_b", c.index_n_heads * c.index_head_dim, c.q_lora_rank);
      bf16(a + ".indexer.weights_proj.weight", {c.index_n_heads, D});
      compressor(a + ".indexer.compressor", c.index_head_dim, true);
    }
    const std::string m = p + ".ffn";
    if (lc.ffn == FfnKind::Dense) {
      fp8(m + ".w1", c.intermediate_size, D), fp8(m + ".w2", D, c.intermediate_size), fp8(m + ".w3", c.intermediate_size, D);
      continue;
    }
    bf16(m + ".gate.weight", {c.n_routed_experts, D});
    if (lc.router == RouterKind::Hash) add({m + ".gate.tid2eid", DType::I32, {c.vocab_size, c.n_experts_per_tok}, Fill::Tid2eid});
    else f32(m + ".gate.bias", {c.n_routed_experts});
    const int64_t I = c.moe_intermediate_size;
    for (int64_t e = 0; e < c.n_routed_experts; ++e) {
      const std::string ep = m + ".experts." + std::to_string(e);
      auto expert = [&](const std::string& name, int64_t rows, int64_t cols) {
        opt.fp8_experts || v3 ? fp8(name, rows, cols) : fp4(name, rows, cols);
      };
      expert(ep + ".w1", I, D), expert(ep + ".w2", D, I), expert(ep + ".w3", I, D);
    }
    const int64_t Is = I * c.n_shared_experts;
    if (Is > 0) fp8(m + ".shared_experts.w1", Is, D), fp8(m + ".shared_experts.w2", D, Is), fp8(m + ".shared_experts.w3", Is, D);
  }

  std::mt19937_64 rng(opt.seed);
  Tables tables(rng);
  // Five 12-bit table indices per 64-bit draw.
  uint64_t bits = 0;
  int left = 0;
  auto pick = [&]() -> size_t {
    if (left == 0) bits = rng(), left = 5;
    --left;
    const size_t i = bits & 4095;
    bits >>= 12;
    return i;
  };
  nlohmann::ordered_json weight_map = nlohmann::ordered_json::object();
  std::vector<uint8_t> buf;
  for (size_t si = 0; si < shards.size(); ++si) {
    char fname[64];
    std::snprintf(fname, sizeof fname, "model-%05zu-of-%05zu.safetensors", si + 1, shards.size());
    nlohmann::ordered_json h = nlohmann::ordered_json::object();
    uint64_t off = 0;
    for (auto& s : shards[si]) {
      const uint64_t bytes = uint64_t(shape_numel(s.shape)) * dtype_bytes(s.dtype);
      h[s.name] = {{"dtype", std::string(dtype_name(s.dtype))}, {"shape", s.shape}, {"data_offsets", {off, off + bytes}}};
      off += bytes;
      weight_map[s.name] = fname;
    }
    std::string text = h.dump();
    while ((text.size() + 8) % 8) text.push_back(' ');
    std::ofstream f(dir / fname, std::ios::binary | std::ios::trunc);
    if (!f) fail((dir / fname).string(), ": cannot open for writing");
    uint64_t hn = text.size();
    for (int i = 0; i < 8; ++i) f.put(char(hn >> (8 * i)));
    f.write(text.data(), std::streamsize(text.size()));
    for (auto& s : shards[si]) {
      const int64_t numel = shape_numel(s.shape);
      buf.resize(size_t(numel) * dtype_bytes(s.dtype));
      const double inv_sqrt_k = 1.0 / std::sqrt(double(std::max<int64_t>(s.fan_in, 1)));
      switch (s.fill) {
        case Fill::Fp8:
          for (auto& b : buf) b = tables.fp8[pick()];
          break;
        case Fill::Fp4:
          for (auto& b : buf) b = tables.fp4[pick()];
          break;
        case Fill::Fp8Scale: std::fill(buf.begin(), buf.end(), e8m0_for(inv_sqrt_k / 64.0)); break;
        case Fill::Fp8ScaleF32:
          for (int64_t i = 0; i < numel; ++i) {  // varied per tile, so tile indexing matters
            const float v = float(inv_sqrt_k / 64.0 * (0.75 + 0.5 * double(i % 7) / 6.0));
            std::memcpy(&buf[size_t(4 * i)], &v, 4);
          }
          break;
        case Fill::Fp4Scale: std::fill(buf.begin(), buf.end(), e8m0_for(inv_sqrt_k / 2.0)); break;
        case Fill::Bf16Normal:
        case Fill::Bf16One:
          for (int64_t i = 0; i < numel; ++i) {
            const float v = s.fill == Fill::Bf16One ? 1.0f : float(tables.normal[pick()] * inv_sqrt_k);
            const uint16_t b = f32_to_bf16(v);
            buf[size_t(2 * i)] = uint8_t(b), buf[size_t(2 * i + 1)] = uint8_t(b >> 8);
          }
          break;
        case Fill::F32Normal:
        case Fill::F32Small:
          for (int64_t i = 0; i < numel; ++i) {
            const float v = float(tables.normal[pick()] * (s.fill == Fill::F32Normal ? inv_sqrt_k : 0.1));
            std::memcpy(&buf[size_t(4 * i)], &v, 4);
          }
          break;
        case Fill::Tid2eid: {
          // k distinct experts per token.
          const int64_t k = s.shape[1];
          for (int64_t t = 0; t < s.shape[0]; ++t) {
            const int64_t start = int64_t(rng() % uint64_t(c.n_routed_experts));
            for (int64_t j = 0; j < k; ++j) {
              const int32_t e = int32_t((start + j) % c.n_routed_experts);
              std::memcpy(&buf[size_t(4 * (t * k + j))], &e, 4);
            }
          }
          break;
        }
      }
      f.write(reinterpret_cast<const char*>(buf.data()), std::streamsize(buf.size()));
    }
    if (!f) fail((dir / fname).string(), ": write failed (disk full?)");
  }
  nlohmann::ordered_json index = {{"metadata", {{"generator", "dsv4 synth"}}}, {"weight_map", weight_map}};
  std::ofstream fi(dir / "model.safetensors.index.json");
  fi << index.dump(1);
  if (!fi) fail((dir / "model.safetensors.index.json").string(), ": write failed");
}

}  // namespace dsv4
