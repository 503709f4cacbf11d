#pragma once
// Block-wide reductions of the CUDA backend's kernels (device code only): sums, maxima, scans, top-k.
#include <cfloat>
#include <cstdint>
#include <cuda_runtime.h>

namespace dsv4::cuda {

// Sum over the block (blockDim.x a multiple of 32, at most 1024); every thread gets the result.
__device__ __forceinline__ float block_sum(float v) {
  __shared__ float part[32];
  for (int o = 16; o > 0; o /= 2) v += __shfl_xor_sync(0xffffffffu, v, o);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, nw = blockDim.x / 32;
  __syncthreads();
  if (lane == 0) part[warp] = v;
  __syncthreads();
  float t = lane < nw ? part[lane] : 0.f;
  for (int o = 16; o > 0; o /= 2) t += __shfl_xor_sync(0xffffffffu, t, o);
  return t;
}

__device__ __forceinline__ float block_max(float v) {
  __shared__ float part[32];
  for (int o = 16; o > 0; o /= 2) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, nw = blockDim.x / 32;
  __syncthreads();
  if (lane == 0) part[warp] = v;
  __syncthreads();
  float t = lane < nw ? part[lane] : -FLT_MAX;
  for (int o = 16; o > 0; o /= 2) t = fmaxf(t, __shfl_xor_sync(0xffffffffu, t, o));
  return t;
}

// The CPU routers' order (HigherScore, include/dsv4/core/score_order.hpp) on (value, index) pairs:
// NaN ranks below every number, ties go to the lower index.
__device__ __forceinline__ float rank_key(float v) { return isnan(v) ? -INFINITY : v; }
__device__ __forceinline__ bool ranks_higher(float va, int32_t a, float vb, int32_t b) {
  return va > vb || (va == vb && a < b);
}

// Orderable key of a score: a larger key ranks ahead in HigherScore's order (rank_key's NaN as -inf,
// -0 equal to +0; ties are left to the index).
__device__ __forceinline__ uint32_t rank_bits(float v) {
  v = rank_key(v);
  const uint32_t u = __float_as_uint(v == 0.f ? 0.f : v);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

// Inclusive sums of a and b over the warp's lanes (every lane calls it).
__device__ __forceinline__ void warp_inclusive_sum2(int& a, int& b) {
  const int lane = threadIdx.x % 32;
  for (int o = 1; o < 32; o *= 2) {
    const int ua = __shfl_up_sync(0xffffffffu, a, o), ub = __shfl_up_sync(0xffffffffu, b, o);
    if (lane >= o) a += ua, b += ub;
  }
}

// Block-wide exclusive sums of a and b (every thread calls it; blockDim.x a multiple of 32);
// red: 2 x warps ints of shared memory.
__device__ __forceinline__ void block_exclusive_sum2(int& a, int& b, int* red) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, nw = blockDim.x / 32;
  int ia = a, ib = b;
  warp_inclusive_sum2(ia, ib);
  if (lane == 31) red[warp] = ia, red[nw + warp] = ib;
  __syncthreads();
  if (warp == 0) {
    int wa = lane < nw ? red[lane] : 0, wb = lane < nw ? red[nw + lane] : 0;
    warp_inclusive_sum2(wa, wb);
    if (lane < nw) red[lane] = wa, red[nw + lane] = wb;  // inclusive over warps
  }
  __syncthreads();
  const int ba = warp > 0 ? red[warp - 1] : 0, bb = warp > 0 ? red[nw + warp - 1] : 0;
  a = ba + ia - a, b = bb + ib - b;
}

// picked [k] <- the k best of v [E] in HigherScore's order among the e with eligible(e), by k rounds
// of a block argmax; taken experts are skipped by id, so even a NaN row picks k distinct in-range
// ids. Ends synchronized; every thread of the block calls it. k <= 64 (picked's size).
template <class Eligible>
__device__ void block_top_k(const float* v, int64_t E, int64_t k, Eligible eligible, int32_t* picked) {
  __shared__ float best_v[32];
  __shared__ int32_t best_i[32];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, nw = blockDim.x / 32;
  for (int64_t j = 0; j < k; ++j) {
    float bv = -INFINITY;
    int32_t bi = int32_t(E);
    for (int64_t e = threadIdx.x; e < E; e += blockDim.x) {
      if (!eligible(e)) continue;
      bool taken = false;
      for (int64_t q = 0; q < j; ++q) taken |= picked[q] == e;
      const float x = rank_key(v[e]);
      if (!taken && ranks_higher(x, int32_t(e), bv, bi)) bv = x, bi = int32_t(e);
    }
    for (int o = 16; o > 0; o /= 2) {
      const float ov = __shfl_xor_sync(0xffffffffu, bv, o);
      const int32_t oi = __shfl_xor_sync(0xffffffffu, bi, o);
      if (ranks_higher(ov, oi, bv, bi)) bv = ov, bi = oi;
    }
    if (lane == 0) best_v[warp] = bv, best_i[warp] = bi;
    __syncthreads();
    if (threadIdx.x == 0) {
      for (int w = 1; w < nw; ++w)
        if (ranks_higher(best_v[w], best_i[w], best_v[0], best_i[0])) best_v[0] = best_v[w], best_i[0] = best_i[w];
      picked[j] = best_i[0];
    }
    __syncthreads();
  }
}

}  // namespace dsv4::cuda
