#pragma once
// y [T, rows] = x [T, K] · W[rows]^T for many tokens (prefill), any weight scheme, in fp32.
//
// Decoding a stored weight costs several vector operations; a GEMM must not pay that per token.
// So each thread decodes a panel of MR weight rows (the whole of K, block scales applied: exact
// fp32 values, MR·K·4 bytes, L2-resident) once per tile of NT tokens, and a register-blocked
// microkernel multiplies it with the tile: vectors run along tokens (the activations are
// transposed per tile, zero-padded), each weight is broadcast, MR×NT accumulators. Per k that is
// NV vector loads and MR broadcasts for MR·NV FMAs, so L1/L2 traffic stays far below the FMA
// rate (an inner-product kernel along K needs a load per two FMAs and is bound by L2).
// The products are those of the reference (fp32 weights × fp32 activations, fp32 sums); only the
// order of summation differs.
#include <algorithm>
#include <cmath>
#include <vector>

#include "dsv4/core/parallel.hpp"
#include "dsv4/kernels/cpu/simd_decode.hpp"

namespace dsv4::cpu {

template <class Arch>
struct GemmTiling {
  static constexpr int MR = kIsAvx512<Arch> ? 12 : 6;  // weight rows per microkernel (broadcast)
  static constexpr int NV = 2;                         // token vectors per microkernel
  static constexpr int64_t NT = NV * fbatch<Arch>::size;  // tokens per tile: 32 (AVX-512), 16 (AVX2)
};

// Decodes rows n..n+rows-1 of `m` into panel [rows, kp] (fp32, zero past K).
template <class Arch, class Scheme>
void decode_panel(const WeightRows<Scheme, Arch>& w, const Scheme& m, int64_t n, int rows, int64_t kp, float* panel) {
  using B = fbatch<Arch>;
  constexpr int64_t L = B::size;
  const int64_t K = m.cols(), bc = w.block_cols();
  for (int r = 0; r < rows; ++r) {
    float* out = panel + r * kp;
    const uint8_t* scales = w.row_scales(n + r);
    bool exact = true;  // every block scale folds into the raw values
    for (int64_t b = 0; b * bc < K && exact; ++b) {
      const float s = raw_scale<Scheme>(w.scale_at(scales, b));
      if (!std::isfinite(s)) {
        exact = false;
        break;
      }
      const int64_t j1 = std::min(K, (b + 1) * bc);
      int64_t j = b * bc;
      if (j % L == 0)  // blocks aligned to vectors (always, for the checkpoint schemes' 32/128)
        for (; j + L <= j1; j += L) {
          B v = w.load(n + r, j);
          if constexpr (WeightRows<Scheme, Arch>::kScaled) v *= B(s);
          v.store_unaligned(out + j);
        }
      for (; j < j1; ++j) out[j] = w.scalar(n + r, j) * s;
    }
    if (!exact) m.decode_row(n + r, out);  // FP8 tiles scaled above 2^119: the scalar oracle
    std::fill(out + K, out + kp, 0.f);
  }
}

// y[t, r] = sum_k panel[r, k] · xt[k, t] for r < n_valid, t < nt: MR rows × NT tokens of
// accumulators (NV vectors of tokens per row); per k, NV activation loads and MR broadcasts feed
// MR·NV FMAs, all from L1/L2.
template <class Arch, int MR, int NV>
inline void gemm_microkernel(const float* panel, int64_t kp, int64_t K, int n_valid, const float* xt, int nt,
                             float* y, int64_t ldy) {
  using B = fbatch<Arch>;
  constexpr int64_t L = B::size;
  B acc[MR][NV];
  for (int r = 0; r < MR; ++r)
    for (int v = 0; v < NV; ++v) acc[r][v] = B(0.f);
  for (int64_t k = 0; k < K; ++k) {
    B xv[NV];
    for (int v = 0; v < NV; ++v) xv[v] = B::load_aligned(xt + k * NV * L + v * L);
    for (int r = 0; r < MR; ++r) {
      const B w(panel[r * kp + k]);
      for (int v = 0; v < NV; ++v) acc[r][v] = xsimd::fma(w, xv[v], acc[r][v]);
    }
  }
  alignas(64) float out[NV * L];
  for (int r = 0; r < n_valid; ++r) {
    for (int v = 0; v < NV; ++v) acc[r][v].store_aligned(out + v * L);
    for (int t = 0; t < nt; ++t) y[t * ldy + r] = out[t];
  }
}

// A 64-byte aligned, growing float buffer (reused per thread: no allocation once grown).
struct AlignedFloats {
  std::vector<float> v;
  float* get(size_t n) {
    v.resize(n + 16);
    const auto p = reinterpret_cast<uintptr_t>(v.data());
    return v.data() + ((64 - p % 64) % 64) / sizeof(float);
  }
};

// y[t, n - row0] = sum_k W[n, k] x[t, k], rows n in [row0, row1). x: [T, K] stride ldx; y stride ldy.
template <class Arch, QuantScheme Scheme>
void simd_gemm(const Scheme& m, const float* x, int64_t ldx, int64_t t, float* y, int64_t ldy, int64_t row0,
               int64_t row1) {
  using Tl = GemmTiling<Arch>;
  constexpr int MR = Tl::MR, NV = Tl::NV;
  constexpr int64_t NT = Tl::NT, L = fbatch<Arch>::size;
  const WeightRows<Scheme, Arch> w{m};
  // Panel rows kp floats apart, kp = K rounded up to vectors plus one cache line: a power-of-two
  // stride would put the MR rows' current lines in one L1 set (8 ways for 12 rows).
  const int64_t K = m.cols(), kp = (K + L - 1) / L * L + 16, rows = row1 - row0;
  const int64_t tiles = (t + NT - 1) / NT;
  // Activations transposed per tile of NT tokens: xt[tile][k][NT], zero past the last token.
  thread_local AlignedFloats xbuf;
  float* xt = xbuf.get(size_t(tiles * K * NT));
  parallel_for(tiles, [&](int64_t tile) {
    float* dst = xt + tile * K * NT;
    for (int64_t i = 0; i < NT; ++i) {
      const int64_t tok = tile * NT + i;
      if (tok < t) {
        const float* src = x + tok * ldx;
        for (int64_t k = 0; k < K; ++k) dst[k * NT + i] = src[k];
      } else {
        for (int64_t k = 0; k < K; ++k) dst[k * NT + i] = 0.f;
      }
    }
  });
  const int64_t row_blocks = (rows + MR - 1) / MR;
  const int threads = num_threads();
  // Token tiles outside: a tile's activations (K·NT floats) stay in L2 while each thread decodes
  // its panels of MR rows (MR·K floats) and multiplies them with the tile.
  parallel_block_shares(row_blocks, threads, [&](int64_t rb0, int64_t rb1) {
    thread_local AlignedFloats pbuf;
    float* panel = pbuf.get(size_t(MR * kp));
    for (int64_t tile = 0; tile < tiles; ++tile) {
      const int nt = int(std::min<int64_t>(NT, t - tile * NT));
      for (int64_t rb = rb0; rb < rb1; ++rb) {
        const int64_t n = row0 + rb * MR;
        const int n_valid = int(std::min<int64_t>(MR, row1 - n));
        decode_panel<Arch>(w, m, n, n_valid, kp, panel);
        for (int r = n_valid; r < MR; ++r) std::fill(panel + r * kp, panel + (r + 1) * kp, 0.f);
        gemm_microkernel<Arch, MR, NV>(panel, kp, K, n_valid, xt + tile * K * NT, nt,
                                       y + tile * NT * ldy + (n - row0), ldy);
      }
    }
  });
}

}  // namespace dsv4::cpu
