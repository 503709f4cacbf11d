// Codec tests: every number format decoded from hand-built bytes and checked against
// independently written formulas (not the library's own helpers).
#include <catch2/catch.hpp>

#include <bit>
#include <cmath>
#include <limits>
#include <random>
#include <type_traits>

#include "test_util.hpp"

using namespace dsv4;
using namespace dsv4::testing;

namespace {

// E4M3 ("fn"): sign, 4 exponent bits (bias 7), 3 mantissa bits; S.1111.111 is NaN, no infinities.
double e4m3_expected(uint8_t b) {
  const int s = b >> 7, e = (b >> 3) & 15, m = b & 7;
  if (e == 15 && m == 7) return std::numeric_limits<double>::quiet_NaN();
  const double mag = e == 0 ? (m / 8.0) * std::pow(2.0, -6) : (1.0 + m / 8.0) * std::pow(2.0, e - 7);
  return s ? -mag : mag;
}

// E2M1: sign bit 3, exponent bits 2..1 (bias 1), mantissa bit 0.
double e2m1_expected(uint8_t code) {
  const int s = (code >> 3) & 1, e = (code >> 1) & 3, m = code & 1;
  const double mag = e == 0 ? m * 0.5 : (1.0 + m / 2.0) * std::pow(2.0, e - 1);
  return s ? -mag : mag;
}

double e8m0_expected(uint8_t b) { return std::pow(2.0, int(b) - 127); }

uint32_t bits(float f) { return std::bit_cast<uint32_t>(f); }

}  // namespace

TEST_CASE("E8M0 decodes 2^(b-127) with 255 as NaN", "[codecs][e8m0]") {
  CHECK(bits(e8m0_to_f32(0)) == bits(float(std::ldexp(1.0, -127))));  // a float subnormal, not 0
  CHECK(e8m0_to_f32(0) > 0.0f);
  CHECK(e8m0_to_f32(1) == std::numeric_limits<float>::min());  // 2^-126
  CHECK(e8m0_to_f32(127) == 1.0f);
  CHECK(e8m0_to_f32(128) == 2.0f);
  CHECK(e8m0_to_f32(126) == 0.5f);
  CHECK(e8m0_to_f32(254) == float(std::ldexp(1.0, 127)));
  CHECK(std::isnan(e8m0_to_f32(255)));
  for (int b = 0; b < 255; ++b) {
    INFO("code " << b);
    CHECK(double(e8m0_to_f32(uint8_t(b))) == e8m0_expected(uint8_t(b)));
  }
}

TEST_CASE("E4M3 decodes all 256 codes", "[codecs][e4m3]") {
  for (int b = 0; b < 256; ++b) {
    INFO("code 0x" << std::hex << b);
    const double want = e4m3_expected(uint8_t(b));
    const float got = e4m3_to_f32(uint8_t(b));
    if (std::isnan(want)) {
      CHECK(std::isnan(got));
    } else {
      CHECK(double(got) == want);
      CHECK(std::signbit(got) == bool(b & 0x80));
    }
  }
  // Landmarks written out by hand.
  CHECK(e4m3_to_f32(0x01) == 0.001953125f);  // smallest subnormal 2^-9
  CHECK(e4m3_to_f32(0x07) == 7.0f / 512);    // largest subnormal
  CHECK(e4m3_to_f32(0x08) == 0.015625f);     // smallest normal 2^-6
  CHECK(e4m3_to_f32(0x38) == 1.0f);
  CHECK(e4m3_to_f32(0x78) == 256.0f);
  CHECK(e4m3_to_f32(0x7E) == 448.0f);
  CHECK(e4m3_to_f32(0xFE) == -448.0f);
  CHECK(std::isnan(e4m3_to_f32(0x7F)));
  CHECK(std::isnan(e4m3_to_f32(0xFF)));
  CHECK(e4m3_to_f32(0x80) == 0.0f);
  CHECK(std::signbit(e4m3_to_f32(0x80)));
  CHECK_FALSE(std::signbit(e4m3_to_f32(0x00)));
}

