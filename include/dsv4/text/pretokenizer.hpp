#pragma once
// Pre-tokenization: a chain of HF `Split` steps cutting text into the pieces BPE runs on.
// Pieces are byte ranges of the input (the final ByteLevel step only re-maps bytes, which the BPE
// does on raw bytes, so no text is copied). Each step sees one piece at a time, as in HF: a regex
// cannot look past the end of the piece it is splitting.
#include <algorithm>
#include <cstddef>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include "dsv4/text/regex.hpp"

namespace dsv4::text {

struct Span {
  size_t begin, end;  // byte offsets, begin < end
};

// HF's SplitDelimiterBehavior: what becomes of the pieces the pattern matches.
enum class SplitBehavior {
  kRemoved,             // matches dropped
  kIsolated,            // matches are pieces of their own
  kMergedWithPrevious,  // a match joins the piece before it
  kMergedWithNext,      // a match joins the piece after it
  kContiguous,          // consecutive matches form one piece
};

struct SplitStep {
  std::variant<Regex, std::string> pattern;  // regex, or a literal string (HF "String" pattern)
  SplitBehavior behavior = SplitBehavior::kIsolated;
  bool invert = false;  // split on what the pattern does NOT match
};

// GPT-2's pattern, which HF's ByteLevel pre-tokenizer applies when use_regex is true.
inline constexpr std::string_view kByteLevelRegex =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

class PreTokenizer {
 public:
  void add(SplitStep step) { steps_.push_back(std::move(step)); }

  // Replaces `out` with the pieces of `text` (valid UTF-8), in order; empty pieces are dropped.
  void run(std::string_view text, std::vector<Span>& out) const {
    out.clear();
    if (!text.empty()) out.push_back({0, text.size()});
    thread_local std::vector<Span> next;
    for (const SplitStep& step : steps_) {
      next.clear();
      for (const Span& piece : out) split(step, text, piece, next);
      out.swap(next);
    }
  }

 private:
  struct Part {
    Span span;
    bool is_match;
  };

  // HF Pattern::find_matches: the piece as alternating gaps and matches covering it.
  static void find_matches(const SplitStep& step, std::string_view s, std::vector<Part>& parts) {
    size_t prev = 0;
    auto on_match = [&](size_t b, size_t e) {
      if (prev != b) parts.push_back({{prev, b}, false});
      parts.push_back({{b, e}, true});
      prev = e;
    };
    if (const auto* re = std::get_if<Regex>(&step.pattern)) {
      re->for_each_match_unchecked(s, on_match);  // encode() passes valid UTF-8 only
    } else {
      const std::string& lit = std::get<std::string>(step.pattern);
      if (!lit.empty()) {
        for (size_t at = s.find(lit); at != std::string_view::npos; at = s.find(lit, at + lit.size())) {
          on_match(at, at + lit.size());
        }
      }
    }
    if (prev != s.size()) parts.push_back({{prev, s.size()}, false});
    if (step.invert) {
      for (Part& p : parts) p.is_match = !p.is_match;
    }
  }

  static void split(const SplitStep& step, std::string_view text, Span piece, std::vector<Span>& out) {
    const std::string_view s = text.substr(piece.begin, piece.end - piece.begin);
    thread_local std::vector<Part> parts;
    parts.clear();
    find_matches(step, s, parts);
    const size_t base = out.size();
    bool prev_match = false;
    auto emit = [&](Span sp) { out.push_back({piece.begin + sp.begin, piece.begin + sp.end}); };
    switch (step.behavior) {
      case SplitBehavior::kIsolated:
        for (const Part& p : parts) emit(p.span);
        break;
      case SplitBehavior::kRemoved:
        for (const Part& p : parts) {
          if (!p.is_match) emit(p.span);
        }
        break;
      case SplitBehavior::kContiguous:
        for (const Part& p : parts) {
          if (out.size() > base && p.is_match == prev_match) {
            out.back().end = piece.begin + p.span.end;
          } else {
            emit(p.span);
          }
          prev_match = p.is_match;
        }
        break;
      case SplitBehavior::kMergedWithPrevious:
        for (const Part& p : parts) {
          if (out.size() > base && p.is_match && !prev_match) {
            out.back().end = piece.begin + p.span.end;
          } else {
            emit(p.span);
          }
          prev_match = p.is_match;
        }
        break;
      case SplitBehavior::kMergedWithNext:
        // HF folds right to left: a match absorbs the non-match piece after it.
        for (size_t k = parts.size(); k-- > 0;) {
          const Part& p = parts[k];
          if (out.size() > base && p.is_match && !prev_match) {
            out.back().begin = piece.begin + p.span.begin;
          } else {
            emit(p.span);
          }
          prev_match = p.is_match;
        }
        std::reverse(out.begin() + static_cast<std::ptrdiff_t>(base), out.end());
        break;
    }
    // HF drops empty pieces (they come from empty matches) after merging.
    out.erase(std::remove_if(out.begin() + static_cast<std::ptrdiff_t>(base), out.end(),
                             [](const Span& sp) { return sp.begin == sp.end; }),
              out.end());
  }

  std::vector<SplitStep> steps_;
};

}  // namespace dsv4::text
