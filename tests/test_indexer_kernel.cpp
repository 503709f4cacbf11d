// The Lightning Indexer score kernels (kernels/cpu/indexer_scores.hpp) against the scalar
// reference: every instance this CPU runs (the dispatched one, AVX2, AVX-512, AVX-512 + BF16 dot,
// and the baseline build of this file), F32 / BF16 / FP4 keys, head counts and widths that are not
// multiples of the vector width, key counts around the block sizes, 1 and 2 OpenMP threads.
//
// Tolerances are bounds, per score e, relative to M_e = kscale * sum_h |g_h| sum_j |q_hj k_ej|
// (relu is 1-Lipschitz, so a dot's error carries over to the score at most times |g_h|):
//   fp32 paths: kernel and reference each round ~ci + nh + 2 times: |d| <= 2 (ci + nh + 2) 2^-24 M.
//   bf16 dot: q rounded to bf16 adds 2^-8 (bf16's unit roundoff) times sum_j |q_hj k_j| per dot:
//             |d| <= (1.01 * 2^-8 + 2 (ci + nh + 2) 2^-24) M.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "dsv4/core/parallel.hpp"
#include "dsv4/kernels/cpu/indexer_scores.hpp"

using namespace dsv4;
using namespace dsv4::cpu;

namespace {

struct Instance {
  std::string name;
  IndexerFn fn;
  bool bf16_dot;  // q rounded to bf16 for BF16 / FP4 keys
};

std::vector<Instance> instances() {
  std::vector<Instance> v;
  v.push_back({"dispatch", dispatch().indexer, dispatch().indexer_bf16});
  v.push_back({"baseline", &simd_indexer_scores<xsimd::default_arch>, false});
#if defined(DSV4_MULTIARCH)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) v.push_back({"avx2", indexer_fn_avx2(), false});
  if (int(detected_isa()) >= int(Isa::Avx512)) {
    v.push_back({"avx512", indexer_fn_avx512(), false});
    if (cpu_has_avx512bf16()) v.push_back({"avx512bf16", indexer_fn_avx512bf16(), true});
  }
#endif
  return v;
}

struct Problem {
  int64_t nh = 0, ci = 0, n = 0;
  RowCodec codec;
  float kscale = 1.f;
  std::vector<float> q, g;
  std::vector<uint8_t> keys;  // n rows, starting at keys.data() + offset
  size_t offset = 0;
  std::vector<double> mag;      // M_e
  std::vector<float> expected;  // reference
  const uint8_t* key_ptr() const { return keys.data() + offset; }
};

Problem make_problem(RowFormat f, int64_t nh, int64_t ci, int64_t n, std::mt19937& rng, size_t offset = 0) {
  Problem p;
  p.nh = nh, p.ci = ci, p.n = n, p.offset = offset;
  p.codec = RowCodec{f, ci, 0};
  p.kscale = 1.0f / std::sqrt(float(ci));
  std::normal_distribution<float> normal(0.f, 1.f);
  p.q.resize(size_t(nh * ci));
  p.g.resize(size_t(nh));
  for (auto& x : p.q) x = normal(rng);
  for (auto& x : p.g) x = normal(rng);  // both signs
  const int64_t rb = p.codec.row_bytes();
  p.keys.assign(offset + size_t(n * rb), 0);
  std::vector<float> row(static_cast<size_t>(ci)), dec(static_cast<size_t>(ci));
  p.mag.resize(size_t(n));
  for (int64_t e = 0; e < n; ++e) {
    const float spread = 0.25f + float(e % 7);  // rows of different magnitude: FP4 scales vary
    for (auto& x : row) x = normal(rng) * spread;
    p.codec.encode(row.data(), p.keys.data() + offset + e * rb);
    p.codec.decode(p.keys.data() + offset + e * rb, dec.data());
    double m = 0;
    for (int64_t h = 0; h < nh; ++h) {
      double s = 0;
      for (int64_t j = 0; j < ci; ++j) s += std::fabs(double(p.q[size_t(h * ci + j)]) * dec[size_t(j)]);
      m += std::fabs(double(p.g[size_t(h)])) * s;
    }
    p.mag[size_t(e)] = m * p.kscale;
  }
  p.expected.resize(size_t(n));
  indexer_scores_reference(p.q.data(), p.g.data(), nh, p.codec, p.key_ptr(), n, p.kscale, p.expected.data());
  return p;
}

double fp32_bound(const Problem& p) { return 2.0 * double(p.ci + p.nh + 2) * std::ldexp(1.0, -24); }
double bf16_bound(const Problem& p) { return 1.01 * std::ldexp(1.0, -8) + fp32_bound(p); }

// The largest |got - expected| / M_e; also the first index over `bound`, or -1.
struct Compare {
  double worst = 0;
  int64_t first_bad = -1;
};
Compare compare(const Problem& p, const std::vector<float>& got, double bound) {
  Compare c;
  for (int64_t e = 0; e < p.n; ++e) {
    const double d = std::fabs(double(got[size_t(e)]) - double(p.expected[size_t(e)]));
    const double r = p.mag[size_t(e)] > 0 ? d / p.mag[size_t(e)] : (d > 0 ? INFINITY : 0.0);
    c.worst = std::max(c.worst, r);
    if (!(r <= bound) && c.first_bad < 0) c.first_bad = e;  // NaN counts as bad
  }
  return c;
}

std::vector<float> run(const Instance& inst, const Problem& p, int threads) {
  std::vector<float> out(size_t(p.n), -12345.f);
  set_num_threads(threads);
  inst.fn(p.q.data(), p.g.data(), p.nh, p.codec, p.key_ptr(), p.n, p.kscale, out.data());
  return out;
}

}  // namespace

