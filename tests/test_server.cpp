// dsv4-server end to end: started on a loopback port with a small model (the tiny shapes with
// DeepSeek's vocabulary, random weights, the DeepSeek tokenizer), talked to with real HTTP clients
// (cpp-httplib's client and curl, the latter with the headers the OpenAI Python SDK sends).
// Every wait is bounded: the server start, each request, the shutdown.
#include <catch2/catch.hpp>
#include <httplib.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <future>
#include <thread>

#include <nlohmann/json.hpp>

#include "dsv4/dsv4.hpp"
#include "dsv4/io/synth.hpp"
#include "test_util.hpp"

using namespace dsv4;
using nlohmann::json;

namespace {

constexpr const char* kName = "dsv4-test";

// The model folder: tiny config with vocab 129280, random weights, tokenizer files.
struct ModelDir {
  dsv4::testing::TempDir dir;
  ModelDir() {
    json c = json::parse(read_text_file(std::string(DSV4_TEST_DATA) + "/tiny/orig/config.json"));
    c["vocab_size"] = 129280;
    SynthOptions opt;
    opt.seed = 5;
    write_synthetic_checkpoint(dir.path(), c.dump(1), opt);
    for (const char* f : {"tokenizer.json", "tokenizer_config.json"})
      std::filesystem::copy_file(std::filesystem::path(DSV4_TOKENIZER_DIR) / f, dir.path() / f);
  }
};

const ModelDir& model_dir() {
  static const ModelDir d;
  return d;
}

// The server process: started once, stopped with SIGTERM at exit (its exit code is checked). It
// runs the reference kernels, whose rows do not depend on what else is in the batch, so that
// concurrent requests must give exactly the tokens they give alone.
class ServerProcess {
 public:
  ServerProcess() {
    log_ = model_dir().dir.path() / "server.log";
    int out[2];
    REQUIRE(::pipe(out) == 0);
    pid_ = ::fork();
    REQUIRE(pid_ >= 0);
    if (pid_ == 0) {
      ::dup2(out[1], 1);
      std::FILE* err = std::freopen(log_.c_str(), "w", stderr);
      (void)err;
      ::close(out[0]);
      const std::string dir = model_dir().dir.path().string();
      ::execl(DSV4_SERVER, DSV4_SERVER, "--model", dir.c_str(), "--model-name", kName, "--port", "0", "--max-batch",
              "4", "--max-queue", "16", "--max-tokens", "24", "--threads", "1", "--mode", "reference", (char*)nullptr);
      std::_Exit(127);
    }
    ::close(out[1]);
    // Wait (at most 120 s) for "listening on http://127.0.0.1:PORT".
    std::string line;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
    while (line.find('\n') == std::string::npos && std::chrono::steady_clock::now() < deadline) {
      pollfd p{out[0], POLLIN, 0};
      if (::poll(&p, 1, 1000) <= 0) continue;
      char buf[256];
      const ssize_t n = ::read(out[0], buf, sizeof buf);
      if (n <= 0) break;
      line.append(buf, size_t(n));
    }
    ::close(out[0]);
    const size_t at = line.find("127.0.0.1:");
    INFO("server said: " << line << "\nlog: " << log());
    REQUIRE(at != std::string::npos);
    port_ = std::stoi(line.substr(at + 10));
  }
  ~ServerProcess() {
    ::kill(pid_, SIGTERM);
    int status = 0;
    for (int i = 0; i < 200 && ::waitpid(pid_, &status, WNOHANG) == 0; ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    if (::waitpid(pid_, &status, WNOHANG) == 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, &status, 0);
      std::fprintf(stderr, "test_server: the server did not stop within 20 s of SIGTERM\n");
      std::_Exit(1);
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
      std::fprintf(stderr, "test_server: the server ended with status %d\n", status);
      std::_Exit(1);
    }
  }
  int port() const { return port_; }
  std::string log() const {
    std::ifstream f(log_);
    return std::string(std::istreambuf_iterator<char>(f), {});
  }

