#pragma once
// A 64-bit FNV-1a-style byte hash (FNV's prime; the seed the checkpoint fingerprints have always
// used), for fingerprints and file checksums: hash_bytes(p, n, h) continues hash h over n bytes.
#include <cstddef>
#include <cstdint>

namespace dsv4 {

inline constexpr uint64_t kHashSeed = 1469598103934665603ull;

inline uint64_t hash_bytes(const void* p, size_t n, uint64_t h = kHashSeed) {
  const auto* b = static_cast<const unsigned char*>(p);
  for (size_t i = 0; i < n; ++i) h = (h ^ b[i]) * 1099511628211ull;
  return h;
}

}  // namespace dsv4
