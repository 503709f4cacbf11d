// Golden tests of the DeepSeek-V3 assembly (MLA, sigmoid group-limited routing, dense first
// layers, plain residual) against transformers' DeepseekV3ForCausalLM outputs, as test_golden.cpp
// does for V4: both checkpoint layouts, one pass and chunked, greedy, reference and fast modes.
#include <catch2/catch.hpp>

#include "golden.hpp"

using namespace dsv4;
using dsv4::testing::Golden;
using dsv4::testing::GoldenCase;
using dsv4::testing::greedy_tokens;
using dsv4::testing::kLayouts;
using dsv4::testing::max_abs_diff;
using dsv4::testing::run_in_chunks;

namespace {

// Measured on v3tiny: ~5e-6 one pass (expanded prefill) and chunked (absorbed decode), both modes.
constexpr double kFp32Bound = 1e-4;

const std::vector<GoldenCase>& cases() { return dsv4::testing::required_golden_cases("DeepseekV3ForCausalLM"); }

}  // namespace

TEST_CASE("V3: the config assembles MLA, dense first layers, group-limited routing, plain residual", "[golden][v3]") {
  for (const GoldenCase& c : cases()) {
    const Model m = Model::load(c.dir + "/hf");
    const ModelConfig& cfg = m.config();
    CHECK(cfg.arch == Architecture::DeepseekV3);
    CHECK(cfg.residual == ResidualKind::Plain);
    const int64_t first_dense = c.params.value("first_k_dense_replace", int64_t(0));
    for (int64_t l = 0; l < cfg.num_layers; ++l) {
      const DecoderLayer& L = m.layers()[size_t(l)];
      CHECK(std::holds_alternative<MlaAttention>(L.attn));
      CHECK(std::holds_alternative<PlainResidual>(L.attn_residual));
      CHECK(std::holds_alternative<DenseMlp>(L.ffn) == (l < first_dense));
    }
    // The cache holds c + dr values per token, nothing per head.
    CHECK(MlaAttention::cache_bytes_per_token(cfg) == (cfg.kv_lora_rank + cfg.rope_dim) * 4);
    // The rope table (YaRN over dr dims) equals the reference's.
    const Golden g(c.dir + "/expected.safetensors");
    const auto want = g.floats("rope_inv_freq");
    const auto& got = m.rope(AttentionKind::MLA).inv_freq();
    REQUIRE(got.size() == want.size());
    for (size_t i = 0; i < got.size(); ++i) CHECK(got[i] == Approx(want[i]).epsilon(1e-6));
  }
}

TEST_CASE("V3: hidden states match layer by layer (transformers layout)", "[golden][v3]") {
  for (const GoldenCase& c : cases()) {
    INFO("case " << c.name);
    const Model m = Model::load(c.dir + "/hf");
    const Golden g(c.dir + "/expected.safetensors");
    ForwardTrace trace;
    trace.record_hidden = true;
    const auto logits = run_in_chunks(m, g.ids("input_ids"), {}, &trace);
    REQUIRE(trace.hidden.size() == size_t(m.config().num_layers + 1));
    for (size_t l = 0; l < trace.hidden.size(); ++l) {
      const double err = max_abs_diff(trace.hidden[l], g.floats("hidden." + std::to_string(l)));
      INFO("first diverging: hidden." << l << " max abs error " << err);
      REQUIRE(err < kFp32Bound);
    }
    const double err = max_abs_diff(logits, g.floats("logits"));
    INFO("logits max abs error " << err);
    REQUIRE(err < kFp32Bound);
  }
}

TEST_CASE("V3: logits of both layouts, one pass and chunked (expanded prefill, absorbed decode)", "[golden][v3]") {
  for (const GoldenCase& c : cases())
    for (auto [dir, expected] : kLayouts) {
      INFO("case " << c.name << dir);
      const Model m = Model::load(c.dir + dir);
      const Golden g(c.dir + expected);
      const auto ids = g.ids("input_ids");
      const double full = max_abs_diff(run_in_chunks(m, ids, {}), g.floats("logits"));
      const double incremental = max_abs_diff(run_in_chunks(m, ids, c.chunks()), g.floats("logits_incremental"));
      const double odd = max_abs_diff(run_in_chunks(m, ids, {1, 2, 3, 5, 8, 13, 21, 34, 55, 89}), g.floats("logits"));
      INFO("one pass " << full << ", chunked as meta.json says " << incremental << ", chunks [1, 2, 3, 5, ...] " << odd);
      CHECK(full < kFp32Bound);
      CHECK(incremental < kFp32Bound);
      CHECK(odd < kFp32Bound);
    }
}

