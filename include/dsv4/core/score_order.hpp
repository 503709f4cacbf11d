#pragma once
// The order in which routers and the Lightning Indexer rank candidates.
#include <cmath>
#include <cstdint>
#include <limits>

namespace dsv4 {

// On indices into scores v: higher score first, ties to the lower index, NaN below every number.
// A strict weak order even for NaN scores (plain `>` is not, and std::sort / nth_element may then
// read out of range), so a NaN row still chooses k distinct in-range ids; the CUDA router ranks the
// same way.
struct HigherScore {
  const float* v;
  static float key(float x) { return std::isnan(x) ? -std::numeric_limits<float>::infinity() : x; }
  bool operator()(int64_t a, int64_t b) const {
    const float ka = key(v[a]), kb = key(v[b]);
    return ka > kb || (ka == kb && a < b);
  }
};

}  // namespace dsv4
