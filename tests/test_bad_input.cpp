// Bad input: every broken file, config or call gives a dsv4::Error whose message names the
// file, key or tensor (never a crash, never another exception type). Broken checkpoints are
// copies of tests/data/tiny/{orig,hf} in a temporary directory, edited one defect at a time.
#include <catch2/catch.hpp>

#include <functional>

#include "test_util.hpp"

using namespace dsv4;
using namespace dsv4::testing;
using nlohmann::json;

namespace {

// A writable copy of a tiny checkpoint: its tensors and config, saved back on request.
struct CheckpointCopy {
  TempDir dir;
  std::vector<RawTensor> tensors;
  json config;

  explicit CheckpointCopy(const std::string& layout = "orig") {
    copy_dir(kTinyDir + "/" + layout, dir.path());
    tensors = read_raw(dir / "model.safetensors");
    config = json::parse(read_text_file(dir / "config.json"));
  }
  fs::path model() const { return dir / "model.safetensors"; }
  void save_tensors() { write_raw(model(), tensors); }
  void save_config() { write_text(dir / "config.json", config.dump(2)); }
  RawTensor& tensor(const std::string& name) { return find_raw(tensors, name); }
  void erase(const std::string& name) {
    const auto n = tensors.size();
    std::erase_if(tensors, [&](const RawTensor& t) { return t.name == name; });
    REQUIRE(tensors.size() == n - 1);
  }
  Model load() const { return Model::load(dir.path()); }
};

std::vector<float> logits_of(const Model& m, const std::vector<int32_t>& ids) {
  SequenceCache cache = m.new_cache();
  SequenceInput in{&cache, ids};
  std::vector<float> logits;
  m.forward<Fp32Reference>({&in, 1}, logits);
  return logits;
}

const std::vector<int32_t> kPrompt = {0, 17, 300, 5, 511, 42, 42, 7, 99, 123, 256, 3, 1, 64, 65, 66, 200, 201, 9, 10, 11};

}  // namespace

TEST_CASE("the unmodified copy loads (control for every case below)", "[bad_input]") {
  for (const char* layout : {"orig", "hf"}) {
    CheckpointCopy ck(layout);
    ck.save_tensors();  // our own writer round-trips the file
    ck.save_config();
    const Model m = ck.load();
    CHECK(m.config().num_layers == 6);
    CHECK(logits_of(m, kPrompt).size() == kPrompt.size() * 512);
  }
}

TEST_CASE("missing tensor", "[bad_input][checkpoint]") {
  const std::string name = GENERATE("embed.weight", "norm.weight", "hc_head_base", "layers.0.attn.wq_a.weight",
                                    "layers.0.attn.wq_b.scale", "layers.2.attn.compressor.wgate.weight",
                                    "layers.1.attn.indexer.compressor.ape", "layers.3.attn.indexer.wq_b.weight",
                                    "layers.0.ffn.gate.tid2eid", "layers.5.ffn.experts.7.w2.weight",
                                    "layers.4.ffn.shared_experts.w3.scale", "layers.5.attn.attn_sink");
  CheckpointCopy ck;
  ck.erase(name);
  ck.save_tensors();
  REQUIRE_DSV4_ERROR(ck.load(), "'" + name + "'");
}

TEST_CASE("missing tensor in the transformers layout names the stored name", "[bad_input][checkpoint]") {
  const std::string name = GENERATE("model.layers.0.attn.norm.weight", "model.hc_head.hc_fn", "head.weight",
                                    "model.layers.1.ffn.gate.tid2eid", "model.layers.2.attn.compressor.ape");
  CheckpointCopy ck("hf");
  ck.erase(name);
  ck.save_tensors();
  REQUIRE_DSV4_ERROR(ck.load(), "'" + name + "'");
}

TEST_CASE("misshaped tensor", "[bad_input][checkpoint]") {
  const auto [name, shape] = GENERATE(table<std::string, std::string>({
      {"layers.1.attn.q_norm.weight", "[24, 2]"},
      {"layers.0.attn.wq_a.weight", "[64, 48]"},
      {"layers.0.attn.wq_a.scale", "[4, 1]"},
      {"layers.0.ffn.experts.3.w1.weight", "[16, 64]"},
      {"layers.0.ffn.experts.3.w1.scale", "[16, 4]"},
      {"layers.0.ffn.gate.tid2eid", "[256, 4]"},
      {"hc_head_fn", "[8, 128]"},
      {"layers.2.attn.compressor.ape", "[32, 16]"},
      {"embed.weight", "[256, 128]"},
  }));
  CheckpointCopy ck;
  ck.tensor(name).shape = json::parse(shape);
  ck.save_tensors();
  REQUIRE_DSV4_ERROR(ck.load(), "'" + name + "'", shape, "model.safetensors");
}

