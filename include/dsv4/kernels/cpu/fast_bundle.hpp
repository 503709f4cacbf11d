#pragma once
// FastCpu: the SIMD bundle. Weights are decoded in registers (kernels/cpu/simd_matmul.hpp);
// activations and accumulation stay fp32, except for FP4 experts on AVX2/AVX-512, whose products
// are integer (16-bit activations per group of 32, kernels/cpu/fp4_integer.hpp).
//
// Architecture choice: a header-only build compiles the kernels for xsimd's default_arch (what
// the compiler flags allow, e.g. -march=native). A build that defines DSV4_MULTIARCH links the
// dsv4::cpu_kernels library, which holds AVX2+FMA, AVX-512 and AVX-512 VNNI instances of the same
// templates, and picks one at start-up from cpuid. DSV4_ISA=avx2|avx512|avx512vnni|generic in the
// environment forces a lower one (tests use it to run the AVX2 path on AVX-512 machines).
//
// The Lightning Indexer scores (kernels/cpu/simd_indexer.hpp) have one more instance, AVX-512 with
// AVX512_BF16 (vdpbf16ps, q rounded to bf16) for BF16 and FP4 keys. It is taken only where the CPU
// runs vdpbf16ps faster than fp32 FMA (measured once at start-up, ~1 ms; it needs a 25% margin):
// on Sapphire Rapids it is half as fast, so the fp32 instance runs there. DSV4_INDEXER_DOT=bf16|fp32
// forces the choice (bf16 needs AVX512_BF16 and an AVX-512 ISA).
#include <cstdlib>
#include <string>
#include <string_view>

#include "dsv4/core/error.hpp"
#include "dsv4/core/peak_flops.hpp"
#include "dsv4/kernels/bundle.hpp"
#include "dsv4/kernels/cpu/simd_indexer.hpp"
#include "dsv4/kernels/cpu/simd_matmul.hpp"

namespace dsv4::cpu {

enum class Isa { Generic, Avx2, Avx512, Avx512Vnni };

inline const char* isa_name(Isa i) {
  switch (i) {
    case Isa::Generic: return "generic";
    case Isa::Avx2: return "avx2";
    case Isa::Avx512: return "avx512";
    case Isa::Avx512Vnni: return "avx512vnni";
  }
  return "?";
}

using MatmulFn = void (*)(const Matrix&, const float*, int64_t, int64_t, float*, int64_t, int64_t, int64_t);

#if defined(DSV4_MULTIARCH)
MatmulFn matmul_fn_avx2();    // src/cpu_avx2.cpp
// vbmi: the instance whose FP8 decode uses AVX-512 VBMI (fp8_vbmi.hpp; only where the CPU has it).
MatmulFn matmul_fn_avx512(bool vbmi);      // src/cpu_avx512.cpp
MatmulFn matmul_fn_avx512vnni(bool vbmi);  // src/cpu_avx512vnni.cpp
IndexerFn indexer_fn_avx2();        // src/cpu_avx2.cpp
IndexerFn indexer_fn_avx512();      // src/cpu_avx512.cpp (also used for avx512vnni)
IndexerFn indexer_fn_avx512bf16();  // src/cpu_avx512bf16.cpp: vdpbf16ps for BF16 / FP4 keys
#endif

// Whether the indexer takes its bf16-dot instance: DSV4_INDEXER_DOT, else measured speed.
// `available`: the ISA chosen is AVX-512 and the CPU has AVX512_BF16.
inline bool use_bf16_indexer(bool available) {
  if (const char* env = std::getenv("DSV4_INDEXER_DOT")) {
    const std::string_view want(env);
    if (want == "fp32") return false;
    if (want != "bf16") fail("DSV4_INDEXER_DOT='", want, "': expected bf16 or fp32");
    if (!available) fail("DSV4_INDEXER_DOT=bf16: needs AVX512_BF16 and an AVX-512 ISA (DSV4_ISA)");
    return true;
  }
  return available && bf16_dot_vs_fma_rate() > 1.25;
}

inline bool cpu_has_avx512bf16() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512bf16");
#else
  return false;
#endif
}

inline Isa detected_isa() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
      __builtin_cpu_supports("avx512dq"))
    return __builtin_cpu_supports("avx512vnni") ? Isa::Avx512Vnni : Isa::Avx512;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return Isa::Avx2;
