// GEMV bandwidth on the device: a stored-format matrix streamed by DeviceMatrix::matvec_device,
// against a device-to-device copy timed in the same run (bytes read + written).
// Build: nvcc -std=c++20 -O3 -arch=sm_90 -Iinclude bench/cuda_gemv_bench.cu src/cuda/gemv.cu
#include <cuda_runtime.h>

#include <cstdio>
#include <vector>

#include "dsv4/cuda/gemv.hpp"

using namespace dsv4;

template <class F>
float time_ms(F f, int reps) {
  cudaEvent_t a, b;
  cudaEventCreate(&a), cudaEventCreate(&b);
  f();
  cudaEventRecord(a);
  for (int i = 0; i < reps; ++i) f();
  cudaEventRecord(b);
  cudaEventSynchronize(b);
  float ms = 0;
  cudaEventElapsedTime(&ms, a, b);
  return ms / float(reps);
}

int main() {
  const int64_t n = 16384, k = 7168;  // ~59 MB FP4, ~117 MB FP8: well above the 50 MB L2
  std::vector<uint8_t> q(size_t(n * k), 0x35), s(size_t(n * k / 32 + 1), 127);
  float *x, *y;
  cudaMalloc(&x, size_t(32 * k) * 4), cudaMalloc(&y, size_t(32 * n) * 4);
  cudaMemset(x, 0, size_t(32 * k) * 4);
  void *c0, *c1;
  const size_t cb = size_t(1) << 30;
  cudaMalloc(&c0, cb), cudaMalloc(&c1, cb);
  const float copy_ms = time_ms([&] { cudaMemcpy(c1, c0, cb, cudaMemcpyDeviceToDevice); }, 10);
  const double copy_gbs = 2.0 * double(cb) / copy_ms / 1e6;
  std::printf("d2d copy: %.1f GB/s (read+write)\n", copy_gbs);
  const Matrix fp4 = Fp4GroupMatrix{q.data(), s.data(), n, k, 32};
  const Matrix fp8 = Fp8BlockMatrix{q.data(), s.data(), false, n, k, 128, 128};
  const Matrix bf16 = Bf16Matrix{q.data(), n, k / 2};
  for (auto [name, m] : {std::pair{"fp4", &fp4}, std::pair{"fp8", &fp8}, std::pair{"bf16", &bf16}}) {
    const cuda::MatrixView v = cuda::view_of(*m);
    const cuda::DeviceMatrix d(v);
    for (int64_t batch : {1, 8, 32}) {
      const float ms = time_ms([&] { d.matvec_device(x, y, batch, nullptr); }, 20);
      const double gbs = double(v.data_bytes + v.scale_bytes) / ms / 1e6;
      std::printf("%-5s n=%lld k=%lld batch=%-3lld %.3f ms  %.1f GB/s  %.0f%% of copy\n", name, (long long)v.n,
                  (long long)v.k, (long long)batch, ms, gbs, 100.0 * gbs / copy_gbs);
    }
  }
  return 0;
}
