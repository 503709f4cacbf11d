// Fast-mode prefill kernels on the tensor cores (mma.sync m16n8k16, fp32 accumulation):
// - attention of many rows: a block takes one query row and 32 heads (all heads share the row's keys,
//   so the heads are the M of the products), tiles of 32 keys gathered into shared memory, f16 hi +
//   lo operands, online softmax with the sink, de-rotation in registers;
// - the routed experts as one grouped GEMM: tiles of 64 rows of one expert (a tile list built on
//   the device, no host round trip, no padding to the busiest expert), FP4 weights decoded to BF16 in
//   shared memory a K chunk at a time (exact), activations as BF16 hi + lo (two products a tile).
#include <algorithm>
#include <cfloat>
#include <cstdint>
#include <cstdlib>
#include <string>

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "decode.cuh"
#include "kernels.hpp"
#include "row_keys.cuh"

namespace dsv4::cuda::k {
namespace {

__device__ __forceinline__ uint32_t smem_u32(const void* p) { return uint32_t(__cvta_generic_to_shared(p)); }

__device__ __forceinline__ void ldsm_x4(uint32_t addr, uint32_t (&r)[4]) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}
__device__ __forceinline__ void ldsm_x4_t(uint32_t addr, uint32_t (&r)[4]) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}

// ---------------------------------------------------------------------------------------------
// Attention.

constexpr int kTcHeads = 32;     // heads a block (the M of both products)
constexpr int kTcKeys = 32;      // keys a tile
constexpr int kTcThreads = 256;  // 8 warps: 2 head groups of 16 x 4 quarters of the head dim

// Shared memory of attend_tc_kernel<NT> (head dim padded to dp = 32 NT).
size_t tc_smem(int64_t dp, int64_t r) {
  return size_t(2 * kTcHeads * (dp + 8) * 2      // q, f16 hi and lo
                + 2 * kTcKeys * (dp + 8) * 2     // keys of the tile, f16 hi and lo
                + kTcKeys * dp * 4               // the tile as gathered (fp32, cp.async)
                + 4 * kTcHeads * (kTcKeys + 1) * 4  // partial logits of the 4 quarters
                + 2 * kTcHeads * (kTcKeys + 8) * 2  // probabilities, f16 hi and lo
                + 3 * kTcHeads * 4                  // running max, sum, rescale
                + r * 4);                           // cos, sin of the row's de-rotation
}

// v as f16 hi + lo (lo = the rounding error of hi): ~22 significant bits.
__device__ __forceinline__ void split_f16(float v0, float v1, __half2* hi, __half2* lo) {
  const __half2 h = __floats2half2_rn(v0, v1);
  *hi = h;
  *lo = __floats2half2_rn(v0 - __low2float(h), v1 - __high2float(h));
}

