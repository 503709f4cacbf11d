// Kernels that replace chains of small launches in a decode step (few rows, where every launch is
// latency, not bandwidth): the mHC mixes in two launches per residual update, and attention split
// over the keys with a group of heads per block. Results differ from the unfused kernels only in
// summation order; each kernel sums in a fixed order (graph replays stay bit-identical).
#include <cfloat>
#include <cstdint>

#include "decode.cuh"
#include "grid_walk.cuh"
#include "pdl.cuh"
#include "row_keys.cuh"
#include "kernels.hpp"

namespace dsv4::cuda::k {
namespace {

constexpr int kHcCols = 32;       // columns of D a hc_post_mix block covers
constexpr int kHcThreads = 256;   // threads of a hc_post_mix block
constexpr int kHcFinish = 1024;   // threads of a hc_finish block

__device__ __forceinline__ float sigmoidf(float x) { return 1.0f / (1.0f + expf(-x)); }

template <bool F32>
__device__ __forceinline__ float fn_at(const MatrixView& w, int64_t r, int64_t j) {
  if constexpr (F32) return __ldg(reinterpret_cast<const float*>(w.data) + r * w.k + j);
  else return weight_at(w, r, j);
}

// grid (ceil(D / kHcCols), T): a block owns columns [k0, k0 + kHcCols) of every stream.
// With post: x [T, n, D] <- post_j y + sum_i comb[i][j] X_i (hc_post). With fn.data: the partial sums
// of the next mixes over this block's n x kHcCols values: part [T, chunks, nm + 1] = (fn_r . X, sum X^2).
// The new values go through shared memory; a warp then takes 4 of the nm + 1 sums at a time with its
// lanes over the values, so that each thread has 16 independent weight loads in flight (one weight
// row per warp had too few bytes in flight to reach the memory rate).
template <bool F32>  // fn stored as F32 (the checkpoints' format), else any format
__global__ void __launch_bounds__(kHcThreads) hc_post_mix_kernel(const float* __restrict__ post,
                                                                  const float* __restrict__ comb,
                                                                  const float* __restrict__ y, float* x, int n,
                                                                  int64_t D, MatrixView fn, int nm,
                                                                  float* __restrict__ part) {
  __shared__ float xs[16 * kHcCols];  // [n, kHcCols] the block's new values
  __shared__ float red[kHcMaxMix + 1];
  const int64_t t = blockIdx.y, k0 = int64_t(blockIdx.x) * kHcCols;
  const int tid = threadIdx.x, ne = n * kHcCols;
  const int warp = tid / 32, lane = tid % 32;
  constexpr int kW = kHcThreads / 32, kR = 4;  // warps; rows a warp takes at a time (r0 + kW q)
  // A pass of the mixes' weight rows: every load issued before its products (addresses clamped
  // into the matrix; the values of clamped columns are zeroed by their x).
  auto load_pass = [&](int r0, int e0, float (&wv)[4][kR]) {
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int e = e0 + lane + 32 * i;
      const int64_t kc = k0 + e % kHcCols;
      const bool ok = e < ne && kc < D;
      const int64_t col = ok ? int64_t(e / kHcCols) * D + kc : 0;
#pragma unroll
      for (int q = 0; q < kR; ++q) wv[i][q] = fn_at<F32>(fn, min(r0 + kW * q, nm - 1), col);
    }
  };
  // fn is a weight: the first pass's loads go out before the wait, overlapping the kernel before.
  float wv_first[4][kR];
  if (fn.data != nullptr && warp < nm) load_pass(warp, 0, wv_first);
  pdl::begin();
  float* xt = x + t * n * D;
  for (int e = tid; e < ne; e += kHcThreads) {
    const int j = e / kHcCols;
    const int64_t k = k0 + e % kHcCols;
    float v = 0.f;
    if (k < D) {
      if (post != nullptr) {
        const float* C = comb + t * n * n;
        v = post[t * n + j] * y[t * D + k];
#pragma unroll
        for (int s = 0; s < 16; ++s)
          if (s < n) v += C[s * n + j] * xt[s * D + k];
      } else {
        v = xt[j * D + k];
      }
    }
    xs[e] = v;
  }
  __syncthreads();  // every old value of these columns read before any is overwritten
  if (post != nullptr)
    for (int e = tid; e < ne; e += kHcThreads) {
      const int64_t k = k0 + e % kHcCols;
      if (k < D) xt[(e / kHcCols) * D + k] = xs[e];
    }
  if (fn.data == nullptr) return;
  // Row nm, the sum of squares, from shared memory; then the weight rows' passes.
  if (warp == kW - 1) {
    float a = 0.f;
    for (int e = lane; e < ne; e += 32) a += xs[e] * xs[e];
    for (int o = 16; o > 0; o /= 2) a += __shfl_xor_sync(0xffffffffu, a, o);
    if (lane == 0) red[nm] = a;
  }
  for (int r0 = warp; r0 < nm; r0 += kW * kR) {
    float acc[kR] = {0.f, 0.f, 0.f, 0.f};
    for (int e0 = 0; e0 < ne; e0 += 128) {
      float wv[4][kR], v[4];
      if (r0 == warp && e0 == 0) {
#pragma unroll
        for (int i = 0; i < 4; ++i)
#pragma unroll
          for (int q = 0; q < kR; ++q) wv[i][q] = wv_first[i][q];
      } else {
        load_pass(r0, e0, wv);
      }
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const int e = e0 + lane + 32 * i;
        v[i] = e < ne && k0 + e % kHcCols < D ? xs[e] : 0.f;
      }
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int q = 0; q < kR; ++q) acc[q] += wv[i][q] * v[i];
    }
#pragma unroll
    for (int q = 0; q < kR; ++q) {
      float a = acc[q];
      for (int o = 16; o > 0; o /= 2) a += __shfl_xor_sync(0xffffffffu, a, o);
      const int r = r0 + kW * q;
      if (lane == 0 && r < nm) red[r] = a;
    }
  }
  __syncthreads();
  float* pt = part + (t * gridDim.x + blockIdx.x) * (nm + 1);
  for (int r = tid; r <= nm; r += kHcThreads) pt[r] = red[r];
}

