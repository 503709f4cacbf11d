// Unit tests of the building blocks, each against an independently written version of the
// formula in ARCHITECTURE.md (MLA.md for DeepSeek-V3's parts): RoPE/YaRN (and MLA's pairing and
// mscale), Sinkhorn, routers (and V3's group-limited one) and the MoE weights, compressors,
// SwiGLU clamp, RMSNorm, and the reference matmul.
#include <catch2/catch.hpp>

#include <cmath>
#include <map>
#include <numeric>
#include <random>

#include "test_util.hpp"

using namespace dsv4;
using namespace dsv4::testing;

namespace {

std::vector<float> random_floats(size_t n, uint32_t seed, float lo = -1.f, float hi = 1.f) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(lo, hi);
  std::vector<float> v(n);
  for (auto& x : v) x = u(rng);
  return v;
}

double norm2(const float* v, int64_t n) {
  double s = 0;
  for (int64_t i = 0; i < n; ++i) s += double(v[i]) * v[i];
  return std::sqrt(s);
}

Matrix f32_matrix(const std::vector<float>& v, int64_t n, int64_t k) {
  REQUIRE(int64_t(v.size()) == n * k);
  return F32Matrix{reinterpret_cast<const uint8_t*>(v.data()), n, k};
}

// Rotates the last r dims of v (interleaved pairs) by angle pos * f_i, in double.
void rope_expected(std::vector<double>& v, const std::vector<float>& inv_freq, int64_t pos) {
  const int64_t r = int64_t(inv_freq.size()) * 2, off = int64_t(v.size()) - r;
  for (int64_t i = 0; i < r / 2; ++i) {
    const double ang = double(float(pos) * inv_freq[size_t(i)]);
    const double a = v[size_t(off + 2 * i)], b = v[size_t(off + 2 * i + 1)];
    v[size_t(off + 2 * i)] = a * std::cos(ang) - b * std::sin(ang);
    v[size_t(off + 2 * i + 1)] = a * std::sin(ang) + b * std::cos(ang);
  }
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// RoPE

TEST_CASE("RoPE tables match the golden rope_inv_freq tensors for both config spellings", "[units][rope]") {
  MappedFile f(kTinyDir + "/expected.safetensors");
  std::map<std::string, TensorView> golden;
  for (auto& t : parse_safetensors({f.data(), f.size()}, f.path())) golden[t.name] = t;
  auto golden_floats = [&](const std::string& name) {
    const TensorView& t = golden.at(name);
    REQUIRE(t.dtype == DType::F32);
    std::vector<float> v(static_cast<size_t>(t.numel()));
    std::memcpy(v.data(), t.data, t.nbytes);
    return v;
  };
  const auto want_main = golden_floats("rope_inv_freq.main");
  const auto want_compress = golden_floats("rope_inv_freq.compress");
  const std::string layout = GENERATE("hf", "orig");
  const ModelConfig c = load_config(kTinyDir + "/" + layout);
  INFO("layout " << layout);
  REQUIRE(c.rope_dim == 8);
  const RopeTable rope_main(c.rope_main, c.rope_dim), compress(c.rope_compress, c.rope_dim);
  REQUIRE(rope_main.inv_freq().size() == want_main.size());
  REQUIRE(compress.inv_freq().size() == want_compress.size());
  for (size_t i = 0; i < want_main.size(); ++i) {
    CHECK(rope_main.inv_freq()[i] == Approx(want_main[i]).epsilon(1e-6));
    CHECK(compress.inv_freq()[i] == Approx(want_compress[i]).epsilon(1e-6));
  }
  CHECK(compress.inv_freq() != rope_main.inv_freq());  // YaRN and the other theta changed something
}

TEST_CASE("RoPE rotates interleaved pairs of the last r dims", "[units][rope]") {
  const int64_t d = 12, r = 8;
  const RopeTable rope(RopeConfig{10000.0, {}}, r);
  REQUIRE(rope.dims() == r);
  const int64_t pos = GENERATE(0, 1, 7, 1000, 123457);
  for (int64_t i = 0; i < r / 2; ++i) {
    const double ang = double(float(pos) * rope.inv_freq()[size_t(i)]);
    // Unit vector on the first dim of pair i -> (cos, sin); on the second -> (-sin, cos).
    for (int which = 0; which < 2; ++which) {
      std::vector<float> v(static_cast<size_t>(d), 0.f);
      v[size_t(d - r + 2 * i + which)] = 1.f;
      rope.apply(v.data(), d, pos);
      INFO("pos " << pos << " pair " << i << " which " << which);
      for (int64_t j = 0; j < d; ++j) {
        double want = 0;
        if (j == d - r + 2 * i) want = which == 0 ? std::cos(ang) : -std::sin(ang);
        if (j == d - r + 2 * i + 1) want = which == 0 ? std::sin(ang) : std::cos(ang);
        CHECK(double(v[size_t(j)]) == Approx(want).margin(1e-6));
      }
    }
  }
}

TEST_CASE("MLA RoPE: split-half pairs (i, i + r/2) and the mscale amplitude", "[units][rope][mla]") {
  const int64_t d = 10, r = 6, pos = 37;
  const double amplitude = GENERATE(1.0, 0.8);
  const RopeTable rope(RopeConfig{10000.0, {}}, r, /*interleave=*/false, amplitude);
  for (int64_t i = 0; i < r / 2; ++i)
    for (int which = 0; which < 2; ++which) {
      std::vector<float> v(static_cast<size_t>(d), 0.f);
      const int64_t a = d - r + i, b = a + r / 2;  // the pair
      v[size_t(which ? b : a)] = 1.f;
      rope.apply(v.data(), d, pos);
      const double ang = double(float(pos) * rope.inv_freq()[size_t(i)]);
      for (int64_t j = 0; j < d; ++j) {
        double want = 0;
        if (j == a) want = which == 0 ? std::cos(ang) : -std::sin(ang);
        if (j == b) want = which == 0 ? std::sin(ang) : std::cos(ang);
        INFO("pair " << i << " which " << which << " dim " << j);
        CHECK(double(v[size_t(j)]) == Approx(want * amplitude).margin(1e-6));
      }
    }
}

TEST_CASE("MLA YaRN factors: ms(f, m) = 0.1 m ln f + 1, amplitude and score factor", "[units][rope][mla]") {
  YarnConfig y;
  CHECK(mla_rope_amplitude(y) == 1.0);  // no YaRN
  CHECK(mla_score_factor(y) == 1.0);
  y.enabled = true;
  y.factor = 40;
  const double ms1 = 0.1 * std::log(40.0) + 1;
  CHECK(mla_rope_amplitude(y) == Approx(ms1));  // mscale missing: ms(f, 1)
  CHECK(mla_score_factor(y) == 1.0);            // mscale_all_dim missing
  y.mscale = 1.0, y.mscale_all_dim = 1.0;       // DeepSeek-V3's release
  CHECK(mla_rope_amplitude(y) == Approx(1.0));
  CHECK(mla_score_factor(y) == Approx(ms1 * ms1));
  y.mscale = 0.707, y.mscale_all_dim = 0.5;
  CHECK(mla_rope_amplitude(y) == Approx((0.1 * 0.707 * std::log(40.0) + 1) / (0.1 * 0.5 * std::log(40.0) + 1)));
  y.attention_factor = 1.25;  // given explicitly: used as is
  CHECK(mla_rope_amplitude(y) == 1.25);
  y.attention_factor = 0;
  y.factor = 1.0;  // ms = 1 for f <= 1
  CHECK(mla_rope_amplitude(y) == 1.0);
  CHECK(mla_score_factor(y) == 1.0);
}

TEST_CASE("YaRN with truncate off keeps the correction range unrounded", "[units][rope]") {
  const int64_t r = 16;
  const double theta = 10000, factor = 8, L = 100000, bf = 32, bs = 1;
  YarnConfig y{true, factor, L, bf, bs};
  y.truncate = false;
  const RopeTable rope(RopeConfig{theta, y}, r);
  auto corr = [&](double rot) { return r * std::log(L / (rot * 2 * M_PI)) / (2 * std::log(theta)); };
  const double low = std::max(corr(bf), 0.0), high = std::min(corr(bs), double(r - 1));
  REQUIRE(low != std::floor(low));  // the case would not notice rounding otherwise
  for (int64_t i = 0; i < r / 2; ++i) {
    const double f = std::pow(theta, -2.0 * double(i) / double(r));
    const double ramp = std::clamp((double(i) - low) / (high - low), 0.0, 1.0);
    CHECK(rope.inv_freq()[size_t(i)] == Approx(f / factor * ramp + f * (1 - ramp)).epsilon(1e-6));
  }
}

TEST_CASE("RoPE: +pos then -pos is the identity and rotation preserves the norm", "[units][rope]") {
  const int64_t d = 32, r = 8;
  RopeConfig cfg{160000.0, {true, 4.0, 128, 32, 1}};
  const RopeTable rope(cfg, r);
  const auto v0 = random_floats(size_t(d), 3, -2.f, 2.f);
  for (int64_t pos : {0, 5, 300, 99999}) {
    auto v = v0;
    rope.apply(v.data(), d, pos);
    for (int64_t j = 0; j < d - r; ++j) REQUIRE(v[size_t(j)] == v0[size_t(j)]);  // pass-through dims
    CHECK(norm2(v.data(), d) == Approx(norm2(v0.data(), d)).epsilon(1e-6));
    std::vector<double> want(v0.begin(), v0.end());
    rope_expected(want, rope.inv_freq(), pos);
    for (int64_t j = 0; j < d; ++j) CHECK(double(v[size_t(j)]) == Approx(want[size_t(j)]).margin(1e-5));
    if (pos > 0) CHECK(v != v0);
    rope.apply(v.data(), d, pos, -1);
    for (int64_t j = 0; j < d; ++j) CHECK(v[size_t(j)] == Approx(v0[size_t(j)]).margin(1e-5));
  }
}

TEST_CASE("YaRN frequencies follow the ramp between extrapolation and interpolation", "[units][rope]") {
  const int64_t r = 16;
  const double theta = 160000, factor = 4, L = 128, bf = 32, bs = 1;
  const RopeTable rope(RopeConfig{theta, {true, factor, L, bf, bs}}, r);
  auto corr = [&](double rot) { return r * std::log(L / (rot * 2 * M_PI)) / (2 * std::log(theta)); };
  const double low = std::max(std::floor(corr(bf)), 0.0), high = std::min(std::ceil(corr(bs)), double(r - 1));
  REQUIRE(low < high);
  for (int64_t i = 0; i < r / 2; ++i) {
    const double f = std::pow(theta, -2.0 * double(i) / double(r));
    const double ramp = std::clamp((double(i) - low) / (high - low), 0.0, 1.0);
    const double want = f * (1 - ramp) + f / factor * ramp;
    CHECK(double(rope.inv_freq()[size_t(i)]) == Approx(want).epsilon(1e-6));
  }
  // Without YaRN: the plain table.
  const RopeTable plain(RopeConfig{theta, {}}, r);
  for (int64_t i = 0; i < r / 2; ++i)
    CHECK(double(plain.inv_freq()[size_t(i)]) == Approx(std::pow(theta, -2.0 * double(i) / double(r))).epsilon(1e-6));
}

TEST_CASE("YaRN with an empty correction range (low == high)", "[units][rope]") {
  // Both correction dims are negative (beta > L / 2pi): low = max(floor, 0) = 0 and
  // high = ceil(small negative) = 0. The ramp then becomes a step at 0 + 0.001: dim 0 keeps
  // its frequency, every other dim is fully interpolated (f / factor).
  const int64_t r = 8;
  const double theta = 10000, factor = 8, L = 2 * M_PI * 100;
  const RopeTable rope(RopeConfig{theta, {true, factor, L, 1000.0, 101.0}}, r);
  for (int64_t i = 0; i < r / 2; ++i) {
    const double f = std::pow(theta, -2.0 * double(i) / double(r));
    CHECK(double(rope.inv_freq()[size_t(i)]) == Approx(i == 0 ? f : f / factor).epsilon(1e-6));
  }
}

// ---------------------------------------------------------------------------------------------
// Sinkhorn

TEST_CASE("Sinkhorn: hand-computed 2x2 with one iteration", "[units][sinkhorn]") {
  // logits [[0, 0], [0, ln 3]] -> softmax rows [.5 .5], [.25 .75]; + eps 0.1 -> [.6 .6], [.35 .85];
  // column sums .95, 1.45 -> divide by 1.05 and 1.55.
  float c[4] = {0.f, 0.f, 0.f, float(std::log(3.0))};
  sinkhorn(c, 2, 1, 0.1f);
  CHECK(c[0] == Approx(0.6 / 1.05).epsilon(1e-6));
  CHECK(c[1] == Approx(0.6 / 1.55).epsilon(1e-6));
  CHECK(c[2] == Approx(0.35 / 1.05).epsilon(1e-6));
  CHECK(c[3] == Approx(0.85 / 1.55).epsilon(1e-6));
}

TEST_CASE("Sinkhorn matches an independent version and converges to doubly stochastic", "[units][sinkhorn]") {
  const int64_t n = GENERATE(3, 4, 5);
  const int64_t iters = GENERATE(1, 2, 20);
  const double eps = 1e-6;
  auto logits = random_floats(size_t(n * n), uint32_t(n * 100 + iters), -3.f, 3.f);
  // Independent version in double.
  std::vector<double> w(logits.begin(), logits.end());
  for (int64_t i = 0; i < n; ++i) {
    double mx = -1e300, s = 0;
    for (int64_t j = 0; j < n; ++j) mx = std::max(mx, w[size_t(i * n + j)]);
    for (int64_t j = 0; j < n; ++j) s += std::exp(w[size_t(i * n + j)] - mx);
    for (int64_t j = 0; j < n; ++j) w[size_t(i * n + j)] = std::exp(w[size_t(i * n + j)] - mx) / s + eps;
  }
  auto by = [&](bool rows_first) {
    for (int64_t a = 0; a < n; ++a) {
      double s = 0;
      for (int64_t b = 0; b < n; ++b) s += rows_first ? w[size_t(a * n + b)] : w[size_t(b * n + a)];
      for (int64_t b = 0; b < n; ++b) (rows_first ? w[size_t(a * n + b)] : w[size_t(b * n + a)]) /= (s + eps);
    }
  };
  by(false);
  for (int64_t it = 1; it < iters; ++it) by(true), by(false);

  sinkhorn(logits.data(), n, iters, float(eps));
  INFO("n " << n << " iters " << iters);
  for (size_t i = 0; i < w.size(); ++i) CHECK(double(logits[i]) == Approx(w[i]).margin(1e-5));
  for (int64_t j = 0; j < n; ++j) {  // columns were normalized last
    double s = 0;
    for (int64_t i = 0; i < n; ++i) s += logits[size_t(i * n + j)];
    CHECK(s == Approx(1.0).margin(1e-5));
  }
  if (iters == 20) {
    for (int64_t i = 0; i < n; ++i) {
      double s = 0;
      for (int64_t j = 0; j < n; ++j) s += logits[size_t(i * n + j)];
      CHECK(s == Approx(1.0).margin(1e-3));
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Routers and the MoE combination

TEST_CASE("HashRouter takes the experts from its table", "[units][router]") {
  HashRouter r{{0, 1, 2, 3, 4, 5, 6, 7, 1, 6}, 2};  // vocab 5, k 2
  const int32_t tokens[] = {4, 0, 2, 2};
  int64_t e[8];
  r.choose(nullptr, tokens, 4, e);
  CHECK(std::vector<int64_t>(e, e + 8) == std::vector<int64_t>{1, 6, 0, 1, 4, 5, 4, 5});
}

TEST_CASE("TopKRouter picks the top k of score + bias, ties to the lower index", "[units][router]") {
  const float s[] = {0.9f, 0.1f, 0.5f, 0.7f,   // token 0
                     0.3f, 0.3f, 0.3f, 0.3f};  // token 1: all tied
  int64_t e[4];
  TopKRouter plain{{0, 0, 0, 0}, 2};
  plain.choose(s, nullptr, 2, e);
  CHECK(std::vector<int64_t>(e, e + 4) == std::vector<int64_t>{0, 3, 0, 1});
  TopKRouter biased{{0, 1.0f, 0, 0}, 2};  // expert 1 gets in although its score is the lowest
  biased.choose(s, nullptr, 2, e);
  CHECK(std::vector<int64_t>(e, e + 4) == std::vector<int64_t>{1, 0, 1, 0});
}

TEST_CASE("The routers rank NaN scores below every number: k distinct in-range ids", "[units][router]") {
  const float nan = std::nanf("");
  const float s[] = {nan, 0.2f, nan, 0.1f,   // token 0: NaN never beats a number
                     nan, nan, nan, nan,     // token 1: all NaN -> the lowest ids
                     nan, -INFINITY, 0.f, nan};  // token 2: NaN ties with -inf, to the lower index
  int64_t e[6];
  TopKRouter{{0, 0, 0, 0}, 2}.choose(s, nullptr, 3, e);
  CHECK(std::vector<int64_t>(e, e + 6) == std::vector<int64_t>{1, 3, 0, 1, 2, 0});
  // V3's group-limited router: NaN logits give NaN scores; a NaN group ranks last.
  ModelConfig c;
  c.n_routed_experts = 4, c.n_group = 2, c.topk_group = 1, c.n_experts_per_tok = 2;
  c.routed_scaling_factor = 1.0;
  const float l[] = {nan, nan, 0.5f, -0.5f,  // group 1 wins; its experts by score
                     nan, nan, nan, nan};    // all NaN: group 0, experts 0 and 1
  int64_t g[4];
  float w[4];
  GroupLimitedRouter{{0, 0, 0, 0}}.route(c, l, nullptr, 2, g, w);
  CHECK(std::vector<int64_t>(g, g + 4) == std::vector<int64_t>{2, 3, 0, 1});
}

namespace {

// Expert e(x) = w2 (silu(min(w1 x, L)) * clamp(w3 x, -L, L)), in double.
std::vector<double> expert_expected(const std::vector<float>& w1, const std::vector<float>& w2,
                                    const std::vector<float>& w3, int64_t D, int64_t I, double L, const float* x) {
  std::vector<double> h(static_cast<size_t>(I)), out(static_cast<size_t>(D), 0.0);
  for (int64_t i = 0; i < I; ++i) {
    double g = 0, u = 0;
    for (int64_t j = 0; j < D; ++j) g += double(w1[size_t(i * D + j)]) * x[j], u += double(w3[size_t(i * D + j)]) * x[j];
    if (L > 0) g = std::min(g, L), u = std::clamp(u, -L, L);
    h[size_t(i)] = g / (1 + std::exp(-g)) * u;
  }
  for (int64_t j = 0; j < D; ++j)
    for (int64_t i = 0; i < I; ++i) out[size_t(j)] += double(w2[size_t(j * I + i)]) * h[size_t(i)];
  return out;
}

}  // namespace

TEST_CASE("GroupLimitedRouter: sigmoid scores, bias for the choice, best groups by top-2 sum", "[units][router][v3]") {
  // E = 8 in G = 4 groups of 2, keep TG = 2 groups, k = 3.
  ModelConfig c;
  c.n_routed_experts = 8, c.n_group = 4, c.topk_group = 2, c.n_experts_per_tok = 3;
  c.routed_scaling_factor = 2.5;
  c.norm_topk_prob = GENERATE(true, false);
  const auto logit = [](double p) { return float(std::log(p / (1 - p))); };  // sigmoid^-1
  // Probabilities: group 0 = {0.9, 0.1} (sum 1.0), group 1 = {0.6, 0.6} (1.2), group 2 = {0.5, 0.45}
  // (0.95), group 3 = {0.3, 0.2} (0.5). Bias lifts expert 7: group 3 = {0.3, 0.9} (1.2).
  const std::vector<double> p = {0.9, 0.1, 0.6, 0.6, 0.5, 0.45, 0.3, 0.2};
  std::vector<float> l;
  for (double v : p) l.push_back(logit(v));
  const GroupLimitedRouter r{{0, 0, 0, 0, 0, 0, 0, 0.7f}};
  int64_t e[3];
  float w[3];
  r.route(c, l.data(), nullptr, 1, e, w);
  // Groups 1 and 3 win (1.2 each, ahead of group 0's 1.0); expert 0 (0.9, the best score) is out
  // with its group. Among 2, 3, 6, 7 by biased score: 7 (0.9), then 2 and 3 (0.6, tie -> lower).
  CHECK(std::vector<int64_t>(e, e + 3) == std::vector<int64_t>{7, 2, 3});
  const double sum = 0.2 + 0.6 + 0.6;  // weights use the unbiased sigmoid
  for (int j = 0; j < 3; ++j) {
    const double s = p[size_t(e[j])];
    CHECK(double(w[j]) == Approx((c.norm_topk_prob ? s / sum : s) * 2.5).epsilon(1e-5));
  }
}

TEST_CASE("moe_forward weights the chosen experts by unbiased s / (sum s + 1e-20) * scaling", "[units][moe]") {
  const int64_t D = 5, I = 3, E = 4, K = 2, T = 3;
  ModelConfig c;
  c.hidden_size = D;
  c.n_routed_experts = E;
  c.n_experts_per_tok = K;
  c.moe_intermediate_size = I;
  c.routed_scaling_factor = 1.5;
  c.swiglu_limit = GENERATE(0.0, 0.4);
  const bool use_hash = GENERATE(false, true);
  const bool with_shared = GENERATE(true, false);

  // Storage that the F32 matrices point into.
  const auto gate = random_floats(size_t(E * D), 1, -2.f, 2.f);
  std::vector<std::vector<float>> w1, w2, w3;
  for (int64_t e = 0; e <= E; ++e) {  // E routed + 1 shared
    w1.push_back(random_floats(size_t(I * D), uint32_t(10 + e)));
    w2.push_back(random_floats(size_t(D * I), uint32_t(20 + e)));
    w3.push_back(random_floats(size_t(I * D), uint32_t(30 + e)));
  }
  auto expert = [&](int64_t e) {
    return ExpertWeights{f32_matrix(w1[size_t(e)], I, D), f32_matrix(w2[size_t(e)], D, I), f32_matrix(w3[size_t(e)], I, D)};
  };
  MoeWeights m;
  m.gate = f32_matrix(gate, E, D);
  const std::vector<float> bias = {0.f, 0.f, 0.f, 50.f};  // expert 3 is always chosen
  const std::vector<int32_t> table = {2, 0, 1, 3, 3, 2, 0, 1};  // vocab 4
  if (use_hash) m.router = HashRouter{table, K};
  else m.router = TopKRouter{bias, K};
  for (int64_t e = 0; e < E; ++e) m.experts.push_back(expert(e));
  if (with_shared) m.shared.push_back(expert(E));

  const auto x = random_floats(size_t(T * D), 5, -1.5f, 1.5f);
  const std::vector<int32_t> tokens = {1, 3, 0};
  std::vector<float> out(static_cast<size_t>(T * D));
  moe_forward<Fp32Reference>(m, c, x.data(), tokens.data(), T, out.data());

  const double L = c.swiglu_limit;
  bool biased_weights_differ = false;
  for (int64_t t = 0; t < T; ++t) {
    std::vector<double> s(static_cast<size_t>(E));
    for (int64_t e = 0; e < E; ++e) {
      double l = 0;
      for (int64_t j = 0; j < D; ++j) l += double(gate[size_t(e * D + j)]) * x[size_t(t * D + j)];
      s[size_t(e)] = std::sqrt(std::log1p(std::exp(l)));
    }
    std::vector<int64_t> chosen;
    if (use_hash) {
      chosen = {table[size_t(tokens[size_t(t)] * K)], table[size_t(tokens[size_t(t)] * K + 1)]};
    } else {
      std::vector<int64_t> idx(static_cast<size_t>(E));
      std::iota(idx.begin(), idx.end(), 0);
      std::stable_sort(idx.begin(), idx.end(), [&](int64_t a, int64_t b) {
        return s[size_t(a)] + bias[size_t(a)] > s[size_t(b)] + bias[size_t(b)];
      });
      chosen.assign(idx.begin(), idx.begin() + K);
      REQUIRE(chosen[0] == 3);
    }
    double sum = 0, sum_biased = 0;
    for (int64_t e : chosen) sum += s[size_t(e)], sum_biased += s[size_t(e)] + bias[size_t(e)];
    std::vector<double> want(static_cast<size_t>(D), 0.0);
    if (with_shared) want = expert_expected(w1[size_t(E)], w2[size_t(E)], w3[size_t(E)], D, I, L, &x[size_t(t * D)]);
    for (int64_t e : chosen) {
      const double w = s[size_t(e)] / (sum + 1e-20) * 1.5;
      const double wb = (s[size_t(e)] + bias[size_t(e)]) / (sum_biased + 1e-20) * 1.5;
      biased_weights_differ |= std::fabs(w - wb) > 0.1;
      const auto y = expert_expected(w1[size_t(e)], w2[size_t(e)], w3[size_t(e)], D, I, L, &x[size_t(t * D)]);
      for (int64_t j = 0; j < D; ++j) want[size_t(j)] += w * y[size_t(j)];
    }
    INFO("token " << t << " hash " << use_hash << " shared " << with_shared << " limit " << L);
    for (int64_t j = 0; j < D; ++j) CHECK(double(out[size_t(t * D + j)]) == Approx(want[size_t(j)]).margin(1e-5));
  }
  if (!use_hash) CHECK(biased_weights_differ);  // the test would notice biased weights
}

TEST_CASE("SwiGLU clamp: gate clamped above only, up clamped both ways, limit <= 0 disables", "[units][moe]") {
  // D = I = 1: w1 = 1, w3 = 1, w2 = 1, so out = silu(min(g, L)) * clamp(u, -L, L) with g = u = x.
  const float one = 1.0f;
  const F32Matrix unit{reinterpret_cast<const uint8_t*>(&one), 1, 1};
  const ExpertWeights w{unit, unit, unit};
  auto silu_d = [](double v) { return v / (1 + std::exp(-v)); };
  auto run = [&](float limit, float x) {
    float out = 0;
    swiglu_expert<Fp32Reference>(w, limit, &x, 1, &out);
    return double(out);
  };
  CHECK(run(1.5f, 5.0f) == Approx(silu_d(1.5) * 1.5).epsilon(1e-6));
  CHECK(run(1.5f, -5.0f) == Approx(silu_d(-5.0) * -1.5).epsilon(1e-6));  // gate not clamped below
  CHECK(run(1.5f, 0.7f) == Approx(silu_d(0.7) * 0.7).epsilon(1e-6));
  CHECK(run(0.0f, 5.0f) == Approx(silu_d(5.0) * 5.0).epsilon(1e-6));
  CHECK(run(-1.0f, 5.0f) == Approx(silu_d(5.0) * 5.0).epsilon(1e-6));
  CHECK(run(0.0f, -5.0f) == Approx(silu_d(-5.0) * -5.0).epsilon(1e-6));
}

TEST_CASE("rms_norm with and without weight, in place", "[units][ops]") {
  const int64_t n = 37;
  const auto x = random_floats(size_t(n), 9, -3.f, 3.f), w = random_floats(size_t(n), 10);
  const float eps = 1e-3f;
  double ms = 0;
  for (float v : x) ms += double(v) * v;
  const double inv = 1 / std::sqrt(ms / double(n) + eps);
  std::vector<float> out(static_cast<size_t>(n)), in_place = x;
  rms_norm(x.data(), nullptr, n, eps, out.data());
  for (int64_t i = 0; i < n; ++i) CHECK(double(out[size_t(i)]) == Approx(x[size_t(i)] * inv).margin(1e-6));
  rms_norm(in_place.data(), w.data(), n, eps, in_place.data());
  for (int64_t i = 0; i < n; ++i)
    CHECK(double(in_place[size_t(i)]) == Approx(x[size_t(i)] * inv * w[size_t(i)]).margin(1e-6));
  float zeros[4] = {0, 0, 0, 0};
  rms_norm(zeros, nullptr, 4, eps, zeros);  // eps keeps it finite
  CHECK(zeros[0] == 0.0f);
}

// ---------------------------------------------------------------------------------------------
// Compressors

namespace {

struct CompressorFixture {
  int64_t m, c, D = 6, r = 4;
  bool overlap;
  std::vector<float> wkv, wgate;
  CompressorWeights w;
  RopeTable rope;
  float eps = 1e-6f;

  CompressorFixture(int64_t ratio, int64_t width, bool ov) : m(ratio), c(width), overlap(ov) {
    const int64_t pw = overlap ? 2 * c : c;
    wkv = random_floats(size_t(pw * D), 100);
    wgate = random_floats(size_t(pw * D), 101, -2.f, 2.f);
    w.ratio = m;
    w.width = c;
    w.overlap = overlap;
    w.wkv = f32_matrix(wkv, pw, D);
    w.wgate = f32_matrix(wgate, pw, D);
    w.ape = random_floats(size_t(m * pw), 102);
    w.norm = random_floats(size_t(c), 103, 0.5f, 1.5f);
    rope = RopeTable(RopeConfig{10000.0, {}}, r);
  }

  // Feeds x [T, D] (positions start..start+T-1) as one segment.
  void feed(CompressorState& st, const float* x, int64_t t, int64_t pos0) const {
    std::vector<float> a, z;
    compressor_project<Fp32Reference>(w, x, t, {Segment{0, t, pos0}}, a, z);
    compressor_feed(w, st, a.data(), z.data(), t, pos0, rope, eps);
  }

  // The spec formula, written directly: entries [T / m, c].
  std::vector<double> expected(const std::vector<float>& x, int64_t T) const {
    const int64_t pw = overlap ? 2 * c : c;
    std::vector<double> a(static_cast<size_t>(T * pw)), z(a.size());
    for (int64_t t = 0; t < T; ++t)
      for (int64_t o = 0; o < pw; ++o) {
        double sa = 0, sz = 0;
        for (int64_t j = 0; j < D; ++j) {
          sa += double(wkv[size_t(o * D + j)]) * x[size_t(t * D + j)];
          sz += double(wgate[size_t(o * D + j)]) * x[size_t(t * D + j)];
        }
        a[size_t(t * pw + o)] = sa;
        z[size_t(t * pw + o)] = sz + w.ape[size_t((t % m) * pw + o)];
      }
    std::vector<double> out;
    for (int64_t e = 0; (e + 1) * m <= T; ++e) {
      std::vector<double> entry(static_cast<size_t>(c));
      for (int64_t ch = 0; ch < c; ++ch) {
        std::vector<std::pair<double, double>> slots;  // (gate, value)
        if (overlap && e > 0)
          for (int64_t t = (e - 1) * m; t < e * m; ++t) slots.push_back({z[size_t(t * pw + ch)], a[size_t(t * pw + ch)]});
        const int64_t half = overlap ? c : 0;
        for (int64_t t = e * m; t < (e + 1) * m; ++t)
          slots.push_back({z[size_t(t * pw + half + ch)], a[size_t(t * pw + half + ch)]});
        double mx = -1e300, den = 0, num = 0;
        for (auto& s : slots) mx = std::max(mx, s.first);
        for (auto& s : slots) den += std::exp(s.first - mx), num += std::exp(s.first - mx) * s.second;
        entry[size_t(ch)] = num / den;
      }
      double ms = 0;
      for (double v : entry) ms += v * v;
      const double inv = 1 / std::sqrt(ms / double(c) + eps);
      for (int64_t ch = 0; ch < c; ++ch) entry[size_t(ch)] *= inv * w.norm[size_t(ch)];
      rope_expected(entry, rope.inv_freq(), e * m);
      out.insert(out.end(), entry.begin(), entry.end());
    }
    return out;
  }
};

}  // namespace

TEST_CASE("compressor_feed matches the spec formula in any chunking", "[units][compressor]") {
  const bool overlap = GENERATE(false, true);
  const int64_t m = GENERATE(1, 3, 4);
  const int64_t c = 8, T = 23;
  CompressorFixture f(m, c, overlap);
  const auto x = random_floats(size_t(T * f.D), 104, -2.f, 2.f);
  const auto want = f.expected(x, T);
  INFO("overlap " << overlap << " m " << m);
  REQUIRE(int64_t(want.size()) == (T / m) * c);

  const RowCodec f32{RowFormat::F32, c, 0};
  CompressorState whole;
  whole.init(f.w, f32);
  f.feed(whole, x.data(), T, 0);
  REQUIRE(whole.num_entries() == T / m);
  const std::vector<float> got = whole.entries.to_floats();
  REQUIRE(int64_t(got.size()) == whole.num_entries() * c);
  for (size_t i = 0; i < want.size(); ++i) CHECK(double(got[i]) == Approx(want[i]).margin(2e-5));

  SECTION("token by token: an entry appears exactly when its window completes") {
    CompressorState st;
    st.init(f.w, f32);
    for (int64_t p = 0; p < T; ++p) {
      f.feed(st, &x[size_t(p * f.D)], 1, p);
      REQUIRE(st.num_entries() == (p + 1) / m);
    }
    CHECK(st.entries.to_floats() == got);
  }
  SECTION("odd chunks") {
    CompressorState st;
    st.init(f.w, f32);
    int64_t p = 0;
    for (int64_t n : {2, 5, 1, 7, 3, 100}) {
      n = std::min(n, T - p);
      f.feed(st, &x[size_t(p * f.D)], n, p);
      p += n;
      REQUIRE(st.num_entries() == p / m);
    }
    REQUIRE(p == T);
    CHECK(st.entries.to_floats() == got);
  }
}

// ---------------------------------------------------------------------------------------------
// Reference matmul

TEMPLATE_TEST_CASE("ref::matmul over row ranges with strides matches a naive loop", "[units][matmul]", F32Matrix,
                   Bf16Matrix, Fp8BlockMatrix, Fp4GroupMatrix) {
  struct Case {
    int64_t n, k, t, row0, row1, ldx, ldy;
  };
  const Case cs = GENERATE(Case{13, 42, 3, 2, 11, 47, 11}, Case{13, 42, 1, 0, 13, 42, 13}, Case{7, 18, 4, 6, 7, 19, 3},
                           Case{301, 46, 5, 3, 300, 50, 299});  // the last one is big enough for OpenMP
  SchemeData d;
  std::vector<float> w;
  const TestType s = make_scheme<TestType>(d, cs.n, cs.k, w);
  const auto x = random_floats(size_t(cs.t * cs.ldx), 77);
  const float sentinel = -12345.f;
  std::vector<float> y(static_cast<size_t>(cs.t * cs.ldy), sentinel);
  ref::matmul(s, x.data(), cs.ldx, cs.t, y.data(), cs.ldy, cs.row0, cs.row1);
  std::vector<float> y2(y.size(), sentinel);
  Fp32Reference::matmul(Matrix(s), x.data(), cs.ldx, cs.t, y2.data(), cs.ldy, cs.row0, cs.row1);
  CHECK(y2 == y);
  INFO("n " << cs.n << " k " << cs.k << " t " << cs.t << " rows [" << cs.row0 << ", " << cs.row1 << ")");
  for (int64_t i = 0; i < cs.t; ++i)
    for (int64_t col = 0; col < cs.ldy; ++col) {
      const float got = y[size_t(i * cs.ldy + col)];
      const int64_t n = cs.row0 + col;
      if (n >= cs.row1) {
        REQUIRE(got == sentinel);  // outside the requested rows: untouched
        continue;
      }
      double want = 0;
      for (int64_t j = 0; j < cs.k; ++j) want += double(w[size_t(n * cs.k + j)]) * x[size_t(i * cs.ldx + j)];
      REQUIRE(double(got) == Approx(want).margin(1e-4));
    }
}
