#pragma once
// The machine's memory read bandwidth, measured: every thread streams its own contiguous part of a
// buffer far larger than the caches, the way the decode kernels stream their weights. Benchmarks
// quote their GB/s as a fraction of this, measured in the same run, so it must be the rate the
// memory can deliver, not the rate one loop can consume.
//
// Why vector loads and software prefetch: the scalar sum this replaced (8-byte loads, four
// chains) read 13-16 GB/s on the 2-core development VM where a 64-byte-load loop with prefetch
// reads 20-25 GB/s (2 threads, 1 GiB, same sitting; 1 thread 8-9 against 12-14), and the GEMV
// kernels themselves streamed 12-16 GB/s: ratios against it read above 1 (a "106 % roofline").
// The AVX-512 / AVX2 loops are chosen at run time (this header is compiled with the including
// file's flags), SSE2 otherwise on x86-64, a plain loop elsewhere.
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <memory>

#include "dsv4/core/parallel.hpp"

namespace dsv4 {

namespace bandwidth_detail {

inline constexpr size_t kBlock = 4096;       // bytes per step of a thread's stream
inline constexpr size_t kPrefetch = 2048;    // bytes ahead (with none or 1 KiB: 2-15 % lower)

#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
#define DSV4_BANDWIDTH_X86 1
__attribute__((target("avx512f"))) inline uint64_t sum_avx512(const uint8_t* p, size_t n) {
  __m512i a0 = _mm512_setzero_si512(), a1 = a0, a2 = a0, a3 = a0;
  for (size_t i = 0; i < n; i += 256) {
    for (size_t l = 0; l < 256; l += 64) _mm_prefetch(reinterpret_cast<const char*>(p + i + l + kPrefetch), _MM_HINT_T0);
    a0 = _mm512_add_epi64(a0, _mm512_load_si512(p + i));
    a1 = _mm512_add_epi64(a1, _mm512_load_si512(p + i + 64));
    a2 = _mm512_add_epi64(a2, _mm512_load_si512(p + i + 128));
    a3 = _mm512_add_epi64(a3, _mm512_load_si512(p + i + 192));
  }
  alignas(64) uint64_t o[8];
  _mm512_store_si512(o, _mm512_add_epi64(_mm512_add_epi64(a0, a1), _mm512_add_epi64(a2, a3)));
  return o[0] + o[1] + o[2] + o[3] + o[4] + o[5] + o[6] + o[7];
}

__attribute__((target("avx2"))) inline uint64_t sum_avx2(const uint8_t* p, size_t n) {
  __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
  for (size_t i = 0; i < n; i += 128) {
    _mm_prefetch(reinterpret_cast<const char*>(p + i + kPrefetch), _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(p + i + 64 + kPrefetch), _MM_HINT_T0);
    a0 = _mm256_add_epi64(a0, _mm256_load_si256(reinterpret_cast<const __m256i*>(p + i)));
    a1 = _mm256_add_epi64(a1, _mm256_load_si256(reinterpret_cast<const __m256i*>(p + i + 32)));
    a2 = _mm256_add_epi64(a2, _mm256_load_si256(reinterpret_cast<const __m256i*>(p + i + 64)));
    a3 = _mm256_add_epi64(a3, _mm256_load_si256(reinterpret_cast<const __m256i*>(p + i + 96)));
  }
  alignas(32) uint64_t o[4];
  _mm256_store_si256(reinterpret_cast<__m256i*>(o), _mm256_add_epi64(_mm256_add_epi64(a0, a1), _mm256_add_epi64(a2, a3)));
  return o[0] + o[1] + o[2] + o[3];
}

inline uint64_t sum_sse2(const uint8_t* p, size_t n) {
  __m128i a0 = _mm_setzero_si128(), a1 = a0, a2 = a0, a3 = a0;
  for (size_t i = 0; i < n; i += 64) {
    _mm_prefetch(reinterpret_cast<const char*>(p + i + kPrefetch), _MM_HINT_T0);
    a0 = _mm_add_epi64(a0, _mm_load_si128(reinterpret_cast<const __m128i*>(p + i)));
    a1 = _mm_add_epi64(a1, _mm_load_si128(reinterpret_cast<const __m128i*>(p + i + 16)));
    a2 = _mm_add_epi64(a2, _mm_load_si128(reinterpret_cast<const __m128i*>(p + i + 32)));
    a3 = _mm_add_epi64(a3, _mm_load_si128(reinterpret_cast<const __m128i*>(p + i + 48)));
  }
  alignas(16) uint64_t o[2];
  _mm_store_si128(reinterpret_cast<__m128i*>(o), _mm_add_epi64(_mm_add_epi64(a0, a1), _mm_add_epi64(a2, a3)));
  return o[0] + o[1];
}
#endif

inline uint64_t sum_plain(const uint8_t* p8, size_t n) {
  uint64_t a0 = 0, a1 = 0, a2 = 0, a3 = 0;  // independent chains so loads overlap
  for (size_t i = 0; i + 32 <= n; i += 32) {
    uint64_t v[4];
    std::memcpy(v, p8 + i, 32);
    a0 += v[0], a1 += v[1], a2 += v[2], a3 += v[3];
  }
  return a0 + a1 + a2 + a3;
}

// The widest loop this CPU runs: sum of the n bytes at p (64-byte aligned, n a multiple of kBlock).
inline uint64_t (*stream_sum())(const uint8_t*, size_t) {
#if defined(DSV4_BANDWIDTH_X86)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f")) return &sum_avx512;
  if (__builtin_cpu_supports("avx2")) return &sum_avx2;
  return &sum_sse2;
#else
  return &sum_plain;
#endif
}

}  // namespace bandwidth_detail

// Bytes per second: the best of `repeats` passes of all threads over `bytes` (default 1 GiB).
inline double measure_read_bandwidth(size_t bytes = size_t(1) << 30, int repeats = 3) {
  using namespace bandwidth_detail;
  const size_t blocks = bytes / kBlock;
  // 64-byte aligned and padded for the prefetches that run past the end.
  std::unique_ptr<uint8_t[]> raw(new uint8_t[blocks * kBlock + kPrefetch + 64]);
  uint8_t* buf = raw.get() + (64 - reinterpret_cast<uintptr_t>(raw.get()) % 64) % 64;
  parallel_for(int64_t(blocks), [&](int64_t b) {  // touch from the thread that will read it (first-touch placement)
    std::memset(buf + size_t(b) * kBlock, int(b & 0xFF), kBlock);
  });
  std::memset(buf + blocks * kBlock, 0, kPrefetch);
  const auto sum = stream_sum();
  double best = 0;
  volatile uint64_t sink = 0;
  for (int r = 0; r < repeats; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    uint64_t total = 0;
    // One contiguous range per thread (schedule(static) over blocks), as the GEMVs split rows.
#pragma omp parallel for schedule(static) reduction(+ : total)
    for (int64_t b = 0; b < int64_t(blocks); ++b) total += sum(buf + size_t(b) * kBlock, kBlock);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    sink = sink + total;
    best = std::max(best, double(blocks * kBlock) / s);
  }
  (void)sink;
  return best;  // bytes per second
}

}  // namespace dsv4
