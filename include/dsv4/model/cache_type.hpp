#pragma once
// How a sequence's cache stores what it keeps (chosen per cache at run time):
//   F32      every value as computed: the reference.
//   BF16     kv ring, compressed entries and indexer keys in BF16.
//   Compact  kv ring and compressed entries: the leading d − r dims in FP8 E4M3 with one E8M0 scale
//            per 64, the r RoPE dims in BF16; indexer keys in FP4 E2M1 with one E8M0 scale per 32.
// The compressors' pending windows (a fixed few KB per layer) stay fp32 in every type. Values are
// rounded when they are stored, and a chunk's own kv is rounded the same way before its attention,
// so every chunking of a sequence reads the same values.
#include <string>
#include <string_view>

#include "dsv4/core/error.hpp"
#include "dsv4/model/config.hpp"
#include "dsv4/numeric/row_codec.hpp"

namespace dsv4 {

enum class CacheType : uint8_t { F32 = 0, BF16 = 1, Compact = 2 };

inline const char* cache_type_name(CacheType t) {
  switch (t) {
    case CacheType::F32: return "f32";
    case CacheType::BF16: return "bf16";
    case CacheType::Compact: return "compact";
  }
  return "?";
}

inline CacheType parse_cache_type(std::string_view s) {
  if (s == "f32") return CacheType::F32;
  if (s == "bf16") return CacheType::BF16;
  if (s == "compact") return CacheType::Compact;
  fail("cache type '", s, "': expected f32, bf16 or compact");
}

// The row encodings of one cache type: kv vectors (ring and compressed entries, d wide, the
// last r dims roped) and the Lightning Indexer's keys (c_I wide).
struct CacheCodecs {
  RowCodec kv, index_key;
};

inline CacheCodecs cache_codecs(const ModelConfig& c, CacheType t) {
  const int64_t d = c.head_dim, ci = c.index_head_dim;
  switch (t) {
    case CacheType::F32: return {{RowFormat::F32, d, 0}, {RowFormat::F32, ci, 0}};
    case CacheType::BF16: return {{RowFormat::BF16, d, 0}, {RowFormat::BF16, ci, 0}};
    case CacheType::Compact: return {{RowFormat::Fp8Rope, d, c.rope_dim}, {RowFormat::Fp4, ci, 0}};
  }
  return {};
}

}  // namespace dsv4