 private:
  pid_t pid_ = -1;
  int port_ = 0;
  std::filesystem::path log_;
};

ServerProcess& server() {
  static ServerProcess s;
  return s;
}

httplib::Client client() {
  httplib::Client c("127.0.0.1", server().port());
  c.set_connection_timeout(10, 0);
  c.set_read_timeout(60, 0);
  c.set_write_timeout(60, 0);
  return c;
}

json post(const std::string& path, const json& body, int want_status = 200) {
  auto c = client();
  auto r = c.Post(path.c_str(), body.dump(), "application/json");
  REQUIRE(r);
  INFO(path << " " << body.dump() << " -> " << r->status << " " << r->body);
  REQUIRE(r->status == want_status);
  return json::parse(r->body);
}

// Server-sent events of a streamed reply: the JSON of each "data:" line; "[DONE]" must end it.
std::vector<json> sse(const std::string& raw) {
  std::vector<json> out;
  bool done = false;
  size_t start = 0;
  while (start < raw.size()) {
    size_t end = raw.find("\n\n", start);
    REQUIRE(end != std::string::npos);
    const std::string ev = raw.substr(start, end - start);
    REQUIRE(ev.rfind("data: ", 0) == 0);
    REQUIRE_FALSE(done);
    if (ev == "data: [DONE]") done = true;
    else out.push_back(json::parse(ev.substr(6)));
    start = end + 2;
  }
  REQUIRE(done);
  return out;
}

std::string streamed_text(const std::vector<json>& events, bool chat) {
  std::string text;
  for (const json& e : events)
    for (const json& c : e["choices"]) {
      if (chat && c["delta"].contains("content")) text += c["delta"]["content"].get<std::string>();
      if (!chat) text += c["text"].get<std::string>();
    }
  return text;
}

std::string curl(const std::string& args) {
  const std::string cmd = "curl -sS --max-time 60 " + args + " 2>&1";
  std::FILE* p = ::popen(cmd.c_str(), "r");
  REQUIRE(p);
  std::string out;
  char buf[4096];
  for (size_t n; (n = std::fread(buf, 1, sizeof buf, p)) > 0;) out.append(buf, n);
  REQUIRE(::pclose(p) == 0);
  return out;
}

std::string url(const std::string& path) { return "http://127.0.0.1:" + std::to_string(server().port()) + path; }

}  // namespace

TEST_CASE("server: /health and /v1/models", "[server]") {
  auto c = client();
  auto h = c.Get("/health");
  REQUIRE(h);
  CHECK(h->status == 200);
  CHECK(json::parse(h->body)["status"] == "ok");
  auto m = c.Get("/v1/models");
  REQUIRE(m);
  const json models = json::parse(m->body);
  CHECK(models["object"] == "list");
  REQUIRE(models["data"].size() == 1);
  CHECK(models["data"][0]["id"] == kName);
  CHECK(models["data"][0]["object"] == "model");
}

TEST_CASE("server: a chat completion as the OpenAI Python client sends it, answered like the library", "[server]") {
  const json body = {{"messages", {{{"role", "system"}, {"content", "Be brief."}}, {{"role", "user"}, {"content", "Hello there"}}}},
                     {"model", kName},
                     {"max_tokens", 16},
                     {"temperature", 0}};
  std::ofstream(model_dir().dir.path() / "chat.json") << body.dump();
  const std::string reply = curl(
      "-X POST " + url("/v1/chat/completions") +
      " -H 'Content-Type: application/json' -H 'Accept: application/json' -H 'Authorization: Bearer sk-test'"
      " -H 'User-Agent: OpenAI/Python 1.54.0' -H 'X-Stainless-Lang: python' -H 'X-Stainless-Package-Version: 1.54.0'"
      " --data-binary @" + (model_dir().dir.path() / "chat.json").string());
  INFO(reply);
  const json r = json::parse(reply);
  CHECK(r["object"] == "chat.completion");
  CHECK(r["model"] == kName);
  CHECK(r["id"].get<std::string>().rfind("chatcmpl-", 0) == 0);
  REQUIRE(r["choices"].size() == 1);
  const json& ch = r["choices"][0];
  CHECK(ch["message"]["role"] == "assistant");
  const std::string content = ch["message"]["content"];
  CHECK((ch["finish_reason"] == "stop" || ch["finish_reason"] == "length"));
  const json& u = r["usage"];
  CHECK(u["completion_tokens"].get<int64_t>() <= 16);
  CHECK(u["completion_tokens"].get<int64_t>() >= 1);
  CHECK(u["total_tokens"] == u["prompt_tokens"].get<int64_t>() + u["completion_tokens"].get<int64_t>());
  // The system message is in the prompt, so compare with the library on the same conversation.
  static const Model m = Model::load(model_dir().dir.path());
  static const text::Tokenizer tok = text::Tokenizer::load(model_dir().dir.path());
  Session s(m, tok, KernelMode::Reference);
  std::vector<ChatMessage> msgs{{"system", "Be brief.", {}, {}}, {"user", "Hello there", {}, {}}};
  const auto prompt = chat_tokens(tok, msgs);
  CHECK(u["prompt_tokens"] == int64_t(prompt.size()));
  s.prefill(prompt);
  Sampler greedy(SamplingParams{});
  GenerationOptions g;
  g.max_new_tokens = 16;
  CHECK(content == s.generate(greedy, g).text);
}

