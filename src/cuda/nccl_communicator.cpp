// NcclCommunicator (dsv4/cuda/nccl_communicator.hpp): compiled to nothing without DSV4_WITH_NCCL.
#include "dsv4/cuda/nccl_communicator.hpp"

#if defined(DSV4_WITH_NCCL)
#include <cuda_runtime.h>
#include <nccl.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace dsv4::cuda {

namespace {

void check_nccl(ncclResult_t r, const char* what) {
  if (r != ncclSuccess) fail("nccl: ", what, ": ", ncclGetErrorString(r));
}

// What each rank tells the others about itself before NCCL starts.
struct RankInfo {
  char host[128];
  char uuid[16];  // the GPU's
  int device;     // its index among this process's visible devices
  char error[240];
};

}  // namespace

struct NcclCommunicator::Impl {
  ncclComm_t comm = nullptr;
  int rank = 0, size = 1, device = 0;
  bool graphs = false;
};

NcclCommunicator::NcclCommunicator(Communicator& host, int device) : impl_(std::make_unique<Impl>()) {
  Impl& I = *impl_;
  I.rank = host.rank(), I.size = host.size();
  const size_t p = size_t(I.size);
  RankInfo me{};
  gethostname(me.host, sizeof me.host - 1);
  std::vector<RankInfo> all(p);
  host.allgather(&me, sizeof me, all.data());  // host names first: the local rank picks the GPU
  int local = 0;
  for (int r = 0; r < I.rank; ++r) local += std::strncmp(all[size_t(r)].host, me.host, sizeof me.host) == 0;
  std::string error;
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess || count < 1) {
    error = "no CUDA device is visible";
  } else {
    me.device = device >= 0 ? device : count == 1 ? 0 : local;
    cudaDeviceProp prop{};
    if (me.device >= count)
      error = "rank " + std::to_string(local) + " on host '" + me.host + "' wants GPU " + std::to_string(me.device) +
              " but only " + std::to_string(count) + " are visible (start at most one rank per GPU)";
    else if (cudaSetDevice(me.device) != cudaSuccess || cudaGetDeviceProperties(&prop, me.device) != cudaSuccess)
      error = "GPU " + std::to_string(me.device) + " could not be used";
    else
      std::memcpy(me.uuid, &prop.uuid, sizeof me.uuid);
  }
  std::strncpy(me.error, error.c_str(), sizeof me.error - 1);
  host.allgather(&me, sizeof me, all.data());
  for (size_t r = 0; r < p; ++r)
    if (all[r].error[0]) fail("NCCL setup failed on rank ", r, " of ", p, ": ", all[r].error);
  for (size_t r = 0; r < p; ++r)
    for (size_t q = 0; q < r; ++q)
      if (std::strncmp(all[r].host, all[q].host, sizeof me.host) == 0 && std::memcmp(all[r].uuid, all[q].uuid, 16) == 0)
        fail("ranks ", q, " and ", r, " both run on GPU ", all[r].device, " of host '", all[r].host,
             "': NCCL needs one GPU per rank (start as many ranks per host as it has GPUs, or give each rank its "
             "own CUDA_VISIBLE_DEVICES)");
  I.device = me.device;
  // The unique id from rank 0, to every rank.
  ncclUniqueId id{};
  std::string id_error;
  if (I.rank == 0)
    if (const ncclResult_t r = ncclGetUniqueId(&id); r != ncclSuccess) id_error = ncclGetErrorString(r);
  agree_or_fail(host, "ncclGetUniqueId", id_error);
  std::vector<ncclUniqueId> ids(p);
  host.allgather(&id, sizeof id, ids.data());
  const ncclResult_t init = ncclCommInitRank(&I.comm, I.size, ids[0], I.rank);
  agree_or_fail(host, "ncclCommInitRank", init == ncclSuccess ? "" : ncclGetErrorString(init));
  const char* g = std::getenv("DSV4_NCCL_GRAPHS");
  I.graphs = g && std::string(g) == "1";
}

NcclCommunicator::~NcclCommunicator() {
  if (impl_ && impl_->comm) ncclCommDestroy(impl_->comm);
}

int NcclCommunicator::rank() const { return impl_->rank; }
int NcclCommunicator::size() const { return impl_->size; }
int NcclCommunicator::device() const { return impl_->device; }
bool NcclCommunicator::graph_capturable() const { return impl_->graphs; }

void NcclCommunicator::allgather(const float* send, int64_t count, float* recv, void* stream) {
  check_nccl(ncclAllGather(send, recv, size_t(count), ncclFloat, impl_->comm, static_cast<cudaStream_t>(stream)),
             "all-gather");
}

}  // namespace dsv4::cuda
#endif
