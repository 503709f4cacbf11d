#pragma once
// Multi-head latent attention (DeepSeek-V2/V3/R1; spec MLA.md). Per token the cache holds only the
// normed latent l (c values) and the roped key k_rope shared by all heads (dr values). Head h's key
// is [W_k,h · l | k_rope] and its value W_v,h · l, where W_k,h and W_v,h are the head's dn and dv
// rows of kv_b_proj. Two equal ways to attend a segment:
//  - expanded (prefill): every visible position's per-head keys and values are materialised once
//    (kv_b_proj · l) and attended; blocked through the bundle's matmul when the bundle asks for it;
//  - absorbed (decode): W_k,h is folded into the query (q_nope_h · W_k,h lives in latent space) and
//    W_v,h is applied after the weighted sum of latents, so no per-head key or value ever exists.
// Each segment takes the one with fewer multiply-adds for its query count and context length.
#include <algorithm>
#include <cmath>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "dsv4/attention/segment.hpp"
#include "dsv4/model/cache_type.hpp"
#include "dsv4/core/parallel.hpp"
#include "dsv4/attention/trace.hpp"
#include "dsv4/io/weight_source.hpp"
#include "dsv4/kernels/bundle.hpp"
#include "dsv4/kernels/ops.hpp"
#include "dsv4/kernels/rope.hpp"
#include "dsv4/model/distribution.hpp"

namespace dsv4 {

// The sizes of an MLA layer, in the notation of MLA.md.
struct MlaDims {
  int64_t H, c, dn, dr, dv;
  // heads: the heads this rank holds (all of them unless the layer is split over ranks).
  explicit MlaDims(const ModelConfig& m, int64_t heads = 0)
      : H(heads ? heads : m.num_heads), c(m.kv_lora_rank), dn(m.qk_nope_head_dim), dr(m.rope_dim), dv(m.v_head_dim) {}
  int64_t dq() const { return dn + dr; }       // query / key width per head
  int64_t latent() const { return c + dr; }    // cached values per token
  int64_t kv() const { return dn + dv; }       // kv_b_proj rows per head
};

struct MlaWeights {
  int64_t heads = 0;           // the heads held here (all unless split)
  Matrix wq;                   // [heads·(dn+dr), D], only when q_lora_rank == 0
  Matrix wq_a;                 // [q_lora_rank, D]
  std::vector<float> q_norm;   // [q_lora_rank]
  Matrix wq_b;                 // [heads·(dn+dr), q_lora_rank]
  Matrix wkv_a;                // [c+dr, D]
  std::vector<float> kv_norm;  // [c]
  Matrix wkv_b;                // [heads·(dn+dv), c]: head h's k rows, then its v rows
  Matrix wo;                   // [D, heads·dv]

  // Split over tp's ranks, rank r holds heads [r*H/p, (r+1)*H/p): their query and kv_b rows and
  // their columns of wo, whose output is then its share of the layer's, summed over the ranks.
  static MlaWeights load(const WeightSource& ws, const std::string& p, const ModelConfig& m, const TensorShard& tp = {}) {
    tp.require_divides({{"num_attention_heads", m.num_heads}}, p);
    const MlaDims d(m);
    const int64_t h0 = tp.first(d.H);
    MlaWeights w;
    w.heads = tp.part(d.H);
    // Rows [h0·per, (h0+heads)·per) of an [H·per, k] matrix: this rank's heads.
    auto head_rows = [&](const std::string& name, int64_t per, int64_t k) {
      return ws.matrix_rows(name, d.H * per, k, h0 * per, w.heads * per);
    };
    if (m.q_lora_rank > 0) {
      w.wq_a = ws.matrix(p + ".wq_a", m.q_lora_rank, m.hidden_size);
      w.q_norm = ws.floats(p + ".q_norm.weight", {m.q_lora_rank});
      w.wq_b = head_rows(p + ".wq_b", d.dq(), m.q_lora_rank);
    } else {
      w.wq = head_rows(p + ".wq", d.dq(), m.hidden_size);
    }
    w.wkv_a = ws.matrix(p + ".wkv_a", d.latent(), m.hidden_size);
    w.kv_norm = ws.floats(p + ".kv_norm.weight", {d.c});
    w.wkv_b = head_rows(p + ".wkv_b", d.kv(), d.c);
    w.wo = ws.matrix_cols(p + ".wo", m.hidden_size, d.H * d.dv, h0 * d.dv, w.heads * d.dv);
    return w;
  }
};

// Whether attending Q queries over P positions costs fewer multiply-adds absorbed than expanded
// (per head; the projections shared by both ways are left out).
inline bool mla_absorb_cheaper(const MlaDims& d, int64_t q, int64_t p) {
  const double expand = double(p) * double(d.kv() * d.c) + double(q) * double(p) * double(d.dq() + d.dv);
  const double absorb = double(q) * double(d.kv() * d.c) + double(q) * double(p) * double(2 * d.c + d.dr);
  return absorb < expand;
}

// W_k,h^T [c, dn] for every head h, built once at load from kv_b_proj, so that the absorbed
// query W_k,h^T q_nope_h is an ordinary matmul for every bundle (theirs compute x · W^T only).
// Transposing is exact: FP8 keeps its bytes and tiles when every head starts on a row tile (as in
// DeepSeek-V3: dn + dv = 256, tiles of 128), BF16 keeps its bytes, anything else is decoded to
// fp32. The copy is as large as the k rows of kv_b_proj in the FP8 and BF16 cases.
struct AbsorbedKeys {
  std::vector<uint8_t> data, scale;
  std::vector<Matrix> heads;  // [H] views into data/scale, each [c, dn]

