// dsv4 bench: prefill and decode speed of a checkpoint, against the memory bandwidth measured in
// the same run. Decode streams each token's active weights once, so bytes/token ÷ bandwidth is the
// floor on its time; the ratio printed is the roofline fraction.
#include <chrono>
#include <cstdio>
#include <random>

#include "common.hpp"
#include "dsv4/model/active_bytes.hpp"

namespace dsv4::cli {

namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

#if defined(DSV4_WITH_CUDA)
// The GPU: prefill of the prompt (one sequence), then decode of N tokens for each --batch size
// (that many sequences, each prefilled with the prompt, one token per sequence per step). Beside
// them, the device's copy bandwidth and the cuBLAS BF16 GEMM rate at the prefill's largest
// projection shape, measured in the same run.
int bench_cuda(const Args& a, const Model& m, const std::vector<int32_t>& prompt, int64_t N) {
  const ModelConfig& c = m.config();
  const int64_t P = int64_t(prompt.size());
  std::vector<int64_t> batches{1};
  if (a.has("batch")) batches = parse_int_list(a.get("batch"), "--batch");
  for (int64_t b : batches)
    if (b < 1 || b > 4096) fail("--batch: sizes must be in [1, 4096]");
  cuda::DeviceOptions o = device_options(parse_kernel_mode(a.get("mode", "fast")));
  o.max_context = P + N + 8;
  cuda::DeviceModel gm(m, o);
  // Split over GPUs: each measures its own copy at once, the roofline is their sum (as the CPU's).
  Communicator* comm = m.distribution().comm;
  double copy_bw = cuda::measure_copy_bandwidth();
  if (comm) copy_bw = sum_over_ranks(*comm, copy_bw);
  // The ceiling's GEMM: the query projection's shape (V3: dn + dr per head; a plain q_proj reads D).
  const int64_t gemm_n = c.num_heads * (c.residual == ResidualKind::Plain ? c.qk_nope_head_dim + c.rope_dim : c.head_dim);
  const int64_t gemm_k = c.q_lora_rank > 0 ? c.q_lora_rank : c.hidden_size;
  const double gemm = cuda::measure_bf16_gemm_flops(P, gemm_n, gemm_k);
  int64_t active = gm.active_bytes_per_token();  // split: this rank's share; summed below
  if (comm) active = sum_over_ranks(*comm, active);
  std::vector<float> logits;
  double first_s = 0;
  {  // warm-up at the prompt's size (workspace growth, cuBLAS's first calls), timed apart
    cuda::DeviceCache w = gm.new_cache();
    auto t = std::chrono::steady_clock::now();
    cuda::DeviceSequenceInput in{&w, prompt};
    gm.forward({&in, 1}, logits, LogitRows::Last);
    first_s = seconds_since(t);
  }
  (void)gm.take_profile();  // the profile below is of the timed prefill only
  cuda::DeviceCache cache = gm.new_cache();
  auto t0 = std::chrono::steady_clock::now();
  cuda::DeviceSequenceInput in{&cache, prompt};
  gm.forward({&in, 1}, logits, LogitRows::Last);
  const double prefill_s = seconds_since(t0);
  // DSV4_CUDA_PROFILE=1: where the device time of the prefill and of batch-1 decode goes.
  auto print_profile = [&](const char* what) {
    const auto parts = gm.take_profile();
    double total = 0;
    for (auto& p : parts) total += p.second;
    for (auto& [part, ms] : parts)
      std::printf("profile %-8s %-14s %9.3f ms %5.1f%%\n", what, part.c_str(), ms, 100.0 * ms / total);
  };
  print_profile("prefill");
  std::printf("model           %s (%lld layers, mode %s) on %s, weights %.2f GB on the device\n", a.get("model").c_str(),
              (long long)c.num_layers, kernel_mode_name(o.mode), gm.device_name().c_str(), double(gm.weight_bytes()) / 1e9);
  std::printf("device copy     %.1f GB/s (read + write, measured in this run%s)\n", copy_bw / 1e9,
              comm ? ", summed over the ranks' GPUs" : "");
  if (comm)
    std::printf("ranks           %d GPUs, expert parallel through NCCL (DSV4_CUDA_PROFILE=1: the 'comm' part is the "
                "exchange)\n", comm->size());
  std::printf("cuBLAS BF16     %.1f TFLOP/s (GEMM %lld x %lld x %lld, measured in this run)\n", gemm / 1e12,
              (long long)P, (long long)gemm_n, (long long)gemm_k);
  std::printf("prefill         %lld tokens in %.3f s: %.1f tokens/s (the first one, growing the workspace: %.3f s)\n",
              (long long)P, prefill_s, double(P) / prefill_s, first_s);
  std::printf("active weights  %.1f MB per decoded token\n", double(active) / 1e6);
  std::string json = "{\"prefill_tokens_per_s\": " + std::to_string(double(P) / prefill_s) +
                     ", \"copy_bandwidth_gbps\": " + std::to_string(copy_bw / 1e9) + ", \"decode\": [";
  for (size_t bi = 0; bi < batches.size(); ++bi) {
    const int64_t B = batches[bi];
    std::vector<cuda::DeviceCache> caches;
    std::vector<cuda::DeviceSequenceInput> batch;
    for (int64_t b = 0; b < B; ++b) caches.push_back(gm.new_cache());
    for (int64_t b = 0; b < B; ++b) batch.push_back({&caches[size_t(b)], prompt});
    // Prefill the sequences one at a time (a batch of 32 long prompts at once would hold 32x the
    // activations), then decode them together.
    std::vector<float> all(size_t(B * c.vocab_size));
    for (int64_t b = 0; b < B; ++b) {
      gm.forward({&batch[size_t(b)], 1}, logits, LogitRows::Last);
      std::copy(logits.begin(), logits.end(), all.begin() + b * c.vocab_size);
    }
    logits = all;
    gm.take_profile();
    // Greedy decode with the argmax on the device (forward_greedy): only B token ids come back a step.
    std::vector<int32_t> ids(static_cast<size_t>(B));
    for (int64_t b = 0; b < B; ++b)
      ids[size_t(b)] = argmax(std::span<const float>(logits).subspan(size_t(b * c.vocab_size), size_t(c.vocab_size)));
    std::vector<std::vector<int32_t>> next(static_cast<size_t>(B));
    t0 = std::chrono::steady_clock::now();
    for (int64_t i = 0; i < N; ++i) {
      for (int64_t b = 0; b < B; ++b) {
        next[size_t(b)] = {ids[size_t(b)]};
        batch[size_t(b)].tokens = next[size_t(b)];
      }
      gm.forward_greedy(batch, ids);
    }
    const double s = seconds_since(t0);
    if (B == 1) print_profile("decode");
    else gm.take_profile();
    const double steps = double(N) / s, achieved = double(active) * steps;
    std::printf("decode batch %-3lld %lld steps in %.3f s: %.1f tokens/s (%.2f ms/step)", (long long)B, (long long)N, s,
                steps * double(B), 1e3 / steps);
    // At batch 1 a step streams exactly the active weights; a larger batch reads more experts.
    if (B == 1) std::printf("; weights streamed %.1f GB/s = %.1f%% of copy", achieved / 1e9, 100.0 * achieved / copy_bw);
    std::printf("\n");
    json += std::string(bi ? ", " : "") + "{\"batch\": " + std::to_string(B) + ", \"tokens_per_s\": " +
            std::to_string(steps * double(B)) + ", \"ms_per_step\": " + std::to_string(1e3 / steps) + "}";
  }
  std::printf("%s]}\n", json.c_str());
  return 0;
}
#endif

}  // namespace