TEST_CASE("server: streamed replies carry the same text as whole ones", "[server]") {
  for (bool chat : {true, false}) {
    INFO((chat ? "chat" : "completions"));
    json body = {{"model", kName}, {"max_tokens", 20}, {"temperature", 0.9}, {"seed", 42}, {"ignore_eos", true}};
    if (chat) body["messages"] = {{{"role", "user"}, {"content", "Tell me a story"}}};
    else body["prompt"] = "Once upon a time";
    const std::string path = chat ? "/v1/chat/completions" : "/v1/completions";
    const json whole = post(path, body);
    const std::string want = chat ? whole["choices"][0]["message"]["content"] : whole["choices"][0]["text"];

    body["stream"] = true;
    body["stream_options"] = {{"include_usage", true}};
    auto c = client();
    auto r = c.Post(path.c_str(), httplib::Headers{}, body.dump(), "application/json");
    REQUIRE(r);
    REQUIRE(r->status == 200);
    CHECK(r->get_header_value("Content-Type").find("text/event-stream") == 0);
    const auto events = sse(r->body);
    REQUIRE(events.size() >= 3);
    CHECK(streamed_text(events, chat) == want);
    CHECK(events.front()["object"] == (chat ? "chat.completion.chunk" : "text_completion"));
    if (chat) CHECK(events.front()["choices"][0]["delta"]["role"] == "assistant");
    const json& fin = events[events.size() - 2];  // the final choice, then the usage chunk
    CHECK(fin["choices"][0]["finish_reason"] == whole["choices"][0]["finish_reason"]);
    CHECK(events.back()["choices"].empty());
    CHECK(events.back()["usage"] == whole["usage"]);
    for (const json& e : events) CHECK(e["id"] == events.front()["id"]);
  }
  // curl -N sees the same stream.
  const std::string raw = curl("-N " + url("/v1/completions") +
                               " -d '{\"model\": \"dsv4-test\", \"prompt\": \"Hi\", \"max_tokens\": 5, \"stream\": true}'");
  CHECK(sse(raw).size() >= 2);
}

TEST_CASE("server: concurrent requests are batched without mixing their outputs", "[server]") {
  constexpr int kClients = 6;
  auto body = [](int i) {
    return json{{"model", kName},
                {"prompt", "Request number " + std::to_string(i) + " says"},
                {"max_tokens", 12 + 3 * i},
                {"temperature", 0.8},
                {"seed", 100 + i},
                {"ignore_eos", true}};
  };
  std::vector<json> alone;
  for (int i = 0; i < kClients; ++i) alone.push_back(post("/v1/completions", body(i)));
  std::vector<std::future<std::string>> together;
  for (int i = 0; i < kClients; ++i)
    together.push_back(std::async(std::launch::async, [&, i] {
      auto c = client();
      auto r = c.Post("/v1/completions", body(i).dump(), "application/json");
      return r && r->status == 200 ? r->body : std::string("failed");
    }));
  for (int i = 0; i < kClients; ++i) {
    const std::string got = together[size_t(i)].get();
    INFO("client " << i << ": " << got);
    REQUIRE(got != "failed");
    const json r = json::parse(got);
    CHECK(r["choices"][0]["text"] == alone[size_t(i)]["choices"][0]["text"]);
    CHECK(r["usage"] == alone[size_t(i)]["usage"]);
    CHECK(r["usage"]["completion_tokens"] == 12 + 3 * i);
  }
}

