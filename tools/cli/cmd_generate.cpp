// dsv4 generate: continue a prompt.
//   --prompt-ids 5,17,42   prints the new token ids on one line (the EOS included when reached)
//   --prompt "text"        streams the new text as it is generated; timing on stderr
#include <chrono>
#include <climits>
#include <cstdio>

#include "common.hpp"
#include "text_options.hpp"

namespace dsv4::cli {

#if defined(DSV4_WITH_CUDA)
// The GPU's generation loop: prefill, then sample and run one token at a time; text and stops as
// Session::generate releases them (OutputStream). Prints the timing line itself. Plain greedy
// sampling (no penalties) takes the argmax on the device (DeviceModel::forward_greedy): only the
// token ids come back, not the logits.
static GenerationResult generate_cuda(const Model& m, KernelMode mode, const text::Tokenizer* tok,
                                      const std::vector<int32_t>& prompt, Sampler& sampler, const SamplingParams& sp,
                                      const GenerationOptions& g, const StreamCallback& emit) {
  cuda::DeviceOptions o = device_options(mode);
  o.max_context = int64_t(prompt.size()) + g.max_new_tokens + 1;
  cuda::DeviceModel gm(m, o);
  cuda::DeviceCache cache = gm.new_cache();
  OutputStream out(m, tok, g);
  sampler.set_context(prompt);
  std::vector<float> logits;
  GenerationResult r;
  auto t0 = std::chrono::steady_clock::now();
  // (A tokenizer with fewer ids than the head's rows restricts the choice: the host's path then.)
  const bool device_greedy = sp.is_greedy() && standard_chain(sp).empty() &&
                             (!tok || int64_t(tok->vocab_size()) >= m.config().vocab_size);
  std::vector<int32_t> ids;
  cuda::DeviceSequenceInput in{&cache, prompt};
  if (device_greedy) gm.forward_greedy({&in, 1}, ids);
  else gm.forward({&in, 1}, logits, LogitRows::Last);
  const double prefill_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  t0 = std::chrono::steady_clock::now();
  std::span<const float> row = logits;
  bool ended = false;
  std::vector<int32_t> one(1);
  for (int64_t i = 0; i < g.max_new_tokens; ++i) {
    if (i > 0) {
      in.tokens = one;
      if (device_greedy) gm.forward_greedy({&in, 1}, ids);
      else gm.forward({&in, 1}, logits, LogitRows::Last), row = logits;
    }
    if (device_greedy) {
      one[0] = ids[0];
      sampler.accept(one[0]);
    } else {
      if (tok && size_t(tok->vocab_size()) < row.size()) row = row.first(size_t(tok->vocab_size()));
      one[0] = sampler.next(row);
    }
    r.tokens.push_back(one[0]);
    OutputStream::Piece piece = out.push(one[0]);
    if (piece.reason == StopReason::StopToken) {
      r.reason = StopReason::StopToken;
      break;
    }
    r.text += piece.text;
    if (emit) emit(one[0], piece.text);
    if (piece.reason == StopReason::StopString) {
      r.reason = StopReason::StopString, ended = true;
      break;
    }
  }
  if (!ended) {
    OutputStream::Piece tail = out.finish();
    if (tail.reason == StopReason::StopString) r.reason = StopReason::StopString;
    r.text += tail.text;
    if (emit && !tail.text.empty()) emit(kNoToken, tail.text);
  }
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::fprintf(stderr, "[%s: prompt %zu tokens in %.3f s; generated %zu tokens in %.3f s (%.1f tokens/s)]\n",
               gm.device_name().c_str(), prompt.size(), prefill_s, r.tokens.size(), r.seconds, r.tokens_per_second());
  return r;
}
#endif

int cmd_generate(const Args& a) {
  apply_threads(a);
  const bool gpu = cuda_backend(a);
  if (a.has("prompt") == a.has("prompt-ids")) fail("give --prompt TEXT or --prompt-ids IDS (one of them)");
  const SamplingParams sp = sampling_params(a);
  const KernelMode mode = kernel_mode(a);
  const CacheType type = cache_type(a);
  if (gpu && (type != CacheType::F32 || a.has("save-cache") || a.has("load-cache")))
    fail("--cache-type, --save-cache and --load-cache are for the CPU backend (the CUDA backend keeps an f32 device cache)");
  // --load-cache FILE: continue the saved session (the prompt follows what it holds);
  // --save-cache FILE: write the session after generating (its cache, tokens and last logits).
  auto open_session = [&](Session& s) {
    if (a.has("load-cache")) s.restore(a.get("load-cache"));
  };
  auto close_session = [&](Session& s) {
    if (a.has("save-cache")) s.save(a.get("save-cache"));
  };

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
#if defined(DSV4_WITH_CUDA)
    if (gpu) {
      const GenerationResult r = generate_cuda(m, mode, nullptr, prompt, sampler, sp, g, {});
      for (size_t i = 0; i < r.tokens.size(); ++i) std::printf("%s%d", i ? " " : "", r.tokens[i]);
      std::printf("\n");
      return 0;
    }
#endif
    Session s(m, mode, type);
    open_session(s);
    s.prefill(prompt);
    const GenerationResult r = s.generate(sampler, g);
    close_session(s);
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
#if defined(DSV4_WITH_CUDA)
  if (gpu) {
    generate_cuda(m, mode, &tok, prompt, sampler, sp, g, [](int32_t, std::string_view text) {
      std::fwrite(text.data(), 1, text.size(), stdout);
      std::fflush(stdout);
      return true;
    });
    std::printf("\n");
    return 0;
  }
#endif
  (void)gpu;
  Session s(m, tok, mode, type);
  open_session(s);
  s.prefill(prompt);
  const GenerationResult r = s.generate(sampler, g, [](int32_t, std::string_view text) {
    std::fwrite(text.data(), 1, text.size(), stdout);
    std::fflush(stdout);
    return true;
  });
  close_session(s);
  std::printf("\n");
  std::fflush(stdout);
  std::fprintf(stderr, "[prompt %lld tokens in %.2f s (%.1f tokens/s); generated %zu tokens in %.2f s (%.2f tokens/s); stop: %s]\n",
               (long long)s.last_prefill_tokens(), s.last_prefill_seconds(),
               s.last_prefill_seconds() > 0 ? double(s.last_prefill_tokens()) / s.last_prefill_seconds() : 0.0,
               r.tokens.size(), r.seconds, r.tokens_per_second(), stop_reason_name(r.reason));
  return 0;
}

}  // namespace dsv4::cli