// grid (T, ceil(H / 32)). q, keys and probabilities as f16 hi + lo, three products each (hi hi,
// hi lo, lo hi) into fp32 accumulators: the products carry ~22 bits, so the result is close to the
// exact kernel's (a single f16 term, 11 bits, moved the indexer's and router's choices downstream).
template <int NT>
__global__ void __launch_bounds__(kTcThreads, 1) attend_tc_kernel(AttendArgs a) {
  constexpr int DP = 32 * NT, QS = DP + 8, PS = kTcKeys + 8, SS = kTcKeys + 1, DQ = DP / 4;
  constexpr int CH = kTcKeys * DP / 4 / kTcThreads;  // 16-byte chunks a thread gathers per tile
  extern __shared__ __align__(16) unsigned char smem[];
  __half* qh = reinterpret_cast<__half*>(smem);   // [32, QS] x 2
  __half* ql = qh + kTcHeads * QS;
  __half* kh = ql + kTcHeads * QS;                // [32, QS] x 2
  __half* kl = kh + kTcKeys * QS;
  float* stage = reinterpret_cast<float*>(kl + kTcKeys * QS);  // [32, DP]
  float* sp = stage + kTcKeys * DP;               // [4, 32, SS]
  __half* ph = reinterpret_cast<__half*>(sp + 4 * kTcHeads * SS);  // [32, PS] x 2
  __half* pl = ph + kTcHeads * PS;
  float* mrow = reinterpret_cast<float*>(pl + kTcHeads * PS);
  float* lrow = mrow + kTcHeads;
  float* alpha = lrow + kTcHeads;
  float* rc = alpha + kTcHeads;  // [r/2]
  float* rs = rc + a.rope.r / 2;

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int hg = warp & 1, dq = warp >> 1, g = lane >> 2, cq = lane & 3;
  const int64_t row = blockIdx.x, h0 = int64_t(blockIdx.y) * kTcHeads, d = a.d, H = a.heads;
  const RowInfo ri = a.rows[row];
  const RowKeys rk = row_keys(a, ri, row);
  const int64_t nk = rk.nk;
  auto key = [&](int64_t i) { return row_key(a, ri, row, rk, i); };
  auto gather = [&](int64_t t0) {  // keys t0 .. t0 + 31 into stage (zeros past nk and past d)
#pragma unroll
    for (int u = 0; u < CH; ++u) {
      const int c = tid + kTcThreads * u, kr = c / (DP / 4), c4 = c % (DP / 4);
      const int64_t i = t0 + kr;
      const bool ok = i < nk && c4 * 4 < d;
      cp_async16(smem_u32(stage + kr * DP + c4 * 4), ok ? key(i) + c4 * 4 : a.kv, ok);
    }
    cp_commit();
  };
  const int64_t ntiles = (nk + kTcKeys - 1) / kTcKeys;
  gather(0);
  // q of the block's heads, zero rows past H and columns past d.
  for (int c = tid; c < kTcHeads * DP / 4; c += kTcThreads) {
    const int h = c / (DP / 4), c4 = c % (DP / 4);
    float4 v = make_float4(0.f, 0.f, 0.f, 0.f);
    if (h0 + h < H && c4 * 4 < d) v = *reinterpret_cast<const float4*>(a.q + (row * H + h0 + h) * d + c4 * 4);
    __half2* hi = reinterpret_cast<__half2*>(qh + h * QS + c4 * 4);
    __half2* lo = reinterpret_cast<__half2*>(ql + h * QS + c4 * 4);
    split_f16(v.x, v.y, hi, lo), split_f16(v.z, v.w, hi + 1, lo + 1);
  }
  if (tid < kTcHeads) {  // the sink takes mass exp(sink - m) and gives no value: start at m = sink, sum 1
    mrow[tid] = h0 + tid < H ? a.sink[h0 + tid] : 0.f;
    lrow[tid] = 1.f;
  }
  for (int i = tid; i < a.rope.r / 2; i += kTcThreads) {  // as rope_block: fp32 angle, double sincos
    const float angle = float(ri.pos) * a.rope.inv_freq[i];
    double sd, cd;
    sincos(double(angle), &sd, &cd);
    rc[i] = float(cd), rs[i] = float(sd);
  }
  float acc[NT][4];
#pragma unroll
  for (int j = 0; j < NT; ++j) acc[j][0] = acc[j][1] = acc[j][2] = acc[j][3] = 0.f;

  for (int64_t t = 0; t < ntiles; ++t) {
    cp_wait<0>();
    __syncthreads();  // the tile is in stage; the last tile's products are done with the keys and p
#pragma unroll 4
    for (int u = 0; u < CH; ++u) {
      const int c = tid + kTcThreads * u, kr = c / (DP / 4), c4 = c % (DP / 4);
      const float4 v = *reinterpret_cast<const float4*>(stage + kr * DP + c4 * 4);
      __half2* hi = reinterpret_cast<__half2*>(kh + kr * QS + c4 * 4);
      __half2* lo = reinterpret_cast<__half2*>(kl + kr * QS + c4 * 4);
      split_f16(v.x, v.y, hi, lo), split_f16(v.z, v.w, hi + 1, lo + 1);
    }
    __syncthreads();
    if (t + 1 < ntiles) gather((t + 1) * kTcKeys);  // in flight during this tile's products

    // Partial logits: 16 heads x 32 keys over this warp's quarter of the head dim.
    float s[4][4];
#pragma unroll
    for (int j = 0; j < 4; ++j) s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.f;
#pragma unroll
    for (int ks = 0; ks < DQ; ks += 16) {
      const int k0 = dq * DQ + ks;
      uint32_t ah[4], al[4];
      ldsm_x4(smem_u32(qh + (hg * 16 + (lane & 15)) * QS + k0 + (lane >> 4) * 8), ah);
      ldsm_x4(smem_u32(ql + (hg * 16 + (lane & 15)) * QS + k0 + (lane >> 4) * 8), al);
#pragma unroll
      for (int nb = 0; nb < 2; ++nb) {
        const int at = (nb * 16 + (lane & 7) + (lane >> 4) * 8) * QS + k0 + ((lane >> 3) & 1) * 8;
        uint32_t bh[4], bl[4];
        ldsm_x4(smem_u32(kh + at), bh);
        ldsm_x4(smem_u32(kl + at), bl);
        mma16816<true>(s[2 * nb], al, bh[0], bh[1]);  // small terms first
        mma16816<true>(s[2 * nb], ah, bl[0], bl[1]);
        mma16816<true>(s[2 * nb], ah, bh[0], bh[1]);
        mma16816<true>(s[2 * nb + 1], al, bh[2], bh[3]);
        mma16816<true>(s[2 * nb + 1], ah, bl[2], bl[3]);
        mma16816<true>(s[2 * nb + 1], ah, bh[2], bh[3]);
      }
    }
    float* spd = sp + dq * kTcHeads * SS;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      spd[(hg * 16 + g) * SS + j * 8 + 2 * cq] = s[j][0];
      spd[(hg * 16 + g) * SS + j * 8 + 2 * cq + 1] = s[j][1];
      spd[(hg * 16 + g + 8) * SS + j * 8 + 2 * cq] = s[j][2];
      spd[(hg * 16 + g + 8) * SS + j * 8 + 2 * cq + 1] = s[j][3];
    }
    __syncthreads();
    {  // online softmax: 8 threads a head, 4 keys each
      const int hh = tid >> 3, sub = tid & 7;
      float v[4], mt = -INFINITY;
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const int kk = sub * 4 + j;
        const int at = hh * SS + kk;
        float x = ((sp[at] + sp[kTcHeads * SS + at]) + sp[2 * kTcHeads * SS + at]) + sp[3 * kTcHeads * SS + at];
        x = t * kTcKeys + kk < nk ? x * a.scale : -INFINITY;
        v[j] = x, mt = fmaxf(mt, x);
      }
      for (int o = 1; o < 8; o *= 2) mt = fmaxf(mt, __shfl_xor_sync(0xffffffffu, mt, o));
      const float mo = mrow[hh], mn = fmaxf(mo, mt);
      float sum = 0.f;
#pragma unroll
      for (int j = 0; j < 4; j += 2) {
        const float p0 = expf(v[j] - mn), p1 = expf(v[j + 1] - mn);
        sum += p0 + p1;
        split_f16(p0, p1, reinterpret_cast<__half2*>(ph + hh * PS + sub * 4 + j),
                  reinterpret_cast<__half2*>(pl + hh * PS + sub * 4 + j));
      }
      for (int o = 1; o < 8; o *= 2) sum += __shfl_xor_sync(0xffffffffu, sum, o);
      __syncwarp();
      if (sub == 0) {
        const float al = expf(mo - mn);
        alpha[hh] = al, lrow[hh] = lrow[hh] * al + sum, mrow[hh] = mn;
      }
    }
    __syncthreads();
    // o [16 heads, this warp's quarter] = o * rescale + p [16, 32] keys [32, quarter].
    const float al0 = alpha[hg * 16 + g], al1 = alpha[hg * 16 + g + 8];
