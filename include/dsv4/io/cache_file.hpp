#pragma once
// Session state files: one sequence's cache (and, for a Session, its tokens and last logits)
// written to a file and read back, so a prefix computed once is reused across runs. A restored
// cache continues exactly as the uninterrupted one would (the same bytes in the same stores).
//
// Layout (little-endian): "DSV4KVC" + format version byte, u64 model fingerprint, u8 cache type,
// i64 position, u32 layers; per layer u8 attention kind then its stores (row stores as u8 format,
// i64 width, i64 rope, i64 rows, rows × row_bytes bytes; fp32 arrays as i64 count + values; flags
// as u8); then i64 token count + i32 tokens, i64 logit count + f32 logits; u64 checksum (core/hash.hpp) of
// everything before it. Reading checks every size against what this model's fresh cache of that
// type holds, and the checksum, before anything is used: a file from another model, another
// version or a damaged file is refused with a message naming the file and what is wrong.
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <span>
#include <string>
#include <vector>

#include "dsv4/core/error.hpp"
#include "dsv4/core/hash.hpp"
#include "dsv4/model/model.hpp"

namespace dsv4 {

inline constexpr char kCacheFileMagic[8] = {'D', 'S', 'V', '4', 'K', 'V', 'C', 1};

// What a file holds besides the cache (Session's part).
struct CacheFileExtras {
  std::vector<int32_t> tokens;  // the whole sequence, pending tokens included
  std::vector<float> logits;    // the last next-token row, or empty
};


namespace cache_file_detail {

struct Writer {
  std::ofstream out;
  uint64_t h = kHashSeed;  // of everything written so far
  void bytes(const void* p, size_t n) {
    h = hash_bytes(p, n, h);
    out.write(static_cast<const char*>(p), std::streamsize(n));
  }
  template <class T>
  void pod(T v) { bytes(&v, sizeof v); }
  void floats(const std::vector<float>& v) {
    pod<int64_t>(int64_t(v.size()));
    bytes(v.data(), v.size() * 4);
  }
  void rows(const KvRows& r) {
    pod<uint8_t>(uint8_t(r.codec().format));
    pod<int64_t>(r.codec().width), pod<int64_t>(r.codec().rope), pod<int64_t>(r.size());
    for (int64_t p = 0; p < r.num_pages(); ++p) bytes(r.page(p), size_t(r.rows_in_page(p) * r.row_bytes()));
  }
  void compressor(const CompressorState& s) {
    floats(s.pend_a), floats(s.pend_z), floats(s.prev_a), floats(s.prev_z);
    pod<uint8_t>(s.has_prev());  // derivable, kept so the format stays as it was
    rows(s.entries);
  }
};

// Reads from a buffer with every length checked against what is left and what is expected.
struct Reader {
  std::span<const uint8_t> buf;
  size_t at = 0;
  std::string file;
  [[noreturn]] void bad(const std::string& what) const {
    fail("cache file '", file, "': ", what, " (at byte ", at, ")");
  }
  const uint8_t* take(size_t n, const char* what) {
    if (n > buf.size() - at) bad(std::string("truncated: ") + what + " runs past the end of the file");
    const uint8_t* p = buf.data() + at;
    at += n;
    return p;
  }
  template <class T>
  T pod(const char* what) {
    T v;
    std::memcpy(&v, take(sizeof v, what), sizeof v);
    return v;
  }
  // Exactly `want` fp32 values into v (checked against the file before anything is allocated).
  void floats(std::vector<float>& v, int64_t want, const char* what) {
    const int64_t n = pod<int64_t>(what);
    if (n != want) bad(std::string(what) + " holds " + std::to_string(n) + " values where this model's cache holds " + std::to_string(want));
    const uint8_t* p = take(size_t(n) * 4, what);
    v.resize(size_t(n));
    if (n > 0) std::memcpy(v.data(), p, size_t(n) * 4);
  }
  void floats(std::vector<float>& v, const char* what) { floats(v, int64_t(v.size()), what); }
  // Into a fresh store of this model's codec: the format and width must match; rows as expected.
  void rows(KvRows& r, int64_t want_rows, bool ring, const char* what) {
    const auto format = pod<uint8_t>(what);
    const auto width = pod<int64_t>(what), rope = pod<int64_t>(what), n = pod<int64_t>(what);
    const RowCodec& c = r.codec();
    if (format != uint8_t(c.format) || width != c.width || rope != c.rope)
      bad(std::string(what) + " is stored as format " + std::to_string(format) + " width " + std::to_string(width) +
          ", this model's cache type uses " + row_format_name(c.format) + " width " + std::to_string(c.width));
    if (n != want_rows)
      bad(std::string(what) + " holds " + std::to_string(n) + " rows where the position implies " + std::to_string(want_rows));
    const uint8_t* p = take(size_t(n) * size_t(c.row_bytes()), what);
    if (ring) {
      for (int64_t i = 0; i < n; ++i) std::memcpy(r.row(i), p + i * c.row_bytes(), size_t(c.row_bytes()));
    } else {
      r.append_raw(p, n);
    }
  }
  void compressor(CompressorState& s, int64_t position, int64_t ratio, const char* what) {
    floats(s.pend_a, what), floats(s.pend_z, what), floats(s.prev_a, what), floats(s.prev_z, what);
    const auto has_prev = pod<uint8_t>(what);
    if (has_prev > 1 || (has_prev == 1) != (!s.prev_a.empty() && position >= ratio))
      bad(std::string(what) + ": the previous-window flag does not fit the position");
    rows(s.entries, position / ratio, false, what);
  }
};

}  // namespace cache_file_detail

// Writes `cache` (made by `model`) and `extras` to `path` (replaced atomically: written beside it, then renamed).
inline void save_cache_file(const Model& model, const SequenceCache& cache, const CacheFileExtras& extras,
                            const std::filesystem::path& path) {
  if (!cache.made_by(model)) fail("save cache '", path.string(), "': the cache was not made by this model");
  const std::filesystem::path tmp = path.string() + ".partial";
  cache_file_detail::Writer w;
  w.out.open(tmp, std::ios::binary | std::ios::trunc);
  if (!w.out) fail("save cache '", path.string(), "': cannot create '", tmp.string(), "'");
  w.bytes(kCacheFileMagic, 8);
  w.pod<uint64_t>(model.fingerprint());
  w.pod<uint8_t>(uint8_t(cache.cache_type()));
  w.pod<int64_t>(cache.position());
  w.pod<uint32_t>(uint32_t(cache.num_layers()));
  for (size_t l = 0; l < cache.num_layers(); ++l) {
    w.pod<uint8_t>(uint8_t(model.config().layers[l].attention));
    for_each_store(cache.layer_state(l), [&](const auto& store) {
      using T = std::decay_t<decltype(store)>;
      if constexpr (std::is_same_v<T, WindowState>) w.rows(store.ring);
      else if constexpr (std::is_same_v<T, CompressorState>) w.compressor(store);
      else w.floats(store);
    });
  }
  w.pod<int64_t>(int64_t(extras.tokens.size()));
  w.bytes(extras.tokens.data(), extras.tokens.size() * 4);
  w.floats(extras.logits);
  const uint64_t sum = w.h;
  w.out.write(reinterpret_cast<const char*>(&sum), 8);
  w.out.close();
  if (!w.out) fail("save cache '", path.string(), "': write failed (disk full?)");
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) fail("save cache '", path.string(), "': ", ec.message());
}

