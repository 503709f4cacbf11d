// Row and column parts of stored matrices (quant/matrix_part.hpp), as a tensor-parallel rank loads
// them: every part decodes to exactly the original's values, keeps the stored scheme where its
// blocks allow, reads only the bytes it needs, and bad ranges fail.
#include <catch2/catch.hpp>

#include <cstring>
#include <random>

#include "dsv4/quant/matrix_part.hpp"

using namespace dsv4;

namespace {

// A ByteSource over memory that is already readable, counting what is mapped and read.
struct MemoryBytes {
  std::vector<std::vector<uint8_t>> owned;
  size_t mapped = 0, read_bytes = 0;
  void map(const uint8_t*, size_t n) { mapped += n; }
  void read(const uint8_t* p, size_t n, uint8_t* dst) { std::memcpy(dst, p, n), read_bytes += n; }
  uint8_t* own(size_t n) { return owned.emplace_back(n).data(); }
};

struct Stored {
  std::vector<uint8_t> q, scale;
  Matrix m;
};

// scheme: 0 F32, 1 BF16, 2 FP8 E8M0 scales, 3 FP8 f32 scales, 4 FP4; FP8 tiles are bm × bn.
Stored make(int scheme, int64_t n, int64_t k, int64_t bm = 32, int64_t bn = 32, uint32_t seed = 7) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> byte(0, 255);
  Stored s;
  auto bytes = [&](size_t count) {
    std::vector<uint8_t> v(count);
    for (auto& b : v) b = uint8_t(byte(rng));
    return v;
  };
  switch (scheme) {
    case 0: {
      s.q.resize(size_t(n * k * 4));
      std::normal_distribution<float> normal;
      for (int64_t i = 0; i < n * k; ++i) {
        const float v = normal(rng);
        std::memcpy(&s.q[size_t(i * 4)], &v, 4);
      }
      s.m = F32Matrix{s.q.data(), n, k};
      break;
    }
    case 1:
      s.q = bytes(size_t(n * k * 2));
      for (size_t i = 1; i < s.q.size(); i += 2) s.q[i] &= 0x7F;  // no NaN or inf patterns
      s.m = Bf16Matrix{s.q.data(), n, k};
      break;
    case 2:
    case 3: {
      s.q = bytes(size_t(n * k));
      for (auto& b : s.q)
        if ((b & 0x7F) == 0x7F) b = 0;  // no NaN codes
      const int64_t tiles = ((n + bm - 1) / bm) * ((k + bn - 1) / bn);
      if (scheme == 2) {
        s.scale = bytes(size_t(tiles));
        for (auto& b : s.scale) b = uint8_t(120 + b % 10);
      } else {
        s.scale.resize(size_t(tiles * 4));
        for (int64_t t = 0; t < tiles; ++t) {
          const float v = 0.01f * float(1 + byte(rng));
          std::memcpy(&s.scale[size_t(t * 4)], &v, 4);
        }
      }
      s.m = Fp8BlockMatrix{s.q.data(), s.scale.data(), scheme == 3, n, k, bm, bn};
      break;
    }
    default:
      s.q = bytes(size_t(n * k / 2));
      s.scale = bytes(size_t(n * ((k + 31) / 32)));
      for (auto& b : s.scale) b = uint8_t(120 + b % 10);
      s.m = Fp4GroupMatrix{s.q.data(), s.scale.data(), n, k, 32};
  }
  return s;
}

std::vector<float> decoded(const Matrix& m) {
  std::vector<float> out(size_t(rows(m) * cols(m)));
  for (int64_t i = 0; i < rows(m); ++i) decode_row(m, i, &out[size_t(i * cols(m))]);
  return out;
}

// True when part == rows [r0, r0 + nr), columns [c0, c0 + nc) of whole, bit for bit.
bool same(const Matrix& part, const std::vector<float>& whole, int64_t k, int64_t r0, int64_t c0) {
  const std::vector<float> p = decoded(part);
  for (int64_t i = 0; i < rows(part); ++i)
    for (int64_t j = 0; j < cols(part); ++j)
      if (std::memcmp(&p[size_t(i * cols(part) + j)], &whole[size_t((r0 + i) * k + c0 + j)], 4)) return false;
  return true;
}

}  // namespace