TEST_CASE("f32_to_e4m3 round-trips and rounds to nearest even", "[codecs][e4m3]") {
  for (int b = 0; b < 256; ++b) {
    if ((b & 0x7F) == 0x7F) continue;
    INFO("code 0x" << std::hex << b);
    CHECK(int(f32_to_e4m3(e4m3_to_f32(uint8_t(b)))) == b);
  }
  // Between each pair of neighbouring positive codes: the midpoint goes to the even code, a
  // little off the midpoint goes to the nearer one.
  for (int c = 0; c < 0x7E; ++c) {
    const double lo = e4m3_expected(uint8_t(c)), hi = e4m3_expected(uint8_t(c + 1));
    const float mid = float((lo + hi) / 2);
    INFO("between 0x" << std::hex << c << " and 0x" << c + 1);
    REQUIRE(double(mid) == (lo + hi) / 2);  // exactly representable in f32
    CHECK(int(f32_to_e4m3(mid)) == (c % 2 == 0 ? c : c + 1));
    CHECK(int(f32_to_e4m3(std::nextafter(mid, 0.0f))) == c);
    CHECK(int(f32_to_e4m3(std::nextafter(mid, 1000.0f))) == c + 1);
    CHECK(int(f32_to_e4m3(-mid)) == (0x80 | (c % 2 == 0 ? c : c + 1)));
  }
  CHECK(f32_to_e4m3(1.0625f) == 0x38);  // 1 + 1/16: tie between 1 (0x38) and 1.125 (0x39)
  CHECK(f32_to_e4m3(1.1875f) == 0x3A);  // tie between 1.125 (0x39) and 1.25 (0x3A)
  // Saturation, NaN, signed zero.
  CHECK(f32_to_e4m3(448.0f) == 0x7E);
  CHECK(f32_to_e4m3(1e6f) == 0x7E);
  CHECK(f32_to_e4m3(-1e6f) == 0xFE);
  CHECK(f32_to_e4m3(std::numeric_limits<float>::infinity()) == 0x7E);
  CHECK(f32_to_e4m3(-std::numeric_limits<float>::infinity()) == 0xFE);
  CHECK(f32_to_e4m3(std::numeric_limits<float>::quiet_NaN()) == 0x7F);
  CHECK(f32_to_e4m3(-0.0f) == 0x80);
  CHECK(f32_to_e4m3(std::ldexp(1.0f, -11)) == 0x00);  // below half the smallest subnormal
}

TEST_CASE("BF16 round-trips every code and rounds to nearest even", "[codecs][bf16]") {
  for (uint32_t c = 0; c < 0x10000; ++c) {
    const float f = bf16_to_f32(uint16_t(c));
    REQUIRE(bits(f) == c << 16);
    if (std::isnan(f)) {
      const uint16_t back = f32_to_bf16(f);
      REQUIRE(((back & 0x7F80) == 0x7F80 && (back & 0x7F) != 0));
    } else {
      REQUIRE(f32_to_bf16(f) == c);
    }
  }
  CHECK(bf16_to_f32(0x3F80) == 1.0f);
  CHECK(bf16_to_f32(0xC000) == -2.0f);
  const float one = 1.0f, ulp = std::ldexp(1.0f, -7);  // bf16 spacing at 1
  CHECK(f32_to_bf16(one + ulp / 2) == 0x3F80);                       // tie -> even (down)
  CHECK(f32_to_bf16(one + 3 * ulp / 2) == 0x3F82);                   // tie -> even (up)
  CHECK(f32_to_bf16(one + ulp / 2 + std::ldexp(1.0f, -20)) == 0x3F81);  // above the tie
  CHECK(f32_to_bf16(one + ulp / 2 - std::ldexp(1.0f, -20)) == 0x3F80);  // below the tie
  CHECK(f32_to_bf16(-(one + ulp / 2)) == 0xBF80);
  CHECK(f32_to_bf16(std::numeric_limits<float>::max()) == 0x7F80);  // rounds up to +inf
  CHECK(f32_to_bf16(std::numeric_limits<float>::denorm_min()) == 0x0000);
  // A NaN whose payload lives only in the low 16 bits must stay NaN, not become infinity.
  const uint16_t n = f32_to_bf16(std::bit_cast<float>(0x7F800001u));
  CHECK((n & 0x7F80) == 0x7F80);
  CHECK((n & 0x7F) != 0);
}

TEST_CASE("FP4 E2M1 code values and nibble order", "[codecs][fp4]") {
  const float spec[8] = {0, 0.5f, 1, 1.5f, 2, 3, 4, 6};
  for (uint8_t c = 0; c < 16; ++c) {
    INFO("code " << int(c));
    CHECK(double(e2m1_to_f32(c)) == e2m1_expected(c));
    CHECK(e2m1_to_f32(c) == (c < 8 ? spec[c] : -spec[c - 8]));
    CHECK(std::signbit(e2m1_to_f32(c)) == (c >= 8));
  }
  // Byte 0xF2: low nibble 2 (element 2j = 1.0), high nibble 15 (element 2j+1 = -6).
  CHECK(fp4_packed_low(0xF2) == 1.0f);
  CHECK(fp4_packed_high(0xF2) == -6.0f);
  CHECK(fp4_packed_low(0x71) == 0.5f);
  CHECK(fp4_packed_high(0x71) == 6.0f);
}

