// CUDA GEMV over stored-format weights: one warp per output row, weights decoded in registers
// (FP8 E4M3 x block scale, packed E2M1 x per-group E8M0, BF16, F32), fp32 accumulation.
#include "decode.cuh"
#include "pdl.cuh"
#include "kernels.hpp"

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <string>
#include <type_traits>

#include <cuda_fp16.h>

namespace dsv4::cuda {
namespace {

// grid (ceil(rows/8), batch), block 256 = 8 warps, one row each: any layout, any alignment.
__global__ void gemv_kernel(MatrixView w, const float* __restrict__ x, int64_t ldx, float* __restrict__ y, int64_t ldy,
                            int64_t row0, int64_t nrows) {
  pdl::begin();
  const int64_t r = int64_t(blockIdx.x) * 8 + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (r >= nrows) return;
  const float* xb = x + int64_t(blockIdx.y) * ldx;
  float acc = 0.0f;
  for (int64_t j = lane; j < w.k; j += 32) acc += weight_at(w, row0 + r, j) * xb[j];
  for (int o = 16; o > 0; o /= 2) acc += __shfl_xor_sync(0xffffffffu, acc, o);
  if (lane == 0) y[int64_t(blockIdx.y) * ldy + r] = acc;
}

// Few rows (mHC mixes, router gates, head weights): a block per (row, batch row), the threads
// splitting K, so that a 24-row matrix still spreads over the GPU. grid (nrows, batch).
__global__ void gemv_splitk_kernel(MatrixView w, const float* __restrict__ x, int64_t ldx, float* __restrict__ y,
                                   int64_t ldy, int64_t row0) {
  pdl::begin();
  __shared__ float part[8];
  const int64_t r = blockIdx.x, b = blockIdx.y;
  const float* xb = x + b * ldx;
  float acc = 0.f;
  if (w.kind == MatrixView::F32 || w.kind == MatrixView::Bf16) {
    // The stored gates, mixes and head weights: 8 independent loads in flight a thread.
    const bool f32 = w.kind == MatrixView::F32;
    const int64_t base = (row0 + r) * w.k;
    auto at = [&](int64_t j) {
      return f32 ? __ldg(reinterpret_cast<const float*>(w.data) + base + j)
                 : bf16(__ldg(reinterpret_cast<const uint16_t*>(w.data) + base + j));
    };
    int64_t j = threadIdx.x;
    for (; j + 7 * blockDim.x < w.k; j += 8 * blockDim.x) {
      float wv[8], xv[8];
#pragma unroll
      for (int u = 0; u < 8; ++u) wv[u] = at(j + u * blockDim.x), xv[u] = xb[j + u * blockDim.x];
#pragma unroll
      for (int u = 0; u < 8; ++u) acc += wv[u] * xv[u];
    }
    for (; j < w.k; j += blockDim.x) acc += at(j) * xb[j];
  } else {
    for (int64_t j = threadIdx.x; j < w.k; j += blockDim.x) acc += weight_at(w, row0 + r, j) * xb[j];
  }
  for (int o = 16; o > 0; o /= 2) acc += __shfl_xor_sync(0xffffffffu, acc, o);
  if (threadIdx.x % 32 == 0) part[threadIdx.x / 32] = acc;
  __syncthreads();
  if (threadIdx.x == 0) {
    float t = 0.f;
    for (int i = 0; i < int(blockDim.x / 32); ++i) t += part[i];
    y[b * ldy + r] = t;
  }
}

}  // namespace

// One warp's dot products of weight row `row` with nb <= 8 rows of x (stride ldx). The lanes read
// consecutive 4-byte words of the row (8 FP4, 4 FP8 or 2 BF16 values each; a warp covers 128
// contiguous bytes per step, four steps in flight), so that the x values the lanes need are close
// together too: the x loads of a warp touch few cache lines. Needs K a multiple of 32.
template <int Kind>
__device__ __forceinline__ void warp_row_dots(const MatrixView& w, int64_t row, const float* __restrict__ x,
                                              int64_t ldx, int nb, float (&acc)[8]) {
  const int lane = threadIdx.x % 32;
  // Per lane word: FP4 4 bytes (8 values), FP8 8 bytes (8 values), BF16 8 bytes (4 values).
  using Word = std::conditional_t<Kind == MatrixView::Fp4Group, uint32_t, uint2>;
  constexpr int per = Kind == MatrixView::Bf16 ? 4 : 8;
  constexpr int kUnroll = 4;
  const int64_t words = w.k / per;
  const Word* wr = reinterpret_cast<const Word*>(w.data + row * (w.k * int64_t(sizeof(Word)) / per));
  const int64_t scale_cols = Kind == MatrixView::Fp4Group ? (w.k + 31) / 32 : (w.k + w.bn - 1) / w.bn;
#pragma unroll
  for (int b = 0; b < 8; ++b) acc[b] = 0.f;
  for (int64_t w0 = lane; w0 < words; w0 += 32 * kUnroll) {
    Word q[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) q[u] = w0 + 32 * u < words ? __ldcs(wr + w0 + 32 * u) : Word{};
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int64_t wi = w0 + 32 * u;
      if (wi >= words) break;
      const int64_t j0 = wi * per;
      float v[per];
      float s = 1.f;
      if constexpr (Kind == MatrixView::Fp4Group) {
        // E2M1 as float bits: the nibble's magnitude bits at 22..24 make 2^-126 times the value
        // (e = 0 a subnormal: m/2); times 2^126 it is exact. The group scale multiplies the sum.
        s = e8m0(w.scale[row * scale_cols + j0 / 32]);
#pragma unroll
        for (int t = 0; t < 8; ++t) {
          const uint32_t nib = q[u] >> (4 * t);
          v[t] = __uint_as_float(((nib & 7u) << 22) | ((nib & 8u) << 28)) * 0x1p126f;
        }
      } else if constexpr (Kind == MatrixView::Fp8Block) {
        const int64_t idx = (row / w.bm) * scale_cols + j0 / w.bn;
        s = w.scale_is_f32 ? reinterpret_cast<const float*>(w.scale)[idx] : e8m0(w.scale[idx]);
        const uint32_t ws[2] = {q[u].x, q[u].y};
#pragma unroll
        for (int t = 0; t < 4; ++t) {
          const __half2_raw h = __nv_cvt_fp8x2_to_halfraw2(__nv_fp8x2_storage_t(ws[t / 2] >> (16 * (t % 2))), __NV_E4M3);
          const float2 f = __half22float2(__half2(h));
          v[2 * t] = f.x, v[2 * t + 1] = f.y;
        }
      } else {
        v[0] = __uint_as_float(q[u].x << 16), v[1] = __uint_as_float(q[u].x & 0xFFFF0000u);
        v[2] = __uint_as_float(q[u].y << 16), v[3] = __uint_as_float(q[u].y & 0xFFFF0000u);
      }
#pragma unroll
      for (int b = 0; b < 8; ++b) {
        if (b >= nb) break;
        const float4* xb = reinterpret_cast<const float4*>(x + int64_t(b) * ldx + j0);
        float a = 0.f;
#pragma unroll
        for (int t = 0; t < per / 4; ++t) {
          const float4 xx = __ldg(xb + t);
          a += v[4 * t] * xx.x + v[4 * t + 1] * xx.y + v[4 * t + 2] * xx.z + v[4 * t + 3] * xx.w;
        }
        acc[b] += a * s;
      }
    }
  }
#pragma unroll
  for (int b = 0; b < 8; ++b)
    for (int o = 16; o > 0; o /= 2) acc[b] += __shfl_xor_sync(0xffffffffu, acc[b], o);
}