// grid (T), many rows (fast-mode prefill, beside a GEMM for the mixes): x [T, n, D] <- post_j y +
// sum_i comb[i][j] X_i (as hc_post_mix, the same operation order) when post != null, else x as is;
// with part, part[t * ld + ld - 1] = the sum of the new X^2 (the mixes' RMS input). W columns a
// thread: W = 4 (16-byte loads and stores) needs n <= NMAX = 4 and D a multiple of 4; W = 1 takes
// any n <= NMAX = 16.
template <int W, int NMAX>
__global__ void __launch_bounds__(256) hc_update_rows_kernel(const float* __restrict__ post,
                                                             const float* __restrict__ comb,
                                                             const float* __restrict__ y, float* x, int n, int64_t D,
                                                             float* __restrict__ part, int64_t ld) {
  static_assert(W == 1 || W == 4, "one column or a float4 a thread");
  pdl::begin();
  __shared__ float P[NMAX], C[NMAX * NMAX], red[8];
  const int64_t t = blockIdx.x;
  const int tid = threadIdx.x;
  if (post) {
    if (tid < n) P[tid] = post[t * n + tid];
    if (tid < n * n) C[tid] = comb[t * n * n + tid];
  }
  __syncthreads();
  float* xt = x + t * n * D;
  // W values at p (one float or one float4).
  auto load = [](const float* p, float (&v)[W]) {
    if constexpr (W == 4) {
      const float4 q = *reinterpret_cast<const float4*>(p);
      v[0] = q.x, v[1] = q.y, v[2] = q.z, v[3] = q.w;
    } else {
      v[0] = *p;
    }
  };
  // The sum of squares of W values, in the order the two kernels this template replaced used.
  auto sq = [](const float (&v)[W]) {
    if constexpr (W == 4) return v[0] * v[0] + v[1] * v[1] + v[2] * v[2] + v[3] * v[3];
    else return v[0] * v[0];
  };
  float ss = 0.f;
  for (int64_t k = W * int64_t(tid); k < D; k += W * int64_t(blockDim.x)) {
    float v[NMAX][W];
#pragma unroll
    for (int s = 0; s < NMAX; ++s) {
      if (s < n) load(xt + s * D + k, v[s]);
      else
#pragma unroll
        for (int c = 0; c < W; ++c) v[s][c] = 0.f;
    }
    if (post) {
      float yk[W];
      load(y + t * D + k, yk);
#pragma unroll
      for (int j = 0; j < NMAX; ++j) {
        if (j >= n) break;
        float a[W];
#pragma unroll
        for (int c = 0; c < W; ++c) a[c] = P[j] * yk[c];
#pragma unroll
        for (int s = 0; s < NMAX; ++s)
          if (s < n) {
            const float cs = C[s * n + j];
#pragma unroll
            for (int c = 0; c < W; ++c) a[c] += cs * v[s][c];
          }
        if constexpr (W == 4) *reinterpret_cast<float4*>(xt + j * D + k) = make_float4(a[0], a[1], a[2], a[3]);
        else xt[j * D + k] = a[0];
        ss += sq(a);
      }
    } else {
#pragma unroll
      for (int s = 0; s < NMAX; ++s) ss += sq(v[s]);
    }
  }
  if (!part) return;
  for (int o = 16; o > 0; o /= 2) ss += __shfl_xor_sync(0xffffffffu, ss, o);
  if (tid % 32 == 0) red[tid / 32] = ss;
  __syncthreads();
  if (tid == 0) {
    float a = 0.f;
    for (int w = 0; w < int(blockDim.x / 32); ++w) a += red[w];
    part[t * ld + ld - 1] = a;
  }
}

