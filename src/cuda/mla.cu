// Multi-head latent attention on the device (mla.hpp): rope, the latent cache, the absorbed query,
// the attention over the cache and the value map. fp32 throughout, operation for operation the CPU's
// absorbed path (include/dsv4/attention/mla.hpp); only summation order differs.
#include <algorithm>
#include <cmath>

#include "decode.cuh"
#include "mla.hpp"
#include "reduce.cuh"

namespace dsv4::cuda::k {
namespace {

constexpr int kBlock = 256;
constexpr int kRows = 8;  // rows of x per block of the per-head products: one weight pass per 8 rows

// grid (T, heads): the pairs of one head's rope slice. The angle in fp32 as the CPU forms it,
// cos/sin in double (the CPU evaluates them accurately), then scaled by the amplitude.
__global__ void mla_rope_kernel(float* v, const RowInfo* rows, int64_t heads, int64_t width, MlaRope rope) {
  const int64_t t = blockIdx.x, h = blockIdx.y, half = rope.r / 2;
  float* x = v + (t * heads + h) * width + (width - rope.r);
  const float pos = float(rows[t].pos);
  for (int64_t i = threadIdx.x; i < half; i += blockDim.x) {
    const float angle = pos * rope.inv_freq[i];
    double sd, cd;
    sincos(double(angle), &sd, &cd);
    const float c = float(cd) * rope.amplitude, s = float(sd) * rope.amplitude;
    float* pa = rope.interleave ? x + 2 * i : x + i;
    float* pb = rope.interleave ? pa + 1 : pa + half;
    const float a = *pa, b = *pb;
    *pa = a * c - b * s;
    *pb = a * s + b * c;
  }
}

// grid (T).
__global__ void mla_store_kernel(const float* a, const RowInfo* rows, const SeqLayerState* seqs, int64_t lw) {
  const int64_t t = blockIdx.x;
  float* dst = seqs[rows[t].seq].latent + int64_t(rows[t].pos) * lw;
  for (int64_t j = threadIdx.x; j < lw; j += blockDim.x) dst[j] = a[t * lw + j];
}

// grid (H, ceil(T / kRows)): ql[t, h, j] = sum_i q[t, h, i] W[h kv + i, j] for kRows rows at once
// (threads over j: each weight row read coalesced, once per block).
__global__ void mla_absorb_kernel(const float* q, MatrixView w, int64_t t, MlaDimsDev d, float* ql) {
  extern __shared__ float qn[];  // [kRows, dn]
  const int64_t h = blockIdx.x, r0 = int64_t(blockIdx.y) * kRows, nr = min(int64_t(kRows), t - r0);
  const int64_t H = d.heads, dq = d.dq(), lw = d.lw();
  for (int64_t idx = threadIdx.x; idx < kRows * d.dn; idx += blockDim.x) {
    const int64_t r = idx / d.dn, i = idx % d.dn;
    qn[idx] = r < nr ? q[((r0 + r) * H + h) * dq + i] : 0.f;
  }
  __syncthreads();
  for (int64_t j = threadIdx.x; j < d.c; j += blockDim.x) {
    float acc[kRows] = {};
    for (int64_t i = 0; i < d.dn; ++i) {
      const float wv = weight_at(w, h * d.kv() + i, j);
#pragma unroll
      for (int r = 0; r < kRows; ++r) acc[r] += qn[r * d.dn + i] * wv;
    }
#pragma unroll
    for (int r = 0; r < kRows; ++r)  // fixed trip count: acc stays in registers
      if (r < nr) ql[((r0 + r) * H + h) * lw + j] = acc[r];
  }
  for (int64_t idx = threadIdx.x; idx < nr * d.dr; idx += blockDim.x) {
    const int64_t r = idx / d.dr, x = idx % d.dr;
    ql[((r0 + r) * H + h) * lw + d.c + x] = q[((r0 + r) * H + h) * dq + d.dn + x];
  }
}

// grid (T, H): one row's one head over the positions it sees. Scores in shared memory (a warp a
// position, lanes over the c + dr cached values), softmax, then the weighted sum of latents.
__global__ void mla_attend_kernel(const float* ql, const RowInfo* rows, const SeqLayerState* seqs, MlaDimsDev d,
                                  float scale, float* ol) {
  extern __shared__ float sm[];  // [lw] query, then [seen] scores
  const int64_t t = blockIdx.x, h = blockIdx.y, H = d.heads, lw = d.lw();
  float* qs = sm;
  float* sc = sm + lw;
  const int64_t seen = int64_t(rows[t].pos) + 1;
  const float* cache = seqs[rows[t].seq].latent;
  for (int64_t x = threadIdx.x; x < lw; x += blockDim.x) qs[x] = ql[(t * H + h) * lw + x];
  __syncthreads();
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, nw = blockDim.x / 32;
  for (int64_t j = warp; j < seen; j += nw) {
    const float* cj = cache + j * lw;
    float dot = 0.f;
    for (int64_t x = lane; x < lw; x += 32) dot += qs[x] * cj[x];
    for (int o = 16; o > 0; o /= 2) dot += __shfl_xor_sync(0xffffffffu, dot, o);
    if (lane == 0) sc[j] = dot * scale;
  }
  __syncthreads();
  float mx = -INFINITY;
  for (int64_t j = threadIdx.x; j < seen; j += blockDim.x) mx = fmaxf(mx, sc[j]);
  mx = block_max(mx);
  float den = 0.f;
  for (int64_t j = threadIdx.x; j < seen; j += blockDim.x) den += (sc[j] = expf(sc[j] - mx));
  den = block_sum(den);  // synchronizes: every score is written
  const float inv = 1.0f / den;
  for (int64_t x = threadIdx.x; x < d.c; x += blockDim.x) {
    float acc = 0.f;
    for (int64_t j = 0; j < seen; ++j) acc += sc[j] * cache[j * lw + x];
    ol[(t * H + h) * d.c + x] = acc * inv;
  }
}

// grid (H, ceil(T / kRows)): o[t, h, x] = sum_j W[h kv + dn + x, j] ol[t, h, j]; a warp a value row
// (lanes over j, coalesced), kRows rows of ol from shared memory.
__global__ void mla_values_kernel(const float* ol, MatrixView w, int64_t t, MlaDimsDev d, float* o) {
  extern __shared__ float os[];  // [kRows, c]
  const int64_t h = blockIdx.x, r0 = int64_t(blockIdx.y) * kRows, nr = min(int64_t(kRows), t - r0);
  const int64_t H = d.heads;
  for (int64_t idx = threadIdx.x; idx < kRows * d.c; idx += blockDim.x) {
    const int64_t r = idx / d.c, j = idx % d.c;
    os[idx] = r < nr ? ol[((r0 + r) * H + h) * d.c + j] : 0.f;
  }
  __syncthreads();
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, nw = blockDim.x / 32;
  for (int64_t x = warp; x < d.dv; x += nw) {
    const int64_t row = h * d.kv() + d.dn + x;
    float acc[kRows] = {};
    for (int64_t j = lane; j < d.c; j += 32) {
      const float wv = weight_at(w, row, j);
#pragma unroll
      for (int r = 0; r < kRows; ++r) acc[r] += wv * os[r * d.c + j];
    }
#pragma unroll
    for (int r = 0; r < kRows; ++r)
      for (int off = 16; off > 0; off /= 2) acc[r] += __shfl_xor_sync(0xffffffffu, acc[r], off);
    if (lane == 0) {
#pragma unroll
      for (int r = 0; r < kRows; ++r)
        if (r < nr) o[((r0 + r) * H + h) * d.dv + x] = acc[r];
    }
  }
}

unsigned row_tiles(int64_t t) { return unsigned((t + kRows - 1) / kRows); }

}  // namespace

void mla_rope(float* v, const RowInfo* rows, int64_t t, int64_t heads, int64_t width, MlaRope rope, void* s) {
  mla_rope_kernel<<<dim3(unsigned(t), unsigned(heads)), 32, 0, st(s)>>>(v, rows, heads, width, rope);
  launched("mla rope");
}

void mla_store(const float* a, const RowInfo* rows, const SeqLayerState* seqs, int64_t t, int64_t lw, void* s) {
  mla_store_kernel<<<unsigned(t), kBlock, 0, st(s)>>>(a, rows, seqs, lw);
  launched("mla store");
}

void mla_absorb_query(const float* q, const MatrixView& wkv_b, int64_t t, const MlaDimsDev& d, float* ql, void* s) {
  const size_t smem = size_t(kRows * d.dn) * sizeof(float);
  static std::atomic<size_t> raised{0};  // raised on first use: static shared memory counts against 48 KiB too
  raise_dynamic_smem(mla_absorb_kernel, smem, raised, "mla absorb smem");
  mla_absorb_kernel<<<dim3(unsigned(d.heads), row_tiles(t)), kBlock, smem, st(s)>>>(q, wkv_b, t, d, ql);
  launched("mla absorb");
}

int64_t mla_attend_smem(const MlaDimsDev& d, int64_t max_keys) { return (d.lw() + max_keys) * int64_t(sizeof(float)); }

void mla_attend(const float* ql, const RowInfo* rows, const SeqLayerState* seqs, int64_t t, const MlaDimsDev& d,
                int64_t max_keys, float scale, float* ol, void* s) {
  const size_t smem = size_t(mla_attend_smem(d, max_keys));
  static std::atomic<size_t> raised{0};  // raised on first use: static shared memory counts against 48 KiB too
  raise_dynamic_smem(mla_attend_kernel, smem, raised, "mla attend smem");
  mla_attend_kernel<<<dim3(unsigned(t), unsigned(d.heads)), kBlock, smem, st(s)>>>(ql, rows, seqs, d, scale, ol);
  launched("mla attend");
}

void mla_values(const float* ol, const MatrixView& wkv_b, int64_t t, const MlaDimsDev& d, float* o, void* s) {
  const size_t smem = size_t(kRows * d.c) * sizeof(float);
  static std::atomic<size_t> raised{0};  // raised on first use: static shared memory counts against 48 KiB too
  raise_dynamic_smem(mla_values_kernel, smem, raised, "mla values smem");
  mla_values_kernel<<<dim3(unsigned(d.heads), row_tiles(t)), kBlock, smem, st(s)>>>(ol, wkv_b, t, d, o);
  launched("mla values");
}

}  // namespace dsv4::cuda::k
