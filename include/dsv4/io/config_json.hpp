#pragma once
// config.json → ModelConfig, the architecture chosen by model_type. DeepSeek-V4: both spellings
// load, the release style DeepSeek ships (compress_ratios, num_hash_layers, rope_scaling) and the
// transformers style (layer_types, compress_rates, mlp_layer_types, rope_parameters).
// DeepSeek-V3 (model_type deepseek_v3): the one spelling both DeepSeek and transformers use.
// Every problem is an Error naming the file and key.
#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "dsv4/io/checkpoint.hpp"
#include "dsv4/model/config.hpp"

namespace dsv4 {

namespace config_detail {

struct Reader {
  const nlohmann::json& j;
  std::string where;  // "path" or "path: key"

  const nlohmann::json* find(const char* key) const {
    auto it = j.find(key);
    return (it == j.end() || it->is_null()) ? nullptr : &*it;
  }
  [[noreturn]] void bad(const char* key, const char* what) const { fail(where, ": key '", key, "' ", what); }

  int64_t integer(const char* key) const {
    auto* v = find(key);
    if (!v) bad(key, "is missing");
    if (v->is_number_integer()) return v->get<int64_t>();
    if (v->is_number_float()) {
      double d = v->get<double>();
      if (std::isfinite(d) && d == std::floor(d) && std::fabs(d) < 9e15) return int64_t(d);
    }
    bad(key, "must be an integer");
  }
  int64_t integer(const char* key, int64_t def) const { return find(key) ? integer(key) : def; }
  double number(const char* key) const {
    auto* v = find(key);
    if (!v) bad(key, "is missing");
    if (!v->is_number()) bad(key, "must be a number");
    double d = v->get<double>();
    if (!std::isfinite(d)) bad(key, "must be finite");
    return d;
  }
  double number(const char* key, double def) const { return find(key) ? number(key) : def; }
  bool boolean(const char* key, bool def) const {
    auto* v = find(key);
    if (!v) return def;
    if (!v->is_boolean()) bad(key, "must be true or false");
    return v->get<bool>();
  }
  std::string string(const char* key, std::string def) const {
    auto* v = find(key);
    if (!v) return def;
    if (!v->is_string()) bad(key, "must be a string");
    return v->get<std::string>();
  }
  Reader object(const char* key) const {
    auto* v = find(key);
    if (!v || !v->is_object()) bad(key, "must be an object");
    return Reader{*v, where + ": " + key};
  }
  const nlohmann::json& array(const char* key) const {
    auto* v = find(key);
    if (!v || !v->is_array()) bad(key, "must be an array");
    return *v;
  }
};

inline YarnConfig read_yarn(const Reader& r) {
  YarnConfig y;
  std::string type = r.string("rope_type", r.string("type", "default"));
  if (type == "default" || type == "none") return y;
  if (type != "yarn") fail(r.where, ": unsupported rope type '", type, "' (expected 'yarn' or 'default')");
  y.enabled = true;
  y.factor = r.number("factor");
  y.original_max_position_embeddings = r.number("original_max_position_embeddings");
  y.beta_fast = r.number("beta_fast", 32.0);
  y.beta_slow = r.number("beta_slow", 1.0);
  if (!(y.factor > 0)) r.bad("factor", "must be > 0");
  if (!(y.original_max_position_embeddings > 0)) r.bad("original_max_position_embeddings", "must be > 0");
  if (!(y.beta_fast > 0) || !(y.beta_slow > 0)) r.bad("beta_fast", "and beta_slow must be > 0");
  y.mscale = r.number("mscale", 0.0);
  y.mscale_all_dim = r.number("mscale_all_dim", 0.0);
  y.attention_factor = r.number("attention_factor", 0.0);
  y.truncate = r.boolean("truncate", true);
  if (y.mscale < 0 || y.mscale_all_dim < 0) r.bad("mscale", "and mscale_all_dim must be >= 0");
  if (y.attention_factor < 0) r.bad("attention_factor", "must be >= 0");
  return y;
}

// quantization_config.weight_block_size, when given.
inline void read_block_size(const Reader& r, ModelConfig& c) {
  if (!r.find("quantization_config")) return;
  Reader qr = r.object("quantization_config");
  if (!qr.find("weight_block_size")) return;
  auto& b = qr.array("weight_block_size");
  if (b.size() != 2 || !b[0].is_number_integer() || !b[1].is_number_integer() || b[0].get<int64_t>() <= 0 ||
      b[1].get<int64_t>() <= 0 || b[0].get<int64_t>() > (1 << 20) || b[1].get<int64_t>() > (1 << 20))
    fail(qr.where, ": key 'weight_block_size' must be two positive integers");
  c.fp8_block_rows = b[0].get<int64_t>();
  c.fp8_block_cols = b[1].get<int64_t>();
}

// The MLA sizes (DeepSeek-V3, or MLA layers of a hybrid): c, dn, dv; dr is qk_rope_head_dim.
inline void read_mla(const Reader& r, ModelConfig& c) {
  c.kv_lora_rank = r.integer("kv_lora_rank");
  c.qk_nope_head_dim = r.integer("qk_nope_head_dim");
  c.v_head_dim = r.integer("v_head_dim");
  c.rope_interleave = r.boolean("rope_interleave", true);
  auto in_range = [&](const char* key, int64_t v, int64_t lo) {
    if (v < lo || v > (1 << 16)) fail(r.where, ": key '", key, "' = ", v, " must be in [", lo, ", 65536]");
  };
  in_range("kv_lora_rank", c.kv_lora_rank, 1);
  in_range("qk_nope_head_dim", c.qk_nope_head_dim, 0);
  in_range("v_head_dim", c.v_head_dim, 1);
}

// DeepSeek-V3 (transformers' DeepseekV3Config; DeepSeek's release spells it the same): MLA in every
// layer, dense MLPs in the first first_k_dense_replace layers, sigmoid group-limited routing
// elsewhere, one plain residual stream.
inline ModelConfig parse_v3(const Reader& r, ModelConfig c) {
  const std::string& path = r.where;
  c.arch = Architecture::DeepseekV3;
  c.residual = ResidualKind::Plain;
  c.hc_mult = 1;
  c.hc_sinkhorn_iters = 1;
  c.hc_eps = 0.0;
  c.swiglu_limit = 0.0;  // V3 experts have no clamp
  c.vocab_size = r.integer("vocab_size");
  c.hidden_size = r.integer("hidden_size");
  c.num_layers = r.integer("num_hidden_layers");
  c.num_heads = r.integer("num_attention_heads");
  c.q_lora_rank = r.integer("q_lora_rank", 0);  // null: a plain q_proj
  read_mla(r, c);
  c.rope_dim = r.integer("qk_rope_head_dim");
  c.head_dim = c.qk_nope_head_dim + c.rope_dim;
  c.intermediate_size = r.integer("intermediate_size");
  c.moe_intermediate_size = r.integer("moe_intermediate_size");
  c.n_routed_experts = r.integer("n_routed_experts");
  c.n_experts_per_tok = r.integer("num_experts_per_tok");
  c.n_shared_experts = r.integer("n_shared_experts", 0);
  c.n_group = r.integer("n_group", 1);
  c.topk_group = r.integer("topk_group", 1);
  c.norm_topk_prob = r.boolean("norm_topk_prob", true);
  c.routed_scaling_factor = r.number("routed_scaling_factor", 1.0);
  c.rms_norm_eps = r.number("rms_norm_eps");
  c.bos_token_id = r.integer("bos_token_id", -1);
  c.eos_token_id = r.integer("eos_token_id", -1);
  c.max_position_embeddings = r.integer("max_position_embeddings", 0);
  if (c.max_position_embeddings < 0) r.bad("max_position_embeddings", "must be >= 0");
  if (std::string f = r.string("scoring_func", "sigmoid"); f != "sigmoid")
    fail(path, ": key 'scoring_func' is '", f, "'; DeepSeek-V3 uses 'sigmoid'");
  if (std::string m = r.string("topk_method", "noaux_tc"); m != "noaux_tc")
    fail(path, ": key 'topk_method' is '", m, "'; DeepSeek-V3 uses 'noaux_tc' (group-limited top-k with bias)");
  if (std::string a = r.string("hidden_act", "silu"); a != "silu")
    fail(path, ": key 'hidden_act' is '", a, "'; DeepSeek-V3 uses 'silu'");
  if (r.boolean("tie_word_embeddings", false)) r.bad("tie_word_embeddings", "is true; DeepSeek-V3 has its own lm_head");
  if (c.num_layers <= 0 || c.num_layers > 100000) r.bad("num_hidden_layers", "must be in [1, 100000]");

  c.rope_main.theta = r.number("rope_theta", 10000.0);
  if (r.find("rope_parameters")) {  // transformers >= 5
    Reader rp = r.object("rope_parameters");
    c.rope_main.theta = rp.number("rope_theta", c.rope_main.theta);
    c.rope_main.yarn = read_yarn(rp);
  } else if (r.find("rope_scaling")) {
    c.rope_main.yarn = read_yarn(r.object("rope_scaling"));
  }
  c.rope_compress = c.rope_main;
  read_block_size(r, c);

  const int64_t first_dense = r.integer("first_k_dense_replace", 0), freq = r.integer("moe_layer_freq", 1);
  if (first_dense < 0) r.bad("first_k_dense_replace", "must be >= 0");
  if (freq < 1) r.bad("moe_layer_freq", "must be >= 1");
  for (int64_t i = 0; i < c.num_layers; ++i) {  // layers past num_hidden_layers (MTP) are not read
    LayerConfig l;
    l.attention = AttentionKind::MLA;
    l.router = RouterKind::GroupLimited;
    l.ffn = i >= first_dense && i % freq == 0 ? FfnKind::Moe : FfnKind::Dense;
    c.layers.push_back(l);
  }

  auto positive = [&](const char* key, int64_t v, int64_t max = int64_t(1) << 24) {
    if (v <= 0 || v > max) fail(path, ": key '", key, "' = ", v, " must be in [1, ", max, "]");
  };
  positive("vocab_size", c.vocab_size, int64_t(1) << 26);
  positive("hidden_size", c.hidden_size);
  positive("num_attention_heads", c.num_heads, 1 << 16);
  positive("intermediate_size", c.intermediate_size);
  positive("moe_intermediate_size", c.moe_intermediate_size);
  positive("n_routed_experts", c.n_routed_experts, 1 << 20);
  positive("num_experts_per_tok", c.n_experts_per_tok, 1 << 20);
  positive("n_group", c.n_group, 1 << 20);
  positive("topk_group", c.topk_group, 1 << 20);
  if (c.q_lora_rank < 0 || c.q_lora_rank > (1 << 24)) r.bad("q_lora_rank", "must be null or in [1, 2^24]");
  if (c.n_shared_experts < 0 || c.n_shared_experts > 1024) r.bad("n_shared_experts", "must be in [0, 1024]");
  if (c.rope_dim <= 0 || c.rope_dim % 2 || c.rope_dim > (1 << 16))
    fail(path, ": key 'qk_rope_head_dim' = ", c.rope_dim, " must be even and in [2, 65536]");
  if (c.n_routed_experts % c.n_group)
    fail(path, ": key 'n_group' = ", c.n_group, " does not divide n_routed_experts = ", c.n_routed_experts);
  if (c.topk_group > c.n_group)
    fail(path, ": key 'topk_group' = ", c.topk_group, " exceeds n_group = ", c.n_group);
  if (c.n_experts_per_tok > c.topk_group * (c.n_routed_experts / c.n_group))
    fail(path, ": key 'num_experts_per_tok' = ", c.n_experts_per_tok, " exceeds the ", c.topk_group * (c.n_routed_experts / c.n_group),
         " experts of topk_group = ", c.topk_group, " groups");
  if (!(c.rms_norm_eps > 0)) r.bad("rms_norm_eps", "must be > 0");
  if (!(c.rope_main.theta > 1)) r.bad("rope_theta", "must be > 1");
  return c;
}

}  // namespace config_detail

inline ModelConfig parse_config(std::string_view text, const std::string& path = "config.json") {
  using config_detail::Reader;
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    fail(path, ": invalid JSON: ", e.what());
  }
  if (!j.is_object()) fail(path, ": not a JSON object");
  Reader r{j, path};
  ModelConfig c;
  c.model_type = r.string("model_type", "deepseek_v4");
  if (c.model_type == "deepseek_v3") return config_detail::parse_v3(r, std::move(c));
  if (c.model_type != "deepseek_v4")
    fail(path, ": key 'model_type' is '", c.model_type, "'; this build runs 'deepseek_v4' and 'deepseek_v3'");
  c.vocab_size = r.integer("vocab_size");
  c.hidden_size = r.integer("hidden_size");
  c.num_layers = r.integer("num_hidden_layers");
  c.num_heads = r.integer("num_attention_heads");
  c.head_dim = r.integer("head_dim");
  c.q_lora_rank = r.integer("q_lora_rank");
  c.o_groups = r.integer("o_groups");
  c.o_lora_rank = r.integer("o_lora_rank");
  c.sliding_window = r.integer("sliding_window");
  c.n_routed_experts = r.integer("n_routed_experts");
  c.n_experts_per_tok = r.integer("num_experts_per_tok");
  c.moe_intermediate_size = r.integer("moe_intermediate_size");
  c.n_shared_experts = r.integer("n_shared_experts", 1);
  c.routed_scaling_factor = r.number("routed_scaling_factor", 1.0);
  c.swiglu_limit = r.number("swiglu_limit", 0.0);
  c.hc_mult = r.integer("hc_mult");
  c.hc_sinkhorn_iters = r.integer("hc_sinkhorn_iters");
  c.hc_eps = r.number("hc_eps");
  c.rms_norm_eps = r.number("rms_norm_eps");
  c.bos_token_id = r.integer("bos_token_id", -1);
  c.eos_token_id = r.integer("eos_token_id", -1);
  c.max_position_embeddings = r.integer("max_position_embeddings", 0);
  if (c.max_position_embeddings < 0) r.bad("max_position_embeddings", "must be >= 0");
  std::string scoring = r.string("scoring_func", "sqrtsoftplus");
  if (scoring != "sqrtsoftplus") fail(path, ": key 'scoring_func' is '", scoring, "'; DeepSeek-V4 uses 'sqrtsoftplus'");
  if (c.num_layers <= 0 || c.num_layers > 100000) r.bad("num_hidden_layers", "must be in [1, 100000]");

