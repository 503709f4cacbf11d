#pragma once
// PCRE2 (8-bit, UTF + UCP, JIT when the library has it) for the pre-tokenizer's regexes.
// tokenizer.json patterns are written for Oniguruma (what HF tokenizers compiles them with);
// translate_onig() rewrites the few constructs whose meaning differs in PCRE2 — see
// docs/tokenizer.md. Link with -lpcre2-8.
#ifndef PCRE2_CODE_UNIT_WIDTH
#define PCRE2_CODE_UNIT_WIDTH 8
#endif
#include <pcre2.h>

#include <cstddef>
#include <memory>
#include <new>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include "dsv4/core/error.hpp"
#include "dsv4/text/utf8.hpp"

namespace dsv4::text {

namespace regex_detail {

// Unicode White_Space as a class body: Oniguruma's \s. PCRE2's UCP \s also has U+180E.
inline constexpr std::string_view kSpaceBody =
    "\\t-\\r\\x{20}\\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}\\x{202F}\\x{205F}"
    "\\x{3000}";
inline constexpr std::string_view kHexBody = "0-9a-fA-F";  // Oniguruma's \h (PCRE2: horizontal space)

inline std::string pcre2_message(int code) {
  PCRE2_UCHAR8 buf[256];
  if (pcre2_get_error_message_8(code, buf, sizeof buf) < 0) return cat("PCRE2 error ", code);
  return reinterpret_cast<const char*>(buf);
}

struct CodeDeleter {
  void operator()(pcre2_code_8* p) const { pcre2_code_free_8(p); }
};

// Per-thread match state, shared by every Regex: match data is not thread-safe, and a private
// JIT stack (up to 1 MiB) keeps backtracking-heavy patterns off the 32 KiB default on the C stack.
struct Scratch {
  pcre2_match_data_8* data = pcre2_match_data_create_8(1, nullptr);
  pcre2_match_context_8* context = pcre2_match_context_create_8(nullptr);
  pcre2_jit_stack_8* jit_stack = pcre2_jit_stack_create_8(32 * 1024, 1024 * 1024, nullptr);
  Scratch() {
    if (!data || !context) throw std::bad_alloc();
    if (jit_stack) pcre2_jit_stack_assign_8(context, nullptr, jit_stack);
  }
  ~Scratch() {
    pcre2_jit_stack_free_8(jit_stack);
    pcre2_match_context_free_8(context);
    pcre2_match_data_free_8(data);
  }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
};

inline Scratch& scratch() {
  thread_local Scratch s;
  return s;
}

}  // namespace regex_detail

// Rewrites an Oniguruma pattern (Ruby syntax, as HF tokenizers compiles it) into PCRE2 syntax:
//   \s \S   → explicit Unicode White_Space class (PCRE2's UCP \s also matches U+180E);
//   \h \H   → hex digit class (Oniguruma's meaning; PCRE2's \h is horizontal space);
//   \uHHHH  → \x{HHHH} (PCRE2 has no \u);
//   (?m…)   → (?s…) (Oniguruma's m is PCRE2's dotall). ^ and $ are always line anchors in
//             Oniguruma: the compile option PCRE2_MULTILINE gives that.
// Everything else is passed through; \p{..}, \d, ., classes and groups mean the same in both
// (up to the Unicode version of each library's tables). Throws dsv4::Error (prefixed by
// `where`) for what has no exact translation: \w \W \b \B (Oniguruma's word characters differ
// from PCRE2's on marks, connector punctuation and some numbers), POSIX [:classes:], \S or \H
// inside a class, nested classes and class intersection (&&).
inline std::string translate_onig(std::string_view p, std::string_view where) {
  using regex_detail::kHexBody;
  using regex_detail::kSpaceBody;
  std::string out;
  out.reserve(p.size() + 64);
  bool in_class = false;
  size_t class_start = 0;  // index in p just after '[' or "[^"
  auto unsupported = [&](std::string_view what) {
    fail(where, ": regex construct ", what, " has no exact PCRE2 translation (pattern: ", p, ")");
  };
  auto is_hex = [](char h) { return (h >= '0' && h <= '9') || (h >= 'a' && h <= 'f') || (h >= 'A' && h <= 'F'); };
  for (size_t i = 0; i < p.size(); ++i) {
    const char c = p[i];
    if (c == '\\') {
      if (i + 1 >= p.size()) unsupported("'\\' at the end");
      const char e = p[++i];
      switch (e) {
        case 's':
        case 'h':
          if (!in_class) out += '[';
          out += e == 's' ? kSpaceBody : kHexBody;
          if (!in_class) out += ']';
          break;
        case 'S':
        case 'H':
          if (in_class) unsupported(e == 'S' ? "\\S inside [...]" : "\\H inside [...]");
          out += "[^";
          out += e == 'S' ? kSpaceBody : kHexBody;
          out += ']';
          break;
        case 'w':
        case 'W':
        case 'b':
        case 'B':
          unsupported(std::string("\\") + e);
          break;
        case 'u':
          if (i + 4 >= p.size() || !is_hex(p[i + 1]) || !is_hex(p[i + 2]) || !is_hex(p[i + 3]) || !is_hex(p[i + 4])) {
            unsupported("\\u without four hex digits");
          }
          out += "\\x{";
          out += p.substr(i + 1, 4);
          out += '}';
          i += 4;
          break;
        default:
          out += '\\';
          out += e;  // \p{..}, \x{..}: the braces follow as ordinary characters
      }
      continue;
    }
    if (in_class) {
      if (c == ']' && i > class_start) {
        in_class = false;
      } else if (c == '[') {
        unsupported(i + 1 < p.size() && p[i + 1] == ':' ? "POSIX [:class:]" : "nested character class");
      } else if (c == '&' && i + 1 < p.size() && p[i + 1] == '&') {
        unsupported("class intersection '&&'");
      }
      out += c;
      continue;
    }
    if (c == '[') {
      in_class = true;
      out += c;
      if (i + 1 < p.size() && p[i + 1] == '^') out += p[++i];
      class_start = i + 1;
      continue;
    }
    if (c == '(' && i + 1 < p.size() && p[i + 1] == '?') {
      // Inline flags "(?imx-imx)" or "(?imx-imx:": Oniguruma's m is dotall.
      size_t j = i + 2;
      while (j < p.size() && (p[j] == 'i' || p[j] == 'm' || p[j] == 'x' || p[j] == '-')) ++j;
      if (j > i + 2 && j < p.size() && (p[j] == ')' || p[j] == ':')) {
        out += "(?";
        for (size_t k = i + 2; k < j; ++k) out += p[k] == 'm' ? 's' : p[k];
        i = j - 1;
        continue;
      }
    }
    out += c;
  }
  if (in_class) unsupported("unterminated '['");
  return out;
}

// A compiled, immutable, thread-safe pattern.
class Regex {
 public:
  // pattern: Oniguruma syntax as found in tokenizer.json; `where` prefixes error messages
  // (e.g. "tokenizer.json: pre_tokenizer.pretokenizers[2].pattern.Regex").
  Regex(std::string_view pattern, std::string_view where) : source_(pattern) {
    const std::string translated = translate_onig(pattern, where);
    pcre2_compile_context_8* cc = pcre2_compile_context_create_8(nullptr);
    if (!cc) throw std::bad_alloc();
    pcre2_set_newline_8(cc, PCRE2_NEWLINE_LF);
    int err = 0;
    PCRE2_SIZE err_off = 0;
    code_.reset(pcre2_compile_8(reinterpret_cast<PCRE2_SPTR8>(translated.data()), translated.size(),
                                PCRE2_UTF | PCRE2_UCP | PCRE2_MULTILINE, &err, &err_off, cc));
    pcre2_compile_context_free_8(cc);
    if (!code_) {
      fail(where, ": regex does not compile (", regex_detail::pcre2_message(err), " at offset ", err_off,
           " of translated pattern '", translated, "')");
    }
    // JIT is an optimisation only; the interpreter gives the same matches.
    jit_ = pcre2_jit_compile_8(code_.get(), PCRE2_JIT_COMPLETE) == 0;
  }

