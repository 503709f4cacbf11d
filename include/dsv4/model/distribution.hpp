#pragma once
// How one model is split over the ranks of a Communicator (one process per node, socket or GPU).
//
// Expert parallelism: each rank loads and runs a contiguous block of every MoE layer's routed
// experts (block sizes differ by at most one, so any rank count up to the expert count works).
// Every rank holds every token's activations — attention, norms and the router are replicated —
// so dispatch costs nothing and the combine is one sum over ranks per MoE layer, done in rank
// order so that all ranks stay bit-identical (see allreduce_sum).
#include <cstdint>
#include <vector>

#include "dsv4/core/communicator.hpp"

namespace dsv4 {

struct Distribution {
  Communicator* comm = nullptr;  // null: one process holds the whole model
  int rank() const { return comm ? comm->rank() : 0; }
  int size() const { return comm ? comm->size() : 1; }
  bool split() const { return size() > 1; }
};

// The routed experts [first, first + count) that rank r of p owns, out of E.
struct ExpertShard {
  int64_t first = 0, count = 0;
};

inline ExpertShard expert_shard(int64_t experts, int rank, int ranks) {
  if (ranks > experts)
    fail("expert parallelism over ", ranks, " ranks needs at least one routed expert per rank; the model has ",
         experts, " routed experts per layer");
  const int64_t first = experts * rank / ranks, end = experts * (rank + 1) / ranks;
  return {first, end - first};
}

}  // namespace dsv4
