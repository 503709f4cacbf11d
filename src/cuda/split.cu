// Kernels of a model split over ranks (expert parallelism on the GPU, device_model.cpp): only the
// split path launches them, so the one-GPU forward runs exactly the kernels it ran before.
#include <algorithm>
#include <cstdint>
#include <string>

#include <cuda_runtime.h>

#include "cuda_check.hpp"
#include "kernels.hpp"

namespace dsv4::cuda::k {
namespace {

__global__ void localize_slots_kernel(int32_t* experts, float* weights, int64_t n, int32_t first, int32_t count) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const int32_t e = experts[i] - first;
  const bool mine = e >= 0 && e < count;
  experts[i] = mine ? e : count;
  if (!mine) weights[i] = 0.f;
}

__global__ void drop_bucket_kernel(int32_t* rows4, int64_t n, int32_t bucket) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n && rows4[4 * i] == bucket) rows4[4 * i] = -1;
}

__global__ void sum_ranks_kernel(const float* __restrict__ parts, int ranks, int64_t n, float* __restrict__ out) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    float s = parts[i];
    for (int r = 1; r < ranks; ++r) s += parts[int64_t(r) * n + i];  // rank order, as dsv4::allreduce_sum
    out[i] = s;
  }
}

unsigned blocks(int64_t n) { return unsigned((n + 255) / 256); }

}  // namespace

void localize_slots(int32_t* experts, float* weights, int64_t n, int64_t first, int64_t count, void* s) {
  if (n == 0) return;
  localize_slots_kernel<<<blocks(n), 256, 0, st(s)>>>(experts, weights, n, int32_t(first), int32_t(count));
  launched("localize_slots");
}

void drop_bucket(int32_t* rows4, int64_t n, int64_t bucket, void* s) {
  if (n == 0) return;
  drop_bucket_kernel<<<blocks(n), 256, 0, st(s)>>>(rows4, n, int32_t(bucket));
  launched("drop_bucket");
}

void sum_ranks(const float* parts, int64_t ranks, int64_t n, float* out, void* s) {
  if (n == 0) return;
  const int64_t b = std::min<int64_t>(blocks(n), 4096);
  sum_ranks_kernel<<<unsigned(b), 256, 0, st(s)>>>(parts, int(ranks), n, out);
  launched("sum_ranks");
}

}  // namespace dsv4::cuda::k
