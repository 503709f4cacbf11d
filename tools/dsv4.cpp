// dsv4: the command-line tool. Other tools and checks drive the library through it.
//   dsv4 info --model DIR
//   dsv4 logits --model DIR --input IN.safetensors --out OUT.safetensors [--mode reference|fast]
//               [--chunks a,b,...] [--threads N]
//   dsv4 generate --model DIR (--prompt-ids 5,17,42 --max-new-tokens N | --prompt TEXT [--tokenizer DIR])
//               [--greedy | --temperature T --top-k K --top-p P --min-p P --seed S] [penalties]
//               [--stop STRING] [--mode ...] [--ignore-eos]
//   dsv4 tokenize --tokenizer DIR [--bos] [--bytes]   (stdin text → ids)
//   dsv4 detokenize --tokenizer DIR [--skip-special]   (stdin ids → text)
//   dsv4 chat --model DIR [--system TEXT] [--think] [sampling options]   (interactive, stdin/stdout)
//   dsv4 synth (--preset v4-flash|v4-pro|v3 [--layers L] | --config FILE) --out DIR [--seed S]
//   dsv4 bench --model DIR [--prompt-tokens P] [--decode-tokens N] [--threads T]
//   dsv4 kv (--model DIR | --config FILE | --preset NAME) [--tokens N]
// Errors: non-zero exit and one line on stderr.
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <set>
#include <string>
#include <vector>

#include "cli/common.hpp"

#if defined(DSV4_WITH_MPI)
#include "dsv4/dist/mpi_communicator.hpp"
#endif

namespace {

const char* kUsage =
    "usage: dsv4 <command> [options]\n"
    "  info      --model DIR\n"
    "  logits    --model DIR --input IN.safetensors --out OUT.safetensors [--mode reference|fast]\n"
    "            [--chunks a,b,...] [--threads N] [--backend cpu|cuda] [--cache-type f32|bf16|compact]\n"
    "  generate  --model DIR --prompt-ids 5,17,42 --max-new-tokens N [--greedy | --temperature T\n"
    "            --top-p P --seed S] [--mode reference|fast] [--threads N] [--ignore-eos] [--backend cpu|cuda]\n"
    "            [--cache-type f32|bf16|compact] [--load-cache FILE] [--save-cache FILE]\n"
    "  generate  --model DIR --prompt TEXT [--tokenizer DIR] [--max-new-tokens N] [--stop STRING]\n"
    "            [sampling options] [--mode reference|fast] [--threads N] [--ignore-eos] [--backend cpu|cuda]\n"
    "            [--cache-type f32|bf16|compact] [--load-cache FILE] [--save-cache FILE]\n"
    "  chat      --model DIR [--tokenizer DIR] [--system TEXT] [--think] [--keep-reasoning] [--format v4|v3]\n"
    "            [--max-new-tokens N] [--stop STRING] [sampling options] [--mode reference|fast] [--threads N]\n"
    "  tokenize  --tokenizer DIR [--bos] [--bytes]   text on stdin -> ids on stdout\n"
    "  detokenize --tokenizer DIR [--skip-special]   ids on stdin -> text on stdout\n"
    "  sampling options: --greedy | --temperature T --top-k K --top-p P --min-p P --seed S;\n"
    "            --repetition-penalty R --frequency-penalty F --presence-penalty P\n"
    "  synth     (--preset v4-flash|v4-pro|v3 [--layers L] [--compress-ratios 4,128,...] | --config FILE) --out DIR\n"
    "            [--seed S] [--fp8-experts]\n"
    "  bench     --model DIR [--prompt-tokens P] [--decode-tokens N] [--threads T] [--mode reference|fast]\n"
    "            [--cache-type f32|bf16|compact] [--context N] [--backend cpu|cuda [--batch 1,8,32]]\n"
    "  kv        (--model DIR | --config FILE | --preset v4-flash|v4-pro|v3) [--context N] [--cache-type T]\n"
    "            cache bytes per layer kind; the last line is one JSON object\n"
    "  under mpirun -np N: info, logits, generate, chat and bench split the model over the ranks;\n"
    "            --parallel expert (default: routed experts and the head) | tensor (also attention heads\n"
    "            and the shared expert / dense MLPs)\n";

}  // namespace

namespace dsv4::cli {
int cmd_tokenize(const Args& a);    // cli/cmd_text.cpp
int cmd_detokenize(const Args& a);  // cli/cmd_text.cpp
int cmd_chat(const Args& a);        // cli/cmd_chat.cpp
}  // namespace dsv4::cli

using namespace dsv4::cli;

namespace {
int run_command(int argc, char** argv);
}