TEST_CASE("wrong dtype", "[bad_input][checkpoint]") {
  const auto [name, dtype] = GENERATE(table<std::string, std::string>({
      {"layers.0.attn.attn_sink", "I32"},
      {"layers.0.attn.wkv.weight", "U8"},
      {"layers.0.ffn.gate.tid2eid", "F32"},
      {"layers.0.ffn.experts.0.w1.scale", "I8"},
      {"layers.0.attn.wq_a.scale", "U8"},
      {"embed.weight", "F16"},
      {"layers.0.attn_norm.weight", "I16"},
      {"hc_head_fn", "I32"},
  }));
  CheckpointCopy ck;
  ck.tensor(name).dtype = dtype;  // same element size: only the dtype is wrong
  ck.save_tensors();
  REQUIRE_DSV4_ERROR(ck.load(), "'" + name + "'", dtype);
}

TEST_CASE("unknown dtype string in the header", "[bad_input][safetensors]") {
  CheckpointCopy ck;
  ck.tensor("layers.0.attn.wkv.weight").dtype = "F8_E5M2";
  ck.save_tensors();
  REQUIRE_DSV4_ERROR(ck.load(), "'layers.0.attn.wkv.weight'", "unknown dtype 'F8_E5M2'", "model.safetensors");
}

TEST_CASE("truncated file", "[bad_input][safetensors]") {
  CheckpointCopy ck;
  const auto bytes = read_bytes(ck.model());
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | bytes[size_t(i)];
  const size_t cut = GENERATE_COPY(size_t(0), size_t(3), size_t(7), size_t(8), size_t(8 + 100), size_t(8 + n - 1),
                                   size_t(8 + n + 1000), bytes.size() - 1);
  INFO("cut at " << cut << " of " << bytes.size());
  write_bytes(ck.model(), std::vector<uint8_t>(bytes.begin(), bytes.begin() + ptrdiff_t(cut)));
  REQUIRE_DSV4_ERROR(ck.load(), "model.safetensors", "truncated");
}

// ---------------------------------------------------------------------------------------------
// Corrupt headers, checked on in-memory files.

namespace {

std::vector<TensorView> parse(const std::string& header, size_t data_bytes = 64) {
  static std::vector<uint8_t> file;  // parse_safetensors' views point into it
  file = safetensors_bytes(header, std::vector<uint8_t>(data_bytes, 0));
  return parse_safetensors(file, "bad.safetensors");
}

}  // namespace

