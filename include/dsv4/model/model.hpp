#pragma once
// A loaded model: runtime layer configs + weights viewed in place in the mmapped checkpoint.
// Each layer is a choice of parts made at load from the config (residual wiring, attention kind,
// feed-forward kind and router), so DeepSeek-V4 and DeepSeek-V3 run through the one forward pass
// below. forward<Bundle>() runs a batch of independent sequences, each continuing from its own
// SequenceCache, with the kernels of the chosen policy bundle.
#include <algorithm>
#include <filesystem>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "dsv4/attention/attention.hpp"
#include "dsv4/core/hash.hpp"
#include "dsv4/io/config_json.hpp"
#include "dsv4/model/cache_bytes.hpp"
#include "dsv4/model/distribution.hpp"
#include "dsv4/model/residual.hpp"
#include "dsv4/moe/ffn.hpp"

namespace dsv4 {

struct DecoderLayer {
  ResidualVariant attn_residual, ffn_residual;
  std::vector<float> attn_norm;  // [D]
  std::vector<float> ffn_norm;   // [D]
  AttentionVariant attn;
  FfnVariant ffn;
};

class Model;

// Everything one sequence carries between calls: its position and each layer's attention state.
class SequenceCache {
 public:
  int64_t position() const { return pos_; }
  CacheType cache_type() const { return type_; }
  // Bytes layer `i` has allocated now (see cache_bytes.hpp for the prediction).
  int64_t layer_bytes(size_t i) const { return measured_state_bytes(layers_.at(i)); }
  int64_t total_bytes() const {
    int64_t b = 0;
    for (size_t i = 0; i < layers_.size(); ++i) b += layer_bytes(i);
    return b;
  }
  size_t num_layers() const { return layers_.size(); }
  const AttentionState& layer_state(size_t i) const { return layers_.at(i); }
  bool made_by(const Model& m) const { return owner_ == &m; }

 private:
  friend class Model;
  friend struct CacheStateAccess;
  const Model* owner_ = nullptr;
  int64_t pos_ = 0;
  CacheType type_ = CacheType::F32;
  std::vector<AttentionState> layers_;
};

// Builds a cache's state directly (restoring a saved file, synthetic long contexts for benchmarks).
struct CacheStateAccess {
  static void set_position(SequenceCache& c, int64_t pos) { c.pos_ = pos; }
  static std::vector<AttentionState>& layers(SequenceCache& c) { return c.layers_; }
};

// One sequence's share of a batch: the tokens that continue it.
struct SequenceInput {
  SequenceCache* cache;
  std::span<const int32_t> tokens;
};

enum class LogitRows { All, Last };

// A fingerprint of what a rank loaded: the config, every tensor's name, dtype and shape, and the
// first bytes of the embedding (which tell two random-weight checkpoints of one shape apart).
inline uint64_t checkpoint_fingerprint(const ModelConfig& c, const Checkpoint& ck) {
  uint64_t h = kHashSeed;
  auto mix = [&](const void* p, size_t n) { h = hash_bytes(p, n, h); };
  std::vector<const TensorView*> ts;
  for (auto& [name, t] : ck.tensors()) ts.push_back(&t);
  std::sort(ts.begin(), ts.end(), [](auto* a, auto* b) { return a->name < b->name; });
  for (auto* t : ts) {
    mix(t->name.data(), t->name.size());
    mix(&t->dtype, sizeof t->dtype);
    mix(t->shape.data(), t->shape.size() * sizeof(int64_t));
  }
  for (const char* e : {"embed.weight", "model.embed_tokens.weight"})
    if (auto* t = ck.find(e)) mix(t->data, std::min<size_t>(t->nbytes, 256));
  const int64_t dims[] = {c.vocab_size, c.hidden_size, c.num_layers, c.n_routed_experts, c.hc_mult};
  mix(dims, sizeof dims);
  return h;
}

class Model {
 public:
  // Loads the model in `dir`. Split over the ranks of `dist` (expert parallelism, and with
  // dist.tensor tensor parallelism), each rank maps the checkpoint's headers but reads only its own
  // experts (and share of the heads); every rank must call load with the same model and the same
  // Distribution, and a failure on any rank fails the load on all of them.
  static Model load(const std::filesystem::path& dir, const Distribution& dist = {}) {
    if (!dist.split()) return load_local(dir, dist);
    require_same_on_all_ranks(*dist.comm, dist.tensor ? 1 : 0, "the parallelism (expert or tensor)");
    std::string error;
    Model m;
    try {
      m = load_local(dir, dist);
    } catch (const Error& e) {
      error = e.what();
    }
    agree_or_fail(*dist.comm, "loading '" + dir.string() + "'", error);
    require_same_on_all_ranks(*dist.comm, checkpoint_fingerprint(m.config_, *m.checkpoint_),
                              "the model in '" + dir.string() + "'");
    return m;
  }