#pragma unroll
    for (int j = 0; j < NT; ++j) acc[j][0] *= al0, acc[j][1] *= al0, acc[j][2] *= al1, acc[j][3] *= al1;
#pragma unroll
    for (int kk = 0; kk < kTcKeys; kk += 16) {
      uint32_t ah[4], al[4];
      ldsm_x4(smem_u32(ph + (hg * 16 + (lane & 15)) * PS + kk + (lane >> 4) * 8), ah);
      ldsm_x4(smem_u32(pl + (hg * 16 + (lane & 15)) * PS + kk + (lane >> 4) * 8), al);
#pragma unroll
      for (int np = 0; np < NT; np += 2) {
        const int at = (kk + (lane & 7) + ((lane >> 3) & 1) * 8) * QS + dq * DQ + np * 8 + (lane >> 4) * 8;
        uint32_t bh[4], bl[4];
        ldsm_x4_t(smem_u32(kh + at), bh);
        ldsm_x4_t(smem_u32(kl + at), bl);
        mma16816<true>(acc[np], al, bh[0], bh[1]);
        mma16816<true>(acc[np], ah, bl[0], bl[1]);
        mma16816<true>(acc[np], ah, bh[0], bh[1]);
        mma16816<true>(acc[np + 1], al, bh[2], bh[3]);
        mma16816<true>(acc[np + 1], ah, bl[2], bl[3]);
        mma16816<true>(acc[np + 1], ah, bh[2], bh[3]);
      }
    }
  }
  __syncthreads();
  // Normalize, de-rotate the last r dims by -pos (each lane holds whole pairs), store.
  const int64_t rbase = d - a.rope.r;
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    const int h = hg * 16 + g + 8 * half;
    const float inv = 1.0f / lrow[h];
    if (h0 + h >= H) continue;
    float* orow = a.o + (row * H + h0 + h) * d;
