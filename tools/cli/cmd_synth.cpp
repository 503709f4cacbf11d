// dsv4 synth: a checkpoint with the real shapes and random weights, for measuring speed anywhere.
#include <cstdio>

#include "common.hpp"

namespace dsv4::cli {

int cmd_synth(const Args& a) {
  std::string config;
  if (a.has("config")) {
    if (a.has("preset")) fail("give --preset or --config, not both");
    config = read_text_file(a.get("config"));
  } else {
    config = preset_config(a.get("preset"), a.has("layers") ? parse_int(a.get("layers"), "--layers") : -1);
  }
  SynthOptions opt;
  if (a.has("seed")) opt.seed = uint64_t(parse_int(a.get("seed"), "--seed"));
  opt.fp8_experts = a.has("fp8-experts");
  const std::string out = a.get("out");
  write_synthetic_checkpoint(out, config, opt);
  const Checkpoint ck = Checkpoint::open(out);
  std::printf("wrote %s: %zu tensors, %.2f GB\n", out.c_str(), ck.tensors().size(), double(ck.total_bytes()) / 1e9);
  return 0;
}

}  // namespace dsv4::cli
