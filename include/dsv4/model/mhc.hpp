#pragma once
// Manifold-constrained hyper-connections: the residual is n streams X [n, D] per token.
// Before a sub-layer, per token: f = unweighted_rms(flatten X), m = fn · f ((2+n)·n values),
//   pre_i = sigmoid(m_i s0 + b_i) + eps, post_i = 2 sigmoid(m_{n+i} s1 + b_{n+i}),
//   C = Sinkhorn(softmax_rows(m_{2n..} s2 + b_{2n..}) + eps); the sub-layer reads u = sum_i pre_i X_i.
// After it returns y: X'_j = post_j y + sum_i C[i][j] X_i.
#include <cmath>
#include <string>
#include <vector>

#include "dsv4/kernels/bundle.hpp"
#include "dsv4/kernels/ops.hpp"
#include "dsv4/io/weight_source.hpp"

namespace dsv4 {

// In place on one n x n matrix c (row-major): softmax over each row + eps, divide columns by
// (sum + eps), then iters-1 times rows then columns.
inline void sinkhorn(float* c, int64_t n, int64_t iters, float eps) {
  for (int64_t i = 0; i < n; ++i) {
    float* row = c + i * n;
    float mx = row[0];
    for (int64_t j = 1; j < n; ++j) mx = std::max(mx, row[j]);
    float sum = 0.f;
    for (int64_t j = 0; j < n; ++j) sum += (row[j] = std::exp(row[j] - mx));
    for (int64_t j = 0; j < n; ++j) row[j] = row[j] / sum + eps;
  }
  auto normalize_cols = [&] {
    for (int64_t j = 0; j < n; ++j) {
      float sum = 0.f;
      for (int64_t i = 0; i < n; ++i) sum += c[i * n + j];
      for (int64_t i = 0; i < n; ++i) c[i * n + j] /= (sum + eps);
    }
  };
  auto normalize_rows = [&] {
    for (int64_t i = 0; i < n; ++i) {
      float sum = 0.f;
      for (int64_t j = 0; j < n; ++j) sum += c[i * n + j];
      for (int64_t j = 0; j < n; ++j) c[i * n + j] /= (sum + eps);
    }
  };
  normalize_cols();
  for (int64_t it = 1; it < iters; ++it) normalize_rows(), normalize_cols();
}

struct HyperConnection {
  Matrix fn;                // [(2+n)·n, n·D]
  std::vector<float> base;  // [(2+n)·n]
  std::vector<float> scale; // [3]

