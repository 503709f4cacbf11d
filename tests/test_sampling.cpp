// Sampling pieces on hand-made logits: each processor's exact effect, the candidate sets of
// top-k / top-p / min-p, greedy, seeded reproducibility, the drawn distribution (chi-square), and
// stop strings over streamed text. No model needed.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <map>
#include <numeric>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "dsv4/sampling/sampler.hpp"
#include "dsv4/sampling/stop.hpp"

using namespace dsv4;
using Ids = std::vector<int32_t>;

namespace {

// Runs one processor on `logits` with `h`; returns the candidates left, in their order.
template <class P>
Candidates run(const P& p, const std::vector<float>& logits, const TokenHistory& h = {}) {
  Candidates c;
  c.assign(logits);
  p(c, h);
  return c;
}

Ids ids_of(const Candidates& c) { return Ids(c.ids().begin(), c.ids().end()); }
std::set<int32_t> set_of(const Candidates& c) { return {c.ids().begin(), c.ids().end()}; }
std::vector<float> logits_of(const Candidates& c) { return {c.logits().begin(), c.logits().end()}; }

std::vector<float> log_probs(std::vector<double> p) {
  std::vector<float> l;
  for (double x : p) l.push_back(float(std::log(x)));
  return l;
}

// Pearson's chi-square of observed counts against expected probabilities.
double chi_square(const std::vector<int>& counts, const std::vector<double>& p, int n) {
  double x = 0;
  for (size_t i = 0; i < p.size(); ++i) {
    const double e = p[i] * n;
    x += (counts[i] - e) * (counts[i] - e) / e;
  }
  return x;
}

std::vector<int> draw_counts(Sampler& s, const std::vector<float>& logits, int n) {
  std::vector<int> counts(logits.size(), 0);
  for (int i = 0; i < n; ++i) ++counts[size_t(s.sample(logits))];
  return counts;
}

// Upper 0.1% points of the chi-square distribution, by degrees of freedom.
double chi2_999(int df) {
  static const std::map<int, double> t = {{1, 10.83}, {2, 13.82}, {3, 16.27}, {4, 18.47}, {5, 20.52}};
  return t.at(df);
}

}  // namespace

TEST_CASE("argmax: highest logit, lowest id on ties", "[sampling]") {
  CHECK(argmax(std::vector<float>{1, 3, 2, 3}) == 1);
  CHECK(argmax(std::vector<float>{-5}) == 0);
}

TEST_CASE("Candidates: sort, keep_top, NaN", "[sampling]") {
  Candidates c;
  c.assign(std::vector<float>{1, 3, NAN, 3, 2});
  CHECK(c.dense());
  CHECK(c.logit(2) == -INFINITY);
  c.sort();
  CHECK(ids_of(c) == Ids{1, 3, 4, 0, 2});
  CHECK(c.sorted());
  CHECK_FALSE(c.dense());
  c.assign(std::vector<float>{5, 1, 5, 5, 7});
  c.keep_top(3);
  CHECK(ids_of(c) == Ids{4, 0, 2});
  c.keep_top(10);
  CHECK(ids_of(c) == Ids{4, 0, 2});
}

TEST_CASE("repetition penalty: seen tokens, positive divided, negative multiplied", "[sampling]") {
  TokenHistory h;
  h.add_prompt(Ids{0, 1, 0});
  h.add_generated(4);
  const Candidates c = run(RepetitionPenalty{2.0f}, {2, -1, 0.5f, 3, -4}, h);
  CHECK(logits_of(c) == std::vector<float>{1, -2, 0.5f, 3, -8});
  // Also after a filter (candidates no longer in id order).
  Candidates d;
  d.assign(std::vector<float>{2, -1, 0.5f, 3, -4});
  d.sort();
  RepetitionPenalty{2.0f}(d, h);
  CHECK(ids_of(d) == Ids{3, 0, 2, 1, 4});
  CHECK(logits_of(d) == std::vector<float>{3, 1, 0.5f, -2, -8});
}

