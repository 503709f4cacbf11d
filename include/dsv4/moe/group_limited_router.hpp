#pragma once
// DeepSeek-V3's router (spec MLA.md): s = sigmoid(gate · x); the choice reads c = s + bias
// (e_score_correction_bias). The E experts form G consecutive groups, a group scoring the sum of
// its two highest c; the TG best groups stay and the k highest c among their experts are chosen.
// Weights are s at those experts, normalised to sum 1 when norm_topk_prob, times
// routed_scaling_factor.
#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <string>
#include <vector>

#include "dsv4/core/score_order.hpp"
#include "dsv4/io/weight_source.hpp"
#include "dsv4/kernels/ops.hpp"

namespace dsv4 {

struct GroupLimitedRouter {
  std::vector<float> bias;  // [E] for the choice only

  static GroupLimitedRouter load(const WeightSource& ws, const std::string& prefix, const ModelConfig& c) {
    return {ws.floats(prefix + ".bias", {c.n_routed_experts})};  // required: a silent zero would route wrongly
  }

  // logits [T, E] -> experts [T, k], weights [T, k]; G, TG, k, normalisation and scaling from c.
  // Ties go to the lower index.
  void route(const ModelConfig& c, const float* logits, const int32_t*, int64_t t, int64_t* experts,
             float* weights) const {
    const int64_t E = int64_t(bias.size()), groups = c.n_group, keep_groups = c.topk_group, k = c.n_experts_per_tok;
    const int64_t per = E / groups;
    const bool normalize = c.norm_topk_prob;
    const float scaling = float(c.routed_scaling_factor);
    std::vector<float> s(static_cast<size_t>(E)), biased(static_cast<size_t>(E)),
        group_score(static_cast<size_t>(groups));
    std::vector<int64_t> gidx(static_cast<size_t>(groups)), candidates;
    for (int64_t i = 0; i < t; ++i) {
      for (int64_t e = 0; e < E; ++e) {
        s[size_t(e)] = sigmoid(logits[i * E + e]);
        biased[size_t(e)] = s[size_t(e)] + bias[size_t(e)];
      }
      for (int64_t g = 0; g < groups; ++g) {
        const float* b = &biased[size_t(g * per)];
        float top = b[0], second = -std::numeric_limits<float>::infinity();
        for (int64_t j = 1; j < per; ++j)
          if (b[j] > top) second = top, top = b[j];
          else second = std::max(second, b[j]);
        group_score[size_t(g)] = per > 1 ? top + second : top;
      }
      std::iota(gidx.begin(), gidx.end(), 0);
      std::partial_sort(gidx.begin(), gidx.begin() + keep_groups, gidx.end(), HigherScore{group_score.data()});
      candidates.clear();
      for (int64_t g = 0; g < keep_groups; ++g)
        for (int64_t j = 0; j < per; ++j) candidates.push_back(gidx[size_t(g)] * per + j);
      std::partial_sort(candidates.begin(), candidates.begin() + k, candidates.end(), HigherScore{biased.data()});
      float sum = 0.f;
      for (int64_t j = 0; j < k; ++j) sum += s[size_t(candidates[size_t(j)])];
      for (int64_t j = 0; j < k; ++j) {
        const int64_t e = candidates[size_t(j)];
        experts[i * k + j] = e;
        weights[i * k + j] = (normalize ? s[size_t(e)] / (sum + 1e-20f) : s[size_t(e)]) * scaling;
      }
    }
  }
};

}  // namespace dsv4