  static std::shared_ptr<const AbsorbedKeys> build(const Matrix& wkv_b, const MlaDims& d) {
    auto k = std::make_shared<AbsorbedKeys>();
    const int64_t H = d.H, c = d.c, dn = d.dn, per_head = c * dn;
    const auto* f8 = std::get_if<Fp8BlockMatrix>(&wkv_b);
    const auto* b16 = std::get_if<Bf16Matrix>(&wkv_b);
    if (f8 && d.kv() % f8->bm == 0) {
      const int64_t sr = (c + f8->bn - 1) / f8->bn, sc = (dn + f8->bm - 1) / f8->bm, sb = f8->scale_is_f32 ? 4 : 1;
      k->data.resize(size_t(H * per_head));
      k->scale.resize(size_t(H * sr * sc * sb));
      for (int64_t h = 0; h < H; ++h) {
        uint8_t* out = &k->data[size_t(h * per_head)];
        for (int64_t i = 0; i < dn; ++i)
          for (int64_t j = 0; j < c; ++j) out[j * dn + i] = f8->q[(h * d.kv() + i) * c + j];
        for (int64_t a = 0; a < sr; ++a)  // tile (a, b) of head h = source tile (h·kv/bm + b, a)
          for (int64_t b = 0; b < sc; ++b)
            std::copy_n(f8->scale + ((h * d.kv() / f8->bm + b) * f8->scale_cols() + a) * sb, sb,
                        &k->scale[size_t(((h * sr + a) * sc + b) * sb)]);
      }
      for (int64_t h = 0; h < H; ++h)
        k->heads.push_back(Fp8BlockMatrix{&k->data[size_t(h * per_head)], &k->scale[size_t(h * sr * sc * sb)],
                                          f8->scale_is_f32, c, dn, f8->bn, f8->bm});
    } else if (b16) {
      k->data.resize(size_t(H * per_head * 2));
      for (int64_t h = 0; h < H; ++h)
        for (int64_t i = 0; i < dn; ++i)
          for (int64_t j = 0; j < c; ++j)
            std::copy_n(b16->data + ((h * d.kv() + i) * c + j) * 2, 2, &k->data[size_t((h * per_head + j * dn + i) * 2)]);
      for (int64_t h = 0; h < H; ++h) k->heads.push_back(Bf16Matrix{&k->data[size_t(h * per_head * 2)], c, dn});
    } else {
      k->data.resize(size_t(H * per_head * 4));
      std::vector<float> row(static_cast<size_t>(c));
      float* out = reinterpret_cast<float*>(k->data.data());
      for (int64_t h = 0; h < H; ++h)
        for (int64_t i = 0; i < dn; ++i) {
          decode_row(wkv_b, h * d.kv() + i, row.data());
          for (int64_t j = 0; j < c; ++j) out[h * per_head + j * dn + i] = row[size_t(j)];
        }
      for (int64_t h = 0; h < H; ++h) k->heads.push_back(F32Matrix{&k->data[size_t(h * per_head * 4)], c, dn});
    }
    return k;
  }
};

// In place over a row of logits l [n]: softmax of l·scale over the first `seen` entries, zero after.
inline void mla_softmax(float* l, int64_t seen, int64_t n, float scale) {
  float mx = -std::numeric_limits<float>::infinity();
  for (int64_t j = 0; j < seen; ++j) mx = std::max(mx, l[j] *= scale);
  float den = 0.f;
  for (int64_t j = 0; j < seen; ++j) den += (l[j] = std::exp(l[j] - mx));
  const float inv = 1.0f / den;
  for (int64_t j = 0; j < seen; ++j) l[j] *= inv;
  std::fill(l + seen, l + n, 0.f);
}

struct MlaAttention {
  MlaWeights w;
  std::shared_ptr<const AbsorbedKeys> absorbed;  // W_k,h^T per head (shared by copies)

