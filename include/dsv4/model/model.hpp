#pragma once
// A loaded DeepSeek-V4 model: runtime layer configs + weights viewed in place in the mmapped
// checkpoint. forward<Bundle>() runs a batch of independent sequences, each continuing from its
// own SequenceCache, with the kernels of the chosen policy bundle.
#include <filesystem>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "dsv4/attention/attention.hpp"
#include "dsv4/io/config_json.hpp"
#include "dsv4/model/mhc.hpp"
#include "dsv4/moe/moe.hpp"

namespace dsv4 {

struct DecoderLayer {
  HyperConnection hc_attn, hc_ffn;
  std::vector<float> attn_norm;  // [D]
  std::vector<float> ffn_norm;   // [D]
  AttentionVariant attn;
  MoeWeights moe;
};

class Model;

// Everything one sequence carries between calls: its position and each layer's attention state.
class SequenceCache {
 public:
  int64_t position() const { return pos_; }

 private:
  friend class Model;
  const Model* owner_ = nullptr;
  int64_t pos_ = 0;
  std::vector<AttentionState> layers_;
};

// One sequence's share of a batch: the tokens that continue it.
struct SequenceInput {
  SequenceCache* cache;
  std::span<const int32_t> tokens;
};

enum class LogitRows { All, Last };

class Model {
 public:
  static Model load(const std::filesystem::path& dir) {
    Model m;
    m.config_ = load_config(dir);
    m.checkpoint_ = std::make_unique<Checkpoint>(Checkpoint::open(dir));
    const ModelConfig& c = m.config_;
    WeightSource ws(*m.checkpoint_, c);
    m.layout_ = ws.layout();
    m.embed_ = ws.matrix("embed", c.vocab_size, c.hidden_size);
    m.head_ = ws.matrix("head", c.vocab_size, c.hidden_size);
    m.norm_ = ws.floats("norm.weight", {c.hidden_size});
    m.hyper_head_ = HyperHead::load(ws, c);
    m.rope_main_ = RopeTable(c.rope_main, c.rope_dim);
    m.rope_compress_ = RopeTable(c.rope_compress, c.rope_dim);
    for (int64_t l = 0; l < c.num_layers; ++l) {
      const std::string p = "layers." + std::to_string(l);
      DecoderLayer d{HyperConnection::load(ws, p + ".hc_attn", c),
                     HyperConnection::load(ws, p + ".hc_ffn", c),
                     ws.floats(p + ".attn_norm.weight", {c.hidden_size}),
                     ws.floats(p + ".ffn_norm.weight", {c.hidden_size}),
                     make_attention(ws, p + ".attn", c, l),
                     MoeWeights::load(ws, p + ".ffn", c, c.layers[size_t(l)])};
      m.layers_.push_back(std::move(d));
    }
    return m;
  }

  const ModelConfig& config() const { return config_; }
  const Checkpoint& checkpoint() const { return *checkpoint_; }
  TensorLayout layout() const { return layout_; }
  const std::vector<DecoderLayer>& layers() const { return layers_; }
  const Matrix& head() const { return head_; }
  const Matrix& embedding() const { return embed_; }
  const RopeTable& rope(AttentionKind k) const { return k == AttentionKind::Sliding ? rope_main_ : rope_compress_; }

  SequenceCache new_cache() const {
    SequenceCache s;
    s.owner_ = this;
    for (auto& l : layers_) s.layers_.push_back(new_attention_state(l.attn, config_));
    return s;
  }

