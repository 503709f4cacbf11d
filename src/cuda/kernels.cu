// The CUDA backend's kernels other than the GEMVs: norms, mHC, rope, attention, compressors, the
// Lightning Indexer, routing. Each mirrors the fp32 CPU oracle (include/dsv4/...) operation for
// operation; only summation order differs.
#include <algorithm>
#include <cfloat>
#include <cstdint>

#include <cuda_bf16.h>

#include "decode.cuh"
#include "grid_walk.cuh"
#include "pdl.cuh"
#include "row_keys.cuh"
#include "kernels.hpp"
#include "reduce.cuh"

namespace dsv4::cuda::k {
namespace {

constexpr int kBlock = 256;
// Indexer entries a scores block takes (two a warp): at decode the visible entries of one row
// spread over many blocks (64 a block left 9 blocks for 522 entries).
constexpr int kIdxEntries = 16;

unsigned blocks_for(int64_t n, int per = kBlock) { return unsigned((n + per - 1) / per); }

// Rotates the last r dims of v [n] by +pos (sign 1) or -pos (sign -1), pairs interleaved; the angle
// in fp32 as the oracle forms it, cos/sin in double (the oracle evaluates them accurately).
// Called by every thread of a block; v in shared or global memory, synchronized by the caller.
__device__ void rope_block(float* v, int64_t n, int64_t pos, Rope rope, int sign) {
  float* x = v + (n - rope.r);
  for (int i = threadIdx.x; i < rope.r / 2; i += blockDim.x) {
    const float angle = float(pos) * rope.inv_freq[i];
    double sd, cd;
    sincos(double(angle), &sd, &cd);
    const float c = float(cd), s = float(sign) * float(sd);
    const float a = x[2 * i], b = x[2 * i + 1];
    x[2 * i] = a * c - b * s;
    x[2 * i + 1] = a * s + b * c;
  }
}

// grid (ceil(D / kBlock), T).
__global__ void embed_kernel(MatrixView e, const int32_t* tokens, int64_t n, float* x) {
  pdl::begin();
  const int64_t t = blockIdx.y, D = e.k;
  for (int64_t j = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; j < D; j += int64_t(gridDim.x) * blockDim.x) {
    const float v = weight_at(e, tokens[t], j);
    for (int64_t s = 0; s < n; ++s) x[(t * n + s) * D + j] = v;
  }
}

// y [width] <- x * inv (* w, when given) with inv = 1 / sqrt(mean(x^2) + eps), by the whole block
// (the sums in a fixed order for a given block size); y may be x. Ends with the block synchronized.
__device__ void rms_norm_block(const float* x, const float* w, int64_t width, float eps, float* y) {
  float ss = 0.f;
  for (int64_t j = threadIdx.x; j < width; j += blockDim.x) ss += x[j] * x[j];
  const float inv = 1.0f / sqrtf(block_sum(ss) / float(width) + eps);
  for (int64_t j = threadIdx.x; j < width; j += blockDim.x) y[j] = w ? x[j] * inv * w[j] : x[j] * inv;
  __syncthreads();
}

__global__ void rms_norm_kernel(const float* x, const float* w, int64_t width, int64_t ld, float eps, float* y) {
  pdl::begin();
  rms_norm_block(x + blockIdx.x * ld, w, width, eps, y + blockIdx.x * ld);
}

// One block per row: rms_norm_kernel's weighted norm (the same block size, so the same sums), then
// the rope of norm_rope_kernel, in one launch.
__global__ void rms_norm_rope_kernel(float* v, const float* w, const RowInfo* rows, int64_t width, float eps,
                                     Rope rope) {
  pdl::begin();
  float* vr = v + blockIdx.x * width;
  rms_norm_block(vr, w, width, eps, vr);
  rope_block(vr, width, rows[blockIdx.x].pos, rope, 1);
}

// One block per (row, head).
__global__ void norm_rope_kernel(float* v, const RowInfo* rows, int64_t heads, int64_t width, bool norm, float eps,
                                 Rope rope) {
  pdl::begin();
  const int64_t row = blockIdx.x / heads;
  float* vh = v + int64_t(blockIdx.x) * width;
  if (norm) rms_norm_block(vh, nullptr, width, eps, vh);
  rope_block(vh, width, rows[row].pos, rope, 1);
}

__global__ void add_ape_kernel(float* z, const float* ape, const RowInfo* rows, int64_t w, int64_t m) {
  pdl::begin();
  const int64_t row = blockIdx.x;
  const float* a = ape + (rows[row].pos % m) * w;
  for (int64_t j = threadIdx.x; j < w; j += blockDim.x) z[row * w + j] += a[j];
}

__global__ void scale_kernel(float* v, int64_t n, float f) {
  pdl::begin();
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) v[i] *= f;
}

// One block per (row, head): logits over window + extra keys in shared memory, softmax with the
// sink, weighted sum, de-rotation.
__global__ void attend_kernel(AttendArgs a) {
  pdl::begin();
  extern __shared__ float sh[];
  const int64_t row = blockIdx.x / a.heads, h = blockIdx.x % a.heads, d = a.d;
  const RowInfo ri = a.rows[row];
  float* qs = sh;              // [d]
  float* logit = sh + d;       // [max_keys]
  const float* q = a.q + (row * a.heads + h) * d;
  for (int64_t j = threadIdx.x; j < d; j += blockDim.x) qs[j] = q[j];
  __syncthreads();
  const RowKeys rk = row_keys(a, ri, row);
  const int64_t nk = rk.nk;
  auto key = [&](int64_t i) { return row_key(a, ri, row, rk, i); };
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, nw = blockDim.x / 32;
  for (int64_t i = warp; i < nk; i += nw) {
    const float* kp = key(i);
    float dot = 0.f;
    for (int64_t j = lane; j < d; j += 32) dot += qs[j] * kp[j];
    for (int o = 16; o > 0; o /= 2) dot += __shfl_xor_sync(0xffffffffu, dot, o);
    if (lane == 0) logit[i] = dot * a.scale;
  }
  __syncthreads();
  float mx = a.sink[h];
  for (int64_t i = threadIdx.x; i < nk; i += blockDim.x) mx = fmaxf(mx, logit[i]);
  mx = block_max(mx);
  float den = 0.f;
  for (int64_t i = threadIdx.x; i < nk; i += blockDim.x) den += (logit[i] = expf(logit[i] - mx));
  den = block_sum(den) + expf(a.sink[h] - mx);  // the sink takes mass, gives no value
  __syncthreads();
  const float inv = 1.0f / den;
  float* os = qs;  // reuse: q is no longer needed
  float* part = logit + a.max_keys;  // [warps, d]: each warp's sum over its share of the keys
  for (int64_t j0 = 0; j0 < d; j0 += 32 * 16) {
    float acc[16];
#pragma unroll
    for (int u = 0; u < 16; ++u) acc[u] = 0.f;
    for (int64_t i = warp; i < nk; i += nw) {
      const float p = logit[i];
      const float* kp = key(i) + j0;
#pragma unroll
      for (int u = 0; u < 16; ++u)
        if (j0 + lane + 32 * u < d) acc[u] += p * kp[lane + 32 * u];
    }
#pragma unroll
    for (int u = 0; u < 16; ++u)
      if (j0 + lane + 32 * u < d) part[warp * d + j0 + lane + 32 * u] = acc[u];
  }
  __syncthreads();
  for (int64_t j = threadIdx.x; j < d; j += blockDim.x) {
    float acc = 0.f;
    for (int w = 0; w < nw; ++w) acc += part[w * d + j];
    os[j] = acc * inv;
  }
  __syncthreads();
  rope_block(os, d, ri.pos, a.rope, -1);
  __syncthreads();
  float* o = a.o + (row * a.heads + h) * d;
  for (int64_t j = threadIdx.x; j < d; j += blockDim.x) o[j] = os[j];
}

__global__ void window_store_kernel(const float* kv, const RowInfo* rows, const SeqLayerState* seqs, int64_t d,
                                    int64_t ring) {
  pdl::begin();
  const int64_t row = blockIdx.x;
  store_window_row(kv + row * d, rows[row], seqs, d, ring);
}

struct CompressorView {
  float *entries, *pend_a, *pend_z, *prev_a, *prev_z;
};
__device__ __forceinline__ CompressorView compressor_of(const SeqLayerState& s, bool indexer) {
  if (indexer) return {s.ientries, s.ipend_a, s.ipend_z, s.iprev_a, s.iprev_z};
  return {s.entries, s.pend_a, s.pend_z, s.prev_a, s.prev_z};
}

// One block per completed window; threads over channels. Slot sources: rows of this forward for
// positions at or after the segment start, else the state as it was before this forward.
__global__ void compress_kernel(CompressArgs a, const CompressJob* jobs) {
  pdl::begin();
  extern __shared__ float entry[];  // [c]
  const CompressJob jb = jobs[blockIdx.x];
  if (jb.window < 0) return;  // a placeholder (a decode step in which this sequence completes no window)
  const CompressorView st = compressor_of(a.seqs[jb.seq], a.indexer);
  const int64_t m = a.m, c = a.c, pw = a.overlap ? 2 * c : c, w = jb.window;
  const int64_t b_off = a.overlap ? c : 0;
  const int64_t prev_window_start = (jb.pos0 / m) * m;  // the window pending when the segment began
  for (int64_t ch = threadIdx.x; ch < c; ch += blockDim.x) {
    // Current window w: B halves (or the whole projection when not overlapping).
    auto cur = [&](int64_t s, float& av, float& zv) {
      const int64_t p = w * m + s;
      if (p >= jb.pos0) {
        const int64_t r = jb.row0 + (p - jb.pos0);
        av = a.a[r * pw + b_off + ch], zv = a.z[r * pw + b_off + ch];
      } else {
        av = st.pend_a[s * pw + b_off + ch], zv = st.pend_z[s * pw + b_off + ch];
      }
    };
    // Previous window w-1: A halves.
    auto prv = [&](int64_t s, float& av, float& zv) {
      const int64_t p = (w - 1) * m + s;
      if (p >= jb.pos0) {
        const int64_t r = jb.row0 + (p - jb.pos0);
        av = a.a[r * pw + ch], zv = a.z[r * pw + ch];
      } else if (p >= prev_window_start) {
        av = st.pend_a[s * pw + ch], zv = st.pend_z[s * pw + ch];
      } else {
        av = st.prev_a[s * c + ch], zv = st.prev_z[s * c + ch];
      }
    };
    const bool has_prev = a.overlap && w >= 1;
    float mx = -INFINITY, av, zv;
    for (int64_t s = 0; s < m; ++s) cur(s, av, zv), mx = fmaxf(mx, zv);
    if (has_prev)
      for (int64_t s = 0; s < m; ++s) prv(s, av, zv), mx = fmaxf(mx, zv);
    float den = 0.f, num = 0.f;
    for (int64_t s = 0; s < m; ++s) {
      cur(s, av, zv);
      const float e = expf(zv - mx);
      den += e, num += e * av;
    }
    if (has_prev)
      for (int64_t s = 0; s < m; ++s) {
        prv(s, av, zv);
        const float e = expf(zv - mx);
        den += e, num += e * av;
      }
    entry[ch] = num / den;
  }
  __syncthreads();
  float ss = 0.f;
  for (int64_t ch = threadIdx.x; ch < c; ch += blockDim.x) ss += entry[ch] * entry[ch];
  const float inv = 1.0f / sqrtf(block_sum(ss) / float(c) + a.eps);
  for (int64_t ch = threadIdx.x; ch < c; ch += blockDim.x) entry[ch] = entry[ch] * inv * a.norm[ch];
  __syncthreads();
  rope_block(entry, c, w * m, a.rope, 1);
  __syncthreads();
  for (int64_t ch = threadIdx.x; ch < c; ch += blockDim.x) st.entries[w * c + ch] = entry[ch];
}

// grid (segments, m): prev halves of the segment's last completed window (reads the old pend).
__global__ void compress_prev_kernel(CompressArgs a, const RowInfo* segs) {
  pdl::begin();
  const RowInfo sg = segs[blockIdx.x];
  const CompressorView st = compressor_of(a.seqs[sg.seq], a.indexer);
  const int64_t m = a.m, c = a.c, pw = 2 * c, s = blockIdx.y;
  const int64_t end = sg.pos0 + sg.count;    // positions [pos0, end)
  const int64_t last = end / m - 1;          // last completed window
  if (last < 0 || (last + 1) * m - 1 < sg.pos0) return;  // none completed in this segment
  const int64_t p = last * m + s;
  for (int64_t ch = threadIdx.x; ch < c; ch += blockDim.x) {
    float av, zv;
    if (p >= sg.pos0) {
      const int64_t r = sg.row0 + (p - sg.pos0);
      av = a.a[r * pw + ch], zv = a.z[r * pw + ch];
    } else {
      av = st.pend_a[s * pw + ch], zv = st.pend_z[s * pw + ch];
    }
    st.prev_a[s * c + ch] = av, st.prev_z[s * c + ch] = zv;
  }
}

// grid (segments, m): pend slot s = the segment's latest row with position mod m == s.
__global__ void compress_pend_kernel(CompressArgs a, const RowInfo* segs) {
  pdl::begin();
  const RowInfo sg = segs[blockIdx.x];
  const CompressorView st = compressor_of(a.seqs[sg.seq], a.indexer);
  const int64_t m = a.m, pw = a.overlap ? 2 * a.c : a.c, s = blockIdx.y;
  const int64_t end = sg.pos0 + sg.count;
  // The latest position p < end with p mod m == s, if it lies in this segment.
  int64_t p = end - 1 - ((end - 1 - s) % m + m) % m;
  if (p < sg.pos0 || p < 0) return;
  const int64_t r = sg.row0 + (p - sg.pos0);
  for (int64_t j = threadIdx.x; j < pw; j += blockDim.x) {
    st.pend_a[s * pw + j] = a.a[r * pw + j];
    st.pend_z[s * pw + j] = a.z[r * pw + j];
  }
}

// The query's row stride for the float4 path: an odd number of float4s, so that the 8 lanes of a
// 128-bit shared read hit distinct banks.
__host__ __device__ constexpr int64_t indexer_qstride4(int64_t ci) { return ci % 8 == 0 ? ci + 4 : ci + 8; }

// grid (rows, entry blocks of kIdxEntries): scores[row, e] of the visible entries; the row's query in
// shared memory (rows padded against bank conflicts: an odd number of float4s on the float4 path,
// ci + 1 floats on the scalar one), lanes over heads. With ci % 4 == 0 and aligned keys a warp
// takes two entries at once and a lane its heads h and h + 32 together, with float4 loads: four independent chains where the scalar loop ran one (a load and an FMA a step).
// Each head's dot still sums j = 0, 1, ... and the heads add in the same order, so the scores are
// the scalar loop's to the bit.
__global__ void indexer_scores_kernel(const float* q, const float* g, const RowInfo* rows, const SeqLayerState* seqs,
                                      int64_t nh, int64_t ci, int64_t m, int64_t topk, int64_t ld, float* scores) {
  pdl::begin();
  extern __shared__ __align__(16) float qsh[];  // float4 reads of the query rows
  const int64_t row = blockIdx.x;
  const RowInfo ri = rows[row];
  const int64_t visible = (int64_t(ri.pos) + 1) / m, e0 = int64_t(blockIdx.y) * kIdxEntries;
  if (e0 >= visible || visible <= topk) return;  // a row with at most top-k entries takes them all, unscored
  const float* keys = seqs[ri.seq].ientries;
  const bool vec = ci % 4 == 0 && reinterpret_cast<uintptr_t>(keys) % 16 == 0;
  const int64_t qstride = vec ? indexer_qstride4(ci) : ci + 1;  // the scalar reads: ci + 1, no conflicts
  float* qs = qsh;                // [nh, qstride]
  float* gs = qs + nh * qstride;  // [nh]
  const float* qr = q + row * nh * ci;
  for (RowColWalk wk(threadIdx.x, blockDim.x, int(ci)); wk.row < nh; wk.next())
    qs[wk.row * qstride + wk.col] = qr[int64_t(wk.row) * ci + wk.col];
  for (int64_t i = threadIdx.x; i < nh; i += blockDim.x) gs[i] = g[row * nh + i];
  __syncthreads();
  const float kscale = 1.0f / sqrtf(float(ci));
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, nw = blockDim.x / 32;
  const int64_t e1 = min(visible, e0 + kIdxEntries);
  if (vec) {
    const int64_t n4 = ci / 4;
    for (int64_t ea = e0 + warp; ea < e1; ea += 2 * nw) {
      const int64_t eb = ea + nw;  // the warp's second entry (ea's again past the block's entries)
      const bool two = eb < e1;
      const float4* ka = reinterpret_cast<const float4*>(keys + ea * ci);
      const float4* kb = reinterpret_cast<const float4*>(keys + (two ? eb : ea) * ci);
      float sa = 0.f, sb = 0.f;
      for (int64_t h0 = lane; h0 < nh; h0 += 64) {
        const int64_t h1 = h0 + 32;
        const bool has1 = h1 < nh;
        const float4* q0 = reinterpret_cast<const float4*>(qs + h0 * qstride);
        const float4* q1 = reinterpret_cast<const float4*>(qs + (has1 ? h1 : h0) * qstride);
        float a0 = 0.f, a1 = 0.f, b0 = 0.f, b1 = 0.f;  // (entry a, b) x (head h0, h1)
#pragma unroll 4
        for (int64_t j = 0; j < n4; ++j) {
          const float4 x = __ldg(ka + j), y = __ldg(kb + j), u = q0[j], w = q1[j];
          a0 += u.x * x.x, a0 += u.y * x.y, a0 += u.z * x.z, a0 += u.w * x.w;
          a1 += w.x * x.x, a1 += w.y * x.y, a1 += w.z * x.z, a1 += w.w * x.w;
          b0 += u.x * y.x, b0 += u.y * y.y, b0 += u.z * y.z, b0 += u.w * y.w;
          b1 += w.x * y.x, b1 += w.y * y.y, b1 += w.z * y.z, b1 += w.w * y.w;
        }
        sa += gs[h0] * fmaxf(a0, 0.f), sb += gs[h0] * fmaxf(b0, 0.f);
        if (has1) sa += gs[h1] * fmaxf(a1, 0.f), sb += gs[h1] * fmaxf(b1, 0.f);
      }
      for (int o = 16; o > 0; o /= 2) {
        sa += __shfl_xor_sync(0xffffffffu, sa, o);
        sb += __shfl_xor_sync(0xffffffffu, sb, o);
      }
      if (lane == 0) {
        scores[row * ld + ea] = sa * kscale;
        if (two) scores[row * ld + eb] = sb * kscale;
      }
    }
    return;
  }
  for (int64_t e = e0 + warp; e < e1; e += nw) {
    const float* kp = keys + e * ci;
    float sc = 0.f;
    for (int64_t h = lane; h < nh; h += 32) {
      const float* qh = qs + h * qstride;
      float dot = 0.f;
      for (int64_t j = 0; j < ci; ++j) dot += qh[j] * __ldg(kp + j);
      sc += gs[h] * fmaxf(dot, 0.f);
    }
    for (int o = 16; o > 0; o /= 2) sc += __shfl_xor_sync(0xffffffffu, sc, o);
    if (lane == 0) scores[row * ld + e] = sc * kscale;
  }
}

// One block per row: the top-k of the row's visible scores in HigherScore's order (higher first,
// ties to the lower index), written in ascending index order. A radix select over the scores'
// orderable keys, a byte a pass from the top, finds the k-th key T and how many entries equal to T
// are taken; then a block scan writes every entry above T and the first of those equal to T. The
// keys sit in shared memory when the row has at most `smem_keys` entries, else each pass reads the
// scores again (so the context is not limited by shared memory).
constexpr int kTopkThreads = 512;
__global__ void __launch_bounds__(kTopkThreads) indexer_topk_kernel(const float* scores, int64_t ld,
                                                                   const RowInfo* rows, int64_t m, int64_t topk,
                                                                   int64_t smem_keys, int32_t* chosen,
                                                                   int32_t* nchosen) {
  pdl::begin();
  extern __shared__ uint32_t kkeys[];  // [smem_keys]
  __shared__ int hist[256];
  __shared__ int red[2 * kTopkThreads / 32];
  __shared__ uint32_t s_prefix;
  __shared__ int s_remaining;
  const int64_t row = blockIdx.x;
  const RowInfo ri = rows[row];
  const int64_t n = (int64_t(ri.pos) + 1) / m;  // visible entries
  const int tid = threadIdx.x, lane = tid % 32, nt = blockDim.x;
  int32_t* out = chosen + row * topk;
  if (n <= topk || topk <= 0) {  // all of them (none for a top-k of 0)
    const int64_t keep = topk <= 0 ? 0 : n;
    for (int64_t i = tid; i < keep; i += nt) out[i] = int32_t(i);
    if (tid == 0) nchosen[row] = int32_t(keep);
    return;
  }
  const float* sr = scores + row * ld;
  const bool in_smem = n <= smem_keys;
  if (in_smem) {
    for (int64_t e = tid; e < n; e += nt) kkeys[e] = rank_bits(sr[e]);
    __syncthreads();
  }
  auto key = [&](int64_t e) { return in_smem ? kkeys[e] : rank_bits(__ldg(sr + e)); };
  uint32_t prefix = 0, mask = 0;
  int remaining = int(topk);  // entries still to take among those matching prefix under mask
  for (int shift = 24; shift >= 0; shift -= 8) {
    for (int i = tid; i < 256; i += nt) hist[i] = 0;
    __syncthreads();
    for (int64_t e0 = 0; e0 < n; e0 += nt) {  // the same trip count for every thread (warp-wide match)
      const int64_t e = e0 + tid;
      int dgt = -1;
      if (e < n) {
        const uint32_t k = key(e);
        if ((k & mask) == prefix) dgt = int((k >> shift) & 255u);
      }
      const unsigned peers = __match_any_sync(0xffffffffu, dgt);
      if (dgt >= 0 && lane == __ffs(peers) - 1) atomicAdd(&hist[dgt], __popc(peers));
    }
    __syncthreads();
    if (tid < 32) {  // lane L holds digits 255 - 8L down to 248 - 8L
      int c[8], sum = 0;
#pragma unroll
      for (int j = 0; j < 8; ++j) c[j] = hist[255 - 8 * lane - j], sum += c[j];
      int incl = sum;
      for (int o = 1; o < 32; o *= 2) {
        const int u = __shfl_up_sync(0xffffffffu, incl, o);
        if (lane >= o) incl += u;
      }
      int cum = incl - sum;
      if (cum < remaining && remaining <= incl) {
#pragma unroll
        for (int j = 0; j < 8; ++j) {
          if (cum + c[j] >= remaining) {
            s_prefix = prefix | (uint32_t(255 - 8 * lane - j) << shift);
            s_remaining = remaining - cum;
            break;
          }
          cum += c[j];
        }
      }
    }
    __syncthreads();
    prefix = s_prefix, remaining = s_remaining, mask |= 0xFFu << shift;
  }
  // prefix is the k-th key; take every key above it and the first `remaining` equal to it.
  const int64_t per = (n + nt - 1) / nt, c0 = min(n, tid * per), c1 = min(n, c0 + per);
  int gt = 0, eq = 0;
  for (int64_t e = c0; e < c1; ++e) {
    const uint32_t k = key(e);
    gt += k > prefix, eq += k == prefix;
  }
  block_exclusive_sum2(gt, eq, red);
  for (int64_t e = c0; e < c1; ++e) {
    const uint32_t k = key(e);
    if (k > prefix || (k == prefix && eq < remaining)) out[gt + min(eq, remaining)] = int32_t(e);
    gt += k > prefix, eq += k == prefix;
  }
  if (tid == 0) nchosen[row] = int32_t(topk);
}

// One block per token: scores in shared memory, then the k best of score + bias (block_top_k, the
// CPU routers' order) or the token's hash row.
__global__ void route_kernel(const float* logits, const int32_t* tokens, const int32_t* hash_table, const float* bias,
                             int64_t E, int64_t k, float scaling, int32_t* experts, float* weights) {
  pdl::begin();
  extern __shared__ float rs[];  // [E] scores, [E] biased scores
  __shared__ int32_t picked[64];
  const int64_t t = blockIdx.x;
  const float* l = logits + t * E;
  float* sc = rs;
  float* biased = rs + E;
  for (int64_t e = threadIdx.x; e < E; e += blockDim.x) {
    const float x = l[e];
    sc[e] = sqrtf(x > 20.f ? x : log1pf(expf(x)));
    biased[e] = sc[e] + (bias ? bias[e] : 0.f);
  }
  __syncthreads();
  if (hash_table) {
    if (threadIdx.x == 0)
      for (int64_t j = 0; j < k; ++j) picked[j] = hash_table[int64_t(tokens[t]) * k + j];
  } else {
    block_top_k(biased, E, k, [](int64_t) { return true; }, picked);
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    float sum = 0.f;
    for (int64_t j = 0; j < k; ++j) sum += sc[picked[j]];
    for (int64_t j = 0; j < k; ++j) {
      experts[t * k + j] = picked[j];
      weights[t * k + j] = sc[picked[j]] / (sum + 1e-20f) * scaling;
    }
  }
}

__global__ void swiglu_kernel(const float* g, const float* u, int64_t n, float limit, float* act) {
  pdl::begin();
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  float gi = g[i], ui = u[i];
  if (limit > 0) gi = fminf(gi, limit), ui = fminf(fmaxf(ui, -limit), limit);
  act[i] = gi / (1.0f + expf(-gi)) * ui;
}

// grid (ceil(D / kBlock), T): a column per thread (a decode row spreads over D / 256 blocks).
__global__ void combine_kernel(const float* y, const float* weights, int64_t k, int64_t D, float* out) {
  pdl::begin();
  const int64_t t = blockIdx.y;
  for (int64_t j = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; j < D; j += int64_t(gridDim.x) * blockDim.x) {
    float acc = out[t * D + j];
    for (int64_t s = 0; s < k; ++s) acc += weights[t * k + s] * y[(t * k + s) * D + j];
    out[t * D + j] = acc;
  }
}

// hi = bf16(v), lo = bf16(v - hi): v to about 16 significant bits as the sum of two BF16 numbers.
__device__ __forceinline__ void split_bf16(float v, __nv_bfloat16* hi, __nv_bfloat16* lo, int64_t i) {
  const __nv_bfloat16 h = __float2bfloat16_rn(v);
  hi[i] = h;
  if (lo) lo[i] = __float2bfloat16_rn(v - __bfloat162float(h));
}

__global__ void to_bf16_kernel(const float* x, int64_t cols, int64_t ldx, __nv_bfloat16* out, __nv_bfloat16* lo) {
  pdl::begin();
  const int64_t r = blockIdx.x;
  for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) split_bf16(x[r * ldx + j], out, lo, r * cols + j);
}

