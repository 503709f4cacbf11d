// dsv4 info: what a checkpoint holds.
#include <cstdio>

#include "common.hpp"

namespace dsv4::cli {

int cmd_info(const Args& a) {
  const Model m = load_model(a);
  const ModelConfig& c = m.config();
  std::printf("model: %s (%s layout)\n", a.get("model").c_str(),
              m.layout() == TensorLayout::Release ? "release" : "transformers");
  std::printf("architecture %s, residual %s\n", c.model_type.c_str(),
              c.residual == ResidualKind::Plain ? "plain" : "mHC streams");
  if (c.arch == Architecture::DeepseekV3) {
    std::printf("vocab %lld, hidden %lld, layers %lld, heads %lld, q_lora %lld, MLA latent %lld + rope %lld "
                "(nope %lld, v %lld), cache %lld bytes per token per layer\n",
                (long long)c.vocab_size, (long long)c.hidden_size, (long long)c.num_layers, (long long)c.num_heads,
                (long long)c.q_lora_rank, (long long)c.kv_lora_rank, (long long)c.rope_dim, (long long)c.qk_nope_head_dim,
                (long long)c.v_head_dim, (long long)MlaAttention::cache_bytes_per_token(c));
    std::printf("experts %lld (top %lld of %lld groups keeping %lld, width %lld, shared %lld), dense width %lld\n",
                (long long)c.n_routed_experts, (long long)c.n_experts_per_tok, (long long)c.n_group,
                (long long)c.topk_group, (long long)c.moe_intermediate_size, (long long)c.n_shared_experts,
                (long long)c.intermediate_size);
  } else {
    std::printf("vocab %lld, hidden %lld, layers %lld, heads %lld x %lld (rope %lld), q_lora %lld, o_groups %lld x %lld\n",
                (long long)c.vocab_size, (long long)c.hidden_size, (long long)c.num_layers, (long long)c.num_heads,
                (long long)c.head_dim, (long long)c.rope_dim, (long long)c.q_lora_rank, (long long)c.o_groups,
                (long long)c.o_lora_rank);
    std::printf("experts %lld (top %lld, width %lld, shared %lld), window %lld, mHC streams %lld (sinkhorn %lld)\n",
                (long long)c.n_routed_experts, (long long)c.n_experts_per_tok, (long long)c.moe_intermediate_size,
                (long long)c.n_shared_experts, (long long)c.sliding_window, (long long)c.hc_mult,
                (long long)c.hc_sinkhorn_iters);
    if (c.index_topk)
      std::printf("indexer %lld heads x %lld, top-k %lld\n", (long long)c.index_n_heads, (long long)c.index_head_dim,
                  (long long)c.index_topk);
  }
  for (size_t l = 0; l < m.layers().size(); ++l) {
    const LayerConfig& lc = c.layers[l];
    int64_t bytes = 0;
    std::map<std::string, int> schemes;
    auto count = [&](const char*, const Matrix& w) { bytes += storage_bytes(w), ++schemes[scheme_name(w)]; };
    std::visit([&](auto& at) { at.for_each_matrix(count); }, m.layers()[l].attn);
    for_each_ffn_matrix(m.layers()[l].ffn, [&](const char* n, const Matrix& w, bool) {
      if (std::string_view(n) != "gate") count(n, w);
    });
    std::string sch;
    for (auto& [k, v] : schemes) sch += (sch.empty() ? "" : ", ") + k + " x" + std::to_string(v);
    const std::string ffn = lc.ffn == FfnKind::Dense ? "dense" : std::string("moe/") + router_kind_name(lc.router);
    std::printf("layer %2zu: %-7s ratio %-4lld ffn %-10s  %.2f MiB  [%s]\n", l, attention_kind_name(lc.attention),
                (long long)lc.compress_ratio, ffn.c_str(), double(bytes) / (1 << 20), sch.c_str());
  }
  std::map<std::string, std::pair<int, size_t>> by_dtype;
  for (auto& [name, t] : m.checkpoint().tensors()) {
    auto& e = by_dtype[std::string(dtype_name(t.dtype))];
    ++e.first, e.second += t.nbytes;
  }
  for (auto& [dt, e] : by_dtype)
    std::printf("dtype %-8s %6d tensors %12zu bytes\n", dt.c_str(), e.first, e.second);
  std::printf("weights: %zu bytes in %zu tensors\n", m.checkpoint().total_bytes(), m.checkpoint().tensors().size());
  return 0;
}


}  // namespace dsv4::cli