  // The latent cache: per position l (c values) then the roped k_rope (dr values).
  struct State {
    std::vector<float> latent;  // [positions, c+dr]
  };

  static std::string can_implement(const ModelConfig& m, const LayerConfig&) {
    if (m.kv_lora_rank < 1 || m.v_head_dim < 1 || m.qk_nope_head_dim < 0)
      return "MLA needs kv_lora_rank >= 1, v_head_dim >= 1 and qk_nope_head_dim >= 0";
    if (m.rope_dim < 2 || m.rope_dim % 2) return "MLA needs an even qk_rope_head_dim >= 2";
    return "";
  }
  static MlaAttention load(const WeightSource& ws, const std::string& prefix, const ModelConfig& m, const LayerConfig&,
                           const TensorShard& tp = {}) {
    MlaAttention a{MlaWeights::load(ws, prefix, m, tp), nullptr};
    if (m.qk_nope_head_dim > 0) a.absorbed = AbsorbedKeys::build(a.w.wkv_b, MlaDims(m, a.w.heads));
    return a;
  }
  State new_state(const ModelConfig&, CacheType t) const {
    if (t != CacheType::F32)
      fail("cache type '", cache_type_name(t), "': MLA layers (DeepSeek-V3) keep an f32 latent cache only");
    return {};
  }
  // Bytes the cache holds per token (fp32): c + dr values, whatever the head count.
  static int64_t cache_bytes_per_token(const ModelConfig& m) { return MlaDims(m).latent() * 4; }

  template <class F>
  void for_each_matrix(F&& f) const {
    if (rows(w.wq) > 0) f("wq", w.wq);
    else f("wq_a", w.wq_a), f("wq_b", w.wq_b);
    f("wkv_a", w.wkv_a), f("wkv_b", w.wkv_b), f("wo", w.wo);
  }

  template <KernelBundle B>
  void forward(const ModelConfig& m, const RopeTable& rope, const float* x /*[T, D]*/, int64_t t,
               const std::vector<Segment>& segs, const std::vector<State*>& states, float* out /*[T, D]*/,
               ForwardTrace*, int64_t) const {
    const MlaDims d(m, w.heads);
    const int64_t H = d.H, dq = d.dq(), lw = d.latent();
    const float eps = float(m.rms_norm_eps);
    const float scale = float(1.0 / std::sqrt(double(dq)) * mla_score_factor(m.rope_main.yarn));
    // Queries [T, H, dq] and this batch's cache rows [T, c+dr].
    std::vector<float> q(size_t(t * H * dq)), a(size_t(t * lw));
    if (m.q_lora_rank > 0) {
      const int64_t R = m.q_lora_rank;
      std::vector<float> qa(size_t(t * R));
      linear<B>(w.wq_a, x, t, qa.data());
      for (int64_t i = 0; i < t; ++i) rms_norm(&qa[size_t(i * R)], w.q_norm.data(), R, eps, &qa[size_t(i * R)]);
      linear<B>(w.wq_b, qa.data(), t, q.data());
    } else {
      linear<B>(w.wq, x, t, q.data());
    }
    linear<B>(w.wkv_a, x, t, a.data());
    for (const Segment& s : segs)
      for (int64_t i = 0; i < s.count; ++i) {
        const int64_t row = s.row0 + i, pos = s.pos0 + i;
        float* ar = &a[size_t(row * lw)];
        rms_norm(ar, w.kv_norm.data(), d.c, eps, ar);  // the latent; k_rope is not normed
        rope.apply(ar, lw, pos);
        for (int64_t h = 0; h < H; ++h) rope.apply(&q[size_t((row * H + h) * dq)], dq, pos);
      }

    std::vector<float> o(size_t(t * H * d.dv));
    for (size_t si = 0; si < segs.size(); ++si) {
      const Segment& s = segs[si];
      std::vector<float>& cache = states[si]->latent;
      if (int64_t(cache.size()) != s.pos0 * lw) fail("MLA: the cache holds ", cache.size() / size_t(lw),
                                                     " positions, the sequence is at ", s.pos0);
      cache.insert(cache.end(), a.begin() + s.row0 * lw, a.begin() + (s.row0 + s.count) * lw);
      const float* qs = &q[size_t(s.row0 * H * dq)];
      float* os = &o[size_t(s.row0 * H * d.dv)];
      const int64_t positions = s.pos0 + s.count;
      if (mla_absorb_cheaper(d, s.count, positions)) attend_absorbed<B>(d, scale, cache.data(), s, qs, os);
      else if constexpr (B::kBlockedAttention) attend_expanded_blocked<B>(d, scale, cache.data(), s, qs, os);
      else attend_expanded<B>(d, scale, cache.data(), s, qs, os);
    }
    linear<B>(w.wo, o.data(), t, out);
  }

