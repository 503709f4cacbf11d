// LocalDeviceCommunicator: ranks as threads on one GPU (see dsv4/cuda/device_communicator.hpp).
#include "dsv4/cuda/device_communicator.hpp"

#include <cuda_runtime.h>

#include <string>

#include "cuda_check.hpp"

namespace dsv4::cuda {

void LocalDeviceCommunicator::allgather(const float* send, int64_t count, float* recv, void* stream) {
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  check(cudaStreamSynchronize(s), "local allgather: this rank's share");  // send is complete
  group_.publish(rank_, send);
  group_.barrier();
  for (int r = 0; r < group_.size(); ++r)
    check(cudaMemcpyAsync(recv + int64_t(r) * count, group_.published(r), size_t(count) * sizeof(float),
                          cudaMemcpyDeviceToDevice, s),
          "local allgather: copy");
  check(cudaStreamSynchronize(s), "local allgather: copy");
  group_.barrier();  // no rank overwrites its send buffer before every rank copied it
}

}  // namespace dsv4::cuda