namespace {

// grid (ceil(rows/8), ceil(batch/8)), 8 warps, one weight row each.
template <int Kind>
__global__ void gemv_vec_kernel(MatrixView w, const float* __restrict__ x, int64_t ldx, float* __restrict__ y,
                                int64_t ldy, int64_t row0, int64_t nrows, int batch) {
  pdl::begin();
  const int64_t r = int64_t(blockIdx.x) * 8 + threadIdx.x / 32;
  if (r >= nrows) return;
  const int b0 = blockIdx.y * 8, nb = min(8, batch - b0);
  float acc[8];
  warp_row_dots<Kind>(w, row0 + r, x + int64_t(b0) * ldx, ldx, nb, acc);
  if (threadIdx.x % 32 == 0)
    for (int b = 0; b < nb; ++b) y[int64_t(b0 + b) * ldy + r] = acc[b];
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Tensor-core GEMV for FP8 (E4M3) and FP4 (E2M1) weights, batch chunks of up to 8 rows of x.
//
// Why: decoding E2M1/E4M3 to fp32 and one FFMA per value and batch row keep the FMA path far
// under the memory rate (FP4 carries two values per byte; at batch 8 the FFMAs alone exceed the
// issue rate). Here the weights are decoded to f16 (exact for both formats), x is split exactly
// into three f16 parts, and mma.sync m16n8k16 (f16 x f16, f32 accumulate) forms the dot products.
//
// Numerics: every product w * x_part is exact (at most 4 x 11 significant bits); x = 2^-a (h0 + h1 +
// h2) with a chosen per batch row from max|x| (max|x| 2^a in [2^14, 2^15)), which is exact for
// every element down to 2^-16 max|x| (below that the error is under 2^-40 max|x| per element). Each
// 32-column group's two k16 products (three parts each) sum in the tensor core's fp32 adder, the
// group's weight scale multiplies that sum, and the groups add in fp32 (FFMA); the warps' K slices
// and the parts add in a fixed order. So the result is the fp32 dot product up to summation order
// and rounding (the tensor core's adder truncates), deterministic from run to run.
//
// Layout: mma lane (g, t) (g = lane / 4, t = lane % 4) holds rows g and g + 8 of a 16-row item and,
// per 32-column group, columns 8t .. 8t + 7 of it: 4 bytes of FP4 or 8 bytes of FP8 per row. The k
// order inside an mma is free (A and B agree), so those 8 columns fill the lane's k slots of the
// group's two mmas in whatever order the decode produces them, and the block builds x's f16 parts
// (the B fragments) in that order in shared memory. The weights reach shared memory by cp.async in
// row segments of 128 bytes (coalesced; lanes reading their own fragments straight from global
// memory touch 8 rows an instruction and ran at under half the rate), each warp through its own
// ring of stages.
// FP4: the nibble s.c (c = 3 magnitude bits) becomes the E4M3 byte (s << 7) | (c << 2), exactly
// 2^-6 times the E2M1 value (c = 1 lands on an E4M3 subnormal), and the hardware converts E4M3
// pairs to f16 pairs (FP8 weights take that conversion directly); the 2^6 returns with the final
// scale. FP8 needs scale tiles of whole 128-column steps (bn a multiple of 128; others take the
// FMA kernels); FP4 groups of 32.
namespace tc {

constexpr int kWarps = 8, kThreads = 32 * kWarps;
// 32-column groups a step: 128 bytes of a row (FP4: 8 groups, FP8: 4).
template <int Kind>
constexpr int kGpw = Kind == MatrixView::Fp4Group ? 8 : 4;
constexpr int kRedBytes = 2 * kWarps * 32 * 16;  // the warps' partial sums, two items deep

// Two E4M3 bytes (low 16 bits of v) to an f16 pair, exactly.
__device__ __forceinline__ uint32_t e4m3x2_h2(uint32_t v) {
  const __half2_raw h = __nv_cvt_fp8x2_to_halfraw2(__nv_fp8x2_storage_t(v & 0xFFFFu), __NV_E4M3);
  return uint32_t(h.x) | (uint32_t(h.y) << 16);
}

// One lane's 8 columns of one row -> 4 f16 pairs p[0..3]; p[0], p[1] fill the group's first mma
// (k slots 2t,2t+1 and 2t+8,2t+9), p[2], p[3] the second. The x pairs in the same order:
// FP4 columns (0,2) (4,6) (1,3) (5,7), FP8 (0,1) (2,3) (4,5) (6,7) (relative to 8t).
__device__ __forceinline__ void decode_fp4(uint32_t q, uint32_t (&p)[4]) {
  const uint32_t lo = ((q << 2) & 0x1C1C1C1Cu) | ((q << 4) & 0x80808080u);  // E4M3 of nibbles 0 2 4 6
  const uint32_t hi = ((q >> 2) & 0x1C1C1C1Cu) | (q & 0x80808080u);         // nibbles 1 3 5 7
  p[0] = e4m3x2_h2(lo), p[1] = e4m3x2_h2(lo >> 16), p[2] = e4m3x2_h2(hi), p[3] = e4m3x2_h2(hi >> 16);
}
__device__ __forceinline__ void decode_fp8(uint2 q, uint32_t (&p)[4]) {
  p[0] = e4m3x2_h2(q.x), p[1] = e4m3x2_h2(q.x >> 16), p[2] = e4m3x2_h2(q.y), p[3] = e4m3x2_h2(q.y >> 16);
}

// E8M0 byte -> 2^(b-127), b = 0 the subnormal 2^-127, b = 255 NaN (as the oracle: +inf would win
// the greedy argmax, which skips NaN).
__device__ __forceinline__ float e8m0_fast(uint32_t b) {
  return __uint_as_float(b == 255u ? 0x7FC00000u : max(b << 23, 0x00400000u));
}

// Byte J of a word of E8M0 scales as a float, without the specials' branch: byte 0 gives 2^-127
// exactly, byte 255 gives +inf (the caller turns that row into NaN: has_e8m0_nan).
__device__ __forceinline__ float e8m0_byte(uint32_t w, int J) {  // J a constant once unrolled
  const uint32_t bits = (J == 3 ? w >> 1 : w << (23 - 8 * J)) & 0x7F800000u;
  return __uint_as_float(max(bits, 0x00400000u));
}
// Non-zero when a byte of w is 0xFF (E8M0 NaN): the low 7 bits all set carry into bit 7.
__device__ __forceinline__ uint32_t has_e8m0_nan(uint32_t w) {
  return ((w & 0x7F7F7F7Fu) + 0x01010101u) & w & 0x80808080u;
}

// x (fp32, already scaled by 2^a) -> three f16 parts whose sum is x (see above). a, c: one pair.
__device__ __forceinline__ void split3(float a, float c, uint32_t& h0, uint32_t& h1, uint32_t& h2) {
  const __half2 p0 = __floats2half2_rn(a, c);
  const float2 f0 = __half22float2(p0);
  const float ra = a - f0.x, rc = c - f0.y;
  const __half2 p1 = __floats2half2_rn(ra, rc);
  const float2 f1 = __half22float2(p1);
  const __half2 p2 = __floats2half2_rn(ra - f1.x, rc - f1.y);
  h0 = *reinterpret_cast<const uint32_t*>(&p0);
  h1 = *reinterpret_cast<const uint32_t*>(&p1);
  h2 = *reinterpret_cast<const uint32_t*>(&p2);
}

// Biased exponent field of the power of two 2^a that brings max|x| (as bits) into [2^14, 2^15),
// clamped so that 2^a and 2^-a are normal floats.
__device__ __forceinline__ uint32_t xscale_field(uint32_t maxbits) {
  const int e = int(maxbits >> 23);
  return uint32_t(min(max(268 - e, 13), 253));
}

struct Args {
  const MatrixView* mats = nullptr;  // experts: device views, job = routing slot s, matrix mats[experts[s]]
  const int32_t* experts = nullptr;
  // Experts grouped by expert: job = jobs[blockIdx.y] (k::group_experts: expert or -1, grouped row,
  // x rows of its one or two slots), matrix mats[expert], or mats2[expert] into y2 on grid.z = 1;
  // x rows from the job's slot rows (x_by_slot) or from its grouped rows.
  const int4* jobs = nullptr;
  const MatrixView* mats2 = nullptr;
  bool x_by_slot = false;
  MatrixView w;                      // plain: the matrix (a weight: read before pdl::wait), job = chunk of 8 batch rows
  const float* x = nullptr;
  int64_t ldx = 0, x_div = 1;        // experts: x row s / x_div
  float* y = nullptr;
  int64_t ldy = 0, row0 = 0, nrows = 0;
  int64_t x_group = 0, y_group = 0;  // plain, grid.z = group g: rows row0 + g nrows, x + g x_group, y + g y_group
  MatrixView w2;                     // plain pair (w2.data set): grid.z = 1 is W2 [nrows2, K] into y2 (stride ldy2)
  float* y2 = nullptr;
  int64_t ldy2 = 0, nrows2 = 0;
  int batch = 0;
  int split = 1;   // warps per 16-row item (each a slice of K); divides kWarps
  int kp = 0;      // 32-column groups per K pass (a multiple of kGpw): one pass's B fits shared memory
};

// A warp's weight pipeline: each step is 16 rows x 128 bytes (FP4: 8 groups, FP8: 4), copied with
// cp.async (a warp instruction covers 4 rows x 128 contiguous bytes) into one of D shared stages;
// rows padded so that the fragment reads (LDS.32 FP4 / LDS.64 FP8) hit distinct banks.
template <int Kind>
constexpr int kStride = Kind == MatrixView::Fp4Group ? 144 : 160;  // bytes a row in a stage
template <int Kind>
constexpr int kStageBytes = 16 * kStride<Kind>;

// Steps (of GPW groups) of a warp's K slice of a pass of kp groups split over `split` warps: the
// kernel's walk and the launch's grid choice both count with it.
__host__ __device__ constexpr int slice_steps(int kp, int split, int gpw) {
  return ((kp + split - 1) / split + gpw - 1) / gpw;
}

// Persistent GEMV: grid (blocks per job, jobs). A block builds the f16 parts of its job's x for a K
// pass in shared memory, then groups of `split` warps take 16-row items in turn (item = group,
// group + groups, ...), each warp streaming its K slice through a D-stage cp.async pipeline that
// runs on across items; a group's partial sums meet in shared memory at each item's end. Rows and
// K slices past the matrix read as zeros. Deterministic: fixed slices, fixed order of sums.
// NM = 1: the three parts of every batch row are columns p * nb + b of one B matrix (nb <= 2);
// NM = 3: part p is B matrix p, column b.
template <int Kind, int NM, int MinBlocks, int D>
__global__ void __launch_bounds__(kThreads, MinBlocks) pgemv_kernel(const Args a) {
  extern __shared__ uint4 smem[];
  __shared__ uint32_t xmax[8];
  constexpr bool kFp4 = Kind == MatrixView::Fp4Group;
  constexpr int GPW = kGpw<Kind>;            // groups a step
  constexpr int kBpg = kFp4 ? 16 : 32;       // bytes of a row per group
  constexpr int ST = kStride<Kind>;
  static_assert(GPW * kBpg == 128 && GPW % 4 == 0, "a step is 128 bytes of a row, groups in fours");
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, g = lane / 4, t = lane % 4;
  // A plain matrix is a weight, which no kernel writes: its first copies are issued before
  // pdl::wait, overlapping the kernel before (the experts' come from the router's output).
  const bool plain = a.jobs == nullptr && a.mats == nullptr;
  if (!plain) pdl::wait();
  pdl::trigger();

  MatrixView w;
  const float* x;
  float* y;
  int nb;
  int64_t ldx, ldy, rbase, rend, yoff;
  if (a.jobs != nullptr) {
    const int4 j = a.jobs[blockIdx.y];
    if (j.x < 0) return;  // no job (the whole block, before any barrier)
    const bool second = a.mats2 != nullptr && blockIdx.z == 1;
    w = (second ? a.mats2 : a.mats)[j.x];
    nb = j.w >= 0 ? 2 : 1;
    if (a.x_by_slot) x = a.x + int64_t(j.z) * w.k, ldx = int64_t(nb == 2 ? j.w - j.z : 0) * w.k;
    else x = a.x + int64_t(j.y) * w.k, ldx = w.k;
    y = (second ? a.y2 : a.y) + int64_t(j.y) * w.n, ldy = w.n;
    rbase = 0, rend = w.n, yoff = 0;
  } else if (a.mats != nullptr) {
    const int64_t slot = blockIdx.y;
    w = a.mats[a.experts[slot]];
    x = a.x + (slot / a.x_div) * w.k, ldx = w.k;
    y = a.y + slot * w.n, ldy = w.n;
    nb = 1, rbase = 0, rend = w.n, yoff = 0;
  } else {
    w = a.w;
    const int b0 = blockIdx.y * 8;
    const int64_t gz = blockIdx.z;
    nb = min(8, a.batch - b0);
    x = a.x + int64_t(b0) * a.ldx + gz * a.x_group, ldx = a.ldx;
    y = a.y + int64_t(b0) * a.ldy + gz * a.y_group, ldy = a.ldy;
    rbase = a.row0 + gz * a.nrows, rend = rbase + a.nrows, yoff = rbase;
    if (a.w2.data != nullptr && gz == 1) {  // the pair's second matrix, same x
      w = a.w2, x = a.x + int64_t(b0) * a.ldx;
      y = a.y2 + int64_t(b0) * a.ldy2, ldy = a.ldy2;
      rbase = 0, rend = a.nrows2, yoff = 0;
    }
  }
  const int64_t K = w.k;
  const int ngroups = int(K / 32);
  const int ncols = NM == 1 ? 3 * nb : nb;  // B columns in use
  const int S = a.split, sw = warp % S, GB = kWarps / S;
  const int gg = blockIdx.x * GB + warp / S, NG = gridDim.x * GB;
  const int nitems = int((rend - rbase + 15) / 16);
  const int my_items = gg < nitems ? (nitems - gg + NG - 1) / NG : 0;
  const int kp = a.kp;
  const int spi = slice_steps(kp, S, GPW);  // steps per item
  const int sl = spi * GPW;                 // groups of a warp's slice of a pass
  const int nsteps = my_items * spi;

  const int64_t rowbytes = kFp4 ? K / 2 : K;
  const int64_t sc = kFp4 ? K / 32 : (K + w.bn - 1) / w.bn;  // scale columns
  const bool s_word = kFp4 && sc % 8 == 0;                  // FP4: a step's 8 scale bytes as one load
  const int gpb = kFp4 ? 1 : int(w.bn / 32);                // FP8: groups per scale block (a multiple of 4)
  const bool gpb_pow2 = (gpb & (gpb - 1)) == 0;
  const int gpb_shift = __ffs(gpb) - 1;

  // smem (uint4 units): B fragments [group of the pass][part matrix][column][t], the partial sums,
  // then the warps' stages.
  const int bstride = NM * ncols * 4;
  const int boff = g * 4 + t;
  const int red_off = kp * bstride;
  const uint32_t stage0 = uint32_t(__cvta_generic_to_shared(smem + red_off + kRedBytes / 16)) +
                          uint32_t(warp * D * kStageBytes<Kind>);
  const unsigned char* stage_ptr = reinterpret_cast<const unsigned char*>(smem + red_off + kRedBytes / 16) +
                                   warp * D * kStageBytes<Kind>;

  uint32_t sv[D][2][2];  // FP4: a step's 8 scale bytes a row (two words); FP8: the step's scale ([0])
  uint32_t nan_row[2] = {0u, 0u};  // FP4: non-zero when the item's scales of a row hold an E8M0 NaN
  // The item being loaded, cached at its first step: this lane's first copy row as a pointer, how
  // many of its 4 copy rows (lane / 8 + 4 k) lie in the matrix, and the scale row offsets of rows
  // g and g + 8 (-1 past the matrix). Each step then adds only its column offset (the per-step
  // 64-bit row arithmetic was a third of the FP8 kernel's instructions).
  const int cp_row = lane / 8, cp_piece = lane % 8;
  const int64_t row4 = 4 * rowbytes;
  const uint32_t cp_dst = stage0 + uint32_t(cp_row * ST + 16 * cp_piece);
  int ld_item = -1, ld_rows = 0;
  const uint8_t* ld_src = w.data;
  int64_t ld_srow[2] = {-1, -1};

  // Issues the copies of step (il, st) of pass [g0, g1) into stage d, and loads its scales.
  auto issue = [&](int d, int il, int st, int g0, int g1) {
    if (ld_item != il) {
      ld_item = il;
      const int64_t rb = rbase + int64_t(gg + il * NG) * 16, r0 = rb + cp_row;
      ld_src = w.data + r0 * rowbytes + 16 * cp_piece;
      ld_rows = int(max(int64_t(0), min(int64_t(4), (rend - r0 + 3) / 4)));
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int64_t r = rb + g + 8 * h;
        if constexpr (kFp4) ld_srow[h] = r < rend ? r * sc : -1;
        else ld_srow[h] = r < rend ? int64_t(int(r) / int(w.bm)) * sc : -1;
      }
    }
    const int gs = g0 + sw * sl, gi0 = gs + st * GPW;
    const int gend = min(g1, gs + sl);
    const bool cols_in = gi0 + (kFp4 ? cp_piece : cp_piece / 2) < gend;
    const uint8_t* src = ld_src + gi0 * kBpg;
#pragma unroll
    for (int k = 0; k < 4; ++k)
      cp_async16(cp_dst + uint32_t(d * kStageBytes<Kind> + 4 * k * ST), src + k * row4, cols_in && k < ld_rows);
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const bool rl = ld_srow[h] >= 0;
      if constexpr (kFp4) {
        const uint8_t* sp = w.scale + ld_srow[h] + gi0;
        uint32_t v0 = 0u, v1 = 0u;
        if (rl && s_word && gi0 + 7 < gend) {
          const uint2 v = __ldg(reinterpret_cast<const uint2*>(sp));
          v0 = v.x, v1 = v.y;
        } else if (rl) {
#pragma unroll
          for (int e = 0; e < 8; ++e)
            if (gi0 + e < gend) (e < 4 ? v0 : v1) |= uint32_t(__ldg(sp + e)) << (8 * (e % 4));
        }
        sv[d][0][h] = v0, sv[d][1][h] = v1;
      } else {  // a step's 4 groups lie in one scale block (bn a multiple of 128)
        uint32_t v = 0u;
        if (rl && gi0 < gend) {
          const int64_t si = ld_srow[h] + (gpb_pow2 ? (gi0 >> gpb_shift) : gi0 / gpb);
          v = w.scale_is_f32 ? __ldg(reinterpret_cast<const uint32_t*>(w.scale) + si) : uint32_t(__ldg(w.scale + si));
        }
        sv[d][0][h] = v;
      }
    }
  };

  float acc[4] = {0.f, 0.f, 0.f, 0.f};
  int parity = 0;

  // Multiplies stage d (step (il, st)) into acc; at an item's last step the group adds its partial
  // sums and writes (pass 0) or adds to (later passes) y.
  auto compute = [&](int d, int il, int st, int g0, int g1, bool first_pass) {
    const int gs = g0 + sw * sl, gl0 = sw * sl + st * GPW;  // group in the pass
    const int gend = min(g1, gs + sl) - g0;
    const unsigned char* sb = stage_ptr + d * kStageBytes<Kind> + g * ST + (kFp4 ? 4 : 8) * t;
    constexpr int JB = NM == 1 ? 4 : 2;  // groups whose mmas are issued together
    float fs0 = 0.f, fs1 = 0.f;  // FP8: the step's one scale a row, decoded once
    if constexpr (kFp4) {
#pragma unroll
      for (int h = 0; h < 2; ++h) nan_row[h] |= has_e8m0_nan(sv[d][0][h]) | has_e8m0_nan(sv[d][1][h]);
    } else if (w.scale_is_f32) {
      fs0 = __uint_as_float(sv[d][0][0]), fs1 = __uint_as_float(sv[d][0][1]);
    } else {
      fs0 = e8m0_fast(sv[d][0][0]), fs1 = e8m0_fast(sv[d][0][1]);
    }
#pragma unroll
    for (int h4 = 0; h4 < GPW; h4 += JB) {
      float dd[JB][4];
#pragma unroll
      for (int jj = 0; jj < JB; ++jj) {
        const int j = h4 + jj;
        dd[jj][0] = dd[jj][1] = dd[jj][2] = dd[jj][3] = 0.f;
        // Groups past the slice hold zero weights (the copies zero-fill them): computed, not
        // branched around, with a valid group's x parts.
        const int gb = max(0, min(gl0 + j, gend - 1));
        uint4 B[NM];
#pragma unroll
        for (int m = 0; m < NM; ++m)
          B[m] = g < ncols ? smem[gb * bstride + m * ncols * 4 + boff] : make_uint4(0u, 0u, 0u, 0u);
        uint32_t pa[4], pb[4];
        if constexpr (kFp4) {
          decode_fp4(*reinterpret_cast<const uint32_t*>(sb + 16 * j), pa);
          decode_fp4(*reinterpret_cast<const uint32_t*>(sb + 8 * ST + 16 * j), pb);
        } else {
          decode_fp8(*reinterpret_cast<const uint2*>(sb + 32 * j), pa);
          decode_fp8(*reinterpret_cast<const uint2*>(sb + 8 * ST + 32 * j), pb);
        }
#pragma unroll
        for (int m = NM - 1; m >= 0; --m) {  // smallest part first
          mma16816(dd[jj], pa[0], pb[0], pa[1], pb[1], B[m].x, B[m].y);
          mma16816(dd[jj], pa[2], pb[2], pa[3], pb[3], B[m].z, B[m].w);
        }
      }
#pragma unroll
      for (int jj = 0; jj < JB; ++jj) {
        const int j = h4 + jj;
        float s0, s1;
        if constexpr (kFp4) {
          s0 = e8m0_byte(sv[d][j / 4][0], j % 4);
          s1 = e8m0_byte(sv[d][j / 4][1], j % 4);
        } else {
          s0 = fs0, s1 = fs1;
        }
        acc[0] = fmaf(dd[jj][0], s0, acc[0]);
        acc[1] = fmaf(dd[jj][1], s0, acc[1]);
        acc[2] = fmaf(dd[jj][2], s1, acc[2]);
        acc[3] = fmaf(dd[jj][3], s1, acc[3]);
      }
    }
    if (st != spi - 1) return;
    // The item's end. FP4: a row with an E8M0 NaN scale is NaN (the fast scale decode gave +inf).
    if constexpr (kFp4) {
      if (nan_row[0] != 0u) acc[0] = acc[1] = __uint_as_float(0x7FC00000u);
      if (nan_row[1] != 0u) acc[2] = acc[3] = __uint_as_float(0x7FC00000u);
      nan_row[0] = nan_row[1] = 0u;
    }
    float4* red = reinterpret_cast<float4*>(smem + red_off);
    red[(parity * kWarps + warp) * 32 + lane] = make_float4(acc[0], acc[1], acc[2], acc[3]);
    acc[0] = acc[1] = acc[2] = acc[3] = 0.f;
    if (S > 1)
      asm volatile("bar.sync %0, %1;" ::"r"(1 + warp / S), "r"(32 * S) : "memory");
    else
      __syncwarp();
    const int64_t rb = rbase + int64_t(gg + il * NG) * 16;
    const float* redf = reinterpret_cast<const float*>(red + (parity * kWarps + (warp - sw)) * 32);
    for (int o = sw * 32 + lane; o < 16 * nb; o += 32 * S) {
      const int b = nb == 1 ? 0 : o % nb, rr = nb == 1 ? o : o / nb;  // no division at batch 1
      const int64_t r = rb + rr;
      if (r >= rend) continue;
      float v = 0.f;
#pragma unroll
      for (int p = 0; p < (NM == 1 ? 3 : 1); ++p) {
        const int n = NM == 1 ? p * nb + b : b;
        const int ln = (rr % 8) * 4 + n / 2, reg = (rr / 8) * 2 + (n & 1);
        float vp = 0.f;
        for (int s2 = 0; s2 < S; ++s2) vp += redf[(s2 * 32 + ln) * 4 + reg];
        v += vp;
      }
      // 2^-a, and 2^6 for FP4 (a normal float: the field is at most 254 - 13 + 6).
      v *= __uint_as_float((254u - xscale_field(xmax[b]) + (kFp4 ? 6u : 0u)) << 23);
      float* yp = y + int64_t(b) * ldy + (r - yoff);
      *yp = first_pass ? v : *yp + v;
    }
    parity ^= 1;
  };

  // One stream of steps per warp over (pass, item, step of the slice); the copies run D - 1 steps
  // ahead, across item and pass boundaries. A pass's first step waits for the block to build its
  // B (the block's barriers: every warp passes them once a pass, working or not).
  const int passes = (ngroups + kp - 1) / kp, total = passes * nsteps;
  auto advance = [&](int& p, int& il, int& st) {
    if (++st == spi) {
      st = 0;
      if (++il == my_items) il = 0, ++p;
    }
  };
  int lp = 0, lil = 0, lst = 0, cpass = 0, cil = 0, cst = 0;
#pragma unroll
  for (int d = 0; d < D - 1; ++d) {
    if (d < total) {
      issue(d, lil, lst, lp * kp, min(ngroups, lp * kp + kp));
      advance(lp, lil, lst);
    }
    cp_commit();
  }
  if (plain) pdl::wait();  // x, and y, belong to earlier kernels
  if (tid < 8) xmax[tid] = 0u;
  __syncthreads();
  // max |x| per batch row (float bits: non-negative floats order as integers; NaN above inf).
  for (int b = 0; b < nb; ++b) {
    uint32_t m = 0;
    const float4* xb = reinterpret_cast<const float4*>(x + int64_t(b) * ldx);
#pragma unroll 4
    for (int64_t j = tid; j < K / 4; j += kThreads) {
      const float4 v = __ldg(xb + j);
      m = max(m, max(max(__float_as_uint(v.x) & 0x7FFFFFFFu, __float_as_uint(v.y) & 0x7FFFFFFFu),
                     max(__float_as_uint(v.z) & 0x7FFFFFFFu, __float_as_uint(v.w) & 0x7FFFFFFFu)));
    }
    for (int o = 16; o > 0; o /= 2) m = max(m, __shfl_xor_sync(0xffffffffu, m, o));
    if (lane == 0) atomicMax(&xmax[b], m);
  }
  // Builds pass p's x parts: unit (b, group, t) = 8 columns of one batch row; kU units a thread at once.
  auto prep = [&](int p) {
    __syncthreads();  // xmax complete; the previous pass's B no longer read
    constexpr int kU = 2;
    const int g0 = p * kp, ngp = min(ngroups, g0 + kp) - g0, nunits = nb * ngp * 4;
    for (int u0 = tid; u0 < nunits; u0 += kU * kThreads) {
      float4 v[kU][2];
#pragma unroll
      for (int k = 0; k < kU; ++k) {
        const int u = u0 + k * kThreads;
        if (u >= nunits) break;
        const int ut = u & 3, G = (u >> 2) % ngp, b = (u >> 2) / ngp;
        const float4* xp = reinterpret_cast<const float4*>(x + int64_t(b) * ldx + int64_t(g0 + G) * 32 + 8 * ut);
        v[k][0] = __ldg(xp), v[k][1] = __ldg(xp + 1);
      }
#pragma unroll
      for (int k = 0; k < kU; ++k) {
        const int u = u0 + k * kThreads;
        if (u >= nunits) break;
        const int ut = u & 3, G = (u >> 2) % ngp, b = (u >> 2) / ngp;
        const float mul = __uint_as_float(xscale_field(xmax[b]) << 23);
        const float f[8] = {v[k][0].x * mul, v[k][0].y * mul, v[k][0].z * mul, v[k][0].w * mul,
                            v[k][1].x * mul, v[k][1].y * mul, v[k][1].z * mul, v[k][1].w * mul};
        uint32_t hh[3][4];
#pragma unroll
        for (int qq = 0; qq < 4; ++qq) {
          const int i0 = kFp4 ? ((qq & 1) * 4 + (qq >> 1)) : 2 * qq;  // FP4: 0 4 1 5; FP8: 0 2 4 6
          const int i1 = kFp4 ? i0 + 2 : i0 + 1;
          split3(f[i0], f[i1], hh[0][qq], hh[1][qq], hh[2][qq]);
        }
#pragma unroll
        for (int pp = 0; pp < 3; ++pp) {
          const int m = NM == 1 ? 0 : pp, n = NM == 1 ? pp * nb + b : b;
          smem[G * bstride + (m * ncols + n) * 4 + ut] = make_uint4(hh[pp][0], hh[pp][1], hh[pp][2], hh[pp][3]);
        }
      }
    }
    __syncthreads();
  };
  if (total == 0) {  // no items for this warp: it still helps build every pass's B
    for (int p = 0; p < passes; ++p) prep(p);
    return;
  }
  for (int q0 = 0; q0 < total; q0 += D) {
#pragma unroll
    for (int d = 0; d < D; ++d) {
      const int qi = q0 + d;
      if (qi >= total) break;
      if (cil == 0 && cst == 0) prep(cpass);
      __syncwarp();  // every lane is done with the stage the next copy overwrites (step qi - 1's)
      if (qi + D - 1 < total) {
        issue((d + D - 1) % D, lil, lst, lp * kp, min(ngroups, lp * kp + kp));
        advance(lp, lil, lst);
      }
      cp_commit();
      cp_wait<D - 1>();  // step qi's copies have landed (this lane's) ...
      __syncwarp();      // ... and every lane's
      compute(d, cil, cst, cpass * kp, min(ngroups, cpass * kp + kp), cpass == 0);
      advance(cpass, cil, cst);
    }
  }
  cp_wait<0>();
}

int sm_count() {
  static const int n = [] {
    int d = 0, v = 0;
    if (cudaGetDevice(&d) != cudaSuccess || cudaDeviceGetAttribute(&v, cudaDevAttrMultiProcessorCount, d) != cudaSuccess)
      v = 0;
    (void)cudaGetLastError();
    return v > 0 ? v : 132;
  }();
  return n;
}

bool supported() {  // mma.sync m16n8k16 f16 needs compute capability 8.0
  static const bool ok = [] {
    int d = 0, major = 0;
    const bool r = cudaGetDevice(&d) == cudaSuccess &&
                   cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, d) == cudaSuccess && major >= 8;
    (void)cudaGetLastError();
    return r;
  }();
  return ok;
}