  const bool release = r.find("compress_ratios") != nullptr;
  const bool hf = r.find("layer_types") != nullptr;
  if (!release && !hf) fail(path, ": neither 'compress_ratios' (release style) nor 'layer_types' (transformers style) is present");

  int64_t num_hash = 0;
  if (release) {
    auto& ratios = r.array("compress_ratios");
    if (int64_t(ratios.size()) < c.num_layers)
      fail(path, ": key 'compress_ratios' has ", ratios.size(), " entries for ", c.num_layers, " layers");
    for (int64_t i = 0; i < c.num_layers; ++i) {  // entries past num_hidden_layers belong to MTP
      auto& v = ratios[size_t(i)];
      if (!v.is_number_integer() || v.get<int64_t>() < 0)
        fail(path, ": key 'compress_ratios' entry ", i, " must be a non-negative integer");
      int64_t m = v.get<int64_t>();
      LayerConfig l;
      l.compress_ratio = m;
      l.attention = m == 0 ? AttentionKind::Sliding : m == 4 ? AttentionKind::CSA : AttentionKind::HCA;
      c.layers.push_back(l);
    }
    num_hash = r.integer("num_hash_layers", 0);
    if (num_hash < 0 || num_hash > c.num_layers) r.bad("num_hash_layers", "must be in [0, num_hidden_layers]");
    for (int64_t i = 0; i < c.num_layers; ++i)
      c.layers[size_t(i)].router = i < num_hash ? RouterKind::Hash : RouterKind::TopK;
    c.rope_dim = r.integer("qk_rope_head_dim");
    c.rope_main.theta = r.number("rope_theta");
    c.rope_compress.theta = r.number("compress_rope_theta", c.rope_main.theta);
    if (r.find("rope_scaling")) c.rope_compress.yarn = config_detail::read_yarn(r.object("rope_scaling"));
    config_detail::read_block_size(r, c);
  } else {
    auto& types = r.array("layer_types");
    if (int64_t(types.size()) < c.num_layers)
      fail(path, ": key 'layer_types' has ", types.size(), " entries for ", c.num_layers, " layers");
    const nlohmann::json no_rates = nlohmann::json::object();  // must outlive `rates`, which refers to it
    Reader rates = r.find("compress_rates") ? r.object("compress_rates") : Reader{no_rates, path + ": compress_rates"};
    for (int64_t i = 0; i < c.num_layers; ++i) {
      auto& v = types[size_t(i)];
      if (!v.is_string()) fail(path, ": key 'layer_types' entry ", i, " is not a string");
      std::string t = v.get<std::string>();
      LayerConfig l;
      if (t == "sliding_attention") {
        l.attention = AttentionKind::Sliding;
      } else if (t == "compressed_sparse_attention") {
        l.attention = AttentionKind::CSA;
        l.compress_ratio = rates.integer("compressed_sparse_attention");
      } else if (t == "heavily_compressed_attention") {
        l.attention = AttentionKind::HCA;
        l.compress_ratio = rates.integer("heavily_compressed_attention");
      } else if (t == "multi_head_latent_attention") {  // a research hybrid: DeepSeek-V3's MLA in a V4 model
        l.attention = AttentionKind::MLA;
      } else {
        fail(path, ": key 'layer_types' entry ", i, " is the unknown layer kind '", t, "'");
      }
      c.layers.push_back(l);
    }
    if (r.find("mlp_layer_types")) {
      auto& mt = r.array("mlp_layer_types");
      if (int64_t(mt.size()) < c.num_layers)
        fail(path, ": key 'mlp_layer_types' has ", mt.size(), " entries for ", c.num_layers, " layers");
      for (int64_t i = 0; i < c.num_layers; ++i) {
        std::string t = mt[size_t(i)].is_string() ? mt[size_t(i)].get<std::string>() : "";
        if (t == "hash_moe") c.layers[size_t(i)].router = RouterKind::Hash;
        else if (t == "moe") c.layers[size_t(i)].router = RouterKind::TopK;
        else fail(path, ": key 'mlp_layer_types' entry ", i, " is the unknown MLP kind '", t, "'");
      }
    } else {
      num_hash = r.integer("num_hash_layers", 0);
      if (num_hash < 0 || num_hash > c.num_layers) r.bad("num_hash_layers", "must be in [0, num_hidden_layers]");
      for (int64_t i = 0; i < c.num_layers; ++i)
        c.layers[size_t(i)].router = i < num_hash ? RouterKind::Hash : RouterKind::TopK;
    }
    double factor = r.number("partial_rotary_factor", 0.0);
    if (r.find("qk_rope_head_dim")) c.rope_dim = r.integer("qk_rope_head_dim");
    else if (factor > 0) c.rope_dim = int64_t(std::llround(double(c.head_dim) * factor));
    else fail(path, ": neither 'qk_rope_head_dim' nor 'partial_rotary_factor' is present");
    if (factor > 0 && std::llround(double(c.head_dim) * factor) != c.rope_dim)
      fail(path, ": 'partial_rotary_factor' ", factor, " × head_dim ", c.head_dim, " disagrees with qk_rope_head_dim ", c.rope_dim);
    c.rope_main.theta = r.number("rope_theta", 10000.0);
    c.rope_compress.theta = r.number("compress_rope_theta", c.rope_main.theta);
    if (r.find("rope_parameters")) {
      Reader rp = r.object("rope_parameters");
      if (rp.find("main")) {
        Reader m = rp.object("main");
        c.rope_main.theta = m.number("rope_theta", c.rope_main.theta);
        c.rope_main.yarn = config_detail::read_yarn(m);
      }
      if (rp.find("compress")) {
        Reader m = rp.object("compress");
        c.rope_compress.theta = m.number("rope_theta", c.rope_compress.theta);
        c.rope_compress.yarn = config_detail::read_yarn(m);
      }
    } else if (r.find("rope_scaling")) {
      c.rope_compress.yarn = config_detail::read_yarn(r.object("rope_scaling"));
    }
  }

