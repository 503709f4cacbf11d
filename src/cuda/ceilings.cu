// The device's measured ceilings, for the ratios dsv4 bench reports: copy bandwidth and the cuBLAS
// BF16 GEMM rate, each timed with CUDA events on the same device in the same run.
#include <cublas_v2.h>
#include <cuda_bf16.h>

#include "decode.cuh"

namespace dsv4::cuda {

namespace {

void check_blas(cublasStatus_t s, const char* what) {
  if (s != CUBLAS_STATUS_SUCCESS) throw Error(std::string("cublas: ") + what + " failed (status " + std::to_string(int(s)) + ")");
}

template <class F>
double best_seconds(F&& f, int reps) {
  cudaEvent_t a, b;
  check(cudaEventCreate(&a), "event");
  check(cudaEventCreate(&b), "event");
  f();  // warm-up
  float best = 1e30f;
  for (int i = 0; i < reps; ++i) {
    check(cudaEventRecord(a), "event");
    f();
    check(cudaEventRecord(b), "event");
    check(cudaEventSynchronize(b), "event");
    float ms = 0;
    check(cudaEventElapsedTime(&ms, a, b), "event");
    best = std::min(best, ms);
  }
  cudaEventDestroy(a), cudaEventDestroy(b);
  return double(best) / 1e3;
}

}  // namespace

double measure_copy_bandwidth(int64_t bytes) {
  void *src = nullptr, *dst = nullptr;
  check(cudaMalloc(&src, size_t(bytes)), "copy buffer");
  check(cudaMalloc(&dst, size_t(bytes)), "copy buffer");
  check(cudaMemset(src, 1, size_t(bytes)), "copy buffer");
  const double s = best_seconds([&] { check(cudaMemcpy(dst, src, size_t(bytes), cudaMemcpyDeviceToDevice), "copy"); }, 5);
  cudaFree(src), cudaFree(dst);
  return 2.0 * double(bytes) / s;  // read + write
}

double measure_bf16_gemm_flops(int64_t m, int64_t n, int64_t k) {
  cublasHandle_t h;
  check_blas(cublasCreate(&h), "create");
  __nv_bfloat16 *a = nullptr, *b = nullptr;
  float* c = nullptr;
  check(cudaMalloc(&a, size_t(m * k) * 2), "gemm buffer");
  check(cudaMalloc(&b, size_t(k * n) * 2), "gemm buffer");
  check(cudaMalloc(&c, size_t(m * n) * 4), "gemm buffer");
  check(cudaMemset(a, 0, size_t(m * k) * 2), "gemm buffer");
  check(cudaMemset(b, 0, size_t(k * n) * 2), "gemm buffer");
  const float one = 1.f, zero = 0.f;
  const double s = best_seconds(
      [&] {
        check_blas(cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, int(m), int(n), int(k), &one, a, CUDA_R_16BF, int(k), b,
                                CUDA_R_16BF, int(k), &zero, c, CUDA_R_32F, int(m), CUBLAS_COMPUTE_32F,
                                CUBLAS_GEMM_DEFAULT),
                   "bf16 gemm");
      },
      5);
  cudaFree(a), cudaFree(b), cudaFree(c);
  cublasDestroy(h);
  return 2.0 * double(m) * double(n) * double(k) / s;
}

}  // namespace dsv4::cuda
