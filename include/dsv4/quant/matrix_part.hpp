#pragma once
// A block of rows or columns of a stored matrix, for a rank that holds only its share of a layer
// (tensor parallelism). Rows are contiguous in every scheme: a row part is a view of those rows'
// bytes whenever it starts on a block boundary. Columns are not: a column part is a copy, in the
// stored scheme when it starts on a block boundary (FP8 tiles, FP4 scale groups), otherwise decoded
// to f32, which is exact for every scheme. The bytes are reached through a ByteSource (the
// checkpoint): map() makes a range readable in place, read() copies one out, own() gives memory
// that lives as long as the weights.
#include <algorithm>
#include <concepts>
#include <cstdint>
#include <vector>

#include "dsv4/core/error.hpp"
#include "dsv4/quant/schemes.hpp"

namespace dsv4 {

template <class S>
concept ByteSource = requires(S& s, const uint8_t* p, size_t n, uint8_t* dst) {
  s.map(p, n);
  s.read(p, n, dst);
  { s.own(n) } -> std::same_as<uint8_t*>;
};

// The bytes a matrix view reads: its codes and its block scales (none for F32 and BF16).
struct StoredBytes {
  const uint8_t* codes = nullptr;
  size_t code_bytes = 0;
  const uint8_t* scales = nullptr;
  size_t scale_bytes = 0;
};

inline StoredBytes stored_bytes(const Matrix& m) {
  return std::visit(
      [](const auto& s) -> StoredBytes {
        using S = std::decay_t<decltype(s)>;
        if constexpr (std::is_same_v<S, F32Matrix>) return {s.data, size_t(s.n * s.k * 4)};
        else if constexpr (std::is_same_v<S, Bf16Matrix>) return {s.data, size_t(s.n * s.k * 2)};
        else if constexpr (std::is_same_v<S, Fp8BlockMatrix>)
          return {s.q, size_t(s.n * s.k), s.scale,
                  size_t((s.n + s.bm - 1) / s.bm * s.scale_cols() * (s.scale_is_f32 ? 4 : 1))};
        else return {s.q, size_t(s.n * (s.k / 2)), s.scale, size_t(s.n * s.scale_cols())};
      },
      m);
}

// The same matrix over other copies of its bytes.
inline Matrix with_bytes(const Matrix& m, const uint8_t* codes, const uint8_t* scales) {
  return std::visit(
      [&](auto s) -> Matrix {
        using S = decltype(s);
        if constexpr (std::is_same_v<S, F32Matrix> || std::is_same_v<S, Bf16Matrix>) s.data = codes;
        else s.q = codes, s.scale = scales;
        return s;
      },
      m);
}

namespace detail {

// Rows [r0, r0 + nr), columns [c0, c0 + nc) of m decoded to an f32 matrix in memory src owns.
// Reads whole blocks of rows (FP8 scales cover bm rows) a few at a time.
template <ByteSource Src>
Matrix f32_part(const Matrix& m, int64_t r0, int64_t nr, int64_t c0, int64_t nc, Src& src) {
  const int64_t n = rows(m), k = cols(m), g = row_granule(m), step = g * std::max<int64_t>(1, 64 / g);
  auto* out = reinterpret_cast<float*>(src.own(size_t(nr * nc) * sizeof(float)));
  std::vector<uint8_t> codes, scales;
  std::vector<float> row(static_cast<size_t>(k));
  for (int64_t a0 = r0 / g * g; a0 < r0 + nr; a0 += step) {
    const Matrix block = row_slice(m, a0, std::min(step, n - a0));
    const StoredBytes b = stored_bytes(block);
    codes.resize(b.code_bytes), scales.resize(b.scale_bytes);
    src.read(b.codes, b.code_bytes, codes.data());
    if (b.scale_bytes) src.read(b.scales, b.scale_bytes, scales.data());
    const Matrix local = with_bytes(block, codes.data(), scales.data());
    for (int64_t i = std::max(a0, r0); i < std::min(a0 + rows(block), r0 + nr); ++i) {
      decode_row(local, i - a0, row.data());
      std::copy_n(row.data() + c0, nc, out + (i - r0) * nc);
    }
  }
  return F32Matrix{reinterpret_cast<const uint8_t*>(out), nr, nc};
}

}  // namespace detail

// Rows [r0, r0 + count) of m: a view (bytes mapped in place) when r0 is on a row-block boundary,
// else an f32 copy.
template <ByteSource Src>
Matrix matrix_rows(const Matrix& m, int64_t r0, int64_t count, Src& src) {
  if (r0 < 0 || count < 1 || r0 + count > rows(m))
    fail("matrix_rows: rows ", r0, "+", count, " of a ", rows(m), "-row matrix");
  if (r0 % row_granule(m)) return detail::f32_part(m, r0, count, 0, cols(m), src);
  const Matrix v = row_slice(m, r0, count);
  const StoredBytes b = stored_bytes(v);
  src.map(b.codes, b.code_bytes);
  if (b.scale_bytes) src.map(b.scales, b.scale_bytes);
  return v;
}

// Columns [c0, c0 + count) of m: a copy in m's scheme when c0 starts a block of columns (FP8: a
// tile, FP4: a scale group) and, for FP4, count is even; else an f32 copy.
template <ByteSource Src>
Matrix matrix_cols(const Matrix& m, int64_t c0, int64_t count, Src& src) {
  const int64_t n = rows(m), k = cols(m);
  if (c0 < 0 || count < 1 || c0 + count > k) fail("matrix_cols: columns ", c0, "+", count, " of a ", k, "-column matrix");
  // Each row's run of bytes [at, at + len) copied to out + row * len.
  auto copy_runs = [&](const uint8_t* base, int64_t rows_, size_t stride, size_t at, size_t len) {
    uint8_t* out = src.own(size_t(rows_) * len);
    for (int64_t i = 0; i < rows_; ++i) src.read(base + size_t(i) * stride + at, len, out + size_t(i) * len);
    return out;
  };
  return std::visit(
      [&](auto s) -> Matrix {
        using S = decltype(s);
        if constexpr (std::is_same_v<S, F32Matrix> || std::is_same_v<S, Bf16Matrix>) {
          const size_t es = std::is_same_v<S, F32Matrix> ? 4 : 2;
          s.data = copy_runs(s.data, n, size_t(k) * es, size_t(c0) * es, size_t(count) * es);
          s.k = count;
          return s;
        } else if constexpr (std::is_same_v<S, Fp8BlockMatrix>) {
          if (c0 % s.bn) return detail::f32_part(m, 0, n, c0, count, src);
          const size_t sb = s.scale_is_f32 ? 4 : 1, old_sc = size_t(s.scale_cols());
          s.q = copy_runs(s.q, n, size_t(k), size_t(c0), size_t(count));
          s.k = count;
          s.scale = copy_runs(s.scale, (n + s.bm - 1) / s.bm, old_sc * sb, size_t(c0 / s.bn) * sb,
                              size_t(s.scale_cols()) * sb);
          return s;
        } else {
          if (c0 % s.group || count % 2) return detail::f32_part(m, 0, n, c0, count, src);
          const size_t old_sc = size_t(s.scale_cols());
          s.q = copy_runs(s.q, n, size_t(k / 2), size_t(c0 / 2), size_t(count / 2));
          s.k = count;
          s.scale = copy_runs(s.scale, n, old_sc, size_t(c0 / s.group), size_t(s.scale_cols()));
          return s;
        }
      },
      m);
}

}  // namespace dsv4
