#pragma once
// Added (and special) tokens are cut out of the text before pre-tokenization, as HF does: two
// passes, first the tokens with normalized=false, then those with normalized=true on what is left
// (the normalizer this tokenizer accepts is the identity, so both passes see the raw text). Each
// pass takes the leftmost match, the longest at that position, without overlap, then applies the
// token's single_word / lstrip / rstrip flags.
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "dsv4/text/regex.hpp"
#include "dsv4/text/utf8.hpp"

namespace dsv4::text {

struct AddedToken {
  std::string content;
  int32_t id = -1;
  bool special = false;      // skipped by decode(skip_special = true)
  bool lstrip = false;       // the match also eats the whitespace before it
  bool rstrip = false;       // ... and after it
  bool single_word = false;  // matches only when not inside a word
  bool normalized = true;    // matched in the second pass
};

// A piece of the input: plain text (id < 0) or an added token's match.
struct Segment {
  size_t begin, end;
  int32_t id;
};

class AddedTokenMatcher {
 public:
  AddedTokenMatcher() = default;
  explicit AddedTokenMatcher(std::vector<AddedToken> tokens) : tokens_(std::move(tokens)) {
    for (size_t i = 0; i < tokens_.size(); ++i) {
      if (tokens_[i].content.empty()) continue;  // the loader rejects these; never match ""
      (tokens_[i].normalized ? second_ : first_).insert(tokens_[i].content, static_cast<int32_t>(i));
    }
  }

  const std::vector<AddedToken>& tokens() const { return tokens_; }

  // Replaces `out` with the segments of `text` (any bytes), in order, covering all of it except
  // whitespace eaten by lstrip/rstrip.
  void split(std::string_view text, std::vector<Segment>& out) const {
    out.clear();
    thread_local std::vector<Segment> pass1;
    pass1.clear();
    find(first_, text, 0, pass1);
    for (const Segment& s : pass1) {
      if (s.id >= 0) {
        out.push_back(s);
      } else {
        find(second_, text.substr(s.begin, s.end - s.begin), s.begin, out);
      }
    }
  }

 private:
  // Byte trie over token contents; a table of first bytes lets the scan skip most of the text.
  class Trie {
   public:
    void insert(std::string_view key, int32_t token) {
      if (!starts_[static_cast<uint8_t>(key[0])]) {
        starts_[static_cast<uint8_t>(key[0])] = true;
        ++n_starts_;
        only_start_ = static_cast<uint8_t>(key[0]);
      }
      int32_t node = 0;
      for (char c : key) {
        const auto b = static_cast<uint8_t>(c);
        int32_t child = -1;
        for (const auto& [byte, idx] : nodes_[size_t(node)].kids) {
          if (byte == b) child = idx;
        }
        if (child < 0) {
          child = static_cast<int32_t>(nodes_.size());
          nodes_[size_t(node)].kids.emplace_back(b, child);
          nodes_.emplace_back();
        }
        node = child;
      }
      nodes_[size_t(node)].token = token;  // a later duplicate content wins
    }
    // Longest token starting at s[0]: (token index, length), or token index -1.
    std::pair<int32_t, size_t> longest_prefix(std::string_view s) const {
      std::pair<int32_t, size_t> best{-1, 0};
      int32_t node = 0;
      for (size_t i = 0; i < s.size(); ++i) {
        const auto b = static_cast<uint8_t>(s[i]);
        int32_t child = -1;
        for (const auto& [byte, idx] : nodes_[size_t(node)].kids) {
          if (byte == b) {
            child = idx;
            break;
          }
        }
        if (child < 0) break;
        node = child;
        if (nodes_[size_t(node)].token >= 0) best = {nodes_[size_t(node)].token, i + 1};
      }
      return best;
    }
    // First position >= i where some key may start, or s.size().
    size_t next_start(std::string_view s, size_t i) const {
      if (n_starts_ == 0) return s.size();
      if (n_starts_ == 1) {  // e.g. every DeepSeek added token starts with '<'
        const void* p = std::memchr(s.data() + i, only_start_, s.size() - i);
        return p ? static_cast<size_t>(static_cast<const char*>(p) - s.data()) : s.size();
      }
      while (i < s.size() && !starts_[static_cast<uint8_t>(s[i])]) ++i;
      return i;
    }

   private:
    struct Node {
      int32_t token = -1;
      std::vector<std::pair<uint8_t, int32_t>> kids;
    };
    std::vector<Node> nodes_{1};
    std::array<bool, 256> starts_{};  // first bytes of the keys: most text bytes start none
    int n_starts_ = 0;
    uint8_t only_start_ = 0;  // the first byte when n_starts_ == 1
  };

  // The character (code point, byte length) ending at s[end) / starting at s[begin], if valid.
  static std::optional<std::pair<char32_t, size_t>> char_before(std::string_view s, size_t end) {
    for (size_t len = 1; len <= 4 && len <= end; ++len) {
      const utf8::Step st = utf8::scan(s.substr(0, end), end - len);
      if (st.kind == utf8::Kind::kValid && st.len == len) return std::pair{utf8::code_point(s, end - len, len), len};
    }
    return std::nullopt;
  }
  static std::optional<std::pair<char32_t, size_t>> char_at(std::string_view s, size_t begin) {
    if (begin >= s.size()) return std::nullopt;
    const utf8::Step st = utf8::scan(s, begin);
    if (st.kind != utf8::Kind::kValid) return std::nullopt;
    return std::pair{utf8::code_point(s, begin, st.len), st.len};
  }

  // Rust regex's \w (HF checks single_word with the regexes \w$ and ^\w).
  static bool is_word_char(char32_t c) {
    static const Regex word("[\\p{Alphabetic}\\p{M}\\p{Nd}\\p{Pc}\\x{200C}\\x{200D}]", "word class");
    std::string s;
    utf8::append_code_point(s, c);
    bool hit = false;
    word.for_each_match_unchecked(s, [&](size_t, size_t) { hit = true; });
    return hit;
  }

  // One pass of HF's AddedVocabulary::find_matches over `text`, appending segments offset by
  // `base`.
  void find(const Trie& trie, std::string_view text, size_t base, std::vector<Segment>& out) const {
    size_t done = 0;  // text before this is already in `out`
    size_t i = 0;
    while (i < text.size()) {
      i = trie.next_start(text, i);
      if (i == text.size()) break;
      const auto [tok, len] = trie.longest_prefix(text.substr(i));
      if (tok < 0) {
        ++i;
        continue;
      }
      const AddedToken& t = tokens_[size_t(tok)];
      size_t start = i, stop = i + len;
      i = stop;  // the next search starts after the raw match, whatever the flags do
      if (t.single_word) {
        const auto before = char_before(text, start);
        const auto after = char_at(text, stop);
        if ((before && is_word_char(before->first)) || (after && is_word_char(after->first))) continue;
      }
      if (t.lstrip) {
        while (start > done) {
          const auto c = char_before(text, start);
          if (!c || !utf8::is_white_space(c->first)) break;
          start -= c->second;
        }
      }
      if (t.rstrip) {
        while (auto c = char_at(text, stop)) {
          if (!utf8::is_white_space(c->first)) break;
          stop += c->second;
        }
      }
      if (start < done) start = done;  // an earlier rstrip already took this text
      if (done < start) out.push_back({base + done, base + start, -1});
      out.push_back({base + start, base + stop, t.id});
      done = stop;
    }
    if (done < text.size()) out.push_back({base + done, base + text.size(), -1});
  }

  std::vector<AddedToken> tokens_;
  Trie first_, second_;
};

}  // namespace dsv4::text
