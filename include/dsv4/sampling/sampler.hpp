#pragma once
// Token choice from one row of logits: greedy, or temperature + top-p (nucleus) sampling with a
// seeded generator so that a run is reproducible.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <random>
#include <span>
#include <vector>

#include "dsv4/core/error.hpp"

namespace dsv4 {

struct SamplingParams {
  bool greedy = true;
  float temperature = 1.0f;
  float top_p = 1.0f;
  uint64_t seed = 0;
};

// Highest logit; ties go to the lowest id (as torch.argmax does).
inline int32_t argmax(std::span<const float> logits) {
  return int32_t(std::max_element(logits.begin(), logits.end()) - logits.begin());
}

class Sampler {
 public:
  explicit Sampler(SamplingParams p) : p_(p), rng_(p.seed) {
    if (!p.greedy && !(p.temperature > 0)) fail("sampling: temperature must be > 0 (use greedy for 0)");
    if (!(p.top_p > 0 && p.top_p <= 1)) fail("sampling: top_p must be in (0, 1]");
  }

  int32_t next(std::span<const float> logits) {  // logits: [V]
    if (p_.greedy) return argmax(logits);
    const float mx = *std::max_element(logits.begin(), logits.end());
    probs_.resize(logits.size());
    double sum = 0;
    for (size_t i = 0; i < logits.size(); ++i) sum += (probs_[i] = std::exp((logits[i] - mx) / p_.temperature));
    order_.resize(logits.size());
    std::iota(order_.begin(), order_.end(), 0);
    std::sort(order_.begin(), order_.end(), [&](int32_t a, int32_t b) {
      return probs_[size_t(a)] > probs_[size_t(b)] || (probs_[size_t(a)] == probs_[size_t(b)] && a < b);
    });
    // Smallest prefix of the sorted distribution whose mass reaches top_p.
    double kept = 0;
    size_t n = 0;
    while (n < order_.size() && (n == 0 || kept < p_.top_p * sum)) kept += probs_[size_t(order_[n++])];
    double r = std::uniform_real_distribution<double>(0.0, kept)(rng_);
    for (size_t i = 0; i < n; ++i) {
      r -= probs_[size_t(order_[i])];
      if (r < 0) return order_[i];
    }
    return order_[n - 1];
  }

 private:
  SamplingParams p_;
  std::mt19937_64 rng_;
  std::vector<double> probs_;
  std::vector<int32_t> order_;
};

}  // namespace dsv4
