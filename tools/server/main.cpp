// dsv4-server: an OpenAI-compatible HTTP server over one model.
//   dsv4-server --model DIR [--tokenizer DIR] [--host 127.0.0.1] [--port 8000 (0: any free port)]
//               [--model-name NAME] [--max-batch 8] [--max-queue 64] [--max-tokens 256]
//               [--mode fast|reference] [--threads N] [--cache-type f32|bf16|compact]
// Endpoints: POST /v1/chat/completions, POST /v1/completions (both with "stream": true as
// server-sent events), GET /v1/models, GET /health. Requests are decoded together by a
// BatchEngine; HTTP is cpp-httplib, JSON nlohmann-json. Prints "listening on http://HOST:PORT"
// on stdout once it accepts connections; SIGINT/SIGTERM stop it cleanly.
#include <httplib.h>
#include <pthread.h>
#include <signal.h>

#include <atomic>
#include <cstdio>
#include <filesystem>
#include <string>
#include <thread>

#include "../cli/common.hpp"
#include "../cli/text_options.hpp"
#include "openai.hpp"

namespace {

using namespace dsv4;
using namespace dsv4::server;

constexpr size_t kMaxBody = size_t(8) << 20;  // 8 MiB of JSON per request

void send_json(httplib::Response& res, int status, const json& body) {
  res.status = status;
  res.set_content(body.dump(-1, ' ', false, json::error_handler_t::replace), "application/json");
}

int64_t unix_time() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

struct Server {
  BatchEngine& engine;
  const text::Tokenizer& tok;
  ServerLimits limits;
  std::atomic<uint64_t> next_id{1};

  void log(const char* fmt, auto... args) {
    std::fprintf(stderr, fmt, args...);
    std::fflush(stderr);
  }