TEST_CASE("corrupt safetensors headers", "[bad_input][safetensors]") {
  // Control: a well-formed header with two tensors and metadata.
  const auto ok = parse(R"({"__metadata__": {"format": "pt"},
                            "a": {"dtype": "F32", "shape": [2, 4], "data_offsets": [0, 32]},
                            "b": {"dtype": "BF16", "shape": [16], "data_offsets": [32, 64]}})");
  REQUIRE(ok.size() == 2);

  const auto [header, why, names_tensor] = GENERATE(table<std::string, std::string, bool>({
      {R"({"a": {"dtype": "F32", "shape": [2, 4], "data_offsets": [0, 32]})", "corrupt safetensors header", false},
      {R"([1, 2, 3])", "not a JSON object", false},
      {R"("a")", "not a JSON object", false},
      {R"({"a": 5})", "not an object", true},
      {R"({"a": {"shape": [2], "data_offsets": [0, 8]}})", "'dtype'", true},
      {R"({"a": {"dtype": 7, "shape": [2], "data_offsets": [0, 8]}})", "'dtype'", true},
      {R"({"a": {"dtype": "F32", "shape": 2, "data_offsets": [0, 8]}})", "'shape'", true},
      {R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0]}})", "data_offsets", true},
      {R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": "0-8"}})", "data_offsets", true},
      {R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [-8, 0]}})", "data_offsets", true},
      {R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0.5, 8]}})", "data_offsets", true},
      {R"({"a": {"dtype": "F32", "shape": [32], "data_offsets": [0, 128]}})", "outside the data", true},
      {R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [100, 108]}})", "outside the data", true},
      {R"({"a": {"dtype": "F32", "shape": [0], "data_offsets": [16, 8]}})", "data_offsets [16, 8]", true},
      {R"({"a": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 12]}})", "12 bytes of data for shape [2, 2]", true},
      {R"({"a": {"dtype": "F32", "shape": [-1, 4], "data_offsets": [0, 16]}})", "negative", true},
      {R"({"a": {"dtype": "F32", "shape": [2.5], "data_offsets": [0, 10]}})", "non-integer", true},
      {R"({"a": {"dtype": "F32", "shape": ["2"], "data_offsets": [0, 8]}})", "non-integer", true},
      {R"({"a": {"dtype": "F32", "shape": [1099511627776, 1099511627776], "data_offsets": [0, 8]}})", "too large", true},
      {R"({"a": {"dtype": "U8", "shape": [18446744073709551615], "data_offsets": [0, 8]}})", "too large", true},
      {R"({"a": {"dtype": "I64", "shape": [65536, 65536, 65536, 65536], "data_offsets": [0, 8]}})", "too large", true},
      {R"({"a": {"dtype": "Q4_K", "shape": [2], "data_offsets": [0, 8]}})", "unknown dtype 'Q4_K'", true},
  }));
  INFO(header);
  REQUIRE_DSV4_ERROR(parse(header), "bad.safetensors", why);
  if (names_tensor) REQUIRE_DSV4_ERROR(parse(header), "'a'");
}

TEST_CASE("deeply nested JSON in a header is an error, not a stack overflow", "[bad_input][safetensors]") {
  const std::string deep = std::string(1'000'000, '[') + "1" + std::string(1'000'000, ']');
  REQUIRE_DSV4_ERROR(parse(R"({"a": {"dtype": "F32", "shape": )" + deep + R"(, "data_offsets": [0, 4]}})"),
                     "bad.safetensors", "'a'", "shape");
  REQUIRE_DSV4_ERROR(parse(R"({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, )" + deep + "]}}"),
                     "bad.safetensors", "'a'", "data_offsets");
  REQUIRE_DSV4_ERROR(parse(R"({"a": )" + std::string(1'000'000, '[')), "bad.safetensors", "corrupt");
}

TEST_CASE("overlapping data ranges", "[bad_input][safetensors]") {
  REQUIRE_DSV4_ERROR(parse(R"({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},
                               "b": {"dtype": "F32", "shape": [4], "data_offsets": [8, 24]}})"),
                     "bad.safetensors", "overlap");
  // Touching ranges and empty tensors are fine.
  CHECK(parse(R"({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},
                  "b": {"dtype": "F32", "shape": [4], "data_offsets": [16, 32]},
                  "c": {"dtype": "F32", "shape": [0, 3], "data_offsets": [8, 8]}})")
            .size() == 3);
}

TEST_CASE("header length field", "[bad_input][safetensors]") {
  std::vector<uint8_t> f(8, 0);
  SECTION("longer than the file") {
    f[0] = 100;
    f.resize(50, ' ');
    REQUIRE_DSV4_ERROR(parse_safetensors(f, "bad.safetensors"), "bad.safetensors", "truncated", "100");
  }
  SECTION("implausibly large") {
    f[5] = 1;  // 2^40
    REQUIRE_DSV4_ERROR(parse_safetensors(f, "bad.safetensors"), "bad.safetensors", "implausible");
    f.assign(8, 0xFF);
    REQUIRE_DSV4_ERROR(parse_safetensors(f, "bad.safetensors"), "bad.safetensors", "implausible");
  }
  SECTION("shorter than 8 bytes") {
    f.resize(5);
    REQUIRE_DSV4_ERROR(parse_safetensors(f, "bad.safetensors"), "bad.safetensors", "truncated");
  }
}

// ---------------------------------------------------------------------------------------------
// config.json

namespace {

json tiny_config(const std::string& layout) { return json::parse(read_text_file(kTinyDir + "/" + layout + "/config.json")); }

}  // namespace

