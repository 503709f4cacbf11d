// Sampling cost per token at DeepSeek's vocabulary size (129280 logits), one core: the greedy
// fast path, and the processor chains a chat front end uses. Logits are drawn like a model's:
// a few hundred plausible tokens on a long, low tail.
// Build: g++ -std=c++20 -O2 -Iinclude bench/text/bench_sampling.cpp -lbenchmark -lpthread
#include <benchmark/benchmark.h>

#include <cstdint>
#include <random>
#include <vector>

#include "dsv4/sampling/sampler.hpp"

namespace {

using namespace dsv4;

const std::vector<std::vector<float>>& rows() {
  static const std::vector<std::vector<float>> r = [] {
    std::mt19937 rng(1);
    std::normal_distribution<float> tail(-4.0f, 2.0f), head(6.0f, 2.0f);
    std::vector<std::vector<float>> out(16, std::vector<float>(129280));
    for (auto& row : out) {
      for (float& x : row) x = tail(rng);
      for (int i = 0; i < 300; ++i) row[rng() % row.size()] = head(rng);
    }
    return out;
  }();
  return r;
}

void run(benchmark::State& state, SamplingParams p) {
  Sampler s(p);
  std::vector<int32_t> context(2000);
  for (size_t i = 0; i < context.size(); ++i) context[i] = int32_t((i * 7919) % 129280);
  s.set_context(context);
  size_t i = 0;
  for (auto _ : state) benchmark::DoNotOptimize(s.next(rows()[i++ % rows().size()]));
  state.SetItemsProcessed(int64_t(state.iterations()));
}

SamplingParams sampled() {
  SamplingParams p;
  p.greedy = false;
  p.seed = 1;
  return p;
}

void BM_Greedy(benchmark::State& st) { run(st, SamplingParams{}); }
void BM_Softmax(benchmark::State& st) { run(st, sampled()); }
void BM_TemperatureTopP(benchmark::State& st) {
  SamplingParams p = sampled();
  p.temperature = 0.7f;
  p.top_p = 0.9f;
  run(st, p);
}
void BM_TopK40(benchmark::State& st) {
  SamplingParams p = sampled();
  p.top_k = 40;
  run(st, p);
}
void BM_MinP(benchmark::State& st) {
  SamplingParams p = sampled();
  p.min_p = 0.05f;
  run(st, p);
}
void BM_PenaltiesTopP(benchmark::State& st) {
  SamplingParams p = sampled();
  p.repetition_penalty = 1.1f;
  p.frequency_penalty = 0.3f;
  p.presence_penalty = 0.3f;
  p.top_p = 0.95f;
  run(st, p);
}

}  // namespace

BENCHMARK(BM_Greedy)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_Softmax)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_TemperatureTopP)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_TopK40)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_MinP)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_PenaltiesTopP)->Unit(benchmark::kMicrosecond);

BENCHMARK_MAIN();