TEST_CASE("frequency and presence penalties count generated tokens only", "[sampling]") {
  TokenHistory h;
  h.add_prompt(Ids{0, 0, 0});
  for (int32_t t : {2, 2, 3, 2}) h.add_generated(t);
  CHECK(h.generated() == 4);
  const std::vector<float> l = {1, 1, 1, 1};
  CHECK(logits_of(run(FrequencyPenalty{0.5f}, l, h)) == std::vector<float>{1, 1, -0.5f, 0.5f});
  CHECK(logits_of(run(PresencePenalty{0.25f}, l, h)) == std::vector<float>{1, 1, 0.75f, 0.75f});
  CHECK(logits_of(run(FrequencyPenalty{-1.0f}, l, h)) == std::vector<float>{1, 1, 4, 2});  // negative: encourages
}

TEST_CASE("temperature divides the logits", "[sampling]") {
  CHECK(logits_of(run(Temperature{2.0f}, {2, -4, 1})) == std::vector<float>{1, -2, 0.5f});
  CHECK(logits_of(run(Temperature{0.5f}, {2, -4, 1})) == std::vector<float>{4, -8, 2});
}

TEST_CASE("top-k keeps the k highest, lower id first on ties", "[sampling]") {
  CHECK(ids_of(run(TopK{2}, {1, 3, 2, 3})) == Ids{1, 3});
  CHECK(ids_of(run(TopK{2}, {5, 1, 5, 5})) == Ids{0, 2});
  CHECK(ids_of(run(TopK{1}, {0, 9, 1})) == Ids{1});
  CHECK(run(TopK{0}, {0, 9, 1}).size() == 3);  // off
  CHECK(run(TopK{5}, {0, 9, 1}).size() == 3);
}

TEST_CASE("top-p keeps the smallest prefix reaching p", "[sampling]") {
  const std::vector<float> l = log_probs({0.05, 0.5, 0.15, 0.3});  // sorted: 1 (.5), 3 (.3), 2 (.15), 0 (.05)
  CHECK(ids_of(run(TopP{0.1f}, l)) == Ids{1});
  CHECK(ids_of(run(TopP{0.49f}, l)) == Ids{1});
  CHECK(ids_of(run(TopP{0.51f}, l)) == Ids{1, 3});
  CHECK(ids_of(run(TopP{0.79f}, l)) == Ids{1, 3});
  CHECK(ids_of(run(TopP{0.81f}, l)) == Ids{1, 3, 2});
  CHECK(ids_of(run(TopP{0.96f}, l)) == Ids{1, 3, 2, 0});
  CHECK(run(TopP{1.0f}, l).size() == 4);  // off

  SECTION("the pre-filter changes nothing: same sets as a full sort on random rows") {
    std::mt19937 rng(5);
    for (int trial = 0; trial < 200; ++trial) {
      const size_t n = 1 + rng() % 3000;
      const float spread = float(1 + rng() % 12);
      std::vector<float> row(n);
      std::normal_distribution<float> nd(0, spread);
      for (float& x : row) x = nd(rng);
      if (trial % 7 == 0) row[rng() % n] = -INFINITY;
      const float p = std::uniform_real_distribution<float>(0.01f, 0.999f)(rng);
      // Naive: sort everything, accumulate.
      std::vector<int32_t> order(n);
      std::iota(order.begin(), order.end(), 0);
      std::sort(order.begin(), order.end(), [&](int32_t a, int32_t b) {
        return row[size_t(a)] > row[size_t(b)] || (row[size_t(a)] == row[size_t(b)] && a < b);
      });
      const double mx = row[size_t(order[0])];
      double total = 0;
      for (float x : row) total += std::exp(double(x) - mx);
      double cum = 0;
      size_t k = 0;
      while (k < n && (k == 0 || cum < p * total)) cum += std::exp(double(row[size_t(order[k++])]) - mx);
      INFO("trial " << trial << " n " << n << " p " << p);
      CHECK(ids_of(run(TopP{p}, row)) == Ids(order.begin(), order.begin() + ptrdiff_t(k)));
    }
  }
}