TEST_CASE("indexer kernels match the reference", "[indexer]") {
  const int saved_threads = num_threads();
  const auto insts = instances();
  std::mt19937 rng(7);
  double worst_fp32 = 0, worst_bf16 = 0;
  for (RowFormat f : {RowFormat::F32, RowFormat::BF16, RowFormat::Fp4})
    for (int64_t nh : {1, 3, 17, 64})
      for (int64_t ci : {16, 20, 64, 128})
        for (int64_t n : {1, 5, 63, 64, 65, 1000, 5000}) {
          const Problem p = make_problem(f, nh, ci, n, rng);
          for (const Instance& inst : insts) {
            const bool bf16 = inst.bf16_dot && f != RowFormat::F32;
            const double bound = bf16 ? bf16_bound(p) : fp32_bound(p);
            const auto one = run(inst, p, 1);
            const auto two = run(inst, p, 2);
            const Compare c = compare(p, one, bound);
            INFO(inst.name << " " << row_format_name(f) << " nh=" << nh << " ci=" << ci << " n=" << n << ": worst "
                           << c.worst << " (bound " << bound << "), first bad " << c.first_bad);
            REQUIRE(c.first_bad == -1);
            // A key's score does not depend on how the keys are split over threads.
            REQUIRE(std::memcmp(one.data(), two.data(), one.size() * sizeof(float)) == 0);
            (bf16 ? worst_bf16 : worst_fp32) = std::max(bf16 ? worst_bf16 : worst_fp32, c.worst);
          }
        }
  set_num_threads(saved_threads);
  std::printf("indexer kernels: worst |error| / M: fp32 paths %.3g, bf16-dot %.3g\n", worst_fp32, worst_bf16);
  // Observed fp32 errors sit far below the worst-case bound (~2e-5 at ci = 128, nh = 64).
  CHECK(worst_fp32 < 2e-6);
}

