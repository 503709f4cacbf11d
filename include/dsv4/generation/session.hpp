#pragma once
// A generation session: one sequence over a loaded Model (its own SequenceCache), with prefill,
// step and generate-with-callback. Any number of sessions can share one const Model; each holds
// only its cache, its tokens and its last logits row. Sessions are copyable: a copy is a fork
// that continues independently from the same point.
//
//   dsv4::Session s(model, tokenizer);                 // KernelMode::Fast by default
//   s.prefill(tokenizer.encode("Once upon a time", true));
//   dsv4::SamplingParams p;
//   p.greedy = false, p.temperature = 0.7f, p.top_p = 0.9f, p.seed = 1;
//   dsv4::Sampler sampler(p);
//   dsv4::GenerationOptions g;
//   g.max_new_tokens = 64;
//   auto r = s.generate(sampler, g, [](int32_t, std::string_view text) {
//     std::cout << text << std::flush;
//     return true;                                    // false stops generation
//   });
//
// The token sampled last is not run through the model until the sequence continues (next step,
// prefill or run()): a generation that stops on EOS costs no forward pass for the EOS.
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "dsv4/core/error.hpp"
#include "dsv4/generation/output_stream.hpp"
#include "dsv4/io/cache_file.hpp"
#include "dsv4/kernels/bundle.hpp"
#include "dsv4/kernels/cpu/fast_bundle.hpp"
#include "dsv4/kernels/kernel_mode.hpp"
#include "dsv4/model/model.hpp"
#include "dsv4/sampling/sampler.hpp"
#include "dsv4/text/tokenizer.hpp"

namespace dsv4 {

struct GenerationResult {
  std::vector<int32_t> tokens;  // every sampled token, a final stop token included
  std::string text;             // all text passed to the callback
  StopReason reason = StopReason::MaxTokens;
  std::string stop_string;      // the stop string found (reason StopString)
  double seconds = 0;           // wall time of the generation loop (forward passes + sampling)
  double tokens_per_second() const { return seconds > 0 ? double(tokens.size()) / seconds : 0.0; }
};

// Called once per sampled token (not for a stop token) with the text it releases, which may be
// empty (an unfinished UTF-8 character, text held back as a possible stop string start). Once
// more at the end with token kNoToken when held text is released. Return false to stop.
using StreamCallback = std::function<bool(int32_t token, std::string_view text)>;
inline constexpr int32_t kNoToken = -1;

// A session runs KernelMode::Fast as Model::forward<FastCpu>, Reference as forward<Fp32Reference>.
class Session {
 public:
  explicit Session(const Model& model, KernelMode mode = KernelMode::Fast, CacheType cache = CacheType::F32)
      : model_(&model), mode_(mode), cache_(model.new_cache(cache)) {}
  Session(const Model& model, text::Tokenizer tokenizer, KernelMode mode = KernelMode::Fast,
          CacheType cache = CacheType::F32)
      : model_(&model), mode_(mode), cache_(model.new_cache(cache)), tokenizer_(std::move(tokenizer)) {}

  const Model& model() const { return *model_; }
  KernelMode mode() const { return mode_; }
  CacheType cache_type() const { return cache_.cache_type(); }
  const SequenceCache& cache() const { return cache_; }

  // Long inputs run through the model at most this many tokens per forward pass, so the working
  // memory of a prefill depends on the chunk, not on the prompt's length (default 1024).
  void set_prefill_chunk(int64_t tokens) {
    if (tokens < 1) fail("session: the prefill chunk must be at least 1 token, not ", tokens);
    prefill_chunk_ = tokens;
  }
  int64_t prefill_chunk() const { return prefill_chunk_; }