  bool jit() const { return jit_; }
  const std::string& source() const { return source_; }

  // Calls f(begin, end) (byte offsets) for each match in `subject`, left to right, without
  // overlap, with the iteration rule of the onig crate HF uses: an empty match right where the
  // previous match ended is dropped and the search resumes one character later.
  // Throws dsv4::Error when subject is not valid UTF-8.
  template <class F>
  void for_each_match(std::string_view subject, F&& f) const {
    if (utf8::valid_prefix(subject) != subject.size()) fail("regex '", source_, "': subject is not valid UTF-8");
    for_each_match_unchecked(subject, std::forward<F>(f));
  }

  // As for_each_match(), for a subject the caller has already validated (PCRE2 is not told to
  // re-check it: invalid UTF-8 here is undefined behaviour).
  template <class F>
  void for_each_match_unchecked(std::string_view subject, F&& f) const {
    auto& s = regex_detail::scratch();
    const auto* subj = reinterpret_cast<PCRE2_SPTR8>(subject.data());
    const size_t n = subject.size();
    size_t from = 0;
    std::optional<size_t> last_end;
    while (from <= n) {
      const int rc = pcre2_match_8(code_.get(), subj, n, from, PCRE2_NO_UTF_CHECK, s.data, s.context);
      if (rc == PCRE2_ERROR_NOMATCH) return;
      if (rc < 0) fail("regex '", source_, "' failed: ", regex_detail::pcre2_message(rc));
      const PCRE2_SIZE* ov = pcre2_get_ovector_pointer_8(s.data);
      const size_t b = ov[0], e = ov[1];
      if (b == e && last_end && *last_end == e) {
        from += from < n ? utf8_len(static_cast<uint8_t>(subject[from])) : 1;
        continue;
      }
      from = e;
      last_end = e;
      f(b, e);
    }
  }

 private:
  static size_t utf8_len(uint8_t lead) { return lead < 0x80 ? 1 : lead < 0xE0 ? 2 : lead < 0xF0 ? 3 : 4; }

  std::string source_;
  std::unique_ptr<pcre2_code_8, regex_detail::CodeDeleter> code_;
  bool jit_ = false;
};

}  // namespace dsv4::text