// Parses a cache file's bytes for `model`; `name` names the file in errors.
inline SequenceCache parse_cache_file(const Model& model, std::span<const uint8_t> bytes, const std::string& name,
                                      CacheFileExtras* extras = nullptr) {
  cache_file_detail::Reader r{bytes, 0, name};
  if (bytes.size() < 8 + 8 || std::memcmp(bytes.data(), kCacheFileMagic, 7) != 0)
    r.bad("not a dsv4 cache file (no DSV4KVC header)");
  if (bytes[7] != uint8_t(kCacheFileMagic[7]))
    r.bad("format version " + std::to_string(bytes[7]) + ", this dsv4 reads version " + std::to_string(int(kCacheFileMagic[7])));
  const uint64_t h = hash_bytes(bytes.data(), bytes.size() - 8);
  uint64_t sum;
  std::memcpy(&sum, bytes.data() + bytes.size() - 8, 8);
  if (sum != h) r.bad("checksum mismatch: the file is damaged or truncated");
  r.buf = bytes.first(bytes.size() - 8);
  r.at = 8;
  const auto fp = r.pod<uint64_t>("fingerprint");
  if (fp != model.fingerprint()) r.bad("saved from a different model (fingerprint does not match the loaded checkpoint)");
  const auto type = r.pod<uint8_t>("cache type");
  if (type > uint8_t(CacheType::Compact)) r.bad("unknown cache type " + std::to_string(type));
  const auto position = r.pod<int64_t>("position");
  if (position < 0 || position > (int64_t(1) << 40)) r.bad("position " + std::to_string(position) + " out of range");
  const auto layers = r.pod<uint32_t>("layer count");
  const ModelConfig& c = model.config();
  if (layers != uint32_t(c.num_layers)) r.bad(std::to_string(layers) + " layers, the model has " + std::to_string(c.num_layers));
  SequenceCache cache = model.new_cache(CacheType(type));
  CacheStateAccess::set_position(cache, position);
  auto& states = CacheStateAccess::layers(cache);
  const int64_t ring_rows = std::max<int64_t>(c.sliding_window - 1, 0);
  for (uint32_t l = 0; l < layers; ++l) {
    const auto kind = r.pod<uint8_t>("layer kind");
    const LayerConfig& lc = c.layers[l];
    if (kind != uint8_t(lc.attention))
      r.bad("layer " + std::to_string(l) + " is of another attention kind than the model's (" + attention_kind_name(lc.attention) + ")");
    const std::string what = "layer " + std::to_string(l);
    for_each_store(states[l], [&](auto& store) {
      using T = std::decay_t<decltype(store)>;
      if constexpr (std::is_same_v<T, WindowState>) r.rows(store.ring, ring_rows, true, what.c_str());
      else if constexpr (std::is_same_v<T, CompressorState>) r.compressor(store, position, lc.compress_ratio, what.c_str());
      else r.floats(store, position * MlaDims(c).latent(), what.c_str());
    });
  }
  const auto ntok = r.pod<int64_t>("token count");
  if (ntok < position || ntok > position + (int64_t(1) << 30)) r.bad("token count " + std::to_string(ntok) + " does not fit position " + std::to_string(position));
  const uint8_t* tp = r.take(size_t(ntok) * 4, "tokens");
  std::vector<int32_t> tokens(static_cast<size_t>(ntok));
  if (ntok > 0) std::memcpy(tokens.data(), tp, size_t(ntok) * 4);
  for (int32_t t : tokens)
    if (t < 0 || t >= c.vocab_size) r.bad("token id " + std::to_string(t) + " outside the vocabulary");
  const size_t mark = r.at;
  const auto nlog = r.pod<int64_t>("logit count");
  r.at = mark;  // floats() reads the count again
  if (nlog != 0 && nlog != c.vocab_size) r.bad("logits row of " + std::to_string(nlog) + " values, the vocabulary has " + std::to_string(c.vocab_size));
  std::vector<float> logits;
  r.floats(logits, nlog, "logits");
  if (r.at != r.buf.size()) r.bad("unexpected bytes after the logits");
  if (extras) extras->tokens = std::move(tokens), extras->logits = std::move(logits);
  return cache;
}

inline SequenceCache load_cache_file(const Model& model, const std::filesystem::path& path,
                                     CacheFileExtras* extras = nullptr) {
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  if (!in) fail("cache file '", path.string(), "': cannot open");
  const std::streamoff size = in.tellg();
  if (size < 0) fail("cache file '", path.string(), "': cannot read its size");
  std::vector<uint8_t> bytes(static_cast<size_t>(size));
  in.seekg(0);
  in.read(reinterpret_cast<char*>(bytes.data()), size);
  if (!in) fail("cache file '", path.string(), "': read failed");
  return parse_cache_file(model, bytes, path.string(), extras);
}

}  // namespace dsv4
