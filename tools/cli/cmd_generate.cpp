// dsv4 generate: continue a prompt of token ids.
#include <cstdio>

#include "common.hpp"
#include <climits>

namespace dsv4::cli {

int cmd_generate(const Args& a) {
  apply_threads(a);
  std::vector<int32_t> prompt;
  for (int64_t v : parse_int_list(a.get("prompt-ids"), "--prompt-ids")) {
    if (v < INT32_MIN || v > INT32_MAX) fail("--prompt-ids: ", v, " is out of range");
    prompt.push_back(int32_t(v));
  }
  const int64_t max_new = parse_int(a.get("max-new-tokens"), "--max-new-tokens");
  if (max_new < 0) fail("--max-new-tokens: must be >= 0");
  SamplingParams sp;
  const bool sampled = a.has("temperature") || a.has("top-p") || a.has("seed");
  if (a.has("greedy") && sampled) fail("--greedy cannot be combined with --temperature/--top-p/--seed");
  sp.greedy = !sampled;
  if (a.has("temperature")) sp.temperature = float(parse_double(a.get("temperature"), "--temperature"));
  if (a.has("top-p")) sp.top_p = float(parse_double(a.get("top-p"), "--top-p"));
  if (a.has("seed")) sp.seed = uint64_t(parse_int(a.get("seed"), "--seed"));
  Sampler sampler(sp);
  const Model m = Model::load(a.get("model"));
  const bool stop_at_eos = !a.has("ignore-eos");
  std::vector<int32_t> generated;
  with_mode(a, [&]<class Bundle>() {
    SequenceCache cache = m.new_cache();
    std::vector<float> logits;
    std::vector<int32_t> feed = prompt;
    const int64_t V = m.config().vocab_size;
    for (int64_t i = 0; i < max_new; ++i) {
      SequenceInput in{&cache, feed};
      m.forward<Bundle>({&in, 1}, logits, LogitRows::Last);
      int32_t next = sampler.next(std::span<const float>(logits).first(size_t(V)));
      generated.push_back(next);
      if (stop_at_eos && next == m.config().eos_token_id) break;
      feed.assign(1, next);
    }
  });
  for (size_t i = 0; i < generated.size(); ++i) std::printf("%s%d", i ? " " : "", generated[i]);
  std::printf("\n");
  return 0;
}


}  // namespace dsv4::cli
