#pragma once
// Programmatic dependent launch (PDL, compute capability 9.0): a kernel launched through
// pdl::launch may start while the kernel before it on the stream still runs. Every such kernel calls
// pdl::wait() before it reads anything an earlier kernel wrote or writes anything one reads (until
// then it may only touch inputs no kernel writes, such as weights), and pdl::trigger() to let the
// next kernel start early. Launched without the attribute (pdl_enabled() false, or an older GPU)
// both instructions do nothing. Since every kernel waits for the one before it, completion is
// transitive: a kernel that passed wait() sees the results of every earlier kernel of the stream.
#include <cuda_runtime.h>

#include <cstdint>

#include "cuda_check.hpp"
#include "dsv4/cuda/gemv.hpp"

namespace dsv4::cuda::pdl {

// Blocks until the kernels this one depends on have completed and their writes are visible.
__device__ __forceinline__ void wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;\n" ::: "memory");
#endif
}
// Lets the next kernel of the stream be scheduled once every block of this one has called it (or exited).
__device__ __forceinline__ void trigger() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
#endif
}
// Both, at the top of a kernel that reads earlier results from its first instruction on.
__device__ __forceinline__ void begin() {
  wait();
  trigger();
}

// Launches kernel<<<grid, block, smem, s>>>(args...), with programmatic stream serialization when
// pdl_enabled(). The arguments convert to the kernel's parameter types as in a <<<>>> launch.
template <class... Params, class... Args>
void launch(void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem, cudaStream_t s, Args&&... args) {
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[0].val.programmaticStreamSerializationAllowed = 1;
  cudaLaunchConfig_t cfg{};
  cfg.gridDim = grid, cfg.blockDim = block, cfg.dynamicSmemBytes = smem, cfg.stream = s;
  cfg.attrs = attr, cfg.numAttrs = pdl_enabled() ? 1 : 0;
  // A launch error is left for the caller's launched() check, as after <<<>>>.
  (void)cudaLaunchKernelEx(&cfg, kernel, std::forward<Args>(args)...);
}

}  // namespace dsv4::cuda::pdl