TEST_CASE("V3: greedy continuation of both layouts", "[golden][v3]") {
  for (const GoldenCase& c : cases())
    for (auto [dir, expected] : kLayouts) {
      const Model m = Model::load(c.dir + dir);
      const Golden g(c.dir + expected);
      const auto want = g.ids("greedy_tokens");
      INFO("case " << c.name << dir);
      REQUIRE(greedy_tokens(m, g.ids("greedy_prompt"), want.size()) == want);
    }
}

TEST_CASE("V3: a batch of sequences of different lengths equals each alone", "[golden][v3]") {
  for (const GoldenCase& c : cases()) {
    const Model m = Model::load(c.dir + "/orig");
    const Golden g(c.dir + "/expected_orig.safetensors");
    const auto ids = g.ids("input_ids");
    const auto want = g.floats("logits");
    const int64_t V = m.config().vocab_size;
    // Row 0: the first 120 tokens in one call then one more; row 1: the first 50 tokens, then 60.
    std::span<const int32_t> all(ids);
    SequenceCache a = m.new_cache(), b = m.new_cache();
    std::vector<float> got0, got1, logits;
    std::vector<SequenceInput> first{{&a, all.first(120)}, {&b, all.first(50)}};
    m.forward<Fp32Reference>(first, logits, LogitRows::All);
    got0.assign(logits.begin(), logits.begin() + 120 * V);
    got1.assign(logits.begin() + 120 * V, logits.end());
    std::vector<SequenceInput> second{{&a, all.subspan(120, 1)}, {&b, all.subspan(50, 60)}};
    m.forward<Fp32Reference>(second, logits, LogitRows::All);
    got0.insert(got0.end(), logits.begin(), logits.begin() + V);
    got1.insert(got1.end(), logits.begin() + V, logits.end());
    CHECK(max_abs_diff(got0, std::vector<float>(want.begin(), want.begin() + 121 * V)) < kFp32Bound);
    CHECK(max_abs_diff(got1, std::vector<float>(want.begin(), want.begin() + 110 * V)) < kFp32Bound);
  }
}

TEST_CASE("V3: fast mode stays within the fast-mode bounds of the reference", "[golden][v3][fast]") {
  INFO("ISA " << cpu::isa_name(cpu::dispatch().isa));
  for (const GoldenCase& c : cases())
    for (auto [dir, expected] : kLayouts) {
      INFO("case " << c.name << dir);
      const Model m = Model::load(c.dir + dir);
      const Golden g(c.dir + expected);
      const auto ids = g.ids("input_ids");
      const auto want = g.floats("logits");
      for (const auto& chunks : {std::vector<int64_t>{}, c.chunks()}) {
        const auto got = run_in_chunks<FastCpu>(m, ids, chunks);
        const int64_t V = m.config().vocab_size, S = int64_t(ids.size());
        int64_t agree = 0;
        for (int64_t t = 0; t < S; ++t) {
          std::span<const float> a(&got[size_t(t * V)], size_t(V)), b(&want[size_t(t * V)], size_t(V));
          agree += argmax(a) == argmax(b);
        }
        const double err = max_abs_diff(got, want);
        INFO("chunks " << chunks.size() << ": max abs error " << err << ", top-1 agreement " << agree << "/" << S);
        CHECK(err < 5e-2);
        CHECK(double(agree) >= 0.99 * double(S));
      }
      const auto tokens = greedy_tokens<FastCpu>(m, g.ids("greedy_prompt"), 8);
      const auto want_tokens = g.ids("greedy_tokens");
      CHECK(tokens == std::vector<int32_t>(want_tokens.begin(), want_tokens.begin() + 8));
    }
}
