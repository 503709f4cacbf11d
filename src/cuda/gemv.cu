// CUDA GEMV over stored-format weights: one warp per output row, weights decoded in registers
// (FP8 E4M3 x block scale, packed E2M1 x per-group E8M0, BF16, F32), fp32 accumulation.
#include <cuda_runtime.h>

#include <string>

#include "dsv4/cuda/gemv.hpp"

namespace dsv4::cuda {
namespace {

void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw Error(std::string("cuda: ") + what + ": " + cudaGetErrorString(e));
}

// Same bits as numeric/e8m0.hpp: 2^(b-127), b = 0 the subnormal 2^-127, b = 255 NaN.
__device__ __forceinline__ float e8m0(uint8_t b) {
  return b == 255 ? __int_as_float(0x7fc00000) : __uint_as_float(b == 0 ? 0x00400000u : uint32_t(b) << 23);
}

__device__ __forceinline__ float e4m3(uint8_t b) {
  const int exp = (b >> 3) & 0xF, man = b & 0x7;
  if (exp == 0xF && man == 0x7) return __int_as_float(0x7fc00000);
  const float v = exp == 0 ? ldexpf(float(man), -9) : ldexpf(float(8 + man), exp - 10);
  return (b & 0x80) ? -v : v;
}

__constant__ float kE2m1[16] = {0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f,
                                -0.0f, -0.5f, -1.0f, -1.5f, -2.0f, -3.0f, -4.0f, -6.0f};

__device__ __forceinline__ float weight(const MatrixView& w, int64_t i, int64_t j) {
  switch (w.kind) {
    case MatrixView::F32: return reinterpret_cast<const float*>(w.data)[i * w.k + j];
    case MatrixView::Bf16: {
      const uint16_t h = reinterpret_cast<const uint16_t*>(w.data)[i * w.k + j];
      return __uint_as_float(uint32_t(h) << 16);
    }
    case MatrixView::Fp8Block: {
      const int64_t sc = (w.k + w.bn - 1) / w.bn, idx = (i / w.bm) * sc + j / w.bn;
      const float s = w.scale_is_f32 ? reinterpret_cast<const float*>(w.scale)[idx] : e8m0(w.scale[idx]);
      return e4m3(w.data[i * w.k + j]) * s;
    }
    default: {
      const uint8_t b = w.data[i * (w.k / 2) + j / 2];
      const int64_t sc = (w.k + w.group - 1) / w.group;
      return kE2m1[(j & 1) ? (b >> 4) : (b & 0xF)] * e8m0(w.scale[i * sc + j / w.group]);
    }
  }
}

// grid (ceil(N/8), batch), block 256 = 8 warps, one row each.
__global__ void gemv_kernel(MatrixView w, const float* __restrict__ x, float* __restrict__ y) {
  const int64_t row = int64_t(blockIdx.x) * 8 + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (row >= w.n) return;
  const float* xb = x + int64_t(blockIdx.y) * w.k;
  float acc = 0.0f;
  for (int64_t j = lane; j < w.k; j += 32) acc += weight(w, row, j) * xb[j];
  for (int o = 16; o > 0; o /= 2) acc += __shfl_xor_sync(0xffffffffu, acc, o);
  if (lane == 0) y[int64_t(blockIdx.y) * w.n + row] = acc;
}

// Fast path: each lane reads 16 weight bytes at once (one FP4 group of 32, 16 FP8 values in one
// scale tile, or 8 BF16) and applies them to up to 8 batch rows, so the weights stream once per
// 8 rows. Needs 16-byte aligned rows (checked on the host). grid (ceil(N/8), ceil(batch/8)).
template <int Kind>
__global__ void gemv_vec_kernel(MatrixView w, const float* __restrict__ x, float* __restrict__ y, int batch) {
  const int64_t row = int64_t(blockIdx.x) * 8 + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (row >= w.n) return;
  const int b0 = blockIdx.y * 8, nb = min(8, batch - b0);
  constexpr int per = Kind == MatrixView::Fp4Group ? 32 : Kind == MatrixView::Fp8Block ? 16 : 8;
  const int64_t row_bytes = Kind == MatrixView::Fp4Group ? w.k / 2 : Kind == MatrixView::Fp8Block ? w.k : w.k * 2;
  const uint4* wr = reinterpret_cast<const uint4*>(w.data + row * row_bytes);
  const int64_t chunks = row_bytes / 16;
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  for (int64_t c = lane; c < chunks; c += 32) {
    const uint4 q = __ldg(wr + c);
    const uint32_t words[4] = {q.x, q.y, q.z, q.w};
    float v[per];
    const int64_t j0 = c * per;
    if constexpr (Kind == MatrixView::Fp4Group) {
      const float s = e8m0(w.scale[row * ((w.k + 31) / 32) + j0 / 32]);
#pragma unroll
      for (int t = 0; t < 16; ++t) {
        const uint32_t b = (words[t / 4] >> (8 * (t % 4))) & 0xFF;
        v[2 * t] = kE2m1[b & 0xF] * s;
        v[2 * t + 1] = kE2m1[b >> 4] * s;
      }
    } else if constexpr (Kind == MatrixView::Fp8Block) {
      const int64_t idx = (row / w.bm) * ((w.k + w.bn - 1) / w.bn) + j0 / w.bn;
      const float s = w.scale_is_f32 ? reinterpret_cast<const float*>(w.scale)[idx] : e8m0(w.scale[idx]);
#pragma unroll
      for (int t = 0; t < 16; ++t) v[t] = e4m3(uint8_t(words[t / 4] >> (8 * (t % 4)))) * s;
    } else {
#pragma unroll
      for (int t = 0; t < 8; ++t) v[t] = __uint_as_float(((words[t / 2] >> (16 * (t % 2))) & 0xFFFF) << 16);
    }
#pragma unroll
    for (int b = 0; b < 8; ++b) {
      if (b >= nb) break;
      const float4* xv = reinterpret_cast<const float4*>(x + int64_t(b0 + b) * w.k + j0);
      float a = 0;
#pragma unroll
      for (int t = 0; t < per / 4; ++t) {
        const float4 xx = __ldg(xv + t);
        a += v[4 * t] * xx.x + v[4 * t + 1] * xx.y + v[4 * t + 2] * xx.z + v[4 * t + 3] * xx.w;
      }
      acc[b] += a;
    }
  }
#pragma unroll
  for (int b = 0; b < 8; ++b) {
    float a = acc[b];
    for (int o = 16; o > 0; o /= 2) a += __shfl_xor_sync(0xffffffffu, a, o);
    if (lane == 0 && b < nb) y[int64_t(b0 + b) * w.n + row] = a;
  }
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

void DeviceMatrix::matvec_device(const float* x, float* y, int64_t batch, void* stream) const {
  if (view_.n == 0 || batch == 0) return;
  const auto st = static_cast<cudaStream_t>(stream);
  // The vector path needs 16-byte rows of weights and of x, whole scale groups per 16 bytes.
  const bool x_ok = (reinterpret_cast<uintptr_t>(x) % 16 == 0) && view_.k % 32 == 0;
  const dim3 vgrid(unsigned((view_.n + 7) / 8), unsigned((batch + 7) / 8));
  if (x_ok && view_.kind == MatrixView::Fp4Group && view_.group == 32) {
    gemv_vec_kernel<MatrixView::Fp4Group><<<vgrid, 256, 0, st>>>(view_, x, y, int(batch));
  } else if (x_ok && view_.kind == MatrixView::Fp8Block && view_.bn % 16 == 0) {
    gemv_vec_kernel<MatrixView::Fp8Block><<<vgrid, 256, 0, st>>>(view_, x, y, int(batch));
  } else if (x_ok && view_.kind == MatrixView::Bf16) {
    gemv_vec_kernel<MatrixView::Bf16><<<vgrid, 256, 0, st>>>(view_, x, y, int(batch));
  } else {
    const dim3 grid(unsigned((view_.n + 7) / 8), unsigned(batch));
    gemv_kernel<<<grid, 256, 0, st>>>(view_, x, y);
  }
  check(cudaGetLastError(), "gemv launch");
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
