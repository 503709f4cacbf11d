// GEMV bandwidth on the device: a stored-format matrix streamed by DeviceMatrix::matvec_device,
// against a device-to-device copy timed in the same run (bytes read + written). Each measurement
// rotates over device copies of the matrix (random bytes; at least 4 and 256 MB of them, well above
// the L2),
// with random x; the FP8/FP4 rows give the tensor-core path and the earlier FMA kernels ("legacy",
// set_legacy_gemv) side by side. The last lines are a table: scheme, shape, batch, GB/s, fraction.
// Build: nvcc -std=c++20 -O3 -arch=sm_90 -Iinclude bench/cuda_gemv_bench.cu src/cuda/gemv.cu
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "dsv4/cuda/gemv.hpp"

using namespace dsv4;

namespace {

void ck(cudaError_t e, const char* what) {
  if (e != cudaSuccess) {
    std::fprintf(stderr, "%s: %s\n", what, cudaGetErrorString(e));
    std::exit(1);
  }
}

// Median over `rounds` of the mean time of `reps` calls, in ms.
template <class F>
float time_ms(F f, int reps, int rounds = 5) {
  cudaEvent_t a, b;
  ck(cudaEventCreate(&a), "event"), ck(cudaEventCreate(&b), "event");
  for (int i = 0; i < 3; ++i) f(i);
  ck(cudaDeviceSynchronize(), "warm-up");
  std::vector<float> t;
  for (int r = 0; r < rounds; ++r) {
    cudaEventRecord(a);
    for (int i = 0; i < reps; ++i) f(i);
    cudaEventRecord(b);
    ck(cudaEventSynchronize(b), "timing");
    float ms = 0;
    cudaEventElapsedTime(&ms, a, b);
    t.push_back(ms / float(reps));
  }
  ck(cudaGetLastError(), "kernels");
  std::sort(t.begin(), t.end());
  cudaEventDestroy(a), cudaEventDestroy(b);
  return t[t.size() / 2];
}

struct Row {
  std::string name;
  long long n, k, batch;
  double gbs, frac;
};

}  // namespace

