// The cache size `dsv4 kv` prints (predict_layer_cache_bytes) equals what a live cache holds after
// real forward passes on the golden models, per layer, at lengths around the compress ratios.
#include <catch2/catch.hpp>

#include "dsv4/model/model.hpp"
#include "golden.hpp"

using namespace dsv4;

static void check_model(const std::string& arch) {
  auto cases = testing::golden_cases(arch);
  REQUIRE(!cases.empty());
  const Model m = Model::load(cases.front().dir + "/hf");
  const ModelConfig& c = m.config();
  const bool v4 = arch == "DeepseekV4ForCausalLM";
  for (CacheType t : {CacheType::F32, CacheType::BF16, CacheType::Compact}) {
  if (!v4 && t != CacheType::F32) {  // MLA keeps an f32 latent cache and says so
    CHECK_THROWS_WITH(m.new_cache(t), Catch::Contains("MLA") && Catch::Contains(cache_type_name(t)));
    continue;
  }
  for (int64_t n : {1, 3, 4, 5, 9, 17, 70}) {
    SequenceCache cache = m.new_cache(t);
    std::vector<int32_t> ids(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) ids[size_t(i)] = int32_t((7 * i + 1) % c.vocab_size);
    std::vector<float> logits;
    // Two chunks, so both the prefill and the continuation paths append.
    const int64_t first = (n + 1) / 2;
    SequenceInput a{&cache, std::span<const int32_t>(ids).subspan(0, size_t(first))};
    m.forward<Fp32Reference>({&a, 1}, logits, LogitRows::Last);
    if (n > first) {
      SequenceInput b{&cache, std::span<const int32_t>(ids).subspan(size_t(first))};
      m.forward<Fp32Reference>({&b, 1}, logits, LogitRows::Last);
    }
    REQUIRE(cache.num_layers() == c.layers.size());
    for (size_t i = 0; i < c.layers.size(); ++i) {
      INFO(arch << " cache " << cache_type_name(t) << " layer " << i << " after " << n << " tokens");
      CHECK(cache.layer_bytes(i) == predict_layer_cache_bytes(c, c.layers[i], n, t).total());
    }
  }
  }
}

TEST_CASE("kv: predicted cache bytes = bytes a live V4 cache holds", "[kv]") { check_model("DeepseekV4ForCausalLM"); }
TEST_CASE("kv: predicted cache bytes = bytes a live V3 (MLA) cache holds", "[kv]") {
  check_model("DeepseekV3ForCausalLM");
}