#endif
  return Isa::Generic;
}

struct Dispatch {
  Isa isa = Isa::Generic;
  MatmulFn matmul = nullptr;
  IndexerFn indexer = nullptr;  // Lightning Indexer scores (kernels/cpu/indexer_scores.hpp)
  bool indexer_bf16 = false;    // indexer is the bf16-dot instance
};

inline Dispatch choose_dispatch() {
  Dispatch d;
  d.isa = detected_isa();
  if (const char* env = std::getenv("DSV4_ISA")) {
    std::string_view want(env);
    Isa forced = want == "avx512vnni" ? Isa::Avx512Vnni
                 : want == "avx512"   ? Isa::Avx512
                 : want == "avx2"     ? Isa::Avx2
                 : want == "generic"  ? Isa::Generic
                                      : d.isa;
    if (want != "avx512vnni" && want != "avx512" && want != "avx2" && want != "generic")
      fail("DSV4_ISA='", want, "': expected avx512vnni, avx512, avx2 or generic");
    if (int(forced) > int(d.isa)) fail("DSV4_ISA='", want, "': this CPU supports only ", isa_name(d.isa));
    d.isa = forced;
  }
#if defined(DSV4_MULTIARCH)
  const bool vbmi = cpu_has_avx512vbmi();
  if (d.isa == Isa::Avx512Vnni) d.matmul = matmul_fn_avx512vnni(vbmi), d.indexer = indexer_fn_avx512();
  else if (d.isa == Isa::Avx512) d.matmul = matmul_fn_avx512(vbmi), d.indexer = indexer_fn_avx512();
  else if (d.isa == Isa::Avx2) d.matmul = matmul_fn_avx2(), d.indexer = indexer_fn_avx2();
  else d.matmul = &simd_matmul<xsimd::default_arch>, d.indexer = &simd_indexer_scores<xsimd::default_arch>;
  if (use_bf16_indexer(int(d.isa) >= int(Isa::Avx512) && cpu_has_avx512bf16()))
    d.indexer = indexer_fn_avx512bf16(), d.indexer_bf16 = true;
#else
  // Header-only: one instance, for the architecture the compiler targets.
#if defined(__AVX512VNNI__)
  constexpr bool kVnni = kIsAvx512<xsimd::default_arch>;
#else
  constexpr bool kVnni = false;
#endif
  d.matmul = &simd_matmul<xsimd::default_arch, kVnni>;
  if (cpu_has_avx512vbmi()) d.matmul = &simd_matmul<xsimd::default_arch, kVnni, true>;
  d.indexer = &simd_indexer_scores<xsimd::default_arch>;
#if defined(__AVX512BF16__)
  if constexpr (kIsAvx512<xsimd::default_arch>)
    if (use_bf16_indexer(true)) d.indexer = &simd_indexer_scores<xsimd::default_arch, true>, d.indexer_bf16 = true;
#else
  (void)use_bf16_indexer(false);  // DSV4_INDEXER_DOT=bf16 is refused: not compiled with -mavx512bf16
#endif
  d.isa = kVnni                                ? Isa::Avx512Vnni
          : kIsAvx512<xsimd::default_arch>     ? Isa::Avx512
          : kIsAvx2<xsimd::default_arch>       ? Isa::Avx2
                                               : Isa::Generic;
#endif
  return d;
}

inline const Dispatch& dispatch() {
  static const Dispatch d = choose_dispatch();
  return d;
}

}  // namespace dsv4::cpu

namespace dsv4 {

struct FastCpu {
  static constexpr const char* kName = "fast";
  static constexpr bool kBlockedAttention = true;
  static void matmul(const Matrix& w, const float* x, int64_t ldx, int64_t t, float* y, int64_t ldy, int64_t row0,
                     int64_t row1) {
    cpu::dispatch().matmul(w, x, ldx, t, y, ldy, row0, row1);
  }
  // The Lightning Indexer's scores (contract: kernels/indexer_reference.hpp).
  static void indexer_scores(const float* q, const float* g, int64_t nh, const RowCodec& codec, const uint8_t* keys,
                             int64_t n, float kscale, float* scores) {
    cpu::dispatch().indexer(q, g, nh, codec, keys, n, kscale, scores);
  }
};
static_assert(KernelBundle<FastCpu>);

}  // namespace dsv4