// Pipeline depth variants (stages a warp; two blocks a multiprocessor, 112 KB each, of which the
// stages and partial sums leave the rest for B). DSV4_CUDA_GEMV_VARIANT=0|1 picks one (tuning; on
// the H200 two stages gave FP4/FP8 0.39/0.72 of the copy rate at batch 1, three 0.37/0.70, four
// 0.36/0.67).
struct Variant {
  int min_blocks, depth;
};
constexpr int kNumVariants = 2;
constexpr Variant kVariants[kNumVariants] = {{2, 2}, {2, 3}};
constexpr int kBlockSmem = 112 * 1024;
int variant() {
  static const int v = [] {
    const char* e = std::getenv("DSV4_CUDA_GEMV_VARIANT");
    const int x = e ? std::atoi(e) : 0;
    return x >= 0 && x < kNumVariants ? x : 0;
  }();
  return v;
}

template <int Kind, int NM, int V>
void launch_v(const Args& a, dim3 grid, int smem, cudaStream_t st) {
  constexpr Variant var = kVariants[V];
  auto* k = pgemv_kernel<Kind, NM, var.min_blocks, var.depth>;
  static std::atomic<size_t> raised{0};
  raise_dynamic_smem(k, kBlockSmem, raised, "gemv smem");
  pdl::launch(k, grid, kThreads, smem, st, a);
}