// The same, 4 columns a thread (x rows 16-byte aligned, cols a multiple of 4, lo given).
__global__ void to_bf16_vec_kernel(const float* __restrict__ x, int64_t cols, int64_t ldx, __nv_bfloat16* __restrict__ out,
                                   __nv_bfloat16* __restrict__ lo) {
  pdl::begin();
  const int64_t r = blockIdx.x;
  for (int64_t j = 4 * int64_t(threadIdx.x); j < cols; j += 4 * int64_t(blockDim.x)) {
    const float4 v = *reinterpret_cast<const float4*>(x + r * ldx + j);
    const __nv_bfloat162 h0 = __floats2bfloat162_rn(v.x, v.y), h1 = __floats2bfloat162_rn(v.z, v.w);
    const __nv_bfloat162 l0 = __floats2bfloat162_rn(v.x - __low2float(h0), v.y - __high2float(h0));
    const __nv_bfloat162 l1 = __floats2bfloat162_rn(v.z - __low2float(h1), v.w - __high2float(h1));
    __nv_bfloat162* o = reinterpret_cast<__nv_bfloat162*>(out + r * cols + j);
    __nv_bfloat162* q = reinterpret_cast<__nv_bfloat162*>(lo + r * cols + j);
    o[0] = h0, o[1] = h1, q[0] = l0, q[1] = l1;
  }
}