TEST_CASE("min-p keeps tokens at least p times as likely as the best", "[sampling]") {
  const std::vector<float> l = log_probs({0.05, 0.5, 0.15, 0.3});
  CHECK(set_of(run(MinP{0.25f}, l)) == std::set<int32_t>{1, 3, 2});  // >= 0.125
  CHECK(set_of(run(MinP{0.5f}, l)) == std::set<int32_t>{1, 3});      // >= 0.25
  CHECK(set_of(run(MinP{0.05f}, l)) == std::set<int32_t>{0, 1, 2, 3});
  CHECK(set_of(run(MinP{1.0f}, l)) == std::set<int32_t>{1});
  CHECK(run(MinP{0.0f}, l).size() == 4);  // off
}

TEST_CASE("the standard chain runs penalties before the filters", "[sampling]") {
  SamplingParams p;
  p.greedy = false;
  p.top_k = 1;
  p.repetition_penalty = 4.0f;
  Sampler s(p);
  s.set_context(Ids{2});
  // Token 2 leads (4 vs 3) until the penalty divides it to 1: top-k 1 then leaves token 0 only.
  for (int i = 0; i < 20; ++i) CHECK(s.sample(std::vector<float>{3, 0, 4}) == 0);
  CHECK(ids_of(s.candidates()) == Ids{0});
}

TEST_CASE("greedy: argmax after the penalties", "[sampling]") {
  Sampler plain;  // the default: greedy, no processors
  CHECK(plain.next(std::vector<float>{0, 2, 1}) == 1);
  SamplingParams p;
  p.presence_penalty = 1.5f;
  Sampler s(p);
  const std::vector<float> l = {0, 2, 1.0f};
  CHECK(s.next(l) == 1);  // 2 > 1
  CHECK(s.next(l) == 2);  // token 1 now 0.5 < 1
  CHECK(s.next(l) == 1);  // token 2 now -0.5; token 1 stays at 0.5 (presence counts once)
  SamplingParams t0;
  t0.greedy = false;
  t0.temperature = 0;  // temperature 0 is greedy
  Sampler z(t0);
  for (int i = 0; i < 10; ++i) CHECK(z.next(std::vector<float>{0, 2, 2.5f, 1}) == 2);
}

TEST_CASE("seeded sampling is reproducible", "[sampling]") {
  SamplingParams p;
  p.greedy = false;
  p.temperature = 0.9f;
  p.top_p = 0.95f;
  p.seed = 42;
  std::mt19937 rng(1);
  std::vector<std::vector<float>> rows(300, std::vector<float>(1000));
  for (auto& r : rows)
    for (float& x : r) x = std::normal_distribution<float>(0, 3)(rng);
  auto draw = [&](uint64_t seed) {
    SamplingParams q = p;
    q.seed = seed;
    Sampler s(q);
    Ids out;
    for (auto& r : rows) out.push_back(s.next(r));
    return out;
  };
  const Ids a = draw(42), b = draw(42), c = draw(43);
  CHECK(a == b);
  CHECK(a != c);
  // reseed() restarts the stream.
  Sampler s(p);
  const int32_t first = s.sample(rows[0]);
  s.sample(rows[1]);
  s.reseed(42);
  CHECK(s.sample(rows[0]) == first);
}

