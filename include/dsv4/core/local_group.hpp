#pragma once
// Ranks as threads of one process: a Communicator per rank whose collectives meet at a barrier and
// copy through the process's memory. For tests of a split model without MPI, and for several
// device models sharing one GPU (dsv4/cuda/device_communicator.hpp builds on the same barrier).
//
//   dsv4::LocalGroup group(2);
//   // thread r:  Model m = Model::load(dir, Distribution{&group.comm(r)});
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <vector>

#include "dsv4/core/communicator.hpp"

namespace dsv4 {

class LocalGroup {
 public:
  // `timeout_s`: how long a rank waits at a barrier for the others before it fails (a rank that
  // threw or ended must not leave the rest waiting forever).
  explicit LocalGroup(int size, double timeout_s = 300) : size_(size), timeout_s_(timeout_s), slots_(size_t(size)) {
    if (size < 1) fail("LocalGroup: size must be >= 1");
    for (int r = 0; r < size; ++r) comms_.push_back(std::make_unique<RankComm>(*this, r));
  }
  LocalGroup(const LocalGroup&) = delete;
  LocalGroup& operator=(const LocalGroup&) = delete;

  int size() const { return size_; }
  Communicator& comm(int rank) { return *comms_.at(size_t(rank)); }

  // Returns once every rank has called it for this round; throws after the timeout (and every later
  // call throws too: the group is broken once a rank went missing).
  void barrier() {
    std::unique_lock<std::mutex> lock(mu_);
    if (broken_) fail("LocalGroup: a rank went missing earlier; the group is broken");
    const uint64_t round = round_;
    if (++arrived_ == size_) {
      arrived_ = 0, ++round_;
      cv_.notify_all();
      return;
    }
    const auto limit = std::chrono::duration<double>(timeout_s_);
    if (!cv_.wait_for(lock, limit, [&] { return round_ != round || broken_; }) || broken_) {
      broken_ = true;
      cv_.notify_all();
      fail("LocalGroup: a rank waited ", timeout_s_, " s at a barrier for the other ranks of ", size_,
           " (a rank failed or stopped calling collectives)");
    }
  }
  // Each rank leaves one pointer in its slot; after the next barrier every rank may read all slots.
  void publish(int rank, const void* p) { slots_.at(size_t(rank)) = p; }
  const void* published(int rank) const { return slots_.at(size_t(rank)); }

 private:
  class RankComm final : public Communicator {
   public:
    RankComm(LocalGroup& g, int rank) : g_(g), rank_(rank) {}
    int rank() const override { return rank_; }
    int size() const override { return g_.size_; }
    void allgather(const void* send, size_t bytes, void* recv) override {
      const auto t0 = std::chrono::steady_clock::now();
      g_.publish(rank_, send);
      g_.barrier();
      for (int r = 0; r < g_.size_; ++r)
        if (bytes) std::memcpy(static_cast<char*>(recv) + size_t(r) * bytes, g_.published(r), bytes);
      g_.barrier();  // no rank reuses its send buffer before all have read it
      seconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    }

   private:
    LocalGroup& g_;
    int rank_;
  };

  int size_;
  double timeout_s_;
  std::vector<const void*> slots_;
  std::vector<std::unique_ptr<RankComm>> comms_;
  std::mutex mu_;
  std::condition_variable cv_;
  int arrived_ = 0;
  uint64_t round_ = 0;
  bool broken_ = false;
};

}  // namespace dsv4
