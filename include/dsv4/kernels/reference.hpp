#pragma once
// Scalar fp32 kernels: the oracle. Every faster kernel is tested against these.
#include <cmath>
#include <cstdint>
#include <vector>

#include "dsv4/core/parallel.hpp"
#include "dsv4/quant/schemes.hpp"

namespace dsv4::ref {

// y[t, n - row0] = sum_k W[n, k] x[t, k] for rows n in [row0, row1) of W.
// x: [T, K] with row stride ldx; y: [T, row1 - row0] with row stride ldy.
template <QuantScheme W>
void matmul(const W& w, const float* x, int64_t ldx, int64_t t, float* y, int64_t ldy, int64_t row0,
            int64_t row1) {
  const int64_t k = w.cols();
  const int64_t n_rows = row1 - row0;
  // Each row of W is decoded once and reused for all T inputs.
#pragma omp parallel if (n_rows * k * (t + 1) > (1 << 16))
  {
    std::vector<float> row(static_cast<size_t>(k));
#pragma omp for schedule(static)
    for (int64_t n = row0; n < row1; ++n) {
      w.decode_row(n, row.data());
      for (int64_t i = 0; i < t; ++i) {
        const float* xi = x + i * ldx;
        float acc = 0.f;
        for (int64_t j = 0; j < k; ++j) acc += row[size_t(j)] * xi[j];
        y[i * ldy + (n - row0)] = acc;
      }
    }
  }
}

inline void matmul(const Matrix& w, const float* x, int64_t ldx, int64_t t, float* y, int64_t ldy, int64_t row0,
                   int64_t row1) {
  std::visit([&](auto& s) { matmul(s, x, ldx, t, y, ldy, row0, row1); }, w);
}

}  // namespace dsv4::ref
