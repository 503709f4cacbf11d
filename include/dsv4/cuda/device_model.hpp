#pragma once
// The CUDA backend's model: a loaded dsv4::Model's weights uploaded once to the GPU in their stored
// formats, and the whole forward pass on the device: for DeepSeek-V4 embedding, mHC, the three V4
// attention kinds with their compressors and Lightning Indexer, routing, experts, head; for
// DeepSeek-V3 the plain residual, MLA over a latent cache, dense MLP layers and the group-limited
// router, with the same expert, GEMV/GEMM and head paths. Only the token ids go in
// and the wanted logits come out; nothing else crosses to the host during a forward.
//
//   const dsv4::Model model = dsv4::Model::load(dir);              // mmapped checkpoint
//   dsv4::cuda::DeviceModel gpu(model);                             // uploads the weights
//   dsv4::cuda::DeviceCache cache = gpu.new_cache();
//   std::vector<float> logits;
//   dsv4::cuda::DeviceSequenceInput in{&cache, prompt_ids};
//   gpu.forward({&in, 1}, logits, dsv4::LogitRows::Last);          // [1, vocab]
//
// This header includes no CUDA header; link dsv4::cuda (src/cuda/) to use it.
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "dsv4/cuda/gemv.hpp"
#include "dsv4/kernels/kernel_mode.hpp"
#include "dsv4/model/model.hpp"

namespace dsv4::cuda {

class DeviceCommunicator;  // dsv4/cuda/device_communicator.hpp

struct DeviceOptions {
  // Reference: fp32 everywhere (GEMVs over the stored weights, any batch). Fast: the same for
  // decode; a forward of 32 rows or more runs its projections and experts as cuBLAS BF16 GEMMs
  // (weights decoded to BF16 exactly, activations rounded to BF16, fp32 accumulation).
  KernelMode mode = KernelMode::Fast;
  // The most tokens one sequence may reach: sizes each cache's compressed entries. A forward
  // that would go past it fails with a message naming it.
  int64_t max_context = 8192;
  // Replay decode steps (one token per sequence) as CUDA graphs: the first step at a batch size runs
  // directly, the second is captured, later ones replay it (no per-kernel launch cost). Off: every
  // step launches its kernels.
  bool cuda_graphs = true;
  // A model loaded split over ranks (Model::load with a Distribution, expert parallelism) needs the
  // device collective of the same ranks: NcclCommunicator (one process per GPU) or
  // LocalDeviceCommunicator (threads of one process on one GPU). Each rank uploads only its experts
  // (the shared expert on rank 0) and its head block; the MoE shares are summed over the ranks after
  // every MoE layer and the logits gathered, so every rank returns the full logits and the same
  // greedy ids. Decode steps are captured as graphs only where comm->graph_capturable().
  DeviceCommunicator* comm = nullptr;
};

class DeviceModel;

// One sequence's attention state on the device (sliding-window ring, compressor state and entries
// of every layer). Made by DeviceModel::new_cache; movable, not copyable.
class DeviceCache {
 public:
  DeviceCache(DeviceCache&&) noexcept;
  DeviceCache& operator=(DeviceCache&&) noexcept;
  ~DeviceCache();
  int64_t position() const;
  int64_t device_bytes() const;

 private:
  friend class DeviceModel;
  struct Impl;
  explicit DeviceCache(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

struct DeviceSequenceInput {
  DeviceCache* cache;
  std::span<const int32_t> tokens;
};

class DeviceModel {
 public:
  // Uploads every weight of `model` (which must outlive nothing: the device copy is independent).
  // Fails with a clear message for what the backend does not run (tensor parallelism, a split model
  // without options.comm, a split DeepSeek-V3 model, an MLA context past the shared memory).
  explicit DeviceModel(const Model& model, DeviceOptions options = {});
  ~DeviceModel();
  DeviceModel(const DeviceModel&) = delete;
  DeviceModel& operator=(const DeviceModel&) = delete;

  const ModelConfig& config() const;
  const DeviceOptions& options() const;
  DeviceCache new_cache() const;

  // Runs a batch of sequences, each continuing its own cache; logits [sum of tokens, V] (All) or
  // [sequences, V] (Last), as Model::forward. Bad input is rejected before any cache changes.
  void forward(std::span<const DeviceSequenceInput> batch, std::vector<float>& logits, LogitRows rows = LogitRows::All);
  // The same forward with the greedy choice made on the device: next [sequences] = the argmax of each
  // sequence's last logits row (ties to the lowest id, as dsv4::argmax); only those ids come back.
  void forward_greedy(std::span<const DeviceSequenceInput> batch, std::vector<int32_t>& next);

  int64_t weight_bytes() const;         // weight bytes resident on the device
  // Stored bytes of the weights one decoded token reads: dense + shared + k experts of each MoE
  // layer + head (the same count dsv4 bench reports for the CPU).
  int64_t active_bytes_per_token() const;
  std::string device_name() const;

  // With DSV4_CUDA_PROFILE=1 in the environment: device milliseconds per part of the forward
  // (embed, mhc, attn.*, moe.*, head) since the last call, summed over forwards; then cleared.
  // Parts left over at destruction are printed to stderr. Empty without the variable.
  std::vector<std::pair<std::string, double>> take_profile();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  // forward and forward_greedy: logits, or (ids) each wanted row's argmax.
  void run(std::span<const DeviceSequenceInput> batch, std::vector<float>* logits, std::vector<int32_t>* ids,
           LogitRows rows);
};

}  // namespace dsv4::cuda
