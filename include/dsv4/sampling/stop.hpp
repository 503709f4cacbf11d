#pragma once
// Stop strings over streamed text. Text arrives in pieces (one token's worth at a time); a stop
// string may be split across pieces, so text that could be the start of one is held back until
// it either completes a stop (then it is never released) or cannot (then it is released). What
// push() returns is therefore always safe to show: no released text is ever part of a stop string.
// The rule: generation stops at the first piece after which the text so far contains a stop
// string; the output is the text before the earliest occurrence (of any of them) in it.
#include <algorithm>
#include <string>
#include <string_view>
#include <vector>

#include "dsv4/core/error.hpp"

namespace dsv4 {

class StopStrings {
 public:
  StopStrings() = default;
  explicit StopStrings(std::vector<std::string> stops) : stops_(std::move(stops)) {
    for (size_t i = 0; i < stops_.size(); ++i)
      if (stops_[i].empty()) fail("stop strings: entry ", i, " is empty");
  }

  struct Result {
    std::string text;      // what can be released now
    bool stopped = false;  // a stop string completed; `text` ends right before it
  };

  // Appends `piece`; returns the text that can be released. After a stop, returns nothing more.
  Result push(std::string_view piece) {
    Result r;
    if (stopped_) return r;
    held_.append(piece);
    if (stops_.empty()) {
      r.text.swap(held_);
      return r;
    }
    // The earliest complete stop string (first listed on equal positions).
    size_t best = std::string::npos, which = 0;
    for (size_t i = 0; i < stops_.size(); ++i) {
      const size_t at = held_.find(stops_[i]);
      if (at < best) best = at, which = i;
    }
    if (best != std::string::npos) {
      r.text = held_.substr(0, best);
      r.stopped = stopped_ = true;
      matched_ = stops_[which];
      held_.clear();
      return r;
    }
    // Hold the longest tail that is a proper prefix of some stop string.
    size_t keep = 0;
    for (const std::string& s : stops_) {
      for (size_t k = std::min(s.size() - 1, held_.size()); k > keep; --k) {
        if (std::string_view(held_).substr(held_.size() - k) == std::string_view(s).substr(0, k)) {
          keep = k;
          break;
        }
      }
    }
    r.text = held_.substr(0, held_.size() - keep);
    held_.erase(0, held_.size() - keep);
    return r;
  }

  // End of generation without a stop: releases what is held.
  std::string flush() {
    std::string out;
    out.swap(held_);
    return out;
  }

  void reset() {
    held_.clear();
    matched_.clear();
    stopped_ = false;
  }

  bool stopped() const { return stopped_; }
  const std::string& matched() const { return matched_; }  // the stop string found, once stopped()
  size_t held_bytes() const { return held_.size(); }
  const std::vector<std::string>& stops() const { return stops_; }

 private:
  std::vector<std::string> stops_;
  std::string held_;
  std::string matched_;
  bool stopped_ = false;
};

}  // namespace dsv4