// Sinkhorn of the N x N matrix held one element a lane (lane = i N + j < N^2 <= 32), the sums in the
// oracle's order (include/dsv4/model/mhc.hpp): softmax over rows + eps, columns, then iters - 1
// times rows and columns. N is a template argument so that each sum's N shuffles issue together
// (with a run-time n the loop ran one shuffle latency per term, ~4.5 us of hc_finish's ~12 at n 4).
template <int N>
__device__ float sinkhorn_lanes(float c, int iters, float eps) {
  const int lane = threadIdx.x % 32, i = lane / N, j = lane % N;
  float v[N];
#pragma unroll
  for (int q = 0; q < N; ++q) v[q] = __shfl_sync(0xffffffffu, c, (i * N + q) & 31);
  float mx = -FLT_MAX;
#pragma unroll
  for (int q = 0; q < N; ++q) mx = fmaxf(mx, v[q]);
  const float e = expf(c - mx);
#pragma unroll
  for (int q = 0; q < N; ++q) v[q] = __shfl_sync(0xffffffffu, e, (i * N + q) & 31);
  float sum = 0.f;
#pragma unroll
  for (int q = 0; q < N; ++q) sum += v[q];
  c = e / sum + eps;
  for (int it = 0; it < iters; ++it) {
    if (it > 0) {
#pragma unroll
      for (int q = 0; q < N; ++q) v[q] = __shfl_sync(0xffffffffu, c, (i * N + q) & 31);
      float rs = 0.f;
#pragma unroll
      for (int q = 0; q < N; ++q) rs += v[q];
      c /= (rs + eps);
    }
#pragma unroll
    for (int q = 0; q < N; ++q) v[q] = __shfl_sync(0xffffffffu, c, (q * N + j) & 31);
    float cs = 0.f;
#pragma unroll
    for (int q = 0; q < N; ++q) cs += v[q];
    c /= (cs + eps);
  }
  return c;
}
__device__ float sinkhorn_lanes(float c, int n, int iters, float eps) {  // n^2 <= 32
  switch (n) {
    case 1: return sinkhorn_lanes<1>(c, iters, eps);
    case 2: return sinkhorn_lanes<2>(c, iters, eps);
    case 3: return sinkhorn_lanes<3>(c, iters, eps);
    case 4: return sinkhorn_lanes<4>(c, iters, eps);
    default: return sinkhorn_lanes<5>(c, iters, eps);
  }
}