// Blocks a job and warps an item (split > 1: the item's warps take K slices). The blocks fill
// the machine (`slots` resident blocks over the jobs, at most one a warp group's item). A warp's
// steps run as one chain (latency, few warps a multiprocessor), so the split is the one that
// minimises the busiest warp's steps, items a warp group x (steps an item's pass + the item's end,
// counted as half a step); a smaller split is kept unless a larger one saves more than 10 % (the
// count is a model). Six FP4 experts 2048 x 4096 at batch 1 (w1 and w3, 12 jobs): split 1 gave
// 16 blocks a job and 16 steps a warp; split 4 gives 22 blocks, 3 items of 4 steps (36 -> 31 us on
// the H200). Choosing the blocks by the same count as well (fewer blocks to avoid a partial second
// wave) made batch 8 slower: the step count is not the whole cost there.
struct GridChoice {
  int64_t blocks_per_job;
  int split;
};
inline GridChoice choose_grid(int64_t jobs, int64_t nitems, int64_t kp, int gpw, int64_t slots) {
  const int64_t bj_fill = std::max<int64_t>(1, (slots + jobs - 1) / jobs);
  GridChoice cand[4];
  double cost[4];
  int n = 0;
  for (int split = 1; split <= kWarps; split *= 2) {
    if (split > 1 && kp / split < gpw) break;
    const int64_t groups_per_block = kWarps / split;
    const int64_t steps = slice_steps(int(kp), split, gpw);
    const int64_t bj = std::min(bj_fill, (nitems + groups_per_block - 1) / groups_per_block);
    const int64_t items = (nitems + bj * groups_per_block - 1) / (bj * groups_per_block);
    cand[n] = {bj, split}, cost[n] = double(items) * (double(steps) + 0.5), ++n;
  }
  double least = cost[0];
  for (int i = 1; i < n; ++i) least = std::min(least, cost[i]);
  int i = 0;
  while (cost[i] > 1.1 * least) ++i;
  return cand[i];
}