// ---------------------------------------------------------------------------------------------
// Block FP8 with partial edge tiles, E8M0 or f32 scales.

struct E8m0Scales {
  static constexpr bool kF32 = false;
};
struct F32Scales {
  static constexpr bool kF32 = true;
};

TEMPLATE_TEST_CASE("Fp8BlockMatrix decode_row with partial edge tiles", "[codecs][fp8]", E8m0Scales, F32Scales) {
  const int64_t N = 70, K = 45;
  const auto [bm, bn] = GENERATE(std::pair<int64_t, int64_t>{32, 32}, std::pair<int64_t, int64_t>{16, 8},
                                 std::pair<int64_t, int64_t>{128, 128});
  const int64_t tr = (N + bm - 1) / bm, tc = (K + bn - 1) / bn;
  std::mt19937 rng(7);
  std::vector<uint8_t> q(static_cast<size_t>(N * K));
  for (auto& b : q) {
    do b = uint8_t(rng()); while ((b & 0x7F) == 0x7F);  // no NaN codes
  }
  // Scales differ per tile; stored one byte off alignment to exercise unaligned reads.
  std::vector<double> scale_value(static_cast<size_t>(tr * tc));
  std::vector<uint8_t> scale_bytes(1 + scale_value.size() * 4);
  for (int64_t i = 0; i < tr * tc; ++i) {
    if (TestType::kF32) {
      const float s = 0.25f + 0.5f * float(i);
      scale_value[size_t(i)] = s;
      std::memcpy(&scale_bytes[1 + size_t(i) * 4], &s, 4);
    } else {
      const uint8_t s = uint8_t(120 + (i * 3) % 15);
      scale_value[size_t(i)] = e8m0_expected(s);
      scale_bytes[1 + size_t(i)] = s;
    }
  }
  Fp8BlockMatrix m{q.data(), scale_bytes.data() + 1, TestType::kF32, N, K, bm, bn};
  CHECK(m.rows() == N);
  CHECK(m.cols() == K);
  CHECK(m.scale_cols() == tc);
  CHECK(m.storage_bytes() == N * K + tr * tc * (TestType::kF32 ? 4 : 1));
  std::vector<float> row(static_cast<size_t>(K));
  for (int64_t i = 0; i < N; ++i) {
    m.decode_row(i, row.data());
    for (int64_t j = 0; j < K; ++j) {
      const double want = e4m3_expected(q[size_t(i * K + j)]) * scale_value[size_t((i / bm) * tc + j / bn)];
      INFO("block " << bm << "x" << bn << " row " << i << " col " << j);
      REQUIRE(double(row[size_t(j)]) == want);
    }
  }
}

TEST_CASE("Fp4GroupMatrix decode_row with K not a multiple of 32 and per-row scales", "[codecs][fp4]") {
  const int64_t K = GENERATE(40, 64, 2, 34);
  const int64_t N = 5, group = 32, sc = (K + group - 1) / group;
  std::mt19937 rng(11);
  std::vector<uint8_t> codes(static_cast<size_t>(N * K)), packed(static_cast<size_t>(N * K / 2));
  for (auto& c : codes) c = uint8_t(rng() & 15);
  for (size_t b = 0; b < packed.size(); ++b) packed[b] = uint8_t(codes[2 * b] | (codes[2 * b + 1] << 4));
  std::vector<uint8_t> scales(static_cast<size_t>(N * sc));
  for (int64_t i = 0; i < N; ++i)
    for (int64_t g = 0; g < sc; ++g) scales[size_t(i * sc + g)] = uint8_t(125 + i - 2 * g);
  Fp4GroupMatrix m{packed.data(), scales.data(), N, K, group};
  CHECK(m.scale_cols() == sc);
  CHECK(m.storage_bytes() == N * K / 2 + N * sc);
  std::vector<float> row(static_cast<size_t>(K));
  for (int64_t i = 0; i < N; ++i) {
    m.decode_row(i, row.data());
    for (int64_t j = 0; j < K; ++j) {
      INFO("K " << K << " row " << i << " col " << j);
      const double want = e2m1_expected(codes[size_t(i * K + j)]) * e8m0_expected(scales[size_t(i * sc + j / group)]);
      REQUIRE(double(row[size_t(j)]) == want);
    }
  }
}