TEST_CASE("config errors name the key", "[bad_input][config]") {
  struct Case {
    const char* layout;
    std::function<void(json&)> edit;
    std::vector<std::string> says;
  };
  const std::vector<Case> cases = {
      {"orig", [](json& j) { j.erase("hidden_size"); }, {"'hidden_size'", "missing"}},
      {"hf", [](json& j) { j.erase("hidden_size"); }, {"'hidden_size'", "missing"}},
      {"orig", [](json& j) { j["hidden_size"] = "64"; }, {"'hidden_size'", "integer"}},
      {"orig", [](json& j) { j["hidden_size"] = 64.5; }, {"'hidden_size'", "integer"}},
      {"orig", [](json& j) { j["hidden_size"] = json::array(); }, {"'hidden_size'", "integer"}},
      {"orig", [](json& j) { j["vocab_size"] = -5; }, {"'vocab_size'"}},
      {"orig", [](json& j) { j["num_hidden_layers"] = 0; }, {"'num_hidden_layers'"}},
      {"orig", [](json& j) { j["rms_norm_eps"] = "small"; }, {"'rms_norm_eps'", "number"}},
      {"orig", [](json& j) { j["rms_norm_eps"] = 0; }, {"'rms_norm_eps'"}},
      {"orig", [](json& j) { j["hc_mult"] = 0; }, {"'hc_mult'"}},
      {"orig", [](json& j) { j["model_type"] = "llama"; }, {"'model_type'", "llama"}},
      {"orig", [](json& j) { j["scoring_func"] = "softmax"; }, {"'scoring_func'", "softmax"}},
      {"orig", [](json& j) { j["o_groups"] = 3; }, {"'o_groups'"}},
      {"orig", [](json& j) { j["num_experts_per_tok"] = 9; }, {"'num_experts_per_tok'", "n_routed_experts"}},
      {"orig", [](json& j) { j["n_shared_experts"] = 2; }, {"'n_shared_experts'"}},
      {"orig", [](json& j) { j["qk_rope_head_dim"] = 7; }, {"'qk_rope_head_dim'"}},
      {"orig", [](json& j) { j["qk_rope_head_dim"] = 64; }, {"'qk_rope_head_dim'"}},
      {"orig", [](json& j) { j["index_head_dim"] = 4; }, {"'index_head_dim'"}},
      {"orig", [](json& j) { j.erase("index_topk"); }, {"'index_topk'"}},
      {"orig", [](json& j) { j["compress_ratios"].erase(5); }, {"'compress_ratios'", "5 entries for 6 layers"}},
      {"orig", [](json& j) { j["compress_ratios"] = "abc"; }, {"'compress_ratios'", "array"}},
      {"orig", [](json& j) { j["compress_ratios"][1] = "4"; }, {"'compress_ratios'", "entry 1"}},
      {"orig", [](json& j) { j["compress_ratios"][2] = -16; }, {"'compress_ratios'", "entry 2"}},
      {"orig", [](json& j) { j["num_hash_layers"] = 7; }, {"'num_hash_layers'"}},
      {"orig", [](json& j) { j["rope_scaling"] = 5; }, {"'rope_scaling'", "object"}},
      {"orig", [](json& j) { j["rope_scaling"]["type"] = "linear"; }, {"rope_scaling", "linear"}},
      {"orig", [](json& j) { j["rope_scaling"]["factor"] = 0; }, {"rope_scaling", "'factor'"}},
      {"orig", [](json& j) { j["rope_scaling"].erase("original_max_position_embeddings"); },
       {"rope_scaling", "'original_max_position_embeddings'"}},
      {"orig", [](json& j) { j["quantization_config"]["weight_block_size"] = {0, 32}; }, {"'weight_block_size'"}},
      {"orig", [](json& j) { j["quantization_config"]["weight_block_size"] = {32}; }, {"'weight_block_size'"}},
      {"orig", [](json& j) { j.erase("compress_ratios"); }, {"'compress_ratios'", "'layer_types'"}},
      {"hf", [](json& j) { j["layer_types"][2] = "mystery_attention"; }, {"'layer_types'", "mystery_attention"}},
      {"hf", [](json& j) { j["layer_types"][1] = 4; }, {"'layer_types'", "entry 1"}},
      {"hf", [](json& j) { j["layer_types"].erase(0); }, {"'layer_types'", "5 entries for 6 layers"}},
      {"hf", [](json& j) { j["mlp_layer_types"][0] = "dense"; }, {"'mlp_layer_types'", "dense"}},
      {"hf", [](json& j) { j.erase("compress_rates"); }, {"compress_rates", "'compressed_sparse_attention'", "missing"}},
      {"hf", [](json& j) { j["compress_rates"].erase("heavily_compressed_attention"); },
       {"'heavily_compressed_attention'", "missing"}},
      {"hf", [](json& j) { j["compress_rates"]["heavily_compressed_attention"] = 0; }, {"compress ratio 0"}},
      {"hf", [](json& j) { j["qk_rope_head_dim"] = 16; }, {"'partial_rotary_factor'", "qk_rope_head_dim"}},
      {"hf", [](json& j) { j["rope_parameters"]["compress"]["rope_type"] = "ntk"; }, {"compress", "'ntk'"}},
      {"hf", [](json& j) { j["rope_parameters"]["main"] = "default"; }, {"'main'", "object"}},
  };
  for (size_t i = 0; i < cases.size(); ++i) {
    json j = tiny_config(cases[i].layout);
    cases[i].edit(j);
    INFO("case " << i << ": " << j.dump());
    const auto& s = cases[i].says;
    try {
      parse_config(j.dump(), "cfg.json");
      FAIL("no error");
    } catch (const dsv4::Error& e) {
      const std::string what = e.what();
      INFO("message: " << what);
      CHECK(what.find("cfg.json") != std::string::npos);
      for (auto& part : s) CHECK(what.find(part) != std::string::npos);
    }
  }
}

