// The CUDA backend with the model split over ranks (expert parallelism), testable on one GPU: 2 and
// 3 ranks as threads of this process, each with its own DeviceModel of its share on the same GPU,
// summing through device memory (LocalDeviceCommunicator). Against the unsplit DeviceModel (1e-4 in
// reference mode), the golden logits (1e-3; fast mode 5e-2) and the golden greedy tokens, with
// every rank's logits bit-identical. Exits 77 (ctest SKIP) with a message where no CUDA device is
// present; CI still compiles it. NCCL between processes runs the same DeviceModel code with
// NcclCommunicator in place of the local one (dsv4 --backend cuda under mpirun; README).
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <memory>
#include <random>
#include <thread>
#include <unistd.h>

#include "dsv4/cuda/device_communicator.hpp"
#include "dsv4/cuda/device_model.hpp"
#include "dsv4/cuda/nccl_communicator.hpp"
#include "cuda_test_util.hpp"
#include "golden.hpp"
#if defined(DSV4_WITH_NCCL)
#include <cuda_runtime.h>
#endif

using namespace dsv4;
using dsv4::testing::Golden;
using dsv4::testing::GoldenCase;
using dsv4::testing::kLayouts;
using dsv4::testing::max_abs_diff;
using dsv4::testing::run_gpu;
using dsv4::testing::with_mode;

