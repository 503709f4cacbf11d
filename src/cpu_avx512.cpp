// AVX-512 (F, BW, VL, DQ) instances of the CPU kernels (compiled with -mavx512*; see CMakeLists.txt).
#include "dsv4/kernels/cpu/fast_bundle.hpp"

namespace dsv4::cpu {
MatmulFn matmul_fn_avx512(bool vbmi) {
  if (vbmi) return &simd_matmul<xsimd::avx512bw, false, true>;
  return &simd_matmul<xsimd::avx512bw, false>;
}
IndexerFn indexer_fn_avx512() { return &simd_indexer_scores<xsimd::avx512bw>; }
}  // namespace dsv4::cpu
