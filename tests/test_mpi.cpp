// Expert parallelism over MPI ranks: run under `mpirun -np N test_mpi`. Every golden case (V4 and
// V3, both layouts) is loaded split over the ranks and must answer like the golden data and like
// one process holding the whole model, with the ranks bit-identical to each other.
//   test_mpi --die-after-init   (helper for mpi_cli_test.sh: a rank that dies before any collective)
#include <cstdio>
#include <cstring>

#include "dsv4/dist/mpi_communicator.hpp"
#include "golden.hpp"

using namespace dsv4;
using dsv4::testing::Golden;
using dsv4::testing::GoldenCase;
using dsv4::testing::max_abs_diff;

namespace {

int failures = 0;

void check(bool ok, const std::string& what) {
  if (!ok) {
    ++failures;
    std::fprintf(stderr, "FAILED: %s\n", what.c_str());
  }
}

template <class Bundle>
std::vector<float> run(const Model& m, const std::vector<int32_t>& ids, const std::vector<int64_t>& chunks) {
  SequenceCache cache = m.new_cache();
  const int64_t V = m.config().vocab_size, S = int64_t(ids.size());
  std::vector<float> out, logits;
  for (int64_t done = 0, n, next = 0; done < S; done += n) {
    n = std::min(chunks.empty() ? S : size_t(next) < chunks.size() ? chunks[size_t(next++)] : 1, S - done);
    SequenceInput in{&cache, std::span<const int32_t>(ids).subspan(size_t(done), size_t(n))};
    m.forward<Bundle>({&in, 1}, logits, LogitRows::All);
    out.insert(out.end(), logits.begin(), logits.begin() + n * V);
  }
  return out;
}

std::vector<int32_t> greedy(const Model& m, std::vector<int32_t> feed, size_t n) {
  SequenceCache cache = m.new_cache();
  std::vector<int32_t> out;
  std::vector<float> logits;
  while (out.size() < n) {
    SequenceInput in{&cache, feed};
    m.forward<Fp32Reference>({&in, 1}, logits, LogitRows::Last);
    out.push_back(argmax(logits));
    feed = {out.back()};
  }
  return out;
}

// True when every rank holds exactly the same floats.
bool same_on_all_ranks(Communicator& comm, const std::vector<float>& v) {
  uint64_t h = 1469598103934665603ull;
  for (float f : v) {
    uint32_t b;
    std::memcpy(&b, &f, 4);
    h = (h ^ b) * 1099511628211ull;
  }
  std::vector<uint64_t> all(size_t(comm.size()));
  comm.allgather(&h, sizeof h, all.data());
  for (uint64_t x : all)
    if (x != all[0]) return false;
  return true;
}

void check_case(Communicator& comm, const GoldenCase& c, const char* layout, const char* expected) {
  const std::string where = c.name + layout;
  const Distribution dist{&comm};
  const Model split = Model::load(c.dir + layout, dist);
  const Model whole = Model::load(c.dir + layout);
  const Golden g(c.dir + expected);
  const ModelConfig& cfg = split.config();

  // Each rank holds its block of every MoE layer's experts; the blocks cover all experts once.
  for (auto& L : split.layers())
    if (auto* moe = std::get_if<MoeWeights>(&L.ffn)) {
      const int64_t count = int64_t(moe->experts.size()), total = sum_over_ranks(comm, count);
      check(total == cfg.n_routed_experts && count == expert_shard(cfg.n_routed_experts, comm.rank(), comm.size()).count,
            where + ": experts split over ranks");
    }

  // ... and maps only its own: no other rank's expert weights are mapped here.
  int64_t foreign = 0, own = 0;
  for (auto& [name, t] : split.checkpoint().tensors()) {
    const auto at = name.find(".experts.");
    if (at == std::string::npos) continue;
    const int64_t e = std::stoll(name.substr(at + 9));
    const auto* moe = std::get_if<MoeWeights>(&split.layers()[size_t(std::stoll(name.substr(name.find("layers.") + 7)))].ffn);
    const bool mine = moe && e >= moe->first_expert && e < moe->first_expert + int64_t(moe->experts.size());
    (mine ? own : foreign) += split.checkpoint().is_mapped(name) ? 1 : 0;
  }
  check(foreign == 0 && own > 0, where + ": only the rank's own experts are mapped");

  const auto ids = g.ids("input_ids");
  const auto ref = run<Fp32Reference>(split, ids, {});
  const double err = max_abs_diff(ref, g.floats("logits"));
  std::printf("  %-12s reference: max abs logit error %.2e vs golden, %.2e vs one process\n", where.c_str(), err,
              max_abs_diff(ref, run<Fp32Reference>(whole, ids, {})));
  check(err < 1e-3, where + ": reference logits within 1e-3 of golden");
  check(max_abs_diff(ref, run<Fp32Reference>(whole, ids, {})) < 1e-5, where + ": split == one process (reference)");
  check(same_on_all_ranks(comm, ref), where + ": ranks bit-identical");

  const auto fast = run<FastCpu>(split, ids, {});
  const double ferr = max_abs_diff(fast, g.floats("logits"));
  std::printf("  %-12s fast:      max abs logit error %.2e vs golden\n", where.c_str(), ferr);
  check(ferr < 5e-2, where + ": fast logits within 5e-2 of golden");
  check(max_abs_diff(fast, run<FastCpu>(whole, ids, {})) < 1e-3, where + ": split == one process (fast)");

  if (g.has("logits_incremental") && !c.chunks().empty()) {
    const auto chunked = run<Fp32Reference>(split, ids, c.chunks());
    check(max_abs_diff(chunked, g.floats("logits_incremental")) < 1e-3, where + ": chunked prefill within 1e-3");
  }
  if (g.has("greedy_tokens")) {
    const auto want = g.ids("greedy_tokens");
    check(greedy(split, g.ids("greedy_prompt"), want.size()) == want, where + ": greedy tokens identical");
  }
}

}  // namespace

int main(int argc, char** argv) {
  MpiRuntime mpi(&argc, &argv);
  if (argc > 1 && !std::strcmp(argv[1], "--die-after-init")) std::_Exit(3);
  MpiCommunicator comm;
  if (comm.rank() != 0 && !std::freopen("/dev/null", "w", stdout)) return 1;
  std::printf("test_mpi: %d ranks\n", comm.size());
  try {
    for (const char* arch : {"DeepseekV4ForCausalLM", "DeepseekV3ForCausalLM"}) {
      const auto cases = dsv4::testing::golden_cases(arch);
      check(!cases.empty(), std::string("a golden case for ") + arch);
      for (const GoldenCase& c : cases) {
        check_case(comm, c, "/hf", "/expected.safetensors");
        check_case(comm, c, "/orig", "/expected_orig.safetensors");
      }
    }
    // More ranks than experts: refused on every rank with a message that says why.
    if (comm.size() > 1) {
      std::string msg;
      try {
        (void)expert_shard(comm.size() - 1, comm.rank(), comm.size());
      } catch (const Error& e) {
        msg = e.what();
      }
      check(msg.find("at least one routed expert per rank") != std::string::npos, "too many ranks refused");
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "rank %d: error: %s\n", comm.rank(), e.what());
    mpi.abort(1);
  }
  const int total = sum_over_ranks(comm, failures);
  std::printf("test_mpi: %s (%d failed checks over all ranks)\n", total ? "FAILED" : "passed", total);
  return total ? 1 : 0;
}