// grid (rows of all matrices): one row per block.
__global__ void dequant_kernel(const MatrixView* mats, const int32_t* which, MatrixView one, int64_t row0, int64_t n,
                               int64_t k, __nv_bfloat16* out) {
  pdl::begin();
  const int64_t i = blockIdx.x / n, r = blockIdx.x % n;
  const MatrixView& w = mats ? mats[which[i]] : one;
  __nv_bfloat16* o = out + (i * n + r) * k;
  for (int64_t j = threadIdx.x; j < k; j += blockDim.x) o[j] = __float2bfloat16_rn(weight_at(w, row0 + r, j));
}

// The same, 8 values per thread from one aligned load (FP4 4 bytes, FP8 8 bytes, BF16 16 bytes) to
// one 16-byte store. K a multiple of 32. grid (rows of all matrices, ceil(K / 2048)).
template <int Kind>
__global__ void dequant_vec_kernel(const MatrixView* mats, const int32_t* which, MatrixView one, int64_t row0, int64_t n,
                                   int64_t k, __nv_bfloat16* out) {
  pdl::begin();
  const int64_t i = blockIdx.x / n, r = blockIdx.x % n, j0 = (int64_t(blockIdx.y) * blockDim.x + threadIdx.x) * 8;
  if (j0 >= k) return;
  const MatrixView& w = mats ? mats[which[i]] : one;
  const int64_t row = row0 + r;
  if constexpr (Kind == MatrixView::Bf16) {  // a copy
    *reinterpret_cast<uint4*>(out + (i * n + r) * k + j0) = *reinterpret_cast<const uint4*>(w.data + (row * k + j0) * 2);
    return;
  }
  float v[8];
  if constexpr (Kind == MatrixView::Fp4Group) {
    const uint32_t q = *reinterpret_cast<const uint32_t*>(w.data + row * (k / 2) + j0 / 2);
    const float s = e8m0(w.scale[row * ((k + 31) / 32) + j0 / 32]);
#pragma unroll
    for (int t = 0; t < 8; ++t) v[t] = e2m1(q >> (4 * t)) * s;
  } else if constexpr (Kind == MatrixView::Fp8Block) {
    const uint2 q = *reinterpret_cast<const uint2*>(w.data + row * k + j0);
    const int64_t idx = (row / w.bm) * ((k + w.bn - 1) / w.bn) + j0 / w.bn;
    const float s = w.scale_is_f32 ? reinterpret_cast<const float*>(w.scale)[idx] : e8m0(w.scale[idx]);
    const uint32_t words[2] = {q.x, q.y};
#pragma unroll
    for (int t = 0; t < 8; ++t) v[t] = e4m3(uint8_t(words[t / 4] >> (8 * (t % 4)))) * s;
  }
  __align__(16) __nv_bfloat16 b[8];
#pragma unroll
  for (int t = 0; t < 8; ++t) b[t] = __float2bfloat16_rn(v[t]);
  *reinterpret_cast<uint4*>(out + (i * n + r) * k + j0) = *reinterpret_cast<const uint4*>(b);
}