namespace {

constexpr double kSplitBound = 1e-4;  // split against unsplit, reference mode: only summation order differs
constexpr double kFp32Bound = 1e-3;
constexpr double kFastBound = 5e-2;

// What one rank (or the whole model) answers to a fixed workload.
struct Answers {
  std::vector<float> one_pass, chunked, odd;  // [S, V] each
  std::vector<int32_t> greedy;                // forward_greedy, one token a step
  std::vector<float> batch;                   // [steps * 2, V]: a batch of two sequences, last rows
  std::vector<int32_t> batch_greedy;          // forward_greedy of the same batch, two ids a step
};

struct Workload {
  std::vector<int32_t> ids;        // [S]
  std::vector<int64_t> chunks;     // the chunked run's split (then one token at a time)
  std::vector<int32_t> prompt;     // greedy prompt
  size_t greedy = 8;               // greedy tokens
};

Answers answer(cuda::DeviceModel& gm, const Workload& w) {
  Answers a;
  a.one_pass = run_gpu(gm, w.ids, {});
  a.chunked = run_gpu(gm, w.ids, w.chunks);
  a.odd = run_gpu(gm, w.ids, {1, 2, 3, 5, 8, 13, 21, 34, 55, 89});
  {
    cuda::DeviceCache cache = gm.new_cache();
    std::vector<int32_t> feed = w.prompt, next;
    while (a.greedy.size() < w.greedy) {
      cuda::DeviceSequenceInput in{&cache, feed};
      gm.forward_greedy({&in, 1}, next);
      a.greedy.push_back(next.at(0));
      feed = {next[0]};
    }
  }
  // Two sequences at different positions, then decode steps of both.
  const int64_t V = gm.config().vocab_size;
  std::span<const int32_t> ids(w.ids);
  for (bool greedy : {false, true}) {
    std::vector<std::vector<int32_t>> feed{{ids.begin(), ids.begin() + 37}, {ids.begin() + 50, ids.begin() + 53}};
    std::vector<cuda::DeviceCache> caches;
    for (int i = 0; i < 2; ++i) caches.push_back(gm.new_cache());
    std::vector<float> logits;
    std::vector<int32_t> next;
    for (int step = 0; step < 12; ++step) {
      std::vector<cuda::DeviceSequenceInput> batch{{&caches[0], feed[0]}, {&caches[1], feed[1]}};
      if (greedy) {
        gm.forward_greedy(batch, next);
        a.batch_greedy.insert(a.batch_greedy.end(), next.begin(), next.end());
        for (int i = 0; i < 2; ++i) feed[size_t(i)] = {next.at(size_t(i))};
      } else {
        gm.forward(batch, logits, LogitRows::Last);
        a.batch.insert(a.batch.end(), logits.begin(), logits.end());
        for (int i = 0; i < 2; ++i)
          feed[size_t(i)] = {argmax(std::span<const float>(logits).subspan(size_t(i * V), size_t(V)))};
      }
    }
  }
  return a;
}

// Runs `work` on every rank of a split of the model in `dir` over `ranks` threads, one DeviceModel
// each, all on this GPU through LocalDeviceCommunicator, or (nccl) rank r on GPU r through
// NcclCommunicator; the answers by rank. A rank's failure is rethrown here (the others fail at
// their next barrier, after the group's timeout at worst).
std::vector<Answers> split_answers(const std::string& dir, int ranks, KernelMode mode, const Workload& w,
                                   bool nccl = false) {
  (void)nccl;  // without NCCL built in, every split is local
  LocalGroup group(ranks, 30);  // a healthy rank waits well under a second
  std::vector<Answers> out(static_cast<size_t>(ranks));
  std::vector<std::exception_ptr> errors(static_cast<size_t>(ranks));
  std::vector<std::thread> threads;
  for (int r = 0; r < ranks; ++r)
    threads.emplace_back([&, r] {
      try {
        const Model m = Model::load(dir, Distribution{&group.comm(r)});
        std::unique_ptr<cuda::DeviceCommunicator> dc;
#if defined(DSV4_WITH_NCCL)
        if (nccl) dc = std::make_unique<cuda::NcclCommunicator>(group.comm(r), r);  // sets GPU r
#endif
        if (!dc) dc = std::make_unique<cuda::LocalDeviceCommunicator>(group, r);
        cuda::DeviceOptions o = with_mode(mode);
        o.comm = dc.get();
        cuda::DeviceModel gm(m, o);
        out[size_t(r)] = answer(gm, w);
      } catch (...) {
        errors[size_t(r)] = std::current_exception();
      }
    });
  for (auto& t : threads) t.join();
  // The cause first: a rank's own failure, not the others' time-out waiting for it.
  std::string first, cause;
  for (size_t r = 0; r < errors.size(); ++r) {
    if (!errors[r]) continue;
    std::string msg = "unknown exception";
    try {
      std::rethrow_exception(errors[r]);
    } catch (const std::exception& e) {
      msg = e.what();
    } catch (...) {
    }
    msg = "rank " + std::to_string(r) + ": " + msg;
    if (first.empty()) first = msg;
    if (cause.empty() && msg.find("LocalGroup") == std::string::npos) cause = msg;
  }
  if (!first.empty()) fail(cause.empty() ? first : cause);
  return out;
}

Answers whole_answers(const std::string& dir, KernelMode mode, const Workload& w) {
  const Model m = Model::load(dir);
  cuda::DeviceModel gm(m, with_mode(mode));
  return answer(gm, w);
}

bool same(const Answers& a, const Answers& b) {
  return a.one_pass == b.one_pass && a.chunked == b.chunked && a.odd == b.odd && a.greedy == b.greedy &&
         a.batch == b.batch && a.batch_greedy == b.batch_greedy;
}

// The split's answers against the whole model's: logits within `bound`, the same greedy ids. Prints
// the figures (the README quotes them), named by `what`.
void check_close(const Answers& split, const Answers& whole, double bound, const std::string& what) {
  const double one = max_abs_diff(split.one_pass, whole.one_pass), chunked = max_abs_diff(split.chunked, whole.chunked),
               odd = max_abs_diff(split.odd, whole.odd), batch = max_abs_diff(split.batch, whole.batch);
  std::printf("%-40s split vs whole: one pass %.2e, chunked %.2e, odd %.2e, batch %.2e; greedy %s, batch greedy %s\n",
              what.c_str(), one, chunked, odd, batch, split.greedy == whole.greedy ? "same" : "DIFFERENT",
              split.batch_greedy == whole.batch_greedy ? "same" : "DIFFERENT");
  INFO("split vs whole max abs diff: one pass " << one << ", chunked " << chunked << ", odd chunks " << odd
                                                << ", batch decode " << batch);
  CHECK(one < bound);
  CHECK(chunked < bound);
  CHECK(odd < bound);
  CHECK(batch < bound);
  CHECK(split.greedy == whole.greedy);
  CHECK(split.batch_greedy == whole.batch_greedy);
}

// Synthetic V4 shapes (as test_cuda_model's): FP8 tiles that do not divide the matrices, FP4
// experts, 3 and 4 residual streams, 5 experts (3 a token) and 6 (2 a token): blocks of 2-3 and
// 1-2 experts a rank, vocabularies of 300 and 320 split into head blocks.
const char* const kShapes[] = {
    R"({"vocab_size": 300, "hidden_size": 72, "num_hidden_layers": 4, "num_attention_heads": 3, "head_dim": 40,
        "qk_rope_head_dim": 10, "q_lora_rank": 36, "o_groups": 3, "o_lora_rank": 20, "sliding_window": 7,
        "index_n_heads": 5, "index_head_dim": 24, "index_topk": 3, "n_routed_experts": 5, "num_experts_per_tok": 3,
        "moe_intermediate_size": 48, "n_shared_experts": 1, "routed_scaling_factor": 2.0, "swiglu_limit": 0.8,
        "hc_mult": 3, "hc_sinkhorn_iters": 7, "hc_eps": 1e-6, "rms_norm_eps": 1e-6, "rope_theta": 10000.0,
        "compress_rope_theta": 50000.0, "rope_scaling": {"type": "yarn", "factor": 8, "original_max_position_embeddings": 32,
        "beta_fast": 32, "beta_slow": 1}, "compress_ratios": [8, 4, 0, 4, 128], "num_hash_layers": 1,
        "quantization_config": {"weight_block_size": [32, 32]}})",
    R"({"vocab_size": 320, "hidden_size": 128, "num_hidden_layers": 3, "num_attention_heads": 4, "head_dim": 64,
        "qk_rope_head_dim": 16, "q_lora_rank": 64, "o_groups": 2, "o_lora_rank": 32, "sliding_window": 12,
        "index_n_heads": 4, "index_head_dim": 32, "index_topk": 8, "n_routed_experts": 6, "num_experts_per_tok": 2,
        "moe_intermediate_size": 64, "n_shared_experts": 1, "routed_scaling_factor": 1.5, "swiglu_limit": 10.0,
        "hc_mult": 4, "hc_sinkhorn_iters": 20, "hc_eps": 1e-6, "rms_norm_eps": 1e-6, "rope_theta": 10000.0,
        "compress_rope_theta": 160000.0, "compress_ratios": [0, 4, 16], "num_hash_layers": 1,
        "quantization_config": {"weight_block_size": [128, 128]}})",
};

}  // namespace

