// DeepSeek-V3's group-limited router (group_route.hpp): one block per token.
#include <cmath>

#include "cuda_check.hpp"
#include "group_route.hpp"
#include "reduce.cuh"

namespace dsv4::cuda::k {
namespace {

// Scores and biased scores in shared memory; each group's score by one thread (the CPU's loop,
// comparisons included, so NaN behaves alike); the groups kept by thread 0 (few); then k rounds of
// block_top_k over the kept groups' experts.
__global__ void group_route_kernel(const float* logits, const float* bias, int64_t E, int64_t groups,
                                   int64_t keep_groups, int64_t k, bool normalize, float scaling, int32_t* experts,
                                   float* weights) {
  extern __shared__ float rs[];  // [E] scores, [E] biased, [groups] group scores, [groups] kept flags
  __shared__ int32_t picked[64];
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
        if (kept[g] == 0.f && (bi < 0 || ranks_higher(rank_key(gs[g]), g, bv, bi))) bv = rank_key(gs[g]), bi = g;
      if (bi >= 0) kept[bi] = 1.f;  // (keep_groups <= groups: the config reader checks)
    }
  __syncthreads();
  // The CPU's candidates: the kept groups' experts (whole groups).
  block_top_k(biased, E, k, [&](int64_t e) { return e < groups * per && kept[e / per] != 0.f; }, picked);
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
