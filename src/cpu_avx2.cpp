// AVX2 + FMA instances of the CPU kernels (compiled with -mavx2 -mfma; see CMakeLists.txt).
#include "dsv4/kernels/cpu/fast_bundle.hpp"

namespace dsv4::cpu {
MatmulFn matmul_fn_avx2() { return &simd_matmul<xsimd::fma3<xsimd::avx2>>; }
IndexerFn indexer_fn_avx2() { return &simd_indexer_scores<xsimd::fma3<xsimd::avx2>>; }
}  // namespace dsv4::cpu