#pragma unroll
    for (int j = 0; j < NT; ++j) {
      const int64_t col = dq * DQ + j * 8 + 2 * cq;
      if (col >= d) continue;
      float x = acc[j][2 * half] * inv, y = acc[j][2 * half + 1] * inv;
      if (col >= rbase) {
        const int64_t i = (col - rbase) / 2;
        const float c = rc[i], sn = rs[i];
        const float nx = x * c + y * sn, ny = y * c - x * sn;
        x = nx, y = ny;
      }
      *reinterpret_cast<float2*>(orow + col) = make_float2(x, y);
    }
  }
}

int tc_nt(int64_t d) {  // the padded head dim's 32-column count: 2, 4, 8 or 16
  for (int nt : {2, 4, 8, 16})
    if (32 * nt >= d) return nt;
  return 0;
}

template <int NT>
void launch_tc(const AttendArgs& a, void* s) {
  const size_t bytes = tc_smem(32 * NT, a.rope.r);
  static std::atomic<size_t> set{0};
  raise_dynamic_smem(attend_tc_kernel<NT>, bytes, set, "tensor-core attention shared memory");
  const dim3 grid(unsigned(a.t), unsigned((a.heads + kTcHeads - 1) / kTcHeads));
  attend_tc_kernel<NT><<<grid, kTcThreads, bytes, st(s)>>>(a);
  check(cudaGetLastError(), "attend_tc");
}

// ---------------------------------------------------------------------------------------------
// Routed experts: grouped GEMM.

constexpr int kMoeBM = 64, kMoeBN = 128, kMoeKC = 64, kMoeThreads = 256;
constexpr int kMoeXS = kMoeKC + 8;  // shared row stride of the activation and decoded weight tiles
constexpr size_t kMoeStageBytes = size_t(2 * kMoeBM * kMoeXS * 2 + kMoeBN * kMoeKC / 2 + kMoeBN * 2);
constexpr size_t moe_smem(int stages) { return stages * kMoeStageBytes + size_t(kMoeBN * kMoeXS * 2); }
// Stages 2 (prefetch one chunk ahead, 80 registers, 3 blocks an SM) is the default: at 3 stages and
// 2 blocks (registers and shared memory) the tensor pipe was 42 % busy at 8.5 cycles per issue
// (Nsight Compute). DSV4_CUDA_MOE_STAGES=3 selects the 3-stage build, for comparisons.
int moe_stages() {
  static const int v = [] {
    const char* e = std::getenv("DSV4_CUDA_MOE_STAGES");
    return e && std::string(e) == "3" ? 3 : 2;
  }();
  return v;
}

// One block: every nonempty expert's rows [offsets[e], offsets[e+1]) cut into tiles of kMoeBM rows;
// the tiles past the last get expert -1.
__global__ void moe_tiles_kernel(const int32_t* __restrict__ offsets, int E, int max_tiles, int4* __restrict__ tiles) {
  __shared__ int count;
  if (threadIdx.x == 0) {
    int n = 0;
    for (int e = 0; e < E; ++e)
      for (int r0 = offsets[e]; r0 < offsets[e + 1] && n < max_tiles; r0 += kMoeBM)
        tiles[n++] = make_int4(e, r0, min(kMoeBM, offsets[e + 1] - r0), 0);
    count = n;
  }
  __syncthreads();
  for (int i = count + int(threadIdx.x); i < max_tiles; i += blockDim.x) tiles[i] = make_int4(-1, 0, 0, 0);
}