TEST_CASE("drawn frequencies follow the processed distribution (chi-square, fixed seed)", "[sampling]") {
  const std::vector<double> p = {0.4, 0.3, 0.2, 0.1};
  const std::vector<float> l = log_probs(p);
  const int n = 40000;
  auto params = [](uint64_t seed) {
    SamplingParams sp;
    sp.greedy = false;
    sp.seed = seed;
    return sp;
  };
  SECTION("plain softmax") {
    Sampler s(params(1));
    const auto counts = draw_counts(s, l, n);
    CHECK(chi_square(counts, p, n) < chi2_999(3));
  }
  SECTION("temperature 2: p^(1/2), renormalized") {
    SamplingParams sp = params(2);
    sp.temperature = 2;
    Sampler s(sp);
    std::vector<double> q;
    for (double x : p) q.push_back(std::sqrt(x));
    const double z = std::accumulate(q.begin(), q.end(), 0.0);
    for (double& x : q) x /= z;
    CHECK(chi_square(draw_counts(s, l, n), q, n) < chi2_999(3));
  }
  SECTION("top-k 2: the two best, renormalized; the others never") {
    SamplingParams sp = params(3);
    sp.top_k = 2;
    Sampler s(sp);
    auto counts = draw_counts(s, l, n);
    CHECK(counts[2] == 0);
    CHECK(counts[3] == 0);
    counts.resize(2);
    CHECK(chi_square(counts, {0.4 / 0.7, 0.3 / 0.7}, n) < chi2_999(1));
  }
  SECTION("top-p 0.75 and min-p 0.3: the three best") {
    for (int which = 0; which < 2; ++which) {
      SamplingParams sp = params(4);
      (which == 0 ? sp.top_p : sp.min_p) = which == 0 ? 0.75f : 0.3f;  // min-p: >= 0.12
      Sampler s(sp);
      auto counts = draw_counts(s, l, n);
      CHECK(counts[3] == 0);
      counts.resize(3);
      CHECK(chi_square(counts, {0.4 / 0.9, 0.3 / 0.9, 0.2 / 0.9}, n) < chi2_999(2));
    }
  }
  SECTION("a large vocabulary: the mass lands where the softmax puts it") {
    std::vector<float> big(129280, -12.0f);
    const std::vector<int32_t> hot = {7, 50000, 129279, 100};
    for (size_t i = 0; i < hot.size(); ++i) big[size_t(hot[i])] = l[i];
    // The cold tokens together: 129276 * e^-12 (~0.79) relative to the hot ones' sum of 1.
    const double cold = 129276 * std::exp(-12.0);
    Sampler s(params(5));
    std::vector<int> counts(5, 0);
    const int n = 3000;  // each draw handles the whole row
    for (int i = 0; i < n; ++i) {
      const int32_t t = s.sample(big);
      const auto it = std::find(hot.begin(), hot.end(), t);
      ++counts[it == hot.end() ? 4 : size_t(it - hot.begin())];
    }
    std::vector<double> q = p;
    q.push_back(cold);
    for (double& x : q) x /= 1 + cold;
    CHECK(chi_square(counts, q, n) < chi2_999(4));
  }
}

TEST_CASE("custom processors join the chain", "[sampling]") {
  Sampler s(SamplingParams{});
  s.add([](Candidates& c, const TokenHistory&) { c.keep_if([](int32_t id, float) { return id != 1; }); });  // ban token 1
  CHECK(s.next(std::vector<float>{0, 5, 1}) == 2);
  Sampler none({}, true, 0);
  none.add([](Candidates& c, const TokenHistory&) { c.keep_if([](int32_t, float) { return false; }); });
  CHECK_THROWS_WITH(none.next(std::vector<float>{1, 2}), Catch::Contains("no candidate"));
}

TEST_CASE("bad sampling parameters are refused with the field named", "[sampling]") {
  auto bad = [](auto edit, const char* field) {
    SamplingParams p;
    edit(p);
    CHECK_THROWS_WITH(Sampler(p), Catch::Contains(field));
  };
  bad([](SamplingParams& p) { p.temperature = -1; }, "temperature");
  bad([](SamplingParams& p) { p.temperature = NAN; }, "temperature");
  bad([](SamplingParams& p) { p.top_p = 0; }, "top_p");
  bad([](SamplingParams& p) { p.top_p = 1.5f; }, "top_p");
  bad([](SamplingParams& p) { p.min_p = -0.1f; }, "min_p");
  bad([](SamplingParams& p) { p.top_k = -3; }, "top_k");
  bad([](SamplingParams& p) { p.repetition_penalty = 0; }, "repetition_penalty");
  bad([](SamplingParams& p) { p.frequency_penalty = INFINITY; }, "frequency_penalty");
  Sampler s;
  CHECK_THROWS_WITH(s.next(std::vector<float>{}), Catch::Contains("empty"));
  SamplingParams p;
  p.greedy = false;
  Sampler all_inf(p);
  CHECK_THROWS_WITH(all_inf.next(std::vector<float>{-INFINITY, -INFINITY}), Catch::Contains("probability 0"));
}

// ---- stop strings

namespace {

// Pushes the pieces; returns everything released (flushed at the end unless stopped).
std::string stream(StopStrings& st, const std::vector<std::string>& pieces, std::vector<std::string>* released = nullptr) {
  std::string out;
  for (const std::string& p : pieces) {
    const StopStrings::Result r = st.push(p);
    out += r.text;
    if (released) released->push_back(r.text);
    if (r.stopped) return out;
  }
  return out + st.flush();
}

}  // namespace

