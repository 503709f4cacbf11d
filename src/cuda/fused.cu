// Kernels that replace chains of small launches in a decode step (few rows, where every launch is
// latency, not bandwidth): the mHC mixes in two launches per residual update, and attention split
// over the keys with a group of heads per block. Results differ from the unfused kernels only in
// summation order; each kernel sums in a fixed order (graph replays stay bit-identical).
#include <cfloat>

#include "decode.cuh"
#include "kernels.hpp"

namespace dsv4::cuda::k {
namespace {

constexpr int kHcCols = 64;     // columns of D a hc_post_mix block covers (its threads)
constexpr int kHcFinish = 512;  // threads of a hc_finish block

__device__ __forceinline__ float sigmoidf(float x) { return 1.0f / (1.0f + expf(-x)); }

__device__ __forceinline__ float fn_at(const MatrixView& w, int64_t r, int64_t j) {
  if (w.kind == MatrixView::F32) return __ldg(reinterpret_cast<const float*>(w.data) + r * w.k + j);
  return weight_at(w, r, j);
}

// grid (ceil(D / kHcCols), T), kHcCols threads, one column k of every stream each.
// With post: x [T, n, D] <- post_j y + sum_i comb[i][j] X_i (hc_post). With fn.data: the partial sums
// of the next mixes over this block's columns: part [T, chunks, nm + 1] = (fn_r . X, sum X^2).
__global__ void hc_post_mix_kernel(const float* __restrict__ post, const float* __restrict__ comb,
                                   const float* __restrict__ y, float* x, int n, int64_t D, MatrixView fn,
                                   int nm, float* __restrict__ part) {
  __shared__ float red[kHcCols / 32][kHcMaxMix + 1];
  const int64_t t = blockIdx.y, k = int64_t(blockIdx.x) * kHcCols + threadIdx.x;
  const bool valid = k < D;
  float* xt = x + t * n * D;
  float v[16];
#pragma unroll
  for (int s = 0; s < 16; ++s) v[s] = s < n && valid ? xt[s * D + k] : 0.f;
  if (post != nullptr && valid) {
    const float* C = comb + t * n * n;
    const float yk = y[t * D + k];
    float o[16];
#pragma unroll
    for (int j = 0; j < 16; ++j) {
      if (j >= n) break;
      float a = post[t * n + j] * yk;
#pragma unroll
      for (int s = 0; s < 16; ++s)
        if (s < n) a += C[s * n + j] * v[s];
      o[j] = a;
    }
#pragma unroll
    for (int j = 0; j < 16; ++j)
      if (j < n) xt[j * D + k] = v[j] = o[j];
  }
  if (fn.data == nullptr) return;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  float ss = 0.f;
#pragma unroll
  for (int s = 0; s < 16; ++s) ss += v[s] * v[s];
#pragma unroll 4
  for (int r = 0; r <= nm; ++r) {
    float d = ss;
    if (r < nm) {
      d = 0.f;
#pragma unroll
      for (int s = 0; s < 16; ++s)
        if (s < n && valid) d += fn_at(fn, r, s * D + k) * v[s];
    }
    for (int o = 16; o > 0; o /= 2) d += __shfl_xor_sync(0xffffffffu, d, o);
    if (lane == 0) red[warp][r] = d;
  }
  __syncthreads();
  float* pt = part + (t * gridDim.x + blockIdx.x) * (nm + 1);
  for (int r = threadIdx.x; r <= nm; r += blockDim.x) {
    float a = 0.f;
    for (int w = 0; w < kHcCols / 32; ++w) a += red[w][r];
    pt[r] = a;
  }
}

// One block per token: the mixes from the partial sums (sum over chunks in a fixed order, then the
// unweighted RMS factor), pre/post/comb (Sinkhorn in warp 0) or, for the head, pre only; then
// u = sum_i pre_i X_i and out = rms_norm(u) * w. Warps 1.. prefetch X into L1 during Sinkhorn.
__global__ void hc_finish_kernel(const float* __restrict__ part, int chunks, const float* __restrict__ base,
                                 const float* __restrict__ scale, const float* __restrict__ x, int n, int64_t D,
                                 int iters, float hc_eps, float norm_eps, bool head, float* __restrict__ pre_out,
                                 float* __restrict__ post_out, float* __restrict__ comb_out,
                                 const float* __restrict__ w, float* __restrict__ out) {
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
  const float* xt = x + t * n * D;
  if (warp == 0) {
    const float inv = 1.0f / sqrtf(mix[nm] / float(n * D) + norm_eps);
    if (head) {
      if (lane < n) sp[lane] = sigmoidf(mix[lane] * inv * scale[0] + base[lane]) + hc_eps;
    } else {
      if (lane < n) {
        sp[lane] = pre_out[t * n + lane] = sigmoidf(mix[lane] * inv * scale[0] + base[lane]) + hc_eps;
        post_out[t * n + lane] = 2.0f * sigmoidf(mix[n + lane] * inv * scale[1] + base[n + lane]);
      }
      for (int e = lane; e < nn; e += 32) C[e] = mix[2 * n + e] * inv * scale[2] + base[2 * n + e];
      __syncwarp();
      if (lane < n) {  // softmax of row `lane`
        float mx = C[lane * n];
        for (int j = 1; j < n; ++j) mx = fmaxf(mx, C[lane * n + j]);
        float sum = 0.f;
        for (int j = 0; j < n; ++j) sum += expf(C[lane * n + j] - mx);
        stat[lane] = mx, stat2[lane] = sum;
      }
      __syncwarp();
      for (int e = lane; e < nn; e += 32) C[e] = expf(C[e] - stat[e / n]) / stat2[e / n] + hc_eps;
      __syncwarp();
      for (int it = 0; it < iters; ++it) {
        if (it > 0) {
          if (lane < n) {
            float sum = 0.f;
            for (int j = 0; j < n; ++j) sum += C[lane * n + j];
            stat[lane] = sum;
          }
          __syncwarp();
          for (int e = lane; e < nn; e += 32) C[e] /= (stat[e / n] + hc_eps);
          __syncwarp();
        }
        if (lane < n) {
          float sum = 0.f;
          for (int i = 0; i < n; ++i) sum += C[i * n + lane];
          stat[lane] = sum;
        }
        __syncwarp();
        for (int e = lane; e < nn; e += 32) C[e] /= (stat[e % n] + hc_eps);
        __syncwarp();
      }
      for (int e = lane; e < nn; e += 32) comb_out[t * nn + e] = C[e];
    }
  } else {
    const char* p = reinterpret_cast<const char*>(xt);
    const int64_t bytes = int64_t(n) * D * 4;
    for (int64_t o = int64_t(threadIdx.x - 32) * 128; o < bytes; o += int64_t(blockDim.x - 32) * 128)
      asm volatile("prefetch.global.L1 [%0];" ::"l"(p + o));
  }
  __syncthreads();
  // u = sum_i pre_i X_i into out, then its RMS norm with weight w (each thread rescales its own
  // columns: no barrier between the two passes).
  float* ut = out + t * D;
  float ss = 0.f;
  for (int64_t j = threadIdx.x; j < D; j += blockDim.x) {
    float a = 0.f;
    for (int s = 0; s < n; ++s) a += sp[s] * xt[s * D + j];
    ut[j] = a, ss += a * a;
  }
  for (int o = 16; o > 0; o /= 2) ss += __shfl_xor_sync(0xffffffffu, ss, o);
  if (lane == 0) red[warp] = ss;
  __syncthreads();
  float tot = lane < nw ? red[lane] : 0.f;
  for (int o = 16; o > 0; o /= 2) tot += __shfl_xor_sync(0xffffffffu, tot, o);
  const float inv = 1.0f / sqrtf(tot / float(D) + norm_eps);
  for (int64_t j = threadIdx.x; j < D; j += blockDim.x) ut[j] = ut[j] * inv * w[j];
}


// ---- attention split over the keys ------------------------------------------------------------
// All heads of a row attend over the same keys (one latent kv per position), so a block takes a
// chunk of kAttKeys keys and kAttHeads heads: the keys are read once per head group instead of once
// per head, and a decode row spreads over (chunks x head groups) blocks instead of H.
constexpr int kAttKeys = 16, kAttHeads = 8, kAttThreads = 256;

__device__ __forceinline__ int64_t att_keys(const AttendArgs& a, const RowInfo& ri, int64_t row, int64_t& p_first,
                                            int64_t& nwin) {
  p_first = max(int64_t(0), int64_t(ri.pos) - a.window + 1);
  nwin = ri.pos - p_first + 1;
  int64_t nextra = 0;
  if (a.hca_m > 0) nextra = (ri.pos + 1) / a.hca_m;
  else if (a.chosen) nextra = a.nchosen[row];
  return nwin + nextra;
}

// Key i of a row: window positions first (the current rows from the segment start, the ring before
// it), then the compressed entries (all of the first (pos+1)/m for HCA, the chosen ones for CSA).
__device__ __forceinline__ const float* att_key(const AttendArgs& a, const RowInfo& ri, int64_t row, int64_t p_first,
                                                int64_t nwin, int64_t i) {
  if (i < nwin) {
    const int64_t p = p_first + i;
    if (p >= ri.pos0) return a.kv + (ri.row0 + (p - ri.pos0)) * a.d;
    return a.seqs[ri.seq].ring + (p % (a.window - 1)) * a.d;
  }
  const int64_t e = a.hca_m > 0 ? i - nwin : a.chosen[row * a.topk + (i - nwin)];
  return a.seqs[ri.seq].entries + e * a.d;
}

// grid (chunks, ceil(H / kAttHeads), T). Per (row, chunk, head): the chunk's max logit m, sum of
// exp(logit - m) l, and the unnormalized sum of exp(logit - m) v: part_o [T, chunks, H, d],
// part_ml [T, chunks, H, 2]. Chunks past a row's keys do nothing (the combine does not read them).
// Needs d % 4 == 0.
__global__ void __launch_bounds__(kAttThreads) attend_split_kernel(AttendArgs a, float* __restrict__ part_o,
                                                                   float* __restrict__ part_ml) {
  extern __shared__ float sh[];
  const int64_t row = blockIdx.z, c = blockIdx.x, d = a.d, H = a.heads, nchunks = gridDim.x;
  const int h0 = blockIdx.y * kAttHeads, hn = min(kAttHeads, int(H) - h0);
  const RowInfo ri = a.rows[row];
  int64_t p_first, nwin;
  const int64_t nk = att_keys(a, ri, row, p_first, nwin);
  const int64_t i0 = c * kAttKeys;
  if (i0 >= nk) return;
  const int kn = int(min(int64_t(kAttKeys), nk - i0));
  const int64_t ks_ld = d + 4;  // padded rows (16 bytes): the float4 reads of different keys spread over banks
  float* qs = sh;                             // [kAttHeads, d]
  float* ks = qs + kAttHeads * d;             // [kAttKeys, d + 4]
  float* pl = ks + kAttKeys * ks_ld;          // [kAttHeads, kAttKeys] logits, then weights
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int64_t d4 = d / 4;
  for (int64_t e = tid; e < kAttHeads * d4; e += kAttThreads) {
    const int hh = int(e / d4);
    const int64_t j = e % d4;
    reinterpret_cast<float4*>(qs)[hh * d4 + j] =
        hh < hn ? __ldg(reinterpret_cast<const float4*>(a.q + (row * H + h0 + hh) * d) + j) : make_float4(0, 0, 0, 0);
  }
  for (int64_t e = tid; e < kAttKeys * d4; e += kAttThreads) {
    const int kk = int(e / d4);
    const int64_t j = e % d4;
    float4 v = make_float4(0, 0, 0, 0);
    if (kk < kn) {
      const float* kp = att_key(a, ri, row, p_first, nwin, i0 + kk) + 4 * j;
      if (reinterpret_cast<uintptr_t>(kp) % 16 == 0) v = *reinterpret_cast<const float4*>(kp);
      else v = make_float4(kp[0], kp[1], kp[2], kp[3]);  // cache state of widths not a multiple of 4
    }
    *reinterpret_cast<float4*>(ks + kk * ks_ld + 4 * j) = v;
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
  extern __shared__ float os[];  // [d]
  __shared__ float wc[1024];     // per chunk exp(m_c - M)
  const int64_t h = blockIdx.x, row = blockIdx.y, d = a.d, H = a.heads;
  const RowInfo ri = a.rows[row];
  int64_t p_first, nwin;
  const int64_t nk = att_keys(a, ri, row, p_first, nwin);
  const int64_t nc = (nk + kAttKeys - 1) / kAttKeys;
  const float* ml = part_ml + (row * nchunks * H + h) * 2;
  const float sink = a.sink[h];
  float M = sink;
  for (int64_t c = 0; c < nc; ++c) M = fmaxf(M, ml[c * H * 2]);
  float den = expf(sink - M);
  for (int64_t c = 0; c < nc; ++c) den += ml[c * H * 2 + 1] * expf(ml[c * H * 2] - M);
  for (int64_t c = threadIdx.x; c < nc; c += blockDim.x) wc[c] = expf(ml[c * H * 2] - M);
  __syncthreads();
  const float inv = 1.0f / den;
  for (int64_t j = threadIdx.x; j < d; j += blockDim.x) {
    float acc = 0.f;
    for (int64_t c = 0; c < nc; ++c) acc += wc[c] * part_o[((row * nchunks + c) * H + h) * d + j];
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
}

cudaStream_t st(void* s) { return static_cast<cudaStream_t>(s); }

}  // namespace

int64_t hc_chunks(int64_t D) { return (D + kHcCols - 1) / kHcCols; }

void hc_post_mix(const float* post, const float* comb, const float* y, float* x, int64_t t, int64_t n, int64_t D,
                 const MatrixView* fn, float* part, void* s) {
  if (t == 0) return;
  if (n > 16) throw Error("cuda: hc_mult > 16 is not supported");
  const int nm = fn ? int(fn->n) : 0;
  if (nm > kHcMaxMix) throw Error("cuda: more than 288 mHC mixes");
  const dim3 grid(unsigned(hc_chunks(D)), unsigned(t));
  hc_post_mix_kernel<<<grid, kHcCols, 0, st(s)>>>(post, comb, y, x, int(n), D, fn ? *fn : MatrixView{}, nm, part);
  check(cudaGetLastError(), "hc_post_mix");
}

void hc_finish(const float* part, const float* base, const float* scale, const float* x, int64_t t, int64_t n,
               int64_t D, int64_t iters, float hc_eps, float norm_eps, float* pre, float* post, float* comb,
               const float* w, float* out, void* s) {
  if (t == 0) return;
  const bool head = post == nullptr;
  hc_finish_kernel<<<unsigned(t), kHcFinish, 0, st(s)>>>(part, int(hc_chunks(D)), base, scale, x, int(n), D,
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
  static size_t set = 0;  // raised only when needed, so that captured decode steps make no such call
  if (bytes > 48 * 1024 && bytes > set)
    check(cudaFuncSetAttribute(attend_split_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes)),
          "attention shared memory"), set = bytes;
  const dim3 grid(unsigned(nc), unsigned((a.heads + kAttHeads - 1) / kAttHeads), unsigned(a.t));
  attend_split_kernel<<<grid, kAttThreads, bytes, st(s)>>>(a, part_o, part_ml);
  check(cudaGetLastError(), "attend_split");
  attend_combine_kernel<<<dim3(unsigned(a.heads), unsigned(a.t)), 128, size_t(a.d) * sizeof(float), st(s)>>>(
      a, part_o, part_ml, nc);
  check(cudaGetLastError(), "attend_combine");
}

}  // namespace dsv4::cuda::k