TEST_CASE("golden cases split over 2 and 3 ranks on one GPU answer like the whole model", "[cuda][split][golden]") {
  for (const GoldenCase& c : dsv4::testing::golden_cases("DeepseekV4ForCausalLM"))
    for (auto [layout, expected] : kLayouts) {
      const std::string dir = c.dir + layout;
      const Golden g(c.dir + expected);
      Workload w;
      w.ids = g.ids("input_ids");
      w.chunks = c.chunks();
      w.prompt = g.ids("greedy_prompt");
      const auto want_tokens = g.ids("greedy_tokens");
      w.greedy = want_tokens.size();
      REQUIRE(w.ids.size() >= 53);
      const auto want = g.floats("logits"), want_incremental = g.floats("logits_incremental");
      for (KernelMode mode : {KernelMode::Reference, KernelMode::Fast}) {
        const Answers whole = whole_answers(dir, mode, w);
        for (int ranks : {2, 3}) {
          INFO("case " << c.name << layout << ", " << kernel_mode_name(mode) << " mode, " << ranks << " ranks");
          const std::vector<Answers> split = split_answers(dir, ranks, mode, w);
          for (int r = 1; r < ranks; ++r) CHECK(same(split[size_t(r)], split[0]));  // bit-identical ranks
          const Answers& a = split[0];
          const bool ref = mode == KernelMode::Reference;
          const std::string what = c.name + layout + " " + kernel_mode_name(mode) + " " + std::to_string(ranks) + " ranks";
          check_close(a, whole, ref ? kSplitBound : kFastBound, what);
          const double full = max_abs_diff(a.one_pass, want), chunked = max_abs_diff(a.chunked, want_incremental),
                       odd = max_abs_diff(a.odd, want);
          std::printf("%-40s split vs golden: one pass %.2e, chunked %.2e, odd %.2e; ranks identical %s\n", what.c_str(),
                      full, chunked, odd, same(split.back(), split[0]) ? "yes" : "NO");
          INFO("split vs golden max abs error: one pass " << full << ", chunked " << chunked << ", odd " << odd);
          CHECK(full < (ref ? kFp32Bound : kFastBound));
          CHECK(chunked < (ref ? kFp32Bound : kFastBound));
          CHECK(odd < (ref ? kFp32Bound : kFastBound));
          if (ref) CHECK(a.greedy == want_tokens);
          else CHECK(std::vector<int32_t>(a.greedy.begin(), a.greedy.begin() + 8) ==
                     std::vector<int32_t>(want_tokens.begin(), want_tokens.begin() + 8));
        }
      }
    }
}