  void handle(Endpoint endpoint, const httplib::Request& req, httplib::Response& res) {
    ApiRequest r;
    try {
      r = parse_request(endpoint, req.body, tok, limits);
    } catch (const ApiError& e) {
      log("dsv4-server: %s %d %s\n", req.path.c_str(), e.status, e.message.c_str());
      return send_json(res, e.status, error_body(e));
    }
    std::shared_ptr<RequestHandle> h;
    try {
      h = engine.submit(r.generation);
    } catch (const EngineBusy& e) {
      return send_json(res, 503, error_body({503, e.what(), "server_error", {}, "overloaded"}));
    } catch (const Error& e) {
      return send_json(res, 400, error_body({400, e.what(), "invalid_request_error", {}, {}}));
    }
    const std::string id = cat(endpoint == Endpoint::ChatCompletions ? "chatcmpl-" : "cmpl-", next_id++);
    const int64_t created = unix_time();
    const auto t0 = std::chrono::steady_clock::now();
    auto done_log = [this, id, t0, path = req.path](const GenerationEvent& ev, const char* how) {
      const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      log("dsv4-server: %s %s: %lld prompt + %lld completion tokens in %.3f s, %s%s%s\n", path.c_str(), id.c_str(),
          (long long)ev.prompt_tokens, (long long)ev.completion_tokens, s, how, ev.error.empty() ? "" : ": ",
          ev.error.c_str());
    };

    if (!r.stream) {
      std::string text;
      GenerationEvent ev;
      while (h->next(ev)) {
        text += ev.text;
        if (ev.done) break;
      }
      if (!ev.done) {
        h->cancel();
        return send_json(res, 500, error_body({500, "generation did not finish", "server_error", {}, {}}));
      }
      done_log(ev, finish_reason(ev));
      if (!ev.error.empty()) return send_json(res, 500, error_body({500, ev.error, "server_error", {}, {}}));
      return send_json(res, 200, full_reply(r, id, created, text, ev));
    }

    // Streamed: one event per released piece of text, then the final chunk, usage, [DONE]. A
    // write that fails (the client went away) cancels the request; the engine drops it.
    auto first = std::make_shared<bool>(true);
    res.set_header("Cache-Control", "no-cache");
    res.set_chunked_content_provider(
        "text/event-stream",
        [this, h, r, id, created, first, done_log](size_t, httplib::DataSink& sink) {
          GenerationEvent ev;
          if (!h->next(ev, std::chrono::milliseconds(200))) {
            if (!sink.is_writable()) {
              log("dsv4-server: %s: client disconnected; generation cancelled\n", id.c_str());
              h->cancel();
              return false;
            }
            return true;  // nothing yet: httplib calls again
          }
          auto write = [&](const std::string& s) { return sink.write(s.data(), s.size()); };
          if (!ev.error.empty()) {
            done_log(ev, "failed");
            write("data: " + error_body({500, ev.error, "server_error", {}, {}}).dump() + "\n\n");
            sink.done();
            return true;
          }
          bool ok = true;
          if (!ev.text.empty() || (*first && !ev.done)) ok = write(stream_chunk(r, id, created, &ev.text, nullptr, *first));
          else if (*first) ok = write(stream_chunk(r, id, created, nullptr, nullptr, true));
          *first = false;
          if (ok && ev.done) {
            ok = write(stream_chunk(r, id, created, nullptr, &ev, false));
            if (ok && r.include_usage) ok = write(stream_chunk(r, id, created, nullptr, nullptr, false, &ev));
            if (ok) ok = write("data: [DONE]\n\n");
            done_log(ev, ok ? finish_reason(ev) : "client disconnected before the end");
            if (ok) sink.done();
            return ok;
          }
          if (!ok) {
            log("dsv4-server: %s: client disconnected; generation cancelled\n", id.c_str());
            h->cancel();
          }
          return ok;
        },
        [this, h, id](bool success) {
          if (success || h->cancelled()) return;
          log("dsv4-server: %s: client disconnected; generation cancelled\n", id.c_str());
          h->cancel();
        });
  }
};

int run(int argc, char** argv) {
  using dsv4::cli::Args;
  const Args a(argc, argv, 1,
               {"model", "tokenizer", "host", "port", "model-name", "max-batch", "max-queue", "max-tokens", "mode",
                "threads", "cache-type"},
               {});
  dsv4::cli::apply_threads(a);
  const std::string host = a.get("host", "127.0.0.1");
  const int64_t port = dsv4::cli::parse_int(a.get("port", "8000"), "--port");
  if (port < 0 || port > 65535) fail("--port: must be in [0, 65535]");
  BatchEngineOptions eo;
  eo.max_batch = int(dsv4::cli::parse_int(a.get("max-batch", "8"), "--max-batch"));
  eo.max_queue = size_t(dsv4::cli::parse_int(a.get("max-queue", "64"), "--max-queue"));
  eo.mode = parse_kernel_mode(a.get("mode", "fast"));
  eo.cache_type = dsv4::cli::cache_type(a);
  if (eo.max_batch < 1 || eo.max_batch > 256) fail("--max-batch: must be in [1, 256]");

  const Model model = Model::load(a.get("model"));
  const text::Tokenizer tok = dsv4::cli::load_tokenizer(a);
  ServerLimits limits;
  limits.model_name = a.get("model-name", std::filesystem::path(a.get("model")).lexically_normal().filename().string());
  if (limits.model_name.empty() || limits.model_name == ".")
    limits.model_name = std::filesystem::absolute(a.get("model")).lexically_normal().parent_path().filename().string();
  // The context a request may fill: config.json's max_position_embeddings (1M tokens if it says nothing).
  limits.context = model.config().max_position_embeddings > 0 ? model.config().max_position_embeddings : int64_t(1) << 20;
  limits.default_max_tokens = dsv4::cli::parse_int(a.get("max-tokens", "256"), "--max-tokens");
  limits.arch = model.config().arch;
  limits.vocab = model.config().vocab_size;
  if (limits.default_max_tokens < 1) fail("--max-tokens: must be >= 1");

  BatchEngine engine(model, tok, eo);
  Server server{engine, tok, limits};
  httplib::Server http;
  http.new_task_queue = [n = eo.max_batch + int(eo.max_queue) + 4] { return new httplib::ThreadPool(size_t(n)); };
  http.set_payload_max_length(kMaxBody);
  http.set_read_timeout(30, 0);
  http.set_write_timeout(30, 0);

  http.Get("/health", [&](const httplib::Request&, httplib::Response& res) {
    send_json(res, 200, {{"status", "ok"}, {"active", engine.active()}, {"queued", engine.queued()}});
  });
  http.Get("/v1/models", [&](const httplib::Request&, httplib::Response& res) {
    send_json(res, 200,
              {{"object", "list"},
               {"data", json::array({{{"id", limits.model_name}, {"object", "model"}, {"created", 0},
                                      {"owned_by", "dsv4"}, {"context_length", limits.context}}})}});
  });
  http.Post("/v1/completions", [&](const httplib::Request& req, httplib::Response& res) {
    server.handle(Endpoint::Completions, req, res);
  });
  http.Post("/v1/chat/completions", [&](const httplib::Request& req, httplib::Response& res) {
    server.handle(Endpoint::ChatCompletions, req, res);
  });
  // Unknown routes, bodies over the limit and anything else httplib refuses: an OpenAI error body.
  http.set_error_handler([](const httplib::Request& req, httplib::Response& res) {
    if (!res.body.empty()) return;
    const std::string msg = res.status == 404   ? cat("no route ", req.method, " ", req.path)
                            : res.status == 413 ? cat("the request body is larger than ", kMaxBody, " bytes")
                                                : cat("HTTP ", res.status);
    send_json(res, res.status, error_body({res.status, msg, "invalid_request_error", {}, {}}));
  });
  http.set_exception_handler([](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
    std::string msg = "internal error";
    try {
      std::rethrow_exception(ep);
    } catch (const std::exception& e) {
      msg = e.what();
    } catch (...) {
    }
    send_json(res, 500, error_body({500, msg, "server_error", {}, {}}));
  });

  const int bound = port == 0 ? http.bind_to_any_port(host) : (http.bind_to_port(host, int(port)) ? int(port) : -1);
  if (bound < 0) fail("cannot listen on ", host, ":", port);
  // SIGINT/SIGTERM: a thread waits for them (the other threads have them blocked) and stops the server.
  sigset_t sigs;
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGINT);
  sigaddset(&sigs, SIGTERM);
  std::thread signals([&] {
    int sig = 0;
    sigwait(&sigs, &sig);
    http.stop();
  });
  std::printf("dsv4-server: listening on http://%s:%d (model %s, %s mode, batch %d)\n", host.c_str(), bound,
              limits.model_name.c_str(), kernel_mode_name(eo.mode), eo.max_batch);
  std::fflush(stdout);
  const bool ok = http.listen_after_bind();
  engine.stop();
  pthread_kill(signals.native_handle(), SIGTERM);  // if no signal came, end the waiting thread
  signals.join();
  std::fprintf(stderr, "dsv4-server: stopped\n");
  return ok ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  // Block the stop signals in every thread; one thread takes them with sigwait.
  sigset_t sigs;
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGINT);
  sigaddset(&sigs, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &sigs, nullptr);
  signal(SIGPIPE, SIG_IGN);  // a client that went away must not kill the server
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "dsv4-server: %s\n", e.what());
    return 1;
  }
}
