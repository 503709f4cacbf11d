#pragma once
// Token choice from one row of logits. A Sampler runs a chain of logit processors
// (processors.hpp) over the candidates, then picks one: the highest (greedy) or a draw from the
// softmax with a seeded generator, so that a run is reproducible.
//
// The standard chain built from SamplingParams, in this order:
//   repetition penalty → frequency penalty → presence penalty → temperature → top-k → top-p → min-p
// Greedy keeps only the penalties (the rest cannot change the argmax).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <span>
#include <utility>
#include <vector>

#include "dsv4/core/error.hpp"
#include "dsv4/sampling/candidates.hpp"
#include "dsv4/sampling/processors.hpp"

namespace dsv4 {

struct SamplingParams {
  bool greedy = true;               // argmax (after the penalties); temperature 0 means the same
  float temperature = 1.0f;         // >= 0
  int32_t top_k = 0;                // 0: off
  float top_p = 1.0f;               // (0, 1]; 1: off
  float min_p = 0.0f;               // [0, 1]; 0: off
  float repetition_penalty = 1.0f;  // > 0; 1: off
  float frequency_penalty = 0.0f;   // 0: off (OpenAI uses [-2, 2])
  float presence_penalty = 0.0f;    // 0: off
  uint64_t seed = 0;

  bool is_greedy() const { return greedy || temperature == 0.0f; }

  // Throws dsv4::Error naming the first bad field.
  void validate() const {
    if (!(std::isfinite(temperature) && temperature >= 0))
      fail("sampling: temperature must be >= 0 (0 is greedy), got ", temperature);
    if (top_k < 0) fail("sampling: top_k must be >= 0 (0 is off), got ", top_k);
    if (!(top_p > 0 && top_p <= 1)) fail("sampling: top_p must be in (0, 1], got ", top_p);
    if (!(min_p >= 0 && min_p <= 1)) fail("sampling: min_p must be in [0, 1], got ", min_p);
    if (!(std::isfinite(repetition_penalty) && repetition_penalty > 0))
      fail("sampling: repetition_penalty must be > 0 (1 is off), got ", repetition_penalty);
    if (!std::isfinite(frequency_penalty)) fail("sampling: frequency_penalty must be finite");
    if (!std::isfinite(presence_penalty)) fail("sampling: presence_penalty must be finite");
  }
};

// Highest logit; ties go to the lowest id (as torch.argmax does). NaN logits are ignored.
inline int32_t argmax(std::span<const float> logits) {
  // Two plain passes (the max, then its first index) run about twice as fast as max_element.
  float m = -std::numeric_limits<float>::infinity();
  for (float x : logits) m = x > m ? x : m;
  for (size_t i = 0; i < logits.size(); ++i)
    if (logits[i] == m) return int32_t(i);
  return 0;
}

// The processors SamplingParams asks for, in the order given at the top of this file.
inline std::vector<LogitProcessor> standard_chain(const SamplingParams& p) {
  std::vector<LogitProcessor> chain;
  if (p.repetition_penalty != 1.0f) chain.emplace_back(RepetitionPenalty{p.repetition_penalty});
  if (p.frequency_penalty != 0.0f) chain.emplace_back(FrequencyPenalty{p.frequency_penalty});
  if (p.presence_penalty != 0.0f) chain.emplace_back(PresencePenalty{p.presence_penalty});
  if (p.is_greedy()) return chain;
  if (p.temperature != 1.0f) chain.emplace_back(Temperature{p.temperature});
  if (p.top_k > 0) chain.emplace_back(TopK{p.top_k});
  if (p.top_p < 1.0f) chain.emplace_back(TopP{p.top_p});
  if (p.min_p > 0.0f) chain.emplace_back(MinP{p.min_p});
  return chain;
}

class Sampler {
 public:
  explicit Sampler(const SamplingParams& p = {}) : params_((p.validate(), p)), rng_(p.seed) {
    chain_ = standard_chain(p);
    greedy_ = p.is_greedy();
  }
  // Any chain of processors, then greedy or a seeded draw.
  Sampler(std::vector<LogitProcessor> chain, bool greedy, uint64_t seed)
      : chain_(std::move(chain)), greedy_(greedy), rng_(seed) {
    params_.greedy = greedy;
    params_.seed = seed;
  }

  // Adds a processor at the end of the chain (e.g. a logit bias or a banned-token mask).
  void add(LogitProcessor p) { chain_.push_back(std::move(p)); }
  // Inserts a processor at the front of the chain.
  void add_first(LogitProcessor p) { chain_.insert(chain_.begin(), std::move(p)); }

  // Starts a new sequence for the penalties: `context` (the prompt) counts as seen, nothing as
  // generated. The random stream continues; reseed() restarts it.
  void set_context(std::span<const int32_t> context) {
    history_.clear();
    history_.add_prompt(context);
  }
  void reseed(uint64_t seed) { rng_.seed(seed); }
  // Records a token as generated (penalties count it from the next sample() on).
  void accept(int32_t token) { history_.add_generated(token); }

  // Picks a token from `logits` ([V]) without recording it.
  int32_t sample(std::span<const float> logits) {
    if (logits.empty()) fail("sampling: empty logits row");
    if (chain_.empty() && greedy_) return argmax(logits);
    cands_.assign(logits);
    for (const LogitProcessor& p : chain_) p(cands_, history_);
    if (cands_.empty()) fail("sampling: the logit processors left no candidate token");
    if (greedy_) {
      size_t best = 0;  // highest logit, lowest id on ties (candidates may be in any order)
      for (size_t i = 1; i < cands_.size(); ++i)
        if (cands_.logit(i) > cands_.logit(best) || (cands_.logit(i) == cands_.logit(best) && cands_.id(i) < cands_.id(best)))
          best = i;
      return cands_.id(best);
    }
    if (cands_.probabilities(probs_) == 0.0) fail("sampling: every candidate token has probability 0 (all logits -inf)");
    // A uniform double in [0, 1) from the top 53 bits: the same on every platform (unlike
    // std::uniform_real_distribution, whose algorithm the standard leaves open).
    const double u = double(rng_() >> 11) * 0x1.0p-53;
    double cum = 0;
    size_t last = 0;
    for (size_t i = 0; i < cands_.size(); ++i) {
      if (probs_[i] <= 0) continue;
      cum += probs_[i];
      last = i;
      if (u < cum) return cands_.id(i);
    }
    return cands_.id(last);  // u landed in the rounding gap at the top
  }

  // sample() + accept(): the usual generation step.
  int32_t next(std::span<const float> logits) {
    const int32_t t = sample(logits);
    accept(t);
    return t;
  }

  const SamplingParams& params() const { return params_; }
  const TokenHistory& history() const { return history_; }
  // The candidate set the last sample() chose from (after the chain); empty on the greedy fast path.
  const Candidates& candidates() const { return cands_; }

 private:
  SamplingParams params_;
  std::vector<LogitProcessor> chain_;
  bool greedy_ = true;
  std::mt19937_64 rng_;
  TokenHistory history_;
  Candidates cands_;
  std::vector<double> probs_;
};

}  // namespace dsv4