int main() {
  if (!cuda::device_available()) {
    std::printf("SKIP: no CUDA device\n");
    return 77;
  }
  std::mt19937 rng(1);
  std::uniform_int_distribution<int> byte(0, 255), sbyte(118, 130);
  std::normal_distribution<float> normal(0.f, 1.f);

  void *c0, *c1;
  const size_t cb = size_t(1) << 30;
  ck(cudaMalloc(&c0, cb), "alloc"), ck(cudaMalloc(&c1, cb), "alloc");
  ck(cudaMemset(c0, 1, cb), "memset");
  const float copy_ms = time_ms([&](int) { cudaMemcpyAsync(c1, c0, cb, cudaMemcpyDeviceToDevice); }, 10);
  const double copy_gbs = 2.0 * double(cb) / copy_ms / 1e6;
  cudaFree(c0), cudaFree(c1);
  std::printf("d2d copy: %.1f GB/s (read+write)\n", copy_gbs);

  const int kMaxBatch = 32;
  std::vector<Row> rows;
  // DSV4_GEMV_BENCH_QUICK=1: the first shape at batch 1 on the tensor-core path only (for a profiler).
  const bool quick = std::getenv("DSV4_GEMV_BENCH_QUICK") != nullptr;
  // DSV4_GEMV_BENCH_SHAPES: "NxK,NxK,..." or "model" (V4-Flash's decode shapes: wq_b, wo_b, wq_a,
  // an expert's w1 and w2); default 16384x7168,4096x4096.
  std::vector<std::pair<int64_t, int64_t>> shapes;
  {
    const char* e = std::getenv("DSV4_GEMV_BENCH_SHAPES");
    std::string spec = e ? e : "16384x7168,4096x4096";
    if (spec == "model") spec = "32768x1024,4096x8192,1024x4096,2048x4096,4096x2048";
    for (size_t at = 0; at < spec.size();) {
      const size_t end = std::min(spec.find(',', at), spec.size());
      long long n = 0, k = 0;
      if (std::sscanf(spec.c_str() + at, "%lldx%lld", &n, &k) != 2 || n <= 0 || k <= 0 || k % 128 != 0) {
        std::fprintf(stderr, "DSV4_GEMV_BENCH_SHAPES: bad shape at '%s' (NxK, K a multiple of 128)\n", spec.c_str() + at);
        return 2;
      }
      shapes.push_back({n, k});
      at = end + 1;
    }
  }
  for (size_t si = 0; si < shapes.size(); ++si) {
    const auto [n, k] = shapes[si];
    if (quick && si != 0) continue;
    const int kCopies = int(std::max<int64_t>(4, (int64_t(256) << 20) / (n * k / 2)));
    std::vector<uint8_t> q(size_t(n * k)), s(size_t(n * k / 32 + 1));
    for (auto& b : q) b = uint8_t(byte(rng));
    for (auto& b : s) b = uint8_t(sbyte(rng));
    std::vector<uint8_t> q8 = q;
    for (auto& b : q8)
      if ((b & 0x7F) == 0x7F) b = 0x7E;  // no E4M3 NaN codes
    std::vector<uint8_t> qb = q;  // BF16: finite values of moderate size
    for (size_t i = 1; i < qb.size(); i += 2) qb[i] = uint8_t(0x3c + (qb[i] & 1) + ((qb[i] & 0x80) ? 0x80 : 0));
    std::vector<float> xh(size_t(kMaxBatch * k));
    for (auto& v : xh) v = normal(rng);
    float *x, *y;
    ck(cudaMalloc(&x, xh.size() * 4), "alloc"), ck(cudaMalloc(&y, size_t(kMaxBatch * n) * 4), "alloc");
    ck(cudaMemcpy(x, xh.data(), xh.size() * 4, cudaMemcpyHostToDevice), "copy");
    const Matrix fp4 = Fp4GroupMatrix{q.data(), s.data(), n, k, 32};
    const Matrix fp8 = Fp8BlockMatrix{q8.data(), s.data(), false, n, k, 128, 128};
    const Matrix bf16 = Bf16Matrix{qb.data(), n, k / 2};
    for (auto [name, m] : {std::pair{"fp4", &fp4}, std::pair{"fp8", &fp8}, std::pair{"bf16", &bf16}}) {
      const cuda::MatrixView v = cuda::view_of(*m);
      std::vector<std::unique_ptr<cuda::DeviceMatrix>> d;
      for (int c = 0; c < kCopies; ++c) d.push_back(std::make_unique<cuda::DeviceMatrix>(v));
      for (const bool legacy : {false, true}) {
        if (legacy && std::string(name) == "bf16") continue;  // one BF16 kernel
        if (quick && (legacy || std::string(name) == "bf16")) continue;
        cuda::set_legacy_gemv(legacy);
        const std::string label = std::string(name) + (legacy ? "-legacy" : "");
        for (int64_t batch : {1, 2, 4, 8, 16, 32}) {
          if (quick && batch != 1) continue;
          const float ms = time_ms([&](int i) { d[size_t(i % kCopies)]->matvec_device(x, y, batch, nullptr); }, 20);
          const double gbs = double(v.data_bytes + v.scale_bytes) / ms / 1e6;
          std::printf("%-12s n=%lld k=%lld batch=%-3lld %8.1f us  %7.1f GB/s  %5.1f%% of copy\n", label.c_str(),
                      (long long)v.n, (long long)v.k, (long long)batch, ms * 1e3, gbs, 100.0 * gbs / copy_gbs);
          rows.push_back({label, (long long)v.n, (long long)v.k, (long long)batch, gbs, gbs / copy_gbs});
        }
      }
      cuda::set_legacy_gemv(false);
    }
    cudaFree(x), cudaFree(y);
  }
  std::printf("\nscheme        n      k      batch  GB/s    of copy (%.0f GB/s)\n", copy_gbs);
  for (const Row& r : rows)
    std::printf("%-12s %-6lld %-6lld %-6lld %-7.0f %.2f\n", r.name.c_str(), r.n, r.k, r.batch, r.gbs, r.frac);
  return 0;
}