  // Writes the session (cache, tokens, last logits) to `path`; restore() continues from it, in this
  // process or another one that loaded the same checkpoint. Pending tokens are run first.
  void save(const std::filesystem::path& path) {
    run();
    save_cache_file(*model_, cache_, {tokens_, logits_}, path);
  }
  // Replaces this session's state with the one saved in `path` (its cache type included). A file
  // of another model, or a damaged one, is refused and the session is left as it was.
  void restore(const std::filesystem::path& path) {
    CacheFileExtras extras;
    SequenceCache c = load_cache_file(*model_, path, &extras);
    cache_ = std::move(c);
    tokens_ = std::move(extras.tokens);
    logits_ = std::move(extras.logits);
  }
  bool has_tokenizer() const { return tokenizer_.has_value(); }
  const text::Tokenizer& tokenizer() const {
    if (!tokenizer_) fail("session: no tokenizer (construct the Session with one)");
    return *tokenizer_;
  }

  // The whole sequence: everything prefilled and sampled, including tokens not yet run.
  const std::vector<int32_t>& tokens() const { return tokens_; }
  // Tokens the model has run (the cache position).
  int64_t position() const { return cache_.position(); }
  size_t pending() const { return tokens_.size() - size_t(cache_.position()); }

  // Appends tokens without running them (run(), prefill(), step() or run_batch() will).
  void append(std::span<const int32_t> tokens) { tokens_.insert(tokens_.end(), tokens.begin(), tokens.end()); }

  // Runs every pending token through the model in one forward pass; logits() is then the
  // next-token row. On a bad token id nothing changes but the pending tokens are dropped.
  void run() {
    if (pending() == 0) return;
    Session* self = this;
    run_batch({&self, 1});
  }

  // append() + run(): the prompt, or any continuation of the sequence.
  void prefill(std::span<const int32_t> tokens) {
    const auto t0 = std::chrono::steady_clock::now();
    append(tokens);
    const size_t n = pending();
    run();
    last_prefill_tokens_ = int64_t(n);
    last_prefill_seconds_ = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  }
  // Encodes `text` with the tokenizer (BOS as tokenizer_config.json says when add_bos) and prefills.
  void prefill_text(std::string_view text, bool add_bos) { prefill(tokenizer().encode(text, add_bos)); }

  int64_t last_prefill_tokens() const { return last_prefill_tokens_; }
  double last_prefill_seconds() const { return last_prefill_seconds_; }

  // Next-token logits after the last token run ([vocab_size]); empty before the first run.
  std::span<const float> logits() const { return logits_; }

  // Runs pending tokens, samples the next one with `sampler` (which records it) and appends it
  // (pending). With a tokenizer, ids past its vocabulary are never chosen.
  int32_t step(Sampler& sampler) {
    run();
    if (logits_.empty()) fail("session: nothing to continue (prefill a prompt first)");
    const int32_t t = sampler.next(sampling_row());
    tokens_.push_back(t);
    return t;
  }

  // Samples up to opts.max_new_tokens tokens. The sampler's penalty context is set to the whole
  // sequence so far. Text (with a tokenizer) is detokenized as it comes and passed to `on_token`.
  GenerationResult generate(Sampler& sampler, const GenerationOptions& opts, const StreamCallback& on_token = {}) {
    GenerationResult r;
    OutputStream out(*model_, tokenizer_ ? &*tokenizer_ : nullptr, opts);
    sampler.set_context(tokens_);
    const auto t0 = std::chrono::steady_clock::now();
    auto emit = [&](int32_t token, const std::string& text) {
      r.text += text;
      return on_token ? on_token(token, text) : true;
    };
    bool ended = false;  // by a stop string or the callback: nothing held is released
    for (int64_t i = 0; i < opts.max_new_tokens; ++i) {
      const int32_t t = step(sampler);
      r.tokens.push_back(t);
      OutputStream::Piece piece = out.push(t);
      if (piece.reason == StopReason::StopToken) {
        r.reason = StopReason::StopToken;
        break;
      }
      if (!emit(t, piece.text)) {
        r.reason = StopReason::Callback;
        ended = true;
        break;
      }
      if (piece.reason == StopReason::StopString) {
        r.reason = StopReason::StopString;
        r.stop_string = out.stop_string();
        ended = true;
        break;
      }
    }
    if (!ended) {  // release what is held: an unfinished character, a partial stop string
      OutputStream::Piece tail = out.finish();
      if (tail.reason == StopReason::StopString) r.reason = StopReason::StopString, r.stop_string = out.stop_string();
      if (!tail.text.empty()) emit(kNoToken, tail.text);
    }
    r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    return r;
  }

