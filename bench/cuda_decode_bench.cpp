// Decode-step timing of the CUDA backend: per batch size, the median and the mean wall time of a
// decode step (one token per sequence; from the third step on, a replayed CUDA graph), with every
// sequence prefilled with the same prompt first. With DSV4_DECODE_NCU=B, one replayed step at batch
// B is bracketed by cudaProfilerStart/Stop, so that `ncu --profile-from-start off` times exactly
// that step's kernels (scripts/cuda_device.sh profile). Each batch's line ends with a hash of the last
// step's logits.
//   cuda_decode_bench MODEL [prompt tokens = 256] [steps = 32] [batches = 1,8,32]
#include <cuda_profiler_api.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <numeric>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "dsv4/cuda/device_model.hpp"
#include "dsv4/sampling/sampler.hpp"

using namespace dsv4;

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s MODEL [prompt tokens] [steps] [batches, e.g. 1,8,32]\n", argv[0]);
    return 2;
  }
  if (!cuda::device_available()) {
    std::printf("SKIP: no CUDA device\n");
    return 77;
  }
  const int64_t P = argc > 2 ? std::atoll(argv[2]) : 256, N = argc > 3 ? std::atoll(argv[3]) : 32;
  std::vector<int64_t> batches;
  {
    std::stringstream ss(argc > 4 ? argv[4] : "1,8,32");
    for (std::string item; std::getline(ss, item, ',');) batches.push_back(std::atoll(item.c_str()));
  }
  const char* ncu_env = std::getenv("DSV4_DECODE_NCU");
  const int64_t ncu_batch = ncu_env ? std::atoll(ncu_env) : 0;

  const Model m = Model::load(argv[1]);
  const ModelConfig& c = m.config();
  cuda::DeviceOptions o;
  o.max_context = P + N + 8;
  cuda::DeviceModel gm(m, o);
  const double copy = cuda::measure_copy_bandwidth();
  const double active = double(gm.active_bytes_per_token());
  std::printf("device %s, copy %.1f GB/s, active weights %.1f MB/token, floor %.3f ms/step at batch 1\n",
              gm.device_name().c_str(), copy / 1e9, active / 1e6, 1e3 * active / copy);
  std::mt19937 rng(5);
  std::vector<int32_t> prompt(static_cast<size_t>(P));
  for (auto& t : prompt) t = int32_t(rng() % uint32_t(c.vocab_size));
  std::vector<float> logits;
  for (const int64_t B : batches) {
    std::vector<cuda::DeviceCache> caches;
    for (int64_t b = 0; b < B; ++b) caches.push_back(gm.new_cache());
    std::vector<cuda::DeviceSequenceInput> batch;
    for (int64_t b = 0; b < B; ++b) {
      cuda::DeviceSequenceInput in{&caches[size_t(b)], prompt};
      gm.forward({&in, 1}, logits, LogitRows::Last);
      batch.push_back(in);
    }
    std::vector<std::vector<int32_t>> next(size_t(B), std::vector<int32_t>(1));
    auto step = [&]() {
      for (int64_t b = 0; b < B; ++b) {
        next[size_t(b)][0] = int32_t((b * 7919 + int64_t(logits.size())) % c.vocab_size);
        batch[size_t(b)].tokens = next[size_t(b)];
      }
      gm.forward(batch, logits, LogitRows::Last);
    };
    step(), step();  // direct, then captured
    std::vector<double> ms;
    for (int64_t i = 0; i < N; ++i) {
      const auto t0 = std::chrono::steady_clock::now();
      step();
      ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
    }
    if (B == ncu_batch) {
      cudaProfilerStart();
      step();
      cudaProfilerStop();
    }
    std::vector<double> sorted = ms;
    std::sort(sorted.begin(), sorted.end());
    const double med = sorted[sorted.size() / 2], mean = std::accumulate(ms.begin(), ms.end(), 0.0) / double(ms.size());
    std::printf("decode batch %-3lld median %.3f ms/step (mean %.3f, min %.3f): %.1f tokens/s", (long long)B, med, mean,
                sorted.front(), 1e3 * double(B) / med);
    if (B == 1) std::printf("; weights %.1f GB/s = %.1f%% of copy", active / med / 1e6, 100.0 * active / (med * 1e-3) / copy);
    // FNV-1a of the last step's logits: equal across trees and settings that must agree bit for bit.
    uint64_t h = 1469598103934665603ull;
    for (const float v : logits) {
      uint32_t u;
      std::memcpy(&u, &v, sizeof u);
      h = (h ^ u) * 1099511628211ull;
    }
    std::printf("; logits %016llx\n", (unsigned long long)h);
  }
  return 0;
}