  bool any_csa = false, any_mla = false;
  for (auto& l : c.layers) {
    any_csa |= l.attention == AttentionKind::CSA;
    any_mla |= l.attention == AttentionKind::MLA;
  }
  if (any_mla) config_detail::read_mla(r, c);
  c.index_n_heads = r.integer("index_n_heads", 0);
  c.index_head_dim = r.integer("index_head_dim", 0);
  c.index_topk = r.integer("index_topk", 0);

  // Consistency: sizes that the forward pass divides or slices by.
  auto positive = [&](const char* key, int64_t v, int64_t max = int64_t(1) << 24) {
    if (v <= 0 || v > max) fail(path, ": key '", key, "' = ", v, " must be in [1, ", max, "]");
  };
  positive("vocab_size", c.vocab_size, int64_t(1) << 26);
  positive("hidden_size", c.hidden_size);
  positive("num_attention_heads", c.num_heads, 1 << 16);
  positive("head_dim", c.head_dim, 1 << 16);
  positive("q_lora_rank", c.q_lora_rank);
  positive("o_groups", c.o_groups, 1 << 16);
  positive("o_lora_rank", c.o_lora_rank);
  positive("sliding_window", c.sliding_window, 1 << 20);
  positive("n_routed_experts", c.n_routed_experts, 1 << 20);
  positive("num_experts_per_tok", c.n_experts_per_tok, 1 << 20);
  positive("moe_intermediate_size", c.moe_intermediate_size);
  positive("hc_mult", c.hc_mult, 64);
  positive("hc_sinkhorn_iters", c.hc_sinkhorn_iters, 10000);
  if (c.n_shared_experts < 0 || c.n_shared_experts > 1)
    fail(path, ": key 'n_shared_experts' = ", c.n_shared_experts, "; DeepSeek-V4 has 0 or 1 shared expert");
  if (c.n_experts_per_tok > c.n_routed_experts)
    fail(path, ": key 'num_experts_per_tok' = ", c.n_experts_per_tok, " exceeds n_routed_experts = ", c.n_routed_experts);
  if (c.rope_dim < 0 || c.rope_dim % 2 || c.rope_dim > c.head_dim)
    fail(path, ": key 'qk_rope_head_dim' = ", c.rope_dim, " must be even and at most head_dim = ", c.head_dim);
  if ((c.num_heads * c.head_dim) % c.o_groups)
    fail(path, ": key 'o_groups' = ", c.o_groups, " does not divide num_attention_heads × head_dim = ", c.num_heads * c.head_dim);
  if (!(c.rms_norm_eps > 0)) r.bad("rms_norm_eps", "must be > 0");
  if (!(c.hc_eps >= 0)) r.bad("hc_eps", "must be >= 0");
  if (!(c.rope_main.theta > 1) || !(c.rope_compress.theta > 1)) r.bad("rope_theta", "(and compress_rope_theta) must be > 1");
  for (size_t i = 0; i < c.layers.size(); ++i) {
    auto& l = c.layers[i];
    const bool compressed = l.attention == AttentionKind::CSA || l.attention == AttentionKind::HCA;
    if (compressed && (l.compress_ratio <= 0 || l.compress_ratio > (1 << 20)))
      fail(path, ": layer ", i, " (", attention_kind_name(l.attention), ") has compress ratio ", l.compress_ratio, "; it must be in [1, 2^20]");
  }
  if (any_csa) {
    positive("index_n_heads", c.index_n_heads, 1 << 16);
    positive("index_head_dim", c.index_head_dim, 1 << 16);
    positive("index_topk", c.index_topk, 1 << 24);
    if (c.rope_dim > c.index_head_dim)
      fail(path, ": key 'index_head_dim' = ", c.index_head_dim, " is smaller than the rope dims ", c.rope_dim);
  }
  return c;
}

inline ModelConfig load_config(const std::filesystem::path& dir) {
  auto p = dir / "config.json";
  return parse_config(read_text_file(p), p.string());
}

}  // namespace dsv4
