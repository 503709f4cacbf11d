#pragma once
// UTF-8 scanning shared by the tokenizer (splitting off invalid bytes before the regexes) and the
// decoders (lossy output). Validity follows Unicode Table 3-7: no overlongs, no surrogates, nothing
// past U+10FFFF. Invalid input is replaced "per maximal subpart" (Unicode's recommended practice,
// also what Rust's String::from_utf8_lossy does), so decode() matches HF tokenizers byte for byte.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

#include "dsv4/core/error.hpp"

namespace dsv4::text::utf8 {

inline constexpr std::string_view kReplacement = "\xEF\xBF\xBD";  // U+FFFD

enum class Kind : uint8_t {
  kValid,      // len = length of a complete, valid sequence
  kInvalid,    // len = bytes (>= 1) to replace with one U+FFFD
  kTruncated,  // the rest of the input (len bytes) is a valid but unfinished sequence
};

struct Step {
  Kind kind;
  size_t len;
};

// Classifies the sequence starting at s[i] (i < s.size()).
inline Step scan(std::string_view s, size_t i) {
  const auto b0 = static_cast<uint8_t>(s[i]);
  if (b0 < 0x80) return {Kind::kValid, 1};
  size_t n;
  uint8_t lo = 0x80, hi = 0xBF;  // allowed range of the second byte
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    n = 2;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    n = 3;
    if (b0 == 0xE0) lo = 0xA0;  // overlong
    if (b0 == 0xED) hi = 0x9F;  // surrogates
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    n = 4;
    if (b0 == 0xF0) lo = 0x90;  // overlong
    if (b0 == 0xF4) hi = 0x8F;  // > U+10FFFF
  } else {
    return {Kind::kInvalid, 1};
  }
  for (size_t k = 1; k < n; ++k) {
    if (i + k >= s.size()) return {Kind::kTruncated, s.size() - i};
    const auto b = static_cast<uint8_t>(s[i + k]);
    const uint8_t l = k == 1 ? lo : 0x80, h = k == 1 ? hi : 0xBF;
    if (b < l || b > h) return {Kind::kInvalid, k};
  }
  return {Kind::kValid, n};
}

// Length of the longest valid UTF-8 prefix of s.
inline size_t valid_prefix(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    // ASCII fast path, 8 bytes at a time: most tokenizer input is ASCII.
    while (i + 8 <= s.size()) {
      uint64_t w;
      std::memcpy(&w, s.data() + i, 8);
      if (w & 0x8080808080808080ull) break;
      i += 8;
    }
    if (i == s.size()) break;
    if (static_cast<uint8_t>(s[i]) < 0x80) {
      ++i;
      continue;
    }
    const Step st = scan(s, i);
    if (st.kind != Kind::kValid) break;
    i += st.len;
  }
  return i;
}

// Appends `bytes` to `out`, each invalid or truncated subpart replaced by U+FFFD.
// Fails with a dsv4::Error naming `what` and the byte offset unless s is valid UTF-8: for the
// entry points that take text (the CLI's prompts), where bad bytes are a user's mistake.
inline void require_valid(std::string_view s, std::string_view what) {
  const size_t ok = valid_prefix(s);
  if (ok != s.size())
    fail(what, ": invalid UTF-8 at byte ", ok, " (0x", "0123456789abcdef"[(uint8_t(s[ok]) >> 4) & 15],
         "0123456789abcdef"[uint8_t(s[ok]) & 15], ")");
}

inline void append_lossy(std::string& out, std::string_view bytes) {
  size_t i = 0;
  while (i < bytes.size()) {
    const size_t ok = valid_prefix(bytes.substr(i));
    out.append(bytes.substr(i, ok));
    i += ok;
    if (i == bytes.size()) break;
    out.append(kReplacement);
    i += scan(bytes, i).len;
  }
}

inline std::string lossy(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size());
  append_lossy(out, bytes);
  return out;
}

// Appends the UTF-8 encoding of code point cp (cp must be a scalar value).
inline void append_code_point(std::string& out, char32_t cp) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

// Decodes the valid sequence of length len at s[i] (as returned by scan()).
inline char32_t code_point(std::string_view s, size_t i, size_t len) {
  const auto b = [&](size_t k) { return static_cast<char32_t>(static_cast<uint8_t>(s[i + k])); };
  switch (len) {
    case 1:
      return b(0);
    case 2:
      return ((b(0) & 0x1F) << 6) | (b(1) & 0x3F);
    case 3:
      return ((b(0) & 0x0F) << 12) | ((b(1) & 0x3F) << 6) | (b(2) & 0x3F);
    default:
      return ((b(0) & 0x07) << 18) | ((b(1) & 0x3F) << 12) | ((b(2) & 0x3F) << 6) | (b(3) & 0x3F);
  }
}

// Unicode White_Space (what Rust's char::is_whitespace and Oniguruma's \s test).
inline bool is_white_space(char32_t c) {
  return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

}  // namespace dsv4::text::utf8