// One block: counts by atomics, a serial scan, then each slot takes the next row of its expert by an
// atomic (a placement per expert over all slots took 0.4 ms at 12288 slots).
__global__ void group_slots_kernel(const int32_t* experts, int64_t slots, int64_t E, int32_t* counts, int32_t* offsets,
                                   int32_t* pos_of) {
  pdl::begin();
  for (int64_t e = threadIdx.x; e < E; e += blockDim.x) counts[e] = 0;
  __syncthreads();
  for (int64_t i = threadIdx.x; i < slots; i += blockDim.x) atomicAdd(&counts[experts[i]], 1);
  __syncthreads();
  if (threadIdx.x == 0) {
    offsets[0] = 0;
    for (int64_t e = 0; e < E; ++e) offsets[e + 1] = offsets[e] + counts[e];
  }
  __syncthreads();
  for (int64_t e = threadIdx.x; e < E; e += blockDim.x) counts[e] = offsets[e];  // cursors
  __syncthreads();
  for (int64_t i = threadIdx.x; i < slots; i += blockDim.x) pos_of[i] = atomicAdd(&counts[experts[i]], 1);
  __syncthreads();
  for (int64_t e = threadIdx.x; e < E; e += blockDim.x) counts[e] -= offsets[e];  // the counts again
}

