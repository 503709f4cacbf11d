#pragma once
// Weight schemes: how a logical [N, K] fp32 matrix is stored. Each scheme is a small value
// type over bytes it does not own (an mmap of the checkpoint) with a scalar decode_row,
// the oracle every SIMD kernel is tested against. Kernels are written once per scheme.
#include <cmath>
#include <concepts>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <variant>

#include "dsv4/core/error.hpp"
#include "dsv4/numeric/bf16.hpp"
#include "dsv4/numeric/e2m1.hpp"
#include "dsv4/numeric/e4m3.hpp"
#include "dsv4/numeric/e8m0.hpp"

namespace dsv4 {

template <class S>
concept QuantScheme = requires(const S& s, int64_t i, float* out) {
  { s.rows() } -> std::convertible_to<int64_t>;
  { s.cols() } -> std::convertible_to<int64_t>;
  { s.storage_bytes() } -> std::convertible_to<int64_t>;
  s.decode_row(i, out);  // out: [K] fp32
};

struct F32Matrix {
  const uint8_t* data = nullptr;  // [N, K] f32, possibly unaligned
  int64_t n = 0, k = 0;
  int64_t rows() const { return n; }
  int64_t cols() const { return k; }
  int64_t storage_bytes() const { return n * k * 4; }
  void decode_row(int64_t i, float* out) const { std::memcpy(out, data + i * k * 4, size_t(k) * 4); }
};

struct Bf16Matrix {
  const uint8_t* data = nullptr;  // [N, K] bf16
  int64_t n = 0, k = 0;
  int64_t rows() const { return n; }
  int64_t cols() const { return k; }
  int64_t storage_bytes() const { return n * k * 2; }
  void decode_row(int64_t i, float* out) const {
    const uint8_t* p = data + i * k * 2;
    for (int64_t j = 0; j < k; ++j) out[j] = bf16_to_f32(uint16_t(p[2 * j] | (p[2 * j + 1] << 8)));
  }
};

// Block FP8: q [N, K] e4m3; scale [ceil(N/bm), ceil(K/bn)], E8M0 (DeepSeek-V4) or f32
// (DeepSeek-V3's weight_scale_inv). W[i][j] = q[i][j] * scale[i/bm][j/bn]; edge tiles are partial.
struct Fp8BlockMatrix {
  const uint8_t* q = nullptr;
  const uint8_t* scale = nullptr;
  bool scale_is_f32 = false;
  int64_t n = 0, k = 0, bm = 128, bn = 128;
  int64_t rows() const { return n; }
  int64_t cols() const { return k; }
  int64_t scale_cols() const { return (k + bn - 1) / bn; }
  int64_t storage_bytes() const { return n * k + ((n + bm - 1) / bm) * scale_cols() * (scale_is_f32 ? 4 : 1); }
  float block_scale(int64_t bi, int64_t bj) const {
    const int64_t idx = bi * scale_cols() + bj;
    if (!scale_is_f32) return e8m0_to_f32(scale[idx]);
    float s;
    std::memcpy(&s, scale + idx * 4, 4);
    return s;
  }
  void decode_row(int64_t i, float* out) const {
    const uint8_t* p = q + i * k;
    for (int64_t b = 0; b * bn < k; ++b) {
      const float s = block_scale(i / bm, b);
      const int64_t end = std::min(k, (b + 1) * bn);
      for (int64_t j = b * bn; j < end; ++j) out[j] = e4m3_to_f32(p[j]) * s;
    }
  }
};

// Grouped FP4: q [N, K/2] bytes (element 2j low nibble, 2j+1 high nibble);
// scale [N, ceil(K/group)] E8M0 multiplying each run of `group` inputs.
struct Fp4GroupMatrix {
  const uint8_t* q = nullptr;
  const uint8_t* scale = nullptr;
  int64_t n = 0, k = 0, group = 32;
  int64_t rows() const { return n; }
  int64_t cols() const { return k; }
  int64_t scale_cols() const { return (k + group - 1) / group; }
  int64_t storage_bytes() const { return n * (k / 2) + n * scale_cols(); }
  void decode_row(int64_t i, float* out) const {
    const uint8_t* p = q + i * (k / 2);
    const uint8_t* s = scale + i * scale_cols();
    for (int64_t j = 0; j < k; j += 2) {
      const uint8_t b = p[j / 2];
      out[j] = fp4_packed_low(b) * e8m0_to_f32(s[j / group]);
      out[j + 1] = fp4_packed_high(b) * e8m0_to_f32(s[(j + 1) / group]);
    }
  }
};

static_assert(QuantScheme<F32Matrix> && QuantScheme<Bf16Matrix> && QuantScheme<Fp8BlockMatrix> &&
              QuantScheme<Fp4GroupMatrix>);

// A weight matrix in whichever scheme the checkpoint stored it; kernels std::visit it once per
// call, so the inner loop is compiled per scheme.
using Matrix = std::variant<F32Matrix, Bf16Matrix, Fp8BlockMatrix, Fp4GroupMatrix>;

inline int64_t rows(const Matrix& m) { return std::visit([](auto& s) { return s.rows(); }, m); }
inline int64_t cols(const Matrix& m) { return std::visit([](auto& s) { return s.cols(); }, m); }
inline int64_t storage_bytes(const Matrix& m) { return std::visit([](auto& s) { return s.storage_bytes(); }, m); }
inline void decode_row(const Matrix& m, int64_t i, float* out) {
  std::visit([&](auto& s) { s.decode_row(i, out); }, m);
}
// Rows a row slice of m must start at: FP8 blocks span bm rows, the other schemes slice anywhere.
inline int64_t row_granule(const Matrix& m) {
  if (auto* f = std::get_if<Fp8BlockMatrix>(&m)) return f->bm;
  return 1;
}

// Rows [r0, r0 + count) of m as a matrix of the same scheme (a view; no copy).
inline Matrix row_slice(const Matrix& m, int64_t r0, int64_t count) {
  const int64_t n = rows(m), k = cols(m);
  if (r0 < 0 || count < 0 || r0 + count > n) fail("row_slice: rows ", r0, "+", count, " of a ", n, "-row matrix");
  if (r0 % row_granule(m)) fail("row_slice: row ", r0, " is not on a ", row_granule(m), "-row block boundary");
  return std::visit(
      [&](auto s) -> Matrix {
        using S = decltype(s);
        if constexpr (std::is_same_v<S, F32Matrix>) s.data += r0 * k * 4;
        else if constexpr (std::is_same_v<S, Bf16Matrix>) s.data += r0 * k * 2;
        else if constexpr (std::is_same_v<S, Fp8BlockMatrix>)
          s.q += r0 * k, s.scale += (r0 / s.bm) * s.scale_cols() * (s.scale_is_f32 ? 4 : 1);
        else s.q += r0 * (k / 2), s.scale += r0 * s.scale_cols();
        s.n = count;
        return s;
      },
      m);
}

inline const char* scheme_name(const Matrix& m) {
  constexpr const char* names[] = {"f32", "bf16", "fp8-block", "fp4-group"};
  return names[m.index()];
}

}  // namespace dsv4