  // Runs the batch and writes logits: [sum of tokens, V] (All) or [sequences, V] (Last).
  template <KernelBundle B>
  void forward(std::span<const SequenceInput> batch, std::vector<float>& logits, LogitRows rows = LogitRows::All,
               ForwardTrace* trace = nullptr) const {
    const ModelConfig& c = config_;
    const int64_t n = c.hc_mult, D = c.hidden_size, V = c.vocab_size;
    if (batch.empty()) fail("forward: empty batch");
    std::vector<Segment> segs;
    std::vector<int32_t> tokens;
    for (size_t b = 0; b < batch.size(); ++b) {
      const SequenceInput& in = batch[b];
      if (!in.cache || in.cache->owner_ != this) fail("forward: sequence ", b, " has a cache that was not made by this model");
      for (size_t o = 0; o < b; ++o)
        if (batch[o].cache == in.cache) fail("forward: sequences ", o, " and ", b, " share one cache");
      if (in.tokens.empty()) fail("forward: sequence ", b, " has no tokens (empty prompt)");
      for (size_t i = 0; i < in.tokens.size(); ++i)
        if (in.tokens[i] < 0 || in.tokens[i] >= V)
          fail("forward: sequence ", b, " token ", i, " has id ", in.tokens[i], ", outside the vocabulary [0, ", V, ")");
      segs.push_back({int64_t(tokens.size()), int64_t(in.tokens.size()), in.cache->pos_});
      tokens.insert(tokens.end(), in.tokens.begin(), in.tokens.end());
    }
    const int64_t T = int64_t(tokens.size());

    // Residual streams: every stream starts as the token's embedding.
    std::vector<float> x(size_t(T * n * D));
    for (int64_t i = 0; i < T; ++i) {
      decode_row(embed_, tokens[size_t(i)], &x[size_t(i * n * D)]);
      for (int64_t s = 1; s < n; ++s) std::copy_n(&x[size_t(i * n * D)], D, &x[size_t((i * n + s) * D)]);
    }
    if (trace) trace->hidden.clear(), trace->indexer_topk.clear();

    std::vector<float> u(size_t(T * D)), y(size_t(T * D));
    HcMix mix;
    const float eps = float(c.rms_norm_eps);
    for (size_t l = 0; l < layers_.size(); ++l) {
      const DecoderLayer& L = layers_[l];
      if (trace && trace->record_hidden) trace->hidden.push_back(x);
      hc_pre<B>(L.hc_attn, c, x.data(), T, mix, u.data());
      for (int64_t i = 0; i < T; ++i) rms_norm(&u[size_t(i * D)], L.attn_norm.data(), D, eps, &u[size_t(i * D)]);
      std::visit(
          [&](auto& attn) {
            using State = typename std::decay_t<decltype(attn)>::State;
            std::vector<State*> states;
            for (auto& in : batch) states.push_back(&std::get<State>(in.cache->layers_[l]));
            attn.template forward<B>(c, rope(c.layers[l].attention), u.data(), T, segs, states, y.data(), trace,
                                     int64_t(l));
          },
          L.attn);
      hc_post(c, mix, y.data(), T, x.data());
      hc_pre<B>(L.hc_ffn, c, x.data(), T, mix, u.data());
      for (int64_t i = 0; i < T; ++i) rms_norm(&u[size_t(i * D)], L.ffn_norm.data(), D, eps, &u[size_t(i * D)]);
      moe_forward<B>(L.moe, c, u.data(), tokens.data(), T, y.data());
      hc_post(c, mix, y.data(), T, x.data());
    }
    for (auto& in : batch) in.cache->pos_ += int64_t(in.tokens.size());

    // Hyper head and final norm over the rows whose logits are wanted.
    std::vector<int64_t> want;
    if (rows == LogitRows::All)
      for (int64_t i = 0; i < T; ++i) want.push_back(i);
    else
      for (auto& s : segs) want.push_back(s.row0 + s.count - 1);
    const int64_t R = int64_t(want.size());
    std::vector<float> xs(size_t(R * n * D)), h(size_t(R * D));
    for (int64_t r = 0; r < R; ++r) std::copy_n(&x[size_t(want[size_t(r)] * n * D)], n * D, &xs[size_t(r * n * D)]);
    hc_head<B>(hyper_head_, c, xs.data(), R, h.data());
    for (int64_t r = 0; r < R; ++r) rms_norm(&h[size_t(r * D)], norm_.data(), D, eps, &h[size_t(r * D)]);
    if (trace && trace->record_hidden) trace->hidden.push_back(h);
    logits.resize(size_t(R * V));
    linear<B>(head_, h.data(), R, logits.data());
  }

 private:
  Model() = default;
  ModelConfig config_;
  std::unique_ptr<Checkpoint> checkpoint_;
  TensorLayout layout_ = TensorLayout::Release;
  Matrix embed_, head_;   // [V, D]
  std::vector<float> norm_;  // [D]
  HyperHead hyper_head_;
  RopeTable rope_main_, rope_compress_;
  std::vector<DecoderLayer> layers_;
};

}  // namespace dsv4