// Launches pgemv_kernel for `jobs` x `groups` jobs of `nrows` rows each, K columns, up to nb_max
// batch rows.
template <int Kind>
void launch(Args a, int64_t jobs, int64_t nrows, int64_t K, int nb_max, cudaStream_t st, int64_t groups = 1) {
  constexpr int GPW = kGpw<Kind>;
  const int V = variant();
  const Variant var = kVariants[V];
  const bool one = nb_max <= 2;
  const int ncols = one ? 3 * nb_max : nb_max;
  const int64_t group_bytes = int64_t(one ? 1 : 3) * ncols * 64, ngroups = K / 32;
  const int64_t stages = int64_t(kWarps) * var.depth * kStageBytes<Kind>;
  const int64_t kp_max = std::max<int64_t>(GPW, (kBlockSmem - stages - kRedBytes) / group_bytes / GPW * GPW);
  const int64_t passes = (ngroups + kp_max - 1) / kp_max;
  int64_t kp = (ngroups + passes - 1) / passes;  // even passes
  kp = (kp + GPW - 1) / GPW * GPW;               // <= kp_max
  a.kp = int(kp);
  const int smem = int(kp * group_bytes + kRedBytes + stages);
  const GridChoice gc = choose_grid(jobs * groups, (nrows + 15) / 16, kp, GPW, int64_t(var.min_blocks) * sm_count());
  a.split = gc.split;
  const dim3 grid{unsigned(gc.blocks_per_job), unsigned(jobs), unsigned(groups)};
#define DSV4_TC_LAUNCH(VV)                                   \
  if (V == VV) {                                             \
    if (one) launch_v<Kind, 1, VV>(a, grid, smem, st);       \
    else launch_v<Kind, 3, VV>(a, grid, smem, st);           \
    return;                                                  \
  }
  DSV4_TC_LAUNCH(0)
  DSV4_TC_LAUNCH(1)
#undef DSV4_TC_LAUNCH
}

