// Lightning Indexer scores (kernels/cpu/indexer_scores.hpp) at DeepSeek-V4 shapes: one query of
// nh = 64 heads x ci = 128 against n compressed keys (n = 262144 at a 1M-token context).
// Arguments: n, OpenMP threads. Each result carries FLOP/s (2 nh ci n per call), key bytes/s, and
// the fraction of the arithmetic peak measured on as many threads in the same run (core/peak_flops.hpp;
// re-measured when the last measurement is older than 5 s, since the machine may be shared):
// frac_peak against the peak of the instruction the instance multiplies with (fp32 FMA, or
// vdpbf16ps for the bf16-dot instance on BF16 / FP4 keys), frac_fp32 / frac_bf16 against each;
// best_GFLOP/s and best_frac_peak from the fastest single call (the least disturbed on a busy machine).
// Instances: "dispatch" (what FastCpu runs), and where compiled in, "fma" (AVX-512 fp32 FMA),
// "bf16dot" (AVX-512 + AVX512_BF16), "avx2" (quoted against the AVX2 FMA peak).
//
// The keys of one size stay in memory between calls (from L2 at n = 1024, from L3 / DRAM beyond).
#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "dsv4/core/bandwidth.hpp"
#include "dsv4/core/parallel.hpp"
#include "dsv4/core/peak_flops.hpp"
#include "dsv4/kernels/cpu/indexer_scores.hpp"

using namespace dsv4;

