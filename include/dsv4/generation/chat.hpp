#pragma once
// DeepSeek chat: the prompt format built from a message list, and a multi-turn ChatSession that
// keeps the model's cache between turns and runs only the tokens each turn adds.
//
// Formats (system / user / assistant messages; tool calls are not supported):
//
// DeepSeekV4 (the default): DeepSeek-V4's encoder (encoding/encoding_dsv4.py of the release), the
// same convention as V3.1/V3.2:
//   <｜begin▁of▁sentence｜>{system}<｜User｜>{user}<｜Assistant｜></think>{answer}<｜end▁of▁sentence｜>
//   <｜User｜>{user}<｜Assistant｜>          + "</think>" (chat mode) or "<think>" (thinking mode)
//   - system messages are written as they are, where they are, with nothing around them;
//   - after a user message that is followed by an assistant message or ends the list comes
//     "<｜Assistant｜>" and "</think>" or, in thinking mode, "<think>"; in thinking mode with
//     drop_thinking (DeepSeek's default) the user messages before the last one get "</think>"
//     and the assistant answers before the last user message lose their reasoning;
//   - an assistant message is "{reasoning}</think>{content}<｜end▁of▁sentence｜>" when its reasoning
//     is kept (thinking mode, after the last user message or drop_thinking off), else
//     "{content}<｜end▁of▁sentence｜>".
// DeepSeekV3: the chat_template of DeepSeek-V3's tokenizer_config.json:
//   <｜begin▁of▁sentence｜>{system prompts joined by "\n\n"}<｜User｜>{user}<｜Assistant｜>{answer}
//   <｜end▁of▁sentence｜>…<｜Assistant｜>   (no thinking mode)
//
// Text in messages is encoded as it is: special-token text inside a message (e.g. "<｜User｜>")
// becomes that token, as HF's apply_chat_template + encode do.
#include <algorithm>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "dsv4/core/error.hpp"
#include "dsv4/generation/session.hpp"
#include "dsv4/text/tokenizer.hpp"

