#pragma once
// Policy bundles: the compile-time choice of kernels and numerics. The model code is written
// once against KernelBundle; Fp32Reference is the oracle.
#include <concepts>
#include <cstdint>

#include "dsv4/kernels/reference.hpp"
#include "dsv4/quant/schemes.hpp"

namespace dsv4 {

template <class B>
concept KernelBundle = requires(const Matrix& w, const float* x, float* y, int64_t i) {
  { B::kName } -> std::convertible_to<const char*>;
  { B::kBlockedAttention } -> std::convertible_to<bool>;
  B::matmul(w, x, i, i, y, i, i, i);
};

// fp32 activations, weights decoded to fp32 row by row, fp32 accumulation.
struct Fp32Reference {
  static constexpr const char* kName = "reference";
  static constexpr bool kBlockedAttention = false;  // one query at a time: the oracle
  static void matmul(const Matrix& w, const float* x, int64_t ldx, int64_t t, float* y, int64_t ldy, int64_t row0,
                     int64_t row1) {
    ref::matmul(w, x, ldx, t, y, ldy, row0, row1);
  }
};
static_assert(KernelBundle<Fp32Reference>);

// y [T, N] = x [T, K] · W^T for the whole matrix, dense rows.
template <KernelBundle B>
void linear(const Matrix& w, const float* x, int64_t t, float* y) {
  B::matmul(w, x, cols(w), t, y, rows(w), 0, rows(w));
}

}  // namespace dsv4