namespace {

constexpr int64_t kHeads = 64, kDim = 128;
struct Peak {
  PeakFlops p;
  std::chrono::steady_clock::time_point when;
};
std::map<std::pair<int, bool>, Peak> g_peak;  // by thread count, AVX-512 allowed
double g_bandwidth = 0;

// The peak on `threads` threads (the caller has set them): the largest measured so far in this run
// (a busy machine or a lower clock only ever lowers a measurement), measured again every 5 s.
// avx512 = false: the AVX2 FMA peak, for the AVX2 instance.
const PeakFlops& peak_now(int threads, bool avx512 = true) {
  const auto now = std::chrono::steady_clock::now();
  auto [it, fresh] = g_peak.try_emplace({threads, avx512});
  Peak& pk = it->second;
  if (fresh || now - pk.when > std::chrono::seconds(5)) {
    const PeakFlops m = measure_peak_flops(avx512);
    pk.p.fp32 = std::max(pk.p.fp32, m.fp32), pk.p.bf16 = std::max(pk.p.bf16, m.bf16);
    pk.p.fp32_isa = m.fp32_isa, pk.p.threads = m.threads;
    pk.when = now;
  }
  return pk.p;
}

void print_peaks(const char* when) {
  for (const auto& [key, pk] : g_peak)
    std::printf("peak (%s) on %d thread(s): fp32 (%s FMA) %.1f GFLOP/s, bf16 (vdpbf16ps) %.1f GFLOP/s\n", when,
                key.first, pk.p.fp32_isa, pk.p.fp32 / 1e9, pk.p.bf16 / 1e9);
}

struct Keys {
  RowCodec codec;
  std::vector<uint8_t> bytes;
};

const Keys& keys_for(RowFormat f, int64_t n) {
  static std::map<std::pair<int, int64_t>, Keys> cache;
  auto [it, fresh] = cache.try_emplace({int(f), n});
  if (fresh) {
    Keys& k = it->second;
    k.codec = RowCodec{f, kDim, 0};
    k.bytes.resize(size_t(n * k.codec.row_bytes()));
    std::mt19937 rng{uint32_t(n)};
    std::normal_distribution<float> nd;
    std::vector<float> row(kDim);
    for (int64_t e = 0; e < n; ++e) {
      for (auto& x : row) x = nd(rng);
      k.codec.encode(row.data(), k.bytes.data() + e * k.codec.row_bytes());
    }
  }
  return it->second;
}

void BM_indexer(benchmark::State& state, RowFormat f, cpu::IndexerFn fn, bool bf16_dot, bool avx512) {
  const int64_t n = state.range(0);
  const int threads = int(state.range(1));
  if (!fn) {
    state.SkipWithError("instance not available on this CPU");
    return;
  }
  const Keys& k = keys_for(f, n);
  std::mt19937 rng(5);
  std::normal_distribution<float> nd;
  std::vector<float> q(size_t(kHeads * kDim)), g(kHeads), scores(static_cast<size_t>(n));
  for (auto& x : q) x = nd(rng);
  for (auto& x : g) x = nd(rng);
  const int saved = num_threads();
  set_num_threads(threads);
  const PeakFlops peak = peak_now(threads, avx512);
  double best_s = 1e30;  // the fastest call: on a shared machine, the one least disturbed
  for (auto _ : state) {
    const auto t0 = std::chrono::steady_clock::now();
    fn(q.data(), g.data(), kHeads, k.codec, k.bytes.data(), n, 0.0884f, scores.data());
    benchmark::DoNotOptimize(scores.data());
    benchmark::ClobberMemory();
    best_s = std::min(best_s, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  set_num_threads(saved);
  const double iters = double(state.iterations());
  const double flop = 2.0 * double(kHeads * kDim * n) * iters;
  const bool uses_bf16 = bf16_dot && f != RowFormat::F32;
  state.counters["GFLOP/s"] = benchmark::Counter(flop / 1e9, benchmark::Counter::kIsRate);
  state.counters["GB/s"] = benchmark::Counter(double(k.bytes.size()) * iters / 1e9, benchmark::Counter::kIsRate);
  state.counters["frac_peak"] =
      benchmark::Counter(flop / (uses_bf16 ? peak.bf16 : peak.fp32), benchmark::Counter::kIsRate);
  state.counters["frac_fp32"] = benchmark::Counter(flop / peak.fp32, benchmark::Counter::kIsRate);
  if (peak.bf16 > 0) state.counters["frac_bf16"] = benchmark::Counter(flop / peak.bf16, benchmark::Counter::kIsRate);
  const double best_flops = 2.0 * double(kHeads * kDim * n) / best_s;
  state.counters["best_GFLOP/s"] = best_flops / 1e9;
  state.counters["best_frac_peak"] = best_flops / (uses_bf16 ? peak.bf16 : peak.fp32);
}

void register_all() {
  struct Inst {
    const char* name;
    cpu::IndexerFn fn;
    bool bf16;
    bool avx512;  // quoted against the AVX-512 peak (else AVX2)
  };
  const bool dispatch512 = int(cpu::dispatch().isa) >= int(cpu::Isa::Avx512);
  std::vector<Inst> insts{{"dispatch", cpu::dispatch().indexer, cpu::dispatch().indexer_bf16, dispatch512}};
#if defined(DSV4_MULTIARCH)
  const bool avx512 = int(cpu::detected_isa()) >= int(cpu::Isa::Avx512);
  insts.push_back({"fma", avx512 ? cpu::indexer_fn_avx512() : nullptr, false, true});
  insts.push_back(
      {"bf16dot", avx512 && cpu::cpu_has_avx512bf16() ? cpu::indexer_fn_avx512bf16() : nullptr, true, true});
  insts.push_back({"avx2", cpu::indexer_fn_avx2(), false, false});
#endif
  for (RowFormat f : {RowFormat::F32, RowFormat::BF16, RowFormat::Fp4})
    for (const Inst& i : insts) {
      if (f == RowFormat::F32 && std::string(i.name) == "bf16dot") continue;  // F32 keys: the fma code
      const std::string name = std::string("indexer/") + row_format_name(f) + "/" + i.name;
      auto* b = benchmark::RegisterBenchmark(name.c_str(), BM_indexer, f, i.fn, i.bf16, i.avx512);
      for (int t : {1, 2})
        for (int64_t n : {1024, 8192, 32768, 131072, 262144}) b->Args({n, t});
      b->ArgNames({"n", "threads"})->UseRealTime()->MinTime(0.2);
    }
}

}  // namespace

int main(int argc, char** argv) {
  const int saved = num_threads();
  for (int rep = 0; rep < 3; ++rep)
    for (int t : {1, 2}) {
      set_num_threads(t);
      g_peak[{t, true}].when = {};  // measure again now
      peak_now(t);
    }
  set_num_threads(saved);
  print_peaks("start");
  g_bandwidth = measure_read_bandwidth();
  std::printf(
      "memory read bandwidth %.2f GB/s (%d threads); isa %s, indexer bf16 dot: %s (vdpbf16ps / FMA rate %.2f)\n",
      g_bandwidth / 1e9, saved, cpu::isa_name(cpu::dispatch().isa), cpu::dispatch().indexer_bf16 ? "yes" : "no",
      bf16_dot_vs_fma_rate());
  register_all();
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  print_peaks("end, the largest measured");
}