template <int Kind>
void dispatch_gemv(const MatrixView& w, const float* x, int64_t ldx, int64_t batch, float* y, int64_t ldy,
                   int64_t row0, int64_t nrows, cudaStream_t st, int64_t groups = 1, int64_t x_group = 0,
                   int64_t y_group = 0) {
  Args a;
  a.w = w, a.x = x, a.ldx = ldx, a.y = y, a.ldy = ldy, a.row0 = row0, a.nrows = nrows, a.batch = int(batch);
  a.x_group = x_group, a.y_group = y_group;
  launch<Kind>(a, (batch + 7) / 8, nrows, w.k, int(std::min<int64_t>(batch, 8)), st, groups);
}

template <int Kind>
void dispatch_expert(const MatrixView* mats, const int32_t* experts, int64_t slots, int64_t n, int64_t k,
                     const float* x, int64_t x_div, float* y, cudaStream_t st) {
  // Slots on grid.y (at most 65535 a launch): chunks of whole x rows.
  const int64_t most = 65535 - 65535 % x_div;
  for (int64_t s0 = 0; s0 < slots; s0 += most) {
    Args a;
    a.mats = mats, a.experts = experts + s0, a.x = x + (s0 / x_div) * k, a.x_div = x_div, a.y = y + s0 * n;
    launch<Kind>(a, std::min(most, slots - s0), n, k, 1, st);
  }
}

