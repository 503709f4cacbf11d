// Long-context decode on a V4-Flash-shaped attention stack: one sliding, one CSA and one HCA layer
// of the real V4-Flash attention shapes (d 512, 64 heads, indexer 64 × 128, top-k 512, window
// 128, ratios 4 and 128), their caches filled synthetically to each context length
// (model/synthetic_context.hpp). For each cache type and context it times one decode step of each
// layer's attention alone (fast kernels), the Lightning Indexer's scoring alone (FLOP rate against
// the peak of the instructions it uses, measured in the same run: fp32 FMA or bf16 dot products), and reports the cache bytes of the full 43-layer
// V4-Flash at that context (the allocation formula the runtime uses). Prints a table; --csv FILE
// writes the rows for bench/plot_long_context.gp.
//
//   bench_long_context [--model DIR] [--contexts 4096,32768,...] [--types f32,bf16,compact]
//                      [--steps N] [--threads T] [--csv FILE]
// Without --model it writes the stack's checkpoint (8 small experts: the MoE is not measured) to a
// temporary folder and removes it at the end.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <random>
#include <string>
#include <unistd.h>

#include "dsv4/core/peak_flops.hpp"
#include "dsv4/dsv4.hpp"

using namespace dsv4;

namespace {

std::map<std::string, std::string> parse_args(int argc, char** argv) {
  std::map<std::string, std::string> a;
  for (int i = 1; i < argc; ++i) {
    std::string k = argv[i];
    if (k.rfind("--", 0) != 0 || i + 1 >= argc) fail("bench_long_context: bad argument '", k, "'");
    a[k.substr(2)] = argv[++i];
  }
  return a;
}

std::vector<std::string> split(const std::string& s) {
  std::vector<std::string> out;
  size_t at = 0;
  while (at <= s.size()) {
    const size_t comma = std::min(s.find(',', at), s.size());
    out.push_back(s.substr(at, comma - at));
    at = comma + 1;
  }
  return out;
}

double now_s() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

struct Row {
  std::string type;
  int64_t context = 0;
  double ms[3] = {0, 0, 0};  // sliding, csa, hca: one decode step of the layer's attention
  double indexer_ms = 0, indexer_gflops = 0;
  int64_t stack_bytes = 0, flash_bytes = 0;
};

}  // namespace

