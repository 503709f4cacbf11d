// dsv4 generate: continue a prompt.
//   --prompt-ids 5,17,42   prints the new token ids on one line (the EOS included when reached)
//   --prompt "text"        streams the new text as it is generated; timing on stderr
#include <climits>
#include <cstdio>

#include "common.hpp"
#include "text_options.hpp"

namespace dsv4::cli {

int cmd_generate(const Args& a) {
  apply_threads(a);
  if (a.has("prompt") == a.has("prompt-ids")) fail("give --prompt TEXT or --prompt-ids IDS (one of them)");
  const SamplingParams sp = sampling_params(a);
  const KernelMode mode = kernel_mode(a);

  if (a.has("prompt-ids")) {
    if (a.has("stop")) fail("--stop needs --prompt (text); with --prompt-ids there is no tokenizer");
    if (!a.has("max-new-tokens")) fail("missing option --max-new-tokens");
    std::vector<int32_t> prompt;
    for (int64_t v : parse_int_list(a.get("prompt-ids"), "--prompt-ids")) {
      if (v < INT32_MIN || v > INT32_MAX) fail("--prompt-ids: ", v, " is out of range");
      prompt.push_back(int32_t(v));
    }
    const GenerationOptions g = generation_options(a, 0);
    Sampler sampler(sp);
    const Model m = load_model(a);
    Session s(m, mode);
    s.prefill(prompt);
    const GenerationResult r = s.generate(sampler, g);
    for (size_t i = 0; i < r.tokens.size(); ++i) std::printf("%s%d", i ? " " : "", r.tokens[i]);
    std::printf("\n");
    return 0;
  }

  const text::Tokenizer tok = load_tokenizer(a);
  text::utf8::require_valid(a.get("prompt"), "--prompt");
  const std::vector<int32_t> prompt = tok.encode(a.get("prompt"), /*add_special_tokens_like_bos=*/true);
  if (prompt.empty()) fail("--prompt: the prompt is empty (and the tokenizer adds no BOS)");
  const GenerationOptions g = generation_options(a, 256);
  Sampler sampler(sp);
  preload_checkpoint(a.get("model"));
  const Model m = load_model(a);
  Session s(m, tok, mode);
  s.prefill(prompt);
  const GenerationResult r = s.generate(sampler, g, [](int32_t, std::string_view text) {
    std::fwrite(text.data(), 1, text.size(), stdout);
    std::fflush(stdout);
    return true;
  });
  std::printf("\n");
  std::fflush(stdout);
  std::fprintf(stderr, "[prompt %lld tokens in %.2f s (%.1f tokens/s); generated %zu tokens in %.2f s (%.2f tokens/s); stop: %s]\n",
               (long long)s.last_prefill_tokens(), s.last_prefill_seconds(),
               s.last_prefill_seconds() > 0 ? double(s.last_prefill_tokens()) / s.last_prefill_seconds() : 0.0,
               r.tokens.size(), r.seconds, r.tokens_per_second(), stop_reason_name(r.reason));
  return 0;
}

}  // namespace dsv4::cli