__global__ void combine_grouped_kernel(const float* yg, const int32_t* pos_of, const float* weights, int64_t k,
                                       int64_t D, float* out) {
  pdl::begin();
  const int64_t t = blockIdx.y;
  for (int64_t j = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; j < D; j += int64_t(gridDim.x) * blockDim.x) {
    float acc = out[t * D + j];
    for (int64_t s = 0; s < k; ++s) acc += weights[t * k + s] * yg[int64_t(pos_of[t * k + s]) * D + j];
    out[t * D + j] = acc;
  }
}

// One block (see group_experts in kernels.hpp). Shared: the slots' experts, per expert its count
// (then its first grouped row) and its first job.
__global__ void group_experts_kernel(const int32_t* __restrict__ experts, int slots, int E, int x_div,
                                     int32_t* __restrict__ pos_of, int4* __restrict__ jobs) {
  pdl::begin();
  extern __shared__ int32_t gsh[];
  int32_t* es = gsh;           // [slots]
  int32_t* first = es + slots;  // [E] count, then first grouped row
  int32_t* job0 = first + E;   // [E]
  __shared__ int32_t njobs;
  const int tid = threadIdx.x, nt = blockDim.x;
  for (int e = tid; e < E; e += nt) first[e] = 0;
  for (int i = tid; i < slots; i += nt) es[i] = experts[i];
  __syncthreads();
  for (int i = tid; i < slots; i += nt) atomicAdd(&first[es[i]], 1);
  __syncthreads();
  if (tid < 32) {  // exclusive sums over the experts of the counts and of the jobs, a run of experts a lane
    const int per = (E + 31) / 32, e0 = min(E, tid * per), e1 = min(E, e0 + per);
    int sc = 0, sj = 0;
    for (int e = e0; e < e1; ++e) sc += first[e], sj += (first[e] + 1) / 2;
    int ic = sc, ij = sj;
    warp_inclusive_sum2(ic, ij);
    int rc = ic - sc, rj = ij - sj;
    for (int e = e0; e < e1; ++e) {
      const int c = first[e];
      first[e] = rc, job0[e] = rj;
      rc += c, rj += (c + 1) / 2;
    }
    if (tid == 31) njobs = ij;
  }
  __syncthreads();
  for (int i = tid; i < slots; i += nt) {
    const int e = es[i];
    int r = 0;  // earlier slots of the same expert (stable order)
    for (int j = 0; j < i; ++j) r += es[j] == e;
    pos_of[i] = first[e] + r;
    if (r % 2 == 0) {  // the first slot of a job: its partner is the next slot of e, if any
      int partner = -1;
      for (int j = i + 1; j < slots && partner < 0; ++j)
        if (es[j] == e) partner = j;
      jobs[job0[e] + r / 2] = make_int4(e, first[e] + r, i / x_div, partner >= 0 ? partner / x_div : -1);
    }
  }
  for (int q = njobs + tid; q < slots; q += nt) jobs[q] = make_int4(-1, 0, 0, -1);
}