TEST_CASE("DeepSeek-V3 config errors name the key", "[bad_input][config][v3]") {
  const json base = json::parse(read_text_file(std::string(DSV4_TEST_DATA) + "/v3tiny/orig/config.json"));
  const std::vector<std::pair<std::function<void(json&)>, std::vector<std::string>>> cases = {
      {[](json& j) { j.erase("kv_lora_rank"); }, {"'kv_lora_rank'", "missing"}},
      {[](json& j) { j["qk_nope_head_dim"] = -1; }, {"'qk_nope_head_dim'"}},
      {[](json& j) { j["qk_rope_head_dim"] = 7; }, {"'qk_rope_head_dim'"}},
      {[](json& j) { j.erase("intermediate_size"); }, {"'intermediate_size'", "missing"}},
      {[](json& j) { j["n_group"] = 3; }, {"'n_group'", "n_routed_experts"}},
      {[](json& j) { j["topk_group"] = 5; }, {"'topk_group'", "n_group"}},
      {[](json& j) { j["num_experts_per_tok"] = 5; }, {"'num_experts_per_tok'", "topk_group"}},
      {[](json& j) { j["scoring_func"] = "softmax"; }, {"'scoring_func'", "sigmoid"}},
      {[](json& j) { j["topk_method"] = "greedy"; }, {"'topk_method'", "noaux_tc"}},
      {[](json& j) { j["norm_topk_prob"] = 1; }, {"'norm_topk_prob'", "true or false"}},
      {[](json& j) { j["moe_layer_freq"] = 0; }, {"'moe_layer_freq'"}},
      {[](json& j) { j["tie_word_embeddings"] = true; }, {"'tie_word_embeddings'"}},
      {[](json& j) { j["rope_parameters"]["rope_type"] = "dynamic"; }, {"rope_parameters", "dynamic"}},
      {[](json& j) { j["rope_parameters"]["mscale_all_dim"] = -1; }, {"'mscale'"}},
      {[](json& j) { j["quantization_config"]["weight_block_size"] = {32, 0}; }, {"'weight_block_size'"}},
  };
  for (size_t i = 0; i < cases.size(); ++i) {
    json j = base;
    cases[i].first(j);
    INFO("case " << i << ": " << j.dump());
    try {
      parse_config(j.dump(), "cfg.json");
      FAIL("no error");
    } catch (const dsv4::Error& e) {
      const std::string what = e.what();
      INFO("message: " << what);
      CHECK(what.find("cfg.json") != std::string::npos);
      for (auto& part : cases[i].second) CHECK(what.find(part) != std::string::npos);
    }
  }
}

