#pragma once
// Rotary position embedding on the last r dims of a vector. Pairs interleaved: dims (2i, 2i+1)
// of the rope slice rotate together by pos * inv_freq[i] (V4, and V3 with rope_interleave);
// split-half: dims (i, i + r/2). MLA tables may scale the rotation (YaRN's mscale amplitude).
#include <cmath>
#include <cstdint>
#include <vector>

#include "dsv4/model/config.hpp"

namespace dsv4 {

// inv_freq[i] = theta^(-2i/r), optionally with YaRN (correction range rounded outward unless
// truncate is off, linear ramp between extrapolated f and interpolated f/factor; no magnitude factor).
inline std::vector<float> rope_inv_freq(const RopeConfig& c, int64_t r) {
  std::vector<float> f(size_t(r / 2));
  for (int64_t i = 0; i < r / 2; ++i) f[size_t(i)] = float(1.0 / std::pow(c.theta, double(2 * i) / double(r)));
  if (!c.yarn.enabled) return f;
  const auto& y = c.yarn;
  auto correction_dim = [&](double rotations) {
    return double(r) * std::log(y.original_max_position_embeddings / (rotations * 2 * M_PI)) / (2 * std::log(c.theta));
  };
  const double lo = correction_dim(y.beta_fast), hi = correction_dim(y.beta_slow);
  double low = std::max(y.truncate ? std::floor(lo) : lo, 0.0);
  double high = std::min(y.truncate ? std::ceil(hi) : hi, double(r - 1));
  if (low == high) high += 0.001;
  for (int64_t i = 0; i < r / 2; ++i) {
    float ramp = float(std::clamp((double(i) - low) / (high - low), 0.0, 1.0));
    float extrapolation = 1.0f - ramp;  // share of the original frequency
    float fi = f[size_t(i)];
    f[size_t(i)] = fi / float(y.factor) * (1.0f - extrapolation) + fi * extrapolation;
  }
  return f;
}

// YaRN's magnitude correction ms(f, m) = 0.1 m ln f + 1 for f > 1, else 1.
inline double yarn_mscale(double factor, double m) { return factor <= 1 ? 1.0 : 0.1 * m * std::log(factor) + 1.0; }

// DeepSeek-V3's rotation amplitude: attention_factor when the config gives it, else
// ms(f, mscale) / ms(f, mscale_all_dim) when both are given, ms(f, 1) otherwise; 1 without YaRN.
inline double mla_rope_amplitude(const YarnConfig& y) {
  if (!y.enabled) return 1.0;
  if (y.attention_factor > 0) return y.attention_factor;
  if (y.mscale > 0 && y.mscale_all_dim > 0) return yarn_mscale(y.factor, y.mscale) / yarn_mscale(y.factor, y.mscale_all_dim);
  return yarn_mscale(y.factor, 1.0);
}

// DeepSeek-V3's attention score factor: ms(f, mscale_all_dim)^2 with YaRN and mscale_all_dim, else 1.
inline double mla_score_factor(const YarnConfig& y) {
  if (!y.enabled || !(y.mscale_all_dim > 0)) return 1.0;
  const double m = yarn_mscale(y.factor, y.mscale_all_dim);
  return m * m;
}

class RopeTable {
 public:
  RopeTable() = default;
  RopeTable(const RopeConfig& c, int64_t r, bool interleave = true, double amplitude = 1.0)
      : r_(r), interleave_(interleave), amplitude_(float(amplitude)), inv_freq_(rope_inv_freq(c, r)) {}

  int64_t dims() const { return r_; }
  bool interleaved() const { return interleave_; }
  float amplitude() const { return amplitude_; }
  const std::vector<float>& inv_freq() const { return inv_freq_; }

  // Rotates the last r dims of v ([n] with n >= r) by +pos (sign = 1) or -pos (sign = -1).
  // With an amplitude other than 1 (MLA only) the map scales as well as rotates.
  void apply(float* v, int64_t n, int64_t pos, int sign = 1) const {
    float* x = v + (n - r_);
    const int64_t half = r_ / 2, step = interleave_ ? 2 : 1, other = interleave_ ? 1 : half;
    for (int64_t i = 0; i < half; ++i) {
      // The angle is formed in fp32 as the reference does; cos/sin then evaluated accurately.
      const float angle = float(pos) * inv_freq_[size_t(i)];
      const float c = float(std::cos(double(angle))) * amplitude_;
      const float s = float(sign) * float(std::sin(double(angle))) * amplitude_;
      float* pa = x + i * step;
      float* pb = pa + other;
      const float a = *pa, b = *pb;
      *pa = a * c - b * s;
      *pb = a * s + b * c;
    }
  }

 private:
  int64_t r_ = 0;
  bool interleave_ = true;
  float amplitude_ = 1.0f;
  std::vector<float> inv_freq_;
};

}  // namespace dsv4
