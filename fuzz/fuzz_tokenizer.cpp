// libFuzzer target for the tokenizer. The real tokenizer is loaded once from the folder named by
// the environment variable DSV4_TOKENIZER_DIR, else the macro of the same name.
// Build and run (clang 14):
//   clang++ -std=c++20 -O1 -g -fsanitize=fuzzer,address,undefined -Iinclude \
//     -DDSV4_TOKENIZER_DIR='"path/to/tokenizer"' fuzz/fuzz_tokenizer.cpp -lpcre2-8 -o fuzz_tokenizer
//   ./fuzz_tokenizer -max_total_time=60 -max_len=4096
// The first input byte picks what is fuzzed: encode of arbitrary bytes (checks the lossless round
// trip), decode / StreamDecoder of arbitrary ids, or loading an arbitrary tokenizer.json.
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "dsv4/text/stream_decoder.hpp"
#include "dsv4/text/tokenizer.hpp"

namespace {

const dsv4::text::Tokenizer& tokenizer() {
  static const dsv4::text::Tokenizer tok = [] {
    const char* dir = std::getenv("DSV4_TOKENIZER_DIR");
#ifdef DSV4_TOKENIZER_DIR
    if (!dir) dir = DSV4_TOKENIZER_DIR;
#endif
    if (!dir) {
      std::fprintf(stderr, "set DSV4_TOKENIZER_DIR to the folder holding tokenizer.json\n");
      std::abort();
    }
    return dsv4::text::Tokenizer::load(dir);
  }();
  return tok;
}

// A broken invariant is a crash for libFuzzer.
void require(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "invariant broken: %s\n", what);
    std::abort();
  }
}

bool valid_utf8(std::string_view s) { return dsv4::text::utf8::valid_prefix(s) == s.size(); }

void fuzz_encode(std::string_view bytes) {
  const auto& tok = tokenizer();
  const std::vector<int32_t> ids = tok.encode(bytes);
  for (int32_t id : ids) require(id >= 0 && id < tok.vocab_size(), "encode gave an id out of range");
  require(tok.decode_bytes(ids) == bytes, "decode_bytes(encode(x)) != x");
  const std::string text = tok.decode(ids);
  require(valid_utf8(text), "decode gave invalid UTF-8");
  require(text == dsv4::text::utf8::lossy(bytes), "decode(encode(x)) != lossy(x)");
}

void fuzz_decode(std::string_view bytes, bool skip_special) {
  const auto& tok = tokenizer();
  std::vector<int32_t> ids;
  for (size_t i = 0; i + 4 <= bytes.size(); i += 4) {
    uint32_t v;
    std::memcpy(&v, bytes.data() + i, 4);
    // Mostly in range (ids near the vocab and byte tokens), sometimes anything.
    ids.push_back((v & 3) == 0 ? static_cast<int32_t>(v) : static_cast<int32_t>((v >> 2) % 129000));
  }
  bool all_valid = true;
  for (int32_t id : ids) all_valid &= id >= 0 && id < tok.vocab_size();
  std::string whole;
  try {
    whole = tok.decode(ids, skip_special);
    require(all_valid, "decode accepted a bad id");
    require(valid_utf8(whole), "decode gave invalid UTF-8");
  } catch (const std::runtime_error&) {
    require(!all_valid, "decode threw on good ids");
  }
  dsv4::text::StreamDecoder sd(tok, skip_special);
  std::string streamed;
  for (int32_t id : ids) {
    try {
      const std::string piece = sd.push(id);
      require(valid_utf8(piece), "StreamDecoder gave invalid UTF-8");
      streamed += piece;
    } catch (const std::runtime_error&) {
      require(id < 0 || id >= tok.vocab_size(), "StreamDecoder threw on a good id");
    }
  }
  streamed += sd.flush();
  if (all_valid) require(streamed == whole, "StreamDecoder text != decode text");
}

void fuzz_load(std::string_view json) {
  try {
    const auto tok = dsv4::text::Tokenizer::from_json_text(json);
    const auto ids = tok.encode("Hello, world! 123 深度 <s>\xFF");
    (void)tok.decode(ids);
  } catch (const std::runtime_error&) {
    // Bad files must fail this way and no other.
  }
}

}  // namespace

// Loads the tokenizer (seconds under the sanitizers) before the first input, so that the load
// does not count against libFuzzer's per-input -timeout.
extern "C" int LLVMFuzzerInitialize(int*, char***) {
  (void)tokenizer();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const std::string_view rest(reinterpret_cast<const char*>(data) + 1, size - 1);
  switch (data[0] % 8) {
    case 0:
      fuzz_decode(rest, false);
      break;
    case 1:
      fuzz_decode(rest, true);
      break;
    case 2:
      fuzz_load(rest);
      break;
    default:
      fuzz_encode(rest);
      break;
  }
  return 0;
}