int main(int argc, char** argv) try {
  auto args = parse_args(argc, argv);
  if (args.count("threads")) set_num_threads(std::stoi(args["threads"]));
  const std::vector<std::string> contexts = split(args.count("contexts") ? args["contexts"] : "4096,32768,131072,524288,1048576");
  const std::vector<std::string> types = split(args.count("types") ? args["types"] : "f32,bf16,compact");
  const int steps = args.count("steps") ? std::stoi(args["steps"]) : 5;

  std::filesystem::path dir;
  bool temp = false;
  if (args.count("model")) {
    dir = args["model"];
  } else {
    nlohmann::ordered_json j = nlohmann::ordered_json::parse(preset_config("v4-flash", 3));
    j["compress_ratios"] = {0, 4, 128};
    j["n_routed_experts"] = 8;
    dir = std::filesystem::temp_directory_path() / ("dsv4_long_context_" + std::to_string(::getpid()));
    std::fprintf(stderr, "writing the attention stack's checkpoint to %s\n", dir.c_str());
    write_synthetic_checkpoint(dir, j.dump(2));
    temp = true;
  }
  const Model m = Model::load(dir);
  const ModelConfig& c = m.config();
  const ModelConfig flash = parse_config(preset_config("v4-flash", -1), "v4-flash");
  int layer_of[3] = {-1, -1, -1};
  for (int l = 0; l < int(c.layers.size()); ++l) {
    const AttentionKind k = c.layers[size_t(l)].attention;
    if (k == AttentionKind::Sliding) layer_of[0] = l;
    if (k == AttentionKind::CSA) layer_of[1] = l;
    if (k == AttentionKind::HCA) layer_of[2] = l;
  }
  const PeakFlops peak = measure_peak_flops();
  const bool bf16_dot = cpu::dispatch().indexer_bf16;
  std::printf("threads %d, isa %s, peak measured: fp32 FMA %.1f GFLOP/s, bf16 dot %.1f GFLOP/s; indexer on %s keys "
              "uses %s\n",
              num_threads(), cpu::isa_name(cpu::dispatch().isa), peak.fp32 / 1e9, peak.bf16 / 1e9, "bf16/fp4",
              bf16_dot ? "bf16 dot products" : "fp32 FMA");
  // The peak each type's indexer kernel runs against: f32 keys take fp32 FMA; bf16 and fp4 keys the
  // bf16 dot products where the dispatch chose them.
  auto peak_for = [&](const std::string& t) { return t != "f32" && bf16_dot ? peak.bf16 : peak.fp32; };

  std::mt19937 rng(1);
  std::normal_distribution<float> nd(0.f, 1.f);
  const int64_t D = c.hidden_size;
  std::vector<float> x(static_cast<size_t>(D)), out(static_cast<size_t>(D));
  std::vector<Row> rows;
  for (const std::string& tn : types) {
    const CacheType type = parse_cache_type(tn);
    for (const std::string& cs : contexts) {
      const int64_t N = std::stoll(cs);
      Row r;
      r.type = tn, r.context = N;
      SequenceCache cache = m.new_cache(type);
      fill_synthetic_context(m, cache, N);
      r.stack_bytes = cache.total_bytes();
      for (const LayerConfig& l : flash.layers) r.flash_bytes += predict_layer_cache_bytes(flash, l, N, type).total();
      auto& states = CacheStateAccess::layers(cache);
      for (int k = 0; k < 3; ++k) {
        const int l = layer_of[k];
        if (l < 0) continue;
        std::vector<double> times;
        for (int s = 0; s <= steps; ++s) {
          for (auto& v : x) v = nd(rng);
          const std::vector<Segment> segs = {{0, 1, N + s}};
          const double t0 = now_s();
          std::visit(
              [&](auto& attn) {
                using State = typename std::decay_t<decltype(attn)>::State;
                std::vector<State*> st = {&std::get<State>(states[size_t(l)])};
                attn.template forward<FastCpu>(c, m.rope(c.layers[size_t(l)].attention), x.data(), 1, segs, st,
                                               out.data(), nullptr, l);
              },
              m.layers()[size_t(l)].attn);
          if (s > 0) times.push_back(now_s() - t0);  // the first step warms up
        }
        std::sort(times.begin(), times.end());
        r.ms[k] = 1e3 * times[times.size() / 2];
        if (k == 1) {  // the indexer's scoring and top-k alone, over every entry
          const auto& csa = std::get<CsaAttention::State>(states[size_t(l)]);
          const int64_t nh = c.index_n_heads, ci = c.index_head_dim, n = csa.index_keys.num_entries();
          std::vector<float> q(static_cast<size_t>(nh * ci)), g(static_cast<size_t>(nh)), scores;
          std::vector<int64_t> chosen;
          for (auto& v : q) v = nd(rng);
          for (auto& v : g) v = nd(rng);
          std::vector<double> it;
          for (int s = 0; s <= steps; ++s) {
            const double t0 = now_s();
            indexer_select<FastCpu>(c, q.data(), g.data(), csa.index_keys.entries, n, scores, chosen);
            if (s > 0) it.push_back(now_s() - t0);
          }
          std::sort(it.begin(), it.end());
          r.indexer_ms = 1e3 * it[it.size() / 2];
          r.indexer_gflops = 2.0 * double(nh * ci) * double(n) / (r.indexer_ms * 1e-3) / 1e9;
        }
      }
      rows.push_back(r);
      std::fprintf(stderr, "%s %lld done\n", tn.c_str(), (long long)N);
    }
  }
  std::printf("%-8s %9s %10s %10s %10s %12s %12s %8s %16s %14s\n", "cache", "context", "sliding ms", "csa ms",
              "hca ms", "indexer ms", "idx GFLOP/s", "of peak", "stack cache MiB", "V4-Flash GiB");
  for (const Row& r : rows)
    std::printf("%-8s %9lld %10.3f %10.3f %10.3f %12.3f %12.1f %7.1f%% %16.1f %14.3f\n", r.type.c_str(),
                (long long)r.context, r.ms[0], r.ms[1], r.ms[2], r.indexer_ms, r.indexer_gflops,
                100.0 * r.indexer_gflops * 1e9 / peak_for(r.type), double(r.stack_bytes) / (1 << 20), double(r.flash_bytes) / (1 << 30));
  if (args.count("csv")) {
    std::ofstream f(args["csv"]);
    f << "cache,context,sliding_ms,csa_ms,hca_ms,indexer_ms,indexer_gflops,peak_gflops,stack_cache_bytes,"
         "v4flash_cache_bytes\n";
    for (const Row& r : rows)
      f << r.type << ',' << r.context << ',' << r.ms[0] << ',' << r.ms[1] << ',' << r.ms[2] << ',' << r.indexer_ms << ','
        << r.indexer_gflops << ',' << peak_for(r.type) / 1e9 << ',' << r.stack_bytes << ',' << r.flash_bytes << '\n';
  }
  if (temp) std::filesystem::remove_all(dir);
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "bench_long_context: %s\n", e.what());
  return 1;
}
