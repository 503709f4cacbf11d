#pragma once
// The machine's arithmetic peak, measured: every OpenMP thread runs a loop of independent
// multiply-add chains (16 zmm or 12 ymm accumulators, more than the FMA latency times two ports)
// for a fixed time. Benchmarks quote their FLOP/s as a fraction of this, measured in the same run, like
// memory bandwidth (core/bandwidth.hpp).
//
//   fp32  vfmadd231ps on the widest vectors allowed (AVX-512, else AVX2+FMA): 2 FLOP per lane.
//   bf16  vdpbf16ps (AVX512_BF16), where the CPU has it: 32 bf16 products summed pairwise into 16
//         fp32 lanes, 64 FLOP per instruction (the same count as 2 x 32 fp32 FMA FLOP).
// The loops carry __attribute__((target(...))), so the header needs no -m flags; each is called
// only where __builtin_cpu_supports says the CPU has the instructions.
#include <immintrin.h>

#include <algorithm>
#include <chrono>
#include <cstdint>

#include "dsv4/core/parallel.hpp"

namespace dsv4 {

struct PeakFlops {
  double fp32 = 0;  // FLOP/s, fp32 FMA, all threads
  double bf16 = 0;  // FLOP/s, bf16 dot products (vdpbf16ps); 0 without AVX512_BF16
  const char* fp32_isa = "scalar";
  int threads = 1;
};

namespace peak_detail {

inline constexpr int kChains = 16;      // zmm accumulators (of 32 registers)
inline constexpr int kChainsAvx2 = 12;  // ymm: 16 registers hold 12 accumulators and the 2 constants

// Each loop runs `iters` rounds of kChains independent vector operations and returns a value that
// depends on all of them (so nothing is optimized away). The chains converge (x <- x*m + c with
// m < 1): no overflow, no subnormals.
#if defined(__x86_64__) || defined(__i386__)
__attribute__((target("avx512f"))) inline float fma_loop_avx512(int64_t iters) {
  __m512 acc[kChains];
  for (int i = 0; i < kChains; ++i) acc[i] = _mm512_set1_ps(float(i) * 0.01f);
  const __m512 m = _mm512_set1_ps(0.999999f), c = _mm512_set1_ps(1e-3f);
  for (int64_t it = 0; it < iters; ++it) {
#pragma GCC unroll 16
    for (int i = 0; i < kChains; ++i) acc[i] = _mm512_fmadd_ps(acc[i], m, c);
  }
  __m512 s = acc[0];
  for (int i = 1; i < kChains; ++i) s = _mm512_add_ps(s, acc[i]);
  alignas(64) float v[16];
  _mm512_store_ps(v, s);
  float r = 0;
  for (float x : v) r += x;
  return r;
}

__attribute__((target("avx2,fma"))) inline float fma_loop_avx2(int64_t iters) {
  __m256 acc[kChainsAvx2];
  for (int i = 0; i < kChainsAvx2; ++i) acc[i] = _mm256_set1_ps(float(i) * 0.01f);
  const __m256 m = _mm256_set1_ps(0.999999f), c = _mm256_set1_ps(1e-3f);
  for (int64_t it = 0; it < iters; ++it) {
#pragma GCC unroll 16
    for (int i = 0; i < kChainsAvx2; ++i) acc[i] = _mm256_fmadd_ps(acc[i], m, c);
  }
  __m256 s = acc[0];
  for (int i = 1; i < kChainsAvx2; ++i) s = _mm256_add_ps(s, acc[i]);
  alignas(32) float v[8];
  _mm256_store_ps(v, s);
  float r = 0;
  for (float x : v) r += x;
  return r;
}

// a, b: bf16 pairs of small magnitude (2^-12 each), so the sums grow by 2^-23 per step.
__attribute__((target("avx512f,avx512bf16"))) inline float bf16_loop_avx512(int64_t iters) {
  __m512 acc[kChains];
  for (int i = 0; i < kChains; ++i) acc[i] = _mm512_setzero_ps();
  const __m512i ab = _mm512_set1_epi16(int16_t(0x3980));  // bf16 2^-12
  const __m512bh a = (__m512bh)ab, b = (__m512bh)ab;
  for (int64_t it = 0; it < iters; ++it) {
#pragma GCC unroll 16
    for (int i = 0; i < kChains; ++i) acc[i] = _mm512_dpbf16_ps(acc[i], a, b);
  }
  __m512 s = acc[0];
  for (int i = 1; i < kChains; ++i) s = _mm512_add_ps(s, acc[i]);
  alignas(64) float v[16];
  _mm512_store_ps(v, s);
  float r = 0;
  for (float x : v) r += x;
  return r;
}
#endif

// Runs loop(iters) on every thread at once; FLOP/s over the wall time of the slowest thread.
template <class Loop>
double run_all_threads(Loop loop, double flop_per_iter, double seconds) {
  // Calibrate on one thread (also wakes the vector units up), then size the timed run.
  int64_t iters = 1 << 12;
  volatile float sink = 0;
  for (;;) {
    const auto t0 = std::chrono::steady_clock::now();
    sink = sink + loop(iters);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (s > 0.01 || iters > (int64_t(1) << 40)) {
      iters = std::max<int64_t>(1, int64_t(double(iters) * seconds / s));
      break;
    }
    iters *= 4;
  }
  double best = 0;
  constexpr int kReps = 8;  // short runs, the best one: noise (another process, an interrupt) only slows
  for (int rep = 0; rep < kReps; ++rep) {
    const int64_t n = std::max<int64_t>(1, iters / kReps);
    std::chrono::steady_clock::time_point t0;
    int threads = 1;
    float total = 0;
#pragma omp parallel reduction(+ : total)
    {
#if defined(_OPENMP)
#pragma omp single
      threads = omp_get_num_threads();
#pragma omp barrier
#pragma omp master
#endif
      t0 = std::chrono::steady_clock::now();
#if defined(_OPENMP)
#pragma omp barrier
#endif
      total += loop(n);
    }
    sink = sink + total;
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    best = std::max(best, flop_per_iter * double(n) * threads / s);
  }
  (void)sink;
  return best;
}

}  // namespace peak_detail

// One thread, about a millisecond: the FLOP rate of vdpbf16ps over that of fp32 FMA on the widest
// vectors (both zmm), best of three alternating runs each; 0 where the CPU lacks AVX512_BF16.
// (Sapphire Rapids: ~0.5, vdpbf16ps zmm issues once per 2 cycles against 2 FMA per cycle.)
inline double bf16_dot_vs_fma_rate(int64_t iters = 20000) {
#if defined(__x86_64__) || defined(__i386__)
  using namespace peak_detail;
  __builtin_cpu_init();
  if (!__builtin_cpu_supports("avx512f") || !__builtin_cpu_supports("avx512bf16")) return 0;
  volatile float sink = 0;
  double t_fma = 1e30, t_bf16 = 1e30;
  for (int rep = 0; rep < 3; ++rep) {
    auto t0 = std::chrono::steady_clock::now();
    sink = sink + fma_loop_avx512(iters);
    auto t1 = std::chrono::steady_clock::now();
    sink = sink + bf16_loop_avx512(iters);
    auto t2 = std::chrono::steady_clock::now();
    t_fma = std::min(t_fma, std::chrono::duration<double>(t1 - t0).count());
    t_bf16 = std::min(t_bf16, std::chrono::duration<double>(t2 - t1).count());
  }
  (void)sink;
  // Per iteration: kChains x 32 FLOP (fp32 FMA, 16 lanes) against kChains x 64 FLOP (bf16 dot).
  return (64.0 / t_bf16) / (32.0 / t_fma);
#else
  (void)iters;
  return 0;
#endif
}

// About `seconds` (0.2 by default) in all: half for fp32, half for bf16 where it exists.
// allow_avx512 = false measures the AVX2 peak on an AVX-512 machine (for kernels forced to AVX2).
inline PeakFlops measure_peak_flops(bool allow_avx512 = true, double seconds = 0.2) {
  PeakFlops p;
  p.threads = num_threads();
#if defined(__x86_64__) || defined(__i386__)
  using namespace peak_detail;
  __builtin_cpu_init();
  const bool avx512 = allow_avx512 && __builtin_cpu_supports("avx512f");
  const bool bf16 = avx512 && __builtin_cpu_supports("avx512bf16");
  const double t = bf16 ? seconds / 2 : seconds;
  if (avx512) {
    p.fp32 = run_all_threads(fma_loop_avx512, kChains * 16 * 2.0, t);
    p.fp32_isa = "avx512";
  } else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
    p.fp32 = run_all_threads(fma_loop_avx2, kChainsAvx2 * 8 * 2.0, t);
    p.fp32_isa = "avx2";
  }
  if (bf16) p.bf16 = run_all_threads(bf16_loop_avx512, kChains * 64.0, seconds / 2);
#else
  (void)allow_avx512, (void)seconds;
#endif
  return p;
}

}  // namespace dsv4
