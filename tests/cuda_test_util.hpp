#pragma once
// Helpers of the GPU model tests (test_cuda_model, test_cuda_v3, test_cuda_split): options by mode,
// feeding a device cache in chunks, the CPU oracle's logits, greedy decoding on the device.
#include <algorithm>
#include <span>
#include <vector>

#include "dsv4/cuda/device_model.hpp"
#include "golden.hpp"

namespace dsv4::testing {

inline cuda::DeviceOptions with_mode(KernelMode mode) {
  cuda::DeviceOptions o;
  o.mode = mode;
  return o;
}

// Logits [S, V] of ids fed to one device cache in chunks (empty: one pass; after the listed chunks,
// one token at a time).
inline std::vector<float> run_gpu(cuda::DeviceModel& gm, std::span<const int32_t> ids,
                                  const std::vector<int64_t>& chunks) {
  cuda::DeviceCache cache = gm.new_cache();
  const int64_t V = gm.config().vocab_size, S = int64_t(ids.size());
  std::vector<float> out, logits;
  int64_t done = 0;
  size_t next = 0;
  while (done < S) {
    int64_t n = chunks.empty() ? S : next < chunks.size() ? chunks[next++] : 1;
    n = std::min(n, S - done);
    cuda::DeviceSequenceInput in{&cache, ids.subspan(size_t(done), size_t(n))};
    gm.forward({&in, 1}, logits, LogitRows::All);
    out.insert(out.end(), logits.begin(), logits.begin() + n * V);
    done += n;
  }
  return out;
}

// The CPU oracle's logits [S, V] of ids in one pass.
inline std::vector<float> run_cpu(const Model& m, std::span<const int32_t> ids) {
  return run_in_chunks<Fp32Reference>(m, ids, {});
}

// n greedy tokens after feed on the device, one token per forward after the prompt.
inline std::vector<int32_t> greedy_gpu(cuda::DeviceModel& gm, std::vector<int32_t> feed, size_t n) {
  cuda::DeviceCache cache = gm.new_cache();
  std::vector<int32_t> out;
  std::vector<float> logits;
  while (out.size() < n) {
    cuda::DeviceSequenceInput in{&cache, feed};
    gm.forward({&in, 1}, logits, LogitRows::Last);
    out.push_back(argmax(logits));
    feed = {out.back()};
  }
  return out;
}

}  // namespace dsv4::testing
