#pragma once
// The device collective over NCCL: one process per GPU (e.g. one MPI rank each), for a DeviceModel
// split over ranks. Defined only where dsv4::cuda was built with NCCL (the macro DSV4_WITH_NCCL;
// CMake option DSV4_WITH_NCCL, on when nccl.h and libnccl are found).
//
//   dsv4::MpiRuntime mpi(&argc, &argv);                      // dsv4/dist/mpi_communicator.hpp
//   dsv4::MpiCommunicator host;
//   dsv4::cuda::NcclCommunicator nccl(host);                  // picks and sets this rank's GPU
//   const dsv4::Model m = dsv4::Model::load(dir, dsv4::Distribution{&host});
//   dsv4::cuda::DeviceOptions o;  o.comm = &nccl;
//   dsv4::cuda::DeviceModel gpu(m, o);
#include <memory>

#include "dsv4/core/communicator.hpp"
#include "dsv4/cuda/device_communicator.hpp"

#if defined(DSV4_WITH_NCCL)
namespace dsv4::cuda {

class NcclCommunicator final : public DeviceCommunicator {
 public:
  // Collective over every rank of `host`. Picks this rank's GPU: `device` if >= 0, else its rank
  // among the ranks on the same host (by host name), or device 0 where only one is visible (one
  // CUDA_VISIBLE_DEVICES each); makes it current. Fails on every rank alike when two ranks would
  // share one GPU (NCCL cannot put two ranks on one device) or a rank has no GPU. The NCCL unique
  // id is made on rank 0 and sent to the others through `host`.
  explicit NcclCommunicator(Communicator& host, int device = -1);
  ~NcclCommunicator() override;
  NcclCommunicator(const NcclCommunicator&) = delete;
  NcclCommunicator& operator=(const NcclCommunicator&) = delete;

  int rank() const override;
  int size() const override;
  int device() const;  // the CUDA device this rank uses
  void allgather(const float* send, int64_t count, float* recv, void* stream) override;
  // NCCL's collectives may be captured in CUDA graphs; off unless DSV4_NCCL_GRAPHS=1 (not yet run on
  // two GPUs: the first 2-GPU session checks it).
  bool graph_capturable() const override;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace dsv4::cuda
#endif
