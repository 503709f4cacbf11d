#pragma once
// Continuous batching of independent generation requests over one Model, for servers.
//
// submit() queues a request and returns a handle; one worker thread owns the model and, every
// step, admits queued requests (up to max_batch at once), runs all active sequences together in
// one forward pass (Session::run_batch: the row-wise work of every sequence shares each weight
// read; long prompts enter a chunk per step so decoding requests keep moving), samples each
// sequence's next token with its own sampler and streams its text to the handle. Sequences never
// share state; in KernelMode::Reference a request's output is exactly what a Session of its own
// would produce, in Fast mode batched rows may round differently (see the README's numerics).
//
//   dsv4::BatchEngine engine(model, tokenizer);
//   auto h = engine.submit({prompt_ids, sampling, options});
//   for (dsv4::GenerationEvent ev; h->next(ev);) std::cout << ev.text;
#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "dsv4/generation/session.hpp"

namespace dsv4 {

struct GenerationRequest {
  std::vector<int32_t> prompt;  // token ids, at least one
  SamplingParams sampling;
  GenerationOptions options;
};

// One piece of a request's output: text as it is released, then a final event with done = true.
struct GenerationEvent {
  std::string text;
  bool done = false;
  StopReason reason = StopReason::MaxTokens;  // when done
  std::string error;                          // when done by failure (then reason is meaningless)
  int64_t prompt_tokens = 0, completion_tokens = 0;
};

// The caller's end of a request: read events, or cancel (a client that went away).
class RequestHandle {
 public:
  // Waits for the next event; false once the final event has been read or the wait timed out.
  bool next(GenerationEvent& ev, std::chrono::milliseconds timeout = std::chrono::hours(1)) {
    std::unique_lock lock(mu_);
    if (finished_read_) return false;
    if (!cv_.wait_for(lock, timeout, [&] { return !events_.empty(); })) return false;
    ev = std::move(events_.front());
    events_.pop_front();
    if (ev.done) finished_read_ = true;
    return true;
  }
  // Stops the request at its next step; it then ends with reason Callback.
  void cancel() {
    std::lock_guard lock(mu_);
    cancelled_ = true;
  }
  bool cancelled() const {
    std::lock_guard lock(mu_);
    return cancelled_;
  }

 private:
  friend class BatchEngine;
  void push(GenerationEvent ev) {
    {
      std::lock_guard lock(mu_);
      events_.push_back(std::move(ev));
    }
    cv_.notify_all();
  }
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<GenerationEvent> events_;
  bool cancelled_ = false, finished_read_ = false;
};

// submit() when the engine cannot take more work now (queue full, shutting down): retry later.
class EngineBusy : public Error {
 public:
  using Error::Error;
};

struct BatchEngineOptions {
  int max_batch = 8;             // sequences decoded together
  size_t max_queue = 64;         // requests waiting beyond max_batch; submit() refuses more
  int64_t prefill_chunk = 256;   // prompt tokens a sequence enters per step
  KernelMode mode = KernelMode::Fast;
  CacheType cache_type = CacheType::F32;  // how each sequence's cache stores its values (model/cache_type.hpp)
};

class BatchEngine {
 public:
  // The tokenizer is copied (it shares its tables); the model must outlive the engine.
  BatchEngine(const Model& model, text::Tokenizer tokenizer, BatchEngineOptions opts = {})
      : model_(model), tokenizer_(std::move(tokenizer)), opts_(opts) {
    if (opts_.max_batch < 1 || opts_.prefill_chunk < 1) fail("BatchEngine: max_batch and prefill_chunk must be >= 1");
    worker_ = std::thread([this] { loop(); });
  }
  BatchEngine(const BatchEngine&) = delete;
  BatchEngine& operator=(const BatchEngine&) = delete;
  ~BatchEngine() { stop(); }

  // Queues a request. Throws dsv4::Error for a request that cannot run (empty prompt, token ids
  // outside the vocabulary, bad sampling parameters), EngineBusy when the queue is full.
  std::shared_ptr<RequestHandle> submit(GenerationRequest req) {
    if (req.prompt.empty()) fail("request: the prompt has no tokens");
    for (int32_t t : req.prompt)
      if (t < 0 || t >= model_.config().vocab_size) fail("request: token id ", t, " is outside the vocabulary");
    if (req.options.max_new_tokens < 1) fail("request: max_new_tokens must be >= 1");
    req.sampling.validate();
    auto h = std::make_shared<RequestHandle>();
    {
      std::lock_guard lock(mu_);
      if (stopping_) throw EngineBusy("request: the engine is shutting down");
      if (queue_.size() >= opts_.max_queue)
        throw EngineBusy(cat("request: the queue is full (", opts_.max_queue, " waiting)"));
      queue_.push_back({std::move(req), h});
    }
    cv_.notify_all();
    return h;
  }

  // Ends every request (active and queued) with an error event and stops the worker.
  void stop() {
    {
      std::lock_guard lock(mu_);
      if (stopping_ && !worker_.joinable()) return;
      stopping_ = true;
    }
    cv_.notify_all();
    if (worker_.joinable()) worker_.join();
  }