TEST_CASE("synthetic FP8/FP4 shapes split over 2 and 3 ranks on one GPU", "[cuda][split][shapes]") {
  int index = 0;
  for (const char* json : kShapes) {
    const auto dir = std::filesystem::temp_directory_path() /
                     ("dsv4_cuda_split_" + std::to_string(::getpid()) + "_" + std::to_string(index++));
    std::filesystem::remove_all(dir);
    SynthOptions opt;
    opt.seed = 7;
    write_synthetic_checkpoint(dir, json, opt);
    Workload w;
    std::mt19937 rng(11);
    const int64_t V = Model::load(dir).config().vocab_size;
    w.ids.resize(120);
    for (auto& t : w.ids) t = int32_t(rng() % uint32_t(V));
    w.chunks = {5, 9, 2, 64, 33};  // after them one token at a time
    w.prompt.assign(w.ids.begin(), w.ids.begin() + 10);
    w.greedy = 8;
    for (KernelMode mode : {KernelMode::Reference, KernelMode::Fast}) {
      const Answers whole = whole_answers(dir.string(), mode, w);
      for (int ranks : {2, 3}) {
        INFO("shape " << index - 1 << ", " << kernel_mode_name(mode) << " mode, " << ranks << " ranks");
        const std::vector<Answers> split = split_answers(dir.string(), ranks, mode, w);
        for (int r = 1; r < ranks; ++r) CHECK(same(split[size_t(r)], split[0]));
        check_close(split[0], whole, mode == KernelMode::Reference ? kSplitBound : kFastBound,
                    "shape " + std::to_string(index - 1) + " " + kernel_mode_name(mode) + " " + std::to_string(ranks) +
                        " ranks");
      }
    }
    std::filesystem::remove_all(dir);
  }
}

TEST_CASE("a split model on the GPU needs a device collective and expert parallelism", "[cuda][split][errors]") {
  const auto cases = dsv4::testing::golden_cases("DeepseekV4ForCausalLM");
  REQUIRE(!cases.empty());
  const std::string dir = cases[0].dir + "/hf";
  for (bool tensor : {false, true}) {
    LocalGroup group(2, 60);
    std::vector<std::string> messages(2);
    std::vector<std::thread> threads;
    for (int r = 0; r < 2; ++r)
      threads.emplace_back([&, r] {
        try {
          const Model m = Model::load(dir, Distribution{&group.comm(r), tensor});
          cuda::LocalDeviceCommunicator dc(group, r);
          cuda::DeviceOptions o;
          if (tensor) o.comm = &dc;  // tensor parallelism is refused even with the collective
          cuda::DeviceModel gm(m, o);
        } catch (const std::exception& e) {
          messages[size_t(r)] = e.what();
        }
      });
    for (auto& t : threads) t.join();
    INFO("tensor " << tensor << ": " << messages[0]);
    for (auto& msg : messages)
      CHECK_THAT(msg, Catch::Contains(tensor ? "tensor parallelism" : "without a device collective"));
  }
}