  const Distribution& distribution() const { return dist_; }

 private:
  static Model load_local(const std::filesystem::path& dir, const Distribution& dist) {
    Model m;
    m.dist_ = dist;
    m.config_ = load_config(dir);
    if (dist.tensor_shard().split()) require_tensor_split(m.config_, dist.size());  // before mapping anything
    m.checkpoint_ = std::make_unique<Checkpoint>(Checkpoint::open(dir, dist.split() ? MapMode::OnDemand : MapMode::Whole));
    const ModelConfig& c = m.config_;
    WeightSource ws(*m.checkpoint_, c);
    m.layout_ = ws.layout();
    m.fingerprint_ = checkpoint_fingerprint(c, *m.checkpoint_);
    m.embed_ = ws.matrix("embed", c.vocab_size, c.hidden_size);
    m.head_ = ws.matrix("head", c.vocab_size, c.hidden_size);
    if (dist.split()) {  // vocabulary-parallel head: each rank scores a block of the vocabulary
      const int64_t g = row_granule(m.head_), blocks = (c.vocab_size + g - 1) / g;
      for (int r = 0; r <= dist.size(); ++r)
        m.head_firsts_.push_back(std::min(blocks * r / dist.size() * g, c.vocab_size));
      for (int r = 0; r < dist.size(); ++r)
        m.head_block_most_ = std::max(m.head_block_most_, m.head_firsts_[size_t(r) + 1] - m.head_firsts_[size_t(r)]);
      const int64_t first = m.head_firsts_[size_t(dist.rank())];
      m.head_ = row_slice(m.head_, first, m.head_firsts_[size_t(dist.rank()) + 1] - first);
    }
    m.norm_ = ws.floats("norm.weight", {c.hidden_size});
    m.head_residual_ = make_head(ws, c);
    m.rope_main_ = RopeTable(c.rope_main, c.rope_dim);
    m.rope_compress_ = RopeTable(c.rope_compress, c.rope_dim);
    m.rope_mla_ = RopeTable(c.rope_main, c.rope_dim, c.rope_interleave, mla_rope_amplitude(c.rope_main.yarn));
    for (int64_t l = 0; l < c.num_layers; ++l) {
      const std::string p = "layers." + std::to_string(l);
      DecoderLayer d{make_residual(ws, p + ".hc_attn", c),
                     make_residual(ws, p + ".hc_ffn", c),
                     ws.floats(p + ".attn_norm.weight", {c.hidden_size}),
                     ws.floats(p + ".ffn_norm.weight", {c.hidden_size}),
                     make_attention(ws, p + ".attn", c, l, dist.tensor_shard()),
                     make_ffn(ws, p + ".ffn", c, l, dist)};
      m.layers_.push_back(std::move(d));
    }
    return m;
  }

 public:
  const ModelConfig& config() const { return config_; }
  const Checkpoint& checkpoint() const { return *checkpoint_; }
  TensorLayout layout() const { return layout_; }
  // checkpoint_fingerprint of what was loaded: tells saved caches of other models apart.
  uint64_t fingerprint() const { return fingerprint_; }
  const std::vector<DecoderLayer>& layers() const { return layers_; }
  const Matrix& head() const { return head_; }
  // Split: [ranks + 1] the first vocabulary row of each rank's head block (the device backend
  // gathers the blocks the same way); empty when the model is whole.
  const std::vector<int64_t>& head_firsts() const { return head_firsts_; }
  const Matrix& embedding() const { return embed_; }
  const RopeTable& rope(AttentionKind k) const {
    switch (k) {
      case AttentionKind::Sliding: return rope_main_;
      case AttentionKind::MLA: return rope_mla_;
      default: return rope_compress_;
    }
  }

  // An empty cache for one sequence, storing its values as `type` says (model/cache_type.hpp).
  SequenceCache new_cache(CacheType type = CacheType::F32) const {
    SequenceCache s;
    s.owner_ = this;
    s.type_ = type;
    for (auto& l : layers_) s.layers_.push_back(new_attention_state(l.attn, config_, type));
    return s;
  }

  // Fails, naming sequence `b` of a batch and the token, unless every id is in [0, vocab_size).
  void check_token_ids(std::span<const int32_t> tokens, size_t b) const {
    for (size_t i = 0; i < tokens.size(); ++i)
      if (tokens[i] < 0 || tokens[i] >= config_.vocab_size)
        fail("forward: sequence ", b, " token ", i, " has id ", tokens[i], ", outside the vocabulary [0, ",
             config_.vocab_size, ")");
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
      check_token_ids(in.tokens, b);
      segs.push_back({int64_t(tokens.size()), int64_t(in.tokens.size()), in.cache->pos_});
      tokens.insert(tokens.end(), in.tokens.begin(), in.tokens.end());
    }
    const int64_t T = int64_t(tokens.size());