namespace dsv4 {

namespace chat_text {
inline constexpr std::string_view kBos = "<｜begin▁of▁sentence｜>";
inline constexpr std::string_view kEos = "<｜end▁of▁sentence｜>";
inline constexpr std::string_view kUser = "<｜User｜>";
inline constexpr std::string_view kAssistant = "<｜Assistant｜>";
inline constexpr std::string_view kThinkBegin = "<think>";
inline constexpr std::string_view kThinkEnd = "</think>";
}  // namespace chat_text

enum class ChatFormat { DeepSeekV4, DeepSeekV3 };

inline ChatFormat parse_chat_format(std::string_view s) {
  if (s == "v4" || s == "deepseek-v4") return ChatFormat::DeepSeekV4;
  if (s == "v3" || s == "deepseek-v3") return ChatFormat::DeepSeekV3;
  fail("unknown chat format '", s, "' (v4 or v3)");
}

struct ChatMessage {
  std::string role;       // "system", "user" or "assistant"
  std::string content;
  std::string reasoning;  // assistant, thinking mode: the text before "</think>"
  // Assistant, optional: the ids the model generated for this answer (without the stop token).
  // When they decode to exactly what the format writes for the answer, the ids are used instead
  // of re-encoding the text, so the conversation's tokens are the ones the model has seen.
  std::vector<int32_t> token_ids;
};

struct ChatOptions {
  ChatFormat format = ChatFormat::DeepSeekV4;
  bool thinking = false;              // V4 thinking mode: the answer starts inside <think>
  bool drop_thinking = true;          // V4 thinking mode: leave out the reasoning of earlier turns
  bool add_bos = true;
  bool add_generation_prompt = true;  // end with the assistant's opening after a final user message
  // ChatSession: keep a copy of the cache at the last "<｜Assistant｜>" of each prompt, so that a
  // turn whose history is written differently from what was generated (thinking mode's dropped
  // reasoning, a reply cut at a stop string) resumes from there instead of from the start. Costs
  // one copy of the cache.
  bool snapshot_turns = true;
};

// One piece of a rendered conversation: text, or the answer part of assistant message `message`.
struct ChatSegment {
  std::string text;
  int64_t message = -1;
};

namespace chat_detail {

inline void check_roles(std::span<const ChatMessage> messages, const ChatOptions& o) {
  for (size_t i = 0; i < messages.size(); ++i) {
    const std::string& r = messages[i].role;
    if (r != "system" && r != "user" && r != "assistant")
      fail("chat: message ", i, " has role '", r, "' (system, user or assistant)");
  }
  if (o.format == ChatFormat::DeepSeekV3 && o.thinking) fail("chat: the DeepSeek-V3 format has no thinking mode");
}

inline void add(std::vector<ChatSegment>& out, std::string_view text) {
  if (out.empty() || out.back().message >= 0) out.push_back({});
  out.back().text += text;
}

inline std::vector<ChatSegment> render_v4(std::span<const ChatMessage> m, const ChatOptions& o, std::string_view bos) {
  using namespace chat_text;
  std::vector<ChatSegment> out;
  if (o.add_bos) add(out, bos);
  int64_t last_user = -1;
  for (size_t i = 0; i < m.size(); ++i)
    if (m[i].role == "user") last_user = int64_t(i);
  for (size_t i = 0; i < m.size(); ++i) {
    const int64_t idx = int64_t(i);
    const std::string& role = m[i].role;
    if (role == "system") {
      add(out, m[i].content);
    } else if (role == "user") {
      add(out, kUser);
      add(out, m[i].content);
    } else {  // assistant
      std::string body;
      if (o.thinking && (!o.drop_thinking || idx > last_user)) body = m[i].reasoning + std::string(kThinkEnd);
      body += m[i].content;
      out.push_back({std::move(body), idx});
      add(out, kEos);
    }
    // The assistant's opening follows a user message that comes before an assistant message or
    // ends the list.
    const bool last = i + 1 == m.size();
    if (role != "user" || !(last ? o.add_generation_prompt : m[i + 1].role == "assistant")) continue;
    add(out, kAssistant);
    add(out, o.thinking && (!o.drop_thinking || idx >= last_user) ? kThinkBegin : kThinkEnd);
  }
  return out;
}

inline std::vector<ChatSegment> render_v3(std::span<const ChatMessage> m, const ChatOptions& o, std::string_view bos) {
  using namespace chat_text;
  std::vector<ChatSegment> out;
  if (o.add_bos) add(out, bos);
  bool first_system = true;
  for (const ChatMessage& msg : m) {
    if (msg.role != "system") continue;
    if (!first_system) add(out, "\n\n");
    add(out, msg.content);
    first_system = false;
  }
  for (size_t i = 0; i < m.size(); ++i) {
    if (m[i].role == "user") {
      add(out, kUser);
      add(out, m[i].content);
    } else if (m[i].role == "assistant") {
      add(out, kAssistant);
      out.push_back({m[i].content, int64_t(i)});
      add(out, kEos);
    }
  }
  if (o.add_generation_prompt) add(out, kAssistant);
  return out;
}

}  // namespace chat_detail

// The conversation as segments: text, and each assistant answer as its own segment.
inline std::vector<ChatSegment> render_chat_segments(std::span<const ChatMessage> messages, const ChatOptions& opts = {},
                                                     std::string_view bos = chat_text::kBos) {
  chat_detail::check_roles(messages, opts);
  return opts.format == ChatFormat::DeepSeekV4 ? chat_detail::render_v4(messages, opts, bos)
                                               : chat_detail::render_v3(messages, opts, bos);
}

// The prompt text of a conversation.
inline std::string render_chat(std::span<const ChatMessage> messages, const ChatOptions& opts = {},
                               std::string_view bos = chat_text::kBos) {
  std::string s;
  for (const ChatSegment& seg : render_chat_segments(messages, opts, bos)) s += seg.text;
  return s;
}

// The prompt tokens: encode(render_chat(...)), except that an assistant answer whose token_ids
// decode to exactly its text keeps those ids (the text before it is then encoded on its own,
// as it was when the answer was generated).
inline std::vector<int32_t> chat_tokens(const text::Tokenizer& tok, std::span<const ChatMessage> messages,
                                        const ChatOptions& opts = {}) {
  std::string bos(chat_text::kBos);
  if (tok.bos_id()) bos = std::string(tok.token_text(*tok.bos_id()));
  std::vector<int32_t> out;
  std::string text;
  for (const ChatSegment& seg : render_chat_segments(messages, opts, bos)) {
    const std::vector<int32_t>* ids = seg.message >= 0 ? &messages[size_t(seg.message)].token_ids : nullptr;
    if (ids && !ids->empty() && tok.decode(*ids) == seg.text) {
      tok.encode_into(text, out);
      text.clear();
      out.insert(out.end(), ids->begin(), ids->end());
    } else {
      text += seg.text;
    }
  }
  tok.encode_into(text, out);
  return out;
}

// Splits generated text into reasoning and answer: in thinking mode the reasoning is everything
// before the first "</think>" (all of it when there is none: the answer was cut short).
inline ChatMessage parse_reply(std::string_view generated, bool thinking) {
  ChatMessage m;
  m.role = "assistant";
  if (!thinking) {
    m.content = std::string(generated);
    return m;
  }
  const size_t end = generated.find(chat_text::kThinkEnd);
  if (end == std::string_view::npos) {
    m.reasoning = std::string(generated);
  } else {
    m.reasoning = std::string(generated.substr(0, end));
    m.content = std::string(generated.substr(end + chat_text::kThinkEnd.size()));
  }
  return m;
}

// A multi-turn conversation over one model. Each respond() renders the whole conversation,
// keeps the part of the cache that matches its tokens, and runs only the rest: normally just
// the new user message and the assistant's opening.
class ChatSession {
 public:
  ChatSession(const Model& model, text::Tokenizer tokenizer, ChatOptions opts = {}, KernelMode mode = KernelMode::Fast)
      : session_(model, std::move(tokenizer), mode), opts_(opts) {
    chat_detail::check_roles({}, opts_);
  }