  // Forgets the sequence: an empty cache, no tokens.
  void reset() {
    cache_ = model_->new_cache(cache_.cache_type());
    tokens_.clear();
    logits_.clear();
  }

  // Runs the pending tokens of several sessions (one model, one mode) in a single forward pass
  // (several when a session has more than its prefill chunk pending): row-wise work (projections,
  // experts) is shared, attention stays per sequence. The result is what each session's run()
  // would give. Sessions without pending tokens are left alone.
  static void run_batch(std::span<Session* const> sessions) {
    for (Session* s : sessions)
      if (s->pending() > 0 && (s->model_ != sessions[0]->model_ || s->mode_ != sessions[0]->mode_))
        fail("session: a batch must use one model and one kernel mode");
    // Every id is checked before the first chunk runs, so a bad one changes nothing.
    try {
      size_t b = 0;  // the sequence's place in the forward batch (sessions with pending tokens)
      for (Session* s : sessions)
        if (s->pending() > 0)
          s->model_->check_token_ids(std::span<const int32_t>(s->tokens_).subspan(size_t(s->cache_.position())), b++);
    } catch (...) {
      for (Session* t : sessions) t->tokens_.resize(size_t(t->cache_.position()));
      throw;
    }
    while (run_batch_once(sessions)) {
    }
  }

 private:
  // One forward pass over up to prefill_chunk() pending tokens of each session; false if none had any.
  static bool run_batch_once(std::span<Session* const> sessions) {
    std::vector<Session*> todo;
    std::vector<SequenceInput> batch;
    for (Session* s : sessions) {
      if (s->pending() == 0) continue;
      todo.push_back(s);
      const size_t n = std::min<size_t>(s->pending(), size_t(s->prefill_chunk_));
      batch.push_back({&s->cache_, std::span<const int32_t>(s->tokens_).subspan(size_t(s->cache_.position()), n)});
    }
    if (todo.empty()) return false;
    const Model& m = *todo[0]->model_;
    std::vector<float> logits;
    try {
      if (todo[0]->mode_ == KernelMode::Reference)
        m.forward<Fp32Reference>(batch, logits, LogitRows::Last);
      else
        m.forward<FastCpu>(batch, logits, LogitRows::Last);
    } catch (...) {  // bad input is rejected before any cache changes: drop what was pending
      for (Session* s : todo) s->tokens_.resize(size_t(s->cache_.position()));
      throw;
    }
    const size_t V = size_t(m.config().vocab_size);
    for (size_t b = 0; b < todo.size(); ++b)
      todo[b]->logits_.assign(logits.begin() + ptrdiff_t(b * V), logits.begin() + ptrdiff_t((b + 1) * V));
    return true;
  }

  // The logits the sampler sees: with a tokenizer, only ids it can decode.
  std::span<const float> sampling_row() const {
    std::span<const float> row = logits_;
    if (tokenizer_ && size_t(tokenizer_->vocab_size()) < row.size()) row = row.first(size_t(tokenizer_->vocab_size()));
    return row;
  }

  const Model* model_;
  KernelMode mode_;
  SequenceCache cache_;
  std::optional<text::Tokenizer> tokenizer_;
  std::vector<int32_t> tokens_;
  std::vector<float> logits_;
  int64_t prefill_chunk_ = 1024;
  int64_t last_prefill_tokens_ = 0;
  double last_prefill_seconds_ = 0;
};

}  // namespace dsv4
