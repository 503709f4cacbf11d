#pragma once
// The machine's memory read bandwidth, measured: all threads sum a buffer far larger than the
// caches. Benchmarks quote their GB/s as a fraction of this, measured in the same run.
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <memory>
#include <vector>

#include "dsv4/core/parallel.hpp"

namespace dsv4 {

inline double measure_read_bandwidth(size_t bytes = size_t(1) << 30, int repeats = 3) {
  const size_t n = bytes / sizeof(uint64_t);
  std::unique_ptr<uint64_t[]> buf(new uint64_t[n]);
  parallel_for(int64_t(n / 4096), [&](int64_t b) {
    for (size_t i = size_t(b) * 4096; i < size_t(b + 1) * 4096; ++i) buf[i] = i;  // touch (first-touch placement)
  });
  double best = 0;
  volatile uint64_t sink = 0;
  for (int r = 0; r < repeats; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    uint64_t total = 0;
#pragma omp parallel for schedule(static) reduction(+ : total)
    for (int64_t b = 0; b < int64_t(n / 4096); ++b) {
      uint64_t a0 = 0, a1 = 0, a2 = 0, a3 = 0;  // independent chains so loads overlap
      const uint64_t* p = buf.get() + b * 4096;
      for (size_t i = 0; i < 4096; i += 4) a0 += p[i], a1 += p[i + 1], a2 += p[i + 2], a3 += p[i + 3];
      total += a0 + a1 + a2 + a3;
    }
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    sink = sink + total;
    best = std::max(best, double(n / 4096 * 4096 * sizeof(uint64_t)) / s);
  }
  (void)sink;
  return best;  // bytes per second
}

}  // namespace dsv4
