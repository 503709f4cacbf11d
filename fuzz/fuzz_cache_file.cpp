// libFuzzer target: dsv4::parse_cache_file (saved session state) on arbitrary bytes, for the
// bundled tiny model. The harness writes the model's fingerprint and a valid checksum into the
// input before parsing, so mutations reach the structure behind those two checks. A dsv4::Error
// is the expected answer to bad input; any other exception, a crash, a sanitizer report, or an
// accepted file whose cache is inconsistent is a finding.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <vector>

#include "dsv4/io/cache_file.hpp"

namespace {

const dsv4::Model& tiny() {
  static const dsv4::Model m = dsv4::Model::load(DSV4_TINY_MODEL);
  return m;
}

void require(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "invariant broken: %s\n", what);
    __builtin_trap();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const dsv4::Model& m = tiny();
  std::vector<uint8_t> b(data, data + size);
  if (b.size() >= 24) {
    const uint64_t fp = m.fingerprint();
    std::memcpy(b.data() + 8, &fp, 8);
    const uint64_t h = dsv4::hash_bytes(b.data(), b.size() - 8);
    std::memcpy(b.data() + b.size() - 8, &h, 8);
  }
  dsv4::CacheFileExtras extras;
  try {
    const dsv4::SequenceCache c = dsv4::parse_cache_file(m, b, "fuzz.kvc", &extras);
    require(c.made_by(m), "the cache belongs to the model");
    require(int64_t(extras.tokens.size()) >= c.position(), "tokens cover the position");
    for (size_t l = 0; l < c.num_layers(); ++l)
      require(c.layer_bytes(l) == dsv4::predict_layer_cache_bytes(m.config(), m.config().layers[l], c.position(),
                                                                   c.cache_type()).total(),
              "an accepted cache holds exactly what its position implies");
  } catch (const dsv4::Error&) {
  }
  return 0;
}
