#pragma once
// The device-side collective a DeviceModel split over ranks needs (expert parallelism): an
// all-gather of device floats, enqueued on the model's stream. The model sums the gathered MoE
// shares in rank order (bit-identical on every rank) and places the head's vocabulary blocks from
// the gathered logits. Two implementations:
//   NcclCommunicator (dsv4/cuda/nccl_communicator.hpp): one process per GPU, through NCCL;
//   LocalDeviceCommunicator (below): ranks as threads of one process sharing one GPU, meeting at a
//   LocalGroup's barrier and copying device to device (tests; not for speed).
// This header includes no CUDA header.
#include <cstdint>

#include "dsv4/core/local_group.hpp"

namespace dsv4::cuda {

class DeviceCommunicator {
 public:
  virtual ~DeviceCommunicator() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  // recv [size, count] <- every rank's send [count], in rank order, on every rank (device pointers;
  // send and recv do not overlap). Ordered on `stream` (a cudaStream_t): work enqueued on it later
  // sees recv. An implementation may block the host until the data is there.
  virtual void allgather(const float* send, int64_t count, float* recv, void* stream) = 0;
  // True when allgather makes no host rendezvous, so that decode steps with it inside may be captured
  // as CUDA graphs; false: a split DeviceModel launches every step directly.
  virtual bool graph_capturable() const { return false; }
};

// Rank `rank` of `group`, every rank a thread of this process on the current GPU (each thread must
// use the same device). allgather synchronizes the stream, meets the other ranks at the barrier,
// copies their buffers (device to device) and meets them again before returning.
class LocalDeviceCommunicator final : public DeviceCommunicator {
 public:
  LocalDeviceCommunicator(LocalGroup& group, int rank) : group_(group), rank_(rank) {}
  int rank() const override { return rank_; }
  int size() const override { return group_.size(); }
  void allgather(const float* send, int64_t count, float* recv, void* stream) override;  // src/cuda/device_communicator.cpp

 private:
  LocalGroup& group_;
  int rank_;
};

}  // namespace dsv4::cuda
