// Kernel benchmarks at DeepSeek-V4-Flash shapes. Weights are quantized outside the timed loop and
// cycled through a pool far larger than the caches, so GEMV numbers are DRAM streaming numbers.
// Each result carries bytes/s, FLOP/s and the fraction of the read bandwidth measured at start-up.
// Every weight and scale array starts at DSV4_BENCH_OFFSET bytes past a 64-byte line (default 56:
// where `dsv4 synth` output, like the published checkpoints, puts them; 0 for aligned arrays).
#include <benchmark/benchmark.h>

#include <random>

#include "dsv4/dsv4.hpp"

using namespace dsv4;

namespace {

double g_bandwidth = 0;  // bytes/s, measured once
int g_offset = 56;       // each array's first byte, mod 64

// `size` bytes starting g_offset bytes past a 64-byte line.
struct Bytes {
  std::vector<uint8_t> storage;
  uint8_t* p = nullptr;
  size_t n = 0;
  explicit Bytes(size_t size) : storage(size + 128), n(size) {
    const auto base = reinterpret_cast<uintptr_t>(storage.data());
    p = storage.data() + ((64 - base % 64) % 64 + size_t(g_offset));
  }
  uint8_t* begin() { return p; }
  uint8_t* end() { return p + n; }
};

struct Pool {
  std::vector<Bytes> q, s;
  std::vector<Matrix> m;
};

// Random bytes, fast (the pools are gigabytes): a 64-bit xorshift, 8 bytes per step.
void fill_random(Bytes& v, uint64_t seed) {
  uint64_t x = seed | 1;
  size_t i = 0;
  for (; i + 8 <= v.n; i += 8) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    std::memcpy(v.p + i, &x, 8);
  }
  for (; i < v.n; ++i) v.p[i] = uint8_t(x >> (8 * (i % 8)));
}

// Enough copies of an [n, k] matrix of the scheme to exceed 768 MB, or one (hot: the matrix stays in
// cache, which measures the kernel's own rate).
Pool make_pool(int scheme, int64_t n, int64_t k, bool hot) {
  std::mt19937_64 rng(42);
  Pool p;
  const int64_t bytes = scheme == 0 ? n * k / 2 + n * k / 32 : scheme == 1 ? n * k + n * k / (128 * 128) : n * k * 2;
  const int copies = hot ? 1 : int(std::max<int64_t>(2, (int64_t(768) << 20) / bytes));
  for (int c = 0; c < copies; ++c) {
    if (scheme == 0) {  // FP4 experts
      Bytes q(size_t(n * k / 2)), s(size_t(n * k / 32));
      fill_random(q, rng());
      for (auto& b : s) b = uint8_t(120 + rng() % 4);
      p.q.push_back(std::move(q)), p.s.push_back(std::move(s));
      p.m.push_back(Fp4GroupMatrix{p.q.back().p, p.s.back().p, n, k, 32});
    } else if (scheme == 2) {  // BF16 (embedding and output head)
      Bytes q(size_t(n * k * 2));
      fill_random(q, rng());
      for (size_t j = 1; j < q.n; j += 2) q.p[j] = uint8_t(0x3C + (q.p[j] & 1));  // magnitudes ~2^-7
      p.q.push_back(std::move(q));
      p.m.push_back(Bf16Matrix{p.q.back().p, n, k});
    } else {  // block FP8 dense
      Bytes q(size_t(n * k)), s(size_t(((n + 127) / 128) * ((k + 127) / 128)));
      fill_random(q, rng());
      for (auto& b : q) b &= 0x7E;  // no NaN codes
      for (auto& b : s) b = uint8_t(118 + rng() % 4);
      p.q.push_back(std::move(q)), p.s.push_back(std::move(s));
      p.m.push_back(Fp8BlockMatrix{p.q.back().p, p.s.back().p, false, n, k, 128, 128});
    }
  }
  return p;
}

void BM_matmul(benchmark::State& state, int scheme, int64_t n, int64_t k, bool hot = false) {
  const int64_t t = state.range(0);
  static std::map<std::tuple<int, int64_t, int64_t, bool>, Pool> pools;
  Pool& pool = pools.try_emplace({scheme, n, k, hot}, make_pool(scheme, n, k, hot)).first->second;
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
  BENCHMARK_CAPTURE(BM_matmul, bf16_head_129280x4096, 2, 129280, 4096)->Arg(1)->UseRealTime();             \
  /* in cache (1 MiB of weights): the kernels' own rate, which bounds what they can stream */          \
  BENCHMARK_CAPTURE(BM_matmul, fp4_hot_512x4096, 0, 512, 4096, true)->Arg(1)->Arg(8)->UseRealTime();   \
  BENCHMARK_CAPTURE(BM_matmul, fp8_hot_256x4096, 1, 256, 4096, true)->Arg(1)->Arg(8)->UseRealTime();     \
  BENCHMARK_CAPTURE(BM_matmul, bf16_hot_128x4096, 2, 128, 4096, true)->Arg(1)->UseRealTime();

DSV4_SHAPES()

}  // namespace

int main(int argc, char** argv) {
  if (const char* o = std::getenv("DSV4_BENCH_OFFSET")) {
    char* end = nullptr;
    const long v = std::strtol(o, &end, 10);
    if (end == o || *end != '\0' || v < 0 || v > 63) {
      std::fprintf(stderr, "bench_kernels: DSV4_BENCH_OFFSET must be 0..63 (bytes past a 64-byte line), got '%s'\n", o);
      return 2;
    }
    g_offset = int(v);
  }
  g_bandwidth = measure_read_bandwidth();
  std::printf("memory read bandwidth: %.2f GB/s, %d threads, isa %s, arrays at %d mod 64 bytes\n", g_bandwidth / 1e9,
              num_threads(), cpu::isa_name(cpu::dispatch().isa), g_offset);
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
}