TEST_CASE("indexer comparison catches wrong scores", "[indexer]") {
  std::mt19937 rng(11);
  const Problem p = make_problem(RowFormat::BF16, 17, 20, 65, rng);
  for (const Instance& inst : instances()) {
    INFO(inst.name);
    auto got = run(inst, p, 2);
    const double bound = inst.bf16_dot ? bf16_bound(p) : fp32_bound(p);
    REQUIRE(compare(p, got, bound).first_bad == -1);
    got[40] += float(3 * bound * p.mag[40]);  // one score off by three bounds
    REQUIRE(compare(p, got, bound).first_bad == 40);
    got[40] = NAN;
    REQUIRE(compare(p, got, bound).first_bad == 40);
  }
  // The bf16-dot instance really rounds q: its errors exceed what fp32 allows (so the fp32 bound
  // would catch an instance that silently took the wrong path), yet stay within the bf16 bound.
  for (const Instance& inst : instances())
    if (inst.bf16_dot)
      for (RowFormat f : {RowFormat::BF16, RowFormat::Fp4}) {
        const Problem big = make_problem(f, 64, 128, 1000, rng);
        const Compare c = compare(big, run(inst, big, 2), bf16_bound(big));
        INFO(inst.name << " " << row_format_name(f) << " worst " << c.worst);
        CHECK(c.first_bad == -1);
        CHECK(c.worst > fp32_bound(big));
      }
}

TEST_CASE("indexer kernels: unaligned rows, empty and degenerate sizes", "[indexer]") {
  std::mt19937 rng(3);
  for (RowFormat f : {RowFormat::F32, RowFormat::BF16, RowFormat::Fp4})
    for (int64_t ci : {16, 33, 96}) {
      const Problem p = make_problem(f, 17, ci, 70, rng, /*offset=*/1);
      for (const Instance& inst : instances()) {
        const bool bf16 = inst.bf16_dot && f != RowFormat::F32;
        INFO(inst.name << " " << row_format_name(f) << " ci=" << ci);
        REQUIRE(compare(p, run(inst, p, 2), bf16 ? bf16_bound(p) : fp32_bound(p)).first_bad == -1);
      }
    }
  const Problem p = make_problem(RowFormat::Fp4, 3, 20, 9, rng);
  for (const Instance& inst : instances()) {
    std::vector<float> out(9, 7.f);
    inst.fn(p.q.data(), p.g.data(), 3, p.codec, p.key_ptr(), 0, p.kscale, out.data());  // n = 0: nothing written
    REQUIRE(out[0] == 7.f);
    inst.fn(p.q.data(), p.g.data(), 0, p.codec, p.key_ptr(), 9, p.kscale, out.data());  // no heads: zeros
    for (float x : out) REQUIRE(x == 0.f);
  }
}

TEST_CASE("indexer kernels refuse FP8 keys", "[indexer]") {
  const RowCodec fp8{RowFormat::Fp8Rope, 128, 64};
  std::vector<uint8_t> keys(size_t(fp8.row_bytes() * 4));
  std::vector<float> q(128), g(1), out(4);
  REQUIRE_THROWS_AS(indexer_scores_reference(q.data(), g.data(), 1, fp8, keys.data(), 4, 1.f, out.data()), Error);
  REQUIRE_THROWS_AS(indexer_scores(q.data(), g.data(), 1, fp8, keys.data(), 4, 1.f, out.data()), Error);
  for (const Instance& inst : instances())
    REQUIRE_THROWS_AS(inst.fn(q.data(), g.data(), 1, fp8, keys.data(), 4, 1.f, out.data()), Error);
}

TEST_CASE("DSV4_ISA and DSV4_INDEXER_DOT pick the indexer instance", "[indexer]") {
  const char* isa = std::getenv("DSV4_ISA");
  const char* dot = std::getenv("DSV4_INDEXER_DOT");
  INFO("isa " << isa_name(dispatch().isa) << ", bf16 dot " << dispatch().indexer_bf16);
  REQUIRE(dispatch().indexer != nullptr);
  if (isa && std::string(isa) == "avx2") {
    REQUIRE(dispatch().isa == Isa::Avx2);
    REQUIRE_FALSE(dispatch().indexer_bf16);
#if defined(DSV4_MULTIARCH)
    REQUIRE(dispatch().indexer == indexer_fn_avx2());
#endif
  }
  if (dot && std::string(dot) == "bf16") REQUIRE(dispatch().indexer_bf16);
  if (dot && std::string(dot) == "fp32") REQUIRE_FALSE(dispatch().indexer_bf16);
}