  // Requests waiting for a slot / being decoded (for /health and tests).
  size_t queued() const {
    std::lock_guard lock(mu_);
    return queue_.size();
  }
  size_t active() const {
    std::lock_guard lock(mu_);
    return active_count_;
  }

 private:
  struct Pending {
    GenerationRequest req;
    std::shared_ptr<RequestHandle> handle;
  };
  // One sequence being generated.
  struct Slot {
    Slot(const Model& m, const text::Tokenizer& tok, KernelMode mode, CacheType cache, Pending p)
        : req(std::move(p.req)), handle(std::move(p.handle)), session(m, tok, mode, cache), sampler(req.sampling),
          out(m, &tok, req.options) {
      sampler.set_context(req.prompt);
    }
    GenerationRequest req;
    std::shared_ptr<RequestHandle> handle;
    Session session;
    Sampler sampler;
    OutputStream out;
    size_t prompt_fed = 0;  // prompt tokens appended to the session so far
    int64_t generated = 0;
    bool done = false;
  };

  void finish(Slot& s, StopReason reason, std::string text = {}) {
    GenerationEvent ev;
    ev.text = std::move(text);
    ev.done = true;
    ev.reason = reason;
    ev.prompt_tokens = int64_t(s.req.prompt.size());
    ev.completion_tokens = s.generated;
    s.handle->push(std::move(ev));
    s.done = true;
  }
  void fail_slot(Slot& s, const std::string& error) {
    GenerationEvent ev;
    ev.done = true;
    ev.error = error;
    ev.prompt_tokens = int64_t(s.req.prompt.size());
    ev.completion_tokens = s.generated;
    s.handle->push(std::move(ev));
    s.done = true;
  }

  // After a sampled token: its text, and the end of the request as Session::generate ends it (on a
  // stop token or the budget, held text is released; on a stop string, nothing after it).
  void after_token(Slot& s, int32_t t) {
    ++s.generated;
    OutputStream::Piece piece = s.out.push(t);
    if (piece.reason == StopReason::StopString) return finish(s, StopReason::StopString, std::move(piece.text));
    if (piece.reason == StopReason::StopToken || s.generated >= s.req.options.max_new_tokens) {
      OutputStream::Piece tail = s.out.finish();
      const StopReason why = tail.reason == StopReason::StopString ? StopReason::StopString : piece.reason;
      return finish(s, why, piece.text + tail.text);
    }
    if (!piece.text.empty()) {
      GenerationEvent ev;
      ev.text = std::move(piece.text);
      s.handle->push(std::move(ev));
    }
  }

  void loop() {
    std::vector<std::unique_ptr<Slot>> slots;
    for (;;) {
      {
        std::unique_lock lock(mu_);
        cv_.wait(lock, [&] { return stopping_ || !queue_.empty() || !slots.empty(); });
        if (stopping_) {
          for (auto& s : slots) fail_slot(*s, "the server is shutting down");
          for (auto& p : queue_) {
            GenerationEvent ev;
            ev.done = true;
            ev.error = "the server is shutting down";
            p.handle->push(std::move(ev));
          }
          queue_.clear();
          active_count_ = 0;
          return;
        }
        while (int(slots.size()) < opts_.max_batch && !queue_.empty()) {
          Pending p = std::move(queue_.front());
          queue_.pop_front();
          slots.push_back(std::make_unique<Slot>(model_, tokenizer_, opts_.mode, opts_.cache_type, std::move(p)));
        }
        active_count_ = slots.size();
      }
      // Cancelled requests leave before the step; prompts enter a chunk at a time.
      for (auto& s : slots) {
        if (s->handle->cancelled()) {
          finish(*s, StopReason::Callback);
          continue;
        }
        if (s->prompt_fed < s->req.prompt.size()) {
          const size_t n = std::min(s->req.prompt.size() - s->prompt_fed, size_t(opts_.prefill_chunk));
          s->session.append(std::span<const int32_t>(s->req.prompt).subspan(s->prompt_fed, n));
          s->prompt_fed += n;
        }
      }
      std::vector<Session*> batch;
      for (auto& s : slots)
        if (!s->done) batch.push_back(&s->session);
      try {
        Session::run_batch(batch);
      } catch (const std::exception& e) {
        for (auto& s : slots)
          if (!s->done) fail_slot(*s, e.what());
      }
      for (auto& s : slots) {
        if (s->done || s->prompt_fed < s->req.prompt.size()) continue;
        try {
          after_token(*s, s->session.step(s->sampler));
        } catch (const std::exception& e) {
          fail_slot(*s, e.what());
        }
      }
      std::erase_if(slots, [](const std::unique_ptr<Slot>& s) { return s->done; });
      std::lock_guard lock(mu_);
      active_count_ = slots.size();
    }
  }

  const Model& model_;
  text::Tokenizer tokenizer_;
  BatchEngineOptions opts_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Pending> queue_;
  size_t active_count_ = 0;
  bool stopping_ = false;
  std::thread worker_;
};

}  // namespace dsv4
