// The dsv4 command-line tool, driven as other tools drive it.
#include <catch2/catch.hpp>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "golden.hpp"

using namespace dsv4;
using dsv4::testing::Golden;
using dsv4::testing::max_abs_diff;

namespace {

const std::string kTiny = std::string(DSV4_TEST_DATA) + "/tiny";

struct Result {
  int code;
  std::string out, err;
};

Result sh(const std::string& args) {
  namespace fs = std::filesystem;
  const fs::path tmp = fs::temp_directory_path() / ("dsv4_cli_" + std::to_string(::getpid()));
  fs::create_directories(tmp);
  const std::string cmd = std::string(DSV4_CLI) + " " + args + " >" + (tmp / "out").string() + " 2>" + (tmp / "err").string();
  const int status = std::system(cmd.c_str());
  auto slurp = [](const fs::path& p) {
    std::ifstream f(p);
    std::stringstream s;
    s << f.rdbuf();
    return s.str();
  };
  Result r{WIFEXITED(status) ? WEXITSTATUS(status) : -1, slurp(tmp / "out"), slurp(tmp / "err")};
  fs::remove_all(tmp);
  return r;
}

std::string join(const std::vector<int32_t>& v, const char* sep) {
  std::string s;
  for (size_t i = 0; i < v.size(); ++i) s += (i ? sep : "") + std::to_string(v[i]);
  return s;
}

std::string temp_path(const std::string& name) {
  return (std::filesystem::temp_directory_path() / (std::to_string(::getpid()) + "_" + name)).string();
}

}  // namespace

TEST_CASE("dsv4 logits: one pass, chunked and batched, both modes", "[cli]") {
  const Golden g(kTiny + "/expected.safetensors");
  const std::string in = temp_path("in.safetensors"), out = temp_path("out.safetensors");
  const auto ids = g.ints("input_ids");
  write_safetensors(in, {out_tensor_i64("input_ids", {int64_t(ids.size())}, ids)});
  for (std::string mode : {"reference", "fast"}) {
    Result r = sh("logits --model " + kTiny + "/hf --input " + in + " --out " + out + " --mode " + mode +
                  " --chunks 37,50 --threads 2");
    REQUIRE(r.code == 0);
    const Golden got(out);
    REQUIRE(got.at("logits").shape == Shape{int64_t(ids.size()), 512});
    CHECK(max_abs_diff(got.floats("logits"), g.floats("logits_incremental")) < 1e-3);
  }
  const auto b2 = g.ints("batch2_input_ids");
  write_safetensors(in, {out_tensor_i64("input_ids", {2, int64_t(b2.size() / 2)}, b2)});
  REQUIRE(sh("logits --model " + kTiny + "/hf --input " + in + " --out " + out).code == 0);
  const Golden got(out);
  REQUIRE(got.at("logits").shape == Shape{2, int64_t(b2.size() / 2), 512});
  CHECK(max_abs_diff(got.floats("logits"), g.floats("batch2_logits")) < 1e-3);
  std::filesystem::remove(in);
  std::filesystem::remove(out);
}

TEST_CASE("dsv4 generate --save-cache / --load-cache continue the sequence, any cache type", "[cli][cachefile]") {
  const std::string dir = kTiny + "/orig", f = temp_path("session.kvc");
  for (const char* type : {"f32", "compact"}) {
    INFO("cache type " << type);
    const std::string opts = std::string(" --max-new-tokens 6 --greedy --ignore-eos --cache-type ") + type;
    Result first = sh("generate --model " + dir + " --prompt-ids 5,17,42,99,3" + opts + " --save-cache " + f);
    REQUIRE(first.code == 0);
    Result resumed = sh("generate --model " + dir + " --prompt-ids 7,8" + opts + " --load-cache " + f);
    REQUIRE(resumed.code == 0);
    std::string all = "5,17,42,99,3," + first.out.substr(0, first.out.size() - 1) + ",7,8";
    std::replace(all.begin(), all.end(), ' ', ',');
    Result whole = sh("generate --model " + dir + " --prompt-ids " + all + opts);
    REQUIRE(whole.code == 0);
    CHECK(resumed.out == whole.out);
  }
  // Another model's file: one clear line naming it.
  Result other = sh("generate --model " + kTiny + "/hf --prompt-ids 1 --max-new-tokens 1 --load-cache " + f);
  CHECK(other.code != 0);
  CHECK(other.err.find("different model") != std::string::npos);
  CHECK(other.err.find(f) != std::string::npos);
  std::filesystem::remove(f);
}