// grid (slots): the grouped row dst_of[s] (or s) of hi/lo [rows, kp] = bf16 split of x row s / div,
// zeros in columns cols..kp.
__global__ void moe_split_kernel(const float* __restrict__ x, int64_t ldx, const int32_t* __restrict__ dst_of,
                                 int64_t div, int64_t cols, int64_t kp, __nv_bfloat16* __restrict__ hi,
                                 __nv_bfloat16* __restrict__ lo) {
  const int64_t s = blockIdx.x, dst = dst_of ? dst_of[s] : s;
  const float* xr = x + (s / div) * ldx;
  const bool vec = cols % 4 == 0 && ldx % 4 == 0 && reinterpret_cast<uintptr_t>(x) % 16 == 0;
  for (int64_t j = 4 * int64_t(threadIdx.x); j < kp; j += 4 * int64_t(blockDim.x)) {  // kp: a multiple of 64
    float4 v = make_float4(0.f, 0.f, 0.f, 0.f);
    if (vec && j < cols) {
      v = *reinterpret_cast<const float4*>(xr + j);
    } else if (!vec) {
      v.x = j < cols ? xr[j] : 0.f, v.y = j + 1 < cols ? xr[j + 1] : 0.f;
      v.z = j + 2 < cols ? xr[j + 2] : 0.f, v.w = j + 3 < cols ? xr[j + 3] : 0.f;
    }
    const __nv_bfloat162 h0 = __floats2bfloat162_rn(v.x, v.y), h1 = __floats2bfloat162_rn(v.z, v.w);
    __nv_bfloat162* o = reinterpret_cast<__nv_bfloat162*>(hi + dst * kp + j);
    __nv_bfloat162* q = reinterpret_cast<__nv_bfloat162*>(lo + dst * kp + j);
    o[0] = h0, o[1] = h1;
    q[0] = __floats2bfloat162_rn(v.x - __low2float(h0), v.y - __high2float(h0));
    q[1] = __floats2bfloat162_rn(v.z - __low2float(h1), v.w - __high2float(h1));
  }
}

__device__ __forceinline__ uint32_t prmt(uint32_t a, uint32_t b, uint32_t sel) {
  uint32_t r;
  asm("prmt.b32 %0, %1, %2, %3;\n" : "=r"(r) : "r"(a), "r"(b), "r"(sel));
  return r;
}

// 8 E2M1 codes (a word, code i in bits 4i..4i+3) -> 4 bf16 pairs, exact: the magnitudes' high and low
// bytes by byte-permute lookups (4 codes an instruction), interleaved, the sign bits OR'd in.
__device__ __forceinline__ void e2m1x8_bf16(uint32_t q, uint32_t (&out)[4]) {
  const uint32_t sg = q & 0x88888888u;
#pragma unroll
  for (int w = 0; w < 2; ++w) {
    const uint32_t sel = (q >> (16 * w)) & 0x7777u;
    // bf16 of 0, .5, 1, 1.5, 2, 3, 4, 6: high bytes 00 3F 3F 3F 40 40 40 40, low 00 00 80 C0 00 40 80 C0.
    const uint32_t hi = prmt(0x3F3F3F00u, 0x40404040u, sel), lo = prmt(0xC0800000u, 0xC0804000u, sel);
    out[2 * w] = prmt(lo, hi, 0x5140u);
    out[2 * w + 1] = prmt(lo, hi, 0x7362u);
  }
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    // byte j of the signs at bytes 1 and 3: its bit 3 (code 2j) -> bit 15, its bit 7 (code 2j+1) -> 31.
    const uint32_t u = prmt(sg, 0u, 0x0404u | (uint32_t(j) << 4) | (uint32_t(j) << 12));
    out[j] |= ((u << 4) & 0x00008000u) | (u & 0x80000000u);
  }
}

// E8M0 as a bf16 pair (2^(b-127); b = 0 the subnormal 2^-127, b = 255 NaN).
__device__ __forceinline__ uint32_t e8m0_bf16x2(uint32_t b) {
  const uint32_t h = b == 0 ? 0x0040u : b == 255 ? 0x7FC0u : b << 7;
  return h | (h << 16);
}