  // kv [P, H, dn+dv]: every position's per-head keys (nope part) and values.
  template <KernelBundle B>
  void expand(const MlaDims& d, const float* latent /*[P, c+dr]*/, int64_t p, std::vector<float>& kv) const {
    kv.resize(size_t(p * d.H * d.kv()));
    B::matmul(w.wkv_b, latent, d.latent(), p, kv.data(), d.H * d.kv(), 0, d.H * d.kv());
  }

  // The oracle: one query and one head at a time over materialised keys and values.
  template <KernelBundle B>
  void attend_expanded(const MlaDims& d, float scale, const float* latent /*[P, c+dr]*/, const Segment& s,
                       const float* q /*[count, H, dq]*/, float* o /*[count, H, dv]*/) const {
    const int64_t H = d.H, dq = d.dq(), lw = d.latent(), P = s.pos0 + s.count;
    std::vector<float> kv, l(static_cast<size_t>(P));
    expand<B>(d, latent, P, kv);
    for (int64_t i = 0; i < s.count; ++i) {
      const int64_t seen = s.pos0 + i + 1;
      for (int64_t h = 0; h < H; ++h) {
        const float* qh = q + (i * H + h) * dq;
        for (int64_t j = 0; j < seen; ++j) {
          const float* kn = &kv[size_t((j * H + h) * d.kv())];
          const float* kr = latent + j * lw + d.c;
          float dot = 0.f;
          for (int64_t x = 0; x < d.dn; ++x) dot += qh[x] * kn[x];
          for (int64_t x = 0; x < d.dr; ++x) dot += qh[d.dn + x] * kr[x];
          l[size_t(j)] = dot;
        }
        mla_softmax(l.data(), seen, seen, scale);
        float* oh = o + (i * H + h) * d.dv;
        std::fill(oh, oh + d.dv, 0.f);
        for (int64_t j = 0; j < seen; ++j) {
          const float* v = &kv[size_t((j * H + h) * d.kv() + d.dn)];
          for (int64_t x = 0; x < d.dv; ++x) oh[x] += l[size_t(j)] * v[x];
        }
      }
    }
  }

