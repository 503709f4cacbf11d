// dsv4 kv: what a sequence's cache costs, per attention kind, from config.json alone (no weights):
// the bytes each layer adds per token and the bytes it holds whatever the length (all fp32),
// from predict_layer_cache_bytes (model/cache_bytes.hpp: what each layer kind holds), which a test
// checks against a live cache.
#include <cstdio>

#include "common.hpp"

namespace dsv4::cli {

int cmd_kv(const Args& a) {
  std::string text;
  const int given = int(a.has("model")) + int(a.has("config")) + int(a.has("preset"));
  if (given != 1) fail("give one of --model DIR, --config FILE, --preset NAME");
  if (a.has("model")) text = read_text_file(std::filesystem::path(a.get("model")) / "config.json");
  else if (a.has("config")) text = read_text_file(a.get("config"));
  else text = preset_config(a.get("preset"), -1);
  const ModelConfig c = parse_config(text, a.has("preset") ? a.get("preset") : "config.json");
  const int64_t tokens = a.has("tokens") ? parse_int(a.get("tokens"), "--tokens") : 1 << 20;
  if (tokens < 1) fail("--tokens must be >= 1");

  struct Row {
    int layers = 0;
    double per_token = 0, fixed = 0;  // bytes, per layer
  };
  std::map<std::string, Row> rows;
  for (const LayerConfig& l : c.layers) {
    Row& r = rows[attention_kind_name(l.attention)];
    ++r.layers;
    const LayerCacheBytes at = predict_layer_cache_bytes(c, l, tokens);
    r.fixed = double(at.fixed), r.per_token = double(at.entries) / double(tokens);
  }
  std::printf("%-8s %6s %16s %14s %16s\n", "kind", "layers", "bytes/token", "fixed bytes", "MiB at tokens");
  double total = 0, total_per_token = 0;
  for (auto& [kind, r] : rows) {
    const double at = (r.per_token * double(tokens) + r.fixed) * r.layers;
    total += at, total_per_token += r.per_token * r.layers;
    std::printf("%-8s %6d %16.1f %14.0f %16.2f\n", kind.c_str(), r.layers, r.per_token, r.fixed, at / (1 << 20));
  }
  std::printf("all layers: %.1f bytes per token, %.2f MiB for %lld tokens (fp32, one sequence)\n", total_per_token,
              total / (1 << 20), (long long)tokens);
  return 0;
}

}  // namespace dsv4::cli
