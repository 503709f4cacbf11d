#pragma once
// Incremental detokenization for generation: one id in, the text it completes out. A token may end
// in the middle of a UTF-8 character (byte tokens for emoji, CJK); those bytes are held until the
// character is complete, so every returned string is valid UTF-8 and the concatenation of all
// push() results plus flush() equals Tokenizer::decode() of the same ids.
#include <cstdint>
#include <string>
#include <string_view>

#include "dsv4/text/tokenizer.hpp"
#include "dsv4/text/utf8.hpp"

namespace dsv4::text {

class StreamDecoder {
 public:
  // Keeps its own (shared, cheap) copy of the tokenizer, so it may outlive the argument.
  explicit StreamDecoder(Tokenizer tokenizer, bool skip_special = false)
      : tok_(std::move(tokenizer)), skip_special_(skip_special) {}

  // Returns the text completed by `id` (often empty or one token's text). Bytes that can no
  // longer become a valid character come out as U+FFFD. An unknown id throws dsv4::Error and
  // leaves the state unchanged.
  std::string push(int32_t id) {
    const std::string_view bytes = tok_.token_bytes(id);
    if (skip_special_ && tok_.is_special(id)) return {};
    pending_.append(bytes);
    std::string out;
    size_t i = 0;
    while (i < pending_.size()) {
      const utf8::Step st = utf8::scan(pending_, i);
      if (st.kind == utf8::Kind::kTruncated) break;  // wait for the rest of the character
      if (st.kind == utf8::Kind::kValid) {
        out.append(pending_, i, st.len);
      } else {
        out.append(utf8::kReplacement);
      }
      i += st.len;
    }
    pending_.erase(0, i);
    return out;
  }

  // End of stream: returns what is held (an unfinished character becomes U+FFFD) and resets.
  std::string flush() {
    std::string out = utf8::lossy(pending_);
    pending_.clear();
    return out;
  }

  void reset() { pending_.clear(); }

  // Bytes held back (at most 3: a valid but unfinished character).
  size_t pending_bytes() const { return pending_.size(); }

 private:
  Tokenizer tok_;
  bool skip_special_;
  std::string pending_;
};

}  // namespace dsv4::text
