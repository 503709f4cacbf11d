#pragma once
// Rotary position embedding on the last r dims of a vector, pairs interleaved: dims
// (2i, 2i+1) of the rope slice rotate together by pos * inv_freq[i].
#include <cmath>
#include <cstdint>
#include <vector>

#include "dsv4/model/config.hpp"

namespace dsv4 {

// inv_freq[i] = theta^(-2i/r), optionally with YaRN (correction range rounded outward, linear
// ramp between extrapolated f and interpolated f/factor; no magnitude factor).
inline std::vector<float> rope_inv_freq(const RopeConfig& c, int64_t r) {
  std::vector<float> f(size_t(r / 2));
  for (int64_t i = 0; i < r / 2; ++i) f[size_t(i)] = float(1.0 / std::pow(c.theta, double(2 * i) / double(r)));
  if (!c.yarn.enabled) return f;
  const auto& y = c.yarn;
  auto correction_dim = [&](double rotations) {
    return double(r) * std::log(y.original_max_position_embeddings / (rotations * 2 * M_PI)) / (2 * std::log(c.theta));
  };
  double low = std::max(std::floor(correction_dim(y.beta_fast)), 0.0);
  double high = std::min(std::ceil(correction_dim(y.beta_slow)), double(r - 1));
  if (low == high) high += 0.001;
  for (int64_t i = 0; i < r / 2; ++i) {
    float ramp = float(std::clamp((double(i) - low) / (high - low), 0.0, 1.0));
    float extrapolation = 1.0f - ramp;  // share of the original frequency
    float fi = f[size_t(i)];
    f[size_t(i)] = fi / float(y.factor) * (1.0f - extrapolation) + fi * extrapolation;
  }
  return f;
}

class RopeTable {
 public:
  RopeTable() = default;
  RopeTable(const RopeConfig& c, int64_t r) : r_(r), inv_freq_(rope_inv_freq(c, r)) {}

  int64_t dims() const { return r_; }
  const std::vector<float>& inv_freq() const { return inv_freq_; }

  // Rotates the last r dims of v ([n] with n >= r) by +pos (sign = 1) or -pos (sign = -1).
  void apply(float* v, int64_t n, int64_t pos, int sign = 1) const {
    float* x = v + (n - r_);
    for (int64_t i = 0; i < r_ / 2; ++i) {
      // The angle is formed in fp32 as the reference does; cos/sin then evaluated accurately.
      const float angle = float(pos) * inv_freq_[size_t(i)];
      const float c = float(std::cos(double(angle)));
      const float s = float(sign) * float(std::sin(double(angle)));
      const float a = x[2 * i], b = x[2 * i + 1];
      x[2 * i] = a * c - b * s;
      x[2 * i + 1] = a * s + b * c;
    }
  }

 private:
  int64_t r_ = 0;
  std::vector<float> inv_freq_;
};

}  // namespace dsv4