TEST_CASE("Fp4GroupMatrix: low nibble is the even element", "[codecs][fp4]") {
  const uint8_t q[2] = {0x21, 0xF7};  // elements: 0.5, 1, 6, -6
  const uint8_t s[1] = {128};         // x2
  Fp4GroupMatrix m{q, s, 1, 4, 32};
  float row[4];
  m.decode_row(0, row);
  CHECK(row[0] == 1.0f);
  CHECK(row[1] == 2.0f);
  CHECK(row[2] == 12.0f);
  CHECK(row[3] == -12.0f);
}

// ---------------------------------------------------------------------------------------------
// The same logical matrix in every scheme: the Matrix variant dispatches to the scheme.


TEMPLATE_TEST_CASE("Matrix variant dispatch decodes like the scheme", "[codecs][schemes]", F32Matrix, Bf16Matrix,
                   Fp8BlockMatrix, Fp4GroupMatrix) {
  SchemeData d;
  std::vector<float> want;
  const int64_t n = 9, k = 42;
  const TestType s = make_scheme<TestType>(d, n, k, want);
  const Matrix m = s;
  CHECK(rows(m) == n);
  CHECK(cols(m) == k);
  CHECK(storage_bytes(m) == s.storage_bytes());
  std::vector<float> row(static_cast<size_t>(k));
  for (int64_t i = 0; i < n; ++i) {
    decode_row(m, i, row.data());
    for (int64_t j = 0; j < k; ++j) REQUIRE(row[size_t(j)] == want[size_t(i * k + j)]);
  }
}

// ---------------------------------------------------------------------------------------------
// WeightSource: matrices are checked against the shape the caller expects and their dtype.

namespace {

OutTensor raw_tensor(std::string name, DType t, Shape shape, std::vector<uint8_t> bytes) {
  return OutTensor{std::move(name), t, std::move(shape), std::move(bytes)};
}

}  // namespace

