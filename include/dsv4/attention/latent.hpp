#pragma once
// The part every DeepSeek-V4 attention kind shares: low-rank queries, one shared kv head
// (key = value), sinks, de-rotation of the outputs and the grouped low-rank output projection.
// The kinds differ only in which keys a query sees beyond its sliding window.
#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "dsv4/attention/kv_rows.hpp"
#include "dsv4/attention/segment.hpp"
#include "dsv4/model/cache_type.hpp"
#include "dsv4/io/weight_source.hpp"
#include "dsv4/kernels/bundle.hpp"
#include "dsv4/kernels/ops.hpp"
#include "dsv4/kernels/rope.hpp"
#include "dsv4/model/distribution.hpp"

namespace dsv4 {

struct LatentWeights {
  int64_t heads = 0, groups = 0;  // the query heads and output groups held here (all unless split)
  Matrix wq_a;                 // [q_lora_rank, D]
  std::vector<float> q_norm;   // [q_lora_rank]
  Matrix wq_b;                 // [heads*d, q_lora_rank]
  Matrix wkv;                  // [d, D]
  std::vector<float> kv_norm;  // [d]
  Matrix wo_a;                 // [groups*o_lora_rank, H*d/o_groups]
  Matrix wo_b;                 // [D, groups*o_lora_rank]
  std::vector<float> sink;     // [heads]