  // The same per head with the bundle's matmul over blocks of queries: logits = Q_h × K_h^T,
  // causal softmax, outputs = P × V_h.
  template <KernelBundle B>
  void attend_expanded_blocked(const MlaDims& d, float scale, const float* latent /*[P, c+dr]*/, const Segment& s,
                               const float* q /*[count, H, dq]*/, float* o /*[count, H, dv]*/) const {
    const int64_t H = d.H, dq = d.dq(), lw = d.latent(), P = s.pos0 + s.count;
    std::vector<float> kv, K(size_t(P * dq)), Vt(size_t(d.dv * P)), l;
    expand<B>(d, latent, P, kv);
    const int64_t block = std::clamp<int64_t>((int64_t(1) << 21) / std::max<int64_t>(P, 1), 1, 64);
    const F32Matrix kmat{reinterpret_cast<const uint8_t*>(K.data()), P, dq};
    const F32Matrix vmat{reinterpret_cast<const uint8_t*>(Vt.data()), d.dv, P};
    for (int64_t h = 0; h < H; ++h) {
      for (int64_t j = 0; j < P; ++j) {
        const float* kvj = &kv[size_t((j * H + h) * d.kv())];
        std::copy_n(kvj, d.dn, &K[size_t(j * dq)]);
        std::copy_n(latent + j * lw + d.c, d.dr, &K[size_t(j * dq + d.dn)]);
        for (int64_t x = 0; x < d.dv; ++x) Vt[size_t(x * P + j)] = kvj[d.dn + x];
      }
      for (int64_t i0 = 0; i0 < s.count; i0 += block) {
        const int64_t nq = std::min(block, s.count - i0), nk = s.pos0 + i0 + nq;
        l.resize(size_t(nq * P));
        B::matmul(kmat, q + (i0 * H + h) * dq, H * dq, nq, l.data(), P, 0, nk);
        for (int64_t i = 0; i < nq; ++i) mla_softmax(&l[size_t(i * P)], s.pos0 + i0 + i + 1, P, scale);
        B::matmul(vmat, l.data(), P, nq, o + (i0 * H + h) * d.dv, H * d.dv, 0, d.dv);
      }
    }
  }

  // Absorbed: q_lat_h = [W_k,h^T q_nope_h | q_rope_h] scores against the cache rows directly, the
  // weighted sum of latents is mapped to the head's value space by W_v,h afterwards.
  template <KernelBundle B>
  void attend_absorbed(const MlaDims& d, float scale, const float* latent /*[P, c+dr]*/, const Segment& s,
                       const float* q /*[count, H, dq]*/, float* o /*[count, H, dv]*/) const {
    const int64_t H = d.H, dq = d.dq(), lw = d.latent(), P = s.pos0 + s.count, n = s.count;
    std::vector<float> ql(size_t(n * H * lw)), l(size_t(n * H * P)), ol(size_t(n * H * d.c));
    // Per-head products are small: one parallel loop over heads (the matmul inside then runs on
    // its thread) rather than a parallel region per head.
    parallel_for(H, [&](int64_t h) {
      if (d.dn > 0) B::matmul(absorbed->heads[size_t(h)], q + h * dq, H * dq, n, &ql[size_t(h * lw)], H * lw, 0, d.c);
      for (int64_t i = 0; i < n; ++i)
        std::copy_n(q + (i * H + h) * dq + d.dn, d.dr, &ql[size_t((i * H + h) * lw + d.c)]);
    });
    const F32Matrix cache{reinterpret_cast<const uint8_t*>(latent), P, lw};
    B::matmul(cache, ql.data(), lw, n * H, l.data(), P, 0, P);
    // Weighted sums of latents: each task takes a group of heads of one query and walks the cache
    // once in blocks of rows that stay in cache while every head of the group reads them (one
    // pass per head would stream the whole cache H times).
    const int64_t group = std::max<int64_t>(1, (H + num_threads() - 1) / num_threads()), groups = (H + group - 1) / group;
    parallel_for(n * groups, [&](int64_t task) {
      const int64_t i = task / groups, h0 = (task % groups) * group, h1 = std::min(H, h0 + group);
      const int64_t seen = s.pos0 + i + 1;
      for (int64_t h = h0; h < h1; ++h) mla_softmax(&l[size_t((i * H + h) * P)], seen, P, scale);
      for (int64_t j0 = 0; j0 < seen; j0 += 64)
        for (int64_t h = h0; h < h1; ++h) {
          const float* lr = &l[size_t((i * H + h) * P)];
          float* olr = &ol[size_t((i * H + h) * d.c)];
          for (int64_t j = j0; j < std::min(seen, j0 + 64); ++j) {
            const float pj = lr[j];
            const float* lj = latent + j * lw;
            for (int64_t x = 0; x < d.c; ++x) olr[x] += pj * lj[x];
          }
        }
    });
    parallel_for(H, [&](int64_t h) {
      B::matmul(w.wkv_b, &ol[size_t(h * d.c)], H * d.c, n, o + h * d.dv, H * d.dv, h * d.kv() + d.dn, (h + 1) * d.kv());
    });
  }
};

}  // namespace dsv4