  void add(ChatMessage m) {
    chat_detail::check_roles({&m, 1}, opts_);
    messages_.push_back(std::move(m));
  }
  void add(std::string role, std::string content) { add(ChatMessage{std::move(role), std::move(content), {}, {}}); }

  // Runs the conversation's prompt through the model (only what the cache does not hold yet).
  void prepare() {
    const std::vector<int32_t> target = prompt_tokens();
    const std::vector<int32_t>& have = session_.tokens();
    size_t common = 0;
    while (common < have.size() && common < target.size() && have[common] == target[common]) ++common;
    if (common < have.size()) {  // the history is written differently now: resume from the snapshot or restart
      const bool mark_fits = mark_ && mark_->tokens().size() <= common &&
                             std::equal(mark_->tokens().begin(), mark_->tokens().end(), target.begin());
      if (mark_fits) session_ = *mark_;
      else session_.reset(), mark_.reset();
    }
    reused_ = session_.position();
    const size_t from = session_.tokens().size();
    // The snapshot point: right after the last "<｜Assistant｜>".
    size_t mark = 0;
    if (const auto a = session_.tokenizer().token_id(chat_text::kAssistant); a && opts_.snapshot_turns) {
      for (size_t i = target.size(); i > from; --i)
        if (target[i - 1] == *a) {
          mark = i;
          break;
        }
    }
    const std::span<const int32_t> t(target);
    if (mark > from) {
      session_.prefill(t.subspan(from, mark - from));
      mark_ = session_;
      session_.prefill(t.subspan(mark));
    } else if (target.size() > from) {
      session_.prefill(t.subspan(from));
    }
    fed_ = session_.position() - reused_;
  }

  // Generates the assistant's answer to the conversation (whose last message must be the
  // user's), streams its text to `on_token`, and appends it to the conversation.
  GenerationResult respond(Sampler& sampler, const GenerationOptions& gen = {}, const StreamCallback& on_token = {}) {
    if (messages_.empty() || messages_.back().role != "user") fail("chat: respond() needs the user's message last");
    prepare();
    GenerationResult r = session_.generate(sampler, gen, on_token);
    std::vector<int32_t> ids = r.tokens;
    if (r.reason == StopReason::StopToken && !ids.empty()) ids.pop_back();
    std::string text = session_.tokenizer().decode(ids);
    if (r.reason == StopReason::StopString) text = text.substr(0, text.find(r.stop_string));
    ChatMessage m = parse_reply(text, opts_.format == ChatFormat::DeepSeekV4 && opts_.thinking);
    m.token_ids = std::move(ids);
    messages_.push_back(std::move(m));
    return r;
  }

  const std::vector<ChatMessage>& messages() const { return messages_; }
  const ChatOptions& options() const { return opts_; }
  const Session& session() const { return session_; }
  std::string prompt_text() const { return render_chat(messages_, opts_, bos_text()); }
  std::vector<int32_t> prompt_tokens() const { return chat_tokens(session_.tokenizer(), messages_, opts_); }

  // Of the last prepare()/respond(): prompt tokens served by the cache, and those run.
  int64_t reused_tokens() const { return reused_; }
  int64_t prefilled_tokens() const { return fed_; }

  // Starts a new conversation (same options).
  void clear() {
    messages_.clear();
    session_.reset();
    mark_.reset();
    reused_ = fed_ = 0;
  }

 private:
  std::string bos_text() const {
    const auto& tok = session_.tokenizer();
    return tok.bos_id() ? std::string(tok.token_text(*tok.bos_id())) : std::string(chat_text::kBos);
  }

  Session session_;
  std::optional<Session> mark_;
  ChatOptions opts_;
  std::vector<ChatMessage> messages_;
  int64_t reused_ = 0, fed_ = 0;
};

}  // namespace dsv4
