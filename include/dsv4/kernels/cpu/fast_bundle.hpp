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
#include <cstdlib>
#include <string>
#include <string_view>

#include "dsv4/core/error.hpp"
#include "dsv4/kernels/bundle.hpp"
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
MatmulFn matmul_fn_avx512();  // src/cpu_avx512.cpp
MatmulFn matmul_fn_avx512vnni();  // src/cpu_avx512vnni.cpp
#endif

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
  if (d.isa == Isa::Avx512Vnni) d.matmul = matmul_fn_avx512vnni();
  else if (d.isa == Isa::Avx512) d.matmul = matmul_fn_avx512();
  else if (d.isa == Isa::Avx2) d.matmul = matmul_fn_avx2();
  else d.matmul = &simd_matmul<xsimd::default_arch>;
#else
  // Header-only: one instance, for the architecture the compiler targets.
#if defined(__AVX512VNNI__)
  constexpr bool kVnni = kIsAvx512<xsimd::default_arch>;
#else
  constexpr bool kVnni = false;
#endif
  d.matmul = &simd_matmul<xsimd::default_arch, kVnni>;
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
};
static_assert(KernelBundle<FastCpu>);

}  // namespace dsv4
