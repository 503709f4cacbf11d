#pragma once
// y [T, rows] = x [T, K] · W[rows]^T for any weight scheme, weights decoded in registers.
// A microkernel keeps R rows × TT tokens of accumulators (vectors along K) and decodes each weight
// vector once per TT tokens. K is tiled so that a tile of tokens' activations stays in L2 while all
// of a thread's rows pass over it; rows are split over the threads.
#include <algorithm>
#include <cmath>
#include <vector>

#include "dsv4/core/parallel.hpp"
#include "dsv4/kernels/cpu/fp4_integer.hpp"
#include "dsv4/kernels/cpu/fp4_vbmi.hpp"
#include "dsv4/kernels/cpu/fp8_vbmi.hpp"
#include "dsv4/kernels/cpu/simd_decode.hpp"
#include "dsv4/kernels/cpu/simd_gemm.hpp"

namespace dsv4::cpu {

template <class Arch>
struct Tiling {
  static constexpr int R = kIsAvx512<Arch> ? 4 : 2;   // weight rows per microkernel
  static constexpr int TT = 4;                         // tokens per microkernel
  static constexpr int64_t kTokensPerTile = 64;
  static constexpr int64_t kColsPerTile = 512;         // K tile: 64 tokens x 512 floats = 128 KiB of activations
};

// Adds the R x NT dot products over columns [k0, k1) of rows n..n+R-1 into y.
// n_valid <= R rows and nt <= TT tokens are real; the rest are skipped.
template <class Scheme, class Arch, int R, int TT>
inline void microkernel(const WeightRows<Scheme, Arch>& w, int64_t n, int n_valid, const float* x, int64_t ldx,
                        int nt, float* y, int64_t ldy, int64_t k0, int64_t k1) {
  using B = fbatch<Arch>;
  constexpr int64_t L = B::size;
  constexpr int kChunk = 64;  // scale blocks whose scales are looked up ahead of the vector loop
  B acc[R][TT];
  float tail[R][TT] = {};
  for (int r = 0; r < R; ++r)
    for (int t = 0; t < TT; ++t) acc[r][t] = B(0.f);
  const int64_t bc = w.block_cols();
  const uint8_t* row_scales[R];
  for (int r = 0; r < R; ++r) row_scales[r] = w.row_scales(n + std::min(r, n_valid - 1));
  float scale[R][kChunk];
  for (int64_t b0 = k0 / bc; b0 * bc < k1; b0 += kChunk) {
    const int nb = int(std::min<int64_t>(kChunk, (k1 - b0 * bc + bc - 1) / bc));
    bool slow = false;  // a scale that cannot be folded (FP8 tiles scaled above 2^119)
    for (int r = 0; r < R; ++r)
      for (int i = 0; i < nb; ++i) {
        const float s = raw_scale<Scheme>(w.scale_at(row_scales[r], b0 + i));
        scale[r][i] = s;
        slow |= !std::isfinite(s);
      }
    for (int i = 0; i < nb; ++i) {
      const int64_t jb = std::max((b0 + i) * bc, k0), je = std::min((b0 + i + 1) * bc, k1);
      int64_t j = jb;
      if (!slow) {
        B sv[R];
        for (int r = 0; r < R; ++r) sv[r] = B(scale[r][i]);
        for (; j + L <= je; j += L) {
          B wv[R];
          for (int r = 0; r < R; ++r) {
            wv[r] = w.load(n + std::min(r, n_valid - 1), j);
            if constexpr (WeightRows<Scheme, Arch>::kScaled) wv[r] *= sv[r];
          }
          for (int t = 0; t < TT; ++t) {
            if (t >= nt) break;
            const B xv = B::load_unaligned(x + t * ldx + j);
            for (int r = 0; r < R; ++r) acc[r][t] = xsimd::fma(wv[r], xv, acc[r][t]);
          }
        }
      }
      // Vector tails, and the exact path for unfoldable scales.
      for (; j < je; ++j)
        for (int r = 0; r < n_valid; ++r) {
          float wj = w.scalar(n + r, j);
          wj = slow ? wj * (std::is_same_v<Scheme, Fp8BlockMatrix> ? kE4m3BitScale : 1.0f) *
                          w.scale_at(row_scales[r], b0 + i)
                    : wj * scale[r][i];
          for (int t = 0; t < nt; ++t) tail[r][t] += wj * x[t * ldx + j];
        }
    }
  }
  for (int r = 0; r < n_valid; ++r)
    for (int t = 0; t < nt; ++t) y[t * ldy + (n + r)] += xsimd::hadd(acc[r][t]) + tail[r][t];
}

// Row n · x over all K for one token: four independent FMA chains (one chain caps a core at a
// vector per FMA latency, ~10 GB/s of FP8), block scale applied once per block, software prefetch
// ahead of the single stream.
template <class Arch, class Scheme>
float gemv_row(const WeightRows<Scheme, Arch>& w, const Scheme& m, int64_t n, const float* x) {
  using B = fbatch<Arch>;
  constexpr int64_t L = B::size;
  const int64_t K = m.cols(), bc = w.block_cols();
  const uint8_t* scales = w.row_scales(n);
  B acc(0.f);
  float tail = 0.f;
  for (int64_t b = 0; b * bc < K; ++b) {
    const int64_t j0 = b * bc, j1 = std::min(K, j0 + bc);
    const float s = raw_scale<Scheme>(w.scale_at(scales, b));
    if (!std::isfinite(s) || j0 % L != 0) {  // unfoldable FP8 scale or unaligned block: exact scalar
      const float exact = w.scale_at(scales, b) * (std::is_same_v<Scheme, Fp8BlockMatrix> ? kE4m3BitScale : 1.0f);
      for (int64_t j = j0; j < j1; ++j) tail += w.scalar(n, j) * exact * x[j];
      continue;
    }
    B a0(0.f), a1(0.f), a2(0.f), a3(0.f);
    int64_t j = j0;
    for (; j + 4 * L <= j1; j += 4 * L) {
      // Every line of the step (BF16: two, F32: four); one prefetch per step left the others to
      // the hardware streamer (the BF16 head, 1 GB: 15-16 GB/s, 0.52-0.71 of the bandwidth).
      const uint8_t* at = w.address(n, j) + kPrefetchBytes;
      for (int64_t l = 0; l < w.address(n, j + 4 * L) - w.address(n, j); l += 64)
        _mm_prefetch(reinterpret_cast<const char*>(at + l), _MM_HINT_T0);
      a0 = xsimd::fma(w.load(n, j), B::load_unaligned(x + j), a0);
      a1 = xsimd::fma(w.load(n, j + L), B::load_unaligned(x + j + L), a1);
      a2 = xsimd::fma(w.load(n, j + 2 * L), B::load_unaligned(x + j + 2 * L), a2);
      a3 = xsimd::fma(w.load(n, j + 3 * L), B::load_unaligned(x + j + 3 * L), a3);
    }
    for (; j + L <= j1; j += L) a0 = xsimd::fma(w.load(n, j), B::load_unaligned(x + j), a0);
    const B sum = (a0 + a1) + (a2 + a3);
    if constexpr (WeightRows<Scheme, Arch>::kScaled) acc = xsimd::fma(sum, B(s), acc);
    else acc += sum;
    for (; j < j1; ++j) tail += w.scalar(n, j) * s * x[j];
  }
  return xsimd::hadd(acc) + tail;
}

// One token: rows streamed one at a time, start to end (one stream per thread and piece for the
// prefetchers).
template <class Arch, class Scheme>
void simd_gemv(const WeightRows<Scheme, Arch>& w, const Scheme& m, const float* x, float* y, int64_t row0, int64_t row1) {
  const int64_t K = m.cols(), rows = row1 - row0;
  const int threads = rows * K > (1 << 15) ? num_threads() : 1;
  // Pieces of rows handed out as threads become free (about 16 each): a static half each left one
  // thread idle whenever the other was slowed.
  const int64_t piece = std::max<int64_t>(1, rows / (16 * threads));
#pragma omp parallel for schedule(dynamic, piece) num_threads(threads) if (threads > 1)
  for (int64_t n = row0; n < row1; ++n) y[n - row0] = gemv_row<Arch>(w, m, n, x);
}

// FP4 experts on AVX2 / AVX-512 take the integer kernel (16-bit activations); `true` if it ran.
// One token with VBMI + GFNI: the same products in fewer instructions (fp4_vbmi.hpp).
template <class Arch, bool kVnni, bool kVbmi>
bool try_fp4_integer(const Fp4GroupMatrix& m, const float* x, int64_t ldx, int64_t t, float* y, int64_t ldy,
                  int64_t row0, int64_t row1) {
  constexpr int VB = kIsAvx512<Arch> ? 64 : kIsAvx2<Arch> ? 32 : 0;
  if constexpr (VB == 0) {
    return false;
  } else {
    if (!fp4_integer_applies(m) || t == 0) return false;
    thread_local Q16Activations<VB> a;  // reused: no allocation per call once grown
    a.quantize(x, ldx, t, m.k);
#if defined(DSV4_HAVE_VBMI_KERNELS)
    if constexpr (kVbmi && VB == 64)
      if (t == 1) {
        const int threads = (row1 - row0) * m.k > (1 << 15) ? num_threads() : 1;
        const Q16Activations<VB>& qa = a;  // the caller's: inside the region `a` names each thread's own
        parallel_row_pieces(row0, row1, 32, threads,
                       [&](int64_t n0, int64_t n1) { fp4_vbmi_gemv_rows<kVnni>(m, qa, y, n0, n1, row0); });
        return true;
      }
#endif
    fp4_integer_matmul<VB, kVnni>(m, a, y, ldy, row0, row1);
    return true;
  }
}

// y[t, n - row0] = sum_k W[n, k] x[t, k], rows n in [row0, row1). x: [T, K] stride ldx; y stride ldy.
// kVnni: AVX-512 with VNNI (vpdpbusd) for the integer FP4 kernel.
// From this many tokens on, decoding each weight once per tile of 32 tokens (simd_gemm.hpp) beats
// decoding it in the inner loop (bench_kernels, FP8 and FP4 shapes: at 8 tokens the GEMM is 2-4x
// slower, its tile mostly padding; at 64 it is 2x faster for FP8 and level for FP4).
inline constexpr int64_t kGemmMinTokens = 24;

// kVbmi: AVX-512 with VBMI and GFNI for the FP8 and one-token FP4 kernels (fp8_vbmi.hpp, fp4_vbmi.hpp).
template <class Arch, bool kVnni = false, bool kVbmi = false, QuantScheme Scheme>
void simd_matmul(const Scheme& m, const float* x, int64_t ldx, int64_t t, float* y, int64_t ldy, int64_t row0,
                 int64_t row1) {
  if constexpr (kIsAvx512<Arch> || kIsAvx2<Arch>)
    if (t >= kGemmMinTokens && row1 > row0) return simd_gemm<Arch>(m, x, ldx, t, y, ldy, row0, row1);
#if defined(DSV4_HAVE_VBMI_KERNELS)
  if constexpr (std::is_same_v<Scheme, Fp8BlockMatrix> && kVbmi && kIsAvx512<Arch>)
    if (fp8_vbmi_applies(m) && t > 0 && row1 > row0) {
      const WeightRows<Scheme, Arch> w{m};
      // Rows of a tile whose scale overflows once multiplied by 2^8: the exact row kernel.
      auto slow_rows = [&](int64_t n0, int64_t n1) {
        for (int64_t i = 0; i < t; ++i)
          for (int64_t n = n0; n < n1; ++n) y[i * ldy + (n - row0)] = gemv_row<Arch>(w, m, n, x + i * ldx);
      };
      return fp8_vbmi_matmul(m, x, ldx, t, y, ldy, row0, row1, slow_rows);
    }
#endif
  if constexpr (std::is_same_v<Scheme, Fp4GroupMatrix>)
    if (try_fp4_integer<Arch, kVnni, kVbmi>(m, x, ldx, t, y, ldy, row0, row1)) return;
  using Tl = Tiling<Arch>;
  constexpr int R = Tl::R, TT = Tl::TT;
  const WeightRows<Scheme, Arch> w{m};
  const int64_t K = m.cols(), rows = row1 - row0;
  // K tiles aligned to scale blocks so a block never straddles two tiles.
  int64_t kc = Tl::kColsPerTile;
  if constexpr (std::is_same_v<Scheme, Fp8BlockMatrix>) kc = std::max<int64_t>(m.bn, kc / m.bn * m.bn);
  if constexpr (std::is_same_v<Scheme, Fp4GroupMatrix>) kc = std::max<int64_t>(m.group, kc / m.group * m.group);
  if (t <= TT) kc = K;  // decode: stream each row start to end
  if (t == 1) return simd_gemv<Arch>(w, m, x, y, row0, row1);
  const int64_t row_blocks = (rows + R - 1) / R;
  float* yb = y - row0;  // so that row n lands in column n - row0
  for (int64_t i = 0; i < t; ++i) std::fill(y + i * ldy, y + i * ldy + rows, 0.f);
  const int64_t work = rows * K * std::max<int64_t>(t, 1);
  const int threads = work > (1 << 15) ? num_threads() : 1;
  // Each thread owns a range of row blocks; for every tile of tokens × columns it passes all its
  // rows over the tile, so activations are reused from L2 and weights streamed once per token tile.
  parallel_block_shares(row_blocks, threads, [&](int64_t rb0, int64_t rb1) {
    for (int64_t t0 = 0; t0 < t; t0 += Tl::kTokensPerTile) {
      const int64_t t1 = std::min(t, t0 + Tl::kTokensPerTile);
      for (int64_t k0 = 0; k0 < K; k0 += kc) {
        const int64_t k1 = std::min(K, k0 + kc);
        for (int64_t rb = rb0; rb < rb1; ++rb) {
          const int64_t n = row0 + rb * R;
          const int n_valid = int(std::min<int64_t>(R, row1 - n));
          for (int64_t ts = t0; ts < t1; ts += TT)
            microkernel<Scheme, Arch, R, TT>(w, n, n_valid, x + ts * ldx, ldx, int(std::min<int64_t>(TT, t1 - ts)),
                                             yb + ts * ldy, ldy, k0, k1);
        }
      }
    }
  });
}

template <class Arch, bool kVnni = false, bool kVbmi = false>
void simd_matmul(const Matrix& w, const float* x, int64_t ldx, int64_t t, float* y, int64_t ldy, int64_t row0,
                 int64_t row1) {
  std::visit([&](auto& s) { simd_matmul<Arch, kVnni, kVbmi>(s, x, ldx, t, y, ldy, row0, row1); }, w);
}

}  // namespace dsv4::cpu