// The same in shared memory for n^2 > 32 (warp 0, lane i < n owns row/column i's sums).
__device__ void sinkhorn_shared(float* C, float* stat, float* stat2, int n, int iters, float eps) {
  const int lane = threadIdx.x % 32, nn = n * n;
  if (lane < n) {
    float mx = C[lane * n];
    for (int j = 1; j < n; ++j) mx = fmaxf(mx, C[lane * n + j]);
    float sum = 0.f;
    for (int j = 0; j < n; ++j) sum += expf(C[lane * n + j] - mx);
    stat[lane] = mx, stat2[lane] = sum;
  }
  __syncwarp();
  for (int e = lane; e < nn; e += 32) C[e] = expf(C[e] - stat[e / n]) / stat2[e / n] + eps;
  __syncwarp();
  for (int it = 0; it < iters; ++it) {
    if (it > 0) {
      if (lane < n) {
        float sum = 0.f;
        for (int j = 0; j < n; ++j) sum += C[lane * n + j];
        stat[lane] = sum;
      }
      __syncwarp();
      for (int e = lane; e < nn; e += 32) C[e] /= (stat[e / n] + eps);
      __syncwarp();
    }
    if (lane < n) {
      float sum = 0.f;
      for (int i = 0; i < n; ++i) sum += C[i * n + lane];
      stat[lane] = sum;
    }
    __syncwarp();
    for (int e = lane; e < nn; e += 32) C[e] /= (stat[e % n] + eps);
    __syncwarp();
  }
}

// One block per token: the mixes from the partial sums (summed over chunks in a fixed order, times
// the unweighted RMS factor), pre (and post) for every thread; then warp 0 runs Sinkhorn for comb
// while the other warps form u = sum_i pre_i X_i and out = rms_norm(u) * w (comb is needed only by
// the hc_post after the sub-layer). The hyper head (head): pre only.
__global__ void __launch_bounds__(kHcFinish) hc_finish_kernel(
    const float* __restrict__ part, int chunks, const float* __restrict__ base, const float* __restrict__ scale,
    const float* __restrict__ x, int n, int64_t D, int iters, float hc_eps, float norm_eps, bool head,
    float* __restrict__ pre_out, float* __restrict__ post_out, float* __restrict__ comb_out,
    const float* __restrict__ w, float* __restrict__ out) {
  pdl::begin();
  __shared__ float mix[kHcMaxMix + 1], sp[16], C[256], stat[16], stat2[16], red[32];
  const int64_t t = blockIdx.x;
  const int nm = head ? n : (2 + n) * n, nn = n * n;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, nw = blockDim.x / 32;
  const float* pt = part + t * chunks * (nm + 1);
  for (int r = warp; r <= nm; r += nw) {  // lanes over chunks, a fixed tree
    float a = 0.f;
    for (int c = lane; c < chunks; c += 32) a += pt[c * (nm + 1) + r];
    for (int o = 16; o > 0; o /= 2) a += __shfl_xor_sync(0xffffffffu, a, o);
    if (lane == 0) mix[r] = a;
  }
  __syncthreads();
  const float inv = 1.0f / sqrtf(mix[nm] / float(n * D) + norm_eps);
  if (threadIdx.x < n) sp[threadIdx.x] = sigmoidf(mix[threadIdx.x] * inv * scale[0] + base[threadIdx.x]) + hc_eps;
  __syncthreads();
  if (warp == 0) {
    if (head) return;
    if (lane < n) {
      pre_out[t * n + lane] = sp[lane];
      post_out[t * n + lane] = 2.0f * sigmoidf(mix[n + lane] * inv * scale[1] + base[n + lane]);
    }
    if (nn <= 32) {
      const float c0 = lane < nn ? mix[2 * n + lane] * inv * scale[2] + base[2 * n + lane] : 0.f;
      const float c = sinkhorn_lanes(c0, n, iters, hc_eps);
      if (lane < nn) comb_out[t * nn + lane] = c;
    } else {
      for (int e = lane; e < nn; e += 32) C[e] = mix[2 * n + e] * inv * scale[2] + base[2 * n + e];
      __syncwarp();
      sinkhorn_shared(C, stat, stat2, n, iters, hc_eps);
      for (int e = lane; e < nn; e += 32) comb_out[t * nn + e] = C[e];
    }
    return;
  }
  // Warps 1..: u into out (four columns a thread at once, the streams' loads issued together), then
  // its RMS norm with weight w; each thread rescales its own columns.
  const float* xt = x + t * n * D;
  float* ut = out + t * D;
  const int64_t tid = threadIdx.x - 32, step = blockDim.x - 32;
  float ss = 0.f;
  for (int64_t j0 = tid; j0 < D; j0 += 4 * step) {
    float a[4] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll
    for (int s = 0; s < 16; ++s) {
      if (s >= n) break;
#pragma unroll
      for (int q = 0; q < 4; ++q)
        if (j0 + q * step < D) a[q] += sp[s] * xt[s * D + j0 + q * step];
    }
#pragma unroll
    for (int q = 0; q < 4; ++q)
      if (j0 + q * step < D) ut[j0 + q * step] = a[q], ss += a[q] * a[q];
  }
  for (int o = 16; o > 0; o /= 2) ss += __shfl_xor_sync(0xffffffffu, ss, o);
  if (lane == 0) red[warp] = ss;
  asm volatile("bar.sync 1, %0;" ::"r"(int(step)) : "memory");  // warps 1.. only
  float tot = lane >= 1 && lane < nw ? red[lane] : 0.f;
  for (int o = 16; o > 0; o /= 2) tot += __shfl_xor_sync(0xffffffffu, tot, o);
  const float inv2 = 1.0f / sqrtf(tot / float(D) + norm_eps);
  for (int64_t j = tid; j < D; j += step) ut[j] = ut[j] * inv2 * w[j];
}