  static HyperConnection load(const WeightSource& ws, const std::string& prefix, const ModelConfig& c) {
    const int64_t n = c.hc_mult, mix = (2 + n) * n;
    return {ws.plain_matrix(prefix + "_fn", mix, n * c.hidden_size), ws.floats(prefix + "_base", {mix}),
            ws.floats(prefix + "_scale", {3})};
  }
};

// Mixing coefficients for T tokens.
struct HcMix {
  std::vector<float> pre;   // [T, n]
  std::vector<float> post;  // [T, n]
  std::vector<float> comb;  // [T, n, n]
};

// f [T, n·D] = unweighted RMS norm of each token's flattened streams.
inline void hc_flat_norm(const float* x /*[T, n, D]*/, int64_t t, int64_t nd, float eps, std::vector<float>& f) {
  f.resize(size_t(t * nd));
  for (int64_t i = 0; i < t; ++i) rms_norm(x + i * nd, nullptr, nd, eps, f.data() + i * nd);
}

// Computes the mixes and u [T, D] = sum_i pre_i X_i.
template <KernelBundle B>
void hc_pre(const HyperConnection& hc, const ModelConfig& c, const float* x /*[T, n, D]*/, int64_t t, HcMix& mix,
            float* u /*[T, D]*/) {
  const int64_t n = c.hc_mult, D = c.hidden_size, nm = (2 + n) * n;
  const float eps = float(c.hc_eps);
  std::vector<float> f, m(size_t(t * nm));
  hc_flat_norm(x, t, n * D, float(c.rms_norm_eps), f);
  linear<B>(hc.fn, f.data(), t, m.data());
  mix.pre.resize(size_t(t * n));
  mix.post.resize(size_t(t * n));
  mix.comb.resize(size_t(t * n * n));
  for (int64_t i = 0; i < t; ++i) {
    const float* mi = &m[size_t(i * nm)];
    for (int64_t j = 0; j < n; ++j) {
      mix.pre[size_t(i * n + j)] = sigmoid(mi[j] * hc.scale[0] + hc.base[size_t(j)]) + eps;
      mix.post[size_t(i * n + j)] = 2.0f * sigmoid(mi[n + j] * hc.scale[1] + hc.base[size_t(n + j)]);
    }
    float* C = &mix.comb[size_t(i * n * n)];
    for (int64_t j = 0; j < n * n; ++j) C[j] = mi[2 * n + j] * hc.scale[2] + hc.base[size_t(2 * n + j)];
    sinkhorn(C, n, c.hc_sinkhorn_iters, eps);
    float* ui = u + i * D;
    std::fill(ui, ui + D, 0.f);
    for (int64_t s = 0; s < n; ++s) {
      const float p = mix.pre[size_t(i * n + s)];
      const float* xs = x + (i * n + s) * D;
      for (int64_t j = 0; j < D; ++j) ui[j] += p * xs[j];
    }
  }
}

// x [T, n, D] <- post_j y + sum_i C[i][j] X_i.
inline void hc_post(const ModelConfig& c, const HcMix& mix, const float* y /*[T, D]*/, int64_t t, float* x) {
  const int64_t n = c.hc_mult, D = c.hidden_size;
  std::vector<float> next(size_t(n * D));
  for (int64_t i = 0; i < t; ++i) {
    float* xi = x + i * n * D;
    const float* C = &mix.comb[size_t(i * n * n)];
    for (int64_t j = 0; j < n; ++j) {
      float* o = &next[size_t(j * D)];
      const float p = mix.post[size_t(i * n + j)];
      for (int64_t k = 0; k < D; ++k) o[k] = p * y[i * D + k];
      for (int64_t s = 0; s < n; ++s) {
        const float w = C[s * n + j];
        const float* xs = xi + s * D;
        for (int64_t k = 0; k < D; ++k) o[k] += w * xs[k];
      }
    }
    std::copy(next.begin(), next.end(), xi);
  }
}

// Final hyper head: h [T, D] = sum_i (sigmoid((fn f)_i s + b_i) + eps) X_i.
struct HyperHead {
  Matrix fn;                // [n, n·D]
  std::vector<float> base;  // [n]
  std::vector<float> scale; // [1]

  static HyperHead load(const WeightSource& ws, const ModelConfig& c) {
    const int64_t n = c.hc_mult;
    return {ws.plain_matrix("hc_head_fn", n, n * c.hidden_size), ws.floats("hc_head_base", {n}), ws.floats("hc_head_scale", {1})};
  }
};

template <KernelBundle B>
void hc_head(const HyperHead& hh, const ModelConfig& c, const float* x /*[T, n, D]*/, int64_t t, float* h /*[T, D]*/) {
  const int64_t n = c.hc_mult, D = c.hidden_size;
  std::vector<float> f, m(size_t(t * n));
  hc_flat_norm(x, t, n * D, float(c.rms_norm_eps), f);
  linear<B>(hh.fn, f.data(), t, m.data());
  for (int64_t i = 0; i < t; ++i) {
    float* hi = h + i * D;
    std::fill(hi, hi + D, 0.f);
    for (int64_t s = 0; s < n; ++s) {
      const float p = sigmoid(m[size_t(i * n + s)] * hh.scale[0] + hh.base[size_t(s)]) + float(c.hc_eps);
      const float* xs = x + (i * n + s) * D;
      for (int64_t j = 0; j < D; ++j) hi[j] += p * xs[j];
    }
  }
}

}  // namespace dsv4
