// AVX-512 + VNNI instances of the CPU kernels (vpdpbusd in the integer FP4 kernel; see CMakeLists.txt).
#include "dsv4/kernels/cpu/fast_bundle.hpp"

namespace dsv4::cpu {
MatmulFn matmul_fn_avx512vnni(bool vbmi) {
  if (vbmi) return &simd_matmul<xsimd::avx512bw, true, true>;
  return &simd_matmul<xsimd::avx512bw, true>;
}
}  // namespace dsv4::cpu
