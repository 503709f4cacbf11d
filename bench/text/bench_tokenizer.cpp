// Tokenizer throughput on one core. The tokenizer directory comes from the environment variable
// DSV4_TOKENIZER_DIR, else the macro of the same name (e.g. -DDSV4_TOKENIZER_DIR='"path"').
// Build: g++ -std=c++20 -O2 -Iinclude bench/text/bench_tokenizer.cpp -lpcre2-8 -lbenchmark -lpthread
#include <benchmark/benchmark.h>

#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "dsv4/text/tokenizer.hpp"

namespace {

using dsv4::text::Tokenizer;

const Tokenizer& tokenizer() {
  static const Tokenizer tok = [] {
    const char* dir = std::getenv("DSV4_TOKENIZER_DIR");
#ifdef DSV4_TOKENIZER_DIR
    if (!dir) dir = DSV4_TOKENIZER_DIR;
#endif
    if (!dir) throw std::runtime_error("set DSV4_TOKENIZER_DIR to the folder holding tokenizer.json");
    return Tokenizer::load(dir);
  }();
  return tok;
}

// English prose, code, CJK, numbers, emoji, chat markup: the mix a serving front end sees.
const char* const kSample =
    "The quick brown fox jumps over the lazy dog. It's 2024-06-01 and we've measured 3.14159 "
    "ms/step on 8x H200 (FP8, batch=64).\n\n"
    "def fib(n):\n    if n < 2:\n        return n\n    return fib(n - 1) + fib(n - 2)\n\n"
    "for (int i = 0; i < n; ++i) { sum += a[i] * b[i]; }  // dot product\n"
    "深度求索发布了新的模型，支持一百万个词元的上下文。日本語のテキストとカタカナ、ひらがな。\n"
    "Ünïcödé àccénts: naïve café résumé — “quotes” and ‘single’ … ellipsis\n"
    "Emoji: 😀🚀👍🏽 and symbols ©®™ ∑∫√ ≤ ≥ ≠\n"
    "<｜User｜>What is 2+2?<｜Assistant｜>2 + 2 = 4.<｜end▁of▁sentence｜>\n"
    "URL: https://example.com/path?query=1&x=y#frag  \t  trailing spaces   \n"
    "Русский текст и العربية وहिन्दी 한국어 문장 Ελληνικά\n";

std::string mixed_text(size_t bytes) {
  std::string s;
  while (s.size() < bytes) s += kSample;
  return s;
}

// Words from a fixed-seed generator: few repeats, so the BPE word cache rarely helps.
std::string unique_words_text(size_t bytes) {
  std::string s;
  uint64_t x = 0x9E3779B97F4A7C15ull;
  const char* letters = "etaoinshrdlcumwfgypbvkjxqz";
  while (s.size() < bytes) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    const size_t len = 2 + x % 10;
    s += ' ';
    for (size_t k = 0; k < len; ++k) s += letters[(x >> (5 * k + 8)) % 26 % (k == 0 ? 26 : 12)];
    if (x % 7 == 0) s += ",";
    if (x % 13 == 0) s += ".\n";
  }
  return s;
}

void run_encode(benchmark::State& state, const std::string& text) {
  const Tokenizer& tok = tokenizer();
  std::vector<int32_t> ids;
  for (auto _ : state) {
    ids.clear();
    tok.encode_into(text, ids);
    benchmark::DoNotOptimize(ids.data());
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * text.size()));
  state.counters["tokens"] = static_cast<double>(ids.size());
  state.counters["bytes/token"] = static_cast<double>(text.size()) / static_cast<double>(ids.size());
}

void BM_EncodeMixed1MB(benchmark::State& state) { run_encode(state, mixed_text(1 << 20)); }
void BM_EncodeUniqueWords1MB(benchmark::State& state) { run_encode(state, unique_words_text(1 << 20)); }

void BM_Decode1MB(benchmark::State& state) {
  const Tokenizer& tok = tokenizer();
  const std::string text = mixed_text(1 << 20);
  const std::vector<int32_t> ids = tok.encode(text);
  for (auto _ : state) benchmark::DoNotOptimize(tok.decode(ids));
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * text.size()));
}

void BM_Load(benchmark::State& state) {
  const char* dir = std::getenv("DSV4_TOKENIZER_DIR");
#ifdef DSV4_TOKENIZER_DIR
  if (!dir) dir = DSV4_TOKENIZER_DIR;
#endif
  for (auto _ : state) benchmark::DoNotOptimize(Tokenizer::load(dir).vocab_size());
}

}  // namespace

BENCHMARK(BM_EncodeMixed1MB)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_EncodeUniqueWords1MB)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_Decode1MB)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_Load)->Unit(benchmark::kMillisecond)->Iterations(3);

BENCHMARK_MAIN();