// Grouped experts: jobs [njobs] of one or two rows of one expert (nb <= 2: the one-B-matrix kernel);
// mats2 / y2: a second matrix set of the same shape in the same launch (grid.z = 2).
template <int Kind>
void dispatch_jobs(const MatrixView* mats, float* y, const MatrixView* mats2, float* y2, const int4* jobs, int64_t njobs,
                   int64_t n, int64_t k, const float* x, bool x_by_slot, cudaStream_t st) {
  Args a;
  a.mats = mats, a.mats2 = mats2, a.jobs = jobs, a.x = x, a.x_by_slot = x_by_slot, a.y = y, a.y2 = y2;
  launch<Kind>(a, njobs, n, k, 2, st, mats2 != nullptr ? 2 : 1);
}

}  // namespace tc

namespace {
std::atomic<bool> g_legacy{[] {
  const char* e = std::getenv("DSV4_CUDA_GEMV");
  return e != nullptr && std::string(e) == "legacy";
}()};
}  // namespace

void set_legacy_gemv(bool on) { g_legacy.store(on); }
bool legacy_gemv() { return g_legacy.load(); }

namespace {
std::atomic<bool> g_pdl{[] {
  const char* e = std::getenv("DSV4_CUDA_PDL");
  return e == nullptr || std::string(e) != "0";
}()};
bool pdl_supported() {  // griddepcontrol needs compute capability 9.0
  static const bool ok = [] {
    int d = 0, major = 0;
    const bool r = cudaGetDevice(&d) == cudaSuccess &&
                   cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, d) == cudaSuccess && major >= 9;
    (void)cudaGetLastError();
    return r;
  }();
  return ok;
}
}  // namespace

void set_pdl(bool on) { g_pdl.store(on); }
bool pdl_enabled() { return g_pdl.load() && pdl_supported(); }

bool device_available() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    (void)cudaGetLastError();
    return false;
  }
  return n > 0;
}

DeviceMatrix::DeviceMatrix(const MatrixView& v) : view_(v) {
  view_.data = nullptr;
  view_.scale = nullptr;
  void* d = nullptr;
  check(cudaMalloc(&d, size_t(v.data_bytes)), "upload weights");
  view_.data = static_cast<const uint8_t*>(d);
  check(cudaMemcpy(d, v.data, size_t(v.data_bytes), cudaMemcpyHostToDevice), "upload weights");
  if (v.scale_bytes > 0) {
    void* s = nullptr;
    check(cudaMalloc(&s, size_t(v.scale_bytes)), "upload scales");
    view_.scale = static_cast<const uint8_t*>(s);
    check(cudaMemcpy(s, v.scale, size_t(v.scale_bytes), cudaMemcpyHostToDevice), "upload scales");
  }
}

DeviceMatrix::~DeviceMatrix() {
  cudaFree(const_cast<uint8_t*>(view_.data));
  if (view_.scale) cudaFree(const_cast<uint8_t*>(view_.scale));
}

void gemv(const MatrixView& w, const float* x, int64_t ldx, int64_t batch, float* y, int64_t ldy, int64_t row0,
          int64_t row1, void* stream) {
  const int64_t nrows = row1 - row0;
  if (nrows <= 0 || batch <= 0) return;
  constexpr int64_t kMaxBatch = 65535;  // grid.y limit (rows of x per launch on the scalar path)
  if (batch > kMaxBatch) {
    for (int64_t b0 = 0; b0 < batch; b0 += kMaxBatch)
      gemv(w, x + b0 * ldx, ldx, std::min(kMaxBatch, batch - b0), y + b0 * ldy, ldy, row0, row1, stream);
    return;
  }
  const auto st = static_cast<cudaStream_t>(stream);
  if (nrows <= 256 && batch <= 64 && w.k >= 1024) {
    pdl::launch(gemv_splitk_kernel, dim3(unsigned(nrows), unsigned(batch)), 256, 0, st, w, x, ldx, y, ldy, row0);
    check(cudaGetLastError(), "gemv launch");
    return;
  }
  // The vector path needs 16-byte aligned rows of x and K a multiple of 32 (whole words and groups).
  const bool x_ok = (reinterpret_cast<uintptr_t>(x) % 16 == 0) && ldx % 4 == 0 && w.k % 32 == 0;
  if (x_ok && !legacy_gemv() && tc::supported()) {
    if (w.kind == MatrixView::Fp4Group && w.group == 32) {
      tc::dispatch_gemv<MatrixView::Fp4Group>(w, x, ldx, batch, y, ldy, row0, nrows, st);
      check(cudaGetLastError(), "gemv launch");
      return;
    }
    if (w.kind == MatrixView::Fp8Block && w.bn % 128 == 0) {
      tc::dispatch_gemv<MatrixView::Fp8Block>(w, x, ldx, batch, y, ldy, row0, nrows, st);
      check(cudaGetLastError(), "gemv launch");
      return;
    }
  }
  const dim3 vgrid(unsigned((nrows + 7) / 8), unsigned((batch + 7) / 8));
  if (x_ok && w.kind == MatrixView::Fp4Group && w.group == 32) {
    pdl::launch(gemv_vec_kernel<MatrixView::Fp4Group>, vgrid, 256, 0, st, w, x, ldx, y, ldy, row0, nrows, int(batch));
  } else if (x_ok && w.kind == MatrixView::Fp8Block && w.bn % 8 == 0) {
    pdl::launch(gemv_vec_kernel<MatrixView::Fp8Block>, vgrid, 256, 0, st, w, x, ldx, y, ldy, row0, nrows, int(batch));
  } else if (x_ok && w.kind == MatrixView::Bf16) {
    pdl::launch(gemv_vec_kernel<MatrixView::Bf16>, vgrid, 256, 0, st, w, x, ldx, y, ldy, row0, nrows, int(batch));
  } else {
    const dim3 grid(unsigned((nrows + 7) / 8), unsigned(batch));
    pdl::launch(gemv_kernel, grid, 256, 0, st, w, x, ldx, y, ldy, row0, nrows);
  }
  check(cudaGetLastError(), "gemv launch");
}

void gemv_pair(const MatrixView& w1, float* y1, int64_t ldy1, const MatrixView& w2, float* y2, int64_t ldy2,
               const float* x, int64_t ldx, int64_t batch, void* stream) {
  if (batch <= 0) return;
  const auto st = static_cast<cudaStream_t>(stream);
  const bool same = w1.kind == w2.kind && w1.k == w2.k && w1.bn == w2.bn && w1.group == w2.group &&
                    w1.scale_is_f32 == w2.scale_is_f32 && w1.n > 256 && w2.n > 256;
  const bool x_ok = reinterpret_cast<uintptr_t>(x) % 16 == 0 && ldx % 4 == 0 && w1.k % 32 == 0 && batch <= 65535 &&
                    same && !legacy_gemv() && tc::supported();
  const bool fp4 = w1.kind == MatrixView::Fp4Group && w1.group == 32, fp8 = w1.kind == MatrixView::Fp8Block && w1.bn % 128 == 0;
  if (!x_ok || !(fp4 || fp8)) {
    gemv(w1, x, ldx, batch, y1, ldy1, 0, w1.n, stream);
    gemv(w2, x, ldx, batch, y2, ldy2, 0, w2.n, stream);
    return;
  }
  tc::Args a;
  a.w = w1, a.x = x, a.ldx = ldx, a.y = y1, a.ldy = ldy1, a.row0 = 0, a.nrows = w1.n, a.batch = int(batch);
  a.w2 = w2, a.y2 = y2, a.ldy2 = ldy2, a.nrows2 = w2.n;
  const int64_t jobs = (batch + 7) / 8, rows = std::max(w1.n, w2.n);
  const int nb = int(std::min<int64_t>(batch, 8));
  if (fp4) tc::launch<MatrixView::Fp4Group>(a, jobs, rows, w1.k, nb, st, 2);
  else tc::launch<MatrixView::Fp8Block>(a, jobs, rows, w1.k, nb, st, 2);
  check(cudaGetLastError(), "paired gemv launch");
}

