// Prefill timing of the CUDA backend: one sequence of P tokens in one forward (fast mode), after a
// warm-up prefill of the same size (so that workspace growth and cuBLAS's first calls stay out),
// median of `runs` on the host clock (the forward synchronizes). Beside it the matrix work it does
// (2 x the weights a token multiplies below the head, plus attention's 4 H d FLOPs a key) as
// TFLOP/s and as a fraction of a cuBLAS BF16 GEMM measured in the same run; then, on a second
// DeviceModel with DSV4_CUDA_PROFILE=1, the device-time split of one more prefill. Uses only the
// public API, so the same source builds against any tree (scripts/cuda_device.sh prefill).
// With DSV4_PREFILL_NCU=1: one warm-up prefill, then one between cudaProfilerStart/Stop (for
// `ncu --profile-from-start off`), and nothing else.
//   cuda_prefill_bench MODEL [prompt tokens = 2048] [runs = 3]
#include <cuda_profiler_api.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

#include "dsv4/cuda/device_model.hpp"

using namespace dsv4;

namespace {

// FLOPs of a prefill of P tokens from position 0 (matrix products and attention; the head on the
// last row only).
double prefill_flops(const ModelConfig& c, int64_t P) {
  const double D = double(c.hidden_size), H = double(c.num_heads), d = double(c.head_dim), R = double(c.q_lora_rank);
  const double Iw = double(c.moe_intermediate_size), nm = double((2 + c.hc_mult) * c.hc_mult);
  double per_token = 0, attn = 0;
  for (const LayerConfig& l : c.layers) {
    double w = R * D + H * d * R + d * D + H * d * double(c.o_lora_rank) + D * double(c.o_groups * c.o_lora_rank);
    w += 2 * nm * double(c.hc_mult) * D;                                 // the two mHC mixes
    w += double(c.n_routed_experts) * D;                                  // gate
    w += 3 * D * Iw * double(c.n_experts_per_tok + c.n_shared_experts);  // routed + shared experts
    const int64_t m = l.compress_ratio;
    if (l.attention != AttentionKind::Sliding) w += 2 * D * d * (l.attention == AttentionKind::CSA ? 2 : 1);
    if (l.attention == AttentionKind::CSA) {
      const double nh = double(c.index_n_heads), ci = double(c.index_head_dim);
      w += nh * ci * R + nh * D + 2 * D * 2 * ci;
    }
    per_token += 2 * w;
    for (int64_t p = 0; p < P; ++p) {  // keys of position p
      double keys = double(std::min<int64_t>(c.sliding_window, p + 1));
      if (l.attention == AttentionKind::HCA) keys += double((p + 1) / m);
      if (l.attention == AttentionKind::CSA) {
        keys += double(std::min<int64_t>(c.index_topk, (p + 1) / m));
        attn += 2 * double((p + 1) / m) * double(c.index_n_heads * c.index_head_dim);  // indexer scores
      }
      attn += 4 * H * d * keys;
    }
  }
  return per_token * double(P) + attn;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s MODEL [prompt tokens] [runs]\n", argv[0]);
    return 2;
  }
  if (!cuda::device_available()) {
    std::printf("SKIP: no CUDA device\n");
    return 77;
  }
  const int64_t P = argc > 2 ? std::atoll(argv[2]) : 2048, runs = argc > 3 ? std::atoll(argv[3]) : 3;
  const Model m = Model::load(argv[1]);
  const ModelConfig& c = m.config();
  std::mt19937 rng(5);
  std::vector<int32_t> prompt(static_cast<size_t>(P));
  for (auto& t : prompt) t = int32_t(rng() % uint32_t(c.vocab_size));
  std::vector<float> logits;
  cuda::DeviceOptions o;
  o.max_context = P + 8;
  double med = 0;
  if (std::getenv("DSV4_PREFILL_NCU")) {
    cuda::DeviceModel gm(m, o);
    for (int i = 0; i < 2; ++i) {
      cuda::DeviceCache cache = gm.new_cache();
      cuda::DeviceSequenceInput in{&cache, prompt};
      if (i == 1) cudaProfilerStart();
      gm.forward({&in, 1}, logits, LogitRows::Last);
      if (i == 1) cudaProfilerStop();
    }
    return 0;
  }
  {
    cuda::DeviceModel gm(m, o);
    auto prefill = [&]() {
      cuda::DeviceCache cache = gm.new_cache();
      cuda::DeviceSequenceInput in{&cache, prompt};
      const auto t0 = std::chrono::steady_clock::now();
      gm.forward({&in, 1}, logits, LogitRows::Last);
      return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    };
    prefill();  // warm-up at full size
    std::vector<double> s;
    for (int64_t i = 0; i < runs; ++i) s.push_back(prefill());
    std::sort(s.begin(), s.end());
    med = s[s.size() / 2];
    const double gemm = cuda::measure_bf16_gemm_flops(8192, 8192, 8192);
    const double flops = prefill_flops(c, P);
    std::printf("prefill %lld tokens (%lld layers) on %s: median %.2f ms (min %.2f, max %.2f, %lld runs): %.1f tokens/s; "
                "%.2f TFLOP = %.1f TFLOP/s, %.1f%% of cuBLAS BF16 %.1f TFLOP/s (8192^3, this run)\n",
                (long long)P, (long long)c.num_layers, gm.device_name().c_str(), 1e3 * med, 1e3 * s.front(),
                1e3 * s.back(), (long long)runs, double(P) / med, flops / 1e12, flops / med / 1e12,
                100.0 * flops / med / gemm, gemm / 1e12);
  }
  // The device-time split of one prefill (events between the parts; a model built with profiling on).
  setenv("DSV4_CUDA_PROFILE", "1", 1);
  cuda::DeviceModel gp(m, o);
  {
    cuda::DeviceCache cache = gp.new_cache();
    cuda::DeviceSequenceInput in{&cache, prompt};
    gp.forward({&in, 1}, logits, LogitRows::Last);  // warm-up
  }
  gp.take_profile();
  {
    cuda::DeviceCache cache = gp.new_cache();
    cuda::DeviceSequenceInput in{&cache, prompt};
    gp.forward({&in, 1}, logits, LogitRows::Last);
  }
  const auto parts = gp.take_profile();
  double total = 0;
  for (auto& p : parts) total += p.second;
  for (auto& [part, ms] : parts) std::printf("profile prefill %-14s %9.3f ms %5.1f%%\n", part.c_str(), ms, 100.0 * ms / total);
  return 0;
}
