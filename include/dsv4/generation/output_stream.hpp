#pragma once
// What the tokens a generation samples become: text released as it is decoded (held back while it
// may be an unfinished UTF-8 character or the start of a stop string) and when the generation
// ends (a stop token, a stop string). Session::generate and BatchEngine each drive one per
// sequence, so a request served in a batch ends and reads exactly like one generated alone.
#include <algorithm>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "dsv4/core/error.hpp"
#include "dsv4/model/model.hpp"
#include "dsv4/sampling/stop.hpp"
#include "dsv4/text/stream_decoder.hpp"
#include "dsv4/text/tokenizer.hpp"

namespace dsv4 {

struct GenerationOptions {
  int64_t max_new_tokens = 256;           // sampled tokens, the stop token included
  bool stop_at_eos = true;                // stop on the EOS of config.json and of the tokenizer
  std::vector<int32_t> stop_token_ids;    // more ids that end generation (not shown as text)
  std::vector<std::string> stop_strings;  // end when the text contains one; it and what follows are not shown
  bool skip_special = true;               // special tokens (BOS, EOS, pad) give no text
};

enum class StopReason { MaxTokens, StopToken, StopString, Callback };

inline const char* stop_reason_name(StopReason r) {
  switch (r) {
    case StopReason::MaxTokens: return "max_tokens";
    case StopReason::StopToken: return "stop_token";
    case StopReason::StopString: return "stop_string";
    case StopReason::Callback: return "callback";
  }
  return "?";
}

class OutputStream {
 public:
  // tokenizer: null for id-only generation (then no text and no stop strings).
  OutputStream(const Model& model, const text::Tokenizer* tokenizer, const GenerationOptions& opts)
      : stops_(opts.stop_strings), stop_ids_(opts.stop_token_ids) {
    if (!opts.stop_strings.empty() && !tokenizer) fail("session: stop strings need a tokenizer");
    if (opts.stop_at_eos) {
      if (model.config().eos_token_id >= 0) stop_ids_.push_back(int32_t(model.config().eos_token_id));
      if (tokenizer && tokenizer->eos_id()) stop_ids_.push_back(*tokenizer->eos_id());
    }
    if (tokenizer) decoder_.emplace(*tokenizer, opts.skip_special);
  }

  // text: released now. reason: StopToken or StopString when this piece ends the generation,
  // MaxTokens (meaning: none) otherwise.
  struct Piece {
    std::string text;
    StopReason reason = StopReason::MaxTokens;
  };

  // After each sampled token. A stop token releases nothing itself (call finish() for what is held).
  Piece push(int32_t token) {
    if (std::find(stop_ids_.begin(), stop_ids_.end(), token) != stop_ids_.end()) return {{}, StopReason::StopToken};
    if (!decoder_) return {};
    StopStrings::Result r = stops_.push(decoder_->push(token));
    return {std::move(r.text), r.stopped ? StopReason::StopString : StopReason::MaxTokens};
  }

  // When the generation ends by a stop token or its budget: what is still held (a stop string
  // may complete in it: then reason is StopString).
  Piece finish() {
    if (!decoder_) return {};
    StopStrings::Result tail = stops_.push(decoder_->flush());
    if (tail.stopped) return {std::move(tail.text), StopReason::StopString};
    return {tail.text + stops_.flush(), StopReason::MaxTokens};
  }

  const std::string& stop_string() const { return stops_.matched(); }

 private:
  std::optional<text::StreamDecoder> decoder_;
  StopStrings stops_;
  std::vector<int32_t> stop_ids_;
};

}  // namespace dsv4
