// The text commands of the dsv4 tool: tokenize, detokenize, generate --prompt, chat. Driven
// through a shell with files for stdin, stdout and stderr, as users drive it.
// DSV4_CLI: the dsv4 executable; DSV4_TOKENIZER_DIR: the DeepSeek tokenizer; DSV4_TEST_DATA.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <sys/wait.h>
#include <unistd.h>

namespace fs = std::filesystem;

namespace {

const std::string kTok = DSV4_TOKENIZER_DIR;

struct Result {
  int code;
  std::string out, err;
};

std::string slurp(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

void spit(const fs::path& p, const std::string& s) {
  std::ofstream f(p, std::ios::binary | std::ios::trunc);
  f << s;
}

// Removes the scratch folder at exit.
struct Cleanup {
  fs::path dir;
  ~Cleanup() {
    std::error_code ec;
    fs::remove_all(dir, ec);
  }
};

const fs::path& scratch() {
  static const fs::path d = [] {
    const fs::path p = fs::temp_directory_path() / ("dsv4_text_cli_" + std::to_string(::getpid()));
    fs::create_directories(p);
    return p;
  }();
  static const Cleanup cleanup{d};  // destroyed before d
  return d;
}

// Runs `dsv4 ARGS` with `in` on stdin.
Result run(const std::string& args, const std::string& in = "") {
  const fs::path d = scratch();
  spit(d / "in", in);
  const std::string cmd = std::string(DSV4_CLI) + " " + args + " <" + (d / "in").string() + " >" + (d / "out").string() +
                          " 2>" + (d / "err").string();
  const int status = std::system(cmd.c_str());
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, slurp(d / "out"), slurp(d / "err")};
}

// A model with DeepSeek's vocabulary (random weights) and the tokenizer, made with `dsv4 synth`.
const std::string& text_model() {
  static const std::string dir = [] {
    const fs::path d = scratch() / "model";
    nlohmann::json c = nlohmann::json::parse(slurp(std::string(DSV4_TEST_DATA) + "/tiny/orig/config.json"));
    c["vocab_size"] = 129280;
    spit(scratch() / "config.json", c.dump(1));
    const Result r = run("synth --config " + (scratch() / "config.json").string() + " --out " + d.string());
    REQUIRE(r.code == 0);
    for (const char* f : {"tokenizer.json", "tokenizer_config.json"}) fs::copy_file(fs::path(kTok) / f, d / f);
    return d.string();
  }();
  return dir;
}

size_t lines(const std::string& s) { return size_t(std::count(s.begin(), s.end(), '\n')); }

}  // namespace

TEST_CASE("dsv4 tokenize / detokenize", "[cli][text]") {
  Result r = run("tokenize --tokenizer " + kTok, "Hello, world!");
  REQUIRE(r.code == 0);
  CHECK(r.out == "19923 14 2058 3\n");  // cases.json
  CHECK(run("tokenize --tokenizer " + kTok + " --bos", "Hello, world!").out == "0 19923 14 2058 3\n");
  CHECK(run("tokenize --tokenizer " + kTok, "").out == "\n");

  CHECK(run("detokenize --tokenizer " + kTok, "19923 14 2058 3\n").out == "Hello, world!");
  CHECK(run("detokenize --tokenizer " + kTok, "0,19923, 14\n2058 3").out == "<｜begin▁of▁sentence｜>Hello, world!");
  CHECK(run("detokenize --tokenizer " + kTok + " --skip-special", "0 19923 14 2058 3").out == "Hello, world!");

  for (const std::string text : {"深度求索 DeepSeek-V4 🦊 naïve\n\tcode();\n", "<｜User｜>Hi<｜Assistant｜>", "\xff\xfe bytes"}) {
    const Result ids = run("tokenize --bytes --tokenizer " + kTok, text);
    REQUIRE(ids.code == 0);
    const Result back = run("detokenize --tokenizer " + kTok, ids.out);
    REQUIRE(back.code == 0);
    if (text[0] == '\xff') {
      CHECK(back.out == "\xEF\xBF\xBD\xEF\xBF\xBD bytes");  // decode gives valid UTF-8 (U+FFFD)
    } else {
      CHECK(back.out == text);
    }
  }
}