// parts [3, rows, cols]: hi = bf16(v), mid = bf16(v - hi), lo = bf16(v - hi - mid) (each difference
// exact in fp32; BF16 has fp32's exponent range, so hi + mid + lo is v to 24 bits).
__global__ void split_bf16x3_kernel(const float* __restrict__ x, int64_t n, __nv_bfloat16* __restrict__ parts) {
  pdl::begin();
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const float v = x[i];
    const __nv_bfloat16 h = __float2bfloat16_rn(v);
    const float r1 = v - __bfloat162float(h);
    const __nv_bfloat16 m = __float2bfloat16_rn(r1);
    parts[i] = h, parts[n + i] = m, parts[2 * n + i] = __float2bfloat16_rn(r1 - __bfloat162float(m));
  }
}

__global__ void sum_parts3_kernel(const float* __restrict__ c, int64_t n, float* __restrict__ y) {
  pdl::begin();
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    y[i] = (c[2 * n + i] + c[n + i]) + c[i];  // smallest parts first
}

// (value, index) a over b: the larger value, ties to the lower index; NaN never wins.
__device__ __forceinline__ void better(float& v, int32_t& i, float v2, int32_t i2) {
  if (v2 > v || (v2 == v && i2 < i)) v = v2, i = i2;
}
constexpr int kArgmaxChunk = 4096;  // columns a block of the first pass takes

// Pass 1, grid (chunks, rows): each block's best of its columns; pass 2, a block per row: the best
// of the chunks. Indices start at INT32_MAX with value -inf, so an all-NaN row gives 0.
__global__ void argmax_part_kernel(const float* __restrict__ x, int64_t cols, float* __restrict__ pv,
                                   int32_t* __restrict__ pi) {
  pdl::begin();
  __shared__ float sv[32];
  __shared__ int32_t si[32];
  const int64_t r = blockIdx.y, c0 = int64_t(blockIdx.x) * kArgmaxChunk, c1 = min(cols, c0 + kArgmaxChunk);
  float v = __int_as_float(int(0xff800000u));  // -inf
  int32_t i = INT32_MAX;
  for (int64_t c = c0 + threadIdx.x; c < c1; c += blockDim.x) better(v, i, x[r * cols + c], int32_t(c));
  for (int o = 16; o > 0; o /= 2) better(v, i, __shfl_xor_sync(0xffffffffu, v, o), __shfl_xor_sync(0xffffffffu, i, o));
  if (threadIdx.x % 32 == 0) sv[threadIdx.x / 32] = v, si[threadIdx.x / 32] = i;
  __syncthreads();
  if (threadIdx.x == 0) {
    for (int w = 1; w < int(blockDim.x / 32); ++w) better(v, i, sv[w], si[w]);
    pv[r * gridDim.x + blockIdx.x] = v, pi[r * gridDim.x + blockIdx.x] = i;
  }
}