int cmd_bench(const Args& a) {
  apply_threads(a);
  const int64_t P = a.has("prompt-tokens") ? parse_int(a.get("prompt-tokens"), "--prompt-tokens") : 128;
  const int64_t N = a.has("decode-tokens") ? parse_int(a.get("decode-tokens"), "--decode-tokens") : 16;
  if (P < 1 || N < 1) fail("--prompt-tokens and --decode-tokens must be >= 1");
  const bool gpu = cuda_backend(a);
  const Model m = load_model(a);
  const ModelConfig& c = m.config();
  std::mt19937_64 rng(1);
  std::vector<int32_t> prompt(static_cast<size_t>(P));
  for (auto& t : prompt) t = int32_t(2 + rng() % uint64_t(c.vocab_size - 2));
  if (gpu && (a.has("cache-type") || a.has("context"))) fail("--cache-type and --context are for the CPU backend");
#if defined(DSV4_WITH_CUDA)
  if (gpu) return bench_cuda(a, m, prompt, N);
#endif
  if (a.has("batch")) fail("--batch: only with --backend cuda");
  (void)gpu;
  const CacheType type = cache_type(a);
  // --context N: decode at a long context; the cache is filled synthetically to N positions
  // (model/synthetic_context.hpp) instead of prefilling N tokens.
  const int64_t context = a.has("context") ? parse_int(a.get("context"), "--context") : 0;
  if (context < 0) fail("--context must be >= 0");
  // Split over ranks on one machine, every rank measures at once and the machine's bandwidth is the sum.
  Communicator* comm = m.distribution().comm;
  double bw = measure_read_bandwidth();
  if (comm) bw = sum_over_ranks(*comm, bw);
  double comm_decode_s = 0;
  // Split over ranks: the bytes all ranks read per token (replicated parts counted on each rank).
  int64_t active = active_bytes_per_token(m);
  if (comm) active = sum_over_ranks(*comm, active);

  double prefill_s = 0, decode_s = 0;
  int64_t cache_bytes = 0;
  with_mode(a, [&]<class Bundle>() {
    std::vector<float> logits;
    // Warm-up: pages the weights in from the file and settles the caches; not timed.
    {
      SequenceCache warm = m.new_cache(type);
      std::vector<int32_t> w(prompt.begin(), prompt.begin() + std::min<int64_t>(P, 8));
      SequenceInput in{&warm, w};
      m.forward<Bundle>({&in, 1}, logits, LogitRows::Last);
      for (int i = 0; i < 2; ++i) {
        std::vector<int32_t> one{argmax(logits)};
        SequenceInput step{&warm, one};
        m.forward<Bundle>({&step, 1}, logits, LogitRows::Last);
      }
    }
    SequenceCache cache = m.new_cache(type);
    if (context > 0) {
      fill_synthetic_context(m, cache, context);
      std::vector<int32_t> one{prompt[0]};
      SequenceInput in{&cache, one};
      m.forward<Bundle>({&in, 1}, logits, LogitRows::Last);  // one untimed step at that context
    } else {
      auto t0 = std::chrono::steady_clock::now();
      SequenceInput in{&cache, prompt};
      m.forward<Bundle>({&in, 1}, logits, LogitRows::Last);
      prefill_s = seconds_since(t0);
    }
    cache_bytes = cache.total_bytes();
    auto t0 = std::chrono::steady_clock::now();
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
  if (context > 0)
    std::printf("context         %lld positions (filled synthetically), cache %s: %.1f MiB\n", (long long)context,
                cache_type_name(type), double(cache_bytes) / (1 << 20));
  else
    std::printf("prefill         %lld tokens in %.3f s: %.2f tokens/s (cache %s: %.1f MiB)\n", (long long)P, prefill_s,
                double(P) / prefill_s, cache_type_name(type), double(cache_bytes) / (1 << 20));
  std::printf("decode          %lld tokens in %.3f s: %.3f tokens/s (%.1f ms/token)\n", (long long)N, decode_s,
              decode_tps, 1e3 / decode_tps);
  std::printf("active weights  %.1f MB per decoded token%s\n", double(active) / 1e6,
              comm ? " (read by all ranks together)" : "");
  std::printf("achieved        %.2f GB/s\n", achieved / 1e9);
  std::printf("memory read bw  %.2f GB/s (measured in this run)\n", bw / 1e9);
  std::printf("roofline        %.1f%%\n", 100.0 * achieved / bw);
  if (comm)
    std::printf("ranks           %d (%s); rank 0 in collectives %.1f%% of decode (%.2f ms/token)\n", comm->size(),
                m.distribution().tensor ? "tensor + expert parallel" : "expert parallel", 100.0 * comm_decode_s / decode_s,
                1e3 * comm_decode_s / double(N));
  std::printf("{\"prefill_tokens_per_s\": %.4f, \"decode_tokens_per_s\": %.4f, \"active_bytes_per_token\": %lld, "
              "\"achieved_gbps\": %.3f, \"read_bandwidth_gbps\": %.3f, \"roofline_fraction\": %.4f, \"context\": %lld, "
              "\"cache_type\": \"%s\", \"cache_bytes\": %lld, \"ranks\": %d, \"parallel\": \"%s\", "
              "\"collectives_fraction\": %.4f}\n",
              context > 0 ? 0.0 : double(P) / prefill_s, decode_tps, (long long)active, achieved / 1e9, bw / 1e9,
              achieved / bw, (long long)context, cache_type_name(type), (long long)cache_bytes, comm ? comm->size() : 1,
              !comm ? "none" : m.distribution().tensor ? "tensor" : "expert", comm ? comm_decode_s / decode_s : 0.0);
  return 0;
}

}  // namespace dsv4::cli