TEST_CASE("text commands: errors are one line on stderr", "[cli][text]") {
  const fs::path broken = scratch() / "broken_tokenizer";
  fs::create_directories(broken);
  spit(broken / "tokenizer.json", "{\"model\": {\"type\": \"BPE\", \"vocab\": ");
  const std::vector<std::tuple<std::string, std::string, std::string>> cases = {
      {"detokenize --tokenizer " + kTok, "5 999999", "999999"},
      {"detokenize --tokenizer " + kTok, "5 -1", "-1"},
      {"detokenize --tokenizer " + kTok, "5 x7", "x7"},
      {"tokenize --tokenizer /nonexistent/tok", "a", "/nonexistent/tok"},
      {"tokenize --tokenizer " + kTok, "ok \xC0\xAF", "invalid UTF-8 at byte 3"},
      {"generate --model " + text_model() + " --prompt \"$(printf 'a\\377')\"", "", "--prompt: invalid UTF-8 at byte 1"},
      {"tokenize", "a", "--tokenizer"},
      {"tokenize --tokenizer " + broken.string(), "a", "tokenizer.json: malformed JSON"},
      {"generate --model " + text_model() + " --tokenizer " + broken.string() + " --prompt hi", "", "malformed"},
      {"generate --model " + std::string(DSV4_TEST_DATA) + "/tiny/orig --prompt hi", "", "--tokenizer"},
      {"generate --model " + text_model() + " --prompt hi --prompt-ids 1", "", "--prompt"},
      {"generate --model " + text_model() + " --prompt hi --top-p 2", "", "top_p"},
      {"generate --model " + text_model() + " --prompt hi --greedy --top-k 3", "", "--greedy"},
      {"chat --model " + text_model() + " --think --format v3", "hi\n", "thinking"},
      {"chat --model " + text_model() + " --format v2", "hi\n", "v2"},
  };
  for (auto& [args, in, needle] : cases) {
    INFO(args);
    const Result r = run(args, in);
    CHECK(r.code != 0);
    CHECK(r.err.find(needle) != std::string::npos);
    CHECK(lines(r.err) == 1);
  }
}

TEST_CASE("dsv4 generate --prompt streams text", "[cli][text]") {
  const std::string m = text_model();
  const Result a = run("generate --model " + m + " --prompt 'Once upon a time' --max-new-tokens 12 --temperature 0.8 --seed 3");
  REQUIRE(a.code == 0);
  CHECK(!a.out.empty());
  CHECK(a.err.find("tokens/s") != std::string::npos);
  // Reproducible with a seed; the tokenizer can also be named explicitly.
  const Result b = run("generate --model " + m + " --tokenizer " + kTok +
                       " --prompt 'Once upon a time' --max-new-tokens 12 --temperature 0.8 --seed 3");
  CHECK(b.out == a.out);
  // The text is the decoded ids of the --prompt-ids form.
  const Result ids = run("tokenize --tokenizer " + kTok + " --bos", "Once upon a time");
  std::string csv = ids.out.substr(0, ids.out.size() - 1);
  std::replace(csv.begin(), csv.end(), ' ', ',');
  const Result g = run("generate --model " + m + " --prompt-ids " + csv + " --max-new-tokens 12 --greedy --ignore-eos");
  REQUIRE(g.code == 0);
  const Result text = run("detokenize --tokenizer " + kTok + " --skip-special", g.out);
  const Result p = run("generate --model " + m + " --prompt 'Once upon a time' --max-new-tokens 12 --ignore-eos");
  CHECK(p.out == text.out + "\n");
  // A stop string: the output ends before it.
  if (p.out.size() > 4) {
    const std::string stop = p.out.substr(p.out.size() / 2, 1);
    if (std::isalnum(static_cast<unsigned char>(stop[0]))) {
      const Result s = run("generate --model " + m + " --prompt 'Once upon a time' --max-new-tokens 12 --ignore-eos --stop '" + stop + "'");
      CHECK(s.out == p.out.substr(0, p.out.find(stop)) + "\n");
      CHECK(s.err.find("stop: stop_string") != std::string::npos);
    }
  }
}

TEST_CASE("dsv4 chat: multi-turn on stdin, the cache kept between turns", "[cli][text]") {
  const std::string m = text_model();
  const Result r = run("chat --model " + m + " --system 'Be brief.' --max-new-tokens 6", "Hello!\nAnd then?\n/reset\nHi\n");
  REQUIRE(r.code == 0);
  // One timing line per turn, one for /reset, one at the end.
  CHECK(lines(r.err) == 5);
  CHECK(r.err.find("0 from the cache") != std::string::npos);  // the first turn
  const size_t second = r.err.find('\n') + 1;
  const std::string turn2 = r.err.substr(second, r.err.find('\n', second) - second);
  CHECK(turn2.find("from the cache") != std::string::npos);
  CHECK(turn2.find(" 0 from the cache") == std::string::npos);  // the second turn reuses the first
  CHECK(r.err.find("[new conversation]") != std::string::npos);
  CHECK(r.err.find("tokens/s]") != std::string::npos);
  const Result t = run("chat --model " + m + " --think --max-new-tokens 4", "Hello!\n");
  REQUIRE(t.code == 0);
  CHECK(t.out.rfind("<think>", 0) == 0);
}