// ---- attention split over the keys ------------------------------------------------------------
// All heads of a row attend over the same keys (one latent kv per position), so a block takes a
// chunk of kAttKeys keys and kAttHeads heads: the keys are read once per head group instead of once
// per head, and a decode row spreads over (chunks x head groups) blocks instead of H.
constexpr int kAttKeys = 16, kAttHeads = 4, kAttThreads = 256;

// grid (chunks, ceil(H / kAttHeads), T). Per (row, chunk, head): the chunk's max logit m, sum of
// exp(logit - m) l, and the unnormalized sum of exp(logit - m) v: part_o [T, chunks, H, d],
// part_ml [T, chunks, H, 2]. Chunks past a row's keys do nothing (the combine does not read them).
// Needs d % 4 == 0.
__global__ void __launch_bounds__(kAttThreads) attend_split_kernel(AttendArgs a, float* __restrict__ part_o,
                                                                   float* __restrict__ part_ml) {
  pdl::begin();
  extern __shared__ float sh[];
  const int64_t row = blockIdx.z, c = blockIdx.x, d = a.d, H = a.heads, nchunks = gridDim.x;
  const int h0 = blockIdx.y * kAttHeads, hn = min(kAttHeads, int(H) - h0);
  const RowInfo ri = a.rows[row];
  const RowKeys rk = row_keys(a, ri, row);
  const int64_t nk = rk.nk;
  const int64_t i0 = c * kAttKeys;
  if (i0 >= nk) return;
  const int kn = int(min(int64_t(kAttKeys), nk - i0));
  const int64_t ks_ld = d + 4;  // padded rows (16 bytes): the float4 reads of different keys spread over banks
  float* qs = sh;                             // [kAttHeads, d]
  float* ks = qs + kAttHeads * d;             // [kAttKeys, d + 4]
  float* pl = ks + kAttKeys * ks_ld;          // [kAttHeads, kAttKeys] logits, then weights
  __shared__ const float* kptr[kAttKeys];
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int64_t d4 = d / 4;
  if (tid < kAttKeys) kptr[tid] = tid < kn ? row_key(a, ri, row, rk, i0 + tid) : nullptr;
  __syncthreads();
  // q rows and keys into shared memory, 4 loads a thread in flight at once: rows 0 .. kAttHeads - 1
  // of the walk are the heads' q, the next kAttKeys the keys, in float4 columns.
  constexpr int U = 4, kRows = kAttHeads + kAttKeys;
  RowColWalk wk(tid, kAttThreads, int(d4));
  while (wk.row < kRows) {
    float4 v[U];
    int vr[U], vc[U];
#pragma unroll
    for (int u = 0; u < U; ++u) {
      vr[u] = wk.row, vc[u] = wk.col;
      v[u] = make_float4(0, 0, 0, 0);
      if (wk.row < kAttHeads) {
        if (wk.row < hn) v[u] = __ldg(reinterpret_cast<const float4*>(a.q + (row * H + h0 + wk.row) * d) + wk.col);
      } else if (wk.row < kRows) {
        const float* kp = kptr[wk.row - kAttHeads];
        if (kp != nullptr) {
          kp += 4 * wk.col;
          if (reinterpret_cast<uintptr_t>(kp) % 16 == 0) v[u] = *reinterpret_cast<const float4*>(kp);
          else v[u] = make_float4(kp[0], kp[1], kp[2], kp[3]);  // cache state of widths not a multiple of 4
        }
      }
      wk.next();
    }
#pragma unroll
    for (int u = 0; u < U; ++u) {
      if (vr[u] < kAttHeads) reinterpret_cast<float4*>(qs + vr[u] * d)[vc[u]] = v[u];
      else if (vr[u] < kRows) *reinterpret_cast<float4*>(ks + (vr[u] - kAttHeads) * ks_ld + 4 * vc[u]) = v[u];
    }
  }
  __syncthreads();
  // Logits: a warp per (head, key) pair at a time, lanes over d.
  for (int pr = warp; pr < kAttHeads * kAttKeys; pr += kAttThreads / 32) {
    const int hh = pr / kAttKeys, kk = pr % kAttKeys;
    float dot = 0.f;
    for (int64_t j = lane; j < d4; j += 32) {
      const float4 q = reinterpret_cast<const float4*>(qs + hh * d)[j];
      const float4 k = *reinterpret_cast<const float4*>(ks + kk * ks_ld + 4 * j);
      dot += q.x * k.x + q.y * k.y + q.z * k.z + q.w * k.w;
    }
    for (int o = 16; o > 0; o /= 2) dot += __shfl_xor_sync(0xffffffffu, dot, o);
    if (lane == 0) pl[pr] = dot * a.scale;
  }
  __syncthreads();
  // Per head (a warp each): the chunk's max and sum, the weights exp(logit - m) in place.
  for (int hh = warp; hh < kAttHeads; hh += kAttThreads / 32) {
    const float l = lane < kn ? pl[hh * kAttKeys + lane] : -FLT_MAX;
    float m = l;
    for (int o = 16; o > 0; o /= 2) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, o));
    const float p = lane < kn ? expf(l - m) : 0.f;
    float sum = p;
    for (int o = 16; o > 0; o /= 2) sum += __shfl_xor_sync(0xffffffffu, sum, o);
    if (lane < kAttKeys) pl[hh * kAttKeys + lane] = p;
    if (lane == 0 && hh < hn) {
      float* ml = part_ml + ((row * nchunks + c) * H + h0 + hh) * 2;
      ml[0] = m, ml[1] = sum;
    }
  }
  __syncthreads();
  // Weighted sums: threads over d, every head of the group.
  for (int64_t j = tid; j < d; j += kAttThreads) {
    float acc[kAttHeads];
#pragma unroll
    for (int hh = 0; hh < kAttHeads; ++hh) acc[hh] = 0.f;
    for (int kk = 0; kk < kn; ++kk) {
      const float v = ks[kk * ks_ld + j];
#pragma unroll
      for (int hh = 0; hh < kAttHeads; ++hh) acc[hh] += pl[hh * kAttKeys + kk] * v;
    }
#pragma unroll
    for (int hh = 0; hh < kAttHeads; ++hh)
      if (hh < hn) part_o[((row * nchunks + c) * H + h0 + hh) * d + j] = acc[hh];
  }
}