    // Residual streams (one when plain): every stream starts as the token's embedding.
    std::vector<float> x(size_t(T * n * D));
    for (int64_t i = 0; i < T; ++i) {
      decode_row(embed_, tokens[size_t(i)], &x[size_t(i * n * D)]);
      for (int64_t s = 1; s < n; ++s) std::copy_n(&x[size_t(i * n * D)], D, &x[size_t((i * n + s) * D)]);
    }
    if (trace) trace->hidden.clear(), trace->indexer_topk.clear();

    std::vector<float> u(size_t(T * D)), y(size_t(T * D));
    HcMix mix;
    const float eps = float(c.rms_norm_eps);
    auto pre = [&](const ResidualVariant& r) {
      std::visit([&](auto& w) { residual_pre<B>(w, c, x.data(), T, mix, u.data()); }, r);
    };
    auto post = [&](const ResidualVariant& r) {
      std::visit([&](auto& w) { residual_post(w, c, mix, y.data(), T, x.data()); }, r);
    };
    for (size_t l = 0; l < layers_.size(); ++l) {
      const DecoderLayer& L = layers_[l];
      if (trace && trace->record_hidden) trace->hidden.push_back(x);
      pre(L.attn_residual);
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
      if (dist_.tensor_shard().split()) allreduce_sum(*dist_.comm, y.data(), T * D);  // heads' shares
      post(L.attn_residual);
      pre(L.ffn_residual);
      for (int64_t i = 0; i < T; ++i) rms_norm(&u[size_t(i * D)], L.ffn_norm.data(), D, eps, &u[size_t(i * D)]);
      ffn_forward<B>(L.ffn, c, u.data(), tokens.data(), T, y.data(), dist_.comm);
      post(L.ffn_residual);
    }
    for (auto& in : batch) in.cache->pos_ += int64_t(in.tokens.size());

    // Head reduction (hyper head or the plain stream) and final norm over the rows whose logits are wanted.
    std::vector<int64_t> want;
    if (rows == LogitRows::All)
      for (int64_t i = 0; i < T; ++i) want.push_back(i);
    else
      for (auto& s : segs) want.push_back(s.row0 + s.count - 1);
    const int64_t R = int64_t(want.size());
    std::vector<float> xs(size_t(R * n * D)), h(size_t(R * D));
    for (int64_t r = 0; r < R; ++r) std::copy_n(&x[size_t(want[size_t(r)] * n * D)], n * D, &xs[size_t(r * n * D)]);
    std::visit([&](auto& hh) { head_reduce<B>(hh, c, xs.data(), R, h.data()); }, head_residual_);
    for (int64_t r = 0; r < R; ++r) rms_norm(&h[size_t(r * D)], norm_.data(), D, eps, &h[size_t(r * D)]);
    if (trace && trace->record_hidden) trace->hidden.push_back(h);
    logits.resize(size_t(R * V));
    if (!dist_.split()) {
      linear<B>(head_, h.data(), R, logits.data());
      return;
    }
    // Vocabulary-parallel head: each rank's block of logits, padded to the largest block, gathered.
    const int64_t most = head_block_most_;
    std::vector<float> part(size_t(R * most), 0.f), all(size_t(R * most * dist_.size()));
    if (dsv4::rows(head_) > 0) linear<B>(head_, h.data(), R, part.data());  // [R, rows of this rank]
    dist_.comm->allgather(part.data(), part.size() * sizeof(float), all.data());
    for (int r = 0; r < dist_.size(); ++r) {
      const int64_t first = head_firsts_[size_t(r)], n = head_firsts_[size_t(r) + 1] - first;
      for (int64_t i = 0; i < R; ++i)
        std::copy_n(&all[size_t(r * R * most + i * n)], n, &logits[size_t(i * V + first)]);
    }
  }

 private:
  Model() = default;
  Distribution dist_;
  ModelConfig config_;
  std::unique_ptr<Checkpoint> checkpoint_;
  TensorLayout layout_ = TensorLayout::Release;
  uint64_t fingerprint_ = 0;
  Matrix embed_, head_;   // [V, D] (split: [rows of this rank's vocabulary block, D])
  std::vector<int64_t> head_firsts_;  // split: [ranks + 1] first vocabulary row of each rank's block
  int64_t head_block_most_ = 0;       // split: the rows of the largest block (the gather's stride)
  std::vector<float> norm_;  // [D]
  HeadVariant head_residual_;
  RopeTable rope_main_, rope_compress_, rope_mla_;
  std::vector<DecoderLayer> layers_;
};

}  // namespace dsv4