TEST_CASE("dsv4 info, logits and generate on DeepSeek-V3 checkpoints", "[cli][v3]") {
  const std::string v3 = std::string(DSV4_TEST_DATA) + "/v3tiny";
  Result info = sh("info --model " + v3 + "/orig");
  REQUIRE(info.code == 0);
  CHECK(info.out.find("deepseek_v3") != std::string::npos);
  CHECK(info.out.find("layer  0: mla") != std::string::npos);
  CHECK(info.out.find("ffn dense") != std::string::npos);
  CHECK(info.out.find("F8_E4M3") != std::string::npos);
  // MLA caches c + dr = 32 + 8 fp32 values per token and layer; the V4 kinds of the tiny case beside it.
  Result kv = sh("kv --model " + v3 + "/hf --tokens 1000");
  REQUIRE(kv.code == 0);
  CHECK(kv.out.find("mla           4             160.00                0") != std::string::npos);
  CHECK(kv.out.find("{\"context\": 1000, \"cache_type\": \"f32\", \"bytes_total\": 640000, \"bytes_per_token\": 640.000}") !=
        std::string::npos);
  CHECK(sh("kv --model " + v3 + "/hf --cache-type bf16").err.find("MLA") != std::string::npos);
  Result kv4 = sh("kv --model " + kTiny + "/hf --context 4096 --cache-type compact");
  REQUIRE(kv4.code == 0);
  CHECK(kv4.out.find("hca") != std::string::npos);
  CHECK(kv4.out.find("csa") != std::string::npos);
  CHECK(kv4.out.find("\"cache_type\": \"compact\"") != std::string::npos);
  Result bad = sh("kv --model " + kTiny + "/hf --cache-type fp3");
  CHECK(bad.code != 0);
  CHECK(bad.err.find("--cache-type") != std::string::npos);
  for (auto [dir, expected] : {std::pair{"/hf", "/expected.safetensors"}, std::pair{"/orig", "/expected_orig.safetensors"}}) {
    const Golden g(v3 + expected);
    Result r = sh("generate --model " + v3 + dir + " --prompt-ids " + join(g.ids("greedy_prompt"), ",") +
                  " --max-new-tokens 20 --greedy --ignore-eos");
    REQUIRE(r.code == 0);
    CHECK(r.out == join(g.ids("greedy_tokens"), " ") + "\n");
    const std::string in = temp_path("v3in.safetensors"), out = temp_path("v3out.safetensors");
    const auto ids = g.ints("input_ids");
    write_safetensors(in, {out_tensor_i64("input_ids", {int64_t(ids.size())}, ids)});
    REQUIRE(sh("logits --model " + v3 + dir + " --input " + in + " --out " + out + " --chunks 29,40").code == 0);
    CHECK(max_abs_diff(Golden(out).floats("logits"), g.floats("logits_incremental")) < 1e-3);
    std::filesystem::remove(in);
    std::filesystem::remove(out);
  }
}

TEST_CASE("dsv4 generate prints the greedy tokens", "[cli]") {
  for (auto [dir, expected] : {std::pair{"/hf", "/expected.safetensors"}, std::pair{"/orig", "/expected_orig.safetensors"}}) {
    const Golden g(kTiny + expected);
    Result r = sh("generate --model " + kTiny + dir + " --prompt-ids " + join(g.ids("greedy_prompt"), ",") +
                  " --max-new-tokens 24 --greedy");
    REQUIRE(r.code == 0);
    CHECK(r.out == join(g.ids("greedy_tokens"), " ") + "\n");
  }
  SECTION("sampling is reproducible with a seed") {
    const std::string args = "generate --model " + kTiny + "/orig --prompt-ids 5,17,42 --max-new-tokens 12 --temperature 0.8 --top-p 0.9 --seed 7";
    Result a = sh(args), b = sh(args);
    REQUIRE(a.code == 0);
    CHECK(a.out == b.out);
  }
}

TEST_CASE("dsv4 info describes the model", "[cli]") {
  Result r = sh("info --model " + kTiny + "/orig");
  REQUIRE(r.code == 0);
  CHECK(r.out.find("layer  1: csa") != std::string::npos);
  CHECK(r.out.find("layer  2: hca") != std::string::npos);
  CHECK(r.out.find("F8_E4M3") != std::string::npos);
}

TEST_CASE("dsv4 errors: non-zero exit and one line on stderr", "[cli]") {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"generate --model " + kTiny + "/orig --prompt-ids 5,999,2 --max-new-tokens 2", "999"},
      {"generate --model " + kTiny + "/orig --prompt-ids 5,x --max-new-tokens 2", "--prompt-ids"},
      {"generate --model /nonexistent --prompt-ids 5 --max-new-tokens 2", "/nonexistent"},
      {"logits --model " + kTiny + "/orig --input /nonexistent.safetensors --out /tmp/x.safetensors", "/nonexistent.safetensors"},
      {"info --model " + kTiny + "/orig --bogus 1", "--bogus"},
      {"generate --model " + kTiny + "/orig --prompt-ids 5 --max-new-tokens 2 --mode turbo", "turbo"},
      {"frobnicate", "frobnicate"},
  };
  for (auto& [args, needle] : cases) {
    INFO(args);
    Result r = sh(args);
    CHECK(r.code != 0);
    CHECK(r.err.find(needle) != std::string::npos);
    CHECK(std::count(r.err.begin(), r.err.end(), '\n') == 1);
  }
}
