#pragma once
// Small fp32 row operations shared by every bundle: norms, activations, softmax pieces.
#include <algorithm>
#include <cmath>
#include <cstdint>

namespace dsv4 {

// out = x / sqrt(mean(x^2) + eps) (* w when w is given). x, out: [n]; may alias.
inline void rms_norm(const float* x, const float* w, int64_t n, float eps, float* out) {
  float ss = 0.f;
  for (int64_t i = 0; i < n; ++i) ss += x[i] * x[i];
  const float inv = 1.0f / std::sqrt(ss / float(n) + eps);
  for (int64_t i = 0; i < n; ++i) out[i] = w ? x[i] * inv * w[i] : x[i] * inv;
}

inline float sigmoid(float x) { return 1.0f / (1.0f + std::exp(-x)); }
inline float silu(float x) { return x / (1.0f + std::exp(-x)); }
// softplus with PyTorch's threshold: linear above 20.
inline float softplus(float x) { return x > 20.f ? x : std::log1p(std::exp(x)); }

}  // namespace dsv4