// grid (H, T): the chunks of a row and head merged with the sink (max first, then the scaled sums
// in chunk order), normalized and de-rotated. o [T, H, d].
__global__ void attend_combine_kernel(AttendArgs a, const float* __restrict__ part_o, const float* __restrict__ part_ml,
                                      int64_t nchunks) {
  pdl::begin();
  extern __shared__ float os[];  // [d]
  __shared__ float wm[1024], wl[1024];  // per chunk m_c and l_c
  float* wc = wm;                        // then exp(m_c - M)
  const int64_t h = blockIdx.x, row = blockIdx.y, d = a.d, H = a.heads;
  const RowInfo ri = a.rows[row];
  const int64_t nk = row_keys(a, ri, row).nk;
  const int64_t nc = (nk + kAttKeys - 1) / kAttKeys;
  const float* ml = part_ml + (row * nchunks * H + h) * 2;
  const float sink = a.sink[h];
  // The chunks' (m, l) into shared memory by all threads at once (a serial walk paid one L2
  // latency a chunk), then every thread merges them in chunk order.
  for (int64_t c = threadIdx.x; c < nc; c += blockDim.x) {
    const float2 v = *reinterpret_cast<const float2*>(ml + c * H * 2);
    wm[c] = v.x, wl[c] = v.y;
  }
  __syncthreads();
  float M = sink;
  for (int64_t c = 0; c < nc; ++c) M = fmaxf(M, wm[c]);
  float den = expf(sink - M);
  for (int64_t c = 0; c < nc; ++c) den += wl[c] * expf(wm[c] - M);
  __syncthreads();  // every thread has read wm before it becomes the weights
  for (int64_t c = threadIdx.x; c < nc; c += blockDim.x) wc[c] = expf(wm[c] - M);
  __syncthreads();
  const float inv = 1.0f / den;
  const float* po = part_o + (row * nchunks * H + h) * d;  // chunk c at po + c H d
  for (int64_t j = threadIdx.x; j < d; j += blockDim.x) {
    float acc = 0.f;
    int64_t c = 0;
    for (; c + 8 <= nc; c += 8) {  // 8 loads in flight, summed in chunk order
      float v[8];
#pragma unroll
      for (int u = 0; u < 8; ++u) v[u] = po[(c + u) * H * d + j];
#pragma unroll
      for (int u = 0; u < 8; ++u) acc += wc[c + u] * v[u];
    }
    for (; c < nc; ++c) acc += wc[c] * po[c * H * d + j];
    os[j] = acc * inv;
  }
  __syncthreads();
  // De-rotation: the last r dims turned by -pos (cos/sin in double, as the oracle).
  float* xr = os + (d - a.rope.r);
  for (int i = threadIdx.x; i < a.rope.r / 2; i += blockDim.x) {
    const float angle = float(ri.pos) * a.rope.inv_freq[i];
    double sd, cd;
    sincos(double(angle), &sd, &cd);
    const float cs = float(cd), sn = -float(sd);
    const float x0 = xr[2 * i], x1 = xr[2 * i + 1];
    xr[2 * i] = x0 * cs - x1 * sn;
    xr[2 * i + 1] = x0 * sn + x1 * cs;
  }
  __syncthreads();
  float* o = a.o + (row * H + h) * d;
  for (int64_t j = threadIdx.x; j < d; j += blockDim.x) o[j] = os[j];
  // window_store's work (every key of this step has been read by attend_split): the row's kv into
  // the ring when it is among its segment's last W - 1 rows.
  if (h == 0) store_window_row(a.kv + row * d, ri, a.seqs, d, a.window - 1);
}

}  // namespace