#if defined(DSV4_WITH_NCCL)
TEST_CASE("NCCL: one rank gathers its own buffer; two ranks on one GPU are refused on both", "[cuda][split][nccl]") {
  {
    LocalGroup one(1);
    cuda::NcclCommunicator nccl(one.comm(0));
    CHECK(nccl.size() == 1);
    const std::vector<float> host{1.f, 2.f, 3.f, 4.f};
    std::vector<float> back(4, 0.f);
    float* d = nullptr;
    REQUIRE(cudaMalloc(reinterpret_cast<void**>(&d), 8 * sizeof(float)) == cudaSuccess);
    REQUIRE(cudaMemcpy(d, host.data(), 4 * sizeof(float), cudaMemcpyHostToDevice) == cudaSuccess);
    nccl.allgather(d, 4, d + 4, nullptr);  // recv [1, 4] on the default stream
    REQUIRE(cudaMemcpy(back.data(), d + 4, 4 * sizeof(float), cudaMemcpyDeviceToHost) == cudaSuccess);
    cudaFree(d);
    CHECK(back == host);
    // Through a DeviceModel of the whole golden model: NCCL's gather of one rank is a copy.
    const auto cases = dsv4::testing::golden_cases("DeepseekV4ForCausalLM");
    REQUIRE(!cases.empty());
    const Model m = Model::load(cases[0].dir + "/hf");
    cuda::DeviceOptions o = with_mode(KernelMode::Reference);
    o.comm = &nccl;  // a comm of one rank with a whole model: accepted, unused
    cuda::DeviceModel gm(m, o);
    const std::vector<int32_t> ids{5, 17, 42};
    CHECK(!run_gpu(gm, ids, {}).empty());
  }
  LocalGroup two(2, 60);
  std::vector<std::string> messages(2);
  std::vector<std::thread> threads;
  for (int r = 0; r < 2; ++r)
    threads.emplace_back([&, r] {
      try {
        cuda::NcclCommunicator nccl(two.comm(r), 0);  // both on device 0
      } catch (const std::exception& e) {
        messages[size_t(r)] = e.what();
      }
    });
  for (auto& t : threads) t.join();
  INFO(messages[0]);
  for (auto& msg : messages) CHECK_THAT(msg, Catch::Contains("one GPU per rank"));
}
#endif

#if defined(DSV4_WITH_NCCL)
// Needs 2 GPUs (skipped with a warning on one): the golden cases split over 2 ranks as threads, one
// GPU each, through NCCL; then again with the decode steps captured as CUDA graphs
// (DSV4_NCCL_GRAPHS=1: NCCL's all-gather inside the graph).
TEST_CASE("golden cases split over 2 GPUs through NCCL, with and without graphs", "[cuda][split][nccl2]") {
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices < 2) {
    WARN("SKIP: " << devices << " GPU(s) visible; the 2-GPU NCCL test needs 2");
    return;
  }
  for (const GoldenCase& c : dsv4::testing::golden_cases("DeepseekV4ForCausalLM")) {
    const std::string dir = c.dir + "/hf";
    const Golden g(c.dir + "/expected.safetensors");
    Workload w;
    w.ids = g.ids("input_ids");
    w.chunks = c.chunks();
    w.prompt = g.ids("greedy_prompt");
    w.greedy = g.ids("greedy_tokens").size();
    for (KernelMode mode : {KernelMode::Reference, KernelMode::Fast}) {
      const Answers whole = whole_answers(dir, mode, w);
      for (const char* graphs : {"0", "1"}) {
        INFO("case " << c.name << ", " << kernel_mode_name(mode) << " mode, DSV4_NCCL_GRAPHS=" << graphs);
        setenv("DSV4_NCCL_GRAPHS", graphs, 1);
        const std::vector<Answers> split = split_answers(dir, 2, mode, w, true);
        CHECK(same(split[1], split[0]));
        check_close(split[0], whole, mode == KernelMode::Reference ? kSplitBound : kFastBound,
                    c.name + " NCCL 2 GPUs " + kernel_mode_name(mode) + " graphs " + graphs);
        if (mode == KernelMode::Reference) CHECK(split[0].greedy == g.ids("greedy_tokens"));
      }
      unsetenv("DSV4_NCCL_GRAPHS");
    }
  }
}
#endif

int main(int argc, char** argv) {
  if (!cuda::device_available()) {
    std::printf("SKIP: no CUDA device; the CUDA backend's split-model tests did not run\n");
    return 77;
  }
  return Catch::Session().run(argc, argv);
}
