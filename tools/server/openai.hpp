#pragma once
// The OpenAI-compatible wire format of dsv4-server: requests of /v1/completions and
// /v1/chat/completions checked and turned into a GenerationRequest, and the reply objects and
// stream chunks built back. Invalid requests raise ApiError (an HTTP status and an OpenAI
// error object), never a crash.
#include <chrono>
#include <cstdint>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "dsv4/dsv4.hpp"
#include "dsv4/generation/chat.hpp"
#include "dsv4/serving/batch_engine.hpp"

namespace dsv4::server {

using nlohmann::json;

struct ApiError {
  int status = 400;
  std::string message, type = "invalid_request_error", param, code;
};

[[noreturn]] inline void bad_request(std::string message, std::string param = {}, std::string code = {}) {
  throw ApiError{400, std::move(message), "invalid_request_error", std::move(param), std::move(code)};
}

inline json error_body(const ApiError& e) {
  json err = {{"message", e.message}, {"type", e.type}, {"param", nullptr}, {"code", nullptr}};
  if (!e.param.empty()) err["param"] = e.param;
  if (!e.code.empty()) err["code"] = e.code;
  return {{"error", err}};
}

enum class Endpoint { Completions, ChatCompletions };

// A checked request: what the engine runs plus how to answer.
struct ApiRequest {
  Endpoint endpoint = Endpoint::Completions;
  GenerationRequest generation;
  bool stream = false, include_usage = false;
  std::string model;
};

struct ServerLimits {
  std::string model_name;   // what /v1/models lists and requests may name
  int64_t context = 0;      // positions the model can take (prompt + completion)
  int64_t default_max_tokens = 256;
  int64_t vocab = 0;        // the model's vocabulary (the prompt's ids must be below it)
  Architecture arch = Architecture::DeepseekV4;
};

namespace detail {

inline double number(const json& body, const char* key, double lo, double hi) {
  const json& v = body.at(key);
  if (!v.is_number()) bad_request(cat("'", key, "' must be a number"), key);
  const double x = v.get<double>();
  if (!(x >= lo && x <= hi)) bad_request(cat("'", key, "' must be in [", lo, ", ", hi, "], got ", v.dump()), key);
  return x;
}

inline int64_t integer(const json& body, const char* key, int64_t lo, int64_t hi) {
  const json& v = body.at(key);
  if (!v.is_number_integer()) bad_request(cat("'", key, "' must be an integer"), key);
  const int64_t x = v.get<int64_t>();
  if (x < lo || x > hi) bad_request(cat("'", key, "' must be in [", lo, ", ", hi, "], got ", x), key);
  return x;
}

// A message's content: a string, or an array of {"type": "text", "text": ...} parts.
inline std::string content_text(const json& c, size_t i) {
  const std::string param = cat("messages[", i, "].content");
  if (c.is_string()) return c.get<std::string>();
  if (c.is_null()) return {};
  if (!c.is_array()) bad_request(param + " must be a string or an array of text parts", param);
  std::string out;
  for (const json& part : c) {
    if (!part.is_object() || part.value("type", "") != "text" || !part.contains("text") || !part["text"].is_string())
      bad_request(param + ": only parts of type 'text' are supported", param);
    out += part["text"].get<std::string>();
  }
  return out;
}

inline void require_utf8(const std::string& s, const std::string& param) {
  if (text::utf8::valid_prefix(s) != s.size()) bad_request(param + " is not valid UTF-8", param);
}

}  // namespace detail

// Parses and checks a request body. Unknown fields are refused (as the OpenAI API does), and so
// are known features this server does not implement, each with a message that names it.
inline ApiRequest parse_request(Endpoint endpoint, const std::string& body_text, const text::Tokenizer& tok,
                                const ServerLimits& limits) {
  json body;
  try {
    body = json::parse(body_text);
  } catch (const json::exception& e) {
    bad_request(cat("the request body is not valid JSON: ", e.what()));
  }
  if (!body.is_object()) bad_request("the request body must be a JSON object");

  static const std::set<std::string> common = {
      "model", "max_tokens", "max_completion_tokens", "temperature", "top_p", "n", "stream", "stream_options",
      "stop", "seed", "presence_penalty", "frequency_penalty", "user", "logprobs", "top_logprobs", "logit_bias",
      "top_k", "min_p", "repetition_penalty", "ignore_eos"};
  static const std::set<std::string> chat_only = {"messages", "response_format", "tools", "tool_choice",
                                                  "parallel_tool_calls"};
  static const std::set<std::string> completion_only = {"prompt", "echo", "suffix", "best_of"};
  const auto& own = endpoint == Endpoint::ChatCompletions ? chat_only : completion_only;
  for (auto it = body.begin(); it != body.end(); ++it)
    if (!common.count(it.key()) && !own.count(it.key()))
      bad_request(cat("Unrecognized request argument supplied: ", it.key()), it.key());

  ApiRequest r;
  r.endpoint = endpoint;
  if (!body.contains("model") || !body["model"].is_string()) bad_request("'model' is required (a string)", "model");
  r.model = body["model"].get<std::string>();
  if (r.model != limits.model_name)
    throw ApiError{404, cat("The model '", r.model, "' does not exist; this server serves '", limits.model_name, "'"),
                   "invalid_request_error", "model", "model_not_found"};

  // Features this server does not have: refused, never silently ignored.
  auto unsupported = [&](const char* key, auto is_default) {
    if (body.contains(key) && !is_default(body[key]))
      bad_request(cat("'", key, "' is not supported by dsv4-server"), key);
  };
  auto null_or_false = [](const json& v) { return v.is_null() || v == false; };
  auto null_or_zero = [](const json& v) { return v.is_null() || v == 0; };
  auto null_or_empty = [](const json& v) { return v.is_null() || v.empty(); };
  auto null_or_one = [](const json& v) { return v.is_null() || v == 1; };
  unsupported("logprobs", [&](const json& v) { return null_or_false(v) || null_or_zero(v); });
  unsupported("top_logprobs", null_or_zero);
  unsupported("logit_bias", null_or_empty);
  unsupported("n", null_or_one);
  unsupported("best_of", null_or_one);
  unsupported("echo", null_or_false);
  unsupported("suffix", [](const json& v) { return v.is_null() || v == ""; });
  unsupported("tools", null_or_empty);
  unsupported("tool_choice", [](const json& v) { return v.is_null() || v == "none"; });
  unsupported("response_format", [](const json& v) { return v.is_null() || (v.is_object() && v.value("type", "") == "text"); });
  if (body.contains("n") && !body["n"].is_null()) detail::integer(body, "n", 1, 1);

  SamplingParams& sp = r.generation.sampling;
  sp.greedy = false;
  if (body.contains("temperature") && !body["temperature"].is_null()) {
    sp.temperature = float(detail::number(body, "temperature", 0, 2));
    sp.greedy = sp.temperature == 0;
  }
  if (body.contains("top_p") && !body["top_p"].is_null()) {
    sp.top_p = float(detail::number(body, "top_p", 0, 1));
    if (sp.top_p == 0) sp.greedy = true, sp.top_p = 1;  // nothing but the most likely token
  }
  if (body.contains("top_k") && !body["top_k"].is_null()) sp.top_k = int32_t(detail::integer(body, "top_k", 0, 1 << 30));
  if (body.contains("min_p") && !body["min_p"].is_null()) sp.min_p = float(detail::number(body, "min_p", 0, 1));
  if (body.contains("repetition_penalty") && !body["repetition_penalty"].is_null())
    sp.repetition_penalty = float(detail::number(body, "repetition_penalty", 1e-3, 100));
  if (body.contains("presence_penalty") && !body["presence_penalty"].is_null())
    sp.presence_penalty = float(detail::number(body, "presence_penalty", -2, 2));
  if (body.contains("frequency_penalty") && !body["frequency_penalty"].is_null())
    sp.frequency_penalty = float(detail::number(body, "frequency_penalty", -2, 2));
  static uint64_t unseeded = uint64_t(std::chrono::steady_clock::now().time_since_epoch().count());
  sp.seed = body.contains("seed") && !body["seed"].is_null()
                ? uint64_t(detail::integer(body, "seed", INT64_MIN, INT64_MAX))
                : (unseeded += 0x9E3779B97F4A7C15ull);

  if (body.contains("stream") && !body["stream"].is_null()) {
    if (!body["stream"].is_boolean()) bad_request("'stream' must be a boolean", "stream");
    r.stream = body["stream"].get<bool>();
  }
  if (body.contains("stream_options") && !body["stream_options"].is_null()) {
    const json& so = body["stream_options"];
    if (!so.is_object()) bad_request("'stream_options' must be an object", "stream_options");
    if (!r.stream) bad_request("'stream_options' is only allowed when 'stream' is true", "stream_options");
    for (auto it = so.begin(); it != so.end(); ++it)
      if (it.key() != "include_usage") bad_request(cat("Unrecognized stream option: ", it.key()), "stream_options");
    if (so.contains("include_usage")) {
      if (!so["include_usage"].is_boolean()) bad_request("'include_usage' must be a boolean", "stream_options");
      r.include_usage = so["include_usage"].get<bool>();
    }
  }

  GenerationOptions& go = r.generation.options;
  if (body.contains("stop") && !body["stop"].is_null()) {
    const json& st = body["stop"];
    std::vector<std::string> stops;
    if (st.is_string()) stops.push_back(st.get<std::string>());
    else if (st.is_array() && st.size() <= 4) {
      for (const json& s : st) {
        if (!s.is_string()) bad_request("'stop' must be a string or an array of up to 4 strings", "stop");
        stops.push_back(s.get<std::string>());
      }
    } else bad_request("'stop' must be a string or an array of up to 4 strings", "stop");
    for (auto& s : stops) {
      if (s.empty()) bad_request("'stop' strings must not be empty", "stop");
      detail::require_utf8(s, "stop");
    }
    go.stop_strings = std::move(stops);
  }
  if (body.contains("ignore_eos") && !body["ignore_eos"].is_null()) {
    if (!body["ignore_eos"].is_boolean()) bad_request("'ignore_eos' must be a boolean", "ignore_eos");
    go.stop_at_eos = !body["ignore_eos"].get<bool>();
  }

  // The prompt: chat messages through the model's chat template, or completion text / token ids.
  std::vector<int32_t>& prompt = r.generation.prompt;
  if (endpoint == Endpoint::ChatCompletions) {
    if (!body.contains("messages") || !body["messages"].is_array() || body["messages"].empty())
      bad_request("'messages' is required: a non-empty array", "messages");
    std::vector<ChatMessage> messages;
    for (size_t i = 0; i < body["messages"].size(); ++i) {
      const json& m = body["messages"][i];
      const std::string param = cat("messages[", i, "]");
      if (!m.is_object() || !m.contains("role") || !m["role"].is_string())
        bad_request(param + " must be an object with a string 'role'", param);
      for (auto it = m.begin(); it != m.end(); ++it)
        if (it.key() != "role" && it.key() != "content" && it.key() != "name")
          bad_request(cat("Unrecognized argument in ", param, ": ", it.key()), param);
      std::string role = m["role"].get<std::string>();
      if (role == "developer") role = "system";
      if (role != "system" && role != "user" && role != "assistant")
        bad_request(cat(param, ".role '", role, "' is not supported (system, developer, user, assistant)"), param);
      ChatMessage msg{role, detail::content_text(m.value("content", json()), i), {}, {}};
      detail::require_utf8(msg.content, param + ".content");
      messages.push_back(std::move(msg));
    }
    ChatOptions co;
    co.format = limits.arch == Architecture::DeepseekV3 ? ChatFormat::DeepSeekV3 : ChatFormat::DeepSeekV4;
    try {
      prompt = chat_tokens(tok, messages, co);
    } catch (const Error& e) {
      bad_request(e.what(), "messages");
    }
  } else {
    if (!body.contains("prompt")) bad_request("'prompt' is required", "prompt");
    const json& p = body["prompt"];
    auto text_prompt = [&](const json& s) {
      detail::require_utf8(s.get<std::string>(), "prompt");
      prompt = tok.encode(s.get<std::string>(), true);
    };
    if (p.is_string()) text_prompt(p);
    else if (p.is_array() && p.size() == 1 && p[0].is_string()) text_prompt(p[0]);
    else if (p.is_array() && !p.empty() && p[0].is_number_integer()) {
      for (const json& t : p) {
        if (!t.is_number_integer() || t.get<int64_t>() < 0 || t.get<int64_t>() >= INT32_MAX)
          bad_request("'prompt' token ids must be non-negative integers", "prompt");
        prompt.push_back(int32_t(t.get<int64_t>()));
      }
    } else if (p.is_array() && p.size() > 1) {
      bad_request("a batch of several prompts is not supported; send one request per prompt", "prompt");
    } else {
      bad_request("'prompt' must be a string, an array of one string, or an array of token ids", "prompt");
    }
    if (prompt.empty()) bad_request("'prompt' is empty", "prompt");
  }

  for (int32_t t : prompt)
    if (limits.vocab > 0 && t >= limits.vocab)
      bad_request(cat("the prompt has token id ", t, ", outside this model's vocabulary of ", limits.vocab,
                      " (the tokenizer does not belong to this model)"),
                  endpoint == Endpoint::ChatCompletions ? "messages" : "prompt");
  // Context: the prompt and the completion must fit the model's positions.
  const int64_t room = limits.context - int64_t(prompt.size());
  if (room < 1)
    bad_request(cat("This model's maximum context length is ", limits.context, " tokens; the prompt has ",
                    prompt.size(), " tokens"),
                endpoint == Endpoint::ChatCompletions ? "messages" : "prompt", "context_length_exceeded");
  int64_t max_tokens = std::min(limits.default_max_tokens, room);
  for (const char* key : {"max_tokens", "max_completion_tokens"})
    if (body.contains(key) && !body[key].is_null()) {
      max_tokens = detail::integer(body, key, 1, INT32_MAX);
      if (max_tokens > room)
        bad_request(cat("This model's maximum context length is ", limits.context, " tokens; the prompt (",
                        prompt.size(), " tokens) plus ", key, " (", max_tokens, ") exceeds it"),
                    key, "context_length_exceeded");
    }
  go.max_new_tokens = max_tokens;
  try {
    sp.validate();
  } catch (const Error& e) {
    bad_request(e.what());
  }
  return r;
}

inline const char* finish_reason(const GenerationEvent& ev) {
  return ev.reason == StopReason::MaxTokens ? "length" : "stop";
}

inline json usage(const GenerationEvent& ev) {
  return {{"prompt_tokens", ev.prompt_tokens},
          {"completion_tokens", ev.completion_tokens},
          {"total_tokens", ev.prompt_tokens + ev.completion_tokens}};
}

// The complete (non-streamed) reply.
inline json full_reply(const ApiRequest& r, const std::string& id, int64_t created, const std::string& text,
                       const GenerationEvent& last) {
  json choice = {{"index", 0}, {"finish_reason", finish_reason(last)}};
  if (r.endpoint == Endpoint::ChatCompletions) choice["message"] = {{"role", "assistant"}, {"content", text}};
  else choice["text"] = text, choice["logprobs"] = nullptr;
  return {{"id", id},
          {"object", r.endpoint == Endpoint::ChatCompletions ? "chat.completion" : "text_completion"},
          {"created", created},
          {"model", r.model},
          {"choices", json::array({choice})},
          {"usage", usage(last)}};
}

// One server-sent event of a streamed reply: text (delta), the final chunk (finish set), or the
// usage chunk (no choices) that stream_options.include_usage asks for.
inline std::string stream_chunk(const ApiRequest& r, const std::string& id, int64_t created, const std::string* text,
                                const GenerationEvent* finish, bool first, const GenerationEvent* usage_of = nullptr) {
  json chunk = {{"id", id},
                {"object", r.endpoint == Endpoint::ChatCompletions ? "chat.completion.chunk" : "text_completion"},
                {"created", created},
                {"model", r.model}};
  if (usage_of) {
    chunk["choices"] = json::array();
    chunk["usage"] = usage(*usage_of);
  } else {
    json choice = {{"index", 0}, {"finish_reason", finish ? json(finish_reason(*finish)) : json(nullptr)}};
    if (r.endpoint == Endpoint::ChatCompletions) {
      json delta = json::object();
      if (first) delta["role"] = "assistant";
      if (text) delta["content"] = *text;
      choice["delta"] = delta;
    } else {
      choice["text"] = text ? *text : std::string();
      choice["logprobs"] = nullptr;
    }
    chunk["choices"] = json::array({choice});
    if (r.include_usage) chunk["usage"] = nullptr;
  }
  return "data: " + chunk.dump(-1, ' ', false, json::error_handler_t::replace) + "\n\n";
}

}  // namespace dsv4::server
