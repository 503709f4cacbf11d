#pragma once
// Logit processors: small pieces that each rewrite the candidates' logits or drop candidates.
// A processor is any callable `void(Candidates&, const TokenHistory&)`; Sampler runs a chain of
// them (standard_chain() in sampler.hpp builds the usual one from SamplingParams).
//
//   RepetitionPenalty  every token seen (prompt or generated): l > 0 ? l / r : l * r   (CTRL, HF)
//   FrequencyPenalty   l -= f * (times generated)                                      (OpenAI)
//   PresencePenalty    l -= p * (generated at least once)                              (OpenAI)
//   Temperature        l /= t
//   TopK               keep the k highest logits (equal logits: lower id first)
//   TopP               keep the smallest prefix, highest first, whose probability reaches p
//   MinP               keep tokens whose probability is at least p times the highest one
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <span>
#include <unordered_map>
#include <utility>
#include <vector>

#include "dsv4/core/error.hpp"
#include "dsv4/sampling/candidates.hpp"

namespace dsv4 {

// What the penalties look at: how often each token occurs in the context (the prompt) and in
// what has been generated since.
class TokenHistory {
 public:
  struct Count {
    int32_t prompt = 0;
    int32_t generated = 0;
  };

  void clear() {
    counts_.clear();
    generated_ = 0;
  }
  void add_prompt(std::span<const int32_t> tokens) {
    for (int32_t t : tokens) ++counts_[t].prompt;
  }
  void add_generated(int32_t t) {
    ++counts_[t].generated;
    ++generated_;
  }
  // nullptr when the token has not occurred.
  const Count* find(int32_t t) const {
    auto it = counts_.find(t);
    return it == counts_.end() ? nullptr : &it->second;
  }
  const std::unordered_map<int32_t, Count>& counts() const { return counts_; }
  int64_t generated() const { return generated_; }

 private:
  std::unordered_map<int32_t, Count> counts_;
  int64_t generated_ = 0;
};

using LogitProcessor = std::function<void(Candidates&, const TokenHistory&)>;

namespace sampling_detail {

// Calls f(logit&, count) for every candidate that occurs in the history.
template <class F>
void for_each_seen(Candidates& c, const TokenHistory& h, F f) {
  std::span<float> l = c.logits();
  if (c.dense()) {  // position == id
    for (const auto& [id, n] : h.counts())
      if (id >= 0 && size_t(id) < c.size()) f(l[size_t(id)], n);
  } else {
    for (size_t i = 0; i < c.size(); ++i)
      if (const TokenHistory::Count* n = h.find(c.id(i))) f(l[i], *n);
  }
}

}  // namespace sampling_detail

struct RepetitionPenalty {
  float penalty = 1.0f;  // > 0; 1 is off, > 1 discourages repeats
  void operator()(Candidates& c, const TokenHistory& h) const {
    if (penalty == 1.0f) return;
    sampling_detail::for_each_seen(c, h, [&](float& l, const TokenHistory::Count&) {
      l = l > 0 ? l / penalty : l * penalty;
    });
  }
};

struct FrequencyPenalty {
  float penalty = 0.0f;
  void operator()(Candidates& c, const TokenHistory& h) const {
    if (penalty == 0.0f) return;
    sampling_detail::for_each_seen(c, h, [&](float& l, const TokenHistory::Count& n) {
      l -= penalty * float(n.generated);
    });
  }
};

struct PresencePenalty {
  float penalty = 0.0f;
  void operator()(Candidates& c, const TokenHistory& h) const {
    if (penalty == 0.0f) return;
    sampling_detail::for_each_seen(c, h, [&](float& l, const TokenHistory::Count& n) {
      if (n.generated > 0) l -= penalty;
    });
  }
};

struct Temperature {
  float temperature = 1.0f;  // > 0
  void operator()(Candidates& c, const TokenHistory&) const {
    if (temperature == 1.0f) return;
    const float inv = 1.0f / temperature;
    for (float& l : c.logits()) l *= inv;
  }
};

struct TopK {
  int32_t k = 0;  // 0: off
  void operator()(Candidates& c, const TokenHistory&) const {
    if (k > 0 && size_t(k) < c.size()) c.keep_top(size_t(k));
  }
};

struct TopP {
  float p = 1.0f;  // in (0, 1]; 1: off
  void operator()(Candidates& c, const TokenHistory&) const {
    if (!(p < 1.0f) || c.size() <= 1) return;
    const double mx = c.max_logit();
    if (!(mx > -std::numeric_limits<double>::infinity())) return;
    double total = 0;
    for (float l : c.logits()) total += std::exp(double(l) - mx);
    if (!c.sorted()) {
      // Tokens below probability (1 - p) / n together hold less than 1 - p, so the nucleus (the
      // prefix of the sorted set reaching p) lies entirely among the others: drop them before
      // sorting. Exact, and with a peaked distribution it leaves a few hundred of 129k tokens.
      const double thr = mx + std::log(total * (1.0 - double(p)) / double(c.size()));
      c.keep_if([&](int32_t, float l) { return double(l) >= thr; });
      c.sort();
    }
    const double target = double(p) * total;
    double cum = 0;
    size_t n = 0;
    std::span<const float> l = std::as_const(c).logits();
    while (n < l.size() && (n == 0 || cum < target)) cum += std::exp(double(l[n++]) - mx);
    c.truncate(n);
  }
};

struct MinP {
  float p = 0.0f;  // in [0, 1]; 0: off
  void operator()(Candidates& c, const TokenHistory&) const {
    if (!(p > 0.0f) || c.size() <= 1) return;
    const double thr = double(c.max_logit()) + std::log(double(p));  // prob >= p * max prob
    c.keep_if([&](int32_t, float l) { return double(l) >= thr; });
  }
};

}  // namespace dsv4
