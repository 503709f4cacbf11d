// AVX-512 + AVX512_BF16 instance of the Lightning Indexer scores (vdpbf16ps for BF16 / FP4 keys;
// compiled with -mavx512bf16 on top of the AVX-512 flags, see cmake/dsv4CpuKernels.cmake). Only the
// indexer has this instance: the matmul kernels keep the AVX-512 ones.
#include "dsv4/kernels/cpu/fast_bundle.hpp"

namespace dsv4::cpu {
IndexerFn indexer_fn_avx512bf16() { return &simd_indexer_scores<xsimd::avx512bw, true>; }
}  // namespace dsv4::cpu
