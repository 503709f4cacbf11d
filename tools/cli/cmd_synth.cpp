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
  // --compress-ratios 4,128: the layer schedule (0 sliding, 4 CSA, other m HCA) instead of the preset's,
  // e.g. a 2-layer V4-Flash whose layers are one CSA and one HCA layer.
  if (a.has("compress-ratios")) {
    if (!a.has("preset") || a.get("preset").rfind("v4-", 0) != 0) fail("--compress-ratios: only with a v4 --preset");
    nlohmann::ordered_json j = nlohmann::ordered_json::parse(config);
    const std::vector<int64_t> r = parse_int_list(a.get("compress-ratios"), "--compress-ratios");
    if (int64_t(r.size()) != j["num_hidden_layers"].get<int64_t>())
      fail("--compress-ratios: ", r.size(), " ratios for ", j["num_hidden_layers"].get<int64_t>(), " layers");
    for (int64_t v : r)
      if (v < 0) fail("--compress-ratios: ratios must be >= 0 (0 sliding, 4 CSA, other HCA)");
    j["compress_ratios"] = r;
    config = j.dump(2);
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
