// Generation sessions and chat over real models: the bundled tiny model (vocab 512, ids only) and
// a synthetic model with DeepSeek's vocabulary (129280; random weights, written to a temporary
// folder at start) with the tokenizer of tests/data/tokenizer for text.
//   - Session prefill/step/generate = the plain forward loop (and the golden greedy tokens);
//   - several sessions over one model, interleaved or batched, = each alone;
//   - stops: callback, max tokens, stop ids, stop strings split across tokens;
//   - chat templates against hand-written strings; multi-turn cache reuse = a from-scratch run.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <unistd.h>
#include <vector>

#include "dsv4/generation/chat.hpp"
#include "dsv4/generation/session.hpp"
#include "dsv4/io/synth.hpp"
#include "golden.hpp"

#ifndef DSV4_TOKENIZER_DIR
#error "define DSV4_TOKENIZER_DIR as the folder holding tokenizer.json"
#endif

using namespace dsv4;
using Ids = std::vector<int32_t>;

namespace {

const std::string kTinyDir = std::string(DSV4_TEST_DATA) + "/tiny";

// A fresh folder under the system temp dir, removed with its contents on destruction.
class TempDir {
 public:
  TempDir() {
    static int counter = 0;
    path_ = std::filesystem::temp_directory_path() /
            ("dsv4_session_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
    std::filesystem::create_directories(path_);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

const Model& tiny() {
  static const Model m = Model::load(kTinyDir + "/orig");
  return m;
}

// The tiny model's shapes with DeepSeek's vocabulary, random weights, and the DeepSeek tokenizer.
struct TextModel {
  TempDir dir;
  std::unique_ptr<Model> model;
  std::unique_ptr<text::Tokenizer> tok;
  TextModel() {
    nlohmann::json c = nlohmann::json::parse(read_text_file(kTinyDir + "/orig/config.json"));
    c["vocab_size"] = 129280;
    SynthOptions opt;
    opt.seed = 11;
    write_synthetic_checkpoint(dir.path(), c.dump(1), opt);
    for (const char* f : {"tokenizer.json", "tokenizer_config.json"})
      std::filesystem::copy_file(std::filesystem::path(DSV4_TOKENIZER_DIR) / f, dir.path() / f);
    model = std::make_unique<Model>(Model::load(dir.path()));
    tok = std::make_unique<text::Tokenizer>(text::Tokenizer::load(dir.path()));
  }
};

const TextModel& text_model() {
  static const TextModel m;
  return m;
}

SamplingParams sampled(uint64_t seed, float temperature = 1.0f) {
  SamplingParams p;
  p.greedy = false;
  p.temperature = temperature;
  p.seed = seed;
  return p;
}

// The plain loop: forward the prompt, then one token at a time, argmax.
Ids manual_greedy(const Model& m, const Ids& prompt, int n) {
  SequenceCache cache = m.new_cache();
  std::vector<float> logits;
  Ids feed = prompt, out;
  for (int i = 0; i < n; ++i) {
    SequenceInput in{&cache, feed};
    m.forward<FastCpu>({&in, 1}, logits, LogitRows::Last);
    out.push_back(argmax(logits));
    feed = {out.back()};
  }
  return out;
}

// A processor that forces the answer to be `ids` (then keeps forcing the last one).
LogitProcessor script(Ids ids) {
  return [ids](Candidates& c, const TokenHistory& h) {
    const int32_t want = ids[std::min(size_t(h.generated()), ids.size() - 1)];
    c.keep_if([&](int32_t id, float) { return id == want; });
  };
}

double max_rel_diff(std::span<const float> a, std::span<const float> b) {
  REQUIRE(a.size() == b.size());
  double scale = 1e-6, d = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    scale = std::max(scale, double(std::fabs(b[i])));
    d = std::max(d, double(std::fabs(a[i] - b[i])));
  }
  return d / scale;
}

std::vector<float> fresh_logits(const Model& m, const text::Tokenizer& tok, const Ids& tokens, KernelMode mode) {
  Session s(m, tok, mode);
  s.prefill(tokens);
  return {s.logits().begin(), s.logits().end()};
}

}  // namespace

// ---------------------------------------------------------------- sessions (ids)

TEST_CASE("Session: prefill + step give the plain forward loop's tokens", "[session]") {
  const Model& m = tiny();
  const Ids prompt = {5, 17, 42, 7, 300};
  const Ids expect = manual_greedy(m, prompt, 10);
  Session s(m);
  s.prefill(prompt);
  CHECK(s.position() == 5);
  CHECK(s.logits().size() == 512);
  Sampler greedy;
  Ids got;
  for (int i = 0; i < 10; ++i) got.push_back(s.step(greedy));
  CHECK(got == expect);
  CHECK(s.position() == 14);  // the last sampled token is not run yet
  CHECK(s.pending() == 1);
  Ids all = prompt;
  all.insert(all.end(), got.begin(), got.end());
  CHECK(s.tokens() == all);

  SECTION("generate = the golden greedy tokens, in both kernel modes") {
    for (auto [dir, file] : {std::pair{"/orig", "/expected_orig.safetensors"}, std::pair{"/hf", "/expected.safetensors"}}) {
      const dsv4::testing::Golden g(kTinyDir + file);
      const Model gm = Model::load(kTinyDir + dir);
      for (KernelMode mode : {KernelMode::Reference, KernelMode::Fast}) {
        Session gs(gm, mode);
        gs.prefill(g.ids("greedy_prompt"));
        Sampler sampler;
        GenerationOptions o;
        o.max_new_tokens = int64_t(g.ids("greedy_tokens").size());
        o.stop_at_eos = false;
        const GenerationResult r = gs.generate(sampler, o);
        INFO(dir << " " << kernel_mode_name(mode));
        CHECK(r.tokens == g.ids("greedy_tokens"));
        CHECK(r.reason == StopReason::MaxTokens);
      }
    }
  }
  SECTION("errors") {
    Session e(m);
    CHECK_THROWS_WITH(e.step(greedy), Catch::Contains("prefill"));
    CHECK_THROWS_WITH(e.prefill(Ids{5, 999}), Catch::Contains("999"));
    CHECK(e.tokens().empty());  // the bad tokens were dropped
    e.prefill(Ids{5});
    CHECK(e.position() == 1);
    GenerationOptions with_stop;
    with_stop.stop_strings = {"x"};
    CHECK_THROWS_WITH(e.generate(greedy, with_stop), Catch::Contains("tokenizer"));
  }
}

TEST_CASE("several sessions over one model: interleaved or batched = each alone", "[session]") {
  const Model& m = tiny();
  const Ids pa = {5, 17, 42}, pb = {9, 8, 7, 6, 5, 4, 3, 2, 1, 100, 200};
  const int n = 12;
  auto alone = [&](const Ids& p, uint64_t seed) {
    Session s(m);
    s.prefill(p);
    Sampler sm(sampled(seed, 0.8f));
    GenerationOptions o;
    o.max_new_tokens = n;
    o.stop_at_eos = false;
    return s.generate(sm, o).tokens;
  };
  const Ids ta = alone(pa, 1), tb = alone(pb, 2);
  REQUIRE(ta.size() == size_t(n));

  SECTION("interleaved steps") {
    Session a(m), b(m);
    Sampler sa(sampled(1, 0.8f)), sb(sampled(2, 0.8f));
    a.prefill(pa);
    b.prefill(pb);
    sa.set_context(pa);
    sb.set_context(pb);
    Ids ga, gb;
    for (int i = 0; i < n; ++i) {
      ga.push_back(a.step(sa));
      gb.push_back(b.step(sb));
    }
    CHECK(ga == ta);
    CHECK(gb == tb);
  }
  SECTION("batched: one forward pass for both, greedy") {
    const Ids ga1 = manual_greedy(m, pa, n), gb1 = manual_greedy(m, pb, n);
    Session a(m), b(m);
    a.append(pa);
    b.append(pb);
    Session* both[] = {&a, &b};
    Sampler g;
    Ids ga, gb;
    for (int i = 0; i < n; ++i) {
      Session::run_batch(both);
      ga.push_back(a.step(g));
      gb.push_back(b.step(g));
    }
    CHECK(ga == ga1);
    CHECK(gb == gb1);
  }
  SECTION("a fork continues independently") {
    Session a(m);
    a.prefill(pa);
    Session fork = a;
    Sampler g1, g2;
    const Ids x = {a.step(g1), a.step(g1)};
    const Ids y = {fork.step(g2), fork.step(g2)};
    CHECK(x == y);
    CHECK(x == Ids(manual_greedy(m, pa, 2)));
  }
}

TEST_CASE("generate: callback stop, max tokens, stop ids", "[session]") {
  const Model& m = tiny();
  const Ids prompt = {5, 17, 42};
  GenerationOptions o;
  o.max_new_tokens = 20;
  o.stop_at_eos = false;
  Session base(m);
  base.prefill(prompt);
  Sampler s0(sampled(3));
  const Ids all = Session(base).generate(s0, o).tokens;
  REQUIRE(all.size() == 20);

  SECTION("the callback stops after its third token") {
    Session s = base;
    Sampler sm(sampled(3));
    int calls = 0;
    const GenerationResult r = s.generate(sm, o, [&](int32_t, std::string_view) { return ++calls < 3; });
    CHECK(r.reason == StopReason::Callback);
    CHECK(r.tokens == Ids(all.begin(), all.begin() + 3));
    CHECK(calls == 3);
  }
  SECTION("max_new_tokens") {
    Session s = base;
    Sampler sm(sampled(3));
    GenerationOptions o5 = o;
    o5.max_new_tokens = 5;
    const GenerationResult r = s.generate(sm, o5);
    CHECK(r.reason == StopReason::MaxTokens);
    CHECK(r.tokens == Ids(all.begin(), all.begin() + 5));
    o5.max_new_tokens = 0;
    CHECK(s.generate(sm, o5).tokens.empty());
  }
  SECTION("a stop id ends generation and is the last token") {
    size_t k = 3;  // the first token from position 3 on that did not occur before
    while (std::find(all.begin(), all.begin() + ptrdiff_t(k), all[k]) != all.begin() + ptrdiff_t(k)) ++k;
    REQUIRE(k < all.size());
    Session s = base;
    Sampler sm(sampled(3));
    GenerationOptions os = o;
    os.stop_token_ids = {all[k]};
    const GenerationResult r = s.generate(sm, os);
    CHECK(r.reason == StopReason::StopToken);
    CHECK(r.tokens == Ids(all.begin(), all.begin() + ptrdiff_t(k) + 1));
  }
  SECTION("the model's EOS stops by default") {
    const int32_t eos = int32_t(m.config().eos_token_id);
    auto it = std::find(all.begin(), all.end(), eos);
    Session s = base;
    Sampler sm(sampled(3));
    GenerationOptions oe = o;
    oe.stop_at_eos = true;
    const GenerationResult r = s.generate(sm, oe);
    CHECK(r.tokens == Ids(all.begin(), it == all.end() ? all.end() : it + 1));
  }
}

// ---------------------------------------------------------------- text

TEST_CASE("generate streams text: pieces are whole characters and add up to decode()", "[session][text]") {
  const TextModel& tm = text_model();
  Session s(*tm.model, *tm.tok);
  s.prefill(tm.tok->encode("Once upon a time, 从前", true));
  Sampler sm(sampled(7));
  GenerationOptions o;
  o.max_new_tokens = 40;
  o.stop_at_eos = false;
  o.skip_special = false;
  std::string streamed;
  const GenerationResult r = s.generate(sm, o, [&](int32_t, std::string_view t) {
    CHECK(text::utf8::valid_prefix(t) == t.size());
    streamed += t;
    return true;
  });
  CHECK(r.tokens.size() == 40);
  CHECK(streamed == r.text);
  CHECK(r.text == tm.tok->decode(r.tokens));
  for (int32_t t : r.tokens) CHECK(t < tm.tok->vocab_size());  // never past the tokenizer's vocabulary
}

TEST_CASE("stop strings split across tokens stop generation and are never shown", "[session][text]") {
  const TextModel& tm = text_model();
  const Ids prompt = tm.tok->encode("The answer is", true);
  GenerationOptions o;
  o.max_new_tokens = 40;
  o.stop_at_eos = false;
  // A first run without stops: each token's text.
  std::vector<std::string> pieces;
  {
    Session s(*tm.model, *tm.tok);
    s.prefill(prompt);
    Sampler sm(sampled(21));
    s.generate(sm, o, [&](int32_t, std::string_view t) { return pieces.emplace_back(t), true; });
  }
  REQUIRE(pieces.size() == 40);
  std::string full;
  for (auto& p : pieces) full += p;
  // Stop strings that straddle token boundaries: the last character of piece k and the first
  // of piece k + 1 (for every k where both exist).
  int tried = 0;
  for (size_t k = 5; k + 1 < pieces.size() && tried < 6; ++k) {
    const std::string& a = pieces[k];
    const std::string& b = pieces[k + 1];
    if (a.empty() || b.empty()) continue;
    size_t last = a.size() - 1;
    while (last > 0 && (static_cast<unsigned char>(a[last]) & 0xC0) == 0x80) --last;
    size_t first = 1;
    while (first < b.size() && (static_cast<unsigned char>(b[first]) & 0xC0) == 0x80) ++first;
    const std::string stop = a.substr(last) + b.substr(0, first);
    ++tried;
    Session s(*tm.model, *tm.tok);
    s.prefill(prompt);
    Sampler sm(sampled(21));
    GenerationOptions os = o;
    os.stop_strings = {"never appears \x01", stop};
    std::string shown;
    const GenerationResult r = s.generate(sm, os, [&](int32_t, std::string_view t) {
      shown += t;
      CHECK(full.compare(0, shown.size(), shown) == 0);  // only ever a prefix of the text before the stop
      return true;
    });
    const size_t at = full.find(stop);
    INFO("stop '" << stop << "' at " << at);
    CHECK(r.reason == StopReason::StopString);
    CHECK(r.stop_string == stop);
    CHECK(shown == full.substr(0, at));
    CHECK(r.text == shown);
  }
  CHECK(tried >= 3);
}

// ---------------------------------------------------------------- chat templates

namespace {
const std::string BOS = "<｜begin▁of▁sentence｜>", EOS = "<｜end▁of▁sentence｜>", U = "<｜User｜>", A = "<｜Assistant｜>";

ChatMessage msg(std::string role, std::string content, std::string reasoning = {}) {
  return ChatMessage{std::move(role), std::move(content), std::move(reasoning), {}};
}
}  // namespace

TEST_CASE("chat templates: DeepSeek-V4 format", "[chat]") {
  ChatOptions chat, think;
  think.thinking = true;
  const std::vector<ChatMessage> one = {msg("system", "You are a helpful assistant."), msg("user", "What is 2+2?")};
  CHECK(render_chat(one, chat) == BOS + "You are a helpful assistant." + U + "What is 2+2?" + A + "</think>");
  // DeepSeek's own example (encoding/README.md of the V4 release).
  CHECK(render_chat(one, think) == BOS + "You are a helpful assistant." + U + "What is 2+2?" + A + "<think>");

  const std::vector<ChatMessage> multi = {msg("system", "S"), msg("user", "u1"), msg("assistant", "a1", "r1"),
                                          msg("user", "u2")};
  CHECK(render_chat(multi, chat) == BOS + "S" + U + "u1" + A + "</think>a1" + EOS + U + "u2" + A + "</think>");
  // Thinking, earlier reasoning dropped (DeepSeek's default).
  CHECK(render_chat(multi, think) == BOS + "S" + U + "u1" + A + "</think>a1" + EOS + U + "u2" + A + "<think>");
  ChatOptions keep = think;
  keep.drop_thinking = false;
  CHECK(render_chat(multi, keep) == BOS + "S" + U + "u1" + A + "<think>r1</think>a1" + EOS + U + "u2" + A + "<think>");
  // An answer after the last user message keeps its reasoning.
  const std::vector<ChatMessage> answered = {msg("user", "u1"), msg("assistant", "a1", "r1")};
  CHECK(render_chat(answered, think) == BOS + U + "u1" + A + "<think>r1</think>a1" + EOS);
  CHECK(render_chat(answered, chat) == BOS + U + "u1" + A + "</think>a1" + EOS);
  // Two user messages in a row; two system messages; no BOS, no generation prompt.
  CHECK(render_chat(std::vector{msg("user", "a"), msg("user", "b")}, chat) == BOS + U + "a" + U + "b" + A + "</think>");
  CHECK(render_chat(std::vector{msg("system", "x"), msg("system", "y"), msg("user", "q")}, chat) ==
        BOS + "xy" + U + "q" + A + "</think>");
  ChatOptions bare;
  bare.add_bos = false;
  bare.add_generation_prompt = false;
  CHECK(render_chat(std::vector{msg("user", "q")}, bare) == U + "q");
  CHECK_THROWS_WITH(render_chat(std::vector{msg("tool", "x")}), Catch::Contains("message 0 has role 'tool'"));
}

TEST_CASE("chat templates: DeepSeek-V3 format (tokenizer_config.json's chat_template)", "[chat]") {
  ChatOptions v3;
  v3.format = ChatFormat::DeepSeekV3;
  // Strings checked against the Jinja template of tests/data/tokenizer/tokenizer_config.json
  // (rendered with jinja2, bos_token as below, add_generation_prompt true).
  const std::vector<ChatMessage> m = {msg("system", "sys1"), msg("user", "u1"), msg("assistant", "a1"),
                                      msg("system", "sys2"), msg("user", "u2")};
  CHECK(render_chat(m, v3) == BOS + "sys1\n\nsys2" + U + "u1" + A + "a1" + EOS + U + "u2" + A);
  CHECK(render_chat(std::vector{msg("user", "Hi")}, v3) == BOS + U + "Hi" + A);
  v3.add_generation_prompt = false;
  CHECK(render_chat(std::vector{msg("system", "sys1"), msg("user", "u1"), msg("assistant", "a1")}, v3) ==
        BOS + "sys1" + U + "u1" + A + "a1" + EOS);
  v3.thinking = true;
  CHECK_THROWS_WITH(render_chat(m, v3), Catch::Contains("no thinking mode"));
}

TEST_CASE("chat tokens: the encoded text, or the model's own ids for its answers", "[chat]") {
  const TextModel& tm = text_model();
  const text::Tokenizer& tok = *tm.tok;
  std::vector<ChatMessage> m = {msg("system", "Be brief."), msg("user", "Hello!"), msg("assistant", "**Hi** there"),
                                msg("user", "Bye")};
  ChatOptions o;
  const Ids ids = chat_tokens(tok, m, o);
  CHECK(ids == tok.encode(render_chat(m, o)));
  CHECK(ids.front() == 0);  // BOS once
  CHECK(std::count(ids.begin(), ids.end(), *tok.token_id(U)) == 2);
  // Ids that spell the answer differently from its canonical encoding are kept as they are.
  const Ids odd = {tok.encode("**")[0], tok.encode("Hi")[0], tok.encode("**")[0], tok.encode(" there")[0]};
  REQUIRE(tok.decode(odd) == "**Hi** there");
  m[2].token_ids = odd;
  const Ids with = chat_tokens(tok, m, o);
  CHECK(std::search(with.begin(), with.end(), odd.begin(), odd.end()) != with.end());
  CHECK(tok.decode(with) == render_chat(m, o));
  // Ids that do not spell the answer are ignored.
  m[2].token_ids = tok.encode("something else");
  CHECK(chat_tokens(tok, m, o) == ids);

  const ChatMessage r = parse_reply("Simple arithmetic.</think>2 + 2 = 4.", true);
  CHECK(r.reasoning == "Simple arithmetic.");
  CHECK(r.content == "2 + 2 = 4.");
  CHECK(parse_reply("cut short", true).reasoning == "cut short");
  CHECK(parse_reply("a</think>b", false).content == "a</think>b");
}

// ---------------------------------------------------------------- multi-turn cache reuse

TEST_CASE("multi-turn chat runs only the new tokens and equals a from-scratch run", "[chat]") {
  const TextModel& tm = text_model();
  const text::Tokenizer& tok = *tm.tok;
  const int32_t eos = *tok.eos_id();
  struct Variant {
    const char* name;
    ChatOptions opts;
    std::string reply;  // forced first answer ("" = whatever the model samples)
    bool full_reuse;    // every token of the first turn comes from the cache in the second
  };
  ChatOptions v4chat, v4think, v4keep, v3;
  v4think.thinking = true;
  v4keep.thinking = true;
  v4keep.drop_thinking = false;
  v3.format = ChatFormat::DeepSeekV3;
  const std::vector<Variant> variants = {
      {"v4 chat, sampled answer", v4chat, "", true},
      {"v4 chat", v4chat, "The fox ran **away**.", true},
      {"v4 thinking, reasoning dropped", v4think, "A fox story.</think>The fox ran.", false},
      {"v4 thinking, reasoning kept", v4keep, "A fox story.</think>The fox ran.", true},
      {"v3", v3, "The fox ran.", true}};
  for (const Variant& v : variants) {
    for (KernelMode mode : {KernelMode::Fast, KernelMode::Reference}) {
      INFO(v.name << ", " << kernel_mode_name(mode));
      ChatSession chat(*tm.model, tok, v.opts, mode);
      chat.add("system", "You are a helpful assistant.");
      chat.add("user", "Tell me a story about a fox.");
      const Ids first_prompt = chat.prompt_tokens();
      Sampler sm(sampled(5));
      if (!v.reply.empty()) {
        Ids forced = tok.encode(v.reply);
        forced.push_back(eos);
        sm.add(script(forced));
      }
      GenerationOptions g;
      g.max_new_tokens = 24;
      const GenerationResult r1 = chat.respond(sm, g);
      g.max_new_tokens = 8;
      REQUIRE(chat.messages().size() == 3);
      const ChatMessage& answer = chat.messages().back();
      CHECK(answer.role == "assistant");
      if (!v.reply.empty()) {
        CHECK(r1.reason == StopReason::StopToken);
        CHECK(answer.content == parse_reply(v.reply, v.opts.thinking).content);
        CHECK(answer.reasoning == parse_reply(v.reply, v.opts.thinking).reasoning);
      }
      const int64_t after1 = int64_t(chat.session().tokens().size());

      chat.add("user", "And then? 然后呢?");
      chat.prepare();
      const Ids target = chat.prompt_tokens();
      CHECK(chat.session().tokens() == target);
      CHECK(tok.decode(target) == chat.prompt_text());
      CHECK(chat.reused_tokens() + chat.prefilled_tokens() == int64_t(target.size()));
      if (v.full_reuse) {
        // All of turn one came from the cache: only its last sampled token and the new message ran.
        CHECK(chat.reused_tokens() == after1 - 1);
      } else {
        // The history is written without the reasoning: resumed right after turn one's "<｜Assistant｜>".
        const auto pos = std::find(first_prompt.rbegin(), first_prompt.rend(), *tok.token_id(A));
        CHECK(chat.reused_tokens() == int64_t(first_prompt.rend() - pos));
      }
      // The logits equal a from-scratch one-pass run over the same tokens.
      CHECK(max_rel_diff(chat.session().logits(), fresh_logits(*tm.model, tok, target, mode)) < 1e-4);
      // And so does what follows, token for token, in reference mode. (Fast mode picks kernels by
      // the number of tokens in a call, so a chunked and a one-pass run differ in the last bits,
      // and sampling from this random model's nearly flat distribution amplifies that.)
      if (mode == KernelMode::Reference) {
        Sampler s2(sampled(6)), s3(sampled(6));
        const GenerationResult r2 = chat.respond(s2, g);
        Session fresh(*tm.model, tok, mode);
        fresh.prefill(target);
        const GenerationResult r3 = fresh.generate(s3, g);
        CHECK(r2.tokens == r3.tokens);
        CHECK(r2.text == r3.text);
      }
    }
  }
}

TEST_CASE("chat: a reply cut at a stop string is re-encoded and the cache resumes at the snapshot", "[chat]") {
  const TextModel& tm = text_model();
  ChatSession probe(*tm.model, *tm.tok);
  probe.add("user", "Count to ten.");
  Sampler s0(sampled(8));
  GenerationOptions g;
  g.max_new_tokens = 12;
  g.stop_at_eos = false;
  const GenerationResult full = probe.respond(s0, g);
  REQUIRE(full.text.size() > 6);
  // Stop at a character in the middle of the answer.
  size_t cut = full.text.size() / 2;
  while (cut > 0 && (static_cast<unsigned char>(full.text[cut]) & 0xC0) == 0x80) --cut;
  size_t end = cut + 1;
  while (end < full.text.size() && (static_cast<unsigned char>(full.text[end]) & 0xC0) == 0x80) ++end;
  const std::string stop = full.text.substr(cut, end - cut);

  ChatSession chat(*tm.model, *tm.tok);
  chat.add("user", "Count to ten.");
  Sampler s1(sampled(8));
  GenerationOptions gs = g;
  gs.stop_strings = {stop};
  const GenerationResult r = chat.respond(s1, gs);
  CHECK(r.reason == StopReason::StopString);
  CHECK(chat.messages().back().content == full.text.substr(0, full.text.find(stop)));
  chat.add("user", "Go on.");
  chat.prepare();
  const Ids target = chat.prompt_tokens();
  CHECK(chat.session().tokens() == target);
  CHECK(max_rel_diff(chat.session().logits(), fresh_logits(*tm.model, *tm.tok, target, KernelMode::Fast)) < 1e-4);
  CHECK(chat.reused_tokens() > 0);
  CHECK(chat.reused_tokens() < int64_t(target.size()));
}