__global__ void argmax_final_kernel(const float* __restrict__ pv, const int32_t* __restrict__ pi, int chunks,
                                    int32_t* __restrict__ ids) {
  pdl::begin();
  const int64_t r = blockIdx.x;
  float v = __int_as_float(int(0xff800000u));  // -inf
  int32_t i = INT32_MAX;
  for (int c = threadIdx.x; c < chunks; c += 32) better(v, i, pv[r * chunks + c], pi[r * chunks + c]);
  for (int o = 16; o > 0; o /= 2) better(v, i, __shfl_xor_sync(0xffffffffu, v, o), __shfl_xor_sync(0xffffffffu, i, o));
  if (threadIdx.x == 0) ids[r] = i == INT32_MAX ? 0 : i;
}

}  // namespace

void embed(const MatrixView& e, const int32_t* tokens, int64_t t, int64_t n, float* x, void* s) {
  if (t == 0) return;
  pdl::launch(embed_kernel, dim3(blocks_for(e.k), unsigned(t)), kBlock, 0, st(s), e, tokens, n, x);
  launched("embed");
}

void rms_norm_rows(const float* x, const float* w, int64_t t, int64_t width, int64_t ld, float eps, float* y, void* s) {
  if (t == 0) return;
  pdl::launch(rms_norm_kernel, unsigned(t), kBlock, 0, st(s), x, w, width, ld, eps, y);
  launched("rms_norm");
}

void norm_rope_heads(float* v, const RowInfo* rows, int64_t t, int64_t heads, int64_t width, bool norm, float eps,
                     Rope rope, void* s) {
  if (t * heads == 0) return;
  pdl::launch(norm_rope_kernel, unsigned(t * heads), 128, 0, st(s), v, rows, heads, width, norm, eps, rope);
  launched("norm_rope");
}

void rms_norm_rope_rows(float* v, const float* w, const RowInfo* rows, int64_t t, int64_t width, float eps, Rope rope,
                        void* s) {
  if (t == 0) return;
  pdl::launch(rms_norm_rope_kernel, unsigned(t), kBlock, 0, st(s), v, w, rows, width, eps, rope);
  launched("rms_norm_rope");
}

void add_ape(float* z, const float* ape, const RowInfo* rows, int64_t t, int64_t w, int64_t m, void* s) {
  pdl::launch(add_ape_kernel, unsigned(t), kBlock, 0, st(s), z, ape, rows, w, m);
  launched("add_ape");
}

void scale(float* v, int64_t n, float f, void* s) {
  if (n == 0) return;
  pdl::launch(scale_kernel, blocks_for(n), kBlock, 0, st(s), v, n, f);
  launched("scale");
}

void attend(const AttendArgs& a, void* s) {
  if (a.t == 0) return;
  const size_t bytes = size_t(a.d + a.max_keys + 8 * a.d) * sizeof(float);  // q/o, logits, 8 warps' partial sums
  static std::atomic<size_t> set{0};
  raise_dynamic_smem(attend_kernel, bytes, set, "attention shared memory (too many keys for one block)");
  pdl::launch(attend_kernel, unsigned(a.t * a.heads), 256, bytes, st(s), a);
  launched("attend");
}

void window_store(const float* kv, const RowInfo* rows, const SeqLayerState* seqs, int64_t t, int64_t d,
                  int64_t window, void* s) {
  if (window - 1 <= 0 || t == 0) return;
  pdl::launch(window_store_kernel, unsigned(t), 128, 0, st(s), kv, rows, seqs, d, window - 1);
  launched("window_store");
}

void compress_entries(const CompressArgs& a, const CompressJob* jobs, int64_t njobs, void* s) {
  if (njobs == 0) return;
  pdl::launch(compress_kernel, unsigned(njobs), kBlock, size_t(a.c) * sizeof(float), st(s), a, jobs);
  launched("compress");
}

void compress_update_state(const CompressArgs& a, const RowInfo* segs, int64_t nsegs, void* s) {
  if (nsegs == 0) return;
  const dim3 grid(unsigned(nsegs), unsigned(a.m));
  if (a.overlap) pdl::launch(compress_prev_kernel, grid, 128, 0, st(s), a, segs);
  launched("compress_prev");
  pdl::launch(compress_pend_kernel, grid, 128, 0, st(s), a, segs);
  launched("compress_pend");
}

void indexer_topk(const float* q, const float* g, const RowInfo* rows, const SeqLayerState* seqs, int64_t t,
                  int64_t nh, int64_t ci, int64_t m, int64_t topk, int64_t max_visible, float* scores, int32_t* chosen,
                  int32_t* nchosen, void* s) {
  if (t == 0) return;
  if (max_visible > 0) {
    const size_t qbytes = size_t(indexer_scores_smem(nh, ci));
    static std::atomic<size_t> set{0};
    raise_dynamic_smem(indexer_scores_kernel, qbytes, set, "indexer shared memory");
    const dim3 grid(unsigned(t), unsigned((max_visible + kIdxEntries - 1) / kIdxEntries));
    pdl::launch(indexer_scores_kernel, grid, 256, qbytes, st(s), q, g, rows, seqs, nh, ci, m, topk, max_visible, scores);
    launched("indexer scores");
  }
  indexer_select(scores, max_visible, rows, t, m, topk, chosen, nchosen, s);
}

int64_t indexer_scores_smem(int64_t nh, int64_t ci) {
  return (nh * (ci % 4 == 0 ? indexer_qstride4(ci) : ci + 1) + nh) * int64_t(sizeof(float));
}

void indexer_select(const float* scores, int64_t ld, const RowInfo* rows, int64_t t, int64_t m, int64_t topk,
                    int32_t* chosen, int32_t* nchosen, void* s) {
  if (t == 0) return;
  // 44 KB of keys (under the 48 KB without opt-in); longer rows read the scores each pass. No row
  // has more than ld visible entries.
  constexpr int64_t kSmemKeys = 11264;
  const int64_t smem_keys = std::min(ld, kSmemKeys);
  pdl::launch(indexer_topk_kernel, unsigned(t), kTopkThreads, size_t(smem_keys) * sizeof(uint32_t), st(s), scores, ld,
              rows, m, topk, smem_keys, chosen, nchosen);
  launched("indexer top-k");
}

