// Cache types (model/cache_type.hpp): the row codecs they store with, the paged row store, and
// what each type does to the golden cases' logits against the reference (bounds stated below
// and in the README).
#include <catch2/catch.hpp>

#include <fstream>
#include <random>

#include "dsv4/dsv4.hpp"
#include "golden.hpp"

using namespace dsv4;
using dsv4::testing::Golden;
using dsv4::testing::GoldenCase;
using dsv4::testing::max_abs_diff;

namespace {

std::vector<float> random_row(std::mt19937& rng, int64_t n, float spread) {
  std::normal_distribution<float> nd(0.f, 1.f);
  std::uniform_real_distribution<float> ex(-spread, spread);
  std::vector<float> x(static_cast<size_t>(n));
  for (auto& v : x) v = nd(rng) * std::exp2(ex(rng));
  return x;
}

// The largest error a stored value may carry: half a step of its format at its magnitude.
double allowed_error(const RowCodec& c, const std::vector<float>& x, int64_t j) {
  const double a = std::fabs(x[size_t(j)]);
  auto group_scale = [&](int64_t g0, int64_t g1, double maxv) {
    double m = 0;
    for (int64_t i = g0; i < g1; ++i) m = std::max(m, double(std::fabs(x[size_t(i)])));
    return m > 0 ? std::exp2(std::ceil(std::log2(m / maxv))) : 0.0;
  };
  switch (c.format) {
    case RowFormat::F32: return 0;
    case RowFormat::BF16: return a * std::exp2(-8);
    case RowFormat::Fp8Rope: {
      if (j >= c.nope()) return a * std::exp2(-8);
      const int64_t g0 = j / kFp8Group * kFp8Group;
      const double s = group_scale(g0, std::min(c.nope(), g0 + kFp8Group), 448.0);
      return std::max(a * std::exp2(-4), s * std::exp2(-10));  // 3 mantissa bits; subnormal steps of 2^-9
    }
    case RowFormat::Fp4: {
      const int64_t g0 = j / kFp4Group * kFp4Group;
      const double s = group_scale(g0, std::min(c.width, g0 + kFp4Group), 6.0);
      return s * std::max(0.25, a / s / 4);  // steps 0.5 below 2, 1 below 4, 2 below 6
    }
  }
  return 0;
}

const std::vector<GoldenCase>& v4_cases() { return dsv4::testing::required_golden_cases("DeepseekV4ForCausalLM"); }

template <class Bundle>
std::vector<float> run(const Model& m, CacheType type, const std::vector<int32_t>& ids,
                       const std::vector<int64_t>& chunks) {
  return dsv4::testing::run_in_chunks<Bundle>(m, ids, chunks, nullptr, type);
}

double top1_agreement(const std::vector<float>& a, const std::vector<float>& b, int64_t V) {
  const int64_t S = int64_t(a.size()) / V;
  int64_t same = 0;
  for (int64_t i = 0; i < S; ++i) {
    auto row = [&](const std::vector<float>& x) {
      return std::max_element(x.begin() + i * V, x.begin() + (i + 1) * V) - (x.begin() + i * V);
    };
    same += row(a) == row(b);
  }
  return double(same) / double(S);
}

}  // namespace

TEST_CASE("fast E4M3 rounding equals the exhaustive search", "[cache][codec]") {
  std::mt19937 rng(7);
  std::vector<float> xs = {0.f, -0.f, 448.f, -448.f, 449.f, 1e9f, 464.f, 1.f / 512, 1.f / 1024, 3.f / 1024, 0.015625f,
                           0.0146484375f, 240.f, 232.f, 248.f};
  for (int c = 0; c < 0x7F; ++c) {  // every code and the midpoints to its neighbour
    const float v = e4m3_to_f32(uint8_t(c)), w = e4m3_to_f32(uint8_t(c + 1));
    xs.push_back(v), xs.push_back(-v), xs.push_back((v + w) / 2), xs.push_back(std::nextafter((v + w) / 2, 0.f));
    xs.push_back(std::nextafter((v + w) / 2, 1e9f));
  }
  std::uniform_real_distribution<float> e(-14.f, 9.5f);
  for (int i = 0; i < 20000; ++i) xs.push_back((i % 2 ? -1.f : 1.f) * std::exp2(e(rng)));
  for (float x : xs) {
    INFO("x = " << x);
    REQUIRE(int(f32_to_e4m3_fast(x)) == int(f32_to_e4m3(x)));
  }
}