__device__ __forceinline__ uint32_t bf16x2_mul(uint32_t a, uint32_t b) {
  __nv_bfloat162 x = *reinterpret_cast<__nv_bfloat162*>(&a), y = *reinterpret_cast<__nv_bfloat162*>(&b);
  __nv_bfloat162 r = __hmul2(x, y);
  return *reinterpret_cast<uint32_t*>(&r);
}

// grid (ceil(n / 128), max_tiles, matrices): y [grouped rows, n] = x [grouped rows, kp] W_e^T for the
// tile's rows, W_e = mats[z][tile.expert] [n, k]. Fp4: packed E2M1 in groups of 32 (k a multiple of
// 32), copied raw and decoded in shared memory; otherwise each weight decoded from global (any format).
template <bool Fp4, int kMoeStages>
__global__ void __launch_bounds__(kMoeThreads, kMoeStages == 2 ? 3 : 2)
    moe_gemm_kernel(const MatrixView* __restrict__ mats0, const MatrixView* __restrict__ mats1, float* y0, float* y1,
                    int64_t n, int64_t k, int64_t kp, const int4* __restrict__ tiles,
                    const __nv_bfloat16* __restrict__ xh, const __nv_bfloat16* __restrict__ xl) {
  constexpr int kMoeAhead = kMoeStages - 1;  // chunks in flight ahead of the one multiplied
  const int4 tile = tiles[blockIdx.y];
  if (tile.x < 0) return;
  const MatrixView w = (blockIdx.z ? mats1 : mats0)[tile.x];
  float* y = blockIdx.z ? y1 : y0;
  extern __shared__ __align__(16) unsigned char smem[];
  __nv_bfloat16* wdec = reinterpret_cast<__nv_bfloat16*>(smem + kMoeStages * kMoeStageBytes);  // [128, XS]
  auto xh_s = [&](int sg) { return reinterpret_cast<__nv_bfloat16*>(smem + sg * kMoeStageBytes); };
  auto xl_s = [&](int sg) { return xh_s(sg) + kMoeBM * kMoeXS; };
  auto wr_s = [&](int sg) { return reinterpret_cast<uint8_t*>(xl_s(sg) + kMoeBM * kMoeXS); };  // [128, 32]
  auto sc_s = [&](int sg) { return wr_s(sg) + kMoeBN * kMoeKC / 2; };                          // [128, 2]
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, wm = warp >> 2, wn = warp & 3;
  const int64_t n0 = int64_t(blockIdx.x) * kMoeBN, row0 = tile.y;
  const int rows = tile.z;
  const int64_t nchunks = kp / kMoeKC, sc_row = (k + 31) / 32;
  // This thread's weight row (n0 + tid / 2) and half chunk (32 values, one FP4 scale group).
  const int wrow = tid >> 1, whalf = tid & 1;
  const bool wrow_ok = n0 + wrow < n;
  auto issue = [&](int64_t c) {  // chunk c's activations (and raw FP4 weights) into its stage
    if (c < nchunks) {
      const int sg = int(c % kMoeStages);
      const int64_t k0 = c * kMoeKC;
#pragma unroll
      for (int u = 0; u < 4; ++u) {  // 2 x 64 rows x 8 chunks of 16 bytes
        const int q = tid + kMoeThreads * u, part = q >> 9, r = (q >> 3) & 63, c8 = q & 7;
        const __nv_bfloat16* src = (part ? xl : xh) + (row0 + r) * kp + k0 + c8 * 8;
        cp_async16(smem_u32((part ? xl_s(sg) : xh_s(sg)) + r * kMoeXS + c8 * 8), r < rows ? src : xh, r < rows);
      }
      if constexpr (Fp4) {
        const bool ok = wrow_ok && k0 + whalf * 32 < k;
        const uint8_t* src = w.data + (n0 + wrow) * (k / 2) + k0 / 2 + whalf * 16;
        cp_async16(smem_u32(wr_s(sg) + wrow * 32 + whalf * 16), ok ? src : w.data, ok);
      }
    }
    cp_commit();
  };
  auto scale_of = [&](int64_t c) -> uint8_t {  // this thread's FP4 scale byte of chunk c
    if (!Fp4 || c >= nchunks) return 127;
    const int64_t grp = c * 2 + whalf;
    return wrow_ok && grp < sc_row ? __ldg(w.scale + (n0 + wrow) * sc_row + grp) : uint8_t(127);
  };
#pragma unroll
  for (int c = 0; c < kMoeAhead; ++c) issue(c), sc_s(c)[tid] = scale_of(c);
  float acc[2][4][4];
#pragma unroll
  for (int i = 0; i < 2; ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j) acc[i][j][0] = acc[i][j][1] = acc[i][j][2] = acc[i][j][3] = 0.f;

  for (int64_t c = 0; c < nchunks; ++c) {
    const int sg = int(c % kMoeStages);
    cp_wait<kMoeAhead - 1>();
    __syncthreads();  // chunk c landed; the last chunk's products are done with wdec and its stage
    {                 // decode this thread's 32 weights of chunk c into wdec
      __nv_bfloat16* dst = wdec + wrow * kMoeXS + whalf * 32;
      if constexpr (Fp4) {
        const uint4 q = *reinterpret_cast<const uint4*>(wr_s(sg) + wrow * 32 + whalf * 16);
        const uint32_t s2 = e8m0_bf16x2(sc_s(sg)[tid]);
        const uint32_t words[4] = {q.x, q.y, q.z, q.w};
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          uint32_t o[4];
          e2m1x8_bf16(words[i], o);
#pragma unroll
          for (int j = 0; j < 4; ++j) o[j] = bf16x2_mul(o[j], s2);
          *reinterpret_cast<uint4*>(dst + 8 * i) = make_uint4(o[0], o[1], o[2], o[3]);
        }
      } else {
        const int64_t k0 = c * kMoeKC + whalf * 32;
        for (int j = 0; j < 32; ++j)
          dst[j] = __float2bfloat16_rn(wrow_ok && k0 + j < k ? weight_at(w, n0 + wrow, k0 + j) : 0.f);
      }
    }
    issue(c + kMoeAhead);  // into the stage of chunk c - 1, which every thread is done with
    const uint8_t next_scale = scale_of(c + kMoeAhead);
    __syncthreads();  // wdec ready
    const __nv_bfloat16* xs[2] = {xh_s(sg), xl_s(sg)};
#pragma unroll
    for (int kk = 0; kk < kMoeKC; kk += 16) {
      uint32_t bf[4][2];
#pragma unroll
      for (int np = 0; np < 2; ++np) {  // weights [n, k]: 2 n8 tiles per ldmatrix
        uint32_t r[4];
        ldsm_x4(smem_u32(wdec + (wn * 32 + np * 16 + (lane & 7) + (lane >> 4) * 8) * kMoeXS + kk + ((lane >> 3) & 1) * 8), r);
        bf[2 * np][0] = r[0], bf[2 * np][1] = r[1], bf[2 * np + 1][0] = r[2], bf[2 * np + 1][1] = r[3];
      }
#pragma unroll
      for (int part = 0; part < 2; ++part)
#pragma unroll
        for (int mi = 0; mi < 2; ++mi) {
          uint32_t af[4];
          ldsm_x4(smem_u32(xs[part] + (wm * 32 + mi * 16 + (lane & 15)) * kMoeXS + kk + (lane >> 4) * 8), af);
#pragma unroll
          for (int ni = 0; ni < 4; ++ni) mma16816<false>(acc[mi][ni], af, bf[ni][0], bf[ni][1]);
        }
    }
    sc_s(int((c + kMoeAhead) % kMoeStages))[tid] = next_scale;  // read by this thread at chunk c + kMoeAhead
  }
  const int g = lane >> 2, cq = lane & 3;
