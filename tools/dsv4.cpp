// dsv4: the command-line tool. Other tools and checks drive the library through it.
//   dsv4 info --model DIR
//   dsv4 logits --model DIR --input IN.safetensors --out OUT.safetensors [--mode reference|fast]
//               [--chunks a,b,...] [--threads N]
//   dsv4 generate --model DIR --prompt-ids 5,17,42 --max-new-tokens N
//               [--greedy | --temperature T --top-p P --seed S] [--mode ...] [--ignore-eos]
//   dsv4 synth (--preset v4-flash|v4-pro [--layers L] | --config FILE) --out DIR [--seed S]
//   dsv4 bench --model DIR [--prompt-tokens P] [--decode-tokens N] [--threads T]
// Errors: non-zero exit and one line on stderr.
#include <cstdio>
#include <cstring>
#include <string>

#include "cli/common.hpp"

namespace {

const char* kUsage =
    "usage: dsv4 <command> [options]\n"
    "  info      --model DIR\n"
    "  logits    --model DIR --input IN.safetensors --out OUT.safetensors [--mode reference|fast]\n"
    "            [--chunks a,b,...] [--threads N]\n"
    "  generate  --model DIR --prompt-ids 5,17,42 --max-new-tokens N [--greedy | --temperature T\n"
    "            --top-p P --seed S] [--mode reference|fast] [--threads N] [--ignore-eos]\n"
    "  synth     (--preset v4-flash|v4-pro [--layers L] | --config FILE) --out DIR [--seed S] [--fp8-experts]\n"
    "  bench     --model DIR [--prompt-tokens P] [--decode-tokens N] [--threads T] [--mode reference|fast]\n";

}  // namespace

using namespace dsv4::cli;

int main(int argc, char** argv) {
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
    if (cmd == "info") return cmd_info(Args(argc, argv, 2, {"model"}, {}));
    if (cmd == "logits")
      return cmd_logits(Args(argc, argv, 2, {"model", "input", "out", "mode", "chunks", "threads"}, {}));
    if (cmd == "generate")
      return cmd_generate(Args(argc, argv, 2,
                               {"model", "prompt-ids", "max-new-tokens", "temperature", "top-p", "seed", "mode", "threads"},
                               {"greedy", "ignore-eos"}));
    if (cmd == "synth") return cmd_synth(Args(argc, argv, 2, {"preset", "config", "layers", "out", "seed"}, {"fp8-experts"}));
    if (cmd == "bench")
      return cmd_bench(Args(argc, argv, 2, {"model", "prompt-tokens", "decode-tokens", "threads", "mode"}, {}));
    std::fprintf(stderr, "dsv4: unknown command '%s' (try 'dsv4 help')\n", cmd.c_str());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "dsv4 %s: %s\n", cmd.c_str(), e.what());
    return 1;
  }
}