TEST_CASE("E2M1 rounding: nearest, ties to the even code, saturating", "[cache][codec]") {
  const std::pair<float, float> cases[] = {{0.2f, 0.f}, {0.25f, 0.f}, {0.26f, 0.5f}, {0.75f, 1.f}, {1.25f, 1.f},
                                           {1.75f, 2.f}, {2.5f, 2.f},  {3.5f, 4.f},   {5.f, 4.f},   {5.1f, 6.f},
                                           {7.f, 6.f},   {-2.5f, -2.f}, {-0.1f, 0.f}};
  for (auto [x, want] : cases) {
    INFO("x = " << x);
    CHECK(e2m1_to_f32(f32_to_e2m1(x)) == want);
  }
}

TEST_CASE("row codecs: sizes, error bounds, rounding is idempotent", "[cache][codec]") {
  // V4-Flash shapes: kv 512 wide with 64 rope dims, indexer keys 128.
  CHECK(RowCodec{RowFormat::F32, 512, 0}.row_bytes() == 2048);
  CHECK(RowCodec{RowFormat::BF16, 512, 0}.row_bytes() == 1024);
  CHECK(RowCodec{RowFormat::Fp8Rope, 512, 64}.row_bytes() == 128 + 448 + 7);
  CHECK(RowCodec{RowFormat::Fp4, 128, 0}.row_bytes() == 64 + 4);
  CHECK(RowCodec{RowFormat::Fp4, 17, 0}.row_bytes() == 9 + 1);
  std::mt19937 rng(3);
  const RowCodec codecs[] = {{RowFormat::BF16, 33, 0},   {RowFormat::Fp8Rope, 32, 8}, {RowFormat::Fp8Rope, 200, 64},
                             {RowFormat::Fp8Rope, 9, 9}, {RowFormat::Fp4, 16, 0},     {RowFormat::Fp4, 77, 0},
                             {RowFormat::F32, 5, 0}};
  for (const RowCodec& c : codecs) {
    for (float spread : {0.f, 4.f, 12.f}) {
      INFO(row_format_name(c.format) << " width " << c.width << " spread " << spread);
      auto x = random_row(rng, c.width, spread);
      if (spread == 12.f) std::fill(x.begin(), x.begin() + std::min<int64_t>(c.width, 40), 0.f);  // a zero group
      std::vector<uint8_t> a(size_t(c.row_bytes())), b(a.size());
      std::vector<float> y(x.size());
      c.encode(x.data(), a.data());
      c.decode(a.data(), y.data());
      for (int64_t j = 0; j < c.width; ++j) {
        INFO("j " << j << " x " << x[size_t(j)] << " read back " << y[size_t(j)]);
        REQUIRE(std::fabs(double(y[size_t(j)]) - x[size_t(j)]) <= allowed_error(c, x, j) * (1 + 1e-6));
      }
      std::vector<float> y2(y.size());
      c.encode(y.data(), b.data());
      c.decode(b.data(), y2.data());
      CHECK(y2 == y);  // what was read back stores as the same values: rounding twice changes nothing
    }
  }
}