void route(const float* logits, const int32_t* tokens, const int32_t* hash_table, const float* bias, int64_t t,
           int64_t E, int64_t k, float scaling, int32_t* experts, float* weights, void* s) {
  if (k > 64) throw Error("cuda: more than 64 experts per token");
  pdl::launch(route_kernel, unsigned(t), 256, size_t(2 * E) * sizeof(float), st(s), logits, tokens, hash_table, bias, E, k,
                                                                              scaling, experts, weights);
  launched("route");
}

void swiglu(const float* g, const float* u, int64_t n, float limit, float* act, void* s) {
  if (n == 0) return;
  pdl::launch(swiglu_kernel, blocks_for(n), kBlock, 0, st(s), g, u, n, limit, act);
  launched("swiglu");
}

void combine(const float* y, const float* weights, int64_t t, int64_t k, int64_t D, float* out, void* s) {
  if (t == 0) return;
  pdl::launch(combine_kernel, dim3(blocks_for(D), unsigned(t)), kBlock, 0, st(s), y, weights, k, D, out);
  launched("combine");
}

void to_bf16(const float* x, int64_t rows, int64_t cols, int64_t ldx, uint16_t* out, uint16_t* lo, void* s) {
  if (rows == 0) return;
  auto* o = reinterpret_cast<__nv_bfloat16*>(out);
  auto* l = reinterpret_cast<__nv_bfloat16*>(lo);
  if (lo && cols % 4 == 0 && ldx % 4 == 0 && reinterpret_cast<uintptr_t>(x) % 16 == 0 &&
      reinterpret_cast<uintptr_t>(out) % 8 == 0 && reinterpret_cast<uintptr_t>(lo) % 8 == 0)
    pdl::launch(to_bf16_vec_kernel, unsigned(rows), kBlock, 0, st(s), x, cols, ldx, o, l);
  else
    pdl::launch(to_bf16_kernel, unsigned(rows), kBlock, 0, st(s), x, cols, ldx, o, l);
  launched("to_bf16");
}

void dequant_bf16(const MatrixView* mats, const int32_t* which, int64_t count, const MatrixView& one, int64_t row0,
                  int64_t n, int64_t k, uint16_t* out, void* s, int kind, int64_t bn) {
  if (count * n == 0) return;
  auto* o = reinterpret_cast<__nv_bfloat16*>(out);
  if (k % 32 == 0 && kind >= MatrixView::Bf16 && (kind != MatrixView::Fp8Block || bn % 8 == 0)) {
    const dim3 grid(unsigned(count * n), unsigned((k / 8 + 255) / 256));
    if (kind == MatrixView::Fp4Group) pdl::launch(dequant_vec_kernel<MatrixView::Fp4Group>, grid, 256, 0, st(s), mats, which, one, row0, n, k, o);
    else if (kind == MatrixView::Fp8Block) pdl::launch(dequant_vec_kernel<MatrixView::Fp8Block>, grid, 256, 0, st(s), mats, which, one, row0, n, k, o);
    else pdl::launch(dequant_vec_kernel<MatrixView::Bf16>, grid, 256, 0, st(s), mats, which, one, row0, n, k, o);
    launched("dequant_bf16");
    return;
  }
  pdl::launch(dequant_kernel, unsigned(count * n), kBlock, 0, st(s), mats, which, one, row0, n, k,
                                                             reinterpret_cast<__nv_bfloat16*>(out));
  launched("dequant_bf16");
}

void group_slots(const int32_t* experts, int64_t slots, int64_t E, int32_t* counts, int32_t* offsets,
                 int32_t* pos_of, void* s) {
  pdl::launch(group_slots_kernel, 1, 1024, 0, st(s), experts, slots, E, counts, offsets, pos_of);
  launched("group_slots");
}

void combine_grouped(const float* yg, const int32_t* pos_of, const float* weights, int64_t t, int64_t k, int64_t D,
                     float* out, void* s) {
  if (t == 0) return;
  pdl::launch(combine_grouped_kernel, dim3(blocks_for(D), unsigned(t)), kBlock, 0, st(s), yg, pos_of, weights, k, D, out);
  launched("combine_grouped");
}

bool group_experts_ok(int64_t slots, int64_t E) {
  return slots > 0 && E > 0 && (slots + 2 * E) * 4 + 4 <= 48 * 1024;  // + njobs, its static shared int
}

void group_experts(const int32_t* experts, int64_t slots, int64_t E, int64_t x_div, int32_t* pos_of, int32_t* jobs,
                   void* s) {
  if (!group_experts_ok(slots, E)) throw Error("cuda group_experts: too many slots or experts for one block");
  pdl::launch(group_experts_kernel, 1, 256, size_t(slots + 2 * E) * 4, st(s), experts, int(slots), int(E), int(x_div), pos_of,
                                                                     reinterpret_cast<int4*>(jobs));
  launched("group_experts");
}

void split_bf16x3(const float* x, int64_t rows, int64_t cols, uint16_t* parts, void* s) {
  const int64_t n = rows * cols;
  if (n == 0) return;
  pdl::launch(split_bf16x3_kernel, unsigned(std::min<int64_t>((n + kBlock - 1) / kBlock, 4096)), kBlock, 0, st(s), 
      x, n, reinterpret_cast<__nv_bfloat16*>(parts));
  launched("split_bf16x3");
}

void sum_parts3(const float* c, int64_t rows, int64_t cols, float* y, void* s) {
  const int64_t n = rows * cols;
  if (n == 0) return;
  pdl::launch(sum_parts3_kernel, unsigned(std::min<int64_t>((n + kBlock - 1) / kBlock, 8192)), kBlock, 0, st(s), c, n, y);
  launched("sum_parts3");
}

int64_t argmax_chunks(int64_t cols) { return (cols + kArgmaxChunk - 1) / kArgmaxChunk; }

void argmax_rows(const float* x, int64_t rows, int64_t cols, float* part_v, int32_t* part_i, int32_t* ids, void* s) {
  if (rows == 0) return;
  if (cols >= INT32_MAX) throw Error("cuda argmax: too many columns");
  const int64_t chunks = std::max<int64_t>(1, argmax_chunks(cols));
  pdl::launch(argmax_part_kernel, dim3(unsigned(chunks), unsigned(rows)), 512, 0, st(s), x, cols, part_v, part_i);
  pdl::launch(argmax_final_kernel, unsigned(rows), 32, 0, st(s), part_v, part_i, int(chunks), ids);
  launched("argmax");
}

}  // namespace dsv4::cuda::k
