// DeepSeek-V3's group-limited router (group_route.hpp): one block per token.
#include <cmath>

#include "cuda_check.hpp"
#include "group_route.hpp"

namespace dsv4::cuda::k {
namespace {

// HigherScore's key: NaN ranks below every number.
__device__ __forceinline__ float rank_key(float v) { return isnan(v) ? -INFINITY : v; }
__device__ __forceinline__ bool higher(float va, int32_t a, float vb, int32_t b) {
  return va > vb || (va == vb && a < b);
}

// Scores and biased scores in shared memory; each group's score by one thread (the CPU's loop,
// comparisons included, so NaN behaves alike); the groups kept by thread 0 (few); then k rounds of
// a block argmax over the kept groups' experts, each taking its expert out of the running.
__global__ void group_route_kernel(const float* logits, const float* bias, int64_t E, int64_t groups,
                                   int64_t keep_groups, int64_t k, bool normalize, float scaling, int32_t* experts,
                                   float* weights) {
  extern __shared__ float rs[];  // [E] scores, [E] biased, [groups] group scores, [groups] kept flags
  __shared__ float best_v[32];
  __shared__ int32_t best_i[32], picked[64];
  const int64_t t = blockIdx.x, per = E / groups;
  float* sc = rs;
  float* biased = rs + E;
  float* gs = rs + 2 * E;
  float* kept = gs + groups;
  for (int64_t e = threadIdx.x; e < E; e += blockDim.x) {
    sc[e] = 1.0f / (1.0f + expf(-logits[t * E + e]));
    biased[e] = sc[e] + bias[e];
  }
  __syncthreads();
  for (int64_t g = threadIdx.x; g < groups; g += blockDim.x) {
    const float* b = biased + g * per;
    float top = b[0], second = -INFINITY;
    for (int64_t j = 1; j < per; ++j)
      if (b[j] > top) second = top, top = b[j];
      else second = second < b[j] ? b[j] : second;  // std::max(second, b[j])
    gs[g] = per > 1 ? top + second : top;
    kept[g] = 0.f;
  }
  __syncthreads();
  if (threadIdx.x == 0)
    for (int64_t r = 0; r < keep_groups; ++r) {
      float bv = 0.f;
      int32_t bi = -1;
      for (int32_t g = 0; g < int32_t(groups); ++g)
        if (kept[g] == 0.f && (bi < 0 || higher(rank_key(gs[g]), g, bv, bi))) bv = rank_key(gs[g]), bi = g;
      if (bi >= 0) kept[bi] = 1.f;  // (keep_groups <= groups: the config reader checks)
    }
  __syncthreads();
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, nw = blockDim.x / 32;
  for (int64_t j = 0; j < k; ++j) {
    float bv = -INFINITY;
    int32_t bi = int32_t(E);
    for (int64_t e = threadIdx.x; e < E; e += blockDim.x) {
      if (e >= groups * per || kept[e / per] == 0.f) continue;  // the CPU's candidates: whole groups
      bool taken = false;
      for (int64_t q = 0; q < j; ++q) taken |= picked[q] == e;
      const float v = rank_key(biased[e]);
      if (!taken && higher(v, int32_t(e), bv, bi)) bv = v, bi = int32_t(e);
    }
    for (int o = 16; o > 0; o /= 2) {
      const float ov = __shfl_xor_sync(0xffffffffu, bv, o);
      const int32_t oi = __shfl_xor_sync(0xffffffffu, bi, o);
      if (higher(ov, oi, bv, bi)) bv = ov, bi = oi;
    }
    if (lane == 0) best_v[warp] = bv, best_i[warp] = bi;
    __syncthreads();
    if (threadIdx.x == 0) {
      for (int w = 1; w < nw; ++w)
        if (higher(best_v[w], best_i[w], best_v[0], best_i[0])) best_v[0] = best_v[w], best_i[0] = best_i[w];
      picked[j] = best_i[0];
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    float sum = 0.f;
    for (int64_t j = 0; j < k; ++j) sum += sc[picked[j]];
    for (int64_t j = 0; j < k; ++j) {
      const float s = sc[picked[j]];
      experts[t * k + j] = picked[j];
      weights[t * k + j] = (normalize ? s / (sum + 1e-20f) : s) * scaling;
    }
  }
}

}  // namespace

void route_group_limited(const float* logits, const float* bias, int64_t t, int64_t E, int64_t groups,
                         int64_t keep_groups, int64_t k, bool normalize, float scaling, int32_t* experts,
                         float* weights, void* s) {
  if (k > 64) throw Error("cuda: the group-limited router takes at most 64 experts a token");
  const size_t smem = size_t(2 * E + 2 * groups) * sizeof(float);
  group_route_kernel<<<unsigned(t), 256, smem, st(s)>>>(logits, bias, E, groups, keep_groups, k, normalize, scaling,
                                                         experts, weights);
  launched("group-limited route");
}

}  // namespace dsv4::cuda::k
