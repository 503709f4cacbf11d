// CUDA GEMV over stored-format weights: one warp per output row, weights decoded in registers
// (FP8 E4M3 x block scale, packed E2M1 x per-group E8M0, BF16, F32), fp32 accumulation.
#include "decode.cuh"
#include "kernels.hpp"

#include <algorithm>
#include <type_traits>

namespace dsv4::cuda {
namespace {

// grid (ceil(rows/8), batch), block 256 = 8 warps, one row each: any layout, any alignment.
__global__ void gemv_kernel(MatrixView w, const float* __restrict__ x, int64_t ldx, float* __restrict__ y, int64_t ldy,
                            int64_t row0, int64_t nrows) {
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
  __shared__ float part[8];
  const int64_t r = blockIdx.x, b = blockIdx.y;
  const float* xb = x + b * ldx;
  float acc = 0.f;
  for (int64_t j = threadIdx.x; j < w.k; j += blockDim.x) acc += weight_at(w, row0 + r, j) * xb[j];
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
  const int64_t r = int64_t(blockIdx.x) * 8 + threadIdx.x / 32;
  if (r >= nrows) return;
  const int b0 = blockIdx.y * 8, nb = min(8, batch - b0);
  float acc[8];
  warp_row_dots<Kind>(w, row0 + r, x + int64_t(b0) * ldx, ldx, nb, acc);
  if (threadIdx.x % 32 == 0)
    for (int b = 0; b < nb; ++b) y[int64_t(b0 + b) * ldy + r] = acc[b];
}

}  // namespace

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
    gemv_splitk_kernel<<<dim3(unsigned(nrows), unsigned(batch)), 256, 0, st>>>(w, x, ldx, y, ldy, row0);
    check(cudaGetLastError(), "gemv launch");
    return;
  }
  // The vector path needs 16-byte aligned rows of x and K a multiple of 32 (whole words and groups).
  const bool x_ok = (reinterpret_cast<uintptr_t>(x) % 16 == 0) && ldx % 4 == 0 && w.k % 32 == 0;
  const dim3 vgrid(unsigned((nrows + 7) / 8), unsigned((batch + 7) / 8));
  if (x_ok && w.kind == MatrixView::Fp4Group && w.group == 32) {
    gemv_vec_kernel<MatrixView::Fp4Group><<<vgrid, 256, 0, st>>>(w, x, ldx, y, ldy, row0, nrows, int(batch));
  } else if (x_ok && w.kind == MatrixView::Fp8Block && w.bn % 8 == 0) {
    gemv_vec_kernel<MatrixView::Fp8Block><<<vgrid, 256, 0, st>>>(w, x, ldx, y, ldy, row0, nrows, int(batch));
  } else if (x_ok && w.kind == MatrixView::Bf16) {
    gemv_vec_kernel<MatrixView::Bf16><<<vgrid, 256, 0, st>>>(w, x, ldx, y, ldy, row0, nrows, int(batch));
  } else {
    const dim3 grid(unsigned((nrows + 7) / 8), unsigned(batch));
    gemv_kernel<<<grid, 256, 0, st>>>(w, x, ldx, y, ldy, row0, nrows);
  }
  check(cudaGetLastError(), "gemv launch");
}

namespace {
// grid (slots, ceil(n/8)): slot s multiplies expert experts[s]'s matrix with x row s / x_div.
template <int Kind>
__global__ void expert_gemv_kernel(const MatrixView* __restrict__ mats, const int32_t* __restrict__ experts,
                                   const float* __restrict__ x, int64_t x_div, float* __restrict__ y) {
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
  if (vec && kind == MatrixView::Fp4Group) expert_gemv_kernel<MatrixView::Fp4Group><<<grid, 256, 0, st>>>(mats, experts, x, x_div, y);
  else if (vec && kind == MatrixView::Fp8Block && bn % 8 == 0) expert_gemv_kernel<MatrixView::Fp8Block><<<grid, 256, 0, st>>>(mats, experts, x, x_div, y);
  else if (vec && kind == MatrixView::Bf16) expert_gemv_kernel<MatrixView::Bf16><<<grid, 256, 0, st>>>(mats, experts, x, x_div, y);
  else expert_gemv_kernel<-1><<<grid, 256, 0, st>>>(mats, experts, x, x_div, y);
  check(cudaGetLastError(), "expert gemv launch");
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
