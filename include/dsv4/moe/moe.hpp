#pragma once
// Mixture of experts: the router's choice, k routed SwiGLU experts per token plus the shared expert.
// Expert e: w2 · (silu(min(w1 x, L)) ⊙ clamp(w3 x, -L, L)), L = swiglu_limit (no clamp if <= 0).
#include <cmath>
#include <string>
#include <vector>

#include "dsv4/kernels/bundle.hpp"
#include "dsv4/kernels/ops.hpp"
#include "dsv4/model/distribution.hpp"
#include "dsv4/moe/routers.hpp"

namespace dsv4 {

struct ExpertWeights {
  Matrix w1;  // [I, D] gate
  Matrix w2;  // [D, I] down
  Matrix w3;  // [I, D] up

  // Split over tp's ranks, rank r holds the intermediate block [r*I/p, (r+1)*I/p): its rows of w1
  // and w3 and its columns of w2, so its output is its share of the expert's, summed over ranks.
  static ExpertWeights load(const WeightSource& ws, const std::string& p, int64_t hidden, int64_t inter,
                            const TensorShard& tp = {}) {
    tp.require_divides({{"an intermediate size", inter}}, p);
    const int64_t i0 = tp.first(inter), n = tp.part(inter);
    return {ws.matrix_rows(p + ".w1", inter, hidden, i0, n), ws.matrix_cols(p + ".w2", hidden, inter, i0, n),
            ws.matrix_rows(p + ".w3", inter, hidden, i0, n)};
  }
};

// out [T, D] = expert(x [T, D]) for T rows.
template <KernelBundle B>
void swiglu_expert(const ExpertWeights& w, float limit, const float* x, int64_t t, float* out) {
  const int64_t I = rows(w.w1);
  std::vector<float> g(size_t(t * I)), u(size_t(t * I));
  linear<B>(w.w1, x, t, g.data());
  linear<B>(w.w3, x, t, u.data());
  for (size_t i = 0; i < g.size(); ++i) {
    float gi = g[i], ui = u[i];
    if (limit > 0) gi = std::min(gi, limit), ui = std::clamp(ui, -limit, limit);
    g[i] = silu(gi) * ui;
  }
  linear<B>(w.w2, g.data(), t, out);
}

struct MoeWeights {
  Matrix gate;  // [E, D]
  RouterVariant router;
  int64_t first_expert = 0;           // experts[i] is routed expert first_expert + i
  std::vector<ExpertWeights> experts; // the routed experts this process holds (all of them unless split)
  std::vector<ExpertWeights> shared;  // 0 or 1: on rank 0 when split, or a share on every rank (tensor)

  static MoeWeights load(const WeightSource& ws, const std::string& p, const ModelConfig& c, const LayerConfig& l,
                         const Distribution& dist = {}) {
    MoeWeights m;
    const ExpertShard shard = expert_shard(c.n_routed_experts, dist.rank(), dist.size());
    m.first_expert = shard.first;
    m.gate = ws.matrix(p + ".gate", c.n_routed_experts, c.hidden_size);
    if (l.router == RouterKind::Hash) m.router = HashRouter::load(ws, p + ".gate", c);
    else if (l.router == RouterKind::GroupLimited) m.router = GroupLimitedRouter::load(ws, p + ".gate", c);
    else m.router = TopKRouter::load(ws, p + ".gate", c);
    for (int64_t e = shard.first; e < shard.first + shard.count; ++e)
      m.experts.push_back(ExpertWeights::load(ws, p + ".experts." + std::to_string(e), c.hidden_size, c.moe_intermediate_size));
    const TensorShard tp = dist.tensor_shard();
    if (c.n_shared_experts > 0 && (dist.rank() == 0 || tp.split()))
      m.shared.push_back(ExpertWeights::load(ws, p + ".shared_experts", c.hidden_size,
                                             c.moe_intermediate_size * c.n_shared_experts, tp));
    return m;
  }
};

// out [T, D] = MoE(x [T, D]); tokens [T] are the input ids (hash routing reads them). Split over
// ranks (comm), each rank adds its experts' share and the shares are summed over the ranks.
template <KernelBundle B>
void moe_forward(const MoeWeights& m, const ModelConfig& c, const float* x, const int32_t* tokens, int64_t t,
                 float* out, Communicator* comm = nullptr) {
  const int64_t E = c.n_routed_experts, k = c.n_experts_per_tok, D = c.hidden_size;
  const float limit = float(c.swiglu_limit);
  std::vector<float> logits(size_t(t * E));
  linear<B>(m.gate, x, t, logits.data());
  std::vector<int64_t> chosen(size_t(t * k));
  std::vector<float> weight(size_t(t * k));
  std::visit([&](auto& r) { r.route(c, logits.data(), tokens, t, chosen.data(), weight.data()); }, m.router);
  // Shared expert over all rows, then each routed expert over the rows that chose it.
  if (!m.shared.empty()) swiglu_expert<B>(m.shared[0], limit, x, t, out);
  else std::fill(out, out + t * D, 0.f);
  std::vector<float> xe, ye;
  std::vector<int64_t> rows_of, slot_of;
  const int64_t e_end = m.first_expert + int64_t(m.experts.size());
  for (int64_t e = m.first_expert; e < e_end; ++e) {
    rows_of.clear(), slot_of.clear();
    for (int64_t i = 0; i < t * k; ++i)
      if (chosen[size_t(i)] == e) rows_of.push_back(i / k), slot_of.push_back(i);
    if (rows_of.empty()) continue;
    const int64_t n = int64_t(rows_of.size());
    xe.resize(size_t(n * D));
    ye.resize(size_t(n * D));
    for (int64_t r = 0; r < n; ++r) std::copy_n(x + rows_of[size_t(r)] * D, D, xe.begin() + r * D);
    swiglu_expert<B>(m.experts[size_t(e - m.first_expert)], limit, xe.data(), n, ye.data());
    for (int64_t r = 0; r < n; ++r) {
      const float wgt = weight[size_t(slot_of[size_t(r)])];
      float* o = out + rows_of[size_t(r)] * D;
      for (int64_t j = 0; j < D; ++j) o[j] += wgt * ye[size_t(r * D + j)];
    }
  }
  if (comm && comm->size() > 1) allreduce_sum(*comm, out, t * D);
}

}  // namespace dsv4
