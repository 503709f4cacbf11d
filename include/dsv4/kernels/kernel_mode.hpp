#pragma once
// The numerics a run uses, on any backend: Reference is the fp32 oracle; Fast is the backend's
// fast path (CPU: FastCpu's SIMD kernels; CUDA: tensor-core BF16 GEMMs for prefill), held to the
// fast-mode bounds (README).
#include <string_view>

#include "dsv4/core/error.hpp"

namespace dsv4 {

enum class KernelMode { Fast, Reference };

inline KernelMode parse_kernel_mode(std::string_view s) {
  if (s == "fast") return KernelMode::Fast;
  if (s == "reference") return KernelMode::Reference;
  fail("unknown kernel mode '", s, "' (reference or fast)");
}

inline const char* kernel_mode_name(KernelMode m) { return m == KernelMode::Fast ? "fast" : "reference"; }

}  // namespace dsv4
