// dsv4 kv: what one sequence's cache costs at a context length, per attention kind, from
// config.json alone (no weights), for a cache type. The numbers come from
// predict_layer_cache_bytes (model/cache_bytes.hpp), which follows the allocation code of the
// runtime (KvRows pages, compressor windows) and which a test checks against live caches.
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
  if (a.has("context") && a.has("tokens")) fail("give --context N (or its older name --tokens), not both");
  const std::string key = a.has("tokens") ? "tokens" : "context";
  const int64_t tokens = a.has(key) ? parse_int(a.get(key), "--" + key) : 1 << 20;
  if (tokens < 1) fail("--", key, " must be >= 1");
  const CacheType type = cache_type(a);
  for (const LayerConfig& l : c.layers)
    if (l.attention == AttentionKind::MLA && type != CacheType::F32)
      fail("--cache-type ", cache_type_name(type), ": MLA layers (DeepSeek-V3) keep an f32 latent cache only");

  struct Row {
    int layers = 0;
    int64_t at = 0, fixed = 0;  // bytes of all layers of the kind at `tokens`, and the length-independent part
  };
  std::map<std::string, Row> rows;
  for (const LayerConfig& l : c.layers) {
    Row& r = rows[attention_kind_name(l.attention)];
    ++r.layers;
    const LayerCacheBytes b = predict_layer_cache_bytes(c, l, tokens, type);
    r.at += b.total(), r.fixed += b.fixed;
  }
  std::printf("cache type %s, context %lld tokens, one sequence\n", cache_type_name(type), (long long)tokens);
  std::printf("%-8s %6s %18s %16s %14s\n", "kind", "layers", "B/token per layer", "fixed B per layer", "MiB at context");
  int64_t total = 0;
  for (auto& [kind, r] : rows) {
    total += r.at;
    std::printf("%-8s %6d %18.2f %16lld %14.2f\n", kind.c_str(), r.layers,
                double(r.at - r.fixed) / double(tokens) / r.layers, (long long)(r.fixed / r.layers), double(r.at) / (1 << 20));
  }
  std::printf("all layers: %.2f MiB, %.1f bytes per token of context\n", double(total) / (1 << 20),
              double(total) / double(tokens));
  std::printf("{\"context\": %lld, \"cache_type\": \"%s\", \"bytes_total\": %lld, \"bytes_per_token\": %.3f}\n",
              (long long)tokens, cache_type_name(type), (long long)total, double(total) / double(tokens));
  return 0;
}

}  // namespace dsv4::cli
