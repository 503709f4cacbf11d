#pragma once
// Kernels for AVX-512 with VBMI and GFNI (Ice Lake, Sapphire Rapids and later; Zen 4), compiled
// in the AVX-512 instances by a function attribute and taken only where cpuid reports both, so
// the instances still run on AVX-512 CPUs without them (Skylake-X, Cascade Lake).
#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
#define DSV4_HAVE_VBMI_KERNELS 1
#define DSV4_TARGET_VBMI __attribute__((target("avx512f,avx512bw,avx512vbmi,gfni")))
#endif

namespace dsv4::cpu {

// Whether the CPU runs the DSV4_TARGET_VBMI kernels (fp8_vbmi.hpp, fp4_vbmi.hpp).
inline bool cpu_has_avx512vbmi() {
#if defined(DSV4_HAVE_VBMI_KERNELS)
  static const bool has = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vbmi") && __builtin_cpu_supports("gfni");
  }();
  return has;
#else
  return false;
#endif
}

}  // namespace dsv4::cpu
