// dsv4 bench: prefill and decode speed of a checkpoint, against the memory bandwidth measured in
// the same run. Decode streams each token's active weights once, so bytes/token ÷ bandwidth is the
// floor on its time; the ratio printed is the roofline fraction.
#include <chrono>
#include <cstdio>
#include <random>

#include "common.hpp"

namespace dsv4::cli {

namespace {

// Weight bytes one decoded token reads in this process: every dense matrix, k routed experts per MoE
// layer (split over ranks: this rank's expected share of them), the head (or this rank's block).
int64_t active_bytes_per_token(const Model& m) {
  const ModelConfig& c = m.config();
  int64_t bytes = 0;
  auto add = [&](const char*, const Matrix& w) { bytes += storage_bytes(w); };
  for (const DecoderLayer& l : m.layers()) {
    std::visit([&](auto& at) { at.for_each_matrix(add); }, l.attn);
    for (auto* r : {&l.attn_residual, &l.ffn_residual})
      if (auto* hc = std::get_if<HyperConnection>(r)) add("", hc->fn);
    int64_t routed = 0, experts = 0;
    for_each_ffn_matrix(l.ffn, [&](const char*, const Matrix& w, bool is_routed) {
      if (is_routed) routed += storage_bytes(w), ++experts;
      else add("", w);
    });
    // k of the E experts (3 matrices each); this rank holds experts/3 of them.
    if (experts) bytes += routed / (experts / 3) * c.n_experts_per_tok * (experts / 3) / c.n_routed_experts;
  }
  add("", m.head());
  bytes += storage_bytes(m.embedding()) / c.vocab_size;
  return bytes;
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

int cmd_bench(const Args& a) {
  apply_threads(a);
  const int64_t P = a.has("prompt-tokens") ? parse_int(a.get("prompt-tokens"), "--prompt-tokens") : 128;
  const int64_t N = a.has("decode-tokens") ? parse_int(a.get("decode-tokens"), "--decode-tokens") : 16;
  if (P < 1 || N < 1) fail("--prompt-tokens and --decode-tokens must be >= 1");
  const Model m = load_model(a);
  const ModelConfig& c = m.config();
  std::mt19937_64 rng(1);
  std::vector<int32_t> prompt(static_cast<size_t>(P));
  for (auto& t : prompt) t = int32_t(2 + rng() % uint64_t(c.vocab_size - 2));
  // Split over ranks on one machine, every rank measures at once and the machine's bandwidth is the sum.
  Communicator* comm = m.distribution().comm;
  double bw = measure_read_bandwidth();
  if (comm) bw = sum_over_ranks(*comm, bw);
  double comm_decode_s = 0;
  // Split over ranks: the bytes all ranks read per token (replicated parts counted on each rank).
  int64_t active = active_bytes_per_token(m);
  if (comm) active = sum_over_ranks(*comm, active);

  double prefill_s = 0, decode_s = 0;
  with_mode(a, [&]<class Bundle>() {
    std::vector<float> logits;
    // Warm-up: pages the weights in from the file and settles the caches; not timed.
    {
      SequenceCache warm = m.new_cache();
      std::vector<int32_t> w(prompt.begin(), prompt.begin() + std::min<int64_t>(P, 8));
      SequenceInput in{&warm, w};
      m.forward<Bundle>({&in, 1}, logits, LogitRows::Last);
      for (int i = 0; i < 2; ++i) {
        std::vector<int32_t> one{argmax(logits)};
        SequenceInput step{&warm, one};
        m.forward<Bundle>({&step, 1}, logits, LogitRows::Last);
      }
    }
    SequenceCache cache = m.new_cache();
    auto t0 = std::chrono::steady_clock::now();
    SequenceInput in{&cache, prompt};
    m.forward<Bundle>({&in, 1}, logits, LogitRows::Last);
    prefill_s = seconds_since(t0);
    t0 = std::chrono::steady_clock::now();
    const double comm0 = comm ? comm->seconds_in_collectives() : 0;
    for (int64_t i = 0; i < N; ++i) {
      std::vector<int32_t> one{argmax(logits)};
      SequenceInput step{&cache, one};
      m.forward<Bundle>({&step, 1}, logits, LogitRows::Last);
    }
    decode_s = seconds_since(t0);
    if (comm) comm_decode_s = comm->seconds_in_collectives() - comm0;
  });
  const double decode_tps = double(N) / decode_s, achieved = double(active) * decode_tps;
  std::printf("model           %s (%lld layers, mode %s, %d threads, isa %s)\n", a.get("model").c_str(),
              (long long)c.num_layers, a.get("mode", "fast").c_str(), num_threads(), cpu::isa_name(cpu::dispatch().isa));
  std::printf("prefill         %lld tokens in %.3f s: %.2f tokens/s\n", (long long)P, prefill_s, double(P) / prefill_s);
  std::printf("decode          %lld tokens in %.3f s: %.3f tokens/s (%.1f ms/token)\n", (long long)N, decode_s,
              decode_tps, 1e3 / decode_tps);
  std::printf("active weights  %.1f MB per decoded token%s\n", double(active) / 1e6,
              comm ? " (read by all ranks together)" : "");
  std::printf("achieved        %.2f GB/s\n", achieved / 1e9);
  std::printf("memory read bw  %.2f GB/s (measured in this run)\n", bw / 1e9);
  std::printf("roofline        %.1f%%\n", 100.0 * achieved / bw);
  if (comm)
    std::printf("ranks           %d (expert parallel); rank 0 in collectives %.1f%% of decode (%.2f ms/token)\n",
                comm->size(), 100.0 * comm_decode_s / decode_s, 1e3 * comm_decode_s / double(N));
  std::printf("{\"prefill_tokens_per_s\": %.4f, \"decode_tokens_per_s\": %.4f, \"active_bytes_per_token\": %lld, "
              "\"achieved_gbps\": %.3f, \"read_bandwidth_gbps\": %.3f, \"roofline_fraction\": %.4f}\n",
              double(P) / prefill_s, decode_tps, (long long)active, achieved / 1e9, bw / 1e9, achieved / bw);
  return 0;
}

}  // namespace dsv4::cli