int64_t hc_chunks(int64_t D) { return (D + kHcCols - 1) / kHcCols; }

void hc_post_mix(const float* post, const float* comb, const float* y, float* x, int64_t t, int64_t n, int64_t D,
                 const MatrixView* fn, float* part, void* s) {
  if (t == 0) return;
  if (n > 16) throw Error("cuda: hc_mult > 16 is not supported");
  const int nm = fn ? int(fn->n) : 0;
  if (nm > kHcMaxMix) throw Error("cuda: more than 288 mHC mixes");
  const dim3 grid(unsigned(hc_chunks(D)), unsigned(t));
  const MatrixView f = fn ? *fn : MatrixView{};
  if (f.kind == MatrixView::F32) pdl::launch(hc_post_mix_kernel<true>, grid, kHcThreads, 0, st(s), post, comb, y, x, int(n), D, f, nm, part);
  else pdl::launch(hc_post_mix_kernel<false>, grid, kHcThreads, 0, st(s), post, comb, y, x, int(n), D, f, nm, part);
  check(cudaGetLastError(), "hc_post_mix");
}

void hc_update_rows(const float* post, const float* comb, const float* y, float* x, int64_t t, int64_t n, int64_t D,
                    float* part, int64_t ld, void* s) {
  if (t == 0) return;
  if (n > 16) throw Error("cuda: hc_mult > 16 is not supported");
  if (n <= 4 && D % 4 == 0 && reinterpret_cast<uintptr_t>(x) % 16 == 0 && (!y || reinterpret_cast<uintptr_t>(y) % 16 == 0))
    pdl::launch(hc_update_rows_kernel<4, 4>, unsigned(t), 256, 0, st(s), post, comb, y, x, int(n), D, part, ld);
  else
    pdl::launch(hc_update_rows_kernel<1, 16>, unsigned(t), 256, 0, st(s), post, comb, y, x, int(n), D, part, ld);
  check(cudaGetLastError(), "hc_update_rows");
}