TEST_CASE("stop strings split across pieces are never released", "[sampling][stop]") {
  StopStrings st({"User:"});
  std::vector<std::string> rel;
  CHECK(stream(st, {"Hello Us", "er", ": hi"}, &rel) == "Hello ");
  CHECK(rel == std::vector<std::string>{"Hello ", "", ""});
  CHECK(st.stopped());
  CHECK(st.matched() == "User:");
  CHECK(st.push("more").text.empty());  // nothing after a stop

  SECTION("a false start is released once it cannot be a stop") {
    StopStrings s2({"User:"});
    std::vector<std::string> r2;
    CHECK(stream(s2, {"Us", "ed ", "Use", "r"}, &r2) == "Used User");
    CHECK(r2 == std::vector<std::string>{"", "Used ", "", ""});  // "User" is held until the end
    CHECK_FALSE(s2.stopped());
  }
  SECTION("overlapping prefixes") {
    StopStrings s3({"aab"});
    CHECK(stream(s3, {"a", "a", "a", "b", "c"}) == "a");
    CHECK(s3.stopped());
  }
  SECTION("the earliest complete stop wins") {
    StopStrings s4({"world", "o w"});
    CHECK(stream(s4, {"hello world"}) == "hell");
    CHECK(s4.matched() == "o w");
  }
  SECTION("multi-byte characters, a stop inside one piece, an empty stop refused") {
    StopStrings s5({"。\n"});
    const std::string dot = "。";
    CHECK(stream(s5, {"你好", dot, "\n再见"}) == "你好");
    StopStrings s5b({"。\n"});
    CHECK(stream(s5b, {"你好" + dot.substr(0, 1), dot.substr(1), "\n再见"}) == "你好");
    StopStrings s6({"END"});
    CHECK(stream(s6, {"abcENDdef"}) == "abc");
    CHECK_THROWS_WITH(StopStrings({"ok", ""}), Catch::Contains("entry 1 is empty"));
  }
  SECTION("no stops: everything passes at once") {
    StopStrings none;
    CHECK(none.push("abc").text == "abc");
    CHECK(none.held_bytes() == 0);
  }
}

TEST_CASE("stop strings: random texts and splits agree with a plain search", "[sampling][stop]") {
  // The rule: generation stops at the first piece after which the text so far contains a stop
  // string, and the output is the text before the earliest occurrence.
  std::mt19937 rng(9);
  auto rand_str = [&](size_t len) {
    std::string s;
    for (size_t i = 0; i < len; ++i) s += char('a' + rng() % 3);
    return s;
  };
  int stopped_runs = 0;
  for (int trial = 0; trial < 3000; ++trial) {
    const std::string text = rand_str(rng() % 40);
    std::vector<std::string> stops;
    for (size_t k = 1 + rng() % 3; k > 0; --k) stops.push_back(rand_str(1 + rng() % 5));
    std::vector<std::string> pieces;
    for (size_t i = 0; i < text.size();) {
      const size_t len = std::min(text.size() - i, size_t(rng() % 5));
      pieces.push_back(text.substr(i, len));
      i += len;
    }
    // The expected output, by a plain search after each piece.
    std::string expect, so_far;
    bool expect_stop = false;
    for (const auto& p : pieces) {
      so_far += p;
      size_t first = std::string::npos;
      for (const auto& s : stops) first = std::min(first, so_far.find(s));
      if (first != std::string::npos) {
        expect = so_far.substr(0, first);
        expect_stop = true;
        break;
      }
    }
    if (!expect_stop) expect = text;
    StopStrings st(stops);
    std::string released;
    bool stopped = false;
    for (const auto& p : pieces) {
      const auto r = st.push(p);
      released += r.text;
      REQUIRE(expect.compare(0, released.size(), released) == 0);  // only ever a prefix of the output
      if (r.stopped) {
        stopped = true;
        break;
      }
    }
    if (!stopped) released += st.flush();
    INFO("text " << text << " trial " << trial);
    CHECK(stopped == expect_stop);
    CHECK(released == expect);
    stopped_runs += stopped;
  }
  CHECK(stopped_runs > 1000);
}