TEST_CASE("server: bad requests get OpenAI error objects and the server keeps serving", "[server]") {
  auto c = client();
  auto expect = [&](const std::string& path, const std::string& body, int status, const std::string& says) {
    auto r = c.Post(path.c_str(), body, "application/json");
    REQUIRE(r);
    INFO(body.substr(0, 200) << " -> " << r->status << " " << r->body.substr(0, 400));
    CHECK(r->status == status);
    const json e = json::parse(r->body);
    REQUIRE(e.contains("error"));
    CHECK(e["error"]["message"].get<std::string>().find(says) != std::string::npos);
  };
  const std::string chat = "/v1/chat/completions", comp = "/v1/completions";
  expect(chat, "{\"model\": \"dsv4-test\", \"messages\": [", 400, "not valid JSON");
  expect(chat, "[1, 2]", 400, "JSON object");
  expect(chat, R"({"model": "dsv4-test", "messages": [{"role": "user", "content": "hi"}], "frobnicate": 1})", 400,
         "Unrecognized request argument supplied: frobnicate");
  expect(chat, R"({"model": "dsv4-test", "messages": []})", 400, "messages");
  expect(chat, R"({"model": "dsv4-test", "messages": [{"role": "robot", "content": "hi"}]})", 400, "robot");
  expect(chat, R"({"model": "dsv4-test", "messages": [{"role": "user", "content": "hi"}], "n": 2})", 400, "'n'");
  expect(chat, R"({"model": "dsv4-test", "messages": [{"role": "user", "content": "hi"}], "temperature": 3})", 400,
         "temperature");
  expect(chat, R"({"model": "dsv4-test", "messages": [{"role": "user", "content": "hi"}], "logprobs": true})", 400,
         "logprobs");
  expect(chat, R"({"model": "other", "messages": [{"role": "user", "content": "hi"}]})", 404, "does not exist");
  expect(comp, R"({"model": "dsv4-test"})", 400, "'prompt' is required");
  expect(comp, "{\"model\": \"dsv4-test\", \"prompt\": \"bad \xff utf-8\"}", 400, "UTF-8");
  expect(comp, R"({"model": "dsv4-test", "prompt": "hi", "max_tokens": 100000})", 400, "maximum context length");
  json long_prompt = {{"model", kName}, {"prompt", std::vector<int>(600, 1000)}};
  expect(comp, long_prompt.dump(), 400, "maximum context length");
  expect(comp, R"({"model": "dsv4-test", "prompt": "hi", "stop": ["a", "b", "c", "d", "e"]})", 400, "stop");
  expect(comp, std::string(9 << 20, ' '), 413, "larger than");
  auto nf = c.Get("/v1/nothing");
  REQUIRE(nf);
  CHECK(nf->status == 404);
  // Still serving.
  CHECK(post(comp, {{"model", kName}, {"prompt", "still there?"}, {"max_tokens", 3}})["usage"]["completion_tokens"] == 3);
}

TEST_CASE("server: stop strings end the text before them", "[server]") {
  const json first = post("/v1/completions", {{"model", kName}, {"prompt", "abc"}, {"max_tokens", 24},
                                              {"temperature", 0}, {"ignore_eos", true}});
  const std::string text = first["choices"][0]["text"];
  REQUIRE(text.size() >= 4);
  const std::string stop = text.substr(text.size() / 2, 2);
  const json cut = post("/v1/completions", {{"model", kName}, {"prompt", "abc"}, {"max_tokens", 24},
                                            {"temperature", 0}, {"ignore_eos", true}, {"stop", stop}});
  CHECK(cut["choices"][0]["text"] == text.substr(0, text.find(stop)));
  CHECK(cut["choices"][0]["finish_reason"] == "stop");
}

TEST_CASE("server: a client that disconnects mid-stream is cancelled; the server keeps serving", "[server]") {
  auto c = client();
  int chunks = 0;
  const json body = {{"model", kName}, {"prompt", "Keep going"}, {"max_tokens", 400}, {"ignore_eos", true},
                     {"stream", true}};
  httplib::Request req;
  req.method = "POST";
  req.path = "/v1/completions";
  req.body = body.dump();
  req.set_header("Content-Type", "application/json");
  req.content_receiver = [&](const char*, size_t, uint64_t, uint64_t) { return ++chunks < 3; };  // hang up
  auto r = c.send(req);
  CHECK(chunks == 3);
  // The engine drops the request: /health reports nothing active within a few seconds.
  int64_t active = -1;
  for (int i = 0; i < 100 && active != 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    auto h = client().Get("/health");
    REQUIRE(h);
    active = json::parse(h->body)["active"].get<int64_t>();
  }
  CHECK(active == 0);
  CHECK(server().log().find("client disconnected") != std::string::npos);
  CHECK(post("/v1/completions", {{"model", kName}, {"prompt", "next"}, {"max_tokens", 2}})["usage"]["completion_tokens"] == 2);
}