// Under an MPI launcher (mpirun -np N dsv4 ...) the ranks split the model (--parallel); rank 0 prints,
// the others keep quiet on stdout; an error is reported by every rank that sees it.
int main(int argc, char** argv) {
#if defined(DSV4_WITH_MPI)
  if (dsv4::MpiRuntime::launched_by_mpi()) {
    dsv4::MpiRuntime mpi(&argc, &argv);
    dsv4::MpiCommunicator comm;
    if (comm.size() > 1) process_distribution().comm = &comm;
    if (comm.rank() != 0 && !std::freopen("/dev/null", "w", stdout)) return 1;
    const int rc = run_command(argc, argv);
    std::fflush(stdout);
    // After a failure: when every rank failed alike (a load error is agreed on by all ranks) they
    // all reach this meeting, have printed their message and can finish normally. Otherwise a
    // rank may be dead or waiting inside a collective: end them all rather than wait.
    if (rc != 0 && comm.size() > 1) {
      try {
        dsv4::MpiCommunicator meeting(MPI_COMM_WORLD, 10.0);
        std::vector<int> rcs(size_t(comm.size()));
        meeting.allgather(&rc, sizeof rc, rcs.data());
        for (int other : rcs)
          if (other == 0) mpi.abort(rc);
      } catch (const dsv4::Error&) {
        mpi.abort(rc);
      }
    }
    return rc;
  }
#else
  if (std::getenv("OMPI_COMM_WORLD_SIZE") && std::atoi(std::getenv("OMPI_COMM_WORLD_SIZE")) > 1) {
    std::fputs("dsv4: started by mpirun with several ranks, but this dsv4 was built without MPI "
               "(install libopenmpi-dev and rebuild)\n", stderr);
    return 2;
  }
#endif
  return run_command(argc, argv);
}

namespace {

int run_command(int argc, char** argv) {
  if (argc < 2) {
    std::fputs("dsv4: no command given (try 'dsv4 help')\n", stderr);
    return 2;
  }
  if (!std::strcmp(argv[1], "--help") || !std::strcmp(argv[1], "help")) {
    std::fputs(kUsage, stdout);
    return 0;
  }
  const std::string cmd = argv[1];
  try {
    if (cmd == "info") return cmd_info(Args(argc, argv, 2, {"model", "parallel"}, {}));
    if (cmd == "logits")
      return cmd_logits(Args(argc, argv, 2, {"model", "input", "out", "mode", "chunks", "threads", "backend", "cache-type", "parallel"}, {}));
    const std::set<std::string> sampling = {"temperature", "top-k", "top-p", "min-p", "repetition-penalty",
                                            "frequency-penalty", "presence-penalty", "seed"};
    auto plus = [](std::set<std::string> a, const std::set<std::string>& b) {
      a.insert(b.begin(), b.end());
      return a;
    };
    if (cmd == "generate")
      return cmd_generate(Args(argc, argv, 2,
                               plus({"model", "prompt-ids", "prompt", "tokenizer", "max-new-tokens", "stop", "mode", "threads", "backend",
                                     "cache-type", "save-cache", "load-cache", "parallel"},
                                    sampling),
                               {"greedy", "ignore-eos"}));
    if (cmd == "chat")
      return cmd_chat(Args(argc, argv, 2,
                           plus({"model", "tokenizer", "system", "format", "max-new-tokens", "stop", "mode", "threads", "parallel"},
                                sampling),
                           {"greedy", "ignore-eos", "think", "keep-reasoning"}));
    if (cmd == "tokenize") return cmd_tokenize(Args(argc, argv, 2, {"tokenizer"}, {"bos", "bytes"}));
    if (cmd == "detokenize") return cmd_detokenize(Args(argc, argv, 2, {"tokenizer"}, {"skip-special"}));
    if (cmd == "synth")
      return cmd_synth(Args(argc, argv, 2, {"preset", "config", "layers", "out", "seed", "compress-ratios"}, {"fp8-experts"}));
    if (cmd == "kv") return cmd_kv(Args(argc, argv, 2, {"model", "config", "preset", "tokens", "context", "cache-type"}, {}));
    if (cmd == "bench")
      return cmd_bench(Args(argc, argv, 2,
                            {"model", "prompt-tokens", "decode-tokens", "threads", "mode", "backend", "batch", "cache-type",
                             "context", "parallel"},
                            {}));
    std::fprintf(stderr, "dsv4: unknown command '%s' (try 'dsv4 help')\n", cmd.c_str());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "dsv4 %s: %s\n", cmd.c_str(), e.what());
    return 1;
  }
}

}  // namespace