TEST_CASE("WeightSource::matrix checks shapes and dtypes", "[codecs][weight_source]") {
  TempDir dir;
  std::vector<float> a(12);
  for (int i = 0; i < 12; ++i) a[size_t(i)] = float(i) - 5.5f;
  std::vector<uint16_t> b;
  for (float v : a) b.push_back(f32_to_bf16(v));
  std::vector<uint8_t> c;
  for (float v : a) c.push_back(f32_to_e4m3(v / 2));  // x2 by scale 128: exact (all |v| <= 5.5)
  const float one = 1.0f;
  std::vector<uint8_t> one_f32(4);
  std::memcpy(one_f32.data(), &one, 4);
  std::vector<OutTensor> ts = {
      raw_tensor("embed.weight", DType::F32, {1, 1}, one_f32),
      raw_tensor("a.weight", DType::F32, {3, 4}, le_bytes(a)),
      raw_tensor("b.weight", DType::BF16, {3, 4}, le_bytes(b)),
      raw_tensor("c.weight", DType::F8_E4M3, {3, 4}, c),
      raw_tensor("c.scale", DType::F8_E8M0, {1, 1}, {128}),
      raw_tensor("d.weight", DType::I8, {3, 2}, {0x21, 0xF7, 0x00, 0x11, 0x88, 0x76}),
      raw_tensor("d.scale", DType::F8_E8M0, {3, 1}, {127, 128, 126}),
      raw_tensor("e.weight", DType::F8_E4M3, {3, 4}, c),
      raw_tensor("e.weight_scale_inv", DType::F32, {1, 1}, one_f32),
      raw_tensor("f.weight", DType::F8_E4M3, {3, 4}, c),
      raw_tensor("g.weight", DType::I32, {3, 4}, std::vector<uint8_t>(48)),
      raw_tensor("h.weight", DType::F8_E4M3, {3, 4}, c),
      raw_tensor("h.scale", DType::F8_E8M0, {2, 1}, {127, 127}),
      raw_tensor("i.weight", DType::I8, {3, 2}, std::vector<uint8_t>(6)),
      raw_tensor("i.scale", DType::F32, {3, 1}, std::vector<uint8_t>(12)),
  };
  write_safetensors((dir / "model.safetensors").string(), ts);
  const Checkpoint ck = Checkpoint::open(dir.path());
  ModelConfig cfg;  // fp8 blocks 128 x 128
  const WeightSource ws(ck, cfg);
  REQUIRE(ws.layout() == TensorLayout::Release);
  std::vector<float> row(4);

  SECTION("each stored dtype becomes its scheme") {
    const Matrix ma = ws.matrix("a", 3, 4);
    REQUIRE(std::holds_alternative<F32Matrix>(ma));
    decode_row(ma, 2, row.data());
    CHECK(row == std::vector<float>{2.5f, 3.5f, 4.5f, 5.5f});
    const Matrix mb = ws.matrix("b", 3, 4);
    REQUIRE(std::holds_alternative<Bf16Matrix>(mb));
    decode_row(mb, 1, row.data());
    CHECK(row == std::vector<float>{-1.5f, -0.5f, 0.5f, 1.5f});
    const Matrix mc = ws.matrix("c", 3, 4);
    REQUIRE(std::holds_alternative<Fp8BlockMatrix>(mc));
    CHECK_FALSE(std::get<Fp8BlockMatrix>(mc).scale_is_f32);
    decode_row(mc, 0, row.data());
    CHECK(row == std::vector<float>{-5.5f, -4.5f, -3.5f, -2.5f});
    const Matrix md = ws.matrix("d", 3, 4);
    REQUIRE(std::holds_alternative<Fp4GroupMatrix>(md));
    decode_row(md, 0, row.data());
    CHECK(row == std::vector<float>{0.5f, 1.0f, 6.0f, -6.0f});
    decode_row(md, 2, row.data());  // 0x88, 0x76 with scale 2^-1
    CHECK(row == std::vector<float>{-0.0f, -0.0f, 2.0f, 3.0f});
    const Matrix me = ws.matrix("e", 3, 4);  // DeepSeek-V3 style f32 weight_scale_inv
    REQUIRE(std::holds_alternative<Fp8BlockMatrix>(me));
    CHECK(std::get<Fp8BlockMatrix>(me).scale_is_f32);
    decode_row(me, 0, row.data());
    CHECK(row == std::vector<float>{-2.75f, -2.25f, -1.75f, -1.25f});
  }
  SECTION("wrong shape") {
    REQUIRE_DSV4_ERROR(ws.matrix("a", 4, 3), "'a.weight'", "[3, 4]", "[4, 3]", "model.safetensors");
    REQUIRE_DSV4_ERROR(ws.matrix("b", 3, 5), "'b.weight'", "[3, 5]");
    REQUIRE_DSV4_ERROR(ws.matrix("c", 2, 4), "'c.weight'");
    REQUIRE_DSV4_ERROR(ws.matrix("d", 3, 6), "'d.weight'", "[3, 3]");  // packed: K/2 bytes per row
    REQUIRE_DSV4_ERROR(ws.matrix("d", 3, 5), "'d.weight'", "even");
    REQUIRE_DSV4_ERROR(ws.matrix("h", 3, 4), "'h.scale'", "[2, 1]", "[1, 1]");
  }
  SECTION("wrong dtype or missing scale") {
    REQUIRE_DSV4_ERROR(ws.matrix("g", 3, 4), "'g.weight'", "I32");
    REQUIRE_DSV4_ERROR(ws.matrix("f", 3, 4), "'f.weight'", "'f.scale'", "missing");
    REQUIRE_DSV4_ERROR(ws.matrix("i", 3, 4), "'i.scale'", "F32", "F8_E8M0");
    REQUIRE_DSV4_ERROR(ws.matrix("nothere", 3, 4), "'nothere.weight'");
    REQUIRE_DSV4_ERROR(ws.floats("g.weight", {3, 4}), "'g.weight'", "I32");
    REQUIRE_DSV4_ERROR(ws.floats("a.weight", {12}), "'a.weight'", "[12]");
  }
}

TEST_CASE("WeightSource maps release names to the transformers layout", "[codecs][weight_source]") {
  TempDir dir;
  std::vector<float> v{1.0f};
  write_safetensors((dir / "model.safetensors").string(), {out_tensor_f32("model.embed_tokens.weight", {1, 1}, v)});
  const Checkpoint ck = Checkpoint::open(dir.path());
  ModelConfig cfg;
  const WeightSource ws(ck, cfg);
  REQUIRE(ws.layout() == TensorLayout::Transformers);
  CHECK(ws.name("embed.weight") == "model.embed_tokens.weight");
  CHECK(ws.name("head.weight") == "head.weight");
  CHECK(ws.name("hc_head_fn") == "model.hc_head.hc_fn");
  CHECK(ws.name("hc_head_scale") == "model.hc_head.hc_scale");
  CHECK(ws.name("layers.3.attn.kv_norm.weight") == "model.layers.3.attn.norm.weight");
  CHECK(ws.name("layers.3.attn.compressor.norm.weight") == "model.layers.3.attn.compressor.norm.weight");
  CHECK(ws.name("layers.0.ffn.gate.tid2eid") == "model.layers.0.ffn.gate.tid2eid");
  CHECK(ws.has("embed.weight"));
  CHECK_FALSE(ws.has("head.weight"));
}
