#pragma once
// The working set of one sampling step: the token ids still in play and their (processed) logits.
// Logit processors (processors.hpp) rewrite the logits or drop candidates; a selector picks one.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <span>
#include <vector>

namespace dsv4 {

class Candidates {
 public:
  // Every id of a logits row, in id order (id i has logit logits[i]). A NaN logit becomes -inf.
  void assign(std::span<const float> logits) {
    const size_t n = logits.size();
    ids_.resize(n);
    logits_.resize(n);
    for (size_t i = 0; i < n; ++i) {
      ids_[i] = int32_t(i);
      logits_[i] = std::isnan(logits[i]) ? -std::numeric_limits<float>::infinity() : logits[i];
    }
    dense_ = true;
    sorted_ = false;
  }

  size_t size() const { return ids_.size(); }
  bool empty() const { return ids_.empty(); }
  int32_t id(size_t i) const { return ids_[i]; }
  float logit(size_t i) const { return logits_[i]; }
  std::span<const int32_t> ids() const { return ids_; }
  std::span<float> logits() { return logits_; }
  std::span<const float> logits() const { return logits_; }

  // True while the set is a whole row in id order (then position == id); processors that look up
  // single ids (the penalties) use it.
  bool dense() const { return dense_; }
  // True when ordered by logit, highest first, ties to the lower id.
  bool sorted() const { return sorted_; }

  // Orders by logit, highest first; equal logits by lower id (deterministic for the seeded draw).
  void sort() {
    if (sorted_) return;
    order_.resize(ids_.size());
    for (size_t i = 0; i < order_.size(); ++i) order_[i] = i;
    std::sort(order_.begin(), order_.end(), [&](size_t a, size_t b) { return before(a, b); });
    permute();
    sorted_ = true;
  }

  // Keeps the k best (as sort() orders them), sorted. Cheaper than sort() + truncate() for small k.
  void keep_top(size_t k) {
    if (k >= ids_.size()) return sort();
    order_.resize(ids_.size());
    for (size_t i = 0; i < order_.size(); ++i) order_[i] = i;
    auto cmp = [&](size_t a, size_t b) { return before(a, b); };
    std::nth_element(order_.begin(), order_.begin() + ptrdiff_t(k), order_.end(), cmp);
    order_.resize(k);
    std::sort(order_.begin(), order_.end(), cmp);
    permute();
    sorted_ = true;
  }

  // Keeps the first n candidates in the current order.
  void truncate(size_t n) {
    if (n >= ids_.size()) return;
    ids_.resize(n);
    logits_.resize(n);
    dense_ = false;
  }

  // Keeps the candidates for which keep(id, logit) is true, in their order.
  template <class Pred>
  void keep_if(Pred keep) {
    size_t w = 0;
    for (size_t i = 0; i < ids_.size(); ++i) {
      if (keep(ids_[i], logits_[i])) {
        ids_[w] = ids_[i];
        logits_[w] = logits_[i];
        ++w;
      }
    }
    if (w != ids_.size()) dense_ = false;
    ids_.resize(w);
    logits_.resize(w);
  }

  // Highest logit (-inf when empty).
  float max_logit() const {
    float m = -std::numeric_limits<float>::infinity();
    for (float l : logits_) m = std::max(m, l);
    return m;
  }

  // softmax of the current logits over the current set, in double: probs[i] for candidate i.
  // Returns the unnormalized total Σ exp(l - max) (0 when every logit is -inf).
  double probabilities(std::vector<double>& probs) const {
    probs.resize(ids_.size());
    const float mx = max_logit();
    if (!(mx > -std::numeric_limits<float>::infinity())) {
      std::fill(probs.begin(), probs.end(), 0.0);
      return 0.0;
    }
    double sum = 0;  // exp in float (faster; 1e-7 relative is plenty for a draw), sums in double
    for (size_t i = 0; i < ids_.size(); ++i) sum += (probs[i] = double(std::exp(logits_[i] - mx)));
    for (double& p : probs) p /= sum;
    return sum;
  }

 private:
  bool before(size_t a, size_t b) const {
    const float la = logits_[a], lb = logits_[b];
    if (la != lb) return la > lb;
    return ids_[a] < ids_[b];
  }
  void permute() {
    tmp_ids_.resize(order_.size());
    tmp_logits_.resize(order_.size());
    for (size_t i = 0; i < order_.size(); ++i) {
      tmp_ids_[i] = ids_[order_[i]];
      tmp_logits_[i] = logits_[order_[i]];
    }
    ids_.swap(tmp_ids_);
    logits_.swap(tmp_logits_);
    dense_ = false;
  }

  std::vector<int32_t> ids_;
  std::vector<float> logits_;
  std::vector<size_t> order_;
  std::vector<int32_t> tmp_ids_;
  std::vector<float> tmp_logits_;
  bool dense_ = false;
  bool sorted_ = false;
};

}  // namespace dsv4