void gemv_grouped(const MatrixView& w, const float* x, int64_t ldx, int64_t batch, float* y, int64_t ldy,
                  int64_t groups, int64_t x_group, int64_t y_group, void* stream) {
  if (groups <= 0 || w.n % groups != 0) throw Error("cuda gemv_grouped: the rows do not split into the groups");
  const int64_t m = w.n / groups;
  if (batch <= 0 || m <= 0) return;
  const auto st = static_cast<cudaStream_t>(stream);
  // One launch on the tensor-core path (each group's x slice 16-byte aligned); else one GEMV a group.
  const bool x_ok = reinterpret_cast<uintptr_t>(x) % 16 == 0 && ldx % 4 == 0 && x_group % 4 == 0 && w.k % 32 == 0 &&
                    batch <= 65535 && !legacy_gemv() && tc::supported();
  if (x_ok && w.kind == MatrixView::Fp4Group && w.group == 32) {
    tc::dispatch_gemv<MatrixView::Fp4Group>(w, x, ldx, batch, y, ldy, 0, m, st, groups, x_group, y_group);
    check(cudaGetLastError(), "grouped gemv launch");
    return;
  }
  if (x_ok && w.kind == MatrixView::Fp8Block && w.bn % 128 == 0) {
    tc::dispatch_gemv<MatrixView::Fp8Block>(w, x, ldx, batch, y, ldy, 0, m, st, groups, x_group, y_group);
    check(cudaGetLastError(), "grouped gemv launch");
    return;
  }
  for (int64_t g = 0; g < groups; ++g)
    gemv(w, x + g * x_group, ldx, batch, y + g * y_group, ldy, g * m, (g + 1) * m, stream);
}

namespace {
// grid (slots, ceil(n/8)): slot s multiplies expert experts[s]'s matrix with x row s / x_div.
template <int Kind>
__global__ void expert_gemv_kernel(const MatrixView* __restrict__ mats, const int32_t* __restrict__ experts,
                                   const float* __restrict__ x, int64_t x_div, float* __restrict__ y) {
  pdl::begin();
  const int64_t slot = blockIdx.x;
  const MatrixView& w = mats[experts[slot]];
  const int64_t r = int64_t(blockIdx.y) * 8 + threadIdx.x / 32;
  if (r >= w.n) return;
  const float* xs = x + (slot / x_div) * w.k;
  if constexpr (Kind < 0) {  // any layout
    float acc = 0.f;
    for (int64_t j = threadIdx.x % 32; j < w.k; j += 32) acc += weight_at(w, r, j) * xs[j];
    for (int o = 16; o > 0; o /= 2) acc += __shfl_xor_sync(0xffffffffu, acc, o);
    if (threadIdx.x % 32 == 0) y[slot * w.n + r] = acc;
  } else {
    float acc[8];
    warp_row_dots<Kind>(w, r, xs, w.k, 1, acc);
    if (threadIdx.x % 32 == 0) y[slot * w.n + r] = acc[0];
  }
}
}  // namespace

}  // namespace dsv4::cuda
namespace dsv4::cuda::k {
void expert_gemv(const MatrixView* mats, int kind, int64_t bn, int64_t n, int64_t kk, const int32_t* experts,
                 int64_t slots, const float* x, int64_t x_div, float* y, void* stream) {
  if (slots <= 0) return;
  const auto st = static_cast<cudaStream_t>(stream);
  const dim3 grid(unsigned(slots), unsigned((n + 7) / 8));
  if ((n + 7) / 8 > 65535) throw Error("cuda: expert matrix with more than 524280 rows");
  const bool vec = kk % 32 == 0;
  if (vec && !legacy_gemv() && tc::supported()) {
    if (kind == MatrixView::Fp4Group) {
      tc::dispatch_expert<MatrixView::Fp4Group>(mats, experts, slots, n, kk, x, x_div, y, st);
      check(cudaGetLastError(), "expert gemv launch");
      return;
    }
    if (kind == MatrixView::Fp8Block && bn % 128 == 0) {
      tc::dispatch_expert<MatrixView::Fp8Block>(mats, experts, slots, n, kk, x, x_div, y, st);
      check(cudaGetLastError(), "expert gemv launch");
      return;
    }
  }
  if (vec && kind == MatrixView::Fp4Group) pdl::launch(expert_gemv_kernel<MatrixView::Fp4Group>, grid, 256, 0, st, mats, experts, x, x_div, y);
  else if (vec && kind == MatrixView::Fp8Block && bn % 8 == 0) pdl::launch(expert_gemv_kernel<MatrixView::Fp8Block>, grid, 256, 0, st, mats, experts, x, x_div, y);
  else if (vec && kind == MatrixView::Bf16) pdl::launch(expert_gemv_kernel<MatrixView::Bf16>, grid, 256, 0, st, mats, experts, x, x_div, y);
  else pdl::launch(expert_gemv_kernel<-1>, grid, 256, 0, st, mats, experts, x, x_div, y);
  check(cudaGetLastError(), "expert gemv launch");
}
bool expert_jobs_ok(int kind, int64_t bn, int64_t k) {
  if (k % 32 != 0 || legacy_gemv() || !tc::supported()) return false;
  return kind == MatrixView::Fp4Group || (kind == MatrixView::Fp8Block && bn % 128 == 0);
}

void expert_gemv_jobs(const MatrixView* mats, float* y, const MatrixView* mats2, float* y2, int kind, int64_t n,
                      int64_t kk, const int32_t* jobs, int64_t njobs, const float* x, bool x_by_slot, void* stream) {
  if (njobs <= 0) return;
  if (njobs > 65535) throw Error("cuda: more than 65535 expert jobs in one launch");
  const auto st = static_cast<cudaStream_t>(stream);
  const int4* j = reinterpret_cast<const int4*>(jobs);
  if (kind == MatrixView::Fp4Group) tc::dispatch_jobs<MatrixView::Fp4Group>(mats, y, mats2, y2, j, njobs, n, kk, x, x_by_slot, st);
  else tc::dispatch_jobs<MatrixView::Fp8Block>(mats, y, mats2, y2, j, njobs, n, kk, x, x_by_slot, st);
  check(cudaGetLastError(), "grouped expert gemv launch");
}
}  // namespace dsv4::cuda::k
namespace dsv4::cuda {

void DeviceMatrix::matvec_device(const float* x, float* y, int64_t batch, void* stream) const {
  gemv(view_, x, view_.k, batch, y, view_.n, 0, view_.n, stream);
}

void DeviceMatrix::matvec(std::span<const float> x, std::span<float> y, int64_t batch) const {
  if (int64_t(x.size()) != batch * view_.k || int64_t(y.size()) != batch * view_.n)
    throw Error("cuda matvec: x/y sizes do not match the matrix and batch");
  float *dx = nullptr, *dy = nullptr;
  check(cudaMalloc(&dx, x.size_bytes()), "matvec alloc");
  check(cudaMalloc(&dy, y.size_bytes()), "matvec alloc");
  check(cudaMemcpy(dx, x.data(), x.size_bytes(), cudaMemcpyHostToDevice), "matvec copy in");
  matvec_device(dx, dy, batch, nullptr);
  check(cudaMemcpy(y.data(), dy, y.size_bytes(), cudaMemcpyDeviceToHost), "matvec copy out");
  cudaFree(dx);
  cudaFree(dy);
}

}  // namespace dsv4::cuda
