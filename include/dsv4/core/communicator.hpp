#pragma once
// The collectives a model split over ranks needs, behind a small interface so the header-only core
// never includes a transport: dsv4/dist/mpi_communicator.hpp implements it over MPI, and a caller may
// bring its own (another MPI communicator, a test double).
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "dsv4/core/error.hpp"

namespace dsv4 {

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  // Every rank's `bytes` bytes, in rank order, on every rank: send [bytes] -> recv [size * bytes].
  // Must fail (throw dsv4::Error) rather than wait forever when a rank does not arrive.
  virtual void allgather(const void* send, size_t bytes, void* recv) = 0;
  // Wall time spent inside collectives so far (transfer plus waiting for slower ranks).
  double seconds_in_collectives() const { return seconds_; }

 protected:
  double seconds_ = 0;
};

// x [n] <- the sum over ranks of x [n], summed in rank order on every rank, so that every rank holds
// bit-identical values: replicated parts of the model (attention, norms, the sampler) then stay in
// lockstep, which an MPI_Allreduce does not promise (its reduction order may differ per rank).
// The gather buffer is kept per thread across calls: no allocation per layer and token.
inline void allreduce_sum(Communicator& comm, float* x, int64_t n) {
  const int p = comm.size();
  if (p == 1 || n == 0) return;
  thread_local std::vector<float> scratch;
  scratch.resize(size_t(p) * size_t(n));
  comm.allgather(x, size_t(n) * sizeof(float), scratch.data());
  for (int64_t i = 0; i < n; ++i) {
    float s = scratch[size_t(i)];
    for (int r = 1; r < p; ++r) s += scratch[size_t(r) * size_t(n) + size_t(i)];
    x[i] = s;
  }
}

// The sum over ranks of one value (a count, a byte total, a bandwidth), the same on every rank.
template <class T>
T sum_over_ranks(Communicator& comm, T value) {
  std::vector<T> all(size_t(comm.size()));
  comm.allgather(&value, sizeof value, all.data());
  T sum{};
  for (const T& v : all) sum += v;
  return sum;
}

// Ends a step that may have failed on some ranks on all of them alike: each rank passes its own
// error message ("" = fine); if any rank failed, every rank throws an Error naming the first
// failing rank and its message, so no rank is left waiting in a later collective.
inline void agree_or_fail(Communicator& comm, const std::string& what, const std::string& error) {
  constexpr size_t kMsg = 480;
  std::vector<char> mine(kMsg, 0), all(kMsg * size_t(comm.size()));
  std::memcpy(mine.data(), error.data(), std::min(error.size(), kMsg - 1));
  comm.allgather(mine.data(), kMsg, all.data());
  for (int r = 0; r < comm.size(); ++r) {
    const char* msg = &all[size_t(r) * kMsg];
    if (*msg) fail(what, " failed on rank ", r, " of ", comm.size(), ": ", std::string(msg, strnlen(msg, kMsg)));
  }
}

// Checks that every rank passed the same 64-bit value (a config or checkpoint fingerprint).
inline void require_same_on_all_ranks(Communicator& comm, uint64_t value, const std::string& what) {
  std::vector<uint64_t> all(size_t(comm.size()));
  comm.allgather(&value, sizeof value, all.data());
  for (int r = 1; r < comm.size(); ++r)
    if (all[size_t(r)] != all[0])
      fail(what, " differs between ranks: rank 0 and rank ", r, " did not load the same thing (fingerprints ",
           all[0], " vs ", all[size_t(r)], ")");
}

}  // namespace dsv4
