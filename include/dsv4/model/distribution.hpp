#pragma once
// How one model is split over the ranks of a Communicator (one process per node, socket or GPU).
//
// Expert parallelism: each rank loads and runs a contiguous block of every MoE layer's routed
// experts (block sizes differ by at most one, so any rank count up to the expert count works).
// Every rank holds every token's activations — attention, norms and the router are replicated —
// so dispatch costs nothing and the combine is one sum over ranks per MoE layer, done in rank
// order so that all ranks stay bit-identical (see allreduce_sum).
#include <cstdint>
#include <initializer_list>
#include <string>
#include <utility>
#include <vector>

#include "dsv4/core/communicator.hpp"
#include "dsv4/model/config.hpp"

namespace dsv4 {

// Tensor parallelism (Distribution::tensor): each attention layer's query heads and output groups,
// the shared expert's and dense MLPs' intermediate width are split in equal contiguous blocks too.
// A rank computes its heads' attention over the full (replicated) kv cache and its block of the
// output projection's columns; the partial outputs are summed over the ranks (one sum after the
// attention, and the MoE layer's one sum covers the shared expert).
struct TensorShard {
  int rank = 0, ranks = 1;
  bool split() const { return ranks > 1; }
  // The block [first(n), first(n) + part(n)) of n this rank holds (n divisible by ranks).
  int64_t part(int64_t n) const { return n / ranks; }
  int64_t first(int64_t n) const { return part(n) * rank; }
  // Fails unless every one of `sizes` (named by `what`) splits evenly over the ranks.
  void require_divides(std::initializer_list<std::pair<const char*, int64_t>> sizes, const std::string& where) const {
    for (auto& [what, n] : sizes)
      if (n % ranks)
        fail("tensor parallelism over ", ranks, " ranks: ", where, " has ", what, " = ", n,
             ", which does not split evenly over ", ranks, " ranks (use a rank count that divides it, or expert "
             "parallelism alone)");
  }
};

// Fails, naming the size, unless every size tensor parallelism splits divides by `ranks`: the
// attention heads (and V4's output groups), the shared expert's width, the dense MLPs' width.
// Model::load checks this before it maps anything; each loader checks its own sizes again, for
// programs that assemble the parts themselves.
inline void require_tensor_split(const ModelConfig& c, int ranks) {
  const TensorShard tp{0, ranks};
  tp.require_divides({{"num_attention_heads", c.num_heads}}, "the model");
  if (c.arch == Architecture::DeepseekV4) tp.require_divides({{"o_groups", c.o_groups}}, "the model");
  bool moe = false, dense = false;
  for (auto& l : c.layers) (l.ffn == FfnKind::Dense ? dense : moe) = true;
  if (moe && c.n_shared_experts > 0)
    tp.require_divides({{"a shared expert width (moe_intermediate_size x n_shared_experts)",
                         c.moe_intermediate_size * c.n_shared_experts}}, "the model");
  if (dense) tp.require_divides({{"a dense MLP width (intermediate_size)", c.intermediate_size}}, "the model");
}

struct Distribution {
  Communicator* comm = nullptr;  // null: one process holds the whole model
  bool tensor = false;           // also split attention heads and shared / dense MLPs (TensorShard)
  int rank() const { return comm ? comm->rank() : 0; }
  int size() const { return comm ? comm->size() : 1; }
  bool split() const { return size() > 1; }
  TensorShard tensor_shard() const { return tensor && split() ? TensorShard{rank(), size()} : TensorShard{}; }
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
