#pragma once
// The GPT-2 "byte-level" alphabet: every byte maps to one printable code point so that BPE vocab
// entries are text. Printable Latin-1 bytes (!..~, ¡..¬, ®..ÿ) map to themselves; the other 68
// bytes map, in byte order, to U+0100, U+0101, ... (so ' ' is 'Ġ' U+0120 and '\n' is 'Ċ' U+010A).
// The tokenizer converts vocab entries to raw bytes once at load and runs BPE on raw bytes.
#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "dsv4/text/utf8.hpp"

namespace dsv4::text::byte_level {

namespace detail {
struct Tables {
  std::array<char32_t, 256> to_char{};
  std::array<int16_t, 512> to_byte{};  // indexed by code point < 512, -1 where none
  constexpr Tables() {
    for (auto& b : to_byte) b = -1;
    int next = 256;
    for (int b = 0; b < 256; ++b) {
      const bool keep = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
      to_char[b] = static_cast<char32_t>(keep ? b : next++);
      to_byte[to_char[b]] = static_cast<int16_t>(b);
    }
  }
};
inline constexpr Tables kTables{};
}  // namespace detail

inline char32_t byte_to_char(uint8_t b) { return detail::kTables.to_char[b]; }

// The byte a code point stands for, or -1 when it is not in the alphabet.
inline int char_to_byte(char32_t c) { return c < 512 ? detail::kTables.to_byte[c] : -1; }

// Raw bytes → byte-level text (UTF-8).
inline std::string encode(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size() * 2);
  for (char c : bytes) utf8::append_code_point(out, byte_to_char(static_cast<uint8_t>(c)));
  return out;
}

// Byte-level text → raw bytes; nullopt when `text` is not valid UTF-8 or holds a code point outside
// the alphabet (e.g. an added token like "<｜User｜>").
inline std::optional<std::string> decode(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size();) {
    const utf8::Step st = utf8::scan(text, i);
    if (st.kind != utf8::Kind::kValid) return std::nullopt;
    const int b = char_to_byte(utf8::code_point(text, i, st.len));
    if (b < 0) return std::nullopt;
    out.push_back(static_cast<char>(b));
    i += st.len;
  }
  return out;
}

}  // namespace dsv4::text::byte_level
