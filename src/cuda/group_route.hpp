#pragma once
// Launcher of DeepSeek-V3's group-limited router on the device (src/cuda/group_route.cu), the
// CPU's GroupLimitedRouter (include/dsv4/moe/group_limited_router.hpp) step for step.
#include <cstdint>

namespace dsv4::cuda::k {

// logits [T, E] -> experts [T, k], weights [T, k]: s = sigmoid(logits), choice on s + bias [E];
// E / groups consecutive experts a group, a group scoring its two highest; the keep_groups best
// groups, then their k best experts, ranked as the CPU's HigherScore (NaN lowest, ties to the
// lower index). Weights s (/ (their sum + 1e-20) when normalize) * scaling. k <= 64.
void route_group_limited(const float* logits, const float* bias, int64_t t, int64_t E, int64_t groups,
                         int64_t keep_groups, int64_t k, bool normalize, float scaling, int32_t* experts,
                         float* weights, void* s);

}  // namespace dsv4::cuda::k