  // Split over tp's ranks, rank r holds heads [r*H/p, (r+1)*H/p) and the output groups they feed;
  // its out is then its share of the layer's output, to be summed over the ranks.
  static LatentWeights load(const WeightSource& ws, const std::string& p, const ModelConfig& c,
                            const TensorShard& tp = {}) {
    tp.require_divides({{"num_attention_heads", c.num_heads}, {"o_groups", c.o_groups}}, p);
    LatentWeights w;
    const int64_t H = c.num_heads, d = c.head_dim, G = c.o_groups, R = c.o_lora_rank;
    w.heads = tp.part(H), w.groups = tp.part(G);
    w.wq_a = ws.matrix(p + ".wq_a", c.q_lora_rank, c.hidden_size);
    w.q_norm = ws.floats(p + ".q_norm.weight", {c.q_lora_rank});
    w.wkv = ws.matrix(p + ".wkv", d, c.hidden_size);
    w.kv_norm = ws.floats(p + ".kv_norm.weight", {d});
    w.sink = ws.floats(p + ".attn_sink", {H});
    w.wq_b = ws.matrix_rows(p + ".wq_b", H * d, c.q_lora_rank, tp.first(H) * d, w.heads * d);
    w.wo_a = ws.matrix_rows(p + ".wo_a", G * R, H * d / G, tp.first(G) * R, w.groups * R);
    w.wo_b = ws.matrix_cols(p + ".wo_b", c.hidden_size, G * R, tp.first(G) * R, w.groups * R);
    w.sink.erase(w.sink.begin(), w.sink.begin() + tp.first(H));
    w.sink.resize(size_t(w.heads));
    return w;
  }
};

// Per-sequence sliding window: the last W-1 kv vectors in a ring (slot = pos mod (W-1)).
struct WindowState {
  KvRows ring;  // [W-1, d] in the cache type's kv format
  void init(const ModelConfig& c, const RowCodec& kv) { ring.init_ring(kv, std::max<int64_t>(c.sliding_window - 1, 0)); }
};

// Rounds the segment's own kv rows as the cache will store them, so its attention reads the
// values a later chunk would read back (the result does not depend on the chunking).
inline void round_kv_like_cache(const WindowState& win, float* kv /*[count, d]*/, int64_t count) {
  const RowCodec& codec = win.ring.codec();
  if (codec.lossless()) return;
  std::vector<uint8_t> scratch(size_t(codec.row_bytes()));
  for (int64_t i = 0; i < count; ++i) codec.round_trip(kv + i * codec.width, scratch.data());
}

// Row-wise projections of the whole batch.
struct LatentProjections {
  std::vector<float> qr;  // [T, q_lora_rank] normed low-rank query (the indexer reads it too)
  std::vector<float> q;   // [T, H, d] normed per head, roped
  std::vector<float> kv;  // [T, d] normed, roped
};

template <KernelBundle B>
void latent_project(const LatentWeights& w, const ModelConfig& c, const RopeTable& rope, const float* x /*[T, D]*/,
                    int64_t t, const std::vector<Segment>& segs, LatentProjections& p) {
  const int64_t H = w.heads, d = c.head_dim, R = c.q_lora_rank;
  const float eps = float(c.rms_norm_eps);
  p.qr.resize(size_t(t * R));
  p.q.resize(size_t(t * H * d));
  p.kv.resize(size_t(t * d));
  linear<B>(w.wq_a, x, t, p.qr.data());
  for (int64_t i = 0; i < t; ++i) rms_norm(&p.qr[size_t(i * R)], w.q_norm.data(), R, eps, &p.qr[size_t(i * R)]);
  linear<B>(w.wq_b, p.qr.data(), t, p.q.data());
  linear<B>(w.wkv, x, t, p.kv.data());
  for (auto& s : segs)
    for (int64_t i = 0; i < s.count; ++i) {
      const int64_t row = s.row0 + i, pos = s.pos0 + i;
      for (int64_t h = 0; h < H; ++h) {
        float* qh = &p.q[size_t((row * H + h) * d)];
        rms_norm(qh, nullptr, d, eps, qh);
        rope.apply(qh, d, pos);
      }
      float* kv = &p.kv[size_t(row * d)];
      rms_norm(kv, w.kv_norm.data(), d, eps, kv);
      rope.apply(kv, d, pos);
    }
}

// Attention of one segment's queries over its sliding window plus extra keys chosen by the
// attention kind: extra(i, ids) appends the ids of the rows of `entries` that row i also sees
// (entries may be null when the kind adds none). Writes o: [count, H, d], de-rotated.
template <class ExtraKeys>
void latent_attend(const LatentWeights& w, const ModelConfig& c, const RopeTable& rope, const WindowState& win,
                   const Segment& s, const float* q /*[count, H, d]*/, const float* kv /*[count, d]*/,
                   const KvRows* entries, ExtraKeys&& extra, float* o /*[count, H, d]*/) {
  const int64_t H = w.heads, d = c.head_dim, W = c.sliding_window, ring = W - 1;
  const float scale = 1.0f / std::sqrt(float(d));
  std::vector<const float*> keys;
  std::vector<int64_t> ids;
  std::vector<float> logits, decoded;  // decoded: [keys, d] rows read back from a non-f32 cache
  for (int64_t i = 0; i < s.count; ++i) {
    const int64_t pos = s.pos0 + i;
    ids.clear();
    extra(i, ids);
    decoded.resize(size_t((W + int64_t(ids.size())) * d));
    keys.clear();
    for (int64_t p = std::max<int64_t>(0, pos - W + 1); p <= pos; ++p)
      keys.push_back(p >= s.pos0 ? kv + (p - s.pos0) * d : win.ring.floats(p % ring, &decoded[keys.size() * size_t(d)]));
    if (entries)  // null for sliding layers (no extra keys)
      for (int64_t e : ids) keys.push_back(entries->floats(e, &decoded[keys.size() * size_t(d)]));
    logits.resize(keys.size());
    for (int64_t h = 0; h < H; ++h) {
      const float* qh = q + (i * H + h) * d;
      float mx = w.sink[size_t(h)];
      for (size_t k = 0; k < keys.size(); ++k) {
        float dot = 0.f;
        for (int64_t j = 0; j < d; ++j) dot += qh[j] * keys[k][j];
        logits[k] = dot * scale;
        mx = std::max(mx, logits[k]);
      }
      float den = std::exp(w.sink[size_t(h)] - mx);  // the sink takes mass, gives no value
      for (auto& l : logits) den += (l = std::exp(l - mx));
      float* oh = o + (i * H + h) * d;
      std::fill(oh, oh + d, 0.f);
      for (size_t k = 0; k < keys.size(); ++k) {
        const float pk = logits[k] / den;
        for (int64_t j = 0; j < d; ++j) oh[j] += pk * keys[k][j];
      }
      rope.apply(oh, d, pos, -1);
    }
  }
}

// The same attention computed a block of consecutive queries at a time with the bundle's matmul:
// the block's keys (window positions plus the union of its extra keys) are gathered once,
// logits = [Q·H, d] × keys^T, masked to what each query sees, softmax with the sink, then
// outputs = P × keys. Equal to latent_attend up to summation order.
template <KernelBundle B, class ExtraKeys>
void latent_attend_blocked(const LatentWeights& w, const ModelConfig& c, const RopeTable& rope, const WindowState& win,
                           const Segment& s, const float* q /*[count, H, d]*/, const float* kv /*[count, d]*/,
                           const KvRows* entries, ExtraKeys&& extra, float* o /*[count, H, d]*/) {
  const int64_t H = w.heads, d = c.head_dim, W = c.sliding_window, ring = W - 1;
  const float scale = 1.0f / std::sqrt(float(d));
  std::vector<std::vector<int64_t>> extras;
  std::vector<int64_t> uniq;
  // Scratch kept per thread across calls: at long context a decode step gathers tens of MB, and
  // fresh allocations of that size cost page faults on every step.
  static thread_local std::vector<float> K, Vt, logits, mask;
  int64_t i0 = 0;
  while (i0 < s.count) {
    // Block size: keep the logits of a block near 2M floats.
    size_t max_extra = 0;
    int64_t i1 = i0;
    while (i1 < s.count) {
      if (extras.size() <= size_t(i1 - i0)) extras.emplace_back();
      std::vector<int64_t>& e = extras[size_t(i1 - i0)];
      e.clear();
      extra(i1, e);
      max_extra = std::max(max_extra, e.size());
      ++i1;
      const int64_t q_rows = (i1 - i0) * H, nk_est = (i1 - i0) + W + int64_t(max_extra) * (i1 - i0);
      if (i1 - i0 >= 16 || q_rows * nk_est > (int64_t(1) << 21)) break;
    }
    const int64_t nq = i1 - i0, p_first = std::max<int64_t>(0, s.pos0 + i0 - W + 1), p_last = s.pos0 + i1 - 1;
    const int64_t nw = p_last - p_first + 1;
    uniq.clear();
    for (int64_t i = 0; i < nq; ++i) uniq.insert(uniq.end(), extras[size_t(i)].begin(), extras[size_t(i)].end());
    std::sort(uniq.begin(), uniq.end());
    uniq.erase(std::unique(uniq.begin(), uniq.end()), uniq.end());
    const int64_t nk = nw + int64_t(uniq.size());
    K.resize(size_t(nk * d));
    Vt.resize(size_t(d * nk));
    for (int64_t p = p_first; p <= p_last; ++p) {
      float* dst = &K[size_t((p - p_first) * d)];
      if (p >= s.pos0) std::copy_n(kv + (p - s.pos0) * d, d, dst);
      else win.ring.decode(p % ring, dst);
    }
    if (entries)  // null for sliding layers (no extra keys)
      for (size_t u = 0; u < uniq.size(); ++u) entries->decode(uniq[u], &K[size_t((nw + int64_t(u)) * d)]);
    // Vt = K^T in 32 × 32 tiles (a plain loop strides through memory and dominates at long context).
    for (int64_t j0 = 0; j0 < nk; j0 += 32)
      for (int64_t x0 = 0; x0 < d; x0 += 32) {
        const int64_t j1 = std::min(nk, j0 + 32), x1 = std::min(d, x0 + 32);
        for (int64_t x = x0; x < x1; ++x)
          for (int64_t j = j0; j < j1; ++j) Vt[size_t(x * nk + j)] = K[size_t(j * d + x)];
      }
    // mask[i, j] = 0 where query i sees key j, -inf elsewhere.
    mask.assign(size_t(nq * nk), -std::numeric_limits<float>::infinity());
    for (int64_t i = 0; i < nq; ++i) {
      const int64_t pos = s.pos0 + i0 + i;
      for (int64_t p = std::max(p_first, pos - W + 1); p <= pos; ++p) mask[size_t(i * nk + (p - p_first))] = 0.f;
      for (int64_t e : extras[size_t(i)])
        mask[size_t(i * nk + nw + (std::lower_bound(uniq.begin(), uniq.end(), e) - uniq.begin()))] = 0.f;
    }
    const F32Matrix kmat{reinterpret_cast<const uint8_t*>(K.data()), nk, d};
    const F32Matrix vmat{reinterpret_cast<const uint8_t*>(Vt.data()), d, nk};
    logits.resize(size_t(nq * H * nk));
    B::matmul(kmat, q + i0 * H * d, d, nq * H, logits.data(), nk, 0, nk);
    for (int64_t i = 0; i < nq; ++i)
      for (int64_t h = 0; h < H; ++h) {
        float* l = &logits[size_t((i * H + h) * nk)];
        const float* mk = &mask[size_t(i * nk)];
        float mx = w.sink[size_t(h)];
        for (int64_t j = 0; j < nk; ++j) mx = std::max(mx, l[j] = l[j] * scale + mk[j]);
        float den = std::exp(w.sink[size_t(h)] - mx);
        for (int64_t j = 0; j < nk; ++j) den += (l[j] = std::exp(l[j] - mx));
        const float inv = 1.0f / den;
        for (int64_t j = 0; j < nk; ++j) l[j] *= inv;
      }
    float* ob = o + i0 * H * d;
    B::matmul(vmat, logits.data(), nk, nq * H, ob, d, 0, d);
    for (int64_t i = 0; i < nq; ++i)
      for (int64_t h = 0; h < H; ++h) rope.apply(ob + (i * H + h) * d, d, s.pos0 + i0 + i, -1);
    i0 = i1;
  }
}

// The bundle's choice between the per-query oracle and the blocked form. The segment's kv is first
// rounded in place as the cache stores it (round_kv_like_cache), so window_store keeps what the
// attention read.
template <KernelBundle B, class ExtraKeys>
void latent_attend_with(const LatentWeights& w, const ModelConfig& c, const RopeTable& rope, const WindowState& win,
                        const Segment& s, const float* q, float* kv /*[count, d]*/, const KvRows* entries,
                        ExtraKeys&& extra, float* o) {
  round_kv_like_cache(win, kv, s.count);
  if constexpr (B::kBlockedAttention) latent_attend_blocked<B>(w, c, rope, win, s, q, kv, entries, extra, o);
  else latent_attend(w, c, rope, win, s, q, kv, entries, extra, o);
}

// Stores the segment's last W-1 kv vectors into the ring, after its attention ran.
inline void window_store(WindowState& win, const ModelConfig& c, const Segment& s, const float* kv /*[count, d]*/) {
  const int64_t ring = c.sliding_window - 1, d = c.head_dim;
  if (ring <= 0) return;
  for (int64_t i = std::max<int64_t>(0, s.count - ring); i < s.count; ++i)
    win.ring.set((s.pos0 + i) % ring, kv + i * d);
}

// Grouped low-rank output: o [T, heads*d] split into the groups held here, group g times rows
// [g*R, (g+1)*R) of wo_a, concatenated, then wo_b. out: [T, D].
template <KernelBundle B>
void latent_output(const LatentWeights& w, const ModelConfig& c, const float* o, int64_t t, float* out) {
  const int64_t G = w.groups, R = c.o_lora_rank, hd = w.heads * c.head_dim, gw = hd / G;
  std::vector<float> z(size_t(t * G * R));
  for (int64_t g = 0; g < G; ++g)
    B::matmul(w.wo_a, o + g * gw, hd, t, z.data() + g * R, G * R, g * R, (g + 1) * R);
  linear<B>(w.wo_b, z.data(), t, out);
}

}  // namespace dsv4
