#pragma once
// Residual wiring, chosen once at load from ModelConfig::residual: DeepSeek-V4's mHC streams
// (HyperConnection / HyperHead, model/mhc.hpp) or DeepSeek-V3's plain pre-norm residual.
// Either way the residual is x [T, n, D] (n = 1 when plain); before a sub-layer `pre` gives it
// u [T, D], after it `post` folds the output y [T, D] back into x; the head reduces x to h [T, D].
#include <algorithm>
#include <string>
#include <variant>

#include "dsv4/model/mhc.hpp"

namespace dsv4 {

// h += f(rms(h)): one stream, no parameters.
struct PlainResidual {};
struct PlainHead {};

using ResidualVariant = std::variant<HyperConnection, PlainResidual>;
using HeadVariant = std::variant<HyperHead, PlainHead>;

inline ResidualVariant make_residual(const WeightSource& ws, const std::string& prefix, const ModelConfig& c) {
  if (c.residual == ResidualKind::Plain) return PlainResidual{};
  return HyperConnection::load(ws, prefix, c);
}
inline HeadVariant make_head(const WeightSource& ws, const ModelConfig& c) {
  if (c.residual == ResidualKind::Plain) return PlainHead{};
  return HyperHead::load(ws, c);
}

template <KernelBundle B>
void residual_pre(const HyperConnection& hc, const ModelConfig& c, const float* x /*[T, n, D]*/, int64_t t, HcMix& mix,
                  float* u /*[T, D]*/) {
  hc_pre<B>(hc, c, x, t, mix, u);
}
template <KernelBundle B>
void residual_pre(const PlainResidual&, const ModelConfig& c, const float* x /*[T, 1, D]*/, int64_t t, HcMix&,
                  float* u /*[T, D]*/) {
  std::copy_n(x, t * c.hidden_size, u);
}

inline void residual_post(const HyperConnection&, const ModelConfig& c, const HcMix& mix, const float* y /*[T, D]*/,
                          int64_t t, float* x /*[T, n, D]*/) {
  hc_post(c, mix, y, t, x);
}
inline void residual_post(const PlainResidual&, const ModelConfig& c, const HcMix&, const float* y /*[T, D]*/,
                          int64_t t, float* x /*[T, 1, D]*/) {
  for (int64_t i = 0; i < t * c.hidden_size; ++i) x[i] += y[i];
}

template <KernelBundle B>
void head_reduce(const HyperHead& hh, const ModelConfig& c, const float* x /*[T, n, D]*/, int64_t t, float* h /*[T, D]*/) {
  hc_head<B>(hh, c, x, t, h);
}
template <KernelBundle B>
void head_reduce(const PlainHead&, const ModelConfig& c, const float* x /*[T, 1, D]*/, int64_t t, float* h /*[T, D]*/) {
  std::copy_n(x, t * c.hidden_size, h);
}

}  // namespace dsv4