#pragma unroll
  for (int mi = 0; mi < 2; ++mi)
#pragma unroll
    for (int hf = 0; hf < 2; ++hf) {
      const int r = wm * 32 + mi * 16 + g + 8 * hf;
      if (r >= rows) continue;
      float* yr = y + (row0 + r) * n;
#pragma unroll
      for (int ni = 0; ni < 4; ++ni) {
        const int64_t col = n0 + wn * 32 + ni * 8 + 2 * cq;
        if (col < n) yr[col] = acc[mi][ni][2 * hf];
        if (col + 1 < n) yr[col + 1] = acc[mi][ni][2 * hf + 1];
      }
    }
}

}  // namespace

bool attend_tc_ok(const AttendArgs& a) {
  if (a.d % 4 != 0 || a.d > 512 || a.rope.r > a.d || (a.d - a.rope.r) % 2 != 0 || a.t == 0) return false;
  // Queried once (one device per process, as tc::sm_count): this runs for every attention layer.
  static const int optin = [] {
    int dev = 0, v = 0;
    if (cudaGetDevice(&dev) != cudaSuccess ||
        cudaDeviceGetAttribute(&v, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev) != cudaSuccess)
      return 0;
    return v;
  }();
  return tc_smem(32 * tc_nt(a.d), a.rope.r) <= size_t(optin);
}