TEST_CASE("DeepSeek-V3 checkpoint errors name the tensor", "[bad_input][checkpoint][v3]") {
  const std::string v3 = std::string(DSV4_TEST_DATA) + "/v3tiny";
  {  // a missing tile scale
    TempDir dir;
    copy_dir(v3 + "/orig", dir.path());
    auto ts = read_raw(dir / "model.safetensors");
    std::erase_if(ts, [](const RawTensor& t) { return t.name == "model.layers.2.self_attn.kv_b_proj.weight_scale_inv"; });
    write_raw(dir / "model.safetensors", ts);
    REQUIRE_DSV4_ERROR(Model::load(dir.path()), "model.layers.2.self_attn.kv_b_proj", "weight_scale_inv", "missing");
  }
  {  // a tile grid that does not match the block size
    TempDir dir;
    copy_dir(v3 + "/orig", dir.path());
    auto ts = read_raw(dir / "model.safetensors");
    auto& s = find_raw(ts, "model.layers.1.mlp.experts.3.up_proj.weight_scale_inv");
    s.shape = {2, 1};
    write_raw(dir / "model.safetensors", ts);
    REQUIRE_DSV4_ERROR(Model::load(dir.path()), "model.layers.1.mlp.experts.3.up_proj.weight_scale_inv", "[1, 2]");
  }
  {  // a config that disagrees with the weights
    TempDir dir;
    copy_dir(v3 + "/hf", dir.path());
    json j = json::parse(read_text_file(dir / "config.json"));
    j["v_head_dim"] = 20;
    write_text(dir / "config.json", j.dump());
    REQUIRE_DSV4_ERROR(Model::load(dir.path()), "model.layers.0.self_attn.kv_b_proj.weight", "[160, 32]", "[144, 32]");
  }
  {  // the router bias is required
    TempDir dir;
    copy_dir(v3 + "/hf", dir.path());
    auto ts = read_raw(dir / "model.safetensors");
    std::erase_if(ts, [](const RawTensor& t) { return t.name == "model.layers.3.mlp.gate.e_score_correction_bias"; });
    write_raw(dir / "model.safetensors", ts);
    REQUIRE_DSV4_ERROR(Model::load(dir.path()), "model.layers.3.mlp.gate.e_score_correction_bias");
  }
}

TEST_CASE("config.json that is not valid JSON or not an object", "[bad_input][config]") {
  REQUIRE_DSV4_ERROR(parse_config("{\"hidden_size\": 64,", "cfg.json"), "cfg.json", "invalid JSON");
  REQUIRE_DSV4_ERROR(parse_config("", "cfg.json"), "cfg.json", "invalid JSON");
  REQUIRE_DSV4_ERROR(parse_config("[1, 2]", "cfg.json"), "cfg.json", "not a JSON object");
  CheckpointCopy ck;
  write_text(ck.dir / "config.json", "{ not json");
  REQUIRE_DSV4_ERROR(ck.load(), (ck.dir / "config.json").string(), "invalid JSON");
  fs::remove(ck.dir / "config.json");
  REQUIRE_DSV4_ERROR(ck.load(), (ck.dir / "config.json").string(), "cannot open");
}

TEST_CASE("a config that disagrees with the weights names the tensor", "[bad_input][config]") {
  CheckpointCopy ck;
  SECTION("hidden size") {
    ck.config["hidden_size"] = 32;
    ck.save_config();
    REQUIRE_DSV4_ERROR(ck.load(), "'embed.weight'", "[512, 64]", "[512, 32]");
  }
  SECTION("hyper-connection streams") {
    ck.config["hc_mult"] = 3;
    ck.save_config();
    REQUIRE_DSV4_ERROR(ck.load(), "hc_", "model.safetensors");
  }
  SECTION("a layer kind the weights do not have") {
    ck.config["compress_ratios"][0] = 4;  // layer 0 stored as sliding: no compressor
    ck.save_config();
    REQUIRE_DSV4_ERROR(ck.load(), "'layers.0.attn.compressor.wkv.weight'");
  }
  SECTION("hash routing without tid2eid") {
    ck.config["num_hash_layers"] = 3;
    ck.save_config();
    REQUIRE_DSV4_ERROR(ck.load(), "'layers.2.ffn.gate.tid2eid'");
  }
}