TEST_CASE("matrix_rows: a view of the rows when they start a block, an exact f32 copy otherwise", "[matrix_part]") {
  const int64_t n = 70, k = 96;  // FP8 in 32 × 32 tiles: the last tile row is partial
  for (int scheme = 0; scheme < 5; ++scheme) {
    const Stored s = make(scheme, n, k);
    const std::vector<float> whole = decoded(s.m);
    struct Case { int64_t r0, count; };
    for (Case c : {Case{0, 70}, Case{32, 38}, Case{64, 6}, Case{5, 20}, Case{33, 37}, Case{69, 1}}) {
      CAPTURE(scheme, c.r0, c.count);
      MemoryBytes src;
      const Matrix part = matrix_rows(s.m, c.r0, c.count, src);
      CHECK(rows(part) == c.count);
      CHECK(cols(part) == k);
      CHECK(same(part, whole, k, c.r0, 0));
      const bool aligned = c.r0 % row_granule(s.m) == 0;
      CHECK(part.index() == (aligned ? s.m.index() : 0));
      if (aligned) {  // a view: its own bytes mapped, nothing copied
        const StoredBytes b = stored_bytes(part);
        CHECK(src.mapped == b.code_bytes + b.scale_bytes);
        CHECK(src.owned.empty());
      }
    }
  }
}

TEST_CASE("matrix_cols: a copy in the stored scheme on block boundaries, exact f32 otherwise", "[matrix_part]") {
  const int64_t n = 70, k = 160;  // FP8 tiles of 32 columns; FP4 scale groups of 32
  for (int scheme = 0; scheme < 5; ++scheme) {
    const Stored s = make(scheme, n, k);
    const std::vector<float> whole = decoded(s.m);
    struct Case { int64_t c0, count; };
    for (Case c : {Case{0, 160}, Case{32, 64}, Case{64, 40}, Case{128, 32}, Case{8, 20}, Case{96, 17}, Case{159, 1}}) {
      CAPTURE(scheme, c.c0, c.count);
      MemoryBytes src;
      const Matrix part = matrix_cols(s.m, c.c0, c.count, src);
      CHECK(rows(part) == n);
      CHECK(cols(part) == c.count);
      CHECK(same(part, whole, k, 0, c.c0));
      bool keeps = true;
      if (scheme == 2 || scheme == 3) keeps = c.c0 % 32 == 0;
      if (scheme == 4) keeps = c.c0 % 32 == 0 && c.count % 2 == 0;
      CHECK(part.index() == (keeps ? s.m.index() : 0));
      if (keeps) CHECK(src.read_bytes == size_t(storage_bytes(part)));  // only the part's bytes are read
    }
  }
}

TEST_CASE("matrix parts: V4-Flash-sized FP8 tiles (128 × 128) split over 2 and 4 ranks stay FP8", "[matrix_part]") {
  const int64_t n = 256, k = 1024;
  const Stored s = make(2, n, k, 128, 128);
  const std::vector<float> whole = decoded(s.m);
  for (int64_t ranks : {2, 4})
    for (int64_t r = 0; r < ranks; ++r) {
      MemoryBytes src;
      const Matrix c = matrix_cols(s.m, r * k / ranks, k / ranks, src);
      CHECK(std::holds_alternative<Fp8BlockMatrix>(c));
      CHECK(same(c, whole, k, 0, r * k / ranks));
      if (ranks == 2) {
        const Matrix rw = matrix_rows(s.m, r * n / ranks, n / ranks, src);
        CHECK(std::holds_alternative<Fp8BlockMatrix>(rw));
        CHECK(same(rw, whole, k, r * n / ranks, 0));
      }
    }
}

TEST_CASE("matrix parts outside the matrix fail with the range", "[matrix_part]") {
  const Stored s = make(0, 8, 8);
  MemoryBytes src;
  CHECK_THROWS_WITH(matrix_rows(s.m, 4, 5, src), Catch::Contains("rows 4+5 of a 8-row matrix"));
  CHECK_THROWS_WITH(matrix_rows(s.m, 0, 0, src), Catch::Contains("rows 0+0"));
  CHECK_THROWS_WITH(matrix_cols(s.m, -1, 2, src), Catch::Contains("columns -1+2 of a 8-column matrix"));
  CHECK_THROWS_WITH(matrix_cols(s.m, 7, 2, src), Catch::Contains("columns 7+2"));
}
