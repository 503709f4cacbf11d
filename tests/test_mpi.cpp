// Expert and tensor parallelism over MPI ranks: run under `mpirun -np N test_mpi`. Every golden case
// (V4 and V3, both layouts) is loaded split over the ranks, by experts and then by experts and
// heads, and must answer like the golden data and like one process holding the whole model, with
// the ranks bit-identical to each other; a rank count that does not divide the heads is refused.
//   test_mpi --die-after-init   (helper for mpi_cli_test.sh: a rank that dies before any collective)
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <unistd.h>

#include "dsv4/dist/mpi_communicator.hpp"
#include "golden.hpp"

using namespace dsv4;
using dsv4::testing::Golden;
using dsv4::testing::GoldenCase;
using dsv4::testing::greedy_tokens;
using dsv4::testing::max_abs_diff;
using dsv4::testing::run_in_chunks;

namespace {

int failures = 0;

void check(bool ok, const std::string& what) {
  if (!ok) {
    ++failures;
    std::fprintf(stderr, "FAILED: %s\n", what.c_str());
  }
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

// Whether tensor parallelism over `ranks` can split this model, by the library's rule.
bool tensor_splits(const ModelConfig& c, int ranks) {
  try {
    require_tensor_split(c, ranks);
    return true;
  } catch (const Error&) {
    return false;
  }
}

// tensor: attention heads and shared / dense MLPs split too (Distribution::tensor).
void check_case(Communicator& comm, const GoldenCase& c, const char* layout, const char* expected, bool tensor) {
  const std::string where = c.name + layout + (tensor ? " tensor" : "");
  const Distribution dist{&comm, tensor};
  const Model whole = Model::load(c.dir + layout);
  // The rule itself, on a size known here: 4 heads never split over 3 ranks.
  if (tensor && whole.config().num_heads == 4 && comm.size() == 3)
    check(!tensor_splits(whole.config(), 3), where + ": 4 heads do not split over 3 ranks");
  if (tensor && !tensor_splits(whole.config(), comm.size())) {
    // Refused on every rank, naming the size that does not split.
    std::string msg;
    try {
      (void)Model::load(c.dir + layout, dist);
    } catch (const Error& e) {
      msg = e.what();
    }
    std::printf("  %-18s refused: %s\n", where.c_str(), msg.c_str());
    check(msg.find("does not split evenly over " + std::to_string(comm.size()) + " ranks") != std::string::npos,
          where + ": a model whose heads do not split is refused");
    return;
  }
  const Model split = Model::load(c.dir + layout, dist);
  const Golden g(c.dir + expected);
  const ModelConfig& cfg = split.config();

  // Each rank holds its block of every MoE layer's experts; the blocks cover all experts once.
  for (auto& L : split.layers())
    if (auto* moe = std::get_if<MoeWeights>(&L.ffn)) {
      const int64_t count = int64_t(moe->experts.size()), total = sum_over_ranks(comm, count);
      check(total == cfg.n_routed_experts && count == expert_shard(cfg.n_routed_experts, comm.rank(), comm.size()).count,
            where + ": experts split over ranks");
      check(moe->shared.size() == (tensor || comm.rank() == 0 ? 1u : 0u), where + ": shared expert placement");
    }
  // Tensor: each rank holds 1/p of every layer's heads.
  for (auto& L : split.layers()) {
    const int64_t heads = std::visit(
        [](auto& a) -> int64_t {
          if constexpr (requires { a.latent; }) return a.latent.heads;
          else return a.w.heads;
        },
        L.attn);
    check(heads * (tensor ? comm.size() : 1) == cfg.num_heads, where + ": heads per rank");
  }

  // ... and maps only its own: no other rank's expert weights are mapped here, and under tensor
  // parallelism no head-split or shared-expert matrix is mapped whole.
  int64_t foreign = 0, own = 0, whole_split = 0;
  for (auto& [name, t] : split.checkpoint().tensors()) {
    const bool head_split = name.find("attn.wq_b") != std::string::npos || name.find("attn.wo") != std::string::npos ||
                            name.find("attn.wkv_b") != std::string::npos || name.find("shared_experts.") != std::string::npos ||
                            name.find("self_attn.q_b_proj") != std::string::npos ||
                            name.find("self_attn.kv_b_proj") != std::string::npos ||
                            name.find("self_attn.o_proj") != std::string::npos || name.find("mlp.shared") != std::string::npos;
    if (tensor && head_split && split.checkpoint().is_mapped(name)) ++whole_split;
    const auto at = name.find(".experts.");
    if (at == std::string::npos) continue;
    const int64_t e = std::stoll(name.substr(at + 9));
    const auto* moe = std::get_if<MoeWeights>(&split.layers()[size_t(std::stoll(name.substr(name.find("layers.") + 7)))].ffn);
    const bool mine = moe && e >= moe->first_expert && e < moe->first_expert + int64_t(moe->experts.size());
    (mine ? own : foreign) += split.checkpoint().is_mapped(name) ? 1 : 0;
  }
  check(foreign == 0 && own > 0, where + ": only the rank's own experts are mapped");
  check(whole_split == 0, where + ": no head-split matrix mapped whole");
  if (tensor) {
    const Model by_expert = Model::load(c.dir + layout, Distribution{&comm});
    std::printf("  %-18s bytes in use on rank %d: %zu (expert parallel: %zu, whole: %zu)\n", where.c_str(), comm.rank(),
                split.checkpoint().bytes_in_use(), by_expert.checkpoint().bytes_in_use(), whole.checkpoint().bytes_in_use());
    // Summed over the ranks (rank 0 alone holds the shared expert under expert parallelism).
    check(sum_over_ranks(comm, split.checkpoint().bytes_in_use()) < sum_over_ranks(comm, by_expert.checkpoint().bytes_in_use()),
          where + ": tensor-parallel ranks read fewer bytes than expert-parallel ones");
  }

  const auto ids = g.ids("input_ids");
  const auto ref = run_in_chunks<Fp32Reference>(split, ids, {});
  const double err = max_abs_diff(ref, g.floats("logits"));
  std::printf("  %-12s reference: max abs logit error %.2e vs golden, %.2e vs one process\n", where.c_str(), err,
              max_abs_diff(ref, run_in_chunks<Fp32Reference>(whole, ids, {})));
  check(err < 1e-3, where + ": reference logits within 1e-3 of golden");
  // Expert parallelism adds the same terms in the same order as one process; tensor parallelism
  // sums the heads' shares of each projection in rank order, a different rounding.
  check(max_abs_diff(ref, run_in_chunks<Fp32Reference>(whole, ids, {})) < (tensor ? 1e-4 : 1e-5),
        where + ": split == one process (reference)");
  check(same_on_all_ranks(comm, ref), where + ": ranks bit-identical");

  const auto fast = run_in_chunks<FastCpu>(split, ids, {});
  const double ferr = max_abs_diff(fast, g.floats("logits"));
  std::printf("  %-12s fast:      max abs logit error %.2e vs golden\n", where.c_str(), ferr);
  check(ferr < 5e-2, where + ": fast logits within 5e-2 of golden");
  check(max_abs_diff(fast, run_in_chunks<FastCpu>(whole, ids, {})) < 1e-3, where + ": split == one process (fast)");

  if (g.has("logits_incremental") && !c.chunks().empty()) {
    const auto chunked = run_in_chunks<Fp32Reference>(split, ids, c.chunks());
    check(max_abs_diff(chunked, g.floats("logits_incremental")) < 1e-3, where + ": chunked prefill within 1e-3");
  }
  if (g.has("greedy_tokens")) {
    const auto want = g.ids("greedy_tokens");
    check(greedy_tokens(split, g.ids("greedy_prompt"), want.size()) == want, where + ": greedy tokens identical");
  }
}

// Tensor parallelism on synthetic release-layout checkpoints whose sizes split over these ranks on
// FP8 tile boundaries (the golden cases' do not: their parts fall back to f32 copies): every split
// matrix keeps the stored FP8 scheme, and the logits equal one process's.
void check_synthetic_tensor_split(Communicator& comm) {
  const int p = comm.size();
  auto n = [&](int64_t k) { return std::to_string(k * p); };
  const std::string v4 = R"({"vocab_size": 256, "hidden_size": 64, "num_hidden_layers": 3, "num_attention_heads": )" + n(2) +
                         R"(, "head_dim": 32, "qk_rope_head_dim": 8, "q_lora_rank": 32, "o_groups": )" + n(1) +
                         R"(, "o_lora_rank": 32, "sliding_window": 5, "index_n_heads": 4, "index_head_dim": 16, "index_topk": 2,
      "n_routed_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": )" + n(32) +
                         R"(, "n_shared_experts": 1, "routed_scaling_factor": 1.5, "swiglu_limit": 10.0, "hc_mult": 2,
      "hc_sinkhorn_iters": 5, "hc_eps": 1e-6, "rms_norm_eps": 1e-6, "rope_theta": 10000.0, "compress_rope_theta": 40000.0,
      "compress_ratios": [0, 4, 8], "num_hash_layers": 1, "quantization_config": {"weight_block_size": [32, 32]}})";
  const std::string v3 = R"({"model_type": "deepseek_v3", "vocab_size": 256, "hidden_size": 64, "intermediate_size": )" + n(32) +
                         R"(, "moe_intermediate_size": )" + n(16) + R"(, "num_hidden_layers": 2, "first_k_dense_replace": 1,
      "num_attention_heads": )" + n(2) + R"(, "q_lora_rank": 32, "kv_lora_rank": 32, "qk_nope_head_dim": 24,
      "qk_rope_head_dim": 8, "v_head_dim": 8, "n_routed_experts": 4, "num_experts_per_tok": 2, "n_group": 2,
      "topk_group": 1, "n_shared_experts": 2, "routed_scaling_factor": 2.0, "rms_norm_eps": 1e-6, "rope_theta": 10000,
      "quantization_config": {"weight_block_size": [16, 16]}})";
  for (const auto& [name, json] : {std::pair{"synthetic V4", v4}, std::pair{"synthetic V3", v3}}) {
    const std::string where = std::string(name) + " tensor";
    // Each rank writes its own copy (same seed, so the same checkpoint).
    const auto dir = std::filesystem::temp_directory_path() /
                     ("dsv4_tp_" + std::to_string(::getpid()) + "_" + std::to_string(comm.rank()));
    std::filesystem::remove_all(dir);
    SynthOptions opt;
    opt.seed = 11;
    write_synthetic_checkpoint(dir, json, opt);
    const Model whole = Model::load(dir);
    const Model split = Model::load(dir, Distribution{&comm, true});
    int64_t fp8 = 0, other = 0;
    auto count = [&](const Matrix& m) { (std::holds_alternative<Fp8BlockMatrix>(m) ? fp8 : other) += 1; };
    for (auto& L : split.layers()) {
      std::visit(
          [&](auto& a) {
            if constexpr (requires { a.latent; }) count(a.latent.wq_b), count(a.latent.wo_a), count(a.latent.wo_b);
            else count(a.w.wq_b), count(a.w.wkv_b), count(a.w.wo);
          },
          L.attn);
      if (auto* moe = std::get_if<MoeWeights>(&L.ffn))
        for (auto& e : moe->shared) count(e.w1), count(e.w2), count(e.w3);
      if (auto* d = std::get_if<DenseMlp>(&L.ffn)) count(d->w.w1), count(d->w.w2), count(d->w.w3);
    }
    check(fp8 > 0 && other == 0, where + ": every split matrix stays FP8");
    std::vector<int32_t> ids(23);
    for (size_t i = 0; i < ids.size(); ++i) ids[i] = int32_t((37 * i + 5) % 256);
    const auto ref = run_in_chunks<Fp32Reference>(split, ids, {}), one = run_in_chunks<Fp32Reference>(whole, ids, {});
    const auto fast = run_in_chunks<FastCpu>(split, ids, {}), fast_one = run_in_chunks<FastCpu>(whole, ids, {});
    std::printf("  %-18s reference: %.2e vs one process, fast: %.2e (FP8 parts %lld)\n", where.c_str(),
                max_abs_diff(ref, one), max_abs_diff(fast, fast_one), (long long)fp8);
    check(max_abs_diff(ref, one) < 1e-4, where + ": split == one process (reference)");
    check(max_abs_diff(fast, fast_one) < 1e-3, where + ": split == one process (fast)");
    check(max_abs_diff(run_in_chunks<Fp32Reference>(split, ids, {5, 1, 9}), one) < 1e-4, where + ": chunked == one process");
    check(same_on_all_ranks(comm, ref), where + ": ranks bit-identical");
    std::filesystem::remove_all(dir);
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
        for (bool tensor : {false, true}) {
          check_case(comm, c, "/hf", "/expected.safetensors", tensor);
          check_case(comm, c, "/orig", "/expected_orig.safetensors", tensor);
        }
      }
    }
    check_synthetic_tensor_split(comm);
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