void hc_finish(const float* part, const float* base, const float* scale, const float* x, int64_t t, int64_t n,
               int64_t D, int64_t iters, float hc_eps, float norm_eps, float* pre, float* post, float* comb,
               const float* w, float* out, void* s, int64_t chunks) {
  if (t == 0) return;
  const bool head = post == nullptr;
  pdl::launch(hc_finish_kernel, unsigned(t), kHcFinish, 0, st(s), part, int(chunks > 0 ? chunks : hc_chunks(D)), base, scale, x, int(n), D,
                                                          int(iters), hc_eps, norm_eps, head, pre, post, comb, w, out);
  check(cudaGetLastError(), "hc_finish");
}

int64_t attend_split_chunks(const AttendArgs& a) { return (a.max_keys + kAttKeys - 1) / kAttKeys; }

bool attend_split_ok(const AttendArgs& a) {
  const int64_t nc = attend_split_chunks(a);
  return a.d % 4 == 0 && a.t <= 64 && nc <= 1024 && a.t * nc * a.heads * a.d <= (int64_t(1) << 24);
}

void attend_split(const AttendArgs& a, float* part_o, float* part_ml, void* s) {
  if (a.t == 0) return;
  const int64_t nc = attend_split_chunks(a);
  const size_t bytes = size_t(kAttHeads * a.d + kAttKeys * (a.d + 4) + kAttHeads * kAttKeys) * sizeof(float);
  static std::atomic<size_t> set{0};  // always raised: the kernel's static shared memory counts against 48 KiB too
  raise_dynamic_smem(attend_split_kernel, bytes, set, "attention shared memory");
  const dim3 grid(unsigned(nc), unsigned((a.heads + kAttHeads - 1) / kAttHeads), unsigned(a.t));
  pdl::launch(attend_split_kernel, grid, kAttThreads, bytes, st(s), a, part_o, part_ml);
  check(cudaGetLastError(), "attend_split");
  pdl::launch(attend_combine_kernel, dim3(unsigned(a.heads), unsigned(a.t)), 256, size_t(a.d) * sizeof(float), st(s), 
      a, part_o, part_ml, nc);
  check(cudaGetLastError(), "attend_combine");
}

}  // namespace dsv4::cuda::k
