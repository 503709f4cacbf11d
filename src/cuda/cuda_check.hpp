#pragma once
// Host-side error checks and the stream cast, shared by the CUDA backend's .cu and .cpp files.
#include <cuda_runtime.h>

#include <string>

#include "dsv4/core/error.hpp"

namespace dsv4::cuda {

inline void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw Error(std::string("cuda: ") + what + ": " + cudaGetErrorString(e));
}
// After a launch: its configuration error, if any, named.
inline void launched(const char* what) { check(cudaGetLastError(), what); }
// The kernels' launchers take the stream as void* (kernels.hpp stays free of CUDA headers).
inline cudaStream_t st(void* s) { return static_cast<cudaStream_t>(s); }

}  // namespace dsv4::cuda