TEST_CASE("tid2eid with an out-of-range expert id", "[bad_input][checkpoint]") {
  const int32_t bad = GENERATE(8, -1, 1 << 30);
  CheckpointCopy ck;
  RawTensor& t = ck.tensor("layers.1.ffn.gate.tid2eid");
  REQUIRE(t.dtype == "I32");
  std::memcpy(&t.bytes[(100 * 2 + 1) * 4], &bad, 4);  // token 100, second expert
  ck.save_tensors();
  REQUIRE_DSV4_ERROR(ck.load(), "'layers.1.ffn.gate.tid2eid'", "token 100", "expert " + std::to_string(bad));
}

// ---------------------------------------------------------------------------------------------
// Sharded checkpoints

namespace {

// Splits the copy's tensors into `parts` shards plus model.safetensors.index.json.
json shard(CheckpointCopy& ck, int parts) {
  json index = {{"metadata", {{"total_size", 0}}}, {"weight_map", json::object()}};
  std::vector<std::vector<RawTensor>> shards(static_cast<size_t>(parts));
  for (size_t i = 0; i < ck.tensors.size(); ++i) {
    const std::string file = "model-0000" + std::to_string(i % size_t(parts) + 1) + "-of-0000" + std::to_string(parts) + ".safetensors";
    shards[i % size_t(parts)].push_back(ck.tensors[i]);
    index["weight_map"][ck.tensors[i].name] = file;
  }
  for (int p = 0; p < parts; ++p)
    write_raw(ck.dir / ("model-0000" + std::to_string(p + 1) + "-of-0000" + std::to_string(parts) + ".safetensors"),
              shards[size_t(p)]);
  fs::remove(ck.model());
  return index;
}

}  // namespace

TEST_CASE("a sharded checkpoint gives the same logits as the single file", "[bad_input][sharded]") {
  const std::vector<float> want = logits_of(Model::load(kTinyDir + "/orig"), kPrompt);
  for (int parts : {2, 3}) {
    CheckpointCopy ck;
    const json index = shard(ck, parts);
    write_text(ck.dir / "model.safetensors.index.json", index.dump(2));
    const Model m = ck.load();
    CHECK(m.checkpoint().tensors().size() == ck.tensors.size());
    CHECK(logits_of(m, kPrompt) == want);
  }
}

TEST_CASE("bad shard index", "[bad_input][sharded]") {
  CheckpointCopy ck;
  json index = shard(ck, 3);
  const fs::path index_path = ck.dir / "model.safetensors.index.json";
  const std::string some = "layers.2.attn.wq_a.weight";
  const std::string its_file = index["weight_map"][some];
  SECTION("names a missing file") {
    index["weight_map"][some] = "model-00009-of-00003.safetensors";
    write_text(index_path, index.dump());
    REQUIRE_DSV4_ERROR(ck.load(), "model-00009-of-00003.safetensors", "cannot open");
  }
  SECTION("lists a tensor in the wrong shard") {
    index["weight_map"][some] = its_file == "model-00001-of-00003.safetensors" ? "model-00002-of-00003.safetensors"
                                                                               : "model-00001-of-00003.safetensors";
    write_text(index_path, index.dump());
    REQUIRE_DSV4_ERROR(ck.load(), "'" + some + "'", "not found there", "model.safetensors.index.json");
  }
  SECTION("lists a tensor that no shard has") {
    index["weight_map"]["layers.9.ghost.weight"] = its_file;
    write_text(index_path, index.dump());
    REQUIRE_DSV4_ERROR(ck.load(), "'layers.9.ghost.weight'", "not found there");
  }
  SECTION("a shard lacks a tensor the model needs") {
    index["weight_map"].erase(some);
    auto shard_tensors = read_raw(ck.dir / its_file);
    std::erase_if(shard_tensors, [&](const RawTensor& t) { return t.name == some; });
    write_raw(ck.dir / its_file, shard_tensors);
    write_text(index_path, index.dump());
    REQUIRE_DSV4_ERROR(ck.load(), "'" + some + "'", "missing");
  }
  SECTION("the same tensor in two shards") {
    const std::string other = its_file == "model-00001-of-00003.safetensors" ? "model-00002-of-00003.safetensors"
                                                                             : "model-00001-of-00003.safetensors";
    auto t = read_raw(ck.dir / other);
    t.push_back(ck.tensor(some));
    write_raw(ck.dir / other, t);
    write_text(index_path, index.dump());
    REQUIRE_DSV4_ERROR(ck.load(), "'" + some + "'", "also appears in");
  }
  SECTION("malformed index") {
    write_text(index_path, "{\"weight_map\": ");
    REQUIRE_DSV4_ERROR(ck.load(), index_path.string(), "invalid JSON");
    write_text(index_path, "{\"metadata\": {}}");
    REQUIRE_DSV4_ERROR(ck.load(), index_path.string(), "'weight_map'");
    index["weight_map"][some] = 3;
    write_text(index_path, index.dump());
    REQUIRE_DSV4_ERROR(ck.load(), index_path.string(), "'" + some + "'");
    index["weight_map"][some] = "../orig/model.safetensors";
    write_text(index_path, index.dump());
    REQUIRE_DSV4_ERROR(ck.load(), index_path.string(), "outside the directory");
  }
}