TEST_CASE("KvRows: pages, rings, copies", "[cache]") {
  const RowCodec c{RowFormat::Fp8Rope, 40, 8};
  KvRows g;
  g.init_growing(c);
  const int64_t pr = g.page_rows();
  REQUIRE(pr >= 16);
  std::mt19937 rng(5);
  std::vector<std::vector<float>> rows;
  for (int64_t i = 0; i < 3 * pr + 5; ++i) {
    rows.push_back(random_row(rng, c.width, 3.f));
    g.append(rows.back().data());
    REQUIRE(g.allocated() == KvRows::allocated_bytes(c, i + 1));
    REQUIRE(g.allocated() - g.value_bytes() < pr * c.row_bytes());  // never more than one page unused
  }
  const KvRows copy = g;
  std::vector<float> y(size_t(c.width)), z(y.size()), want(y.size());
  for (size_t i = 0; i < rows.size(); ++i) {
    std::vector<uint8_t> bytes(size_t(c.row_bytes()));
    c.encode(rows[i].data(), bytes.data());
    c.decode(bytes.data(), want.data());
    g.decode(int64_t(i), y.data());
    copy.decode(int64_t(i), z.data());
    REQUIRE(y == want);
    REQUIRE(z == want);
  }
  KvRows r;
  r.init_ring(c, 7);
  CHECK(r.allocated() == 7 * c.row_bytes());
  r.decode(3, y.data());
  CHECK(std::all_of(y.begin(), y.end(), [](float v) { return v == 0.f; }));
  CHECK_THROWS_WITH(r.append(y.data()), Catch::Contains("ring"));
}

double mean_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += std::fabs(double(a[i]) - b[i]);
  return s / double(a.size());
}
double rms(const std::vector<float>& a) {
  double s = 0;
  for (float v : a) s += double(v) * v;
  return std::sqrt(s / double(a.size()));
}

// What each type costs on the golden cases, against the expected logits. These tiny random models
// amplify any perturbation: a value that moves by one rounding step can flip a Lightning Indexer
// choice (index_topk 4) or a routed expert (top-2 of 8) downstream, which moves some logits by
// O(1) while most move little; hence bounds on the mean error and the top-1 agreement. The row
// codecs' own errors are bounded exactly above.
struct Bound {
  CacheType type;
  double min_top1, max_mean;
};
constexpr Bound kGoldenBounds[] = {{CacheType::F32, 1.0, 1e-5}, {CacheType::BF16, 0.95, 0.05}, {CacheType::Compact, 0.7, 0.25}};

TEST_CASE("cache types: golden logits against the reference, any chunking", "[cache][golden]") {
  for (const GoldenCase& gc : v4_cases()) {
    for (const char* layout : {"/hf", "/orig"}) {
      const Model m = Model::load(gc.dir + layout);
      const Golden g(gc.dir + (std::string(layout) == "/hf" ? "/expected.safetensors" : "/expected_orig.safetensors"));
      const auto ids = g.ids("input_ids");
      const auto expected = g.floats("logits");
      const int64_t V = m.config().vocab_size;
      for (const Bound& b : kGoldenBounds) {
        const CacheType t = b.type;
        INFO("case " << gc.name << layout << " cache " << cache_type_name(t));
        const auto ref = run<Fp32Reference>(m, t, ids, {});
        const auto ref_chunked = run<Fp32Reference>(m, t, ids, gc.chunks());
        const auto fast = run<FastCpu>(m, t, ids, {});
        const double e_ref = max_abs_diff(ref, expected), e_fast = max_abs_diff(fast, expected);
        const double mean_ref = mean_abs_diff(ref, expected), agree = top1_agreement(ref, expected, V);
        WARN(gc.name << layout << " " << cache_type_name(t) << ": logits rms " << rms(expected) << "; reference max |error| "
                     << e_ref << " mean " << mean_ref << " top-1 " << agree << "; fast max " << e_fast << " mean "
                     << mean_abs_diff(fast, expected) << " top-1 " << top1_agreement(fast, expected, V));
        // The reference reads the same stored values whatever the chunking.
        CHECK(max_abs_diff(ref_chunked, ref) < 1e-5);
        CHECK(agree >= b.min_top1);
        CHECK(mean_ref <= b.max_mean);
        if (t == CacheType::F32) {
          CHECK(e_ref < 1e-3);
          CHECK(e_fast < 1e-3);
          CHECK(max_abs_diff(run<FastCpu>(m, t, ids, gc.chunks()), fast) < 1e-3);
        }
      }
    }
  }
}
