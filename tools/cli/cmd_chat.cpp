// dsv4 chat: an interactive conversation on stdin/stdout. One line of stdin is one user message;
// the answer streams to stdout, a line of timing to stderr. The model's cache is kept between
// turns: each turn runs only the tokens it adds. Lines "/reset" (new conversation) and "/exit".
#include <cstdio>
#include <iostream>
#include <string>
#include <unistd.h>

#include "common.hpp"
#include "text_options.hpp"

namespace dsv4::cli {

int cmd_chat(const Args& a) {
  apply_threads(a);
  ChatOptions co;
  co.thinking = a.has("think");
  co.drop_thinking = !a.has("keep-reasoning");
  const SamplingParams sp = sampling_params(a);
  const GenerationOptions g = generation_options(a, 1024);
  const KernelMode mode = kernel_mode(a);
  const text::Tokenizer tok = load_tokenizer(a);
  preload_checkpoint(a.get("model"));
  const Model m = load_model(a);
  // The model's own chat format unless --format says otherwise.
  co.format = parse_chat_format(a.get("format", m.config().arch == Architecture::DeepseekV3 ? "v3" : "v4"));
  Sampler sampler(sp);
  ChatSession chat(m, tok, co, mode);
  auto start = [&] {
    chat.clear();
    if (a.has("system")) chat.add("system", a.get("system"));
  };
  start();

  const bool interactive = isatty(STDIN_FILENO);
  size_t total_tokens = 0;
  double total_seconds = 0;
  std::string line;
  for (;;) {
    if (interactive) std::fputs("> ", stderr), std::fflush(stderr);
    if (!std::getline(std::cin, line)) break;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty()) continue;
    if (line == "/exit" || line == "/quit") break;
    if (const size_t ok = text::utf8::valid_prefix(line); ok != line.size()) {  // this line only
      std::fprintf(stderr, "stdin: invalid UTF-8 at byte %zu of the line; message ignored\n", ok);
      continue;
    }
    if (line == "/reset") {
      start();
      std::fputs("[new conversation]\n", stderr);
      continue;
    }
    chat.add("user", line);
    if (co.thinking && co.format == ChatFormat::DeepSeekV4) std::fputs("<think>", stdout);
    const GenerationResult r = chat.respond(sampler, g, [](int32_t, std::string_view text) {
      std::fwrite(text.data(), 1, text.size(), stdout);
      std::fflush(stdout);
      return true;
    });
    std::fputs("\n", stdout);
    std::fflush(stdout);
    total_tokens += r.tokens.size();
    total_seconds += r.seconds;
    std::fprintf(stderr, "[%zu tokens, %.2f tokens/s; prompt: %lld tokens run, %lld from the cache; stop: %s]\n",
                 r.tokens.size(), r.tokens_per_second(), (long long)chat.prefilled_tokens(),
                 (long long)chat.reused_tokens(), stop_reason_name(r.reason));
  }
  std::fprintf(stderr, "[chat: %zu tokens generated in %.2f s: %.2f tokens/s]\n", total_tokens, total_seconds,
               total_seconds > 0 ? double(total_tokens) / total_seconds : 0.0);
  return 0;
}

}  // namespace dsv4::cli