TEST_CASE("checkpoint directory problems", "[bad_input][checkpoint]") {
  TempDir dir;
  // Paths the OS refuses to look at: std::filesystem errors must come out as dsv4::Error.
  const std::string long_name = std::string(300, 'x');
  REQUIRE_DSV4_ERROR(Checkpoint::open(dir / long_name), long_name);
  fs::create_symlink("loop", dir / "loop");
  REQUIRE_DSV4_ERROR(Checkpoint::open(dir / "loop" / "x"), "loop");
  {
    CheckpointCopy ck;  // an index that is a symlink to itself
    fs::create_symlink("model.safetensors.index.json", ck.dir / "model.safetensors.index.json");
    REQUIRE_DSV4_ERROR(ck.load(), "model.safetensors.index.json");
  }
  REQUIRE_DSV4_ERROR(Model::load(dir / "nonexistent"), "nonexistent");
  fs::copy_file(kTinyDir + "/orig/config.json", dir / "config.json");
  REQUIRE_DSV4_ERROR(Model::load(dir.path()), dir.path().string(), "no model.safetensors");
  write_bytes(dir / "model.safetensors", {});
  REQUIRE_DSV4_ERROR(Model::load(dir.path()), "model.safetensors", "truncated");
}

// ---------------------------------------------------------------------------------------------
// Model::forward

TEST_CASE("forward rejects bad tokens and caches without touching the cache", "[bad_input][forward]") {
  const Model m = Model::load(kTinyDir + "/orig");
  const Model other = Model::load(kTinyDir + "/orig");
  SequenceCache cache = m.new_cache();
  std::vector<float> logits;
  auto run = [&](SequenceCache* c, std::vector<int32_t> ids) {
    SequenceInput in{c, ids};
    m.forward<Fp32Reference>({&in, 1}, logits);
  };
  REQUIRE_DSV4_ERROR(run(&cache, {5, 512, 7}), "token 1", "512", "vocabulary");
  REQUIRE_DSV4_ERROR(run(&cache, {-1}), "token 0", "-1", "vocabulary");
  REQUIRE_DSV4_ERROR(run(&cache, {}), "empty prompt");
  SequenceCache foreign = other.new_cache();
  REQUIRE_DSV4_ERROR(run(&foreign, {5}), "not made by this model");
  SequenceCache blank;
  REQUIRE_DSV4_ERROR(run(&blank, {5}), "not made by this model");
  REQUIRE_DSV4_ERROR(run(nullptr, {5}), "not made by this model");
  const std::vector<int32_t> ids = {1, 2};
  SequenceInput two[2] = {{&cache, ids}, {&cache, ids}};
  REQUIRE_DSV4_ERROR(m.forward<Fp32Reference>(two, logits), "share one cache");
  REQUIRE_DSV4_ERROR(m.forward<Fp32Reference>({}, logits), "empty batch");
  // A bad second sequence must not advance the first one's cache either.
  SequenceCache good = m.new_cache();
  const std::vector<int32_t> bad_ids = {3, 9999};
  SequenceInput mixed[2] = {{&good, ids}, {&cache, bad_ids}};
  REQUIRE_DSV4_ERROR(m.forward<Fp32Reference>(mixed, logits), "sequence 1", "9999");
  CHECK(good.position() == 0);
  CHECK(cache.position() == 0);
  // After all that the cache still works and gives the same logits as a fresh one.
  run(&cache, kPrompt);
  CHECK(cache.position() == int64_t(kPrompt.size()));
  CHECK(logits == logits_of(m, kPrompt));
}