void attend_tc(const AttendArgs& a, void* s) {
  switch (tc_nt(a.d)) {
    case 2: return launch_tc<2>(a, s);
    case 4: return launch_tc<4>(a, s);
    case 8: return launch_tc<8>(a, s);
    default: return launch_tc<16>(a, s);
  }
}

int64_t moe_max_tiles(int64_t slots, int64_t E) { return (slots + kMoeBM - 1) / kMoeBM + std::min(E, slots); }
int64_t moe_kpad(int64_t k) { return (k + kMoeKC - 1) / kMoeKC * kMoeKC; }

void moe_tiles(const int32_t* offsets, int64_t E, int64_t max_tiles, int32_t* tiles, void* s) {
  moe_tiles_kernel<<<1, 256, 0, st(s)>>>(offsets, int(E), int(max_tiles), reinterpret_cast<int4*>(tiles));
  check(cudaGetLastError(), "moe_tiles");
}

void moe_split(const float* x, int64_t ldx, const int32_t* dst_of, int64_t rows, int64_t div, int64_t cols,
               uint16_t* hi, uint16_t* lo, void* s) {
  if (rows == 0) return;
  moe_split_kernel<<<unsigned(rows), 256, 0, st(s)>>>(x, ldx, dst_of, div, cols, moe_kpad(cols),
                                                      reinterpret_cast<__nv_bfloat16*>(hi),
                                                      reinterpret_cast<__nv_bfloat16*>(lo));
  check(cudaGetLastError(), "moe_split");
}

bool moe_fp4_ok(int kind, int64_t group, int64_t k) { return kind == MatrixView::Fp4Group && group == 32 && k % 32 == 0; }

template <int Stages>
void launch_moe(const MatrixView* mats0, float* y0, const MatrixView* mats1, float* y1, bool fp4, int64_t n, int64_t k,
                const int32_t* tiles, int64_t max_tiles, const uint16_t* xh, const uint16_t* xl, void* s) {
  static std::atomic<size_t> set_fp4{0}, set_other{0};
  raise_dynamic_smem(moe_gemm_kernel<true, Stages>, moe_smem(Stages), set_fp4, "expert GEMM shared memory");
  raise_dynamic_smem(moe_gemm_kernel<false, Stages>, moe_smem(Stages), set_other, "expert GEMM shared memory");
  const dim3 grid(unsigned((n + kMoeBN - 1) / kMoeBN), unsigned(max_tiles), mats1 ? 2u : 1u);
  auto* t = reinterpret_cast<const int4*>(tiles);
  auto* h = reinterpret_cast<const __nv_bfloat16*>(xh);
  auto* l = reinterpret_cast<const __nv_bfloat16*>(xl);
  const size_t bytes = moe_smem(Stages);
  if (fp4) moe_gemm_kernel<true, Stages><<<grid, kMoeThreads, bytes, st(s)>>>(mats0, mats1, y0, y1, n, k, moe_kpad(k), t, h, l);
  else moe_gemm_kernel<false, Stages><<<grid, kMoeThreads, bytes, st(s)>>>(mats0, mats1, y0, y1, n, k, moe_kpad(k), t, h, l);
  check(cudaGetLastError(), "moe_gemm");
}

void moe_gemm(const MatrixView* mats0, float* y0, const MatrixView* mats1, float* y1, bool fp4, int64_t n, int64_t k,
              const int32_t* tiles, int64_t max_tiles, const uint16_t* xh, const uint16_t* xl, void* s) {
  if (max_tiles == 0 || n == 0) return;
  if (moe_stages() == 3) return launch_moe<3>(mats0, y0, mats1, y1, fp4, n, k, tiles, max_tiles, xh, xl, s);
  launch_moe<2>(mats0, y0, mats1, y1, fp4, n, k, tiles, max_tiles, xh, xl, s);
}

}  // namespace dsv4::cuda::k
