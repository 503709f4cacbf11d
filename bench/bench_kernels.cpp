// Kernel benchmarks at DeepSeek-V4-Flash shapes. Weights are quantized outside the timed loop and
// cycled through a pool far larger than the caches, so GEMV numbers are DRAM streaming numbers.
// Each result carries bytes/s, FLOP/s and the fraction of the read bandwidth measured at start-up.
#include <benchmark/benchmark.h>

#include <random>

#include "dsv4/dsv4.hpp"

using namespace dsv4;

namespace {

double g_bandwidth = 0;  // bytes/s, measured once

struct Pool {
  std::vector<std::vector<uint8_t>> q, s;
  std::vector<Matrix> m;
};

// Random bytes, fast (the pools are gigabytes): a 64-bit xorshift, 8 bytes per step.
void fill_random(std::vector<uint8_t>& v, uint64_t seed) {
  uint64_t x = seed | 1;
  size_t i = 0;
  for (; i + 8 <= v.size(); i += 8) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    std::memcpy(&v[i], &x, 8);
  }
  for (; i < v.size(); ++i) v[i] = uint8_t(x >> (8 * (i % 8)));
}

// Enough copies of an [n, k] matrix of the scheme to exceed 768 MB.
Pool make_pool(int scheme, int64_t n, int64_t k) {
  std::mt19937_64 rng(42);
  Pool p;
  const int64_t bytes = scheme == 0 ? n * k / 2 + n * k / 32 : scheme == 1 ? n * k + n * k / (128 * 128) : n * k * 2;
  const int copies = int(std::max<int64_t>(2, (int64_t(768) << 20) / bytes));
  for (int c = 0; c < copies; ++c) {
    if (scheme == 0) {  // FP4 experts
      std::vector<uint8_t> q(size_t(n * k / 2)), s(size_t(n * k / 32));
      fill_random(q, rng());
      for (auto& b : s) b = uint8_t(120 + rng() % 4);
      p.q.push_back(std::move(q)), p.s.push_back(std::move(s));
      p.m.push_back(Fp4GroupMatrix{p.q.back().data(), p.s.back().data(), n, k, 32});
    } else if (scheme == 2) {  // BF16 (embedding and output head)
      std::vector<uint8_t> q(size_t(n * k * 2));
      fill_random(q, rng());
      for (size_t j = 1; j < q.size(); j += 2) q[j] = uint8_t(0x3C + (q[j] & 1));  // magnitudes ~2^-7
      p.q.push_back(std::move(q));
      p.m.push_back(Bf16Matrix{p.q.back().data(), n, k});
    } else {  // block FP8 dense
      std::vector<uint8_t> q(size_t(n * k)), s(size_t(((n + 127) / 128) * ((k + 127) / 128)));
      fill_random(q, rng());
      for (auto& b : q) b &= 0x7E;  // no NaN codes
      for (auto& b : s) b = uint8_t(118 + rng() % 4);
      p.q.push_back(std::move(q)), p.s.push_back(std::move(s));
      p.m.push_back(Fp8BlockMatrix{p.q.back().data(), p.s.back().data(), false, n, k, 128, 128});
    }
  }
  return p;
}

void BM_matmul(benchmark::State& state, int scheme, int64_t n, int64_t k) {
  const int64_t t = state.range(0);
  static std::map<std::tuple<int, int64_t, int64_t>, Pool> pools;
  Pool& pool = pools.try_emplace({scheme, n, k}, make_pool(scheme, n, k)).first->second;
  std::vector<float> x(size_t(t * k)), y(size_t(t * n));
  std::mt19937 rng(1);
  std::normal_distribution<float> nd;
  for (auto& v : x) v = nd(rng);
  size_t i = 0;
  for (auto _ : state) {
    const Matrix& w = pool.m[i++ % pool.m.size()];
    FastCpu::matmul(w, x.data(), k, t, y.data(), n, 0, n);
    benchmark::DoNotOptimize(y.data());
  }
  const double wbytes = double(storage_bytes(pool.m[0]));
  const double iters = double(state.iterations());
  state.counters["GB/s"] = benchmark::Counter(wbytes * iters / 1e9, benchmark::Counter::kIsRate);
  state.counters["GFLOP/s"] = benchmark::Counter(2.0 * double(n * k * t) * iters / 1e9, benchmark::Counter::kIsRate);
  state.counters["bw_fraction"] =
      benchmark::Counter(wbytes * iters / g_bandwidth, benchmark::Counter::kIsRate);
}

#define DSV4_SHAPES()                                                                                      \
  BENCHMARK_CAPTURE(BM_matmul, fp4_expert_2048x4096, 0, 2048, 4096)->Arg(1)->Arg(2)->Arg(4)->Arg(8)->Arg(64)->Arg(512)->UseRealTime(); \
  BENCHMARK_CAPTURE(BM_matmul, fp4_expert_4096x2048, 0, 4096, 2048)->Arg(1)->Arg(2)->Arg(4)->Arg(8)->Arg(64)->Arg(512)->UseRealTime(); \
  BENCHMARK_CAPTURE(BM_matmul, fp8_dense_32768x1024, 1, 32768, 1024)->Arg(1)->Arg(2)->Arg(4)->Arg(8)->Arg(64)->Arg(512)->UseRealTime(); \
  BENCHMARK_CAPTURE(BM_matmul, fp8_dense_8192x4096, 1, 8192, 4096)->Arg(1)->Arg(2)->Arg(4)->Arg(8)->Arg(64)->Arg(512)->UseRealTime(); \
  BENCHMARK_CAPTURE(BM_matmul, fp8_dense_4096x8192, 1, 4096, 8192)->Arg(1)->Arg(2)->Arg(4)->Arg(8)->Arg(64)->Arg(512)->UseRealTime(); \
  BENCHMARK_CAPTURE(BM_matmul, bf16_head_129280x4096, 2, 129280, 4096)->Arg(1)->UseRealTime();

DSV4_SHAPES()

}  // namespace

int main(int argc, char** argv) {
  g_bandwidth = measure_read_bandwidth();
  std::printf("memory read bandwidth: %.2f GB/s, %d threads, isa %s\n", g_bandwidth / 1e9, num_threads(),
              cpu::isa_name(cpu::dispatch().isa));
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
}
