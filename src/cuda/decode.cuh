#pragma once
// Device-side decoding of the stored weight formats, bit for bit what numeric/*.hpp do on the host.
#include <cuda_fp8.h>
#include <cuda_runtime.h>

#include <atomic>
#include <mutex>
#include <string>

#include "cuda_check.hpp"
#include "dsv4/core/error.hpp"
#include "dsv4/cuda/gemv.hpp"

namespace dsv4::cuda {


// Lets `kernel` take `bytes` of dynamic shared memory. `raised` (one per kernel, static at the call
// site) is the largest size set so far: the limit is raised only for a larger size, so captured
// steps make no such call, and under one lock, so threads launching the same kernel (ranks as
// threads, LocalDeviceCommunicator) never lower it under each other. A size already allowed takes
// one atomic load and no lock.
template <class Kernel>
void raise_dynamic_smem(Kernel* kernel, size_t bytes, std::atomic<size_t>& raised, const char* what) {
  if (bytes <= raised.load(std::memory_order_acquire)) return;
  static std::mutex m;
  std::lock_guard<std::mutex> lock(m);
  if (bytes <= raised.load(std::memory_order_relaxed)) return;
  check(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes)), what);
  raised.store(bytes, std::memory_order_release);
}

// Tensor-core and asynchronous-copy primitives of the GEMV (gemv.cu) and the prefill kernels
// (prefill.cu). d [16 x 8] += a [16 x 16] b [16 x 8], fp32 accumulation; F16: f16 inputs, else bf16.
template <bool F16 = true>
__device__ __forceinline__ void mma16816(float (&d)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
                                         uint32_t b0, uint32_t b1) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  if constexpr (F16)
    asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
  else
    asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
#else
  __trap();  // the host dispatch takes these paths only on compute capability >= 8.0
#endif
}
template <bool F16 = true>
__device__ __forceinline__ void mma16816(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  mma16816<F16>(d, a[0], a[1], a[2], a[3], b0, b1);
}

// 16 bytes global -> shared (the shared address `dst`); zeros when !valid (a source size of 0: src is
// not read, so it may point past an allocation, as compilers' masked cp.async does; pgemv passes
// the addresses of rows past the matrix that way). The "memory" clobbers keep the compiler from
// moving shared-memory accesses across the copies' issue and completion.
__device__ __forceinline__ void cp_async16(uint32_t dst, const void* src, bool valid) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(valid ? 16 : 0) : "memory");
}
__device__ __forceinline__ void cp_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
// Until at most N of this thread's committed copy groups are pending.
template <int N>
__device__ __forceinline__ void cp_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

// 2^(b-127); b = 0 is the subnormal 2^-127, b = 255 NaN.
__device__ __forceinline__ float e8m0(uint8_t b) {
  return b == 255 ? __int_as_float(0x7fc00000) : __uint_as_float(b == 0 ? 0x00400000u : uint32_t(b) << 23);
}

// E4M3 (finite, NaN for S.1111.111), through the hardware conversion to half.
__device__ __forceinline__ float e4m3(uint8_t b) {
  const __half_raw h = __nv_cvt_fp8_to_halfraw(__nv_fp8_storage_t(b), __NV_E4M3);
  return __half2float(__half(h));
}

// E2M1 nibble: bits built directly (no table): e = 0 gives 0 or 0.5, else 2^(e-1) (1 + m/2).
__device__ __forceinline__ float e2m1(uint32_t nib) {
  const uint32_t e = (nib >> 1) & 3u, m = nib & 1u;
  const uint32_t mag = e ? ((e + 126u) << 23) | (m << 22) : (m ? (126u << 23) : 0u);
  return __uint_as_float(mag | ((nib & 8u) << 28));
}

__device__ __forceinline__ float bf16(uint16_t h) { return __uint_as_float(uint32_t(h) << 16); }

// Element (i, j) of a stored matrix, decoded.
__device__ __forceinline__ float weight_at(const MatrixView& w, int64_t i, int64_t j) {
  switch (w.kind) {
    case MatrixView::F32: return reinterpret_cast<const float*>(w.data)[i * w.k + j];
    case MatrixView::Bf16: return bf16(reinterpret_cast<const uint16_t*>(w.data)[i * w.k + j]);
    case MatrixView::Fp8Block: {
      const int64_t sc = (w.k + w.bn - 1) / w.bn, idx = (i / w.bm) * sc + j / w.bn;
      const float s = w.scale_is_f32 ? reinterpret_cast<const float*>(w.scale)[idx] : e8m0(w.scale[idx]);
      return e4m3(w.data[i * w.k + j]) * s;
    }
    default: {
      const uint8_t b = w.data[i * (w.k / 2) + j / 2];
      const int64_t sc = (w.k + w.group - 1) / w.group;
      return e2m1((j & 1) ? (b >> 4) : (b & 0xF)) * e8m0(w.scale[i * sc + j / w.group]);
    }
  }
}

}  // namespace dsv4::cuda
